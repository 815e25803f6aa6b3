"""TaintToleration: NoSchedule/NoExecute taints filter, PreferNoSchedule taints lower the score."""

from __future__ import annotations

from typing import Any

import numpy as np

from pocketkube.api.scheduling import find_untolerated_taint, tolerates
from pocketkube.scheduler.columns import HARD_TAINTS, PREFER_TAINTS, Mask, NodeColumns, Rows
from pocketkube.scheduler.framework import (
    NODE,
    UNSCHEDULED_POD,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Plugin,
    Status,
    default_normalize_score,
    unresolvable,
)
from pocketkube.scheduler.types import MAX_NODE_SCORE, NodeInfo, PodInfo

_PRE_SCORE_KEY = "PreScoreTaintToleration"


def untolerated_reason(taint: dict[str, Any]) -> str:
    return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"


class TaintToleration(Plugin):
    name = "TaintToleration"

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        if not ni.taints:
            return None
        taint = find_untolerated_taint(ni.taints, pi.spec.get("tolerations") or [])
        return None if taint is None else unresolvable(untolerated_reason(taint))

    def filter_rows(self, state: CycleState, pi: PodInfo, columns: NodeColumns, rows: Rows) -> Mask:
        return ~columns.flags[HARD_TAINTS, rows]

    def pre_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        state.write(_PRE_SCORE_KEY, [t for t in pi.spec.get("tolerations") or []
                                     if (t.get("effect") or "") in ("", "PreferNoSchedule")])
        return None

    def score(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> int:
        """How many PreferNoSchedule taints of the node the pod does not tolerate."""
        tolerations = state.read(_PRE_SCORE_KEY) or []
        return sum(1 for taint in ni.taints if taint.get("effect") == "PreferNoSchedule"
                   and not any(tolerates(t, taint) for t in tolerations))

    def score_rows(self, state: CycleState, pi: PodInfo, columns: NodeColumns, rows: Rows) -> np.ndarray:
        scores = np.zeros(len(rows), dtype=np.int64)
        tainted = np.flatnonzero(columns.flags[PREFER_TAINTS, rows])
        if len(tainted):
            scores[tainted] = [self.score(state, pi, ni) for ni in columns.node_list(rows[tainted])]
        return scores

    def normalize_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo],
                        scores: list[int] | np.ndarray) -> None:
        default_normalize_score(MAX_NODE_SCORE, True, scores)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        def tolerated(pi: PodInfo, old: Any, new: Any) -> bool:
            taints = ((new or {}).get("spec") or {}).get("taints") or []
            return find_untolerated_taint(taints, pi.spec.get("tolerations") or []) is None
        return [ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT), tolerated),
                ClusterEventWithHint(ClusterEvent(UNSCHEDULED_POD, ActionType.UPDATE_POD_TOLERATION))]
