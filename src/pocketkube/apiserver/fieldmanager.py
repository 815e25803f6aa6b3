"""Server-side apply and metadata.managedFields, after k8s.io/apimachinery/pkg/util/managedfields and
sigs.k8s.io/structured-merge-diff (typed/merge, typed/compare, typed/remove, merge/update).

Objects are typed by the official OpenAPI definitions the way kube-openapi's schemaconv does it: maps are
granular unless ``x-kubernetes-map-type: atomic``; lists follow ``x-kubernetes-list-type`` (``map`` items
are keyed by ``x-kubernetes-list-map-keys``, ``set`` items by value) or, without it, a ``merge`` patch
strategy (keyed by the patch merge key, else a set); every other list is atomic. Quantities, IntOrString
and times are scalars; RawExtension is atomic; objects without properties are "deduced" (granular maps,
atomic lists).

Upstream compares Go objects, in which non-pointer struct fields are always present (``spec``,
``spec.strategy``, ``template.metadata`` ...). That decides where a created entry shows ``".": {}`` (a
field that did not exist before, like ``f:labels``) and where not (``f:spec``), so the comparison fills
in the Go zero value of such fields, taken from the protobuf field table (pointer/omitempty flags).

The manager chain mirrors NewDefaultFieldManager: version check, last-applied annotation upgrade for
``kubectl``, before-first-apply, the cap of 10 update managers (``ancient-changes``), manager identity
(manager, operation, apiVersion for updates, subresource), timestamps, metadata stripping and reset
fields (status on the main endpoint of kinds with a status subresource; everything but status on
/status). Only one version of each kind is served, so no cross-version conversion is done.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from pocketkube.api.errors import Cause, StatusError, bad_request, internal, invalid
from pocketkube.apiserver import protobuf, schemas
from pocketkube.apiserver.fieldpath import (
    FIELD,
    INDEX,
    KEY,
    VALUE,
    FieldSet,
    Path,
    PathElement,
    key_element,
    make_path,
    path_string,
    pe_string,
)

Obj = dict[str, Any]

APPLY, UPDATE = "Apply", "Update"
FIELDS_V1 = "FieldsV1"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
FIELD_MANAGER_MAX_LENGTH = 128
MAX_UPDATE_MANAGERS = 10
BEFORE_FIRST_APPLY = "before-first-apply"
ANCIENT_CHANGES = "ancient-changes"

# --- schema typing ------------------------------------------------------------------------------------

_SCALAR, _STRUCT, _MAP, _LIST, _DEDUCED = range(5)
_ATOMIC_LIST, _SET_LIST, _MAP_LIST = range(3)

_SCALAR_DEFS = {schemas.INT_OR_STRING, schemas.QUANTITY, schemas.TIME, schemas.MICRO_TIME}
_RAW_EXTENSION = "io.k8s.apimachinery.pkg.runtime.RawExtension"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Key fields with an OpenAPI default (``+default=``): an item that omits them is keyed with the default.
_KEY_DEFAULTS = {
    ("io.k8s.api.core.v1.ContainerPort", "protocol"): "TCP",
    ("io.k8s.api.core.v1.ServicePort", "protocol"): "TCP",
}


class _Type:
    __slots__ = ("kind", "fields", "elem", "atomic", "rel", "keys", "key_defaults", "name", "zero")

    def __init__(self, kind: int, name: str = "") -> None:
        self.kind = kind
        self.name = name
        self.fields: dict[str, _Type] = {}
        self.elem: _Type | None = None
        self.atomic = False
        self.rel = _ATOMIC_LIST
        self.keys: tuple[str, ...] = ()
        self.key_defaults: dict[str, Any] = {}
        # Fields a Go zero value of this struct always carries, with their zero values.
        self.zero: dict[str, Any] = {}


_SCALAR_T = _Type(_SCALAR)
_DEDUCED_T = _Type(_DEDUCED)
_ATOMIC_T = _Type(_DEDUCED)
_ATOMIC_T.atomic = True
_named_types: dict[str, _Type] = {}


def _named(name: str) -> _Type:
    t = _named_types.get(name)
    if t is not None:
        return t
    if name in _SCALAR_DEFS:
        return _SCALAR_T
    if name == _RAW_EXTENSION:
        return _ATOMIC_T
    node = schemas.definitions()[name]
    t = _named_types[name] = _Type(_STRUCT, name)  # registered before recursing: types are recursive
    _fill(t, node)
    if t.kind == _STRUCT:
        t.zero = _go_zero_fields(name, t)
        for key in t.keys:
            default = _KEY_DEFAULTS.get((name, key))
            if default is not None:
                t.key_defaults[key] = default
    return t


def _compile(node: dict[str, Any]) -> _Type:
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _named(schemas.ref_name(ref))
    t = _Type(_STRUCT)
    _fill(t, node)
    return t


def _fill(t: _Type, node: dict[str, Any]) -> None:
    kind = schemas.single_type(node)
    if kind == "object":
        t.atomic = node.get("x-kubernetes-map-type") == "atomic"
        props = node.get("properties")
        additional = node.get("additionalProperties")
        if props:
            t.kind = _STRUCT
            t.fields = {k: _compile(v) for k, v in props.items()}
            if node.get("x-kubernetes-embedded-resource") is True:  # the CRD builder declares these for it
                t.fields = {"apiVersion": _SCALAR_T, "kind": _SCALAR_T, "metadata": _named(_OBJECT_META),
                            **t.fields}
            if node.get("x-kubernetes-preserve-unknown-fields") is True:
                t.elem = _DEDUCED_T  # undeclared fields are allowed, and untyped
        elif isinstance(additional, dict):
            t.kind = _MAP
            t.elem = _compile(additional)
        else:
            t.kind = _DEDUCED
    elif kind == "array":
        t.kind = _LIST
        items = node.get("items")
        t.elem = _compile(items) if isinstance(items, dict) else _ATOMIC_T
        list_type = node.get("x-kubernetes-list-type")
        strategy = node.get("x-kubernetes-patch-strategy")
        if list_type == "map":
            t.rel, t.keys = _MAP_LIST, tuple(node.get("x-kubernetes-list-map-keys") or ())
        elif list_type == "set":
            t.rel = _SET_LIST
        elif list_type is None and strategy in ("merge", "merge,retainKeys"):
            merge_key = node.get("x-kubernetes-patch-merge-key")
            t.rel, t.keys = (_MAP_LIST, (merge_key,)) if merge_key else (_SET_LIST, ())
        if t.rel == _MAP_LIST and t.elem is not None and t.elem.name:
            t.key_defaults = {k: d for (n, k), d in _KEY_DEFAULTS.items() if n == t.elem.name and k in t.keys}
    elif kind in ("string", "integer", "number", "boolean"):
        t.kind = _SCALAR
    else:
        t.kind = _DEDUCED


def root_type(definition: str) -> _Type:
    return _named(definition)


def custom_root_type(schema: dict[str, Any]) -> _Type:
    """A custom resource's type from its CRD's openAPIV3Schema, as upstream's CRD type converter builds it:
    lists are atomic unless x-kubernetes-list-type says otherwise, metadata is ObjectMeta."""
    compiled = _compile(schema)
    t = _Type(_STRUCT)
    t.fields = {**compiled.fields, "apiVersion": _SCALAR_T, "kind": _SCALAR_T,
                "metadata": _named(_OBJECT_META)}
    if schema.get("x-kubernetes-preserve-unknown-fields") is True:
        t.elem = _DEDUCED_T
    return t


# --- validation of an apply configuration (typed/validate.go) -----------------------------------------

def _undeclared(t: _Type, value: Any, path: Path, out: list[Path]) -> None:
    """Collect the paths of fields the schema does not declare; like upstream, stop at an object's first."""
    if isinstance(value, list) and t.kind == _LIST:
        elem = t.elem or _DEDUCED_T
        for index, item in enumerate(value):
            pe = (INDEX, index) if t.rel == _ATOMIC_LIST else _item_pe(t, item)
            if pe is not None:  # an item without its keys is refused elsewhere
                _undeclared(elem, item, path + (pe,), out)
    elif isinstance(value, dict) and t.kind in (_STRUCT, _MAP):
        for key, child in value.items():
            child_type = t.fields.get(key) or t.elem
            if child_type is None:
                out.append(path + ((FIELD, key),))
                return
            _undeclared(child_type, child, path + ((FIELD, key),), out)


