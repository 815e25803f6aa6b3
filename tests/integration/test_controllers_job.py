"""The Job controller against a real API server; the test plays the kubelet by patching pod status."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cluster import Cluster
from harness import bare_server, connect, create_namespace, eventually, running

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import Client
from pocketkube.controllers.job import COMPLETION_INDEX_ANNOTATION, TRACKING_FINALIZER, JobController
from pocketkube.controllers.namespace import NamespaceController

Obj = dict[str, Any]
CATALOG = ResourceCatalog()
PODS = CATALOG.resource("", "v1", "pods")
JOBS = CATALOG.resource("batch", "v1", "jobs")
EVENTS = CATALOG.resource("", "v1", "events")
BACKOFF = 1.0


class FastJobController(JobController):
    """Upstream's timings shrunk: a 1 s back-off base and a short batching period."""

    pod_failure_backoff = BACKOFF
    max_pod_failure_backoff = 8.0
    sync_batch_period = 0.05


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest.fixture
async def api(server: Cluster) -> AsyncIterator[Client]:
    async with connect(server) as client, running(client, controllers=(FastJobController, NamespaceController),
                                                  identity="job-controller-tests"):
        yield client


def job_manifest(name: str, **spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "main", "image": "busybox"}]}}, **spec}}


async def pods_of(api: Client, ns: str, job: str, *, live_only: bool = False) -> list[Obj]:
    items = (await api.list(PODS, ns, label_selector=f"batch.kubernetes.io/job-name={job}"))["items"]
    items.sort(key=lambda p: p["metadata"]["creationTimestamp"] + p["metadata"]["name"])
    if live_only:
        items = [p for p in items if not p["metadata"].get("deletionTimestamp")
                 and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    return items


async def get_job(api: Client, ns: str, name: str) -> Obj:
    return await api.get(JOBS, name, ns)


def condition(job: Obj, ctype: str) -> Obj | None:
    return next((c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def finish(api: Client, pod: Obj, exit_code: int = 0, *, conditions: list[Obj] | None = None) -> float:
    """Be the kubelet: the pod's only container terminated with `exit_code`. The finish time is put on
    the next whole second (the API keeps seconds), and returned as a wall-clock instant."""
    finished = math.ceil(time.time())
    at = stamp(datetime.fromtimestamp(finished, UTC))
    status: Obj = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"terminated": {
                                   "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                   "startedAt": at, "finishedAt": at}}}],
    }
    if conditions:
        status["conditions"] = conditions
    meta = pod["metadata"]
    await api.patch(PODS, meta["name"], {"status": status}, meta["namespace"], subresource="status")
    return float(finished)


async def events_for(api: Client, ns: str, name: str) -> list[tuple[str, str, str]]:
    items = (await api.list(EVENTS, ns))["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]


async def test_completions_with_parallelism(api: Client) -> None:
    ns = await create_namespace(api, "job-parallel")
    job = await api.create(JOBS, job_manifest("work", completions=4, parallelism=2), ns)
    uid = job["metadata"]["uid"]
    pods = await eventually(lambda: _count(api, ns, "work", 2), what="two pods")
    for pod in pods:
        meta = pod["metadata"]
        assert meta["generateName"] == "work-"
        assert meta["labels"]["batch.kubernetes.io/job-name"] == "work"
        assert meta["labels"]["batch.kubernetes.io/controller-uid"] == uid
        assert meta["finalizers"] == [TRACKING_FINALIZER]
        assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "work", "uid": uid,
                                            "controller": True, "blockOwnerDeletion": True}]
    status = (await eventually(lambda: _job_where(api, ns, "work", lambda s: s.get("active") == 2)))["status"]
    assert status["ready"] == 0 and status["terminating"] == 0 and status["startTime"]
    # Parallelism caps the running pods: one success makes room for exactly one more.
    await finish(api, pods[0])
    await eventually(lambda: _job_where(api, ns, "work", lambda s: s.get("succeeded") == 1 and s.get("active") == 2),
                   what="one success, two active")
    assert len(await pods_of(api, ns, "work")) == 3
    finished_pod = await api.get(PODS, pods[0]["metadata"]["name"], ns)
    assert TRACKING_FINALIZER not in (finished_pod["metadata"].get("finalizers") or [])
    for _ in range(3):
        live = await eventually(lambda: pods_of(api, ns, "work", live_only=True), what="a live pod")
        await finish(api, live[0])
        await asyncio.sleep(0.2)
    job = await eventually(lambda: _job_where(api, ns, "work", lambda s: condition({"status": s}, "Complete")),
                         what="Complete")
    status = job["status"]
    assert status["succeeded"] == 4 and not status.get("failed") and not status.get("active")
    assert status["completionTime"] and status["uncountedTerminatedPods"] == {}
    met, complete = condition(job, "SuccessCriteriaMet"), condition(job, "Complete")
    assert met and met["status"] == "True" and met["reason"] == "CompletionsReached"
    assert complete and complete["status"] == "True" and complete["reason"] == "CompletionsReached"
    assert complete["message"] == "Reached expected number of succeeded pods"
    assert len(await pods_of(api, ns, "work")) == 4  # never more pods than completions
    events = await eventually(lambda: _events_with(api, ns, "work", "Completed"))
    assert ("Normal", "Completed", "Job completed") in events
    assert sum(1 for e in events if e[1] == "SuccessfulCreate") == 4


async def test_work_queue_job_completes_when_one_succeeds_and_the_rest_finish(api: Client) -> None:
    ns = await create_namespace(api, "job-queue")
    await api.create(JOBS, job_manifest("queue", parallelism=2), ns)
    job = await get_job(api, ns, "queue")
    assert job["spec"].get("completions") is None
    pods = await eventually(lambda: _count(api, ns, "queue", 2))
    await finish(api, pods[0])
    await eventually(lambda: _job_where(api, ns, "queue", lambda s: s.get("succeeded") == 1))
    await asyncio.sleep(0.3)
    assert len(await pods_of(api, ns, "queue")) == 2  # after a success no new pod starts
    assert not condition(await get_job(api, ns, "queue"), "Complete")
    await finish(api, pods[1])
    job = await eventually(lambda: _job_where(api, ns, "queue", lambda s: condition({"status": s}, "Complete")))
    assert job["status"]["succeeded"] == 2


async def test_retries_back_off_then_backoff_limit_exceeded(api: Client) -> None:
    ns = await create_namespace(api, "job-backoff")
    await api.create(JOBS, job_manifest("flaky", backoffLimit=2), ns)
    first = (await eventually(lambda: _count(api, ns, "flaky", 1)))[0]
    failed_at = await finish(api, first, exit_code=1)
    await eventually(lambda: _job_where(api, ns, "flaky", lambda s: s.get("failed") == 1))
    # The replacement waits for the back-off (1 s after the failure), not a moment less.
    await asyncio.sleep(max(failed_at + 0.5 - time.time(), 0))
    assert len(await pods_of(api, ns, "flaky")) == 1
    second = (await eventually(lambda: _count(api, ns, "flaky", 2), what="first retry"))[1]
    assert time.time() >= failed_at + BACKOFF - 0.05
    failed_at = await finish(api, second, exit_code=1)
    # Second consecutive failure: the back-off doubles to 2 s.
    await asyncio.sleep(max(failed_at + 1.5 - time.time(), 0))
    assert len(await pods_of(api, ns, "flaky")) == 2
    third = (await eventually(lambda: _count(api, ns, "flaky", 3), what="second retry"))[2]
    assert time.time() >= failed_at + 2 * BACKOFF - 0.05
    await finish(api, third, exit_code=1)
    job = await eventually(lambda: _job_where(api, ns, "flaky", lambda s: condition({"status": s}, "Failed")),
                         what="Failed")
    assert job["status"]["failed"] == 3 and not job["status"].get("active")
    target, failed = condition(job, "FailureTarget"), condition(job, "Failed")
    assert target and target["reason"] == "BackoffLimitExceeded"
    assert failed and failed["status"] == "True" and failed["reason"] == "BackoffLimitExceeded"
    assert failed["message"] == "Job has reached the specified backoff limit"
    assert not job["status"].get("completionTime")
    await asyncio.sleep(BACKOFF * 1.5)
    assert len(await pods_of(api, ns, "flaky")) == 3  # no retry after the limit
    events = await eventually(lambda: _events_with(api, ns, "flaky", "BackoffLimitExceeded"))
    assert ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit") in events


async def test_active_deadline_fails_the_job_and_removes_its_pods(api: Client) -> None:
    ns = await create_namespace(api, "job-deadline")
    await api.create(JOBS, job_manifest("slow", parallelism=2, completions=2, activeDeadlineSeconds=2), ns)
    await eventually(lambda: _count(api, ns, "slow", 2))
    job = await eventually(lambda: _job_where(api, ns, "slow", lambda s: condition({"status": s}, "Failed")),
                         timeout=10, what="DeadlineExceeded")
    failed = condition(job, "Failed")
    assert failed and failed["reason"] == "DeadlineExceeded"
    assert failed["message"] == "Job was active longer than specified deadline"
    assert job["status"]["failed"] == 2 and not job["status"].get("active")
    assert job["status"]["terminating"] == 0
    # The pods were deleted; once their finalizer went they were gone (no kubelet holds them).
    await eventually(lambda: _none_left(api, ns, "slow"), what="pods gone")


async def test_indexed_job(api: Client) -> None:
    ns = await create_namespace(api, "job-indexed")
    await api.create(JOBS, job_manifest("idx", completions=3, parallelism=3, completionMode="Indexed"), ns)
    pods = await eventually(lambda: _count(api, ns, "idx", 3))
    by_index = {int(p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]): p for p in pods}
    assert sorted(by_index) == [0, 1, 2]
    for index, pod in by_index.items():
        meta, spec = pod["metadata"], pod["spec"]
        assert meta["generateName"] == f"idx-{index}-"
        assert meta["labels"][COMPLETION_INDEX_ANNOTATION] == str(index)
        assert spec["hostname"] == f"idx-{index}"
        assert {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "apiVersion": "v1", "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}} \
            in spec["containers"][0]["env"]
    await finish(api, by_index[0])
    await finish(api, by_index[2])
    await eventually(lambda: _job_where(api, ns, "idx", lambda s: s.get("completedIndexes") == "0,2"))
    await finish(api, by_index[1], exit_code=3)
    # Index 1 is retried (after the back-off) with the same index.
    retry = await eventually(lambda: _count(api, ns, "idx", 4), what="retry of index 1")
    new = [p for p in retry if p["metadata"]["name"] not in {q["metadata"]["name"] for q in pods}][0]
    assert new["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION] == "1"
    await finish(api, new)
    job = await eventually(lambda: _job_where(api, ns, "idx", lambda s: condition({"status": s}, "Complete")))
    assert job["status"]["completedIndexes"] == "0-2"
    assert job["status"]["succeeded"] == 3 and job["status"]["failed"] == 1


async def test_backoff_limit_per_index(api: Client) -> None:
    ns = await create_namespace(api, "job-per-index")
    await api.create(JOBS, job_manifest("per", completions=2, parallelism=2, completionMode="Indexed",
                                        backoffLimitPerIndex=0), ns)
    pods = await eventually(lambda: _count(api, ns, "per", 2))
    by_index = {p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]: p for p in pods}
    assert by_index["0"]["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "0"
    await finish(api, by_index["0"], exit_code=1)
    await eventually(lambda: _job_where(api, ns, "per", lambda s: s.get("failedIndexes") == "0"))
    await finish(api, by_index["1"])
    job = await eventually(lambda: _job_where(api, ns, "per", lambda s: condition({"status": s}, "Failed")))
    failed = condition(job, "Failed")
    assert failed and failed["reason"] == "FailedIndexes" and failed["message"] == "Job has failed indexes"
    assert job["status"]["completedIndexes"] == "1" and job["status"]["failedIndexes"] == "0"
    assert len(await pods_of(api, ns, "per")) == 2  # the failed index is not retried


async def test_suspend_and_resume(api: Client) -> None:
    ns = await create_namespace(api, "job-suspend")
    await api.create(JOBS, job_manifest("paused", parallelism=2, completions=2, suspend=True), ns)
    job = await eventually(lambda: _job_where(api, ns, "paused", lambda s: condition({"status": s}, "Suspended")))
    suspended = condition(job, "Suspended")
    assert suspended and suspended["status"] == "True" and suspended["reason"] == "JobSuspended"
    assert not job["status"].get("startTime")
    assert await pods_of(api, ns, "paused") == []
    await api.patch(JOBS, "paused", {"spec": {"suspend": False}}, ns)
    pods = await eventually(lambda: _count(api, ns, "paused", 2))
    job = await eventually(lambda: _job_where(
        api, ns, "paused", lambda s: (condition({"status": s}, "Suspended") or {}).get("status") == "False"))
    resumed = condition(job, "Suspended")
    assert resumed and resumed["reason"] == "JobResumed" and resumed["message"] == "Job resumed"
    assert job["status"]["startTime"]
    await finish(api, pods[0])
    await eventually(lambda: _job_where(api, ns, "paused", lambda s: s.get("succeeded") == 1))
    await api.patch(JOBS, "paused", {"spec": {"suspend": True}}, ns)
    # Suspending deletes the active pods; they are not failures.
    await eventually(lambda: _job_where(
        api, ns, "paused", lambda s: (condition({"status": s}, "Suspended") or {}).get("status") == "True"
        and not s.get("active")))
    await eventually(lambda: _gone(api, ns, pods[1]["metadata"]["name"]), what="active pod deleted")
    job = await get_job(api, ns, "paused")
    assert not job["status"].get("failed") and job["status"]["succeeded"] == 1
    events = await _events_with(api, ns, "paused", "Resumed")
    assert ("Normal", "Suspended", "Job suspended") in events and ("Normal", "Resumed", "Job resumed") in events
    await api.patch(JOBS, "paused", {"spec": {"suspend": False}}, ns)
    last = (await eventually(lambda: pods_of(api, ns, "paused", live_only=True)))[0]
    await finish(api, last)
    await eventually(lambda: _job_where(api, ns, "paused", lambda s: condition({"status": s}, "Complete")))


async def test_pod_failure_policy(api: Client) -> None:
    ns = await create_namespace(api, "job-pfp")
    policy = {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]}
    await api.create(JOBS, job_manifest("policy", backoffLimit=6, podFailurePolicy=policy), ns)
    job = await get_job(api, ns, "policy")
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    first = (await eventually(lambda: _count(api, ns, "policy", 1)))[0]
    # A disruption is ignored: replaced at once, not counted, no back-off.
    await finish(api, first, exit_code=137, conditions=[{"type": "DisruptionTarget", "status": "True",
                                                         "reason": "EvictionByEvictionAPI"}])
    second = (await eventually(lambda: _count(api, ns, "policy", 2), timeout=5))[1]
    job = await get_job(api, ns, "policy")
    assert not job["status"].get("failed")
    await finish(api, second, exit_code=42)
    job = await eventually(lambda: _job_where(api, ns, "policy", lambda s: condition({"status": s}, "Failed")))
    failed = condition(job, "Failed")
    assert failed and failed["reason"] == "PodFailurePolicy"
    assert failed["message"] == (f"Container main for pod {ns}/{second['metadata']['name']} failed with exit "
                                 "code 42 matching FailJob rule at index 0")
    assert job["status"]["failed"] == 1


async def _count(api: Client, ns: str, job: str, n: int) -> list[Obj] | None:
    pods = await pods_of(api, ns, job)
    return pods if len(pods) >= n else None


async def _job_where(api: Client, ns: str, name: str, check: Callable[[Obj], Any]) -> Obj | None:
    job = await get_job(api, ns, name)
    return job if check(job.get("status") or {}) else None


async def _none_left(api: Client, ns: str, job: str) -> bool:
    return not await pods_of(api, ns, job)


async def _gone(api: Client, ns: str, pod: str) -> bool:
    return not any(p["metadata"]["name"] == pod for p in (await api.list(PODS, ns))["items"])


async def _events_with(api: Client, ns: str, name: str, reason: str) -> list[tuple[str, str, str]] | None:
    events = await events_for(api, ns, name)
    return events if any(e[1] == reason for e in events) else None
