"""The one generic registry: create/get/list/update/patch/delete for every resource.

Per-kind behaviour comes from Strategy hooks (apiserver/strategies); storage is reached only here.
Objects are plain dicts. The cache holds them in their stored version; `convert` turns them into the
version a request is served in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pocketkube.api import errors
from pocketkube.api.errors import Cause, StatusError
from pocketkube.api.kinds import ResourceInfo
from pocketkube.api.names import random_suffix
from pocketkube.api.validation import validate_object_meta, validate_object_meta_update
from pocketkube.apiserver.admission.interfaces import (
    CREATE,
    DELETE,
    UPDATE,
    AdmissionAttributes,
    AdmissionChain,
)
from pocketkube.apiserver.fieldmanager import FieldManager
from pocketkube.apiserver.strategies import StrategySet
from pocketkube.apiserver.strategies.conversion import from_storage, to_storage
from pocketkube.apiserver.strategy import Strategy
from pocketkube.apiserver.watchcache import CachedKeyValue, WatchCache
from pocketkube.storage.interface import (
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RevisionMismatchError,
    Storage,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]
# Upstream's generateName alphabet: no vowels, no confusable characters.
_GENERATE_NAME_TRIES = 8
_STANDARD_FINALIZERS = ("orphan", "foregroundDeletion")


_last_stamp: tuple[int, str] = (0, "")


def now_rfc3339() -> str:
    """The current time at second precision, as metav1.Time is written (formatted once per second)."""
    global _last_stamp
    second = int(time.time())
    if _last_stamp[0] != second:
        _last_stamp = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _last_stamp[1]


_uid_pool: list[bytes] = []


def new_uid() -> str:
    """A random (version 4) UUID; random bytes are drawn from the OS in batches, not per object."""
    if not _uid_pool:
        block = os.urandom(16 * 256)
        _uid_pool.extend(block[i:i + 16] for i in range(0, len(block), 16))
    return str(uuid.UUID(bytes=_uid_pool.pop(), version=4))


def object_key(info: ResourceInfo, namespace: str, name: str) -> str:
    if info.namespaced:
        return f"{info.storage_prefix}{namespace}/{name}"
    return f"{info.storage_prefix}{name}"


def encode_for_storage(obj: Obj) -> bytes:
    """resourceVersion lives in the store's revision, not in the value."""
    meta = obj.get("metadata") or {}
    if "resourceVersion" in meta or "selfLink" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k not in ("resourceVersion", "selfLink")}}
    return orjson.dumps(obj)


def as_written(stored: Obj, revision: int) -> Obj:
    """What reading back a value just written would give (decode_kv), without encoding and decoding it again:
    a new top-level dict and metadata, nested parts shared with `stored`."""
    return {**stored, "metadata": {**(stored.get("metadata") or {}), "resourceVersion": str(revision)}}


def _cached_kv(key: str, obj: Obj) -> KeyValue:
    """A watch-cache object as the store would return it."""
    return CachedKeyValue(key, encode_for_storage(obj), 0, int(obj["metadata"]["resourceVersion"]))


def deep_copy(obj: Obj) -> Obj:
    return orjson.loads(orjson.dumps(obj))


@dataclass
class WriteOptions:
    dry_run: bool = False
    # Who is writing, for metadata.managedFields ("" = not tracked, as for the server's own writes).
    field_manager: str = ""
    # False when server-side apply already computed managedFields for this write.
    track_fields: bool = True
    # The authenticated user (authn.UserInfo) admission plugins see; None for the server's own writes.
    user: Any = None


@dataclass
class DeleteOptions:
    dry_run: bool = False
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    orphan_dependents: bool | None = None
    precondition_uid: str | None = None
    precondition_resource_version: str | None = None
    user: Any = None


