"""The admission contract (k8s.io/apiserver/pkg/admission): attributes of a write, plugin protocols, the chain.

Every write the registry performs passes the chain: all mutating plugins in order (after decoding and
defaulting, before the strategy prepares and validates the object), then all validating plugins in order
(after validation, just before storage). Dry-run writes pass it too; plugins see `dry_run` and must not
have side effects then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pocketkube.api.errors import StatusError
from pocketkube.api.kinds import ResourceInfo

log = logging.getLogger(__name__)
Obj = dict[str, Any]

CREATE = "CREATE"
UPDATE = "UPDATE"
DELETE = "DELETE"
CONNECT = "CONNECT"
OPERATIONS = (CREATE, UPDATE, DELETE, CONNECT)


@dataclass(eq=False)
class AdmissionAttributes:
    """admission.Attributes: what is being written, by whom, and how (objects in their served version)."""

    operation: str
    info: ResourceInfo
    namespace: str
    name: str
    object: Obj | None = None
    old_object: Obj | None = None
    subresource: str = ""
    dry_run: bool = False
    # The authenticated user (apiserver.authn.UserInfo) when the request carried one; None for the
    # server's own writes.
    user: Any = None
    # The CreateOptions/UpdateOptions/DeleteOptions of the request (registry.WriteOptions/DeleteOptions).
    options: Any = None
    # Plugin bookkeeping that must survive from validation to the commit (quota charges), by plugin name.
    scratch: dict[str, Any] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return self.info.plural

    @property
    def group(self) -> str:
        return self.info.group

    @property
    def kind(self) -> str:
        return self.info.kind

    def is_resource(self, group: str, plural: str) -> bool:
        return self.info.group == group and self.info.plural == plural


@runtime_checkable
class MutatingPlugin(Protocol):
    """admission.MutationInterface: may change attrs.object in place; raises StatusError to refuse."""

    name: str

    def handles(self, operation: str) -> bool: ...

    async def admit(self, attrs: AdmissionAttributes) -> None: ...


@runtime_checkable
class ValidatingPlugin(Protocol):
    """admission.ValidationInterface: looks at the final object; raises StatusError to refuse."""

    name: str

    def handles(self, operation: str) -> bool: ...

    async def validate(self, attrs: AdmissionAttributes) -> None: ...


class Handler:
    """admission.Handler: the operations a plugin cares about."""

    name = ""
    operations: tuple[str, ...] = (CREATE, UPDATE)

    def handles(self, operation: str) -> bool:
        return operation in self.operations


def forbidden(attrs: AdmissionAttributes, reason: str) -> StatusError:
    """admission.NewForbidden: `<resource> "<name>" is forbidden: <reason>`.

    Before name generation the name is the generateName, as upstream's extractResourceName does."""
    name = attrs.name
    if not name and attrs.object is not None:
        meta = attrs.object.get("metadata") or {}
        name = meta.get("name") or meta.get("generateName") or ""
    name = name or "Unknown"
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    details: Obj = {"name": name, "kind": attrs.resource}
    if attrs.group:
        details["group"] = attrs.group
    return StatusError(403, "Forbidden", f'{qualified} "{name}" is forbidden: {reason}', details)


class AdmissionChain:
    """The ordered plugins of one API server (upstream's chainAdmissionHandler, split by phase)."""

    def __init__(self, mutating: list[MutatingPlugin] | None = None,
                 validating: list[ValidatingPlugin] | None = None) -> None:
        self.mutating = tuple(mutating or ())
        self.validating = tuple(validating or ())
        # Every plugin once, mutating ones first; worked out once, as every write walks it.
        self.plugins: list[Any] = list({id(p): p for p in (*self.mutating, *self.validating)}.values())
        self._committed_hooks = [p for p in self.plugins if hasattr(p, "committed")]
        self._aborted_hooks = [p for p in self.plugins if hasattr(p, "aborted")]

    async def admit(self, attrs: AdmissionAttributes) -> None:
        for plugin in self.mutating:
            if plugin.handles(attrs.operation):
                await plugin.admit(attrs)

    async def validate(self, attrs: AdmissionAttributes) -> None:
        for plugin in self.validating:
            if plugin.handles(attrs.operation):
                await plugin.validate(attrs)

    async def close(self) -> None:
        """Release what plugins hold (the webhooks' HTTP connections) when the server stops."""
        for plugin in self.plugins:
            hook = getattr(plugin, "close", None)
            if hook is not None:
                await hook()

    async def committed(self, attrs: AdmissionAttributes, stored: Obj | None) -> None:
        """The write that passed admission is stored (not called for dry runs). Plugins that keep derived
        state (quota usage) bring it up to date; a failure there never fails the write."""
        if attrs.dry_run:
            return
        for plugin in self._committed_hooks:
            try:
                await plugin.committed(attrs, stored)
            except Exception:
                log.exception("admission plugin %s failed after %s of %s %r", plugin.name, attrs.operation,
                              attrs.resource, attrs.name)

    async def aborted(self, attrs: AdmissionAttributes) -> None:
        """The write passed validating admission but was not stored: undo what plugins reserved for it."""
        if attrs.dry_run:
            return
        for plugin in self._aborted_hooks:
            try:
                await plugin.aborted(attrs)
            except Exception:
                log.exception("admission plugin %s could not undo its part of a failed %s of %s %r",
                              plugin.name, attrs.operation, attrs.resource, attrs.name)
