"""Kubernetes protobuf bodies: decoding them into the JSON-shaped objects the rest of the server uses, and back.

A body is the magic ``k8s\\x00`` followed by a ``runtime.Unknown`` message whose ``raw`` bytes hold the
object's own message (for example ``k8s.io.api.core.v1.ConfigMap``). Field numbers and types come from
protobuf_schema.json (built by scripts/gen_proto_schema.py from the upstream API types).

The result must equal what Go's encoding/json would print for the same Go object, because that is what a
JSON client sends for it. Go's protobuf marshaller writes every non-pointer field even when it is zero,
so the decoder replays the JSON rules per field: pointers appear only when set, ``omitempty`` drops zero
scalars and empty lists and maps, ``omitzero`` drops zero structs, structs are never dropped otherwise,
and a nil list, map or pointer without either option is ``null``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

import orjson

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_TIME = _META + "Time"
_MICRO_TIME = _META + "MicroTime"
_DURATION = _META + "Duration"
_FIELDS_V1 = _META + "FieldsV1"
_RAW_EXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITIES = ("k8s.io.apimachinery.pkg.api.resource.Quantity", "k8s.io.apimachinery.pkg.api.resource.QuantityValue")
# Groups whose proto package is not the first label of the group name.
_GROUP_PACKAGES = {"": "core", "internal.apiserver.k8s.io": "apiserverinternal"}
_MAX_DEPTH = 100

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_INTEGERS = {"int32", "int64", "uint32", "uint64"}
_SCALAR_ZERO: dict[str, Any] = {"string": "", "bool": False, "bytes": None, "double": 0.0, "float": 0.0,
                                **dict.fromkeys(_INTEGERS, 0)}


@dataclass(frozen=True, slots=True)
class _Field:
    number: int
    name: str  # JSON name; empty for an inlined (embedded) struct
    type: str  # scalar type or full message name; for a map, the value type
    key: str  # map key type, empty when not a map
    repeated: bool
    pointer: bool
    omitempty: bool
    omitzero: bool
    inline: bool


@dataclass(frozen=True, slots=True)
class _Schema:
    messages: dict[str, tuple[_Field, ...]]
    list_wrappers: frozenset[str]
    sources: dict[str, str]


@functools.cache
def _schema() -> _Schema:
    document = json.loads(resources.files(__package__).joinpath("protobuf_schema.json").read_text())
    messages = {}
    for name, rows in document["messages"].items():
        fields = []
        for number, json_name, ftype, flags in rows:
            key = ""
            if ftype.startswith("map<"):
                key, ftype = ftype[4:-1].split(",", 1)
            fields.append(_Field(number, json_name, ftype, key, "r" in flags, "p" in flags, "e" in flags,
                                 "z" in flags, "i" in flags))
        messages[name] = tuple(fields)
    return _Schema(messages, frozenset(document["listWrappers"]), document["sources"])


def schema_sources() -> dict[str, str]:
    """The upstream revisions the field tables were generated from."""
    return dict(_schema().sources)


def message_name(api_version: str, kind: str) -> str | None:
    """The protobuf message of a built-in kind, or of a meta type (DeleteOptions, Status, ...) in any group."""
    group, _, version = api_version.rpartition("/")
    package = _GROUP_PACKAGES.get(group, group.split(".")[0])
    messages = _schema().messages
    for name in (f"k8s.io.api.{package}.{version}.{kind}", f"{_META}{kind}"):
        if name in messages:
            return name
    return None


def definition_message(definition: str) -> str:
    """The protobuf message of an OpenAPI definition: io.k8s.api.apps.v1.Deployment -> k8s.io.api.apps.v1.Deployment."""
    rest = definition.removeprefix("io.k8s.")
    head, _, tail = rest.partition(".")
    return f"k8s.io.{head.replace('-', '_')}.{tail}"


@functools.cache
def empty_omitted_fields(definition: str) -> frozenset[str]:
    """The JSON names of a definition's fields that Go's encoding/json leaves out when empty: ``omitempty``
    on a string, number, bool, slice or map (never on a pointer, which is kept once set, nor a struct)."""
    fields = _schema().messages.get(definition_message(definition), ())
    return frozenset(f.name for f in fields
                     if f.name and f.omitempty and not f.pointer and not _is_plain_struct(f))


def zero_field(definition: str, field_name: str) -> Any:
    """A field of a definition as Go's encoding/json prints its zero value (None when not a struct field):
    fields without ``omitempty`` appear (``replicas: 0``), nested non-pointer structs too (a Service's
    ``loadBalancer: {}``)."""
    for field in _schema().messages.get(definition_message(definition), ()):
        if field.name == field_name:
            value, _ = _render_field(field, [], 0)
            return value
    return None


def envelope_type(body: bytes) -> tuple[str, str]:
    """The apiVersion and kind named by a body's ``runtime.Unknown`` envelope (either may be empty).

    ValueError, with the text of upstream's protobuf serializer where it has one, when the body is no
    envelope."""
    if not body:
        raise ValueError("empty data")
    if not body.startswith(MAGIC):
        raise ValueError("provided data does not appear to be a protobuf message, expected prefix "
                         f"[{' '.join(str(b) for b in MAGIC)}]")
    if len(body) == len(MAGIC):
        raise ValueError("empty body")
    unknown = _parse(body[len(MAGIC):])
    type_meta = _parse(_last_bytes(unknown, 1))
    return _string(_last_bytes(type_meta, 1)), _string(_last_bytes(type_meta, 2))


def decode_k8s_protobuf(body: bytes) -> tuple[dict[str, Any], str, str]:
    """Decode a protobuf request body into (object in its JSON form, apiVersion, kind).

    Raises ValueError for anything malformed or for a kind without a known message.
    """
    return _decode_unknown(body, 0)


def _decode_unknown(body: bytes, depth: int) -> tuple[dict[str, Any], str, str]:
    if not body.startswith(MAGIC):
        raise ValueError("protobuf body does not start with the k8s magic prefix")
    unknown = _parse(body[len(MAGIC):])
    type_meta = _parse(_last_bytes(unknown, 1))
    api_version = _string(_last_bytes(type_meta, 1))
    kind = _string(_last_bytes(type_meta, 2))
    encoding = _string(_last_bytes(unknown, 3))
    content_type = _string(_last_bytes(unknown, 4))
    if encoding:
        raise ValueError(f"unsupported protobuf content encoding {encoding!r}")
    if content_type not in ("", MEDIA_TYPE):
        raise ValueError(f"unsupported embedded content type {content_type!r}")
    if not kind or not api_version:
        raise ValueError("protobuf body has no apiVersion or kind")
    name = message_name(api_version, kind)
    if name is None:
        raise ValueError(f"no protobuf message is known for {kind} in {api_version}")
    rendered, _ = _render_message(name, _last_bytes(unknown, 2), depth)
    # Go prints TypeMeta first; the embedded object's own message never carries it.
    obj = {"kind": kind, "apiVersion": api_version, **rendered}
    return obj, api_version, kind


# --- wire format -----------------------------------------------------------------------------------------

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint in protobuf body")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long in protobuf body")


def _parse(data: bytes) -> dict[int, list[tuple[int, Any]]]:
    """Split one message into field number -> [(wire type, raw value)] in wire order."""
    fields: dict[int, list[tuple[int, Any]]] = {}
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("protobuf field number 0 is invalid")
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _FIXED64:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == _FIXED32:
            value, pos = data[pos:pos + 4], pos + 4
        elif wire == _BYTES:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} for field {number}")
        if pos > end:
            raise ValueError(f"truncated protobuf field {number}")
        fields.setdefault(number, []).append((wire, value))
    return fields


def _last_bytes(fields: dict[int, list[tuple[int, Any]]], number: int) -> bytes:
    values = fields.get(number)
    if not values:
        return b""
    wire, value = values[-1]
    if wire != _BYTES:
        raise ValueError(f"protobuf field {number} should be length-delimited")
    return value


def _string(data: bytes) -> str:
    # Go does not validate UTF-8 here and its JSON encoder substitutes U+FFFD, as "replace" does.
    return data.decode("utf-8", errors="replace")


def _signed(value: int, bits: int = 64) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _scalar(ftype: str, wire: int, value: Any) -> Any:
    if ftype == "string":
        _expect(wire, _BYTES, ftype)
        return _string(value)
    if ftype == "bytes":
        _expect(wire, _BYTES, ftype)
        return base64.b64encode(value).decode("ascii")
    if ftype == "bool":
        _expect(wire, _VARINT, ftype)
        return bool(value)
    if ftype in ("int32", "int64"):
        _expect(wire, _VARINT, ftype)
        number = _signed(value)
        return _signed(number & 0xFFFFFFFF, 32) if ftype == "int32" else number
    if ftype in ("uint32", "uint64"):
        _expect(wire, _VARINT, ftype)
        return value & 0xFFFFFFFF if ftype == "uint32" else value
    if ftype == "double":
        _expect(wire, _FIXED64, ftype)
        return struct.unpack("<d", value)[0]
    if ftype == "float":
        _expect(wire, _FIXED32, ftype)
        return struct.unpack("<f", value)[0]
    raise ValueError(f"unsupported protobuf scalar type {ftype}")


def _expect(wire: int, wanted: int, ftype: str) -> None:
    if wire != wanted:
        raise ValueError(f"protobuf wire type {wire} does not fit a {ftype} field")


def _repeated_scalars(ftype: str, values: list[tuple[int, Any]]) -> list[Any]:
    """Repeated numbers may arrive packed (one length-delimited run) or one per tag."""
    out: list[Any] = []
    for wire, value in values:
        if wire == _BYTES and ftype not in ("string", "bytes"):
            pos = 0
            while pos < len(value):
                if ftype in ("double", "float"):
                    size = 8 if ftype == "double" else 4
                    out.append(_scalar(ftype, _FIXED64 if size == 8 else _FIXED32, value[pos:pos + size]))
                    pos += size
                else:
                    number, pos = _varint(value, pos)
                    out.append(_scalar(ftype, _VARINT, number))
        else:
            out.append(_scalar(ftype, wire, value))
    return out


# --- Go value rules --------------------------------------------------------------------------------------

def _render_message(name: str, data: bytes, depth: int) -> tuple[Any, bool]:
    """The JSON form of one message and whether the Go value is its type's zero value."""
    if depth > _MAX_DEPTH:
        raise ValueError("protobuf body nests too deeply")
    special = _SPECIAL.get(name)
    if special is not None:
        return special(_parse(data), depth)
    schema = _schema()
    if name in schema.list_wrappers:
        items = _repeated_scalars("string", _parse(data).get(1, []))
        return (items or None), not items
    fields = schema.messages.get(name)
    if fields is None:
        raise ValueError(f"no protobuf schema for message {name}")
    wire_fields = _parse(data)
    out: dict[str, Any] = {}
    zero = True
    for field in fields:
        present = wire_fields.get(field.number, [])
        value, field_zero = _render_field(field, present, depth)
        zero = zero and field_zero
        if field.inline:
            for key, inner in value.items():
                out.setdefault(key, inner)
            continue
        if field_zero and (field.omitzero or (field.omitempty and not _is_plain_struct(field))):
            continue
        out[field.name] = value
    return out, zero


