"""storage.k8s.io/v1 CSIDriver, CSINode, CSIStorageCapacity, VolumeAttachment and VolumeAttributesClass.

Stored and validated only: this server runs no CSI drivers, so nothing attaches volumes or reports
capacity. (StorageClass lives in cluster.py.)
"""

from __future__ import annotations

from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.api.selectors import validate_label_selector
from pocketkube.apiserver.strategy import Obj, Strategy

from . import _fields as f
from ._access import as_dict, as_int, as_list, as_str, spec_of

CSI_DRIVER_NAME_MAX = 63
CSI_NODE_ID_MAX = 192
FS_GROUP_POLICIES = ["File", "None", "ReadWriteOnceWithFSType"]
LIFECYCLE_MODES = ["Persistent", "Ephemeral"]
MIN_TOKEN_SECONDS, MAX_TOKEN_SECONDS = 600, 1 << 32
MAX_PARAMETERS, MAX_PARAMETERS_SIZE = 512, 256 * (1 << 10)
MAX_ATTACHMENT_METADATA_SIZE, MAX_VOLUME_ERROR_MESSAGE = 256 * (1 << 10), 1024
MIN_ALLOCATABLE_UPDATE_PERIOD = 10


def csi_driver_name_causes(name: str, path: str) -> list[Cause]:
    """core validation.ValidateCSIDriverName: a DNS subdomain (case aside) of at most 63 characters."""
    errs: list[Cause] = [] if name else [v.required(path)]
    if len(name) > CSI_DRIVER_NAME_MAX:
        errs.append(v.too_long(path, CSI_DRIVER_NAME_MAX))
    errs.extend(v.invalid_value(path, name, m) for m in v.is_dns1123_subdomain(name.lower()))
    return errs


def _nonnegative_quantity(value: Any, path: str) -> list[Cause]:
    amount = f.parse_quantity_value(value)
    if amount is not None and amount < 0:
        return [v.invalid_value(path, value, v.IS_NEGATIVE_ERROR_MSG)]
    return []


# --- CSIDriver ---------------------------------------------------------------------------------------