# Go zero values, from the protobuf field table (pointer / omitempty / omitzero flags per field).
_PROTO_SCALAR_ZERO: dict[str, Any] = {"string": "", "bool": False, "bytes": None, "double": 0.0, "float": 0.0,
                                      "int32": 0, "int64": 0, "uint32": 0, "uint64": 0}
_PROTO_SPECIAL_ZERO: dict[str, Any] = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": None,
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": None,
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "0s",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": None,
    "k8s.io.apimachinery.pkg.runtime.RawExtension": None,
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": 0,
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "0",
}


@functools.cache
def _proto_messages() -> tuple[dict[str, list[list[Any]]], frozenset[str]]:
    document = json.loads(resources.files("pocketkube.apiserver").joinpath("protobuf_schema.json").read_text())
    return document["messages"], frozenset(document["listWrappers"])


def _go_zero_fields(definition: str, t: _Type) -> dict[str, Any]:
    messages, wrappers = _proto_messages()
    rows = messages.get(protobuf.definition_message(definition))
    if rows is None:
        return {}
    zero: dict[str, Any] = {}
    for _number, json_name, ftype, flags in rows:
        field_type = t.fields.get(json_name)
        if not json_name or field_type is None:
            continue
        omitempty = "e" in flags
        if "p" in flags or "r" in flags or ftype.startswith("map<") or ftype in wrappers:
            if not omitempty:
                zero[json_name] = None  # a nil pointer, slice or map without omitempty is null
        elif ftype in _PROTO_SCALAR_ZERO:
            if not omitempty:
                zero[json_name] = _PROTO_SCALAR_ZERO[ftype]
        elif "z" in flags:
            continue
        elif ftype in _PROTO_SPECIAL_ZERO:
            zero[json_name] = _PROTO_SPECIAL_ZERO[ftype]
        elif field_type.kind == _STRUCT:
            zero[json_name] = _ZeroStruct(field_type)
    return zero


class _ZeroStruct:
    """A lazily expanded Go zero struct (expanding eagerly would recurse through recursive types)."""

    __slots__ = ("type",)

    def __init__(self, t: _Type) -> None:
        self.type = t

    def expand(self) -> dict[str, Any]:
        """The struct's zero fields; nested zero structs stay lazy until compared."""
        return dict(self.type.zero)


# --- field sets of objects (typed/tofieldset.go) ------------------------------------------------------

def fields_of(definition: str, obj: Obj) -> FieldSet:
    """The set of fields an object sets, per its kind's schema (TypedValue.ToFieldSet)."""
    out = FieldSet()
    _to_set(root_type(definition), obj, (), out)
    return out


def _item_pe(t: _Type, item: Any) -> PathElement | None:
    """The path element of a list item (None when the item can't be keyed)."""
    if t.rel == _MAP_LIST:
        if not isinstance(item, dict):
            return None
        fields = {}
        for key in t.keys:
            if key in item:
                fields[key] = item[key]
            elif key in t.key_defaults:
                fields[key] = t.key_defaults[key]
        if t.keys and not fields:
            return None
        return key_element(fields)
    if isinstance(item, dict | list) or item is None:
        return None
    return (VALUE, item)


def _to_set(t: _Type, value: Any, path: Path, out: FieldSet) -> None:
    kind = t.kind
    if kind == _DEDUCED:
        if isinstance(value, dict) and not t.atomic:
            for key, child in value.items():
                child_path = path + ((FIELD, key),)
                _to_set(_DEDUCED_T, child, child_path, out)
                out.insert(child_path)
        else:
            out.insert(path)
        return
    if kind == _SCALAR or not isinstance(value, dict | list):
        out.insert(path)
        return
    if kind == _LIST:
        if t.rel == _ATOMIC_LIST or not isinstance(value, list):
            out.insert(path)
            return
        elem = t.elem or _DEDUCED_T
        seen: set[PathElement] = set()
        duplicates: set[PathElement] = set()
        pes = []
        for item in value:
            pe = _item_pe(t, item)
            pes.append(pe)
            if pe is None:
                continue
            if pe in seen:
                if pe not in duplicates:
                    duplicates.add(pe)
                    out.insert(path + (pe,))
            else:
                seen.add(pe)
        for pe, item in zip(pes, value, strict=True):
            if pe is None or pe in duplicates:
                continue
            item_path = path + (pe,)
            _to_set(elem, item, item_path, out)
            out.insert(item_path)
        return
    # struct or map
    if t.atomic or not isinstance(value, dict):
        out.insert(path)
        return
    fields = t.fields
    for key, child in value.items():
        child_type = fields.get(key)
        child_path = path + ((FIELD, key),)
        if child_type is None:
            child_type = t.elem or _DEDUCED_T
            _to_set(child_type, child, child_path, out)
            out.insert(child_path)  # map entries (not struct fields) are always members
            continue
        _to_set(child_type, child, child_path, out)
        if child is None or (isinstance(child, dict) and not child):
            out.insert(child_path)


