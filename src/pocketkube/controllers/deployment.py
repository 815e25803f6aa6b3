"""Deployment controller (pkg/controller/deployment): ReplicaSets per pod template, rolled as the strategy says.

Each template gets a ReplicaSet named `<deployment>-<pod-template-hash>`; RollingUpdate grows the new one
within maxSurge and shrinks the old ones within maxUnavailable, Recreate empties the old ones first.
Revisions live in annotations (kubectl rollout history/undo read them), old ReplicaSets beyond
revisionHistoryLimit are deleted, and status conditions say whether the rollout progresses (or missed
its progressDeadlineSeconds) and whether enough replicas are available.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from pocketkube.api.selectors import LabelSelector
from pocketkube.client.informer import object_key
from pocketkube.client.rest import APIError
from pocketkube.controllers import deployment_util as du
from pocketkube.controllers.base import Controller, resolve_controller_ref, selecting
from pocketkube.controllers.replicaset import (
    claim_objects,
    controller_ref,
    enqueue_controller_of,
    enqueue_owners_of,
    enqueue_owners_of_updated,
    has_status_cause,
    new_controller_ref,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class DeploymentController(Controller):
    name = "deployment"
    workers = 4

    def setup(self) -> None:
        self.info = self.ctx.resource("apps", "v1", "deployments")
        self.rs_info = self.ctx.resource("apps", "v1", "replicasets")
        self.deployments = self.ctx.informer("apps", "v1", "deployments")
        self.replicasets = self.ctx.informer("apps", "v1", "replicasets")
        self.pods = self.ctx.informer("", "v1", "pods")
        self.deployments.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new),
                                     on_delete=self.enqueue)
        self.replicasets.add_handler(on_add=self._rs_added, on_update=self._rs_updated,
                                     on_delete=self._rs_deleted)
        self.pods.add_handler(on_delete=self._pod_deleted)

    # --- event handlers ---
    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        return resolve_controller_ref(self.deployments, "Deployment", namespace, ref)

    def _deployments_for(self, rs: Obj) -> list[Obj]:
        """Deployments whose selector matches an orphan ReplicaSet's labels."""
        return selecting(self.deployments, rs)

    def _rs_added(self, rs: Obj) -> None:
        if rs["metadata"].get("deletionTimestamp"):
            self._rs_deleted(rs)
            return
        enqueue_owners_of(self, rs, self._resolve, self._deployments_for)

    def _rs_updated(self, old: Obj, cur: Obj) -> None:
        if cur["metadata"].get("resourceVersion") == old["metadata"].get("resourceVersion"):
            return
        enqueue_owners_of_updated(self, old, cur, self._resolve, self._deployments_for)

    def _rs_deleted(self, rs: Obj) -> None:
        enqueue_controller_of(self, rs, self._resolve)

    def _pod_deleted(self, pod: Obj) -> None:
        """A Recreate rollout waits for the old pods to be gone: their deletion is its cue."""
        namespace = pod["metadata"].get("namespace", "")
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replicasets.store.get(f"{namespace}/{ref.get('name')}")
        if rs is None or rs["metadata"].get("uid") != ref.get("uid"):
            return
        d = self._resolve(namespace, controller_ref(rs))
        if d is not None and ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
            self.enqueue(d)

    # --- sync ---
    async def reconcile(self, key: str) -> None:
        cached = self.deployments.store.get(key)
        if cached is None:
            return
        d = copy.deepcopy(cached)
        d.setdefault("apiVersion", "apps/v1")
        d.setdefault("kind", "Deployment")
        selector_spec = (d.get("spec") or {}).get("selector")
        if selector_spec == {}:
            self.record_event(d, "Warning", "SelectingAll",
                              "This deployment is selecting all pods. A non-empty selector is required.")
            if (d.get("status") or {}).get("observedGeneration", 0) < d["metadata"].get("generation", 0):
                d.setdefault("status", {})["observedGeneration"] = d["metadata"]["generation"]
                await self._update_status(d)
            return
        rs_list = await self._replica_sets_for(d)
        if d["metadata"].get("deletionTimestamp"):
            new_rs, old_rss = await self._new_and_old(d, rs_list, create=False)
            await self._sync_deployment_status([*old_rss, new_rs], new_rs, d)
            return
        await self._check_paused_conditions(d)
        if d["spec"].get("paused"):
            await self._sync(d, rs_list)
            return
        if await self._is_scaling_event(d, rs_list):
            await self._sync(d, rs_list)
            return
        if d["spec"].get("strategy", {}).get("type") == "Recreate":
            await self._rollout_recreate(d, rs_list)
        else:
            await self._rollout_rolling(d, rs_list)

    async def _replica_sets_for(self, d: Obj) -> list[Obj]:
        """getReplicaSetsForDeployment: claim (adopt/release) the namespace's ReplicaSets by selector."""
        selector = LabelSelector.from_dict(d["spec"].get("selector"))
        candidates = self.replicasets.store.by_index("namespace", d["metadata"]["namespace"])
        return await claim_objects(self.client, self.info, d, self.rs_info, selector, candidates)

    def _pods_by_rs(self, d: Obj, rs_list: list[Obj]) -> dict[str, list[Obj]]:
        """getPodMapForDeployment: the deployment's pods grouped by the ReplicaSet that controls them."""
        selector = LabelSelector.from_dict(d["spec"].get("selector"))
        uids = {rs["metadata"]["uid"] for rs in rs_list}
        pod_map: dict[str, list[Obj]] = {uid: [] for uid in uids}
        for uid in uids:
            for pod in self.pods.store.by_index("owner", uid):
                ref = controller_ref(pod)
                if ref is not None and ref.get("uid") == uid and selector.matches(pod["metadata"].get("labels")):
                    pod_map[uid].append(pod)
        return pod_map

    async def _update_status(self, d: Obj) -> Obj:
        """UpdateStatus with the deployment as the controller holds it, keeping our copy's resourceVersion
        current so a second write in the same sync does not conflict with our own first one. The
        revision annotations travel with it: /status keeps a Deployment's annotations, as upstream."""
        d["status"] = du.wire_status(du.normalized_status(d.get("status")))
        updated = await self.client.update(self.info, d, "status")
        d["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"]
        return updated

    async def _check_paused_conditions(self, d: Obj) -> None:
        """Mark pause and resume in the Progressing condition, so a resumed rollout gets a fresh deadline."""
        if not du.has_progress_deadline(d):
            return
        status = d.setdefault("status", {})
        cond = du.get_condition(status, "Progressing")
        if cond is not None and cond.get("reason") == du.TIMED_OUT_REASON:
            return
        paused_exists = cond is not None and cond.get("reason") == du.PAUSED_REASON
        if d["spec"].get("paused") and not paused_exists:
            du.set_condition(status, du.new_condition("Progressing", "Unknown", du.PAUSED_REASON,
                                                      "Deployment is paused"))
        elif not d["spec"].get("paused") and paused_exists:
            du.set_condition(status, du.new_condition("Progressing", "Unknown", du.RESUMED_REASON,
                                                      "Deployment is resumed"))
        else:
            return
        await self._update_status(d)

    async def _is_scaling_event(self, d: Obj, rs_list: list[Obj]) -> bool:
        new_rs, old_rss = await self._new_and_old(d, rs_list, create=False)
        for rs in du.filter_active([*old_rss, new_rs]):
            desired = du.int_annotation(rs, du.DESIRED_REPLICAS_ANNOTATION)
            if desired is not None and desired != du.replicas(d):
                return True
        return False

    async def _new_and_old(self, d: Obj, rs_list: list[Obj], create: bool) -> tuple[Obj | None, list[Obj]]:
        """getAllReplicaSetsAndSyncRevision."""
        _, all_old = du.find_old_replica_sets(d, rs_list)
        new_rs = await self._new_replica_set(d, rs_list, all_old, create)
        return new_rs, all_old

    async def _new_replica_set(self, d: Obj, rs_list: list[Obj], old_rss: list[Obj],
                               create: bool) -> Obj | None:
        existing = du.find_new_replica_set(d, rs_list)
        new_revision = str(du.max_revision(old_rss) + 1)
        status = d.setdefault("status", {})
        if existing is not None:
            rs = copy.deepcopy(existing)
            annotations_updated = du.set_new_replica_set_annotations(d, rs, new_revision, exists=True)
            min_ready = d["spec"].get("minReadySeconds", 0)
            if annotations_updated or rs["spec"].get("minReadySeconds", 0) != min_ready:
                rs["spec"]["minReadySeconds"] = min_ready
                return await self.client.update(self.rs_info, rs)
            needs_update = self._set_revision(d, rs["metadata"]["annotations"].get(du.REVISION_ANNOTATION, ""))
            if du.has_progress_deadline(d) and du.get_condition(status, "Progressing") is None:
                du.set_condition(status, du.new_condition("Progressing", "True", du.FOUND_NEW_RS_REASON,
                                                          f'Found new replica set "{rs["metadata"]["name"]}"'))
                needs_update = True
            if needs_update:
                await self._update_status(d)
            return rs
        if not create:
            return None

        template = copy.deepcopy(d["spec"]["template"])
        pod_hash = du.compute_hash(template, status.get("collisionCount"))
        labels = {**((template.get("metadata") or {}).get("labels") or {}), du.POD_TEMPLATE_HASH_LABEL: pod_hash}
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(d["spec"]["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), du.POD_TEMPLATE_HASH_LABEL: pod_hash}
        name = f"{d['metadata']['name']}-{pod_hash}"
        new_rs: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": d["metadata"]["namespace"],
                         "ownerReferences": [new_controller_ref(d)], "labels": dict(labels)},
            "spec": {"replicas": 0, "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                     "selector": selector, "template": template},
        }
        new_replicas = du.new_rs_new_replicas(d, [*old_rss, new_rs], new_rs)
        new_rs["spec"]["replicas"] = new_replicas
        du.set_new_replica_set_annotations(d, new_rs, new_revision, exists=False)
        already_exists = False
        try:
            created = await self.client.create(self.rs_info, new_rs)
        except APIError as err:
            if err.already_exists:
                already_exists = True
                found = self.replicasets.store.get(f"{d['metadata']['namespace']}/{name}")
                if found is None:
                    found = await self.client.get(self.rs_info, name, d["metadata"]["namespace"])
                ref = controller_ref(found)
                if ref is not None and ref.get("uid") == d["metadata"]["uid"] \
                        and du.equal_ignore_hash(d["spec"]["template"], found["spec"].get("template")):
                    created = found
                else:
                    # A hash collision: bump collisionCount so the next sync hashes differently.
                    status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
                    await self._update_status(d)
                    raise
            elif has_status_cause(err, "NamespaceTerminating"):
                raise
            else:
                message = f'Failed to create new replica set "{name}": {err}'
                if du.has_progress_deadline(d):
                    du.set_condition(status, du.new_condition("Progressing", "False",
                                                              du.FAILED_RS_CREATE_REASON, message))
                    try:
                        await self._update_status(d)
                    except APIError:
                        pass  # the creation failure is the error worth reporting
                self.record_event(d, "Warning", du.FAILED_RS_CREATE_REASON, message)
                raise
        if not already_exists and new_replicas > 0:
            self.record_event(d, "Normal", "ScalingReplicaSet",
                              f"Scaled up replica set {created['metadata']['name']} from 0 to {new_replicas}")
        needs_update = self._set_revision(d, new_revision)
        if not already_exists and du.has_progress_deadline(d):
            du.set_condition(status, du.new_condition("Progressing", "True", du.NEW_RS_REASON,
                                                      f'Created new replica set "{created["metadata"]["name"]}"'))
            needs_update = True
        if needs_update:
            await self._update_status(d)
        return created

    @staticmethod
    def _set_revision(d: Obj, revision: str) -> bool:
        annotations = d["metadata"].get("annotations")
        if annotations is None:
            annotations = d["metadata"]["annotations"] = {}
        if annotations.get(du.REVISION_ANNOTATION) == revision:
            return False
        annotations[du.REVISION_ANNOTATION] = revision
        return True

    # --- scaling ---
    async def _scale_replica_set(self, rs: Obj, new_scale: int, d: Obj) -> tuple[bool, Obj]:
        desired, maximum = du.replicas(d), du.replicas(d) + du.max_surge(d)
        size_changed = du.replicas(rs) != new_scale
        if not size_changed and not du.replicas_annotations_need_update(rs, desired, maximum):
            return False, rs
        old_scale = du.replicas(rs)
        rs = copy.deepcopy(rs)
        rs["spec"]["replicas"] = new_scale
        du.set_replicas_annotations(rs, desired, maximum)
        rs = await self.client.update(self.rs_info, rs)
        if size_changed:
            direction = "up" if old_scale < new_scale else "down"
            self.record_event(d, "Normal", "ScalingReplicaSet", f"Scaled {direction} replica set "
                              f"{rs['metadata']['name']} from {old_scale} to {new_scale}")
        return size_changed, rs

    async def _scale_and_record(self, rs: Obj, new_scale: int, d: Obj) -> tuple[bool, Obj]:
        if du.replicas(rs) == new_scale:
            return False, rs
        return await self._scale_replica_set(rs, new_scale, d)

    async def _scale(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        """Scale to spec.replicas: the one active ReplicaSet outright, else proportionally across all."""
        target = du.find_active_or_latest(new_rs, old_rss)
        if target is not None:
            if du.replicas(target) != du.replicas(d):
                await self._scale_and_record(target, du.replicas(d), d)
            return
        if du.is_saturated(d, new_rs):
            for old in du.filter_active(old_rss):
                await self._scale_and_record(old, 0, d)
            return
        if not du.is_rolling_update(d):
            return
        all_rss = du.filter_active([*old_rss, new_rs])
        allowed = du.replicas(d) + du.max_surge(d) if du.replicas(d) > 0 else 0
        to_add = allowed - du.replica_count(all_rss)
        if to_add > 0:
            all_rss = du.by_size(all_rss, newer_first=True)
        elif to_add < 0:
            all_rss = du.by_size(all_rss, newer_first=False)
        added = 0
        sizes: dict[str, int] = {}
        for rs in all_rss:
            if to_add != 0:
                proportion = du.replica_set_proportion(rs, d, to_add, added)
                sizes[rs["metadata"]["name"]] = du.replicas(rs) + proportion
                added += proportion
            else:
                sizes[rs["metadata"]["name"]] = du.replicas(rs)
        for i, rs in enumerate(all_rss):
            name = rs["metadata"]["name"]
            if i == 0 and to_add != 0:
                sizes[name] = max(sizes[name] + to_add - added, 0)
            await self._scale_replica_set(rs, sizes[name], d)

    async def _sync(self, d: Obj, rs_list: list[Obj]) -> None:
        """Scaling and paused deployments: resize without rolling, then status."""
        new_rs, old_rss = await self._new_and_old(d, rs_list, create=False)
        await self._scale(d, new_rs, old_rss)
        if d["spec"].get("paused"):
            await self._cleanup(old_rss, d)
        await self._sync_deployment_status([*old_rss, new_rs], new_rs, d)

    async def _cleanup(self, old_rss: list[Obj], d: Obj) -> None:
        """Delete the oldest empty ReplicaSets beyond revisionHistoryLimit."""
        if not du.has_revision_history_limit(d):
            return
        alive = [rs for rs in old_rss if not rs["metadata"].get("deletionTimestamp")]
        diff = len(alive) - d["spec"]["revisionHistoryLimit"]
        if diff <= 0:
            return
        for rs in du.by_revision(alive)[:diff]:
            status = rs.get("status") or {}
            if status.get("replicas", 0) != 0 or du.replicas(rs) != 0 \
                    or rs["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
                continue
            try:
                await self.client.delete(self.rs_info, rs["metadata"]["name"], rs["metadata"]["namespace"])
            except APIError as err:
                if not err.not_found:
                    raise

    # --- rolling update ---
    async def _rollout_rolling(self, d: Obj, rs_list: list[Obj]) -> None:
        new_rs, old_rss = await self._new_and_old(d, rs_list, create=True)
        assert new_rs is not None
        all_rss = [*old_rss, new_rs]
        if await self._reconcile_new_replica_set(all_rss, new_rs, d):
            await self._sync_rollout_status(all_rss, new_rs, d)
            return
        if await self._reconcile_old_replica_sets(all_rss, du.filter_active(old_rss), new_rs, d):
            await self._sync_rollout_status(all_rss, new_rs, d)
            return
        if du.deployment_complete(d, du.normalized_status(d.get("status"))):
            await self._cleanup(old_rss, d)
        await self._sync_rollout_status(all_rss, new_rs, d)

    async def _reconcile_new_replica_set(self, all_rss: list[Obj], new_rs: Obj, d: Obj) -> bool:
        if du.replicas(new_rs) == du.replicas(d):
            return False
        if du.replicas(new_rs) > du.replicas(d):
            return (await self._scale_and_record(new_rs, du.replicas(d), d))[0]
        return (await self._scale_and_record(new_rs, du.new_rs_new_replicas(d, all_rss, new_rs), d))[0]

    async def _reconcile_old_replica_sets(self, all_rss: list[Obj], old_rss: list[Obj], new_rs: Obj,
                                          d: Obj) -> bool:
        if du.replica_count(old_rss) == 0:
            return False
        all_count = du.replica_count(all_rss)
        min_available = du.replicas(d) - du.max_unavailable(d)
        new_unavailable = du.replicas(new_rs) - int((new_rs.get("status") or {}).get("availableReplicas") or 0)
        # Never scale old ones down so far that the new ReplicaSet's unavailable pods break minAvailable.
        max_scaled_down = all_count - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        try:
            old_rss, cleaned = await self._cleanup_unhealthy_replicas(old_rss, d, max_scaled_down)
            scaled = await self._scale_down_old_for_rolling_update([*old_rss, new_rs], old_rss, d)
        except APIError as err:
            # Upstream swallows these (the RS update event requeues); log so they stay visible.
            log.debug("deployment %s: scaling down old replica sets: %s", object_key(d), err)
            return False
        return cleaned + scaled > 0

    async def _cleanup_unhealthy_replicas(self, old_rss: list[Obj], d: Obj,
                                          max_cleanup: int) -> tuple[list[Obj], int]:
        """Scale down old ReplicaSets' unavailable pods first: removing them costs no availability."""
        old_rss = du.by_creation(old_rss)
        total = 0
        for i, rs in enumerate(old_rss):
            if total >= max_cleanup:
                break
            available = int((rs.get("status") or {}).get("availableReplicas") or 0)
            if du.replicas(rs) == 0 or du.replicas(rs) == available:
                continue
            count = min(max_cleanup - total, du.replicas(rs) - available)
            _, old_rss[i] = await self._scale_and_record(rs, du.replicas(rs) - count, d)
            total += count
        return old_rss, total

    async def _scale_down_old_for_rolling_update(self, all_rss: list[Obj], old_rss: list[Obj], d: Obj) -> int:
        min_available = du.replicas(d) - du.max_unavailable(d)
        available = du.available_replica_count(all_rss)
        if available <= min_available:
            return 0
        total, wanted = 0, available - min_available
        for rs in du.by_creation(old_rss):
            if total >= wanted:
                break
            if du.replicas(rs) == 0:
                continue
            count = min(du.replicas(rs), wanted - total)
            await self._scale_and_record(rs, du.replicas(rs) - count, d)
            total += count
        return total

    # --- recreate ---
    async def _rollout_recreate(self, d: Obj, rs_list: list[Obj]) -> None:
        new_rs, old_rss = await self._new_and_old(d, rs_list, create=False)
        all_rss = [*old_rss, new_rs]
        scaled = False
        for rs in du.filter_active(old_rss):
            changed, _ = await self._scale_and_record(rs, 0, d)
            scaled = scaled or changed
        if scaled:
            await self._sync_rollout_status(all_rss, new_rs, d)
            return
        if self._old_pods_running(new_rs, old_rss, self._pods_by_rs(d, rs_list)):
            await self._sync_rollout_status(all_rss, new_rs, d)
            return
        if new_rs is None:
            new_rs, old_rss = await self._new_and_old(d, rs_list, create=True)
            all_rss = [*old_rss, new_rs]
        assert new_rs is not None
        await self._scale_and_record(new_rs, du.replicas(d), d)
        if du.deployment_complete(d, du.normalized_status(d.get("status"))):
            await self._cleanup(old_rss, d)
        await self._sync_rollout_status(all_rss, new_rs, d)

    @staticmethod
    def _old_pods_running(new_rs: Obj | None, old_rss: list[Obj], pod_map: dict[str, list[Obj]]) -> bool:
        if du.actual_replica_count(old_rss) > 0:
            return True
        new_uid = new_rs["metadata"]["uid"] if new_rs is not None else None
        for uid, pods in pod_map.items():
            if uid == new_uid:
                continue
            if any((p.get("status") or {}).get("phase") not in ("Failed", "Succeeded") for p in pods):
                return True
        return False

    # --- status ---
    async def _sync_deployment_status(self, all_rss: list[Obj | None], new_rs: Obj | None, d: Obj) -> None:
        new_status = du.calculate_status(all_rss, new_rs, d)
        if du.normalized_status(d.get("status")) == du.normalized_status(new_status):
            return
        d["status"] = new_status
        await self._update_status(d)

    async def _sync_rollout_status(self, all_rss: list[Obj | None], new_rs: Obj | None, d: Obj) -> None:
        new_status = du.calculate_status(all_rss, new_rs, d)
        if not du.has_progress_deadline(d):
            du.remove_condition(new_status, "Progressing")
        current = du.get_condition(d.get("status") or {}, "Progressing")
        complete_already = (new_status["replicas"] == new_status["updatedReplicas"] and current is not None
                            and current.get("reason") == du.NEW_RS_AVAILABLE_REASON)
        name = d["metadata"]["name"]
        if du.has_progress_deadline(d) and not complete_already:
            if du.deployment_complete(d, new_status):
                message = f'ReplicaSet "{new_rs["metadata"]["name"]}" has successfully progressed.' \
                    if new_rs is not None else f'Deployment "{name}" has successfully progressed.'
                du.set_condition(new_status, du.new_condition("Progressing", "True", du.NEW_RS_AVAILABLE_REASON,
                                                              message))
            elif du.deployment_progressing(d, new_status):
                message = f'ReplicaSet "{new_rs["metadata"]["name"]}" is progressing.' \
                    if new_rs is not None else f'Deployment "{name}" is progressing.'
                condition = du.new_condition("Progressing", "True", du.RS_UPDATED_REASON, message)
                # Progress refreshes lastUpdateTime even with the same reason (the deadline restarts).
                if current is not None:
                    if current.get("status") == "True":
                        condition["lastTransitionTime"] = current.get("lastTransitionTime")
                    du.remove_condition(new_status, "Progressing")
                du.set_condition(new_status, condition)
            elif du.deployment_timed_out(d, new_status):
                message = f'ReplicaSet "{new_rs["metadata"]["name"]}" has timed out progressing.' \
                    if new_rs is not None else f'Deployment "{name}" has timed out progressing.'
                du.set_condition(new_status, du.new_condition("Progressing", "False", du.TIMED_OUT_REASON,
                                                              message))
        failures = self._replica_failures(all_rss, new_rs)
        if failures:
            du.set_condition(new_status, failures[0])
        else:
            du.remove_condition(new_status, "ReplicaFailure")
        if du.normalized_status(d.get("status")) == du.normalized_status(new_status):
            self._requeue_stuck(d, new_status)
            return
        d["status"] = new_status
        await self._update_status(d)

    @staticmethod
    def _replica_failures(all_rss: list[Obj | None], new_rs: Obj | None) -> list[Obj]:
        def failures(rs: Obj | None) -> list[Obj]:
            if rs is None:
                return []
            return [{"type": c["type"], "status": c.get("status"), "lastUpdateTime": c.get("lastTransitionTime"),
                     "lastTransitionTime": c.get("lastTransitionTime"), "reason": c.get("reason"),
                     "message": c.get("message")}
                    for c in (rs.get("status") or {}).get("conditions") or [] if c.get("type") == "ReplicaFailure"]
        found = failures(new_rs)
        if found:
            return found
        return [c for rs in all_rss for c in failures(rs)]

    def _requeue_stuck(self, d: Obj, new_status: Obj) -> None:
        """No visible progress: look again when the progress deadline would pass."""
        current = du.get_condition(d.get("status") or {}, "Progressing")
        if not du.has_progress_deadline(d) or current is None:
            return
        if du.deployment_complete(d, new_status) or current.get("reason") == du.TIMED_OUT_REASON:
            return
        since = du.parse_time(current.get("lastUpdateTime"))
        if since is None:
            return
        after = since.timestamp() + d["spec"]["progressDeadlineSeconds"] - du.now().timestamp()
        # Upstream requeues rate-limited when under a second is left, which (the worker forgets the key
        # after each sync) amounts to polling every few milliseconds; a short fixed wait does the same job.
        self.queue.add_after(object_key(d), after + 1 if after >= 1 else max(after, 0) + 0.2)
