"""Decoding a JSON object of a built-in kind the way kube-apiserver's Go decoder does.

Upstream decodes a request body into the kind's Go struct with sigs.k8s.io/json (case-sensitive,
strict): keys without a struct field are *unknown fields* (collected with their full path, e.g.
``spec.template.spec.containers[0].imagee``, and dropped from the object); a JSON value of the wrong
type is a fatal ``json: cannot unmarshal ...`` error that becomes a 400; ``null`` leaves the Go zero
value. Re-encoding the struct then canonicalises some values (quantities, timestamps, base64).

``decode_object`` reproduces this against the official schema: the schema of each definition is
compiled once into a small tree of ``_Node``s (struct -> dict of property -> node) and the object is
walked and cleaned in place.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from pocketkube.api.errors import StatusError, bad_request
from pocketkube.api.quantity import parse_quantity
from pocketkube.apiserver import protobuf, schemas

# Node kinds
_STRUCT, _MAP, _LIST, _STRING, _INT, _FLOAT, _BOOL, _BYTES, _INT_OR_STRING, _QUANTITY, _TIME, _MICRO_TIME, _ANY = (
    range(13))

_INT_RANGE = {32: (-(2**31), 2**31 - 1), 64: (-(2**63), 2**63 - 1)}
_MAX_STRICT_ERRORS = 100  # sigs.k8s.io/json stops collecting unknown fields here


class _Node:
    __slots__ = ("kind", "props", "child", "go_type", "struct", "bits", "omit_empty")

    def __init__(self, kind: int, go_type: str, child: _Node | None = None, bits: int = 64) -> None:
        self.kind = kind
        self.go_type = go_type  # the Go type named in type errors: "[]v1.Container", "int32"
        self.child = child  # list item / map value
        self.props: dict[str, _Node] = {}
        self.struct = ""  # Go struct name ("PodSpec") for struct nodes
        self.bits = bits
        self.omit_empty: frozenset[str] = frozenset()  # struct fields re-encoding leaves out when empty


_ANY_NODE = _Node(_ANY, "interface {}")
_STRING_NODE = _Node(_STRING, "string")
_BOOL_NODE = _Node(_BOOL, "bool")
_FLOAT_NODE = _Node(_FLOAT, "float64")
_BYTES_NODE = _Node(_BYTES, "[]uint8")
_INT_NODES = {fmt: _Node(_INT, go, bits=bits) for fmt, go, bits in
              (("int32", "int32", 32), ("int64", "int64", 64), (None, "int", 64))}

_compiled: dict[str, _Node] = {}


def _go_name(definition: str) -> tuple[str, str]:
    """``io.k8s.api.core.v1.PodSpec`` -> (``v1.PodSpec``, ``PodSpec``): Go's package-qualified type name."""
    parts = definition.rsplit(".", 2)
    return f"{parts[-2]}.{parts[-1]}", parts[-1]


def _compile_definition(name: str) -> _Node:
    node = _compiled.get(name)
    if node is not None:
        return node
    go_type, short = _go_name(name)
    if name == schemas.INT_OR_STRING:
        node = _Node(_INT_OR_STRING, go_type)
    elif name == schemas.QUANTITY:
        node = _Node(_QUANTITY, go_type)
    elif name == schemas.TIME:
        node = _Node(_TIME, go_type)
    elif name == schemas.MICRO_TIME:
        node = _Node(_MICRO_TIME, go_type)
    else:
        schema = schemas.definitions()[name]
        if "properties" not in schema:
            node = _compile(schema)  # FieldsV1, RawExtension: free-form JSON
        else:
            node = _Node(_STRUCT, go_type)
            node.struct = short
            node.omit_empty = protobuf.empty_omitted_fields(name)
            _compiled[name] = node  # registered before its fields, so recursive types terminate
            node.props = {k: _compile(v) for k, v in schema["properties"].items()}
    _compiled[name] = node
    return node


def _compile(schema: dict[str, Any]) -> _Node:
    ref = schema.get("$ref")
    if ref is not None:
        return _compile_definition(schemas.ref_name(ref))
    t = schemas.single_type(schema)
    if t == "string":
        return _BYTES_NODE if schema.get("format") == "byte" else _STRING_NODE
    if t == "integer":
        return _INT_NODES.get(schema.get("format"), _INT_NODES[None])
    if t == "boolean":
        return _BOOL_NODE
    if t == "number":
        return _FLOAT_NODE
    if t == "array" and isinstance(schema.get("items"), dict):
        item = _compile(schema["items"])
        return _Node(_LIST, "[]" + item.go_type, item)
    # Structs are always named definitions ($ref); an inline object is a map or free-form JSON.
    if t == "object" and isinstance(schema.get("additionalProperties"), dict):
        child = _compile(schema["additionalProperties"])
        return _Node(_MAP, "map[string]" + child.go_type, child)
    return _ANY_NODE


