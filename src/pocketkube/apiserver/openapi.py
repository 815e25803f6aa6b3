"""The OpenAPI documents kube-apiserver serves: ``/openapi/v2`` (swagger 2.0) and ``/openapi/v3`` (3.0).

The paths, operations and parameters are generated from the resource catalogue the way the apiserver's
endpoint installer does it (kube-openapi builder): one operation per verb with ``x-kubernetes-action``
and ``x-kubernetes-group-version-kind``; the schemas are the official definitions (``schemas.py``).
Clients depend on this structure: ``kubectl explain`` finds a kind's schema by its GVK extension,
``kubectl apply`` detects server-side field validation by looking for the ``fieldValidation`` query
parameter on the kind's PATCH operation, and builds strategic merge patches from the
``x-kubernetes-patch-*`` extensions.

Documents are built once per catalogue content and cached as encoded JSON.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson

from pocketkube import KUBERNETES_VERSION
from pocketkube.api.kinds import SUBRESOURCE_VERBS, ResourceCatalog, ResourceInfo
from pocketkube.apiserver import schemas
from pocketkube.apiserver.crd import openapi as crd_openapi
from pocketkube.apiserver.openapiproto import encode_document

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
STATUS = _META + "Status"
DELETE_OPTIONS = _META + "DeleteOptions"
WATCH_EVENT = _META + "WatchEvent"
PATCH = _META + "Patch"
API_RESOURCE_LIST = _META + "APIResourceList"
API_GROUP = _META + "APIGroup"
API_GROUP_LIST = _META + "APIGroupList"
API_VERSIONS = _META + "APIVersions"

_MEDIA = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf", "application/cbor")
_STREAM_MEDIA = ("application/json;stream=watch", "application/vnd.kubernetes.protobuf;stream=watch",
                 "application/cbor-seq")
_PATCH_MEDIA = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml",
                "application/apply-patch+cbor")
# Custom resources take no strategic merge patch (kubectl reads this to fall back to a merge patch).
_CUSTOM_PATCH_MEDIA = tuple(m for m in _PATCH_MEDIA if m != "application/strategic-merge-patch+json")

# Query parameters: name -> (type, description), with upstream's wording.
_QUERY: dict[str, tuple[str, str]] = {
    "pretty": ("string", "If 'true', then the output is pretty printed. Defaults to 'false' unless the "
               "user-agent indicates a browser or command-line HTTP tool (curl and wget)."),
    "dryRun": ("string", "When present, indicates that modifications should not be persisted. An invalid or "
               "unrecognized dryRun directive will result in an error response and no further processing of "
               "the request. Valid values are: - All: all dry run stages will be processed"),
    "fieldManager": ("string", "fieldManager is a name associated with the actor or entity that is making these "
                     "changes. The value must be less than or 128 characters long, and only contain printable "
                     "characters, as defined by https://golang.org/pkg/unicode/#IsPrint."),
    "fieldValidation": (
        "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) "
        "containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown "
        "fields that are silently dropped from the object, and will ignore all but the last duplicate field "
        "that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a "
        "warning via the standard warning response header for each unknown field that is dropped from the "
        "object, and for each duplicate field that is encountered. The request will still succeed if there "
        "are no other errors, and will only persist the last of any duplicate fields. This is the default in "
        "v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be "
        "dropped from the object, or if any duplicate fields are present. The error returned from the server "
        "will contain all unknown and duplicate fields encountered."),
    "force": ("boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting "
              "fields owned by other people. Force flag must be unset for non-apply patch requests."),
    "gracePeriodSeconds": (
        "integer",
        "The duration in seconds before the object should be deleted. Value must be non-negative integer. The "
        "value zero indicates delete immediately. If this value is nil, the default grace period for the "
        "specified type will be used. Defaults to a per object value if not specified. zero means delete "
        "immediately."),
    "ignoreStoreReadErrorWithClusterBreakingPotential": (
        "boolean",
        "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow "
        "fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from "
        "the underlying storage successfully because of a) its data can not be transformed e.g. decryption "
        "failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer "
        "constraints, skips precondition checks, and removes the object from the storage. WARNING: This may "
        "potentially break the cluster if the workload associated with the resource being unsafe-deleted "
        "relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is "
        "false, and the user must opt in to enable it"),
    "orphanDependents": (
        "boolean",
        "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the "
        "dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from "
        "the object's finalizers list. Either this field or PropagationPolicy may be set, but not both."),
    "propagationPolicy": (
        "string",
        "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be "
        "set, but not both. The default policy is decided by the existing finalizer set in the "
        "metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - "
        "orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the "
        "background; 'Foreground' - a cascading policy that deletes all dependents in the foreground."),
    "allowWatchBookmarks": (
        "boolean",
        "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement "
        "bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not "
        "assume bookmarks are returned at any specific interval, nor may they assume the server will send any "
        "BOOKMARK event during a session. If this is not a watch, this field is ignored."),
    "continue": (
        "string",
        "The continue option should be set when retrieving more results from the server. Since this value is "
        "server defined, clients may only use the continue value from a previous query result with identical "
        "query parameters (except for the value of continue) and the server may reject a continue value it "
        "does not recognize. If the specified continue value is no longer valid whether due to expiration "
        "(generally five to fifteen minutes) or a configuration change on the server, the server will respond "
        "with a 410 ResourceExpired error together with a continue token. If the client needs a consistent "
        "list, it must restart their list without the continue field. Otherwise, the client may send another "
        "list request with the token received with the 410 error, the server will respond with a list "
        "starting from the next key, but from the latest snapshot, which is inconsistent from the previous "
        "list results - objects that are created, modified, or deleted after the first list request will be "
        "included in the response, as long as their keys are after the \"next key\".\n\nThis field is not "
        "supported when watch is true. Clients may start a watch from the last resourceVersion value returned "
        "by the server and not miss any modifications."),
    "fieldSelector": ("string", "A selector to restrict the list of returned objects by their fields. Defaults "
                      "to everything."),
    "labelSelector": ("string", "A selector to restrict the list of returned objects by their labels. Defaults "
                      "to everything."),
    "limit": (
        "integer",
        "limit is a maximum number of responses to return for a list call. If more items exist, the server "
        "will set the `continue` field on the list metadata to a value that can be used with the same initial "
        "query to retrieve the next set of results. Setting a limit may return fewer than the requested amount "
        "of items (up to zero items) in the event all requested objects are filtered out and clients should "
        "only use the presence of the continue field to determine whether more results are available. Servers "
        "may choose not to support the limit argument and will return all of the available results. If limit "
        "is specified and the continue field is empty, clients may assume that no more results are available. "
        "This field is not supported if watch is true.\n\nThe server guarantees that the objects returned when "
        "using continue will be identical to issuing a single list call without a limit - that is, no objects "
        "created, modified, or deleted after the first request is issued will be included in any subsequent "
        "continued requests. This is sometimes referred to as a consistent snapshot, and ensures that a client "
        "that is using limit to receive smaller chunks of a very large result can ensure they see all possible "
        "objects. If objects are updated during a chunked list the version of the object that was present at "
        "the time the first list result was calculated is returned."),
    "resourceVersion": (
        "string",
        "resourceVersion sets a constraint on what resource versions a request may be served from. See "
        "https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\n"
        "Defaults to unset"),
    "resourceVersionMatch": (
        "string",
        "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly "
        "recommended that resourceVersionMatch be set for list calls where resourceVersion is set See "
        "https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\n"
        "Defaults to unset"),
    "sendInitialEvents": (
        "boolean",
        "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will "
        "begin with synthetic events to produce the current state of objects in the collection. Once all such "
        "events have been sent, a synthetic \"Bookmark\" event  will be sent. The bookmark will report the "
        "ResourceVersion (RV) corresponding to the set of objects, and be marked with "
        "`\"k8s.io/initial-events-end\": \"true\"` annotation. Afterwards, the watch stream will proceed as "
        "usual, sending watch events corresponding to changes (subsequent to the RV) to objects watched.\n\n"
        "When `sendInitialEvents` option is set, we require `resourceVersionMatch` option to also be set. The "
        "semantic of the watch request is as following: - `resourceVersionMatch` = NotOlderThan\n  is "
        "interpreted as \"data at least as new as the provided `resourceVersion`\"\n  and the bookmark event "
        "is send when the state is synced\n  to a `resourceVersion` at least as fresh as the one provided by "
        "the ListOptions.\n  If `resourceVersion` is unset, this is interpreted as \"consistent read\" and "
        "the\n  bookmark event is send when the state is synced at least to the moment\n  when request started "
        "being processed.\n- `resourceVersionMatch` set to any other value or unset\n  Invalid error is "
        "returned.\n\nDefaults to true if `resourceVersion=\"\"` or `resourceVersion=\"0\"` (for backward "
        "compatibility reasons) and to false otherwise."),
    "timeoutSeconds": ("integer", "Timeout for the list/watch call. This limits the duration of the call, "
                       "regardless of any activity or inactivity."),
    "watch": ("boolean", "Watch for changes to the described resources and return them as a stream of add, "
              "update, and remove notifications. Specify resourceVersion."),
}
_PATCH_FIELD_MANAGER = (
    _QUERY["fieldManager"][1] + " This field is required for apply requests (application/apply-patch) but "
    "optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch).")
_NAMESPACE_DESCRIPTION = "object name and auth scope, such as for teams and projects"

_LIST = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion",
         "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch")
_WRITE = ("dryRun", "fieldManager", "fieldValidation")
_PATCH_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force")
_DELETE = ("dryRun", "gracePeriodSeconds", "ignoreStoreReadErrorWithClusterBreakingPotential",
           "orphanDependents", "propagationPolicy")
_DELETE_COLLECTION = tuple(sorted(set(_DELETE + _LIST) - {"allowWatchBookmarks", "watch"}))

# Kinds whose registry returns the deleted object rather than a Status (ReturnDeletedObject).
_RETURNS_DELETED = frozenset({("", "Pod"), ("", "Service"), ("", "PersistentVolume"),
                              ("", "PersistentVolumeClaim"), ("", "ServiceAccount")})

# Subresources with their own kind: subresource -> (definition, group, version, kind).
_SUBRESOURCE_KINDS = {
    "scale": ("io.k8s.api.autoscaling.v1.Scale", "autoscaling", "v1", "Scale"),
    "binding": ("io.k8s.api.core.v1.Binding", "", "v1", "Binding"),
    "eviction": ("io.k8s.api.policy.v1.Eviction", "policy", "v1", "Eviction"),
}
# Subresources served with the parent's kind; finalize is PUT only.
_SUBRESOURCE_VERBS = {**SUBRESOURCE_VERBS, "finalize": ("update",)}


# ---------------------------------------------------------------------------------------------------
# A dialect-neutral model of the paths


@dataclass
class _Param:
    name: str
    location: str  # "query" | "path"
    type: str
    description: str
    required: bool = False


@dataclass
class _Op:
    method: str
    operation_id: str
    description: str
    tag: str
    responses: list[tuple[str, str | None]]  # (code, definition or None)
    params: list[_Param] = field(default_factory=list)
    body: str | None = None  # definition of the request body
    body_required: bool = True
    patch: bool = False
    stream: bool = False  # list/watch responses also come as streams
    action: str | None = None
    gvk: dict[str, str] | None = None
    custom: bool = False  # an operation on a custom resource

    @property
    def consumes(self) -> tuple[str, ...]:
        if not self.patch:
            return ("*/*",)
        return _CUSTOM_PATCH_MEDIA if self.custom else _PATCH_MEDIA


@dataclass
class _Path:
    path: str
    params: list[_Param]
    ops: list[_Op]


_DESCRIPTIONS = {"200": "OK", "201": "Created", "202": "Accepted", "401": "Unauthorized"}


def _query(names: tuple[str, ...] | list[str], patch: bool = False) -> list[_Param]:
    out = []
    for name in sorted(names):
        typ, desc = _QUERY[name]
        if patch and name == "fieldManager":
            desc = _PATCH_FIELD_MANAGER
        out.append(_Param(name, "query", typ, desc))
    return out


def _path_params(name_of: str | None, namespaced: bool, extra: tuple[str, ...] = ()) -> list[_Param]:
    params = _query(("pretty",) + extra)
    if name_of:
        params.append(_Param("name", "path", "string", f"name of the {name_of}", True))
    if namespaced:
        params.append(_Param("namespace", "path", "string", _NAMESPACE_DESCRIPTION, True))
    return sorted(params, key=lambda p: p.name)


def _camel_group(group: str) -> str:
    if not group:
        return "Core"
    return "".join(p[:1].upper() + p[1:] for p in group.removesuffix(".k8s.io").split("."))


def _tag_group(group: str) -> str:
    camel = _camel_group(group)
    return camel[:1].lower() + camel[1:]


def group_version_path(group: str, version: str) -> str:
    """``api/v1`` or ``apis/<group>/<version>``: the key of a group-version in the v3 index."""
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _resource_paths(info: ResourceInfo) -> list[_Path]:
    gv = _camel_group(info.group) + info.version[:1].upper() + info.version[1:]
    tag = f"{_tag_group(info.group)}_{info.version}"
    base = "/" + group_version_path(info.group, info.version)
    kind, plural, namespaced = info.kind, info.plural, info.namespaced
    gvk = {"group": info.group, "kind": kind, "version": info.version}
    definition, list_definition = info.definition, info.definition + "List"
    scope = "Namespaced" if namespaced else ""
    verbs = set(info.verbs)
    collection = f"{base}/namespaces/{{namespace}}/{plural}" if namespaced else f"{base}/{plural}"
    item = f"{collection}/{{name}}"
    deleted = definition if (info.group, kind) in _RETURNS_DELETED else STATUS

    def op(method: str, verb: str, description: str, action: str, responses: list[tuple[str, str | None]],
           params: list[_Param] | None = None, suffix: str = "", **kw: Any) -> _Op:
        return _Op(method, f"{verb}{gv}{suffix or scope + kind}", description, tag, responses + [("401", None)],
                   params or [], action=action, gvk=kw.pop("gvk", gvk), custom=info.custom is not None, **kw)

    paths: list[_Path] = []
    if namespaced and "list" in verbs:
        paths.append(_Path(f"{base}/{plural}", _path_params(None, False, _LIST), [
            op("get", "list", f"list or watch objects of kind {kind}", "list", [("200", list_definition)],
               suffix=f"{kind}ForAllNamespaces", stream=True)]))
    ops = []
    if "list" in verbs:
        ops.append(op("get", "list", f"list or watch objects of kind {kind}", "list", [("200", list_definition)],
                      _query(_LIST), stream=True))
    if "create" in verbs:
        ops.append(op("post", "create", f"create a {kind}", "post",
                      [("200", definition), ("201", definition), ("202", definition)], _query(_WRITE),
                      body=definition))
    if "deletecollection" in verbs:
        ops.append(op("delete", "delete", f"delete collection of {kind}", "deletecollection", [("200", STATUS)],
                      _query(_DELETE_COLLECTION), suffix=f"Collection{scope}{kind}", body=DELETE_OPTIONS,
                      body_required=False))
    if ops:
        paths.append(_Path(collection, _path_params(None, namespaced), ops))
    ops = []
    if "get" in verbs:
        ops.append(op("get", "read", f"read the specified {kind}", "get", [("200", definition)]))
    if "update" in verbs:
        ops.append(op("put", "replace", f"replace the specified {kind}", "put",
                      [("200", definition), ("201", definition)], _query(_WRITE), body=definition))
    if "patch" in verbs:
        ops.append(op("patch", "patch", f"partially update the specified {kind}", "patch",
                      [("200", definition), ("201", definition)], _query(_PATCH_PARAMS, patch=True),
                      body=PATCH, patch=True))
    if "delete" in verbs:
        ops.append(op("delete", "delete", f"delete a {kind}", "delete", [("200", deleted), ("202", deleted)],
                      _query(_DELETE), body=DELETE_OPTIONS, body_required=False))
    if ops:
        paths.append(_Path(item, _path_params(kind, namespaced), ops))

    for sub in info.subresources:
        sub_verbs = _SUBRESOURCE_VERBS.get(sub)
        if sub_verbs is None:
            continue  # connect-style subresources (log, exec, ...) are not described here
        sub_def, g, v, k = _SUBRESOURCE_KINDS.get(sub, (definition, info.group, info.version, kind))
        sub_gvk = {"group": g, "kind": k, "version": v}
        suffix = scope + kind + sub[:1].upper() + sub[1:]
        ops = []
        if "get" in sub_verbs:
            ops.append(op("get", "read", f"read {sub} of the specified {kind}", "get", [("200", sub_def)],
                          suffix=suffix, gvk=sub_gvk))
        if "create" in sub_verbs:
            ops.append(op("post", "create", f"create {sub} of a {kind}", "post",
                          [("200", sub_def), ("201", sub_def), ("202", sub_def)], _query(_WRITE),
                          suffix=suffix, body=sub_def, gvk=sub_gvk))
        if "update" in sub_verbs:
            ops.append(op("put", "replace", f"replace {sub} of the specified {kind}", "put",
                          [("200", sub_def), ("201", sub_def)], _query(_WRITE), suffix=suffix, body=sub_def,
                          gvk=sub_gvk))
        if "patch" in sub_verbs:
            ops.append(op("patch", "patch", f"partially update {sub} of the specified {kind}", "patch",
                          [("200", sub_def), ("201", sub_def)], _query(_PATCH_PARAMS, patch=True),
                          suffix=suffix, body=PATCH, patch=True, gvk=sub_gvk))
        # binding and eviction name the object they create; upstream describes the path name so.
        name_of = k if sub in ("binding", "eviction") else kind
        paths.append(_Path(f"{item}/{sub}", _path_params(name_of, namespaced), ops))

    if "watch" in verbs:
        watch_base = f"{base}/watch"
        if namespaced:
            paths.append(_Path(f"{watch_base}/{plural}", _path_params(None, False, _LIST), [
                op("get", "watch", f"watch individual changes to a list of {kind}. deprecated: use the 'watch' "
                   "parameter with a list operation instead.", "watchlist", [("200", WATCH_EVENT)],
                   suffix=f"{kind}ListForAllNamespaces", stream=True)]))
        watch_collection = (f"{watch_base}/namespaces/{{namespace}}/{plural}" if namespaced
                            else f"{watch_base}/{plural}")
        paths.append(_Path(watch_collection, _path_params(None, namespaced, _LIST), [
            op("get", "watch", f"watch individual changes to a list of {kind}. deprecated: use the 'watch' "
               "parameter with a list operation instead.", "watchlist", [("200", WATCH_EVENT)],
               suffix=f"{scope}{kind}List", stream=True)]))
        paths.append(_Path(f"{watch_collection}/{{name}}", _path_params(kind, namespaced, _LIST), [
            op("get", "watch", f"watch changes to an object of kind {kind}. deprecated: use the 'watch' "
               "parameter with a list operation instead, filtered to a single item with the 'fieldSelector' "
               "parameter.", "watch", [("200", WATCH_EVENT)], stream=True)]))
    return paths


def _discovery_path(path: str, operation_id: str, tag: str, definition: str) -> _Path:
    return _Path(path, [], [_Op("get", operation_id, _DISCOVERY_DESCRIPTIONS[definition], tag,
                                [("200", definition), ("401", None)])])


_DISCOVERY_DESCRIPTIONS = {
    API_RESOURCE_LIST: "get available resources",
    API_GROUP: "get information of a group",
    API_GROUP_LIST: "get available API versions",
    API_VERSIONS: "get available API versions",
}


def _group_version_paths(catalog_resources: list[ResourceInfo], group: str, version: str) -> list[_Path]:
    gv = _camel_group(group) + version[:1].upper() + version[1:]
    base = "/" + group_version_path(group, version)
    paths = [_discovery_path(f"{base}/", f"get{gv}APIResources", f"{_tag_group(group)}_{version}",
                             API_RESOURCE_LIST)]
    for info in sorted(catalog_resources, key=lambda i: i.plural):
        paths.extend(_resource_paths(info))
    return paths


def _group_paths(group: str) -> list[_Path]:
    if not group:
        return [_discovery_path("/api/", "getCoreAPIVersions", "core", API_VERSIONS)]
    return [_discovery_path(f"/apis/{group}/", f"get{_camel_group(group)}APIGroup", _tag_group(group),
                            API_GROUP)]


def _root_paths() -> list[_Path]:
    return [_discovery_path("/apis/", "getAPIVersions", "apis", API_GROUP_LIST)]


# ---------------------------------------------------------------------------------------------------
# Rendering


def _refs_of(paths: list[_Path]) -> set[str]:
    refs: set[str] = set()
    for p in paths:
        for o in p.ops:
            refs.update(d for _, d in o.responses if d)
            if o.body:
                refs.add(o.body)
    return refs


def _v3_param(p: _Param) -> dict[str, Any]:
    out: dict[str, Any] = {"description": p.description, "in": p.location, "name": p.name}
    if p.required:
        out["required"] = True
    out["schema"] = {"type": p.type, "uniqueItems": True}
    return out


def _v3_content(definition: str, media: tuple[str, ...]) -> dict[str, Any]:
    ref = {"schema": {"$ref": schemas.V3_REF + definition}}
    return {m: ref for m in media}


def _v3_op(o: _Op) -> dict[str, Any]:
    out: dict[str, Any] = {"description": o.description, "operationId": o.operation_id}
    if o.params:
        out["parameters"] = [_v3_param(p) for p in o.params]
    if o.body:
        body: dict[str, Any] = {"content": _v3_content(o.body, o.consumes)}
        if o.body_required:
            body["required"] = True
        out["requestBody"] = body
    media = _MEDIA + _STREAM_MEDIA if o.stream else _MEDIA
    responses: dict[str, Any] = {}
    for code, definition in o.responses:
        response: dict[str, Any] = {"description": _DESCRIPTIONS[code]}
        if definition:
            response["content"] = _v3_content(definition, media)
        responses[code] = response
    out["responses"] = responses
    out["tags"] = [o.tag]
    if o.action:
        out["x-kubernetes-action"] = o.action
        out["x-kubernetes-group-version-kind"] = o.gvk
    return out


def _definitions(paths: list[_Path], dialect: str, custom: list[ResourceInfo]) -> dict[str, Any]:
    """The definitions the paths refer to: official ones, and those built from CRDs."""
    refs = _refs_of(paths)
    built = {name: s for name, s in crd_openapi.definitions(custom, dialect).items() if name in refs}
    official = schemas.ref_closure((refs - built.keys()) | crd_openapi.referenced_names(built))
    convert = schemas.v2_definition if dialect == "v2" else schemas.v3_schema
    return {**{name: convert(name) for name in official}, **built}


def _v3_document(paths: list[_Path], custom: list[ResourceInfo]) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    for p in paths:
        item: dict[str, Any] = {o.method: _v3_op(o) for o in p.ops}
        if p.params:
            item["parameters"] = [_v3_param(x) for x in p.params]
        rendered[p.path] = item
    return {
        "components": {
            "schemas": _definitions(paths, "v3", custom),
            "securitySchemes": {"BearerToken": {"description": "Bearer Token authentication", "in": "header",
                                                "name": "authorization", "type": "apiKey"}},
        },
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "openapi": "3.0.0",
        "paths": rendered,
    }


def _v2_param(p: _Param) -> dict[str, Any]:
    out: dict[str, Any] = {"uniqueItems": True, "type": p.type, "description": p.description, "name": p.name,
                           "in": p.location}
    if p.required:
        out["required"] = True
    return out


class _SharedParameters:
    """Upstream's v2 builder hoists parameters into the top-level ``parameters`` table, named
    ``<name>-<hash>``; operations refer to them with ``#/parameters/...``."""

    def __init__(self) -> None:
        self.table: dict[str, dict[str, Any]] = {}
        self._names: dict[bytes, str] = {}

    def ref(self, param: dict[str, Any]) -> dict[str, str]:
        key = orjson.dumps(param, option=orjson.OPT_SORT_KEYS)
        name = self._names.get(key)
        if name is None:
            digest = base64.urlsafe_b64encode(hashlib.sha256(key).digest()[:6]).decode()
            name = f"{param['name']}-{digest}"
            self._names[key] = name
            self.table[name] = param
        return {"$ref": "#/parameters/" + name}


