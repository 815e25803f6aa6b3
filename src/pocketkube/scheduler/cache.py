"""The scheduler cache: nodes and the pods on them, including pods assumed but not yet bound.

A pod is *assumed* on its node as soon as the scheduling cycle picks it, so the next pod already sees
the room it takes; the bind then runs in the background. The watch confirms it (the pod comes back with
spec.nodeName) or a failed bind forgets it. Like upstream (durationToExpireAssumedPod = 0) an assumed
pod whose binding finished never expires on a timer: only the watch or forget_pod removes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pocketkube.scheduler.columns import NodeColumns
from pocketkube.scheduler.types import LABEL_REGION, LABEL_ZONE, ImageStateSummary, NodeInfo, PodInfo

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def zone_key(node: Obj) -> str:
    """utilnode.GetZoneKey: region and zone joined, '' when unlabelled."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    region = labels.get(LABEL_REGION, labels.get("failure-domain.beta.kubernetes.io/region", ""))
    zone = labels.get(LABEL_ZONE, labels.get("failure-domain.beta.kubernetes.io/zone", ""))
    if not region and not zone:
        return ""
    return f"{region}:\x00:{zone}"


class Snapshot:
    """The node list a scheduling cycle works on, in node-tree order (zones interleaved), and its numbers
    as columns for the vectorised plugins."""

    def __init__(self, node_infos: list[NodeInfo], affinity_nodes: dict[str, NodeInfo] | None = None,
                 anti_affinity_nodes: dict[str, NodeInfo] | None = None) -> None:
        self.node_info_list = node_infos
        self.node_infos = {n.name: n for n in node_infos}
        self.columns = NodeColumns(node_infos)
        # Nodes holding pods with (anti-)affinity, kept up to date by the cache; None: derive on demand.
        self._affinity_nodes = affinity_nodes
        self._anti_affinity_nodes = anti_affinity_nodes
        self._with_affinity: list[NodeInfo] | None = None
        self._with_anti_affinity: list[NodeInfo] | None = None

    @classmethod
    def from_objects(cls, nodes: Iterable[Obj], pods: Iterable[Obj] = ()) -> Snapshot:
        """A snapshot built directly from API objects (tests, tools)."""
        cache = Cache()
        for node in nodes:
            cache.add_node(node)
        for pod in pods:
            cache.add_pod(pod)
        return cache.snapshot()

    def get(self, name: str) -> NodeInfo | None:
        return self.node_infos.get(name)

    def have_pods_with_affinity(self) -> list[NodeInfo]:
        if self._with_affinity is None:
            source = self.node_info_list if self._affinity_nodes is None else self._affinity_nodes.values()
            self._with_affinity = [n for n in source if n.pods_with_affinity and n.node is not None]
        return self._with_affinity

    def have_pods_with_required_anti_affinity(self) -> list[NodeInfo]:
        if self._with_anti_affinity is None:
            source = self.node_info_list if self._anti_affinity_nodes is None else \
                self._anti_affinity_nodes.values()
            self._with_anti_affinity = [n for n in source if n.pods_with_required_anti_affinity and n.node is not None]
        return self._with_anti_affinity

    def invalidate(self) -> None:
        """Pods moved: forget the derived lists (the node list itself is unchanged)."""
        self._with_affinity = None
        self._with_anti_affinity = None


