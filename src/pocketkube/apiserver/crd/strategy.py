"""Strategies of the CustomResourceDefinition resource and of every custom resource.

    strategies = CRDStrategies()
    if strategies.handles(info):
        strategy = strategies.strategy_for(info)

CRDs follow apiextensions-apiserver's registry/customresourcedefinition strategy (defaults of
SetDefaults_CustomResourceDefinition, ValidateCustomResourceDefinition[Update]); a first DELETE only
marks the CRD (cleanup finalizer + Terminating condition) so the CRD controller can remove its objects.
Custom resources follow registry/customresource: schema defaulting and validation, generation on any
non-metadata change, the scale paths' checks, and no restriction on unprefixed finalizers.
"""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors
from pocketkube.api.errors import Cause
from pocketkube.api.kinds import ResourceInfo
from pocketkube.api.validation import (
    FIELD_IMMUTABLE_ERROR_MSG,
    forbidden,
    invalid_value,
    is_dns1035_label,
    is_dns1123_subdomain,
    not_supported,
    required,
)
from pocketkube.apiserver.crd import resources
from pocketkube.apiserver.crd.codec import schema_of
from pocketkube.apiserver.crd.columns import evaluate, go_format
from pocketkube.apiserver.crd.schema import (
    apply_defaults,
    validate_crd_schema,
    validate_list_types,
    validate_value,
)
from pocketkube.apiserver.strategy import FieldGetter, Strategy

Obj = dict[str, Any]

_PRINTER_TYPES = ("boolean", "date", "integer", "number", "string")
_PRINTER_FORMATS = ("byte", "date", "date-time", "double", "float", "int32", "int64", "password")
_CONVERSION_REVIEW_VERSIONS = ("v1", "v1beta1")
_APPROVAL_ANNOTATION = "api-approved.kubernetes.io"
_MAX_INT32 = 2**31 - 1


# ---------------------------------------------------------------------------------------------------
# CustomResourceDefinition


