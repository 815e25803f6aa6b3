"""The scoring shared by NodeResourcesFit and NodeResourcesBalancedAllocation (resource_allocation.go)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pocketkube.scheduler.columns import (
    ALLOC_CPU,
    ALLOC_EPHEMERAL,
    ALLOC_MEMORY,
    NONZERO_CPU,
    NONZERO_MEMORY,
    REQ_CPU,
    REQ_EPHEMERAL,
    REQ_MEMORY,
    NodeColumns,
    Rows,
    requests_exact,
)
from pocketkube.scheduler.types import (
    CPU,
    EPHEMERAL_STORAGE,
    MAX_NODE_SCORE,
    MEMORY,
    NodeInfo,
    PodInfo,
    is_scalar_resource_name,
    nanos_to_milli,
    nanos_to_value,
    non_missing_defaults,
    pod_requests,
)

MAX_UTILIZATION = 100
MAX_CUSTOM_PRIORITY_SCORE = 10


@dataclass(frozen=True)
class ResourceSpec:
    name: str
    weight: int = 1


DEFAULT_RESOURCES = (ResourceSpec(CPU, 1), ResourceSpec(MEMORY, 1))


def parse_resources(raw: Sequence[dict] | None, default: Sequence[ResourceSpec] = DEFAULT_RESOURCES
                    ) -> tuple[ResourceSpec, ...]:
    if not raw:
        return tuple(default)
    return tuple(ResourceSpec(r["name"], int(r.get("weight") or 1)) for r in raw)


def pod_request_list(pi: PodInfo, resources: Sequence[ResourceSpec], use_requested: bool) -> list[int]:
    """calculatePodResourceRequest for each scored resource (non-zero defaults unless use_requested)."""
    nanos = pod_requests(pi.spec, None if use_requested else non_missing_defaults(pi.spec))
    return [nanos_to_milli(nanos.get(r.name, 0)) if r.name == CPU else nanos_to_value(nanos.get(r.name, 0))
            for r in resources]


def allocatable_and_requested(ni: NodeInfo, name: str, pod_request: int, use_requested: bool) -> tuple[int, int]:
    requested = ni.requested if use_requested else ni.non_zero_requested
    if pod_request == 0 and is_scalar_resource_name(name):
        return 0, 0  # an extended resource the pod does not ask for is not scored
    if name == CPU:
        return ni.allocatable.milli_cpu, requested.milli_cpu + pod_request
    if name == MEMORY:
        return ni.allocatable.memory, requested.memory + pod_request
    if name == EPHEMERAL_STORAGE:
        return ni.allocatable.ephemeral_storage, ni.requested.ephemeral_storage + pod_request
    if name in ni.allocatable.scalar:
        return ni.allocatable.scalar[name], ni.requested.scalar.get(name, 0) + pod_request
    return 0, 0


Scorer = Callable[[list[int], list[int]], int]


def _go_div(a: int, b: int) -> int:
    """Go's integer division truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def least_allocated_scorer(resources: Sequence[ResourceSpec]) -> Scorer:
    weights = [r.weight for r in resources]

    def score(requested: list[int], allocatable: list[int]) -> int:
        node_score = weight_sum = 0
        for req, cap, w in zip(requested, allocatable, weights, strict=True):
            if cap == 0:
                continue
            node_score += (0 if req > cap else (cap - req) * MAX_NODE_SCORE // cap) * w
            weight_sum += w
        return node_score // weight_sum if weight_sum else 0
    return score


def most_allocated_scorer(resources: Sequence[ResourceSpec]) -> Scorer:
    weights = [r.weight for r in resources]

    def score(requested: list[int], allocatable: list[int]) -> int:
        node_score = weight_sum = 0
        for req, cap, w in zip(requested, allocatable, weights, strict=True):
            if cap == 0:
                continue
            node_score += (min(req, cap) * MAX_NODE_SCORE // cap) * w
            weight_sum += w
        return node_score // weight_sum if weight_sum else 0
    return score


def broken_linear(shape: Sequence[tuple[int, int]]) -> Callable[[int], int]:
    def f(p: int) -> int:
        for i, (util, score) in enumerate(shape):
            if p <= util:
                if i == 0:
                    return shape[0][1]
                pu, ps = shape[i - 1]
                return ps + _go_div((score - ps) * (p - pu), util - pu)
        return shape[-1][1]
    return f


def requested_to_capacity_ratio_scorer(resources: Sequence[ResourceSpec],
                                       shape: Sequence[dict]) -> Scorer:
    points = [(int(p["utilization"]), int(p["score"]) * (MAX_NODE_SCORE // MAX_CUSTOM_PRIORITY_SCORE))
              for p in shape]
    raw = broken_linear(points)
    weights = [r.weight for r in resources]

    def resource_score(requested: int, capacity: int) -> int:
        if capacity == 0 or requested > capacity:
            return raw(MAX_UTILIZATION)
        return raw(requested * MAX_UTILIZATION // capacity)

    def score(requested: list[int], allocatable: list[int]) -> int:
        node_score = weight_sum = 0
        for req, cap, w in zip(requested, allocatable, weights, strict=True):
            if cap == 0:
                continue
            s = resource_score(req, cap)
            if s > 0:
                node_score += s * w
                weight_sum += w
        return go_round(node_score / weight_sum) if weight_sum else 0
    return score


def go_round(x: float) -> int:
    """math.Round: half away from zero."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def balanced_scorer(requested: list[int], allocatable: list[int]) -> int:
    fractions = []
    total = 0.0
    for req, cap in zip(requested, allocatable, strict=True):
        if cap == 0:
            continue
        fraction = min(req / cap, 1.0)
        total += fraction
        fractions.append(fraction)
    std = 0.0
    if len(fractions) == 2:
        std = abs((fractions[0] - fractions[1]) / 2)
    elif len(fractions) > 2:
        mean = total / len(fractions)
        std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    return int((1 - std) * MAX_NODE_SCORE)


def score_node(ni: NodeInfo, resources: Sequence[ResourceSpec], pod_requests_list: list[int],
               use_requested: bool, scorer: Scorer) -> int:
    requested = [0] * len(resources)
    allocatable = [0] * len(resources)
    for i, r in enumerate(resources):
        alloc, req = allocatable_and_requested(ni, r.name, pod_requests_list[i], use_requested)
        if alloc == 0:
            continue
        allocatable[i] = alloc
        requested[i] = req
    return scorer(requested, allocatable)


# Where allocatable_and_requested finds each resource in the columns:
# (allocatable, requested by the non-zero rule, requested).
_COLUMN_FIELDS = {CPU: (ALLOC_CPU, NONZERO_CPU, REQ_CPU), MEMORY: (ALLOC_MEMORY, NONZERO_MEMORY, REQ_MEMORY),
                  EPHEMERAL_STORAGE: (ALLOC_EPHEMERAL, REQ_EPHEMERAL, REQ_EPHEMERAL)}


def _column_inputs(resources: Sequence[ResourceSpec], pod_requests_list: list[int], use_requested: bool,
                   columns: NodeColumns, rows: Rows) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(allocatable, requested with the pod) of each resource at `rows`, as allocatable_and_requested
    gives them; None when a resource has no column or a number is too large for exact arithmetic."""
    if not columns.exact or not requests_exact(*pod_requests_list):
        return None
    ints = columns.ints
    out = []
    for spec, request in zip(resources, pod_requests_list, strict=True):
        fields = _COLUMN_FIELDS.get(spec.name)
        if fields is None:
            return None
        alloc, non_zero, requested = fields
        out.append((ints[alloc, rows], ints[requested if use_requested else non_zero, rows] + request))
    return out


def columns_scores(most_allocated: bool, resources: Sequence[ResourceSpec], pod_requests_list: list[int],
                   use_requested: bool, columns: NodeColumns, rows: Rows) -> np.ndarray | None:
    """score_node with the least- (or most-) allocated scorer for every node at `rows`: the same integers."""
    inputs = _column_inputs(resources, pod_requests_list, use_requested, columns, rows)
    if inputs is None:
        return None
    if all(cap.all() for cap, _ in inputs):
        # Every node has some of every resource (the usual case): no resource drops out of a node's sum.
        total = np.zeros(len(rows), dtype=np.int64)
        for spec, (cap, req) in zip(resources, inputs, strict=True):
            used = np.minimum(req, cap) if most_allocated else np.maximum(cap - req, 0)
            total += used * MAX_NODE_SCORE // cap * spec.weight
        return total // sum(spec.weight for spec in resources)
    node_score = np.zeros(len(rows), dtype=np.int64)
    weight_sum = np.zeros(len(rows), dtype=np.int64)
    for spec, (cap, req) in zip(resources, inputs, strict=True):
        counted = cap != 0  # a resource the node has none of is left out, weight included
        divisor = np.where(counted, cap, 1)
        if most_allocated:
            score = np.minimum(req, cap) * MAX_NODE_SCORE // divisor
        else:
            score = np.where(req > cap, 0, (cap - req) * MAX_NODE_SCORE // divisor)
        node_score += np.where(counted, score * spec.weight, 0)
        weight_sum += np.where(counted, spec.weight, 0)
    return np.where(weight_sum != 0, node_score // np.where(weight_sum != 0, weight_sum, 1), 0)


def balanced_columns_scores(resources: Sequence[ResourceSpec], pod_requests_list: list[int], columns: NodeColumns,
                            rows: Rows) -> np.ndarray | None:
    """score_node with balanced_scorer for every node at `rows`, for two resources every node has (the
    same float operations, so the same integers); None otherwise."""
    if len(resources) != 2:
        return None
    inputs = _column_inputs(resources, pod_requests_list, True, columns, rows)
    if inputs is None:
        return None
    (cap0, req0), (cap1, req1) = inputs
    if not (cap0.all() and cap1.all()):
        return None
    f0 = np.minimum(req0 / cap0, 1.0)
    f1 = np.minimum(req1 / cap1, 1.0)
    return ((1 - np.abs((f0 - f1) / 2)) * MAX_NODE_SCORE).astype(np.int64)
