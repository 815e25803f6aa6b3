"""VolumeRestrictions: ReadWriteOncePod claims are exclusive to one pod; some in-tree disks to one node."""

from __future__ import annotations

from typing import Any

from pocketkube.scheduler.framework import (
    ASSIGNED_POD,
    PVC,
    SKIP,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Plugin,
    PreFilterResult,
    Status,
    unresolvable,
    unschedulable,
)
from pocketkube.scheduler.types import NodeInfo, PodInfo

Obj = dict[str, Any]
ERR_REASON_DISK_CONFLICT = "node(s) had no available disk"
ERR_REASON_RWOP_CONFLICT = ("node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod "
                            "access mode")
_CONFLICT_TYPES = ("gcePersistentDisk", "awsElasticBlockStore", "rbd", "iscsi")


def _volumes_conflict(a: Obj, b: Obj) -> bool:
    """isVolumeConflict for the in-tree volume types that cannot be attached twice."""
    if a.get("gcePersistentDisk") and b.get("gcePersistentDisk"):
        x, y = a["gcePersistentDisk"], b["gcePersistentDisk"]
        return x.get("pdName") == y.get("pdName") and not (x.get("readOnly") and y.get("readOnly"))
    if a.get("awsElasticBlockStore") and b.get("awsElasticBlockStore"):
        return a["awsElasticBlockStore"].get("volumeID") == b["awsElasticBlockStore"].get("volumeID")
    if a.get("iscsi") and b.get("iscsi"):
        x, y = a["iscsi"], b["iscsi"]
        return x.get("iqn") == y.get("iqn") and not (x.get("readOnly") and y.get("readOnly"))
    if a.get("rbd") and b.get("rbd"):
        x, y = a["rbd"], b["rbd"]
        return (set(x.get("monitors") or []) & set(y.get("monitors") or []) != set()
                and x.get("pool", "rbd") == y.get("pool", "rbd") and x.get("image") == y.get("image")
                and not (x.get("readOnly") and y.get("readOnly")))
    return False


class VolumeRestrictions(Plugin):
    name = "VolumeRestrictions"

    def pre_filter(self, state: CycleState, pi: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[PreFilterResult | None, Status | None]:
        volumes = pi.spec.get("volumes") or []
        if not any(any(v.get(t) for t in _CONFLICT_TYPES) for v in volumes) and not pi.pvcs:
            return None, SKIP
        snapshot = self.handle.snapshot
        for name in pi.pvcs:
            claim = self.handle.listers.get("persistentvolumeclaims", pi.namespace, name)
            if claim is None or "ReadWriteOncePod" not in ((claim.get("spec") or {}).get("accessModes") or []):
                continue
            key = f"{pi.namespace}/{name}"
            if snapshot is not None and any(n.pvc_ref_counts.get(key) for n in snapshot.node_info_list):
                return None, unresolvable(ERR_REASON_RWOP_CONFLICT)
        return None, None

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        mine = [v for v in pi.spec.get("volumes") or [] if any(v.get(t) for t in _CONFLICT_TYPES)]
        if not mine:
            return None
        for other in ni.pods.values():
            for theirs in other.spec.get("volumes") or []:
                if any(_volumes_conflict(v, theirs) for v in mine):
                    return unschedulable(ERR_REASON_DISK_CONFLICT)
        return None

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(ClusterEvent(ASSIGNED_POD, ActionType.DELETE)),
                ClusterEventWithHint(ClusterEvent(PVC, ActionType.ADD | ActionType.UPDATE))]
