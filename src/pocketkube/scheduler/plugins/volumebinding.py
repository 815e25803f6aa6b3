"""VolumeBinding: bound claims must be usable on the node; WaitForFirstConsumer claims are decided
together with the pod (a matching static PV, or dynamic provisioning on the chosen node)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError
from pocketkube.scheduler.framework import (
    NODE,
    PV,
    PVC,
    SKIP,
    STORAGE_CLASS,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    Plugin,
    PreFilterResult,
    Status,
    error,
    unresolvable,
)
from pocketkube.scheduler.plugins.helpers import node_selector
from pocketkube.scheduler.types import NodeInfo, PodInfo, quantity_nanos

Obj = dict[str, Any]
ERR_REASON_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
ERR_REASON_NODE_CONFLICT = "node(s) had volume node affinity conflict"
ERR_REASON_PV_NOT_EXIST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
ERR_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
_STATE_KEY = "PreFilterVolumeBinding"
_catalog = ResourceCatalog()
_PVS = _catalog.resource("", "v1", "persistentvolumes")
_PVCS = _catalog.resource("", "v1", "persistentvolumeclaims")


@dataclass
class _State:
    bound: list[tuple[Obj, str]] = field(default_factory=list)  # (claim, volume name)
    delayed: list[Obj] = field(default_factory=list)
    # node -> [(claim, static PV name or "" for dynamic provisioning)]
    decisions: dict[str, list[tuple[Obj, str]]] = field(default_factory=dict)

    def clone(self) -> _State:
        return _State(list(self.bound), list(self.delayed), dict(self.decisions))


def _pv_matches_node(pv: Obj, ni: NodeInfo) -> bool:
    required = (((pv.get("spec") or {}).get("nodeAffinity")) or {}).get("required")
    return required is None or node_selector(required)(ni)


def _class_of(claim: Obj) -> str:
    return (claim.get("spec") or {}).get("storageClassName") or ""


class VolumeBinding(Plugin):
    name = "VolumeBinding"

    def __init__(self, handle: Handle, args: Mapping[str, Any] | None = None) -> None:
        super().__init__(handle, args)
        self.bind_timeout = float(self.args.get("bindTimeoutSeconds", 600))
        self.assumed: dict[str, list[tuple[Obj, str]]] = {}  # pod uid -> decisions being bound
        self.assumed_pvs: set[str] = set()

    def pre_filter(self, state: CycleState, pi: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[PreFilterResult | None, Status | None]:
        if not pi.pvcs:
            return None, SKIP
        listers = self.handle.listers
        s = _State()
        for name in pi.pvcs:
            claim = listers.get("persistentvolumeclaims", pi.namespace, name)
            if claim is None:
                return None, unresolvable(f'persistentvolumeclaim "{name}" not found')
            if (claim.get("metadata") or {}).get("deletionTimestamp"):
                return None, unresolvable(f'persistentvolumeclaim "{name}" is being deleted')
            volume = (claim.get("spec") or {}).get("volumeName")
            if volume:
                s.bound.append((claim, volume))
                continue
            sc = listers.get("storageclasses", "", _class_of(claim)) if _class_of(claim) else None
            if (sc or {}).get("volumeBindingMode") == "WaitForFirstConsumer":
                s.delayed.append(claim)
            else:
                return None, unresolvable(ERR_UNBOUND_IMMEDIATE)
        state.write(_STATE_KEY, s)
        return None, None

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        s: _State | None = state.read(_STATE_KEY)
        if s is None:
            return None
        listers = self.handle.listers
        for _, volume in s.bound:
            pv = listers.get("persistentvolumes", "", volume)
            if pv is None:
                return unresolvable(ERR_REASON_PV_NOT_EXIST)
            if not _pv_matches_node(pv, ni):
                return unresolvable(ERR_REASON_NODE_CONFLICT)
        decisions: list[tuple[Obj, str]] = []
        taken: set[str] = set()
        for claim in s.delayed:
            pv_name = self._find_static_pv(claim, ni, taken)
            if pv_name is None:
                if not self._can_provision(claim, ni):
                    return unresolvable(ERR_REASON_BIND_CONFLICT)
                pv_name = ""
            else:
                taken.add(pv_name)
            decisions.append((claim, pv_name))
        s.decisions[ni.name] = decisions
        return None

    def _find_static_pv(self, claim: Obj, ni: NodeInfo, taken: set[str]) -> str | None:
        spec = claim.get("spec") or {}
        wanted = quantity_nanos(((spec.get("resources") or {}).get("requests") or {}).get("storage", "0"))
        modes = set(spec.get("accessModes") or [])
        best: tuple[int, str] | None = None
        for pv in self.handle.listers.list("persistentvolumes"):
            name = pv["metadata"]["name"]
            pv_spec = pv.get("spec") or {}
            ref = pv_spec.get("claimRef")
            if name in taken or name in self.assumed_pvs or (pv.get("status") or {}).get("phase") not in (
                    None, "Available"):
                continue
            if ref and (ref.get("namespace"), ref.get("name")) != (claim["metadata"].get("namespace"),
                                                                     claim["metadata"]["name"]):
                continue
            if (pv_spec.get("storageClassName") or "") != _class_of(claim):
                continue
            if (pv_spec.get("volumeMode") or "Filesystem") != (spec.get("volumeMode") or "Filesystem"):
                continue
            if not modes <= set(pv_spec.get("accessModes") or []):
                continue
            size = quantity_nanos((pv_spec.get("capacity") or {}).get("storage", "0"))
            if size < wanted or not _pv_matches_node(pv, ni):
                continue
            if best is None or size < best[0]:
                best = (size, name)
        return best[1] if best else None

    def _can_provision(self, claim: Obj, ni: NodeInfo) -> bool:
        sc = self.handle.listers.get("storageclasses", "", _class_of(claim))
        if sc is None or (sc.get("provisioner") or NO_PROVISIONER) == NO_PROVISIONER:
            return False
        topologies = sc.get("allowedTopologies") or []
        if not topologies:
            return True
        terms = [{"matchExpressions": [{"key": e.get("key"), "operator": "In", "values": e.get("values")}
                                       for e in t.get("matchLabelExpressions") or []]} for t in topologies]
        return node_selector({"nodeSelectorTerms": terms})(ni)

    def reserve(self, state: CycleState, pi: PodInfo, node: str) -> Status | None:
        s: _State | None = state.read(_STATE_KEY)
        if s is None:
            return None
        decisions = s.decisions.get(node, [])
        self.assumed[pi.uid] = decisions
        self.assumed_pvs.update(pv for _, pv in decisions if pv)
        return None

    def unreserve(self, state: CycleState, pi: PodInfo, node: str) -> None:
        for _, pv in self.assumed.pop(pi.uid, []):
            self.assumed_pvs.discard(pv)

    async def pre_bind(self, state: CycleState, pi: PodInfo, node: str) -> Status | None:
        decisions = self.assumed.get(pi.uid)
        if not decisions:
            return None
        client = self.handle.client
        try:
            for claim, pv in decisions:
                meta = claim["metadata"]
                if pv:
                    await client.patch(_PVS, pv, {"spec": {"claimRef": {
                        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta.get("namespace"),
                        "name": meta["name"], "uid": meta.get("uid")}}})
                else:
                    await client.patch(_PVCS, meta["name"], {"metadata": {"annotations": {
                        SELECTED_NODE_ANNOTATION: node}}}, meta.get("namespace", ""))
        except (APIError, aiohttp.ClientError, OSError, TimeoutError) as err:
            return error(f"binding volumes: {err}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bind_timeout
        listers = self.handle.listers
        # The PV controller (or provisioner) finishes the binding; wait for every claim to be Bound.
        while loop.time() < deadline:
            claims = [listers.get("persistentvolumeclaims", c["metadata"].get("namespace", ""), c["metadata"]["name"])
                      for c, _ in decisions]
            if all(c is not None and (c.get("status") or {}).get("phase") == "Bound" for c in claims):
                self.unreserve(state, pi, node)
                return None
            await asyncio.sleep(0.2)
        return error("binding volumes: timed out waiting for the condition")

    def events_to_register(self) -> list[ClusterEventWithHint]:
        add_update = ActionType.ADD | ActionType.UPDATE
        return [ClusterEventWithHint(ClusterEvent(PVC, add_update)),
                ClusterEventWithHint(ClusterEvent(PV, add_update)),
                ClusterEventWithHint(ClusterEvent(STORAGE_CLASS, add_update)),
                ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL
                                                  | ActionType.UPDATE_NODE_TAINT))]
