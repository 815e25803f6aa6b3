"""Structural OpenAPI v3 schemas of CustomResourceDefinitions: checking them, and applying them to objects.

Four jobs, as apiextensions-apiserver does them:

* ``validate_crd_schema`` — a CRD's ``openAPIV3Schema`` must use only supported keywords and be
  *structural* (apiextensions validation.go and apiserver/schema/validation.go); defaults must validate
  and be pruned.
* ``validate_value`` — an object against its schema with kube-openapi's semantics and messages
  (``spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"``).
* ``prune`` — drop fields the schema does not specify (unless ``x-kubernetes-preserve-unknown-fields``),
  returning their paths for fieldValidation.
* ``apply_defaults`` — fill in ``default`` values, then drop nulls of non-nullable fields without one.

``x-kubernetes-validations`` (CEL) rules are accepted and checked for shape only; they are not evaluated.
Schemas are plain dicts straight from the CRD (JSON-schema keywords); none of these functions mutate them.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import math
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pocketkube.api.errors import Cause
from pocketkube.api.validation import (
    FIELD_VALUE_INVALID,
    forbidden,
    go_json,
    go_quote,
    invalid_value,
    is_dns1035_label,
    name_is_path_segment,
    not_supported,
    required,
    too_long,
    too_many,
    validate_object_meta,
)

Schema = dict[str, Any]

OPENAPI_V3_TYPES = ("array", "boolean", "integer", "number", "object", "string")
# Keywords a status-enabled CRD may use at the schema root (so properties[status] carries all of status').
_ROOT_KEYWORDS_WITH_STATUS = {
    "description": "Description", "type": "Type", "format": "Format", "title": "Title", "maximum": "Maximum",
    "exclusiveMaximum": "ExclusiveMaximum", "minimum": "Minimum", "exclusiveMinimum": "ExclusiveMinimum",
    "maxLength": "MaxLength", "minLength": "MinLength", "pattern": "Pattern", "maxItems": "MaxItems",
    "minItems": "MinItems", "uniqueItems": "UniqueItems", "multipleOf": "MultipleOf", "required": "Required",
    "items": "Items", "properties": "Properties", "externalDocs": "ExternalDocs", "example": "Example",
    "x-kubernetes-preserve-unknown-fields": "XPreserveUnknownFields", "x-kubernetes-validations": "XValidations",
}
_META_FIELDS = ("apiVersion", "kind", "metadata")
# Generic (non value-validation) keywords a schema under anyOf/allOf/oneOf/not may not set, with messages.
_FORBIDDEN_IN_JUNCTORS: tuple[tuple[str, str], ...] = (
    ("type", "must be empty to be structural"),
    ("additionalProperties", "must be undefined to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
)
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]


def _truthy(schema: Schema, key: str) -> bool:
    return schema.get(key) is True


def _key(path: str, key: str) -> str:
    """field.Path.Key: ``properties[spec]``."""
    return f"{path}[{key}]"


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _sorted_items(props: Any) -> list[tuple[str, Schema]]:
    # Upstream walks Go maps (random order) and sorts some lists; sorting keeps 422s stable.
    if not isinstance(props, dict):
        return []
    return [(k, v) for k, v in sorted(props.items()) if isinstance(v, dict)]


# ---------------------------------------------------------------------------------------------------
# Checking a CRD's schema


def validate_crd_schema(schema: Any, path: str, status_enabled: bool) -> list[Cause]:
    """validateCustomResourceDefinitionValidation for one version's ``schema`` (path ends in ``.schema``)."""
    if not isinstance(schema, dict):
        return [invalid_value(_child(path, "openAPIV3Schema"), "", "must be an object")]
    root_path = _child(path, "openAPIV3Schema")
    errs: list[Cause] = []
    if status_enabled:
        for key in schema:
            if key == "type":
                if schema["type"] != "object":
                    errs.append(invalid_value(f"{root_path}.type", schema["type"],
                                              'only "object" is allowed as the type at the root of the schema '
                                              'if the status subresource is enabled'))
                    break
                continue
            if key not in _ROOT_KEYWORDS_WITH_STATUS:
                allowed = " ".join(_ROOT_KEYWORDS_WITH_STATUS.values())
                errs.append(invalid_value(root_path, schema, f"only [{allowed}] fields are allowed at the root "
                                                             f"of the schema if the status subresource is enabled"))
                break
    if _truthy(schema, "nullable"):
        errs.append(forbidden(f"{root_path}.nullable", "nullable cannot be true at the root"))
    errs += _validate_openapi_schema(schema, root_path, is_root=True, allow_defaults=True, defaults_reason="",
                                     inside_meta=False)
    if errs:
        return errs
    structural = _validate_structural(schema, root_path)
    if structural:
        return structural
    return _validate_defaults(schema, root_path, is_root=True)


