"""OpenAPI definitions of custom resources, as apiextensions-apiserver's openapi builder makes them.

Each served version contributes ``<reversed group>.<version>.<Kind>`` (the CRD's structural schema with
apiVersion, kind and a metadata reference added, tagged with x-kubernetes-group-version-kind so
``kubectl explain`` finds it) and ``...<Kind>List``. The swagger 2.0 flavour drops what 2.0 cannot
say (nullable types, int-or-string types, anyOf/allOf/oneOf/not), as upstream's ToStructuralOpenAPIV2.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from typing import Any

from pocketkube.api.kinds import ResourceInfo
from pocketkube.apiserver import schemas
from pocketkube.apiserver.crd.codec import schema_of

Schema = dict[str, Any]

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
# Official definitions the custom ones refer to (their own references follow from these).
REFERENCED = (OBJECT_META, LIST_META)

_API_VERSION_DOC = ("APIVersion defines the versioned schema of this representation of an object. Servers should "
                    "convert recognized schemas to the latest internal value, and may reject unrecognized values. "
                    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
                    "#resources")
_KIND_DOC = ("Kind is a string value representing the REST resource this object represents. Servers may infer this "
             "from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: "
             "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds")
_METADATA_DOC = ("Standard object's metadata. More info: "
                 "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")
_LIST_METADATA_DOC = ("Standard list metadata. More info: "
                      "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds")


def definitions(infos: Iterable[ResourceInfo], dialect: str) -> dict[str, Schema]:
    """Definition name -> schema for every custom resource among ``infos`` ("v2" or "v3"; shared, read-only)."""
    out: dict[str, Schema] = {}
    for info in infos:
        if info.custom is not None:
            out[info.definition] = _object_schema(info, dialect)
            out[info.definition + "List"] = _list_schema(info, dialect)
    return out


def _ref(name: str, description: str, dialect: str) -> Schema:
    if dialect == "v2":
        return {"$ref": schemas.V2_REF + name, "description": description}
    return {"allOf": [{"$ref": schemas.V3_REF + name}], "description": description}


def _type_meta(schema: Schema) -> None:
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"description": _API_VERSION_DOC, "type": "string"}
    props["kind"] = {"description": _KIND_DOC, "type": "string"}


@functools.lru_cache(maxsize=256)
def _object_schema(info: ResourceInfo, dialect: str) -> Schema:
    schema = _convert(copy.deepcopy(schema_of(info)), dialect)
    schema.setdefault("type", "object")
    _type_meta(schema)
    schema["properties"]["metadata"] = _ref(OBJECT_META, _METADATA_DOC, dialect)
    schema["x-kubernetes-group-version-kind"] = [{"group": info.group, "kind": info.kind, "version": info.version}]
    return schema


@functools.lru_cache(maxsize=256)
def _list_schema(info: ResourceInfo, dialect: str) -> Schema:
    item_ref = (schemas.V2_REF if dialect == "v2" else schemas.V3_REF) + info.definition
    schema: Schema = {
        "description": f"{info.list_kind} is a list of {info.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"description": f"List of {info.plural}. More info: "
                                     f"https://git.k8s.io/community/contributors/devel/api-conventions.md",
                      "type": "array", "items": {"$ref": item_ref}},
            "metadata": _ref(LIST_META, _LIST_METADATA_DOC, dialect),
        },
        "x-kubernetes-group-version-kind": [{"group": info.group, "kind": info.list_kind,
                                             "version": info.version}],
    }
    _type_meta(schema)
    return schema


def _convert(node: Any, dialect: str) -> Any:
    """The served form of a structural schema node (in place; returns it)."""
    if not isinstance(node, dict):
        return node
    for key in ("properties",):
        if isinstance(node.get(key), dict):
            node[key] = {k: _convert(v, dialect) for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _convert(node[key], dialect)
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    if dialect == "v3":
        if int_or_string and "anyOf" not in node and not node.get("type"):
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        for key in ("allOf", "anyOf", "oneOf"):
            if isinstance(node.get(key), list):
                node[key] = [_convert(v, dialect) for v in node[key]]
        return node
    # swagger 2.0: no nullable, no junctors; leave untyped what 2.0 would describe wrongly
    for key in ("allOf", "anyOf", "oneOf", "not"):
        node.pop(key, None)
    if node.pop("nullable", False) is True or int_or_string:
        node.pop("type", None)
    if node.get("x-kubernetes-preserve-unknown-fields") is True and not node.get("properties"):
        node.pop("type", None)
    return node


def referenced_names(custom: dict[str, Schema]) -> set[str]:
    """The official definitions the given custom definitions refer to."""
    return set(REFERENCED) if custom else set()
