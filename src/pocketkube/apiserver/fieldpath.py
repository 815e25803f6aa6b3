"""Field sets for managedFields (sigs.k8s.io/structured-merge-diff/fieldpath) and their FieldsV1 form.

A path is a tuple of path elements; an element is a small tuple:

- ``("f", "name")``: a field of a map or struct (FieldsV1 ``f:name``);
- ``("k", (("containerPort", 80), ("protocol", "TCP")))``: an item of a map-list, by its key fields sorted
  by name (``k:{"containerPort":80,"protocol":"TCP"}``);
- ``("v", "foo")``: an item of a set-list, by value (``v:"foo"``);
- ``("i", 3)``: a list index (``i:3``; never produced for typed objects, kept for parsing).

A ``FieldSet`` is a tree: ``members`` are the paths ending at this level, ``children`` the deeper ones.
In FieldsV1 a member that also has children is written as ``".": {}`` inside its node. Sets are built
with ``insert`` and then treated as immutable: the operations return new sets that may share subtrees.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

PathElement = tuple[str, Any]
Path = tuple[PathElement, ...]

FIELD, KEY, VALUE, INDEX = "f", "k", "v", "i"
_TAG_RANK = {FIELD: 0, KEY: 1, VALUE: 2, INDEX: 3}


def value_sort_key(v: Any) -> tuple[Any, ...]:
    """structured-merge-diff's total order of values: numbers < strings < bools < lists < maps < null."""
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, int | float):
        return (0, v)
    if isinstance(v, str):
        return (1, v)
    if isinstance(v, list | tuple):
        return (3, tuple(value_sort_key(x) for x in v))
    if isinstance(v, dict):
        return (4, tuple((k, value_sort_key(v[k])) for k in sorted(v)))
    return (5,)


def pe_sort_key(pe: PathElement) -> tuple[Any, ...]:
    tag, payload = pe
    if tag == FIELD or tag == INDEX:
        return (_TAG_RANK[tag], payload)
    if tag == KEY:
        return (1, tuple((name, value_sort_key(v)) for name, v in payload))
    return (2, value_sort_key(payload))


# --- serialization ----------------------------------------------------------------------------------

def _go_json(value: Any) -> str:
    """encoding/json's compact form: HTML characters escaped, integral floats without a fraction."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        value = int(value)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def serialize_pe(pe: PathElement) -> str:
    tag, payload = pe
    if tag == FIELD:
        return "f:" + payload
    if tag == INDEX:
        return f"i:{payload}"
    # Keys and values take JSON encoding; the same few recur in every write of an object, so they are
    # remembered. By repr: an element holding True equals, and hashes as, one holding 1.
    memo = repr(pe)
    text = _SERIALIZED.get(memo)
    if text is None:
        if tag == KEY:
            text = "k:{" + ",".join(_go_json(name) + ":" + _go_json(v) for name, v in payload) + "}"
        else:
            text = "v:" + _go_json(payload)
        if len(_SERIALIZED) >= _MEMO_SIZE:
            _SERIALIZED.clear()
        _SERIALIZED[memo] = text
    return text


_MEMO_SIZE = 50_000
_SERIALIZED: dict[str, str] = {}


def _freeze(value: Any) -> Any:
    # Key and set values must be hashable; lists and maps there are legal JSON but never seen in practice.
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in sorted(value.items()))
    return value


def key_element(fields: dict[str, Any]) -> PathElement:
    return (KEY, tuple((name, _freeze(fields[name])) for name in sorted(fields)))


@functools.lru_cache(maxsize=_MEMO_SIZE)
def deserialize_pe(text: str) -> PathElement | None:
    """Parse one FieldsV1 key. None for an unknown element type (upstream drops those); ValueError if bad.
    Remembered: the result is immutable, and the same keys come back in every write of an object."""
    if len(text) < 2 or text[1] != ":":
        raise ValueError(f"invalid path element {text!r}")
    tag, body = text[0], text[2:]
    if tag == FIELD:
        return (FIELD, body)
    if tag == VALUE:
        return (VALUE, _freeze(json.loads(body)))
    if tag == KEY:
        fields = json.loads(body)
        if not isinstance(fields, dict):
            raise ValueError(f"invalid key path element {text!r}")
        return key_element(fields)
    if tag == INDEX:
        return (INDEX, int(body))
    return None


def _go_quote(value: Any) -> str:
    """value.ToString: strings quoted as Go's %q, the rest as %v."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ",".join(_go_quote(v) for v in value) + "]"
    return str(value)


def pe_string(pe: PathElement) -> str:
    """fieldpath.PathElement.String: ``.name``, ``[name="c"]``, ``[="v"]``, ``[3]``."""
    tag, payload = pe
    if tag == FIELD:
        return "." + payload
    if tag == KEY:
        return "[" + ",".join(f"{name}={_go_quote(v)}" for name, v in payload) + "]"
    if tag == VALUE:
        return f"[={_go_quote(payload)}]"
    return f"[{payload}]"


def path_string(path: Path) -> str:
    return "".join(pe_string(pe) for pe in path)


def make_path(*parts: str | PathElement) -> Path:
    """Convenience: plain strings are field names."""
    return tuple((FIELD, p) if isinstance(p, str) else p for p in parts)


