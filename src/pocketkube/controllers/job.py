"""Job controller: runs pods to completion (pkg/controller/job in kube-controller-manager).

As upstream:
- pods come from the template (generateName `<job>-`, or `<job>-<index>-` in Indexed mode with the
  completion index annotation/label, JOB_COMPLETION_INDEX and hostname `<job>-<index>`), owned by
  the Job and carrying the `batch.kubernetes.io/job-tracking` finalizer;
- finished pods are counted with that finalizer: their UIDs first go to
  status.uncountedTerminatedPods, then the finalizer is removed, then the counters move. Nothing is
  counted twice, nothing is lost when the controller dies halfway;
- failures are retried after an exponential back-off (10 s doubling, capped at 6 min) until
  backoffLimit (or backoffLimitPerIndex) is exceeded; activeDeadlineSeconds, podFailurePolicy,
  successPolicy, suspend and podReplacementPolicy behave as in Kubernetes 1.37, where the terminal
  conditions are preceded by the interim FailureTarget / SuccessCriteriaMet conditions and are only
  set once no pod of the Job is still terminating.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pocketkube.api.selectors import LabelSelector
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Intervals = list[tuple[int, int]]

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
INDEX_FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
INDEX_IGNORED_FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-ignored-failure-count"
JOB_CONTROLLER_NAME = "kubernetes.io/job-controller"
UNKNOWN_INDEX = -1
# Caps from upstream: pods created/deleted per sync, and UIDs held in uncountedTerminatedPods.
MAX_POD_CREATE_DELETE_PER_SYNC = 500
MAX_UNCOUNTED_PODS = 500
SLOW_START_INITIAL_BATCH = 1
MAX_GENERATED_NAME_PREFIX = 58  # 63 minus the 5 random characters the API server appends
EXPECTATIONS_TTL = 300.0
ORPHAN_PREFIX = "orphan-pod:"


# --- small helpers shared with the tests ----------------------------------------------------------

def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_indexes(text: str | None, completions: int) -> Intervals:
    """parseIndexesFromString: "1,3-5" -> [(1, 1), (3, 5)], clipped to the completions, corrupt parts skipped."""
    result: Intervals = []
    if not text:
        return result
    for part in text.split(","):
        limits = part.split("-")
        try:
            first = int(limits[0])
        except ValueError:
            continue
        if first >= completions:
            break
        last = first
        if len(limits) > 1:
            try:
                last = int(limits[1])
            except ValueError:
                continue
            last = min(last, completions - 1)
        if result and result[-1][1] == first - 1:
            result[-1] = (result[-1][0], last)
        else:
            result.append((first, last))
    return result


def format_indexes(intervals: Intervals) -> str:
    """orderedIntervals.String: two neighbours are listed ("1,2"), three or more become a range ("1-3")."""
    parts = []
    for first, last in intervals:
        if last == first:
            parts.append(str(first))
        elif last == first + 1:
            parts.append(f"{first},{last}")
        else:
            parts.append(f"{first}-{last}")
    return ",".join(parts)


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> Intervals:
    """Union of intervals, sorted, with touching ones joined."""
    result: Intervals = []
    for first, last in sorted(intervals):
        if result and first <= result[-1][1] + 1:
            if last > result[-1][1]:
                result[-1] = (result[-1][0], last)
        else:
            result.append((first, last))
    return result


def with_indexes(intervals: Intervals, indexes: Iterable[int]) -> Intervals:
    return merge_intervals([*intervals, *((i, i) for i in indexes)])


def intervals_total(intervals: Intervals | None) -> int:
    return sum(last - first + 1 for first, last in intervals or [])


def intervals_has(intervals: Intervals | None, index: int) -> bool:
    return any(first <= index <= last for first, last in intervals or [])


def completion_index(pod: Obj) -> int:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION)
    if value is None:
        return UNKNOWN_INDEX
    try:
        index = int(value)
    except ValueError:
        return UNKNOWN_INDEX
    return index if index >= 0 else UNKNOWN_INDEX


def pod_generate_name(job_name: str, index: int) -> str:
    """podGenerateNameWithIndex: `<job>-<index>-`, the job name cut so the whole fits a generated name."""
    appendix = f"-{index}-"
    prefix = job_name + appendix
    if len(prefix) > MAX_GENERATED_NAME_PREFIX:
        prefix = prefix[:MAX_GENERATED_NAME_PREFIX - len(appendix)] + appendix
    return prefix


def _annotation_int(pod: Obj, key: str) -> int:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(key)
    try:
        return max(int(value), 0) if value is not None else 0
    except ValueError:
        return 0


def _phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def has_tracking_finalizer(pod: Obj) -> bool:
    return TRACKING_FINALIZER in ((pod.get("metadata") or {}).get("finalizers") or [])


def is_pod_active(pod: Obj) -> bool:
    return _phase(pod) not in ("Succeeded", "Failed") and not _deleting(pod)


def is_pod_terminating(pod: Obj) -> bool:
    return _phase(pod) not in ("Succeeded", "Failed") and _deleting(pod)


def _ready_condition(pod: Obj) -> Obj | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond
    return None


def is_pod_ready(pod: Obj) -> bool:
    cond = _ready_condition(pod)
    return bool(cond and cond.get("status") == "True")


def _controller_ref(obj: Obj) -> Obj | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def job_finished_condition(job: Obj) -> str | None:
    """Complete or Failed when the Job has that condition True."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def _timestamp(value: Any) -> float:
    moment = parse_time(value)
    return moment.timestamp() if moment else 0.0


def _removal_order(pod: Obj) -> tuple[Any, ...]:
    """controller.ActivePods: unassigned < assigned, Pending < Unknown < Running, not ready < ready,
    ready for less time < longer, more restarts < fewer, newer < older: the first ones go first."""
    status = pod.get("status") or {}
    ready = is_pod_ready(pod)
    ready_since = _timestamp((_ready_condition(pod) or {}).get("lastTransitionTime")) if ready else 0.0
    restarts = max((c.get("restartCount") or 0 for c in status.get("containerStatuses") or []), default=0)
    return (1 if (pod.get("spec") or {}).get("nodeName") else 0,
            {"Pending": 0, "Unknown": 1, "Running": 2}.get(_phase(pod), 0),
            1 if ready else 0, -ready_since, -restarts,
            -_timestamp((pod.get("metadata") or {}).get("creationTimestamp")))


def _by_completion_index(pods: list[Obj]) -> list[Obj]:
    return sorted(pods, key=completion_index)


# --- pod failure policy ----------------------------------------------------------------------------

def _matching_container(statuses: list[Obj], requirement: Obj) -> Obj | None:
    name = requirement.get("containerName")
    values = requirement.get("values") or []
    for status in statuses or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated is None:  # still terminating: no exit code to match yet
            continue
        if name and name != status.get("name"):
            continue
        code = terminated.get("exitCode") or 0
        if code == 0:
            continue
        operator = requirement.get("operator")
        if (operator == "In" and code in values) or (operator == "NotIn" and code not in values):
            return status
    return None


