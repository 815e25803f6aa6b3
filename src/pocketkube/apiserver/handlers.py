"""HTTP handlers for resource paths: one generic handler for every kind and verb."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jsonpatch
import orjson
from aiohttp import web

from pocketkube.api import errors
from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.api.selectors import FieldSelector, LabelSelector, SelectorError
from pocketkube.apiserver import request as req
from pocketkube.apiserver.authn import Authenticator
from pocketkube.apiserver.crd import codec as crd_codec
from pocketkube.apiserver.decode import DecodeError, decode_object
from pocketkube.apiserver.fieldmanager import (
    ApplyConflict,
    default_manager,
    field_manager_causes,
    validate_patch_options,
)
from pocketkube.apiserver.patch import merge_patch
from pocketkube.apiserver.printers import column_definitions, to_table
from pocketkube.apiserver.registry import (
    DeleteOptions,
    Registry,
    WriteOptions,
    now_rfc3339,
    parse_resource_version,
)
from pocketkube.apiserver.reviews import REVIEWS, ReviewRequest
from pocketkube.apiserver.satokens import ServiceAccountTokens
from pocketkube.apiserver.strategicpatch import strategic_merge_patch
from pocketkube.apiserver.strategies.conversion import from_storage
from pocketkube.apiserver.watchcache import CacheWatcher, TooOldError, WatchItem
from pocketkube.storage.interface import CompactedError, FutureRevisionError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
DEFAULT_WATCH_TIMEOUT = 1800
BOOKMARK_INTERVAL = 30.0
PRETIMEOUT_BOOKMARK = 2.0
_POLL = 1.0


def encode(obj: Any, pretty: bool = False) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 if pretty else 0)


def json_response(obj: Any, status: int = 200, *, pretty: bool = False,
                  warnings: list[str] | None = None) -> web.Response:
    response = web.Response(body=encode(obj, pretty), status=status, content_type=req.JSON)
    _add_warnings(response, warnings or [])
    return response


def _add_warnings(response: web.StreamResponse, warnings: list[str]) -> None:
    for warning in warnings:
        escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
        response.headers.add("Warning", f'299 - "{escaped}"')


_REQUEST_WARNINGS = "request_warnings"


async def add_request_warnings(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: warnings that hold for the whole request (a deprecated API's) go with whatever
    answers it, errors and watches included."""
    _add_warnings(response, request.get(_REQUEST_WARNINGS, []))


def success_status(info: ResourceInfo, obj: Obj) -> Obj:
    meta = obj.get("metadata", {})
    details = {"name": meta.get("name", ""), "kind": info.plural, "uid": meta.get("uid", "")}
    if info.group:
        details["group"] = info.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def _continue_token(revision: int, start_after: str) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start_after})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
        revision, start = data["rv"], data["start"]
        # the token's fields are Go's int64 and string: anything else does not decode
        if type(revision) is not int or not 0 < revision < 2**63 or not isinstance(start, str):
            raise ValueError(token)
        return revision, start
    except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise errors.bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                 "(version meta.k8s.io/v1)") from None


def _check_name(obj: Obj, name: str) -> None:
    """checkName: what a PUT or a patch stores must still name the object of the URL."""
    meta = obj.get("metadata")
    found = meta.get("name", "") if isinstance(meta, dict) else ""
    if found != name:
        raise errors.bad_request(f"the name of the object ({found}) does not match the name on the URL ({name})")


def _validate_list_options(rv: str, rv_match: str, token: str, send_initial_events: bool) -> None:
    """ValidateListOptions (for a list, not a watch): 422 ListOptions.meta.k8s.io with causes."""
    causes = []
    if rv_match:
        if rv == "":
            causes.append(errors.Cause("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden unless "
                                       "resourceVersion is provided", "FieldValueForbidden"))
        if token:
            causes.append(errors.Cause("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden when "
                                       "continue is provided", "FieldValueForbidden"))
        if rv_match not in ("Exact", "NotOlderThan"):
            causes.append(errors.Cause("resourceVersionMatch", f'Unsupported value: "{rv_match}": supported values: '
                                       '"Exact", "NotOlderThan", ""', "FieldValueNotSupported"))
        if rv_match == "Exact" and rv == "0":
            causes.append(errors.Cause("resourceVersionMatch", 'Forbidden: resourceVersionMatch "exact" is forbidden '
                                       'for resourceVersion "0"', "FieldValueForbidden"))
    if send_initial_events:
        causes.append(errors.Cause("sendInitialEvents", "Forbidden: sendInitialEvents is forbidden for list",
                                   "FieldValueForbidden"))
    if causes:
        raise errors.invalid("ListOptions", "", "meta.k8s.io", causes)