# --- comparison (typed/compare.go) ---------------------------------------------------------------------

_ABSENT = object()  # a side that has no value at all (Go nil), unlike JSON null (None)


@dataclass
class Comparison:
    added: FieldSet
    modified: FieldSet
    removed: FieldSet

    def exclude(self, ignored: FieldSet) -> Comparison:
        return Comparison(self.added.recursive_difference(ignored), self.modified.recursive_difference(ignored),
                          self.removed.recursive_difference(ignored))


def compare(definition: str, lhs: Obj, rhs: Obj) -> Comparison:
    """Fields added, modified and removed going from lhs to rhs."""
    out = Comparison(FieldSet(), FieldSet(), FieldSet())
    _compare(root_type(definition), lhs, rhs, (), out)
    return out


def _is_container(t: _Type, value: Any) -> bool:
    if t.kind == _LIST:
        return value is None or value is _ABSENT or isinstance(value, list)
    if t.kind in (_STRUCT, _MAP):
        return value is None or value is _ABSENT or isinstance(value, dict)
    if t.kind == _DEDUCED:
        return isinstance(value, dict) and not t.atomic
    return False


def _compare_leaf(lhs: Any, rhs: Any, path: Path, out: Comparison) -> None:
    if lhs is _ABSENT:
        out.added.insert(path)
    elif rhs is _ABSENT:
        out.removed.insert(path)
    elif lhs != rhs or type(lhs) is not type(rhs) and not _numbers_equal(lhs, rhs):
        out.modified.insert(path)


def _numbers_equal(a: Any, b: Any) -> bool:
    return (isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool)
            and not isinstance(b, bool) and a == b)


