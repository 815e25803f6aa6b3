"""PersistentVolume controller (pkg/controller/volume/persistentvolume) with a built-in local-path
provisioner (the part k3s ships as rancher's local-path-provisioner).

Claims and volumes are synced separately, as upstream's syncClaim/syncVolume: an unbound claim is bound
to the smallest Available volume that fits (capacity, access modes, class, selector, volumeMode), or
to the volume it names, or to the one pre-bound to it; the volume's claimRef, the claim's volumeName,
the pv.kubernetes.io/bind-completed and bound-by-controller annotations and both phases are written in
upstream's order so that a crash at any point is repaired by the next sync. A volume whose claim is
gone is Released and reclaimed (Retain: kept; Delete: deleted; Recycle: Failed, no recycler). A bound
claim whose volume is gone is Lost.

Dynamic provisioning: a claim whose class names a provisioner and that no volume fits is provisioned.
Classes of the built-in provisioner `pocketkube.io/local-path` (default class `local-path`, created at
start as k3s deploys it) wait for the first consumer: once the scheduler has written
volume.kubernetes.io/selected-node on the claim, the controller creates a hostPath volume under the
controller manager's local storage path (`--default-local-storage-path`, by default the server's
DATA_DIR/storage) on that node, with node affinity to it. Claims of other provisioners are
annotated for an external provisioner, as upstream. Removing a deleted volume's directory on the node
is the kubelet's job: the controller deletes the PersistentVolume object, whose finalizer keeps it until
the node has removed the directory (pocketkube.api.localpath).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

from pocketkube.api import localpath
from pocketkube.api.quantity import parse_quantity
from pocketkube.api.selectors import LabelSelector, SelectorError
from pocketkube.client.informer import object_key
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller, split_key
from pocketkube.controllers.deployment_util import format_time, now, parse_time

log = logging.getLogger(__name__)
Obj = dict[str, Any]

ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANN_DYNAMICALLY_PROVISIONED = localpath.ANN_PROVISIONED_BY
ANN_BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"
ANN_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
ANN_BETA_DEFAULT_CLASS = "storageclass.beta.kubernetes.io/is-default-class"
HOSTNAME_LABEL = "kubernetes.io/hostname"

# The built-in provisioner. Its own name rather than rancher.io/local-path: k3s manifests refer to the
# class (`local-path`), not to the provisioner, and a real local-path-provisioner deployed into the
# cluster must not race this one for the same claims.
LOCAL_PATH_PROVISIONER = localpath.PROVISIONER
LOCAL_PATH_CLASS = "local-path"
LOCAL_PATH_ACCESS_MODES = ("ReadWriteOnce", "ReadWriteOncePod")
# Upstream's resync period: every claim and volume is looked at again this often.
RESYNC_SECONDS = 15.0


def default_storage_class() -> Obj:
    """The class k3s deploys (local-storage.yaml), with this cluster's provisioner."""
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": LOCAL_PATH_CLASS, "annotations": {ANN_DEFAULT_CLASS: "true"}},
            "provisioner": LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"}


