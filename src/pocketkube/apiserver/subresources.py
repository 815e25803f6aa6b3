"""Subresources: status, a CSR's approval, a pod's ephemeral containers, scale, binding, eviction, a namespace's finalize and a service
account's token."""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pocketkube.api import errors
from pocketkube.api.errors import Cause
from pocketkube.api.selectors import LabelSelector, SelectorError
from pocketkube.apiserver import request as req
from pocketkube.apiserver.fieldmanager import (
    SCALE_API_VERSION,
    ApplyConflict,
    FieldManager,
    ReplicasPaths,
    scale_to_parent,
    scale_to_subresource,
    validate_patch_options,
)
from pocketkube.apiserver.fieldpath import make_path
from pocketkube.apiserver.handlers import apply_json_patch, json_patch_operations
from pocketkube.apiserver.patch import merge_patch
from pocketkube.apiserver.registry import DeleteOptions, WriteOptions, now_rfc3339
from pocketkube.apiserver.satokens import ServiceAccountIdentity
from pocketkube.apiserver.strategicpatch import strategic_merge_patch
from pocketkube.apiserver.strategies.conversion import from_storage

if TYPE_CHECKING:
    from pocketkube.apiserver.handlers import ResourceHandler

Obj = dict[str, Any]
SCALE_DEFINITION = "io.k8s.api.autoscaling.v1.Scale"


