"""NodeResourcesBalancedAllocation: prefer nodes whose resource fractions stay close to each other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pocketkube.scheduler.framework import SKIP, CycleState, Handle, Plugin, Status
from pocketkube.scheduler.plugins.resource_allocation import (
    balanced_scorer,
    parse_resources,
    pod_request_list,
    score_node,
)
from pocketkube.scheduler.types import NodeInfo, PodInfo

_PRE_SCORE_KEY = "PreScoreNodeResourcesBalancedAllocation"


class NodeResourcesBalancedAllocation(Plugin):
    name = "NodeResourcesBalancedAllocation"

    def __init__(self, handle: Handle, args: Mapping[str, Any] | None = None) -> None:
        super().__init__(handle, args)
        self.resources = parse_resources(self.args.get("resources"))

    def pre_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        requests = pod_request_list(pi, self.resources, True)
        if not any(requests):
            return SKIP  # best-effort pods would all pile onto one node otherwise (#129138)
        state.write(_PRE_SCORE_KEY, requests)
        return None

    def score(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> int:
        requests = state.read(_PRE_SCORE_KEY) or pod_request_list(pi, self.resources, True)
        return score_node(ni, self.resources, requests, True, balanced_scorer)

    def score_many(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        requests = state.read(_PRE_SCORE_KEY) or pod_request_list(pi, self.resources, True)
        if len(self.resources) != 2 or [r.name for r in self.resources] != ["cpu", "memory"]:
            return [score_node(ni, self.resources, requests, True, balanced_scorer) for ni in nodes]
        pcpu, pmem = requests
        if any(not ni.allocatable.milli_cpu or not ni.allocatable.memory for ni in nodes):
            return [score_node(ni, self.resources, requests, True, balanced_scorer) for ni in nodes]
        # balancedResourceScorer for two resources, inlined: (1 - |f_cpu - f_mem| / 2) * 100.
        return [int((1 - abs(((fc if (fc := ((u := ni.requested).milli_cpu + pcpu) / (a := ni.allocatable).milli_cpu)
                               < 1.0 else 1.0)
                              - (fm if (fm := (u.memory + pmem) / a.memory) < 1.0 else 1.0)) / 2)) * 100)
                for ni in nodes]
