"""Node lifecycle and taint-based eviction (pkg/controller/nodelifecycle and pkg/controller/tainteviction).

NodeLifecycleController:
- a node whose kubelet stops heartbeating (neither its Lease in kube-node-lease is renewed nor its Ready
  condition's heartbeat moves) for the grace period gets Ready/MemoryPressure/DiskPressure/PIDPressure
  = Unknown ("Kubelet stopped posting node status."), and its pods are marked not Ready;
- taints follow the conditions as upstream: NoExecute not-ready/unreachable from Ready (taint-based
  eviction) and the NoSchedule set of TaintNodesByCondition, plus node.kubernetes.io/unschedulable for
  cordoned nodes; taints go away when the condition clears.
As upstream, heartbeats are judged by when this controller *observed* them change, not by the
timestamps' values, so clock skew between nodes and the controller does not matter.

TaintEvictionController: pods on a node with NoExecute taints they do not tolerate are deleted at once;
pods that tolerate them for tolerationSeconds are deleted when that time has passed since the taint was
added (pods get 300 s for not-ready/unreachable by admission defaulting).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pocketkube.api.scheduling import tolerates
from pocketkube.client.events import EventRecorder
from pocketkube.client.informer import object_key
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller, split_key

Obj = dict[str, Any]
LEASE_NAMESPACE = "kube-node-lease"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
# TaintNodesByCondition: (condition, status) -> NoSchedule taint key.
CONDITION_TAINTS: dict[tuple[str, str], str] = {
    ("Ready", "False"): NOT_READY,
    ("Ready", "Unknown"): UNREACHABLE,
    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable",
    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
}
_MANAGED_NO_SCHEDULE = frozenset([*CONDITION_TAINTS.values(), UNSCHEDULABLE])
_MANAGED_NO_EXECUTE = frozenset([NOT_READY, UNREACHABLE])
_KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def condition(obj: Obj, ctype: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None)


def _node_ref(name: str) -> Obj:
    # Upstream records node events with the node's name as its UID (and kubectl describe looks them up so).
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "uid": name}}


def desired_taints(node: Obj, now: str) -> list[Obj]:
    """The node's taints with the controller-managed ones brought in line with its conditions and spec."""
    statuses = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    no_schedule = {key for (ctype, status), key in CONDITION_TAINTS.items() if statuses.get(ctype) == status}
    if (node.get("spec") or {}).get("unschedulable"):
        no_schedule.add(UNSCHEDULABLE)
    ready = statuses.get("Ready")
    no_execute = {NOT_READY} if ready == "False" else {UNREACHABLE} if ready == "Unknown" else set()
    wanted = {(k, "NoSchedule") for k in no_schedule} | {(k, "NoExecute") for k in no_execute}
    taints = []
    for taint in (node.get("spec") or {}).get("taints") or []:
        ident = (taint.get("key"), taint.get("effect"))
        managed = (ident[1] == "NoSchedule" and ident[0] in _MANAGED_NO_SCHEDULE) or \
                  (ident[1] == "NoExecute" and ident[0] in _MANAGED_NO_EXECUTE)
        if managed and ident not in wanted:
            continue
        wanted.discard(ident)
        taints.append(taint)
    for key, effect in sorted(wanted):
        # Only NoExecute taints carry timeAdded: eviction counts tolerationSeconds from it.
        taints.append({"key": key, "effect": effect, **({"timeAdded": now} if effect == "NoExecute" else {})})
    return taints



class _Rechecks:
    """At most one pending delayed look per key: re-adding a key on every event must not pile up timers."""

    def __init__(self, controller: Controller) -> None:
        self._queue = controller.queue
        self._due: dict[str, float] = {}

    def at(self, key: str, delay: float) -> None:
        now = time.monotonic()
        pending = self._due.get(key)
        if pending is not None and now < pending <= now + delay:
            return
        self._due[key] = now + delay
        self._queue.add_after(key, delay)

    def forget(self, key: str) -> None:
        self._due.pop(key, None)


