"""Turning an HTTP request into what the registry needs: target, options, body, and response format."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from aiohttp import web

from pocketkube.api import errors
from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.apiserver import protobuf

Obj = dict[str, Any]

MAX_BODY_BYTES = 3 * 1024 * 1024
# Subresources of a namespace itself, as opposed to resources inside it (upstream's RequestInfoFactory).
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Limits of a YAML body checked before it is built (libyaml's composer recurses on the C stack).
MAX_YAML_DEPTH = 1000
MAX_YAML_EXPANDED_NODES = 1_000_000
_INT64_TEXT = re.compile(r"[+-]?[0-9]+")

JSON = "application/json"
YAML = "application/yaml"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"


@dataclass
class Target:
    info: ResourceInfo
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    watch_path: bool = False  # the deprecated /watch/ path prefix


def parse_target(catalog: ResourceCatalog, group: str, version: str, tail: str) -> Target:
    """Parse the path after /api/v1/ or /apis/G/V/ into resource, namespace, name, subresource."""
    parts = [p for p in tail.split("/") if p]
    watch_path = bool(parts) and parts[0] == "watch"
    if watch_path:
        parts = parts[1:]
    if not parts:
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
        else:
            # /namespaces/NAME[/status|finalize] addresses the namespace itself.
            namespace = ""
    if len(parts) > 3:
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    info = catalog.resource(group, version, parts[0])
    if info is None:
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    name = parts[1] if len(parts) > 1 else ""
    sub = parts[2] if len(parts) > 2 else ""
    if sub and sub not in info.subresources:
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    if info.namespaced and name and not namespace:
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
    return Target(info, namespace if info.namespaced else "", name, sub, watch_path)


def bool_param(request: web.Request, name: str) -> bool:
    """metav1's query conversion (Convert_Slice_string_To_bool): given and not 0/f/false is true."""
    values = request.query.getall(name, [])
    return bool(values) and values[0].lower() not in ("0", "f", "false")


def int_param(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    # strconv.ParseInt: decimal digits with an optional sign (no spaces or "_"), within int64
    number = int(value) if len(value) <= 20 and _INT64_TEXT.fullmatch(value) else None
    if number is None or not -(2**63) <= number < 2**63:
        raise errors.bad_request(f"invalid value for {name}: {value!r} is not an integer")
    return number


def dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise errors.bad_request(f"Invalid dryRun value: {value!r}: supported values: \"All\"")
    return bool(values)


def field_validation(request: web.Request) -> str:
    value = request.query.get("fieldValidation", "")
    if value == "":
        return "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise errors.bad_request(f"fieldValidation parameter unsupported: {value} (valid values: Ignore, "
                                 f"Warn, Strict)")
    return value


def media_type(request: web.Request) -> str:
    return (request.headers.get("Content-Type") or JSON).split(";")[0].strip().lower()


async def read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.too_large()
    body = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise errors.too_large()
    return bytes(body)


def parse_document(data: bytes, content_type: str) -> Any:
    """Decode a JSON or YAML body; malformed input is a 400 BadRequest."""
    if not data.strip():
        raise errors.bad_request("the request body is empty")
    if content_type in (YAML, APPLY_PATCH, "application/x-yaml", "text/yaml"):
        try:
            _check_yaml_shape(data)
            docs = list(yaml.load_all(data, Loader=_YAML_LOADER))
        except yaml.YAMLError as err:
            raise errors.bad_request(f"error converting YAML to JSON: {err}") from None
        docs = [d for d in docs if d is not None]
        if len(docs) != 1:
            raise errors.bad_request("the request body must hold exactly one YAML document")
        return _yaml_to_json_types(docs[0])
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise errors.bad_request(f"error decoding request body: {err}") from None


class _YAMLShapeError(yaml.YAMLError):
    pass


def _check_yaml_shape(data: bytes) -> None:
    """Refuse documents too deep or too alias-heavy to build, before building them.

    libyaml's composer recurses on the C stack, so a deeply nested body would crash the server; the
    event stream is a flat state machine and cheap to scan first. Aliases are counted expanded, as
    goyaml counts them, so a few bytes cannot unfold into millions of nodes.
    """
    depth = 0
    written = expanded = 0
    sizes: dict[str, int] = {}  # finished anchors: their expanded node count
    open_nodes: list[tuple[str | None, int]] = []  # collections being read: (anchor, expanded at start)
    for event in yaml.parse(data, Loader=_YAML_LOADER):
        if isinstance(event, yaml.DocumentStartEvent):
            sizes.clear()
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise _YAMLShapeError(f"yaml: exceeded max depth of {MAX_YAML_DEPTH}")
            open_nodes.append((event.anchor, expanded))
            written += 1
            expanded += 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            anchor, start = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = expanded - start
        elif isinstance(event, yaml.ScalarEvent):
            written += 1
            expanded += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_nodes):
                raise _YAMLShapeError(f"yaml: anchor '{event.anchor}' value contains itself")
            expanded += sizes.get(event.anchor, 0)  # an undefined alias is the composer's error
            if expanded > MAX_YAML_EXPANDED_NODES and expanded > 2 * written:
                raise _YAMLShapeError("yaml: document contains excessive aliasing")


