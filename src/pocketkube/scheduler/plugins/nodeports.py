"""NodePorts: a pod's hostPorts must be free on the node."""

from __future__ import annotations

from typing import Any

from pocketkube.scheduler.framework import (
    ASSIGNED_POD,
    NODE,
    SKIP,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Plugin,
    PreFilterResult,
    Status,
    unschedulable,
)
from pocketkube.scheduler.types import NodeInfo, PodInfo, host_ports, ports_conflict

ERR_REASON = "node(s) didn't have free ports for the requested pod ports"


class NodePorts(Plugin):
    name = "NodePorts"

    def pre_filter(self, state: CycleState, pi: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[PreFilterResult | None, Status | None]:
        if not pi.host_ports:
            return None, SKIP
        return None, None

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        if pi.host_ports and ni.used_ports and ports_conflict(ni.used_ports, pi.host_ports):
            return unschedulable(ERR_REASON)
        return None

    def events_to_register(self) -> list[ClusterEventWithHint]:
        def freed_port(pi: PodInfo, old: Any, new: Any) -> bool:
            deleted = old if old is not None else new
            ports = host_ports((deleted or {}).get("spec") or {})
            return bool(ports) and ports_conflict(set(ports), pi.host_ports)
        return [ClusterEventWithHint(ClusterEvent(ASSIGNED_POD, ActionType.DELETE), freed_port),
                ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE))]
