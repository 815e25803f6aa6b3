"""The scale subresource of custom resources: an autoscaling/v1 Scale read from and written to the
CRD's specReplicasPath, statusReplicasPath and labelSelectorPath (apiextensions' customresource/etcd.go).
Writes go through subresources.write_scale, as the built-in kinds' do (managedFields with subresource scale,
server-side apply), with the custom resource's patch types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from pocketkube.api import errors
from pocketkube.api.errors import Cause
from pocketkube.api.kinds import CustomResource
from pocketkube.apiserver import request as req
from pocketkube.apiserver.crd import codec
from pocketkube.apiserver.crd.strategy import nested
from pocketkube.apiserver.fieldmanager import ReplicasPaths
from pocketkube.apiserver.fieldpath import make_path
from pocketkube.apiserver.subresources import write_scale

if TYPE_CHECKING:
    from pocketkube.apiserver.handlers import ResourceHandler

Obj = dict[str, Any]


def _int_at(obj: Obj, path: str) -> int:
    value, found = nested(obj, path)
    if not found or value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.internal(f"{path} accessor error: {value} is of the type {type(value).__name__}, expected int64")
    return int(value)


def to_scale(custom: CustomResource, obj: Obj) -> Obj:
    """scaleFromCustomResource."""
    meta = obj.get("metadata") or {}
    scale_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                  if k in meta}
    spec: Obj = {}
    replicas = _int_at(obj, custom.spec_replicas_path)
    if replicas:
        spec["replicas"] = replicas  # omitempty in ScaleSpec
    status: Obj = {"replicas": _int_at(obj, custom.status_replicas_path)}
    if custom.label_selector_path:
        selector, found = nested(obj, custom.label_selector_path)
        if found and isinstance(selector, str) and selector:
            status["selector"] = selector
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": scale_meta, "spec": spec, "status": status}


def _set_at(obj: Obj, path: str, value: int) -> None:
    """unstructured.SetNestedField: create the intermediate objects as needed."""
    parts = [p for p in path.split(".") if p]
    node = obj
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def replicas_paths(custom: CustomResource, group: str) -> ReplicasPaths:
    """Each CRD version's specReplicasPath as a field path (None for a version without scale), by group/version:
    what managedFields written through /scale map the Scale's spec.replicas to."""
    return {f"{group}/{version}": make_path(*[p for p in path.split(".") if p]) if path else None
            for version, path in custom.version_replicas_paths}


async def handle(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.Response:
    info = target.info
    custom = info.custom
    assert custom is not None
    if request.method == "GET":
        obj = await handler.registry.get(info, target.namespace, target.name, request.query.get("resourceVersion", ""))
        return web.json_response(to_scale(custom, obj))
    if request.method not in ("PUT", "PATCH"):
        raise errors.method_not_allowed(f"the server does not allow this method on the requested resource "
                                        f"({request.method} {info.plural}/scale)")

    def store(current: Obj, scale: Obj) -> None:
        if scale.get("kind", "Scale") not in ("Scale", ""):
            raise errors.bad_request("the request body must be an autoscaling/v1 Scale")
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise errors.bad_request('Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal '
                                     'into Go struct field ScaleSpec.spec.replicas of type int32')
        if replicas < 0:
            raise errors.invalid("Scale", target.name, "autoscaling", [Cause(
                "spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")])
        _set_at(current, custom.spec_replicas_path, replicas)
        wanted = (scale.get("metadata") or {}).get("resourceVersion")
        if wanted:
            current["metadata"]["resourceVersion"] = wanted  # the Scale's resourceVersion is a precondition

    # the patch types of the custom resource itself: no strategic merge patch
    return await write_scale(handler, request, target, scale_of=lambda obj: to_scale(custom, obj), store=store,
                             paths=replicas_paths(custom, info.group), patch_types=codec.PATCH_TYPES)