def _same_json(lhs: Any, rhs: Any) -> bool:
    """Equal containers that would also encode alike: Python's == alone takes True for 1, where a field
    that changed from a boolean to a number is a modification."""
    if lhs != rhs:
        return False
    try:
        return orjson.dumps(lhs, option=orjson.OPT_SORT_KEYS) == orjson.dumps(rhs, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON (an integer beyond 64 bits): compare field by field
        return False


def _compare(t: _Type, lhs: Any, rhs: Any, path: Path, out: Comparison) -> None:
    # An unchanged subtree (most of an object in most updates) has nothing to report: skip the walk.
    if type(lhs) is type(rhs) and (type(lhs) is dict or type(lhs) is list) and _same_json(lhs, rhs):
        return
    kind = t.kind
    if kind == _DEDUCED:
        both_maps = (lhs is _ABSENT or isinstance(lhs, dict)) and (rhs is _ABSENT or isinstance(rhs, dict))
        if t.atomic or not both_maps or (not lhs and not rhs):
            _compare_leaf(lhs, rhs, path, out)
            return
        _compare_maps(t, lhs, rhs, path, out)
    elif kind == _SCALAR or not (_is_container(t, lhs) and _is_container(t, rhs)):
        _compare_leaf(lhs, rhs, path, out)
        return
    elif kind == _LIST:
        l_items = lhs if isinstance(lhs, list) else []
        r_items = rhs if isinstance(rhs, list) else []
        if t.rel == _ATOMIC_LIST or (not l_items and not r_items):
            _compare_leaf(lhs, rhs, path, out)
            return
        _compare_lists(t, l_items, r_items, path, out)
    else:
        l_map = lhs if isinstance(lhs, dict) else {}
        r_map = rhs if isinstance(rhs, dict) else {}
        if t.atomic or (not l_map and not r_map):
            _compare_leaf(lhs, rhs, path, out)
            return
        _compare_maps(t, lhs, rhs, path, out)
    if path:
        if lhs is _ABSENT:
            out.added.insert(path)
        elif rhs is _ABSENT:
            out.removed.insert(path)


def _compare_maps(t: _Type, lhs: Any, rhs: Any, path: Path, out: Comparison) -> None:
    l_map = lhs if isinstance(lhs, dict) else {}
    r_map = rhs if isinstance(rhs, dict) else {}
    fields, zero = t.fields, t.zero
    elem = t.elem or _DEDUCED_T
    # Only a struct that exists carries the zero values of its non-pointer fields.
    l_zero = zero if isinstance(lhs, dict) else {}
    r_zero = zero if isinstance(rhs, dict) else {}
    for key in l_map.keys() | r_map.keys():
        lv = l_map.get(key, _ABSENT)
        rv = r_map.get(key, _ABSENT)
        if lv is _ABSENT and key in l_zero:
            lv = l_zero[key]
        elif rv is _ABSENT and key in r_zero:
            rv = r_zero[key]
        if type(lv) is _ZeroStruct:
            lv = lv.expand()
        if type(rv) is _ZeroStruct:
            rv = rv.expand()
        _compare(fields.get(key, elem), lv, rv, path + ((FIELD, key),), out)


def _compare_lists(t: _Type, lhs: list[Any], rhs: list[Any], path: Path, out: Comparison) -> None:
    elem = t.elem or _DEDUCED_T
    l_values: dict[PathElement, list[Any]] = {}
    r_values: dict[PathElement, list[Any]] = {}
    order: list[PathElement] = []
    for items, values in ((lhs, l_values), (rhs, r_values)):
        for item in items:
            pe = _item_pe(t, item)
            if pe is None:
                continue
            if pe not in l_values and pe not in r_values:
                order.append(pe)
            values.setdefault(pe, []).append(item)
    for pe in order:
        ls, rs = l_values.get(pe, []), r_values.get(pe, [])
        item_path = path + (pe,)
        if len(ls) <= 1 and len(rs) <= 1:
            _compare(elem, ls[0] if ls else _ABSENT, rs[0] if rs else _ABSENT, item_path, out)
        elif len(ls) >= 2 and len(rs) >= 2:
            if ls != rs:
                out.modified.insert(item_path)
        elif len(ls) >= 2:
            if rs:
                _compare(elem, _ABSENT, rs[0], item_path, out)
            out.removed.insert(item_path)
        else:
            if ls:
                _compare(elem, ls[0], _ABSENT, item_path, out)
            out.added.insert(item_path)


# --- merge (typed/merge.go, rule "keep RHS") -----------------------------------------------------------

def merge(definition: str, lhs: Obj, rhs: Obj) -> Obj:
    """The applied configuration ``rhs`` merged into ``lhs``."""
    return _merge_object(root_type(definition), lhs, rhs)


def _merge_object(t: _Type, lhs: Obj, rhs: Obj) -> Obj:
    merged = _merge(t, lhs, rhs)
    return merged if isinstance(merged, dict) else {}


def _merge(t: _Type, lhs: Any, rhs: Any) -> Any:
    """The merged value; _ABSENT when nothing is produced, None for null (the caller drops both)."""
    if rhs is _ABSENT:
        return lhs
    kind = t.kind
    if kind == _SCALAR:
        return rhs
    if kind == _LIST:
        l_items = lhs if isinstance(lhs, list) else []
        if rhs is None:
            return lhs if l_items and t.rel != _ATOMIC_LIST else None
        if not isinstance(rhs, list) or t.rel == _ATOMIC_LIST or (not l_items and not rhs):
            return rhs
        return _merge_lists(t, l_items, rhs)
    is_granular_map = kind in (_STRUCT, _MAP) or (kind == _DEDUCED and isinstance(rhs, dict))
    if not is_granular_map:
        return rhs
    l_map = lhs if isinstance(lhs, dict) else {}
    if rhs is None:
        return lhs if l_map and not t.atomic else None
    if not isinstance(rhs, dict) or t.atomic or (not l_map and not rhs):
        return rhs
    fields = t.fields
    elem = t.elem or _DEDUCED_T
    out: Obj = {}
    for key, lv in l_map.items():
        value = _merge(fields.get(key, elem), lv, rhs.get(key, _ABSENT))
        if value is not _ABSENT and value is not None:
            out[key] = value
    for key, rv in rhs.items():
        if key not in l_map:
            value = _merge(fields.get(key, elem), _ABSENT, rv)
            if value is not _ABSENT and value is not None:
                out[key] = value
    return out if out else _ABSENT


def _merge_lists(t: _Type, lhs: list[Any], rhs: list[Any]) -> list[Any] | Any:
    """Associative list merge: keeps the live order, placing the applied items in the applied order."""
    elem = t.elem or _DEDUCED_T
    r_pes: list[PathElement] = []
    r_observed: dict[PathElement, Any] = {}
    for item in rhs:
        pe = _item_pe(t, item)
        if pe is None:
            raise bad_request(f"element {len(r_pes)}: associative list item can't be keyed")
        if pe in r_observed:
            raise _duplicate_entries(pe)
        r_observed[pe] = item
        r_pes.append(pe)
    l_pes: list[PathElement] = []
    l_observed: dict[PathElement, Any] = {}
    for item in lhs:
        pe = _item_pe(t, item)
        if pe is None:
            continue
        # duplicated live items are not merged with the applied value
        l_observed[pe] = None if pe in l_observed else item
        l_pes.append(pe)
    shared = [pe for pe in r_pes if pe in l_observed]
    next_shared = shared.pop(0) if shared else None
    merged_rhs: set[PathElement] = set()
    out: list[Any] = []

    def emit(pe: PathElement, lv: Any, rv: Any) -> None:
        value = _merge(elem, _ABSENT if lv is None else lv, rv)
        if value is not _ABSENT and value is not None:
            out.append(value)

    li = ri = 0
    while li < len(l_pes) or ri < len(r_pes):
        if li < len(l_pes) and ri < len(r_pes):
            pe = l_pes[li]
            if pe == r_pes[ri]:
                merged_rhs.add(pe)
                emit(pe, l_observed.get(pe), r_observed[pe])
                li += 1
                ri += 1
                next_shared = shared.pop(0) if shared else None
                continue
            if pe in r_observed and next_shared is not None and next_shared != pe:
                li += 1  # a shared item, but not the one due in this round
                continue
        if li < len(l_pes):
            pe = l_pes[li]
            if pe not in r_observed:
                out.append(lhs[li])
                li += 1
                continue
            if pe in merged_rhs:
                li += 1
        if ri < len(r_pes):
            pe = r_pes[ri]
            merged_rhs.add(pe)
            emit(pe, l_observed.get(pe), r_observed[pe])
            ri += 1
            if next_shared is not None and next_shared == pe:
                next_shared = shared.pop(0) if shared else None
    return out if out else _ABSENT


def _duplicate_entries(pe: PathElement) -> StatusError:
    return internal(f"failed to merge config: .: duplicate entries for key {pe_string(pe)}")


# --- removal (typed/remove.go) and EnsureNamedFieldsAreMembers -------------------------------------------

def _remove_items(t: _Type, value: Any, to_remove: FieldSet) -> Any:
    """``value`` without the paths in ``to_remove``; _ABSENT when nothing is left of a list or map."""
    kind = t.kind
    if kind == _LIST:
        if not isinstance(value, list) or not value or t.rel == _ATOMIC_LIST:
            return value
        elem = t.elem or _DEDUCED_T
        items = []
        for item in value:
            pe = _item_pe(t, item)
            if pe is None:
                items.append(item)
                continue
            if pe in to_remove.members:
                continue
            sub = to_remove.children.get(pe)
            if sub is not None:
                item = _remove_items(elem, item, sub)
                if item is _ABSENT:
                    continue
            items.append(item)
        return items if items else _ABSENT
    if kind == _SCALAR or not isinstance(value, dict) or not value or t.atomic:
        return value
    fields = t.fields
    elem = t.elem or _DEDUCED_T
    out = {}
    for key, child in value.items():
        pe = (FIELD, key)
        if pe in to_remove.members:
            continue
        sub = to_remove.children.get(pe)
        if sub is not None:
            child = _remove_items(fields.get(key, elem), child, sub)
            if child is _ABSENT:
                continue
        out[key] = child
    return out if out else _ABSENT


def _ensure_named(t: _Type, s: FieldSet) -> FieldSet:
    """Also make members of the struct fields that only have children (a set of a.b.c gains a)."""
    if not s.children:
        return s
    out = FieldSet()
    out.members = set(s.members)
    for pe, child in s.children.items():
        child_type = _DEDUCED_T
        if pe[0] == FIELD and t.kind in (_STRUCT, _MAP, _DEDUCED):
            declared = t.fields.get(pe[1])
            if declared is not None:
                out.members.add(pe)
                child_type = declared
            elif t.elem is not None:
                child_type = t.elem
        elif pe[0] == KEY and t.kind == _LIST and t.elem is not None:
            child_type = t.elem
        out.children[pe] = _ensure_named(child_type, child)
    return out


def _remove(t: _Type, obj: Obj, to_remove: FieldSet) -> Obj:
    if to_remove.empty():
        return obj
    result = _remove_items(t, obj, to_remove)
    return result if isinstance(result, dict) else {}


def _typed_set(t: _Type, obj: Obj) -> FieldSet:
    out = FieldSet()
    _to_set(t, obj, (), out)
    return out


# --- managers ------------------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class ManagerId:
    """What makes two managedFields entries the same manager (BuildManagerIdentifier)."""

    manager: str
    operation: str
    api_version: str  # empty for Apply: an applier keeps its entry across versions
    subresource: str

    def describe(self, api_version: str) -> str:
        """printManager: how a conflict names the manager."""
        text = json.dumps(self.manager, ensure_ascii=False)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource, ensure_ascii=False)}"
        if self.operation == UPDATE:
            text += f" using {api_version}"
        return text


