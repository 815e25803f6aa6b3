"""Garbage collector: deletes objects whose owners are gone, and carries out cascading deletion.

As upstream (pkg/controller/garbagecollector):
- a graph of every object of every resource that supports list, watch and delete (custom resources
  too, picked up by periodic discovery), linked by metadata.ownerReferences; owners that have not been
  seen yet are "virtual" nodes, verified against the API server;
- background: a dependent whose owners are all verifiably absent (404 or another UID under that name,
  by a live GET) is deleted; when some owner is still there, only the dangling references are removed;
- foreground: an owner being deleted with the `foregroundDeletion` finalizer has its dependents deleted
  (in the foreground themselves when they have dependents), and loses the finalizer once no dependent
  with blockOwnerDeletion=true is left;
- orphan: an owner being deleted with the `orphan` finalizer has its reference removed from every
  dependent, then loses the finalizer.
Writes are JSON merge patches carrying the resourceVersion they were computed from, so they never
clobber a concurrent change (a conflict is retried from a fresh read).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from pocketkube.api.kinds import PREFERRED_VERSIONS, ResourceInfo
from pocketkube.client.discovery import preferred_resources
from pocketkube.client.informer import Informer
from pocketkube.client.rest import APIError
from pocketkube.client.workqueue import ShutDown
from pocketkube.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)
Obj = dict[str, Any]

ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
# Events are never owners nor worth tracking (upstream's default ignored resources).
IGNORED_RESOURCES = frozenset({("", "events"), ("events.k8s.io", "events")})
REQUIRED_VERBS = frozenset({"list", "watch", "delete"})
ABSENT_OWNER_CACHE_SIZE = 500
CONFLICT_RETRIES = 5
MONITOR_SYNC_TIMEOUT = 30.0
DELETE_PREFIX = "delete:"
ORPHAN_PREFIX = "orphan:"


@dataclass(frozen=True)
class Identity:
    """An object's coordinates: an owner reference plus the namespace it was seen (or referenced) in."""

    api_version: str
    kind: str
    name: str
    uid: str
    namespace: str = ""

    def __str__(self) -> str:
        return (f"[{self.api_version}/{self.kind}, namespace: {self.namespace}, name: {self.name}, "
                f"uid: {self.uid}]")

    @classmethod
    def from_ref(cls, ref: Obj, namespace: str) -> Identity:
        return cls(ref.get("apiVersion", ""), ref.get("kind", ""), ref.get("name", ""), ref.get("uid", ""),
                   namespace)

    def with_namespace(self, namespace: str) -> Identity:
        return Identity(self.api_version, self.kind, self.name, self.uid, namespace)


def ref_matches(ref: Obj, identity: Identity) -> bool:
    """Whether an owner reference names exactly these coordinates (uid, name, kind, apiVersion)."""
    return (ref.get("uid") == identity.uid and ref.get("name") == identity.name
            and ref.get("kind") == identity.kind and ref.get("apiVersion") == identity.api_version)


def _blocks(ref: Obj) -> bool:
    return bool(ref.get("blockOwnerDeletion"))


def _being_deleted(meta: Obj | None) -> bool:
    return bool(meta and meta.get("deletionTimestamp"))


def _has_finalizer(meta: Obj | None, finalizer: str) -> bool:
    return finalizer in ((meta or {}).get("finalizers") or [])


def deletion_starts_with(old: Obj | None, new: Obj, finalizer: str) -> bool:
    """True when `new` is being deleted with `finalizer` and `old` (if any) was not."""
    if not _being_deleted(new) or not _has_finalizer(new, finalizer):
        return False
    return old is None or not _being_deleted(old) or not _has_finalizer(old, finalizer)


class Node:
    """One object in the graph. Identity-hashed: dependents are a set of nodes."""

    __slots__ = ("identity", "owners", "dependents", "virtual", "observed", "being_deleted",
                 "deleting_dependents")

    def __init__(self, identity: Identity, owners: list[Obj] | None = None, *, virtual: bool = False,
                 being_deleted: bool = False, deleting_dependents: bool = False) -> None:
        self.identity = identity
        self.owners: list[Obj] = list(owners or [])
        self.dependents: set[Node] = set()
        self.virtual = virtual
        self.observed = False
        self.being_deleted = being_deleted
        self.deleting_dependents = deleting_dependents

    def blocking_dependents(self) -> list[Node]:
        """Dependents whose reference to this node has blockOwnerDeletion=true."""
        uid = self.identity.uid
        return [dep for dep in self.dependents
                if any(ref.get("uid") == uid and _blocks(ref) for ref in dep.owners)]

    def __repr__(self) -> str:
        return f"Node({self.identity}, virtual={self.virtual}, observed={self.observed})"


