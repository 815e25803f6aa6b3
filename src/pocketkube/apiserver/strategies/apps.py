"""Workload controllers' kinds: apps/v1 Deployment, ReplicaSet, StatefulSet, DaemonSet, ControllerRevision and
core/v1 ReplicationController (pkg/apis/apps/v1/defaults.go, pkg/apis/apps/validation, pkg/registry/apps)."""

from __future__ import annotations

import re
from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.api.selectors import validate_label_selector
from pocketkube.apiserver.strategy import FieldGetter, Obj, Strategy

from . import _fields as f
from . import podspec

SELECTOR_MISMATCH = "`selector` does not match template `labels`"


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def validate_int_or_percent(value: Any, path: str) -> list[Cause]:
    """ValidatePositiveIntOrPercent + IsNotMoreThan100Percent."""
    if isinstance(value, str):
        errs = [v.invalid_value(path, value, m) for m in v.is_valid_percent(value)]
        if not errs and int(value[:-1]) > 100:
            errs.append(v.invalid_value(path, value, "must not be greater than 100%"))
        return errs
    if isinstance(value, int) and not isinstance(value, bool):
        return f.non_negative(value, path)
    return []


def _is_zero(value: Any) -> bool:
    if isinstance(value, str):
        m = re.fullmatch(r"(\d+)%", value)
        return bool(m) and int(m.group(1)) == 0
    return value == 0


def validate_selector_and_template(spec: Obj, *, restart_policies: list[str], kind_label: str,
                                   allow_empty_selector: bool = False, pod_spec: bool = True) -> list[Cause]:
    """The selector/template rules shared by every controller: selector required, valid, non-empty, and
    matching the template's labels; the template valid with the allowed restart policies (its pod spec
    unchecked with pod_spec=False)."""
    errs: list[Cause] = []
    selector = spec.get("selector")
    if selector is None:
        errs.append(v.required("spec.selector"))
    else:
        errs.extend(validate_label_selector(selector, "spec.selector"))
        if f.selector_is_empty(selector) and not allow_empty_selector:
            errs.append(v.invalid_value("spec.selector", selector, f"empty selector is invalid for {kind_label}"))
    template = spec.get("template")
    if template is None:
        errs.append(v.required("spec.template"))
        return errs
    labels = podspec.template_labels(template)
    if selector is not None and not f.selector_is_empty(selector) and not f.selector_matches(selector, labels):
        errs.append(v.invalid_value("spec.template.metadata.labels", labels, SELECTOR_MISMATCH))
    errs.extend(podspec.validate_pod_template(template, "spec.template", restart_policies=restart_policies,
                                              pod_spec=pod_spec))
    if (template.get("spec") or {}).get("activeDeadlineSeconds") is not None:
        errs.append(v.forbidden("spec.template.spec.activeDeadlineSeconds",
                                f"activeDeadlineSeconds in {kind_label} is not Supported"))
    return errs


class _WorkloadStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            self.default_spec(spec, obj)
            podspec.default_pod_template(spec.get("template"))

    def default_spec(self, spec: Obj, obj: Obj) -> None:
        """Kind-specific SetDefaults_* for the spec."""

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = self.validate(new)
        errs += f.check_immutable(_spec(new).get("selector"), _spec(old).get("selector"), "spec.selector")
        return errs


class DeploymentStrategy(_WorkloadStrategy):
    def prepare_for_status_update(self, new: Obj, old: Obj) -> None:
        """Upstream resets only spec and labels here: the deployment controller records its revision
        annotations through /status."""
        annotations = (new.get("metadata") or {}).get("annotations")
        super().prepare_for_status_update(new, old)
        if annotations is None:
            new["metadata"].pop("annotations", None)
        else:
            new["metadata"]["annotations"] = annotations

    def default_spec(self, spec: Obj, obj: Obj) -> None:
        if spec.get("replicas") is None:
            spec["replicas"] = 1
        strategy = spec.setdefault("strategy", {})
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.get("rollingUpdate") or {}
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
            strategy["rollingUpdate"] = rolling
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs = f.non_negative(spec.get("replicas"), "spec.replicas")
        errs += validate_selector_and_template(spec, restart_policies=["Always"], kind_label="deployment")
        strategy = spec.get("strategy") or {}
        stype = strategy.get("type") or ""
        rolling = strategy.get("rollingUpdate")
        if stype == "Recreate":
            if rolling is not None:
                errs.append(v.forbidden("spec.strategy.rollingUpdate",
                                        "may not be specified when strategy `type` is 'Recreate'"))
        elif stype == "RollingUpdate":
            if rolling is None:
                errs.append(v.required("spec.strategy.rollingUpdate",
                                       "this should be defaulted and never be nil"))
            else:
                errs += self._validate_rolling(rolling, "spec.strategy.rollingUpdate")
        elif not stype:
            errs.append(v.required("spec.strategy.type"))
        else:
            errs.append(v.not_supported("spec.strategy.type", stype, ["Recreate", "RollingUpdate"]))
        errs += f.non_negative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
        errs += f.non_negative(spec.get("minReadySeconds"), "spec.minReadySeconds")
        deadline = spec.get("progressDeadlineSeconds")
        errs += f.non_negative(deadline, "spec.progressDeadlineSeconds")
        min_ready = spec.get("minReadySeconds") or 0
        if isinstance(deadline, int) and deadline <= min_ready:
            errs.append(v.invalid_value("spec.progressDeadlineSeconds", deadline,
                                        "must be greater than minReadySeconds"))
        return errs

    @staticmethod
    def _validate_rolling(rolling: Obj, path: str) -> list[Cause]:
        max_unavailable, max_surge = rolling.get("maxUnavailable"), rolling.get("maxSurge")
        errs = validate_int_or_percent(max_unavailable, f"{path}.maxUnavailable")
        errs += validate_int_or_percent(max_surge, f"{path}.maxSurge")
        if _is_zero(max_unavailable) and _is_zero(max_surge):
            errs.append(v.invalid_value(f"{path}.maxUnavailable", max_unavailable,
                                        "may not be 0 when `maxSurge` is 0"))
        return errs


