"""Resource lists (`{"cpu": "500m"}`) as exact quantities, and a pod's effective requests and limits
(k8s.io/component-helpers/resource PodRequests/PodLimits), shared by LimitRanger and ResourceQuota."""

from __future__ import annotations

from typing import Any

from pocketkube.api.quantity import Quantity, parse_quantity

Obj = dict[str, Any]
ResourceList = dict[str, Quantity]

# Pod-level resources (spec.resources) may set only these; they then decide the pod's totals for them.
_POD_LEVEL_RESOURCES = ("cpu", "memory")


def quantity(value: Any) -> Quantity | None:
    """A quantity field as written in an object (strings, or plain numbers from JSON)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    try:
        return parse_quantity(value)
    except ValueError:
        return None


def resource_list(raw: Any) -> ResourceList:
    """A ResourceList of an object, unparseable entries left out (validation reports them)."""
    out: ResourceList = {}
    if isinstance(raw, dict):
        for name, value in raw.items():
            q = quantity(value)
            if q is not None:
                out[str(name)] = q
    return out


def add(into: ResourceList, other: ResourceList) -> None:
    for name, q in other.items():
        into[name] = into[name] + q if name in into else q


def maximum(into: ResourceList, other: ResourceList) -> None:
    for name, q in other.items():
        if name not in into or into[name] < q:
            into[name] = q


def _pod_totals(spec: Obj, field: str) -> ResourceList:
    """PodRequests/PodLimits: running containers and sidecars add up; a plain init container runs alone
    (next to the sidecars started before it), so the pod needs the larger of the two."""
    total: ResourceList = {}
    for c in spec.get("containers") or []:
        add(total, resource_list(((c or {}).get("resources") or {}).get(field)))
    sidecars: ResourceList = {}
    init_peak: ResourceList = {}
    for c in spec.get("initContainers") or []:
        own = resource_list(((c or {}).get("resources") or {}).get(field))
        if (c or {}).get("restartPolicy") == "Always":
            add(total, own)
            add(sidecars, own)
            needed = dict(sidecars)
        else:
            needed = dict(own)
            add(needed, sidecars)
        maximum(init_peak, needed)
    maximum(total, init_peak)
    pod_level = resource_list((spec.get("resources") or {}).get(field))
    for name in _POD_LEVEL_RESOURCES:
        if name in pod_level:
            total[name] = pod_level[name]
    add(total, resource_list(spec.get("overhead")))
    return total


def pod_requests(spec: Obj) -> ResourceList:
    return _pod_totals(spec, "requests")


def pod_limits(spec: Obj) -> ResourceList:
    return _pod_totals(spec, "limits")
