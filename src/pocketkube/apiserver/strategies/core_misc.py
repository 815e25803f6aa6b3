"""The other core/v1 kinds: Namespace, ConfigMap, Secret, ServiceAccount, Node, Event, PersistentVolume(Claim),
ResourceQuota, LimitRange."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.apiserver.strategy import FieldGetter, Obj, Strategy

from . import _fields as f
from . import podspec
from .conversion import events_to_core

MAX_SECRET_SIZE = 1024 * 1024
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
IMMUTABLE_MSG = "field is immutable when `immutable` is set"


def _getter(*path: str) -> FieldGetter:
    def getter(obj: Obj) -> str:
        cur: Any = obj
        for key in path:
            cur = cur.get(key) if isinstance(cur, dict) else None
        return "" if cur is None else str(cur)
    return getter


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NamespaceStrategy(Strategy):
    name_validator = "dns1123label"

    def field_getters(self) -> dict[str, FieldGetter]:
        getters = super().field_getters()
        getters["status.phase"] = _getter("status", "phase")
        return getters

    def default(self, obj: Obj) -> None:
        # The name label is enforced on every write (SetDefaults_Namespace + the strategy's Canonicalize).
        meta = obj.setdefault("metadata", {})
        if meta.get("name"):
            labels = meta.get("labels") or {}
            labels[METADATA_NAME_LABEL] = meta["name"]
            meta["labels"] = labels

    def prepare_for_create(self, obj: Obj) -> None:
        obj["status"] = {"phase": "Active"}
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        finalizers = [x for x in spec.get("finalizers") or [] if x != "kubernetes"]
        spec["finalizers"] = ["kubernetes", *finalizers]
        obj["spec"] = spec

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        # spec.finalizers change only through /finalize; status only through /status.
        new["spec"] = dict(new.get("spec") or {})
        new["spec"]["finalizers"] = list((old.get("spec") or {}).get("finalizers") or [])
        if not new["spec"]["finalizers"]:
            new["spec"].pop("finalizers")
        super().prepare_for_update(new, old)

    def validate(self, obj: Obj) -> list[Cause]:
        errs: list[Cause] = []
        for i, name in enumerate((obj.get("spec") or {}).get("finalizers") or []):
            errs.extend(f.qualified_name_causes(str(name), f"spec.finalizers[{i}]"))
            if "/" not in str(name) and name != "kubernetes":
                errs.append(v.invalid_value(f"spec.finalizers[{i}]", name,
                                            "name is neither a standard finalizer name nor is it fully qualified"))
        return errs

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        phase = (new.get("status") or {}).get("phase")
        deleting = bool((new.get("metadata") or {}).get("deletionTimestamp"))
        if deleting and phase != "Terminating":
            return [v.invalid_value("status.phase", phase, "A namespace may only be in terminating status if "
                                                           "it has a deletion timestamp.")]
        if not deleting and phase == "Terminating":
            return [v.invalid_value("status.phase", phase, "A namespace may only be in terminating status if "
                                                           "it has a deletion timestamp.")]
        return []

    def deletion_blocked(self, obj: Obj) -> bool:
        return bool((obj.get("spec") or {}).get("finalizers"))

    def prepare_for_delete(self, obj: Obj) -> None:
        obj.setdefault("status", {})["phase"] = "Terminating"


def _validate_data_keys(data: dict[str, Any], path: str, other: dict[str, Any], other_name: str) -> list[Cause]:
    errs: list[Cause] = []
    for key in data:
        errs.extend(v.invalid_value(f"{path}[{key}]", key, m) for m in v.is_config_map_key(key))
        if key in other:
            errs.append(v.invalid_value(f"{path}[{key}]", key, f"duplicate of key present in {other_name}"))
    return errs


def _decoded_len(value: Any) -> int:
    try:
        return len(base64.b64decode(str(value), validate=False))
    except (binascii.Error, ValueError):
        return len(str(value))


def _immutable_data(new: Obj, old: Obj, keys: tuple[str, ...]) -> list[Cause]:
    if old.get("immutable") is not True:
        return []
    errs: list[Cause] = []
    if new.get("immutable") is not True:
        errs.append(v.forbidden("immutable", IMMUTABLE_MSG))
    for key in keys:
        if (new.get(key) or {}) != (old.get(key) or {}):
            errs.append(v.forbidden(key, IMMUTABLE_MSG))
    return errs


class ConfigMapStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
        errs = _validate_data_keys(data, "data", binary, "binaryData")
        errs += _validate_data_keys(binary, "binaryData", data, "data")
        size = sum(len(str(x).encode()) for x in data.values()) + sum(_decoded_len(x) for x in binary.values())
        if size > MAX_SECRET_SIZE:
            errs.append(v.too_long("", MAX_SECRET_SIZE))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return _immutable_data(new, old, ("data", "binaryData")) + self.validate(new)


# Keys a Secret of each well-known type must carry.
_SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


class SecretStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def field_getters(self) -> dict[str, FieldGetter]:
        getters = super().field_getters()
        getters["type"] = _getter("type")
        return getters

    def default(self, obj: Obj) -> None:
        if not obj.get("type"):
            obj["type"] = "Opaque"
        # stringData is write-only: the v1 -> internal conversion folds it into data, overriding.
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict) and string_data:
            data = obj.get("data") or {}
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data

    def validate(self, obj: Obj) -> list[Cause]:
        data = obj.get("data") or {}
        errs = _validate_data_keys(data, "data", {}, "")
        if sum(_decoded_len(x) for x in data.values()) > MAX_SECRET_SIZE:
            errs.append(v.too_long("data", MAX_SECRET_SIZE))
        stype = obj.get("type") or ""
        if stype == "kubernetes.io/service-account-token":
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            if not annotations.get("kubernetes.io/service-account.name"):
                errs.append(v.required("metadata.annotations[kubernetes.io/service-account.name]"))
        elif stype == "kubernetes.io/basic-auth":
            if "username" not in data and "password" not in data:
                errs += [v.required("data[username]"), v.required("data[password]")]
        elif stype in _SECRET_REQUIRED_KEYS:
            for key in _SECRET_REQUIRED_KEYS[stype]:
                if key not in data or (stype == "kubernetes.io/ssh-auth" and not data[key]):
                    errs.append(v.required(f"data[{key}]"))
                    if stype != "kubernetes.io/tls":
                        break
                elif stype in ("kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson"):
                    errs.extend(self._check_json(data[key], f"data[{key}]"))
        return errs

    @staticmethod
    def _check_json(value: Any, path: str) -> list[Cause]:
        try:
            decoded = json.loads(base64.b64decode(str(value)))
        except (ValueError, binascii.Error) as err:
            return [v.invalid_value(path, "<secret contents redacted>", str(err))]
        if not isinstance(decoded, dict):
            return [v.invalid_value(path, "<secret contents redacted>",
                                    "json: cannot unmarshal into Go value of type map[string]interface {}")]
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = f.check_immutable(new.get("type"), old.get("type"), "type")
        return errs + _immutable_data(new, old, ("data",)) + self.validate(new)


class ServiceAccountStrategy(Strategy):
    name_validator = "dns1123subdomain"


class NodeStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def field_getters(self) -> dict[str, FieldGetter]:
        getters = super().field_getters()
        getters["spec.unschedulable"] = lambda obj: "true" if (obj.get("spec") or {}).get("unschedulable") else "false"
        return getters

    def prepare_for_create(self, obj: Obj) -> None:
        """Nodes may set every field, status included, on create (the kubelet registers itself so). Go
        re-encodes the status structs a client left out (nodeInfo, daemonEndpoints) with their zero fields."""
        status = obj.get("status")
        zero = self.initial_status(obj) or {}
        obj["status"] = {**zero, **status} if isinstance(status, dict) else zero

    def default(self, obj: Obj) -> None:
        status = obj.get("status")
        if isinstance(status, dict) and status.get("allocatable") is None and status.get("capacity") is not None:
            status["allocatable"] = dict(status["capacity"])

    def validate(self, obj: Obj) -> list[Cause]:
        errs: list[Cause] = []
        for i, taint in enumerate((obj.get("spec") or {}).get("taints") or []):
            taint = taint or {}
            key = str(taint.get("key") or "")
            if not key:
                errs.append(v.required(f"spec.taints[{i}].key"))
            else:
                errs.extend(v.validate_label_name(key, f"spec.taints[{i}].key"))
            effect = taint.get("effect") or ""
            if not effect:
                errs.append(v.required(f"spec.taints[{i}].effect"))
            elif effect not in podspec.TAINT_EFFECTS:
                errs.append(v.not_supported(f"spec.taints[{i}].effect", effect, podspec.TAINT_EFFECTS))
        return errs


_EVENT_TYPES = ("Normal", "Warning")


def validate_event(core: Obj, *, legacy_api: bool) -> list[Cause]:
    """legacyValidateEvent (+ the strict rules of ValidateEventCreate for events.k8s.io/v1), on a core-shaped
    event. Paths use the internal field names, as upstream's do."""
    errs: list[Cause] = []
    namespace = str((core.get("metadata") or {}).get("namespace") or "")
    involved_ns = str((core.get("involvedObject") or {}).get("namespace") or "")
    controller_field = "reportingComponent" if legacy_api else "reportingController"
    if not core.get("eventTime"):
        if (not involved_ns and namespace not in ("", "default")) or (involved_ns and involved_ns != namespace):
            errs.append(v.invalid_value("involvedObject.namespace", involved_ns, "does not match event.namespace"))
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            errs.append(v.invalid_value("involvedObject.namespace", involved_ns, "does not match event.namespace"))
        controller = str(core.get("reportingComponent") or "")
        if not controller:
            errs.append(v.required(controller_field))
        errs.extend(f.qualified_name_causes(controller, controller_field))
        for key, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
            value = str(core.get(key) or "")
            if not value:
                errs.append(v.required(key))
            if len(value) > limit:
                errs.append(v.invalid_value(key, "", f"can have at most {limit} characters"))
        if len(str(core.get("message") or "")) > 1024:
            errs.append(v.invalid_value("message", "", "can have at most 1024 characters"))
    errs.extend(v.invalid_value("namespace", namespace, m) for m in v.is_dns1123_subdomain(namespace))
    if legacy_api:
        return errs
    if not core.get("eventTime"):
        errs.append(v.required("eventTime"))
    if core.get("type") not in _EVENT_TYPES:
        errs.append(v.invalid_value("type", "", f"has invalid value: {core.get('type') or ''}"))
    for key, name in (("firstTimestamp", "deprecatedFirstTimestamp"), ("lastTimestamp", "deprecatedLastTimestamp"),
                      ("count", "deprecatedCount")):
        if core.get(key):
            errs.append(v.invalid_value(name, "", "needs to be unset"))
    source = core.get("source") or {}
    if source.get("component") or source.get("host"):
        errs.append(v.invalid_value("deprecatedSource", "", "needs to be unset"))
    series = core.get("series")
    if series is not None:
        if (series.get("count") or 0) < 2:
            errs.append(v.invalid_value("series.count", "", "should be at least 2"))
        if not series.get("lastObservedTime"):
            errs.append(v.required("series.lastObservedTime"))
    return errs