# --- the set ----------------------------------------------------------------------------------------

class FieldSet:
    """A set of field paths (fieldpath.Set)."""

    __slots__ = ("members", "children")

    def __init__(self) -> None:
        self.members: set[PathElement] = set()
        self.children: dict[PathElement, FieldSet] = {}

    @classmethod
    def of(cls, *paths: Path) -> FieldSet:
        out = cls()
        for p in paths:
            out.insert(p)
        return out

    def insert(self, path: Path) -> None:
        if not path:
            return  # nobody owns the entire object
        node = self
        for pe in path[:-1]:
            child = node.children.get(pe)
            if child is None:
                child = node.children[pe] = FieldSet()
            node = child
        node.members.add(path[-1])

    def has(self, path: Path) -> bool:
        if not path:
            return False
        node: FieldSet | None = self
        for pe in path[:-1]:
            node = node.children.get(pe)
            if node is None:
                return False
        return path[-1] in node.members

    def empty(self) -> bool:
        return not self.members and all(c.empty() for c in self.children.values())

    def __bool__(self) -> bool:
        return not self.empty()

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FieldSet) and self.members == other.members
                and self.children == other.children)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FieldSet({[path_string(p) for p in self.paths()]})"

    def with_prefix(self, pe: PathElement) -> FieldSet:
        return self.children.get(pe) or _EMPTY

    def union(self, other: FieldSet) -> FieldSet:
        if other.empty():
            return self
        if self.empty():
            return other
        out = FieldSet()
        out.members = self.members | other.members
        out.children = dict(self.children)
        for pe, child in other.children.items():
            mine = out.children.get(pe)
            out.children[pe] = child if mine is None else mine.union(child)
        return out

    def intersection(self, other: FieldSet) -> FieldSet:
        out = FieldSet()
        out.members = self.members & other.members
        for pe, child in self.children.items():
            theirs = other.children.get(pe)
            if theirs is not None:
                both = child.intersection(theirs)
                if not both.empty():
                    out.children[pe] = both
        return out

    def difference(self, other: FieldSet) -> FieldSet:
        """Path-wise difference: removing a parent does not remove its children."""
        if other.empty():
            return self
        out = FieldSet()
        out.members = self.members - other.members
        for pe, child in self.children.items():
            theirs = other.children.get(pe)
            if theirs is None:
                out.children[pe] = child
            else:
                rest = child.difference(theirs)
                if not rest.empty():
                    out.children[pe] = rest
        return out

    def recursive_difference(self, other: FieldSet) -> FieldSet:
        """Difference that also drops everything below a member of ``other``."""
        if other.empty():
            return self
        out = FieldSet()
        out.members = self.members - other.members
        for pe, child in self.children.items():
            if pe in other.members:
                continue
            theirs = other.children.get(pe)
            if theirs is None:
                out.children[pe] = child
            else:
                rest = child.recursive_difference(theirs)
                if not rest.empty():
                    out.children[pe] = rest
        return out

    def paths(self) -> list[Path]:
        """Every member path in upstream's Iterate order (pre-order: this level's members, then children)."""
        out: list[Path] = []
        self._collect((), out)
        return out

    def _collect(self, prefix: Path, out: list[Path]) -> None:
        for pe in sorted(self.members, key=pe_sort_key):
            out.append(prefix + (pe,))
        for pe in sorted(self.children, key=pe_sort_key):
            self.children[pe]._collect(prefix + (pe,), out)

    def __iter__(self) -> Iterator[Path]:
        return iter(self.paths())

    def __len__(self) -> int:
        return len(self.members) + sum(len(c) for c in self.children.values())

    # --- FieldsV1 ---------------------------------------------------------------------------------

    def to_fields_v1(self) -> dict[str, Any]:
        """The FieldsV1 JSON object, keys in upstream's order."""
        return self._emit(False)

    def _emit(self, include_self: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if include_self and (self.members or self.children):
            out["."] = {}
        for pe in sorted(self.members | self.children.keys(), key=pe_sort_key):
            child = self.children.get(pe)
            out[serialize_pe(pe)] = {} if child is None else child._emit(pe in self.members)
        return out

    @classmethod
    def from_fields_v1(cls, data: Any) -> FieldSet:
        """Parse FieldsV1; ValueError when malformed. Unknown element types are dropped, as upstream."""
        if not isinstance(data, dict):
            raise ValueError("FieldsV1 must be a JSON object")
        out, _ = cls._read(data)
        return out or cls()

    @classmethod
    def _read(cls, data: dict[str, Any]) -> tuple[FieldSet | None, bool]:
        children: FieldSet | None = None
        is_member = False
        for key, value in data.items():
            if key == ".":
                is_member = True
                continue
            pe = deserialize_pe(key)
            if pe is None:
                continue
            if not isinstance(value, dict):
                raise ValueError(f"FieldsV1 value of {key!r} must be an object")
            grandchildren, child_member = cls._read(value)
            if children is None:
                children = cls()
            if child_member:
                children.members.add(pe)
            if grandchildren is not None:
                children.children[pe] = grandchildren
        if children is None:
            is_member = True
        return children, is_member


_EMPTY = FieldSet()
