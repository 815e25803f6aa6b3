"""RuntimeClass admission (plugin/pkg/admission/runtimeclass): a pod naming a RuntimeClass gets the class's
pod overhead and scheduling constraints (node selector merged, tolerations added); a class that does not
exist, an overhead that contradicts the class, or a node selector that conflicts with it is refused."""

from __future__ import annotations

import copy
from typing import Any

from .interfaces import CREATE, AdmissionAttributes, Handler, forbidden
from .state import ClusterState

Obj = dict[str, Any]


class RuntimeClass(Handler):
    name = "RuntimeClass"
    operations = (CREATE,)

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._classes = state.info("node.k8s.io", "v1", "runtimeclasses")

    async def _class_of(self, attrs: AdmissionAttributes) -> tuple[Obj, Obj | None] | None:
        """The pod's spec and its RuntimeClass (None without runtimeClassName); None for anything not a pod."""
        if attrs.subresource or not attrs.is_resource("", "pods"):
            return None
        spec = (attrs.object or {}).get("spec")
        if not isinstance(spec, dict):
            return None
        name = spec.get("runtimeClassName")
        if not name:
            return spec, None
        found = await self.state.get_fresh(self._classes, "", name)
        if found is None:
            raise forbidden(attrs, f'pod rejected: RuntimeClass "{name}" not found')
        return spec, found

    async def admit(self, attrs: AdmissionAttributes) -> None:
        found = await self._class_of(attrs)
        if found is None or found[1] is None:
            return
        spec, runtime_class = found
        fixed = (runtime_class.get("overhead") or {}).get("podFixed")
        if fixed is not None:
            if spec.get("overhead") and spec["overhead"] != fixed:
                raise forbidden(attrs, "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead")
            spec["overhead"] = copy.deepcopy(fixed)
        scheduling = runtime_class.get("scheduling") or {}
        selector = dict(spec.get("nodeSelector") or {})
        for key, value in (scheduling.get("nodeSelector") or {}).items():
            if key in selector and selector[key] != value:
                raise forbidden(attrs, f"conflict: runtimeClass.scheduling.nodeSelector[{key}] = {value}; "
                                       f"pod.spec.nodeSelector[{key}] = {selector[key]}")
            selector[key] = value
        if selector:
            spec["nodeSelector"] = selector
        tolerations = list(spec.get("tolerations") or [])
        for toleration in scheduling.get("tolerations") or []:
            if toleration not in tolerations:
                tolerations.append(copy.deepcopy(toleration))
        if tolerations:
            spec["tolerations"] = tolerations

    async def validate(self, attrs: AdmissionAttributes) -> None:
        found = await self._class_of(attrs)
        if found is None:
            return
        spec, runtime_class = found
        fixed = ((runtime_class or {}).get("overhead") or {}).get("podFixed")
        if fixed is not None:
            if spec.get("overhead") != fixed:
                raise forbidden(attrs, "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead")
        elif spec.get("overhead"):
            raise forbidden(attrs, "pod rejected: Pod Overhead set without corresponding RuntimeClass defined "
                                   "Overhead")