def _yaml_to_json_types(value: Any) -> Any:
    """YAML may produce dates and non-string keys; JSON bodies never do."""
    if isinstance(value, dict):
        return {str(k): _yaml_to_json_types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_to_json_types(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def parse_object_body(data: bytes, content_type: str) -> Obj:
    if content_type == PROTOBUF:
        try:
            return protobuf.decode_k8s_protobuf(data)[0]
        except ValueError as err:
            raise errors.bad_request(f"error decoding request body: {err}") from None
    if content_type not in (JSON, YAML, "application/x-yaml", "text/yaml", "*/*", ""):
        raise errors.unsupported_media_type(content_type)
    obj = parse_document(data, content_type)
    if not isinstance(obj, dict):
        raise errors.bad_request("the request body must be a JSON or YAML object")
    return obj


def check_kind(info: ResourceInfo, obj: Obj) -> None:
    """A body's apiVersion/kind must name the resource of the URL (either may be omitted)."""
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    if api_version not in (None, "") and api_version != info.group_version:
        raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                                 f"version ({info.group_version})")
    if kind not in (None, "") and kind != info.kind:
        raise errors.bad_request(f'{kind} in version "{info.version}" cannot be handled as a {info.kind}: '
                                 f'no kind "{kind}" is registered for version "{info.group_version}"')
    obj["kind"] = info.kind
    obj["apiVersion"] = info.group_version


@dataclass
class Accept:
    """What representation the client asked for."""

    as_kind: str = ""  # "", "Table", "PartialObjectMetadata", "PartialObjectMetadataList"
    include_object: str = "Metadata"
    pretty: bool = False


def parse_accept(request: web.Request) -> Accept:
    header = request.headers.get("Accept", "") or "*/*"
    include = request.query.get("includeObject", "Metadata") or "Metadata"
    if include not in ("None", "Metadata", "Object"):
        raise errors.bad_request(f"includeObject must be None, Metadata or Object, not {include!r}")
    pretty = request.query.get("pretty", "") in ("1", "t", "T", "TRUE", "true", "True")  # strconv.ParseBool
    as_kind = _served_as(header)
    if as_kind is None:
        raise errors.not_acceptable("only the following media types are accepted: application/json, "
                                    "application/yaml")
    return Accept(as_kind, include, pretty)


@functools.lru_cache(maxsize=256)
def _served_as(header: str) -> str | None:
    """The first media range of an Accept header that is served: "" for plain JSON/YAML, or the kind asked
    for with as= (Table, PartialObjectMetadata[List]); None when none is. Clients send the same few headers."""
    for media_range in header.split(","):
        pieces = [p.strip() for p in media_range.split(";")]
        mime = pieces[0].lower()
        params = dict(p.split("=", 1) for p in pieces[1:] if "=" in p)
        if mime not in (JSON, "*/*", "application/*", YAML):
            continue
        as_kind = params.get("as", "")
        if as_kind:
            if params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1") and as_kind in (
                    "Table", "PartialObjectMetadata", "PartialObjectMetadataList"):
                return as_kind
            continue
        return ""
    return None