_JSON_KINDS = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}
MAX_JSON_PATCH_OPERATIONS = 10000


def _json_patch_operations(document: Any) -> list[Any]:
    """jsonpatch.DecodePatch: a list of operation objects (null ones fail later, when applied)."""
    if not isinstance(document, list):
        raise errors.bad_request(f"json: cannot unmarshal {_JSON_KINDS.get(type(document), 'null')} into Go "
                                 f"value of type jsonpatch.Patch")
    for op in document:
        if op is not None and not isinstance(op, dict):
            raise errors.bad_request(f"json: cannot unmarshal {_JSON_KINDS[type(op)]} into Go value of type "
                                     f"jsonpatch.Operation")
    if len(document) > MAX_JSON_PATCH_OPERATIONS:
        raise errors.too_large(f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
                               f"got {len(document)}")
    return document


def apply_json_patch(operations: list[Any], current: Any) -> Any:
    """Apply decoded JSON patch operations. Upstream only decodes the document up front; a bad op, path or
    value fails when applied, as a 422 that keeps the patch library's text out of the answer."""
    try:
        return jsonpatch.JsonPatch(operations).apply(current)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, IndexError,
            AttributeError):
        raise errors.StatusError(422, "Invalid", "the server rejected our request due to an error in our "
                                 "request") from None


def json_patch_operations(body: bytes) -> list[Any]:
    """A JSON patch body decoded into its operations (400 for anything that is not a list of objects)."""
    return _json_patch_operations(req.parse_document(body, req.JSON))


@contextlib.contextmanager
def _revision_errors() -> Iterator[None]:
    """A storage read at a revision it no longer has (410) or does not have yet (504)."""
    try:
        yield
    except CompactedError as err:
        raise errors.gone(f"too old resource version: {err.requested} ({err.compacted})") from None
    except FutureRevisionError as err:
        raise errors.StatusError(504, "Timeout", f"Too large resource version: {err.requested}, "
                                 f"current: {err.current}") from None


def _selects_everything(request: web.Request) -> bool:
    """SelectionPredicate.Empty: neither a label nor a field selector narrows a list (both already parsed)."""
    return (LabelSelector.parse(request.query.get("labelSelector", "")).empty
            and not FieldSelector.parse(request.query.get("fieldSelector", "")).requirements)


