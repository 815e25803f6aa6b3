"""SchedulingGates: a pod with spec.schedulingGates never enters the active queue."""

from __future__ import annotations

from pocketkube.scheduler.framework import (
    UNSCHEDULED_POD,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    Plugin,
    Status,
    unresolvable,
)
from pocketkube.scheduler.types import PodInfo


class SchedulingGates(Plugin):
    name = "SchedulingGates"

    def pre_enqueue(self, pi: PodInfo) -> Status | None:
        gates = [g.get("name", "") for g in pi.spec.get("schedulingGates") or []]
        if not gates:
            return None
        return unresolvable(f"waiting for scheduling gates: [{' '.join(gates)}]")

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(ClusterEvent(UNSCHEDULED_POD, ActionType.UPDATE_POD_SCHEDULING_GATES_ELIMINATED),
                                     lambda pi, old, new: not ((new or {}).get("spec") or {}).get("schedulingGates"))]