async def handle(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.StreamResponse:
    sub = target.subresource
    method = request.method
    # A CSR's approval and a pod's ephemeral containers are written like status: the strategy keeps only
    # what the subresource may change.
    if sub in ("status", "approval", "ephemeralcontainers"):
        if method == "GET":
            return await handler.get(request, target)
        if method == "PUT":
            return await handler.update(request, target, sub)
        if method == "PATCH":
            return await handler.patch(request, target, sub)
    elif sub == "scale":
        if method in ("GET", "PUT", "PATCH"):
            return await _scale(handler, request, target)
    elif sub == "binding" and method == "POST":
        return await _binding(handler, request, target)
    elif sub == "eviction" and method == "POST":
        return await _eviction(handler, request, target)
    elif sub == "finalize" and method == "PUT":
        return await _finalize(handler, request, target)
    elif sub == "token" and method == "POST":
        return await _token(handler, request, target)
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


_BUILTIN_SCALE_PATCH_TYPES = (req.JSON_PATCH, req.MERGE_PATCH, req.STRATEGIC_PATCH, req.APPLY_PATCH)
_SCALE_PATCH_HANDLED = frozenset(_BUILTIN_SCALE_PATCH_TYPES)


@functools.cache
def _scale_fields() -> FieldManager:
    """managedFields bookkeeping of the autoscaling/v1 Scale every scale subresource serves."""
    return FieldManager(SCALE_DEFINITION, SCALE_API_VERSION, "Scale")


async def write_scale(handler: ResourceHandler, request: web.Request, target: req.Target, *,
                      scale_of: Callable[[Obj], Obj], store: Callable[[Obj, Obj], None], paths: ReplicasPaths,
                      patch_types: tuple[str, ...]) -> web.Response:
    """PUT or PATCH of a scale subresource, server-side apply included (the scale request scope has its own
    field manager, for subresource "scale").

    The Scale the change starts from (``scale_of`` the served object) carries the parent's managedFields
    entries that own its replicas field, as entries owning spec.replicas (ScaleHandler.ToSubresource). The
    write is recorded on the Scale for the request's manager, and the result mapped back onto the parent's
    entries (ToParent), so the parent's managedFields show the manager with ``subresource: scale``.
    ``store`` checks the new Scale and writes its replicas (and resourceVersion precondition) into the parent.
    """
    info = target.info
    body = await req.read_body(request)
    content_type = req.media_type(request)
    fields = _scale_fields()
    change: Callable[[Obj], Any] | None = None
    config: Obj = {}
    force = False
    if request.method == "PUT":
        opts = handler._write_options(request, "UpdateOptions")
        sent = req.parse_object_body(body, content_type)

        def change(_: Obj) -> Any:
            return copy.deepcopy(sent)
    else:
        is_apply = content_type == req.APPLY_PATCH
        validate_patch_options(is_apply, request.query.get("fieldManager", ""), "force" in request.query)
        opts = handler._write_options(request)
        if content_type not in patch_types or content_type not in _SCALE_PATCH_HANDLED:
            raise errors.StatusError(415, "UnsupportedMediaType", "the body of the request was in an unknown format "
                                     "- accepted media types include: " + ", ".join(patch_types))
        if is_apply:
            document = req.parse_document(body, req.APPLY_PATCH)
            if not isinstance(document, dict):
                raise errors.bad_request("the applied configuration must be an object")
            fields.check_applied(document)
            config = document
            force = req.bool_param(request, "force")
        elif content_type == req.JSON_PATCH:
            operations = json_patch_operations(body)

            def change(live: Obj) -> Any:
                return apply_json_patch(operations, live)
        else:
            document = req.parse_document(body, req.JSON)
            if not isinstance(document, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            if content_type == req.MERGE_PATCH:
                def change(live: Obj) -> Any:
                    return merge_patch(live, document)
            else:
                def change(live: Obj) -> Any:
                    return strategic_merge_patch(SCALE_DEFINITION, live, document)
    opts.track_fields = False  # recorded here, on the Scale, not by the registry as a write of the parent
    manager = opts.field_manager
    now = now_rfc3339()

    def write(current: Obj) -> Obj:
        meta = current["metadata"]
        live = scale_of(current)
        try:
            entries = scale_to_subresource(meta.get("managedFields"), paths)
        except ValueError:
            entries, manager_known = None, False  # undecodable entries: left alone, nothing recorded
        else:
            manager_known = bool(manager)
        if entries:
            live["metadata"]["managedFields"] = entries
        if change is None:
            try:
                scale = fields.apply(live, config, manager, now, force=force, subresource="scale")
            except ApplyConflict as err:
                raise err.to_status_error() from None
        else:
            scale = change(live)
            if not isinstance(scale, dict):
                raise errors.bad_request("the request body must be an autoscaling/v1 Scale")
            if manager_known:
                fields.update(live, scale, manager, now, subresource="scale")
        store(current, scale)
        if manager_known or change is None:
            mapped = scale_to_parent(meta.get("managedFields"), (scale.get("metadata") or {}).get("managedFields"),
                                     paths, info.group_version)
            if mapped is None:
                meta.pop("managedFields", None)
            else:
                meta["managedFields"] = mapped
        return current

    result = await handler.registry.patch(info, target.namespace, target.name, write, opts)
    return web.json_response(scale_of(result))


async def _scale(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.Response:
    info = target.info
    if request.method == "GET":
        obj = await handler.registry.get(info, target.namespace, target.name, request.query.get("resourceVersion", ""))
        return web.json_response(to_scale(obj))

    def store(current: Obj, scale: Obj) -> None:
        if scale.get("kind", "Scale") != "Scale":
            raise errors.bad_request(f"expected a Scale, got {scale.get('kind')}")
        current.setdefault("spec", {})["replicas"] = _validated_replicas(scale, target.name)
        wanted_rv = (scale.get("metadata") or {}).get("resourceVersion")
        if wanted_rv:
            current["metadata"]["resourceVersion"] = wanted_rv

    return await write_scale(handler, request, target, scale_of=to_scale, store=store,
                             paths={info.group_version: make_path("spec", "replicas")},
                             patch_types=_BUILTIN_SCALE_PATCH_TYPES)


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
# Conflict retries of the pod delete and of the budget's status update (upstream EvictionsRetry).
EVICTION_RETRIES = 5
# Upstream MaxDisruptedPodSize: evictions the disruption controller has not yet confirmed.
MAX_DISRUPTED_PODS = 2000
_EVICTION_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _too_many_requests(message: str, cause: str, retry_after: int) -> errors.StatusError:
    details: Obj = {"causes": [{"reason": "DisruptionBudget", "message": cause}]}
    headers: dict[str, str] = {}
    if retry_after:
        details["retryAfterSeconds"] = retry_after
        headers["Retry-After"] = str(retry_after)
    return errors.StatusError(429, "TooManyRequests", message, details, headers)


async def _eviction(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.Response:
    """pkg/registry/core/pod/storage/eviction.go: delete the pod unless its PodDisruptionBudget forbids it;
    an allowed disruption is taken from the budget (disruptionsAllowed - 1, the pod in disruptedPods) in
    one atomic status update before the pod is deleted."""
    body = req.parse_object_body(await req.read_body(request), req.media_type(request))
    if (body.get("metadata") or {}).get("name") not in (None, target.name):
        raise errors.bad_request("name in URL does not match name in Eviction object")
    registry = handler.registry
    options = body.get("deleteOptions") or {}
    preconditions = options.get("preconditions") or {}
    dry_run = req.dry_run(request) or "All" in (options.get("dryRun") or [])

    async def delete(resource_version: str | None) -> None:
        await registry.delete(target.info, target.namespace, target.name, DeleteOptions(
            dry_run=dry_run, grace_period_seconds=options.get("gracePeriodSeconds"),
            propagation_policy=options.get("propagationPolicy"), precondition_uid=preconditions.get("uid"),
            precondition_resource_version=resource_version))

    success = web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                 "code": 201}, status=201)
    # A terminal, pending or already terminating pod is no disruption: delete it directly. Pin the
    # resourceVersion so that a pod turning Running meanwhile is looked at again (conflicts retry).
    for attempt in range(EVICTION_RETRIES):
        pod = await registry.get(target.info, target.namespace, target.name)
        status = pod.get("status") or {}
        terminal = status.get("phase") in ("Succeeded", "Failed") or bool(pod["metadata"].get("deletionTimestamp"))
        if not terminal and status.get("phase") != "Pending":
            break
        pinned = preconditions.get("resourceVersion") or (None if terminal else pod["metadata"]["resourceVersion"])
        try:
            await delete(pinned)
            return success
        except errors.StatusError as err:
            if err.code != 409 or preconditions.get("resourceVersion") or attempt == EVICTION_RETRIES - 1:
                raise
    pdbs = _budgets_for(handler, pod)
    if len(pdbs) > 1:
        return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": "This pod has more than one PodDisruptionBudget, which the eviction "
                                             "subresource does not support.", "code": 500}, status=500)
    pinned = preconditions.get("resourceVersion")
    if pdbs:
        pdb = pdbs[0]
        spec, pdb_status = pdb.get("spec") or {}, pdb.get("status") or {}
        unhealthy_ok = not _pod_ready(pod) and (
            spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
            or int(pdb_status.get("currentHealthy") or 0) >= int(pdb_status.get("desiredHealthy") or 0) > 0)
        if unhealthy_ok:
            # An unready pod does not count as healthy: deleting it takes nothing from the budget, as long
            # as it is still unready when deleted.
            pinned = pinned or pod["metadata"]["resourceVersion"]
        else:
            await _take_disruption(handler, pdb["metadata"]["name"], target.namespace, target.name, dry_run)
    try:
        await delete(pinned)
    except errors.StatusError as err:
        if err.code == 409 and pdbs and not preconditions.get("resourceVersion"):
            raise _too_many_requests(_EVICTION_MESSAGE, f"The disruption budget {pdbs[0]['metadata']['name']} "
                                     "is still being processed by the server.", 10) from None
        raise
    return success


