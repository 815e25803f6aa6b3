"""StatefulSet controller (pkg/controller/statefulset).

Pods are named `<set>-<ordinal>` and keep that identity (name labels, hostname, subdomain) and their
claims `<template>-<set>-<ordinal>` across deletion. OrderedReady creates in ordinal order and waits for
each pod to be Running and Ready (and available) before the next, deletes in reverse and halts on an
unhealthy pod; Parallel creates and deletes in slow-start batches. Every template version is recorded as
a ControllerRevision (a strategic merge patch that replaces spec.template, as `kubectl rollout undo`
applies it); RollingUpdate replaces pods from the highest ordinal down to the partition, at most
maxUnavailable at a time; OnDelete waits for the user to delete pods. Claims get owner references as
persistentVolumeClaimRetentionPolicy says, so the garbage collector removes them when due.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pocketkube.api.selectors import LabelSelector, SelectorError
from pocketkube.client.informer import object_key
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller, resolve_controller_ref, selecting, split_key
from pocketkube.controllers.deployment_util import scaled_value
from pocketkube.controllers.history import (
    controller_revision_name,
    equal_revision,
    get_patch,
    hash_controller_revision,
    new_controller_revision,
    next_revision,
    revision_number,
    sort_revisions,
)
from pocketkube.controllers.replicaset import (
    adopt_patch,
    claim_objects,
    controller_ref,
    enqueue_controller_of,
    enqueue_owners_of,
    enqueue_owners_of_updated_pod,
    is_pod_available,
    is_pod_ready,
    new_controller_ref,
    pod_from_template,
    recheck_owner,
    slow_start_batch,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = "controller-revision-hash"  # apps.StatefulSetRevisionLabel / ControllerRevisionHashLabelKey
MAX_BATCH_SIZE = 500
_POD_REGEX = re.compile(r"^(.*)-([0-9]+)$")
_INT32_MAX = 2**31 - 1


# --- identity and storage (stateful_set_utils.go) ---------------------------------------------
def parent_and_ordinal(name: str) -> tuple[str, int]:
    match = _POD_REGEX.match(name)
    if match is None:
        return "", -1
    ordinal = int(match.group(2))
    return match.group(1), ordinal if ordinal <= _INT32_MAX else -1


def ordinal_of(pod: Obj) -> int:
    return parent_and_ordinal(pod["metadata"]["name"])[1]


def replicas_of(sts: Obj) -> int:
    value = (sts.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def start_ordinal(sts: Obj) -> int:
    """spec.ordinals.start (StatefulSetStartOrdinal, GA)."""
    return int(((sts.get("spec") or {}).get("ordinals") or {}).get("start") or 0)


def end_ordinal(sts: Obj) -> int:
    return start_ordinal(sts) + replicas_of(sts) - 1


def in_ordinal_range(pod: Obj, sts: Obj) -> bool:
    ordinal = ordinal_of(pod)
    return start_ordinal(sts) <= ordinal <= end_ordinal(sts)


def pod_name(sts: Obj, ordinal: int) -> str:
    return f"{sts['metadata']['name']}-{ordinal}"


def claim_name(sts: Obj, template: Obj, ordinal: int) -> str:
    return f"{template['metadata']['name']}-{sts['metadata']['name']}-{ordinal}"


def is_member_of(sts: Obj, pod: Obj) -> bool:
    return parent_and_ordinal(pod["metadata"]["name"])[0] == sts["metadata"]["name"]


def claim_templates(sts: Obj) -> list[Obj]:
    return list((sts.get("spec") or {}).get("volumeClaimTemplates") or [])


def identity_matches(sts: Obj, pod: Obj) -> bool:
    parent, ordinal = parent_and_ordinal(pod["metadata"]["name"])
    meta = pod["metadata"]
    return (ordinal >= 0 and parent == sts["metadata"]["name"] and meta["name"] == pod_name(sts, ordinal)
            and meta.get("namespace") == sts["metadata"]["namespace"]
            and (meta.get("labels") or {}).get(POD_NAME_LABEL) == meta["name"])


def storage_matches(sts: Obj, pod: Obj) -> bool:
    ordinal = ordinal_of(pod)
    if ordinal < 0:
        return False
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    for template in claim_templates(sts):
        volume = volumes.get(template["metadata"]["name"])
        source = (volume or {}).get("persistentVolumeClaim")
        if source is None or source.get("claimName") != claim_name(sts, template, ordinal):
            return False
    return True


def claims_for(sts: Obj, ordinal: int) -> dict[str, Obj]:
    """getPersistentVolumeClaims: template name -> the claim this ordinal uses, labelled with the selector."""
    match_labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    claims: dict[str, Obj] = {}
    for template in claim_templates(sts):
        meta = copy.deepcopy(template.get("metadata") or {})
        meta["name"] = claim_name(sts, template, ordinal)
        meta["namespace"] = sts["metadata"]["namespace"]
        meta["labels"] = {**(meta.get("labels") or {}), **match_labels}
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                 "spec": copy.deepcopy(template.get("spec") or {})}
        claims[template["metadata"]["name"]] = claim
    return claims


def update_storage(sts: Obj, pod: Obj) -> None:
    """Point the template-named volumes at this ordinal's claims; other volumes stay."""
    claims = claims_for(sts, ordinal_of(pod))
    spec = pod.setdefault("spec", {})
    volumes = [{"name": name, "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
               for name, claim in claims.items()]
    volumes += [v for v in spec.get("volumes") or [] if v.get("name") not in claims]
    spec["volumes"] = volumes


def update_identity(sts: Obj, pod: Obj) -> None:
    ordinal = ordinal_of(pod)
    meta = pod["metadata"]
    meta["name"] = pod_name(sts, ordinal)
    meta["namespace"] = sts["metadata"]["namespace"]
    labels = meta.setdefault("labels", {})
    labels[POD_NAME_LABEL] = meta["name"]
    labels[POD_INDEX_LABEL] = str(ordinal)  # PodIndexLabel, GA


def new_stateful_pod(sts: Obj, ordinal: int) -> Obj:
    pod = pod_from_template((sts.get("spec") or {}).get("template") or {}, sts)
    pod["metadata"]["name"] = pod_name(sts, ordinal)
    update_identity(sts, pod)
    # initIdentity: hostname and subdomain are immutable, so only set on creation.
    pod["spec"]["hostname"] = pod["metadata"]["name"]
    service = (sts.get("spec") or {}).get("serviceName")
    if service:
        pod["spec"]["subdomain"] = service
    update_storage(sts, pod)
    return pod


def revision_of(pod: Obj) -> str:
    return (pod["metadata"].get("labels") or {}).get(REVISION_LABEL, "")


def new_versioned_pod(current_set: Obj, update_set: Obj, current_revision: str, update_revision: str,
                      ordinal: int) -> Obj:
    """Ordinals below the partition are (re)created at the current revision, the rest at the update revision."""
    strategy = (current_set.get("spec") or {}).get("updateStrategy") or {}
    rolling = strategy.get("rollingUpdate")
    start = start_ordinal(current_set)
    # Upstream's condition, including its operator precedence: (RollingUpdate && nil && below current) || partition.
    below_current = (strategy.get("type") == "RollingUpdate" and rolling is None
                     and ordinal < start + int((current_set.get("status") or {}).get("currentReplicas") or 0))
    below_partition = rolling is not None and ordinal < start + int(rolling.get("partition") or 0)
    if below_current or below_partition:
        pod = new_stateful_pod(current_set, ordinal)
        pod["metadata"]["labels"][REVISION_LABEL] = current_revision
        return pod
    pod = new_stateful_pod(update_set, ordinal)
    pod["metadata"]["labels"][REVISION_LABEL] = update_revision
    return pod


def apply_revision(sts: Obj, revision: Obj) -> Obj:
    """ApplyRevision: the set with the revision's template."""
    clone = copy.deepcopy(sts)
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    clone.setdefault("spec", {})["template"] = template
    return clone


def new_revision(sts: Obj, revision: int, collision_count: int) -> Obj:
    template_labels = (((sts.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")
    cr = new_controller_revision(sts, template_labels, get_patch(sts), revision, collision_count)
    annotations = sts["metadata"].get("annotations")
    if annotations:
        cr["metadata"]["annotations"] = dict(annotations)
    return cr


# --- pod state ---------------------------------------------------------------------------------
def _phase(pod: Obj) -> str:
    return (pod.get("status") or {}).get("phase") or ""


def is_created(pod: Obj) -> bool:
    return _phase(pod) != ""


def is_terminating(pod: Obj) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_running_and_ready(pod: Obj) -> bool:
    return _phase(pod) == "Running" and is_pod_ready(pod)


def is_unavailable(pod: Obj, min_ready_seconds: int) -> bool:
    return not is_pod_available(pod, min_ready_seconds) or is_terminating(pod)


def max_unavailable(sts: Obj, replicas: int) -> int:
    """getStatefulSetMaxUnavailable: default 1, percentages round down, never below 1."""
    rolling = (((sts.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {})
    value = rolling.get("maxUnavailable")
    return max(scaled_value(1 if value is None else value, replicas, False), 1)


# --- claim retention (persistentVolumeClaimRetentionPolicy) ---------------------------------------
def retention_policy(sts: Obj) -> tuple[str, str]:
    policy = (sts.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
    return policy.get("whenScaled") or "Retain", policy.get("whenDeleted") or "Retain"


def _matches_ref(ref: Obj, owner: Obj, group: str, kind: str) -> bool:
    ref_group = ref.get("apiVersion", "").rpartition("/")[0]
    return (ref_group == group and ref.get("kind") == kind and ref.get("name") == owner["metadata"]["name"]
            and ref.get("uid") == owner["metadata"].get("uid"))


def _is_set_ref(ref: Obj, sts: Obj) -> bool:
    return _matches_ref(ref, sts, "apps", "StatefulSet")


def _is_pod_ref(ref: Obj, pod: Obj) -> bool:
    return _matches_ref(ref, pod, "", "Pod")


def _owner_refs(obj: Obj) -> list[Obj]:
    return list(obj["metadata"].get("ownerReferences") or [])


def has_owner_ref(target: Obj, owner: Obj) -> bool:
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in _owner_refs(target))


def has_stale_owner_ref(target: Obj, owner: Obj) -> bool:
    """A reference to an earlier incarnation of the pod (same name, another uid)."""
    return any(ref.get("kind") == "Pod" and ref.get("name") == owner["metadata"]["name"]
               and ref.get("uid") != owner["metadata"].get("uid") for ref in _owner_refs(target))


def has_unexpected_controller(claim: Obj, sts: Obj, pod: Obj) -> bool:
    return any(ref.get("controller") and not (_is_set_ref(ref, sts) or _is_pod_ref(ref, pod))
               for ref in _owner_refs(claim))


def _has_non_controller_owner(claim: Obj, *owners: Obj) -> bool:
    uids = {o["metadata"].get("uid") for o in owners}
    return any(ref.get("uid") in uids and not ref.get("controller") for ref in _owner_refs(claim))


def claim_owner_up_to_date(claim: Obj, sts: Obj, pod: Obj) -> bool:
    """isClaimOwnerUpToDate: the claim's references to the set and pod are what the policy asks for."""
    if has_unexpected_controller(claim, sts, pod):
        return not (has_owner_ref(claim, sts) or has_owner_ref(claim, pod))
    if _has_non_controller_owner(claim, sts, pod):
        return False
    when_scaled, when_deleted = retention_policy(sts)
    set_ref, pod_ref = has_owner_ref(claim, sts), has_owner_ref(claim, pod)
    scaled_down = not in_ordinal_range(pod, sts)
    if when_scaled == "Delete" and when_deleted == "Delete":
        return scaled_down != set_ref and scaled_down == pod_ref
    if when_scaled == "Delete":
        return not set_ref and scaled_down == pod_ref
    if when_deleted == "Delete":
        return set_ref and not pod_ref
    return not set_ref and not pod_ref


def update_claim_owner_refs(claim: Obj, sts: Obj, pod: Obj) -> bool:
    """updateClaimOwnerRefForSetAndPod: set or drop the set's and the pod's controller references."""
    refs = _owner_refs(claim)

    def remove(pred: Callable[[Obj], bool]) -> bool:
        nonlocal refs
        kept = [r for r in refs if not pred(r)]
        changed = len(kept) != len(refs)
        refs = kept
        return changed

    def add_controller(owner: Obj, api_version: str, kind: str) -> bool:
        uid = owner["metadata"].get("uid")
        if any(r.get("uid") == uid for r in refs):
            return False
        refs.append(new_controller_ref({**owner, "apiVersion": api_version, "kind": kind}))
        return True

    if has_unexpected_controller(claim, sts, pod):
        changed = remove(lambda r: _is_set_ref(r, sts) or _is_pod_ref(r, pod))
    else:
        # References left without the controller flag (an older controller wrote them) are redone.
        changed = remove(lambda r: not r.get("controller") and (_is_set_ref(r, sts) or _is_pod_ref(r, pod)))
        when_scaled, when_deleted = retention_policy(sts)
        scaled_down = not in_ordinal_range(pod, sts)
        if when_scaled == "Retain" and when_deleted == "Delete":
            changed = remove(lambda r: _is_pod_ref(r, pod)) | changed
            changed = add_controller(sts, "apps/v1", "StatefulSet") | changed
        elif when_scaled == "Delete" and when_deleted == "Retain":
            changed = remove(lambda r: _is_set_ref(r, sts)) | changed
            if scaled_down:
                changed = add_controller(pod, "v1", "Pod") | changed
            else:
                changed = remove(lambda r: _is_pod_ref(r, pod)) | changed
        elif when_scaled == "Delete" and when_deleted == "Delete":
            if scaled_down:
                changed = remove(lambda r: _is_set_ref(r, sts)) | changed
                changed = add_controller(pod, "v1", "Pod") | changed
            else:
                changed = remove(lambda r: _is_pod_ref(r, pod)) | changed
                changed = add_controller(sts, "apps/v1", "StatefulSet") | changed
        else:
            changed = remove(lambda r: _is_set_ref(r, sts) or _is_pod_ref(r, pod)) | changed
    if changed:
        claim["metadata"]["ownerReferences"] = refs
    return changed


# --- status ------------------------------------------------------------------------------------------
def compute_replica_status(pod_lists: Iterable[Iterable[Obj | None]], min_ready_seconds: int,
                           current_revision: str, update_revision: str) -> dict[str, int]:
    counts = {"replicas": 0, "readyReplicas": 0, "availableReplicas": 0, "currentReplicas": 0,
              "updatedReplicas": 0}
    for pods in pod_lists:
        for pod in pods:
            if pod is None:
                continue
            if is_created(pod):
                counts["replicas"] += 1
            if is_running_and_ready(pod):
                counts["readyReplicas"] += 1
                if is_pod_available(pod, min_ready_seconds):
                    counts["availableReplicas"] += 1
            if is_created(pod) and not is_terminating(pod):
                revision = revision_of(pod)
                if revision == current_revision:
                    counts["currentReplicas"] += 1
                if revision == update_revision:
                    counts["updatedReplicas"] += 1
    return counts


def complete_rolling_update(sts: Obj, status: Obj) -> None:
    """Once every replica is updated and ready, the update revision becomes the current one."""
    strategy = ((sts.get("spec") or {}).get("updateStrategy") or {}).get("type")
    if strategy == "RollingUpdate" and status["updatedReplicas"] == status["replicas"] \
            and status["readyReplicas"] == status["replicas"]:
        status["currentReplicas"] = status["updatedReplicas"]
        status["currentRevision"] = status["updateRevision"]


def inconsistent_status(sts: Obj, status: Obj) -> bool:
    old = sts.get("status") or {}
    return (status["observedGeneration"] > int(old.get("observedGeneration") or 0)
            or any(status[k] != int(old.get(k) or 0) for k in
                   ("replicas", "currentReplicas", "readyReplicas", "updatedReplicas", "availableReplicas"))
            or status["currentRevision"] != (old.get("currentRevision") or "")
            or status["updateRevision"] != (old.get("updateRevision") or ""))


def wire_status(status: Obj, old: Obj) -> Obj:
    """StatefulSetStatus as Go serializes it: replicas and availableReplicas always, the rest omitempty."""
    out: Obj = {k: v for k, v in status.items() if v or k in ("replicas", "availableReplicas")}
    if status.get("collisionCount") is not None:
        out["collisionCount"] = status["collisionCount"]
    if old.get("conditions"):
        out["conditions"] = old["conditions"]
    return out


# --- the controller ---------------------------------------------------------------------------------
class StatefulSetController(Controller):
    name = "statefulset"
    workers = 4

    def setup(self) -> None:
        self.info = self.ctx.resource("apps", "v1", "statefulsets")
        self.pod_info = self.ctx.resource("", "v1", "pods")
        self.rev_info = self.ctx.resource("apps", "v1", "controllerrevisions")
        self.pvc_info = self.ctx.resource("", "v1", "persistentvolumeclaims")
        self.sets = self.ctx.informer("apps", "v1", "statefulsets")
        self.pods = self.ctx.informer("", "v1", "pods")
        self.revisions = self.ctx.informer("apps", "v1", "controllerrevisions")
        self.claims = self.ctx.informer("", "v1", "persistentvolumeclaims")
        self.sets.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new),
                              on_delete=self.enqueue)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    # --- event handlers ---
    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        return resolve_controller_ref(self.sets, "StatefulSet", namespace, ref)

    def _sets_for_pod(self, pod: Obj) -> list[Obj]:
        return selecting(self.sets, pod)

    def _pod_added(self, pod: Obj) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self._pod_deleted(pod)
            return
        enqueue_owners_of(self, pod, self._resolve, self._sets_for_pod)

    def _pod_updated(self, old: Obj, cur: Obj) -> None:
        if cur["metadata"].get("resourceVersion") == old["metadata"].get("resourceVersion"):
            return
        enqueue_owners_of_updated_pod(self, old, cur, self._resolve, self._sets_for_pod)

    def _pod_deleted(self, pod: Obj) -> None:
        enqueue_controller_of(self, pod, self._resolve)

    def _record_pod_event(self, verb: str, sts: Obj, pod: Obj, err: Exception | None) -> None:
        name, set_name = pod["metadata"]["name"], sts["metadata"]["name"]
        if err is None:
            self.record_event(sts, "Normal", f"Successful{verb.title()}",
                              f"{verb} Pod {name} in StatefulSet {set_name} successful")
        else:
            self.record_event(sts, "Warning", f"Failed{verb.title()}",
                              f"{verb} Pod {name} in StatefulSet {set_name} failed error: {err}")

    def _record_claim_event(self, verb: str, sts: Obj, pod: Obj, claim: Obj, err: Exception | None) -> None:
        names = (claim["metadata"]["name"], pod["metadata"]["name"], sts["metadata"]["name"])
        if err is None:
            self.record_event(sts, "Normal", f"Successful{verb.title()}",
                              "{} Claim {} Pod {} in StatefulSet {} success".format(verb, *names))
        else:
            self.record_event(sts, "Warning", f"Failed{verb.title()}",
                              "{} Claim {} for Pod {} in StatefulSet {} failed error: {}".format(verb, *names, err))

    # --- sync ---
    async def reconcile(self, key: str) -> None:
        cached = self.sets.store.get(key)
        if cached is None:
            return
        sts = copy.deepcopy(cached)
        sts.setdefault("apiVersion", "apps/v1")
        sts.setdefault("kind", "StatefulSet")
        try:
            selector = LabelSelector.from_dict((sts.get("spec") or {}).get("selector"))
        except SelectorError as err:
            log.warning("statefulset %s: invalid selector: %s", key, err)
            return
        await self._adopt_orphan_revisions(sts, selector)
        pods = await self._claim_pods(sts, selector)
        status = await self._update_stateful_set(sts, pods, selector)
        min_ready = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready > 0 and status["availableReplicas"] != replicas_of(sts):
            self.queue.add_after(key, min_ready)

    def _list_revisions(self, sts: Obj, selector: LabelSelector) -> list[Obj]:
        """ListControllerRevisions: matching the selector, and ours or orphans."""
        uid = sts["metadata"]["uid"]
        return [r for r in self.revisions.store.by_index("namespace", sts["metadata"]["namespace"])
                if selector.matches(r["metadata"].get("labels"))
                and (controller_ref(r) or {"uid": uid}).get("uid") == uid]

    async def _adopt_orphan_revisions(self, sts: Obj, selector: LabelSelector) -> None:
        orphans = [r for r in self._list_revisions(sts, selector) if controller_ref(r) is None]
        if not orphans:
            return
        await recheck_owner(self.client, self.info, sts)
        for rev in orphans:
            await self.client.patch(self.rev_info, rev["metadata"]["name"], adopt_patch(sts, rev),
                                    sts["metadata"]["namespace"], patch_type="strategic")

    async def _claim_pods(self, sts: Obj, selector: LabelSelector) -> list[Obj]:
        candidates = self.pods.store.by_index("namespace", sts["metadata"]["namespace"])
        return await claim_objects(self.client, self.info, sts, self.pod_info, selector, candidates,
                                   lambda pod: is_member_of(sts, pod))

    async def _update_stateful_set(self, sts: Obj, pods: list[Obj], selector: LabelSelector) -> Obj:
        """UpdateStatefulSet: revisions, pods, status (even when the pods' round failed), then the
        history limit (even when something before it failed)."""
        revisions = sort_revisions(self._list_revisions(sts, selector))
        current: Obj | None = None
        update: Obj | None = None
        try:
            current, update, collision_count = await self._get_revisions(sts, revisions)
            status, error = await self._sync_pods(sts, current, update, collision_count, pods)
            await self._update_status(sts, status)
            if error is not None:
                raise error
        finally:
            await self._truncate_history(sts, pods, revisions, current, update)
        return status

    async def _get_revisions(self, sts: Obj, revisions: list[Obj]) -> tuple[Obj, Obj, int]:
        """getStatefulSetRevisions: the current and update revisions, creating or bumping one as needed."""
        collision_count = int((sts.get("status") or {}).get("collisionCount") or 0)
        update = new_revision(sts, next_revision(revisions), collision_count)
        equal = [r for r in revisions if equal_revision(r, update)]
        if equal and equal_revision(revisions[-1], equal[-1]):
            update = revisions[-1]  # the template has not changed
        elif equal:
            # An older template came back (a rollback): it becomes the newest revision again.
            update = await self._bump_revision(equal[-1], revision_number(update))
        else:
            update, collision_count = await self._create_revision(sts, update, collision_count)
        current_name = (sts.get("status") or {}).get("currentRevision")
        current = next((r for r in revisions if r["metadata"]["name"] == current_name), None) or update
        return current, update, collision_count

    async def _bump_revision(self, rev: Obj, number: int) -> Obj:
        rev = copy.deepcopy(rev)
        for _ in range(5):
            if revision_number(rev) == number:
                return rev
            rev["revision"] = number
            try:
                return await self.client.update(self.rev_info, rev)
            except APIError as err:
                if not err.conflict:
                    raise
                rev = await self.client.get(self.rev_info, rev["metadata"]["name"], rev["metadata"]["namespace"])
        raise APIError(409, {"reason": "Conflict", "message": "too many conflicts updating a revision"},
                       "PUT", rev["metadata"]["name"])

    async def _create_revision(self, sts: Obj, rev: Obj, collision_count: int) -> tuple[Obj, int]:
        """CreateControllerRevision: on a name clash with different data, bump the collision count."""
        namespace = sts["metadata"]["namespace"]
        body = copy.deepcopy(rev)
        while True:
            body["metadata"]["name"] = controller_revision_name(
                sts["metadata"]["name"], hash_controller_revision(rev["data"], collision_count))
            try:
                return await self.client.create(self.rev_info, body), collision_count
            except APIError as err:
                if not err.already_exists:
                    raise
            existing = await self.client.get(self.rev_info, body["metadata"]["name"], namespace)
            if existing.get("data") == body["data"]:
                return existing, collision_count
            collision_count += 1

    async def _truncate_history(self, sts: Obj, pods: list[Obj], revisions: list[Obj], current: Obj | None,
                                update: Obj | None) -> None:
        live = {r["metadata"]["name"] for r in (current, update) if r is not None}
        live.update(revision_of(p) for p in pods)
        history = [r for r in revisions if r["metadata"]["name"] not in live]
        limit = (sts.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        if limit < 0 or len(history) <= limit:
            return
        for rev in history[:len(history) - limit]:
            try:
                await self.client.delete(self.rev_info, rev["metadata"]["name"], rev["metadata"]["namespace"])
            except APIError as err:
                if not err.not_found:
                    raise

    # --- pods ---
    async def _sync_pods(self, sts: Obj, current: Obj, update: Obj, collision_count: int,
                         pods: list[Obj]) -> tuple[Obj, Exception | None]:
        """updateStatefulSet: returns the status to record and the error that stopped this round, if any."""
        current_set = apply_revision(sts, current)
        update_set = apply_revision(sts, update)
        spec = sts.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        cur_name, upd_name = current["metadata"]["name"], update["metadata"]["name"]
        status: Obj = {"observedGeneration": sts["metadata"].get("generation", 0), "currentRevision": cur_name,
                       "updateRevision": upd_name, "collisionCount": collision_count}
        status.update(compute_replica_status([pods], min_ready, cur_name, upd_name))

        start, count = start_ordinal(sts), replicas_of(sts)
        replicas: list[Obj | None] = [None] * count
        condemned: list[Obj] = []
        for pod in pods:
            ordinal = ordinal_of(pod)
            if start <= ordinal < start + count:
                replicas[ordinal - start] = pod
            elif ordinal >= 0:
                condemned.append(pod)
        slots: list[Obj] = [pod if pod is not None else
                            new_versioned_pod(current_set, update_set, cur_name, upd_name, start + i)
                            for i, pod in enumerate(replicas)]
        condemned.sort(key=ordinal_of, reverse=True)
        first_unavailable = next((p for p in slots if is_unavailable(p, min_ready)), None)
        if first_unavailable is None:
            first_unavailable = next((p for p in reversed(condemned) if is_unavailable(p, min_ready)), None)

        if sts["metadata"].get("deletionTimestamp"):
            return status, None
        monotonic = spec.get("podManagementPolicy") != "Parallel"

        def refresh() -> None:
            status.update(compute_replica_status([slots, condemned], min_ready, cur_name, upd_name))

        try:
            if await self._run_for_all(slots, lambda i: self._process_replica(sts, update_set, monotonic,
                                                                               slots, i), monotonic):
                refresh()
                return status, None

            async def fix_claims(i: int) -> bool:
                if not await self._claims_match_policy(update_set, condemned[i]):
                    await self._update_claims_for_policy(update_set, condemned[i])
                return False

            if await self._run_for_all(condemned, fix_claims, monotonic):
                refresh()
                return status, None
            if await self._run_for_all(condemned, lambda i: self._process_condemned(
                    sts, first_unavailable, monotonic, condemned, i), monotonic):
                refresh()
                return status, None
        except Exception as err:  # the status is recorded first, then the round is retried, as upstream
            refresh()
            return status, err
        refresh()
        if ((spec.get("updateStrategy") or {}).get("type")) == "OnDelete":
            return status, None
        try:
            await self._rolling_update(sts, slots, upd_name, status)
        except APIError as err:
            return status, err
        return status, None

    async def _run_for_all(self, items: list[Obj], fn: Callable[[int], Awaitable[bool]], monotonic: bool) -> bool:
        """runForAll: in order, stopping at the first step that says so; or slow-start batches in parallel."""
        if monotonic:
            for i in range(len(items)):
                if await fn(i):
                    return True
            return False
        _, error = await slow_start_batch(len(items), 1, fn, MAX_BATCH_SIZE)
        if error is not None:
            raise error
        return False

    async def _process_replica(self, sts: Obj, update_set: Obj, monotonic: bool, slots: list[Obj],
                               i: int) -> bool:
        pod = slots[i]
        min_ready = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        # Failed and Succeeded pods are deleted; a new one comes once the old one is gone.
        if _phase(pod) in ("Failed", "Succeeded"):
            if not is_terminating(pod):
                await self._delete_pod(sts, pod)
            return True
        if not is_created(pod):
            if await self._pod_claim_is_stale(sts, pod):
                return True  # the claim still belongs to the previous pod: wait for the garbage collector
            # As upstream, the rest of this round goes on with the uncreated pod (the cache has not seen it).
            await self._create_pod(sts, pod)
            if monotonic:
                return True
        if _phase(pod) == "Pending":
            await self._create_claims(sts, pod)
            await self._update_claims_for_policy(sts, pod)
        if monotonic and (is_terminating(pod) or not is_running_and_ready(pod)
                          or not is_pod_available(pod, min_ready)):
            return True
        retention_ok = await self._claims_match_policy(update_set, pod)
        if identity_matches(sts, pod) and storage_matches(sts, pod) and retention_ok:
            return False
        await self._update_pod(update_set, copy.deepcopy(pod))
        return False

    async def _process_condemned(self, sts: Obj, first_unavailable: Obj | None, monotonic: bool,
                                 condemned: list[Obj], i: int) -> bool:
        pod = condemned[i]
        min_ready = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        if is_terminating(pod):
            return monotonic  # OrderedReady waits for the pod to be gone before the next one
        if monotonic and pod is not first_unavailable and (not is_running_and_ready(pod)
                                                          or not is_pod_available(pod, min_ready)):
            return True
        await self._delete_pod(sts, pod)
        return True

    async def _rolling_update(self, sts: Obj, slots: list[Obj], update_revision: str, status: Obj) -> None:
        """updateStatefulSetAfterInvariantEstablished (MaxUnavailableStatefulSet): from the highest ordinal
        down to the partition, delete out-of-date pods while at most maxUnavailable are unavailable."""
        spec = sts.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate")
        partition = int((rolling or {}).get("partition") or 0)
        allowed = max_unavailable(sts, replicas_of(sts)) if rolling is not None else 1
        unavailable = sum(1 for p in slots if is_unavailable(p, min_ready))
        if unavailable > allowed:
            return
        to_delete = allowed - unavailable
        deleted = 0
        target = len(slots) - 1
        while target >= partition and deleted < to_delete:
            pod = slots[target]
            if revision_of(pod) != update_revision and not is_terminating(pod):
                try:
                    await self._delete_pod(sts, pod)
                except APIError as err:
                    if not err.not_found:
                        raise
                deleted += 1
                status["currentReplicas"] -= 1
            target -= 1

    async def _create_pod(self, sts: Obj, pod: Obj) -> Obj:
        """CreateStatefulPod: the claims first, then the pod, then the claims' owner references."""
        try:
            await self._create_claims(sts, pod)
        except APIError as err:
            self._record_pod_event("create", sts, pod, err)
            raise
        try:
            created = await self.client.create(self.pod_info, pod)
        except APIError as err:
            if err.already_exists:
                raise  # the cache is behind: look again later, no event
            self._record_pod_event("create", sts, pod, err)
            raise
        try:
            await self._update_claims_for_policy(sts, created)
        except APIError as err:
            self._record_pod_event("update", sts, created, err)
            raise
        self._record_pod_event("create", sts, created, None)
        return created

    async def _delete_pod(self, sts: Obj, pod: Obj) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete(self.pod_info, meta["name"], meta["namespace"])
        except APIError as err:
            self._record_pod_event("delete", sts, pod, err)
            raise
        self._record_pod_event("delete", sts, pod, None)

    async def _update_pod(self, sts: Obj, pod: Obj) -> None:
        """UpdateStatefulPod: restore identity, storage and claim ownership; retry on conflicts."""
        attempted = False
        error: Exception | None = None
        for _ in range(5):
            consistent = True
            if not identity_matches(sts, pod):
                update_identity(sts, pod)
                consistent = False
            if not storage_matches(sts, pod):
                update_storage(sts, pod)
                consistent = False
                await self._create_claims(sts, pod)
            if not await self._claims_match_policy(sts, pod):
                await self._update_claims_for_policy(sts, pod)
                consistent = False
            if consistent:
                return
            attempted = True
            try:
                await self.client.update(self.pod_info, pod)
                error = None
                break
            except APIError as err:
                error = err
                if not err.conflict:
                    break
                pod = await self.client.get(self.pod_info, pod["metadata"]["name"], pod["metadata"]["namespace"])
        if attempted:
            self._record_pod_event("update", sts, pod, error)
        if error is not None:
            raise error

    # --- claims ---
    def _cached_claim(self, namespace: str, name: str) -> Obj | None:
        return self.claims.store.get(f"{namespace}/{name}")

    async def _create_claims(self, sts: Obj, pod: Obj) -> None:
        """createPersistentVolumeClaims: each missing claim; one being deleted is an error for now."""
        errors: list[str] = []
        for claim in claims_for(sts, ordinal_of(pod)).values():
            meta = claim["metadata"]
            existing = self._cached_claim(meta["namespace"], meta["name"])
            if existing is None:
                try:
                    await self.client.create(self.pvc_info, claim)
                except APIError as err:
                    if not err.already_exists:
                        errors.append(f"failed to create PVC {meta['name']}: {err}")
                        self._record_claim_event("create", sts, pod, claim, err)
                    continue
                self._record_claim_event("create", sts, pod, claim, None)
            elif existing["metadata"].get("deletionTimestamp"):
                errors.append(f"pvc {meta['name']} is being deleted")
        if errors:
            raise APIError(500, {"reason": "InternalError", "message": "; ".join(errors)}, "POST",
                           "persistentvolumeclaims")

    async def _pod_claim_is_stale(self, sts: Obj, pod: Obj) -> bool:
        when_scaled, _ = retention_policy(sts)
        if when_scaled == "Retain":
            return False  # claims are meant to be reused
        for claim in claims_for(sts, ordinal_of(pod)).values():
            existing = self._cached_claim(claim["metadata"]["namespace"], claim["metadata"]["name"])
            if existing is not None and has_stale_owner_ref(existing, pod):
                return True
        return False

    async def _claims_match_policy(self, sts: Obj, pod: Obj) -> bool:
        for claim in claims_for(sts, ordinal_of(pod)).values():
            existing = self._cached_claim(claim["metadata"]["namespace"], claim["metadata"]["name"])
            if existing is not None and not claim_owner_up_to_date(existing, sts, pod):
                return False
        return True

    async def _update_claims_for_policy(self, sts: Obj, pod: Obj) -> None:
        for claim in claims_for(sts, ordinal_of(pod)).values():
            existing = self._cached_claim(claim["metadata"]["namespace"], claim["metadata"]["name"])
            if existing is None:
                continue  # picked up once the cache has it
            if has_unexpected_controller(existing, sts, pod):
                self.record_event(sts, "Warning", "FailedUpdate",
                                  f"PersistentVolumeClaim {existing['metadata']['name']} has a conflicting "
                                  "OwnerReference that acts as a managing controller, the retention policy is "
                                  "ignored for this claim")
            clone = copy.deepcopy(existing)
            if update_claim_owner_refs(clone, sts, pod):
                try:
                    await self.client.update(self.pvc_info, clone)
                except APIError as err:
                    raise APIError(err.status, {**err.body, "message": f"could not update claim "
                                                f"{clone['metadata']['name']} for delete policy ownerRefs: "
                                                f"{err}"}, "PUT", clone["metadata"]["name"]) from err

    # --- status ---
    async def _update_status(self, sts: Obj, status: Obj) -> None:
        complete_rolling_update(sts, status)
        if not inconsistent_status(sts, status):
            return
        namespace, name = split_key(object_key(sts))
        obj = copy.deepcopy(sts)
        for attempt in range(10):
            obj["status"] = wire_status(status, obj.get("status") or {})
            try:
                await self.client.update(self.info, obj, "status")
                return
            except APIError as err:
                if err.not_found:
                    return
                if not err.conflict or attempt == 9:
                    raise
                obj = await self.client.get(self.info, name, namespace)

