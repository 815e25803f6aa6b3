"""persistentVolumeClaim volumes: the claim must be bound, its volume must point back at it (the kubelet's
desired-state populator checks), and the volume must be one this node can mount: a hostPath or local
PersistentVolume, whose path containers bind-mount. Volumes of the built-in local-path provisioner
get their directory on first use, world-writable as rancher's local-path-provisioner makes it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pocketkube.api import localpath
from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.client.rest import APIError, Client
from pocketkube.kubelet.volumes import hostpath
from pocketkube.kubelet.volumes.model import HOST_PATH, LOCAL_VOLUME, Obj, SourceError

_catalog = ResourceCatalog()
PVCS = _catalog.resource("", "v1", "persistentvolumeclaims")
PVS = _catalog.resource("", "v1", "persistentvolumes")
STORAGECLASSES = _catalog.resource("storage.k8s.io", "v1", "storageclasses")
LOCAL_PATH_PROVISIONER = localpath.PROVISIONER
ANN_PROVISIONED_BY = localpath.ANN_PROVISIONED_BY
LOCAL_PATH_DIR_MODE = 0o777
ANN_VOLUME_GID = "pv.beta.kubernetes.io/gid"


class ClaimError(SourceError):
    """The claim cannot be turned into a volume (upstream: "error processing PVC ns/name: ...")."""


@dataclass
class ClaimVolume:
    pv_name: str
    plugin: str
    path: Path
    read_only: bool


async def _get(client: Client, info: ResourceInfo, name: str, namespace: str, what: str) -> Obj:
    try:
        return await client.get(info, name, namespace)
    except APIError as err:
        raise ClaimError(f"failed to fetch {what} from API server. err={err}") from err


async def bound_volume(client: Client, namespace: str, claim_name: str) -> Obj:
    """The PersistentVolume bound to the claim, checked as upstream's getPVCExtractPV and getPVSpec."""
    claim = await _get(client, PVCS, claim_name, namespace, f"PVC {namespace}/{claim_name}")
    if claim["metadata"].get("deletionTimestamp"):
        raise ClaimError(f"can't start pod because PVC {namespace}/{claim_name} is being deleted")
    phase = (claim.get("status") or {}).get("phase") or ""
    volume_name = (claim.get("spec") or {}).get("volumeName") or ""
    if phase != "Bound" or not volume_name:
        raise ClaimError(f'PVC {namespace}/{claim_name} has non-bound phase ("{phase}") or empty '
                         f'pvc.Spec.VolumeName ("{volume_name}")')
    pv = await _get(client, PVS, volume_name, "", f'PV "{volume_name}"')
    ref = (pv.get("spec") or {}).get("claimRef")
    if not ref:
        raise ClaimError(f'found PV object "{volume_name}" but it has a nil pv.Spec.ClaimRef indicating it is not '
                         "yet bound to the claim")
    if ref.get("uid") != claim["metadata"].get("uid"):
        raise ClaimError(f'found PV object "{volume_name}" but its pv.Spec.ClaimRef.UID ("{ref.get("uid")}") does '
                         f'not point to claim.UID ("{claim["metadata"].get("uid")}")')
    return pv


def volume_gid(pv: Obj) -> int | None:
    """The group a PersistentVolume asks its users to join, from its annotation; a value that is not a
    number is ignored, as upstream logs and ignores it."""
    value = ((pv.get("metadata") or {}).get("annotations") or {}).get(ANN_VOLUME_GID)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def is_local_path_volume(client: Client, pv: Obj) -> bool:
    annotations = pv["metadata"].get("annotations") or {}
    if annotations.get(ANN_PROVISIONED_BY) == LOCAL_PATH_PROVISIONER:
        return True
    class_name = (pv.get("spec") or {}).get("storageClassName")
    if not class_name:
        return False
    try:
        storage_class = await client.get(STORAGECLASSES, class_name)
    except APIError as err:
        if err.not_found:
            return False
        raise SourceError(f"failed to get StorageClass {class_name}: {err}") from err
    return storage_class.get("provisioner") == LOCAL_PATH_PROVISIONER


def prepare_volume(pv: Obj, read_only: bool, local_path: bool) -> ClaimVolume:
    """Check (and for local-path volumes create) the volume's path on this node. Blocking: run in a thread."""
    name, spec = pv["metadata"]["name"], pv.get("spec") or {}
    if (spec.get("volumeMode") or "Filesystem") != "Filesystem":
        raise SourceError(f"PersistentVolume {name} has volumeMode {spec['volumeMode']}: only Filesystem volumes "
                          "can be mounted on this node")
    if spec.get("hostPath"):
        path = spec["hostPath"].get("path") or ""
        hostpath.validate_no_backsteps(path)
        if local_path and not os.path.lexists(path):
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            os.mkdir(path)
            os.chmod(path, LOCAL_PATH_DIR_MODE)  # exactly, whatever the umask
        hostpath.check_type(path, spec["hostPath"].get("type"))
        return ClaimVolume(name, HOST_PATH, Path(path), read_only)
    if spec.get("local"):
        path = spec["local"].get("path") or ""
        if not os.path.isdir(path):
            raise SourceError(f"local volume path {path} of PersistentVolume {name} is not a directory on this node")
        return ClaimVolume(name, LOCAL_VOLUME, Path(path), read_only)
    kinds = sorted(k for k, v in spec.items() if isinstance(v, dict) and k not in ("capacity", "claimRef",
                                                                                   "nodeAffinity"))
    raise SourceError(f"PersistentVolume {name} ({', '.join(kinds) or 'no source'}) cannot be mounted on this node: "
                      "only hostPath and local volumes can")
