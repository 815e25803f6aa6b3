"""Pods (pkg/registry/core/pod/strategy.go, SetDefaults_Pod). What admission adds to new pods (the service
account, default tolerations, priority, LimitRange defaults) is in apiserver/admission."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.apiserver.strategy import FieldGetter, Obj, Strategy

from . import _fields as f
from . import podspec

_QOS_RESOURCES = ("cpu", "memory")
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"


def _get(obj: Obj, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def _str_getter(*path: str) -> FieldGetter:
    def getter(obj: Obj) -> str:
        value = _get(obj, *path)
        return "" if value is None else str(value)
    return getter


def qos_class(spec: Obj) -> str:
    """qos.GetPodQOS: Guaranteed when every container has equal cpu+memory requests and limits,
    BestEffort when none has any, Burstable otherwise. Pod-level resources, when set, decide alone."""
    pod_resources = spec.get("resources")
    if isinstance(pod_resources, dict) and (pod_resources.get("requests") or pod_resources.get("limits")):
        sets = [pod_resources]
    else:
        sets = [(c or {}).get("resources") or {} for kind in ("initContainers", "containers")
                for c in spec.get(kind) or []]
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for res in sets:
        found_limits: set[str] = set()
        for name, raw in (res.get("requests") or {}).items():
            qty = f.parse_quantity_value(raw)
            if name in _QOS_RESOURCES and qty is not None and qty != 0:
                requests[name] = requests.get(name, Fraction(0)) + qty
        for name, raw in (res.get("limits") or {}).items():
            qty = f.parse_quantity_value(raw)
            if name in _QOS_RESOURCES and qty is not None and qty != 0:
                found_limits.add(name)
                limits[name] = limits.get(name, Fraction(0)) + qty
        if not set(_QOS_RESOURCES) <= found_limits:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(requests.get(name) == limits.get(name) for name in set(requests) | set(limits)):
        return "Guaranteed"
    return "Burstable"


class PodStrategy(Strategy):
    tracks_generation = True
    return_deleted_object = True
    name_validator = "dns1123subdomain"

    def field_getters(self) -> dict[str, FieldGetter]:
        getters = super().field_getters()
        for field in ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                      "status.phase", "status.podIP", "status.nominatedNodeName"):
            getters[field] = _str_getter(*field.split("."))
        getters["spec.hostNetwork"] = lambda obj: "true" if _get(obj, "spec", "hostNetwork") else "false"
        # status.podIPs matches any of the pod's IPs; the registry compares against this one string,
        # so expose the primary IP as upstream's PodToSelectableFields does (only the first is indexed).
        getters["status.podIPs"] = lambda obj: str(((_get(obj, "status", "podIPs") or [{}])[0] or {}).get("ip", ""))
        return getters

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        podspec.default_pod_spec(spec)
        # SetDefaults_Pod: requests default to limits, container by container.
        for kind in ("containers", "initContainers"):
            for c in spec.get(kind) or []:
                resources = (c or {}).get("resources") or {}
                if resources.get("limits"):
                    requests = resources.setdefault("requests", {})
                    for name, value in resources["limits"].items():
                        requests.setdefault(name, value)
        if spec.get("enableServiceLinks") is None:
            spec["enableServiceLinks"] = True
        if spec.get("hostNetwork"):
            for kind in ("containers", "initContainers"):
                for c in spec.get(kind) or []:
                    for port in (c or {}).get("ports") or []:
                        if not port.get("hostPort") and port.get("containerPort"):
                            port["hostPort"] = port["containerPort"]

    def prepare_for_create(self, obj: Obj) -> None:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = obj.get("spec")
        errs = podspec.validate_pod_spec(spec, "spec")
        if isinstance(spec, dict) and spec.get("ephemeralContainers"):
            errs.append(v.forbidden("spec.ephemeralContainers", "cannot be set on create"))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = podspec.validate_pod_spec(new.get("spec"), "spec")
        if isinstance(new.get("spec"), dict) and isinstance(old.get("spec"), dict):
            errs += podspec.validate_pod_spec_update(new["spec"], old["spec"])
        return errs

    # pods/ephemeralcontainers: how `kubectl debug` adds a container to a running pod.
    own_subresources = frozenset({"ephemeralcontainers"})

    def prepare_for_subresource_update(self, subresource: str, new: Obj, old: Obj) -> None:
        """Only spec.ephemeralContainers changes (dropNonEphemeralContainerUpdates); a changed spec is a new
        generation, as for any pod spec change."""
        added = (new.get("spec") or {}).get("ephemeralContainers") if isinstance(new.get("spec"), dict) else None
        new.clear()
        new.update(copy.deepcopy(old))
        spec = new.setdefault("spec", {})
        if added:
            spec["ephemeralContainers"] = added
            for container in added:
                if isinstance(container, dict):
                    podspec.default_container(container)
        else:
            spec.pop("ephemeralContainers", None)
        if spec != old.get("spec"):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1

    def validate_subresource_update(self, subresource: str, new: Obj, old: Obj) -> list[Cause]:
        if MIRROR_POD_ANNOTATION in ((old.get("metadata") or {}).get("annotations") or {}):
            return [v.forbidden("", "static pods do not support ephemeral containers")]
        return podspec.validate_pod_spec(new.get("spec"), "spec") + podspec.validate_ephemeral_containers_update(
            new.get("spec") or {}, old.get("spec") or {})

    def grace_period(self, obj: Obj, requested: int | None) -> int:
        """A pod never scheduled, or already finished, goes at once; otherwise the kubelet gets the grace."""
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Failed", "Succeeded"):
            return 0
        if requested is not None:
            return max(requested, 0)
        grace = spec.get("terminationGracePeriodSeconds")
        if isinstance(grace, int) and not isinstance(grace, bool):
            # A negative grace in the spec is read as the minimum, 1 second (upstream's
            # "delete with a negative value" handling).
            return grace if grace >= 0 else 1
        return 0
