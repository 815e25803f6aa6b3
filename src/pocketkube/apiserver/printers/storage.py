"""Printers for storage.k8s.io's CSI kinds and VolumeAttributesClass, and resource.k8s.io's DRA kinds."""

from __future__ import annotations

from datetime import datetime

from pocketkube.apiserver.printers.base import (
    AGE,
    NAME,
    NONE,
    UNSET,
    Cell,
    Obj,
    Printer,
    age,
    column,
    dig,
    meta,
    name,
    quantity,
)
from pocketkube.apiserver.printers.docs import DOCS

# --- CSIDriver, CSINode, CSIStorageCapacity -------------------------------------------------------

_CSI_DRIVER_COLUMNS = (
    NAME,
    column("AttachRequired", "boolean", DOCS["storage/v1.CSIDriverSpec.attachRequired"]),
    column("PodInfoOnMount", "boolean", DOCS["storage/v1.CSIDriverSpec.podInfoOnMount"]),
    column("StorageCapacity", "boolean", DOCS["storage/v1.CSIDriverSpec.storageCapacity"]),
    column("TokenRequests", "string", DOCS["storage/v1.CSIDriverSpec.tokenRequests"]),
    column("RequiresRepublish", "boolean", DOCS["storage/v1.CSIDriverSpec.requiresRepublish"]),
    column("Modes", "string", DOCS["storage/v1.CSIDriverSpec.volumeLifecycleModes"]),
    AGE,
)


def _csi_driver_cells(driver: Obj, now: datetime) -> list[Cell]:
    spec = driver.get("spec") or {}
    requests = spec.get("tokenRequests")
    tokens = UNSET if requests is None else ",".join(r.get("audience", "") for r in requests)
    attach = spec.get("attachRequired")
    return [name(driver), True if attach is None else bool(attach), bool(spec.get("podInfoOnMount")),
            bool(spec.get("storageCapacity")), tokens, bool(spec.get("requiresRepublish")),
            ",".join(spec.get("volumeLifecycleModes") or []) or NONE, age(driver, now)]


_CSI_NODE_COLUMNS = (
    NAME,
    column("Drivers", "integer", "Drivers indicates the number of CSI drivers registered on the node"),
    AGE,
)


def _csi_node_cells(node: Obj, now: datetime) -> list[Cell]:
    return [name(node), len(dig(node, "spec", "drivers") or []), age(node, now)]


_CSI_STORAGE_CAPACITY_COLUMNS = (
    NAME,
    column("StorageClassName", "string", DOCS["storage/v1.CSIStorageCapacity.storageClassName"]),
    column("Capacity", "string", DOCS["storage/v1.CSIStorageCapacity.capacity"]),
)


def _csi_storage_capacity_cells(capacity: Obj, now: datetime) -> list[Cell]:
    return [name(capacity), capacity.get("storageClassName", ""), quantity(capacity.get("capacity"), nil=UNSET)]


# --- VolumeAttachment, VolumeAttributesClass -----------------------------------------------------

_VOLUME_ATTACHMENT_COLUMNS = (
    NAME,
    column("Attacher", "string", DOCS["storage/v1.VolumeAttachmentSpec.attacher"], fmt="name"),
    column("PV", "string", DOCS["storage/v1.VolumeAttachmentSource.persistentVolumeName"]),
    column("Node", "string", DOCS["storage/v1.VolumeAttachmentSpec.nodeName"]),
    column("Attached", "boolean", DOCS["storage/v1.VolumeAttachmentStatus.attached"]),
    AGE,
)


def _volume_attachment_cells(attachment: Obj, now: datetime) -> list[Cell]:
    spec = attachment.get("spec") or {}
    return [name(attachment), spec.get("attacher", ""), dig(spec, "source", "persistentVolumeName") or "",
            spec.get("nodeName", ""), bool(dig(attachment, "status", "attached")), age(attachment, now)]


