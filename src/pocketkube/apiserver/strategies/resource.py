"""resource.k8s.io/v1 (dynamic resource allocation): DeviceClass, ResourceClaim, ResourceClaimTemplate and
ResourceSlice.

Stored and validated only: nothing allocates claims yet (the scheduler does not read them) and CEL
selectors are checked for presence, not compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.apiserver.strategy import FieldGetter, Obj, Strategy

from . import _fields as f
from ._access import as_dict, as_int, as_list, as_str, spec_of

ALLOCATION_MODES = ["All", "ExactCount"]
MAX_REQUESTS, MAX_SUBREQUESTS = 32, 8
MAX_SELECTORS, MAX_CONFIGS = 32, 32
MAX_DEVICES_PER_SLICE = 128
DRIVER_NAME_MAX = 63
POOL_NAME_MAX = 253
NODE_PLACEMENT = "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required"


def _driver_name_causes(name: str, path: str) -> list[Cause]:
    """validateDriverName: a lower-case DNS subdomain of at most 63 characters."""
    if not name:
        return [v.required(path)]
    errs = [v.too_long(path, DRIVER_NAME_MAX)] if len(name) > DRIVER_NAME_MAX else []
    return errs + f.dns_subdomain_causes(name, path)


def _validate_unique_named(items: list[Any], path: str, max_items: int,
                           validate_item: Callable[[Obj, str], list[Cause]]) -> list[Cause]:
    """validateSet keyed by name: at most max_items, names unique, each item valid."""
    errs = [v.too_many(path, len(items), max_items)] if len(items) > max_items else []
    seen: set[str] = set()
    for i, item in enumerate(items):
        item = as_dict(item)
        errs += validate_item(item, f"{path}[{i}]")
        name = as_str(item.get("name"))
        if name in seen:
            errs.append(v.duplicate(f"{path}[{i}].name", name))
        seen.add(name)
    return errs


def _validate_selectors(selectors: list[Any], path: str) -> list[Cause]:
    errs = [v.too_many(path, len(selectors), MAX_SELECTORS)] if len(selectors) > MAX_SELECTORS else []
    for i, selector in enumerate(selectors):
        cel = as_dict(selector).get("cel")
        if cel is None:
            errs.append(v.required(f"{path}[{i}].cel"))
        elif not as_str(as_dict(cel).get("expression")).strip():
            errs.append(v.required(f"{path}[{i}].cel.expression"))
    return errs


def _validate_opaque_configs(configs: list[Any], path: str) -> list[Cause]:
    errs = [v.too_many(path, len(configs), MAX_CONFIGS)] if len(configs) > MAX_CONFIGS else []
    for i, config in enumerate(configs):
        opaque = as_dict(config).get("opaque")
        if opaque is None:
            errs.append(v.required(f"{path}[{i}].opaque"))
            continue
        errs += _driver_name_causes(as_str(as_dict(opaque).get("driver")), f"{path}[{i}].opaque.driver")
        if as_dict(opaque).get("parameters") is None:
            errs.append(v.required(f"{path}[{i}].opaque.parameters"))
    return errs


# --- claims ------------------------------------------------------------------------------------------

def _default_exact(request: Obj) -> None:
    """SetDefaults_ExactDeviceRequest / SetDefaults_DeviceSubRequest."""
    if not request.get("allocationMode"):
        request["allocationMode"] = "ExactCount"
    if request["allocationMode"] == "ExactCount" and not request.get("count"):
        request["count"] = 1
    for toleration in as_list(request.get("tolerations")):
        if isinstance(toleration, dict) and not toleration.get("operator"):
            toleration["operator"] = "Equal"


def default_claim_spec(spec: Any) -> None:
    for request in as_list(as_dict(as_dict(spec).get("devices")).get("requests")):
        if not isinstance(request, dict):
            continue
        if isinstance(request.get("exactly"), dict):
            _default_exact(request["exactly"])
        for sub in as_list(request.get("firstAvailable")):
            if isinstance(sub, dict):
                _default_exact(sub)


def _validate_exact(request: Obj, path: str) -> list[Cause]:
    """What ExactDeviceRequest and DeviceSubRequest share: a class, selectors and a count."""
    class_name = as_str(request.get("deviceClassName"))
    errs = f.dns_subdomain_causes(class_name, f"{path}.deviceClassName") if class_name else [
        v.required(f"{path}.deviceClassName")]
    errs += _validate_selectors(as_list(request.get("selectors")), f"{path}.selectors")
    mode, count = request.get("allocationMode"), as_int(request.get("count")) or 0
    if mode == "All":
        if count:
            errs.append(v.invalid_value(f"{path}.count", count, "must not be specified when allocationMode is "
                                                                "'All'"))
    elif mode == "ExactCount":
        if count <= 0:
            errs.append(v.invalid_value(f"{path}.count", count, "must be greater than zero"))
    else:
        errs.append(v.not_supported(f"{path}.allocationMode", mode, ALLOCATION_MODES))
    return errs


def _validate_request(request: Obj, path: str) -> list[Cause]:
    errs = _request_name_causes(as_str(request.get("name")), f"{path}.name")
    alternatives, exactly = as_list(request.get("firstAvailable")), request.get("exactly")
    if alternatives:
        errs += _validate_unique_named(alternatives, f"{path}.firstAvailable", MAX_SUBREQUESTS,
                                       lambda sub, sub_path: _request_name_causes(as_str(sub.get("name")),
                                                                                  f"{sub_path}.name")
                                       + _validate_exact(sub, sub_path))
    if exactly is not None:
        errs += _validate_exact(as_dict(exactly), f"{path}.exactly")
    chosen = bool(alternatives) + (exactly is not None)
    if chosen == 0:
        errs.append(v.required(path, "exactly one of `exactly` or `firstAvailable` is required"))
    elif chosen > 1:
        errs.append(v.invalid_value(path, None, "exactly one of `exactly` or `firstAvailable` is required, but "
                                                "multiple fields are set"))
    return errs


def _request_name_causes(name: str, path: str) -> list[Cause]:
    return f.dns_label_causes(name, path) if name else [v.required(path)]


def validate_claim_spec(spec: Any, path: str) -> list[Cause]:
    devices = as_dict(as_dict(spec).get("devices"))
    errs = _validate_unique_named(as_list(devices.get("requests")), f"{path}.devices.requests", MAX_REQUESTS,
                                  _validate_request)
    return errs + _validate_opaque_configs(as_list(devices.get("config")), f"{path}.devices.config")


class ResourceClaimStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        default_claim_spec(obj.setdefault("spec", {}))

    def validate(self, obj: Obj) -> list[Cause]:
        return validate_claim_spec(obj.get("spec"), "spec")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return f.check_immutable(new.get("spec"), old.get("spec"), "spec") + self.validate(new)


class ResourceClaimTemplateStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        default_claim_spec(as_dict(obj.setdefault("spec", {})).setdefault("spec", {}))

    def validate(self, obj: Obj) -> list[Cause]:
        spec = spec_of(obj)
        meta = as_dict(spec.get("metadata"))
        errs = v.validate_labels(meta.get("labels"), "spec.metadata.labels")
        errs += v.validate_annotations(meta.get("annotations"), "spec.metadata.annotations")
        return errs + validate_claim_spec(spec.get("spec"), "spec.spec")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return f.check_immutable(new.get("spec"), old.get("spec"), "spec") + self.validate(new)


# --- classes and slices ------------------------------------------------------------------------------

class DeviceClassStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        spec = spec_of(obj)
        errs = _validate_selectors(as_list(spec.get("selectors")), "spec.selectors")
        errs += _validate_opaque_configs(as_list(spec.get("config")), "spec.config")
        resource_name = spec.get("extendedResourceName")
        if resource_name is not None:
            errs += f.qualified_name_causes(as_str(resource_name), "spec.extendedResourceName")
        return errs


def _pool_name_causes(name: str, path: str) -> list[Cause]:
    """validatePoolName: DNS subdomains separated by slashes, at most 253 characters in all."""
    if not name:
        return [v.required(path)]
    errs = [v.too_long(path, POOL_NAME_MAX)] if len(name) > POOL_NAME_MAX else []
    for part in name.split("/"):
        errs += f.dns_subdomain_causes(part, path)
    return errs


def _validate_device(device: Obj, path: str) -> list[Cause]:
    name = as_str(device.get("name"))
    return f.dns_label_causes(name, f"{path}.name") if name else [v.required(f"{path}.name")]


def _validate_slice_spec(spec: Obj) -> list[Cause]:
    errs = _driver_name_causes(as_str(spec.get("driver")), "spec.driver")
    pool = as_dict(spec.get("pool"))
    errs += _pool_name_causes(as_str(pool.get("name")), "spec.pool.name")
    slice_count, generation = as_int(pool.get("resourceSliceCount")) or 0, as_int(pool.get("generation")) or 0
    if slice_count <= 0:
        errs.append(v.invalid_value("spec.pool.resourceSliceCount", slice_count, "must be greater than zero"))
    if generation < 0:
        errs.append(v.invalid_value("spec.pool.generation", generation, "must be greater than or equal to zero"))
    placed = []
    if spec.get("nodeName") is not None:
        placed.append("`nodeName`")
        node = as_str(spec.get("nodeName"))
        errs.extend(v.invalid_value("spec.nodeName", node, m) for m in v.is_dns1123_subdomain(node))
    if spec.get("nodeSelector") is not None:
        placed.append("`nodeSelector`")
        terms = as_list(as_dict(spec.get("nodeSelector")).get("nodeSelectorTerms"))
        if len(terms) != 1:
            errs.append(v.invalid_value("spec.nodeSelector.nodeSelectorTerms", terms,
                                        "must have exactly one node selector term"))
    if spec.get("allNodes") is True:
        placed.append("`allNodes`")
    if spec.get("perDeviceNodeSelection") is True:
        placed.append("`perDeviceNodeSelection`")
    if not placed:
        errs.append(v.required("spec", NODE_PLACEMENT))
    elif len(placed) > 1:
        errs.append(v.invalid_value("spec", "{" + ", ".join(placed) + "}",
                                    NODE_PLACEMENT + ", but multiple fields are set"))
    return errs + _validate_unique_named(as_list(spec.get("devices")), "spec.devices", MAX_DEVICES_PER_SLICE,
                                         _validate_device)


def _slice_field(key: str) -> FieldGetter:
    return lambda obj: as_str(spec_of(obj).get(key))


class ResourceSliceStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def field_getters(self) -> dict[str, FieldGetter]:
        # Drivers and kubelets list the slices of one driver or one node.
        return {**super().field_getters(), "spec.nodeName": _slice_field("nodeName"),
                "spec.driver": _slice_field("driver")}

    def validate(self, obj: Obj) -> list[Cause]:
        return _validate_slice_spec(spec_of(obj))

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        new_spec, old_spec = spec_of(new), spec_of(old)
        new_pool, old_pool = as_dict(new_spec.get("pool")), as_dict(old_spec.get("pool"))
        return (self.validate(new)
                + f.check_immutable(new_pool.get("name"), old_pool.get("name"), "spec.pool.name")
                + f.check_immutable(new_spec.get("driver"), old_spec.get("driver"), "spec.driver")
                + f.check_immutable(new_spec.get("nodeName"), old_spec.get("nodeName"), "spec.nodeName"))