def _validate_openapi_schema(s: Any, path: str, *, is_root: bool, allow_defaults: bool, defaults_reason: str,
                             inside_meta: bool) -> list[Cause]:
    """ValidateCustomResourceDefinitionOpenAPISchema with the v3 standard validator."""
    if not isinstance(s, dict):
        return []
    errs = _standard_checks(s, path, allow_defaults, defaults_reason, inside_meta)
    if _truthy(s, "uniqueItems"):
        errs.append(forbidden(f"{path}.uniqueItems", "uniqueItems cannot be set to true since the runtime "
                                                     "complexity becomes quadratic"))
    additional = s.get("additionalProperties")
    if additional is not None:
        if s.get("properties") and (additional is False or isinstance(additional, dict)):
            errs.append(forbidden(f"{path}.additionalProperties",
                                  "additionalProperties and properties are mutual exclusive"))
        if isinstance(additional, dict):
            reason = "inside additionalProperties applying to object metadata" if inside_meta else defaults_reason
            errs += _validate_openapi_schema(additional, f"{path}.additionalProperties", is_root=False,
                                             allow_defaults=allow_defaults and not inside_meta,
                                             defaults_reason=reason, inside_meta=inside_meta)
    for name, prop in _sorted_items(s.get("properties")):
        sub_allow, sub_reason, sub_meta = allow_defaults, defaults_reason, inside_meta
        if (is_root or _truthy(s, "x-kubernetes-embedded-resource")) and name in _META_FIELDS:
            sub_meta = True
            if is_root:
                sub_allow, sub_reason = False, f"in top-level {name}"
        errs += _validate_openapi_schema(prop, f"{_key(path + '.properties', name)}", is_root=False,
                                         allow_defaults=sub_allow, defaults_reason=sub_reason, inside_meta=sub_meta)
    errs += _validate_openapi_schema(s.get("not"), f"{path}.not", is_root=False, allow_defaults=allow_defaults,
                                     defaults_reason=defaults_reason, inside_meta=inside_meta)
    for junctor in ("allOf", "oneOf", "anyOf"):
        for i, sub in enumerate(s.get(junctor) or []):
            errs += _validate_openapi_schema(sub, f"{path}.{junctor}[{i}]", is_root=False,
                                             allow_defaults=allow_defaults, defaults_reason=defaults_reason,
                                             inside_meta=inside_meta)
    items = s.get("items")
    if isinstance(items, dict):
        errs += _validate_openapi_schema(items, f"{path}.items", is_root=False, allow_defaults=allow_defaults,
                                         defaults_reason=defaults_reason, inside_meta=inside_meta)
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        errs.append(invalid_value(f"{path}.x-kubernetes-preserve-unknown-fields", False, "must be true or undefined"))
    errs += _list_and_map_type_checks(s, path)
    errs += _validation_rule_checks(s, path)
    return errs


def _standard_checks(s: Schema, path: str, allow_defaults: bool, defaults_reason: str,
                     inside_meta: bool) -> list[Cause]:
    """specStandardValidatorV3.validate: keywords structural schemas do not support."""
    errs: list[Cause] = []
    t = s.get("type")
    if isinstance(t, str) and t and t not in OPENAPI_V3_TYPES:
        errs.append(not_supported(f"{path}.type", t, OPENAPI_V3_TYPES))
    if "default" in s and not allow_defaults:
        errs.append(forbidden(f"{path}.default", "must not be set" + (f" {defaults_reason}" if defaults_reason
                                                                        else "")))
    unsupported = (("id", "id is not supported"), ("additionalItems", "additionalItems is not supported"),
                   ("patternProperties", "patternProperties is not supported"),
                   ("definitions", "definitions is not supported"), ("dependencies", "dependencies is not supported"),
                   ("$ref", "$ref is not supported"))
    for key, message in unsupported:
        if s.get(key) not in (None, "", {}):
            errs.append(forbidden(f"{path}.{key}", message))
    if t == "null":
        errs.append(forbidden(f"{path}.type", "type cannot be set to null, use nullable as an alternative"))
    if isinstance(s.get("items"), list):
        errs.append(forbidden(f"{path}.items", "items must be a schema object and not an array"))
    if inside_meta and _truthy(s, "x-kubernetes-embedded-resource"):
        errs.append(forbidden(f"{path}.x-kubernetes-embedded-resource", "must not be used inside of resource meta"))
    return errs