_VOLUME_ATTRIBUTES_CLASS_COLUMNS = (
    NAME,
    column("DriverName", "string", DOCS["storage/v1.VolumeAttributesClass.driverName"]),
    AGE,
)
_DEFAULT_VOLUME_ATTRIBUTES_CLASS = "volumeattributesclass.kubernetes.io/is-default-class"


def _volume_attributes_class_cells(vac: Obj, now: datetime) -> list[Cell]:
    is_default = (meta(vac).get("annotations") or {}).get(_DEFAULT_VOLUME_ATTRIBUTES_CLASS) == "true"
    return [name(vac) + (" (default)" if is_default else ""), vac.get("driverName", ""), age(vac, now)]


# --- resource.k8s.io -----------------------------------------------------------------------------

_NAME_AGE_COLUMNS = (NAME, AGE)


def _name_age_cells(obj: Obj, now: datetime) -> list[Cell]:
    return [name(obj), age(obj, now)]


_RESOURCE_CLAIM_COLUMNS = (
    NAME,
    column("State", "string", "A summary of the current state (allocated, pending, reserved, etc.)."),
    AGE,
)


def resource_claim_state(claim: Obj) -> str:
    """resourceClaimState: deleted, then pending or allocated (and reserved)."""
    states = ["deleted"] if meta(claim).get("deletionTimestamp") else []
    if dig(claim, "status", "allocation") is None:
        if not states:
            states.append("pending")
    else:
        states.append("allocated")
        if dig(claim, "status", "reservedFor"):
            states.append("reserved")
    return ",".join(states)


def _resource_claim_cells(claim: Obj, now: datetime) -> list[Cell]:
    return [name(claim), resource_claim_state(claim), age(claim, now)]


_RESOURCE_SLICE_COLUMNS = (
    NAME,
    column("Node", "string", DOCS["resource/v1beta1.ResourceSliceSpec.nodeName"]),
    column("Driver", "string", DOCS["resource/v1beta1.ResourceSliceSpec.driver"]),
    column("Pool", "string", DOCS["resource/v1beta1.ResourcePool.name"]),
    AGE,
)


def _resource_slice_cells(resource_slice: Obj, now: datetime) -> list[Cell]:
    spec = resource_slice.get("spec") or {}
    return [name(resource_slice), spec.get("nodeName") or "", spec.get("driver", ""),
            dig(spec, "pool", "name") or "", age(resource_slice, now)]


PRINTERS: dict[tuple[str, str, str], Printer] = {
    ("storage.k8s.io", "v1", "CSIDriver"): Printer(_CSI_DRIVER_COLUMNS, _csi_driver_cells),
    ("storage.k8s.io", "v1", "CSINode"): Printer(_CSI_NODE_COLUMNS, _csi_node_cells),
    ("storage.k8s.io", "v1", "CSIStorageCapacity"): Printer(_CSI_STORAGE_CAPACITY_COLUMNS,
                                                            _csi_storage_capacity_cells),
    ("storage.k8s.io", "v1", "VolumeAttachment"): Printer(_VOLUME_ATTACHMENT_COLUMNS, _volume_attachment_cells),
    ("storage.k8s.io", "v1", "VolumeAttributesClass"): Printer(_VOLUME_ATTRIBUTES_CLASS_COLUMNS,
                                                               _volume_attributes_class_cells),
    ("resource.k8s.io", "v1", "DeviceClass"): Printer(_NAME_AGE_COLUMNS, _name_age_cells),
    ("resource.k8s.io", "v1", "ResourceClaim"): Printer(_RESOURCE_CLAIM_COLUMNS, _resource_claim_cells),
    ("resource.k8s.io", "v1", "ResourceClaimTemplate"): Printer(_NAME_AGE_COLUMNS, _name_age_cells),
    ("resource.k8s.io", "v1", "ResourceSlice"): Printer(_RESOURCE_SLICE_COLUMNS, _resource_slice_cells),
}