def _is_plain_struct(field: _Field) -> bool:
    """A non-pointer struct field, which omitempty never drops in Go (list wrappers are Go slices)."""
    return (not field.pointer and not field.repeated and not field.key and field.type not in _SCALAR_ZERO
            and field.type not in _schema().list_wrappers)


def _render_field(field: _Field, present: list[tuple[int, Any]], depth: int) -> tuple[Any, bool]:
    if field.key:
        if not present:
            return None, True
        entries = {}
        for wire, value in present:
            _expect(wire, _BYTES, "map entry")
            entry = _parse(value)
            key_values = entry.get(1, [])
            key = _scalar(field.key, *key_values[-1]) if key_values else _SCALAR_ZERO[field.key]
            entries[str(key)] = _element(field.type, entry.get(2, []), depth)
        return dict(sorted(entries.items())), False
    if field.repeated:
        if not present:
            return None, True
        if field.type in _SCALAR_ZERO:
            return _repeated_scalars(field.type, present), False
        items = []
        for wire, value in present:
            _expect(wire, _BYTES, field.type)
            items.append(_render_message(field.type, value, depth + 1)[0])
        return items, False
    if field.type in _SCALAR_ZERO:
        if not present:
            return (None, True) if field.pointer else (_SCALAR_ZERO[field.type], True)
        value = _scalar(field.type, *present[-1])
        # A set pointer is never zero; a plain value is zero when it equals its type's zero.
        return value, False if field.pointer else value in ("", False, 0, None)
    if not present:
        if field.pointer:
            return None, True
        return _render_message(field.type, b"", depth + 1)
    for wire, _ in present:
        _expect(wire, _BYTES, field.type)
    # Repeated occurrences of one embedded message merge, exactly as concatenating them does.
    value, zero = _render_message(field.type, b"".join(v for _, v in present), depth + 1)
    return value, zero and not field.pointer