def _list_and_map_type_checks(s: Schema, path: str) -> list[Cause]:
    errs: list[Cause] = []
    t = s.get("type") or ""
    map_type = s.get("x-kubernetes-map-type")
    if map_type is not None:
        if t != "object":
            detail = "must be object if x-kubernetes-map-type is specified"
            errs.append(required(f"{path}.type", detail) if not t else invalid_value(f"{path}.type", t, detail))
        if map_type not in ("atomic", "granular"):
            errs.append(not_supported(f"{path}.x-kubernetes-map-type", map_type, ("atomic", "granular")))
    list_type = s.get("x-kubernetes-list-type")
    if list_type is not None:
        if t != "array":
            detail = "must be array if x-kubernetes-list-type is specified"
            errs.append(required(f"{path}.type", detail) if not t else invalid_value(f"{path}.type", t, detail))
        if list_type not in ("atomic", "set", "map"):
            errs.append(not_supported(f"{path}.x-kubernetes-list-type", list_type, ("atomic", "set", "map")))
    keys = s.get("x-kubernetes-list-map-keys") or []
    if keys:
        detail = "must be map if x-kubernetes-list-map-keys is non-empty"
        if list_type is None:
            errs.append(required(f"{path}.x-kubernetes-list-type", detail))
        elif list_type != "map":
            errs.append(invalid_value(f"{path}.x-kubernetes-list-type", list_type, detail))
    if list_type == "map":
        items = s.get("items")
        if not keys:
            errs.append(required(f"{path}.x-kubernetes-list-map-keys", "must not be empty if x-kubernetes-list-type "
                                                                        "is map"))
        if items is None:
            errs.append(required(f"{path}.items", "must have a schema if x-kubernetes-list-type is map"))
        elif isinstance(items, dict):
            if items.get("type") != "object":
                errs.append(invalid_value(f"{path}.items.type", items.get("type", ""),
                                          "must be object if parent array's x-kubernetes-list-type is map"))
            else:
                props = items.get("properties") or {}
                for k in keys:
                    if k not in props:
                        errs.append(invalid_value(f"{path}.x-kubernetes-list-map-keys", keys,
                                                  "entries must all be names of item properties"))
                    elif (props[k] or {}).get("type") in ("array", "object"):
                        errs.append(invalid_value(f"{_key(path + '.items.properties', k)}.type", "object",
                                                  "must be a scalar type if parent array's x-kubernetes-list-type "
                                                  "is map"))
                    elif k not in (items.get("required") or []) and "default" not in (props[k] or {}):
                        errs.append(required(f"{_key(path + '.items.properties', k)}.default",
                                             "this property is in x-kubernetes-list-map-keys, so it must have a "
                                             "default or be a required property"))
    return errs


def _validation_rule_checks(s: Schema, path: str) -> list[Cause]:
    """The shape of x-kubernetes-validations rules (the CEL itself is not compiled or evaluated)."""
    errs: list[Cause] = []
    for i, rule in enumerate(s.get("x-kubernetes-validations") or []):
        if not isinstance(rule, dict):
            continue
        text = str(rule.get("rule") or "").strip()
        message = rule.get("message")
        base = f"{path}.x-kubernetes-validations[{i}]"
        if not text:
            errs.append(required(f"{base}.rule", "rule is not specified"))
        elif isinstance(message, str) and message and not message.strip():
            errs.append(invalid_value(f"{base}.message", message, "message must be non-empty if specified"))
        elif isinstance(message, str) and re.search(r"[\n\r]", message.strip()):
            errs.append(invalid_value(f"{base}.message", message, "message must not contain line breaks"))
        elif re.search(r"[\n\r]", text) and not (message or "").strip():
            errs.append(required(f"{base}.message", "message must be specified if rule contains line breaks"))
    return errs


# --- structural invariants (apiserver/schema/validation.go) ------------------------------------------

_ROOT, _ITEM, _FIELD = range(3)


def _validate_structural(schema: Schema, path: str) -> list[Cause]:
    errs = _structural_invariants(schema, _ROOT, path)
    errs.sort(key=lambda c: f"{c.field}: {c.message}")  # upstream sorts by Error() text
    return errs


def _structural_invariants(s: Any, lvl: int, path: str) -> list[Cause]:
    if not isinstance(s, dict):
        return []
    errs: list[Cause] = []
    t = s.get("type") or ""
    if t == "array" and s.get("items") is None:
        errs.append(required(f"{path}.items", "must be specified"))
    if isinstance(s.get("items"), dict):
        errs += _structural_invariants(s["items"], _ITEM, f"{path}.items")
    for name, prop in _sorted_items(s.get("properties")):
        errs += _structural_invariants(prop, _FIELD, _key(f"{path}.properties", name))
    additional = s.get("additionalProperties")
    if additional is not None:
        if lvl == _ROOT:
            errs.append(forbidden(f"{path}.additionalProperties", "must not be used at the root"))
        if isinstance(additional, dict):
            errs += _structural_invariants(additional, _FIELD, f"{path}.additionalProperties")
    int_or_string = _truthy(s, "x-kubernetes-int-or-string")
    preserve = _truthy(s, "x-kubernetes-preserve-unknown-fields")
    embedded = _truthy(s, "x-kubernetes-embedded-resource")
    if int_or_string and preserve:
        errs.append(invalid_value(f"{path}.x-kubernetes-preserve-unknown-fields", True,
                                  "must be false if x-kubernetes-int-or-string is true"))
    if int_or_string and embedded:
        errs.append(invalid_value(f"{path}.x-kubernetes-embedded-resource", True,
                                  "must be false if x-kubernetes-int-or-string is true"))
    skip_any_of = s.get("anyOf") == _INT_OR_STRING_ANY_OF
    all_of = s.get("allOf") or []
    skip_first_all_of = bool(all_of) and isinstance(all_of[0], dict) and all_of[0].get("anyOf") == \
        _INT_OR_STRING_ANY_OF
    errs += _value_validation(s, skip_any_of, skip_first_all_of, lvl, path)
    if embedded and t != "object":
        detail = "must be object if x-kubernetes-embedded-resource is true"
        errs.append(required(f"{path}.type", detail) if not t else invalid_value(f"{path}.type", t, detail))
    elif not t and not int_or_string and not preserve:
        detail = {_ROOT: "must not be empty at the root", _ITEM: "must not be empty for specified array items",
                  _FIELD: "must not be empty for specified object fields"}[lvl]
        errs.append(required(f"{path}.type", detail))
    if embedded and additional is not None:
        errs.append(forbidden(f"{path}.additionalProperties", "must not be used if x-kubernetes-embedded-resource "
                                                              "is set"))
    if lvl == _ROOT and t and t != "object":
        errs.append(invalid_value(f"{path}.type", t, "must be object at the root"))
    props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
    check_metadata = lvl == _ROOT or embedded
    if check_metadata:
        for name, want in (("kind", "string"), ("apiVersion", "string"), ("metadata", "object")):
            if isinstance(props.get(name), dict) and props[name].get("type", "") != want:
                errs.append(invalid_value(f"{_key(path + '.properties', name)}.type", props[name].get("type", ""),
                                          f"must be {want}"))
    if lvl == _ROOT and isinstance(props.get("metadata"), dict) and not _metadata_only_names(props["metadata"]):
        errs.append(forbidden(_key(f"{path}.properties", "metadata"), "must not specify anything other than name "
                                                                      "and generateName, but metadata is implicitly "
                                                                      "specified"))
    if embedded and not preserve and not props:
        errs.append(required(f"{path}.properties", "must not be empty if x-kubernetes-embedded-resource is true "
                                                   "without x-kubernetes-preserve-unknown-fields"))
    return errs