class Cache:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.pod_states: dict[str, PodInfo] = {}  # uid -> pod known to the cache (bound or assumed)
        self.assumed: set[str] = set()
        self.binding_finished: set[str] = set()
        self._zones: dict[str, list[str]] = {}  # zone -> node names, the node tree
        self._images: dict[str, ImageStateSummary] = {}
        self._image_nodes: dict[str, set[str]] = {}
        self._snapshot: Snapshot | None = None
        self._pods_changed = False
        # Nodes with pods that have (anti-)affinity: InterPodAffinity reads these on every cycle.
        self._affinity_nodes: dict[str, NodeInfo] = {}
        self._anti_affinity_nodes: dict[str, NodeInfo] = {}

    # -- snapshot -------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The current snapshot. It shares NodeInfo objects with the cache: the scheduling cycle runs
        without yielding to the event loop, so nothing changes under it."""
        if self._snapshot is None:
            self._snapshot = Snapshot([self.nodes[name] for name in self._node_tree_order()
                                       if self.nodes[name].node is not None],
                                      self._affinity_nodes, self._anti_affinity_nodes)
            self._pods_changed = False
        elif self._pods_changed:
            self._snapshot.invalidate()
            self._pods_changed = False
        return self._snapshot

    def _node_tree_order(self) -> list[str]:
        """nodeTree.list(): one node from each zone in turn."""
        order: list[str] = []
        zones = [names for names in self._zones.values() if names]
        index = 0
        while True:
            row = [names[index] for names in zones if index < len(names)]
            if not row:
                break
            order.extend(row)
            index += 1
        return order

    def _drop_snapshot(self) -> None:
        """The node list changes: the next cycle gets a new snapshot."""
        if self._snapshot is not None:
            self._snapshot.columns.detach()
            self._snapshot = None

    # -- nodes ----------------------------------------------------------------------------------
    def add_node(self, node: Obj) -> NodeInfo:
        name = node["metadata"]["name"]
        ni = self.nodes.get(name)
        if ni is None:
            ni = self.nodes[name] = NodeInfo()
        # A node that stays in its zone keeps its place in the node tree (nodeTree.updateNode), and the
        # snapshot keeps its list: only the node's own row changes.
        in_place = ni.node is not None and zone_key(ni.node) == zone_key(node)
        if not in_place:
            self._remove_from_tree(name, ni.node)
        self._remove_images(ni)
        ni.set_node(node)
        self._add_images(ni)
        if not in_place:
            self._zones.setdefault(zone_key(node), []).append(name)
            self._drop_snapshot()
        elif ni.columns is not None:
            ni.columns.write_node(ni.row, ni)
        return ni

    def update_node(self, old: Obj | None, new: Obj) -> NodeInfo:
        return self.add_node(new)

    def remove_node(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        ni = self.nodes.get(name)
        if ni is None:
            return
        self._remove_from_tree(name, ni.node)
        self._remove_images(ni)
        if ni.pods:
            ni.remove_node()  # keep the pods accounted until their deletions arrive
        else:
            del self.nodes[name]
        self._drop_snapshot()

    def _remove_from_tree(self, name: str, node: Obj | None) -> None:
        if node is None:
            return
        names = self._zones.get(zone_key(node))
        if names and name in names:
            names.remove(name)
            if not names:
                del self._zones[zone_key(node)]

    def _add_images(self, ni: NodeInfo) -> None:
        for image in ((ni.node or {}).get("status") or {}).get("images") or []:
            size = int(image.get("sizeBytes") or 0)
            for name in image.get("names") or []:
                holders = self._image_nodes.setdefault(name, set())
                holders.add(ni.name)
                state = self._images.get(name)
                if state is None:
                    state = self._images[name] = ImageStateSummary(size, 0)
                state.size = size
                state.num_nodes = len(holders)
                ni.image_states[name] = state

    def _remove_images(self, ni: NodeInfo) -> None:
        for name in list(ni.image_states):
            holders = self._image_nodes.get(name)
            if holders is not None:
                holders.discard(ni.name)
                if holders:
                    self._images[name].num_nodes = len(holders)
                else:
                    del self._image_nodes[name]
                    del self._images[name]
        ni.image_states = {}

    # -- pods -----------------------------------------------------------------------------------
    def _node_for(self, name: str) -> NodeInfo:
        ni = self.nodes.get(name)
        if ni is None:
            # A pod can arrive before its node: account it on a node-less NodeInfo, as upstream.
            ni = self.nodes[name] = NodeInfo()
            ni.name = name
        return ni

    def _add(self, pi: PodInfo) -> None:
        ni = self._node_for(pi.node_name)
        ni.add_pod(pi)
        self.pod_states[pi.uid] = pi
        if pi.has_affinity:
            self._affinity_nodes[ni.name] = ni
            self._pods_changed = True
        if pi.has_required_anti_affinity:
            self._anti_affinity_nodes[ni.name] = ni
            self._pods_changed = True

    def _remove(self, pi: PodInfo) -> None:
        ni = self.nodes.get(pi.node_name)
        if ni is not None:
            ni.remove_pod(pi)
            if not ni.pods_with_affinity:
                self._affinity_nodes.pop(ni.name, None)
            if not ni.pods_with_required_anti_affinity:
                self._anti_affinity_nodes.pop(ni.name, None)
            if ni.node is None and not ni.pods:
                del self.nodes[pi.node_name]
        self.pod_states.pop(pi.uid, None)
        if pi.has_affinity or pi.has_required_anti_affinity:
            self._pods_changed = True

    def is_assumed(self, uid: str) -> bool:
        return uid in self.assumed

    def assume_pod(self, pi: PodInfo) -> None:
        """Account `pi` (whose pod already carries spec.nodeName) on its node before the bind."""
        if pi.uid in self.pod_states:
            raise ValueError(f"pod {pi.key} is in the cache, so can't be assumed")
        self._add(pi)
        self.assumed.add(pi.uid)

    def finish_binding(self, pi: PodInfo) -> None:
        if pi.uid in self.assumed:
            self.binding_finished.add(pi.uid)

    def forget_pod(self, pi: PodInfo) -> None:
        current = self.pod_states.get(pi.uid)
        if current is not None and current.node_name != pi.node_name:
            raise ValueError(f"pod {pi.key} was assumed on {pi.node_name} but assigned to {current.node_name}")
        if pi.uid in self.assumed and current is not None:
            self._remove(current)
            self.assumed.discard(pi.uid)
            self.binding_finished.discard(pi.uid)

    def add_pod(self, pod: Obj) -> None:
        """A bound pod seen by the watch: confirms an assumed pod or adds a new one."""
        meta = pod.get("metadata") or {}
        current = self.pod_states.get(meta.get("uid") or "")
        if current is not None and current.uid in self.assumed and \
                current.node_name == (pod.get("spec") or {}).get("nodeName") and current.spec.get("containers") == \
                (pod.get("spec") or {}).get("containers") and current.labels == (meta.get("labels") or {}):
            # The usual confirmation: same node, same pod. Keep the parsed PodInfo, take the API's object.
            self.assumed.discard(current.uid)
            self.binding_finished.discard(current.uid)
            current.pod, current.spec = pod, pod.get("spec") or {}
            return
        pi = PodInfo(pod)
        if current is not None and pi.uid in self.assumed:
            self.assumed.discard(pi.uid)
            self.binding_finished.discard(pi.uid)
            self._remove(current)  # the assumed copy may differ (node, resources): replace it
        elif current is not None:
            self._remove(current)
        self._add(pi)

    def update_pod(self, old: Obj | None, new: Obj) -> None:
        self.add_pod(new)

    def remove_pod(self, pod: Obj) -> None:
        uid = (pod.get("metadata") or {}).get("uid") or ""
        current = self.pod_states.get(uid)
        if current is not None:
            self._remove(current)
        self.assumed.discard(uid)
        self.binding_finished.discard(uid)

    def get_pod(self, uid: str) -> PodInfo | None:
        return self.pod_states.get(uid)

    def node_count(self) -> int:
        return sum(1 for n in self.nodes.values() if n.node is not None)