def match_pod_failure_policy(policy: Obj | None, pod: Obj) -> tuple[str | None, bool, str | None]:
    """matchPodFailurePolicy: (FailJob message or None, whether the failure counts, the action taken)."""
    if policy is None:
        return None, True, None
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    for index, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        on_exit = rule.get("onExitCodes")
        if on_exit is not None:
            container = (_matching_container(status.get("containerStatuses") or [], on_exit)
                         or _matching_container(status.get("initContainerStatuses") or [], on_exit))
            if container is None:
                continue
            if action == "FailJob":
                code = container["state"]["terminated"].get("exitCode")
                return (f"Container {container.get('name')} for pod {meta.get('namespace')}/{meta.get('name')} "
                        f"failed with exit code {code} matching FailJob rule at index {index}", True, action)
        elif rule.get("onPodConditions") is not None:
            patterns = rule["onPodConditions"]
            matched = next((c for c in status.get("conditions") or [] for p in patterns
                            if c.get("type") == p.get("type") and c.get("status") == p.get("status", "True")),
                           None)
            if matched is None:
                continue
            if action == "FailJob":
                return (f"Pod {meta.get('namespace')}/{meta.get('name')} has condition {matched.get('type')} "
                        f"matching FailJob rule at index {index}", True, action)
        else:
            continue
        if action == "Ignore":
            return None, False, action
        if action in ("Count", "FailIndex"):
            return None, True, action
    return None, True, None


# --- back-off --------------------------------------------------------------------------------------