class ReplicaSetStrategy(_WorkloadStrategy):
    kind_label = "ReplicaSet"

    def field_getters(self) -> dict[str, FieldGetter]:
        getters = super().field_getters()
        getters["status.replicas"] = lambda obj: str((obj.get("status") or {}).get("replicas", 0))
        return getters

    def default_spec(self, spec: Obj, obj: Obj) -> None:
        if spec.get("replicas") is None:
            spec["replicas"] = 1

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs = f.non_negative(spec.get("replicas"), "spec.replicas")
        errs += f.non_negative(spec.get("minReadySeconds"), "spec.minReadySeconds")
        errs += validate_selector_and_template(spec, restart_policies=["Always"], kind_label=self.kind_label)
        return errs


class ReplicationControllerStrategy(ReplicaSetStrategy):
    """core/v1 ReplicationController: a map selector, defaulted from the template's labels."""

    kind_label = "ReplicationController"

    def default_spec(self, spec: Obj, obj: Obj) -> None:
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
        if labels:
            if not spec.get("selector"):
                spec["selector"] = dict(labels)
            meta = obj.setdefault("metadata", {})
            if not meta.get("labels"):
                meta["labels"] = dict(labels)
        if spec.get("replicas") is None:
            spec["replicas"] = 1

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs = f.non_negative(spec.get("replicas"), "spec.replicas")
        errs += f.non_negative(spec.get("minReadySeconds"), "spec.minReadySeconds")
        selector = spec.get("selector") or {}
        if not selector:
            errs.append(v.required("spec.selector"))
        else:
            errs += v.validate_labels(selector, "spec.selector")
        template = spec.get("template")
        if template is None:
            errs.append(v.required("spec.template"))
            return errs
        labels = podspec.template_labels(template)
        if selector and any(labels.get(k) != val for k, val in selector.items()):
            errs.append(v.invalid_value("spec.template.metadata.labels", labels,
                                        "`selector` does not match template `labels`"))
        errs += podspec.validate_pod_template(template, "spec.template", restart_policies=["Always"])
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        # A ReplicationController's selector may change (unlike apps/v1).
        return self.validate(new)


STATEFULSET_UPDATABLE = ("updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                         "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
                         "'minReadySeconds' are forbidden")