@dataclass
class VersionedSet:
    fields: FieldSet
    api_version: str
    applied: bool


Managed = dict[ManagerId, VersionedSet]
Times = dict[ManagerId, str | None]


def _manager_id(manager: str, operation: str, api_version: str, subresource: str) -> ManagerId:
    return ManagerId(manager or "unknown", operation, "" if operation == APPLY else api_version, subresource)


def decode_managed_fields(entries: Any) -> tuple[Managed, Times]:
    """DecodeManagedFields; ValueError for anything upstream refuses."""
    if entries is None:
        return {}, {}
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    managed: Managed = {}
    times: Times = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"managed fields entry {i} must be an object")
        operation = entry.get("operation")
        if operation not in (APPLY, UPDATE):
            raise ValueError("operation must be `Apply` or `Update`")
        api_version = entry.get("apiVersion")
        if not isinstance(api_version, str) or not api_version:
            raise ValueError("apiVersion must not be empty")
        fields_type = entry.get("fieldsType")
        if not fields_type:
            raise ValueError(f"missing fieldsType in managed fields entry {i}")
        if fields_type != FIELDS_V1:
            raise ValueError(f"invalid fieldsType {fields_type!r} in managed fields entry {i}")
        manager, subresource = entry.get("manager", ""), entry.get("subresource", "")
        if not isinstance(manager, str) or not isinstance(subresource, str):
            raise ValueError(f"invalid manager in managed fields entry {i}")
        ident = ManagerId(manager, operation, "" if operation == APPLY else api_version, subresource)
        fields = entry.get("fieldsV1")
        managed[ident] = VersionedSet(FieldSet.from_fields_v1(fields if fields is not None else {}),
                                      api_version, operation == APPLY)
        time = entry.get("time")
        times[ident] = time if isinstance(time, str) else None
    return managed, times


def encode_managed_fields(managed: Managed, times: Times) -> list[Obj] | None:
    """The sorted managedFields list (None when nothing is managed)."""
    if not managed:
        return None
    entries = []
    for ident, vs in managed.items():
        entry: Obj = {"manager": ident.manager, "operation": APPLY if vs.applied else ident.operation,
                      "apiVersion": vs.api_version}
        time = times.get(ident)
        if time:
            entry["time"] = time
        entry["fieldsType"] = FIELDS_V1
        entry["fieldsV1"] = vs.fields.to_fields_v1()
        if ident.subresource:
            entry["subresource"] = ident.subresource
        entries.append(entry)
    entries.sort(key=lambda e: (e["operation"], e.get("time") or "", e["manager"], e["apiVersion"],
                                e.get("subresource", "")))
    return entries


def _is_reset(entries: Any) -> bool:
    """An empty list, or a list of one empty entry, asks for managedFields to be reset."""
    return isinstance(entries, list) and (not entries or (len(entries) == 1 and entries[0] == {}))


# Fields never tracked (stripMetaManager).
_STRIP = FieldSet.of(*(make_path(*p) for p in (
    ("apiVersion",), ("kind",), ("metadata",), ("metadata", "name"), ("metadata", "namespace"),
    ("metadata", "creationTimestamp"), ("metadata", "selfLink"), ("metadata", "uid"),
    ("metadata", "clusterName"), ("metadata", "generation"), ("metadata", "managedFields"),
    ("metadata", "resourceVersion"))))
_STATUS = FieldSet.of(make_path("status"))


class ApplyConflict(Exception):
    """Fields of the applied configuration owned by other managers with other values."""

    def __init__(self, conflicts: list[tuple[str, str]], paths: list[Path] | None = None) -> None:
        self.conflicts = conflicts  # (manager as printed, field path as printed), grouped by manager
        self.paths = paths or []  # the same field paths, as paths
        super().__init__(_conflict_message(conflicts))

    @property
    def message(self) -> str:
        return str(self)

    def to_status_error(self) -> StatusError:
        """409 Conflict with one FieldManagerConflict cause per field (errors.NewApplyConflict)."""
        causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {manager}", "field": path}
                  for manager, path in self.conflicts]
        return StatusError(409, "Conflict", self.message, {"causes": causes})


def _conflict_message(conflicts: list[tuple[str, str]]) -> str:
    if len(conflicts) == 1:
        manager, path = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {manager}: {path}"
    by_manager: dict[str, list[str]] = {}
    for manager, path in conflicts:
        by_manager.setdefault(manager, []).append(path)
    lines = []
    for manager in sorted(by_manager):
        lines.append(f"conflicts with {manager}:")
        lines.extend(f"- {path}" for path in by_manager[manager])
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