def _metadata_only_names(metadata: Schema) -> bool:
    """The root metadata schema may only restrict name and generateName: besides its type (and a default,
    checked elsewhere) nothing else of the structural schema may be set (example/externalDocs are not part
    of it)."""
    props = metadata.get("properties") or {}
    if set(props) - {"name", "generateName"}:
        return False
    return all(k in ("type", "default", "properties", "example", "externalDocs") for k in metadata)


def _value_validation(s: Schema, skip_any_of: bool, skip_first_all_of_any_of: bool, lvl: int,
                      path: str) -> list[Cause]:
    errs: list[Cause] = []
    if not skip_any_of:
        for i, sub in enumerate(s.get("anyOf") or []):
            errs += _nested_value_validation(sub, False, lvl, f"{path}.anyOf[{i}]")
    for i, sub in enumerate(s.get("allOf") or []):
        errs += _nested_value_validation(sub, skip_first_all_of_any_of and i == 0, lvl, f"{path}.allOf[{i}]")
    for i, sub in enumerate(s.get("oneOf") or []):
        errs += _nested_value_validation(sub, False, lvl, f"{path}.oneOf[{i}]")
    if isinstance(s.get("not"), dict):
        errs += _nested_value_validation(s["not"], False, lvl, f"{path}.not")
    pattern = s.get("pattern")
    if isinstance(pattern, str) and pattern:
        try:
            re.compile(pattern)
        except re.error as err:
            errs.append(invalid_value(f"{path}.pattern", pattern, f"must be a valid regular expression, but isn't: "
                                                                  f"{err}"))
    return errs


def _nested_value_validation(s: Any, skip_any_of: bool, lvl: int, path: str) -> list[Cause]:
    if not isinstance(s, dict):
        return []
    errs = _value_validation(s, skip_any_of, False, lvl, path)
    if isinstance(s.get("items"), dict):
        errs += _nested_value_validation(s["items"], False, lvl, f"{path}.items")
    for name, prop in _sorted_items(s.get("properties")):
        errs += _nested_value_validation(prop, False, _FIELD, _key(f"{path}.properties", name))
    for key, message in _FORBIDDEN_IN_JUNCTORS:
        value = s.get(key)
        if value not in (None, False, "", []):
            errs.append(forbidden(f"{path}.{key}", message))
    if isinstance(s.get("properties"), dict) and "metadata" in s["properties"]:
        errs.append(forbidden(_key(f"{path}.properties", "metadata"), "must not be specified in a nested context"))
    return errs


# --- defaults (apiserver/schema/defaulting/validation.go) --------------------------------------------

def _validate_defaults(s: Any, path: str, is_root: bool = False, embedded_meta: bool = False) -> list[Cause]:
    """Every default must validate against its own schema and contain no field pruning would drop."""
    if not isinstance(s, dict):
        return []
    errs: list[Cause] = []
    if "default" in s and not is_root:
        default = s["default"]
        found = validate_value(s, copy.deepcopy(default), f"{path}.default")
        if found:
            errs += found
        else:
            pruned = copy.deepcopy(default)
            prune(s, pruned, is_resource=_truthy(s, "x-kubernetes-embedded-resource"))
            if pruned != default:
                errs.append(invalid_value(f"{path}.default", default, "must not have unknown fields"))
    for name, prop in _sorted_items(s.get("properties")):
        errs += _validate_defaults(prop, _key(f"{path}.properties", name))
    if isinstance(s.get("items"), dict):
        errs += _validate_defaults(s["items"], f"{path}.items")
    if isinstance(s.get("additionalProperties"), dict):
        errs += _validate_defaults(s["additionalProperties"], f"{path}.additionalProperties")
    return errs


