"""The CronJob controller against a real API server, on an injected clock (no minute-long waits)."""

from __future__ import annotations

import asyncio
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cluster import Cluster
from harness import bare_server, connect, create_namespace, eventually, running

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import Client
from pocketkube.controllers.base import ControllerContext
from pocketkube.controllers.cronjob import SCHEDULED_TIMESTAMP_ANNOTATION, CronJobController
from pocketkube.controllers.namespace import NamespaceController

Obj = dict[str, Any]
CATALOG = ResourceCatalog()
JOBS = CATALOG.resource("batch", "v1", "jobs")
CRONJOBS = CATALOG.resource("batch", "v1", "cronjobs")
EVENTS = CATALOG.resource("", "v1", "events")


class Clock:
    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def set(self, moment: datetime) -> None:
        self.moment = moment


CLOCK = Clock()
INSTANCES: list[CronJobController] = []


class ClockedCronJobController(CronJobController):
    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        INSTANCES.append(self)

    def now(self) -> datetime:
        return CLOCK.moment


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest.fixture
async def api(server: Cluster) -> AsyncIterator[Client]:
    INSTANCES.clear()
    CLOCK.set(datetime.now(UTC))
    async with connect(server) as client, running(client, controllers=(ClockedCronJobController, NamespaceController),
                                                  identity="cronjob-controller-tests"):
        await eventually(lambda: _true(bool(INSTANCES)), what="controller started")
        yield client


async def _true(value: bool) -> bool:
    return value


async def at(moment: datetime, ns: str, name: str) -> None:
    """Move the clock and let the controller look at the CronJob (as its timer would)."""
    CLOCK.set(moment)
    INSTANCES[0].queue.add(f"{ns}/{name}")
    await asyncio.sleep(0.3)


async def create_cronjob(api: Client, ns: str, name: str, schedule: str, **spec: Any) -> Obj:
    template = {"metadata": {"labels": {"app": name}, "annotations": {"team": "batch"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "main", "image": "busybox"}]}}}}
    return await api.create(CRONJOBS, {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
                                       "spec": {"schedule": schedule, "jobTemplate": template, **spec}}, ns)


