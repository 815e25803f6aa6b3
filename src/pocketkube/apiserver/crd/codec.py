"""Decoding a custom resource from a request body, as apiextensions-apiserver's schema-coercing decoder does.

metadata is decoded as the typed ObjectMeta (unknown fields dropped); everything else is pruned against the
version's structural schema (unless x-kubernetes-preserve-unknown-fields) and defaulted. Dropped fields are
the *unknown fields* of fieldValidation: warnings for Warn, a 400 for Strict.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from pocketkube.api import errors
from pocketkube.api.kinds import ResourceInfo
from pocketkube.apiserver.crd.schema import apply_defaults, prune
from pocketkube.apiserver.decode import DecodeError, DecodeResult, decode_object

Obj = dict[str, Any]
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Patch types custom resources accept (no strategic merge patch: there are no Go structs to carry its tags).
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml",
               "application/apply-patch+cbor")


@functools.lru_cache(maxsize=256)
def parsed_schema(schema_json: str) -> Obj:
    """A version's schema, parsed once per content (shared: never mutate)."""
    value = orjson.loads(schema_json)
    return value if isinstance(value, dict) else {}


def schema_of(info: ResourceInfo) -> Obj:
    assert info.custom is not None
    return parsed_schema(info.custom.schema_json)


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
