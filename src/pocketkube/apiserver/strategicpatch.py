"""Strategic merge patch (``application/strategic-merge-patch+json``), as the server applies it.

A port of k8s.io/apimachinery/pkg/util/strategicpatch ``StrategicMergeMapPatch`` (the server-side path:
parallel lists are merged, unmatched nulls ignored). Upstream reflects on the Go struct tags
``patchStrategy``/``patchMergeKey``; the official OpenAPI definitions carry the same information as
``x-kubernetes-patch-strategy``/``x-kubernetes-patch-merge-key``, so the Go type of each field is
rebuilt from the schema (struct, map, slice or scalar) and consulted exactly where upstream consults
its types: only when the original and the patch both hold a map, or both hold a list, under one key
(and for every ``$setElementOrder`` directive).

Deliberately faithful quirks: ``$patch: merge`` on a map is an error, a value added where the original
has nothing is taken with its nulls discarded and its ``$patch`` maps removed (but other directives
kept), ``$patch: replace`` maps and non-merging lists are taken verbatim, and merging nested containers
inside a map-typed field (or an unknown struct field) fails with upstream's message. Errors carry
upstream's message; 422 for lists of lists and retainKeys mismatches, as upstream, and 400 for the rest
(upstream answers those with a reason-less 500: a malformed patch is the client's error, never a 5xx).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import schemas

Obj = dict[str, Any]

_DIRECTIVE = "$patch"
_DELETE = "delete"
_REPLACE = "replace"
_MERGE = "merge"
_RETAIN_KEYS_STRATEGY = "retainKeys"
_RETAIN_KEYS = "$retainKeys"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList"
_SET_ELEMENT_ORDER = "$setElementOrder"

# The mergepatch sentinel errors whose text the server returns as 400 BadRequest.
_BAD_PRIMITIVE_LIST = "invalid patch format of primitive list"
_BAD_RETAIN_KEYS = "invalid patch format of retainKeys"
_BAD_SET_ELEMENT_ORDER = "invalid patch format of setElementOrder list"
_NO_LIST_OF_LISTS = "lists of lists are not supported"

_REASONS = {400: "BadRequest", 422: "Invalid"}


class PatchError(errors.StatusError):
    """A patch the server refuses, with the strategicpatch library's message.

    Upstream answers the library's own errors (unknown directives, a missing merge key, ...) with a 500
    and no reason; a malformed patch is the client's error, so pocketkube answers 400 BadRequest with the
    same message. 422 (``NewGenericServerResponse``) replaces the message with a generic sentence, as
    upstream does.
    """

    def __init__(self, message: str, code: int = 400) -> None:
        if code == 422:
            message = "the server rejected our request due to an error in our request"
        super().__init__(code, _REASONS[code], message)


def strategic_merge_patch(definition: str, original: Obj, patch: Any) -> Obj:
    """Apply ``patch`` to ``original`` (an object of the OpenAPI ``definition``); inputs are not mutated."""
    if definition not in schemas.definitions():
        raise ValueError(f"unknown OpenAPI definition {definition!r}")
    if patch is None:
        patch = {}  # json.Unmarshal of null into a map leaves it empty
    if not isinstance(patch, dict):
        raise PatchError(f"json: cannot unmarshal {_json_kind(patch)} into Go value of type "
                         f"map[string]interface {{}}", 400)
    root = _GoType("struct", definition, schemas.definitions()[definition])
    try:
        return _merge_map(_copy(original), _copy(patch), root)
    except RecursionError:
        raise PatchError("the patch is nested too deeply", 400) from None


# ---------------------------------------------------------------------------------------------------
# The Go type behind a schema node (what upstream's PatchMetaFromStruct reflects on)


@dataclass(frozen=True)
class _GoType:
    kind: str  # reflect.Kind name: struct, map, slice, string, int64, ...
    definition: str = ""  # struct types: the OpenAPI definition, whose last segment is the Go name
    node: Obj | None = None  # struct: the schema holding "properties"; slice: the schema of the list

    @property
    def name(self) -> str:
        return self.definition.rsplit(".", 1)[-1]


def _go_type(node: Obj) -> _GoType:
    ref = node.get("$ref")
    if ref is not None:
        # Every named definition is a Go struct, including IntOrString, Quantity, Time and RawExtension.
        name = schemas.ref_name(ref)
        return _GoType("struct", name, schemas.definitions()[name])
    if "properties" in node:
        return _GoType("struct", "", node)
    if "additionalProperties" in node:
        return _GoType("map")
    kind = schemas.single_type(node)
    if kind == "array":
        return _GoType("slice", node=node)
    if kind == "integer":
        return _GoType("int32" if node.get("format") == "int32" else "int64")
    if kind == "number":
        return _GoType("float64")
    return _GoType({"string": "string", "boolean": "bool", "object": "map"}.get(kind or "", "interface"))


@dataclass(frozen=True)
class _PatchMeta:
    strategies: tuple[str, ...]
    merge_key: str


def _lookup_struct(t: _GoType, key: str) -> tuple[_GoType, _PatchMeta]:
    """forkedjson.LookupPatchMetadataForStruct: the field's type and patch tags."""
    if t.kind != "struct":
        raise PatchError(f"merging an object in json but data type is not struct, instead is: {t.kind}")
    fields: Obj = (t.node or {}).get("properties") or {}
    field = fields.get(key)
    if field is None:
        # encoding/json falls back to a case-insensitive match, the first in field order.
        field = next((v for k, v in fields.items() if k.casefold() == key.casefold()), None)
    if field is None:
        raise PatchError(f"unable to find api field in struct {t.name} for the json field {_go_quote(key)}")
    strategy = field.get("x-kubernetes-patch-strategy", "")
    merge_key = field.get("x-kubernetes-patch-merge-key", "")
    return _go_type(field), _PatchMeta(tuple(strategy.split(",")), merge_key)


