"""NodeResourcesFit: the pod's requests must fit the node's free allocatable; score by a strategy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pocketkube.scheduler.columns import (
    ALLOC_CPU,
    ALLOC_EPHEMERAL,
    ALLOC_MEMORY,
    ALLOC_PODS,
    NUM_PODS,
    REQ_CPU,
    REQ_EPHEMERAL,
    REQ_MEMORY,
    Mask,
    NodeColumns,
    Rows,
    requests_exact,
)
from pocketkube.scheduler.framework import (
    ASSIGNED_POD,
    NODE,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    Code,
    CycleState,
    Handle,
    Plugin,
    PreFilterResult,
    Status,
)
from pocketkube.scheduler.plugins.resource_allocation import (
    columns_scores,
    least_allocated_scorer,
    most_allocated_scorer,
    parse_resources,
    pod_request_list,
    requested_to_capacity_ratio_scorer,
    score_node,
)
from pocketkube.scheduler.types import NodeInfo, PodInfo, Resource, is_extended_resource_name

_PRE_FILTER_KEY = "PreFilterNodeResourcesFit"
_PRE_SCORE_KEY = "PreScoreNodeResourcesFit"
LEAST_ALLOCATED, MOST_ALLOCATED, REQUESTED_TO_CAPACITY_RATIO = \
    "LeastAllocated", "MostAllocated", "RequestedToCapacityRatio"


def fits_request(req: Resource, ni: NodeInfo, ignored: frozenset[str] = frozenset(),
                 ignored_groups: frozenset[str] = frozenset()) -> list[tuple[str, bool]]:
    """(reason, unresolvable) for every resource the node cannot give the pod."""
    out: list[tuple[str, bool]] = []
    alloc, used = ni.allocatable, ni.requested
    if len(ni.pods) + 1 > alloc.allowed_pod_number:
        out.append(("Too many pods", False))
    if req.milli_cpu == 0 and req.memory == 0 and req.ephemeral_storage == 0 and not req.scalar:
        return out
    if req.milli_cpu > 0 and req.milli_cpu > alloc.milli_cpu - used.milli_cpu:
        out.append(("Insufficient cpu", req.milli_cpu > alloc.milli_cpu))
    if req.memory > 0 and req.memory > alloc.memory - used.memory:
        out.append(("Insufficient memory", req.memory > alloc.memory))
    if req.ephemeral_storage > 0 and req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage:
        out.append(("Insufficient ephemeral-storage", req.ephemeral_storage > alloc.ephemeral_storage))
    for name in sorted(req.scalar):
        amount = req.scalar[name]
        if amount == 0:
            continue
        if is_extended_resource_name(name) and (name in ignored or name.split("/")[0] in ignored_groups):
            continue
        have = alloc.scalar.get(name, 0)
        if amount > have - used.scalar.get(name, 0):
            out.append((f"Insufficient {name}", amount > have))
    return out


def _status(insufficient: list[tuple[str, bool]]) -> Status:
    """Unresolvable when even an empty node could not hold the pod (preemption cannot help)."""
    code = Code.UNSCHEDULABLE_AND_UNRESOLVABLE if any(u for _, u in insufficient) else Code.UNSCHEDULABLE
    return Status(code, *(reason for reason, _ in insufficient))


class NodeResourcesFit(Plugin):
    name = "NodeResourcesFit"

    def __init__(self, handle: Handle, args: Mapping[str, Any] | None = None) -> None:
        super().__init__(handle, args)
        self.ignored = frozenset(self.args.get("ignoredResources") or [])
        self.ignored_groups = frozenset(self.args.get("ignoredResourceGroups") or [])
        strategy = self.args.get("scoringStrategy") or {}
        self.strategy = strategy.get("type") or LEAST_ALLOCATED
        self.resources = parse_resources(strategy.get("resources"))
        if self.strategy == LEAST_ALLOCATED:
            self.scorer = least_allocated_scorer(self.resources)
        elif self.strategy == MOST_ALLOCATED:
            self.scorer = most_allocated_scorer(self.resources)
        elif self.strategy == REQUESTED_TO_CAPACITY_RATIO:
            shape = (strategy.get("requestedToCapacityRatio") or {}).get("shape") or \
                [{"utilization": 0, "score": 10}, {"utilization": 100, "score": 0}]
            self.scorer = requested_to_capacity_ratio_scorer(self.resources, shape)
        else:
            raise ValueError(f"scoring strategy {self.strategy} is not supported")

    # -- filter ---------------------------------------------------------------------------------
    def pre_filter(self, state: CycleState, pi: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[PreFilterResult | None, Status | None]:
        state.write(_PRE_FILTER_KEY, pi.requests)
        return None, None

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        req = state.read(_PRE_FILTER_KEY) or pi.requests
        insufficient = fits_request(req, ni, self.ignored, self.ignored_groups)
        return _status(insufficient) if insufficient else None

    def filter_rows(self, state: CycleState, pi: PodInfo, columns: NodeColumns, rows: Rows) -> Mask | None:
        req = state.read(_PRE_FILTER_KEY) or pi.requests
        if req.scalar or not columns.exact or not requests_exact(req.milli_cpu, req.memory, req.ephemeral_storage):
            return None
        ints = columns.ints
        fits = ints[NUM_PODS, rows] < ints[ALLOC_PODS, rows]
        for amount, alloc, used in ((req.milli_cpu, ALLOC_CPU, REQ_CPU), (req.memory, ALLOC_MEMORY, REQ_MEMORY),
                                    (req.ephemeral_storage, ALLOC_EPHEMERAL, REQ_EPHEMERAL)):
            if amount > 0:
                fits &= amount <= ints[alloc, rows] - ints[used, rows]
        return fits

    # -- score ----------------------------------------------------------------------------------
    def pre_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        state.write(_PRE_SCORE_KEY, pod_request_list(pi, self.resources, False))
        return None

    def score(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> int:
        requests = state.read(_PRE_SCORE_KEY) or pod_request_list(pi, self.resources, False)
        return score_node(ni, self.resources, requests, False, self.scorer)

    def score_rows(self, state: CycleState, pi: PodInfo, columns: NodeColumns, rows: Rows) -> np.ndarray | None:
        requests = state.read(_PRE_SCORE_KEY) or pod_request_list(pi, self.resources, False)
        if self.strategy == REQUESTED_TO_CAPACITY_RATIO:
            return None
        return columns_scores(self.strategy == MOST_ALLOCATED, self.resources, requests, False, columns, rows)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        def node_fits(pi: PodInfo, old: Any, new: Any) -> bool:
            ni = NodeInfo(new)
            return not any(u for _, u in fits_request(pi.requests, ni, self.ignored, self.ignored_groups))
        return [ClusterEventWithHint(ClusterEvent(ASSIGNED_POD, ActionType.DELETE | ActionType.UPDATE_POD_SCALE_DOWN)),
                ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_ALLOCATABLE
                                                  | ActionType.UPDATE_NODE_TAINT | ActionType.UPDATE_NODE_LABEL),
                                     node_fits)]
