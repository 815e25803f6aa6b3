"""ReplicaSet and ReplicationController controllers (pkg/controller/replicaset, pkg/controller/replication).

One implementation serves both kinds, as upstream's ReplicationManager wraps the ReplicaSet controller:
keep spec.replicas active pods matching the selector, adopting orphans and releasing pods that stop
matching; expectations stop a second round of creations while the pod informer catches up with the
first; pods are created in slow-start batches and deleted in upstream's ActivePods ranking.
Also home of the pod, controller-ref and event-routing helpers the other workload controllers share, and
of PodExpectationsController, the ground the DaemonSet controller shares with this one.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cmp_to_key
from typing import Any

from pocketkube.api.kinds import ResourceInfo
from pocketkube.api.selectors import LabelSelector, SelectorError
from pocketkube.client.informer import object_key
from pocketkube.client.rest import APIError, Client
from pocketkube.controllers.base import Controller, ControllerContext, resolve_controller_ref, split_key
from pocketkube.controllers.deployment_util import format_time, now, parse_time

log = logging.getLogger(__name__)
Obj = dict[str, Any]

BURST_REPLICAS = 500
SLOW_START_INITIAL_BATCH = 1
EXPECTATIONS_TIMEOUT = 300.0
STATUS_UPDATE_RETRIES = 1  # statusUpdateRetries (ReplicaSet), StatusUpdateRetries (DaemonSet)
NAMESPACE_TERMINATING_CAUSE = "NamespaceTerminating"
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


# --- expectations ------------------------------------------------------------------------
@dataclass
class _Expectation:
    adds: int = 0
    deletes: int = 0
    timestamp: float = field(default_factory=time.monotonic)
    pending_deletes: set[str] = field(default_factory=set)


class ControllerExpectations:
    """UIDTrackingControllerExpectations: what a controller asked for and has not yet seen in its cache.

    A controller syncs (creates or deletes) only when its last round is fully observed, or when the
    expectations are older than five minutes (a lost watch event must not wedge it forever).
    """

    def __init__(self, ttl: float = EXPECTATIONS_TIMEOUT) -> None:
        self.ttl = ttl
        self._store: dict[str, _Expectation] = {}

    def satisfied(self, key: str) -> bool:
        exp = self._store.get(key)
        if exp is None:
            return True
        return (exp.adds <= 0 and exp.deletes <= 0) or time.monotonic() - exp.timestamp > self.ttl

    def set_expectations(self, key: str, creations: int, deletion_pod_keys: list[str]) -> None:
        """SetExpectations: one round's creations and deletions (the deleted pods by key) in one record."""
        self._store[key] = _Expectation(adds=creations, deletes=len(deletion_pod_keys),
                                        pending_deletes=set(deletion_pod_keys))

    def expect_creations(self, key: str, count: int) -> None:
        self.set_expectations(key, count, [])

    def expect_deletions(self, key: str, pod_keys: list[str]) -> None:
        self.set_expectations(key, 0, pod_keys)

    def creation_observed(self, key: str) -> None:
        exp = self._store.get(key)
        if exp is not None:
            exp.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        exp = self._store.get(key)
        if exp is not None and pod_key in exp.pending_deletes:
            exp.pending_deletes.discard(pod_key)
            exp.deletes -= 1

    def delete(self, key: str) -> None:
        self._store.pop(key, None)


# --- pods ----------------------------------------------------------------------------------
def is_pod_active(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp")


def is_pod_terminating(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and bool(pod["metadata"].get("deletionTimestamp"))


def ready_condition(pod: Obj) -> Obj | None:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)


def is_pod_ready(pod: Obj) -> bool:
    cond = ready_condition(pod)
    return cond is not None and cond.get("status") == "True"


def is_pod_available(pod: Obj, min_ready_seconds: int, at: datetime | None = None) -> bool:
    """Ready, and (with minReadySeconds) Ready since longer than that, by the condition's transition time."""
    if not is_pod_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))
    return since is not None and since.timestamp() + min_ready_seconds < (at or now()).timestamp()