class AbsentOwnerCache:
    """A small LRU of identities verified absent, so many dependents of one gone owner need one GET."""

    def __init__(self, size: int = ABSENT_OWNER_CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Identity, None] = OrderedDict()

    def add(self, identity: Identity) -> None:
        self._items[identity] = None
        self._items.move_to_end(identity)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __contains__(self, identity: object) -> bool:
        if identity in self._items:
            self._items.move_to_end(identity)  # type: ignore[arg-type]
            return True
        return False


def partition_dependents(dependents: list[Node], owner: Identity) -> tuple[list[Node], list[Node]]:
    """Split dependents into those that reference `owner` by exactly its coordinates and those that don't."""
    matching: list[Node] = []
    nonmatching: list[Node] = []
    for dep in dependents:
        found_match = found_mismatch = False
        if owner.namespace and owner.namespace != dep.identity.namespace:
            found_mismatch = True  # a namespaced owner can only own objects in its own namespace
        else:
            for ref in dep.owners:
                if ref.get("uid") == owner.uid:
                    if ref_matches(ref, owner):
                        found_match = True
                    else:
                        found_mismatch = True
        if found_match:
            matching.append(dep)
        if found_mismatch:
            nonmatching.append(dep)
    return matching, nonmatching


def _identity_key(identity: Identity) -> tuple[str, str, str, str, str]:
    return (identity.api_version, identity.kind, identity.namespace, identity.name, identity.uid)


def alternate_owner_identity(dependents: list[Node], absent: Identity) -> Identity | None:
    """Another identity the dependents use for the same owner UID: the first one ordered after `absent`,
    else the first one seen (so retries walk through every candidate)."""
    cluster_scoped = not absent.namespace
    seen = {absent}
    first: Identity | None = None
    first_following: Identity | None = None
    for dep in dependents:
        for ref in dep.owners:
            if ref.get("uid") != absent.uid:
                continue
            if ref_matches(ref, absent) and absent.namespace == dep.identity.namespace:
                continue
            candidate = Identity.from_ref(ref, dep.identity.namespace)
            if cluster_scoped and candidate.api_version == absent.api_version and candidate.kind == absent.kind:
                candidate = candidate.with_namespace("")
            if candidate in seen:
                continue
            seen.add(candidate)
            first = first or candidate
            if first_following is None and _identity_key(absent) < _identity_key(candidate):
                first_following = candidate
    return first_following or first


def _owner_ref_diffs(old: list[Obj], new: list[Obj]) -> tuple[list[Obj], list[Obj], list[tuple[Obj, Obj]]]:
    """(added, removed, changed) owner references, matched by UID."""
    old_by_uid = {ref.get("uid"): ref for ref in old}
    new_by_uid = {ref.get("uid"): ref for ref in new}
    added = [ref for uid, ref in new_by_uid.items() if uid not in old_by_uid]
    removed = [ref for uid, ref in old_by_uid.items() if uid not in new_by_uid]
    changed = [(old_by_uid[uid], ref) for uid, ref in new_by_uid.items()
               if uid in old_by_uid and old_by_uid[uid] != ref]
    return added, removed, changed


