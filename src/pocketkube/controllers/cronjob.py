"""CronJob controller: Jobs on a cron schedule (pkg/controller/cronjob, the v2 controller).

Schedules are read as robfig/cron's standard parser reads them (five fields, names, `?`, `N/step`,
the @yearly...@hourly descriptors and `@every <duration>`, an optional `TZ=`/`CRON_TZ=` prefix) and
evaluated with cronsim. As upstream: a CronJob looks at most at the most recent missed schedule
(warning TooManyMissedTimes past 100 of them), Jobs are named `<cronjob>-<minutes since the epoch>`
so a schedule is never run twice, concurrencyPolicy Allow/Forbid/Replace and startingDeadlineSeconds
decide whether to start, finished Jobs beyond the history limits are deleted, and the key is queued
again for the next schedule time. The clock is the `now()` method, so tests need not wait.
"""

from __future__ import annotations

import copy
import logging
import zoneinfo
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from pocketkube.api.cron import Schedule, ScheduleError, parse_schedule
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller, split_key

log = logging.getLogger(__name__)
Obj = dict[str, Any]

SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
# Requeue a little after the schedule time so a slightly early clock does not miss it.
NEXT_SCHEDULE_DELTA = 0.1
TOO_MANY_MISSED = 100

def job_name(cronjob_name: str, scheduled: datetime) -> str:
    """getJobName: the scheduled time in minutes since the epoch makes each run's name unique."""
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