def _ready_time(pod: Obj) -> datetime | None:
    return parse_time((ready_condition(pod) or {}).get("lastTransitionTime")) if is_pod_ready(pod) else None


def _max_restarts(pod: Obj) -> int:
    status = pod.get("status") or {}
    statuses = list(status.get("containerStatuses") or [])
    # Restartable init containers (sidecars) count too, as upstream.
    sidecars = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []
                if c.get("restartPolicy") == "Always"}
    statuses += [s for s in status.get("initContainerStatuses") or [] if s.get("name") in sidecars]
    return max((int(s.get("restartCount") or 0) for s in statuses), default=0)


def _deletion_cost(pod: Obj) -> int:
    value = ((pod["metadata"].get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost"))
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _log_rank_diff(t1: datetime, t2: datetime, at: datetime) -> int:
    """logarithmicRankDiff: compare ages by the power of two of their nanoseconds."""
    def rank(t: datetime) -> int:
        nanos = (at - t).total_seconds() * 1e9
        return int(math.log2(nanos)) if nanos > 0 else -1
    return rank(t1) - rank(t2)


def _after_or_zero(t1: datetime | None, t2: datetime | None) -> bool:
    """Zero times sort first, then later times first."""
    if t1 is None or t2 is None:
        return t1 is None
    return t1 > t2


def rank_pods_for_deletion(pods: list[Obj], related: list[Obj], at: datetime | None = None) -> list[Obj]:
    """ActivePodsWithRanks (with LogarithmicScaleDown and PodDeletionCost on, as upstream's defaults):
    the pods to delete first come first. Rank: active related pods sharing the node (doubled up first)."""
    at = at or now()
    on_node: dict[str, int] = {}
    for pod in related:
        if is_pod_active(pod):
            node = (pod.get("spec") or {}).get("nodeName", "")
            on_node[node] = on_node.get(node, 0) + 1

    def node_of(pod: Obj) -> str:
        return (pod.get("spec") or {}).get("nodeName", "") or ""

    def less(a: Obj, b: Obj) -> bool:
        na, nb = node_of(a), node_of(b)
        if na != nb and (not na or not nb):
            return not na
        pa = _PHASE_ORDINAL.get((a.get("status") or {}).get("phase", ""), -1)
        pb = _PHASE_ORDINAL.get((b.get("status") or {}).get("phase", ""), -1)
        if pa != pb:
            return pa < pb
        if is_pod_ready(a) != is_pod_ready(b):
            return not is_pod_ready(a)
        if _deletion_cost(a) != _deletion_cost(b):
            return _deletion_cost(a) < _deletion_cost(b)
        ra, rb = on_node.get(na, 0), on_node.get(nb, 0)
        if ra != rb:
            return ra > rb
        if is_pod_ready(a) and is_pod_ready(b):
            ta, tb = _ready_time(a), _ready_time(b)
            if ta != tb:
                if ta is None or tb is None:
                    return _after_or_zero(ta, tb)
                diff = _log_rank_diff(ta, tb, at)
                return a["metadata"].get("uid", "") < b["metadata"].get("uid", "") if diff == 0 else diff < 0
        restarts_a, restarts_b = _max_restarts(a), _max_restarts(b)
        if restarts_a != restarts_b:
            return restarts_a > restarts_b
        ca, cb = parse_time(a["metadata"].get("creationTimestamp")), parse_time(b["metadata"].get("creationTimestamp"))
        if ca != cb:
            if ca is None or cb is None:
                return _after_or_zero(ca, cb)
            diff = _log_rank_diff(ca, cb, at)
            return a["metadata"].get("uid", "") < b["metadata"].get("uid", "") if diff == 0 else diff < 0
        return False

    def compare(a: Obj, b: Obj) -> int:
        return -1 if less(a, b) else (1 if less(b, a) else 0)

    return sorted(pods, key=cmp_to_key(compare))


# --- controller references ---------------------------------------------------------------
def controller_ref(obj: Obj) -> Obj | None:
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


CONTROLLER_INDEX = "controller"


def by_controller(obj: Obj) -> list[str]:
    """Index value: the controller's uid, or `orphan:<namespace>` for objects without a controller, so a
    sync reads its own pods and the adoptable ones instead of the whole namespace."""
    ref = controller_ref(obj)
    if ref is not None:
        return [ref.get("uid", "")]
    return [f"orphan:{obj['metadata'].get('namespace', '')}"]


def new_controller_ref(owner: Obj) -> Obj:
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def adopt_patch(owner: Obj, obj: Obj) -> Obj:
    """The strategic merge patch upstream's ref managers send (the uid guards against a recreated object)."""
    return {"metadata": {"ownerReferences": [new_controller_ref(owner)], "uid": obj["metadata"]["uid"]}}


def release_patch(owner: Obj, obj: Obj) -> Obj:
    return {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner["metadata"]["uid"]}],
                         "uid": obj["metadata"]["uid"]}}