class Graph:
    """The ownership graph and its reactions to observed changes (upstream's GraphBuilder).

    Everything here is synchronous: informer handlers and virtual deletions run on the event loop one at a
    time, so the graph is always consistent between awaits. Work is handed out through the two callbacks.
    """

    def __init__(self, attempt_to_delete: Callable[[Node], None], attempt_to_orphan: Callable[[Node], None],
                 report_invalid_namespace: Callable[[Node, str], None] | None = None) -> None:
        self.nodes: dict[str, Node] = {}
        self.absent = AbsentOwnerCache()
        self.attempt_to_delete = attempt_to_delete
        self.attempt_to_orphan = attempt_to_orphan
        self.report_invalid_namespace = report_invalid_namespace or (lambda _node, _uid: None)

    # --- events --------------------------------------------------------------------
    def observe(self, identity: Identity, meta: Obj, old_meta: Obj | None = None) -> None:
        """An object was added or updated (as an informer saw it)."""
        existing = self.nodes.get(identity.uid)
        if existing is not None and not existing.observed:
            self._mark_observed(existing, identity)
        owners = list(meta.get("ownerReferences") or [])
        if existing is None:
            node = Node(identity, owners, being_deleted=_being_deleted(meta),
                        deleting_dependents=_being_deleted(meta) and _has_finalizer(meta, FOREGROUND_FINALIZER))
            node.observed = True
            self.nodes[identity.uid] = node
            self._add_dependent_to_owners(node, owners)
            self._process_transitions(old_meta, meta, node)
            return
        added, removed, changed = _owner_ref_diffs(existing.owners, owners)
        if added or removed or changed:
            self._add_unblocked_owners_to_delete_queue(removed, changed)
            existing.owners = owners
            self._add_dependent_to_owners(existing, added)
            self._remove_dependent_from_owners(existing, removed)
        if _being_deleted(meta):
            existing.being_deleted = True
        self._process_transitions(old_meta, meta, existing)

    def observe_deleted(self, identity: Identity) -> None:
        """An informer saw the object go away."""
        node = self.nodes.get(identity.uid)
        if node is not None:
            self._remove(node, identity)

    def virtual_delete(self, identity: Identity) -> None:
        """A live GET showed that nothing exists at `identity` (404, or another UID under that name)."""
        existing = self.nodes.get(identity.uid)
        if existing is None:
            return
        dependents = list(existing.dependents)
        if existing.virtual:
            matching, nonmatching = partition_dependents(dependents, identity)
            if nonmatching:
                # Some dependents name this owner differently: keep the node and verify their version.
                if matching:
                    self.absent.add(identity)
                    for dep in matching:
                        self.attempt_to_delete(dep)
                if existing.identity == identity:
                    replacement = alternate_owner_identity(nonmatching, identity)
                    if replacement is not None:
                        existing.identity = replacement
                        self.attempt_to_delete(existing)
                return
        elif existing.identity != identity:
            # A real, observed object is not removed by a check made under other coordinates.
            matching, _ = partition_dependents(dependents, identity)
            if matching:
                self.absent.add(identity)
                for dep in matching:
                    self.attempt_to_delete(dep)
            return
        self._remove(existing, identity)

    # --- internals -----------------------------------------------------------------
    def _mark_observed(self, node: Node, observed: Identity) -> None:
        """A virtual node's object showed up in an informer: trust what was observed from now on."""
        if observed != node.identity:
            _, invalid = partition_dependents(list(node.dependents), observed)
            for dep in invalid:
                if observed.namespace and dep.identity.namespace != observed.namespace:
                    self.report_invalid_namespace(dep, observed.uid)
                self.attempt_to_delete(dep)
            node.identity = observed
        node.virtual = False
        node.observed = True

    def _remove(self, node: Node, identity: Identity) -> None:
        del self.nodes[node.identity.uid]
        self._remove_dependent_from_owners(node, node.owners)
        if node.dependents:
            self.absent.add(identity)
        for dep in node.dependents:
            self.attempt_to_delete(dep)
        for ref in node.owners:
            owner = self.nodes.get(ref.get("uid", ""))
            if owner is not None and owner.deleting_dependents:
                self.attempt_to_delete(owner)  # one fewer dependent to wait for

    def _add_dependent_to_owners(self, node: Node, owners: list[Obj]) -> None:
        suspicious = False
        for ref in owners:
            owner = self.nodes.get(ref.get("uid", ""))
            if owner is None:
                # Not seen yet: a virtual node, verified (and dropped if absent) by the delete workers.
                owner = Node(Identity.from_ref(ref, node.identity.namespace), virtual=True)
                self.nodes[owner.identity.uid] = owner
                owner.dependents.add(node)
                self.attempt_to_delete(owner)
                continue
            owner.dependents.add(node)
            if suspicious:
                continue
            if owner.identity.namespace and owner.identity.namespace != node.identity.namespace:
                if owner.observed:
                    self.report_invalid_namespace(node, owner.identity.uid)
                suspicious = True
            elif not ref_matches(ref, owner.identity):
                suspicious = True
            elif not owner.identity.namespace and owner.identity.namespace != node.identity.namespace \
                    and not owner.observed:
                # A virtual cluster-scoped owner might really be a namespaced kind referenced from elsewhere.
                suspicious = True
        if suspicious:
            self.attempt_to_delete(node)

    def _remove_dependent_from_owners(self, node: Node, owners: list[Obj]) -> None:
        for ref in owners:
            owner = self.nodes.get(ref.get("uid", ""))
            if owner is not None:
                owner.dependents.discard(node)

    def _add_unblocked_owners_to_delete_queue(self, removed: list[Obj], changed: list[tuple[Obj, Obj]]) -> None:
        """Owners waiting in the foreground may be free to go once a blocking reference is dropped."""
        unblocked = [ref for ref in removed if _blocks(ref)]
        unblocked += [new for old, new in changed if _blocks(old) and not _blocks(new)]
        for ref in unblocked:
            owner = self.nodes.get(ref.get("uid", ""))
            if owner is not None:
                self.attempt_to_delete(owner)

    def _process_transitions(self, old_meta: Obj | None, meta: Obj, node: Node) -> None:
        if deletion_starts_with(old_meta, meta, ORPHAN_FINALIZER):
            self.attempt_to_orphan(node)
            return
        if deletion_starts_with(old_meta, meta, FOREGROUND_FINALIZER):
            node.deleting_dependents = True
            for dep in node.dependents:
                self.attempt_to_delete(dep)
            self.attempt_to_delete(node)


