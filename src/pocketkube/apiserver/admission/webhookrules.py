"""Which requests a webhook of a Mutating/ValidatingWebhookConfiguration is called for (upstream's
admission/plugin/webhook/predicates: rules, namespaceSelector, objectSelector)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pocketkube.api.selectors import LabelSelector, SelectorError

from .interfaces import AdmissionAttributes

Obj = dict[str, Any]

# Never sent to webhooks, so that a broken webhook cannot lock its own configuration (and the policies) in.
EXEMPT_RESOURCES = frozenset({
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
})


@dataclass(frozen=True)
class Rule:
    operations: tuple[str, ...]
    api_groups: tuple[str, ...]
    api_versions: tuple[str, ...]
    resources: tuple[str, ...]
    scope: str

    @classmethod
    def parse(cls, raw: Obj) -> Rule:
        return cls(tuple(raw.get("operations") or ()), tuple(raw.get("apiGroups") or ()),
                   tuple(raw.get("apiVersions") or ()), tuple(raw.get("resources") or ()),
                   raw.get("scope") or "*")

    def matches(self, attrs: AdmissionAttributes) -> bool:
        info = attrs.info
        return (_listed(self.operations, attrs.operation) and _listed(self.api_groups, info.group)
                and _listed(self.api_versions, info.version) and self._resource(info.plural, attrs.subresource)
                and self._scope(info.namespaced))

    def _resource(self, resource: str, subresource: str) -> bool:
        for entry in self.resources:
            wanted, _, wanted_sub = entry.partition("/")
            if wanted in ("*", resource) and wanted_sub in ("*", subresource):
                return True
        return False

    def _scope(self, namespaced: bool) -> bool:
        if self.scope == "Cluster":
            return not namespaced
        if self.scope == "Namespaced":
            return namespaced
        return True


def _listed(values: tuple[str, ...], value: str) -> bool:
    return "*" in values or value in values


def selector(raw: Any) -> LabelSelector:
    """A webhook's namespaceSelector/objectSelector; absent or empty selects everything."""
    try:
        return LabelSelector.from_dict(raw or {})
    except SelectorError:
        return LabelSelector.nothing()


def object_selected(sel: LabelSelector, attrs: AdmissionAttributes) -> bool:
    """objectSelector: empty, or the new or the old object's labels match (a delete has only the old one)."""
    if sel.empty:
        return True
    return any(obj is not None and sel.matches(_labels(obj)) for obj in (attrs.object, attrs.old_object))


def _labels(obj: Obj) -> Mapping[str, str]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    labels = meta.get("labels")
    return labels if isinstance(labels, dict) else {}


def namespace_labels(attrs: AdmissionAttributes, namespaces: Mapping[str, Obj | None]) -> Mapping[str, str] | None:
    """The labels a namespaceSelector is matched against, or None when it does not apply: cluster-scoped
    objects other than namespaces are always selected. A namespace is matched by its own labels."""
    if attrs.info.group == "" and attrs.info.plural == "namespaces" and not attrs.subresource:
        obj = attrs.object if attrs.object is not None else attrs.old_object
        return _labels(obj) if obj is not None else {}
    if not attrs.info.namespaced:
        return None
    namespace = namespaces.get(attrs.namespace)
    return _labels(namespace) if namespace is not None else {}