async def claim_objects(client: Client, owner_info: ResourceInfo, owner: Obj, candidate_info: ResourceInfo,
                        selector: LabelSelector, candidates: list[Obj],
                        also_matches: Callable[[Obj], bool] | None = None) -> list[Obj]:
    """ClaimPods, ClaimReplicaSets, ClaimControllerRevisions (BaseControllerRefManager.ClaimObject over a
    list): of the candidates (of candidate_info) that the selector and also_matches accept, keep ours and
    adopt the orphans (after re-checking with the API that the owner may adopt); release ours that no
    longer match."""
    owner_meta = owner["metadata"]
    namespace = owner_meta["namespace"]

    def matches(obj: Obj) -> bool:
        return selector.matches(obj["metadata"].get("labels")) and (also_matches is None or also_matches(obj))

    async def patch(name: str, body: Obj) -> Obj:
        return await client.patch(candidate_info, name, body, namespace, patch_type="strategic")

    deleting = bool(owner_meta.get("deletionTimestamp"))
    claimed: list[Obj] = []
    adopt_checked = False
    errors: list[APIError] = []
    for obj in candidates:
        ref = controller_ref(obj)
        try:
            if ref is not None:
                if ref.get("uid") != owner_meta["uid"]:
                    continue
                if matches(obj):
                    claimed.append(obj)
                elif not deleting:
                    await patch(obj["metadata"]["name"], release_patch(owner, obj))
                continue
            if deleting or not matches(obj) or obj["metadata"].get("deletionTimestamp"):
                continue
            if owner_meta.get("namespace") and owner_meta["namespace"] != obj["metadata"].get("namespace"):
                continue
            if not adopt_checked:
                await recheck_owner(client, owner_info, owner)
                adopt_checked = True
            claimed.append(await patch(obj["metadata"]["name"], adopt_patch(owner, obj)))
        except APIError as err:
            if not err.not_found:
                errors.append(err)
    if errors:
        raise errors[0]
    return claimed


async def recheck_owner(client: Client, info: ResourceInfo, owner: Obj) -> None:
    """RecheckDeletionTimestamp: adopt only if a fresh read shows the same, live owner."""
    meta = owner["metadata"]
    fresh = await client.get(info, meta["name"], meta.get("namespace", ""))
    if fresh["metadata"].get("uid") != meta["uid"]:
        raise APIError(409, {"reason": "Conflict", "message": f"original {owner.get('kind')} "
                             f"{meta.get('namespace')}/{meta['name']} is gone: got uid "
                             f"{fresh['metadata'].get('uid')}, wanted {meta['uid']}"}, "GET", meta["name"])
    if fresh["metadata"].get("deletionTimestamp"):
        raise APIError(409, {"reason": "Conflict", "message": f"{owner.get('kind')} {meta.get('namespace')}/"
                             f"{meta['name']} has just been deleted at {fresh['metadata']['deletionTimestamp']}"},
                       "GET", meta["name"])


def has_status_cause(err: APIError, cause_type: str) -> bool:
    return any(c.get("type") == cause_type for c in (err.body.get("details") or {}).get("causes") or [])


