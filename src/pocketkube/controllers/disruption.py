"""Disruption controller (pkg/controller/disruption): the status of every PodDisruptionBudget.

For each budget: the pods its selector picks, how many of them are healthy (Ready, not being deleted,
not just evicted), how many must stay healthy (minAvailable, or the expected count minus maxUnavailable;
percentages and maxUnavailable are resolved against the scale of the pods' controllers) and so how many
disruptions the eviction subresource may allow now. Evictions the API server recorded in
status.disruptedPods count as gone until the pod is deleted, or for two minutes at most.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pocketkube.api.kinds import ResourceInfo
from pocketkube.api.selectors import LabelSelector, SelectorError
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller
from pocketkube.controllers.deployment_util import format_time, now, parse_time, scaled_value
from pocketkube.controllers.replicaset import controller_ref, is_pod_ready

log = logging.getLogger(__name__)
Obj = dict[str, Any]

# How long an eviction recorded in status.disruptedPods holds before the pod counts again (upstream).
DELETION_TIMEOUT = timedelta(minutes=2)
CONDITION = "DisruptionAllowed"
SUFFICIENT_PODS = "SufficientPods"
INSUFFICIENT_PODS = "InsufficientPods"
SYNC_FAILED = "SyncFailed"
# Owners whose replica count the controller reads from its informers; any other owner is asked for /scale.
_LISTED_OWNERS = {("apps", "ReplicaSet"): "replicasets", ("apps", "Deployment"): "deployments",
                  ("apps", "StatefulSet"): "statefulsets", ("", "ReplicationController"): "replicationcontrollers"}


class NoControllerError(Exception):
    """A pod's controller could not be found, so a percentage or maxUnavailable cannot be resolved."""


def desired_healthy(spec: Obj, pod_count: int, expected_scale: int | None) -> tuple[int, int]:
    """getExpectedPodCount: (expectedPods, desiredHealthy). `expected_scale` is the sum of the pods'
    controllers' scales; it is needed (not None) for maxUnavailable and percentage minAvailable."""
    if spec.get("maxUnavailable") is not None:
        assert expected_scale is not None
        unavailable = scaled_value(spec["maxUnavailable"], expected_scale, True)
        return expected_scale, max(expected_scale - unavailable, 0)
    min_available = spec.get("minAvailable")
    if isinstance(min_available, int):
        return pod_count, min_available
    if isinstance(min_available, str):
        assert expected_scale is not None
        return expected_scale, scaled_value(min_available, expected_scale, True)
    return 0, 0


def needs_scale(spec: Obj) -> bool:
    return spec.get("maxUnavailable") is not None or isinstance(spec.get("minAvailable"), str)


def disrupted_pod_map(pods: list[Obj], recorded: dict[str, str] | None,
                      at: datetime) -> tuple[dict[str, str], datetime | None, list[Obj]]:
    """buildDisruptedPodMap: the recorded evictions still pending, the next time one expires, and the
    pods that outlived their eviction (upstream warns about those with NotDeleted)."""
    result: dict[str, str] = {}
    recheck: datetime | None = None
    overdue: list[Obj] = []
    for pod in pods:
        name = pod["metadata"]["name"]
        if pod["metadata"].get("deletionTimestamp") or name not in (recorded or {}):
            continue
        when = parse_time((recorded or {})[name])
        if when is None:
            continue
        expected = when + DELETION_TIMEOUT
        if expected < at:
            overdue.append(pod)
            continue
        result[name] = (recorded or {})[name]
        if recheck is None or expected < recheck:
            recheck = expected
    return result, recheck, overdue


def count_healthy(pods: list[Obj], disrupted: dict[str, str], at: datetime) -> int:
    healthy = 0
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        when = parse_time(disrupted.get(pod["metadata"]["name"]))
        if when is not None and when + DELETION_TIMEOUT > at:
            continue
        if is_pod_ready(pod):
            healthy += 1
    return healthy


def set_condition(conditions: list[Obj], ctype: str, status: str, reason: str, message: str,
                  observed_generation: int) -> list[Obj]:
    """meta.SetStatusCondition: lastTransitionTime moves only when the status changes."""
    out = [dict(c) for c in conditions]
    new = {"type": ctype, "status": status, "reason": reason, "message": message,
           "observedGeneration": observed_generation}
    for cond in out:
        if cond.get("type") == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = format_time(now())
            cond.update(new)
            return out
    out.append({**new, "lastTransitionTime": format_time(now())})
    return out


def allowed_condition(conditions: list[Obj], disruptions_allowed: int, observed_generation: int) -> list[Obj]:
    if disruptions_allowed > 0:
        return set_condition(conditions, CONDITION, "True", SUFFICIENT_PODS, "", observed_generation)
    return set_condition(conditions, CONDITION, "False", INSUFFICIENT_PODS, "", observed_generation)


