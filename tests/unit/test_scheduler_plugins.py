"""Table-driven tests of the scheduler plugins, after upstream's plugin test tables."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from pocketkube.scheduler.cache import Cache, Snapshot
from pocketkube.scheduler.config import default_profile
from pocketkube.scheduler.framework import (
    Code,
    CycleState,
    Framework,
    Handle,
    Listers,
    NodeToStatus,
    StaticStore,
    Status,
)
from pocketkube.scheduler.plugins import REGISTRY
from pocketkube.scheduler.plugins.balanced_allocation import NodeResourcesBalancedAllocation
from pocketkube.scheduler.plugins.defaultpreemption import (
    Candidate,
    DefaultPreemption,
    filter_pods_with_pdb_violation,
    pick_one_node,
)
from pocketkube.scheduler.plugins.imagelocality import ImageLocality
from pocketkube.scheduler.plugins.interpodaffinity import InterPodAffinity
from pocketkube.scheduler.plugins.nodeaffinity import NodeAffinity
from pocketkube.scheduler.plugins.nodename import NodeName
from pocketkube.scheduler.plugins.nodeports import NodePorts
from pocketkube.scheduler.plugins.noderesources_fit import NodeResourcesFit
from pocketkube.scheduler.plugins.nodeunschedulable import NodeUnschedulable
from pocketkube.scheduler.plugins.podtopologyspread import PodTopologySpread
from pocketkube.scheduler.plugins.tainttoleration import TaintToleration
from pocketkube.scheduler.plugins.volumebinding import VolumeBinding
from pocketkube.scheduler.plugins.volumerestrictions import VolumeRestrictions
from pocketkube.scheduler.types import PodInfo

Obj = dict[str, Any]
_uid = iter(range(10**6))


def node(name: str, cpu: str = "4", memory: str = "10Gi", pods: str = "110", labels: Obj | None = None,
         taints: list[Obj] | None = None, unschedulable: bool = False, extra: Obj | None = None,
         images: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods, **(extra or {})},
                       "images": images or []}}


def container(cpu: str | None = None, memory: str | None = None, extra: Obj | None = None, **more: Any) -> Obj:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    requests.update(extra or {})
    return {"name": f"c{next(_uid)}", "image": more.pop("image", "busybox"), "resources": {"requests": requests},
            **more}


def pod(name: str = "p", *, containers: list[Obj] | None = None, node_name: str = "", labels: Obj | None = None,
        namespace: str = "default", priority: int = 0, **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}-{next(_uid)}",
                         "labels": labels or {}},
            "spec": {"containers": containers if containers is not None else [container()], "nodeName": node_name,
                     "priority": priority, **spec}}


def handle_for(nodes: list[Obj], pods: list[Obj] = (), listers: Listers | None = None) -> Handle:  # type: ignore[assignment]
    return Handle(listers=listers or Listers(), snapshot=Snapshot.from_objects(nodes, list(pods)))


def run_filter(plugin_cls: type, p: Obj, nodes: list[Obj], pods: list[Obj] = (), args: Obj | None = None,  # type: ignore[assignment]
               listers: Listers | None = None) -> list[Status | None]:
    handle = handle_for(nodes, pods, listers)
    plugin = plugin_cls(handle, args)
    pi = PodInfo(p)
    state = CycleState()
    assert handle.snapshot is not None
    infos = handle.snapshot.node_info_list
    if hasattr(plugin, "pre_filter"):
        _, status = plugin.pre_filter(state, pi, infos)
        if status is not None and status.code == Code.SKIP:
            return [None] * len(infos)
        if status is not None:
            return [status] * len(infos)
    by_name = {n.name: n for n in infos}
    statuses = [plugin.filter(state, pi, by_name[n["metadata"]["name"]]) for n in nodes]
    if hasattr(plugin, "filter_rows"):
        # The vectorised path never lets through a node that the per-node filter rejects.
        columns = handle.snapshot.columns
        sure = plugin.filter_rows(state, pi, columns, np.array([by_name[n["metadata"]["name"]].row for n in nodes]))
        if sure is not None:
            assert all(status is None for status, ok in zip(statuses, sure, strict=True) if ok)
    return statuses


def run_score(plugin_cls: type, p: Obj, nodes: list[Obj], pods: list[Obj] = (), args: Obj | None = None,  # type: ignore[assignment]
              listers: Listers | None = None) -> list[int]:
    handle = handle_for(nodes, pods, listers)
    plugin = plugin_cls(handle, args)
    pi = PodInfo(p)
    state = CycleState()
    assert handle.snapshot is not None
    by_name = handle.snapshot.node_infos
    infos = [by_name[n["metadata"]["name"]] for n in nodes]
    if hasattr(plugin, "pre_score"):
        status = plugin.pre_score(state, pi, infos)
        if status is not None and status.code == Code.SKIP:
            return [0] * len(infos)
    scores = [plugin.score(state, pi, ni) for ni in infos]
    if hasattr(plugin, "score_rows"):
        vectorised = plugin.score_rows(state, pi, handle.snapshot.columns, np.array([ni.row for ni in infos]))
        assert vectorised is None or vectorised.tolist() == scores  # the vectorised path agrees
    if hasattr(plugin, "normalize_score"):
        plugin.normalize_score(state, pi, infos, scores)
    return scores


def reasons(statuses: list[Status | None]) -> list[list[str]]:
    return [s.reasons if s is not None else [] for s in statuses]


# --- NodeResourcesFit ------------------------------------------------------------------------------
FIT_CASES = [
    ("no resources requested always fits", pod(containers=[container()]), [], []),
    ("too many resources fails", pod(containers=[container("1", "1")]),
     [pod(containers=[container("10", "20Gi")], node_name="n")], ["Insufficient cpu", "Insufficient memory"]),
    ("fits with existing pods", pod(containers=[container("1", "1Gi")]),
     [pod(containers=[container("2", "5Gi")], node_name="n")], []),
    ("too many cpu", pod(containers=[container("3")]), [pod(containers=[container("2")], node_name="n")],
     ["Insufficient cpu"]),
    ("init container max rule: big init container fails", pod(
        containers=[container("1")], initContainers=[container("5")]), [], ["Insufficient cpu"]),
    ("init container max rule: init smaller than the sum fits", pod(
        containers=[container("2"), container("2")], initContainers=[container("3")]), [], []),
    ("restartable init containers add up", pod(
        containers=[container("2")], initContainers=[container("3", restartPolicy="Always")]), [],
     ["Insufficient cpu"]),
    ("overhead counts", pod(containers=[container("3")], overhead={"cpu": "2"}), [], ["Insufficient cpu"]),
    ("extended resource fits", pod(containers=[container(extra={"example.com/foo": "1"})]), [], []),
    ("extended resource missing on node", pod(containers=[container(extra={"example.com/bar": "1"})]), [],
     ["Insufficient example.com/bar"]),
    ("ephemeral storage", pod(containers=[container(extra={"ephemeral-storage": "20Gi"})]), [],
     ["Insufficient ephemeral-storage"]),
]


@pytest.mark.parametrize(("name", "p", "existing", "want"), FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_node_resources_fit_filter(name: str, p: Obj, existing: list[Obj], want: list[str]) -> None:
    n = node("n", cpu="4", memory="10Gi", extra={"example.com/foo": "5", "ephemeral-storage": "10Gi"})
    status = run_filter(NodeResourcesFit, p, [n], existing)[0]
    assert (status.reasons if status else []) == want


def test_node_resources_fit_too_many_pods_and_unresolvable() -> None:
    n = node("n", cpu="4", pods="1")
    status = run_filter(NodeResourcesFit, pod(containers=[container("8")]), [n], [pod("x", node_name="n")])[0]
    assert status is not None and status.reasons == ["Too many pods", "Insufficient cpu"]
    # 8 cpus can never fit a 4-cpu node: preemption cannot help.
    assert status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    status = run_filter(NodeResourcesFit, pod(containers=[container("1")]), [n], [pod("x", node_name="n")])[0]
    assert status is not None and status.code == Code.UNSCHEDULABLE


def test_node_resources_fit_ignored_resources() -> None:
    p = pod(containers=[container(extra={"example.com/bar": "1", "other.io/x": "1"})])
    args = {"ignoredResources": ["example.com/bar"], "ignoredResourceGroups": ["other.io"]}
    assert run_filter(NodeResourcesFit, p, [node("n")], [], args) == [None]


def test_vectorised_fit_filter_agrees_with_filter() -> None:
    nodes = [node(f"n{i}", cpu=str(i + 1), pods=str(1 + i % 3)) for i in range(6)]
    existing = [pod(f"e{i}", containers=[container("1")], node_name=f"n{i}") for i in range(0, 6, 2)]
    handle = handle_for(nodes, existing)
    plugin = NodeResourcesFit(handle)
    columns = handle.snapshot.columns  # type: ignore[union-attr]
    for cpu in ("500m", "2", "5"):
        pi = PodInfo(pod(containers=[container(cpu)]))
        state = CycleState()
        plugin.pre_filter(state, pi, [])
        sure = plugin.filter_rows(state, pi, columns, columns.all_rows)
        assert sure is not None
        assert sure.tolist() == [plugin.filter(state, pi, ni) is None for ni in columns.node_infos]


def test_vectorised_resource_plugins_agree_with_per_node_on_random_clusters() -> None:
    rng = random.Random(11)
    strategies = [None, {"type": "MostAllocated"},
                  {"type": "LeastAllocated", "resources": [{"name": "cpu", "weight": 2}, {"name": "memory", "weight": 5},
                                                           {"name": "ephemeral-storage", "weight": 1}]}]
    for round_ in range(20):
        none = ["0"] if round_ % 2 else []  # half the clusters have nodes without some resource
        nodes = [node(f"n{i}", cpu=rng.choice([*none, "1", "3500m", "64"]), memory=rng.choice([*none, "1Gi", "7Gi"]),
                      pods=str(rng.randint(1, 4)), extra={"ephemeral-storage": rng.choice([*none, "10Gi"])})
                 for i in range(12)]
        existing = [pod(f"e{i}", node_name=f"n{rng.randrange(12)}",
                        containers=[container(rng.choice(["100m", "2"]), rng.choice(["64Mi", "3Gi"]))])
                    for i in range(rng.randint(0, 15))]
        p = pod(containers=[container(rng.choice([None, "250m", "3"]), rng.choice([None, "1Gi", "6Gi"]),
                                      extra=rng.choice([{}, {"ephemeral-storage": "1Gi"}]))])
        run_filter(NodeResourcesFit, p, nodes, existing)  # asserts the vectorised filter never admits more
        for strategy in strategies:
            run_score(NodeResourcesFit, p, nodes, existing, args={"scoringStrategy": strategy} if strategy else None)
        run_score(NodeResourcesBalancedAllocation, p, nodes, existing)  # both assert agreement


# --- scoring strategies ----------------------------------------------------------------------------
def test_least_most_and_ratio_scoring() -> None:
    nodes = [node("n1", cpu="4", memory="10Gi"), node("n2", cpu="8", memory="10Gi")]
    p = pod(containers=[container("3", "5Gi")])
    # n1: cpu (4000-3000)*100/4000 = 25, memory 50 -> 37; n2: cpu 62, memory 50 -> 56.
    assert run_score(NodeResourcesFit, p, nodes) == [37, 56]
    # n1: 75, 50 -> 62; n2: 37, 50 -> 43.
    assert run_score(NodeResourcesFit, p, nodes, args={"scoringStrategy": {"type": "MostAllocated"}}) == [62, 43]
    ratio = {"scoringStrategy": {"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {
        "shape": [{"utilization": 0, "score": 10}, {"utilization": 100, "score": 0}]}}}
    # n1: cpu 75% -> 25, memory 50% -> 50, round(37.5) = 38; n2: cpu 37% -> 63, memory 50 -> round(56.5) = 57.
    assert run_score(NodeResourcesFit, p, nodes, args=ratio) == [38, 57]


def test_least_allocated_uses_non_zero_defaults_and_weights() -> None:
    nodes = [node("n1", cpu="1", memory="1Gi")]
    # No requests: 100m and 200Mi are assumed. cpu (1000-100)*100/1000 = 90, memory (1024-200)*100/1024 = 80.
    assert run_score(NodeResourcesFit, pod(containers=[container()]), nodes) == [85]
    weighted = {"scoringStrategy": {"type": "LeastAllocated", "resources": [{"name": "cpu", "weight": 3},
                                                                            {"name": "memory", "weight": 1}]}}
    assert run_score(NodeResourcesFit, pod(containers=[container()]), nodes, args=weighted) == [(90 * 3 + 80) // 4]


def test_balanced_allocation() -> None:
    nodes = [node("n1", cpu="4", memory="10Gi"), node("n2", cpu="10", memory="10Gi")]
    p = pod(containers=[container("3", "5Gi")])
    # n1: fractions 0.75, 0.5 -> std 0.125 -> 87; n2: 0.3, 0.5 -> 0.1 -> 90.
    assert run_score(NodeResourcesBalancedAllocation, p, nodes) == [87, 90]
    # Best-effort pods are not scored at all.
    assert run_score(NodeResourcesBalancedAllocation, pod(containers=[container()]), nodes) == [0, 0]


# --- NodeName / NodeUnschedulable ------------------------------------------------------------------
def test_node_name() -> None:
    nodes = [node("a"), node("b")]
    assert reasons(run_filter(NodeName, pod(nodeName="b"), nodes)) == [
        ["node(s) didn't match the requested node name"], []]
    assert run_filter(NodeName, pod(), nodes) == [None, None]


def test_node_unschedulable() -> None:
    nodes = [node("a", unschedulable=True), node("b")]
    assert reasons(run_filter(NodeUnschedulable, pod(), nodes)) == [["node(s) were unschedulable"], []]
    tolerant = pod(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                 "effect": "NoSchedule"}])
    assert run_filter(NodeUnschedulable, tolerant, nodes) == [None, None]


# --- NodeAffinity ----------------------------------------------------------------------------------
def required(*terms: Obj) -> Obj:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def expr(key: str, op: str, *values: str) -> Obj:
    return {"key": key, "operator": op, **({"values": list(values)} if values else {})}


AFFINITY_CASES = [
    ("nodeSelector match", {"nodeSelector": {"foo": "bar"}}, {"foo": "bar"}, True),
    ("nodeSelector mismatch", {"nodeSelector": {"foo": "bar"}}, {"foo": "baz"}, False),
    ("In", {"affinity": required({"matchExpressions": [expr("foo", "In", "bar", "value2")]})}, {"foo": "bar"}, True),
    ("NotIn", {"affinity": required({"matchExpressions": [expr("foo", "NotIn", "bar")]})}, {"foo": "bar"}, False),
    ("NotIn absent key", {"affinity": required({"matchExpressions": [expr("foo", "NotIn", "bar")]})}, {}, True),
    ("Exists", {"affinity": required({"matchExpressions": [expr("foo", "Exists")]})}, {"foo": "x"}, True),
    ("DoesNotExist", {"affinity": required({"matchExpressions": [expr("foo", "DoesNotExist")]})}, {"foo": "x"},
     False),
    ("Gt", {"affinity": required({"matchExpressions": [expr("kernel", "Gt", "5")]})}, {"kernel": "6"}, True),
    ("Gt equal", {"affinity": required({"matchExpressions": [expr("kernel", "Gt", "5")]})}, {"kernel": "5"}, False),
    ("Lt", {"affinity": required({"matchExpressions": [expr("kernel", "Lt", "5")]})}, {"kernel": "4"}, True),
    ("Gt non-integer label", {"affinity": required({"matchExpressions": [expr("kernel", "Gt", "5")]})},
     {"kernel": "six"}, False),
    ("terms are ORed", {"affinity": required({"matchExpressions": [expr("foo", "In", "x")]},
                                             {"matchExpressions": [expr("bar", "Exists")]})}, {"bar": "1"}, True),
    ("expressions are ANDed", {"affinity": required({"matchExpressions": [expr("foo", "In", "x"),
                                                                          expr("bar", "Exists")]})},
     {"foo": "x"}, False),
    ("empty term matches nothing", {"affinity": required({})}, {"foo": "x"}, False),
    ("matchFields metadata.name", {"affinity": required({"matchFields": [expr("metadata.name", "In", "n")]})},
     {}, True),
    ("matchFields other node", {"affinity": required({"matchFields": [expr("metadata.name", "In", "m")]})},
     {}, False),
    ("nodeSelector and affinity both apply", {"nodeSelector": {"a": "1"}, "affinity": required(
        {"matchExpressions": [expr("b", "Exists")]})}, {"b": "1"}, False),
]


@pytest.mark.parametrize(("name", "spec", "labels", "fits"), AFFINITY_CASES, ids=[c[0] for c in AFFINITY_CASES])
def test_node_affinity_filter(name: str, spec: Obj, labels: Obj, fits: bool) -> None:
    statuses = run_filter(NodeAffinity, pod(**spec), [node("n", labels=labels)])
    assert reasons(statuses) == [[] if fits else ["node(s) didn't match Pod's node affinity/selector"]]
    if not fits:
        assert statuses[0] is not None and statuses[0].code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_node_affinity_prefilter_narrows_to_named_nodes() -> None:
    handle = handle_for([node("a"), node("b")])
    plugin = NodeAffinity(handle)
    result, status = plugin.pre_filter(CycleState(), PodInfo(pod(affinity=required(
        {"matchFields": [expr("metadata.name", "In", "b")]}))), [])
    assert status is None and result is not None and result.node_names == {"b"}


def test_node_affinity_preferred_score() -> None:
    preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 2, "preference": {"matchExpressions": [expr("foo", "In", "bar")]}},
        {"weight": 4, "preference": {"matchExpressions": [expr("key", "In", "value")]}},
        {"weight": 5, "preference": {"matchExpressions": [expr("foo", "In", "bar"), expr("key", "In", "value"),
                                                          expr("az", "In", "az1")]}}]}}
    nodes = [node("m1", labels={"foo": "bar"}), node("m2", labels={"key": "value"}),
             node("m3", labels={"foo": "bar", "key": "value", "az": "az1"})]
    # Raw 2, 4, 11 normalised to the maximum: 18, 36, 100 (upstream's "all machines matches the preferred").
    assert run_score(NodeAffinity, pod(affinity=preferred), nodes) == [18, 36, 100]


def test_node_affinity_added_affinity() -> None:
    args = {"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [expr("zone", "In", "foo")]}]}}}
    statuses = run_filter(NodeAffinity, pod(), [node("a", labels={"zone": "foo"}), node("b")], args=args)
    assert reasons(statuses) == [[], ["node(s) didn't match scheduler-enforced node affinity"]]


# --- TaintToleration -------------------------------------------------------------------------------
def taint(key: str, value: str = "", effect: str = "NoSchedule") -> Obj:
    return {"key": key, "value": value, "effect": effect}


TAINT_CASES = [
    ("no tolerations, tainted node", [], [taint("dedicated", "user1")], "{dedicated: user1}"),
    ("equal toleration", [{"key": "dedicated", "operator": "Equal", "value": "user1", "effect": "NoSchedule"}],
     [taint("dedicated", "user1")], None),
    ("value mismatch", [{"key": "dedicated", "operator": "Equal", "value": "user2", "effect": "NoSchedule"}],
     [taint("dedicated", "user1")], "{dedicated: user1}"),
    ("exists without effect", [{"key": "foo", "operator": "Exists"}], [taint("foo", "bar")], None),
    ("wildcard exists", [{"operator": "Exists"}], [taint("foo", "bar", "NoExecute")], None),
    ("effect mismatch", [{"key": "foo", "operator": "Exists", "effect": "NoExecute"}], [taint("foo", "bar")],
     "{foo: bar}"),
    ("PreferNoSchedule is not filtered", [], [taint("foo", "bar", "PreferNoSchedule")], None),
    ("second taint untolerated", [{"key": "a", "operator": "Exists"}], [taint("a"), taint("b", "x", "NoExecute")],
     "{b: x}"),
]


@pytest.mark.parametrize(("name", "tolerations", "taints", "want"), TAINT_CASES, ids=[c[0] for c in TAINT_CASES])
def test_taint_toleration_filter(name: str, tolerations: list[Obj], taints: list[Obj], want: str | None) -> None:
    status = run_filter(TaintToleration, pod(tolerations=tolerations), [node("n", taints=taints)])[0]
    if want is None:
        assert status is None
    else:
        assert status is not None and status.reasons == [f"node(s) had untolerated taint {want}"]
        assert status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_taint_toleration_score() -> None:
    nodes = [node("a"), node("b", taints=[taint("foo", "bar", "PreferNoSchedule")]),
             node("c", taints=[taint("foo", "bar", "PreferNoSchedule"), taint("x", "y", "PreferNoSchedule")])]
    assert run_score(TaintToleration, pod(), nodes) == [100, 50, 0]
    tolerant = pod(tolerations=[{"key": "foo", "operator": "Equal", "value": "bar", "effect": "PreferNoSchedule"}])
    assert run_score(TaintToleration, tolerant, nodes) == [100, 100, 0]


# --- NodePorts -------------------------------------------------------------------------------------
def port_pod(name: str, *ports: tuple[str, str, int], node_name: str = "") -> Obj:
    return pod(name, node_name=node_name, containers=[container(ports=[
        {"containerPort": 80, "hostPort": p, "protocol": proto, **({"hostIP": ip} if ip else {})}
        for ip, proto, p in ports])])


PORT_CASES = [
    ("no ports", pod(), [port_pod("e", ("", "TCP", 8080), node_name="n")], False),
    ("other port", port_pod("p", ("", "TCP", 8081)), [port_pod("e", ("", "TCP", 8080), node_name="n")], False),
    ("same port", port_pod("p", ("", "TCP", 8080)), [port_pod("e", ("", "TCP", 8080), node_name="n")], True),
    ("other protocol", port_pod("p", ("", "UDP", 8080)), [port_pod("e", ("", "TCP", 8080), node_name="n")], False),
    ("different IPs", port_pod("p", ("127.0.0.1", "TCP", 8080)),
     [port_pod("e", ("127.0.0.2", "TCP", 8080), node_name="n")], False),
    ("0.0.0.0 clashes with a specific IP", port_pod("p", ("0.0.0.0", "TCP", 8001)),
     [port_pod("e", ("127.0.0.1", "TCP", 8001), node_name="n")], True),
    ("specific IP clashes with 0.0.0.0", port_pod("p", ("127.0.0.1", "TCP", 8001)),
     [port_pod("e", ("", "TCP", 8001), node_name="n")], True),
]


@pytest.mark.parametrize(("name", "p", "existing", "conflict"), PORT_CASES, ids=[c[0] for c in PORT_CASES])
def test_node_ports(name: str, p: Obj, existing: list[Obj], conflict: bool) -> None:
    status = run_filter(NodePorts, p, [node("n")], existing)[0]
    assert (status is not None) == conflict
    if conflict:
        assert status is not None and status.reasons == ["node(s) didn't have free ports for the requested pod ports"]


# --- ImageLocality ---------------------------------------------------------------------------------
def test_image_locality() -> None:
    mb = 1024 * 1024
    nodes = [node("a", images=[{"names": ["gcr.io/40:latest"], "sizeBytes": 40 * mb},
                               {"names": ["gcr.io/300:latest"], "sizeBytes": 300 * mb}]),
             node("b", images=[{"names": ["gcr.io/250:latest"], "sizeBytes": 250 * mb}]),
             node("c")]
    p = pod(containers=[container(image="gcr.io/40"), container(image="gcr.io/250")])
    # a: 40MB * 1/3 spread -> 13MB < 23MB threshold -> 0; b: 250MB/3 = 83MB -> 100*(83-23)/(2000-23) = 3.
    assert run_score(ImageLocality, p, nodes) == [0, 3, 0]


# --- InterPodAffinity ------------------------------------------------------------------------------
def term(labels: Obj, key: str = "kubernetes.io/hostname", **more: Any) -> Obj:
    return {"labelSelector": {"matchLabels": labels}, "topologyKey": key, **more}


def affinity(kind: str, *terms: Obj, preferred: bool = False) -> Obj:
    field = "preferredDuringSchedulingIgnoredDuringExecution" if preferred else \
        "requiredDuringSchedulingIgnoredDuringExecution"
    return {kind: {field: list(terms)}}


def test_inter_pod_affinity_required() -> None:
    nodes = [node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z2"})]
    existing = [pod("db", labels={"app": "db"}, node_name="a")]
    want_db = pod(labels={"app": "web"}, affinity=affinity("podAffinity", term({"app": "db"}, "zone")))
    assert reasons(run_filter(InterPodAffinity, want_db, nodes, existing)) == [
        [], ["node(s) didn't match pod affinity rules"]]
    avoid_db = pod(labels={"app": "web"}, affinity=affinity("podAntiAffinity", term({"app": "db"}, "zone")))
    assert reasons(run_filter(InterPodAffinity, avoid_db, nodes, existing)) == [
        ["node(s) didn't match pod anti-affinity rules"], []]


def test_inter_pod_affinity_first_pod_of_a_group() -> None:
    # No pod matches anywhere, but the pod matches its own term: it may go where the topology label exists.
    nodes = [node("a", labels={"zone": "z1"}), node("b")]
    selfish = pod(labels={"app": "x"}, affinity=affinity("podAffinity", term({"app": "x"}, "zone")))
    assert reasons(run_filter(InterPodAffinity, selfish, nodes)) == [[], ["node(s) didn't match pod affinity rules"]]


def test_inter_pod_affinity_existing_anti_affinity() -> None:
    nodes = [node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z1"}), node("c", labels={"zone": "z2"})]
    existing = [pod("guard", labels={"app": "guard"}, node_name="a",
                    affinity=affinity("podAntiAffinity", term({"app": "web"}, "zone")))]
    statuses = run_filter(InterPodAffinity, pod(labels={"app": "web"}), nodes, existing)
    assert reasons(statuses) == [["node(s) didn't satisfy existing pods anti-affinity rules"]] * 2 + [[]]
    # A pod the term does not select is unaffected (and the plugin has work to do only because of the guard).
    assert run_filter(InterPodAffinity, pod(labels={"app": "db"}), nodes, existing) == [None] * 3


def test_inter_pod_affinity_namespaces() -> None:
    nodes = [node("a")]
    existing = [pod("db", labels={"app": "db"}, node_name="a", namespace="other")]
    same_ns = pod(affinity=affinity("podAntiAffinity", term({"app": "db"})))
    assert run_filter(InterPodAffinity, same_ns, nodes, existing) == [None]
    listed = pod(affinity=affinity("podAntiAffinity", term({"app": "db"}, namespaces=["other"])))
    assert reasons(run_filter(InterPodAffinity, listed, nodes, existing)) == [
        ["node(s) didn't match pod anti-affinity rules"]]
    listers = Listers({"namespaces": StaticStore([{"metadata": {"name": "other", "labels": {"team": "t"}}}])})
    by_selector = pod(affinity=affinity("podAntiAffinity", term({"app": "db"},
                                                                namespaceSelector={"matchLabels": {"team": "t"}})))
    assert reasons(run_filter(InterPodAffinity, by_selector, nodes, existing, listers=listers)) == [
        ["node(s) didn't match pod anti-affinity rules"]]


def test_inter_pod_affinity_score() -> None:
    nodes = [node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z1"}), node("c", labels={"zone": "z2"})]
    existing = [pod("s1", labels={"security": "S1"}, node_name="a")]
    preferred = pod(affinity=affinity("podAffinity", {"weight": 5, "podAffinityTerm": term({"security": "S1"}, "zone")},
                                      preferred=True))
    assert run_score(InterPodAffinity, preferred, nodes, existing) == [100, 100, 0]
    anti = pod(affinity=affinity("podAntiAffinity", {"weight": 5, "podAffinityTerm": term({"security": "S1"},
                                                                                            "zone")}, preferred=True))
    assert run_score(InterPodAffinity, anti, nodes, existing) == [0, 0, 100]
    # An existing pod's required affinity attracts matching pods with hardPodAffinityWeight.
    hard = [pod("h", labels={"a": "b"}, node_name="c", affinity=affinity("podAffinity", term({"app": "x"}, "zone")))]
    assert run_score(InterPodAffinity, pod(labels={"app": "x"}), nodes, hard) == [0, 0, 100]


# --- PodTopologySpread -----------------------------------------------------------------------------
def spread(max_skew: int = 1, key: str = "zone", when: str = "DoNotSchedule", **more: Any) -> Obj:
    return {"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"foo": ""}}, **more}


def spread_nodes() -> list[Obj]:
    return [node("node-a", labels={"zone": "zone1", "node": "node-a"}),
            node("node-b", labels={"zone": "zone1", "node": "node-b"}),
            node("node-x", labels={"zone": "zone2", "node": "node-x"}),
            node("node-y", labels={"zone": "zone2", "node": "node-y"})]


def foo_pods(*placements: str) -> list[Obj]:
    return [pod(f"p{i}", labels={"foo": ""}, node_name=n) for i, n in enumerate(placements)]


SPREAD_CASES = [
    ("no existing pods", [spread()], [], [True, True, True, True]),
    ("zone skew: zone1 has 3, zone2 has 1", [spread()], ["node-a", "node-a", "node-b", "node-x"],
     [False, False, True, True]),
    ("maxSkew 2 allows zone1", [spread(2)], ["node-a", "node-a", "node-x"], [True, True, True, True]),
    ("two constraints", [spread(), spread(1, "node")], ["node-a", "node-b", "node-x"],
     [False, False, False, True]),
    ("minDomains above the domain count makes the minimum 0", [spread(1, minDomains=3)], ["node-a", "node-x"],
     [False, False, False, False]),
]


@pytest.mark.parametrize(("name", "constraints", "placements", "fits"), SPREAD_CASES,
                         ids=[c[0] for c in SPREAD_CASES])
def test_pod_topology_spread_filter(name: str, constraints: list[Obj], placements: list[str],
                                    fits: list[bool]) -> None:
    statuses = run_filter(PodTopologySpread, pod(labels={"foo": ""}, topologySpreadConstraints=constraints),
                          spread_nodes(), foo_pods(*placements))
    assert [s is None for s in statuses] == fits
    for s in statuses:
        if s is not None:
            assert s.reasons == ["node(s) didn't match pod topology spread constraints"]


def test_pod_topology_spread_missing_label_and_node_affinity_policy() -> None:
    nodes = spread_nodes() + [node("bare")]
    statuses = run_filter(PodTopologySpread, pod(labels={"foo": ""}, topologySpreadConstraints=[spread()]), nodes)
    assert statuses[-1] is not None and statuses[-1].code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert statuses[-1].reasons == ["node(s) didn't match pod topology spread constraints (missing required label)"]
    # With nodeAffinityPolicy Honor (default), zone2 is not a domain for a pod pinned to zone1.
    pinned = pod(labels={"foo": ""}, topologySpreadConstraints=[spread()], nodeSelector={"zone": "zone1"})
    assert run_filter(PodTopologySpread, pinned, spread_nodes(), foo_pods("node-a", "node-b"))[:2] == [None, None]
    ignore = pod(labels={"foo": ""}, topologySpreadConstraints=[spread(nodeAffinityPolicy="Ignore")],
                 nodeSelector={"zone": "zone1"})
    assert run_filter(PodTopologySpread, ignore, spread_nodes(), foo_pods("node-a", "node-b"))[:2] != [None, None]


def test_pod_topology_spread_score() -> None:
    p = pod(labels={"foo": ""}, topologySpreadConstraints=[spread(when="ScheduleAnyway")])
    scores = run_score(PodTopologySpread, p, spread_nodes(), foo_pods("node-a", "node-a", "node-b", "node-x"))
    # zone1 has 3 matching pods, zone2 has 1: zone2 nodes score higher.
    assert scores[0] == scores[1] < scores[2] == scores[3] == 100


def test_pod_topology_spread_system_defaults() -> None:
    listers = Listers({"services": StaticStore([{"metadata": {"name": "svc", "namespace": "default"},
                                                 "spec": {"selector": {"foo": ""}}}])})
    nodes = [node("a", labels={"topology.kubernetes.io/zone": "z1"}),
             node("b", labels={"topology.kubernetes.io/zone": "z2"})]
    existing = foo_pods("a", "a")
    scores = run_score(PodTopologySpread, pod(labels={"foo": ""}), nodes, existing, listers=listers)
    assert scores[1] == 100 and scores[0] < scores[1]
    # Without a Service/controller selecting it, a pod gets no default constraints.
    assert run_score(PodTopologySpread, pod(labels={"bar": ""}), nodes, existing, listers=listers) == [0, 0]


def _brute_force_domains(cache: Cache, key: str, keys: set[str], labels: Obj, namespace: str) -> dict[str, int]:
    """Matching pods per domain of `key`, counted the long way over every node carrying all of `keys`."""
    out: dict[str, int] = {}
    for ni in cache.snapshot().node_info_list:
        if not keys <= ni.labels.keys():
            continue
        value = ni.labels[key]
        out[value] = out.get(value, 0) + sum(
            1 for p in ni.pods.values() if p.namespace == namespace and not p.terminating
            and all(p.labels.get(k) == v for k, v in labels.items()))
    return out


def test_pod_topology_spread_domain_counts_follow_the_cache() -> None:
    """The per-domain counts kept between cycles (only changed nodes recounted) equal a full count after
    pods come and go, nodes gain or lose labels and nodes join, in random order."""
    rng = random.Random(7)
    cache = Cache()
    node_objs = {f"n{i}": node(f"n{i}", labels={"zone": f"z{i % 3}", "rack": f"r{i % 5}"}) for i in range(30)}
    for obj in node_objs.values():
        cache.add_node(obj)
    handle = Handle(listers=Listers(), snapshot=cache.snapshot())
    plugin = PodTopologySpread(handle, None)
    constraints = [spread(key="zone"), spread(2, key="rack")]
    pods: list[Obj] = []
    for step in range(200):
        action = rng.random()
        if action < 0.55 or not pods:
            name = rng.choice(list(node_objs))
            p = pod(f"p{step}", node_name=name, labels={"foo": ""} if rng.random() < 0.8 else {"bar": ""},
                    namespace="default" if rng.random() < 0.9 else "other")
            cache.add_pod(p)
            pods.append(p)
        elif action < 0.85:
            cache.remove_pod(pods.pop(rng.randrange(len(pods))))
        elif action < 0.95:
            name = rng.choice(list(node_objs))
            updated = node(name, labels={"zone": f"z{rng.randrange(4)}"} if rng.random() < 0.3 else
                           {"zone": f"z{rng.randrange(4)}", "rack": f"r{rng.randrange(5)}"})
            cache.update_node(node_objs[name], updated)
            node_objs[name] = updated
        else:
            name = f"n{len(node_objs)}"
            node_objs[name] = node(name, labels={"zone": "z9", "rack": "r9"})
            cache.add_node(node_objs[name])
        handle.snapshot = cache.snapshot()
        state = CycleState()
        pi = PodInfo(pod("new", labels={"foo": ""}, topologySpreadConstraints=constraints))
        plugin.pre_filter(state, pi, handle.snapshot.node_info_list)
        counted = state.read("PreFilterPodTopologySpread").match_num
        keys = {"zone", "rack"}
        assert counted == [_brute_force_domains(cache, "zone", keys, {"foo": ""}, "default"),
                           _brute_force_domains(cache, "rack", keys, {"foo": ""}, "default")], step


# --- volumes ---------------------------------------------------------------------------------------
def claim(name: str, volume: str = "", modes: list[str] | None = None, sc: str = "") -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"claim-{name}"},
            "spec": {"volumeName": volume, "accessModes": modes or ["ReadWriteOnce"], "storageClassName": sc,
                     "resources": {"requests": {"storage": "1Gi"}}}}


def with_claims(name: str, *claims: str, node_name: str = "") -> Obj:
    return pod(name, node_name=node_name, volumes=[{"name": c, "persistentVolumeClaim": {"claimName": c}}
                                                   for c in claims])


def test_volume_binding() -> None:
    pv = {"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                                 "nodeAffinity": {"required": {"nodeSelectorTerms": [
                                                     {"matchExpressions": [expr("zone", "In", "z1")]}]}}}}
    local = {"metadata": {"name": "local"}, "provisioner": "kubernetes.io/no-provisioner",
             "volumeBindingMode": "WaitForFirstConsumer"}
    free_pv = {"metadata": {"name": "pv2"}, "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                                                      "storageClassName": "local", "nodeAffinity": pv["spec"]["nodeAffinity"]},
               "status": {"phase": "Available"}}
    listers = Listers({"persistentvolumeclaims": StaticStore([claim("bound", "pv1"), claim("pending"),
                                                              claim("late", sc="local")]),
                       "persistentvolumes": StaticStore([pv, free_pv]),
                       "storageclasses": StaticStore([local])})
    nodes = [node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z2"})]
    assert reasons(run_filter(VolumeBinding, with_claims("p", "bound"), nodes, listers=listers)) == [
        [], ["node(s) had volume node affinity conflict"]]
    assert reasons(run_filter(VolumeBinding, with_claims("p", "pending"), nodes, listers=listers)) == [
        ["pod has unbound immediate PersistentVolumeClaims"]] * 2
    assert reasons(run_filter(VolumeBinding, with_claims("p", "missing"), nodes, listers=listers)) == [
        ['persistentvolumeclaim "missing" not found']] * 2
    assert reasons(run_filter(VolumeBinding, with_claims("p", "late"), nodes, listers=listers)) == [
        [], ["node(s) didn't find available persistent volumes to bind"]]


def test_volume_restrictions_read_write_once_pod() -> None:
    listers = Listers({"persistentvolumeclaims": StaticStore([claim("solo", "pv", ["ReadWriteOncePod"]),
                                                              claim("shared", "pv2")])})
    existing = [with_claims("user", "solo", "shared", node_name="a")]
    assert reasons(run_filter(VolumeRestrictions, with_claims("p", "solo"), [node("a"), node("b")], existing,
                              listers=listers)) == [[
        "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"]] * 2
    assert run_filter(VolumeRestrictions, with_claims("p", "shared"), [node("a")], existing, listers=listers) == [None]
    gce = {"name": "d", "gcePersistentDisk": {"pdName": "disk"}}
    assert reasons(run_filter(VolumeRestrictions, pod(volumes=[gce]), [node("a")],
                              [pod("e", node_name="a", volumes=[gce])])) == [["node(s) had no available disk"]]


# --- DefaultPreemption -----------------------------------------------------------------------------
def preemption_framework(nodes: list[Obj], pods: list[Obj], pdbs: list[Obj] = ()) -> Framework:  # type: ignore[assignment]
    listers = Listers({"poddisruptionbudgets": StaticStore(pdbs)})
    handle = Handle(listers=listers, snapshot=Snapshot.from_objects(nodes, pods))
    return Framework(default_profile(REGISTRY), REGISTRY, handle)


def select_victims(fwk: Framework, preemptor: Obj, node_name: str,
                   pdbs: list[Obj] = ()) -> tuple[list[str], int, Status | None]:  # type: ignore[assignment]
    plugin = fwk.plugins["DefaultPreemption"]
    assert isinstance(plugin, DefaultPreemption)
    pi = PodInfo(preemptor)
    state = CycleState()
    assert fwk.handle.snapshot is not None
    fwk.run_pre_filter_plugins(state, pi, fwk.handle.snapshot.node_info_list)
    ni = fwk.handle.snapshot.node_infos[node_name].clone()
    victims, violations, status = plugin.select_victims_on_node(state, pi, ni, list(pdbs))
    return [v.name for v in victims], violations, status


def test_preemption_minimal_victims_lowest_priority_first() -> None:
    pods = [pod("low", containers=[container("1")], node_name="n", priority=1),
            pod("mid", containers=[container("1")], node_name="n", priority=5),
            pod("mid2", containers=[container("2")], node_name="n", priority=5)]
    fwk = preemption_framework([node("n", cpu="4")], pods)
    # Needs 1 cpu: reprieve from the most important down; only the lowest priority pod goes.
    victims, violations, status = select_victims(fwk, pod("hi", containers=[container("1")], priority=10), "n")
    assert (victims, violations, status) == (["low"], 0, None)
    victims, _, _ = select_victims(fwk, pod("hi", containers=[container("3")], priority=10), "n")
    assert sorted(victims) == ["low", "mid2"]


def test_preemption_no_victims_and_pdb() -> None:
    fwk = preemption_framework([node("n", cpu="2")], [pod("same", containers=[container("2")], node_name="n")])
    _, _, status = select_victims(fwk, pod("p", containers=[container("1")]), "n")
    assert status is not None and status.reasons == ["No preemption victims found for incoming pod"]
    pods = [pod("a", containers=[container("1")], node_name="n", labels={"app": "x"}),
            pod("b", containers=[container("1")], node_name="n", labels={"app": "x"})]
    pdb = {"metadata": {"name": "pdb", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"app": "x"}}},
           "status": {"disruptionsAllowed": 1}}
    violating, non_violating = filter_pods_with_pdb_violation([PodInfo(p) for p in pods], [pdb])
    assert ([p.name for p in violating], [p.name for p in non_violating]) == (["b"], ["a"])
    fwk = preemption_framework([node("n", cpu="2")], pods)
    victims, violations, _ = select_victims(fwk, pod("hi", containers=[container("2")], priority=1), "n", [pdb])
    assert sorted(victims) == ["a", "b"] and violations == 1


def test_pick_one_node_for_preemption() -> None:
    def victims(*priorities: int) -> list[PodInfo]:
        return [PodInfo(pod(f"v{i}", priority=p)) for i, p in enumerate(priorities)]
    assert pick_one_node([Candidate("a", victims(5), 1), Candidate("b", victims(9), 0)]).node == "b"
    assert pick_one_node([Candidate("a", victims(5), 0), Candidate("b", victims(3, 3), 0)]).node == "b"
    assert pick_one_node([Candidate("a", victims(3, 2), 0), Candidate("b", victims(3, 1), 0)]).node == "b"
    assert pick_one_node([Candidate("a", victims(3, 1, 1), 0), Candidate("b", victims(3, 2), 0)]).node == "b"


async def test_preemption_messages() -> None:
    nodes = [node("n1", cpu="1"), node("n2", taints=[taint("dedicated", "gpu")])]
    fwk = preemption_framework(nodes, [])
    plugin = fwk.plugins["DefaultPreemption"]
    plugin.rng = random.Random(0)  # type: ignore[attr-defined]
    statuses = NodeToStatus()
    statuses.set("n1", Status(Code.UNSCHEDULABLE, "Insufficient cpu"))
    statuses.set("n2", Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, "node(s) had untolerated taint {dedicated: gpu}"))
    never = pod(containers=[container("2")], preemptionPolicy="Never")
    _, status = await plugin.post_filter(CycleState(), PodInfo(never), statuses)  # type: ignore[attr-defined]
    assert status.reasons == ["preemption: not eligible due to preemptionPolicy=Never."]
    _, status = await plugin.post_filter(CycleState(), PodInfo(pod(containers=[container("2")])),  # type: ignore[attr-defined]
                                         statuses)
    assert status.reasons == ["preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, "
                              "1 Preemption is not helpful for scheduling."]
