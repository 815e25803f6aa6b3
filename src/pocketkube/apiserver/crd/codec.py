"""Custom objects on their way in and out, as apiextensions-apiserver's codecs treat them.

* Request bodies (``decode_custom``, the schema-coercing decoder): metadata is decoded as the typed ObjectMeta
  (unknown fields dropped); everything else is pruned against the request version's structural schema (unless
  x-kubernetes-preserve-unknown-fields) and defaulted. Dropped fields are the *unknown fields* of
  fieldValidation: warnings for Warn, a 400 for Strict.
* Conversion (``convert``, the schema-coercing converter): conversion strategy None changes only apiVersion,
  then the result is pruned with the *target* version's schema. This runs on the way to storage and on the
  way out to every served version other than the stored one.
* Reading from storage (``storage_decoder``): the stored object's metadata is coerced (malformed fields
  dropped), it is pruned and then defaulted with the schema of the version it was stored in, and a missing
  generation becomes 1. The watch cache applies this once, when an object enters it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import orjson

from pocketkube.api import errors
from pocketkube.api.kinds import CustomResource, ResourceInfo
from pocketkube.apiserver import protobuf
from pocketkube.apiserver.crd.schema import (
    apply_defaults,
    drop_non_nullable_nulls,
    has_defaults,
    prune,
    pruned,
)
from pocketkube.apiserver.decode import DecodeError, DecodeResult, decode_object

Obj = dict[str, Any]
# Turns an object as decoded from storage (owned by the caller) into the object the API server reads.
Decoder = Callable[[Obj], Obj]
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Patch types custom resources accept (no strategic merge patch: there are no Go structs to carry its tags).
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml",
               "application/apply-patch+cbor")


@functools.lru_cache(maxsize=1024)
def parsed_schema(schema_json: str) -> Obj:
    """A version's schema, parsed once per content (shared: never mutate)."""
    value = orjson.loads(schema_json)
    return value if isinstance(value, dict) else {}


def schema_of(info: ResourceInfo) -> Obj:
    assert info.custom is not None
    return parsed_schema(info.custom.schema_json)