def _v2_op(o: _Op, shared: _SharedParameters) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    if o.body:
        body: dict[str, Any] = {"name": "body", "in": "body", "schema": {"$ref": schemas.V2_REF + o.body}}
        if o.body_required:
            body["required"] = True
        params.append(shared.ref(body))
    params.extend(shared.ref(_v2_param(p)) for p in o.params)
    out: dict[str, Any] = {
        "description": o.description,
        "consumes": list(o.consumes),
        "produces": list(_MEDIA + _STREAM_MEDIA if o.stream else _MEDIA),
        "schemes": ["https"],
        "tags": [o.tag],
        "operationId": o.operation_id,
    }
    if params:
        out["parameters"] = params
    responses: dict[str, Any] = {}
    for code, definition in o.responses:
        response: dict[str, Any] = {"description": _DESCRIPTIONS[code]}
        if definition:
            response["schema"] = {"$ref": schemas.V2_REF + definition}
        responses[code] = response
    out["responses"] = responses
    if o.action:
        out["x-kubernetes-action"] = o.action
        out["x-kubernetes-group-version-kind"] = o.gvk
    return out


def _v2_document(paths: list[_Path], custom: list[ResourceInfo]) -> dict[str, Any]:
    shared = _SharedParameters()
    rendered: dict[str, Any] = {}
    for p in paths:
        item: dict[str, Any] = {o.method: _v2_op(o, shared) for o in p.ops}
        if p.params:
            item["parameters"] = [shared.ref(_v2_param(x)) for x in p.params]
        rendered[p.path] = item
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": rendered,
        "definitions": _definitions(paths, "v2", custom),
        "parameters": shared.table,
        "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "type": "apiKey",
                                                "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    }


