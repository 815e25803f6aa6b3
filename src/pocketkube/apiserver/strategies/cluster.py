"""The smaller groups: autoscaling (HPA v2 and v1), storage.k8s.io StorageClass, coordination.k8s.io Lease,
discovery.k8s.io EndpointSlice, policy PodDisruptionBudget, scheduling.k8s.io PriorityClass."""

from __future__ import annotations

from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.api.selectors import validate_label_selector
from pocketkube.apiserver.strategy import Obj, Strategy

from . import _fields as f

HPA_SCALE_UP_POLICIES = [{"type": "Pods", "value": 4, "periodSeconds": 15},
                         {"type": "Percent", "value": 100, "periodSeconds": 15}]
HPA_SCALE_DOWN_POLICIES = [{"type": "Percent", "value": 100, "periodSeconds": 15}]
DEFAULT_CPU_UTILIZATION = 80


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _scaling_rules(rules: Any, window: int, policies: list[Obj]) -> Obj:
    """GenerateHPAScaleUpRules / GenerateHPAScaleDownRules: fill what the user left out."""
    rules = dict(rules) if isinstance(rules, dict) else {}
    if rules.get("stabilizationWindowSeconds") is None:
        rules["stabilizationWindowSeconds"] = window
    if not rules.get("selectPolicy"):
        rules["selectPolicy"] = "Max"
    if rules.get("policies") is None:
        rules["policies"] = [dict(p) for p in policies]
    return rules


def _validate_scale_target(ref: Any, path: str) -> list[Cause]:
    ref = ref if isinstance(ref, dict) else {}
    errs: list[Cause] = []
    if not ref.get("kind"):
        errs.append(v.required(f"{path}.kind"))
    if not ref.get("name"):
        errs.append(v.required(f"{path}.name"))
    else:
        errs.extend(v.invalid_value(f"{path}.name", ref["name"], m) for m in v.is_path_segment_name(ref["name"]))
    return errs


def _validate_replicas(spec: Obj) -> list[Cause]:
    errs: list[Cause] = []
    min_replicas, max_replicas = spec.get("minReplicas"), spec.get("maxReplicas")
    if isinstance(min_replicas, int) and min_replicas < 1:
        # HPAScaleToZero is alpha; without it the minimum is 1.
        errs.append(v.invalid_value("spec.minReplicas", min_replicas, "must be greater than or equal to 1"))
    if not isinstance(max_replicas, int) or max_replicas < 1:
        errs.append(v.invalid_value("spec.maxReplicas", max_replicas, "must be greater than 0"))
    elif isinstance(min_replicas, int) and max_replicas < min_replicas:
        errs.append(v.invalid_value("spec.maxReplicas", max_replicas,
                                    "must be greater than or equal to `minReplicas`"))
    return errs


class HorizontalPodAutoscalerStrategy(Strategy):
    """autoscaling/v2 (the stored version)."""

    tracks_generation = True
    name_validator = "path segment"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if spec.get("minReplicas") is None:
            spec["minReplicas"] = 1
        if not spec.get("metrics"):
            spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}]
        behavior = spec.get("behavior")
        if isinstance(behavior, dict):
            behavior["scaleUp"] = _scaling_rules(behavior.get("scaleUp"), 0, HPA_SCALE_UP_POLICIES)
            behavior["scaleDown"] = _scaling_rules(behavior.get("scaleDown"), 300, HPA_SCALE_DOWN_POLICIES)

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs = _validate_scale_target(spec.get("scaleTargetRef"), "spec.scaleTargetRef")
        errs += _validate_replicas(spec)
        allowed = ["ContainerResource", "External", "Object", "Pods", "Resource"]
        for i, metric in enumerate(spec.get("metrics") or []):
            mp = f"spec.metrics[{i}]"
            mtype = (metric or {}).get("type") or ""
            if not mtype:
                errs.append(v.required(f"{mp}.type", "must specify a metric source type"))
            elif mtype not in allowed:
                errs.append(v.not_supported(f"{mp}.type", mtype, allowed))
            elif (metric or {}).get(mtype[0].lower() + mtype[1:]) is None:
                errs.append(v.required(f"{mp}.{mtype[0].lower() + mtype[1:]}",
                                       "must populate information for the given metric source"))
        return errs


class HorizontalPodAutoscalerV1Strategy(Strategy):
    """autoscaling/v1, served by conversion to the stored v2."""

    tracks_generation = True
    name_validator = "path segment"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if spec.get("minReplicas") is None:
            spec["minReplicas"] = 1

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs = _validate_scale_target(spec.get("scaleTargetRef"), "spec.scaleTargetRef")
        errs += _validate_replicas(spec)
        target = spec.get("targetCPUUtilizationPercentage")
        if isinstance(target, int) and target < 1:
            errs.append(v.invalid_value("spec.targetCPUUtilizationPercentage", target,
                                        "must be greater than or equal to 1"))
        return errs


class StorageClassStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        if not obj.get("reclaimPolicy"):
            obj["reclaimPolicy"] = "Delete"
        if not obj.get("volumeBindingMode"):
            obj["volumeBindingMode"] = "Immediate"

    def validate(self, obj: Obj) -> list[Cause]:
        errs: list[Cause] = []
        provisioner = obj.get("provisioner") or ""
        if not provisioner:
            errs.append(v.required("provisioner"))
        else:
            errs.extend(f.qualified_name_causes(provisioner.lower(), "provisioner"))
        if obj.get("reclaimPolicy") not in ("Delete", "Retain"):
            errs.append(v.not_supported("reclaimPolicy", obj.get("reclaimPolicy"), ["Delete", "Retain"]))
        mode = obj.get("volumeBindingMode")
        if mode not in ("Immediate", "WaitForFirstConsumer"):
            errs.append(v.not_supported("volumeBindingMode", mode, ["Immediate", "WaitForFirstConsumer"]))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = self.validate(new)
        for key in ("parameters", "provisioner", "reclaimPolicy"):
            if new.get(key) != old.get(key):
                errs.append(v.forbidden(key, f"updates to {key} are forbidden."))
        errs += f.check_immutable(new.get("volumeBindingMode"), old.get("volumeBindingMode"), "volumeBindingMode")
        return errs


class LeaseStrategy(Strategy):
    allow_create_on_update = True
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs: list[Cause] = []
        duration = spec.get("leaseDurationSeconds")
        if isinstance(duration, int) and duration <= 0:
            errs.append(v.invalid_value("spec.leaseDurationSeconds", duration, "must be greater than 0"))
        errs += f.non_negative(spec.get("leaseTransitions"), "spec.leaseTransitions")
        return errs


ADDRESS_TYPES = ["FQDN", "IPv4", "IPv6"]


class EndpointSliceStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        for port in obj.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("name", "")
                if port.get("protocol") is None:
                    port["protocol"] = "TCP"

    def validate(self, obj: Obj) -> list[Cause]:
        errs: list[Cause] = []
        address_type = obj.get("addressType") or ""
        if address_type not in ADDRESS_TYPES:
            errs.append(v.not_supported("addressType", address_type, ADDRESS_TYPES))
        for i, endpoint in enumerate(obj.get("endpoints") or []):
            addresses = (endpoint or {}).get("addresses") or []
            if not addresses:
                errs.append(v.required(f"endpoints[{i}].addresses", "must contain at least 1 address"))
            elif len(addresses) > 100:
                errs.append(v.too_many(f"endpoints[{i}].addresses", len(addresses), 100))
            for j, address in enumerate(addresses):
                path = f"endpoints[{i}].addresses[{j}]"
                if address_type in ("IPv4", "IPv6"):
                    errs += v.is_valid_ip(path, str(address))
                elif address_type == "FQDN":
                    errs.extend(f.dns_subdomain_causes(str(address), path))
        names: set[str] = set()
        for i, port in enumerate(obj.get("ports") or []):
            port = port or {}
            name = port.get("name") or ""
            if name:
                errs.extend(f.dns_label_causes(name, f"ports[{i}].name"))
            if name in names:
                errs.append(v.duplicate(f"ports[{i}].name", name))
            names.add(name)
            if port.get("protocol") not in ("SCTP", "TCP", "UDP"):
                errs.append(v.not_supported(f"ports[{i}].protocol", port.get("protocol"), ["SCTP", "TCP", "UDP"]))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + f.check_immutable(new.get("addressType"), old.get("addressType"), "addressType")


class PodDisruptionBudgetStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs: list[Cause] = []
        if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
            errs.append(v.invalid_value("spec", spec, "minAvailable and maxUnavailable cannot be both set"))
        for key in ("minAvailable", "maxUnavailable"):
            value = spec.get(key)
            if isinstance(value, str):
                errs.extend(v.invalid_value(f"spec.{key}", value, m) for m in v.is_valid_percent(value))
            elif value is not None:
                errs += f.non_negative(value, f"spec.{key}")
        errs += validate_label_selector(spec.get("selector"), "spec.selector")
        policy = spec.get("unhealthyPodEvictionPolicy")
        if policy is not None and policy not in ("IfHealthyBudget", "AlwaysAllow"):
            errs.append(v.not_supported("spec.unhealthyPodEvictionPolicy", policy, ["AlwaysAllow",
                                                                                    "IfHealthyBudget"]))
        return errs


HIGHEST_USER_PRIORITY = 1_000_000_000


class PriorityClassStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        if not obj.get("preemptionPolicy"):
            obj["preemptionPolicy"] = "PreemptLowerPriority"

    def validate(self, obj: Obj) -> list[Cause]:
        errs: list[Cause] = []
        name = str((obj.get("metadata") or {}).get("name") or "")
        value = obj.get("value")
        if name.startswith("system-"):
            if name not in ("system-node-critical", "system-cluster-critical"):
                errs.append(v.forbidden("metadata.name", "priority class names with 'system-' prefix are reserved"))
        elif isinstance(value, int) and value > HIGHEST_USER_PRIORITY:
            errs.append(v.forbidden("value", f"maximum allowed value of a user defined priority is "
                                             f"{HIGHEST_USER_PRIORITY}"))
        policy = obj.get("preemptionPolicy")
        if policy not in ("PreemptLowerPriority", "Never"):
            errs.append(v.not_supported("preemptionPolicy", policy, ["Never", "PreemptLowerPriority"]))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = self.validate(new)
        if new.get("value") != old.get("value"):
            errs.append(v.forbidden("value", "may not be changed in an update."))
        errs += f.check_immutable(new.get("preemptionPolicy"), old.get("preemptionPolicy"), "preemptionPolicy")
        return errs
