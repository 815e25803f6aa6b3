"""LimitRanger (plugin/pkg/admission/limitranger): the LimitRanges of a namespace give new pods' containers
their default requests and limits, and refuse pods and claims outside min/max/maxLimitRequestRatio."""

from __future__ import annotations

from typing import Any

from pocketkube.api.quantity import Quantity

from .interfaces import CREATE, UPDATE, AdmissionAttributes, Handler, forbidden
from .resources import ResourceList, pod_limits, pod_requests, resource_list
from .state import ClusterState

Obj = dict[str, Any]
ANNOTATION = "kubernetes.io/limit-ranger"


def _aggregate(messages: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message as is, several (deduplicated) in brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def _min(kind: str, name: str, enforced: Quantity, requests: ResourceList, limits: ResourceList) -> str | None:
    req, lim = requests.get(name), limits.get(name)
    if req is None:
        return f"minimum {name} usage per {kind} is {enforced}.  No request is specified"
    if req < enforced:
        return f"minimum {name} usage per {kind} is {enforced}, but request is {req}"
    if lim is not None and lim < enforced:
        return f"minimum {name} usage per {kind} is {enforced}, but limit is {lim}"
    return None


def _max(kind: str, name: str, enforced: Quantity, requests: ResourceList, limits: ResourceList) -> str | None:
    req, lim = requests.get(name), limits.get(name)
    if lim is None:
        return f"maximum {name} usage per {kind} is {enforced}.  No limit is specified"
    if enforced < lim:
        return f"maximum {name} usage per {kind} is {enforced}, but limit is {lim}"
    if req is not None and enforced < req:
        return f"maximum {name} usage per {kind} is {enforced}, but request is {req}"
    return None


def _max_request(kind: str, name: str, enforced: Quantity, requests: ResourceList) -> str | None:
    req = requests.get(name)
    if req is None:
        return f"maximum {name} usage per {kind} is {enforced}.  No request is specified"
    if enforced < req:
        return f"maximum {name} usage per {kind} is {enforced}, but request is {req}"
    return None


def _ratio(kind: str, name: str, enforced: Quantity, requests: ResourceList, limits: ResourceList) -> str | None:
    req, lim = requests.get(name), limits.get(name)
    if req is None or req.is_zero():
        return (f"{name} max limit to request ratio per {kind} is {enforced}, but no request is specified or "
                f"request is 0")
    if lim is None or lim.is_zero():
        return (f"{name} max limit to request ratio per {kind} is {enforced}, but no limit is specified or "
                f"limit is 0")
    observed = lim.as_fraction() / req.as_fraction()
    if observed > enforced.as_fraction():
        return f"{name} max limit to request ratio per {kind} is {enforced}, but provided ratio is {float(observed):f}"
    return None


def _check(kind: str, item: Obj, requests: ResourceList, limits: ResourceList, out: list[str]) -> None:
    for name, q in resource_list(item.get("min")).items():
        out.append(_min(kind, name, q, requests, limits) or "")
    for name, q in resource_list(item.get("max")).items():
        out.append(_max(kind, name, q, requests, limits) or "")
    for name, q in resource_list(item.get("maxLimitRequestRatio")).items():
        out.append(_ratio(kind, name, q, requests, limits) or "")


def _container_defaults(limit_range: Obj) -> tuple[Obj, Obj]:
    """defaultContainerResourceRequirements: (requests, limits) from the Container items."""
    requests: Obj = {}
    limits: Obj = {}
    for item in (limit_range.get("spec") or {}).get("limits") or []:
        if (item or {}).get("type") == "Container":
            requests.update(item.get("defaultRequest") or {})
            limits.update(item.get("default") or {})
    return requests, limits


class LimitRanger(Handler):
    name = "LimitRanger"
    operations = (CREATE, UPDATE)

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._limit_ranges = state.info("", "v1", "limitranges")

    def _limit_ranges_for(self, attrs: AdmissionAttributes) -> list[Obj]:
        """DefaultLimitRangerActions.SupportsAttributes, and the namespace's LimitRanges that have limits.
        Pod updates are left alone: containers cannot change after creation."""
        if attrs.subresource or attrs.object is None or not attrs.namespace:
            return []
        if attrs.is_resource("", "pods"):
            if attrs.operation != CREATE:
                return []
        elif not attrs.is_resource("", "persistentvolumeclaims"):
            return []
        if ((attrs.old_object or {}).get("metadata") or {}).get("deletionTimestamp"):
            return []
        return [lr for lr in self.state.list(self._limit_ranges, attrs.namespace)
                if (lr.get("spec") or {}).get("limits")]

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if not attrs.is_resource("", "pods"):
            return
        for limit_range in self._limit_ranges_for(attrs):
            self._default_pod(attrs.object or {}, *_container_defaults(limit_range))

    @staticmethod
    def _default_pod(pod: Obj, requests: Obj, limits: Obj) -> None:
        """mergePodResourceRequirements, with its annotation naming what was set."""
        spec = pod.get("spec") or {}
        notes: list[str] = []
        for kind, label in (("containers", "container"), ("initContainers", "init container")):
            for c in spec.get(kind) or []:
                if not isinstance(c, dict):
                    continue
                resources = c.setdefault("resources", {})
                set_requests, set_limits = [], []
                for field, defaults, record in (("limits", limits, set_limits), ("requests", requests, set_requests)):
                    current = dict(resources.get(field) or {})
                    for name, value in defaults.items():
                        if name not in current:
                            current[name] = value
                            record.append(name)
                    if current:
                        resources[field] = current
                if set_requests:
                    notes.append(", ".join(sorted(set_requests)) + f" request for {label} {c.get('name', '')}")
                if set_limits:
                    notes.append(", ".join(sorted(set_limits)) + f" limit for {label} {c.get('name', '')}")
        if notes:
            meta = pod.setdefault("metadata", {})
            meta["annotations"] = {**(meta.get("annotations") or {}),
                                   ANNOTATION: "LimitRanger plugin set: " + "; ".join(notes)}

    async def validate(self, attrs: AdmissionAttributes) -> None:
        for limit_range in self._limit_ranges_for(attrs):
            found: list[str] = []
            if attrs.is_resource("", "pods"):
                self._validate_pod(attrs.object or {}, limit_range, found)
            else:
                self._validate_claim(attrs.object or {}, limit_range, found)
            found = [m for m in found if m]
            if found:
                raise forbidden(attrs, _aggregate(found))

    @staticmethod
    def _validate_pod(pod: Obj, limit_range: Obj, out: list[str]) -> None:
        spec = pod.get("spec") or {}
        for item in (limit_range.get("spec") or {}).get("limits") or []:
            item = item or {}
            if item.get("type") == "Container":
                for kind in ("containers", "initContainers"):
                    for c in spec.get(kind) or []:
                        resources = (c or {}).get("resources") or {}
                        _check("Container", item, resource_list(resources.get("requests")),
                               resource_list(resources.get("limits")), out)
            elif item.get("type") == "Pod":
                _check("Pod", item, pod_requests(spec), pod_limits(spec), out)

    @staticmethod
    def _validate_claim(claim: Obj, limit_range: Obj, out: list[str]) -> None:
        requests = resource_list(((claim.get("spec") or {}).get("resources") or {}).get("requests"))
        for item in (limit_range.get("spec") or {}).get("limits") or []:
            item = item or {}
            if item.get("type") != "PersistentVolumeClaim":
                continue
            # A claim's limits are not user input: only its requests are held against min and max.
            for name, q in resource_list(item.get("min")).items():
                out.append(_min("PersistentVolumeClaim", name, q, requests, {}) or "")
            for name, q in resource_list(item.get("max")).items():
                out.append(_max_request("PersistentVolumeClaim", name, q, requests) or "")