# ---------------------------------------------------------------------------------------------------
# Validating an object (kube-openapi validate, converted to field errors as apiextensions does)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def go_number(value: float | int) -> str:
    """Go's %v of a float64 (10 -> "10", 0.5 -> "0.5", 1e21 -> "1e+21")."""
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    return re.sub(r"e([+-]?)0*(\d\d)", lambda m: f"e{m.group(1) or '+'}{m.group(2)}", text)


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: Python's True == 1 must not count, 1 == 1.0 does (as reflect.DeepEqual of decoded JSON)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _types(s: Schema) -> list[str]:
    if _truthy(s, "x-kubernetes-int-or-string") and not s.get("type"):
        return ["integer", "string"]  # ConvertJSONSchemaProps turns int-or-string into two types
    t = s.get("type")
    return [t] if isinstance(t, str) and t else []


class _Errors:
    """Collects kube-openapi results as field errors: field = base + path, message names the path."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.causes: list[Cause] = []

    def field(self, path: str) -> str:
        if not path:
            return self.base
        return f"{self.base}.{path}" if self.base else path

    @staticmethod
    def _subject(path: str) -> str:
        return f"{path} in body" if path else "in body"

    def type_invalid(self, path: str, value: Any, type_name: str, data: Any) -> None:
        detail = f"{self._subject(path)} must be of type {type_name}: {go_quote(str(data))}"
        self.causes.append(invalid_value(self.field(path), value, detail))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.causes.append(Cause(self.field(path), f"Invalid value: {_render(value)}: {self._subject(path)} {detail}",
                                 FIELD_VALUE_INVALID))

    def add(self, cause: Cause) -> None:
        self.causes.append(cause)


def _render(value: Any) -> str:
    """field.Error's rendering of a bad value (numbers as Go prints them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return go_number(value)
    if isinstance(value, str):
        return go_quote(value)
    if value is None:
        return "null"
    return go_json(value)


def validate_value(schema: Schema, value: Any, base: str = "") -> list[Cause]:
    """Validate ``value`` against ``schema``; causes carry ``base`` + the value's path (as upstream)."""
    errors = _Errors(base)
    _validate(schema, value, "", errors)
    return errors.causes


def _validate(s: Schema, v: Any, path: str, errs: _Errors) -> None:
    types = _types(s)
    if v is None:
        if types and not _truthy(s, "nullable"):
            errs.type_invalid(path, "null", ",".join(types), "null")
        return
    jt = _json_type(v)
    if types and not (jt in types or (jt == "number" and float(v).is_integer() and "integer" in types)
                      or (jt == "integer" and "number" in types)):
        errs.type_invalid(path, jt, ",".join(types), jt)
        return
    _junctors(s, v, path, errs)
    enum = s.get("enum")
    if isinstance(enum, list) and not any(_same_json(v, e) for e in enum):
        allowed = [e if isinstance(e, str) else go_json(e) for e in enum]
        cause = not_supported(errs.field(path), v, allowed)
        errs.add(cause)
    if jt == "string":
        _validate_string(s, v, path, errs)
    elif jt in ("integer", "number"):
        _validate_number(s, v, path, errs)
    elif jt == "array":
        _validate_array(s, v, path, errs)
    elif jt == "object":
        _validate_object(s, v, path, errs)


def _junctors(s: Schema, v: Any, path: str, errs: _Errors) -> None:
    """allOf / anyOf / oneOf / not, with go-openapi's composite messages."""
    subject = errs._subject(path)
    for sub in s.get("allOf") or []:
        if isinstance(sub, dict):
            nested = _Errors(errs.base)
            _validate(sub, v, path, nested)
            if nested.causes:
                errs.causes.append(Cause(errs.field(path), f'Invalid value: "": {subject} must validate all the '
                                                           f'schemas (allOf)', FIELD_VALUE_INVALID))
                errs.causes += nested.causes
    any_of = [sub for sub in s.get("anyOf") or [] if isinstance(sub, dict)]
    if any_of:
        results = []
        for sub in any_of:
            nested = _Errors(errs.base)
            _validate(sub, v, path, nested)
            results.append(nested.causes)
        if all(results):
            errs.causes.append(Cause(errs.field(path), f'Invalid value: "": {subject} must validate at least one '
                                                       f'schema (anyOf)', FIELD_VALUE_INVALID))
            errs.causes += results[0]
    one_of = [sub for sub in s.get("oneOf") or [] if isinstance(sub, dict)]
    if one_of:
        passing = 0
        first: list[Cause] = []
        for sub in one_of:
            nested = _Errors(errs.base)
            _validate(sub, v, path, nested)
            if nested.causes:
                first = first or nested.causes
            else:
                passing += 1
        if passing != 1:
            errs.causes.append(Cause(errs.field(path), f'Invalid value: "": {subject} must validate one and only '
                                                       f'one schema (oneOf)', FIELD_VALUE_INVALID))
            if passing == 0:
                errs.causes += first
    if isinstance(s.get("not"), dict):
        nested = _Errors(errs.base)
        _validate(s["not"], v, path, nested)
        if not nested.causes:
            errs.causes.append(Cause(errs.field(path), f'Invalid value: "": {subject} must not validate the schema '
                                                       f'(not)', FIELD_VALUE_INVALID))