def _lookup_slice(t: _GoType, key: str) -> tuple[_GoType, _PatchMeta]:
    """PatchMetaFromStruct.LookupPatchMetadataForSlice: the element type and the list's patch tags."""
    field, meta = _lookup_struct(t, key)
    if field.kind != "slice" or field.node is None:
        # Upstream names the kind of the enclosing type here, not of the field.
        raise PatchError(f"expected slice or array type, but got: {t.kind}")
    elem = _go_type(field.node.get("items") or {})
    if elem.kind == "slice":
        raise PatchError("unexpected slice of slice")
    return elem, meta


def _patch_strategy(meta: _PatchMeta) -> str:
    """extractRetainKeysPatchStrategy: the strategy besides retainKeys (handled by $retainKeys itself)."""
    strategies = meta.strategies
    if len(strategies) == 1:
        return "" if strategies[0] == _RETAIN_KEYS_STRATEGY else strategies[0]
    if len(strategies) == 2 and _RETAIN_KEYS_STRATEGY in strategies:
        return strategies[1] if strategies[0] == _RETAIN_KEYS_STRATEGY else strategies[0]
    raise PatchError(f"unexpected patch strategy: {_go_v(strategies)}")


# ---------------------------------------------------------------------------------------------------
# Maps


def _merge_map(original: Obj, patch: Obj, t: _GoType) -> Obj:
    if _DIRECTIVE in patch:
        return _directive_in_map(patch[_DIRECTIVE], patch)
    _apply_retain_keys(original, patch)
    _merge_ordered_lists(original, patch, t)

    for key, value in patch.items():
        is_delete_list = key.startswith(_DELETE_FROM_PRIMITIVE_LIST)
        if is_delete_list:
            key = _extract_key(key, _DELETE_FROM_PRIMITIVE_LIST)
        if value is None:
            original.pop(key, None)
            continue
        if key not in original or type(original[key]) is not type(value):
            # Added (or changed type): take the patch value, cleaned; a deletion list adds nothing.
            if not is_delete_list:
                _discard_nulls(value)
                _set_without_directives(original, key, value)
            continue
        current = original[key]
        if isinstance(value, dict):
            field, meta = _lookup_struct(t, key)
            strategy = _patch_strategy(meta)
            original[key] = value if strategy == _REPLACE else _merge_map(current, value, field)
        elif isinstance(value, list):
            elem, meta = _lookup_slice(t, key)
            original[key] = _merge_slice_handler(current, value, elem, _patch_strategy(meta), meta.merge_key,
                                                 is_delete_list)[0]
        else:
            original[key] = value
    return original


