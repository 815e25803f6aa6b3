"""Per-kind behaviour plugged into the one generic registry (apiserver/registry.py).

A Strategy never touches storage; the registry calls its hooks in this order:
create:  default -> prepare_for_create -> record_requester -> validate (+ generic metadata checks) -> [uid set]
         -> before_create -> store
update:  default -> prepare_for_update -> validate_update -> before_update -> store -> after_update
status:  prepare_for_status_update -> validate_status_update -> store
other subresources the kind owns (own_subresources, a CSR's approval):
         prepare_for_subresource_update -> validate_subresource_update -> store
delete:  store delete -> after_delete
Objects are plain dicts in their served (external) version; hooks mutate them in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from pocketkube.api.errors import Cause
from pocketkube.api.kinds import ResourceInfo
from pocketkube.apiserver import protobuf

Obj = dict[str, Any]
FieldGetter = Callable[[Obj], str]


def _meta_field(name: str) -> FieldGetter:
    return lambda obj: str(obj.get("metadata", {}).get(name, ""))


class Strategy:
    """Defaults for a kind with no special behaviour; subclasses override what differs."""

    # metadata.generation starts at 1 and grows on every spec change.
    tracks_generation = False
    # PUT of an absent object creates it (endpoints, leases, events, RBAC ...).
    allow_create_on_update = False
    # DELETE answers with the deleted object instead of a Status (pods, services).
    return_deleted_object = False
    # How metadata.name is validated (see api.validation.validate_object_meta).
    name_validator = "dns1123subdomain"
    # Unprefixed finalizers must be Kubernetes' own (false for custom resources, as upstream).
    kube_finalizers = True

    def __init__(self, info: ResourceInfo) -> None:
        self.info = info

    # --- field selectors -------------------------------------------------------------
    def field_getters(self) -> dict[str, FieldGetter]:
        """Fields this kind supports in fieldSelector (metadata.name/namespace always)."""
        getters = {"metadata.name": _meta_field("name")}
        if self.info.namespaced:
            getters["metadata.namespace"] = _meta_field("namespace")
        return getters

    # --- create ------------------------------------------------------------------------
    def prepare_for_create(self, obj: Obj) -> None:
        """Clear what a client may not set on create: the status of kinds with a status subresource."""
        if self.info.has_status:
            obj.pop("status", None)
            initial = self.initial_status(obj)
            if initial is not None:
                obj["status"] = initial

    def record_requester(self, obj: Obj, user: Any) -> None:
        """Write who is creating the object into it, for kinds that keep that (a CSR's spec.username).

        `user` is the authenticated apiserver.authn.UserInfo, None for the server's own writes."""

    def initial_status(self, obj: Obj) -> Obj | None:
        # Go's zero status struct (omitempty never drops a struct): {}, or its fields without omitempty
        # and nested structs ({"replicas": 0}, {"loadBalancer": {}}).
        return protobuf.zero_field(self.info.definition, "status") or {}

    def default(self, obj: Obj) -> None:
        """Fill in defaulted fields as upstream's SetDefaults_* functions do."""

    def validate(self, obj: Obj) -> list[Cause]:
        """Kind-specific validation (metadata is validated generically)."""
        return []

    def warnings(self, obj: Obj) -> list[str]:
        """Warnings returned to the client in Warning headers."""
        return []

    async def before_create(self, obj: Obj) -> None:
        """Last step before storing (allocations such as a Service's clusterIP). May raise StatusError."""

    async def rollback_create(self, obj: Obj) -> None:
        """Undo before_create when the write failed."""

    # --- update ------------------------------------------------------------------------
    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        """The main endpoint ignores status changes when the kind has a status subresource."""
        if self.info.has_status:
            if "status" in old:
                new["status"] = _json_copy(old["status"])
            else:
                new.pop("status", None)

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new)

    async def before_update(self, new: Obj, old: Obj) -> None:
        """Last step before storing an update (e.g. allocate a nodePort for a changed Service type)."""

    async def rollback_update(self, new: Obj, old: Obj) -> None:
        """Undo before_update when the write failed."""

    async def after_update(self, new: Obj, old: Obj) -> None:
        """After an update is stored (release what the old object held and the new one does not)."""

    # --- status subresource ------------------------------------------------------------
    def prepare_for_status_update(self, new: Obj, old: Obj) -> None:
        """/status changes only status: everything else comes from the stored object."""
        status = new.get("status")
        new.clear()
        new.update(_json_copy(old))
        if status is None:
            new.pop("status", None)
        else:
            new["status"] = status

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        return []

    # --- other subresources -----------------------------------------------------------
    # Subresources besides status whose writes this kind prepares and validates itself, as upstream gives
    # them a strategy of their own (a CSR's approval).
    own_subresources: frozenset[str] = frozenset()

    def prepare_for_subresource_update(self, subresource: str, new: Obj, old: Obj) -> None:
        """Keep from `new` only what the subresource may change; the rest comes from `old`."""

    def validate_subresource_update(self, subresource: str, new: Obj, old: Obj) -> list[Cause]:
        return []

    # --- delete ------------------------------------------------------------------------
    def grace_period(self, obj: Obj, requested: int | None) -> int:
        """Seconds to wait before the object really goes (0 = now)."""
        return 0

    def deletion_blocked(self, obj: Obj) -> bool:
        """Something besides metadata.finalizers holds the object back (a Namespace's spec.finalizers)."""
        return False

    def prepare_for_delete(self, obj: Obj) -> None:
        """Mark an object whose deletion has begun but must wait (a Namespace turns Terminating)."""

    async def after_delete(self, obj: Obj) -> None:
        """Release what the object held (cluster IPs, node ports)."""

    # --- generation --------------------------------------------------------------------
    def spec_changed(self, new: Obj, old: Obj) -> bool:
        """Whether metadata.generation must grow: anything but metadata and status changed."""
        skip = {"metadata", "status", "apiVersion", "kind"}
        keys = (set(new) | set(old)) - skip
        return any(new.get(k) != old.get(k) for k in keys)


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON data; 8x faster than copy.deepcopy for an object as big as a pod."""
    return orjson.loads(orjson.dumps(value))