# ---------------------------------------------------------------------------------------------------
# Results and errors


@dataclass
class DecodeResult:
    """The cleaned object (the input, modified in place) and the unknown fields that were dropped."""

    obj: dict[str, Any]
    unknown_fields: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One message per unknown field, as sent in ``Warning`` headers for fieldValidation=Warn."""
        return [f"unknown field {_go_quote(path)}" for path in self.unknown_fields]

    def strict_error_message(self) -> str:
        """runtime.StrictDecodingError's text: ``strict decoding error: unknown field "spec.foo", ...``."""
        return "strict decoding error: " + ", ".join(self.warnings())

    def strict_error(self, kind: str, version: str) -> StatusError:
        """The 400 a create/update answers with for fieldValidation=Strict when unknown fields exist."""
        return bad_request(_cannot_handle(kind, version, self.strict_error_message()))


class DecodeError(Exception):
    """The body cannot be decoded into the kind's Go type (wrong JSON type, bad quantity or time)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_status(self, kind: str, version: str) -> StatusError:
        """The 400 BadRequest upstream answers with (transformDecodeError)."""
        return bad_request(_cannot_handle(kind, version, self.message))


def _cannot_handle(kind: str, version: str, message: str) -> str:
    return f'{kind} in version "{version}" cannot be handled as a {kind}: {message}'


def _go_quote(s: str) -> str:
    # strconv.Quote for the printable paths we produce: escape backslashes and quotes.
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Fatal(Exception):
    """An error returned by a Go UnmarshalJSON method: it aborts decoding at once."""


# ---------------------------------------------------------------------------------------------------
# Paths: a linked list (parent, segment, kind) built as the walk descends, joined only on error.

_FIELD, _KEY, _INDEX = 0, 1, 2
_Link = tuple[Any, Any, int] | None


def _strict_path(link: _Link, last: str) -> str:
    segments: list[tuple[Any, int]] = [(last, _FIELD)]
    while link is not None:
        link, seg, kind = link
        segments.append((seg, kind))
    out = ""
    for seg, kind in reversed(segments):
        if kind == _INDEX:
            out += f"[{seg}]"
        else:
            out = f"{out}.{seg}" if out else seg
    return out


def _field_stack(link: _Link) -> str:
    """Go's errorContext.FieldStack: struct field names only (no indexes, no map keys)."""
    names: list[str] = []
    while link is not None:
        link, seg, kind = link
        if kind == _FIELD:
            names.append(seg)
    return ".".join(reversed(names))