def _element(ftype: str, present: list[tuple[int, Any]], depth: int) -> Any:
    """A map value: always written, so absent means the zero value."""
    if ftype in _SCALAR_ZERO:
        return _scalar(ftype, *present[-1]) if present else ("" if ftype == "bytes" else _SCALAR_ZERO[ftype])
    for wire, _ in present:
        _expect(wire, _BYTES, ftype)
    return _render_message(ftype, b"".join(v for _, v in present), depth + 1)[0]


def _int_field(fields: dict[int, list[tuple[int, Any]]], number: int, ftype: str = "int64") -> int:
    values = fields.get(number)
    return _scalar(ftype, *values[-1]) if values else 0


def _time(fields: dict[int, list[tuple[int, Any]]], _depth: int) -> tuple[Any, bool]:
    seconds, nanos = _int_field(fields, 1), _int_field(fields, 2, "int32")
    if not seconds and not nanos:
        return None, True  # metav1.Time's zero value prints as null
    return _utc(seconds).strftime("%Y-%m-%dT%H:%M:%SZ"), False


def _micro_time(fields: dict[int, list[tuple[int, Any]]], _depth: int) -> tuple[Any, bool]:
    seconds, nanos = _int_field(fields, 1), _int_field(fields, 2, "int32")
    if not seconds and not nanos:
        return None, True
    return _utc(seconds).strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos // 1000:06d}Z", False