# --- helpers (pkg/controller/volume/persistentvolume/util, component-helpers/storage/volume) ----
def _annotations(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def claim_class(claim: Obj) -> str:
    """GetPersistentVolumeClaimClass: the beta annotation wins over spec.storageClassName."""
    if ANN_BETA_STORAGE_CLASS in _annotations(claim):
        return _annotations(claim)[ANN_BETA_STORAGE_CLASS]
    return (claim.get("spec") or {}).get("storageClassName") or ""


def claim_has_class(claim: Obj) -> bool:
    return (claim.get("spec") or {}).get("storageClassName") is not None or \
        ANN_BETA_STORAGE_CLASS in _annotations(claim)


def volume_class(pv: Obj) -> str:
    if ANN_BETA_STORAGE_CLASS in _annotations(pv):
        return _annotations(pv)[ANN_BETA_STORAGE_CLASS]
    return (pv.get("spec") or {}).get("storageClassName") or ""


def storage(resources: Obj | None) -> Fraction:
    value = (resources or {}).get("storage")
    return parse_quantity(str(value)).as_fraction() if value is not None else Fraction(0)


def claim_request(claim: Obj) -> Fraction:
    return storage(((claim.get("spec") or {}).get("resources") or {}).get("requests"))


def volume_capacity(pv: Obj) -> Fraction:
    return storage((pv.get("spec") or {}).get("capacity"))


def access_modes_fit(claim: Obj, pv: Obj) -> bool:
    """CheckAccessModes: the volume offers every mode the claim asks for."""
    return set((claim.get("spec") or {}).get("accessModes") or []) <= set((pv.get("spec") or {}).get("accessModes")
                                                                          or [])


def volume_mode_mismatch(claim: Obj, pv: Obj) -> bool:
    return ((claim.get("spec") or {}).get("volumeMode") or "Filesystem") != \
        ((pv.get("spec") or {}).get("volumeMode") or "Filesystem")


def is_volume_bound_to_claim(pv: Obj, claim: Obj) -> bool:
    ref = (pv.get("spec") or {}).get("claimRef")
    meta = claim["metadata"]
    if not ref or ref.get("name") != meta["name"] or ref.get("namespace") != meta.get("namespace"):
        return False
    return not ref.get("uid") or ref["uid"] == meta.get("uid")


def check_volume_satisfies_claim(pv: Obj, claim: Obj) -> str | None:
    """checkVolumeSatisfyClaim: why the volume a claim names cannot serve it (None: it can)."""
    if volume_capacity(pv) < claim_request(claim):
        return "requested PV is too small"
    if volume_class(pv) != claim_class(claim):
        return "storageClassName does not match"
    if volume_mode_mismatch(claim, pv):
        return "incompatible volumeMode"
    if not access_modes_fit(claim, pv):
        return "incompatible accessMode"
    return None


def find_matching_volume(claim: Obj, volumes: Iterable[Obj], delay_binding: bool) -> Obj | None:
    """FindMatchingVolume (the controller's path, without a node): a volume pre-bound to the claim,
    else the smallest Available one of the claim's class matching its selector."""
    selector = None
    raw = (claim.get("spec") or {}).get("selector")
    if raw is not None:
        try:
            selector = LabelSelector.from_dict(raw)
        except SelectorError:
            return None
    wanted = claim_request(claim)
    smallest: Obj | None = None
    for pv in volumes:
        if (pv.get("spec") or {}).get("claimRef") and not is_volume_bound_to_claim(pv, claim):
            continue
        if volume_capacity(pv) < wanted or volume_mode_mismatch(claim, pv):
            continue
        if pv["metadata"].get("deletionTimestamp"):
            continue
        if is_volume_bound_to_claim(pv, claim):
            return pv
        if delay_binding:
            continue  # the scheduler picks volumes for claims that wait for their first consumer
        if (pv.get("status") or {}).get("phase") != "Available":
            continue
        if selector is not None and not selector.matches(pv["metadata"].get("labels") or {}):
            continue
        if volume_class(pv) != claim_class(claim):
            continue
        if smallest is None or volume_capacity(pv) < volume_capacity(smallest):
            smallest = pv
    return smallest


def find_best_match(claim: Obj, volumes: list[Obj], delay_binding: bool) -> Obj | None:
    """persistentVolumeOrderedIndex.findByClaim: volumes are grouped by their access modes; the groups
    offering every requested mode are tried from the fewest modes up."""
    wanted = set((claim.get("spec") or {}).get("accessModes") or [])
    groups: dict[tuple[str, ...], list[Obj]] = {}
    for pv in volumes:
        groups.setdefault(tuple(sorted(set((pv.get("spec") or {}).get("accessModes") or []))), []).append(pv)
    for modes in sorted((m for m in groups if wanted <= set(m)), key=lambda m: (len(m), m)):
        found = find_matching_volume(claim, groups[modes], delay_binding)
        if found is not None:
            return found
    return None


def default_class(classes: Iterable[Obj]) -> Obj | None:
    """GetDefaultClass: of the classes marked default, the newest (then the first by name)."""
    defaults = [c for c in classes if "true" in (_annotations(c).get(ANN_DEFAULT_CLASS),
                                                  _annotations(c).get(ANN_BETA_DEFAULT_CLASS))]
    if not defaults:
        return None
    epoch = parse_time("1970-01-01T00:00:00Z")
    defaults.sort(key=lambda c: c["metadata"]["name"])
    defaults.sort(key=lambda c: parse_time(c["metadata"].get("creationTimestamp")) or epoch, reverse=True)
    return defaults[0]


def claim_ref(claim: Obj) -> Obj:
    meta = claim["metadata"]
    return {"kind": "PersistentVolumeClaim", "namespace": meta.get("namespace", ""), "name": meta["name"],
            "uid": meta.get("uid", ""), "apiVersion": "v1", "resourceVersion": meta.get("resourceVersion", "")}


def provisioned_volume_name(claim: Obj) -> str:
    return f"pvc-{claim['metadata']['uid']}"


def local_path_volume(claim: Obj, storage_class: Obj, node: Obj, storage_root: Path) -> Obj:
    """The hostPath volume the local-path provisioner makes for a claim on a node, in a directory under
    storage_root (absolute and normalized)."""
    meta = claim["metadata"]
    name = provisioned_volume_name(claim)
    spec = claim.get("spec") or {}
    hostname = (node["metadata"].get("labels") or {}).get(HOSTNAME_LABEL) or node["metadata"]["name"]
    directory = storage_root / localpath.directory_name(name, meta["namespace"], meta["name"])
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {ANN_BOUND_BY_CONTROLLER: "yes",
                                                   ANN_DYNAMICALLY_PROVISIONED: LOCAL_PATH_PROVISIONER},
                     "finalizers": [localpath.FINALIZER]},  # the node removes the directory first
        "spec": {
            "accessModes": list(spec.get("accessModes") or []),
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {})["storage"]},
            "claimRef": claim_ref(claim),
            "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [hostname]}]}]}},
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
            "storageClassName": claim_class(claim),
            "volumeMode": "Filesystem",
        },
    }


