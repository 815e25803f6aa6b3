"""DefaultStorageClass: a claim that names no class gets the cluster's default one (plugin/pkg/admission/
storage/storageclass/setdefault).

An explicit "" means "no class" and is left alone, as is the beta storage-class annotation. Of several
default classes the newest wins (ties by name), as upstream since 1.28.
"""

from __future__ import annotations

from typing import Any

from .interfaces import CREATE, AdmissionAttributes, Handler
from .state import ClusterState

Obj = dict[str, Any]

BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")


def is_default_class(storage_class: Obj) -> bool:
    annotations = (storage_class.get("metadata") or {}).get("annotations") or {}
    return any(annotations.get(key) == "true" for key in DEFAULT_CLASS_ANNOTATIONS)


class DefaultStorageClass(Handler):
    name = "DefaultStorageClass"
    operations = (CREATE,)

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._classes = state.info("storage.k8s.io", "v1", "storageclasses")

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if not attrs.is_resource("", "persistentvolumeclaims") or attrs.subresource or attrs.object is None:
            return
        claim = attrs.object
        spec = claim.get("spec")
        annotations = (claim.get("metadata") or {}).get("annotations") or {}
        if not isinstance(spec, dict) or "storageClassName" in spec or BETA_CLASS_ANNOTATION in annotations:
            return
        defaults = [c for c in self.state.list(self._classes) if is_default_class(c)]
        if not defaults:
            return
        # max() keeps the first of equals: sorting by name first makes ties go to the first name.
        by_name = sorted(defaults, key=lambda c: c["metadata"]["name"])
        newest = max(by_name, key=lambda c: c["metadata"].get("creationTimestamp", ""))
        spec["storageClassName"] = newest["metadata"]["name"]