def default_manager(user_agent: str) -> str:
    """prefixFromUserAgent: the User-Agent up to the first '/', printable characters, at most 128 bytes."""
    out = []
    size = 0
    for ch in user_agent.split("/", 1)[0]:
        if not ch.isprintable():
            continue
        n = len(ch.encode())
        if size + n > FIELD_MANAGER_MAX_LENGTH:
            break
        out.append(ch)
        size += n
    return "".join(out)


def validate_patch_options(is_apply: bool, field_manager: str, force_given: bool) -> None:
    """ValidatePatchOptions: 422 PatchOptions.meta.k8s.io "" is invalid (fieldManager/force)."""
    causes = []
    if not is_apply and force_given:
        causes.append(Cause("force", "Forbidden: may not be specified for non-apply patch", "FieldValueForbidden"))
    if is_apply and not field_manager:
        causes.append(Cause("fieldManager", "Required value: is required for apply patch", "FieldValueRequired"))
    causes += field_manager_causes(field_manager)
    if causes:
        raise invalid("PatchOptions", "", "meta.k8s.io", causes)


def field_manager_causes(field_manager: str) -> list[Cause]:
    """ValidateFieldManager (also for create/update options)."""
    if len(field_manager.encode()) > FIELD_MANAGER_MAX_LENGTH:
        return [Cause("fieldManager", f"Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes",
                      "FieldValueTooLong")]
    for ch in field_manager:
        if not ch.isprintable():
            return [Cause("fieldManager", f"Invalid value: {json.dumps(field_manager)}: invalid characters",
                          "FieldValueInvalid")]
    return []


