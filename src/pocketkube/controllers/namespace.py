"""Namespace controller: empties a namespace that is being deleted, then releases its finalizer.

As upstream: every namespaced resource the server serves (custom resources too) is deleted from the
namespace; while something remains (finalizers, graceful pods) the NamespaceContentRemaining condition
says what, and the namespace is looked at again shortly. Once empty, the `kubernetes` finalizer is
removed through /finalize and the API server deletes the namespace.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pocketkube.client.discovery import preferred_resources
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller

log = logging.getLogger(__name__)
Obj = dict[str, Any]
FINALIZER = "kubernetes"
RECHECK_SECONDS = 2.0
# Condition type -> (reason, message) while the condition is False, as upstream reports them.
_CLEARED = {
    "NamespaceDeletionDiscoveryFailure": ("ResourcesDiscovered", "All resources successfully discovered"),
    "NamespaceDeletionGroupVersionParsingFailure": ("ParsedGroupVersions",
                                                    "All legacy kube types successfully parsed"),
    "NamespaceDeletionContentFailure": ("ContentDeleted",
                                        "All content successfully deleted, may be waiting on finalization"),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": ("ContentHasNoFinalizers", "All content-preserving finalizers finished"),
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NamespaceController(Controller):
    name = "namespace"

    def setup(self) -> None:
        self.namespaces = self.ctx.informer("", "v1", "namespaces")
        self.namespaces.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new))
        self.ns_info = self.ctx.resource("", "v1", "namespaces")

    async def reconcile(self, key: str) -> None:
        namespace = self.namespaces.store.get(key)
        if namespace is None or not namespace["metadata"].get("deletionTimestamp"):
            return
        if FINALIZER not in ((namespace.get("spec") or {}).get("finalizers") or []):
            return
        try:
            resources = [r for r in await preferred_resources(self.client)
                         if r.namespaced and "list" in r.verbs and "delete" in r.verbs]
        except (APIError, OSError) as err:
            await self._set_conditions(namespace, {"NamespaceDeletionDiscoveryFailure": (
                "DiscoveryFailed", f"Discovery failed: {err}")})
            raise
        remaining: dict[str, int] = {}
        finalizers: Counter[str] = Counter()
        failures: list[str] = []
        for info in resources:
            try:
                items = (await self.client.list(info, key)).get("items") or []
                if not items:
                    continue
                for item in items:
                    meta = item["metadata"]
                    if not meta.get("deletionTimestamp"):
                        await self._delete(info, meta["name"], key)
                items = (await self.client.list(info, key)).get("items") or []
            except APIError as err:
                failures.append(f"{info.plural}.{info.group or 'core'}: {err}")
                continue
            if items:
                group_resource = f"{info.plural}.{info.group}" if info.group else info.plural
                remaining[group_resource] = len(items)
                for item in items:
                    finalizers.update(item["metadata"].get("finalizers") or [])
        conditions: dict[str, tuple[str, str]] = {}
        if failures:
            conditions["NamespaceDeletionContentFailure"] = ("ContentDeletionFailed",
                                                             "Failed to delete all resource types, "
                                                             f"{len(failures)} remaining: " + "; ".join(failures))
        if remaining:
            conditions["NamespaceContentRemaining"] = ("SomeResourcesRemain", "Some resources are remaining: " +
                                                       ", ".join(f"{r} has {n} resource instances"
                                                                 for r, n in sorted(remaining.items())))
        if finalizers:
            conditions["NamespaceFinalizersRemaining"] = ("SomeFinalizersRemain", "Some content in the namespace "
                                                          "has finalizers remaining: " + ", ".join(
                                                              f"{f} in {n} resource instances"
                                                              for f, n in sorted(finalizers.items())))
        namespace = await self._set_conditions(namespace, conditions)
        if remaining or failures:
            self.queue.add_after(key, RECHECK_SECONDS)
            return
        spec = namespace.get("spec") or {}
        spec["finalizers"] = [f for f in spec.get("finalizers") or [] if f != FINALIZER]
        namespace["spec"] = spec
        try:
            await self.client.update(self.ns_info, namespace, "finalize")
        except APIError as err:
            if not err.not_found:
                raise

    async def _delete(self, info: Any, name: str, namespace: str) -> None:
        try:
            await self.client.delete(info, name, namespace, propagation_policy="Background")
        except APIError as err:
            if not err.not_found:
                raise

    async def _set_conditions(self, namespace: Obj, wanted: dict[str, tuple[str, str]]) -> Obj:
        """Record the deletion conditions on the namespace's status (False for the ones that cleared)."""
        status = namespace.get("status") or {}
        current = {c["type"]: c for c in status.get("conditions") or []}
        conditions = []
        changed = False
        for ctype, cleared in _CLEARED.items():
            reason, message = wanted.get(ctype, cleared)
            new = {"type": ctype, "status": "True" if ctype in wanted else "False", "reason": reason,
                   "message": message}
            old = current.get(ctype)
            if old and all(old.get(k) == new[k] for k in ("status", "reason", "message")):
                conditions.append(old)
                continue
            new["lastTransitionTime"] = _now()
            conditions.append(new)
            changed = True
        if not changed:
            return namespace
        try:
            return await self.client.patch(self.ns_info, namespace["metadata"]["name"],
                                           {"status": {"conditions": conditions}}, subresource="status")
        except APIError as err:
            if err.not_found:
                return namespace
            raise