def _budgets_for(handler: ResourceHandler, pod: Obj) -> list[Obj]:
    """The pod's PodDisruptionBudgets (policy/v1: an empty selector selects every pod in the namespace)."""
    pdb_info = handler.catalog.resource("policy", "v1", "poddisruptionbudgets")
    assert pdb_info is not None
    namespace = pod["metadata"].get("namespace", "")
    labels = pod["metadata"].get("labels") or {}
    cache = handler.registry.cache.resource(pdb_info.storage_prefix)
    found = []
    for stored in cache.items(f"{pdb_info.storage_prefix}{namespace}/"):
        pdb = from_storage(pdb_info, stored)
        selector = (pdb.get("spec") or {}).get("selector")
        if selector is None:
            continue
        try:
            if LabelSelector.from_dict(selector).matches(labels):
                found.append(pdb)
        except SelectorError:
            continue
    return found


async def _take_disruption(handler: ResourceHandler, name: str, namespace: str, pod_name: str,
                           dry_run: bool) -> None:
    """checkAndDecrement: refuse (429) unless the budget allows a disruption, else record it in the budget's
    status; the registry re-reads and re-checks on write conflicts, so concurrent evictions never overspend."""
    pdb_info = handler.catalog.resource("policy", "v1", "poddisruptionbudgets")
    assert pdb_info is not None

    def decrement(pdb: Obj) -> Obj:
        status = pdb.setdefault("status", {})
        if int(status.get("observedGeneration") or 0) < int(pdb["metadata"].get("generation") or 0):
            raise _too_many_requests(_EVICTION_MESSAGE, f"The disruption budget {name} is still being processed "
                                     "by the server.", 10)
        allowed = int(status.get("disruptionsAllowed") or 0)
        if allowed < 0:
            raise errors.forbidden(f'poddisruptionbudgets.policy "{name}" is forbidden: pdb disruptions allowed '
                                   "is negative")
        if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_PODS:
            raise errors.forbidden(f'poddisruptionbudgets.policy "{name}" is forbidden: DisruptedPods map too big '
                                   "- too many evictions not confirmed by PDB controller")
        if allowed == 0:
            raise _too_many_requests(_EVICTION_MESSAGE, f"The disruption budget {name} needs "
                                     f"{int(status.get('desiredHealthy') or 0)} healthy pods and has "
                                     f"{int(status.get('currentHealthy') or 0)} currently", 0)
        status["disruptionsAllowed"] = allowed - 1
        if allowed == 1:
            _set_disruption_allowed_false(status)
        status.setdefault("disruptedPods", {})[pod_name] = now_rfc3339()
        return pdb

    if dry_run:
        decrement(await handler.registry.get(pdb_info, namespace, name))
        return
    await handler.registry.patch(pdb_info, namespace, name, decrement, WriteOptions(), "status")