def _directive_in_map(directive: Any, patch: Obj) -> Obj:
    if directive == _REPLACE:
        # The rest of the map is taken as is: no nested directive processing, nulls kept.
        del patch[_DIRECTIVE]
        return patch
    if directive == _DELETE:
        return {}
    raise PatchError(f"unknown patch type: {_go_s(directive)} in map: {_go_v(patch)}")


def _set_without_directives(original: Obj, key: str, value: Any) -> None:
    cleaned, keep = _remove_directives(value)
    if keep:
        original[key] = cleaned
    else:
        original.pop(key, None)


def _apply_retain_keys(original: Obj, patch: Obj) -> None:
    """$retainKeys: drop the original's keys not listed; every non-null patch key must be listed."""
    if _RETAIN_KEYS not in patch:
        return
    retain = patch.pop(_RETAIN_KEYS)
    if not isinstance(retain, list):
        raise PatchError(_BAD_RETAIN_KEYS, 400)
    keep = {k for k in retain if isinstance(k, str)}  # keys are strings; other entries never match
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
            continue
        if key not in keep:
            raise PatchError(_BAD_RETAIN_KEYS, 400)
    for key in [k for k in original if k not in keep]:
        del original[key]


def _extract_key(key: str, prefix: str) -> str:
    head, sep, rest = key.partition("/")
    if not sep or head != prefix:
        bad = _BAD_PRIMITIVE_LIST if prefix == _DELETE_FROM_PRIMITIVE_LIST else _BAD_SET_ELEMENT_ORDER
        raise PatchError(bad, 400)
    return rest