def _validate_token_requests(requests: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    audiences: set[str] = set()
    for i, request in enumerate(requests):
        request = as_dict(request)
        audience = as_str(request.get("audience"))
        if audience in audiences:
            errs.append(v.duplicate(f"{path}[{i}].audience", audience))
            continue
        audiences.add(audience)
        seconds = as_int(request.get("expirationSeconds"))
        if seconds is not None and seconds < MIN_TOKEN_SECONDS:
            errs.append(v.invalid_value(f"{path}[{i}].expirationSeconds", seconds,
                                        "may not specify a duration less than 10 minutes"))
        if seconds is not None and seconds > MAX_TOKEN_SECONDS:
            errs.append(v.invalid_value(f"{path}[{i}].expirationSeconds", seconds,
                                        "may not specify a duration larger than 2^32 seconds"))
    return errs


class CSIDriverStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        """SetDefaults_CSIDriver (SELinuxMountReadWriteOncePod is on, so seLinuxMount defaults too)."""
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        for key, value in (("attachRequired", True), ("podInfoOnMount", False), ("storageCapacity", False),
                           ("fsGroupPolicy", "ReadWriteOnceWithFSType"), ("requiresRepublish", False),
                           ("seLinuxMount", False)):
            if spec.get(key) is None:
                spec[key] = value
        if not spec.get("volumeLifecycleModes"):
            spec["volumeLifecycleModes"] = ["Persistent"]

    def validate(self, obj: Obj) -> list[Cause]:
        spec, path = spec_of(obj), "spec"
        errs: list[Cause] = []
        for key, field_path in (("attachRequired", "attachedRequired"), ("podInfoOnMount", "podInfoOnMount"),
                                ("storageCapacity", "storageCapacity")):
            if spec.get(key) is None:
                errs.append(v.required(f"{path}.{field_path}"))
        policy = spec.get("fsGroupPolicy")
        if policy is not None and policy not in FS_GROUP_POLICIES:
            errs.append(v.not_supported(f"{path}.fsGroupPolicy", policy, FS_GROUP_POLICIES))
        errs += _validate_token_requests(as_list(spec.get("tokenRequests")), f"{path}.tokenRequests")
        errs.extend(v.not_supported(f"{path}.volumeLifecycleModes", mode, LIFECYCLE_MODES)
                    for mode in as_list(spec.get("volumeLifecycleModes")) if mode not in LIFECYCLE_MODES)
        if spec.get("seLinuxMount") is None:
            errs.append(v.required(f"{path}.seLinuxMount"))
        period = as_int(spec.get("nodeAllocatableUpdatePeriodSeconds"))
        if period is not None and period < MIN_ALLOCATABLE_UPDATE_PERIOD:
            errs.append(v.invalid_value(f"{path}.nodeAllocatableUpdatePeriodSeconds", period,
                                        "must be greater than or equal to 10 seconds"))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        new_spec, old_spec = spec_of(new), spec_of(old)
        return (self.validate(new)
                + f.check_immutable(new_spec.get("attachRequired"), old_spec.get("attachRequired"),
                                    "spec.attachedRequired")
                + f.check_immutable(new_spec.get("volumeLifecycleModes"), old_spec.get("volumeLifecycleModes"),
                                    "spec.volumeLifecycleModes"))


# --- CSINode -----------------------------------------------------------------------------------------

def _validate_csi_node_driver(driver: Obj, path: str, seen: set[str]) -> list[Cause]:
    name = as_str(driver.get("name"))
    errs = csi_driver_name_causes(name, f"{path}.name")
    node_id = as_str(driver.get("nodeID"))
    if not node_id:
        errs.append(v.required(f"{path}.nodeID"))
    if len(node_id) > CSI_NODE_ID_MAX:
        errs.append(v.invalid_value(f"{path}.nodeID", node_id, f"must be {CSI_NODE_ID_MAX} characters or less"))
    count = as_int(as_dict(driver.get("allocatable")).get("count"))
    errs += f.non_negative(count, f"{path}.allocatable.count")
    if name in seen:
        errs.append(v.duplicate(f"{path}.name", name))
    seen.add(name)
    keys: set[str] = set()
    for key in as_list(driver.get("topologyKeys")):
        key = as_str(key)
        if not key:
            errs.append(v.required(path))
        if key in keys:
            errs.append(v.duplicate(path, key))
        keys.add(key)
        errs += f.qualified_name_causes(key, path)
    return errs


class CSINodeStrategy(Strategy):
    name_validator = "dns1123subdomain"  # the node's name

    def validate(self, obj: Obj) -> list[Cause]:
        errs: list[Cause] = []
        seen: set[str] = set()
        for i, driver in enumerate(as_list(spec_of(obj).get("drivers"))):
            errs += _validate_csi_node_driver(as_dict(driver), f"spec.drivers[{i}]", seen)
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        """A registered driver never changes but for its allocatable count (MutableCSINodeAllocatableCount)."""
        errs = self.validate(new)
        new_drivers = {as_str(as_dict(d).get("name")): as_dict(d) for d in as_list(spec_of(new).get("drivers"))}
        for old_driver in as_list(spec_of(old).get("drivers")):
            old_driver = as_dict(old_driver)
            new_driver = new_drivers.get(as_str(old_driver.get("name")))
            if new_driver is None:
                continue
            before = {k: val for k, val in old_driver.items() if k != "allocatable"}
            after = {k: val for k, val in new_driver.items() if k != "allocatable"}
            errs += f.check_immutable(after, before, "spec.drivers")
        return errs


# --- CSIStorageCapacity ------------------------------------------------------------------------------

class CSIStorageCapacityStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        errs = validate_label_selector(obj.get("nodeTopology"), "nodeTopology")
        class_name = as_str(obj.get("storageClassName"))
        errs.extend(v.invalid_value("storageClassName", class_name, m) for m in v.is_dns1123_subdomain(class_name))
        return errs + _nonnegative_quantity(obj.get("capacity"), "capacity")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        """What the driver was asked about (topology and class) never changes; the answers do."""
        errs: list[Cause] = []
        if new.get("nodeTopology") != old.get("nodeTopology"):
            errs.append(v.invalid_value("nodeTopology", new.get("nodeTopology"), v.FIELD_IMMUTABLE_ERROR_MSG))
        if new.get("storageClassName") != old.get("storageClassName"):
            errs.append(v.invalid_value("storageClassName", new.get("storageClassName"),
                                        v.FIELD_IMMUTABLE_ERROR_MSG))
        return errs


# --- VolumeAttachment --------------------------------------------------------------------------------

def _validate_volume_error(error: Any, path: str) -> list[Cause]:
    if not isinstance(error, dict):
        return []
    errs: list[Cause] = []
    if len(as_str(error.get("message"))) > MAX_VOLUME_ERROR_MESSAGE:
        errs.append(v.too_long(f"{path}.message", MAX_ATTACHMENT_METADATA_SIZE))
    code = as_int(error.get("errorCode"))
    if code is not None and code < 0:
        errs.append(v.invalid_value(f"{path}.errorCode", code, v.inclusive_range_error(0, 2**31 - 1)))
    return errs


def _validate_attachment_status(status: Obj) -> list[Cause]:
    metadata = as_dict(status.get("attachmentMetadata"))
    errs: list[Cause] = []
    if sum(len(k) + len(as_str(val)) for k, val in metadata.items()) > MAX_ATTACHMENT_METADATA_SIZE:
        errs.append(v.too_long("status.attachmentMetadata", MAX_ATTACHMENT_METADATA_SIZE))
    return (errs + _validate_volume_error(status.get("attachError"), "status.attachError")
            + _validate_volume_error(status.get("detachError"), "status.detachError"))


class VolumeAttachmentStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        spec = spec_of(obj)
        attacher = as_str(spec.get("attacher"))
        errs: list[Cause] = [] if attacher else [v.required("spec.attacher")]
        source, source_path = as_dict(spec.get("source")), "spec.source"
        pv_name, inline = source.get("persistentVolumeName"), source.get("inlineVolumeSpec")
        exactly_one = "must specify exactly one of inlineVolumeSpec and persistentVolumeName"
        if pv_name is None and inline is None:
            errs.append(v.required(source_path, exactly_one))
        elif pv_name is not None and inline is not None:
            errs.append(v.forbidden(source_path, exactly_one))
        elif pv_name is not None and not pv_name:
            errs.append(v.required(f"{source_path}.persistentVolumeName", "must specify non empty "
                                                                          "persistentVolumeName"))
        node = as_str(spec.get("nodeName"))
        errs.extend(v.invalid_value("spec.nodeName", node, m) for m in v.is_dns1123_subdomain(node))
        errs += _validate_attachment_status(as_dict(obj.get("status")))
        # v1's extra checks (ValidateVolumeAttachmentV1)
        if attacher:
            errs += csi_driver_name_causes(attacher, "spec.attacher")
        if pv_name:
            errs.extend(v.invalid_value("spec.source.persistentVolumeName", pv_name, m)
                        for m in v.is_dns1123_subdomain(as_str(pv_name)))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = self.validate(new)
        if new.get("spec") != old.get("spec"):
            errs.append(v.invalid_value("spec", new.get("spec"), v.FIELD_IMMUTABLE_ERROR_MSG))
        return errs

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        return _validate_attachment_status(as_dict(new.get("status")))


# --- VolumeAttributesClass ---------------------------------------------------------------------------

def _validate_parameters(params: dict[str, Any], path: str) -> list[Cause]:
    if len(params) > MAX_PARAMETERS:
        return [v.too_long(path, MAX_PARAMETERS)]
    errs = [v.invalid_value(path, key, "field can not be empty.") for key in params if not key]
    if sum(len(key) + len(as_str(val)) for key, val in params.items()) > MAX_PARAMETERS_SIZE:
        errs.append(v.too_long(path, MAX_PARAMETERS_SIZE))
    if not params:
        errs.append(v.required(path, "must contain at least one key/value pair"))
    return errs


class VolumeAttributesClassStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        driver = as_str(obj.get("driverName"))
        errs = f.qualified_name_causes(driver.lower(), "driverName") if driver else [v.required("driverName")]
        return errs + _validate_parameters(as_dict(obj.get("parameters")), "parameters")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs: list[Cause] = []
        if new.get("driverName") != old.get("driverName"):
            errs.append(v.forbidden("driverName", "updates to driverName are forbidden."))
        if new.get("parameters") != old.get("parameters"):
            errs.append(v.forbidden("parameters", "updates to parameters are forbidden."))
        return errs + self.validate(new)
