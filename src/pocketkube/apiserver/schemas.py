"""The official OpenAPI definitions of the built-in kinds, and their conversion to upstream's two dialects.

The source is the JSON-schema rendering shipped in the ``kubernetes-validate`` package
(``_definitions.json``: ``$defs`` keyed ``io.k8s.api.apps.v1.Deployment``, refs ``#/$defs/...``, optional
fields typed ``["string", "null"]``). kube-apiserver serves the same schemas in two shapes:

- swagger 2.0 (``/openapi/v2``): refs ``#/definitions/...`` with sibling keys (``description``) kept
  beside ``$ref``, single types, IntOrString as ``type: string, format: int-or-string``, Quantity as
  ``type: string``;
- OpenAPI 3.0 (``/openapi/v3/...``): refs ``#/components/schemas/...``, a ``$ref`` that has siblings
  wrapped as ``allOf: [{$ref}]`` (3.0 ignores siblings of ``$ref``), IntOrString and Quantity as
  ``oneOf``.

Everything is loaded once, lazily, and every conversion is cached: the file is 1.7 MB and the converted
schemas are shared by the OpenAPI documents and the decoder.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from pocketkube import KUBERNETES_VERSION

INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
MICRO_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"

_SOURCE_REF = "#/$defs/"
V2_REF = "#/definitions/"
V3_REF = "#/components/schemas/"

Schema = dict[str, Any]


def _definitions_path() -> Path:
    # find_spec locates the package without importing it (its import pulls in jsonschema, ~150 ms).
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the kubernetes-validate package (OpenAPI schemas) is not installed")
    root = Path(spec.submodule_search_locations[0]) / "kubernetes-json-schema"
    return root / f"{KUBERNETES_VERSION}-local" / "_definitions.json"


@functools.cache
def definitions() -> dict[str, Schema]:
    """The raw ``$defs`` (JSON-schema flavoured). Callers must not mutate them."""
    return orjson.loads(_definitions_path().read_bytes())["$defs"]


def ref_name(ref: str) -> str:
    """``#/$defs/io.k8s...Pod`` (or any other dialect's ref) -> ``io.k8s...Pod``."""
    return ref.rsplit("/", 1)[-1]


def single_type(schema: Schema) -> str | None:
    """The schema's type with the JSON-schema ``null`` alternative removed."""
    t = schema.get("type")
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        return rest[0] if rest else None
    return t


@functools.cache
def direct_refs(name: str) -> frozenset[str]:
    """Definitions referenced directly by one definition."""
    out: set[str] = set()
    _collect_refs(definitions()[name], out)
    return frozenset(out)


def _collect_refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(ref_name(ref))
        for key, value in node.items():
            # enum/default/required/extension lists hold data, never schemas.
            if key in ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not"):
                _collect_refs(value, out)
        props = node.get("properties")
        if isinstance(props, dict):
            for value in props.values():
                _collect_refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _collect_refs(value, out)


def ref_closure(names: Iterable[str]) -> list[str]:
    """Every definition reachable from ``names`` (inclusive), sorted."""
    seen: set[str] = set()
    stack = [n for n in names]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(direct_refs(name) - seen)
    return sorted(seen)


# ---------------------------------------------------------------------------------------------------
# Conversion


def _is_type_meta_enum(prop: str, schema: Schema) -> bool:
    # kubernetes-validate pins apiVersion/kind with a one-value enum; upstream schemas don't.
    return prop in ("apiVersion", "kind") and "enum" in schema


def _convert(node: Any, dialect: str, prop: str = "") -> Any:
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    ref = node.get("$ref")
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "type":
            t = single_type(node)
            if t is not None:
                out["type"] = t
        elif key == "properties":
            out["properties"] = {k: _convert(v, dialect, k) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _convert(value, dialect)
        elif key in ("allOf", "anyOf", "oneOf"):
            if dialect == "v2":
                continue  # swagger 2.0 has no composition keywords besides allOf; upstream v2 has none
            out[key] = [_convert(v, dialect) for v in value]
        elif key == "enum" and _is_type_meta_enum(prop, node):
            continue
        else:
            out[key] = value
    if ref is not None:
        target = (V2_REF if dialect == "v2" else V3_REF) + ref_name(ref)
        if dialect == "v3" and out:
            return {"allOf": [{"$ref": target}], **out}
        return {"$ref": target, **out}
    return out


def _special(name: str, schema: Schema, dialect: str) -> Schema | None:
    """IntOrString and Quantity, which the JSON-schema rendering expresses as oneOf."""
    description = schema.get("description")
    head: Schema = {"description": description} if description else {}
    if name == INT_OR_STRING:
        if dialect == "v2":
            return {**head, "type": "string", "format": "int-or-string"}
        return {**head, "format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]}
    if name == QUANTITY:
        if dialect == "v2":
            return {**head, "type": "string"}
        return {**head, "oneOf": [{"type": "string"}, {"type": "number"}]}
    return None


@functools.cache
def v2_definition(name: str) -> Schema:
    """One definition in swagger 2.0 form (shared, do not mutate)."""
    raw = definitions()[name]
    return _special(name, raw, "v2") or _convert(raw, "v2")


@functools.cache
def v3_schema(name: str) -> Schema:
    """One definition in OpenAPI 3.0 form (shared, do not mutate)."""
    raw = definitions()[name]
    return _special(name, raw, "v3") or _convert(raw, "v3")