def local_path_refusal(claim: Obj, storage_class: Obj) -> str | None:
    """Why the local-path provisioner cannot provision the claim (None: it can)."""
    spec = claim.get("spec") or {}
    if storage_class.get("mountOptions"):
        return (f"Mount options are not supported by the provisioner but StorageClass {storage_class['metadata']['name']!r} "
                f"has mount options {storage_class['mountOptions']}")
    if (spec.get("volumeMode") or "Filesystem") != "Filesystem":
        return "Block volume mode is not supported"
    if any(mode not in LOCAL_PATH_ACCESS_MODES for mode in spec.get("accessModes") or []):
        return "NodePath only supports ReadWriteOnce and ReadWriteOncePod (1.22+) access modes"
    if ANN_SELECTED_NODE not in _annotations(claim):
        return "configuration error, no node was specified"
    return None


def _rv(obj: Obj | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _pod_uses_claim(pod: Obj, claim_name: str) -> bool:
    pod_name = pod["metadata"]["name"]
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if (volume.get("persistentVolumeClaim") or {}).get("claimName") == claim_name:
            return True
        if volume.get("ephemeral") is not None and f"{pod_name}-{volume.get('name')}" == claim_name:
            return True
    return False


class PersistentVolumeController(Controller):
    name = "persistentvolume-binder"
    resync_seconds = RESYNC_SECONDS

    def setup(self) -> None:
        if self.ctx.local_storage_path is None:
            raise ValueError("the PersistentVolume controller needs the local-path provisioner's storage root")
        self.storage_root = self.ctx.local_storage_path
        self.volumes = self.ctx.informer("", "v1", "persistentvolumes")
        self.claims = self.ctx.informer("", "v1", "persistentvolumeclaims")
        self.classes = self.ctx.informer("storage.k8s.io", "v1", "storageclasses")
        self.pods = self.ctx.informer("", "v1", "pods")
        self.nodes = self.ctx.informer("", "v1", "nodes")
        self.pv_info = self.ctx.resource("", "v1", "persistentvolumes")
        self.pvc_info = self.ctx.resource("", "v1", "persistentvolumeclaims")
        self.class_info = self.ctx.resource("storage.k8s.io", "v1", "storageclasses")
        # Our own writes, kept until the informers show them (upstream's storeObjectUpdate): a sync never
        # acts on an older version of an object this controller has already changed.
        self._written_volumes: dict[str, Obj | None] = {}
        self._written_claims: dict[str, Obj | None] = {}
        self.volumes.add_handler(on_add=self._volume_event, on_update=lambda _old, new: self._volume_event(new),
                                 on_delete=self._volume_deleted)
        self.claims.add_handler(on_add=self._claim_event, on_update=lambda _old, new: self._claim_event(new),
                                on_delete=self._claim_deleted)

    # --- event handlers --------------------------------------------------------------
    def _volume_event(self, pv: Obj) -> None:
        name = pv["metadata"]["name"]
        if name in self._written_volumes and _rv(pv) >= _rv(self._written_volumes[name]):
            del self._written_volumes[name]
        self.queue.add(f"pv:{name}")
        if (pv.get("status") or {}).get("phase") == "Available":
            # A volume became available: claims waiting for one need not wait for the next resync.
            for claim in self.claims.store.list():
                if (claim.get("status") or {}).get("phase") == "Pending" and not claim["spec"].get("volumeName"):
                    self.queue.add(f"pvc:{object_key(claim)}")

    def _volume_deleted(self, pv: Obj) -> None:
        self._written_volumes.pop(pv["metadata"]["name"], None)
        ref = (pv.get("spec") or {}).get("claimRef")
        if ref:  # its claim may have lost its volume
            self.queue.add(f"pvc:{ref.get('namespace')}/{ref.get('name')}")

    def _claim_event(self, claim: Obj) -> None:
        key = object_key(claim)
        if key in self._written_claims and _rv(claim) >= _rv(self._written_claims[key]):
            del self._written_claims[key]
        self.queue.add(f"pvc:{key}")

    def _claim_deleted(self, claim: Obj) -> None:
        self._written_claims.pop(object_key(claim), None)
        volume = (claim.get("spec") or {}).get("volumeName")
        if volume:  # its volume is released
            self.queue.add(f"pv:{volume}")

    # --- caches -------------------------------------------------------------------------
    def _volume(self, name: str) -> Obj | None:
        cached = self.volumes.store.get(name)
        written = self._written_volumes.get(name, cached)
        return written if written is not None and _rv(written) >= _rv(cached) else cached

    def _volume_list(self) -> list[Obj]:
        out = {v["metadata"]["name"]: v for v in self.volumes.store.list()}
        for name in list(self._written_volumes):
            found = self._volume(name)
            if found is not None:
                out[name] = found
        return list(out.values())

    def _claim(self, key: str) -> Obj | None:
        cached = self.claims.store.get(key)
        written = self._written_claims.get(key, cached)
        return written if written is not None and _rv(written) >= _rv(cached) else cached

    def _class(self, name: str) -> Obj | None:
        return self.classes.store.get(name) if name else None

    # --- run ------------------------------------------------------------------------------
    async def run(self) -> None:
        await self._ensure_default_class()
        resync = asyncio.create_task(self._resync(), name="persistentvolume-resync")
        try:
            await super().run()
        finally:
            resync.cancel()

    async def _ensure_default_class(self) -> None:
        if self.classes.store.get(LOCAL_PATH_CLASS) is not None:
            return
        try:
            await self.client.create(self.class_info, default_storage_class())
        except APIError as err:
            if not err.already_exists:
                log.warning("could not create the default StorageClass %s: %s", LOCAL_PATH_CLASS, err)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            for claim in self.claims.store.list():
                self.queue.add(f"pvc:{object_key(claim)}")
            for pv in self.volumes.store.list():
                self.queue.add(f"pv:{pv['metadata']['name']}")

    async def reconcile(self, key: str) -> None:
        kind, _, rest = key.partition(":")
        if kind == "pvc":
            claim = self._claim(rest)
            if claim is not None:
                await self.sync_claim(claim)
        else:
            pv = self._volume(rest)
            if pv is not None:
                await self.sync_volume(pv)

    # --- claims ---------------------------------------------------------------------------
    async def sync_claim(self, claim: Obj) -> None:
        if _annotations(claim).get(ANN_BIND_COMPLETED) is None:
            await self._sync_unbound_claim(claim)
        else:
            await self._sync_bound_claim(claim)

    async def _sync_unbound_claim(self, claim: Obj) -> None:
        recorder = self.ctx.recorder
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name:
            storage_class = self._class(claim_class(claim))
            delay = (storage_class or {}).get("volumeBindingMode") == "WaitForFirstConsumer"
            volume = find_best_match(claim, self._volume_list(), delay)
            if volume is not None:
                await self._bind(volume, claim)
                return
            if not claim_has_class(claim):
                # Retroactive default StorageClass assignment (RetroactiveDefaultStorageClass, GA).
                default = default_class(self.classes.store.list())
                if default is not None:
                    updated = copy.deepcopy(claim)
                    updated["spec"]["storageClassName"] = default["metadata"]["name"]
                    await self._update_claim(updated)
                    return
            if delay and ANN_SELECTED_NODE not in _annotations(claim):
                await self._wait_for_first_consumer_event(claim)
            elif claim_class(claim):
                await self._provision_claim(claim, storage_class)
                return
            else:
                await recorder.event(claim, "Normal", "FailedBinding",
                                     "no persistent volumes available for this claim and no storage class is set")
            await self._update_claim_status(claim, "Pending", None)
            return
        volume = self._volume(volume_name)
        if volume is None:
            await self._update_claim_status(claim, "Pending", None)  # the named volume may come later
            return
        if not (volume.get("spec") or {}).get("claimRef"):
            reason = check_volume_satisfies_claim(volume, claim)
            if reason is not None:
                await recorder.event(claim, "Warning", "VolumeMismatch",
                                     f"Cannot bind to requested volume {volume_name!r}: {reason}")
                await self._update_claim_status(claim, "Pending", None)
                return
            await self._bind(volume, claim)
        elif is_volume_bound_to_claim(volume, claim):
            await self._bind(volume, claim)
        elif ANN_BOUND_BY_CONTROLLER not in _annotations(claim):
            await self._update_claim_status(claim, "Pending", None)  # the user's pick is taken: wait
        else:
            raise RuntimeError(f"invalid binding of claim {object_key(claim)!r} to volume {volume_name!r}: "
                               f"volume already claimed by {claim_ref_key(volume)!r}")

    async def _sync_bound_claim(self, claim: Obj) -> None:
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name:
            await self._claim_lost(claim, "ClaimLost",
                                   "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!")
            return
        volume = self._volume(volume_name)
        if volume is None:
            await self._claim_lost(claim, "ClaimLost",
                                   "Bound claim has lost its PersistentVolume. Data on the volume is lost!")
            return
        ref = (volume.get("spec") or {}).get("claimRef")
        if not ref or ref.get("uid") == claim["metadata"].get("uid"):
            await self._bind(volume, claim)  # (re)binds what came unbound; a no-op when all is well
            return
        await self._claim_lost(claim, "ClaimMisbound", "Two claims are bound to the same volume, this one is bound "
                                                       "incorrectly")

    async def _claim_lost(self, claim: Obj, reason: str, message: str) -> None:
        if (claim.get("status") or {}).get("phase") == "Lost":
            return
        await self._update_claim_status(claim, "Lost", None)
        await self.ctx.recorder.event(claim, "Warning", reason, message)

    async def _wait_for_first_consumer_event(self, claim: Obj) -> None:
        namespace, name = claim["metadata"].get("namespace", ""), claim["metadata"]["name"]
        waiting = sorted(p["metadata"]["name"] for p in self.pods.store.by_index("namespace", namespace)
                         if _pod_uses_claim(p, name) and not (p.get("spec") or {}).get("nodeName")
                         and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
        if not waiting:
            await self.ctx.recorder.event(claim, "Normal", "WaitForFirstConsumer",
                                          "waiting for first consumer to be created before binding")
        elif len(waiting) == 1:
            await self.ctx.recorder.event(claim, "Normal", "WaitForPodScheduled",
                                          f"waiting for pod {waiting[0]} to be scheduled")
        else:
            await self.ctx.recorder.event(claim, "Normal", "WaitForPodScheduled",
                                          f"waiting for pods {','.join(waiting)} to be scheduled")

    # --- provisioning -------------------------------------------------------------------------
    async def _provision_claim(self, claim: Obj, storage_class: Obj | None) -> None:
        recorder = self.ctx.recorder
        class_name = claim_class(claim)
        if storage_class is None:
            await recorder.event(claim, "Warning", "ProvisioningFailed",
                                 f'storageclass.storage.k8s.io "{class_name}" not found')
            return
        provisioner = storage_class.get("provisioner") or ""
        if provisioner.startswith("kubernetes.io/"):
            # In-tree names (kubernetes.io/no-provisioner among them) have no plugin left to provision.
            await recorder.event(claim, "Warning", "ProvisioningFailed", f"no volume plugin matched name: {provisioner}")
            return
        claim = await self._set_claim_provisioner(claim, provisioner)
        if provisioner != LOCAL_PATH_PROVISIONER:
            # provisionClaimOperationExternal: the named provisioner (or an administrator) makes the volume.
            await recorder.event(claim, "Normal", "ExternalProvisioning", (
                f"Waiting for a volume to be created either by the external provisioner '{provisioner}' or "
                "manually by the system administrator. If volume creation is delayed, please verify that the "
                "provisioner is running and correctly registered."))
            await self._update_claim_status(claim, "Pending", None)
            return
        name = provisioned_volume_name(claim)
        if self._volume(name) is not None:
            return  # provisioned already; the volume's sync completes the binding
        refusal = local_path_refusal(claim, storage_class)
        if refusal is not None:
            if ANN_SELECTED_NODE in _annotations(claim):
                await self._reschedule(claim)
            await recorder.event(claim, "Warning", "ProvisioningFailed",
                                 f"Failed to provision volume with StorageClass {class_name!r}: {refusal}")
            return
        node_name = _annotations(claim)[ANN_SELECTED_NODE]
        node = self.nodes.store.get(node_name)
        if node is None:
            await recorder.event(claim, "Warning", "ProvisioningFailed",
                                 f'Failed to get target node: node "{node_name}" not found')
            raise RuntimeError(f"node {node_name!r} for claim {object_key(claim)} not found")
        volume = local_path_volume(claim, storage_class, node, self.storage_root)
        try:
            created = await self.client.create(self.pv_info, volume)
        except APIError as err:
            if not err.already_exists:
                await recorder.event(claim, "Warning", "ProvisioningFailed",
                                     f"Error creating provisioned PV object for claim {object_key(claim)}: {err}. "
                                     "Deleting the volume.")
                raise
        else:
            self._written_volumes[name] = created
            self.queue.add(f"pv:{name}")
        await recorder.event(claim, "Normal", "ProvisioningSucceeded",
                             f"Successfully provisioned volume {name} using {LOCAL_PATH_PROVISIONER}")

    async def _set_claim_provisioner(self, claim: Obj, provisioner: str) -> Obj:
        annotations = _annotations(claim)
        if annotations.get(ANN_STORAGE_PROVISIONER) == provisioner and \
                annotations.get(ANN_BETA_STORAGE_PROVISIONER) == provisioner:
            return claim
        updated = copy.deepcopy(claim)
        updated["metadata"].setdefault("annotations", {}).update(
            {ANN_STORAGE_PROVISIONER: provisioner, ANN_BETA_STORAGE_PROVISIONER: provisioner})
        return await self._update_claim(updated)

    async def _reschedule(self, claim: Obj) -> None:
        """rescheduleProvisioning: drop the selected node so that the scheduler picks again."""
        updated = copy.deepcopy(claim)
        updated["metadata"]["annotations"].pop(ANN_SELECTED_NODE, None)
        await self._update_claim(updated)

    # --- volumes --------------------------------------------------------------------------
    async def sync_volume(self, volume: Obj) -> None:
        ref = (volume.get("spec") or {}).get("claimRef")
        if not ref or not ref.get("uid"):
            # Unused, or only reserved for a claim whose sync will bind it.
            await self._update_volume_phase(volume, "Available")
            return
        key = f"{ref.get('namespace')}/{ref.get('name')}"
        claim = self._claim(key)
        phase = (volume.get("status") or {}).get("phase")
        if claim is None and phase not in ("Released", "Failed"):
            claim = await self._get_claim(key)  # the cache may lag behind a claim that was just created
        if claim is not None and claim["metadata"].get("uid") != ref.get("uid"):
            claim = await self._get_claim(key)
            if claim is not None and claim["metadata"].get("uid") != ref.get("uid"):
                claim = None  # the claim was deleted and another made with the same name
        if claim is None:
            if phase not in ("Released", "Failed"):
                volume = await self._update_volume_phase(volume, "Released")
            await self._reclaim(volume)
            return
        claim_volume = (claim.get("spec") or {}).get("volumeName")
        if not claim_volume:
            if volume_mode_mismatch(claim, volume):
                await self.ctx.recorder.event(volume, "Warning", "VolumeMismatch", (
                    f"Cannot bind PersistentVolume to requested PersistentVolumeClaim {claim['metadata']['name']!r} "
                    "due to incompatible volumeMode."))
                await self.ctx.recorder.event(claim, "Warning", "VolumeMismatch", (
                    f"Cannot bind PersistentVolume {volume['metadata']['name']!r} to requested "
                    "PersistentVolumeClaim due to incompatible volumeMode."))
                return
            self.queue.add(f"pvc:{key}")  # the claim's sync finishes the binding
            return
        if claim_volume == volume["metadata"]["name"]:
            await self._update_volume_phase(volume, "Bound")
            return
        # The claim is bound to another volume.
        annotations = _annotations(volume)
        if ANN_DYNAMICALLY_PROVISIONED in annotations and \
                (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete":
            if phase not in ("Released", "Failed"):
                volume = await self._update_volume_phase(volume, "Released")
            await self._reclaim(volume)
            return
        await self._unbind_volume(volume)

    async def _get_claim(self, key: str) -> Obj | None:
        namespace, name = split_key(key)
        try:
            return await self.client.get(self.pvc_info, name, namespace)
        except APIError as err:
            if err.not_found:
                return None
            raise

    async def _unbind_volume(self, volume: Obj) -> None:
        """A volume the controller bound is freed; one the user pre-bound keeps its claim name only."""
        updated = copy.deepcopy(volume)
        if ANN_BOUND_BY_CONTROLLER in _annotations(volume):
            updated["spec"].pop("claimRef", None)
            updated["metadata"]["annotations"].pop(ANN_BOUND_BY_CONTROLLER, None)
        else:
            updated["spec"]["claimRef"].pop("uid", None)
        updated = await self._update_volume(updated)
        await self._update_volume_phase(updated, "Available")

    async def _reclaim(self, volume: Obj) -> None:
        if volume["metadata"].get("deletionTimestamp"):
            return  # deleted already, its finalizers still at work
        policy = (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Retain":
            return  # kept, with the claimRef of its claim, until an administrator frees it
        if policy == "Recycle":
            await self._update_volume_phase(volume, "Failed", "No recycler plugin found for the volume!",
                                            event=("Warning", "VolumeFailedRecycle"))
            return
        provisioner = _annotations(volume).get(ANN_DYNAMICALLY_PROVISIONED)
        if provisioner and provisioner != LOCAL_PATH_PROVISIONER:
            return  # an external deleter's volume
        if provisioner != LOCAL_PATH_PROVISIONER:
            await self._update_volume_phase(
                volume, "Failed", f'error getting deleter volume plugin for volume "{volume["metadata"]["name"]}": '
                "no deletable volume plugin matched", event=("Warning", "VolumeFailedDelete"))
            return
        # isVolumeReleased: a claim may have taken the volume again meanwhile.
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        claim = self._claim(f"{ref.get('namespace')}/{ref.get('name')}")
        if claim is not None and claim["metadata"].get("uid") == ref.get("uid"):
            return
        try:
            await self.client.delete(self.pv_info, volume["metadata"]["name"],
                                     preconditions={"uid": volume["metadata"]["uid"]})
        except APIError as err:
            if err.not_found:
                return
            await self.ctx.recorder.event(volume, "Warning", "VolumeFailedDelete", str(err))
            raise
        self._written_volumes.pop(volume["metadata"]["name"], None)

    # --- binding ------------------------------------------------------------------------------
    async def _bind(self, volume: Obj, claim: Obj) -> None:
        """bind: volume claimRef, volume Bound, claim volumeName + annotations, claim Bound, in this order."""
        volume = await self._bind_volume_to_claim(volume, claim)
        volume = await self._update_volume_phase(volume, "Bound")
        claim = await self._bind_claim_to_volume(claim, volume)
        await self._update_claim_status(claim, "Bound", volume)

    async def _bind_volume_to_claim(self, volume: Obj, claim: Obj) -> Obj:
        set_bound_by_controller = not is_volume_bound_to_claim(volume, claim)
        updated = copy.deepcopy(volume)
        dirty = False
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        meta = claim["metadata"]
        if (ref.get("name"), ref.get("namespace"), ref.get("uid")) != (meta["name"], meta.get("namespace"),
                                                                        meta.get("uid")):
            updated["spec"]["claimRef"] = claim_ref(claim)
            dirty = True
        if set_bound_by_controller and ANN_BOUND_BY_CONTROLLER not in _annotations(volume):
            updated["metadata"].setdefault("annotations", {})[ANN_BOUND_BY_CONTROLLER] = "yes"
            dirty = True
        return await self._update_volume(updated) if dirty else volume

    async def _bind_claim_to_volume(self, claim: Obj, volume: Obj) -> Obj:
        updated = copy.deepcopy(claim)
        annotations = updated["metadata"].setdefault("annotations", {})
        dirty = False
        if (claim.get("spec") or {}).get("volumeName") != volume["metadata"]["name"]:
            updated["spec"]["volumeName"] = volume["metadata"]["name"]
            annotations.setdefault(ANN_BOUND_BY_CONTROLLER, "yes")
            dirty = True
        if ANN_BIND_COMPLETED not in annotations:
            annotations[ANN_BIND_COMPLETED] = "yes"
            dirty = True
        return await self._update_claim(updated) if dirty else claim

    # --- writes -------------------------------------------------------------------------------
    async def _update_volume(self, volume: Obj) -> Obj:
        updated = await self.client.update(self.pv_info, volume)
        self._written_volumes[volume["metadata"]["name"]] = updated
        return updated

    async def _update_volume_phase(self, volume: Obj, phase: str, message: str = "",
                                   event: tuple[str, str] | None = None) -> Obj:
        status = volume.get("status") or {}
        if status.get("phase") == phase:
            return volume
        updated = copy.deepcopy(volume)
        new_status = updated.setdefault("status", {})
        new_status["phase"] = phase
        new_status["lastPhaseTransitionTime"] = format_time(now())
        if message:
            new_status["message"] = message
        else:
            new_status.pop("message", None)
        result = await self.client.update(self.pv_info, updated, "status")
        self._written_volumes[volume["metadata"]["name"]] = result
        if event is not None:
            await self.ctx.recorder.event(result, event[0], event[1], message)
        return result

    async def _update_claim(self, claim: Obj) -> Obj:
        updated = await self.client.update(self.pvc_info, claim)
        self._written_claims[object_key(updated)] = updated
        return updated

    async def _update_claim_status(self, claim: Obj, phase: str, volume: Obj | None) -> Obj:
        status = claim.get("status") or {}
        new = copy.deepcopy(status)
        new["phase"] = phase
        if volume is None:
            new.pop("accessModes", None)
            new.pop("capacity", None)
        else:
            new["accessModes"] = list((volume.get("spec") or {}).get("accessModes") or [])
            capacity = (volume.get("spec") or {}).get("capacity") or {}
            # Capacity is taken when the claim becomes Bound, not later (a resize may differ on purpose).
            if status.get("phase") != phase and storage(status.get("capacity")) != storage(capacity):
                new["capacity"] = dict(capacity)
        if new == status:
            return claim
        updated = await self.client.update(self.pvc_info, {**claim, "status": new}, "status")
        self._written_claims[object_key(updated)] = updated
        return updated


def claim_ref_key(volume: Obj) -> str:
    ref = (volume.get("spec") or {}).get("claimRef") or {}
    return f"{ref.get('namespace')}/{ref.get('name')}"
