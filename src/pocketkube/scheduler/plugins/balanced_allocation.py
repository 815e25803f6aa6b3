"""NodeResourcesBalancedAllocation: prefer nodes whose resource fractions stay close to each other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pocketkube.scheduler.columns import NodeColumns, Rows
from pocketkube.scheduler.framework import SKIP, CycleState, Handle, Plugin, Status
from pocketkube.scheduler.plugins.resource_allocation import (
    balanced_columns_scores,
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

    def score_rows(self, state: CycleState, pi: PodInfo, columns: NodeColumns, rows: Rows) -> np.ndarray | None:
        requests = state.read(_PRE_SCORE_KEY) or pod_request_list(pi, self.resources, True)
        return balanced_columns_scores(self.resources, requests, columns, rows)