def _set_disruption_allowed_false(status: Obj) -> None:
    """pdbhelper.UpdateDisruptionAllowedCondition once no disruption is left."""
    conditions = status.setdefault("conditions", [])
    new = {"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "",
           "observedGeneration": status.get("observedGeneration", 0)}
    for cond in conditions:
        if cond.get("type") == "DisruptionAllowed":
            if cond.get("status") != "False":
                cond["lastTransitionTime"] = now_rfc3339()
            cond.update(new)
            return
    conditions.append({**new, "lastTransitionTime": now_rfc3339()})


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


# --- serviceaccounts/<name>/token (TokenRequest) ---------------------------------------------

_MIN_TOKEN_SECONDS = 600
_MAX_TOKEN_SECONDS = 2 ** 32
_BINDABLE = {"Pod": ("", "v1", "pods"), "Secret": ("", "v1", "secrets"), "Node": ("", "v1", "nodes")}


async def _token(handler: ResourceHandler, request: web.Request, target: req.Target) -> web.Response:
    """pkg/registry/core/serviceaccount/storage/token.go: a signed token for the service account,
    optionally bound to a pod, secret or node that must exist (and match the uid given)."""
    body = req.parse_object_body(await req.read_body(request), req.media_type(request))
    spec = dict(body.get("spec") or {})
    tokens = handler.service_account_tokens
    audiences = spec.get("audiences") or list(tokens.audiences)
    seconds = spec.get("expirationSeconds") or 3600
    causes = []
    if not isinstance(seconds, int) or seconds < _MIN_TOKEN_SECONDS:
        causes.append(Cause("spec.expirationSeconds", f"Invalid value: {seconds}: may not specify a duration "
                            "less than 10 minutes"))
    elif seconds > _MAX_TOKEN_SECONDS:
        causes.append(Cause("spec.expirationSeconds", f"Invalid value: {seconds}: may not specify a duration "
                            "larger than 2^32 seconds"))
    bound = spec.get("boundObjectRef") or {}
    if bound and bound.get("kind") not in _BINDABLE:
        causes.append(Cause("spec.boundObjectRef.kind", f'Unsupported value: "{bound.get("kind")}": supported '
                            'values: "Pod", "Secret", "Node"', "FieldValueNotSupported"))
    if causes:
        raise errors.invalid("TokenRequest", target.name, "authentication.k8s.io", causes)
    account = await handler.registry.get(target.info, target.namespace, target.name)
    identity = ServiceAccountIdentity(target.namespace, target.name, account["metadata"].get("uid", ""))
    if bound:
        group, version, plural = _BINDABLE[bound["kind"]]
        info = handler.catalog.resource(group, version, plural)
        namespace = "" if bound["kind"] == "Node" else target.namespace
        obj = await handler.registry.get(info, namespace, bound.get("name", ""))
        uid = obj["metadata"].get("uid", "")
        if bound.get("uid") and bound["uid"] != uid:
            raise errors.conflict(plural, bound.get("name", ""), group,
                                  f"the UID in the bound object reference ({bound['uid']}) does not match the UID "
                                  "in record. The object might have been deleted and then recreated")
        identity = ServiceAccountIdentity(target.namespace, target.name, identity.uid, bound["kind"],
                                          bound.get("name", ""), uid)
        spec["boundObjectRef"] = {**bound, "uid": uid}
    token, expires = tokens.issue(identity, expiration_seconds=seconds, audiences=audiences)
    spec.update(audiences=audiences, expirationSeconds=seconds)
    response = {
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": target.name, "namespace": target.namespace, "creationTimestamp": now_rfc3339()},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                         time.gmtime(expires))},
    }
    return web.json_response(response, status=201)
