"""The scheduler's view of pods and nodes: PodInfo, NodeInfo and Resource, as upstream's framework/types.go.

Everything a plugin reads on the hot path is parsed once, when the pod or node enters the cache, into
plain ints and frozen sets: quantities become milli-CPU / bytes, selectors become LabelSelector objects.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pocketkube.api.quantity import parse_quantity
from pocketkube.api.selectors import IN, NOT_IN, LabelSelector, Requirement, SelectorError

if TYPE_CHECKING:
    from pocketkube.scheduler.columns import NodeColumns

Obj = dict[str, Any]

MAX_NODE_SCORE = 100
DEFAULT_MILLI_CPU_REQUEST = 100  # 0.1 core, for containers that request nothing (scoring only)
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"

CPU, MEMORY, EPHEMERAL_STORAGE, PODS = "cpu", "memory", "ephemeral-storage", "pods"
_NANO = 10**9
_generation = itertools.count(1)


def next_generation() -> int:
    return next(_generation)


@functools.lru_cache(maxsize=4096)
def quantity_nanos(text: str) -> int:
    """A quantity in exact nano-units (parsing already rounds to nano-units; no int64 saturation)."""
    try:
        fraction = parse_quantity(str(text)).as_fraction() * _NANO
    except ValueError:
        return 0
    return -((-fraction.numerator) // fraction.denominator)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def nanos_to_milli(nanos: int) -> int:
    return _ceil_div(nanos, 10**6)


def nanos_to_value(nanos: int) -> int:
    return _ceil_div(nanos, _NANO)


def is_native_resource(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def is_extended_resource_name(name: str) -> bool:
    return not is_native_resource(name) and not name.startswith("requests.")


def is_hugepage_resource_name(name: str) -> bool:
    return name.startswith("hugepages-")


def is_scalar_resource_name(name: str) -> bool:
    """Extended resources, hugepages, kubernetes.io/-prefixed and attachable-volume counts."""
    return (is_extended_resource_name(name) or is_hugepage_resource_name(name)
            or ("/" in name and "kubernetes.io/" in name) or name.startswith("attachable-volumes-"))


class Resource:
    """Compute resources as ints: milli-CPU, bytes, pod count, and scalar (extended) resources."""

    __slots__ = ("milli_cpu", "memory", "ephemeral_storage", "allowed_pod_number", "scalar")

    def __init__(self, milli_cpu: int = 0, memory: int = 0, ephemeral_storage: int = 0,
                 allowed_pod_number: int = 0, scalar: dict[str, int] | None = None) -> None:
        self.milli_cpu = milli_cpu
        self.memory = memory
        self.ephemeral_storage = ephemeral_storage
        self.allowed_pod_number = allowed_pod_number
        self.scalar: dict[str, int] = scalar if scalar is not None else {}

    @classmethod
    def from_nanos(cls, nanos: Mapping[str, int]) -> Resource:
        """Resource.Add(ResourceList): cpu as milli-value, everything else as value, rounded up."""
        r = cls()
        for name, amount in nanos.items():
            if name == CPU:
                r.milli_cpu += nanos_to_milli(amount)
            elif name == MEMORY:
                r.memory += nanos_to_value(amount)
            elif name == PODS:
                r.allowed_pod_number += nanos_to_value(amount)
            elif name == EPHEMERAL_STORAGE:
                r.ephemeral_storage += nanos_to_value(amount)
            elif is_scalar_resource_name(name):
                r.scalar[name] = r.scalar.get(name, 0) + nanos_to_value(amount)
        return r

    @classmethod
    def from_list(cls, resources: Mapping[str, Any] | None) -> Resource:
        return cls.from_nanos({k: quantity_nanos(v) for k, v in (resources or {}).items()})

    def add(self, other: Resource, sign: int = 1) -> None:
        self.milli_cpu += sign * other.milli_cpu
        self.memory += sign * other.memory
        self.ephemeral_storage += sign * other.ephemeral_storage
        self.allowed_pod_number += sign * other.allowed_pod_number
        for name, value in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + sign * value

    def clone(self) -> Resource:
        return Resource(self.milli_cpu, self.memory, self.ephemeral_storage, self.allowed_pod_number,
                        dict(self.scalar))

    def is_zero(self) -> bool:
        return not (self.milli_cpu or self.memory or self.ephemeral_storage or self.scalar)

    def get(self, name: str) -> int:
        if name == CPU:
            return self.milli_cpu
        if name == MEMORY:
            return self.memory
        if name == EPHEMERAL_STORAGE:
            return self.ephemeral_storage
        if name == PODS:
            return self.allowed_pod_number
        return self.scalar.get(name, 0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resource):
            return NotImplemented
        return (self.milli_cpu, self.memory, self.ephemeral_storage, self.allowed_pod_number,
                {k: v for k, v in self.scalar.items() if v}) == \
            (other.milli_cpu, other.memory, other.ephemeral_storage, other.allowed_pod_number,
             {k: v for k, v in other.scalar.items() if v})

    def __repr__(self) -> str:
        return (f"Resource(cpu={self.milli_cpu}m, memory={self.memory}, eph={self.ephemeral_storage}, "
                f"pods={self.allowed_pod_number}, scalar={self.scalar})")


# --- pod requests (k8s.io/component-helpers/resource PodRequests) ----------------------------------
def _add_into(total: dict[str, int], add: Mapping[str, int]) -> None:
    for k, v in add.items():
        total[k] = total.get(k, 0) + v


def _max_into(total: dict[str, int], other: Mapping[str, int]) -> None:
    for k, v in other.items():
        if k not in total or v > total[k]:
            total[k] = v


def _container_requests(container: Obj, non_missing: Mapping[str, int] | None) -> dict[str, int]:
    requests = ((container.get("resources") or {}).get("requests")) or {}
    result = {k: quantity_nanos(v) for k, v in requests.items()}
    if non_missing:
        for k, v in non_missing.items():
            result.setdefault(k, v)
    return result


_POD_LEVEL_RESOURCES = (CPU, MEMORY)


def pod_requests(spec: Obj, non_missing: Mapping[str, int] | None = None, *,
                 include_overhead: bool = True) -> dict[str, int]:
    """Requests in nano-units: containers summed, init containers by upstream's max rule (restartable
    sidecars add up), pod-level requests override cpu/memory, then the RuntimeClass overhead."""
    reqs: dict[str, int] = {}
    for c in spec.get("containers") or []:
        _add_into(reqs, _container_requests(c, non_missing))
    restartable: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for c in spec.get("initContainers") or []:
        creqs = _container_requests(c, non_missing)
        if c.get("restartPolicy") == "Always":
            _add_into(reqs, creqs)
            _add_into(restartable, creqs)
            creqs = dict(restartable)
        else:
            _add_into(creqs, restartable)
        _max_into(init_max, creqs)
    _max_into(reqs, init_max)
    pod_level = ((spec.get("resources") or {}).get("requests")) or {}
    for name in _POD_LEVEL_RESOURCES:
        if name in pod_level:
            reqs[name] = quantity_nanos(pod_level[name])
    if include_overhead and spec.get("overhead"):
        _add_into(reqs, {k: quantity_nanos(v) for k, v in spec["overhead"].items()})
    return reqs


_NON_MISSING = {CPU: DEFAULT_MILLI_CPU_REQUEST * 10**6, MEMORY: DEFAULT_MEMORY_REQUEST * _NANO}


def non_missing_defaults(spec: Obj) -> dict[str, int]:
    """getNonMissingContainerRequests: defaults for cpu/memory unless set at pod level."""
    pod_level = ((spec.get("resources") or {}).get("requests")) or {}
    if not pod_level:
        return dict(_NON_MISSING)
    return {k: v for k, v in _NON_MISSING.items() if k not in pod_level}


# --- affinity terms ------------------------------------------------------------------------------
def _selector(raw: Any) -> LabelSelector:
    try:
        return LabelSelector.from_dict(raw)
    except SelectorError:
        return LabelSelector.nothing()


@dataclass(frozen=True, eq=False)
class AffinityTerm:
    """A parsed PodAffinityTerm: namespaces, label selector, topology key, namespace selector."""

    namespaces: frozenset[str]
    selector: LabelSelector
    topology_key: str
    namespace_selector: LabelSelector

    @classmethod
    def parse(cls, pod_namespace: str, pod_labels: Mapping[str, str], term: Obj) -> AffinityTerm:
        namespaces = term.get("namespaces") or []
        ns_selector_raw = term.get("namespaceSelector")
        if not namespaces and ns_selector_raw is None:
            names = frozenset([pod_namespace])
        else:
            names = frozenset(namespaces)
        selector = _selector(term.get("labelSelector"))
        # matchLabelKeys / mismatchLabelKeys: the pod's own values join the selector (upstream merges
        # them at admission; doing it here too is idempotent for matching).
        extra = [Requirement(k, IN, (pod_labels[k],)) for k in term.get("matchLabelKeys") or []
                 if k in pod_labels]
        extra += [Requirement(k, NOT_IN, (pod_labels[k],)) for k in term.get("mismatchLabelKeys") or []
                  if k in pod_labels]
        if extra and not selector.matches_nothing:
            selector = LabelSelector([*selector.requirements, *extra])
        return cls(names, selector, term.get("topologyKey", ""), _selector(ns_selector_raw))

    def matches(self, pod: PodInfo, ns_labels: Mapping[str, str] | None) -> bool:
        """Does `pod` fall under this term (namespace, then labels)?"""
        if pod.namespace in self.namespaces or (ns_labels is not None and self.namespace_selector.matches(ns_labels)):
            return self.selector.matches(pod.labels)
        return False


@dataclass(frozen=True, eq=False)
class WeightedAffinityTerm:
    term: AffinityTerm
    weight: int


def _terms(pod_ns: str, labels: Mapping[str, str], raw: list[Obj] | None) -> tuple[AffinityTerm, ...]:
    return tuple(AffinityTerm.parse(pod_ns, labels, t) for t in raw or [])


def _weighted(pod_ns: str, labels: Mapping[str, str],
              raw: list[Obj] | None) -> tuple[WeightedAffinityTerm, ...]:
    return tuple(WeightedAffinityTerm(AffinityTerm.parse(pod_ns, labels, t.get("podAffinityTerm") or {}),
                                      int(t.get("weight") or 0)) for t in raw or [])


def normalized_image_name(name: str) -> str:
    if name.rfind(":") <= name.rfind("/"):
        name += ":latest"
    return name


class PodInfo:
    """A pod plus everything the plugins precompute from it."""

    __slots__ = ("pod", "uid", "namespace", "name", "key", "labels", "priority", "spec",
                 "required_affinity_terms", "required_anti_affinity_terms", "preferred_affinity_terms",
                 "preferred_anti_affinity_terms", "has_affinity", "has_required_anti_affinity",
                 "requests", "non0_cpu", "non0_mem", "host_ports", "pvcs", "terminating", "node_name")

    def __init__(self, pod: Obj) -> None:
        self.update(pod)

    def update(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.spec = spec
        self.uid = meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        self.namespace = meta.get("namespace", "")
        self.name = meta.get("name", "")
        self.key = f"{self.namespace}/{self.name}"
        self.labels: dict[str, str] = meta.get("labels") or {}
        self.priority = int(spec.get("priority") or 0)
        self.node_name = spec.get("nodeName") or ""
        self.terminating = bool(meta.get("deletionTimestamp"))
        affinity = spec.get("affinity") or {}
        pa = affinity.get("podAffinity")
        paa = affinity.get("podAntiAffinity")
        self.has_affinity = pa is not None or paa is not None
        self.has_required_anti_affinity = bool(paa and paa.get("requiredDuringSchedulingIgnoredDuringExecution"))
        ns, labels = self.namespace, self.labels
        required, preferred = "requiredDuringSchedulingIgnoredDuringExecution", \
            "preferredDuringSchedulingIgnoredDuringExecution"
        self.required_affinity_terms = _terms(ns, labels, (pa or {}).get(required))
        self.required_anti_affinity_terms = _terms(ns, labels, (paa or {}).get(required))
        self.preferred_affinity_terms = _weighted(ns, labels, (pa or {}).get(preferred))
        self.preferred_anti_affinity_terms = _weighted(ns, labels, (paa or {}).get(preferred))
        self.requests = Resource.from_nanos(pod_requests(spec))
        non0 = pod_requests(spec, non_missing_defaults(spec))
        self.non0_cpu = nanos_to_milli(non0.get(CPU, 0))
        self.non0_mem = nanos_to_value(non0.get(MEMORY, 0))
        self.host_ports = host_ports(spec)
        self.pvcs = tuple(v["persistentVolumeClaim"].get("claimName", "") for v in spec.get("volumes") or []
                          if v.get("persistentVolumeClaim"))

    def with_node(self, node: str) -> PodInfo:
        """The assumed copy of this pod on `node` (what the cache holds until the bind is confirmed)."""
        c = PodInfo.__new__(PodInfo)
        for slot in PodInfo.__slots__:
            setattr(c, slot, getattr(self, slot))
        c.spec = {**self.spec, "nodeName": node}
        c.pod = {**self.pod, "spec": c.spec}
        c.node_name = node
        return c

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"


def host_ports(spec: Obj) -> tuple[tuple[str, str, int], ...]:
    """(hostIP, protocol, hostPort) of containers and restartable init containers."""
    ports: list[tuple[str, str, int]] = []
    containers = list(spec.get("containers") or [])
    containers += [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or []:
            port = int(p.get("hostPort") or 0)
            if port > 0:
                ports.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", port))
    return tuple(ports)


def ports_conflict(used: set[tuple[str, str, int]], wanted: tuple[tuple[str, str, int], ...]) -> bool:
    """HostPortInfo.CheckConflict: 0.0.0.0 clashes with every IP on the same protocol and port."""
    for ip, proto, port in wanted:
        if ip == "0.0.0.0":
            if any(u[1] == proto and u[2] == port for u in used):
                return True
        elif (ip, proto, port) in used or ("0.0.0.0", proto, port) in used:
            return True
    return False


@dataclass
class ImageStateSummary:
    size: int
    num_nodes: int


class NodeInfo:
    """A node and the pods assigned (or assumed) to it, with aggregated requests."""

    __slots__ = ("node", "name", "labels", "taints", "unschedulable", "allocatable", "requested",
                 "non_zero_requested", "pods", "pods_with_affinity", "pods_with_required_anti_affinity",
                 "used_ports", "image_states", "pvc_ref_counts", "generation", "columns", "row")

    def __init__(self, node: Obj | None = None) -> None:
        self.node: Obj | None = None
        self.name = ""
        self.labels: dict[str, str] = {}
        self.taints: list[Obj] = []
        self.unschedulable = False
        self.allocatable = Resource()
        self.requested = Resource()
        self.non_zero_requested = Resource()
        self.pods: dict[str, PodInfo] = {}
        self.pods_with_affinity: dict[str, PodInfo] = {}
        self.pods_with_required_anti_affinity: dict[str, PodInfo] = {}
        self.used_ports: set[tuple[str, str, int]] = set()
        self.image_states: dict[str, ImageStateSummary] = {}
        self.pvc_ref_counts: dict[str, int] = {}
        self.generation = next_generation()
        # The snapshot columns holding this node's numbers at `row` (None: not in a snapshot's list).
        self.columns: NodeColumns | None = None
        self.row = -1
        if node is not None:
            self.set_node(node)

    def set_node(self, node: Obj) -> None:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        self.node = node
        self.name = meta.get("name", "")
        self.labels = meta.get("labels") or {}
        self.taints = spec.get("taints") or []
        self.unschedulable = bool(spec.get("unschedulable"))
        self.allocatable = Resource.from_list((node.get("status") or {}).get("allocatable"))
        self.generation = next_generation()

    def remove_node(self) -> None:
        self.node = None
        self.generation = next_generation()

    def add_pod(self, pi: PodInfo) -> None:
        self.pods[pi.uid] = pi
        if pi.has_affinity:
            self.pods_with_affinity[pi.uid] = pi
        if pi.has_required_anti_affinity:
            self.pods_with_required_anti_affinity[pi.uid] = pi
        self._update(pi, 1)

    def remove_pod(self, pi: PodInfo) -> bool:
        existing = self.pods.pop(pi.uid, None)
        if existing is None:
            return False
        self.pods_with_affinity.pop(pi.uid, None)
        self.pods_with_required_anti_affinity.pop(pi.uid, None)
        self._update(existing, -1)
        return True

    def _update(self, pi: PodInfo, sign: int) -> None:
        self.requested.add(pi.requests, sign)
        self.non_zero_requested.milli_cpu += sign * pi.non0_cpu
        self.non_zero_requested.memory += sign * pi.non0_mem
        for port in pi.host_ports:
            if sign > 0:
                self.used_ports.add(port)
            else:
                self.used_ports.discard(port)
        for claim in pi.pvcs:
            key = f"{pi.namespace}/{claim}"
            count = self.pvc_ref_counts.get(key, 0) + sign
            if count > 0:
                self.pvc_ref_counts[key] = count
            else:
                self.pvc_ref_counts.pop(key, None)
        self.generation = next_generation()
        if self.columns is not None:
            self.columns.write_pods(self.row, self)

    def clone(self) -> NodeInfo:
        """A copy whose pod set can change without touching the cache (preemption dry runs)."""
        c = NodeInfo.__new__(NodeInfo)
        c.node, c.name, c.labels, c.taints = self.node, self.name, self.labels, self.taints
        c.unschedulable = self.unschedulable
        c.allocatable = self.allocatable
        c.requested = self.requested.clone()
        c.non_zero_requested = self.non_zero_requested.clone()
        c.pods = dict(self.pods)
        c.pods_with_affinity = dict(self.pods_with_affinity)
        c.pods_with_required_anti_affinity = dict(self.pods_with_required_anti_affinity)
        c.used_ports = set(self.used_ports)
        c.image_states = self.image_states
        c.pvc_ref_counts = dict(self.pvc_ref_counts)
        c.generation = self.generation
        c.columns, c.row = None, -1
        return c

    def __repr__(self) -> str:
        return f"NodeInfo({self.name}, pods={len(self.pods)})"