def default_crd(obj: Obj) -> None:
    """SetDefaults_CustomResourceDefinition(Spec) of apiextensions/v1, plus Go's zero-valued bools."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    names = spec.get("names")
    if isinstance(names, dict):
        kind = names.get("kind") or ""
        if not names.get("singular") and kind:
            names["singular"] = str(kind).lower()
        if not names.get("listKind") and kind:
            names["listKind"] = f"{kind}List"
    if not spec.get("conversion"):
        spec["conversion"] = {"strategy": "None"}
    for version in spec.get("versions") or []:
        if isinstance(version, dict):
            version.setdefault("served", False)
            version.setdefault("storage", False)


def _join(problems: list[str]) -> str:
    return ",".join(problems)


def _validate_names(names: Obj, path: str) -> list[Cause]:
    """ValidateCustomResourceDefinitionNames."""
    errs: list[Cause] = []
    for key in ("plural", "singular"):
        value = str(names.get(key) or "")
        if value and (problems := is_dns1035_label(value)):
            errs.append(invalid_value(f"{path}.{key}", value, _join(problems)))
    for key in ("kind", "listKind"):
        value = str(names.get(key) or "")
        if value and (problems := is_dns1035_label(value.lower())):
            errs.append(invalid_value(f"{path}.{key}", value, "may have mixed case, but should otherwise match: "
                                      + _join(problems)))
    for i, short in enumerate(names.get("shortNames") or []):
        if problems := is_dns1035_label(str(short)):
            errs.append(invalid_value(f"{path}.shortNames[{i}]", short, _join(problems)))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errs.append(invalid_value(f"{path}.listKind", names["listKind"], "kind and listKind may not be the same"))
    for i, category in enumerate(names.get("categories") or []):
        if problems := is_dns1035_label(str(category)):
            errs.append(invalid_value(f"{path}.categories[{i}]", category, _join(problems)))
    return errs


def _validate_simple_json_path(value: str, path: str) -> list[Cause]:
    if not value:
        return [invalid_value(path, value, "must not be empty")]
    if not value.startswith("."):
        return [invalid_value(path, value, "must be a simple json path starting with .")]
    return []


def _validate_subresources(subresources: Any, path: str) -> list[Cause]:
    scale = subresources.get("scale") if isinstance(subresources, dict) else None
    if not isinstance(scale, dict):
        return []
    errs: list[Cause] = []
    for key, prefixes, where in (("specReplicasPath", (".spec.",), ".spec"),
                                 ("statusReplicasPath", (".status.",), ".status")):
        value = str(scale.get(key) or "")
        if not value:
            errs.append(required(f"{path}.scale.{key}"))
            continue
        found = _validate_simple_json_path(value, f"{path}.scale.{key}")
        if not found and not value.startswith(prefixes):
            found = [invalid_value(f"{path}.scale.{key}", value, f"should be a json path under {where}")]
        errs += found
    selector = str(scale.get("labelSelectorPath") or "")
    if selector:
        found = _validate_simple_json_path(selector, f"{path}.scale.labelSelectorPath")
        if not found and not selector.startswith((".spec.", ".status.")):
            found = [invalid_value(f"{path}.scale.labelSelectorPath", selector,
                                   "should be a json path under either .spec or .status")]
        errs += found
    return errs


def _validate_column(column: Any, path: str) -> list[Cause]:
    """ValidateCustomResourceColumnDefinition (field names as upstream's internal type spells them)."""
    if not isinstance(column, dict):
        return [invalid_value(path, column, "must be an object")]
    errs: list[Cause] = []
    if not column.get("name"):
        errs.append(required(f"{path}.name"))
    kinds = ",".join(_PRINTER_TYPES)
    if not column.get("type"):
        errs.append(required(f"{path}.type", f"must be one of {kinds}"))
    elif column["type"] not in _PRINTER_TYPES:
        errs.append(invalid_value(f"{path}.type", column["type"], f"must be one of {kinds}"))
    if column.get("format") and column["format"] not in _PRINTER_FORMATS:
        errs.append(invalid_value(f"{path}.format", column["format"], f"must be one of {','.join(_PRINTER_FORMATS)}"))
    json_path = str(column.get("jsonPath") or "")
    if not json_path:
        errs.append(required(f"{path}.JSONPath"))
    else:
        errs += _validate_simple_json_path(json_path, f"{path}.JSONPath")
    return errs


def _validate_conversion(conversion: Any, path: str) -> list[Cause]:
    if not isinstance(conversion, dict):
        return []
    strategy = conversion.get("strategy") or ""
    errs: list[Cause] = []
    if not strategy:
        errs.append(required(f"{path}.strategy"))
    elif strategy not in ("None", "Webhook"):
        errs.append(not_supported(f"{path}.strategy", strategy, ("None", "Webhook")))
    webhook = conversion.get("webhook") if isinstance(conversion.get("webhook"), dict) else None
    if strategy == "Webhook":
        config = (webhook or {}).get("clientConfig")
        if not isinstance(config, dict):
            errs.append(required(f"{path}.webhookClientConfig", "required when strategy is set to Webhook"))
        elif (config.get("url") is None) == (config.get("service") is None):
            errs.append(required(f"{path}.webhookClientConfig", "exactly one of url or service is required"))
        review = (webhook or {}).get("conversionReviewVersions") or []
        if not review:
            errs.append(required(f"{path}.conversionReviewVersions"))
        elif not any(v in _CONVERSION_REVIEW_VERSIONS for v in review):
            errs.append(invalid_value(f"{path}.conversionReviewVersions", review,
                                      "must include at least one of v1, v1beta1"))
    elif webhook is not None:
        errs.append(forbidden(f"{path}.webhookClientConfig", "should not be set when strategy is not set to Webhook"))
    return errs


def _protected_group(group: str) -> bool:
    return any(group == d or group.endswith("." + d) for d in ("k8s.io", "kubernetes.io"))


def _validate_approval(obj: Obj, group: str) -> list[Cause]:
    """validateAPIApproval: groups under k8s.io / kubernetes.io need the api-approved annotation."""
    if not _protected_group(group):
        return []
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(_APPROVAL_ANNOTATION)
    path = f"metadata.annotations[{_APPROVAL_ANNOTATION}]"
    if value is None:
        return [required(path, f'protected groups must have approval annotation "{_APPROVAL_ANNOTATION}", see '
                               f"https://github.com/kubernetes/enhancements/pull/1111")]
    if not str(value).startswith(("https://", "http://", "unapproved")):
        return [invalid_value(path, value, f'protected groups must have approval annotation '
                                           f'"{_APPROVAL_ANNOTATION}" with either a URL or a reason starting with '
                                           f'"unapproved", see https://github.com/kubernetes/enhancements/pull/1111')]
    return []


def validate_crd(obj: Obj) -> list[Cause]:
    """ValidateCustomResourceDefinition, minus the generic metadata checks the registry already made."""
    spec = resources.spec(obj)
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    group = str(spec.get("group") or "")
    errs: list[Cause] = []
    name = str((obj.get("metadata") or {}).get("name") or "")
    if name != f"{names.get('plural', '')}.{group}":
        errs.append(invalid_value("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if not group:
        errs.append(required("spec.group"))
    elif problems := is_dns1123_subdomain(group):
        errs.append(invalid_value("spec.group", group, _join(problems)))
    elif len(group.split(".")) < 2:
        errs.append(invalid_value("spec.group", group, "should be a domain with at least one dot"))
    scope = spec.get("scope") or ""
    if not scope:
        errs.append(required("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        errs.append(not_supported("spec.scope", scope, ("Cluster", "Namespaced")))
    versions = spec.get("versions") or []
    for i, version in enumerate(versions):
        path = f"spec.versions[{i}]"
        if not isinstance(version, dict):
            errs.append(invalid_value(path, version, "must be an object"))
            continue
        schema = version.get("schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("openAPIV3Schema"), dict):
            errs.append(required(f"{path}.schema.openAPIV3Schema", "schemas are required"))
    storage_count = 0
    seen: set[str] = set()
    unique = True
    for i, version in enumerate(versions):
        if not isinstance(version, dict):
            continue
        path = f"spec.versions[{i}]"
        storage_count += version.get("storage") is True
        vname = str(version.get("name") or "")
        unique = unique and vname not in seen
        seen.add(vname)
        if problems := is_dns1035_label(vname):
            errs.append(invalid_value(f"{path}.name", vname, _join(problems)))
        if not version.get("deprecated") and version.get("deprecationWarning") is not None:
            errs.append(invalid_value(f"{path}.deprecationWarning", version["deprecationWarning"],
                                      "can only be set for deprecated versions"))
        subresources = version.get("subresources")
        status_enabled = isinstance(subresources, dict) and isinstance(subresources.get("status"), dict)
        schema = version.get("schema")
        if isinstance(schema, dict) and isinstance(schema.get("openAPIV3Schema"), dict):
            errs += validate_crd_schema(schema["openAPIV3Schema"], f"{path}.schema", status_enabled)
        errs += _validate_subresources(subresources, f"{path}.subresources")
        for j, column in enumerate(version.get("additionalPrinterColumns") or []):
            errs += _validate_column(column, f"{path}.additionalPrinterColumns[{j}]")
    if not unique:
        errs.append(invalid_value("spec.versions", versions, "must contain unique version names"))
    if storage_count != 1:
        errs.append(invalid_value("spec.versions", versions, "must have exactly one version marked as storage "
                                                             "version"))
    for key in ("plural", "singular", "kind", "listKind"):
        if not names.get(key):
            errs.append(required(f"spec.names.{key}"))
    errs += _validate_names(names, "spec.names")
    errs += _validate_conversion(spec.get("conversion"), "spec.conversion")
    if spec.get("preserveUnknownFields") is True:
        errs.append(invalid_value("spec.preserveUnknownFields", True, "cannot set to true, set "
                                  "x-preserve-unknown-fields to true in spec.versions[*].schema instead"))
    errs += _validate_status(obj, versions)
    errs += _validate_approval(obj, group)
    return errs


def _validate_status(obj: Obj, versions: list[Any]) -> list[Cause]:
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    errs = _validate_names(status.get("acceptedNames") or {}, "status.acceptedNames")
    stored = list(status.get("storedVersions") or [])
    if not stored:
        return errs + [invalid_value("status.storedVersions", stored, "must have at least one stored version")]
    positions = {v: i for i, v in enumerate(stored)}
    for version in versions:
        if not isinstance(version, dict):
            continue
        if version.get("storage") is True and version.get("name") not in positions:
            errs.append(invalid_value("status.storedVersions", version, f"must have the storage version "
                                                                         f"{version.get('name')}"))
        positions.pop(version.get("name"), None)
    for value, i in positions.items():
        errs.append(invalid_value(f"status.storedVersions[{i}]", value, "must appear in spec.versions"))
    return errs


def _add_stored_version(obj: Obj) -> None:
    storage = resources.storage_version(obj)
    status = obj.setdefault("status", {})
    stored = status.get("storedVersions") or []
    if storage and storage not in stored:
        status["storedVersions"] = [*stored, storage]


class CustomResourceDefinitionStrategy(Strategy):
    tracks_generation = True

    def default(self, obj: Obj) -> None:
        default_crd(obj)

    def initial_status(self, obj: Obj) -> Obj | None:
        status: Obj = {"acceptedNames": {"plural": "", "kind": ""}, "storedVersions": []}
        storage = resources.storage_version(obj)
        if storage:
            status["storedVersions"] = [storage]
        return status

    def validate(self, obj: Obj) -> list[Cause]:
        return validate_crd(obj)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        _add_stored_version(new)

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = validate_crd(new)
        new_spec, old_spec = resources.spec(new), resources.spec(old)
        new_names, old_names = new_spec.get("names") or {}, old_spec.get("names") or {}
        immutable = [("spec.group", new_spec.get("group"), old_spec.get("group")),
                     ("spec.names.plural", new_names.get("plural"), old_names.get("plural"))]
        if resources.condition_true(old, resources.ESTABLISHED):
            immutable += [("spec.scope", new_spec.get("scope"), old_spec.get("scope")),
                          ("spec.names.kind", new_names.get("kind"), old_names.get("kind"))]
        for path, new_value, old_value in immutable:
            if new_value != old_value:
                errs.append(invalid_value(path, new_value if new_value is not None else "",
                                          FIELD_IMMUTABLE_ERROR_MSG))
        return errs

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        status = new.get("status") if isinstance(new.get("status"), dict) else {}
        return _validate_names(status.get("acceptedNames") or {}, "status.acceptedNames")

    def spec_changed(self, new: Obj, old: Obj) -> bool:
        return new.get("spec") != old.get("spec")

    # A first delete only marks the CRD: the controller removes its objects, then the finalizer.
    def deletion_blocked(self, obj: Obj) -> bool:
        return not (obj.get("metadata") or {}).get("deletionTimestamp")

    def prepare_for_delete(self, obj: Obj) -> None:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if resources.CLEANUP_FINALIZER not in finalizers:
            meta["finalizers"] = [*finalizers, resources.CLEANUP_FINALIZER]
        status = obj.setdefault("status", {})
        if not resources.condition_true(obj, resources.TERMINATING):
            resources.set_condition(status, resources.TERMINATING, "True", "InstanceDeletionPending",
                                    "CustomResourceDefinition marked for deletion; CustomResource deletion will "
                                    "begin soon")


# ---------------------------------------------------------------------------------------------------
# Custom resources


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


def nested(obj: Obj, dotted: str) -> tuple[Any, bool]:
    """unstructured.NestedFieldNoCopy for a simple ``.a.b`` path: (value, found)."""
    node: Any = obj
    for part in [p for p in dotted.split(".") if p]:
        if not isinstance(node, dict) or part not in node:
            return None, False
        node = node[part]
    return node, True


def _validate_replicas(obj: Obj, path: str) -> list[Cause]:
    """ValidateScaleSpec/Status: the replicas at a scale path must be a non-negative int32 when present."""
    if not path:
        return []
    value, found = nested(obj, path)
    if not found or value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int):
        return [invalid_value(path, 0, f"{path} accessor error: {go_format(value)} is of the type "
                                       f"{_go_type(value)}, expected int64")]
    if value < 0:
        return [invalid_value(path, value, "should be a non-negative integer")]
    if value > _MAX_INT32:
        return [invalid_value(path, value, f"should be less than or equal to {_MAX_INT32}")]
    return []


class CustomResourceStrategy(Strategy):
    tracks_generation = True
    kube_finalizers = False  # custom resources may carry any finalizer name

    def __init__(self, info: ResourceInfo) -> None:
        super().__init__(info)
        assert info.custom is not None
        self.custom = info.custom
        self.schema = schema_of(info)

    def field_getters(self) -> dict[str, FieldGetter]:
        getters = super().field_getters()
        for path in self.custom.selectable_fields:
            getters[path.lstrip(".")] = lambda obj, p=path: _selectable_value(obj, p)
        return getters

    def initial_status(self, obj: Obj) -> Obj | None:
        return None  # unstructured: no typed zero status to serialize

    def default(self, obj: Obj) -> None:
        apply_defaults(self.schema, obj)

    def validate(self, obj: Obj) -> list[Cause]:
        return (validate_value(self.schema, obj) + _validate_replicas(obj, self.custom.spec_replicas_path)
                + _validate_replicas(obj, self.custom.status_replicas_path) + validate_list_types(self.schema, obj))

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new)

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        return (validate_value(self.schema, new) + _validate_replicas(new, self.custom.status_replicas_path)
                + validate_list_types(self.schema, new))

    def spec_changed(self, new: Obj, old: Obj) -> bool:
        if self.info.has_status:
            return super().spec_changed(new, old)
        # Without a status subresource every non-metadata change counts, status included.
        keys = (set(new) | set(old)) - {"metadata", "apiVersion", "kind"}
        return any(new.get(k) != old.get(k) for k in keys)

    async def before_create(self, obj: Obj) -> None:
        if self.custom.terminating:
            raise errors.StatusError(405, "MethodNotAllowed", "create not allowed while custom resource definition "
                                     "is terminating", {"group": self.info.group, "kind": self.info.plural})


def _selectable_value(obj: Obj, path: str) -> str:
    values = evaluate(path, obj)
    if not values or values[0] is None:
        return ""
    return go_format(values[0])


__all__ = ["CustomResourceDefinitionStrategy", "CustomResourceStrategy", "default_crd",
           "nested", "validate_crd"]