def _merge_ordered_lists(original: Obj, patch: Obj, t: _GoType) -> None:
    """mergePatchIntoOriginal: merge each list that has a $setElementOrder directive, then order it.

    Precedence: $setElementOrder > order in the patch list > order in the live list. The merged list
    and the directive are removed from the patch so the main loop does not see them again.
    """
    for directive in [k for k in patch if k.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(directive)
        if not isinstance(order, list):
            raise _bad_arg_type("[]interface {}", order)
        key = _extract_key(directive, _SET_ELEMENT_ORDER)
        found_original, found_patch = key in original, key in patch
        original_list: list[Any] = []
        patch_list: list[Any] = []
        if found_original:
            if not isinstance(original[key], list):
                raise _bad_arg_type("[]interface {}", original[key])
            original_list = original[key]
        if found_patch:
            if not isinstance(patch[key], list):
                raise _bad_arg_type("[]interface {}", patch[key])
            patch_list = patch[key]
        elem, meta = _lookup_slice(t, key)
        strategy = _patch_strategy(meta)
        _validate_order(patch_list, order, meta.merge_key)

        if found_original and not found_patch:
            merged = original_list
        elif found_patch and not found_original:
            merged = _remove_directives(patch_list)[0]
        elif found_original and found_patch:
            merged, original_list = _merge_slice_handler(original_list, patch_list, elem, strategy,
                                                         meta.merge_key, False)
        else:
            continue

        if meta.merge_key:
            patch_items, server_only = _partition_maps(merged, order, meta.merge_key)
        else:
            patch_items, server_only = _partition_primitives(merged, order)
        kind = _element_kind(original_list, patch_list)
        original[key] = _normalize_element_order(patch_items, server_only, order, original_list,
                                                 meta.merge_key, kind)
        patch.pop(key, None)


def _validate_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """The patch list's items must appear in $setElementOrder, in the same relative order."""
    if not order or not patch_list:
        return
    items = _split_deletions(patch_list)[0] if merge_key else patch_list
    i = j = 0
    while i < len(items) and j < len(order):
        if isinstance(items[i], dict) and _DIRECTIVE in items[i]:
            i += 1
            continue
        if _merge_key_equal(items[i], order[j], merge_key):
            i += 1
        j += 1
    if i < len(items) and j >= len(order):
        raise PatchError(f"The order in patch list:\n{_go_v(patch_list)}\n doesn't match "
                         f"{_SET_ELEMENT_ORDER} list:\n{_go_v(order)}\n")


def _merge_key_equal(left: Any, right: Any, merge_key: str) -> bool:
    if not merge_key:
        return _eq(left, right)
    if not isinstance(left, dict):
        raise _bad_arg_type("map[string]interface {}", left)
    if not isinstance(right, dict):
        raise _bad_arg_type("map[string]interface {}", right)
    for item in (left, right):
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
    return _eq(left[merge_key], right[merge_key])


# ---------------------------------------------------------------------------------------------------
# Lists


def _merge_slice_handler(original: list[Any], patch: list[Any], elem: _GoType, strategy: str, merge_key: str,
                         is_delete_list: bool) -> tuple[list[Any], list[Any]]:
    """Returns the merged list, and what the caller's ``original`` now holds (see _merge_slice)."""
    # A deletion list applies whatever the field's strategy; otherwise only "merge" lists merge.
    if strategy == _MERGE or is_delete_list:
        return _merge_slice(original, patch, elem, merge_key, is_delete_list)
    return patch, original


def _merge_slice(original: list[Any], patch: list[Any], elem: _GoType, merge_key: str,
                 is_delete_list: bool) -> tuple[list[Any], list[Any]]:
    """Merge two lists; also returns the caller's view of ``original`` afterwards.

    Upstream deletes `$patch: delete` items in place (append(s[:i], s[i+1:]...)) and then appends new
    items into the freed slots, so the caller's slice of the live list, which $setElementOrder later
    uses as the live order, shows the new items where the deleted ones were. That view is
    ``merged[:len(original)]`` whenever deletions ran in place, and ``original`` otherwise.
    """
    if not original and not patch:
        return original, original
    kind = _element_kind(original, patch)
    view = original
    if kind != "map":
        if is_delete_list:
            doomed = {_hash_key(v) for v in patch}
            return [v for v in original if _hash_key(v) not in doomed], original
        merged = _dedupe(original + patch)
    else:
        if not merge_key:
            raise PatchError(f"cannot merge lists without merge key for {elem.kind}")
        remaining, patch, replaced = _apply_list_directives(original, patch, merge_key)
        merged = _merge_by_key(remaining, patch, merge_key, elem)
        if not replaced:
            view = merged[:len(original)]
        original = remaining

    # Items named by the patch follow the patch's order; the others keep the live order.
    if merge_key:
        patch_items, server_only = _partition_maps(merged, patch, merge_key)
    else:
        patch_items, server_only = _partition_primitives(merged, patch)
    return _normalize_element_order(patch_items, server_only, patch, original, merge_key, kind), view


def _apply_list_directives(original: list[Any], patch: list[Any],
                           merge_key: str) -> tuple[list[Any], list[Any], bool]:
    """mergeSliceWithSpecialElements: apply `$patch: delete` items; `$patch: replace` makes the rest the list.

    Returns the list to merge into, the patch items without directives, and whether it was replaced.
    """
    plain: list[Any] = []
    replace = False
    for item in patch:
        if _DIRECTIVE not in item:
            plain.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == _DELETE:
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            original = [v for v in original if not (merge_key in v and _eq(v[merge_key], item[merge_key]))]
        elif directive == _REPLACE:
            replace = True  # keep scanning so other directive items are pruned
        elif directive == _MERGE:
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(f"unknown patch type: {_go_s(directive)} in map: {_go_v(item)}")
    if replace:
        return plain, [], True
    return original, plain, False


def _merge_by_key(original: list[Any], patch: list[Any], merge_key: str, elem: _GoType) -> list[Any]:
    """Patch items matching an original item by merge key merge into it; the others are appended."""
    merged = list(original)
    for item in patch:
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        index = _find_by_key(merged, merge_key, item[merge_key])
        if index >= 0:
            merged[index] = _merge_map(merged[index], item, elem)
        else:
            merged.append(item)
    return merged


def _find_by_key(items: list[Any], merge_key: str, value: Any) -> int:
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise PatchError(f"value for key {i} is not a map")
        if merge_key in item and _eq(item[merge_key], value):
            return i
    return -1


def _dedupe(items: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for item in items:
        key = _hash_key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _element_kind(*lists: list[Any]) -> str:
    """sliceElementType: every element of the lists must have one type, and not be a list."""
    kind: type | None = None
    for items in lists:
        for item in items:
            if item is None and kind is None:
                # reflect.TypeOf(nil).Kind() dereferences a nil Type upstream.
                raise PatchError("runtime error: invalid memory address or nil pointer dereference")
            if kind is None:
                kind = type(item)
                if kind is list:
                    raise PatchError(_NO_LIST_OF_LISTS, 422)
            elif type(item) is not kind:
                raise PatchError(f"list element types are not identical: {_go_v(list(lists))}")
    if kind is None:
        raise PatchError("no elements in any of the given slices")
    return "map" if kind is dict else "scalar"


def _partition_primitives(items: list[Any], by: list[Any]) -> tuple[list[Any], list[Any]]:
    wanted = {_hash_key(v) for v in by}
    return ([v for v in items if _hash_key(v) in wanted], [v for v in items if _hash_key(v) not in wanted])


def _partition_maps(items: list[Any], by: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    inside: list[Any] = []
    outside: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            raise _bad_arg_type("map[string]interface {}", item)
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        (inside if _find_by_key(by, merge_key, item[merge_key]) >= 0 else outside).append(item)
    return inside, outside


def _normalize_element_order(patch_items: list[Any], server_only: list[Any], patch_order: list[Any],
                             server_order: list[Any], merge_key: str, kind: str) -> list[Any]:
    """Sort patch items by the patch order and server-only items by the live order, then interleave them."""
    patch_items = _sort_by_order(patch_items, patch_order, merge_key, kind)
    server_only = _sort_by_order(server_only, server_order, merge_key, kind)
    return _merge_sorted(server_only, patch_items, server_order, merge_key, kind)


def _merge_sorted(left: list[Any], right: list[Any], server_order: list[Any], merge_key: str,
                  kind: str) -> list[Any]:
    """mergeSortedSlice: a server-only item goes first only when the live order puts it before."""
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li = _index(server_order, left[i], merge_key, kind)
            ri = _index(server_order, right[j], merge_key, kind)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _sort_by_order(items: list[Any], order: list[Any], merge_key: str, kind: str) -> list[Any]:
    """normalizeSliceOrder: a stable sort by position in ``order``; deletion items go last."""
    deletions: list[Any] = []
    if kind == "map":
        for item in (*items, *order):
            if not isinstance(item, dict):
                raise _bad_arg_type("map[string]interface {}", item)
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
        items, deletions = _split_deletions(items)
    positions = [_index(order, item, merge_key, kind) for item in items]
    if all(p >= 0 for p in positions):
        ranked = sorted(zip(positions, range(len(items)), strict=True))
        return [items[i] for _, i in ranked] + deletions
    # Upstream's less() answers "true" whenever either item is missing from the order, which is no
    # ordering at all; replay Go's sort.SliceStable (an insertion sort for lists up to 20 items).
    items = list(items)
    for i in range(1, len(items)):
        j = i
        while j > 0 and (positions[j] < 0 or positions[j - 1] < 0 or positions[j] < positions[j - 1]):
            items[j], items[j - 1] = items[j - 1], items[j]
            positions[j], positions[j - 1] = positions[j - 1], positions[j]
            j -= 1
    return items + deletions


def _index(items: list[Any], value: Any, merge_key: str, kind: str) -> int:
    if kind == "map":
        def key_of(item: Any) -> Any:
            return item.get(merge_key) if isinstance(item, dict) else None
    else:
        def key_of(item: Any) -> Any:
            return item
    wanted = key_of(value)
    for i, item in enumerate(items):
        if _eq(wanted, key_of(item)):
            return i
    return -1


def _split_deletions(items: list[Any]) -> tuple[list[Any], list[Any]]:
    """extractToDeleteItems: (items to keep, `$patch: delete` items)."""
    keep: list[Any] = []
    doomed: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            raise _bad_arg_type("map[string]interface {}", item)
        (doomed if item.get(_DIRECTIVE) == _DELETE else keep).append(item)
    return keep, doomed


# ---------------------------------------------------------------------------------------------------
# Values


def _copy(value: Any) -> Any:
    # Upstream mutates both documents; ours may be cached objects or a patch reused on conflict retries.
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _discard_nulls(value: Any) -> None:
    """Drop null map values at any depth (nulls inside lists stay)."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for v in value.values():
            _discard_nulls(v)
    elif isinstance(value, list):
        for v in value:
            _discard_nulls(v)


def _remove_directives(value: Any) -> tuple[Any, bool]:
    """Drop every map holding `$patch` (and say so when ``value`` itself is one)."""
    if isinstance(value, dict):
        if _DIRECTIVE in value:
            return None, False
        for key in list(value):
            cleaned, keep = _remove_directives(value[key])
            if keep:
                value[key] = cleaned
            else:
                del value[key]
        return value, True
    if isinstance(value, list):
        kept = (_remove_directives(v) for v in value)
        return [v for v, keep in kept if keep], True
    return value, True


def _eq(left: Any, right: Any) -> bool:
    """Go's == on interface{} values: different dynamic types differ; maps and slices cannot be compared."""
    if type(left) is not type(right):
        return False
    if isinstance(left, (dict, list)):
        raise PatchError(f"runtime error: comparing uncomparable type {_go_type_name(left)}")
    return bool(left == right)


def _hash_key(value: Any) -> tuple[type, Any]:
    """A set key with Go's map semantics: the dynamic type is part of the key."""
    if isinstance(value, (dict, list)):
        raise PatchError(f"runtime error: hash of unhashable type {_go_type_name(value)}")
    return type(value), value


# ---------------------------------------------------------------------------------------------------
# Upstream's error texts (Go's fmt verbs)


def _no_merge_key(item: Obj, merge_key: str) -> PatchError:
    return PatchError(f"map: {_go_v(item)} does not contain declared merge key: {merge_key}")


def _bad_arg_type(expected: str, actual: Any) -> PatchError:
    got = "%!s(<nil>)" if actual is None else _go_type_name(actual)
    return PatchError(f"expected a {expected}, but received a {got}")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "number"


def _go_type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string"


def _go_quote(text: str) -> str:
    """%q for the common case (printable text)."""
    return json.dumps(text, ensure_ascii=False)


def _go_v(value: Any) -> str:
    """fmt's %v of a decoded JSON value: map[k:v ...] with sorted keys, [a b], <nil>."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_v(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_v(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _go_s(value: Any) -> str:
    """fmt's %s: strings as is, anything else flagged %!s(type=value)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "%!s(<nil>)"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_s(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_s(v) for v in value) + "]"
    return f"%!s({_go_type_name(value)}={_go_v(value)})"


def _go_float(value: float) -> str:
    """fmt's %v of a float64: strconv's shortest 'g' (exponent form when exp < -4 || exp >= 6)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent  # value = 0.<digits> * 10**point
    digits = digits.rstrip("0")
    neg = "-" if sign else ""
    exp = point - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{neg}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{neg}{digits}{'0' * (point - len(digits))}"
    return f"{neg}{digits[:point]}.{digits[point:]}"
