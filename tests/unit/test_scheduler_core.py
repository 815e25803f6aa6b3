"""Scheduler queue, cache, configuration, framework and the scheduling cycle (no API server)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from pocketkube.scheduler.cache import Cache
from pocketkube.scheduler.columns import ALLOC_CPU, HARD_TAINTS, NUM_PODS, REQ_CPU
from pocketkube.scheduler.config import DEFAULT_MULTI_POINT, default_profile, parse_configuration
from pocketkube.scheduler.framework import (
    NODE,
    ActionType,
    ClusterEvent,
    Code,
    CycleState,
    Diagnosis,
    FitError,
    Listers,
    NodeToStatus,
    Plugin,
    Status,
    unresolvable,
    unschedulable,
)
from pocketkube.scheduler.plugins import REGISTRY
from pocketkube.scheduler.queue import QueuedPodInfo, SchedulingQueue
from pocketkube.scheduler.scheduler import Scheduler, num_feasible_nodes_to_find
from pocketkube.scheduler.types import PodInfo

Obj = dict[str, Any]
_n = iter(range(10**6))


def node(name: str, cpu: str = "4", labels: Obj | None = None, taints: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or []},
            "status": {"allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"}}}


def pod(name: str, cpu: str = "100m", priority: int = 0, node_name: str = "", **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"{name}-{next(_n)}"},
            "spec": {"schedulerName": spec.pop("schedulerName", "default-scheduler"), "priority": priority,
                     "nodeName": node_name,
                     "containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu}}}],
                     **spec}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_queue(clock: FakeClock, events: dict | None = None) -> SchedulingQueue:
    def sort_key(q: QueuedPodInfo) -> tuple[int, float]:
        return (-q.pod_info.priority, q.timestamp)
    return SchedulingQueue(sort_key, lambda pi: None, events or {}, clock=clock)


# --- queue ---------------------------------------------------------------------------------------
async def test_active_queue_orders_by_priority_then_time() -> None:
    clock = FakeClock()
    q = make_queue(clock)
    for name, prio in (("a", 1), ("b", 5), ("c", 1), ("d", 5)):
        q.add(pod(name, priority=prio))
        clock.now += 1
    popped = [(await q.pop()).pod_info.name for _ in range(4)]
    assert popped == ["b", "d", "a", "c"]


async def test_backoff_doubles_to_the_cap() -> None:
    clock = FakeClock()
    q = make_queue(clock)
    q.add(pod("a"))
    qpi = await q.pop()
    durations = []
    for attempts in range(1, 7):
        qpi.attempts = attempts
        durations.append(q.backoff_duration(qpi))
    assert durations == [1, 2, 4, 8, 10, 10]


async def test_unschedulable_pod_moves_only_on_a_relevant_event() -> None:
    clock = FakeClock()
    hint_calls: list[Any] = []

    def hint(pi: PodInfo, old: Any, new: Any) -> bool:
        hint_calls.append(new)
        return (new or {}).get("ok", False)
    from pocketkube.scheduler.framework import ClusterEventWithHint
    events = {"NodeAffinity": [ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD), hint)]}
    q = make_queue(clock, events)
    q.add(pod("a"))
    qpi = await q.pop()
    qpi.unschedulable_plugins = {"NodeAffinity"}
    q.add_unschedulable_if_not_present(qpi, q.scheduling_cycle)
    assert list(q.unschedulable) == [qpi.uid]
    q.move_all_to_active_or_backoff(ClusterEvent(NODE, ActionType.UPDATE_NODE_TAINT), None, {"ok": True})
    assert qpi.uid in q.unschedulable and not hint_calls  # not registered: the hint is not even asked
    q.move_all_to_active_or_backoff(ClusterEvent(NODE, ActionType.ADD), None, {"ok": False})
    assert qpi.uid in q.unschedulable
    q.move_all_to_active_or_backoff(ClusterEvent(NODE, ActionType.ADD), None, {"ok": True})
    # Still inside its 1 s back-off: it waits in backoffQ, then goes active.
    assert q.backoff_count() == 1 and q.active_count() == 0
    clock.now += 1.01
    q.flush_backoff_completed()
    assert q.active_count() == 1


async def test_event_during_scheduling_sends_pod_to_backoff() -> None:
    clock = FakeClock()
    q = make_queue(clock, {"NodeResourcesFit": []})
    q.add(pod("a"))
    qpi = await q.pop()
    cycle = q.scheduling_cycle
    q.move_all_to_active_or_backoff(ClusterEvent("*", ActionType.ALL, "ForceActivate"))
    qpi.unschedulable_plugins = {"NodeResourcesFit"}
    q.add_unschedulable_if_not_present(qpi, cycle)
    assert q.backoff_count() == 1 and not q.unschedulable


async def test_unschedulable_timeout_flush_and_gates() -> None:
    clock = FakeClock()
    gated: list[str] = []

    def pre_enqueue(pi: PodInfo) -> Status | None:
        if pi.spec.get("schedulingGates"):
            gated.append(pi.name)
            return unresolvable("gated").with_plugin("SchedulingGates")
        return None
    q = SchedulingQueue(lambda q: (-q.pod_info.priority, q.timestamp), pre_enqueue, {}, clock=clock)
    gated_pod = pod("g", schedulingGates=[{"name": "wait"}])
    q.add(gated_pod)
    assert q.active_count() == 0 and gated == ["g"]
    ungated = {**gated_pod, "spec": {**gated_pod["spec"], "schedulingGates": []}}
    q.update(gated_pod, ungated)
    assert q.active_count() == 1
    qpi = await q.pop()
    qpi.unschedulable_plugins = {"X"}
    q.add_unschedulable_if_not_present(qpi, q.scheduling_cycle)
    clock.now += 301
    q.flush_unschedulable_leftover()
    assert q.active_count() == 1 and not q.unschedulable


# --- cache ---------------------------------------------------------------------------------------
def test_cache_assume_confirm_forget() -> None:
    cache = Cache()
    cache.add_node(node("n"))
    pi = PodInfo(pod("a", cpu="1")).with_node("n")
    cache.assume_pod(pi)
    assert cache.nodes["n"].requested.milli_cpu == 1000 and cache.is_assumed(pi.uid)
    cache.forget_pod(pi)
    assert cache.nodes["n"].requested.milli_cpu == 0 and not cache.is_assumed(pi.uid)
    cache.assume_pod(pi)
    cache.finish_binding(pi)
    cache.add_pod(pi.pod)  # the watch confirms it
    assert not cache.is_assumed(pi.uid) and cache.nodes["n"].requested.milli_cpu == 1000
    cache.remove_pod(pi.pod)
    assert cache.nodes["n"].requested.milli_cpu == 0 and not cache.nodes["n"].pods


def test_cache_node_tree_interleaves_zones_and_tracks_images() -> None:
    cache = Cache()
    for name, z in (("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("c2", "c")):
        cache.add_node(node(name, labels={"topology.kubernetes.io/zone": z}))
    assert [n.name for n in cache.snapshot().node_info_list] == ["a1", "b1", "c1", "a2", "c2", "a3"]
    img = {"names": ["nginx:latest"], "sizeBytes": 100}
    cache.add_node({**node("i1"), "status": {**node("i1")["status"], "images": [img]}})
    cache.add_node({**node("i2"), "status": {**node("i2")["status"], "images": [img]}})
    assert cache.nodes["i1"].image_states["nginx:latest"].num_nodes == 2
    cache.remove_node(node("i2"))
    assert cache.nodes["i1"].image_states["nginx:latest"].num_nodes == 1


def test_node_update_keeps_tree_place_and_columns_follow_pods() -> None:
    cache = Cache()
    for name, z in (("a1", "a"), ("b1", "b"), ("a2", "a")):
        cache.add_node(node(name, labels={"topology.kubernetes.io/zone": z}))
    snapshot = cache.snapshot()
    order = [n.name for n in snapshot.node_info_list]
    # Same zone: nodeTree.updateNode leaves the order alone, and the snapshot's list stays.
    cache.update_node(node("a1"), node("a1", cpu="8", labels={"topology.kubernetes.io/zone": "a"},
                                       taints=[{"key": "k", "effect": "NoSchedule"}]))
    assert cache.snapshot() is snapshot and [n.name for n in snapshot.node_info_list] == order
    a1 = snapshot.node_infos["a1"]
    assert snapshot.columns.ints[ALLOC_CPU, a1.row] == 8000 and snapshot.columns.flags[HARD_TAINTS, a1.row]
    cache.assume_pod(PodInfo(pod("p", cpu="1")).with_node("a1"))
    assert snapshot.columns.ints[REQ_CPU, a1.row] == 1000 and snapshot.columns.ints[NUM_PODS, a1.row] == 1
    # Another zone moves the node in the tree: a new snapshot, new columns.
    cache.update_node(node("a1"), node("a1", labels={"topology.kubernetes.io/zone": "b"}))
    fresh = cache.snapshot()
    assert fresh is not snapshot and [n.name for n in fresh.node_info_list] == ["a2", "b1", "a1"]
    assert fresh.columns.ints[NUM_PODS, fresh.node_infos["a1"].row] == 1


async def test_huge_quantities_take_the_exact_per_node_path() -> None:
    MemoryBinder.bound = []
    # 8 PiB of memory is beyond the columns' exact range: the plugins score node by node.
    huge = {**node("huge"), "status": {"allocatable": {"cpu": "4", "memory": "8Pi", "pods": "110"}}}
    sched = make_scheduler([huge, node("small", cpu="2")])
    assert not sched.cache.snapshot().columns.exact
    sched.on_pod_add(pod("p", cpu="1"))
    await sched.schedule_one()
    await settle(sched)
    assert MemoryBinder.bound == [("p", "huge")]


# --- configuration -------------------------------------------------------------------------------
def test_default_profile_matches_upstream() -> None:
    profile = default_profile(REGISTRY)
    assert [n for n, _ in profile.plugins["filter"]] == [
        "NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity", "NodePorts", "NodeResourcesFit",
        "VolumeRestrictions", "VolumeBinding", "PodTopologySpread", "InterPodAffinity"]
    assert dict(profile.plugins["score"]) == {
        "TaintToleration": 3, "NodeAffinity": 2, "NodeResourcesFit": 1, "PodTopologySpread": 2,
        "InterPodAffinity": 2, "NodeResourcesBalancedAllocation": 1, "ImageLocality": 1}
    assert profile.plugins["queueSort"] == [("PrioritySort", 0)]
    assert profile.plugins["postFilter"] == [("DefaultPreemption", 0)]
    assert [n for n, _ in profile.plugins["bind"]] == ["DefaultBinder"]
    assert len(DEFAULT_MULTI_POINT) == 16


def test_configuration_merging() -> None:
    config = parse_configuration({
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "percentageOfNodesToScore": 30,
        "profiles": [
            {"schedulerName": "default-scheduler"},
            {"schedulerName": "custom", "percentageOfNodesToScore": 50, "plugins": {
                "score": {"disabled": [{"name": "ImageLocality"}],
                          "enabled": [{"name": "NodeResourcesFit", "weight": 5}]},
                "multiPoint": {"disabled": [{"name": "PodTopologySpread"}]},
                "filter": {"disabled": [{"name": "*"}], "enabled": [{"name": "NodeName"}]}},
             "pluginConfig": [{"name": "NodeResourcesFit", "args": {"scoringStrategy": {"type": "MostAllocated"}}}]}]},
        REGISTRY)
    assert config.percentage_of_nodes_to_score == 30
    custom = config.profiles[1]
    assert custom.percentage_of_nodes_to_score == 50
    score = dict(custom.plugins["score"])
    assert score["NodeResourcesFit"] == 5 and "ImageLocality" not in score and "PodTopologySpread" not in score
    assert custom.plugins["filter"] == [("NodeName", 0)]
    assert custom.plugin_args["NodeResourcesFit"]["scoringStrategy"]["type"] == "MostAllocated"
    with pytest.raises(ValueError, match="Duplicate"):
        parse_configuration({"profiles": [{"schedulerName": "a"}, {"schedulerName": "a"}]}, REGISTRY)
    with pytest.raises(ValueError, match="does not exist"):
        parse_configuration({"profiles": [{"plugins": {"multiPoint": {"enabled": [{"name": "Nope"}]}}}]}, REGISTRY)


def test_num_feasible_nodes_to_find() -> None:
    assert num_feasible_nodes_to_find(None, 50) == 50
    assert num_feasible_nodes_to_find(None, 500) == 230  # (50 - 500/125)% = 46%
    assert num_feasible_nodes_to_find(None, 5000) == 500  # 10%
    assert num_feasible_nodes_to_find(None, 10000) == 500  # floor of 5%
    assert num_feasible_nodes_to_find(30, 1000) == 300
    assert num_feasible_nodes_to_find(1, 1000) == 100


# --- framework -----------------------------------------------------------------------------------
def test_fit_error_message_shape() -> None:
    statuses = NodeToStatus()
    statuses.set("a", unschedulable("Insufficient cpu"))
    statuses.set("b", unresolvable("node(s) had untolerated taint {dedicated: gpu}"))
    statuses.set("c", unresolvable("node(s) had untolerated taint {dedicated: gpu}"))
    diagnosis = Diagnosis(node_to_status=statuses,
                          post_filter_msg="preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
                                          "scheduling.")
    assert str(FitError(PodInfo(pod("p")), 3, diagnosis)) == (
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
    prefilter = Diagnosis(pre_filter_msg='persistentvolumeclaim "x" not found')
    assert str(FitError(PodInfo(pod("p")), 2, prefilter)) == \
        '0/2 nodes are available: persistentvolumeclaim "x" not found.'


class MemoryBinder(Plugin):
    """Binds in memory, as the API would: the test then feeds the bound pod back like the watch."""

    name = "DefaultBinder"
    bound: list[tuple[str, str]] = []

    async def bind(self, state: CycleState, pi: PodInfo, node: str) -> Status | None:
        MemoryBinder.bound.append((pi.name, node))
        return None


def make_scheduler(nodes: list[Obj], percentage: int | None = None) -> Scheduler:
    registry = {**REGISTRY, "DefaultBinder": MemoryBinder}
    sched = Scheduler(None, parse_configuration({"percentageOfNodesToScore": percentage}, registry),
                      registry=registry, rng=random.Random(7))
    sched.setup(Listers())
    for n in nodes:
        sched.on_node_add(n)
    return sched


async def settle(sched: Scheduler) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.gather(*sched._tasks)


async def test_scheduling_cycle_binds_and_fails_with_message() -> None:
    MemoryBinder.bound = []
    sched = make_scheduler([node("small", cpu="1"), node("big", cpu="4")])
    sched.on_pod_add(pod("fits", cpu="2"))
    await sched.schedule_one()
    await settle(sched)
    assert MemoryBinder.bound == [("fits", "big")]
    assert sched.cache.nodes["big"].requested.milli_cpu == 2000  # assumed until the watch confirms
    huge = pod("huge", cpu="8")
    sched.on_pod_add(huge)
    await sched.schedule_one()
    assert sched.queue is not None and huge["metadata"]["uid"] in sched.queue.unschedulable
    qpi = sched.queue.unschedulable[huge["metadata"]["uid"]]
    assert qpi.unschedulable_plugins == {"NodeResourcesFit"}


async def test_percentage_of_nodes_to_score_rotates_start() -> None:
    MemoryBinder.bound = []
    nodes = [node(f"n{i:03}") for i in range(200)]
    sched = make_scheduler(nodes, percentage=10)
    fwk = sched.frameworks["default-scheduler"]
    snapshot = sched.cache.snapshot()
    fwk.handle.snapshot = snapshot
    feasible, rows, diagnosis = sched.find_nodes_that_fit(fwk, CycleState(), PodInfo(pod("p")), snapshot)
    assert len(feasible) == 100 and sched.next_start_node_index == 100
    assert rows.tolist() == list(range(100))
    feasible, _, _ = sched.find_nodes_that_fit(fwk, CycleState(), PodInfo(pod("q")), snapshot)
    assert feasible[0].name == snapshot.node_info_list[100].name


async def test_filter_nodes_keeps_first_failure_per_node() -> None:
    sched = make_scheduler([node("t", taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}], cpu="1"),
                            node("ok")])
    fwk = sched.frameworks["default-scheduler"]
    snapshot = sched.cache.snapshot()
    fwk.handle.snapshot = snapshot
    state = CycleState()
    pi = PodInfo(pod("p", cpu="2"))
    fwk.run_pre_filter_plugins(state, pi, snapshot.node_info_list)
    statuses = NodeToStatus()
    passing = fwk.filter_rows(state, pi, snapshot.columns, snapshot.columns.all_rows, statuses)
    # TaintToleration runs before NodeResourcesFit: the node reports the taint, as the per-node loop would.
    assert [n.name for n, ok in zip(snapshot.node_info_list, passing, strict=True) if ok] == ["ok"]
    assert statuses.get("t").reasons == ["node(s) had untolerated taint {k: v}"]
    assert statuses.get("t").plugin == "TaintToleration"
    assert fwk.run_filter_plugins(state, pi, snapshot.node_infos["t"]).reasons == statuses.get("t").reasons  # type: ignore[union-attr]


async def test_no_nodes_message_and_requeue_on_node_add() -> None:
    MemoryBinder.bound = []
    sched = make_scheduler([])
    p = pod("lonely")
    sched.on_pod_add(p)
    await sched.schedule_one()
    assert sched.queue is not None
    uid = p["metadata"]["uid"]
    assert sched.queue.contains(uid)
    sched.on_node_add(node("n"))
    sched.queue.clock = lambda: 10**9  # back-off over
    sched.queue.flush_backoff_completed()
    await sched.schedule_one()
    await settle(sched)
    assert MemoryBinder.bound == [("lonely", "n")]


def test_status_codes() -> None:
    assert unschedulable("x").code == Code.UNSCHEDULABLE and unschedulable("x").is_rejected()
    assert not Status(Code.ERROR, "e").is_rejected()