def _utc(seconds: int) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"protobuf timestamp {seconds} is out of range") from None


def _duration(fields: dict[int, list[tuple[int, Any]]], _depth: int) -> tuple[Any, bool]:
    nanos = _int_field(fields, 1)
    return go_duration(nanos), nanos == 0


def go_duration(nanos: int) -> str:
    """Go's time.Duration.String: 1h2m3.5s, 1.5ms, 0s."""
    if nanos == 0:
        return "0s"
    sign, value = ("-" if nanos < 0 else ""), abs(nanos)
    if value < 1_000_000_000:
        for unit, size in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if value < size * 1000:
                return sign + _decimal(value, size) + unit
    seconds, rest = divmod(value, 1_000_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = _decimal(seconds * 1_000_000_000 + rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")


def _quantity(fields: dict[int, list[tuple[int, Any]]], _depth: int) -> tuple[Any, bool]:
    text = _string(_last_bytes(fields, 1))
    return (text or "0"), not text


def _int_or_string(fields: dict[int, list[tuple[int, Any]]], _depth: int) -> tuple[Any, bool]:
    kind, number, text = _int_field(fields, 1), _int_field(fields, 2, "int32"), _string(_last_bytes(fields, 3))
    return (text if kind == 1 else number), not (kind or number or text)


def _raw_json(fields: dict[int, list[tuple[int, Any]]], depth: int) -> tuple[Any, bool]:
    """RawExtension and FieldsV1 carry their content as bytes, normally JSON (printed verbatim by Go)."""
    raw = _last_bytes(fields, 1)
    if not raw:
        return None, True
    if raw.startswith(MAGIC):
        return _decode_unknown(raw, depth + 1)[0], False
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError as err:
        raise ValueError(f"embedded raw object is not JSON: {err}") from None


_SPECIAL = {
    _TIME: _time,
    _MICRO_TIME: _micro_time,
    _DURATION: _duration,
    _FIELDS_V1: _raw_json,
    _RAW_EXTENSION: _raw_json,
    _INT_OR_STRING: _int_or_string,
    **dict.fromkeys(_QUANTITIES, _quantity),
}


# --- encoding ---------------------------------------------------------------------------------------------

def encode_k8s_protobuf(obj: dict[str, Any]) -> bytes:
    """Encode a JSON-form object (apiVersion and kind set) as kube-apiserver's protobuf serializer does.

    Fields are written as Go's generated marshaller writes them: in field-number order, non-pointer scalars
    and structs always, pointers only when set, map entries sorted by key. Fields the message does not know
    are dropped, as Go's JSON decoding would drop them. Raises ValueError when a value has the wrong type.
    """
    api_version, kind = obj.get("apiVersion") or "", obj.get("kind") or ""
    name = message_name(api_version, kind)
    if name is None:
        raise ValueError(f"no protobuf message is known for {kind} in {api_version}")
    type_meta = _tagged(1, api_version.encode()) + _tagged(2, kind.encode())
    # runtime.Unknown: typeMeta, raw, then the (empty) contentEncoding and contentType.
    return MAGIC + _tagged(1, type_meta) + _tagged(2, _encode_message(name, obj)) + _tagged(3, b"") + _tagged(4, b"")


def _put_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers are ten-byte two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tagged(number: int, data: bytes) -> bytes:
    return _put_varint(number << 3 | _BYTES) + _put_varint(len(data)) + data


def _encode_scalar(number: int, ftype: str, value: Any) -> bytes:
    try:
        if ftype == "string":
            if not isinstance(value, str):
                raise TypeError
            return _tagged(number, value.encode("utf-8", errors="surrogatepass"))
        if ftype == "bytes":
            return _tagged(number, base64.b64decode(value, validate=True))
        if ftype == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return _put_varint(number << 3 | _VARINT) + _put_varint(int(value))
        if ftype in _INTEGERS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return _put_varint(number << 3 | _VARINT) + _put_varint(value)
        if ftype == "double":
            return _put_varint(number << 3 | _FIXED64) + struct.pack("<d", float(value))
        if ftype == "float":
            return _put_varint(number << 3 | _FIXED32) + struct.pack("<f", float(value))
    except (TypeError, ValueError, struct.error, binascii.Error):
        raise ValueError(f"{value!r} is not a valid {ftype} value") from None
    raise ValueError(f"unsupported protobuf scalar type {ftype}")


def _encode_message(name: str, value: Any) -> bytes:
    special = _SPECIAL_ENCODERS.get(name)
    if special is not None:
        return special(value)
    schema = _schema()
    if name in schema.list_wrappers:
        return b"".join(_encode_scalar(1, "string", item) for item in _as_list(value, name))
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not an object (for {name})")
    out = bytearray()
    for field in schema.messages[name]:
        if field.inline:
            out += _tagged(field.number, _encode_message(field.type, value))
            continue
        item = value.get(field.name)
        if field.key:
            if item is None:
                continue
            if not isinstance(item, dict):
                raise ValueError(f"{field.name}: {item!r} is not an object")
            for key in sorted(item):
                entry = _encode_scalar(1, field.key, key) + _encode_element(field.type, item[key])
                out += _tagged(field.number, entry)
        elif field.repeated:
            for element in _as_list(item, field.name):
                out += _encode_element(field.type, element, field.number)
        elif item is None and (field.pointer or field.type == "bytes"):
            continue  # nil pointers and nil byte slices are not written
        elif field.type in _SCALAR_ZERO:
            out += _encode_scalar(field.number, field.type, _SCALAR_ZERO[field.type] if item is None else item)
        else:
            out += _tagged(field.number, _encode_message(field.type, item))
    return bytes(out)


def _encode_element(ftype: str, value: Any, number: int = 2) -> bytes:
    """One list element or map value (a map value is field 2 of its entry)."""
    if ftype in _SCALAR_ZERO:
        if value is None:
            value = "" if ftype == "bytes" else _SCALAR_ZERO[ftype]
        return _encode_scalar(number, ftype, value)
    return _tagged(number, _encode_message(ftype, value))


def _as_list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{name}: {value!r} is not a list")
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _encode_time(value: Any) -> bytes:
    if value is None:
        return b""  # the zero time is an empty message
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    # Go keeps a parsed fraction even for metav1.Time, although it prints whole seconds.
    return _encode_scalar(1, "int64", seconds) + _encode_scalar(2, "int32", moment.microsecond * 1000)


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration")
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    if body == "0":
        return 0
    parts = _DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"{text!r} is not a duration")
    total = sum(int(Decimal(number) * _DURATION_UNITS[unit]) for number, unit in parts)
    return sign * total


def _encode_duration(value: Any) -> bytes:
    return _encode_scalar(1, "int64", 0 if value is None else parse_go_duration(value))


def _encode_quantity(value: Any) -> bytes:
    if value is None:
        value = "0"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is not a quantity")
    return _encode_scalar(1, "string", str(value))


def _encode_int_or_string(value: Any) -> bytes:
    if isinstance(value, str):
        return _encode_scalar(1, "int64", 1) + _encode_scalar(2, "int32", 0) + _encode_scalar(3, "string", value)
    return _encode_scalar(1, "int64", 0) + _encode_scalar(2, "int32", value or 0) + _encode_scalar(3, "string", "")


def _encode_raw_json(value: Any) -> bytes:
    return b"" if value is None else _tagged(1, orjson.dumps(value))


_SPECIAL_ENCODERS = {
    _TIME: _encode_time,
    _MICRO_TIME: _encode_time,
    _DURATION: _encode_duration,
    _FIELDS_V1: _encode_raw_json,
    _RAW_EXTENSION: _encode_raw_json,
    _INT_OR_STRING: _encode_int_or_string,
    **dict.fromkeys(_QUANTITIES, _encode_quantity),
}
