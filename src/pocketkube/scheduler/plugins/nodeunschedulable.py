"""NodeUnschedulable: keeps pods off cordoned nodes unless they tolerate the unschedulable taint."""

from __future__ import annotations

from typing import Any

from pocketkube.api.scheduling import tolerates
from pocketkube.scheduler.columns import UNSCHEDULABLE, Mask, NodeColumns, Rows
from pocketkube.scheduler.framework import (
    NODE,
    UNSCHEDULED_POD,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Plugin,
    Status,
    unresolvable,
)
from pocketkube.scheduler.types import NodeInfo, PodInfo

ERR_REASON_UNKNOWN_CONDITION = "node(s) had unknown conditions"
ERR_REASON_UNSCHEDULABLE = "node(s) were unschedulable"
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


def _tolerates_unschedulable(pi: PodInfo) -> bool:
    return any(tolerates(t, UNSCHEDULABLE_TAINT) for t in pi.spec.get("tolerations") or [])


class NodeUnschedulable(Plugin):
    name = "NodeUnschedulable"

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        if ni.node is None:
            return unresolvable(ERR_REASON_UNKNOWN_CONDITION)
        if ni.unschedulable and not _tolerates_unschedulable(pi):
            return unresolvable(ERR_REASON_UNSCHEDULABLE)
        return None

    def filter_rows(self, state: CycleState, pi: PodInfo, columns: NodeColumns, rows: Rows) -> Mask:
        return ~columns.flags[UNSCHEDULABLE, rows]

    def events_to_register(self) -> list[ClusterEventWithHint]:
        def node_now_schedulable(pi: PodInfo, old: Any, new: Any) -> bool:
            return not ((new or {}).get("spec") or {}).get("unschedulable") or _tolerates_unschedulable(pi)
        return [ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT),
                                     node_now_schedulable),
                ClusterEventWithHint(ClusterEvent(UNSCHEDULED_POD, ActionType.UPDATE_POD_TOLERATION))]