def _validate_string(s: Schema, v: str, path: str, errs: _Errors) -> None:
    length = len(v)  # runes, as utf8.RuneCountInString
    max_length = s.get("maxLength")
    if isinstance(max_length, int) and length > max_length:
        cause = too_long(errs.field(path), max_length)
        errs.add(cause)
    min_length = s.get("minLength")
    if isinstance(min_length, int) and length < min_length:
        errs.invalid(path, v, f"should be at least {min_length} chars long")
    pattern = s.get("pattern")
    if isinstance(pattern, str) and pattern:
        try:
            matched = re.search(pattern, v) is not None
        except re.error:
            matched = True  # an invalid pattern was refused when the CRD was written
        if not matched:
            errs.invalid(path, v, f"should match '{pattern}'")
    fmt = s.get("format")
    check = _FORMATS.get(fmt) if isinstance(fmt, str) else None
    if check is not None and not check(v):
        errs.type_invalid(path, v, fmt, v)


def _validate_number(s: Schema, v: float, path: str, errs: _Errors) -> None:
    maximum = s.get("maximum")
    if isinstance(maximum, (int, float)) and not isinstance(maximum, bool):
        if _truthy(s, "exclusiveMaximum") and v >= maximum:
            errs.invalid(path, v, f"should be less than {go_number(maximum)}")
        elif v > maximum:
            errs.invalid(path, v, f"should be less than or equal to {go_number(maximum)}")
    minimum = s.get("minimum")
    if isinstance(minimum, (int, float)) and not isinstance(minimum, bool):
        if _truthy(s, "exclusiveMinimum") and v <= minimum:
            errs.invalid(path, v, f"should be greater than {go_number(minimum)}")
        elif v < minimum:
            errs.invalid(path, v, f"should be greater than or equal to {go_number(minimum)}")
    multiple = s.get("multipleOf")
    if isinstance(multiple, (int, float)) and not isinstance(multiple, bool) and multiple > 0:
        quotient = v / multiple
        if not math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9):
            errs.invalid(path, v, f"should be a multiple of {go_number(multiple)}")


def _validate_array(s: Schema, v: list[Any], path: str, errs: _Errors) -> None:
    max_items = s.get("maxItems")
    if isinstance(max_items, int) and len(v) > max_items:
        errs.add(too_many(errs.field(path), len(v), max_items))
    min_items = s.get("minItems")
    if isinstance(min_items, int) and len(v) < min_items:
        errs.invalid(path, len(v), f"should have at least {min_items} items")
    items = s.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(v):
            _validate(items, item, f"{path}[{i}]", errs)


def _validate_object(s: Schema, v: dict[str, Any], path: str, errs: _Errors) -> None:
    max_props = s.get("maxProperties")
    if isinstance(max_props, int) and len(v) > max_props:
        errs.add(too_many(errs.field(path), len(v), max_props))
    min_props = s.get("minProperties")
    if isinstance(min_props, int) and len(v) < min_props:
        errs.invalid(path, len(v), f"should have at least {min_props} properties")
    for name in s.get("required") or []:
        if isinstance(name, str) and name not in v:
            errs.add(required(errs.field(_child(path, name))))
    props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
    additional = s.get("additionalProperties")
    for key in sorted(v):
        child = _child(path, key)
        if isinstance(props.get(key), dict):
            _validate(props[key], v[key], child, errs)
        elif isinstance(additional, dict):
            _validate(additional, v[key], child, errs)
    if _truthy(s, "x-kubernetes-embedded-resource"):
        for cause in _validate_embedded_resource(v, errs.field(path)):
            errs.add(cause)


def _validate_embedded_resource(obj: dict[str, Any], path: str) -> list[Cause]:
    """objectmeta.validateEmbeddedResource: apiVersion and kind are required, metadata is ObjectMeta."""
    errs: list[Cause] = []
    if "apiVersion" not in obj:
        errs.append(required(_child(path, "apiVersion"), "must not be empty"))
    if "kind" not in obj:
        errs.append(required(_child(path, "kind"), "must not be empty"))
    api_version = obj.get("apiVersion")
    if "apiVersion" in obj:
        if not isinstance(api_version, str):
            errs.append(invalid_value(_child(path, "apiVersion"), api_version, "must be a string"))
        elif not api_version:
            errs.append(invalid_value(_child(path, "apiVersion"), api_version, "must not be empty"))
        elif api_version.count("/") > 1:
            errs.append(invalid_value(_child(path, "apiVersion"), api_version,
                                      f"unexpected GroupVersion string: {api_version}"))
    kind = obj.get("kind")
    if "kind" in obj:
        if not isinstance(kind, str):
            errs.append(invalid_value(_child(path, "kind"), kind, "must be a string"))
        elif not kind:
            errs.append(invalid_value(_child(path, "kind"), kind, "must not be empty"))
        elif problems := is_dns1035_label(kind.lower()):
            errs.append(invalid_value(_child(path, "kind"), kind, "may have mixed case, but should otherwise "
                                                                  "match: " + ",".join(problems)))
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta = {**meta, "name": meta.get("name") or "fakename"}  # upstream fills a name to skip that check
        errs += validate_object_meta(meta, bool(meta.get("namespace")), name_is_path_segment,
                                     path=_child(path, "metadata"), kube_finalizers=False)
    elif meta is not None:
        errs.append(invalid_value(_child(path, "metadata"), meta, "must be an object"))
    return errs


