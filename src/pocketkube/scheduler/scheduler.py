"""The scheduler: informers feed the cache and the queue; one loop runs scheduling cycles; binding cycles
run concurrently in the background (schedule_one.go).

A scheduling cycle never yields to the event loop between reading the snapshot and assuming the pod,
so the cache cannot change under it; only the failure path awaits (PostFilter/preemption API calls).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from pocketkube.api.gcpolicy import tune_for_large_heaps
from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.client.events import EventRecorder
from pocketkube.client.informer import InformerFactory
from pocketkube.client.leaderelection import LeaderElector
from pocketkube.client.rest import APIError, Client, ClientConfig
from pocketkube.scheduler.cache import Cache, Snapshot
from pocketkube.scheduler.columns import Mask, NodeColumns, Rows
from pocketkube.scheduler.config import SchedulerConfiguration, default_profile, load_configuration
from pocketkube.scheduler.framework import (
    ASSIGNED_POD,
    EVENT_ASSIGNED_POD_DELETE,
    NAMESPACE,
    NODE,
    PV,
    PVC,
    STORAGE_CLASS,
    UNSCHEDULED_POD,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    Code,
    CycleState,
    Diagnosis,
    FitError,
    Framework,
    Handle,
    Listers,
    NodeToStatus,
    Plugin,
    PostFilterResult,
    Status,
    is_success,
    unresolvable,
)
from pocketkube.scheduler.plugins import REGISTRY
from pocketkube.scheduler.queue import QueuedPodInfo, SchedulingQueue
from pocketkube.scheduler.types import NodeInfo, PodInfo, Resource

log = logging.getLogger(__name__)
Obj = dict[str, Any]

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
NO_NODES_AVAILABLE = "no nodes available to schedule pods"
MAX_EVENT_MESSAGE = 1024
EVENT_QUEUE_SIZE = 1000  # as client-go's broadcaster: further events are dropped, never block scheduling
CHUNK_MIN = 64  # filter nodes in chunks of at least this many (amortises per-plugin call overhead)
NO_ROWS: Rows = np.zeros(0, dtype=np.int64)

_catalog = ResourceCatalog()


def _resource(group: str, plural: str) -> ResourceInfo:
    info = _catalog.resource(group, "v1", plural)
    assert info is not None, plural
    return info


PODS = _resource("", "pods")
# plural -> (group, event resource for the queue or None when it only backs a lister)
WATCHED: dict[str, tuple[str, str | None]] = {
    "namespaces": ("", NAMESPACE), "persistentvolumeclaims": ("", PVC), "persistentvolumes": ("", PV),
    "storageclasses": ("storage.k8s.io", STORAGE_CLASS), "poddisruptionbudgets": ("policy", None),
    "services": ("", None), "replicationcontrollers": ("", None), "replicasets": ("apps", None),
    "statefulsets": ("apps", None),
}


class SchedulingError(Exception):
    """An internal error of one scheduling attempt (the pod is retried with back-off)."""


@dataclass
class ScheduleResult:
    suggested_host: str
    evaluated_nodes: int
    feasible_nodes: int


def num_feasible_nodes_to_find(percentage: int | None, num_all_nodes: int) -> int:
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    pct = percentage or 0
    if pct == 0:
        pct = max(50 - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_all_nodes * pct // 100, MIN_FEASIBLE_NODES_TO_FIND)


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _assigned(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_update_actions(old: Obj, new: Obj) -> ActionType:
    """Which kinds of node change happened (nodeSchedulingPropertiesChange)."""
    actions = ActionType(0)
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    os_, ns_ = old.get("spec") or {}, new.get("spec") or {}
    ost, nst = old.get("status") or {}, new.get("status") or {}
    if os_.get("unschedulable") != ns_.get("unschedulable") or os_.get("taints") != ns_.get("taints"):
        actions |= ActionType.UPDATE_NODE_TAINT
    if ost.get("allocatable") != nst.get("allocatable"):
        actions |= ActionType.UPDATE_NODE_ALLOCATABLE
    if om.get("labels") != nm.get("labels"):
        actions |= ActionType.UPDATE_NODE_LABEL
    if ([(c.get("type"), c.get("status")) for c in ost.get("conditions") or []]
            != [(c.get("type"), c.get("status")) for c in nst.get("conditions") or []]):
        actions |= ActionType.UPDATE_NODE_CONDITION
    if om.get("annotations") != nm.get("annotations"):
        actions |= ActionType.UPDATE_NODE_ANNOTATION
    return actions


def pod_update_actions(old: Obj, new: Obj) -> ActionType:
    actions = ActionType(0)
    if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
        actions |= ActionType.UPDATE_POD_LABEL
    if (old.get("spec") or {}).get("tolerations") != (new.get("spec") or {}).get("tolerations"):
        actions |= ActionType.UPDATE_POD_TOLERATION
    if (old.get("spec") or {}).get("schedulingGates") and not (new.get("spec") or {}).get("schedulingGates"):
        actions |= ActionType.UPDATE_POD_SCHEDULING_GATES_ELIMINATED
    old_req, new_req = PodInfo(old).requests, PodInfo(new).requests
    if old_req != new_req and _scaled_down(old_req, new_req):
        actions |= ActionType.UPDATE_POD_SCALE_DOWN
    return actions or ActionType.UPDATE_OTHER


def _scaled_down(old: Resource, new: Resource) -> bool:
    return (new.milli_cpu < old.milli_cpu or new.memory < old.memory or new.ephemeral_storage < old.ephemeral_storage
            or any(new.scalar.get(k, 0) < v for k, v in old.scalar.items()))


class Scheduler:
    """kube-scheduler. Use `run(stop)`; or, for tests and tools, `setup(listers)` + `schedule_one()`."""

    def __init__(self, client: Client | None, config: SchedulerConfiguration | None = None, *,
                 registry: dict[str, type[Plugin]] | None = None, identity: str | None = None,
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.registry = dict(REGISTRY if registry is None else registry)
        self.config = config or SchedulerConfiguration([default_profile(self.registry)])
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4()}"
        self.rng = rng or random.Random()
        self.cache = Cache()
        self.listers = Listers()
        self.recorder = EventRecorder(client, "default-scheduler") if client is not None else None
        self.frameworks: dict[str, Framework] = {}
        self.queue: SchedulingQueue | None = None
        self.next_start_node_index = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events: asyncio.Queue[tuple[Obj, str, str, str]] | None = None
        # (pod key, node, seconds since it first entered the queue, seconds of the attempt that bound it):
        # the benchmark reads it
        self.scheduled: list[tuple[str, str, float, float]] = []
        self.on_bound: Callable[[PodInfo, str], None] | None = None

    # -- wiring ---------------------------------------------------------------------------------
    def setup(self, listers: Listers | None = None) -> None:
        """Build the profiles' frameworks and the queue (no I/O)."""
        if listers is not None:
            self.listers = listers
        events: dict[str, list[ClusterEventWithHint]] = {}
        for profile in self.config.profiles:
            handle = Handle(listers=self.listers, client=self.client, recorder=self.recorder)
            fwk = Framework(profile, self.registry, handle)
            if profile.percentage_of_nodes_to_score is None:
                fwk.percentage_of_nodes_to_score = self.config.percentage_of_nodes_to_score
            self.frameworks[profile.scheduler_name] = fwk
            for name, registered in fwk.events_to_register().items():
                events.setdefault(name, []).extend(registered)
        first = next(iter(self.frameworks.values()))
        sorter = first.queue_sort_func()
        if sorter is None:
            raise ValueError("a profile needs a QueueSort plugin")

        def pre_enqueue(pi: PodInfo) -> Status | None:
            fwk = self.frameworks.get(pi.spec.get("schedulerName") or "default-scheduler")
            return fwk.run_pre_enqueue_plugins(pi) if fwk is not None else None

        self.queue = SchedulingQueue(sorter.sort_key, pre_enqueue, events,
                                     initial_backoff=self.config.pod_initial_backoff_seconds,
                                     max_backoff=self.config.pod_max_backoff_seconds)
        for fwk in self.frameworks.values():
            fwk.handle.nominator = self.queue.nominator

    def responsible_for(self, pod: Obj) -> bool:
        return ((pod.get("spec") or {}).get("schedulerName") or "default-scheduler") in self.frameworks

    # -- event handlers (informer callbacks) ----------------------------------------------------
    def on_pod_add(self, pod: Obj) -> None:
        assert self.queue is not None
        if _terminal(pod):
            return
        if _assigned(pod):
            self.cache.add_pod(pod)
            self.queue.move_all_to_active_or_backoff(ClusterEvent(ASSIGNED_POD, ActionType.ADD), None, pod)
        elif self.responsible_for(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.add(pod)

    def on_pod_update(self, old: Obj, new: Obj) -> None:
        assert self.queue is not None
        if _terminal(new):
            self.on_pod_delete(old)
            return
        if _assigned(new):
            if not _assigned(old):
                self.queue.delete(old)  # bound: leaves the queue, joins the cache
                self.cache.add_pod(new)
                self.queue.move_all_to_active_or_backoff(ClusterEvent(ASSIGNED_POD, ActionType.ADD), None, new)
                return
            self.cache.update_pod(old, new)
            self.queue.move_all_to_active_or_backoff(ClusterEvent(ASSIGNED_POD, pod_update_actions(old, new)),
                                                     old, new)
            return
        if not self.responsible_for(new):
            return
        uid = (new.get("metadata") or {}).get("uid") or ""
        if (new.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.delete(new)
            return
        if self.cache.is_assumed(uid):
            return  # being bound right now; the binding cycle owns it
        self.queue.update(old, new)
        self.queue.move_all_to_active_or_backoff(ClusterEvent(UNSCHEDULED_POD, pod_update_actions(old, new)),
                                                 old, new, pre_check=lambda q: q.uid == uid)

    def on_pod_delete(self, pod: Obj) -> None:
        assert self.queue is not None
        uid = (pod.get("metadata") or {}).get("uid") or ""
        if _assigned(pod) or self.cache.get_pod(uid) is not None:
            self.cache.remove_pod(pod)
            self.queue.move_all_to_active_or_backoff(EVENT_ASSIGNED_POD_DELETE, pod, None)
            return
        self.queue.delete(pod)
        for fwk in self.frameworks.values():
            waiting = fwk.waiting_pods.get(uid)
            if waiting is not None:
                waiting.reject("", "removed")

    def on_node_add(self, node: Obj) -> None:
        assert self.queue is not None
        self.cache.add_node(node)
        self.queue.move_all_to_active_or_backoff(ClusterEvent(NODE, ActionType.ADD), None, node)

    def on_node_update(self, old: Obj, new: Obj) -> None:
        assert self.queue is not None
        self.cache.update_node(old, new)
        actions = node_update_actions(old, new)
        if actions:
            self.queue.move_all_to_active_or_backoff(ClusterEvent(NODE, actions), old, new)

    def on_node_delete(self, node: Obj) -> None:
        assert self.queue is not None
        self.cache.remove_node(node)
        self.queue.move_all_to_active_or_backoff(ClusterEvent(NODE, ActionType.DELETE), node, None)

    def _on_other(self, resource: str) -> tuple[Callable[[Obj], None], Callable[[Obj, Obj], None]]:
        def add(obj: Obj) -> None:
            assert self.queue is not None
            self.queue.move_all_to_active_or_backoff(ClusterEvent(resource, ActionType.ADD), None, obj)

        def update(old: Obj, new: Obj) -> None:
            assert self.queue is not None
            self.queue.move_all_to_active_or_backoff(ClusterEvent(resource, ActionType.UPDATE_OTHER), old, new)
        return add, update

    # -- scheduling cycle -----------------------------------------------------------------------
    async def schedule_one(self) -> None:
        assert self.queue is not None
        q = await self.queue.pop()
        pi = q.pod_info
        fwk = self.frameworks.get(pi.spec.get("schedulerName") or "default-scheduler")
        if fwk is None or self._skip(pi):
            self.queue.done(pi.uid)
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        cycle = self.queue.scheduling_cycle
        state = CycleState()
        snapshot = self.cache.snapshot()
        fwk.handle.snapshot = snapshot
        try:
            result = self.schedule_pod(fwk, state, pi, snapshot)
        except FitError as fit:
            post_result: PostFilterResult | None = None
            if fwk.post_filter_plugins:
                post_result, status = await fwk.run_post_filter_plugins(state, pi, fit.diagnosis.node_to_status)
                if status.code == Code.ERROR:
                    log.error("running PostFilter for %s: %s", pi.key, status.message)
                if status.message:
                    fit.diagnosis.post_filter_msg = status.message
            self.handle_scheduling_failure(fwk, q, fit, cycle, Status(Code.UNSCHEDULABLE, str(fit)), post_result)
            return
        except SchedulingError as err:
            self.handle_scheduling_failure(fwk, q, None, cycle, Status(Code.ERROR, str(err)), None)
            return
        except _NoNodes:
            self.handle_scheduling_failure(fwk, q, None, cycle, unresolvable(NO_NODES_AVAILABLE), None)
            return
        assumed = pi.with_node(result.suggested_host)
        self.cache.assume_pod(assumed)
        self.queue.nominator.delete(pi)
        host = result.suggested_host
        status = fwk.run_reserve_plugins_reserve(state, assumed, host)
        if status is None:
            status = fwk.run_permit_plugins(state, assumed, host)
            if status is not None and status.code == Code.WAIT:
                status = None
            elif status is not None:
                fwk.run_reserve_plugins_unreserve(state, assumed, host)
        else:
            fwk.run_reserve_plugins_unreserve(state, assumed, host)
        if status is not None:
            self.cache.forget_pod(assumed)
            if status.is_rejected():
                self.queue.move_all_to_active_or_backoff(EVENT_ASSIGNED_POD_DELETE, assumed.pod, None,
                                                         pre_check=lambda other: other.uid != pi.uid)
            self.handle_scheduling_failure(fwk, q, None, cycle, status, PostFilterResult(None))
            return
        self._spawn(self.binding_cycle(fwk, state, q, assumed, host, start))

    def _skip(self, pi: PodInfo) -> bool:
        """skipPodSchedule: deleted, or already assumed/bound (a stale queue entry)."""
        if pi.terminating:
            return True
        return self.cache.get_pod(pi.uid) is not None

    def schedule_pod(self, fwk: Framework, state: CycleState, pi: PodInfo, snapshot: Snapshot) -> ScheduleResult:
        nodes = snapshot.node_info_list
        if not nodes:
            raise _NoNodes()
        feasible, rows, diagnosis = self.find_nodes_that_fit(fwk, state, pi, snapshot)
        if not feasible:
            raise FitError(pi, len(nodes), diagnosis)
        evaluated = len(feasible) + len(diagnosis.node_to_status)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, evaluated, 1)
        totals = self.prioritize_nodes(fwk, state, pi, feasible, snapshot.columns, rows)
        winners = np.flatnonzero(totals == totals.max())
        choice = int(winners[0]) if len(winners) == 1 else self.rng.choice(winners.tolist())
        return ScheduleResult(feasible[choice].name, evaluated, len(feasible))

    def find_nodes_that_fit(self, fwk: Framework, state: CycleState, pi: PodInfo,
                            snapshot: Snapshot) -> tuple[list[NodeInfo], Rows, Diagnosis]:
        """The feasible nodes, their rows in the snapshot's columns, and why the others were not."""
        diagnosis = Diagnosis()
        columns = snapshot.columns
        pre_result, status, narrowing = fwk.run_pre_filter_plugins(state, pi, snapshot.node_info_list)
        if status is not None:
            if not status.is_rejected():
                raise SchedulingError(status.message)
            diagnosis.node_to_status.absent = status
            diagnosis.add_plugin_status(status)
            diagnosis.pre_filter_msg = status.message
            return [], NO_ROWS, diagnosis
        nominated = (pi.pod.get("status") or {}).get("nominatedNodeName")
        if nominated:
            ni = snapshot.get(nominated)
            if ni is not None and is_success(fwk.run_filter_plugins_with_nominated_pods(state, pi, ni)):
                return [ni], np.array([ni.row], dtype=np.int64), diagnosis
        rows = columns.all_rows
        if pre_result.node_names is not None:
            rows = np.array([snapshot.node_infos[n].row for n in sorted(pre_result.node_names)
                             if n in snapshot.node_infos], dtype=np.int64)
            diagnosis.node_to_status.absent = unresolvable(
                f"node(s) didn't satisfy plugin(s) [{' '.join(sorted(narrowing))}]")
        feasible = self.find_nodes_that_pass_filters(fwk, state, pi, diagnosis, snapshot, rows)
        return columns.node_list(feasible), feasible, diagnosis

    def find_nodes_that_pass_filters(self, fwk: Framework, state: CycleState, pi: PodInfo, diagnosis: Diagnosis,
                                     snapshot: Snapshot, rows: Rows) -> Rows:
        """Scan `rows` from the rotating start until enough nodes pass (numFeasibleNodesToFind), as a
        sequential scan would: only the nodes up to the last one needed count as processed."""
        n = len(rows)
        if n == 0:
            return NO_ROWS
        to_find = num_feasible_nodes_to_find(fwk.percentage_of_nodes_to_score, n)
        start = self.next_start_node_index % n
        statuses = diagnosis.node_to_status
        columns = snapshot.columns
        feasible: list[Rows] = []
        found = processed = 0
        while processed < n and found < to_find:
            size = min(n - processed, max(to_find - found, CHUNK_MIN))
            chunk = rows[np.arange(start + processed, start + processed + size) % n]
            passed = np.flatnonzero(self._filter_chunk(fwk, state, pi, snapshot, chunk, statuses))
            need = to_find - found
            if len(passed) > need:
                cut = int(passed[need - 1]) + 1
                for row in chunk[cut:].tolist():
                    statuses.statuses.pop(columns.node_infos[row].name, None)
                feasible.append(chunk[passed[:need]])
                found += need
                processed += cut
                break
            feasible.append(chunk[passed])
            found += len(passed)
            processed += size
        for st in statuses.statuses.values():
            diagnosis.add_plugin_status(st)
        self.next_start_node_index = (start + processed) % n
        return np.concatenate(feasible)

    @staticmethod
    def _filter_chunk(fwk: Framework, state: CycleState, pi: PodInfo, snapshot: Snapshot, chunk: Rows,
                      statuses: NodeToStatus) -> Mask:
        """Which nodes of `chunk` pass the filters; a node with nominated pods is filtered with them counted
        (node by node), every other node in one vectorised pass."""
        nominator = fwk.handle.nominator
        names = nominator.nominated_node_names() if nominator is not None else ()
        columns = snapshot.columns
        if not names:
            return fwk.filter_rows(state, pi, columns, chunk, statuses)
        infos = columns.node_infos
        special = np.isin(chunk, [snapshot.node_infos[name].row for name in names if name in snapshot.node_infos])
        passing = np.empty(len(chunk), dtype=bool)
        passing[~special] = fwk.filter_rows(state, pi, columns, chunk[~special], statuses)
        for i in np.flatnonzero(special).tolist():
            ni = infos[chunk[i]]
            status = fwk.run_filter_plugins_with_nominated_pods(state, pi, ni)
            passing[i] = is_success(status)
            if status is not None and not passing[i]:
                statuses.set(ni.name, status)
        return passing

    def prioritize_nodes(self, fwk: Framework, state: CycleState, pi: PodInfo, nodes: list[NodeInfo],
                         columns: NodeColumns, rows: Rows) -> np.ndarray:
        if not fwk.score_plugins:
            return np.ones(len(nodes), dtype=np.int64)
        status = fwk.run_pre_score_plugins(state, pi, nodes)
        if not is_success(status):
            assert status is not None
            raise SchedulingError(status.message)
        try:
            return fwk.run_score_plugins(state, pi, nodes, columns, rows)
        except ValueError as err:
            raise SchedulingError(str(err)) from err

    # -- binding cycle --------------------------------------------------------------------------
    async def binding_cycle(self, fwk: Framework, state: CycleState, q: QueuedPodInfo, assumed: PodInfo,
                            host: str, start: float) -> None:
        assert self.queue is not None
        status = await fwk.wait_on_permit(assumed)
        if is_success(status):
            status = await fwk.run_pre_bind_plugins(state, assumed, host)
        if is_success(status):
            status = await fwk.run_bind_plugins(state, assumed, host)
            if status is not None and status.code == Code.SKIP:
                status = Status(Code.ERROR, "no bind plugin bound the pod")
        if not is_success(status):
            assert status is not None
            fwk.run_reserve_plugins_unreserve(state, assumed, host)
            try:
                self.cache.forget_pod(assumed)
            except ValueError as err:
                log.error("forgetting %s: %s", assumed.key, err)
            else:
                self.queue.move_all_to_active_or_backoff(
                    EVENT_ASSIGNED_POD_DELETE, assumed.pod, None,
                    pre_check=(lambda other: other.uid != assumed.uid) if status.is_rejected() else None)
            self.handle_scheduling_failure(fwk, q, None, self.queue.scheduling_cycle, status, PostFilterResult(None))
            return
        self.cache.finish_binding(assumed)
        self.queue.done(assumed.uid)
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.scheduled.append((assumed.key, host, now - (q.first_queued or start), now - start))
        self.record_event(assumed.pod, "Normal", "Scheduled",
                          f"Successfully assigned {assumed.namespace}/{assumed.name} to {host}")
        fwk.run_post_bind_plugins(state, assumed, host)
        if self.on_bound is not None:
            self.on_bound(assumed, host)

    # -- failures -------------------------------------------------------------------------------
    def handle_scheduling_failure(self, fwk: Framework, q: QueuedPodInfo, fit: FitError | None, cycle: int,
                                  status: Status, nominating: PostFilterResult | None) -> None:
        assert self.queue is not None
        pi = q.pod_info
        reason = "Unschedulable" if status.is_rejected() else "SchedulerError"
        message = str(fit) if fit is not None else status.message
        if fit is not None:
            q.unschedulable_plugins = set(fit.diagnosis.unschedulable_plugins)
            q.pending_plugins = set(fit.diagnosis.pending_plugins)
        elif status.plugin and status.is_rejected():
            q.unschedulable_plugins = {status.plugin}
            q.pending_plugins = set()
        else:
            q.unschedulable_plugins, q.pending_plugins = set(), set()
        latest = self.listers.get("pods", pi.namespace, pi.name) if "pods" in self.listers.stores else pi.pod
        if latest is None or ((latest.get("metadata") or {}).get("uid") or pi.uid) != pi.uid:
            self.queue.done(pi.uid)
            return  # deleted meanwhile
        if _assigned(latest):
            self.queue.done(pi.uid)
            return  # bound by someone else meanwhile
        self.queue.add_unschedulable_if_not_present(q, cycle)
        nominated: str | None = None
        if nominating is not None and nominating.nominated_node_name is not None:
            nominated = nominating.nominated_node_name
            if nominated:
                self.queue.nominator.add(pi, nominated)
            else:
                self.queue.nominator.delete(pi)
        if len(message) > MAX_EVENT_MESSAGE:
            message = message[:MAX_EVENT_MESSAGE - 3] + "..."
        log.info("unable to schedule pod %s: %s", pi.key, message)
        self.record_event(latest, "Warning", "FailedScheduling", message)
        self._spawn(self._update_pod_condition(latest, reason, message, nominated))

    async def _update_pod_condition(self, pod: Obj, reason: str, message: str, nominated: str | None) -> None:
        """PodScheduled=False with the reason and message; nominatedNodeName when preemption decided it."""
        if self.client is None:
            return
        status = pod.get("status") or {}
        conditions = list(status.get("conditions") or [])
        current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        changed = current is None or (current.get("status"), current.get("reason"), current.get("message")) != \
            ("False", reason, message)
        patch_status: Obj = {}
        if changed:
            transition = current.get("lastTransitionTime") if current is not None and \
                current.get("status") == "False" else _now()
            condition = {"type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                         "lastProbeTime": None, "lastTransitionTime": transition}
            patch_status["conditions"] = [condition]  # merged by type: other conditions stay as they are
        if nominated is not None and nominated != (status.get("nominatedNodeName") or ""):
            patch_status["nominatedNodeName"] = nominated or None
        if not patch_status:
            return
        meta = pod.get("metadata") or {}
        try:
            # Strategic merge, as upstream's PatchPodStatus: a bind that lands meanwhile keeps its condition.
            await self.client.patch(PODS, meta.get("name", ""), {"status": patch_status}, meta.get("namespace", ""),
                                    patch_type="strategic", subresource="status")
        except (APIError, aiohttp.ClientError, OSError, TimeoutError) as err:
            log.debug("updating PodScheduled of %s: %s", meta.get("name"), err)

    # -- events ---------------------------------------------------------------------------------
    def record_event(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        if self._events is None:
            return
        try:
            self._events.put_nowait((obj, event_type, reason, message))
        except asyncio.QueueFull:
            log.debug("event queue full, dropping %s for %s", reason, (obj.get("metadata") or {}).get("name"))

    async def _event_worker(self) -> None:
        assert self._events is not None and self.recorder is not None
        while True:
            obj, event_type, reason, message = await self._events.get()
            await self.recorder.event({**obj, "kind": "Pod", "apiVersion": "v1"}, event_type, reason, message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- running --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set. With leader election, schedule only while holding the Lease (released on
        stop); LeaderElectionLost is raised once leadership is lost, after scheduling has stopped: the process
        is to exit, as kube-scheduler does, for its supervisor to restart it."""
        assert self.client is not None
        if not self.config.leader_elect:
            await self._run_leading(stop)
            return
        # Leader election gets a client (and connection pool) of its own, as upstream's: renewals must not
        # queue behind binding requests.
        async with Client(self.client.config, user_agent="pocketkube-scheduler/leader-election") as lec:
            elector = LeaderElector(lec, self.config.lease_name, self.identity,
                                    namespace=self.config.lease_namespace,
                                    lease_duration=self.config.lease_duration,
                                    renew_deadline=self.config.renew_deadline,
                                    retry_period=self.config.retry_period)
            await elector.lead(stop, lambda: self._run_leading(stop))

    async def _run_leading(self, stop: asyncio.Event) -> None:
        assert self.client is not None
        informers = InformerFactory(self.client)
        stores = {}
        pods = informers.informer(PODS)
        nodes = informers.informer(_resource("", "nodes"))
        stores["pods"] = pods.store
        for plural, (group, _) in WATCHED.items():
            stores[plural] = informers.informer(_resource(group, plural)).store
        self.setup(Listers(stores))
        assert self.queue is not None
        nodes.add_handler(self.on_node_add, self.on_node_update, self.on_node_delete)
        pods.add_handler(self.on_pod_add, self.on_pod_update, self.on_pod_delete)
        for plural, (group, resource) in WATCHED.items():
            if resource is not None:
                add, update = self._on_other(resource)
                informers.informer(_resource(group, plural)).add_handler(add, update)
        self._events = asyncio.Queue(EVENT_QUEUE_SIZE)
        background = [asyncio.create_task(self._event_worker()) for _ in range(2)]
        background.append(asyncio.create_task(self.queue.run()))
        loop_task: asyncio.Task[None] | None = None
        waits: set[asyncio.Task[Any]] = set()
        try:  # cancelled (leadership lost) at any point, everything started here stops
            informers.start()
            await informers.wait_synced()
            log.info("scheduler running with profiles: %s", ", ".join(self.frameworks))
            loop_task = asyncio.create_task(self._loop(), name="scheduling-loop")
            waits = {asyncio.create_task(stop.wait()), loop_task}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.queue.close()
            for task in (*waits, *background, *self._tasks):
                task.cancel()
            await asyncio.gather(*waits, *background, *self._tasks, return_exceptions=True)
            await informers.stop()
            if loop_task is not None and loop_task.done() and not loop_task.cancelled() \
                    and loop_task.exception() is not None:
                raise loop_task.exception()  # type: ignore[misc]

    async def _loop(self) -> None:
        while True:
            try:
                await self.schedule_one()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduling cycle failed")
            # Let informer callbacks and binding tasks run between cycles.
            await asyncio.sleep(0)


class _NoNodes(Exception):
    """The snapshot has no nodes at all (ErrNoNodesAvailable)."""


async def run_scheduler(client: Client, stop: asyncio.Event, config: SchedulerConfiguration | None = None) -> None:
    """The in-process scheduler of `pocketkube server` (the caller owns the client)."""
    await Scheduler(client, config).run(stop)


async def run_standalone(client_config: ClientConfig, stop: asyncio.Event, config_path: Path | None = None,
                         leader_elect: bool | None = None) -> None:
    """`pocketkube scheduler --kubeconfig ... [--config FILE]`."""
    tune_for_large_heaps()  # this process holds the cluster's pods and nodes
    config = load_configuration(config_path, REGISTRY)
    if leader_elect is not None:
        config.leader_elect = leader_elect
    async with Client(client_config, user_agent="pocketkube-scheduler") as client:
        await run_scheduler(client, stop, config)