def pod_finished_time(pod: Obj) -> datetime:
    """getFinishedTime: the last container's finishedAt, else Ready=False's transition, else the deletion
    time less the grace period, else the creation time."""
    finished: datetime | None = None
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        at = parse_time(((status.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        if at is None:
            finished = None
            break
        finished = at if finished is None or at > finished else finished
    if finished is not None:
        return finished
    ready = _ready_condition(pod)
    if ready and ready.get("status") == "False":
        at = parse_time(ready.get("lastTransitionTime"))
        if at:
            return at
    meta = pod.get("metadata") or {}
    deleted = parse_time(meta.get("deletionTimestamp"))
    if deleted:
        return deleted - timedelta(seconds=meta.get("deletionGracePeriodSeconds") or 0)
    return parse_time(meta.get("creationTimestamp")) or datetime.fromtimestamp(0, UTC)


def backoff_remaining(now: datetime, base: float, cap: float, failures: int,
                      last_failure: datetime | None) -> float:
    """Seconds still to wait before the next pod after `failures` consecutive failures (0 when none)."""
    if failures == 0 or last_failure is None:
        return 0.0
    delay = base
    for _ in range(1, failures):
        delay *= 2
        if delay >= cap:
            delay = cap
            break
    elapsed = (now - last_failure).total_seconds()
    return 0.0 if delay < elapsed else delay - elapsed


@dataclass
class BackoffRecord:
    failures_after_last_success: int = 0
    last_failure: datetime | None = None


def next_backoff_record(old: BackoffRecord, succeeded: list[Obj], failed: list[Obj]) -> BackoffRecord:
    """newBackoffRecord: consecutive failures since the last success, and when the last one happened."""
    record = BackoffRecord(old.failures_after_last_success, old.last_failure)
    failed_times = sorted(pod_finished_time(p) for p in failed)
    if not succeeded:
        if failed_times:
            record.failures_after_last_success += len(failed_times)
            record.last_failure = failed_times[-1]
        return record
    last_success = max(pod_finished_time(p) for p in succeeded)
    record = BackoffRecord()
    for at in reversed(failed_times):
        if at <= last_success:
            break
        if record.last_failure is None:
            record.last_failure = at
        record.failures_after_last_success += 1
    return record


# --- expectations ----------------------------------------------------------------------------------

class _Expectations:
    """ControllerExpectations: creations/deletions issued but not yet seen in the informer cache."""

    def __init__(self) -> None:
        self._pending: dict[str, list[float]] = {}  # key -> [adds, deletes, set at]

    def expect(self, key: str, adds: int = 0, deletes: int = 0) -> None:
        self._pending[key] = [adds, deletes, time.monotonic()]

    def observed(self, key: str, adds: int = 0, deletes: int = 0) -> None:
        entry = self._pending.get(key)
        if entry is not None:
            entry[0] -= adds
            entry[1] -= deletes

    def satisfied(self, key: str) -> bool:
        entry = self._pending.get(key)
        if entry is None:
            return True
        return (entry[0] <= 0 and entry[1] <= 0) or time.monotonic() - entry[2] > EXPECTATIONS_TTL

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)


# --- the controller --------------------------------------------------------------------------------

@dataclass
class _SyncContext:
    job: Obj
    pods: list[Obj]
    active_pods: list[Obj]
    ready: int
    terminating: int
    uncounted_succeeded: set[str]
    uncounted_failed: set[str]
    expected_rm_finalizers: set[str]
    succeeded: int = 0
    failed: int = 0
    finished_condition: Obj | None = None
    backoff: BackoffRecord = field(default_factory=BackoffRecord)
    prev_succeeded_indexes: Intervals = field(default_factory=list)
    succeeded_indexes: Intervals = field(default_factory=list)
    failed_indexes: Intervals | None = None
    delayed_deletion: dict[int, Obj] = field(default_factory=dict)


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _spec(job: Obj) -> Obj:
    return job.get("spec") or {}


def _is_indexed(job: Obj) -> bool:
    return _spec(job).get("completionMode") == "Indexed"


def _suspended(job: Obj) -> bool:
    return _spec(job).get("suspend") is True


def _has_backoff_limit_per_index(job: Obj) -> bool:
    return _spec(job).get("backoffLimitPerIndex") is not None


def _only_replace_failed_pods(job: Obj) -> bool:
    spec = _spec(job)
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def is_pod_failed(pod: Obj, job: Obj) -> bool:
    """A Failed pod; unless only failed pods are replaced, a deleted unfinished pod counts as failed too."""
    if _phase(pod) == "Failed":
        return True
    if _only_replace_failed_pods(job):
        return False
    return _deleting(pod) and _phase(pod) != "Succeeded"


def _completions(job: Obj) -> int:
    return int(_spec(job).get("completions") or 0)


def _find_condition(conditions: list[Obj], ctype: str) -> Obj | None:
    return next((c for c in conditions if c.get("type") == ctype), None)


def _new_condition(ctype: str, status: str, reason: str, message: str, now: datetime) -> Obj:
    cond: Obj = {"type": ctype, "status": status, "lastProbeTime": format_time(now),
                 "lastTransitionTime": format_time(now)}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _ensure_condition(conditions: list[Obj], ctype: str, status: str, reason: str, message: str,
                      now: datetime) -> bool:
    """ensureJobConditionStatus: set or update the condition; a missing one is never added as False."""
    current = _find_condition(conditions, ctype)
    if current is not None:
        if (current.get("status"), current.get("reason", ""), current.get("message", "")) != (status, reason,
                                                                                              message):
            current.clear()
            current.update(_new_condition(ctype, status, reason, message, now))
            return True
        return False
    if status != "False":
        conditions.append(_new_condition(ctype, status, reason, message, now))
        return True
    return False


def _uncounted(job: Obj) -> Obj:
    status = job.setdefault("status", {})
    uncounted = status.get("uncountedTerminatedPods")
    if not isinstance(uncounted, dict):
        uncounted = status["uncountedTerminatedPods"] = {}
    uncounted.setdefault("succeeded", [])
    uncounted.setdefault("failed", [])
    return uncounted


class JobController(Controller):
    name = "job"
    workers = 4
    # Upstream DefaultJobPodFailureBackOff / MaxJobPodFailureBackOff; tests shrink them.
    pod_failure_backoff = 10.0
    max_pod_failure_backoff = 360.0
    # Pod events and status updates are batched this long before a sync (syncJobBatchPeriod).
    sync_batch_period = 1.0

    def setup(self) -> None:
        self.jobs = self.ctx.informer("batch", "v1", "jobs")
        self.pods = self.ctx.informer("", "v1", "pods")
        self.job_info = self.ctx.resource("batch", "v1", "jobs")
        self.pod_info = self.ctx.resource("", "v1", "pods")
        self.expectations = _Expectations()
        self.finalizer_expectations: dict[str, set[str]] = {}
        self.backoff_records: dict[str, BackoffRecord] = {}
        self.jobs.add_handler(on_add=self._job_added, on_update=self._job_updated, on_delete=self._job_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    def now(self) -> datetime:
        """The controller's clock (tests replace it)."""
        return datetime.now(UTC)

    # --- event handlers ---------------------------------------------------------------------------
    def _key(self, obj: Obj) -> str:
        meta = obj.get("metadata") or {}
        return f"{meta.get('namespace', '')}/{meta.get('name', '')}"

    def _batched(self, job: Obj) -> None:
        self.queue.add_after(self._key(job), self.sync_batch_period)

    def _job_added(self, job: Obj) -> None:
        self.queue.add(self._key(job))

    def _job_updated(self, old: Obj, cur: Obj) -> None:
        key = self._key(cur)
        if (cur.get("metadata") or {}).get("generation") == (old.get("metadata") or {}).get("generation"):
            self._batched(cur)
        else:
            self.queue.add(key)
        if job_finished_condition(cur):
            self._cleanup_pod_finalizers(cur)
        start = parse_time((cur.get("status") or {}).get("startTime"))
        deadline = _spec(cur).get("activeDeadlineSeconds")
        if start is not None and deadline is not None and _spec(old).get("activeDeadlineSeconds") != deadline:
            self.queue.add_after(key, deadline - (self.now() - start).total_seconds())

    def _job_deleted(self, job: Obj) -> None:
        self.queue.add(self._key(job))
        self._cleanup_pod_finalizers(job)

    def _cleanup_pod_finalizers(self, job: Obj) -> None:
        """Pods of a finished or deleted Job lose their tracking finalizer (a backup for syncJob)."""
        for pod in self.pods.store.by_index("owner", _uid(job)):
            ref = _controller_ref(pod)
            if ref and ref.get("uid") == _uid(job) and has_tracking_finalizer(pod):
                self.queue.add(ORPHAN_PREFIX + self._key(pod))

    def _resolve(self, namespace: str, ref: Obj) -> Obj | None:
        if ref.get("kind") != "Job":
            return None
        job = self.jobs.store.get(f"{namespace}/{ref.get('name')}")
        return job if job is not None and _uid(job) == ref.get("uid") else None

    def _jobs_selecting(self, pod: Obj) -> list[Obj]:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if not labels:
            return []
        return [job for job in self.jobs.store.by_index("namespace", meta.get("namespace", ""))
                if LabelSelector.from_dict(_spec(job).get("selector")).matches(labels)]

    def _pod_added(self, pod: Obj) -> None:
        if _deleting(pod):
            self._pod_deleted(pod, final=False)
            return
        namespace = (pod.get("metadata") or {}).get("namespace", "")
        ref = _controller_ref(pod)
        if ref is not None:
            job = self._resolve(namespace, ref)
            if job is not None:
                self.expectations.observed(self._key(job), adds=1)
                self._batched(job)
            elif has_tracking_finalizer(pod):
                self.queue.add(ORPHAN_PREFIX + self._key(pod))
            return
        if has_tracking_finalizer(pod):
            self.queue.add(ORPHAN_PREFIX + self._key(pod))
        for job in self._jobs_selecting(pod):
            self._batched(job)

    def _pod_updated(self, old: Obj, cur: Obj) -> None:
        if (old.get("metadata") or {}).get("resourceVersion") == (cur.get("metadata") or {}).get("resourceVersion"):
            return
        if _deleting(cur):
            # A pod being deleted is as good as gone for the expectations.
            self._pod_deleted(cur, final=False)
            return
        namespace = (cur.get("metadata") or {}).get("namespace", "")
        finalizer_removed = has_tracking_finalizer(old) and not has_tracking_finalizer(cur)
        old_ref, cur_ref = _controller_ref(old), _controller_ref(cur)
        if old_ref is not None and old_ref != cur_ref:
            job = self._resolve(namespace, old_ref)
            if job is not None:
                if finalizer_removed:
                    self._finalizer_removal_observed(self._key(job), _uid(cur))
                self._batched(job)
        if cur_ref is not None:
            job = self._resolve(namespace, cur_ref)
            if job is None:
                return
            if finalizer_removed:
                self._finalizer_removal_observed(self._key(job), _uid(cur))
            self._batched(job)
            return
        if has_tracking_finalizer(cur):
            self.queue.add(ORPHAN_PREFIX + self._key(cur))
        if (old.get("metadata") or {}).get("labels") != (cur.get("metadata") or {}).get("labels") or old_ref:
            for job in self._jobs_selecting(cur):
                self._batched(job)

    def _pod_deleted(self, pod: Obj, final: bool = True) -> None:
        namespace = (pod.get("metadata") or {}).get("namespace", "")
        ref = _controller_ref(pod)
        finalizer = has_tracking_finalizer(pod)
        if ref is None:
            if finalizer:
                self.queue.add(ORPHAN_PREFIX + self._key(pod))
            return
        job = self._resolve(namespace, ref)
        if job is None or job_finished_condition(job):
            if finalizer:
                self.queue.add(ORPHAN_PREFIX + self._key(pod))
            return
        key = self._key(job)
        self.expectations.observed(key, deletes=1)
        if final or not finalizer:
            self._finalizer_removal_observed(key, _uid(pod))
        self._batched(job)

    def _finalizer_removal_observed(self, key: str, uid: str) -> None:
        uids = self.finalizer_expectations.get(key)
        if uids is not None:
            uids.discard(uid)

    # --- reconcile --------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        if key.startswith(ORPHAN_PREFIX):
            await self._sync_orphan_pod(key[len(ORPHAN_PREFIX):])
            return
        cached = self.jobs.store.get(key)
        if cached is None:
            self.expectations.forget(key)
            self.finalizer_expectations.pop(key, None)
            self.backoff_records.pop(key, None)
            return
        managed_by = _spec(cached).get("managedBy")
        if managed_by is not None and managed_by != JOB_CONTROLLER_NAME:
            return
        if job_finished_condition(cached):
            self.backoff_records.pop(key, None)
            return
        job = copy.deepcopy(cached)
        if _spec(job).get("completionMode") not in (None, "NonIndexed", "Indexed"):
            await self.ctx.recorder.event(job, "Warning", "UnknownCompletionMode",
                                          "Skipped Job sync because completion mode is unknown")
            return
        await self._sync_job(key, job)

    async def _sync_orphan_pod(self, pod_key: str) -> None:
        pod = self.pods.store.get(pod_key)
        if pod is None:
            return
        ref = _controller_ref(pod)
        if ref is not None:
            if ref.get("kind") != "Job" or ref.get("apiVersion") != "batch/v1":
                return
            job = self._resolve(pod["metadata"].get("namespace", ""), ref)
            if job is not None:
                managed_by = _spec(job).get("managedBy")
                if managed_by is not None and managed_by != JOB_CONTROLLER_NAME:
                    return
                if not job_finished_condition(job):
                    return  # adopted: its Job counts it
        await self._remove_finalizer(pod)

    async def _remove_finalizer(self, pod: Obj) -> None:
        if not has_tracking_finalizer(pod):
            return
        meta = pod["metadata"]
        await self.client.patch(self.pod_info, meta["name"],
                                {"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}},
                                meta.get("namespace", ""), patch_type="strategic")

    async def _sync_job(self, key: str, job: Obj) -> None:
        status = job.setdefault("status", {})
        uncounted = _uncounted(job)
        satisfied = self.expectations.satisfied(key)
        pods = await self._pods_for_job(job)
        active_pods = [p for p in pods if is_pod_active(p)]
        jctx = _SyncContext(
            job=job, pods=pods, active_pods=active_pods, ready=sum(1 for p in active_pods if is_pod_ready(p)),
            terminating=sum(1 for p in pods if is_pod_terminating(p)),
            uncounted_succeeded=set(uncounted["succeeded"]), uncounted_failed=set(uncounted["failed"]),
            expected_rm_finalizers=set(self.finalizer_expectations.get(key, set())))
        active = len(active_pods)
        new_succeeded, new_failed = self._new_finished_pods(jctx)
        jctx.succeeded = (status.get("succeeded") or 0) + len(new_succeeded) + len(jctx.uncounted_succeeded)
        policy = _spec(job).get("podFailurePolicy")
        counted_failed = sum(1 for p in new_failed if match_pod_failure_policy(policy, p)[1])
        jctx.failed = (status.get("failed") or 0) + counted_failed + len(jctx.uncounted_failed)
        now = self.now()
        if not status.get("startTime") and not _suspended(job):
            status["startTime"] = format_time(now)
        jctx.backoff = next_backoff_record(self.backoff_records.get(key, BackoffRecord()), new_succeeded,
                                           new_failed)
        manage_error: Exception | None = None
        spec = _spec(job)
        conditions: list[Obj] = status.setdefault("conditions", [])

        success_met = _find_condition(conditions, "SuccessCriteriaMet")
        jctx.finished_condition = success_met if success_met and success_met.get("status") == "True" else None
        if jctx.finished_condition is None:
            target = _find_condition(conditions, "FailureTarget")
            if target is not None and target.get("status") == "True":
                jctx.finished_condition = _new_condition("Failed", "True", target.get("reason", ""),
                                                         target.get("message", ""), now)
            else:
                message = self._fail_job_message(job, pods)
                if message is not None:
                    jctx.finished_condition = _new_condition("FailureTarget", "True", "PodFailurePolicy",
                                                             message, now)
        if jctx.finished_condition is None:
            if jctx.failed > (spec.get("backoffLimit") or 0) or self._past_backoff_limit_on_failure(job, pods):
                jctx.finished_condition = _new_condition("FailureTarget", "True", "BackoffLimitExceeded",
                                                         "Job has reached the specified backoff limit", now)
            elif self._past_active_deadline(job, now):
                jctx.finished_condition = _new_condition("FailureTarget", "True", "DeadlineExceeded",
                                                         "Job was active longer than specified deadline", now)
            elif spec.get("activeDeadlineSeconds") is not None and not _suspended(job):
                started = parse_time(status.get("startTime")) or now
                self.queue.add_after(key, spec["activeDeadlineSeconds"] - (now - started).total_seconds())

        if _is_indexed(job):
            jctx.prev_succeeded_indexes, jctx.succeeded_indexes = self._succeeded_indexes(job, pods)
            jctx.succeeded = intervals_total(jctx.succeeded_indexes)
            if _has_backoff_limit_per_index(job):
                jctx.failed_indexes = self._failed_indexes(job, pods)
                if jctx.finished_condition is None:
                    max_failed = spec.get("maxFailedIndexes")
                    failed_total = intervals_total(jctx.failed_indexes)
                    if max_failed is not None and failed_total > max_failed:
                        jctx.finished_condition = _new_condition(
                            "FailureTarget", "True", "MaxFailedIndexesExceeded",
                            "Job has exceeded the specified maximal number of failed indexes", now)
                    elif failed_total > 0 and failed_total + intervals_total(jctx.succeeded_indexes) >= \
                            _completions(job):
                        jctx.finished_condition = _new_condition("FailureTarget", "True", "FailedIndexes",
                                                                 "Job has failed indexes", now)
                jctx.delayed_deletion = self._pods_with_delayed_deletion(jctx)
            if jctx.finished_condition is None:
                matched = match_success_policy(spec.get("successPolicy"), _completions(job),
                                               jctx.succeeded_indexes)
                if matched is not None:
                    jctx.finished_condition = _new_condition("SuccessCriteriaMet", "True", "SuccessPolicy",
                                                             matched, now)

        suspend_changed = False
        if jctx.finished_condition is not None:
            deleted_ready, deleted, manage_error = await self._delete_active_pods(job, jctx.active_pods)
            if deleted != active or not satisfied:
                # Pods may still be on their way into the cache, or keep finalizers: not finished yet.
                jctx.finished_condition = None
            active -= deleted
            jctx.terminating += deleted
            jctx.ready -= deleted_ready
        else:
            manage_called = False
            if satisfied and not _deleting(job):
                active, manage_error = await self._manage_job(key, job, jctx)
                manage_called = True
            if spec.get("completions") is None:
                complete = jctx.succeeded > 0 and active == 0
            else:
                complete = jctx.succeeded >= spec["completions"] and active == 0
            if complete:
                jctx.finished_condition = _new_condition("SuccessCriteriaMet", "True", "CompletionsReached",
                                                         "Reached expected number of succeeded pods", now)
            elif manage_called:
                if _suspended(job):
                    if _ensure_condition(conditions, "Suspended", "True", "JobSuspended", "Job suspended", now):
                        suspend_changed = True
                        await self.ctx.recorder.event(job, "Normal", "Suspended", "Job suspended")
                elif _ensure_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed", now):
                    suspend_changed = True
                    await self.ctx.recorder.event(job, "Normal", "Resumed", "Job resumed")
                    # activeDeadlineSeconds counts continuous activity: a resumed Job starts afresh.
                    status["startTime"] = format_time(now)

        needs_update = (suspend_changed or active != (status.get("active") or 0)
                        or status.get("ready") != jctx.ready or status.get("terminating") != jctx.terminating)
        status["active"] = active
        status["ready"] = jctx.ready
        status["terminating"] = jctx.terminating
        await self._track_status_and_remove_finalizers(key, jctx, needs_update)
        if manage_error is not None:
            raise manage_error

    # --- pods of a Job ----------------------------------------------------------------------------
    async def _pods_for_job(self, job: Obj) -> list[Obj]:
        """ClaimPods: our pods that still match, plus orphans that match (adopted, with the finalizer);
        pods that stopped matching are released."""
        meta = job["metadata"]
        namespace, uid = meta.get("namespace", ""), _uid(job)
        selector = LabelSelector.from_dict(_spec(job).get("selector"))
        claimed: list[Obj] = []
        fresh_checked: bool | None = None
        for pod in self.pods.store.by_index("namespace", namespace):
            pmeta = pod.get("metadata") or {}
            matches = selector.matches(pmeta.get("labels") or {})
            ref = _controller_ref(pod)
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches:
                    claimed.append(pod)
                elif not _deleting(job):
                    await self._release(pod, uid)
                continue
            if _deleting(job) or not matches or _deleting(pod):
                continue
            if fresh_checked is None:
                # Adopt only if a quorum read still shows this Job alive (RecheckDeletionTimestamp).
                fresh = await self.client.get(self.job_info, meta["name"], namespace)
                fresh_checked = _uid(fresh) == uid and not _deleting(fresh)
            if not fresh_checked:
                continue
            adopted = await self._adopt(job, pod)
            if adopted is not None:
                if not has_tracking_finalizer(adopted):
                    adopted = copy.deepcopy(adopted)
                    adopted["metadata"].setdefault("finalizers", []).append(TRACKING_FINALIZER)
                claimed.append(adopted)
        return claimed

    def _controller_ref_for(self, job: Obj) -> Obj:
        return {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": _uid(job),
                "controller": True, "blockOwnerDeletion": True}

    async def _adopt(self, job: Obj, pod: Obj) -> Obj | None:
        patch = {"metadata": {"ownerReferences": [self._controller_ref_for(job)], "uid": _uid(pod),
                              "finalizers": [TRACKING_FINALIZER]}}
        try:
            return await self.client.patch(self.pod_info, pod["metadata"]["name"], patch,
                                           pod["metadata"].get("namespace", ""), patch_type="strategic")
        except APIError as err:
            if err.not_found:
                return None
            raise

    async def _release(self, pod: Obj, job_uid: str) -> None:
        patch = {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": job_uid}], "uid": _uid(pod)}}
        try:
            await self.client.patch(self.pod_info, pod["metadata"]["name"], patch,
                                    pod["metadata"].get("namespace", ""), patch_type="strategic")
        except APIError as err:
            if not (err.not_found or err.status == 422):
                raise

    def _new_finished_pods(self, jctx: _SyncContext) -> tuple[list[Obj], list[Obj]]:
        succeeded = self._valid_pods(jctx, jctx.uncounted_succeeded, lambda p: _phase(p) == "Succeeded")
        failed = self._valid_pods(jctx, jctx.uncounted_failed, lambda p: is_pod_failed(p, jctx.job))
        return succeeded, failed

    @staticmethod
    def _valid_pods(jctx: _SyncContext, uncounted: set[str], keep: Callable[[Obj], bool]) -> list[Obj]:
        """Pods not yet counted (finalizer still on, not in uncounted) with a valid index, that pass `keep`."""
        result = []
        for pod in jctx.pods:
            uid = _uid(pod)
            if not has_tracking_finalizer(pod) or uid in uncounted or uid in jctx.expected_rm_finalizers:
                continue
            if _is_indexed(jctx.job):
                index = completion_index(pod)
                if index == UNKNOWN_INDEX or index >= _completions(jctx.job):
                    continue
            if keep(pod):
                result.append(pod)
        return result

    @staticmethod
    def _fail_job_message(job: Obj, pods: list[Obj]) -> str | None:
        policy = _spec(job).get("podFailurePolicy")
        if policy is None:
            return None
        for pod in pods:
            if is_pod_failed(pod, job):
                message = match_pod_failure_policy(policy, pod)[0]
                if message is not None:
                    return message
        return None

    @staticmethod
    def _past_backoff_limit_on_failure(job: Obj, pods: list[Obj]) -> bool:
        """With restartPolicy OnFailure the kubelet retries in place: count container restarts instead."""
        template_spec = (_spec(job).get("template") or {}).get("spec") or {}
        if template_spec.get("restartPolicy") != "OnFailure":
            return False
        restarts = 0
        for pod in pods:
            if _phase(pod) in ("Running", "Pending"):
                status = pod.get("status") or {}
                for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
                    restarts += cs.get("restartCount") or 0
        limit = _spec(job).get("backoffLimit") or 0
        return restarts > 0 if limit == 0 else restarts >= limit

    def _past_active_deadline(self, job: Obj, now: datetime) -> bool:
        deadline = _spec(job).get("activeDeadlineSeconds")
        started = parse_time((job.get("status") or {}).get("startTime"))
        if deadline is None or started is None or _suspended(job):
            return False
        return (now - started).total_seconds() >= deadline

    # --- indexes ----------------------------------------------------------------------------------
    @staticmethod
    def _succeeded_indexes(job: Obj, pods: list[Obj]) -> tuple[Intervals, Intervals]:
        completions = _completions(job)
        previous = parse_indexes((job.get("status") or {}).get("completedIndexes"), completions)
        new = {completion_index(p) for p in pods
               if _phase(p) == "Succeeded" and has_tracking_finalizer(p)
               and UNKNOWN_INDEX != completion_index(p) < completions}
        return previous, with_indexes(previous, new)

    @staticmethod
    def _is_index_failed(job: Obj, pod: Obj) -> bool:
        counted = False
        if is_pod_failed(pod, job):
            policy = _spec(job).get("podFailurePolicy")
            if policy is not None:
                _, count, action = match_pod_failure_policy(policy, pod)
                if action == "FailIndex":
                    return True
                counted = count
            else:
                counted = True
        return counted and _annotation_int(pod, INDEX_FAILURE_COUNT_ANNOTATION) >= \
            (_spec(job).get("backoffLimitPerIndex") or 0)

    def _failed_indexes(self, job: Obj, pods: list[Obj]) -> Intervals:
        completions = _completions(job)
        previous = parse_indexes((job.get("status") or {}).get("failedIndexes"), completions)
        new = [completion_index(p) for p in pods
               if self._is_index_failed(job, p) and has_tracking_finalizer(p)
               and UNKNOWN_INDEX != completion_index(p) < completions]
        return with_indexes(previous, new)

    def _pods_with_delayed_deletion(self, jctx: _SyncContext) -> dict[int, Obj]:
        """The last failed pod of each index still to be retried keeps its finalizer until its
        replacement exists, so the replacement can inherit its failure count."""
        active_indexes = {completion_index(p) for p in jctx.active_pods}
        result: dict[int, Obj] = {}
        for pod in self._valid_pods(jctx, set(), lambda p: is_pod_failed(p, jctx.job)):
            index = completion_index(pod)
            if (intervals_has(jctx.succeeded_indexes, index) or intervals_has(jctx.failed_indexes, index)
                    or index in active_indexes):
                continue
            last = result.get(index)
            if last is None or (_absolute_failures(last) <= _absolute_failures(pod)
                                and pod_finished_time(pod) >= pod_finished_time(last)):
                result[index] = pod
        return result

    @staticmethod
    def _first_pending_indexes(jctx: _SyncContext, count: int, completions: int) -> list[int]:
        if count == 0:
            return []
        non_pending = with_indexes(jctx.succeeded_indexes, (completion_index(p) for p in jctx.active_pods))
        if jctx.failed_indexes:
            non_pending = merge_intervals([*non_pending, *jctx.failed_indexes])
        if _only_replace_failed_pods(jctx.job):
            non_pending = with_indexes(non_pending,
                                       (completion_index(p) for p in jctx.pods if is_pod_terminating(p)))
        result: list[int] = []
        candidate = 0
        for first, last in non_pending:
            while candidate < completions and len(result) < count and candidate < first:
                result.append(candidate)
                candidate += 1
            candidate = max(candidate, last + 1)
        while candidate < completions and len(result) < count:
            result.append(candidate)
            candidate += 1
        return result

    # --- creating and deleting pods ---------------------------------------------------------------
    async def _manage_job(self, key: str, job: Obj, jctx: _SyncContext) -> tuple[int, Exception | None]:
        active = len(jctx.active_pods)
        spec = _spec(job)
        parallelism = spec.get("parallelism") or 0
        if _suspended(job):
            doomed = self._pods_for_removal(job, jctx.active_pods, active)
            self.expectations.expect(key, deletes=len(doomed))
            removed_ready, removed, err = await self._delete_job_pods(key, job, doomed)
            jctx.terminating += removed
            jctx.ready -= removed_ready
            return active - removed, err
        if spec.get("completions") is None:
            # Work-queue Jobs: once one pod succeeded, leave the rest to finish; start no more.
            want = active if jctx.succeeded > 0 else parallelism
        else:
            want = max(min(spec["completions"] - jctx.succeeded, parallelism), 0)
        doomed = self._pods_for_removal(job, jctx.active_pods, max(active - want, 0))
        doomed = doomed[:MAX_POD_CREATE_DELETE_PER_SYNC]
        if doomed:
            # Deletion takes precedence over creation within one sync.
            self.expectations.expect(key, deletes=len(doomed))
            removed_ready, removed, err = await self._delete_job_pods(key, job, doomed)
            jctx.terminating += removed
            jctx.ready -= removed_ready
            return active - removed, err
        terminating = jctx.terminating if _only_replace_failed_pods(job) else 0
        diff = want - terminating - active
        if diff <= 0:
            return active, None
        now = self.now()
        if not _has_backoff_limit_per_index(job):
            remaining = backoff_remaining(now, self.pod_failure_backoff, self.max_pod_failure_backoff,
                                          jctx.backoff.failures_after_last_success, jctx.backoff.last_failure)
            if remaining > 0:
                self.queue.add_after(key, max(remaining, self.sync_batch_period))
                return 0, None
        diff = min(diff, MAX_POD_CREATE_DELETE_PER_SYNC)
        indexes: list[int] = []
        if _is_indexed(job):
            indexes = self._first_pending_indexes(jctx, diff, _completions(job))
            if _has_backoff_limit_per_index(job):
                indexes, wait = self._indexes_ready_to_create(indexes, jctx.delayed_deletion, now)
                if wait > 0:
                    self.queue.add_after(key, max(wait, self.sync_batch_period))
                    return 0, None
            diff = len(indexes)
        if diff == 0:
            return active, None
        self.expectations.expect(key, adds=diff)
        template = copy.deepcopy(spec.get("template") or {})
        if _is_indexed(job):
            _add_completion_index_env(template)
        tmeta = template.setdefault("metadata", {})
        if TRACKING_FINALIZER not in (tmeta.get("finalizers") or []):
            tmeta["finalizers"] = [*(tmeta.get("finalizers") or []), TRACKING_FINALIZER]
        active += diff
        errors: list[Exception] = []
        # Slow start: batches of 1, 2, 4... so a systematic failure costs few requests.
        batch = min(diff, SLOW_START_INITIAL_BATCH)
        while diff > 0:
            chunk, indexes = indexes[:batch], indexes[batch:]
            names = chunk if chunk else [UNKNOWN_INDEX] * batch
            results = await asyncio.gather(*(self._create_pod(job, template, ix, jctx) for ix in names),
                                           return_exceptions=True)
            failures = [r for r in results if isinstance(r, Exception)]
            for _ in failures:
                self.expectations.observed(key, adds=1)
            active -= len(failures)
            errors.extend(failures)
            skipped = diff - batch
            if failures and skipped > 0:
                # The rest is retried on a later sync; do not wait for pods never asked for.
                active -= skipped
                self.expectations.observed(key, adds=skipped)
                break
            diff -= batch
            batch = min(2 * batch, diff)
        return active, (errors[0] if errors else None)

    def _indexes_ready_to_create(self, indexes: list[int], delayed: dict[int, Obj],
                                 now: datetime) -> tuple[list[int], float]:
        ready: list[int] = []
        wait: float | None = None
        for index in indexes:
            last_failed = delayed.get(index)
            remaining = 0.0
            if last_failed is not None:
                remaining = backoff_remaining(now, self.pod_failure_backoff, self.max_pod_failure_backoff,
                                              _absolute_failures(last_failed) + 1, pod_finished_time(last_failed))
            if remaining == 0:
                ready.append(index)
            elif wait is None or remaining < wait:
                wait = remaining
        return (ready, 0.0) if ready else (ready, wait or 0.0)

    async def _create_pod(self, job: Obj, template: Obj, index: int, jctx: _SyncContext) -> None:
        meta = job["metadata"]
        generate_name = f"{meta['name']}-"
        if index != UNKNOWN_INDEX:
            template = copy.deepcopy(template)
            tmeta = template.setdefault("metadata", {})
            tmeta.setdefault("annotations", {})[COMPLETION_INDEX_ANNOTATION] = str(index)
            tmeta.setdefault("labels", {})[COMPLETION_INDEX_ANNOTATION] = str(index)
            template.setdefault("spec", {})["hostname"] = f"{meta['name']}-{index}"
            generate_name = pod_generate_name(meta["name"], index)
            if _has_backoff_limit_per_index(job):
                failures, ignored = _new_index_failure_counts(job, jctx.delayed_deletion.get(index))
                tmeta["annotations"][INDEX_FAILURE_COUNT_ANNOTATION] = str(failures)
                if ignored > 0:
                    tmeta["annotations"][INDEX_IGNORED_FAILURE_COUNT_ANNOTATION] = str(ignored)
        tmeta = template.get("metadata") or {}
        pod_meta: Obj = {"generateName": generate_name, "namespace": meta.get("namespace", ""),
                         "ownerReferences": [self._controller_ref_for(job)]}
        for key in ("labels", "annotations", "finalizers"):
            if tmeta.get(key):
                pod_meta[key] = copy.deepcopy(tmeta[key])
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
               "spec": copy.deepcopy(template.get("spec") or {})}
        try:
            created = await self.client.create(self.pod_info, pod)
        except APIError as err:
            if _namespace_terminating(err):
                return  # everything created in a namespace being torn down fails: nothing to report
            await self.ctx.recorder.event(job, "Warning", "FailedCreate", f"Error creating: {err}")
            raise
        await self.ctx.recorder.event(job, "Normal", "SuccessfulCreate",
                                      f"Created pod: {created['metadata']['name']}")

    def _pods_for_removal(self, job: Obj, pods: list[Obj], at_least: int) -> list[Obj]:
        """activePodsForRemoval: duplicated or out-of-range indexes first, then the earliest-stage pods."""
        remove: list[Obj] = []
        left = pods
        if _is_indexed(job):
            remove, left = [], []
            completions = _completions(job)
            by_index: dict[int, list[Obj]] = {}
            for pod in pods:
                index = completion_index(pod)
                if index == UNKNOWN_INDEX or index >= completions:
                    remove.append(pod)
                else:
                    by_index.setdefault(index, []).append(pod)
            for index in sorted(by_index):
                same = sorted(by_index[index], key=_removal_order)
                remove.extend(same[:-1])
                left.append(same[-1])
        if len(remove) < at_least:
            remove.extend(sorted(left, key=_removal_order)[:at_least - len(remove)])
        return remove

    async def _delete_job_pods(self, key: str, job: Obj, pods: list[Obj]) -> tuple[int, int, Exception | None]:
        """deleteJobPods: drop the finalizer (the pod is not counted), then delete."""
        async def one(pod: Obj) -> tuple[bool, bool]:
            try:
                await self._remove_finalizer(pod)
                await self._delete_pod(job, pod)
            except APIError as err:
                self.expectations.observed(key, deletes=1)
                if not err.not_found:
                    raise
            return True, is_pod_ready(pod)
        return await self._gather_deletions(pods, one)

    async def _delete_active_pods(self, job: Obj, pods: list[Obj]) -> tuple[int, int, Exception | None]:
        """deleteActivePods: delete keeping finalizers; the pods are counted as they go."""
        async def one(pod: Obj) -> tuple[bool, bool]:
            try:
                await self._delete_pod(job, pod)
            except APIError as err:
                if not err.not_found:
                    raise
            return True, is_pod_ready(pod)
        return await self._gather_deletions(pods, one)

    @staticmethod
    async def _gather_deletions(pods: list[Obj], one: Callable[[Obj], Any]) -> tuple[int, int, Exception | None]:
        results = await asyncio.gather(*(one(p) for p in pods), return_exceptions=True)
        deleted = ready = 0
        error: Exception | None = None
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, Exception):
                error = error or result
            else:
                deleted += 1
            if is_pod_ready(pod):
                ready += 1
        return ready, deleted, error

    async def _delete_pod(self, job: Obj, pod: Obj) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete(self.pod_info, meta["name"], meta.get("namespace", ""))
        except APIError as err:
            if not err.not_found:
                await self.ctx.recorder.event(job, "Warning", "FailedDelete", f"Error deleting: {err}")
            raise
        await self.ctx.recorder.event(job, "Normal", "SuccessfulDelete", f"Deleted pod: {meta['name']}")

    # --- status with finalizers -------------------------------------------------------------------
    async def _track_status_and_remove_finalizers(self, key: str, jctx: _SyncContext, needs_flush: bool) -> None:
        """trackJobStatusAndRemoveFinalizers: uncounted UIDs first, finalizers next, counters last."""
        job = jctx.job
        indexed = _is_indexed(job)
        uncounted = _uncounted(job)
        if indexed:
            jctx.pods = _by_completion_index(jctx.pods)
        with_finalizer = {_uid(p) for p in jctx.pods
                          if has_tracking_finalizer(p) and _uid(p) not in jctx.expected_rm_finalizers}
        if _clean_uncounted(job, with_finalizer):
            needs_flush = True
        to_release: list[Obj] = []
        new_succeeded_indexes: list[int] = []
        reached_max = False
        policy = _spec(job).get("podFailurePolicy")
        finished = jctx.finished_condition
        job_failing = finished is not None and finished.get("type") != "SuccessCriteriaMet"
        for pod in jctx.pods:
            uid = _uid(pod)
            if not has_tracking_finalizer(pod) or uid in jctx.expected_rm_finalizers:
                continue  # counted by an earlier sync
            failed = is_pod_failed(pod, job)
            if not self._can_remove_finalizer(jctx, pod, failed):
                continue
            to_release.append(pod)
            index = completion_index(pod)
            if _phase(pod) == "Succeeded" and uid not in jctx.uncounted_failed:
                if indexed:
                    # The index alone prevents counting a success twice.
                    if UNKNOWN_INDEX != index < _completions(job) and \
                            not intervals_has(jctx.prev_succeeded_indexes, index):
                        new_succeeded_indexes.append(index)
                        needs_flush = True
                elif uid not in jctx.uncounted_succeeded:
                    uncounted["succeeded"].append(uid)
                    needs_flush = True
            elif failed or job_failing:
                # Once the Job is failing, every pod that did not succeed counts as failed.
                if uid not in jctx.uncounted_failed and (not indexed or UNKNOWN_INDEX != index < _completions(job)):
                    if match_pod_failure_policy(policy, pod)[1]:
                        uncounted["failed"].append(uid)
                        needs_flush = True
            if len(new_succeeded_indexes) + len(uncounted["succeeded"]) + len(uncounted["failed"]) >= \
                    MAX_UNCOUNTED_PODS:
                # Keep the status small and let other Jobs sync; the rest comes on the next pass.
                reached_max = True
                break
        status = job["status"]
        if indexed:
            jctx.succeeded_indexes = with_indexes(jctx.succeeded_indexes, new_succeeded_indexes)
            text = format_indexes(jctx.succeeded_indexes)
            if text != (status.get("completedIndexes") or ""):
                needs_flush = True
            status["succeeded"] = intervals_total(jctx.succeeded_indexes)
            status["completedIndexes"] = text
            failed_text = format_indexes(jctx.failed_indexes) if jctx.failed_indexes is not None else None
            if status.get("failedIndexes") != failed_text:
                status["failedIndexes"] = failed_text
                needs_flush = True
        now = self.now()
        if finished is not None and finished.get("type") == "FailureTarget":
            status.setdefault("conditions", []).append(finished)
            needs_flush = True
            finished = _new_condition("Failed", "True", finished.get("reason", ""), finished.get("message", ""), now)
        if finished is not None and finished.get("type") == "SuccessCriteriaMet":
            met = _find_condition(status.setdefault("conditions", []), "SuccessCriteriaMet")
            if met is None or met.get("status") != "True":
                status["conditions"].append(finished)
                needs_flush = True
            finished = _new_condition("Complete", "True", finished.get("reason", ""), finished.get("message", ""),
                                      now)
        jctx.finished_condition = finished
        job, needs_flush = await self._flush_and_remove_finalizers(key, jctx, to_release, with_finalizer,
                                                                   needs_flush)
        jctx.job = job
        job_finished = not reached_max and self._enact_finished(jctx, now)
        if job_finished:
            needs_flush = True
        if needs_flush:
            jctx.job = await self._update_status(jctx.job)
            if job_finished and finished is not None:
                self.backoff_records.pop(key, None)
                await self._record_finished(jctx.job, finished)

    @staticmethod
    def _can_remove_finalizer(jctx: _SyncContext, pod: Obj, failed: bool) -> bool:
        if _deleting(jctx.job) or jctx.finished_condition is not None or _phase(pod) == "Succeeded":
            return True
        if not failed:
            return False
        if _has_backoff_limit_per_index(jctx.job):
            delayed = jctx.delayed_deletion.get(completion_index(pod))
            if delayed is not None and _uid(delayed) == _uid(pod):
                return False
        return True

    async def _flush_and_remove_finalizers(self, key: str, jctx: _SyncContext, pods: list[Obj],
                                           with_finalizer: set[str], needs_flush: bool) -> tuple[Obj, bool]:
        job = jctx.job
        if needs_flush:
            job = jctx.job = await self._update_status(job)
            self.backoff_records[key] = jctx.backoff
            needs_flush = False
        error: Exception | None = None
        if pods:
            expected = self.finalizer_expectations.setdefault(key, set())
            expected.update(_uid(p) for p in pods)

            async def release(pod: Obj) -> bool:
                try:
                    await self._remove_finalizer(pod)
                except APIError as err:
                    expected.discard(_uid(pod))
                    if not err.not_found:
                        raise
                return True

            results = await asyncio.gather(*(release(p) for p in pods), return_exceptions=True)
            for pod, result in zip(pods, results, strict=True):
                if isinstance(result, Exception):
                    error = error or result
                else:
                    with_finalizer.discard(_uid(pod))
        if _clean_uncounted(job, with_finalizer):
            needs_flush = True
        if error is not None:
            if needs_flush:
                await self._update_status(job)
            raise error
        return job, needs_flush

    def _enact_finished(self, jctx: _SyncContext, now: datetime) -> bool:
        finished = jctx.finished_condition
        if finished is None:
            return False
        uncounted = _uncounted(jctx.job)
        if uncounted["succeeded"] or uncounted["failed"]:
            return False
        if jctx.terminating > 0:
            return False  # the terminal condition waits for every pod to be gone
        status = jctx.job["status"]
        conditions = status.setdefault("conditions", [])
        _ensure_condition(conditions, finished["type"], finished["status"], finished.get("reason", ""),
                          finished.get("message", ""), now)
        if finished["type"] == "Complete":
            status["completionTime"] = finished["lastTransitionTime"]
        return True

    async def _record_finished(self, job: Obj, finished: Obj) -> None:
        if finished["type"] == "Complete":
            completions = _spec(job).get("completions")
            if completions is not None and ((job.get("status") or {}).get("succeeded") or 0) > completions:
                await self.ctx.recorder.event(job, "Warning", "TooManySucceededPods",
                                              "Too many succeeded pods running after completion count reached")
            await self.ctx.recorder.event(job, "Normal", "Completed", "Job completed")
        else:
            await self.ctx.recorder.event(job, "Warning", finished.get("reason", ""), finished.get("message", ""))

    async def _update_status(self, job: Obj) -> Obj:
        body = copy.deepcopy(job)
        body["status"] = _wire_status(body.get("status") or {})
        updated = await self.client.update(self.job_info, body, "status")
        _uncounted(updated)
        return updated


def _clean_uncounted(job: Obj, with_finalizer: set[str]) -> bool:
    """cleanUncountedPodsWithoutFinalizers: UIDs whose finalizer is gone move into the counters."""
    status = job["status"]
    uncounted = _uncounted(job)
    changed = False
    for name in ("succeeded", "failed"):
        kept = [uid for uid in uncounted[name] if uid in with_finalizer]
        if len(kept) != len(uncounted[name]):
            status[name] = (status.get(name) or 0) + len(uncounted[name]) - len(kept)
            uncounted[name] = kept
            changed = True
    return changed


def _wire_status(status: Obj) -> Obj:
    """The status as the API serializes it: zero counters and empty lists omitted (omitempty)."""
    out = {k: v for k, v in status.items()
           if not (k in ("active", "succeeded", "failed") and not v)
           and not (k in ("completedIndexes", "conditions") and not v)
           and not (k == "failedIndexes" and v is None)}
    uncounted = status.get("uncountedTerminatedPods") or {}
    out["uncountedTerminatedPods"] = {k: v for k, v in uncounted.items() if v}
    return out


def _absolute_failures(pod: Obj) -> int:
    return _annotation_int(pod, INDEX_FAILURE_COUNT_ANNOTATION) + \
        _annotation_int(pod, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION)


def _new_index_failure_counts(job: Obj, replaced: Obj | None) -> tuple[int, int]:
    """The failure counts a replacement pod inherits from the failed pod of its index."""
    if replaced is None:
        return 0, 0
    failures = _annotation_int(replaced, INDEX_FAILURE_COUNT_ANNOTATION)
    ignored = _annotation_int(replaced, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION)
    if match_pod_failure_policy(_spec(job).get("podFailurePolicy"), replaced)[1]:
        failures += 1
    else:
        ignored += 1
    return failures, ignored


def _add_completion_index_env(template: Obj) -> None:
    spec = template.setdefault("spec", {})
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        env = container.setdefault("env", [])
        if any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
            continue
        env.append({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}})


def _namespace_terminating(err: APIError) -> bool:
    causes = ((err.body or {}).get("details") or {}).get("causes") or []
    return any(c.get("reason") == "NamespaceTerminating" for c in causes)


def match_success_policy(policy: Obj | None, completions: int, succeeded: Intervals) -> str | None:
    """matchSuccessPolicy: the message of the first rule the succeeded indexes satisfy, else None."""
    if not policy or not succeeded:
        return None
    for index, rule in enumerate(policy.get("rules") or []):
        count = rule.get("succeededCount")
        if rule.get("succeededIndexes") is not None:
            required = parse_indexes(rule["succeededIndexes"], completions)
            if not required:
                continue
            hits = sum(1 for first, last in required for ix in range(first, last + 1)
                       if intervals_has(succeeded, ix))
            if (count is not None and hits >= count) or (count is None and hits == intervals_total(required)):
                return f"Matched rules at index {index}"
        elif count is not None and intervals_total(succeeded) >= count:
            return f"Matched rules at index {index}"
    return None