# --- formats (the subset of strfmt.Default apiextensions accepts) ------------------------------------

def _is_date_time(v: str) -> bool:
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", v) is not None \
        and _parses(lambda: datetime.fromisoformat(v.upper().replace("Z", "+00:00")))


def _parses(fn: Callable[[], Any]) -> bool:
    try:
        fn()
    except (ValueError, TypeError, binascii.Error):
        return False
    return True


def _is_ipv4(v: str) -> bool:
    return _parses(lambda: ipaddress.IPv4Address(v))


def _is_ipv6(v: str) -> bool:
    return _parses(lambda: ipaddress.IPv6Address(v))


def _is_cidr(v: str) -> bool:
    return "/" in v and _parses(lambda: ipaddress.ip_network(v, strict=False))


_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d|w))+$")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")

_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _is_date_time,
    "datetime": _is_date_time,
    "date": lambda v: re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) is not None
    and _parses(lambda: datetime.strptime(v, "%Y-%m-%d")),
    "byte": lambda v: _parses(lambda: base64.b64decode(v, validate=True)),
    "uuid": lambda v: _parses(lambda: uuid.UUID(v)) and len(v) == 36,
    "ipv4": _is_ipv4,
    "ipv6": _is_ipv6,
    "cidr": _is_cidr,
    "hostname": lambda v: len(v) <= 255 and _HOSTNAME.match(v) is not None,
    "email": lambda v: _EMAIL.match(v) is not None,
    "duration": lambda v: _DURATION.match(v) is not None,
    "mac": lambda v: _MAC.match(v) is not None,
}


def validate_list_types(schema: Schema, value: Any, path: str = "") -> list[Cause]:
    """structurallisttype.ValidateListSetsAndMaps: set items and map-list keys must be unique."""
    causes: list[Cause] = []
    _list_types(schema, value, path, causes)
    return causes


def _list_types(s: Any, x: Any, path: str, causes: list[Cause]) -> None:
    if not isinstance(s, dict):
        return
    if isinstance(x, list):
        items = s.get("items") if isinstance(s.get("items"), dict) else None
        list_type = s.get("x-kubernetes-list-type")
        keys = [k for k in s.get("x-kubernetes-list-map-keys") or [] if isinstance(k, str)]
        seen: list[Any] = []
        for i, item in enumerate(x):
            identity = item
            if list_type == "map" and isinstance(item, dict):
                identity = {k: item[k] for k in keys if k in item}
            if list_type in ("set", "map"):
                if any(_same_json(identity, other) for other in seen):
                    causes.append(Cause(f"{path}[{i}]", f"Duplicate value: {_render(identity)}",
                                        "FieldValueDuplicate"))
                seen.append(identity)
            if items is not None:
                _list_types(items, item, f"{path}[{i}]", causes)
    elif isinstance(x, dict):
        props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
        additional = s.get("additionalProperties")
        for key, value in x.items():
            sub = props.get(key) if isinstance(props.get(key), dict) else additional
            _list_types(sub, value, _child(path, key), causes)


# ---------------------------------------------------------------------------------------------------
# Pruning and defaulting


def prune(schema: Schema, obj: Any, *, is_resource: bool = True) -> list[str]:
    """Drop unspecified fields in place; returns their paths (``spec.foo``, ``spec.items[0].bar``).

    At a resource root (and inside x-kubernetes-embedded-resource objects) apiVersion, kind and metadata
    are left alone: metadata is ObjectMeta, decoded separately.
    """
    pruned: list[str] = []
    _prune(schema, obj, "", is_resource, pruned)
    return pruned


def _prune(s: Any, x: Any, path: str, is_resource: bool, pruned: list[str]) -> None:
    if not isinstance(s, dict):
        return
    if isinstance(x, list):
        items = s.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(x):
                _prune(items, item, f"{path}[{i}]", _truthy(items, "x-kubernetes-embedded-resource"), pruned)
        return
    if not isinstance(x, dict):
        return
    props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
    additional = s.get("additionalProperties")
    preserve = _truthy(s, "x-kubernetes-preserve-unknown-fields")
    for key in list(x):
        child = _child(path, key)
        if is_resource and key in _META_FIELDS:
            continue  # TypeMeta and ObjectMeta of a resource are never pruned by its schema
        prop = props.get(key)
        if isinstance(prop, dict):
            _prune(prop, x[key], child, _truthy(prop, "x-kubernetes-embedded-resource"), pruned)
        elif isinstance(additional, dict):
            _prune(additional, x[key], child, _truthy(additional, "x-kubernetes-embedded-resource"), pruned)
        elif additional is True or preserve:
            continue
        else:
            del x[key]
            pruned.append(child)


