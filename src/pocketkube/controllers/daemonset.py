"""DaemonSet controller (pkg/controller/daemon): one pod per eligible node, placed by the scheduler.

A node is eligible when the pod template's nodeName, nodeSelector and required node affinity match it
and its NoSchedule/NoExecute taints are tolerated (the DaemonSet tolerations for not-ready, unreachable,
pressure and unschedulable nodes are always added); a pod keeps running on a node whose only untolerated
taints are NoSchedule. Each pod gets a required node affinity `metadata.name In [node]`, so the default
scheduler binds it there. The template's versions are ControllerRevisions whose hash labels the pods
(controller-revision-hash); RollingUpdate replaces old pods within maxUnavailable, or surges new ones
within maxSurge; OnDelete waits for the user to delete them.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import UTC, datetime
from functools import cmp_to_key
from typing import Any

from pocketkube.api.scheduling import compile_node_selector_term, find_untolerated_taint
from pocketkube.api.selectors import LabelSelector
from pocketkube.client.informer import object_key
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import resolve_controller_ref, selecting
from pocketkube.controllers.deployment_util import compute_hash, parse_time, scaled_value
from pocketkube.controllers.history import get_patch, sort_revisions
from pocketkube.controllers.replicaset import (
    PodExpectationsController,
    claim_objects,
    enqueue_owners_of,
    enqueue_owners_of_updated_pod,
    is_pod_available,
    is_pod_ready,
    new_controller_ref,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

HASH_LABEL = "controller-revision-hash"  # apps.DefaultDaemonSetUniqueLabelKey
TEMPLATE_GENERATION_LABEL = "pod-template-generation"
TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
FAILED_DAEMON_POD_REASON = "FailedDaemonPod"
SELECTING_ALL_REASON = "SelectingAll"
FAILED_POD_BACKOFF = (1.0, 900.0)  # flowcontrol.NewBackOff(1s, 15min)

# AddOrUpdateDaemonPodTolerations, in upstream's order; network-unavailable only for hostNetwork pods.
DAEMON_TOLERATIONS: tuple[Obj, ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
NETWORK_UNAVAILABLE_TOLERATION: Obj = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                                       "effect": "NoSchedule"}


# --- tolerations and node matching (component-helpers, v1helper) -------------------------------
def _same_toleration(a: Obj, b: Obj) -> bool:
    """Toleration.MatchToleration: same key, operator, value and effect."""
    return all((a.get(k) or "") == (b.get(k) or "") for k in ("key", "operator", "value", "effect"))


def add_or_update_toleration(spec: Obj, toleration: Obj) -> bool:
    tolerations = list(spec.get("tolerations") or [])
    for i, existing in enumerate(tolerations):
        if _same_toleration(existing, toleration):
            if existing == toleration:
                return False
            tolerations[i] = dict(toleration)
            spec["tolerations"] = tolerations
            return True
    spec["tolerations"] = [*tolerations, dict(toleration)]
    return True


def add_daemon_tolerations(spec: Obj) -> None:
    for toleration in DAEMON_TOLERATIONS:
        add_or_update_toleration(spec, toleration)
    if spec.get("hostNetwork"):
        add_or_update_toleration(spec, NETWORK_UNAVAILABLE_TOLERATION)


def required_affinity_matches(pod_spec: Obj, node: Obj) -> bool:
    """nodeaffinity.GetRequiredNodeAffinity(pod).Match(node): nodeSelector and the required terms (ORed)."""
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return True
    name = node["metadata"]["name"]
    return any(match is not None and match(labels, name)
               for match in map(compile_node_selector_term, required.get("nodeSelectorTerms") or []))


def new_daemon_pod_spec(ds: Obj, node_name: str) -> Obj:
    """NewPod's spec: the template's, on the node, with the DaemonSet tolerations."""
    spec = copy.deepcopy(((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
    spec["nodeName"] = node_name
    add_daemon_tolerations(spec)
    return spec


def node_should_run_daemon_pod(node: Obj, ds: Obj) -> tuple[bool, bool]:
    """NodeShouldRunDaemonPod: (should run a pod there, may keep a pod already running there)."""
    template_node = (((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeName")
    name = node["metadata"]["name"]
    if template_node and template_node != name:
        return False, False
    spec = new_daemon_pod_spec(ds, name)
    if not required_affinity_matches(spec, node):
        return False, False
    taints = (node.get("spec") or {}).get("taints") or []
    tolerations = spec.get("tolerations") or []
    if find_untolerated_taint(taints, tolerations) is not None:
        # A pod already there may stay unless a NoExecute taint would evict it.
        return False, find_untolerated_taint(taints, tolerations, frozenset(("NoExecute",))) is None
    return True, True


def replace_node_name_affinity(affinity: Obj | None, node_name: str) -> Obj:
    """ReplaceDaemonSetPodNodeNameNodeAffinity: the required terms become `metadata.name In [node]`."""
    selector = {"nodeSelectorTerms": [{"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}
    affinity = copy.deepcopy(affinity) if affinity else {}
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = selector
    return affinity


def target_node_name(pod: Obj) -> str | None:
    """GetTargetNodeName: spec.nodeName, else the node named by the matchFields affinity."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution")) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In":
                values = field.get("values") or []
                return str(values[0]) if len(values) == 1 else None
    return None


