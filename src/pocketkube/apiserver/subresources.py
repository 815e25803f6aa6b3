"""Subresources: status, scale, binding, eviction and a namespace's finalize."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jsonpatch
from aiohttp import web

from pocketkube.api import errors
from pocketkube.api.errors import Cause
from pocketkube.api.selectors import LabelSelector, SelectorError
from pocketkube.apiserver import request as req
from pocketkube.apiserver.patch import merge_patch
from pocketkube.apiserver.registry import DeleteOptions, now_rfc3339
from pocketkube.apiserver.strategicpatch import strategic_merge_patch
from pocketkube.apiserver.strategies.conversion import from_storage

if TYPE_CHECKING:
    from pocketkube.apiserver.handlers import ResourceHandler

Obj = dict[str, Any]
SCALE_DEFINITION = "io.k8s.api.autoscaling.v1.Scale"


async def handle(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.StreamResponse:
    sub = target.subresource
    method = request.method
    if sub == "status":
        if method == "GET":
            return await handler.get(request, target)
        if method == "PUT":
            return await handler.update(request, target, "status")
        if method == "PATCH":
            return await handler.patch(request, target, "status")
    elif sub == "scale":
        if method in ("GET", "PUT", "PATCH"):
            return await _scale(handler, request, target)
    elif sub == "binding" and method == "POST":
        return await _binding(handler, request, target)
    elif sub == "eviction" and method == "POST":
        return await _eviction(handler, request, target)
    elif sub == "finalize" and method == "PUT":
        return await _finalize(handler, request, target)
    raise errors.method_not_allowed(f"the server does not allow this method on the requested resource "
                                    f"({method} {target.info.plural}/{sub})")


# --- scale ----------------------------------------------------------------------------
def _selector_string(selector: Any) -> str:
    if not isinstance(selector, dict):
        return ""
    if "matchLabels" in selector or "matchExpressions" in selector:
        try:
            return str(LabelSelector.from_dict(selector))
        except SelectorError:
            return ""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))  # a ReplicationController's map


def to_scale(obj: Obj) -> Obj:
    meta = obj.get("metadata", {})
    scale_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                  if k in meta}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    scale_status: Obj = {"replicas": int(status.get("replicas") or 0)}
    selector = _selector_string(spec.get("selector"))
    if selector:
        scale_status["selector"] = selector
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": scale_meta,
            "spec": {"replicas": int(spec.get("replicas") or 0)}, "status": scale_status}


def _validated_replicas(scale: Obj, name: str) -> int:
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise errors.bad_request("Scale.spec.replicas must be an integer")
    if replicas < 0:
        raise errors.invalid("Scale", name, "autoscaling", [Cause(
            "spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")])
    return replicas


async def _scale(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.Response:
    info = target.info
    registry = handler.registry
    if request.method == "GET":
        obj = await registry.get(info, target.namespace, target.name, request.query.get("resourceVersion", ""))
        return web.json_response(to_scale(obj))
    body = await req.read_body(request)
    content_type = req.media_type(request)
    if request.method == "PUT":
        new_scale = req.parse_object_body(body, content_type)
        if new_scale.get("kind", "Scale") != "Scale":
            raise errors.bad_request(f"expected a Scale, got {new_scale.get('kind')}")

        def scale_of(_: Obj) -> Obj:
            return new_scale
    else:
        document = req.parse_document(body, req.JSON)

        def scale_of(current_scale: Obj) -> Obj:
            if content_type == req.JSON_PATCH:
                try:
                    return jsonpatch.apply_patch(current_scale, document)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as err:
                    raise errors.StatusError(422, "Invalid", str(err)) from None
            if content_type == req.MERGE_PATCH:
                return merge_patch(current_scale, document)
            if content_type == req.STRATEGIC_PATCH:
                return strategic_merge_patch(SCALE_DEFINITION, current_scale, document)
            raise errors.StatusError(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")

    def apply(current: Obj) -> Obj:
        scale = scale_of(to_scale(current))
        if not isinstance(scale, dict):
            raise errors.bad_request("the request body must be a Scale object")
        replicas = _validated_replicas(scale, target.name)
        current.setdefault("spec", {})["replicas"] = replicas
        wanted_rv = (scale.get("metadata") or {}).get("resourceVersion")
        if wanted_rv:
            current["metadata"]["resourceVersion"] = wanted_rv
        return current

    result = await registry.patch(info, target.namespace, target.name, apply, handler._write_options(request))
    return web.json_response(to_scale(result))


# --- binding --------------------------------------------------------------------------
async def _binding(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.Response:
    body = req.parse_object_body(await req.read_body(request), req.media_type(request))
    node = (body.get("target") or {}).get("name", "")
    kind = (body.get("target") or {}).get("kind", "")
    if not node:
        raise errors.invalid("Binding", target.name, "", [Cause("target.name", "Required value",
                                                                "FieldValueRequired")])
    if kind not in ("", "Node"):
        raise errors.invalid("Binding", target.name, "", [Cause(
            "target.kind", f'Invalid value: "{kind}": must be empty or \'Node\'')])
    annotations = (body.get("metadata") or {}).get("annotations") or {}

    def bind(pod: Obj) -> Obj:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            raise errors.conflict("pods", target.name, "", f"pod {target.name} is being deleted, cannot be "
                                  f"assigned to a host")
        assigned = (pod.get("spec") or {}).get("nodeName")
        if assigned:
            raise errors.conflict("pods", target.name, "", f'pod {target.name} is already assigned to node '
                                  f'"{assigned}"')
        pod.setdefault("spec", {})["nodeName"] = node
        if annotations:
            meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                           "lastTransitionTime": now_rfc3339()})
        status["conditions"] = conditions
        return pod

    await handler.registry.patch(target.info, target.namespace, target.name, bind,
                                 handler._write_options(request), "binding")
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "code": 201}, status=201)


# --- eviction -------------------------------------------------------------------------
async def _eviction(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.Response:
    body = req.parse_object_body(await req.read_body(request), req.media_type(request))
    registry = handler.registry
    pod = await registry.get(target.info, target.namespace, target.name)
    phase = (pod.get("status") or {}).get("phase")
    if phase not in ("Succeeded", "Failed"):
        await _check_disruption_budgets(handler, pod)
    options = body.get("deleteOptions") or {}
    preconditions = options.get("preconditions") or {}
    await registry.delete(target.info, target.namespace, target.name, DeleteOptions(
        dry_run=req.dry_run(request) or "All" in (options.get("dryRun") or []),
        grace_period_seconds=options.get("gracePeriodSeconds"),
        propagation_policy=options.get("propagationPolicy"),
        precondition_uid=preconditions.get("uid"),
        precondition_resource_version=preconditions.get("resourceVersion")))
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "code": 201}, status=201)


async def _check_disruption_budgets(handler: ResourceHandler, pod: Obj) -> None:
    """Refuse (429) an eviction that a PodDisruptionBudget covering the pod does not allow."""
    pdb_info = handler.catalog.resource("policy", "v1", "poddisruptionbudgets")
    assert pdb_info is not None
    namespace = pod["metadata"].get("namespace", "")
    labels = pod["metadata"].get("labels") or {}
    cache = handler.registry.cache.resource(pdb_info.storage_prefix)
    for stored in cache.items(f"{pdb_info.storage_prefix}{namespace}/"):
        pdb = from_storage(pdb_info, stored)
        selector = (pdb.get("spec") or {}).get("selector")
        if selector is None:
            continue
        try:
            if not LabelSelector.from_dict(selector).matches(labels):
                continue
        except SelectorError:
            continue
        allowed = int((pdb.get("status") or {}).get("disruptionsAllowed") or 0)
        if allowed < 1:
            raise errors.StatusError(429, "TooManyRequests",
                                     "Cannot evict pod as it would violate the pod's disruption budget.",
                                     {"causes": [{"reason": "DisruptionBudget", "message":
                                                  f"The disruption budget {pdb['metadata']['name']} needs "
                                                  f"{(pdb.get('status') or {}).get('desiredHealthy', 0)} "
                                                  f"healthy pods and has "
                                                  f"{(pdb.get('status') or {}).get('currentHealthy', 0)} "
                                                  f"currently"}]})


# --- namespace finalize ---------------------------------------------------------------
async def _finalize(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.Response:
    body = req.parse_object_body(await req.read_body(request), req.media_type(request))
    finalizers = (body.get("spec") or {}).get("finalizers") or []

    def finalize(namespace: Obj) -> Obj:
        namespace.setdefault("spec", {})["finalizers"] = finalizers
        if not finalizers:
            namespace["spec"].pop("finalizers")
        return namespace

    result = await handler.registry.patch(target.info, "", target.name, finalize,
                                          handler._write_options(request), "finalize")
    return web.json_response(result)