def most_recent_schedule(schedule: Schedule, earliest: datetime, now: datetime
                         ) -> tuple[datetime | None, int]:
    """mostRecentScheduleTime from `earliest` (creation, last schedule or deadline): the latest due
    time not after `now` (or None) and roughly how many schedules were missed. Raises ScheduleError
    for a schedule that never fires or fires less than a second apart."""
    t1 = schedule.next(earliest)
    t2 = schedule.next(t1) if t1 is not None else None
    if t1 is None or t2 is None:
        raise ScheduleError("time difference between two schedules is less than 1 second")
    if now < t1:
        return None, 0
    if now < t2:
        return t1, 0
    between = round((t2 - t1).total_seconds())
    if between < 1:
        raise ScheduleError("time difference between two schedules is less than 1 second")
    missed = int((now - t1).total_seconds()) // between + 1
    # Jump close to now and let the schedule find the exact last time (irregular schedules too).
    moment: datetime | None = t1 + timedelta(seconds=(missed - 2) * between)
    recent: datetime | None = None
    while moment is not None:
        moment = schedule.next(moment)
        if moment is None or moment > now:
            break
        recent = moment
    return recent, missed


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _format(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339_in(moment: datetime, zone: tzinfo) -> str:
    """Go's time.RFC3339 in a zone: "Z" for UTC, else the numeric offset."""
    local = moment.astimezone(zone)
    if local.utcoffset() == timedelta(0):
        return local.strftime("%Y-%m-%dT%H:%M:%SZ")
    text = local.strftime("%Y-%m-%dT%H:%M:%S%z")
    return f"{text[:-2]}:{text[-2:]}"


def _finished_type(job: Obj) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def _controller_ref(obj: Obj) -> Obj | None:
    return next((r for r in (obj.get("metadata") or {}).get("ownerReferences") or [] if r.get("controller")), None)


class CronJobController(Controller):
    name = "cronjob"
    workers = 2

    def setup(self) -> None:
        self.cronjobs = self.ctx.informer("batch", "v1", "cronjobs")
        self.jobs = self.ctx.informer("batch", "v1", "jobs")
        self.cronjob_info = self.ctx.resource("batch", "v1", "cronjobs")
        self.job_info = self.ctx.resource("batch", "v1", "jobs")
        self.cronjobs.add_handler(on_add=self.enqueue, on_update=self._cronjob_updated, on_delete=self.enqueue)
        self.jobs.add_handler(on_add=self._job_changed, on_update=lambda _old, new: self._job_changed(new),
                              on_delete=self._job_changed)

    def now(self) -> datetime:
        """The controller's clock (tests replace it)."""
        return datetime.now(UTC)

    # --- handlers ---------------------------------------------------------------------------------
    def _job_changed(self, job: Obj) -> None:
        ref = _controller_ref(job)
        if ref is None or ref.get("kind") != "CronJob":
            return
        key = f"{job['metadata'].get('namespace', '')}/{ref.get('name')}"
        cronjob = self.cronjobs.store.get(key)
        if cronjob is not None and cronjob["metadata"].get("uid") == ref.get("uid"):
            self.queue.add(key)

    def _cronjob_updated(self, old: Obj, new: Obj) -> None:
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
        if (old_spec.get("schedule"), old_spec.get("timeZone")) == (new_spec.get("schedule"),
                                                                     new_spec.get("timeZone")):
            self.enqueue(new)
            return
        # A new schedule: look again when it is next due (sooner or later than planned).
        try:
            schedule = self._schedule(new)
        except (ScheduleError, ValueError, zoneinfo.ZoneInfoNotFoundError):
            self.record_event(new, "Warning", "UnParseableCronJobSchedule",
                              f"unparseable schedule for cronjob: {new_spec.get('schedule')}")
            return
        self.queue.add_after(f"{new['metadata']['namespace']}/{new['metadata']['name']}",
                             self._next_schedule_delay(new, self.now(), schedule))

    # --- schedule arithmetic ----------------------------------------------------------------------
    @staticmethod
    def _schedule(cronjob: Obj) -> Schedule:
        spec = cronjob.get("spec") or {}
        schedule = str(spec.get("schedule") or "")
        if "TZ" in schedule:
            return parse_schedule(schedule)
        return parse_schedule(schedule, spec.get("timeZone"))

    @staticmethod
    def _earliest(cronjob: Obj, now: datetime, with_deadline: bool) -> datetime:
        status = cronjob.get("status") or {}
        earliest = _time(status.get("lastScheduleTime")) or _time(cronjob["metadata"].get("creationTimestamp")) \
            or now
        deadline = (cronjob.get("spec") or {}).get("startingDeadlineSeconds")
        if with_deadline and deadline is not None:
            # Nothing older than the starting deadline will be started anyway.
            earliest = max(earliest, now - timedelta(seconds=deadline))
        return earliest

    def _next_schedule_delay(self, cronjob: Obj, now: datetime, schedule: Schedule) -> float:
        """nextScheduleTimeDuration: seconds until the schedule after the most recent one."""
        earliest = self._earliest(cronjob, now, with_deadline=False)
        try:
            recent, missed = most_recent_schedule(schedule, earliest, now)
            base = recent or (earliest if missed == 0 else now)
        except ScheduleError:
            base = now
        upcoming = schedule.next(base)
        if upcoming is None:
            return 3600.0
        return (upcoming - now).total_seconds() + NEXT_SCHEDULE_DELTA

    # --- reconcile --------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        namespace, name = split_key(key)
        cached = self.cronjobs.store.get(key)
        if cached is None:
            return
        jobs = [j for j in self.jobs.store.by_index("namespace", namespace)
                if (ref := _controller_ref(j)) is not None and ref.get("kind") == "CronJob"
                and ref.get("name") == name]
        cronjob = copy.deepcopy(cached)
        cleaned = await self._cleanup_finished_jobs(cronjob, jobs)
        requeue, synced, error = await self._sync(cronjob, jobs)
        if cleaned or synced:
            body = copy.deepcopy(cronjob)
            status = body.setdefault("status", {})
            if not status.get("active"):
                status.pop("active", None)
            await self.client.update(self.cronjob_info, body, "status")
        if requeue is not None:
            self.queue.add_after(key, max(requeue, 0.0))
            return
        if error is not None:
            raise error

    async def _sync(self, cronjob: Obj, jobs: list[Obj]) -> tuple[float | None, bool, Exception | None]:
        """syncCronJob: (requeue after seconds, status changed, error)."""
        now = self.now()
        changed = False
        status = cronjob.setdefault("status", {})
        active: list[Obj] = status.setdefault("active", [])
        children = set()
        for job in jobs:
            uid = job["metadata"].get("uid")
            children.add(uid)
            found = any(ref.get("uid") == uid for ref in active)
            finished = _finished_type(job)
            if not found and finished is None:
                fresh = await self.client.get(self.cronjob_info, cronjob["metadata"]["name"],
                                              cronjob["metadata"]["namespace"])
                if any(ref.get("uid") == uid for ref in (fresh.get("status") or {}).get("active") or []):
                    cronjob.clear()
                    cronjob.update(fresh)
                    status = cronjob.setdefault("status", {})
                    active = status.setdefault("active", [])
                    continue
                await self.ctx.recorder.event(cronjob, "Warning", "UnexpectedJob",
                                              f"Saw a job that the controller did not create or forgot: "
                                              f"{job['metadata']['name']}")
            elif finished is not None:
                if found:
                    active[:] = [ref for ref in active if ref.get("uid") != uid]
                    await self.ctx.recorder.event(cronjob, "Normal", "SawCompletedJob",
                                                  f"Saw completed job: {job['metadata']['name']}, "
                                                  f"condition: {finished}")
                    changed = True
                completed = _time((job.get("status") or {}).get("completionTime"))
                if finished == "Complete" and completed is not None:
                    last = _time(status.get("lastSuccessfulTime"))
                    if last is None or completed > last:
                        status["lastSuccessfulTime"] = _format(completed)
                        changed = True
        for ref in list(active):
            if ref.get("uid") in children:
                continue
            # The cache may lag: only a live read proves the Job is gone.
            try:
                await self.client.get(self.job_info, ref.get("name", ""), ref.get("namespace", ""))
            except APIError as err:
                if not err.not_found:
                    return None, changed, err
                await self.ctx.recorder.event(cronjob, "Normal", "MissingJob",
                                              f"Active job went missing: {ref.get('name')}")
                active[:] = [r for r in active if r.get("uid") != ref.get("uid")]
                changed = True
        if cronjob["metadata"].get("deletionTimestamp"):
            return None, changed, None
        spec = cronjob.get("spec") or {}
        time_zone = spec.get("timeZone")
        if time_zone is not None:
            try:
                zoneinfo.ZoneInfo(time_zone)
            except (ValueError, zoneinfo.ZoneInfoNotFoundError) as err:
                await self.ctx.recorder.event(cronjob, "Warning", "UnknownTimeZone",
                                              f'invalid timeZone: "{time_zone}": {err}')
                return None, changed, None
        if spec.get("suspend") is True:
            return None, changed, None
        schedule_text = str(spec.get("schedule") or "")
        if "TZ" in schedule_text:
            await self.ctx.recorder.event(cronjob, "Warning", "UnsupportedSchedule",
                                          f'CRON_TZ or TZ used in schedule "{schedule_text}" is not officially '
                                          "supported, see https://kubernetes.io/docs/concepts/workloads/"
                                          "controllers/cron-jobs/ for more details")
        try:
            schedule = self._schedule(cronjob)
        except ScheduleError as err:
            await self.ctx.recorder.event(cronjob, "Warning", "UnparseableSchedule",
                                          f'unparseable schedule: "{schedule_text}" : {err}')
            return None, changed, None
        try:
            scheduled, missed = most_recent_schedule(schedule, self._earliest(cronjob, now, True), now)
        except ScheduleError as err:
            await self.ctx.recorder.event(cronjob, "Warning", "InvalidSchedule",
                                          f"invalid schedule: {schedule_text} : {err}")
            return None, changed, None
        if scheduled is not None and missed > TOO_MANY_MISSED:
            await self.ctx.recorder.event(cronjob, "Warning", "TooManyMissedTimes",
                                          "too many missed start times. Set or decrease "
                                          ".spec.startingDeadlineSeconds or check clock skew")
            log.info("cronjob %s/%s: too many missed times", cronjob["metadata"]["namespace"],
                     cronjob["metadata"]["name"])
        requeue = self._next_schedule_delay(cronjob, now, schedule)
        if scheduled is None:
            return requeue, changed, None
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and scheduled + timedelta(seconds=deadline) < now:
            await self.ctx.recorder.event(cronjob, "Warning", "MissSchedule",
                                          "Missed scheduled time to start a job: "
                                          + scheduled.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"))
            return requeue, changed, None
        name = job_name(cronjob["metadata"]["name"], scheduled)
        if any(ref.get("name") == name for ref in active) or _time(status.get("lastScheduleTime")) == scheduled:
            return requeue, changed, None
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and active:
            await self.ctx.recorder.event(cronjob, "Normal", "JobAlreadyActive",
                                          "Not starting job because prior execution is running and concurrency "
                                          "policy is Forbid")
            return requeue, changed, None
        if policy == "Replace":
            for ref in list(active):
                try:
                    job = await self.client.get(self.job_info, ref.get("name", ""), ref.get("namespace", ""))
                except APIError as err:
                    await self.ctx.recorder.event(cronjob, "Warning", "FailedGet", f"Get job: {err}")
                    return None, changed, err
                if not await self._delete_job(cronjob, job):
                    return None, changed, RuntimeError(f"could not replace job {ref.get('namespace')}/"
                                                       f"{ref.get('name')}")
                changed = True
        request = self._job_from_template(cronjob, scheduled, name)
        try:
            created = await self.client.create(self.job_info, request, cronjob["metadata"]["namespace"])
            await self.ctx.recorder.event(cronjob, "Normal", "SuccessfulCreate", f"Created job {name}")
        except APIError as err:
            if not err.already_exists:
                if not _namespace_terminating(err):
                    await self.ctx.recorder.event(cronjob, "Warning", "FailedCreate", f"Error creating job: {err}")
                return None, changed, err
            # Made by an earlier sync whose status update was lost? Then record it; else leave it be.
            try:
                created = await self.client.get(self.job_info, name, cronjob["metadata"]["namespace"])
            except APIError as get_err:
                return None, changed, get_err
            ref = _controller_ref(created)
            if ref is None or ref.get("uid") != cronjob["metadata"].get("uid"):
                return None, changed, None
            if any(r.get("uid") == created["metadata"].get("uid") for r in active):
                return None, changed, None
            log.info("cronjob %s: job %s already exists", cronjob["metadata"]["name"], name)
        active.append({"kind": "Job", "namespace": created["metadata"].get("namespace", ""),
                       "name": created["metadata"]["name"], "uid": created["metadata"].get("uid", ""),
                       "apiVersion": "batch/v1", "resourceVersion": created["metadata"].get("resourceVersion", "")})
        status["lastScheduleTime"] = _format(scheduled)
        return self._next_schedule_delay(cronjob, now, schedule), True, None

    def _job_from_template(self, cronjob: Obj, scheduled: datetime, name: str) -> Obj:
        """getJobFromTemplate2: the template's labels/annotations and spec, owned by the CronJob."""
        template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        time_zone = (cronjob.get("spec") or {}).get("timeZone")
        annotations = dict(tmeta.get("annotations") or {})
        annotations[SCHEDULED_TIMESTAMP_ANNOTATION] = _rfc3339_in(
            scheduled, zoneinfo.ZoneInfo(time_zone) if time_zone else UTC)
        meta = cronjob["metadata"]
        job_meta: Obj = {"name": name, "namespace": meta["namespace"], "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"],
                                              "uid": meta.get("uid", ""), "controller": True,
                                              "blockOwnerDeletion": True}]}
        if tmeta.get("labels"):
            job_meta["labels"] = dict(tmeta["labels"])
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta,
                "spec": copy.deepcopy(template.get("spec") or {})}

    # --- history ----------------------------------------------------------------------------------
    async def _cleanup_finished_jobs(self, cronjob: Obj, jobs: list[Obj]) -> bool:
        spec = cronjob.get("spec") or {}
        failed_limit, succeeded_limit = spec.get("failedJobsHistoryLimit"), spec.get("successfulJobsHistoryLimit")
        if failed_limit is None and succeeded_limit is None:
            return False
        succeeded = [j for j in jobs if _finished_type(j) == "Complete"]
        failed = [j for j in jobs if _finished_type(j) == "Failed"]
        changed = False
        if succeeded_limit is not None and await self._remove_oldest(cronjob, succeeded, succeeded_limit):
            changed = True
        if failed_limit is not None and await self._remove_oldest(cronjob, failed, failed_limit):
            changed = True
        return changed

    async def _remove_oldest(self, cronjob: Obj, jobs: list[Obj], keep: int) -> bool:
        excess = len(jobs) - keep
        if excess <= 0:
            return False

        def by_start(job: Obj) -> tuple[int, float, str]:
            # Jobs that never started sort last; ties by name.
            started = _time((job.get("status") or {}).get("startTime"))
            return (0, started.timestamp(), job["metadata"]["name"]) if started else \
                (1, 0.0, job["metadata"]["name"])

        changed = False
        for job in sorted(jobs, key=by_start)[:excess]:
            if await self._delete_job(cronjob, job):
                changed = True
        return changed

    async def _delete_job(self, cronjob: Obj, job: Obj) -> bool:
        """deleteJob: delete the Job (its pods follow, in the background) and forget it as active."""
        meta = job["metadata"]
        try:
            await self.client.delete(self.job_info, meta["name"], meta.get("namespace", ""),
                                     propagation_policy="Background")
        except APIError as err:
            await self.ctx.recorder.event(cronjob, "Warning", "FailedDelete", f"Deleted job: {err}")
            log.warning("cronjob %s: deleting job %s: %s", cronjob["metadata"]["name"], meta["name"], err)
            return False
        # In place: the caller may hold this list.
        active = cronjob.setdefault("status", {}).setdefault("active", [])
        active[:] = [r for r in active if r.get("uid") != meta.get("uid")]
        await self.ctx.recorder.event(cronjob, "Normal", "SuccessfulDelete", f"Deleted job {meta['name']}")
        return True


def _namespace_terminating(err: APIError) -> bool:
    causes = ((err.body or {}).get("details") or {}).get("causes") or []
    return any(c.get("reason") == "NamespaceTerminating" for c in causes)
