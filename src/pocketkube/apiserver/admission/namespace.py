"""NamespaceLifecycle (k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle).

Nothing is created in a namespace that does not exist (404) or is being terminated (403 with the
NamespaceTerminating cause), and the immortal namespaces cannot be deleted."""

from __future__ import annotations

import time

from pocketkube.api import errors

from .interfaces import CREATE, DELETE, UPDATE, AdmissionAttributes, Handler, forbidden
from .state import ClusterState

IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
# After a namespace is deleted the cache may still show it Active: look it up live for this long.
_FORCE_LIVE_LOOKUP_SECONDS = 5.0


class NamespaceLifecycle(Handler):
    name = "NamespaceLifecycle"
    operations = (CREATE, UPDATE, DELETE)

    def __init__(self, state: ClusterState, immortal: frozenset[str] = IMMORTAL_NAMESPACES) -> None:
        self.state = state
        self.immortal = immortal
        self._namespaces = state.info("", "v1", "namespaces")
        self._recently_deleted: dict[str, float] = {}

    async def admit(self, attrs: AdmissionAttributes) -> None:
        is_namespace = attrs.is_resource("", "namespaces")
        if attrs.operation == DELETE and is_namespace and attrs.name in self.immortal:
            raise errors.StatusError(403, "Forbidden", f'namespaces "{attrs.name}" is forbidden: this namespace '
                                     f"may not be deleted", {"name": attrs.name, "kind": "namespaces"})
        if is_namespace:
            if attrs.operation == DELETE and not attrs.dry_run:
                self._recently_deleted[attrs.name] = time.monotonic() + _FORCE_LIVE_LOOKUP_SECONDS
            return
        if not attrs.namespace or attrs.operation == DELETE:
            return
        # Access reviews answer about a namespace without revealing whether it exists.
        if attrs.is_resource("authorization.k8s.io", "localsubjectaccessreviews"):
            return
        namespace = self.state.get(self._namespaces, "", attrs.namespace)
        if namespace is None or (self._force_live_lookup(attrs.namespace)
                                 and (namespace.get("status") or {}).get("phase") != "Terminating"):
            # Give the cache the chance to see a namespace created just before (upstream waits, then reads
            # storage).
            await self.state.fresh()
            namespace = self.state.get(self._namespaces, "", attrs.namespace)
        if namespace is None:
            raise errors.not_found("namespaces", attrs.namespace)
        if attrs.operation == CREATE and (namespace.get("status") or {}).get("phase") == "Terminating":
            err = forbidden(attrs, f"unable to create new content in namespace {attrs.namespace} because it is "
                                   f"being terminated")
            assert err.details is not None
            err.details["causes"] = [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                      "message": f"namespace {attrs.namespace} is being terminated"}]
            raise err

    def _force_live_lookup(self, namespace: str) -> bool:
        deadline = self._recently_deleted.get(namespace)
        if deadline is None:
            return False
        if deadline < time.monotonic():
            del self._recently_deleted[namespace]
            return False
        return True