def _encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def content_hash(document: bytes) -> str:
    """The hash upstream puts in ``serverRelativeURL`` and the ETag: uppercase hex SHA-512."""
    return hashlib.sha512(document).hexdigest().upper()


# ---------------------------------------------------------------------------------------------------
# Cached documents per catalogue content


class _Documents:
    def __init__(self, resources: list[ResourceInfo]) -> None:
        self.resources = resources
        self.custom = [info for info in resources if info.custom is not None]
        self._v2: bytes | None = None
        self._v2_protobuf: bytes | None = None
        self._v3: dict[str, bytes] | None = None
        self._lock = threading.Lock()

    def _by_group_version(self) -> dict[tuple[str, str], list[ResourceInfo]]:
        out: dict[tuple[str, str], list[ResourceInfo]] = {}
        for info in self.resources:
            out.setdefault((info.group, info.version), []).append(info)
        return out

    def _all_paths(self) -> dict[str, list[_Path]]:
        """v3 document key -> its paths (group-versions, groups, and the ``apis`` root)."""
        docs: dict[str, list[_Path]] = {"apis": _root_paths()}
        for (group, version), infos in sorted(self._by_group_version().items()):
            docs[group_version_path(group, version)] = _group_version_paths(infos, group, version)
            docs.setdefault("api" if not group else f"apis/{group}", _group_paths(group))
        return docs

    def v2(self) -> bytes:
        with self._lock:
            if self._v2 is None:
                paths = [p for ps in self._all_paths().values() for p in ps]
                self._v2 = _encode(_v2_document(sorted(paths, key=lambda p: p.path), self.custom))
            return self._v2

    def v2_protobuf(self) -> bytes:
        document = self.v2()
        with self._lock:
            if self._v2_protobuf is None:
                self._v2_protobuf = encode_document(orjson.loads(document))
            return self._v2_protobuf

    def v3(self) -> dict[str, bytes]:
        with self._lock:
            if self._v3 is None:
                self._v3 = {key: _encode(_v3_document(paths, self.custom))
                            for key, paths in self._all_paths().items()}
            return self._v3