class _RestMappingError(Exception):
    """An owner reference names a kind the server does not (yet) serve: retry after discovery."""


class _NamespacedOwnerOfClusterScopedObject(Exception):
    """A cluster-scoped object names a namespaced owner: never resolvable, so not retried."""


class _VirtualDeleted(Exception):
    """The item was verified absent and removed from the graph: nothing left to retry."""


class GarbageCollector(Controller):
    name = "garbage-collector"
    workers = 20  # as upstream's --concurrent-gc-syncs
    resync_period = 30.0  # how often discovery looks for new (custom) resources

    def __init__(self, ctx: ControllerContext, *, resync_period: float | None = None) -> None:
        if resync_period is not None:
            self.resync_period = resync_period
        self.graph = Graph(self._enqueue_delete, self._enqueue_orphan, self._report_invalid_namespace)
        # (group, resource) -> our own informer's task, or None for a shared informer the manager runs
        self._monitors: dict[tuple[str, str], asyncio.Task[None] | None] = {}
        self._kinds: dict[tuple[str, str], ResourceInfo] = {}  # (apiVersion, kind) -> resource
        self._ready = asyncio.Event()
        super().__init__(ctx)

    # --- wiring ---------------------------------------------------------------------
    def setup(self) -> None:
        # The built-in resources are known now: monitor them with the shared informers, so the manager
        # waits for them to sync before any worker starts. Discovery adds the rest once running.
        for info in self.ctx.catalog.all():
            if self._deletable(info) and PREFERRED_VERSIONS.get(info.group) == info.version:
                informer = self.ctx.informers.informer(info)
                self._watch(info, informer)
                self._monitors[(info.group, info.plural)] = None
            self._kinds[(info.group_version, info.kind)] = info

    @staticmethod
    def _deletable(info: ResourceInfo) -> bool:
        return REQUIRED_VERBS <= set(info.verbs) and (info.group, info.plural) not in IGNORED_RESOURCES

    def _watch(self, info: ResourceInfo, informer: Informer) -> None:
        api_version, kind = info.group_version, info.kind

        def identity(obj: Obj) -> Identity:
            meta = obj.get("metadata") or {}
            return Identity(api_version, kind, meta.get("name", ""), meta.get("uid", ""),
                            meta.get("namespace", ""))

        def on_add(obj: Obj) -> None:
            self.graph.observe(identity(obj), obj.get("metadata") or {})

        def on_update(old: Obj, new: Obj) -> None:
            old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
            if old_meta.get("uid") != new_meta.get("uid"):
                # Deleted and recreated under the same name while the watch was down.
                self.graph.observe_deleted(identity(old))
                self.graph.observe(identity(new), new_meta)
                return
            self.graph.observe(identity(new), new_meta, old_meta)

        def on_delete(obj: Obj) -> None:
            self.graph.observe_deleted(identity(obj))

        informer.add_handler(on_add, on_update, on_delete)

    def _enqueue_delete(self, node: Node) -> None:
        self.queue.add(DELETE_PREFIX + node.identity.uid)

    def _enqueue_orphan(self, node: Node) -> None:
        self.queue.add(ORPHAN_PREFIX + node.identity.uid)

    def _report_invalid_namespace(self, node: Node, owner_uid: str) -> None:
        """Warn on the dependent that it names an owner in another namespace (OwnerRefInvalidNamespace)."""
        ref = next((r for r in node.owners if r.get("uid") == owner_uid), None)
        if ref is None:
            return
        owner = Identity.from_ref(ref, node.identity.namespace)
        ident = node.identity
        obj = {"apiVersion": ident.api_version, "kind": ident.kind,
               "metadata": {"name": ident.name, "namespace": ident.namespace, "uid": ident.uid}}
        self.record_event(obj, "Warning", "OwnerRefInvalidNamespace",
                          f"ownerRef {owner} does not exist in namespace \"{ident.namespace}\"")

    # --- running --------------------------------------------------------------------
    async def run(self) -> None:
        workers = [asyncio.create_task(self._gc_worker(), name=f"{self.name}-worker-{i}")
                   for i in range(self.workers)]
        try:
            while True:
                try:
                    await self.sync_monitors()
                except (APIError, OSError, aiohttp.ClientError) as err:
                    log.warning("garbage collector: discovery failed: %s", err)
                self._ready.set()
                await asyncio.sleep(self.resync_period)
        finally:
            self.queue.shutdown()
            tasks = [*workers, *(t for t in self._monitors.values() if t is not None)]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def sync_monitors(self) -> None:
        """Monitor every deletable resource discovery reports; stop monitoring the ones that went away."""
        served = {}
        for info in await preferred_resources(self.client):
            self._kinds[(info.group_version, info.kind)] = info
            if self._deletable(info):
                served[(info.group, info.plural)] = info
        started: list[Informer] = []
        for key, info in served.items():
            if key not in self._monitors:
                informer = Informer(self.client, info)
                self._watch(info, informer)
                task = asyncio.create_task(informer.run(), name=f"gc-informer-{info.plural}")
                self._monitors[key] = task
                started.append(informer)
        for key in [k for k, t in self._monitors.items() if t is not None and k not in served]:
            gone = self._monitors.pop(key)
            assert gone is not None
            gone.cancel()
        if started:
            # Pause the workers until the new resources are in the graph, or foreground deletions could
            # finish before their dependents of those kinds were seen.
            self._ready.clear()
            log.info("garbage collector: monitoring %s", ", ".join(i.info.plural for i in started))
            try:
                await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in started)),
                                       MONITOR_SYNC_TIMEOUT)
            except TimeoutError:
                log.warning("garbage collector: timed out waiting for new monitors to sync")

    async def _gc_worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self._ready.wait()
                if await self.process(str(key)):
                    self.queue.forget(key)
                else:
                    self.queue.add_rate_limited(key)
            except asyncio.CancelledError:
                raise
            except _RestMappingError as err:
                log.debug("garbage collector: %s: %s", key, err)
                self.queue.add_rate_limited(key)
            except (APIError, OSError, aiohttp.ClientError) as err:
                conflict = isinstance(err, APIError) and err.conflict
                log.log(logging.DEBUG if conflict else logging.WARNING, "garbage collector: %s: %s", key, err)
                self.queue.add_rate_limited(key)
            except Exception:
                log.exception("garbage collector: processing %s failed", key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    async def process(self, key: str) -> bool:
        """Handle one queued item; False asks for a rate-limited retry."""
        if key.startswith(ORPHAN_PREFIX):
            owner = self.graph.nodes.get(key[len(ORPHAN_PREFIX):])
            if owner is not None:
                await self.attempt_to_orphan(owner)
            return True
        node = self.graph.nodes.get(key[len(DELETE_PREFIX):])
        if node is None:
            return True
        try:
            await self.attempt_to_delete(node)
        except (_VirtualDeleted, _NamespacedOwnerOfClusterScopedObject):
            return True
        # A virtual node that exists but has not been observed yet is looked at again until it is.
        return node.observed

    # --- the API side ---------------------------------------------------------------
    async def _resource(self, api_version: str, kind: str) -> ResourceInfo:
        info = self._kinds.get((api_version, kind))
        if info is not None:
            return info
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await self.client.request("GET", path)
        except APIError as err:
            if err.not_found:
                raise _RestMappingError(f"no resource for {kind} in {api_version}") from None
            raise
        for res in listing.get("resources") or []:
            if "/" not in res["name"]:
                found = ResourceInfo(group, version, res["kind"], res["name"], bool(res.get("namespaced")),
                                     verbs=tuple(res.get("verbs") or ()))
                self._kinds[(api_version, found.kind)] = found
        info = self._kinds.get((api_version, kind))
        if info is None:
            raise _RestMappingError(f"no resource for {kind} in {api_version}")
        return info

    async def _get(self, identity: Identity) -> Obj | None:
        info = await self._resource(identity.api_version, identity.kind)
        try:
            return await self.client.get(info, identity.name, identity.namespace if info.namespaced else "")
        except APIError as err:
            if err.not_found:
                return None
            raise

    async def _patch_metadata(self, identity: Identity, change: Callable[[Obj], Obj | None]) -> None:
        """Merge-patch the metadata fields `change` computes from a fresh read, guarded by its
        resourceVersion; a conflict means someone else wrote meanwhile, so read and compute again."""
        info = await self._resource(identity.api_version, identity.kind)
        namespace = identity.namespace if info.namespaced else ""
        for attempt in range(CONFLICT_RETRIES):
            latest = await self._get(identity)
            if latest is None or latest["metadata"].get("uid") != identity.uid:
                return
            fields = change(latest["metadata"])
            if fields is None:
                return
            patch = {"metadata": {"resourceVersion": latest["metadata"]["resourceVersion"], **fields}}
            try:
                await self.client.patch(info, identity.name, patch, namespace)
                return
            except APIError as err:
                if err.not_found:
                    return
                if not err.conflict or attempt == CONFLICT_RETRIES - 1:
                    raise

    async def remove_owner_references(self, identity: Identity, owner_uids: set[str]) -> None:
        def change(meta: Obj) -> Obj | None:
            refs = meta.get("ownerReferences") or []
            kept = [ref for ref in refs if ref.get("uid") not in owner_uids]
            if len(kept) == len(refs):
                return None
            return {"ownerReferences": kept or None}

        await self._patch_metadata(identity, change)

    async def remove_finalizer(self, identity: Identity, finalizer: str) -> None:
        def change(meta: Obj) -> Obj | None:
            finalizers = meta.get("finalizers") or []
            if finalizer not in finalizers:
                return None
            return {"finalizers": [f for f in finalizers if f != finalizer] or None}

        await self._patch_metadata(identity, change)

    async def _unblock_owner_references(self, identity: Identity) -> None:
        def change(meta: Obj) -> Obj | None:
            refs = meta.get("ownerReferences") or []
            if not any(_blocks(ref) for ref in refs):
                return None
            return {"ownerReferences": [{**ref, "blockOwnerDeletion": False} if _blocks(ref) else ref
                                        for ref in refs]}

        await self._patch_metadata(identity, change)

    async def _delete(self, identity: Identity, latest: Obj, policy: str) -> None:
        """Delete exactly the version that was judged; if it changed, go on only if its owners did not."""
        info = await self._resource(identity.api_version, identity.kind)
        namespace = identity.namespace if info.namespaced else ""
        meta = latest["metadata"]
        preconditions = {"uid": identity.uid, "resourceVersion": meta.get("resourceVersion")}
        try:
            await self.client.delete(info, identity.name, namespace, propagation_policy=policy,
                                     preconditions=preconditions)
            return
        except APIError as err:
            if err.not_found:
                return
            if not err.conflict:
                raise
            live = await self._get(identity)
            if live is None or live["metadata"].get("uid") != identity.uid:
                return
            if (live["metadata"].get("ownerReferences") or []) != (meta.get("ownerReferences") or []):
                raise
        try:
            await self.client.delete(info, identity.name, namespace, propagation_policy=policy,
                                     preconditions={"uid": identity.uid})
        except APIError as err:
            if not err.not_found:
                raise

    # --- decisions ------------------------------------------------------------------
    async def attempt_to_delete(self, node: Node) -> None:
        # Being deleted is a one-way trip: its dependents are handled when it is gone.
        if node.being_deleted and not node.deleting_dependents:
            return
        latest = await self._get(node.identity)
        if latest is None or latest["metadata"].get("uid") != node.identity.uid:
            self.graph.virtual_delete(node.identity)
            raise _VirtualDeleted()
        if node.deleting_dependents:
            await self._process_deleting_dependents(node)
            return
        refs = latest["metadata"].get("ownerReferences") or []
        if not refs:
            return
        solid, dangling, waiting = await self._classify_references(node, refs)
        if solid:
            if dangling or waiting:
                # Still owned: only drop the references to owners that are gone or going in the foreground
                # (the latter would otherwise wait on this object forever).
                await self.remove_owner_references(node.identity,
                                                   {ref["uid"] for ref in (*dangling, *waiting)})
            return
        if waiting and node.dependents:
            if any(dep.deleting_dependents for dep in node.dependents):
                # A cycle of foreground deletions would wait forever: stop blocking our owners.
                await self._unblock_owner_references(node.identity)
            await self._delete(node.identity, latest, "Foreground")
            return
        # No owner left: collect it, keeping the propagation its own finalizers ask for.
        meta = latest["metadata"]
        if _has_finalizer(meta, ORPHAN_FINALIZER):
            policy = "Orphan"
        elif _has_finalizer(meta, FOREGROUND_FINALIZER):
            policy = "Foreground"
        else:
            policy = "Background"
        log.debug("garbage collector: deleting %s (%s)", node.identity, policy)
        await self._delete(node.identity, latest, policy)

    async def _classify_references(self, node: Node, refs: list[Obj]) -> tuple[list[Obj], list[Obj], list[Obj]]:
        """(solid, dangling, waiting for dependents' deletion) owner references."""
        solid: list[Obj] = []
        dangling: list[Obj] = []
        waiting: list[Obj] = []
        for ref in refs:
            owner = await self._live_owner(node, ref)
            if owner is None:
                dangling.append(ref)
            elif _being_deleted(owner["metadata"]) and _has_finalizer(owner["metadata"], FOREGROUND_FINALIZER):
                waiting.append(ref)
            else:
                solid.append(ref)
        return solid, dangling, waiting

    async def _live_owner(self, node: Node, ref: Obj) -> Obj | None:
        """The owner `ref` names, read live; None when it is verifiably absent (404 or another UID)."""
        cluster_key = Identity.from_ref(ref, "")
        namespaced_key = cluster_key.with_namespace(node.identity.namespace)
        if cluster_key in self.graph.absent or namespaced_key in self.graph.absent:
            return None
        info = await self._resource(ref.get("apiVersion", ""), ref.get("kind", ""))
        if info.namespaced and not node.identity.namespace:
            self._report_invalid_namespace(node, ref.get("uid", ""))
            raise _NamespacedOwnerOfClusterScopedObject(f"{node.identity} names a namespaced owner")
        absent_key = namespaced_key if info.namespaced else cluster_key
        try:
            owner = await self.client.get(info, ref.get("name", ""), node.identity.namespace if info.namespaced
                                          else "")
        except APIError as err:
            if not err.not_found:
                raise
            self.graph.absent.add(absent_key)
            return None
        if owner["metadata"].get("uid") != ref.get("uid"):
            self.graph.absent.add(absent_key)
            return None
        return owner

    async def _process_deleting_dependents(self, node: Node) -> None:
        blocking = node.blocking_dependents()
        if not blocking:
            log.debug("garbage collector: removing the %s finalizer from %s", FOREGROUND_FINALIZER, node.identity)
            await self.remove_finalizer(node.identity, FOREGROUND_FINALIZER)
            return
        for dep in blocking:
            if not dep.deleting_dependents:
                self._enqueue_delete(dep)

    async def attempt_to_orphan(self, owner: Node) -> None:
        dependents = list(owner.dependents)
        results = await asyncio.gather(*(self.remove_owner_references(dep.identity, {owner.identity.uid})
                                         for dep in dependents), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        log.debug("garbage collector: orphaned %d dependents of %s", len(dependents), owner.identity)
        await self.remove_finalizer(owner.identity, ORPHAN_FINALIZER)
