"""NodeName: a pod that names its node fits only there."""

from __future__ import annotations

from typing import Any

import numpy as np

from pocketkube.scheduler.columns import Mask, NodeColumns, Rows
from pocketkube.scheduler.framework import (
    NODE,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Plugin,
    Status,
    unresolvable,
)
from pocketkube.scheduler.types import NodeInfo, PodInfo

ERR_REASON = "node(s) didn't match the requested node name"


class NodeName(Plugin):
    name = "NodeName"

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        wanted = pi.spec.get("nodeName")
        if wanted and wanted != ni.name:
            return unresolvable(ERR_REASON)
        return None

    def filter_rows(self, state: CycleState, pi: PodInfo, columns: NodeColumns, rows: Rows) -> Mask | None:
        return None if pi.spec.get("nodeName") else np.ones(len(rows), dtype=bool)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        def named_node_added(pi: PodInfo, old: Any, new: Any) -> bool:
            wanted = pi.spec.get("nodeName")
            return not wanted or ((new or {}).get("metadata") or {}).get("name") == wanted
        return [ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD), named_node_added)]