def _json_kind(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


def _type_error(value_desc: str, go_type: str, link: _Link, struct: str) -> str:
    stack = _field_stack(link)
    if not struct and not stack:
        return f"json: cannot unmarshal {value_desc} into Go value of type {go_type}"
    return f"json: cannot unmarshal {value_desc} into Go struct field {struct}.{stack} of type {go_type}"


class _State:
    __slots__ = ("unknown", "seen", "error")

    def __init__(self) -> None:
        self.unknown: list[str] = []
        self.seen: set[str] = set()
        self.error: str | None = None  # Go saves the first type error and keeps decoding

    def unknown_field(self, link: _Link, key: str) -> None:
        path = _strict_path(link, key)
        if path not in self.seen and len(self.unknown) < _MAX_STRICT_ERRORS:
            self.seen.add(path)
            self.unknown.append(path)

    def save(self, message: str) -> None:
        if self.error is None:
            self.error = message


# ---------------------------------------------------------------------------------------------------
# The walk


def decode_object(definition: str, obj: Any) -> DecodeResult:
    """Decode ``obj`` (parsed JSON) as the Go type of ``definition`` (e.g. ``io.k8s.api.core.v1.Pod``).

    Unknown fields are removed and reported; null-valued fields are removed (Go leaves the zero value,
    which is not serialised); quantities, times and base64 data are canonicalised. The object is
    modified in place. Raises DecodeError for anything Go's decoder rejects; ``DecodeError.to_status``
    gives the 400 to answer with.
    """
    root = _compile_definition(definition)
    if not isinstance(obj, dict):
        raise DecodeError(_type_error(_json_kind(obj), root.go_type, None, ""))
    state = _State()
    try:
        _struct(root, obj, None, state)
    except _Fatal as e:
        raise DecodeError(str(e)) from None
    if state.error is not None:
        raise DecodeError(state.error)
    return DecodeResult(obj, state.unknown)


def _struct(node: _Node, obj: dict[str, Any], link: _Link, state: _State) -> None:
    props = node.props
    struct = node.struct
    omit_empty = node.omit_empty
    drop: list[str] | None = None
    for key, value in obj.items():
        child = props.get(key)
        if child is None:
            state.unknown_field(link, key)
        elif value is not None:
            kind = child.kind
            # Inline the commonest leaf checks: this loop is the decoder's hot path.
            if kind == _STRING:
                if type(value) is not str:
                    state.save(_type_error(_json_kind(value), "string", (link, key, _FIELD), struct))
                    continue
                if value or key not in omit_empty:
                    continue
            elif kind == _BOOL:
                if type(value) is not bool:
                    state.save(_type_error(_json_kind(value), "bool", (link, key, _FIELD), struct))
                    continue
                if value or key not in omit_empty:
                    continue
            else:
                new = _value(child, value, (link, key, _FIELD), struct, state)
                if new is not value:
                    obj[key] = new
                # Go re-encodes an omitempty string, number, bool, slice or map without its zero value
                # (`annotations: {}`, `hostNetwork: false`): for these field types, zero is falsy.
                if new or key not in omit_empty:
                    continue
        if drop is None:
            drop = []
        drop.append(key)
    if drop:
        for key in drop:
            del obj[key]


def _value(node: _Node, value: Any, link: _Link, struct: str, state: _State) -> Any:
    """Check (and canonicalise) one non-null value; returns the value to store."""
    kind = node.kind
    if kind == _STRUCT:
        if type(value) is dict:
            _struct(node, value, link, state)
        else:
            state.save(_type_error(_json_kind(value), node.go_type, link, struct))
        return value
    if kind == _STRING:
        if type(value) is not str:
            state.save(_type_error(_json_kind(value), "string", link, struct))
        return value
    if kind == _INT:
        if type(value) is int:
            low, high = _INT_RANGE[node.bits]
            if not low <= value <= high:
                state.save(_type_error(f"number {value}", node.go_type, link, struct))
        elif type(value) is float:
            state.save(_type_error(f"number {value!r}", node.go_type, link, struct))
        else:
            state.save(_type_error(_json_kind(value), node.go_type, link, struct))
        return value
    if kind == _LIST:
        if type(value) is not list:
            state.save(_type_error(_json_kind(value), node.go_type, link, struct))
            return value
        item = node.child
        for i, element in enumerate(value):
            new = (_zero(item) if element is None
                   else _value(item, element, (link, i, _INDEX), struct, state))
            if new is not element:
                value[i] = new
        return value
    if kind == _MAP:
        if type(value) is not dict:
            state.save(_type_error(_json_kind(value), node.go_type, link, struct))
            return value
        child = node.child
        for key, element in value.items():
            new = (_zero(child) if element is None
                   else _value(child, element, (link, key, _KEY), struct, state))
            if new is not element:
                value[key] = new
        return value
    if kind == _BOOL:
        if type(value) is not bool:
            state.save(_type_error(_json_kind(value), "bool", link, struct))
        return value
    if kind == _FLOAT:
        if type(value) not in (int, float):
            state.save(_type_error(_json_kind(value), "float64", link, struct))
        return value
    if kind == _INT_OR_STRING:
        return _int_or_string(value, link, struct)
    if kind == _QUANTITY:
        return _quantity(value)
    if kind == _TIME or kind == _MICRO_TIME:
        if type(value) is not str:
            # Time.UnmarshalJSON decodes into a string first; its error gets the field context.
            raise _Fatal(_type_error(_json_kind(value), "string", link, struct))
        return _time(value, micro=kind == _MICRO_TIME)
    if kind == _BYTES:
        if type(value) is not str:
            state.save(_type_error(_json_kind(value), "[]uint8", link, struct))
            return value
        decoded = _base64(value)
        if isinstance(decoded, str):
            state.save(decoded)
            return value
        return base64.b64encode(decoded).decode()  # Go re-encodes: newlines go, padding bits normalise
    return value  # _ANY


def _zero(node: _Node) -> Any:
    """What a JSON null inside a list or map becomes once Go re-encodes the zero value."""
    kind = node.kind
    if kind == _STRUCT:
        return {}
    if kind == _STRING or kind == _BYTES:
        return ""
    if kind == _INT or kind == _INT_OR_STRING or kind == _FLOAT:
        return 0
    if kind == _BOOL:
        return False
    if kind == _QUANTITY:
        return "0"
    return None


def _int_or_string(value: Any, link: _Link, struct: str) -> Any:
    # IntOrString.UnmarshalJSON: a JSON string is the string form; anything else goes into an int32,
    # and that inner json.Unmarshal error is returned (fatal), gaining the outer field context.
    if type(value) is str:
        return value
    if type(value) is int:
        if -(2**31) <= value < 2**31:
            return value
        raise _Fatal(_type_error(f"number {value}", "int32", link, struct))
    if type(value) is float:
        raise _Fatal(_type_error(f"number {value!r}", "int32", link, struct))
    raise _Fatal(_type_error(_json_kind(value), "int32", link, struct))


@functools.lru_cache(maxsize=4096)
def _canonical_quantity(text: str) -> str:
    return parse_quantity(text.strip()).canonical()


def _quantity(value: Any) -> str:
    # Quantity.UnmarshalJSON parses the raw JSON literal (quotes stripped); its errors carry no context.
    if type(value) is str:
        text = value
    elif type(value) is bool:
        text = "true" if value else "false"
    elif type(value) in (int, float):
        text = repr(value) if type(value) is float else str(value)
    else:
        text = "{" if isinstance(value, dict) else "["  # any object/array fails the same way
    try:
        return _canonical_quantity(text)
    except ValueError as e:
        raise _Fatal(str(e)) from None


# --- time.Parse(time.RFC3339 / RFC3339Micro) with Go's error messages --------------------------------

_RFC3339 = "2006-01-02T15:04:05Z07:00"
_RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"
_DIGITS = re.compile(r"\d+")


@functools.lru_cache(maxsize=4096)
def _time(value: str, micro: bool) -> str:
    """Validate an RFC 3339 timestamp like Go's time.Parse; returns Go's re-encoding of it (UTC)."""
    layout = _RFC3339_MICRO if micro else _RFC3339
    rest = value

    def bad(elem: str) -> _Fatal:
        return _Fatal(f'parsing time "{value}" as "{layout}": cannot parse "{rest}" as "{elem}"')

    numbers: list[int] = []
    for elem, width in (("2006", 4), ("-", 0), ("01", 2), ("-", 0), ("02", 2), ("T", 0), ("15", 2),
                        (":", 0), ("04", 2), (":", 0), ("05", 2)):
        if width == 0:
            if not rest.startswith(elem):
                raise bad(elem)
            rest = rest[1:]
            continue
        chunk = rest[:width]
        if len(chunk) < width or not chunk.isdigit() or not chunk.isascii():
            raise bad(elem)
        numbers.append(int(chunk))
        rest = rest[width:]
    nanos = 0
    if micro:
        m = _DIGITS.match(rest, 1) if rest.startswith(".") else None
        if m is None or m.end() != 7:
            raise bad(".000000")
        nanos = int(rest[1:7]) * 1000
        rest = rest[7:]
    elif rest.startswith((".", ",")):
        # Go accepts a fractional second after the seconds even though the layout has none.
        m = _DIGITS.match(rest, 1)
        if m is not None:
            nanos = int(rest[1:m.end()][:9].ljust(9, "0"))
            rest = rest[m.end():]
    if rest.startswith("Z"):
        offset = 0
        rest = rest[1:]
    else:
        if len(rest) < 6 or rest[0] not in "+-" or rest[3] != ":" or not (rest[1:3] + rest[4:6]).isdigit():
            raise bad("Z07:00")
        offset = (int(rest[1:3]) * 60 + int(rest[4:6])) * (1 if rest[0] == "+" else -1)
        rest = rest[6:]
    if rest:
        raise _Fatal(f'parsing time "{value}": extra text: "{rest}"')
    year, month, day, hour, minute, second = numbers
    for label, number, high in (("month", month, 12), ("hour", hour, 23), ("minute", minute, 59),
                                ("second", second, 59)):
        if number > high or (label == "month" and number < 1):
            raise _Fatal(f'parsing time "{value}": {label} out of range')
    try:
        parsed = datetime(year, month, day, hour, minute, second, nanos // 1000,
                          tzinfo=timezone(timedelta(minutes=offset)))
    except ValueError:
        raise _Fatal(f'parsing time "{value}": day out of range') from None
    utc = parsed.astimezone(UTC)
    if micro:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- base64 ([]byte fields) ---------------------------------------------------------------------------

_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _base64(value: str) -> bytes | str:
    """Decoded bytes, or Go's ``illegal base64 data at input byte N`` message."""
    try:
        return base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
    except (binascii.Error, ValueError):
        return f"illegal base64 data at input byte {_base64_error_offset(value)}"


def _base64_error_offset(value: str) -> int:
    # encoding/base64 (StdEncoding) decodeQuantum's CorruptInputError offsets; newlines are skipped.
    n, si = len(value), 0
    while True:
        j = 0
        while j < 4:
            if si == n:
                return si - j if j else n
            ch = value[si]
            si += 1
            if ch in _B64_ALPHABET:
                j += 1
                continue
            if ch in "\r\n":
                continue
            if ch != "=" or j < 2:
                return si - 1
            if j == 2:  # "==" expected: the second "=" must follow (after any newlines)
                while si < n and value[si] in "\r\n":
                    si += 1
                if si == n:
                    return n
                if value[si] != "=":
                    return si - 1
                si += 1
            while si < n and value[si] in "\r\n":
                si += 1
            return si  # anything after the padding is trailing garbage
