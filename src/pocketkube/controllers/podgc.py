"""Pod garbage collector, as upstream's pkg/controller/podgc: a periodic sweep over the pod cache.

Each pass (every 20 s):
- terminated pods (phase other than Pending/Running/Unknown) beyond the threshold are deleted, evicted
  ones first, then oldest first;
- terminating pods on a NotReady node tainted node.kubernetes.io/out-of-service are force-deleted;
- pods bound to a node that does not exist are force-deleted once the node has stayed missing for the
  quarantine (40 s) and a live GET confirms it is gone, with a DisruptionTarget condition;
- terminating pods that were never scheduled are force-deleted.
A pod that is not yet Succeeded/Failed is marked Failed before the force deletion, since no kubelet
will ever do it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from pocketkube.client.rest import APIError
from pocketkube.client.workqueue import WorkQueue
from pocketkube.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)
Obj = dict[str, Any]

GC_KEY = "gc"
FIELD_MANAGER = "PodGC"
OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"
ORPHAN_CONDITION = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                    "message": "PodGC: node no longer exists"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_terminated(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Pending", "Running", "Unknown")


def _is_evicted(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Failed" and status.get("reason") == "Evicted"


def eviction_then_age(pod: Obj) -> tuple[bool, str, str]:
    """Sort key: evicted pods first, then by creation time, then by name."""
    meta = pod["metadata"]
    return (not _is_evicted(pod), meta.get("creationTimestamp", ""), meta.get("name", ""))


def _node_ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


class PodGCController(Controller):
    name = "pod-garbage-collector"
    workers = 1  # one sweep at a time
    terminated_pod_threshold = 12500  # --terminated-pod-gc-threshold; 0 disables that part
    gc_period = 20.0
    quarantine = 40.0  # how long a node must stay missing before its pods are collected

    def __init__(self, ctx: ControllerContext, *, terminated_pod_threshold: int | None = None,
                 gc_period: float | None = None, quarantine: float | None = None) -> None:
        # An argument wins over the controller manager's --terminated-pod-gc-threshold, which wins over the class's.
        if terminated_pod_threshold is None:
            terminated_pod_threshold = ctx.settings.terminated_pod_gc_threshold
        if terminated_pod_threshold is not None:
            self.terminated_pod_threshold = terminated_pod_threshold
        if gc_period is not None:
            self.gc_period = gc_period
        if quarantine is not None:
            self.quarantine = quarantine
        # Node names enter with a delay (the quarantine) and are only seen once it has passed.
        self.node_queue = WorkQueue()
        super().__init__(ctx)

    def setup(self) -> None:
        self.pods = self.ctx.informer("", "v1", "pods")
        self.nodes = self.ctx.informer("", "v1", "nodes")
        self.pod_info = self.ctx.resource("", "v1", "pods")
        self.node_info = self.ctx.resource("", "v1", "nodes")
        self.queue.add(GC_KEY)

    async def reconcile(self, key: str) -> None:
        try:
            await self.gc()
        finally:
            self.queue.add_after(key, self.gc_period)

    async def gc(self) -> None:
        pods = self.pods.store.list()
        if self.terminated_pod_threshold > 0:
            await self._gc_terminated(pods)
        await self._gc_terminating(pods)
        await self._gc_orphaned(pods)
        await self._gc_unscheduled_terminating(pods)

    async def _gc_terminated(self, pods: list[Obj]) -> None:
        terminated = [p for p in pods if is_terminated(p)]
        excess = len(terminated) - self.terminated_pod_threshold
        if excess <= 0:
            return
        log.info("pod gc: garbage collecting %d terminated pods", excess)
        terminated.sort(key=eviction_then_age)
        await self._delete_all(terminated[:excess])

    async def _gc_terminating(self, pods: list[Obj]) -> None:
        doomed = []
        for pod in pods:
            if not pod["metadata"].get("deletionTimestamp"):
                continue
            node = self.nodes.store.get((pod.get("spec") or {}).get("nodeName") or "")
            if node is None:
                continue
            taints = (node.get("spec") or {}).get("taints") or []
            if not _node_ready(node) and any(t.get("key") == OUT_OF_SERVICE_TAINT for t in taints):
                doomed.append(pod)
        if doomed:
            log.info("pod gc: garbage collecting %d terminating pods on out-of-service nodes", len(doomed))
            doomed.sort(key=eviction_then_age)
            await self._delete_all(doomed)

    async def _gc_orphaned(self, pods: list[Obj]) -> None:
        existing = {n["metadata"]["name"] for n in self.nodes.store.list()}
        missing = {node for p in pods if (node := (p.get("spec") or {}).get("nodeName")) and node not in existing}
        for node_name in missing:
            self.node_queue.add_after(node_name, self.quarantine)
        deleted = await self._discover_deleted_nodes(existing)
        orphans = [p for p in pods if (p.get("spec") or {}).get("nodeName") in deleted]
        for pod in orphans:
            log.debug("pod gc: found orphaned pod %s/%s assigned to deleted node %s, deleting",
                     pod["metadata"].get("namespace"), pod["metadata"]["name"], pod["spec"]["nodeName"])
        await self._delete_all(orphans, ORPHAN_CONDITION)

    async def _discover_deleted_nodes(self, existing: set[str]) -> set[str]:
        """Node names whose quarantine is over and that a live GET confirms are gone."""
        deleted: set[str] = set()
        while len(self.node_queue) > 0:
            name = str(await self.node_queue.get())
            try:
                if name not in existing:
                    await self.client.get(self.node_info, name)
            except APIError as err:
                if err.not_found:
                    deleted.add(name)
                else:  # looked at again on a later pass if pods still point at it
                    log.warning("pod gc: cannot get node %s: %s", name, err)
            finally:
                self.node_queue.done(name)
        return deleted

    async def _gc_unscheduled_terminating(self, pods: list[Obj]) -> None:
        unscheduled = [p for p in pods
                       if p["metadata"].get("deletionTimestamp") and not (p.get("spec") or {}).get("nodeName")]
        await self._delete_all(unscheduled)

    async def _delete_all(self, pods: list[Obj], condition: Obj | None = None) -> None:
        results = await asyncio.gather(*(self.mark_failed_and_delete(p, condition) for p in pods),
                                       return_exceptions=True)
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("pod gc: deleting %s/%s failed: %s", pod["metadata"].get("namespace"),
                            pod["metadata"]["name"], result)

    async def mark_failed_and_delete(self, pod: Obj, condition: Obj | None = None) -> None:
        meta = pod["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        log.info("pod gc: force deleting pod %s/%s", namespace, name)
        try:
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                # No kubelet will ever finish this pod: record it as Failed (and why) before it goes.
                status: Obj = {"phase": "Failed"}
                if condition is not None:
                    status["conditions"] = [{**condition, "lastTransitionTime": _now()}]
                await self.client.patch(self.pod_info, name, {"status": status}, namespace,
                                        patch_type="strategic", subresource="status", field_manager=FIELD_MANAGER)
            await self.client.delete(self.pod_info, name, namespace, grace_period_seconds=0)
        except APIError as err:
            if not err.not_found:
                raise