class FieldManager:
    """managedFields bookkeeping for one kind, served at ``api_version``.

    ``has_status`` says the kind has a status subresource: then the main endpoint does not track
    ``status`` and ``/status`` tracks nothing else (upstream's reset fields).
    """

    def __init__(self, definition: str, api_version: str, kind: str, has_status: bool = False,
                 schema: dict[str, Any] | None = None) -> None:
        self.definition = definition
        self.api_version = api_version
        self.kind = kind
        self.has_status = has_status
        # a custom resource brings its CRD's schema; built-in kinds are typed by the official definitions
        self.type = custom_root_type(schema) if schema is not None else root_type(definition)

    # --- public operations ---------------------------------------------------------------------------

    def update(self, live: Obj | None, new: Obj, manager: str, now: str, subresource: str = "") -> Obj:
        """Create/update/non-apply patch: set ``new``'s managedFields (in place; returns ``new``).

        ``live`` is the stored object, or None on create. ``new`` is the object about to be stored, after
        decoding and defaulting.
        """
        live = live or {}
        new_meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else None
        live_meta = live.get("metadata") if isinstance(live.get("metadata"), dict) else {}
        managed, times = self._decode_live_or_new(live_meta, new_meta, subresource)
        if new_meta is not None:
            new_meta.pop("managedFields", None)
        if not managed and live_meta.get("uid"):
            # skipNonAppliedManager: an object that was never tracked stays untracked until applied.
            self._encode(new, managed, times)
            return new
        managed, times = self._update_managers(_without_managed_fields(live), new, managed, times,
                                               _manager_id(manager, UPDATE, self.api_version, subresource),
                                               now, subresource)
        self._encode(new, managed, times)
        return new

    def apply(self, live: Obj | None, applied: Obj, manager: str, now: str, force: bool = False,
              subresource: str = "") -> Obj:
        """Server-side apply of ``applied`` onto ``live`` (None: create). Returns the new object.

        Raises StatusError (400) for a wrong type or managedFields in the configuration, ApplyConflict
        for conflicts. The caller defaults, validates and stores the result as for any update. Inputs are
        not modified, but the result shares untouched subtrees with them.
        """
        self.check_applied(applied)
        live = live or {}
        live_meta = live.get("metadata") if isinstance(live.get("metadata"), dict) else {}
        try:
            managed, times = decode_managed_fields(live_meta.get("managedFields"))
        except ValueError as err:
            raise internal(f"failed to decode managed fields: {err}") from None
        live_plain = _without_managed_fields(live)
        if not managed:
            # skipNonAppliedManager: whatever exists before the first apply belongs to "before-first-apply".
            managed, times = self._update_managers(
                {}, live_plain, managed, times,
                _manager_id(BEFORE_FIRST_APPLY, UPDATE, self.api_version, subresource), now, subresource)
        ident = _manager_id(manager, APPLY, self.api_version, subresource)
        try:
            result, managed = self._apply(live_plain, applied, managed, ident, force, subresource)
        except ApplyConflict as conflict:
            if manager != "kubectl" or force:
                raise
            allowed = self._allowed_from_last_applied(live_plain)
            if allowed is None:
                raise
            keep = [i for i, path in enumerate(conflict.paths) if not allowed.has(path)]
            if keep:
                raise ApplyConflict([conflict.conflicts[i] for i in keep], [conflict.paths[i] for i in keep]) \
                    from None
            result, managed = self._apply(live_plain, applied, managed, ident, True, subresource)
        if result is None:
            result = copy.deepcopy(live_plain)  # no-op: the entry's time stays
        else:
            times[ident] = now
            # merge shares untouched subtrees with its inputs: never write into the caller's metadata
            result["metadata"] = dict(result.get("metadata") or {})
        if manager == "kubectl":
            _sync_last_applied(result, live_plain, applied)
        self._encode(result, managed, times)
        return result

    def check_applied(self, applied: Obj) -> None:
        """What upstream refuses in an apply configuration before merging it: another kind (400), managedFields
        (400), fields its schema does not declare, whatever the fieldValidation. Upstream answers the last with a
        reason-less 500 from its typed conversion; here, as for the strategic merge patch library's errors, it
        is the same message as a 400 BadRequest: the fault is the request's, not the server's."""
        gvk = (applied.get("apiVersion"), applied.get("kind"))
        if gvk != (self.api_version, self.kind):
            raise bad_request(f"invalid object type: {_gvk_string(*gvk)}")
        meta = applied.get("metadata")
        if isinstance(meta, dict) and meta.get("managedFields") is not None:
            raise bad_request("metadata.managedFields must be nil")
        undeclared: list[Path] = []
        _undeclared(self.type, applied, (), undeclared)
        if undeclared:
            errs = [f"{path_string(path)}: field not declared in schema" for path in undeclared]
            text = errs[0] if len(errs) == 1 else "\n  ".join(["errors:", *errs])
            meta = meta if isinstance(meta, dict) else {}
            namespace, name = (v if isinstance(v, str) else "" for v in (meta.get("namespace"), meta.get("name")))
            raise bad_request(f"failed to create typed patch object ({namespace}/{name}; {_gvk_string(*gvk)}): "
                              f"{text}")

    # --- internals ----------------------------------------------------------------------------------------

    def _filter(self, s: FieldSet, subresource: str) -> FieldSet:
        """Drop reset fields: status on the main endpoint, everything but status on /status."""
        if subresource == "status":
            out = FieldSet()
            status = ("f", "status")
            if status in s.members:
                out.members.add(status)
            if status in s.children:
                out.children[status] = s.children[status]
            return out
        return s.recursive_difference(_STATUS) if self.has_status else s

    def _compare(self, lhs: Obj, rhs: Obj, subresource: str) -> Comparison:
        cmp = Comparison(FieldSet(), FieldSet(), FieldSet())
        _compare(self.type, lhs, rhs, (), cmp)
        return Comparison(self._filter(cmp.added, subresource), self._filter(cmp.modified, subresource),
                          self._filter(cmp.removed, subresource))

    def _decode_live_or_new(self, live_meta: Obj, new_meta: Obj | None, subresource: str) -> tuple[Managed, Times]:
        def from_live() -> tuple[Managed, Times]:
            try:
                return decode_managed_fields(live_meta.get("managedFields"))
            except ValueError:
                return {}, {}

        if subresource or new_meta is None:
            return from_live()  # a subresource request can't set managedFields
        entries = new_meta.get("managedFields")
        if _is_reset(entries):
            return {}, {}
        try:
            managed, times = decode_managed_fields(entries)
        except ValueError:
            return from_live()  # invalid user-supplied managedFields are replaced by the live ones
        return (managed, times) if managed else from_live()

    def _update_managers(self, live: Obj, new: Obj, managed: Managed, times: Times, ident: ManagerId,
                         now: str, subresource: str) -> tuple[Managed, Times]:
        """Updater.Update under a temporary identity, merged into ``ident`` only if something changed."""
        cmp = self._compare(live, _without_managed_fields(new), subresource)
        changed = cmp.modified.union(cmp.added)
        managed = dict(managed)
        for other, vs in list(managed.items()):
            rest = vs.fields.difference(changed).difference(cmp.removed)
            if rest.empty():
                del managed[other]
            else:
                managed[other] = VersionedSet(rest, vs.api_version, vs.applied)
        mine = changed.difference(_STRIP)
        if not mine.empty():
            previous = managed.get(ident)
            if previous is not None:
                mine = mine.union(previous.fields)
            managed[ident] = VersionedSet(mine, self.api_version, False)
            times = dict(times)
            times[ident] = now
        times = {k: v for k, v in times.items() if k in managed}
        return _cap_update_managers(managed, times)

    def _apply(self, live: Obj, applied: Obj, managed: Managed, ident: ManagerId, force: bool,
               subresource: str) -> tuple[Obj | None, Managed]:
        """Updater.Apply: merge, record the applied set, prune, check conflicts."""
        t = self.type
        merged = _merge_object(t, live, applied)
        last = managed.get(ident)
        managed = dict(managed)
        applied_set = self._filter(_typed_set(t, applied), subresource)
        if last is not None and not last.fields.empty():
            # Pruning sees the configuration's metadata.name/namespace as owned (upstream strips them only
            # after Updater.Apply): otherwise an apply that drops every field it had owned loses metadata.
            managed[ident] = VersionedSet(applied_set, self.api_version, True)
            merged = self._prune(merged, managed, last.fields)
        managed[ident] = VersionedSet(applied_set.difference(_STRIP), self.api_version, True)
        cmp = self._compare(live, merged, subresource)
        changed = cmp.modified.union(cmp.added)
        conflicts: list[tuple[ManagerId, VersionedSet, FieldSet]] = []
        for other, vs in managed.items():
            if other == ident:
                continue
            overlap = vs.fields.intersection(changed)
            if not overlap.empty():
                conflicts.append((other, vs, overlap))
        if conflicts and not force:
            raise _conflict_error(conflicts)
        for other, vs in list(managed.items()):
            if other == ident:
                continue
            rest = vs.fields.difference(changed).difference(cmp.removed)
            if rest.empty():
                del managed[other]
            else:
                managed[other] = VersionedSet(rest, vs.api_version, vs.applied)
        if managed[ident].fields.empty():
            del managed[ident]
        return (None if merged == live else merged), managed

    def _prune(self, merged: Obj, managed: Managed, last: FieldSet) -> Obj:
        """Remove what this applier applied last time, no longer applies and nobody else manages."""
        t = self.type
        pruned = _remove(t, merged, _ensure_named(t, last))
        owned = FieldSet()
        for vs in managed.values():
            owned = owned.union(vs.fields)
        merged_set = _ensure_named(t, _typed_set(t, merged))
        pruned_set = _ensure_named(t, _typed_set(t, pruned))
        pruned = _remove(t, merged, merged_set.difference(pruned_set.union(_ensure_named(t, owned))))
        pruned_set = _ensure_named(t, _typed_set(t, pruned))
        return _remove(t, merged, merged_set.difference(pruned_set).intersection(_ensure_named(t, last)))

    def _allowed_from_last_applied(self, live: Obj) -> FieldSet | None:
        """Fields kubectl's client-side apply owned and that still hold their last-applied value."""
        annotations = (live.get("metadata") or {}).get("annotations") or {}
        text = annotations.get(LAST_APPLIED)
        if not text:
            return None
        try:
            last_applied = json.loads(text)
        except ValueError:
            return None
        if not isinstance(last_applied, dict) or last_applied.get("apiVersion") != self.api_version:
            return None
        cmp = Comparison(FieldSet(), FieldSet(), FieldSet())
        _compare(self.type, last_applied, live, (), cmp)
        return (_typed_set(self.type, last_applied).difference(cmp.modified).difference(cmp.added)
                .difference(cmp.removed))

    @staticmethod
    def _encode(obj: Obj, managed: Managed, times: Times) -> None:
        entries = encode_managed_fields(managed, times)
        meta = obj.get("metadata")
        if entries is None:
            if isinstance(meta, dict):
                meta.pop("managedFields", None)
            return
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        meta["managedFields"] = entries