def _partial_metadata(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


class ComputedResource(Protocol):
    """A read-only resource made on each request instead of stored (v1 ComponentStatus)."""

    async def list(self) -> list[Obj]: ...

    async def get(self, name: str) -> Obj: ...


class ResourceHandler:
    """Serves /api/v1/... and /apis/G/V/... for every resource in the catalogue."""

    def __init__(self, catalog: ResourceCatalog, registry: Registry,
                 service_account_tokens: ServiceAccountTokens, authenticator: Authenticator) -> None:
        self.catalog = catalog
        self.authenticator = authenticator
        self.registry = registry
        self.service_account_tokens = service_account_tokens
        # (group, plural) -> the computed resource served there instead of the registry
        self.computed: dict[tuple[str, str], ComputedResource] = {}

    async def handle(self, request: web.Request, group: str, version: str, tail: str) -> web.StreamResponse:
        target = req.parse_target(self.catalog, group, version, tail)
        method = request.method
        info = target.info
        if info.deprecation:
            request[_REQUEST_WARNINGS] = [info.deprecation]
        if target.subresource:
            return await self._subresource(request, target)
        if target.name:
            if method == "GET":
                if target.watch_path or req.bool_param(request, "watch"):
                    self._require_verb(info, "watch", method)
                    return await self.watch(request, target)
                self._require_verb(info, "get", method)
                return await self.get(request, target)
            if method == "PUT":
                self._require_verb(info, "update", method)
                return await self.update(request, target)
            if method == "PATCH":
                self._require_verb(info, "patch", method)
                return await self.patch(request, target)
            if method == "DELETE":
                self._require_verb(info, "delete", method)
                return await self.delete(request, target)
        else:
            if method == "GET":
                if target.watch_path or req.bool_param(request, "watch"):
                    self._require_verb(info, "watch", method)
                    return await self.watch(request, target)
                self._require_verb(info, "list", method)
                return await self.list(request, target)
            if method == "POST":
                self._require_verb(info, "create", method)
                return await self.create(request, target)
            if method == "DELETE":
                self._require_verb(info, "deletecollection", method)
                return await self.delete_collection(request, target)
        raise errors.method_not_allowed(f"the server does not allow this method on the requested resource "
                                        f"({method} {info.plural})")

    @staticmethod
    def _require_verb(info: ResourceInfo, verb: str, method: str) -> None:
        if verb not in info.verbs:
            raise errors.method_not_allowed(f"the server does not allow this method on the requested resource "
                                            f"({method} {info.plural})")

    # --- decoding ----------------------------------------------------------------------
    @staticmethod
    def decode(info: ResourceInfo, obj: Obj, validation: str) -> tuple[Obj, list[str]]:
        """Typed decoding as upstream: type errors are 400; unknown fields per fieldValidation."""
        if info.custom is not None:  # custom resources: pruned and defaulted by their schema
            return crd_codec.decode_custom(info, obj, validation)
        try:
            result = decode_object(info.definition, obj)
        except DecodeError as err:
            raise err.to_status(info.kind, info.version) from None
        if result.unknown_fields and validation == "Strict":
            raise result.strict_error(info.kind, info.version)
        return result.obj, result.warnings() if validation == "Warn" else []

    async def _object_body(self, request: web.Request, info: ResourceInfo) -> tuple[Obj, list[str]]:
        body = await req.read_body(request)
        content_type = req.media_type(request)
        if info.custom is not None and content_type == req.PROTOBUF:
            raise crd_codec.protobuf_body_error(info, body)  # custom resources have no protobuf form
        obj = req.parse_object_body(body, content_type)
        req.check_kind(info, obj)
        return self.decode(info, obj, req.field_validation(request))

    @staticmethod
    def _write_options(request: web.Request, options_kind: str = "") -> WriteOptions:
        """Dry run and the field manager (the fieldManager parameter, else the User-Agent's product)."""
        manager = request.query.get("fieldManager", "")
        if manager and options_kind:
            causes = field_manager_causes(manager)
            if causes:
                raise errors.invalid(options_kind, "", "meta.k8s.io", causes)
        return WriteOptions(dry_run=req.dry_run(request),
                            field_manager=manager or default_manager(request.headers.get("User-Agent", "")),
                            user=request.get("user"))

    def _render(self, request: web.Request, info: ResourceInfo, obj: Obj, status: int = 200,
                warnings: list[str] | None = None) -> web.Response:
        accept = req.parse_accept(request)
        if accept.as_kind == "Table":
            body = to_table(info, [obj], list_meta={"resourceVersion": obj.get("metadata", {}).get(
                "resourceVersion", "")}, include_object=accept.include_object)
        elif accept.as_kind == "PartialObjectMetadata":
            body = _partial_metadata(obj)
        elif accept.as_kind == "PartialObjectMetadataList":
            raise errors.not_acceptable("PartialObjectMetadataList is only served for lists")
        else:
            body = obj
        return json_response(body, status, pretty=accept.pretty, warnings=warnings)

    # --- verbs -------------------------------------------------------------------------
    async def get(self, request: web.Request, target: req.Target) -> web.Response:
        computed = self.computed.get((target.info.group, target.info.plural))
        if computed is not None:
            return self._render(request, target.info, await computed.get(target.name))
        obj = await self.registry.get(target.info, target.namespace, target.name,
                                      request.query.get("resourceVersion", ""))
        return self._render(request, target.info, obj)

    async def create(self, request: web.Request, target: req.Target) -> web.Response:
        info = target.info
        if info.namespaced and not target.namespace:
            raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
        obj, warnings = await self._object_body(request, info)
        review = REVIEWS.get((info.group, info.kind))
        if review is not None:
            answer = review(obj, ReviewRequest(info.kind, target.namespace, request["user"], self.authenticator))
            return self._render(request, info, answer, 201, warnings)
        created = await self.registry.create(info, target.namespace, obj,
                                             self._write_options(request, "CreateOptions"))
        warnings += self.registry.strategy(info).warnings(created)
        return self._render(request, info, created, 201, warnings)

    async def update(self, request: web.Request, target: req.Target, subresource: str = "") -> web.Response:
        info = target.info
        obj, warnings = await self._object_body(request, info)
        _check_name(obj, target.name)
        result, created = await self.registry.update(info, target.namespace, target.name, obj,
                                                     self._write_options(request, "UpdateOptions"), subresource)
        return self._render(request, info, result, 201 if created else 200, warnings)

    def _patcher(self, request: web.Request, info: ResourceInfo, body: bytes,
                 warnings: list[str]) -> Callable[[Obj], Obj]:
        content_type = req.media_type(request)
        validation = req.field_validation(request)
        if info.custom is not None and content_type not in crd_codec.PATCH_TYPES:
            raise crd_codec.unsupported_patch(content_type)  # no strategic merge patch for custom resources
        if content_type == req.JSON_PATCH:
            operations = json_patch_operations(body)
            return lambda current: self._decode_patched(info, apply_json_patch(operations, current), validation,
                                                        warnings)
        if content_type == req.MERGE_PATCH:
            document = req.parse_document(body, req.JSON)
            if not isinstance(document, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            return lambda current: self._decode_patched(info, merge_patch(current, document), validation,
                                                        warnings)
        if content_type == req.STRATEGIC_PATCH:
            document = req.parse_document(body, req.JSON)
            return lambda current: self._decode_patched(
                info, strategic_merge_patch(info.definition, current, document), validation, warnings)
        raise errors.StatusError(415, "UnsupportedMediaType",
                                 f"the body of the request was in an unknown format - accepted media types "
                                 f"include: application/json-patch+json, application/merge-patch+json, "
                                 f"application/strategic-merge-patch+json, application/apply-patch+yaml "
                                 f"(got {content_type})")

    def _decode_patched(self, info: ResourceInfo, obj: Any, validation: str, warnings: list[str]) -> Obj:
        if not isinstance(obj, dict):
            raise errors.bad_request("the patch did not produce an object")
        req.check_kind(info, obj)
        decoded, found = self.decode(info, obj, validation)
        warnings[:] = found
        return decoded

    async def patch(self, request: web.Request, target: req.Target, subresource: str = "") -> web.Response:
        info = target.info
        body = await req.read_body(request)
        is_apply = req.media_type(request) == req.APPLY_PATCH
        validate_patch_options(is_apply, request.query.get("fieldManager", ""), "force" in request.query)
        if is_apply:
            return await self._apply(request, target, body, subresource)
        warnings: list[str] = []
        patcher = self._patcher(request, info, body, warnings)

        def apply(current: Obj) -> Obj:
            patched = patcher(current)
            _check_name(patched, target.name)
            return patched
        result = await self.registry.patch(info, target.namespace, target.name, apply,
                                           self._write_options(request), subresource)
        return self._render(request, info, result, 200, warnings)

    async def _apply(self, request: web.Request, target: req.Target, body: bytes,
                     subresource: str) -> web.Response:
        """Server-side apply: merge the applied configuration, own its fields, refuse conflicts (409)."""
        info = target.info
        manager = self.registry.field_manager(info)
        if manager is None:
            raise errors.StatusError(415, "UnsupportedMediaType", f"apply patches are not supported for "
                                     f"{info.plural}")
        config = req.parse_document(body, req.APPLY_PATCH)
        if not isinstance(config, dict):
            raise errors.bad_request("the applied configuration must be an object")
        manager.check_applied(config)  # first, as upstream: its errors precede any decoding
        # Unknown fields are reported on a copy: a null in an apply configuration means "remove this".
        _, warnings = self.decode(info, copy.deepcopy(config), req.field_validation(request))
        opts = self._write_options(request)
        opts.track_fields = False
        force = req.bool_param(request, "force")
        now = now_rfc3339()

        def merge(current: Obj | None) -> Obj:
            try:
                merged = manager.apply(current, config, opts.field_manager, now, force=force,
                                       subresource=subresource)
            except ApplyConflict as err:
                raise err.to_status_error() from None
            decoded = self._decode_patched(info, merged, "Ignore", [])
            _check_name(decoded, target.name)
            return decoded

        try:
            result = await self.registry.patch(info, target.namespace, target.name, merge, opts, subresource)
        except errors.StatusError as err:
            if err.code != 404 or subresource:
                raise
            created = await self.registry.create(info, target.namespace, merge(None), opts)
            return self._render(request, info, created, 201, warnings)
        return self._render(request, info, result, 200, warnings)

    async def _delete_options(self, request: web.Request) -> DeleteOptions:
        body = await req.read_body(request)
        data: Obj = {}
        if body.strip():
            parsed = req.parse_document(body, req.media_type(request))
            if not isinstance(parsed, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            try:  # typed as upstream decodes it: a wrong type anywhere is a 400, never a crash later
                data = decode_object("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", parsed).obj
            except DecodeError as err:
                raise err.to_status("DeleteOptions", "v1") from None
        grace = req.int_param(request, "gracePeriodSeconds")
        if grace is None and data.get("gracePeriodSeconds") is not None:
            grace = data["gracePeriodSeconds"]
        policy = request.query.get("propagationPolicy") or data.get("propagationPolicy")
        if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
            raise errors.invalid("DeleteOptions", "", "", [errors.Cause(
                "propagationPolicy", f'Unsupported value: "{policy}": supported values: "Foreground", '
                '"Background", "Orphan", "nil"', "FieldValueNotSupported")])
        orphan = data.get("orphanDependents")
        if "orphanDependents" in request.query:
            orphan = req.bool_param(request, "orphanDependents")
        if orphan is not None and policy is not None:
            raise errors.invalid("DeleteOptions", "", "", [errors.Cause(
                "propagationPolicy", "Invalid value: \"" + policy + "\": orphanDependents and deletionPropagation "
                "cannot be both set", "FieldValueInvalid")])
        if grace is not None and (not isinstance(grace, int) or grace < 0):
            if isinstance(grace, int):
                grace = 1  # upstream turns a negative grace period into the shortest real one
            else:
                raise errors.bad_request("gracePeriodSeconds must be an integer")
        preconditions = data.get("preconditions") or {}
        dry = req.dry_run(request) or "All" in (data.get("dryRun") or [])
        return DeleteOptions(dry_run=dry, grace_period_seconds=grace, propagation_policy=policy,
                             orphan_dependents=orphan, precondition_uid=preconditions.get("uid"),
                             precondition_resource_version=preconditions.get("resourceVersion"),
                             user=request.get("user"))

    async def delete(self, request: web.Request, target: req.Target) -> web.Response:
        info = target.info
        opts = await self._delete_options(request)
        obj, deleted = await self.registry.delete(info, target.namespace, target.name, opts)
        status = 202 if not deleted and opts.orphan_dependents is False else 200
        if deleted and not self.registry.strategy(info).return_deleted_object:
            return json_response(success_status(info, obj), status)
        return self._render(request, info, obj, status)

    async def delete_collection(self, request: web.Request, target: req.Target) -> web.Response:
        info = target.info
        opts = await self._delete_options(request)
        items, _ = await self._list_from_cache(request, target, "")
        deleted = []
        for obj in items:
            meta = obj["metadata"]
            try:
                result, _ = await self.registry.delete(info, meta.get("namespace", ""), meta["name"], opts)
            except errors.StatusError as err:
                if err.code == 404:
                    continue
                raise
            deleted.append(result)
        body = {"kind": info.list_kind, "apiVersion": info.group_version,
                "metadata": {"resourceVersion": str(self.registry.cache.revision)}, "items": deleted}
        return json_response(body)

    # --- list --------------------------------------------------------------------------
    def _filter(self, request: web.Request, info: ResourceInfo, name: str = "") -> Callable[[Obj], bool]:
        strategy = self.registry.strategy(info)
        try:
            labels = LabelSelector.parse(request.query.get("labelSelector", ""))
            fields = FieldSelector.parse(request.query.get("fieldSelector", ""))
            getters = strategy.field_getters()
            fields.check_supported(set(getters))
        except SelectorError as err:
            raise errors.bad_request(str(err)) from None
        label_all = labels.empty
        field_all = not fields.requirements

        def matches(obj: Obj) -> bool:
            meta = obj.get("metadata", {})
            if name and meta.get("name") != name:
                return False
            if not label_all and not labels.matches(meta.get("labels") or {}):
                return False
            return field_all or fields.matches(getters, from_storage(info, obj))
        return matches

    def key_prefix(self, target: req.Target) -> str:
        prefix = target.info.storage_prefix
        if target.info.namespaced and target.namespace:
            prefix += target.namespace + "/"
        return prefix

    async def _list_from_cache(self, request: web.Request, target: req.Target,
                               resource_version: str) -> tuple[list[Obj], int]:
        if resource_version == "":
            await self.registry.fresh()
        elif resource_version != "0":
            await self.registry._wait_not_older_than(resource_version)
        matches = self._filter(request, target.info)
        cache = self.registry.cache.resource(target.info.storage_prefix)
        items = [o for o in cache.items(self.key_prefix(target)) if matches(o)]
        return items, self.registry.cache.revision

    async def _list_from_storage(self, request: web.Request, target: req.Target, revision: int,
                                 start_after: str, limit: int) -> tuple[list[Obj], int, str, int | None]:
        """A page read from storage at a pinned revision (limit/continue and exact reads), with its continue
        token and, when one is given and no selector filters items, the number of items after the page."""
        matches = self._filter(request, target.info)
        prefix = self.key_prefix(target)
        items: list[Obj] = []
        last_key = start_after
        more = False
        while True:
            want = limit - len(items) if limit else 0
            batch = max(want, 100) if want else 0
            with _revision_errors():
                result = await self.registry.storage.list(prefix, revision, last_key, batch)
            revision = result.revision
            stopped_early = False
            for index, kv in enumerate(result.items):
                last_key = kv.key
                obj = self.registry.cache.decode(kv)
                if matches(obj):
                    items.append(obj)
                if limit and len(items) >= limit:
                    stopped_early = index < len(result.items) - 1 or result.more
                    break
            if limit and len(items) >= limit:
                more = stopped_early
                break
            if not result.more:
                break
        if not more:
            return items, revision, "", None
        remaining = None
        if _selects_everything(request):
            # upstream's remainingItemCount: what a list from the continue key would return, at this revision
            with _revision_errors():
                remaining = await self.registry.storage.count(prefix, revision, last_key)
        return items, revision, _continue_token(revision, last_key), remaining

    async def list(self, request: web.Request, target: req.Target) -> web.Response:
        info = target.info
        computed = self.computed.get((info.group, info.plural))
        if computed is not None:
            matches = self._filter(request, info)
            return self._list_response(request, info, {}, [o for o in await computed.list() if matches(o)])
        accept = req.parse_accept(request)
        rv = request.query.get("resourceVersion", "")
        rv_match = request.query.get("resourceVersionMatch", "")
        token = request.query.get("continue", "")
        _validate_list_options(rv, rv_match, token, "sendInitialEvents" in request.query)
        limit = max(req.int_param(request, "limit") or 0, 0)  # upstream pages only for a positive limit
        cont, remaining = "", None
        cached = False  # objects straight from the watch cache (their JSON is reusable)
        if token:
            if rv not in ("", "0"):
                raise errors.bad_request("specifying resource version is not allowed when using continue")
            revision, start = _parse_continue(token)
            try:
                items, revision, cont, remaining = await self._list_from_storage(request, target, revision, start,
                                                                                 limit)
            except errors.StatusError as err:
                if err.code == 410:
                    raise errors.gone("The provided continue parameter is too old to display a consistent list "
                                      "result. You can start a new list without the continue parameter, or use "
                                      "the continue token in this response to retrieve the remainder of the "
                                      "results.") from None
                raise
        elif rv_match == "Exact":
            revision = parse_resource_version(rv)
            items, revision, cont, remaining = await self._list_from_storage(request, target, revision, "", limit)
        elif limit and rv != "0":
            revision = 0
            if rv:
                await self.registry._wait_not_older_than(rv)
            items, revision, cont, remaining = await self._list_from_storage(request, target, revision, "", limit)
        else:
            items, revision = await self._list_from_cache(request, target, rv)
            cached = True
        list_meta: Obj = {"resourceVersion": str(revision)}
        if cont:
            list_meta["continue"] = cont
        if remaining is not None:
            list_meta["remainingItemCount"] = remaining
        if cached and not accept.as_kind and not accept.pretty and info.stored_version == info.group_version:
            return self._encoded_list(info, list_meta, items)
        return self._list_response(request, info, list_meta, [from_storage(info, o) for o in items])

    @staticmethod
    def _list_response(request: web.Request, info: ResourceInfo, list_meta: Obj, served: list[Obj]) -> web.Response:
        """A list of served objects as the client asked: a Table, partial metadata, or the kind's list."""
        accept = req.parse_accept(request)
        if accept.as_kind == "Table":
            body = to_table(info, served, list_meta=list_meta, include_object=accept.include_object)
        elif accept.as_kind in ("PartialObjectMetadataList", "PartialObjectMetadata"):
            body = {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
                    "items": [_partial_metadata(o) for o in served]}
        else:
            body = {"kind": info.list_kind, "apiVersion": info.group_version, "metadata": list_meta,
                    "items": served}
        return json_response(body, pretty=accept.pretty)

    def _encoded_list(self, info: ResourceInfo, list_meta: Obj, items: list[Obj]) -> web.Response:
        """A list of objects served as stored, from the cache's per-object JSON (encoded once per change)."""
        cache = self.registry.cache.resource(info.storage_prefix)
        head = encode({"kind": info.list_kind, "apiVersion": info.group_version, "metadata": list_meta})
        body = b"".join((head[:-1], b',"items":[', b",".join(map(cache.encoded, items)), b"]}"))
        return web.Response(body=body, content_type=req.JSON)

    # --- watch -------------------------------------------------------------------------
    async def watch(self, request: web.Request, target: req.Target) -> web.StreamResponse:
        info = target.info
        accept = req.parse_accept(request)
        rv = request.query.get("resourceVersion", "")
        rv_match = request.query.get("resourceVersionMatch", "")
        bookmarks = req.bool_param(request, "allowWatchBookmarks")
        send_initial_raw = request.query.get("sendInitialEvents")
        send_initial = None if send_initial_raw is None else send_initial_raw.lower() in ("true", "1")
        if send_initial is not None:
            if rv_match != "NotOlderThan":
                raise errors.invalid("ListOptions", "", "", [errors.Cause(
                    "resourceVersionMatch", "Unsupported value: \"" + rv_match + "\": supported values: "
                    "\"NotOlderThan\"", "FieldValueNotSupported")])
            if send_initial and not bookmarks:
                raise errors.invalid("ListOptions", "", "", [errors.Cause(
                    "allowWatchBookmarks", "Forbidden: allowWatchBookmarks must be set to true when "
                    "sendInitialEvents is true", "FieldValueForbidden")])
        elif rv_match:
            raise errors.invalid("ListOptions", "", "", [errors.Cause(
                "resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden for watch unless "
                "sendInitialEvents is provided", "FieldValueForbidden")])
        timeout = req.int_param(request, "timeoutSeconds") or DEFAULT_WATCH_TIMEOUT
        matches = self._filter(request, info, target.name)
        cache = self.registry.cache.resource(info.storage_prefix)
        key_prefix = self.key_prefix(target)

        initial = send_initial if send_initial is not None else rv in ("", "0")
        if rv == "" and (initial or send_initial is False):
            await self.registry.fresh()
        elif rv not in ("", "0"):
            await self.registry._wait_not_older_than(rv)

        response = web.StreamResponse(headers={"Content-Type": req.JSON, "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = _WatchStream(response, info, accept, bookmarks)

        # Snapshot and register with no await in between, so no event falls in a gap.
        watcher = CacheWatcher(key_prefix, matches)
        backlog: list[bytes] = []
        try:
            if initial:
                # Encoded now, while these are still the cache's current objects.
                backlog = [stream.encode("ADDED", o, cache.encoded(o) if stream.as_stored else None)
                           for o in cache.items(key_prefix) if matches(o)]
            elif rv not in ("", "0"):
                for event in cache.events_since(parse_resource_version(rv), key_prefix):
                    translated = watcher._translate(event)
                    if translated is not None:
                        backlog.append(stream.encode_item(translated))
        except TooOldError as err:
            await stream.send("ERROR", errors.gone(str(err)).to_status())
            return await stream.finish()
        start_revision = self.registry.cache.revision
        cache.watchers.add(watcher)
        try:
            for start in range(0, len(backlog), 500):
                await stream.write(b"".join(backlog[start:start + 500]))
            if send_initial:
                await stream.bookmark(start_revision, initial_end=True)
            await self._pump(stream, watcher, timeout, request)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            cache.watchers.discard(watcher)
        return await stream.finish()

    async def _pump(self, stream: _WatchStream, watcher: CacheWatcher, timeout: float,
                    request: web.Request) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_sent = loop.time()
        # As upstream's cacher, a bookmark also goes out 2s before the deadline (when that is still ahead), so
        # that the client resumes from the newest revision even if its resource has not changed for long.
        pretimeout: float | None = deadline - PRETIMEOUT_BOOKMARK
        if not stream.bookmarks or pretimeout <= last_sent:
            pretimeout = None
        while True:
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0:
                return
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            wait = min(_POLL, remaining) if pretimeout is None else max(0.001, min(_POLL, pretimeout - now))
            try:
                item = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                now = loop.time()
                due = pretimeout is not None and now >= pretimeout
                # A bookmark's revision covers every event queued so far: only with the queue drained.
                if stream.bookmarks and (due or now - last_sent >= BOOKMARK_INTERVAL) and watcher.queue.empty():
                    await stream.bookmark(self.registry.cache.revision)
                    last_sent = now
                    if due:
                        pretimeout = None
                continue
            if item is None:  # the cache closed this watcher (it fell too far behind)
                await stream.send("ERROR", errors.gone("the watch fell behind; list again").to_status())
                return
            # Take what is already queued too, and write it in one go.
            batch = [stream.encode_item(item)]
            while not watcher.queue.empty() and len(batch) < 500:
                item = watcher.queue.get_nowait()
                if item is None:
                    await stream.write(b"".join(batch))
                    return
                batch.append(stream.encode_item(item))
            await stream.write(b"".join(batch))
            last_sent = loop.time()

    # --- subresources ------------------------------------------------------------------
    async def _subresource(self, request: web.Request, target: req.Target) -> web.StreamResponse:
        from pocketkube.apiserver import subresources
        from pocketkube.apiserver.crd import scale

        if target.info.custom is not None and target.subresource == "scale":
            return await scale.handle(self, request, target)
        return await subresources.handle(self, request, target)


class _WatchStream:
    """Writes watch events as newline-delimited JSON, converting objects as the client asked."""

    def __init__(self, response: web.StreamResponse, info: ResourceInfo, accept: req.Accept,
                 bookmarks: bool) -> None:
        self.response = response
        self.info = info
        self.accept = accept
        self.bookmarks = bookmarks
        self._sent_columns = False

    def _convert(self, obj: Obj) -> Obj:
        served = from_storage(self.info, obj)
        if self.accept.as_kind == "Table":
            table = to_table(self.info, [served], list_meta={}, include_object=self.accept.include_object)
            if self._sent_columns:
                table["columnDefinitions"] = None
            else:
                self._sent_columns = True
            return table
        if self.accept.as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return _partial_metadata(served)
        return served

    @property
    def as_stored(self) -> bool:
        """Objects go out exactly as the cache holds them, so their shared JSON can be reused."""
        return not self.accept.as_kind and self.info.stored_version == self.info.group_version

    def encode(self, event_type: str, obj: Obj, encoded: bytes | None = None) -> bytes:
        if encoded is None:
            encoded = orjson.dumps(obj if event_type == "ERROR" else self._convert(obj))
        return b"".join((b'{"type":"', event_type.encode(), b'","object":', encoded, b"}\n"))

    def encode_item(self, item: WatchItem) -> bytes:
        event_type, obj, event = item
        return self.encode(event_type, obj, event.json() if event is not None and self.as_stored else None)

    async def write(self, data: bytes) -> None:
        if data:
            await self.response.write(data)

    async def send(self, event_type: str, obj: Obj) -> None:
        await self.write(self.encode(event_type, obj))

    async def bookmark(self, revision: int, initial_end: bool = False) -> None:
        meta: Obj = {"resourceVersion": str(revision)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": self.info.kind, "apiVersion": self.info.group_version, "metadata": meta}
        if self.accept.as_kind == "Table":
            obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(revision)},
                   "columnDefinitions": None if self._sent_columns else column_definitions(self.info),
                   "rows": []}
            if initial_end:
                obj["metadata"]["annotations"] = meta["annotations"]
            self._sent_columns = True
        await self.response.write(orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n")

    async def finish(self) -> web.StreamResponse:
        try:
            await self.response.write_eof()
        except ConnectionResetError:
            pass
        return self.response