class EventStrategy(Strategy):
    """core/v1 Event; a PUT may create it, and its names are not validated (upstream's legacy rules)."""

    allow_create_on_update = True
    name_validator = "any"
    _FIELDS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
               "reason", "reportingComponent", "type")

    def field_getters(self) -> dict[str, FieldGetter]:
        getters = super().field_getters()
        for name in self._FIELDS:
            getters[name] = self._core_getter(*name.split("."))
        getters["source"] = self._core_getter("source", "component")
        return getters

    def _as_core(self, obj: Obj) -> Obj:
        return obj

    def _core_getter(self, *path: str) -> FieldGetter:
        inner = _getter(*path)
        return lambda obj: inner(self._as_core(obj))

    def validate(self, obj: Obj) -> list[Cause]:
        return validate_event(obj, legacy_api=True)


class EventsV1Strategy(EventStrategy):
    """events.k8s.io/v1 Event: the same stored object, validated strictly on create."""

    name_validator = "dns1123subdomain"

    def _as_core(self, obj: Obj) -> Obj:
        return events_to_core(obj)

    def validate(self, obj: Obj) -> list[Cause]:
        return validate_event(events_to_core(obj), legacy_api=False)

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        # Updates of events.k8s.io events follow the legacy rules plus immutability of the identity fields.
        errs = validate_event(events_to_core(new), legacy_api=True)
        for key in ("regarding", "related", "reportingController", "reportingInstance", "action", "reason",
                    "note", "type", "eventTime"):
            errs.extend(f.check_immutable(new.get(key), old.get(key), key))
        return errs


class PersistentVolumeStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not spec.get("persistentVolumeReclaimPolicy"):
            spec["persistentVolumeReclaimPolicy"] = "Retain"
        if not spec.get("volumeMode"):
            spec["volumeMode"] = "Filesystem"

    def initial_status(self, obj: Obj) -> Obj | None:
        return {"phase": "Pending", "lastPhaseTransitionTime": _now()}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = obj.get("spec") or {}
        errs: list[Cause] = []
        if not spec.get("accessModes"):
            errs.append(v.required("spec.accessModes"))
        if not (spec.get("capacity") or {}).get("storage"):
            errs.append(v.required("spec.capacity"))
        policy = spec.get("persistentVolumeReclaimPolicy")
        if policy not in ("Delete", "Recycle", "Retain"):
            errs.append(v.not_supported("spec.persistentVolumeReclaimPolicy", policy, ["Delete", "Recycle", "Retain"]))
        return errs


class PersistentVolumeClaimStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        podspec.default_pvc_spec(obj.setdefault("spec", {}))

    def initial_status(self, obj: Obj) -> Obj | None:
        return {"phase": "Pending"}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = obj.get("spec") or {}
        errs: list[Cause] = []
        if not spec.get("accessModes"):
            errs.append(v.required("spec.accessModes", "at least 1 access mode is required"))
        if not ((spec.get("resources") or {}).get("requests") or {}).get("storage") and not spec.get("dataSource"):
            errs.append(v.required("spec.resources[storage]"))
        return errs


class ResourceQuotaStrategy(Strategy):
    name_validator = "dns1123subdomain"


class LimitRangeStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        """SetDefaults_LimitRangeItem: container defaults fall back to max, default requests to default/min."""
        for item in (obj.get("spec") or {}).get("limits") or []:
            if not isinstance(item, dict) or item.get("type") != "Container":
                continue
            default = item.setdefault("default", {})
            default_request = item.setdefault("defaultRequest", {})
            for name, value in (item.get("max") or {}).items():
                default.setdefault(name, value)
            for name, value in default.items():
                default_request.setdefault(name, value)
            for name, value in (item.get("min") or {}).items():
                default_request.setdefault(name, value)