class StatefulSetStrategy(_WorkloadStrategy):
    def default_spec(self, spec: Obj, obj: Obj) -> None:
        if not spec.get("podManagementPolicy"):
            spec["podManagementPolicy"] = "OrderedReady"
        update = spec.setdefault("updateStrategy", {})
        if not update.get("type"):
            update["type"] = "RollingUpdate"
            update.setdefault("rollingUpdate", {})
        rolling = update.get("rollingUpdate")
        if update["type"] == "RollingUpdate" and isinstance(rolling, dict) and rolling.get("partition") is None:
            rolling["partition"] = 0
        retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        retention.setdefault("whenDeleted", "Retain")
        retention.setdefault("whenScaled", "Retain")
        spec["persistentVolumeClaimRetentionPolicy"] = retention
        if spec.get("replicas") is None:
            spec["replicas"] = 1
        spec.setdefault("revisionHistoryLimit", 10)
        for claim in spec.get("volumeClaimTemplates") or []:
            if isinstance(claim, dict):
                podspec.default_pvc_spec(claim.setdefault("spec", {}))
                # Claim templates are PVCs and get the PVC status default on decode.
                claim.setdefault("status", {"phase": "Pending"})

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs = f.non_negative(spec.get("replicas"), "spec.replicas")
        policy = spec.get("podManagementPolicy") or ""
        if policy not in ("OrderedReady", "Parallel"):
            errs.append(v.invalid_value("spec.podManagementPolicy", policy,
                                        "must be 'OrderedReady' or 'Parallel'"))
        update = spec.get("updateStrategy") or {}
        utype = update.get("type") or ""
        if utype == "OnDelete":
            if update.get("rollingUpdate") is not None:
                errs.append(v.invalid_value("spec.updateStrategy.rollingUpdate", update["rollingUpdate"],
                                            "only allowed for updateStrategy 'RollingUpdate'"))
        elif utype == "RollingUpdate":
            rolling = update.get("rollingUpdate") or {}
            errs += f.non_negative(rolling.get("partition"), "spec.updateStrategy.rollingUpdate.partition")
            if rolling.get("maxUnavailable") is not None:
                errs += validate_int_or_percent(rolling["maxUnavailable"],
                                                "spec.updateStrategy.rollingUpdate.maxUnavailable")
        elif not utype:
            errs.append(v.required("spec.updateStrategy", ""))
        else:
            errs.append(v.invalid_value("spec.updateStrategy", utype,
                                        "must be 'RollingUpdate' or 'OnDelete'"))
        retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        for key in ("whenDeleted", "whenScaled"):
            value = retention.get(key)
            if value not in ("Retain", "Delete"):
                errs.append(v.not_supported(f"spec.persistentVolumeClaimRetentionPolicy.{key}", value,
                                            ["Retain", "Delete"]))
        errs += validate_selector_and_template(spec, restart_policies=["Always"], kind_label="statefulset",
                                               pod_spec=False)
        errs += f.non_negative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
        errs += f.non_negative(spec.get("minReadySeconds"), "spec.minReadySeconds")
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = self.validate(new)
        mutable = {"replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
                   "persistentVolumeClaimRetentionPolicy", "minReadySeconds"}
        new_rest = {k: val for k, val in _spec(new).items() if k not in mutable}
        old_rest = {k: val for k, val in _spec(old).items() if k not in mutable}
        if new_rest != old_rest:
            errs.append(v.forbidden("spec", STATEFULSET_UPDATABLE))
        return errs


TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"


class DaemonSetStrategy(_WorkloadStrategy):
    """Besides the workload rules: the template generation, kept in an annotation as upstream's apps/v1
    does (the controller labels pods with it)."""

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        meta = obj.setdefault("metadata", {})
        meta["annotations"] = {**(meta.get("annotations") or {}), TEMPLATE_GENERATION_ANNOTATION: "1"}

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        old_annotations = (old.get("metadata") or {}).get("annotations") or {}
        try:
            generation = int(old_annotations.get(TEMPLATE_GENERATION_ANNOTATION, "1"))
        except ValueError:
            generation = 1
        if _spec(new).get("template") != _spec(old).get("template"):
            generation += 1
        meta = new.setdefault("metadata", {})
        meta["annotations"] = {**(meta.get("annotations") or {}), TEMPLATE_GENERATION_ANNOTATION: str(generation)}

    def default_spec(self, spec: Obj, obj: Obj) -> None:
        update = spec.setdefault("updateStrategy", {})
        if not update.get("type"):
            update["type"] = "RollingUpdate"
        if update["type"] == "RollingUpdate":
            rolling = update.get("rollingUpdate") or {}
            rolling.setdefault("maxUnavailable", 1)
            rolling.setdefault("maxSurge", 0)
            update["rollingUpdate"] = rolling
        spec.setdefault("revisionHistoryLimit", 10)

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs = validate_selector_and_template(spec, restart_policies=["Always"], kind_label="daemonset")
        update = spec.get("updateStrategy") or {}
        utype = update.get("type") or ""
        if utype == "RollingUpdate":
            rolling = update.get("rollingUpdate")
            if rolling is None:
                errs.append(v.required("spec.updateStrategy.rollingUpdate"))
            else:
                path = "spec.updateStrategy.rollingUpdate"
                errs += validate_int_or_percent(rolling.get("maxUnavailable"), f"{path}.maxUnavailable")
                errs += validate_int_or_percent(rolling.get("maxSurge"), f"{path}.maxSurge")
                if _is_zero(rolling.get("maxUnavailable")) and _is_zero(rolling.get("maxSurge")):
                    errs.append(v.invalid_value(f"{path}.maxUnavailable", rolling.get("maxUnavailable"),
                                                "may not be 0 when `maxSurge` is 0"))
        elif utype != "OnDelete":
            errs.append(v.not_supported("spec.updateStrategy.type", utype, ["OnDelete", "RollingUpdate"]))
        errs += f.non_negative(spec.get("minReadySeconds"), "spec.minReadySeconds")
        errs += f.non_negative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
        return errs


class ControllerRevisionStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        return f.non_negative(obj.get("revision"), "revision")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + f.check_immutable(new.get("data"), old.get("data"), "data")
