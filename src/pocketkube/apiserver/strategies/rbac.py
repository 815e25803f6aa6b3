"""rbac.authorization.k8s.io/v1 Role, ClusterRole, RoleBinding, ClusterRoleBinding
(pkg/apis/rbac/v1/defaults.go, pkg/apis/rbac/validation)."""

from __future__ import annotations

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.api.selectors import validate_label_selector
from pocketkube.apiserver.strategy import Obj, Strategy

RBAC_GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ["ServiceAccount", "User", "Group"]


def _validate_rules(rules: list[Obj], *, namespaced: bool) -> list[Cause]:
    errs: list[Cause] = []
    for i, rule in enumerate(rules):
        p = f"rules[{i}]"
        rule = rule or {}
        if not rule.get("verbs"):
            errs.append(v.required(f"{p}.verbs", "verbs must contain at least one value"))
        urls = rule.get("nonResourceURLs") or []
        if urls:
            if namespaced:
                errs.append(v.invalid_value(f"{p}.nonResourceURLs", urls,
                                            "namespaced rules cannot apply to non-resource URLs"))
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                errs.append(v.invalid_value(f"{p}.nonResourceURLs", urls,
                                            "rules cannot apply to both regular resources and non-resource URLs"))
            continue
        if not rule.get("apiGroups"):
            errs.append(v.required(f"{p}.apiGroups", "resource rules must supply at least one api group"))
        if not rule.get("resources"):
            errs.append(v.required(f"{p}.resources", "resource rules must supply at least one resource"))
    return errs


class RoleStrategy(Strategy):
    allow_create_on_update = True
    name_validator = "path segment"

    def validate(self, obj: Obj) -> list[Cause]:
        return _validate_rules(obj.get("rules") or [], namespaced=self.info.namespaced)


class ClusterRoleStrategy(RoleStrategy):
    def validate(self, obj: Obj) -> list[Cause]:
        errs = super().validate(obj)
        aggregation = obj.get("aggregationRule")
        if aggregation is not None:
            selectors = aggregation.get("clusterRoleSelectors") or []
            if not selectors:
                errs.append(v.required("aggregationRule.clusterRoleSelectors",
                                       "at least one clusterRoleSelector required if aggregationRule is non-nil"))
            for i, sel in enumerate(selectors):
                errs += validate_label_selector(sel, f"aggregationRule.clusterRoleSelectors[{i}]")
            if obj.get("rules"):
                errs.append(v.forbidden("rules", "rules must be empty when aggregationRule is set"))
        return errs


class RoleBindingStrategy(Strategy):
    allow_create_on_update = True
    name_validator = "path segment"

    def default(self, obj: Obj) -> None:
        ref = obj.get("roleRef")
        if isinstance(ref, dict) and not ref.get("apiGroup"):
            ref["apiGroup"] = RBAC_GROUP
        for subject in obj.get("subjects") or []:
            # A ServiceAccount's group stays "", which Go's omitempty leaves out.
            if isinstance(subject, dict) and not subject.get("apiGroup") and subject.get("kind") in ("User", "Group"):
                subject["apiGroup"] = RBAC_GROUP

    def validate(self, obj: Obj) -> list[Cause]:
        errs: list[Cause] = []
        ref = obj.get("roleRef") or {}
        if ref.get("apiGroup") != RBAC_GROUP:
            errs.append(v.not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [RBAC_GROUP]))
        kinds = ["Role", "ClusterRole"] if self.info.namespaced else ["ClusterRole"]
        if ref.get("kind") not in kinds:
            errs.append(v.not_supported("roleRef.kind", ref.get("kind", ""), kinds))
        name = ref.get("name") or ""
        if not name:
            errs.append(v.required("roleRef.name"))
        else:
            errs.extend(v.invalid_value("roleRef.name", name, m) for m in v.is_path_segment_name(name))
        for i, subject in enumerate(obj.get("subjects") or []):
            errs += self._validate_subject(subject or {}, f"subjects[{i}]")
        return errs

    def _validate_subject(self, subject: Obj, path: str) -> list[Cause]:
        errs: list[Cause] = []
        name, kind = subject.get("name") or "", subject.get("kind") or ""
        if not name:
            errs.append(v.required(f"{path}.name"))
        if kind == "ServiceAccount":
            if name:
                errs.extend(v.invalid_value(f"{path}.name", name, m) for m in v.is_dns1123_subdomain(name))
            if subject.get("apiGroup"):
                errs.append(v.not_supported(f"{path}.apiGroup", subject["apiGroup"], [""]))
            if not self.info.namespaced and not subject.get("namespace"):
                errs.append(v.required(f"{path}.namespace"))
        elif kind in ("User", "Group"):
            if subject.get("apiGroup") != RBAC_GROUP:
                errs.append(v.not_supported(f"{path}.apiGroup", subject.get("apiGroup", ""), [RBAC_GROUP]))
        else:
            errs.append(v.not_supported(f"{path}.kind", kind, SUBJECT_KINDS))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = self.validate(new)
        if new.get("roleRef") != old.get("roleRef"):
            errs.append(v.invalid_value("roleRef", new.get("roleRef"), "cannot change roleRef"))
        return errs