_cache: dict[tuple[ResourceInfo, ...], _Documents] = {}
_cache_lock = threading.Lock()


def _documents(catalog: ResourceCatalog) -> _Documents:
    resources = catalog.all()
    key = tuple(resources)
    with _cache_lock:
        docs = _cache.get(key)
        if docs is None:
            _cache.clear()  # the catalogue changed (e.g. a CRD was added): the old documents are stale
            docs = _cache[key] = _Documents(resources)
        return docs


def openapi_v2(catalog: ResourceCatalog) -> bytes:
    """The JSON body of ``GET /openapi/v2`` (swagger 2.0)."""
    return _documents(catalog).v2()


def openapi_v2_protobuf(catalog: ResourceCatalog) -> bytes:
    """The protobuf body of ``GET /openapi/v2`` (gnostic's openapi.v2.Document)."""
    return _documents(catalog).v2_protobuf()


def openapi_v3_index(catalog: ResourceCatalog) -> dict[str, Any]:
    """The body of ``GET /openapi/v3``: every document's path with its content hash."""
    return {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={content_hash(doc)}"}
                      for key, doc in _documents(catalog).v3().items()}}


def openapi_v3_document(catalog: ResourceCatalog, path: str) -> bytes | None:
    """The JSON body of ``GET /openapi/v3/<path>`` (``api/v1``, ``apis/apps/v1``, ...); None if unknown."""
    return _documents(catalog).v3().get(path.strip("/"))