def pod_from_template(template: Obj, owner: Obj) -> Obj:
    """GetPodFromTemplate: labels, annotations and finalizers from the template, generateName `<owner>-`."""
    tmeta = template.get("metadata") or {}
    meta: Obj = {"generateName": f"{owner['metadata']['name']}-", "namespace": owner["metadata"]["namespace"],
                 "ownerReferences": [new_controller_ref(owner)]}
    for key in ("labels", "annotations", "finalizers"):
        if tmeta.get(key):
            meta[key] = copy.deepcopy(tmeta[key])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template.get("spec") or {})}


async def slow_start_batch(count: int, initial: int, fn: Callable[[int], Awaitable[object]],
                           max_batch: int | None = None) -> tuple[int, BaseException | None]:
    """Run fn(0) .. fn(count - 1) in concurrent batches of initial, then twice as many each time (at most
    max_batch); stop after the first batch with a failure, so a controller that cannot create (quota,
    admission) does not hammer the API with all of them. Returns the successes and the first failure."""
    position, successes = 0, 0
    batch = min(count, initial)
    while batch > 0:
        results = await asyncio.gather(*(fn(i) for i in range(position, position + batch)),
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        successes += batch - len(failures)
        if failures:
            return successes, failures[0]
        position += batch
        batch = min(2 * batch, count - position)
        if max_batch is not None:
            batch = min(batch, max_batch)
    return successes, None


# --- routing an owned object's events to its owners --------------------------------------
# `resolve(namespace, controller reference)` is the owner the controller's informer holds (same uid);
# `matching(obj)` the owners whose selector selects obj.
Resolver = Callable[[str, Obj | None], Obj | None]


def enqueue_controller_of(controller: Controller, obj: Obj, resolve: Resolver) -> Obj | None:
    """Enqueue (and return) the object's controller owner: upstream's deletePod, deleteReplicaSet."""
    owner = resolve(obj["metadata"].get("namespace", ""), controller_ref(obj))
    if owner is not None:
        controller.enqueue(owner)
    return owner


def enqueue_owners_of(controller: Controller, obj: Obj, resolve: Resolver,
                      matching: Callable[[Obj], list[Obj]]) -> Obj | None:
    """Route a new object (upstream's addPod, addReplicaSet) to its controller owner, returned for the
    caller's expectations; an orphan to every owner whose selector matches it, which may adopt it."""
    if controller_ref(obj) is not None:
        return enqueue_controller_of(controller, obj, resolve)
    for owner in matching(obj):
        controller.enqueue(owner)
    return None


def enqueue_owners_of_updated(controller: Controller, old: Obj, cur: Obj, resolve: Resolver,
                              matching: Callable[[Obj], list[Obj]]) -> Obj | None:
    """Route a change (upstream's updatePod, updateReplicaSet): the old and the new controller owner (the new
    one returned); for an orphan whose labels or owner changed, every owner whose selector now matches it."""
    cur_ref, old_ref = controller_ref(cur), controller_ref(old)
    namespace = cur["metadata"]["namespace"]
    if cur_ref != old_ref and old_ref is not None:
        previous = resolve(namespace, old_ref)
        if previous is not None:
            controller.enqueue(previous)
    if cur_ref is not None:
        owner = resolve(namespace, cur_ref)
        if owner is not None:
            controller.enqueue(owner)
        return owner
    if cur_ref != old_ref or cur["metadata"].get("labels") != old["metadata"].get("labels"):
        for owner in matching(cur):
            controller.enqueue(owner)
    return None


def enqueue_owners_of_updated_pod(controller: Controller, old: Obj, cur: Obj, resolve: Resolver,
                                  matching: Callable[[Obj], list[Obj]]) -> None:
    """updatePod's routing: enqueue_owners_of_updated, and an owner with minReadySeconds again once the pod
    may count as available."""
    owner = enqueue_owners_of_updated(controller, old, cur, resolve, matching)
    if owner is None:
        return
    min_ready = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
    if min_ready > 0 and not is_pod_ready(old) and is_pod_ready(cur):
        # Look again once the pod has been ready long enough to count as available.
        controller.queue.add_after(object_key(owner), min_ready + 1)


# --- the controllers -----------------------------------------------------------------------
class PodExpectationsController(Controller):
    """What the ReplicaSet (and RC) and DaemonSet controllers share: they create and delete their objects'
    pods themselves, with upstream's RealPodControl events, and keep expectations of those pods, so that a
    sync never acts again on pods the informer has not shown yet.

    Subclasses set `info` (their own resource) in `setup`, resolve controller references to their objects
    and name the objects that select an orphan pod; they wire `_owner_deleted`, `_pod_added`, their own
    `_pod_updated` (upstream's differ per kind) and `_pod_deleted` to the informers."""

    info: ResourceInfo

    def __init__(self, ctx: ControllerContext) -> None:
        self.pod_info = ctx.resource("", "v1", "pods")
        self.expectations = ControllerExpectations()
        self.burst_replicas = BURST_REPLICAS
        super().__init__(ctx)

    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        raise NotImplementedError

    def _matching_owners(self, pod: Obj) -> list[Obj]:
        raise NotImplementedError

    # --- event handlers ---
    def _owner_deleted(self, owner: Obj) -> None:
        key = object_key(owner)
        self.expectations.delete(key)
        self.queue.add(key)

    def _pod_added(self, pod: Obj) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            # A restarted controller sees pods already being deleted as new ones: count them as gone.
            self._pod_deleted(pod)
            return
        owner = enqueue_owners_of(self, pod, self._resolve, self._matching_owners)
        if owner is not None:
            self.expectations.creation_observed(object_key(owner))

    def _pod_deleted(self, pod: Obj) -> None:
        owner = enqueue_controller_of(self, pod, self._resolve)
        if owner is not None:
            self.expectations.deletion_observed(object_key(owner), object_key(pod))

    # --- pods (RealPodControl) ---
    async def _create_pods(self, key: str, count: int,
                           create: Callable[[int], Awaitable[None]]) -> BaseException | None:
        """create(0) .. create(count - 1) in slow-start batches; the creations that failed or never ran will
        never be observed, so they are no longer expected. Returns the first failure."""
        successes, error = await slow_start_batch(count, SLOW_START_INITIAL_BATCH, create)
        for _ in range(count - successes):
            self.expectations.creation_observed(key)
        return error

    async def _create_pod(self, template: Obj, owner: Obj) -> None:
        """CreatePods: a namespace being torn down refuses every creation, which is neither a failure (the
        callers upstream ignore it) nor worth an event."""
        if not ((template.get("metadata") or {}).get("labels")):
            raise APIError(422, {"reason": "Invalid", "message": "unable to create pods, no labels"},
                           "POST", "pods")
        try:
            pod = await self.client.create(self.pod_info, pod_from_template(template, owner))
        except APIError as err:
            if has_status_cause(err, NAMESPACE_TERMINATING_CAUSE):
                return
            self.record_event(owner, "Warning", "FailedCreate", f"Error creating: {err}")
            raise
        self.record_event(owner, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")

    async def _delete_pod(self, owner: Obj, name: str, key: str) -> None:
        """DeletePod, in the owner's namespace; a pod already gone is no failure."""
        namespace = owner["metadata"]["namespace"]
        try:
            await self.client.delete(self.pod_info, name, namespace)
        except APIError as err:
            # The deletion will never be observed as ours: stop expecting it.
            self.expectations.deletion_observed(key, f"{namespace}/{name}")
            if err.not_found:
                return
            self.record_event(owner, "Warning", "FailedDelete", f"Error deleting: {err}")
            raise
        self.record_event(owner, "Normal", "SuccessfulDelete", f"Deleted pod: {name}")

    # --- status ---
    async def _write_status(self, obj: Obj, set_status: Callable[[Obj], bool]) -> Obj:
        """The write of updateReplicaSetStatus and storeDaemonSetStatus: set_status(obj) puts the new status
        on obj (False: nothing to write); a failed write is tried again on a fresh read, STATUS_UPDATE_RETRIES
        times. An object deleted meanwhile is no error. Returns the object as written, else as last seen."""
        meta = obj["metadata"]
        for attempt in range(STATUS_UPDATE_RETRIES + 1):
            if not set_status(obj):
                return obj
            try:
                return await self.client.update(self.info, obj, "status")
            except APIError as err:
                if err.not_found:
                    return obj
                if attempt == STATUS_UPDATE_RETRIES:
                    raise
            obj = await self.client.get(self.info, meta["name"], meta["namespace"])
        return obj


class ReplicaSetController(PodExpectationsController):
    """apps/v1 ReplicaSet; ReplicationControllerController reuses everything with a map selector."""

    name = "replicaset"
    group, version, plural, kind = "apps", "v1", "replicasets", "ReplicaSet"
    workers = 4

    def setup(self) -> None:
        self.info = self.ctx.resource(self.group, self.version, self.plural)
        self.owners = self.ctx.informer(self.group, self.version, self.plural)
        self.pods = self.ctx.informer("", "v1", "pods")
        self.pods.store.add_indexer(CONTROLLER_INDEX, by_controller)
        self.owners.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new),
                                on_delete=self._owner_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    # --- selectors ---
    def selector(self, owner: Obj) -> LabelSelector:
        return LabelSelector.from_dict((owner.get("spec") or {}).get("selector"))

    def _owner_matches_pod(self, owner: Obj, pod: Obj) -> bool:
        try:
            selector = self.selector(owner)
        except SelectorError:
            return False
        return not selector.empty and selector.matches(pod["metadata"].get("labels"))

    # --- event handlers ---
    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        return resolve_controller_ref(self.owners, self.kind, namespace, ref)

    def _matching_owners(self, pod: Obj) -> list[Obj]:
        namespace = pod["metadata"].get("namespace", "")
        return [owner for owner in self.owners.store.by_index("namespace", namespace)
                if self._owner_matches_pod(owner, pod)]

    def _pod_updated(self, old: Obj, cur: Obj) -> None:
        if cur["metadata"].get("resourceVersion") == old["metadata"].get("resourceVersion"):
            return
        label_changed = cur["metadata"].get("labels") != old["metadata"].get("labels")
        if cur["metadata"].get("deletionTimestamp"):
            self._pod_deleted(cur)
            if label_changed:
                self._pod_deleted(old)
            return
        enqueue_owners_of_updated_pod(self, old, cur, self._resolve, self._matching_owners)

    # --- reconcile ---
    async def reconcile(self, key: str) -> None:
        owner = self.owners.store.get(key)
        if owner is None:
            self.expectations.delete(key)
            return
        owner = copy.deepcopy(owner)
        owner.setdefault("apiVersion", self.info.group_version)
        owner.setdefault("kind", self.kind)
        needs_sync = self.expectations.satisfied(key)
        selector = self.selector(owner)
        namespace, _ = split_key(key)
        # Only ours and the orphans can be claimed: pods of other controllers are never looked at.
        owned = [p for p in self.pods.store.by_index(CONTROLLER_INDEX, owner["metadata"]["uid"])
                 if p["metadata"].get("namespace") == namespace]
        orphans = self.pods.store.by_index(CONTROLLER_INDEX, f"orphan:{namespace}")
        pods = await claim_objects(self.client, self.info, owner, self.pod_info, selector,
                                   [p for p in (*owned, *orphans) if is_pod_active(p)])
        # terminatingReplicas (DeploymentReplicaSetTerminatingReplicas, on by default since 1.35): our
        # pods that are going away but still running.
        terminating = sum(1 for p in owned if is_pod_terminating(p) and selector.matches(p["metadata"].get("labels")))
        manage_error: Exception | None = None
        if needs_sync and not owner["metadata"].get("deletionTimestamp"):
            try:
                await self._manage_replicas(owner, pods, key)
            except APIError as err:
                manage_error = err
        new_status = self._calculate_status(owner, pods, manage_error)
        new_status["terminatingReplicas"] = terminating
        updated = await self._update_status(owner, new_status)
        spec = updated.get("spec") or {}
        status = updated.get("status") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        # Clock skew backstop, as upstream: look again after minReadySeconds while pods ripen.
        if manage_error is None and min_ready > 0 and status.get("readyReplicas", 0) == spec.get("replicas") \
                and status.get("availableReplicas", 0) != spec.get("replicas"):
            self.queue.add_after(key, min_ready)
        if manage_error is not None:
            raise manage_error

    async def _manage_replicas(self, owner: Obj, pods: list[Obj], key: str) -> None:
        diff = len(pods) - int((owner.get("spec") or {}).get("replicas", 1))
        if diff < 0:
            count = min(-diff, self.burst_replicas)
            self.expectations.expect_creations(key, count)
            template = (owner.get("spec") or {}).get("template") or {}
            error = await self._create_pods(key, count, lambda _: self._create_pod(template, owner))
            if error is not None:
                raise error
        elif diff > 0:
            count = min(diff, self.burst_replicas)
            victims = pods
            if count < len(pods):
                victims = rank_pods_for_deletion(pods, self._related_pods(owner))
            victims = victims[:count]
            self.expectations.expect_deletions(key, [object_key(p) for p in victims])
            results = await asyncio.gather(*(self._delete_pod(owner, p["metadata"]["name"], key)
                                             for p in victims), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise failures[0]

    def _related_pods(self, owner: Obj) -> list[Obj]:
        """getIndirectlyRelatedPods: pods of every sibling under the same controller (a Deployment's RSs)."""
        ref = controller_ref(owner)
        owners = [owner]
        if ref is not None:
            owners = [o for o in self.owners.store.by_index("owner", ref["uid"])
                      if (controller_ref(o) or {}).get("uid") == ref["uid"]]
        related: dict[str, Obj] = {}
        for o in owners:
            for pod in self.pods.store.by_index("owner", o["metadata"]["uid"]):
                related[pod["metadata"]["uid"]] = pod
        return list(related.values())

    # --- status ---
    def _calculate_status(self, owner: Obj, pods: list[Obj], manage_error: Exception | None) -> Obj:
        spec = owner.get("spec") or {}
        status = copy.deepcopy(owner.get("status") or {})
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        at = now()
        fully_labeled = ready = available = 0
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in template_labels.items()):
                fully_labeled += 1
            if is_pod_ready(pod):
                ready += 1
                if is_pod_available(pod, min_ready, at):
                    available += 1
        conditions = [c for c in status.get("conditions") or []]
        failure = next((c for c in conditions if c.get("type") == "ReplicaFailure"), None)
        if manage_error is not None and failure is None:
            diff = len(pods) - int(spec.get("replicas", 1))
            reason = "FailedCreate" if diff < 0 else ("FailedDelete" if diff > 0 else "")
            conditions.append({"type": "ReplicaFailure", "status": "True", "lastTransitionTime": format_time(at),
                               "reason": reason, "message": str(manage_error)})
        elif manage_error is None and failure is not None:
            conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        status["conditions"] = conditions
        status["replicas"] = len(pods)
        status["fullyLabeledReplicas"] = fully_labeled
        status["readyReplicas"] = ready
        status["availableReplicas"] = available
        return status

    async def _update_status(self, owner: Obj, new_status: Obj) -> Obj:
        """updateReplicaSetStatus: write only on change, with observedGeneration."""
        def set_status(obj: Obj) -> bool:
            old = obj.get("status") or {}
            generation = obj["metadata"].get("generation", 0)
            unchanged = all(int(old.get(k) or 0) == new_status[k]
                            for k in ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas"))
            unchanged = unchanged and old.get("terminatingReplicas") == new_status["terminatingReplicas"]
            if unchanged and generation == old.get("observedGeneration", 0) \
                    and (old.get("conditions") or []) == new_status["conditions"]:
                return False
            # As the Go struct serializes: replicas always, terminatingReplicas (a pointer) whenever set.
            status = {k: v for k, v in new_status.items() if v or k in ("replicas", "terminatingReplicas")}
            status["observedGeneration"] = generation
            obj["status"] = status
            return True

        return await self._write_status(owner, set_status)


class ReplicationControllerController(ReplicaSetController):
    """core/v1 ReplicationController: the same loop; its selector is a plain label map."""

    name = "replicationcontroller"
    group, version, plural, kind = "", "v1", "replicationcontrollers", "ReplicationController"

    def selector(self, owner: Obj) -> LabelSelector:
        selector = (owner.get("spec") or {}).get("selector") or {}
        return LabelSelector.from_set(selector) if selector else LabelSelector.nothing()
