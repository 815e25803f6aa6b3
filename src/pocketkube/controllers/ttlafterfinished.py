"""TTL-after-finished controller, as upstream's pkg/controller/ttlafterfinished.

A finished Job (condition Complete or Failed is True) with spec.ttlSecondsAfterFinished is deleted,
with foreground cascading, that many seconds after it finished (the condition's lastTransitionTime).
Until then the key waits in the queue. Before deleting, the Job is read live, so a TTL changed at the
last moment is honoured, and the delete is conditioned on its UID.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller, ControllerContext, split_key

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def is_finished(job: Obj) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def needs_cleanup(job: Obj) -> bool:
    return (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None and is_finished(job)


def finish_time(job: Obj) -> datetime:
    """When the Job finished: its finished condition's lastTransitionTime (else status.completionTime)."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            stamp = cond.get("lastTransitionTime") or status.get("completionTime")
            if not stamp:
                meta = job["metadata"]
                raise ValueError(f"unable to find the time when the Job {meta.get('namespace')}/{meta['name']} "
                                 "finished")
            return _parse_time(stamp)
    raise ValueError(f"unable to find the status of the finished Job {job['metadata']['name']}")


def time_left(job: Obj, now: datetime) -> float:
    """Seconds until the Job's TTL expires (<= 0 once it has)."""
    ttl = int(job["spec"]["ttlSecondsAfterFinished"])
    finished = finish_time(job)
    if finished > now:
        log.warning("ttl-after-finished: Job %s/%s finished in the future (clock skew?); cleanup deferred",
                    job["metadata"].get("namespace"), job["metadata"]["name"])
    return (finished - now).total_seconds() + ttl


class TTLAfterFinishedController(Controller):
    name = "ttl-after-finished"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        super().__init__(ctx)

    def setup(self) -> None:
        self.jobs = self.ctx.informer("batch", "v1", "jobs")
        self.job_info = self.ctx.resource("batch", "v1", "jobs")
        self.jobs.add_handler(on_add=self._maybe_enqueue, on_update=lambda _old, new: self._maybe_enqueue(new))

    def _maybe_enqueue(self, job: Obj) -> None:
        if not job["metadata"].get("deletionTimestamp") and needs_cleanup(job):
            self.enqueue(job)

    def _expired(self, job: Obj, key: str) -> bool:
        """Whether the TTL has run out; if it has not yet, look again when it will have."""
        if job["metadata"].get("deletionTimestamp") or not needs_cleanup(job):
            return False
        remaining = time_left(job, self.clock())
        if remaining > 0:
            self.queue.add_after(key, remaining)
            return False
        return True

    async def reconcile(self, key: str) -> None:
        namespace, name = split_key(key)
        job = self.jobs.store.get(key)
        if job is None or not self._expired(job, key):
            return
        # The cached TTL may be stale: decide again on the live Job.
        try:
            fresh = await self.client.get(self.job_info, name, namespace)
        except APIError as err:
            if err.not_found:
                return
            raise
        if not self._expired(fresh, key):
            return
        log.info("ttl-after-finished: cleaning up Job %s", key)
        try:
            await self.client.delete(self.job_info, name, namespace, propagation_policy="Foreground",
                                     preconditions={"uid": fresh["metadata"]["uid"]})
        except APIError as err:
            if not err.not_found:
                raise