def created(cronjob: Obj) -> datetime:
    return datetime.fromisoformat(cronjob["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


async def jobs_of(api: Client, ns: str) -> list[Obj]:
    items = (await api.list(JOBS, ns))["items"]
    return sorted(items, key=lambda j: j["metadata"]["name"])


async def job_count(api: Client, ns: str, n: int) -> list[Obj] | None:
    jobs = await jobs_of(api, ns)
    return jobs if len(jobs) == n else None


async def finish_job(api: Client, job: Obj, ctype: str = "Complete", at_time: datetime | None = None) -> None:
    """Be the Job controller: mark the Job finished."""
    moment = (at_time or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    interim = "SuccessCriteriaMet" if ctype == "Complete" else "FailureTarget"
    status: Obj = {"startTime": job["metadata"]["creationTimestamp"], "conditions": [
        {"type": interim, "status": "True", "reason": "Test", "lastTransitionTime": moment},
        {"type": ctype, "status": "True", "reason": "Test", "lastTransitionTime": moment}]}
    if ctype == "Complete":
        status.update(completionTime=moment, succeeded=1)
    else:
        status["failed"] = 1
    await api.patch(JOBS, job["metadata"]["name"], {"status": status}, job["metadata"]["namespace"],
                    subresource="status")


async def events_for(api: Client, ns: str, name: str) -> list[tuple[str, str, str]]:
    items = (await api.list(EVENTS, ns))["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]


async def event_with(api: Client, ns: str, name: str, reason: str) -> list[tuple[str, str, str]] | None:
    events = await events_for(api, ns, name)
    return events if any(e[1] == reason for e in events) else None


async def test_fires_on_schedule_with_upstream_names_and_status(api: Client) -> None:
    ns = await create_namespace(api, "cron-fire")
    cj = await create_cronjob(api, ns, "tick", "*/1 * * * *", timeZone="Etc/UTC")
    due = next_minute(created(cj))
    await at(due - timedelta(seconds=1), ns, "tick")
    assert await jobs_of(api, ns) == []  # not yet due
    await at(due + timedelta(seconds=5), ns, "tick")
    job = (await eventually(lambda: job_count(api, ns, 1), what="first job"))[0]
    meta = job["metadata"]
    assert meta["name"] == f"tick-{int(due.timestamp()) // 60}"
    assert meta["labels"]["app"] == "tick" and meta["annotations"]["team"] == "batch"
    assert meta["annotations"][SCHEDULED_TIMESTAMP_ANNOTATION] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "tick",
                                        "uid": cj["metadata"]["uid"], "controller": True,
                                        "blockOwnerDeletion": True}]
    cj = await eventually(lambda: _cronjob_where(api, ns, "tick", lambda s: s.get("active")))
    assert cj["status"]["lastScheduleTime"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cj["status"]["active"][0]["name"] == meta["name"] and cj["status"]["active"][0]["kind"] == "Job"
    # The same schedule time never makes a second Job.
    await at(due + timedelta(seconds=30), ns, "tick")
    assert len(await jobs_of(api, ns)) == 1
    await finish_job(api, job, at_time=due + timedelta(seconds=20))
    cj = await eventually(lambda: _cronjob_where(api, ns, "tick", lambda s: s.get("lastSuccessfulTime")
                                               and not s.get("active")))
    assert cj["status"]["lastSuccessfulTime"] == (due + timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await at(due + timedelta(minutes=1, seconds=1), ns, "tick")
    await eventually(lambda: job_count(api, ns, 2), what="second job")
    events = await events_for(api, ns, "tick")
    assert ("Normal", "SuccessfulCreate", f"Created job {meta['name']}") in events
    assert ("Normal", "SawCompletedJob", f"Saw completed job: {meta['name']}, condition: Complete") in events


async def test_forbid_skips_while_a_job_runs(api: Client) -> None:
    ns = await create_namespace(api, "cron-forbid")
    cj = await create_cronjob(api, ns, "solo", "* * * * *", concurrencyPolicy="Forbid")
    due = next_minute(created(cj))
    await at(due + timedelta(seconds=1), ns, "solo")
    first = (await eventually(lambda: job_count(api, ns, 1)))[0]
    await eventually(lambda: _cronjob_where(api, ns, "solo", lambda s: s.get("active")))
    await at(due + timedelta(minutes=1, seconds=1), ns, "solo")
    await eventually(lambda: event_with(api, ns, "solo", "JobAlreadyActive"))
    assert len(await jobs_of(api, ns)) == 1
    # Once the running Job finishes, the skipped schedule is still due (no deadline): it starts now.
    await finish_job(api, first)
    jobs = await eventually(lambda: job_count(api, ns, 2), what="job after the running one finished")
    assert jobs[1]["metadata"]["name"] == f"solo-{int(due.timestamp()) // 60 + 1}"


async def test_replace_deletes_the_running_job(api: Client) -> None:
    ns = await create_namespace(api, "cron-replace")
    cj = await create_cronjob(api, ns, "swap", "* * * * *", concurrencyPolicy="Replace")
    due = next_minute(created(cj))
    await at(due + timedelta(seconds=1), ns, "swap")
    first = (await eventually(lambda: job_count(api, ns, 1)))[0]
    await eventually(lambda: _cronjob_where(api, ns, "swap", lambda s: s.get("active")))
    await at(due + timedelta(minutes=1, seconds=1), ns, "swap")
    jobs = await eventually(lambda: _jobs_without(api, ns, first["metadata"]["name"]), what="replacement")
    assert len(jobs) == 1 and jobs[0]["metadata"]["name"] == f"swap-{int(due.timestamp()) // 60 + 1}"
    cj = await eventually(lambda: _cronjob_where(api, ns, "swap", lambda s: [a["name"] for a in s.get("active", [])]
                                               == [jobs[0]["metadata"]["name"]]))
    events = await events_for(api, ns, "swap")
    assert ("Normal", "SuccessfulDelete", f"Deleted job {first['metadata']['name']}") in events


async def test_history_limits_remove_oldest_finished_jobs(api: Client) -> None:
    ns = await create_namespace(api, "cron-history")
    cj = await create_cronjob(api, ns, "hist", "* * * * *", successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)
    due = next_minute(created(cj))
    outcomes = ["Complete", "Complete", "Failed", "Failed"]
    for step, outcome in enumerate(outcomes):
        await at(due + timedelta(minutes=step, seconds=1), ns, "hist")
        job = (await eventually(lambda: _newest_unfinished(api, ns), what=f"job {step}"))
        await finish_job(api, job, outcome, at_time=due + timedelta(minutes=step, seconds=30))
        await eventually(lambda: _cronjob_where(api, ns, "hist", lambda s: not s.get("active")))
    await at(due + timedelta(minutes=3, seconds=40), ns, "hist")
    jobs = await eventually(lambda: job_count(api, ns, 2), what="history cleanup")
    minute = int(due.timestamp()) // 60
    assert [j["metadata"]["name"] for j in jobs] == [f"hist-{minute + 1}", f"hist-{minute + 3}"]


async def test_missed_schedules_start_only_the_most_recent(api: Client) -> None:
    ns = await create_namespace(api, "cron-missed")
    cj = await create_cronjob(api, ns, "late", "* * * * *")
    start = next_minute(created(cj))
    # Five minutes missed: one Job, for the latest of them; no warning below 100.
    await at(start + timedelta(minutes=4, seconds=10), ns, "late")
    job = (await eventually(lambda: job_count(api, ns, 1)))[0]
    assert job["metadata"]["name"] == f"late-{int(start.timestamp()) // 60 + 4}"
    await finish_job(api, job)
    await eventually(lambda: _cronjob_where(api, ns, "late", lambda s: not s.get("active")))
    assert not await event_with(api, ns, "late", "TooManyMissedTimes")
    # Three hours later: 180 missed, still one Job, and the warning.
    later = start + timedelta(hours=3, minutes=4, seconds=10)
    await at(later, ns, "late")
    jobs = await eventually(lambda: job_count(api, ns, 2))
    assert jobs[1]["metadata"]["name"] == f"late-{int(later.timestamp()) // 60}"
    events = await eventually(lambda: event_with(api, ns, "late", "TooManyMissedTimes"))
    assert ("Warning", "TooManyMissedTimes", "too many missed start times. Set or decrease "
            ".spec.startingDeadlineSeconds or check clock skew") in events


async def test_starting_deadline_skips_late_starts(api: Client) -> None:
    ns = await create_namespace(api, "cron-deadline")
    cj = await create_cronjob(api, ns, "strict", "0 * * * *", startingDeadlineSeconds=60, timeZone="Etc/UTC")
    hour = created(cj).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    await at(hour + timedelta(minutes=5), ns, "strict")
    await asyncio.sleep(0.3)
    assert await jobs_of(api, ns) == []  # five minutes late, past a one-minute deadline
    await at(hour + timedelta(hours=1, seconds=30), ns, "strict")
    job = (await eventually(lambda: job_count(api, ns, 1)))[0]
    assert job["metadata"]["name"] == f"strict-{int((hour + timedelta(hours=1)).timestamp()) // 60}"


async def test_time_zone_and_suspend(api: Client) -> None:
    ns = await create_namespace(api, "cron-tz")
    cj = await create_cronjob(api, ns, "tokyo", "0 9 * * *", timeZone="Asia/Tokyo", suspend=True)
    # 09:00 in Tokyo is 00:00 UTC.
    midnight = created(cj).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    await at(midnight + timedelta(seconds=10), ns, "tokyo")
    assert await jobs_of(api, ns) == []  # suspended
    await api.patch(CRONJOBS, "tokyo", {"spec": {"suspend": False}}, ns)
    await at(midnight + timedelta(seconds=20), ns, "tokyo")
    job = (await eventually(lambda: job_count(api, ns, 1)))[0]
    assert job["metadata"]["name"] == f"tokyo-{int(midnight.timestamp()) // 60}"
    tokyo = midnight.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert job["metadata"]["annotations"][SCHEDULED_TIMESTAMP_ANNOTATION] == tokyo.isoformat()
    assert tokyo.isoformat().endswith("T09:00:00+09:00")


async def _cronjob_where(api: Client, ns: str, name: str, check: Callable[[Obj], Any]) -> Obj | None:
    cj = await api.get(CRONJOBS, name, ns)
    return cj if check(cj.get("status") or {}) else None


async def _jobs_without(api: Client, ns: str, name: str) -> list[Obj] | None:
    jobs = await jobs_of(api, ns)
    return jobs if jobs and all(j["metadata"]["name"] != name for j in jobs) else None


async def _newest_unfinished(api: Client, ns: str) -> Obj | None:
    for job in await jobs_of(api, ns):
        if not (job.get("status") or {}).get("conditions"):
            return job
    return None
