"""The swagger 2.0 document in protocol buffers, as kube-apiserver serves ``/openapi/v2`` to clients asking for
``application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` (gnostic's ``openapi.v2.Document``).

kubectl reads this form to validate and patch kinds it finds in no OpenAPI v3 document (a ``List`` of objects,
for one). Values that are free JSON (defaults, enums, examples, ``x-`` extensions) travel as gnostic does, as
YAML text in ``Any.yaml``; JSON is valid YAML. Paths are left out: clients of this form read the definitions.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

Obj = dict[str, Any]

_VARINT, _FIXED64, _BYTES = 0, 1, 2

# openapi.v2.Schema field numbers, by swagger key, for each wire form.
_SCHEMA_STRINGS = {"$ref": 1, "format": 2, "title": 3, "description": 4, "pattern": 13, "discriminator": 26}
_SCHEMA_DOUBLES = {"multipleOf": 6, "maximum": 7, "minimum": 9}
_SCHEMA_BOOLS = {"exclusiveMaximum": 8, "exclusiveMinimum": 10, "uniqueItems": 16, "readOnly": 27}
_SCHEMA_INTS = {"maxLength": 11, "minLength": 12, "maxItems": 14, "minItems": 15, "maxProperties": 17,
                "minProperties": 18}
_SCHEMA_ANYS = {"default": 5, "example": 30}


def encode_document(document: Obj) -> bytes:
    """The openapi.v2.Document of a swagger 2.0 document (its info and definitions)."""
    out = bytearray()
    _string(out, 1, str(document.get("swagger") or "2.0"))
    info = document.get("info") or {}
    info_bytes = bytearray()
    _string(info_bytes, 1, str(info.get("title") or ""))
    _string(info_bytes, 2, str(info.get("version") or ""))
    _message(out, 2, info_bytes)
    _message(out, 8, bytearray())  # Paths, empty (see the module docstring)
    definitions = bytearray()
    for name, schema in (document.get("definitions") or {}).items():
        _message(definitions, 1, _named(name, _schema(schema)))
    _message(out, 9, definitions)
    return bytes(out)


def _schema(schema: Obj) -> bytearray:
    out = bytearray()
    for key, number in _SCHEMA_STRINGS.items():
        if schema.get(key):
            _string(out, number, str(schema[key]))
    for key, number in _SCHEMA_ANYS.items():
        if key in schema:
            _message(out, number, _any(schema[key]))
    for key, number in _SCHEMA_DOUBLES.items():
        if schema.get(key):
            _key(out, number, _FIXED64)
            out += struct.pack("<d", float(schema[key]))
    for key, number in _SCHEMA_BOOLS.items():
        if schema.get(key):
            _varint_field(out, number, 1)
    for key, number in _SCHEMA_INTS.items():
        if schema.get(key):
            _varint_field(out, number, int(schema[key]))
    for name in schema.get("required") or []:
        _string(out, 19, str(name))
    for value in schema.get("enum") or []:
        _message(out, 20, _any(value))
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        item = bytearray()
        _message(item, 1, _schema(additional))
        _message(out, 21, item)
    elif isinstance(additional, bool):
        item = bytearray()
        _varint_field(item, 2, int(additional))  # proto3 keeps a oneof member even when false
        _message(out, 21, item)
    types = schema.get("type")
    if types:
        type_item = bytearray()
        for value in types if isinstance(types, list) else [types]:
            _string(type_item, 1, str(value))
        _message(out, 22, type_item)
    items = schema.get("items")
    if isinstance(items, dict | list):
        items_item = bytearray()
        for item_schema in items if isinstance(items, list) else [items]:
            _message(items_item, 1, _schema(item_schema))
        _message(out, 23, items_item)
    for part in schema.get("allOf") or []:
        _message(out, 24, _schema(part))
    properties = schema.get("properties")
    if properties:
        props = bytearray()
        for name, value in properties.items():
            _message(props, 1, _named(name, _schema(value)))
        _message(out, 25, props)
    for key, value in schema.items():
        if key.startswith("x-"):
            _message(out, 31, _named(key, _any(value)))
    return out


def _any(value: Any) -> bytearray:
    """openapi.v2.Any with the value as YAML text (field 2)."""
    out = bytearray()
    _string(out, 2, orjson.dumps(value).decode() + "\n")
    return out


def _named(name: str, value: bytearray) -> bytearray:
    """NamedSchema/NamedAny: the map key (1) and its value (2)."""
    out = bytearray()
    _string(out, 1, name)
    _message(out, 2, value)
    return out


def _key(out: bytearray, number: int, wire: int) -> None:
    _varint(out, number << 3 | wire)


def _varint(out: bytearray, value: int) -> None:
    value &= (1 << 64) - 1  # negative numbers as their 64-bit two's complement, as protobuf does
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _varint_field(out: bytearray, number: int, value: int) -> None:
    _key(out, number, _VARINT)
    _varint(out, value)


def _string(out: bytearray, number: int, value: str) -> None:
    if value:
        _message(out, number, value.encode())


def _message(out: bytearray, number: int, payload: bytes | bytearray) -> None:
    _key(out, number, _BYTES)
    _varint(out, len(payload))
    out += payload