def conditions_up_to_date(pdb: Obj) -> bool:
    status = pdb.get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION), None)
    if cond is None or int(status.get("observedGeneration") or 0) != int(pdb["metadata"].get("generation") or 0):
        return False
    if int(status.get("disruptionsAllowed") or 0) > 0:
        return cond.get("status") == "True" and cond.get("reason") == SUFFICIENT_PODS
    return cond.get("status") == "False" and cond.get("reason") == INSUFFICIENT_PODS


class DisruptionController(Controller):
    name = "disruption"

    def setup(self) -> None:
        self.pdbs = self.ctx.informer("policy", "v1", "poddisruptionbudgets")
        self.pods = self.ctx.informer("", "v1", "pods")
        self.owners = {key: self.ctx.informer(key[0], "v1", plural) for key, plural in _LISTED_OWNERS.items()}
        self.pdb_info = self.ctx.resource("policy", "v1", "poddisruptionbudgets")
        self.pdbs.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new),
                              on_delete=self.enqueue)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed)

    # --- event handlers --------------------------------------------------------------
    def _pod_updated(self, old: Obj, new: Obj) -> None:
        self._pod_changed(new)
        if (old["metadata"].get("labels") or {}) != (new["metadata"].get("labels") or {}):
            self._pod_changed(old)

    def _pod_changed(self, pod: Obj) -> None:
        for pdb in self._budgets_for(pod):
            self.enqueue(pdb)

    def _budgets_for(self, pod: Obj) -> list[Obj]:
        labels = pod["metadata"].get("labels") or {}
        found = []
        for pdb in self.pdbs.store.by_index("namespace", pod["metadata"].get("namespace", "")):
            selector = _selector(pdb)
            if selector is not None and selector.matches(labels):
                found.append(pdb)
        return found

    # --- reconcile -----------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        pdb = self.pdbs.store.get(key)
        if pdb is None:
            return
        try:
            await self._try_sync(pdb)
        except APIError as err:
            if err.conflict or err.not_found:
                raise
            await self._fail_safe(pdb, str(err))
            raise
        except (NoControllerError, ValueError) as err:
            await self._fail_safe(pdb, str(err))
            raise

    async def _try_sync(self, pdb: Obj) -> None:
        recorder = self.ctx.recorder
        spec = pdb.get("spec") or {}
        pods = self._pods_for(pdb)
        if not pods:
            await recorder.event(pdb, "Normal", "NoPods", "No matching pods found")
        expected_scale = None
        if needs_scale(spec):
            try:
                expected_scale, unmanaged = await self._expected_scale(pods)
            except (NoControllerError, APIError) as err:
                await recorder.event(pdb, "Warning", "CalculateExpectedPodCountFailed",
                                     f"Failed to calculate the number of expected pods: {err}")
                raise
            if unmanaged:
                await recorder.event(pdb, "Warning", "UnmanagedPods", (
                    f"Pods selected by this PodDisruptionBudget (selector: {_selector(pdb)}) were found to be "
                    "unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may "
                    "result in undefined behavior. To account for these pods please set \".spec.minAvailable\" "
                    "field of the PDB to an integer value."))
        expected, desired = desired_healthy(spec, len(pods), expected_scale)
        at = now()
        status = pdb.get("status") or {}
        disrupted, recheck, overdue = disrupted_pod_map(pods, status.get("disruptedPods"), at)
        for pod in overdue:
            await recorder.event(pod, "Warning", "NotDeleted", "Pod was expected by PDB "
                                 f"{pdb['metadata']['namespace']}/{pdb['metadata']['name']} to be deleted but it "
                                 "wasn't")
        healthy = count_healthy(pods, disrupted, at)
        await self._update_status(pdb, healthy, desired, expected, disrupted)
        if recheck is not None:
            self.queue.add_after(_key(pdb), max((recheck - at).total_seconds(), 0.0))

    def _pods_for(self, pdb: Obj) -> list[Obj]:
        selector = _selector(pdb)
        if selector is None:
            return []
        return [p for p in self.pods.store.by_index("namespace", pdb["metadata"]["namespace"])
                if selector.matches(p["metadata"].get("labels") or {})]

    async def _expected_scale(self, pods: list[Obj]) -> tuple[int, list[str]]:
        """getExpectedScale: the sum of the scales of the pods' controllers (each counted once)."""
        scales: dict[str, int] = {}
        unmanaged: list[str] = []
        for pod in pods:
            ref = controller_ref(pod)
            if ref is None:
                unmanaged.append(pod["metadata"]["name"])
                continue
            if ref.get("uid") in scales:
                continue
            found = await self._controller_scale(ref, pod["metadata"]["namespace"])
            if found is None:
                raise NoControllerError(f'found no controllers for pod "{pod["metadata"]["name"]}"')
            scales[found[0]] = found[1]
        return sum(scales.values()), unmanaged

    async def _controller_scale(self, ref: Obj, namespace: str) -> tuple[str, int] | None:
        """The finders: ReplicationController, Deployment (through its ReplicaSet), ReplicaSet, StatefulSet,
        and any other kind through its /scale subresource. (controller uid, replicas) or None."""
        group = ref.get("apiVersion", "").rpartition("/")[0]
        kind = ref.get("kind", "")
        if (group, kind) in _LISTED_OWNERS:
            owner = self.owners[(group, kind)].store.get(f"{namespace}/{ref.get('name')}")
            if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
                return None
            if kind == "ReplicaSet":
                parent = controller_ref(owner)
                if parent is not None and parent.get("kind") == "Deployment":
                    # A Deployment's pods count against the Deployment's scale, not one ReplicaSet's.
                    return await self._controller_scale(parent, namespace)
            return owner["metadata"]["uid"], int((owner.get("spec") or {}).get("replicas", 1))
        info = await self._scale_resource(ref)
        if info is None:
            return None
        try:
            scale = await self.client.get(info, ref["name"], namespace, "scale")
        except APIError as err:
            if err.not_found:
                return None
            raise
        if scale["metadata"].get("uid") != ref.get("uid"):
            return None
        return scale["metadata"]["uid"], int((scale.get("spec") or {}).get("replicas") or 0)

    async def _scale_resource(self, ref: Obj) -> ResourceInfo | None:
        """The RESTMapping of the owner's kind, from the catalog or the server's discovery."""
        group, _, version = ref.get("apiVersion", "").rpartition("/")
        info = self.ctx.catalog.kind(group, version, ref.get("kind", ""))
        if info is not None:
            return info
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await self.client.request("GET", path)
        except APIError as err:
            if err.not_found:
                return None
            raise
        for res in listing.get("resources") or []:
            if res.get("kind") == ref.get("kind") and "/" not in res["name"]:
                return self.ctx.catalog.resource(group, version, res["name"]) or ResourceInfo(
                    group, version, res["kind"], res["name"], bool(res.get("namespaced")))
        return None

    async def _update_status(self, pdb: Obj, healthy: int, desired: int, expected: int,
                             disrupted: dict[str, str]) -> None:
        allowed = healthy - desired
        # Nothing may be disrupted while no pods are expected: a budget is safe before its first sync.
        if expected <= 0 or allowed <= 0:
            allowed = 0
        status = pdb.get("status") or {}
        generation = int(pdb["metadata"].get("generation") or 0)
        if (int(status.get("currentHealthy") or 0) == healthy and int(status.get("desiredHealthy") or 0) == desired
                and int(status.get("expectedPods") or 0) == expected
                and int(status.get("disruptionsAllowed") or 0) == allowed
                and (status.get("disruptedPods") or {}) == disrupted
                and int(status.get("observedGeneration") or 0) == generation and conditions_up_to_date(pdb)):
            return
        new_status: Obj = {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
                           "disruptionsAllowed": allowed, "observedGeneration": generation,
                           "conditions": allowed_condition(status.get("conditions") or [], allowed, generation)}
        if disrupted:
            new_status["disruptedPods"] = disrupted
        await self._write_status(pdb, new_status)

    async def _fail_safe(self, pdb: Obj, message: str) -> None:
        """On a failed sync allow no disruption at all (SyncFailed) rather than keep a stale allowance."""
        status = dict(pdb.get("status") or {})
        status["disruptionsAllowed"] = 0
        status["conditions"] = set_condition(status.get("conditions") or [], CONDITION, "False", SYNC_FAILED,
                                             message, int(status.get("observedGeneration") or 0))
        try:
            await self._write_status(pdb, status)
        except APIError as err:
            log.debug("disruption: fail-safe update of %s failed: %s", _key(pdb), err)

    async def _write_status(self, pdb: Obj, status: Obj) -> None:
        # UpdateStatus with the cached resourceVersion: a concurrent eviction's decrement wins, we retry.
        body = {**pdb, "status": status}
        try:
            await self.client.update(self.pdb_info, body, "status")
        except APIError as err:
            if not err.not_found:
                raise


def _key(pdb: Obj) -> str:
    return f"{pdb['metadata']['namespace']}/{pdb['metadata']['name']}"


def _selector(pdb: Obj) -> LabelSelector | None:
    """policy/v1: a null selector selects nothing, an empty one every pod of the namespace."""
    raw = (pdb.get("spec") or {}).get("selector")
    if raw is None:
        return None
    try:
        return LabelSelector.from_dict(raw)
    except SelectorError:
        return None