# --- the scale subresource ------------------------------------------------------------------------------

SCALE_API_VERSION = "autoscaling/v1"
_SCALE_REPLICAS = make_path("spec", "replicas")
# group/version -> the replicas field in that version of the parent (None: the version has no scale
# subresource, its entries are kept as they are); entries of versions not listed are dropped.
ReplicasPaths = dict[str, Path | None]


def scale_to_subresource(parent_entries: Any, paths: ReplicasPaths) -> list[Obj] | None:
    """ScaleHandler.ToSubresource: the parent's entries that own its replicas field, as entries of the Scale
    owning spec.replicas (manager, operation and time kept). ValueError when the entries do not decode."""
    managed, times = decode_managed_fields(parent_entries)
    out: Managed = {}
    for ident, vs in managed.items():
        path = paths.get(vs.api_version)
        if path is not None and vs.fields.has(path):
            out[ident] = VersionedSet(FieldSet.of(_SCALE_REPLICAS), SCALE_API_VERSION, vs.applied)
    return encode_managed_fields(out, {ident: times.get(ident) for ident in out})


def scale_to_parent(parent_entries: Any, scale_entries: Any, paths: ReplicasPaths,
                    api_version: str) -> list[Obj] | None:
    """ScaleHandler.ToParent: the parent's entries after a write through /scale (served in ``api_version``).

    A manager that owned the replicas field and no longer owns spec.replicas in the Scale loses it; a manager
    that owns spec.replicas in the Scale and has no such entry in the parent gets one owning the replicas
    field, as upstream builds it: with the parent's time for that manager, so none for a new one."""
    parent, parent_times = decode_managed_fields(parent_entries)
    scale, _ = decode_managed_fields(scale_entries)
    out: Managed = {}
    for ident, vs in parent.items():
        if vs.api_version not in paths:
            continue  # a version the resource no longer has: dropped
        path = paths[vs.api_version]
        if path is None or not vs.fields.has(path):
            out[ident] = vs
        elif ident in scale:
            out[ident] = vs  # still owns replicas: the entry stays as it was
            del scale[ident]
        else:
            rest = vs.fields.difference(FieldSet.of(path))
            if not rest.empty():
                out[ident] = VersionedSet(rest, vs.api_version, vs.applied)
    replicas = paths.get(api_version)
    for ident, vs in scale.items():
        if replicas is not None and vs.fields.has(_SCALE_REPLICAS):
            out[ident] = VersionedSet(FieldSet.of(replicas), api_version, vs.applied)
    return encode_managed_fields(out, {ident: parent_times.get(ident) for ident in out})


def _conflict_error(conflicts: list[tuple[ManagerId, VersionedSet, FieldSet]]) -> ApplyConflict:
    rows: list[tuple[str, Path]] = []
    for ident, vs, overlap in sorted(conflicts, key=lambda c: c[0]):
        # printManager reads the manager's identifier, which keeps the apiVersion an updater wrote with
        name = ident.describe(ident.api_version or vs.api_version)
        rows.extend((name, p) for p in overlap.paths())
    return ApplyConflict([(name, path_string(p)) for name, p in rows], [p for _, p in rows])


def _cap_update_managers(managed: Managed, times: Times) -> tuple[Managed, Times]:
    """capManagersManager: fold the oldest update entries into ancient-changes buckets beyond 10."""
    updaters = [ident for ident, vs in managed.items() if not vs.applied]
    if len(updaters) <= MAX_UPDATE_MANAGERS:
        return managed, times
    updaters.sort(key=lambda i: (times.get(i) or "", json.dumps([i.manager, i.operation, i.api_version,
                                                                 i.subresource])))
    first_by_version: dict[str, ManagerId] = {}
    length = len(updaters)
    for ident in updaters:
        if length <= MAX_UPDATE_MANAGERS:
            break
        vs = managed[ident]
        bucket = ManagerId(ANCIENT_CHANGES, UPDATE, vs.api_version, "")
        first = first_by_version.get(vs.api_version)
        if first is None:
            first_by_version[vs.api_version] = ident
            continue
        if bucket not in managed:
            managed[bucket] = managed.pop(first)
        managed[bucket] = VersionedSet(vs.fields.union(managed[bucket].fields), vs.api_version, False)
        del managed[ident]
        times[bucket] = times.pop(ident, None)
        length -= 1
    return managed, {k: v for k, v in times.items() if k in managed}


def _gvk_string(api_version: Any, kind: Any) -> str:
    """schema.GroupVersionKind.String(): ``apps/v1, Kind=Deployment`` (``/v1, Kind=Pod`` for core)."""
    api_version = api_version if isinstance(api_version, str) else ""
    group, _, version = api_version.rpartition("/")
    return f"{group}/{version}, Kind={kind if isinstance(kind, str) else ''}"


def _without_managed_fields(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return obj


def _sync_last_applied(result: Obj, live: Obj, applied: Obj) -> None:
    """lastAppliedUpdater: kubectl's server-side apply keeps an existing last-applied annotation current."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if not annotations.get(LAST_APPLIED):
        return
    config = copy.deepcopy(applied)
    config_annotations = (config.get("metadata") or {}).get("annotations")
    if isinstance(config_annotations, dict):
        config_annotations.pop(LAST_APPLIED, None)
    text = json.dumps(_sort_keys(config), separators=(",", ":"), ensure_ascii=False)
    meta = result["metadata"]
    meta["annotations"] = {**(meta.get("annotations") or {}), LAST_APPLIED: text}


def _sort_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sort_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sort_keys(v) for v in value]
    return value


__all__ = [
    "APPLY", "SCALE_API_VERSION", "UPDATE", "ApplyConflict", "Comparison", "FieldManager", "FieldSet", "ManagerId",
    "ReplicasPaths", "compare", "decode_managed_fields", "default_manager", "encode_managed_fields",
    "field_manager_causes", "fields_of", "merge", "scale_to_parent", "scale_to_subresource",
    "validate_patch_options",
]