class Registry:
    def __init__(self, storage: Storage, cache: WatchCache, strategies: StrategySet,
                 admission: AdmissionChain | None = None) -> None:
        self.storage = storage
        self.cache = cache
        self.strategies = strategies
        # Every write passes it; the server installs the real plugins once the registry exists.
        self.admission = admission or AdmissionChain()
        self._field_managers: dict[tuple[str, str, str, str], FieldManager | None] = {}

    def strategy(self, info: ResourceInfo) -> Strategy:
        return self.strategies.strategy_for(info)

    def field_manager(self, info: ResourceInfo) -> FieldManager | None:
        """The managedFields bookkeeper of a resource (None for kinds without a known schema)."""
        # a custom resource is typed by its CRD's current schema: a changed schema is a new manager
        schema_json = info.custom.schema_json if info.custom is not None else ""
        key = (info.group, info.version, info.plural, schema_json)
        if key not in self._field_managers:
            try:
                self._field_managers[key] = FieldManager(info.definition, info.group_version, info.kind,
                                                         info.has_status,
                                                         orjson.loads(schema_json) if schema_json else None)
            except (KeyError, ValueError):
                self._field_managers[key] = None
        return self._field_managers[key]

    def _track(self, info: ResourceInfo, live: Obj | None, new: Obj, opts: WriteOptions,
               subresource: str = "") -> None:
        if not opts.track_fields or not opts.field_manager:
            return
        manager = self.field_manager(info)
        if manager is not None:
            manager.update(live, new, opts.field_manager, now_rfc3339(), subresource)

    @staticmethod
    def _keep_managed_fields(new: Obj, entries: Any) -> None:
        new_meta = new.setdefault("metadata", {})
        if entries is None:
            new_meta.pop("managedFields", None)
        else:
            new_meta["managedFields"] = entries

    def _read_back(self, info: ResourceInfo, stored: Obj, revision: int) -> Obj:
        """The object just written as a read of it gives: as_written, then the storage decoder if the resource
        has one (a custom object read back is defaulted with its storage version's schema, as upstream's
        store decodes what it wrote)."""
        written = as_written(stored, revision)
        decoder = self.cache.decoder(info.storage_prefix)
        return written if decoder is None else decoder(deep_copy(written))

    # --- reads -----------------------------------------------------------------------
    async def fresh(self) -> None:
        """Make the cache reflect every acknowledged write before a consistent read."""
        if not await self.cache.wait_fresh():
            raise errors.timeout("the watch cache did not catch up with storage in time; try again")

    def cached(self, info: ResourceInfo, namespace: str, name: str) -> Obj | None:
        return self.cache.resource(info.storage_prefix).objects.get(object_key(info, namespace, name))

    async def get(self, info: ResourceInfo, namespace: str, name: str, resource_version: str = "") -> Obj:
        if resource_version not in ("", "0"):
            await self._wait_not_older_than(resource_version)
        elif resource_version == "":
            if not self.storage.events_are_immediate:
                # A consistent read of one object: one round trip to the store, as upstream reads etcd.
                kv = await self.storage.get(object_key(info, namespace, name))
                if kv is None:
                    raise errors.not_found(info.plural, name, info.group)
                return from_storage(info, self.cache.decode(kv))
            await self.fresh()
        obj = self.cached(info, namespace, name)
        if obj is None:
            raise errors.not_found(info.plural, name, info.group)
        return from_storage(info, obj)

    async def _wait_not_older_than(self, resource_version: str) -> None:
        revision = parse_resource_version(resource_version)
        if not await self.cache.wait_for(revision):
            raise StatusError(504, "Timeout", f"Too large resource version: {revision}, current: "
                              f"{self.cache.revision}",
                              {"causes": [{"reason": "ResourceVersionTooLarge",
                                           "message": "Too large resource version"}], "retryAfterSeconds": 1})

    async def read_current(self, info: ResourceInfo, key: str, from_cache: bool) -> tuple[KeyValue | None, bool]:
        """The object a write starts from, and whether it is known to be current.

        With an embedded store the cache catches up first (cheap), so its object is current and a client
        reads its own writes. With a remote store catching up costs a round trip, so the cache's object is
        taken as it is, as upstream's GuaranteedUpdate takes the watch cache's: a write started from it that
        fails its compare-and-swap, or that would be judged a conflict or a no-op, reads the store and tries
        again. A miss in the cache always reads the store (the object may be newer than the cache)."""
        if from_cache:
            objects = self.cache.resource(info.storage_prefix).objects
            if self.storage.events_are_immediate:
                if await self.cache.wait_fresh():
                    obj = objects.get(key)
                    return (None if obj is None else _cached_kv(key, obj)), True
            elif (obj := objects.get(key)) is not None:
                return _cached_kv(key, obj), False
        return await self.storage.get(key), True

    # --- create ----------------------------------------------------------------------
    async def create(self, info: ResourceInfo, namespace: str, obj: Obj, opts: WriteOptions) -> Obj:
        strategy = self.strategy(info)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        self._check_namespace_field(info, namespace, meta)
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "resourceVersion", "selfLink", "generation"):
            meta.pop(field, None)
        strategy.default(obj)
        self._track(info, None, obj, opts)
        attrs = AdmissionAttributes(CREATE, info, namespace if info.namespaced else "", meta.get("name") or "",
                                    obj, dry_run=opts.dry_run, user=opts.user, options=opts)
        await self.admission.admit(attrs)
        strategy.prepare_for_create(obj)
        strategy.record_requester(obj, opts.user)
        generate = not meta.get("name") and bool(meta.get("generateName"))
        if generate:
            meta["name"] = self._generated_name(meta["generateName"])
        causes = validate_object_meta(meta, info.namespaced, strategy.name_validator,
                                      kube_finalizers=strategy.kube_finalizers)
        causes += strategy.validate(obj)
        if causes:
            raise errors.invalid(info.kind, meta.get("name") or meta.get("generateName", ""), info.group, causes)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_rfc3339()
        if strategy.tracks_generation:
            meta["generation"] = 1
        attrs.name = meta["name"]
        await self.admission.validate(attrs)
        try:
            await strategy.before_create(obj)
            if opts.dry_run:
                await strategy.rollback_create(obj)
                return obj
            stored = to_storage(info, obj)
            for attempt in range(_GENERATE_NAME_TRIES):
                key = object_key(info, namespace, meta["name"])
                try:
                    kv = await self.storage.create(key, encode_for_storage(stored))
                    break
                except KeyExistsError:
                    if not generate or attempt == _GENERATE_NAME_TRIES - 1:
                        await strategy.rollback_create(obj)
                        raise errors.already_exists(info.plural, meta["name"], info.group) from None
                    meta["name"] = self._generated_name(meta["generateName"])
                except BaseException:
                    await strategy.rollback_create(obj)
                    raise
        except BaseException:
            await self.admission.aborted(attrs)
            raise
        created = from_storage(info, self._read_back(info, stored, kv.mod_revision))
        await self.admission.committed(attrs, created)
        return created

    @staticmethod
    def _generated_name(base: str) -> str:
        return base[:58] + random_suffix()

    @staticmethod
    def _check_namespace_field(info: ResourceInfo, namespace: str, meta: Obj) -> None:
        if info.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace "
                                         "sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)

    # --- update ----------------------------------------------------------------------
    async def update(self, info: ResourceInfo, namespace: str, name: str, obj: Obj, opts: WriteOptions,
                     subresource: str = "") -> tuple[Obj, bool]:
        """PUT. Returns (object, created)."""
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on "
                                     f"the URL ({name})")
        meta["name"] = name
        self._check_namespace_field(info, namespace, meta)
        key = object_key(info, namespace, name)
        precondition = meta.get("resourceVersion") or ""
        from_cache = True
        while True:
            current, verified = await self.read_current(info, key, from_cache)
            from_cache = False
            if current is None:
                if subresource or not self.strategy(info).allow_create_on_update:
                    raise errors.not_found(info.plural, name, info.group)
                try:
                    return await self.create(info, namespace, obj, opts), True
                except StatusError as err:
                    if err.reason == "AlreadyExists":
                        continue
                    raise
            try:
                if precondition and precondition != str(current.mod_revision):
                    raise errors.stale_update(info.plural, name, info.group)
                return await self._update_from(info, current, deep_copy(obj), opts, subresource, verified), False
            except StatusError:
                if verified:
                    raise
                # judged from the cache's copy, which may be behind the store: judge again from the store
            except (RevisionMismatchError, KeyNotFoundError):
                # changed or deleted meanwhile: the version the client named is gone
                if precondition and verified:
                    raise errors.stale_update(info.plural, name, info.group) from None

    async def patch(self, info: ResourceInfo, namespace: str, name: str,
                    apply_patch: Callable[[Obj], Obj], opts: WriteOptions, subresource: str = "") -> Obj:
        """PATCH: `apply_patch` turns the current object (served version) into the new one."""
        key = object_key(info, namespace, name)
        from_cache = True
        while True:
            current, verified = await self.read_current(info, key, from_cache)
            from_cache = False
            if current is None:
                raise errors.not_found(info.plural, name, info.group)
            served = from_storage(info, self.cache.decode(current))
            served_version = served["metadata"].get("resourceVersion")
            try:
                # `served` was decoded for this request alone: the patch may change it in place, no copy needed.
                new = apply_patch(served)
                if not isinstance(new, dict):
                    raise errors.bad_request("the patch did not produce an object")
                new_meta = new.get("metadata")
                if not isinstance(new_meta, dict):
                    new_meta = new["metadata"] = {}
                precondition = new_meta.get("resourceVersion") or ""
                # A patch that names a resourceVersion must match it; an unchanged one retries on conflict.
                explicit = precondition != served_version
                if explicit and precondition and precondition != str(current.mod_revision):
                    raise errors.stale_update(info.plural, name, info.group)
                if new_meta.get("name", name) != name:
                    raise errors.bad_request(f"the name of the object ({new_meta.get('name')}) does not match "
                                             f"the name on the URL ({name})")
                return await self._update_from(info, current, new, opts, subresource, verified)
            except StatusError:
                if verified:
                    raise
                # judged from the cache's copy (a conflict too): judge again from the store
            except (RevisionMismatchError, KeyNotFoundError):
                # Changed or deleted meanwhile: read again (a deleted object then answers 404).
                if explicit and precondition and verified:
                    raise errors.stale_update(info.plural, name, info.group) from None

    async def _update_from(self, info: ResourceInfo, current: KeyValue, new: Obj, opts: WriteOptions,
                           subresource: str, verified: bool = True) -> Obj:
        """Write `new` over `current`; when `current` may be behind the store (not `verified`), a write that
        would change nothing raises RevisionMismatchError so that the caller judges it against the store."""
        strategy = self.strategy(info)
        old = from_storage(info, self.cache.decode(current))
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if not meta.get("uid"):
            meta["uid"] = old_meta.get("uid")
        for field in ("creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if info.namespaced:
            meta["namespace"] = old_meta.get("namespace")
        # A binding is a create of pods/binding upstream (refused in a terminating namespace, for one).
        attrs = AdmissionAttributes(CREATE if subresource == "binding" else UPDATE, info, meta.get("namespace") or "",
                                    old_meta.get("name", ""), new, old, subresource, opts.dry_run, opts.user, opts)
        await self.admission.admit(attrs)
        if subresource == "status":
            applied_fields = meta.get("managedFields")
            # upstream decodes every body with defaulting, a status write's too (its spec is the old one's next)
            strategy.default(new)
            strategy.prepare_for_status_update(new, old)
            if not opts.track_fields:
                # managedFields a server-side apply computed for this write are kept, as upstream's
                # ResetObjectMetaForStatus keeps them; the rest of metadata comes from the stored object
                self._keep_managed_fields(new, applied_fields)
            self._track(info, old, new, opts, subresource)
            # validateCommonFields: generic metadata checks on every update, /status included
            causes = validate_object_meta(meta, info.namespaced, strategy.name_validator, kube_finalizers=False)
            causes += validate_object_meta_update(meta, old_meta, kube_finalizers=False)
            causes += strategy.validate_status_update(new, old)
        elif subresource in ("binding", "finalize"):
            causes = []  # the server built this change itself, to fields the main endpoint protects
        elif subresource in strategy.own_subresources:
            applied_fields = meta.get("managedFields")
            strategy.default(new)
            strategy.prepare_for_subresource_update(subresource, new, old)
            if not opts.track_fields:
                self._keep_managed_fields(new, applied_fields)
            self._track(info, old, new, opts, subresource)
            causes = validate_object_meta(meta, info.namespaced, strategy.name_validator, kube_finalizers=False)
            causes += validate_object_meta_update(meta, old_meta, kube_finalizers=False)
            causes += strategy.validate_subresource_update(subresource, new, old)
        else:
            strategy.default(new)
            strategy.prepare_for_update(new, old)
            self._track(info, old, new, opts, subresource)
            kube_finalizers = strategy.kube_finalizers  # False for custom resources
            causes = validate_object_meta(meta, info.namespaced,
                                          strategy.name_validator,
                                          kube_finalizers=kube_finalizers)
            causes += validate_object_meta_update(meta, old_meta, kube_finalizers=kube_finalizers)
            causes += strategy.validate_update(new, old)
            if strategy.tracks_generation and strategy.spec_changed(new, old):
                meta["generation"] = int(old_meta.get("generation") or 0) + 1
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                causes.append(Cause("metadata.finalizers", "Forbidden: no new finalizers can be added if the "
                                    "object is being deleted, found new finalizers " + str(sorted(added)),
                                    "FieldValueForbidden"))
        if causes:
            raise errors.invalid(info.kind, meta.get("name", ""), info.group, causes)
        await self.admission.validate(attrs)
        if new == old:
            if not verified:
                await self.admission.aborted(attrs)
                raise RevisionMismatchError(current.key, None)
            return old  # a no-op write keeps the resourceVersion, as upstream
        try:
            await strategy.before_update(new, old)
            try:
                if opts.dry_run:
                    await strategy.rollback_update(new, old)
                    return new
                # Upstream's shouldDeleteDuringUpdate: only once no grace period is left (a terminating
                # pod keeps its object, and its kubelet's status updates, until the kubelet deletes it).
                if old_meta.get("deletionTimestamp") and old_meta.get("deletionGracePeriodSeconds") == 0 and \
                        not meta.get("finalizers") and not strategy.deletion_blocked(new):
                    deleted = await self.storage.delete(current.key, current.mod_revision)
                    await strategy.after_delete(new)
                    gone = from_storage(info, self.cache.decode(deleted))
                    # Admission bookkeeping (quota usage) sees the object go, as after a DELETE.
                    await self.admission.committed(AdmissionAttributes(
                        DELETE, info, attrs.namespace, attrs.name, None, gone, user=opts.user,
                        scratch=attrs.scratch), gone)
                    return gone
                stored = to_storage(info, new)
                kv = await self.storage.update(current.key, encode_for_storage(stored), current.mod_revision)
            except BaseException:
                await strategy.rollback_update(new, old)
                raise
        except BaseException:
            await self.admission.aborted(attrs)
            raise
        await strategy.after_update(new, old)
        updated = from_storage(info, self._read_back(info, stored, kv.mod_revision))
        await self.admission.committed(attrs, updated)
        return updated

    # --- delete ----------------------------------------------------------------------
    async def delete(self, info: ResourceInfo, namespace: str, name: str,
                     opts: DeleteOptions) -> tuple[Obj, bool]:
        """Returns (object, deleted now). An object held by finalizers or a grace period stays, marked."""
        strategy = self.strategy(info)
        key = object_key(info, namespace, name)
        attrs = AdmissionAttributes(DELETE, info, namespace if info.namespaced else "", name, None, None,
                                    dry_run=opts.dry_run, user=opts.user, options=opts)
        await self.admission.admit(attrs)
        from_cache = True
        while True:
            current, verified = await self.read_current(info, key, from_cache)
            from_cache = False
            if current is None:
                raise errors.not_found(info.plural, name, info.group)
            obj = from_storage(info, self.cache.decode(current))
            try:
                self._check_preconditions(info, obj, opts)
                attrs.old_object = from_storage(info, self.cache.decode(current))
                await self.admission.validate(attrs)
            except StatusError:
                if verified:
                    raise
                continue  # judged from the cache's copy, which may be behind the store: judge from the store
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            policy = opts.propagation_policy
            if policy is None and opts.orphan_dependents is not None:
                policy = "Orphan" if opts.orphan_dependents else "Background"
            grace = strategy.grace_period(obj, opts.grace_period_seconds)
            marked = self._mark_for_deletion(strategy, obj, finalizers, policy, grace)
            unchanged = marked and obj == attrs.old_object  # already marked as this deletion would mark it
            if not verified and (opts.dry_run or unchanged):
                continue  # nothing is written to prove the cache's copy current: read the store
            if opts.dry_run:
                return obj, not marked
            try:
                if marked:
                    if unchanged:
                        return obj, False
                    kv = await self.storage.update(key, encode_for_storage(to_storage(info, obj)),
                                                   current.mod_revision)
                    return from_storage(info, self.cache.decode(kv)), False
                deleted = await self.storage.delete(key, current.mod_revision)
            except (RevisionMismatchError, KeyNotFoundError):
                continue
            await strategy.after_delete(obj)
            gone = from_storage(info, self.cache.decode(deleted))
            await self.admission.committed(attrs, gone)
            return gone, True

    @staticmethod
    def _check_preconditions(info: ResourceInfo, obj: Obj, opts: DeleteOptions) -> None:
        meta = obj["metadata"]
        if opts.precondition_uid and opts.precondition_uid != meta.get("uid"):
            raise errors.conflict(info.plural, meta["name"], info.group,
                                  f"Precondition failed: UID in precondition: {opts.precondition_uid}, "
                                  f"UID in object meta: {meta.get('uid')}")
        if opts.precondition_resource_version and opts.precondition_resource_version != meta.get("resourceVersion"):
            raise errors.conflict(info.plural, meta["name"], info.group,
                                  f"Precondition failed: ResourceVersion in precondition: "
                                  f"{opts.precondition_resource_version}, ResourceVersion in object meta: "
                                  f"{meta.get('resourceVersion')}")

    @staticmethod
    def _mark_for_deletion(strategy: Strategy, obj: Obj, finalizers: list[str], policy: str | None,
                           grace: int) -> bool:
        """Record a deletion that must wait; False when the object can go right away."""
        meta = obj["metadata"]
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers = [f for f in finalizers if f != "foregroundDeletion"] + ["orphan"]
        elif policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers = [f for f in finalizers if f != "orphan"] + ["foregroundDeletion"]
        elif policy == "Background":
            finalizers = [f for f in finalizers if f not in _STANDARD_FINALIZERS]
        # Propagation finalizers only matter for an object that has dependents to care about;
        # recording them on a plain delete would hold it until the garbage collector runs.
        if not finalizers and not strategy.deletion_blocked(obj) and grace == 0:
            return False
        if finalizers != list(meta.get("finalizers") or []):
            meta["finalizers"] = finalizers
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = (datetime.now(UTC) + timedelta(seconds=grace)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            meta["deletionGracePeriodSeconds"] = grace
        elif grace < int(meta.get("deletionGracePeriodSeconds") or 0):
            meta["deletionGracePeriodSeconds"] = grace
        strategy.prepare_for_delete(obj)
        return True


def parse_resource_version(value: str) -> int:
    # strconv.ParseUint(value, 10, 64): digits only, within uint64
    if not value.isascii() or not value.isdigit() or len(value) > 20 or int(value) >= 2**64:
        raise errors.bad_request(f"invalid resource version: {value}")
    return int(value)


async def gather_ignore_missing(coros: list[Any]) -> list[Any]:
    """Run deletions together; objects that vanished meanwhile are not errors."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    out = []
    for result in results:
        if isinstance(result, StatusError) and result.code == 404:
            continue
        if isinstance(result, BaseException):
            raise result
        out.append(result)
    return out