# --- revisions and templates (daemon/util) -------------------------------------------------------
def template_generation(ds: Obj) -> int | None:
    value = (ds["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def create_pod_template(template: Obj, generation: int | None, hash_: str) -> Obj:
    """CreatePodTemplate: the DaemonSet tolerations, the generation and hash labels."""
    template = copy.deepcopy(template)
    add_daemon_tolerations(template.setdefault("spec", {}))
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    if generation is not None:
        labels[TEMPLATE_GENERATION_LABEL] = str(generation)
    if hash_:
        labels[HASH_LABEL] = hash_
    return template


def is_pod_updated(pod: Obj, hash_: str, generation: int | None) -> bool:
    labels = pod["metadata"].get("labels") or {}
    template_matches = generation is not None and labels.get(TEMPLATE_GENERATION_LABEL) == str(generation)
    return (bool(hash_) and labels.get(HASH_LABEL) == hash_) or template_matches


def history_matches(ds: Obj, history: Obj) -> bool:
    return history.get("data") == get_patch(ds)


def _rolling(ds: Obj) -> Obj | None:
    strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
    return strategy.get("rollingUpdate") if strategy.get("type") == "RollingUpdate" else None


def surge_count(ds: Obj, number_to_schedule: int) -> int:
    rolling = _rolling(ds)
    if rolling is None or rolling.get("maxSurge") is None:
        return 0
    return scaled_value(rolling["maxSurge"], number_to_schedule, True)


def unavailable_count(ds: Obj, number_to_schedule: int) -> int:
    rolling = _rolling(ds)
    if rolling is None:
        return 0
    return scaled_value(rolling.get("maxUnavailable"), number_to_schedule, True)


def allows_surge(ds: Obj) -> bool:
    try:
        return surge_count(ds, 1) != 0
    except ValueError:
        return False


def _creation(pod: Obj) -> datetime:
    return parse_time(pod["metadata"].get("creationTimestamp")) or datetime.min.replace(tzinfo=UTC)


def by_creation_and_phase(pods: list[Obj]) -> list[Obj]:
    """podByCreationTimestampAndPhase: scheduled pods first, then oldest first, then by name."""
    def compare(a: Obj, b: Obj) -> int:
        na, nb = bool((a.get("spec") or {}).get("nodeName")), bool((b.get("spec") or {}).get("nodeName"))
        if na != nb:
            return -1 if na else 1
        ka, kb = (_creation(a), a["metadata"]["name"]), (_creation(b), b["metadata"]["name"])
        return (ka > kb) - (ka < kb)
    return sorted(pods, key=cmp_to_key(compare))


def find_updated_pods_on_node(pods: list[Obj], hash_: str,
                              generation: int | None) -> tuple[Obj | None, Obj | None, bool]:
    """(the new pod, the old pod, ok): not ok when there are two of either kind."""
    new = old = None
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if is_pod_updated(pod, hash_, generation):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


# --- the controller -----------------------------------------------------------------------------------
class DaemonSetController(PodExpectationsController):
    name = "daemonset"
    workers = 2

    def setup(self) -> None:
        self.info = self.ctx.resource("apps", "v1", "daemonsets")
        self.rev_info = self.ctx.resource("apps", "v1", "controllerrevisions")
        self.sets = self.ctx.informer("apps", "v1", "daemonsets")
        self.pods = self.ctx.informer("", "v1", "pods")
        self.nodes = self.ctx.informer("", "v1", "nodes")
        self.revisions = self.ctx.informer("apps", "v1", "controllerrevisions")
        # node backoff key -> (delay, last update): deleting failed pods slows down per node.
        self._failed_backoff: dict[str, tuple[float, float]] = {}
        self.sets.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new),
                              on_delete=self._owner_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        self.nodes.add_handler(on_add=self._node_added, on_update=self._node_updated)
        self.revisions.add_handler(on_add=self._history_changed,
                                   on_update=lambda _old, new: self._history_changed(new),
                                   on_delete=self._history_changed)

    # --- event handlers ---
    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        return resolve_controller_ref(self.sets, "DaemonSet", namespace, ref)

    def _matching_owners(self, obj: Obj) -> list[Obj]:
        return selecting(self.sets, obj)

    def _history_changed(self, history: Obj) -> None:
        # Any change is routed as upstream's addHistory routes a new revision (its updateHistory and
        # deleteHistory enqueue less): at worst one sync more.
        enqueue_owners_of(self, history, self._resolve, self._matching_owners)

    def _pod_updated(self, old: Obj, cur: Obj) -> None:
        if cur["metadata"].get("resourceVersion") == old["metadata"].get("resourceVersion"):
            return
        if cur["metadata"].get("deletionTimestamp"):
            self._pod_deleted(cur)
            return
        enqueue_owners_of_updated_pod(self, old, cur, self._resolve, self._matching_owners)

    def _node_added(self, node: Obj) -> None:
        for ds in self.sets.store.list():
            if node_should_run_daemon_pod(node, ds)[0]:
                self.enqueue(ds)

    def _node_updated(self, old: Obj, cur: Obj) -> None:
        # Only labels and taints change where daemon pods belong.
        if old["metadata"].get("labels") == cur["metadata"].get("labels") \
                and (old.get("spec") or {}).get("taints") == (cur.get("spec") or {}).get("taints"):
            return
        for ds in self.sets.store.list():
            if node_should_run_daemon_pod(old, ds) != node_should_run_daemon_pod(cur, ds):
                self.enqueue(ds)

    # --- sync ---
    async def reconcile(self, key: str) -> None:
        cached = self.sets.store.get(key)
        if cached is None:
            self.expectations.delete(key)
            return
        ds = copy.deepcopy(cached)
        ds.setdefault("apiVersion", "apps/v1")
        ds.setdefault("kind", "DaemonSet")
        nodes = self.nodes.store.list()
        selector_spec = (ds.get("spec") or {}).get("selector")
        if selector_spec is not None and not selector_spec.get("matchLabels") \
                and not selector_spec.get("matchExpressions"):
            self.record_event(ds, "Warning", SELECTING_ALL_REASON,
                              "This daemon set is selecting all pods. A non-empty selector is required.")
            return
        if ds["metadata"].get("deletionTimestamp"):
            return
        current, old = await self._construct_history(ds)
        hash_ = (current["metadata"].get("labels") or {}).get(HASH_LABEL, "")
        if not self.expectations.satisfied(key):
            # Only the counts; observedGeneration waits until this generation has been acted on.
            await self._update_status(ds, nodes, hash_, False)
            return
        error: Exception | None = None
        try:
            await self._manage(ds, nodes, hash_)
            if self.expectations.satisfied(key) and _rolling(ds) is not None:
                await self._rolling_update(ds, nodes, hash_)
            await self._cleanup_history(ds, old)
        except APIError as err:
            error = err
        await self._update_status(ds, nodes, hash_, True)
        if error is not None:
            raise error

    async def _daemon_pods(self, ds: Obj) -> list[Obj]:
        selector = LabelSelector.from_dict((ds.get("spec") or {}).get("selector"))
        candidates = self.pods.store.by_index("namespace", ds["metadata"]["namespace"])
        return await claim_objects(self.client, self.info, ds, self.pod_info, selector, candidates)

    async def _nodes_to_daemon_pods(self, ds: Obj, include_deleted_terminal: bool) -> dict[str, list[Obj]]:
        result: dict[str, list[Obj]] = {}
        for pod in await self._daemon_pods(ds):
            phase = (pod.get("status") or {}).get("phase")
            if not include_deleted_terminal and phase in ("Succeeded", "Failed") \
                    and pod["metadata"].get("deletionTimestamp"):
                continue  # the kubelet or the pod GC finishes it; nothing left for us to do
            node = target_node_name(pod)
            if node is None:
                log.info("daemonset %s: no target node for pod %s", object_key(ds), pod["metadata"]["name"])
                continue
            result.setdefault(node, []).append(pod)
        return result

    # --- manage ---
    async def _manage(self, ds: Obj, nodes: list[Obj], hash_: str) -> None:
        node_pods = await self._nodes_to_daemon_pods(ds, False)
        needing: list[str] = []
        to_delete: list[str] = []
        for node in nodes:
            create, delete = self._pods_should_be_on_node(node, node_pods, ds, hash_)
            needing += create
            to_delete += delete
        # Unscheduled pods aimed at nodes that do not exist: no one else will ever remove them.
        existing = {n["metadata"]["name"] for n in nodes}
        for node_name, pods in node_pods.items():
            if node_name not in existing:
                to_delete += [p["metadata"]["name"] for p in pods if not (p.get("spec") or {}).get("nodeName")]
        await self._sync_nodes(ds, to_delete, needing, hash_)

    def _pods_should_be_on_node(self, node: Obj, node_pods: dict[str, list[Obj]], ds: Obj,
                                hash_: str) -> tuple[list[str], list[str]]:
        should_run, should_continue = node_should_run_daemon_pod(node, ds)
        name = node["metadata"]["name"]
        pods = node_pods.get(name)
        needing: list[str] = []
        to_delete: list[str] = []
        if should_run and not pods:
            return [name], []
        if should_continue:
            running: list[Obj] = []
            for pod in pods or []:
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                phase = (pod.get("status") or {}).get("phase")
                if phase == "Failed":
                    # The kubelet may keep rejecting the pod: back off per node before replacing it again.
                    backoff_key = f"{ds['metadata']['uid']}/{name}"
                    delay = self._failed_pod_backoff(backoff_key)
                    if delay is not None:
                        self.queue.add_after(object_key(ds), delay)
                        continue
                    self.record_event(ds, "Warning", FAILED_DAEMON_POD_REASON,
                                      f"Found failed daemon pod {pod['metadata']['namespace']}/"
                                      f"{pod['metadata']['name']} on node {name}, will try to kill it")
                    to_delete.append(pod["metadata"]["name"])
                elif phase == "Succeeded":
                    to_delete.append(pod["metadata"]["name"])
                else:
                    running.append(pod)
            if not allows_surge(ds):
                if len(running) > 1:
                    to_delete += [p["metadata"]["name"] for p in by_creation_and_phase(running)[1:]]
                return needing, to_delete
            if len(running) <= 1:
                if not running and should_run:
                    needing.append(name)
                return needing, to_delete
            # Surging: keep the oldest new pod, and the oldest old pod only while the new one is not yet
            # available and the old one is still ready.
            oldest_new = oldest_old = None
            for pod in by_creation_and_phase(running):
                if (pod["metadata"].get("labels") or {}).get(HASH_LABEL) == hash_:
                    if oldest_new is None:
                        oldest_new = pod
                        continue
                elif oldest_old is None:
                    oldest_old = pod
                    continue
                to_delete.append(pod["metadata"]["name"])
            if oldest_new is not None and oldest_old is not None:
                min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
                if not is_pod_ready(oldest_old) or is_pod_available(oldest_new, min_ready):
                    to_delete.append(oldest_old["metadata"]["name"])
            return needing, to_delete
        if pods:
            to_delete += [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]
        return needing, to_delete

    def _failed_pod_backoff(self, key: str) -> float | None:
        """flowcontrol.Backoff: the delay to wait when still in back-off, else None (and the next step)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        base, cap = FAILED_POD_BACKOFF
        entry = self._failed_backoff.get(key)
        if entry is not None and now - entry[1] < entry[0]:
            return entry[0]
        delay = base if entry is None or now - entry[1] > 2 * cap else min(entry[0] * 2, cap)
        self._failed_backoff[key] = (delay, now)
        return None

    async def _sync_nodes(self, ds: Obj, to_delete: list[str], needing: list[str], hash_: str) -> None:
        """syncNodes: create pods for the nodes in slow-start batches, delete the others' pods."""
        key = object_key(ds)
        create_count = min(len(needing), self.burst_replicas)
        delete_names = to_delete[:self.burst_replicas]
        namespace = ds["metadata"]["namespace"]
        self.expectations.set_expectations(key, create_count, [f"{namespace}/{n}" for n in delete_names])
        template = create_pod_template((ds.get("spec") or {}).get("template") or {}, template_generation(ds),
                                       hash_)
        create_error = await self._create_pods(key, create_count,
                                               lambda i: self._create_daemon_pod(ds, template, needing[i]))
        results = await asyncio.gather(*(self._delete_pod(ds, name, key) for name in delete_names),
                                       return_exceptions=True)
        errors = [r for r in (create_error, *results) if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _create_daemon_pod(self, ds: Obj, template: Obj, node_name: str) -> None:
        template = copy.deepcopy(template)
        spec = template.setdefault("spec", {})
        spec["affinity"] = replace_node_name_affinity(spec.get("affinity"), node_name)
        await self._create_pod(template, ds)

    # --- rolling update (update.go) ---
    def _desired_counts(self, ds: Obj, nodes: list[Obj],
                        node_pods: dict[str, list[Obj]]) -> tuple[int, int, int]:
        """updatedDesiredNodeCounts: (maxSurge, maxUnavailable, desiredNumberScheduled)."""
        desired = 0
        for node in nodes:
            if node_should_run_daemon_pod(node, ds)[0]:
                desired += 1
                node_pods.setdefault(node["metadata"]["name"], [])
        unavailable = unavailable_count(ds, desired)
        surge = surge_count(ds, desired)
        if desired > 0 and unavailable == 0 and surge == 0:
            unavailable = 1  # an impossible configuration: accept unavailability, as upstream
        return surge, unavailable, desired

    async def _rolling_update(self, ds: Obj, nodes: list[Obj], hash_: str) -> None:
        node_pods = await self._nodes_to_daemon_pods(ds, False)
        max_surge, max_unavailable, desired = self._desired_counts(ds, nodes, node_pods)
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        generation = template_generation(ds)
        if max_surge == 0:
            # Delete just enough old pods to stay within maxUnavailable; the manage loop replaces them.
            unavailable = 0
            allowed_replacements: list[str] = []
            candidates: list[str] = []
            for pods in node_pods.values():
                new, old, ok = find_updated_pods_on_node(pods, hash_, generation)
                if not ok or (new is None) == (old is None):
                    unavailable += 1  # excess, missing or mid-replacement: the manage loop handles it
                elif new is not None:
                    if not is_pod_available(new, min_ready):
                        unavailable += 1
                elif old is not None and not is_pod_available(old, min_ready):
                    allowed_replacements.append(old["metadata"]["name"])
                    unavailable += 1
                elif old is not None and unavailable < max_unavailable:
                    candidates.append(old["metadata"]["name"])
            remaining = min(max(max_unavailable - unavailable, 0), len(candidates))
            await self._sync_nodes(ds, allowed_replacements + candidates[:remaining], [], hash_)
            return
        # Surging: a new pod next to each old one, up to maxSurge at a time (at once where the old one is
        # unavailable); the old pod goes when the new one is available.
        to_delete: list[str] = []
        should_not_run: list[str] = []
        candidate_nodes: list[str] = []
        allowed_nodes: list[str] = []
        surging = available = 0
        for node_name, pods in node_pods.items():
            new, old, ok = find_updated_pods_on_node(pods, hash_, generation)
            if not ok:
                surging += 1
                continue
            if old is not None:
                available += is_pod_available(old, min_ready)
            elif new is not None:
                available += is_pod_available(new, min_ready)
            if old is None:
                continue
            if new is None:
                node = self.nodes.store.get(node_name)
                if node is None:
                    raise APIError(404, {"reason": "NotFound",
                                         "message": f"couldn't get node for nodeName {node_name!r}"},
                                   "GET", node_name)
                should_run = node_should_run_daemon_pod(node, ds)[0]
                if not is_pod_available(old, min_ready):
                    if not should_run:
                        to_delete.append(old["metadata"]["name"])
                    else:
                        allowed_nodes.append(node_name)
                elif not should_run:
                    should_not_run.append(old["metadata"]["name"])
                elif surging < max_surge:
                    candidate_nodes.append(node_name)
                continue
            if not is_pod_available(new, min_ready):
                surging += 1
                continue
            to_delete.append(old["metadata"]["name"])
        # With surge, owners expect full availability: pods on nodes that no longer qualify go only as
        # pods elsewhere become available.
        deletable = min(max(available - desired, 0), len(should_not_run))
        to_delete += should_not_run[:deletable]
        remaining = min(max(max_surge - surging, 0), len(candidate_nodes))
        await self._sync_nodes(ds, to_delete, allowed_nodes + candidate_nodes[:remaining], hash_)

    # --- history ---
    async def _controlled_histories(self, ds: Obj) -> list[Obj]:
        selector = LabelSelector.from_dict((ds.get("spec") or {}).get("selector"))
        candidates = self.revisions.store.by_index("namespace", ds["metadata"]["namespace"])
        return await claim_objects(self.client, self.info, ds, self.rev_info, selector, candidates)

    async def _construct_history(self, ds: Obj) -> tuple[Obj, list[Obj]]:
        """constructHistory: the revision matching the template (created or renumbered), and the old ones."""
        current: list[Obj] = []
        old: list[Obj] = []
        for history in await self._controlled_histories(ds):
            if HASH_LABEL not in (history["metadata"].get("labels") or {}):
                history = copy.deepcopy(history)
                history["metadata"].setdefault("labels", {})[HASH_LABEL] = history["metadata"]["name"]
                history = await self.client.update(self.rev_info, history)
            (current if history_matches(ds, history) else old).append(history)
        next_number = max((int(h.get("revision") or 0) for h in old), default=0) + 1
        if not current:
            return await self._snapshot(ds, next_number), old
        cur = await self._dedup_current(ds, current)
        if int(cur.get("revision") or 0) < next_number:
            cur = copy.deepcopy(cur)
            cur["revision"] = next_number
            cur = await self.client.update(self.rev_info, cur)
        return cur, old

    async def _dedup_current(self, ds: Obj, current: list[Obj]) -> Obj:
        keep = current[0]
        for history in current:
            if int(history.get("revision") or 0) >= int(keep.get("revision") or 0):
                keep = history
        keep_hash = (keep["metadata"].get("labels") or {}).get(HASH_LABEL)
        for history in current:
            if history["metadata"]["name"] == keep["metadata"]["name"]:
                continue
            for pod in await self._daemon_pods(ds):
                if (pod["metadata"].get("labels") or {}).get(HASH_LABEL) != keep_hash:
                    await self.client.patch(self.pod_info, pod["metadata"]["name"],
                                            {"metadata": {"labels": {HASH_LABEL: keep_hash}}},
                                            ds["metadata"]["namespace"], patch_type="strategic")
            await self.client.delete(self.rev_info, history["metadata"]["name"], ds["metadata"]["namespace"])
        return keep

    async def _snapshot(self, ds: Obj, revision: int) -> Obj:
        """A ControllerRevision for the current template, named `<ds>-<hash>`; a clash with another template
        bumps status.collisionCount (and this round fails, to be retried with the new count)."""
        collision_count = (ds.get("status") or {}).get("collisionCount")
        template = (ds.get("spec") or {}).get("template") or {}
        hash_ = compute_hash(template, collision_count)
        name = f"{ds['metadata']['name']}-{hash_}"
        namespace = ds["metadata"]["namespace"]
        meta: Obj = {"name": name, "namespace": namespace,
                     "labels": {**((template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: hash_},
                     "ownerReferences": [new_controller_ref(ds)]}
        if ds["metadata"].get("annotations"):
            meta["annotations"] = dict(ds["metadata"]["annotations"])
        history = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": meta,
                   "data": get_patch(ds), "revision": revision}
        try:
            return await self.client.create(self.rev_info, history)
        except APIError as err:
            if not err.already_exists:
                raise
            existing = await self.client.get(self.rev_info, name, namespace)
            if history_matches(ds, existing):
                return existing
            fresh = await self.client.get(self.info, ds["metadata"]["name"], namespace)
            if (fresh.get("status") or {}).get("collisionCount") != collision_count:
                raise APIError(409, {"reason": "Conflict", "message": (
                    f"found a stale collision count ({collision_count}, expected "
                    f"{(fresh.get('status') or {}).get('collisionCount')}) of DaemonSet {name!r} while "
                    "processing; will retry until it is updated")}, "GET", name) from err
            fresh.setdefault("status", {})["collisionCount"] = int(collision_count or 0) + 1
            await self.client.update(self.info, fresh, "status")
            raise

    async def _cleanup_history(self, ds: Obj, old: list[Obj]) -> None:
        limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
        to_kill = len(old) - (10 if limit is None else int(limit))
        if to_kill <= 0:
            return
        live = {(p["metadata"].get("labels") or {}).get(HASH_LABEL)
                for pods in (await self._nodes_to_daemon_pods(ds, True)).values() for p in pods}
        for history in sort_revisions(old):
            if to_kill <= 0:
                break
            if (history["metadata"].get("labels") or {}).get(HASH_LABEL) in live:
                continue
            await self.client.delete(self.rev_info, history["metadata"]["name"], ds["metadata"]["namespace"])
            to_kill -= 1

    # --- status ---
    async def _update_status(self, ds: Obj, nodes: list[Obj], hash_: str, observe_generation: bool) -> None:
        node_pods = await self._nodes_to_daemon_pods(ds, False)
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        generation = template_generation(ds)
        counts = dict.fromkeys(("desiredNumberScheduled", "currentNumberScheduled", "numberMisscheduled",
                                "numberReady", "updatedNumberScheduled", "numberAvailable"), 0)
        for node in nodes:
            should_run, _ = node_should_run_daemon_pod(node, ds)
            pods = node_pods.get(node["metadata"]["name"]) or []
            if not should_run:
                counts["numberMisscheduled"] += bool(pods)
                continue
            counts["desiredNumberScheduled"] += 1
            if not pods:
                continue
            counts["currentNumberScheduled"] += 1
            pod = by_creation_and_phase(pods)[0]
            if is_pod_ready(pod):
                counts["numberReady"] += 1
                counts["numberAvailable"] += is_pod_available(pod, min_ready)
            counts["updatedNumberScheduled"] += is_pod_updated(pod, hash_, generation)
        counts["numberUnavailable"] = counts["desiredNumberScheduled"] - counts["numberAvailable"]
        await self._store_status(ds, counts, observe_generation)
        # Clock skew backstop, as upstream.
        if min_ready > 0 and counts["numberReady"] != counts["numberAvailable"]:
            self.queue.add_after(object_key(ds), min_ready)

    async def _store_status(self, ds: Obj, counts: dict[str, int], observe_generation: bool) -> None:
        old = ds.get("status") or {}
        generation = int(ds["metadata"].get("generation") or 0)
        if all(int(old.get(k) or 0) == v for k, v in counts.items()) \
                and int(old.get("observedGeneration") or 0) >= generation:
            return

        def set_status(obj: Obj) -> bool:
            status = dict(obj.get("status") or {})
            if observe_generation:
                status["observedGeneration"] = generation
            status.update(counts)
            # DaemonSetStatus's omitempty fields.
            for k in ("observedGeneration", "updatedNumberScheduled", "numberAvailable", "numberUnavailable"):
                if not status.get(k):
                    status.pop(k, None)
            obj["status"] = status
            return True

        await self._write_status(ds, set_status)