class NodeLifecycleController(Controller):
    name = "node-lifecycle-controller"
    # node-monitor-grace-period and node-startup-grace-period (for nodes that never reported Ready).
    grace_period = 40.0
    startup_grace_period = 60.0

    @classmethod
    def with_options(cls, *, grace_period: float = 40.0,
                     startup_grace_period: float = 60.0) -> type[NodeLifecycleController]:
        """This controller with other periods (what kube-controller-manager's flags set)."""
        return type(cls.__name__, (cls,), {"grace_period": grace_period,
                                           "startup_grace_period": startup_grace_period})

    def setup(self) -> None:
        # The controller manager's flags, when given, win over the class's periods.
        settings = self.ctx.settings
        if settings.node_monitor_grace_period is not None:
            self.grace_period = settings.node_monitor_grace_period
        if settings.node_startup_grace_period is not None:
            self.startup_grace_period = settings.node_startup_grace_period
        self.nodes = self.ctx.informer("", "v1", "nodes")
        self.leases = self.ctx.informers.informer(self.ctx.resource("coordination.k8s.io", "v1", "leases"),
                                                  LEASE_NAMESPACE)
        self.pods = self.ctx.informer("", "v1", "pods")
        self.nodes_info = self.ctx.resource("", "v1", "nodes")
        self.pods_info = self.ctx.resource("", "v1", "pods")
        self.recorder = EventRecorder(self.client, "node-controller")
        self._rechecks = _Rechecks(self)
        # node -> (what was last seen: lease renewTime / Ready heartbeat, when it was seen, monotonic)
        self._lease_seen: dict[str, tuple[str, float]] = {}
        self._heartbeat_seen: dict[str, tuple[str, float]] = {}
        self.nodes.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new),
                               on_delete=self._forget)
        self.leases.add_handler(on_add=self._observe_lease, on_update=lambda _old, new: self._observe_lease(new))

    def _observe(self, seen: dict[str, tuple[str, float]], name: str, mark: str) -> None:
        if mark and (name not in seen or seen[name][0] != mark):
            seen[name] = (mark, time.monotonic())

    def _observe_lease(self, lease: Obj) -> None:
        # Renewals are only noted (with the time we saw them); the node's own expiry timer reads them.
        self._observe(self._lease_seen, lease["metadata"]["name"], (lease.get("spec") or {}).get("renewTime") or "")

    def _forget(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        self._lease_seen.pop(name, None)
        self._heartbeat_seen.pop(name, None)
        self._rechecks.forget(name)

    def _probe_time(self, name: str, node: Obj, now: float) -> float:
        """When this node was last seen alive; a node seen for the first time counts as alive now."""
        ready = condition(node, "Ready") or {}
        self._observe(self._heartbeat_seen, name, ready.get("lastHeartbeatTime") or "")
        lease = self.leases.store.get(f"{LEASE_NAMESPACE}/{name}")
        if lease is not None:
            self._observe_lease(lease)
        seen = [entry[1] for entry in (self._lease_seen.get(name), self._heartbeat_seen.get(name))
                if entry is not None and entry[1]]
        if not seen:
            self._heartbeat_seen[name] = ("", now)
            return now
        return max(seen)

    async def reconcile(self, key: str) -> None:
        node = self.nodes.store.get(key)
        if node is None:
            return
        now = time.monotonic()
        grace = self.grace_period if condition(node, "Ready") is not None else self.startup_grace_period
        probe = self._probe_time(key, node, now)
        if now - probe > grace:
            node = await self._mark_unknown(node)
        else:
            self._rechecks.at(key, probe + grace - now + 0.05)
        node = await self._sync_taints(node)
        await self._mark_pods_not_ready(node)

    async def _mark_unknown(self, node: Obj) -> Obj:
        """Kubelet stopped posting: its conditions become Unknown (tryUpdateNodeHealth)."""
        meta = node["metadata"]
        now = _now()
        conditions = [dict(c) for c in (node.get("status") or {}).get("conditions") or []]
        by_type = {c.get("type"): c for c in conditions}
        changed = False
        for ctype in _KUBELET_CONDITIONS:
            current = by_type.get(ctype)
            if current is None:
                conditions.append({"type": ctype, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                                   "message": "Kubelet never posted node status.",
                                   "lastHeartbeatTime": meta.get("creationTimestamp"), "lastTransitionTime": now})
                changed = True
            elif current.get("status") != "Unknown":
                current.update(status="Unknown", reason="NodeStatusUnknown",
                               message="Kubelet stopped posting node status.", lastTransitionTime=now)
                changed = True
        if not changed:
            return node
        was_ready = (condition(node, "Ready") or {}).get("status") == "True"
        updated = await self.client.patch(self.nodes_info, meta["name"], {
            "metadata": {"resourceVersion": meta["resourceVersion"]}, "status": {"conditions": conditions}},
            subresource="status")
        if was_ready:
            await self.recorder.event(_node_ref(meta["name"]), "Normal", "NodeNotReady",
                                      f"Node {meta['name']} status is now: NodeNotReady")
        return updated

    async def _sync_taints(self, node: Obj) -> Obj:
        current = (node.get("spec") or {}).get("taints") or []
        taints = desired_taints(node, _now())
        if taints == current:
            return node
        meta = node["metadata"]
        return await self.client.patch(self.nodes_info, meta["name"], {
            "metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": {"taints": taints or None}})

    async def _mark_pods_not_ready(self, node: Obj) -> None:
        """MarkPodsNotReady: pods that were Ready before the node went not-ready lose Ready."""
        ready = condition(node, "Ready")
        if ready is None or ready.get("status") == "True":
            return
        since = _parse(ready.get("lastTransitionTime")) or 0.0
        for pod in self.pods.store.by_index("node", node["metadata"]["name"]):
            status = pod.get("status") or {}
            pod_ready = condition(pod, "Ready")
            if status.get("phase") in ("Succeeded", "Failed") or pod_ready is None or \
                    pod_ready.get("status") != "True" or (_parse(pod_ready.get("lastTransitionTime")) or 0) > since:
                continue
            meta = pod["metadata"]
            now = _now()
            conditions = [{**c, "status": "False", "lastTransitionTime": now} if c.get("type") == "Ready" else c
                          for c in status.get("conditions") or []]
            try:
                await self.client.patch(self.pods_info, meta["name"], {
                    "metadata": {"resourceVersion": meta["resourceVersion"]}, "status": {"conditions": conditions}},
                    meta["namespace"], subresource="status")
            except APIError as err:
                if not err.not_found:
                    raise
                continue
            await self.recorder.event(pod, "Warning", "NodeNotReady", "Node is not ready")


# --- taint-based eviction ------------------------------------------------------------------


def matching_tolerations(taints: list[Obj], tolerations: list[Obj]) -> tuple[bool, list[Obj]]:
    """GetMatchingTolerations: whether every taint is tolerated, and the toleration used for each."""
    used = []
    for taint in taints:
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return False, []
        used.append(match)
    return True, used


def min_toleration_seconds(tolerations: list[Obj]) -> float:
    """getMinTolerationTime: the shortest tolerationSeconds (<= 0 means now); -1 when tolerated forever."""
    if not tolerations:
        return 0.0
    seconds = [t["tolerationSeconds"] for t in tolerations if t.get("tolerationSeconds") is not None]
    if not seconds:
        return -1.0
    return float(max(min(seconds), 0))


class TaintEvictionController(Controller):
    name = "taint-eviction-controller"
    workers = 4

    def setup(self) -> None:
        self.nodes = self.ctx.informer("", "v1", "nodes")
        self.pods = self.ctx.informer("", "v1", "pods")
        self.pods_info = self.ctx.resource("", "v1", "pods")
        self.recorder = EventRecorder(self.client, "taint-eviction-controller")
        self._rechecks = _Rechecks(self)
        self._scheduled: set[str] = set()  # pods with an eviction pending, for the cancellation event
        self._first_seen: dict[tuple[str, str], float] = {}  # NoExecute taints without timeAdded
        self.pods.add_handler(on_add=self._pod_changed, on_update=lambda _old, new: self._pod_changed(new),
                              on_delete=self._pod_deleted)
        self.nodes.add_handler(on_add=self._node_changed, on_update=self._node_taints_changed)

    def _pod_changed(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName"):
            self.enqueue(pod)

    def _pod_deleted(self, pod: Obj) -> None:
        self._scheduled.discard(object_key(pod))
        self._rechecks.forget(object_key(pod))

    def _node_changed(self, node: Obj) -> None:
        for pod in self.pods.store.by_index("node", node["metadata"]["name"]):
            self.enqueue(pod)

    def _node_taints_changed(self, old: Obj, new: Obj) -> None:
        if _no_execute(old) != _no_execute(new):
            self._node_changed(new)

    async def reconcile(self, key: str) -> None:
        pod = self.pods.store.get(key)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            self._scheduled.discard(key)
            return
        node = self.nodes.store.get((pod.get("spec") or {}).get("nodeName") or "")
        taints = _no_execute(node) if node is not None else []
        if not taints:
            await self._cancel(pod, key)
            return
        tolerated, used = matching_tolerations(taints, (pod.get("spec") or {}).get("tolerations") or [])
        if tolerated:
            seconds = min_toleration_seconds(used)
            if seconds < 0:
                await self._cancel(pod, key)
                return
            start = min(self._added(node, t) for t in taints)  # type: ignore[arg-type]
            remaining = start + seconds - time.time()
            if remaining > 0:
                self._scheduled.add(key)
                self._rechecks.at(key, remaining)
                return
        await self._evict(pod)
        self._scheduled.discard(key)

    def _added(self, node: Obj, taint: Obj) -> float:
        added = _parse(taint.get("timeAdded"))
        if added is not None:
            return added
        return self._first_seen.setdefault((node["metadata"]["name"], taint.get("key", "")), time.time())

    async def _cancel(self, pod: Obj, key: str) -> None:
        if key in self._scheduled:
            self._scheduled.discard(key)
            meta = pod["metadata"]
            await self.recorder.event(pod, "Normal", "TaintManagerEviction",
                                      f"Cancelling deletion of Pod {meta['namespace']}/{meta['name']}")

    async def _evict(self, pod: Obj) -> None:
        meta = pod["metadata"]
        namespace, name = split_key(object_key(pod))
        await self.recorder.event(pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {namespace}/{name}")
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "DisruptionTarget"]
        conditions.append({"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                           "lastTransitionTime": _now(), "reason": "DeletionByTaintManager",
                           "message": "Taint manager: deleting due to NoExecute taint"})
        try:
            await self.client.patch(self.pods_info, name, {"metadata": {"resourceVersion": meta["resourceVersion"]},
                                                           "status": {"conditions": conditions}},
                                    namespace, subresource="status")
            await self.client.delete(self.pods_info, name, namespace, preconditions={"uid": meta["uid"]})
        except APIError as err:
            if not err.not_found:
                raise


def _no_execute(node: Obj | None) -> list[Obj]:
    return [t for t in ((node or {}).get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]