@functools.lru_cache(maxsize=1024)
def _schemas_by_version(version_schemas: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(version_schemas)


@functools.lru_cache(maxsize=1024)
def _defaults_in(schema_json: str) -> bool:
    return has_defaults(parsed_schema(schema_json))


def version_schema_json(custom: CustomResource, version: str) -> str | None:
    """The schema (as schema_json spells it) of one of the CRD's versions, served or not."""
    return _schemas_by_version(custom.version_schemas).get(version)


def convert(info: ResourceInfo, obj: Obj, version: str, api_version: str) -> Obj:
    """``obj`` in ``version`` (group/version ``api_version``): conversion strategy None sets apiVersion, then the
    schema-coercing converter prunes with the target version's schema. A new top-level dict; nested parts are
    shared with ``obj`` unless pruning had to copy them (``obj`` is never modified)."""
    out = {**obj, "apiVersion": api_version, "kind": info.kind}
    source = obj.get("apiVersion")
    if source == api_version:
        return out  # no conversion at all: the object was coerced with this version's schema when decoded
    assert info.custom is not None
    schemas = _schemas_by_version(info.custom.version_schemas)
    target = schemas.get(version)
    if target is None:
        return out
    source_version = source.rpartition("/")[2] if isinstance(source, str) else ""
    if schemas.get(source_version) == target:
        return out  # pruned and coerced with an identical schema already: pruning again changes nothing
    return pruned(parsed_schema(target), out)


def _coerce_stored_metadata(meta: Obj) -> None:
    """GetObjectMeta/SetObjectMeta with dropMalformedFields: the typed ObjectMeta, fields that do not decode
    dropped (objects written before ObjectMeta was validated)."""
    try:
        decode_object(OBJECT_META, meta)
        return
    except DecodeError:
        pass
    for key in list(meta):
        single = {key: meta[key]}
        try:
            decode_object(OBJECT_META, single)
        except DecodeError:
            del meta[key]
            continue
        if key in single:
            meta[key] = single[key]
        else:
            del meta[key]


def storage_decoder(info: ResourceInfo) -> tuple[Hashable, Decoder]:
    """How objects of a custom resource are read from storage (the storage codec's schema-coercing decoder and
    its defaulter), with a key that changes whenever the decoding would: the group, kind and every version's
    schema. ``info`` is any ResourceInfo of the CRD (the storage version's, say)."""
    custom = info.custom
    assert custom is not None
    group, kind = info.group, info.kind
    schemas = _schemas_by_version(custom.version_schemas)

    def decode(obj: Obj) -> Obj:
        api_version = obj.get("apiVersion")
        if not isinstance(api_version, str) or obj.get("kind") != kind:
            return obj
        obj_group, _, version = api_version.rpartition("/")
        if obj_group != group:
            return obj
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            _coerce_stored_metadata(meta)
        schema_json = schemas.get(version)
        if schema_json is not None:
            schema = parsed_schema(schema_json)
            prune(schema, obj)
            # defaults of the version the object is stored in (KEP-575: "when reading from etcd")
            if _defaults_in(schema_json):
                apply_defaults(schema, obj)
            else:
                drop_non_nullable_nulls(schema, obj)
        if isinstance(meta, dict) and not meta.get("generation"):
            meta["generation"] = 1  # repairGeneration: very old objects have none
        return obj

    return (group, kind, custom.version_schemas), decode


def decode_custom(info: ResourceInfo, obj: Obj, validation: str) -> tuple[Obj, list[str]]:
    """Prune, coerce metadata and default a custom object in place; returns it with Warn-mode warnings."""
    unknown: list[str] = []
    meta = obj.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise errors.bad_request(f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: '
                                     f"metadata must be an object")
        try:
            result = decode_object(OBJECT_META, meta)
        except DecodeError as err:
            raise err.to_status(info.kind, info.version) from None
        unknown += [f"metadata.{path}" for path in result.unknown_fields]
    schema = schema_of(info)
    unknown += prune(schema, obj)
    apply_defaults(schema, obj)
    found = DecodeResult(obj, unknown)
    if unknown and validation == "Strict":
        raise found.strict_error(info.kind, info.version)
    return obj, found.warnings() if validation == "Warn" else []


def unsupported_patch(content_type: str) -> errors.StatusError:
    """The 415 upstream answers a strategic merge patch (or any other unknown type) to a custom resource."""
    return errors.StatusError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                              "accepted media types include: " + ", ".join(PATCH_TYPES))


def _summarize(data: bytes, limit: int = 30) -> str:
    """summarizeData: how a decode error quotes a body it could not place."""
    if not data:
        return "<empty>"
    if data[:1] == b"{":
        text = data.decode("utf-8", "replace")
        return text[:limit] + " ..." if len(data) > limit else text
    return data[:limit].hex() + " ..." if len(data) > limit else data.hex()


def protobuf_body_error(info: ResourceInfo, body: bytes) -> errors.StatusError:
    """What a protobuf create or update body of a custom object comes to upstream.

    Custom resources list protobuf among their media types (for the meta.k8s.io objects they return), so
    the body is not refused as an unsupported media type: it reaches the protobuf serializer, which cannot
    decode into an unstructured object, and the handler answers a 400 (transformDecodeError). With the
    default fieldValidation (Warn) upstream's decoder has no strict protobuf serializer to call and the request
    fails with a 500 instead; that crash is not reproduced here.
    """
    try:
        api_version, kind = protobuf.envelope_type(body)
    except ValueError as err:
        return errors.bad_request(f"the object provided is unrecognized (must be of type {info.kind}): {err} "
                                  f"({_summarize(body)})")
    version = api_version.rpartition("/")[2] if api_version else info.version
    return errors.bad_request(f'{kind or info.kind} in version "{version}" cannot be handled as a {info.kind}: '
                              "Object 'Kind' is missing in 'object has no kind field '")