_DROP = object()


def pruned(schema: Schema, obj: Any, *, is_resource: bool = True) -> Any:
    """What prune() then PruneNonNullableNullsWithoutDefaults leave of ``obj``, without touching it.

    ``obj`` itself comes back when nothing goes; otherwise a copy of only the containers that lost something,
    sharing every other part with ``obj``. This is the coercion apiextensions applies after a conversion.
    """
    return _pruned(schema, obj, is_resource)


def _pruned(s: Any, x: Any, is_resource: bool) -> Any:
    if not isinstance(s, dict):
        return x
    if isinstance(x, list):
        items = s.get("items")
        if not isinstance(items, dict):
            return x
        embedded = _truthy(items, "x-kubernetes-embedded-resource")
        out_list: list[Any] | None = None
        for i, item in enumerate(x):
            new = _pruned(items, item, embedded)  # a null item stays: only null object fields go
            if new is not item:
                if out_list is None:
                    out_list = list(x)
                out_list[i] = new
        return x if out_list is None else out_list
    if not isinstance(x, dict):
        return x
    props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
    additional = s.get("additionalProperties")
    preserve = _truthy(s, "x-kubernetes-preserve-unknown-fields")
    out: dict[str, Any] | None = None
    for key, value in x.items():
        if is_resource and key in _META_FIELDS:
            continue
        prop = props.get(key)
        if not isinstance(prop, dict):
            prop = additional if isinstance(additional, dict) else None
        if prop is not None:
            if value is None:
                new = _DROP if not _truthy(prop, "nullable") and "default" not in prop else value
            else:
                new = _pruned(prop, value, _truthy(prop, "x-kubernetes-embedded-resource"))
        elif additional is True or preserve:
            continue
        else:
            new = _DROP
        if new is not value:
            if out is None:
                out = dict(x)
            if new is _DROP:
                del out[key]
            else:
                out[key] = new
    return x if out is None else out


def has_defaults(schema: Any) -> bool:
    """Whether any node of a structural schema has a ``default``: without one, defaulting changes nothing."""
    if not isinstance(schema, dict):
        return False
    if "default" in schema:
        return True
    props = schema.get("properties")
    if isinstance(props, dict) and any(has_defaults(p) for p in props.values()):
        return True
    return has_defaults(schema.get("additionalProperties")) or has_defaults(schema.get("items"))


def apply_defaults(schema: Schema, obj: Any) -> None:
    """structuraldefaulting.Default followed by PruneNonNullableNullsWithoutDefaults, in place."""
    _default(schema, obj)
    _drop_non_nullable_nulls(schema, obj)


def _default(s: Any, x: Any) -> None:
    if not isinstance(s, dict):
        return
    if isinstance(x, dict):
        props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
        for key, prop in props.items():
            if not isinstance(prop, dict) or "default" not in prop:
                continue
            if key not in x or (x[key] is None and not _truthy(prop, "nullable")):
                x[key] = copy.deepcopy(prop["default"])
        for key, value in x.items():
            prop = props.get(key)
            if isinstance(prop, dict):
                _default(prop, value)
            elif isinstance(s.get("additionalProperties"), dict):
                additional = s["additionalProperties"]
                if value is None and "default" in additional and not _truthy(additional, "nullable"):
                    x[key] = copy.deepcopy(additional["default"])
                _default(additional, x[key])
    elif isinstance(x, list) and isinstance(s.get("items"), dict):
        items = s["items"]
        for i, item in enumerate(x):
            if item is None and "default" in items and not _truthy(items, "nullable"):
                x[i] = copy.deepcopy(items["default"])
            _default(items, x[i])


def drop_non_nullable_nulls(schema: Schema, obj: Any) -> None:
    """PruneNonNullableNullsWithoutDefaults alone, in place (what apply_defaults ends with)."""
    _drop_non_nullable_nulls(schema, obj)


def _drop_non_nullable_nulls(s: Any, x: Any) -> None:
    if not isinstance(s, dict):
        return
    if isinstance(x, dict):
        props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
        additional = s.get("additionalProperties") if isinstance(s.get("additionalProperties"), dict) else None
        for key in list(x):
            prop = props.get(key) if isinstance(props.get(key), dict) else additional
            if prop is None:
                continue
            if x[key] is None and not _truthy(prop, "nullable") and "default" not in prop:
                del x[key]
            else:
                _drop_non_nullable_nulls(prop, x[key])
    elif isinstance(x, list) and isinstance(s.get("items"), dict):
        for item in x:
            _drop_non_nullable_nulls(s["items"], item)


__all__ = ["apply_defaults", "drop_non_nullable_nulls", "go_number", "has_defaults", "prune", "pruned",
           "validate_crd_schema", "validate_list_types", "validate_value"]
