"""The in-process CRD controller: names, establishment, serving, and cleanup on deletion.

Upstream's apiextensions-apiserver runs these controllers inside the API server (naming, establishing,
finalizer, and the handler that serves each established CRD); so does this one, writing through the
registry like any client would and watching CRDs through the watch cache:

* NamesAccepted / acceptedNames: the requested names unless another CRD of the group holds them.
* Established: once the names are accepted; the served versions then join the resource catalogue, so
  discovery, OpenAPI and the generic handlers serve them, and the watch cache decodes the CRD's stored
  objects as upstream's storage codec does (pruned and defaulted with their stored version's schema).
* Deletion: the CRD strategy puts the cleanup finalizer on a deleted CRD; here every custom object is
  deleted, then the finalizer is removed and the CRD (and its resources) go away.

    task = await CRDController(catalog, registry).start()   # serves established CRDs at once, then runs

`on_change` is called after each CRD was looked at (the APIService registration follows CRDs with it).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import Any

from pocketkube.api import errors
from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.apiserver.crd import codec, resources
from pocketkube.apiserver.crd.resources import (
    CLEANUP_FINALIZER,
    ESTABLISHED,
    NAMES_ACCEPTED,
    TERMINATING,
    condition_true,
    set_condition,
)
from pocketkube.apiserver.registry import DeleteOptions, Registry, WriteOptions
from pocketkube.apiserver.strategies.conversion import from_storage
from pocketkube.apiserver.watchcache import CacheWatcher, ResourceCache

log = logging.getLogger(__name__)

Obj = dict[str, Any]
_RETRY_SECONDS = 0.5


def _servable(crd: Obj) -> bool:
    return condition_true(crd, ESTABLISHED) or condition_true(crd, NAMES_ACCEPTED)


class CRDController:
    def __init__(self, catalog: ResourceCatalog, registry: Registry,
                 on_change: Callable[[], None] | None = None) -> None:
        info = catalog.resource(resources.GROUP, "v1", resources.PLURAL)
        assert info is not None, "the catalogue has no customresourcedefinitions resource"
        self.catalog = catalog
        self.registry = registry
        self.on_change = on_change
        self.info = info
        self._served: dict[str, list[ResourceInfo]] = {}
        self._storage_prefixes: dict[str, str] = {}
        self._retry: dict[str, float] = {}
        # Resource prefixes whose cached objects must be decoded again from storage (their CRD's schemas changed).
        self._stale: set[str] = set()

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> asyncio.Task[None]:
        """Serve every established CRD found in storage (before the server reports ready), then run.

        Returns the controller's task; cancelling it stops the controller."""
        for obj in list(self._cache().objects.values()):
            crd = from_storage(self.info, obj)
            if _servable(crd):
                self._serve(crd)
        await self._refresh_stale()
        return asyncio.create_task(self._run(), name="crd-controller")

    def _cache(self) -> ResourceCache:
        return self.registry.cache.resource(self.info.storage_prefix)

    async def _run(self) -> None:
        while True:
            try:
                await self._watch_loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("CRD controller failed; restarting")
                await asyncio.sleep(_RETRY_SECONDS)

    async def _watch_loop(self) -> None:
        cache = self._cache()
        watcher = CacheWatcher(self.info.storage_prefix, lambda _obj: True)
        cache.watchers.add(watcher)  # registered before listing: no event falls in between
        try:
            pending = {str(o["metadata"]["name"]) for o in cache.objects.values()}
            pending |= set(self._served)  # CRDs deleted while the watcher was away
            loop = asyncio.get_running_loop()
            while True:
                for name in sorted(pending):
                    await self._reconcile_safely(name)
                pending = set()
                timeout = None
                if self._retry:
                    timeout = max(0.0, min(self._retry.values()) - loop.time())
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout)
                except TimeoutError:
                    item = ("RETRY", {})
                items = [item]
                while not watcher.queue.empty():
                    items.append(watcher.queue.get_nowait())
                for entry in items:
                    if entry is None:
                        return  # the cache dropped this watcher (it refilled): start over with a new one
                    name = (entry[1].get("metadata") or {}).get("name")
                    if name:
                        pending.add(str(name))
                now = loop.time()
                for name, due in list(self._retry.items()):
                    if due <= now:
                        del self._retry[name]
                        pending.add(name)
        finally:
            cache.watchers.discard(watcher)

    async def _reconcile_safely(self, name: str) -> None:
        try:
            await self.reconcile(name)
            await self._refresh_stale()
        except errors.StatusError as err:
            log.debug("CRD %s: %s; retrying", name, err)
            self._requeue(name)
        except Exception:
            log.exception("reconciling CRD %s failed", name)
            self._requeue(name)
        if self.on_change is not None:
            self.on_change()

    def _requeue(self, name: str) -> None:
        self._retry[name] = asyncio.get_running_loop().time() + _RETRY_SECONDS

    # --- reconcile -------------------------------------------------------------------------------
    async def reconcile(self, name: str) -> None:
        stored = self.registry.cached(self.info, "", name)
        if stored is None:
            self._unserve(name)
            return
        crd = from_storage(self.info, stored)
        if (crd.get("metadata") or {}).get("deletionTimestamp"):
            await self._finalize(crd)
            return
        # Serve as soon as the names are accepted (as upstream's handler does), before the Established
        # condition is written: a client that saw Established must find the resource served.
        accepted = {**crd, "status": self._names_and_conditions(crd)}
        if _servable(accepted):
            self._serve(accepted)
        crd = await self._update_status(name, self._names_and_conditions)
        if _servable(crd):
            self._serve(crd)

    async def _update_status(self, name: str, compute: Any) -> Obj:
        """Write the status ``compute(crd)`` returns through the status subresource (no-op when unchanged)."""
        def apply(current: Obj) -> Obj:
            current["status"] = compute(current)
            return current

        return await self.registry.patch(self.info, "", name, apply, WriteOptions(), "status")

    def _claimed_names(self, crd: Obj) -> tuple[set[str], set[str]]:
        """Resource names and kinds the group's other CRDs have been granted."""
        group = resources.spec(crd).get("group")
        me = crd["metadata"]["name"]
        taken_resources: set[str] = set()
        taken_kinds: set[str] = set()
        for obj in self._cache().objects.values():
            if obj["metadata"].get("name") == me or resources.spec(obj).get("group") != group:
                continue
            accepted = (obj.get("status") or {}).get("acceptedNames") or {}
            taken_resources.update(n for n in (accepted.get("plural"), accepted.get("singular")) if n)
            taken_resources.update(accepted.get("shortNames") or [])
            taken_kinds.update(n for n in (accepted.get("kind"), accepted.get("listKind")) if n)
        return taken_resources, taken_kinds

    def _names_and_conditions(self, crd: Obj) -> Obj:
        """NamingConditionController + EstablishingController: acceptedNames and the two conditions."""
        status = copy.deepcopy(crd.get("status") or {})
        requested = resources.spec(crd).get("names") or {}
        accepted = status.get("acceptedNames") or {}
        taken_resources, taken_kinds = self._claimed_names(crd)
        names: Obj = {}
        verdict = ("True", "NoConflicts", "no conflicts found")

        def free(field: str, taken: set[str]) -> bool:
            value = requested.get(field) or ""
            return not value or value == accepted.get(field) or value not in taken

        for field, taken, reason in (("plural", taken_resources, "PluralConflict"),
                                     ("singular", taken_resources, "SingularConflict")):
            if free(field, taken):
                names[field] = requested.get(field) or ""
            else:
                names[field] = accepted.get(field) or ""
                verdict = ("False", reason, f'"{requested.get(field)}" is already in use')
        shorts = list(requested.get("shortNames") or [])
        clash = [s for s in shorts if s not in (accepted.get("shortNames") or []) and s in taken_resources]
        if clash:
            names["shortNames"] = list(accepted.get("shortNames") or [])
            verdict = ("False", "ShortNamesConflict", f'"{clash[0]}" is already in use')
        else:
            names["shortNames"] = shorts
        for field, reason in (("kind", "KindConflict"), ("listKind", "ListKindConflict")):
            if free(field, taken_kinds):
                names[field] = requested.get(field) or ""
            else:
                names[field] = accepted.get(field) or ""
                verdict = ("False", reason, f'"{requested.get(field)}" is already in use')
        names["categories"] = list(requested.get("categories") or [])
        # Go omits the empty optional names.
        status["acceptedNames"] = {k: v for k, v in names.items() if v or k in ("plural", "kind")}
        set_condition(status, NAMES_ACCEPTED, *verdict)
        if verdict[0] == "True":
            if not condition_true(crd, ESTABLISHED):
                set_condition(status, ESTABLISHED, "True", "InitialNamesAccepted",
                              "the initial names have been accepted")
        elif not condition_true(crd, ESTABLISHED):
            set_condition(status, ESTABLISHED, "False", "NotAccepted", "not all names are accepted")
        return status

    # --- serving ---------------------------------------------------------------------------------
    def _serve(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        names = (crd.get("status") or {}).get("acceptedNames") or None
        terminating = bool((crd.get("metadata") or {}).get("deletionTimestamp"))
        infos = resources.served_infos(crd, names, terminating=terminating)
        keys = {(i.group, i.version, i.plural) for i in infos}
        for old in self._served.get(name, []):
            if (old.group, old.version, old.plural) not in keys:
                self.catalog.remove(old)
        self._install_decoder(crd)
        for info in infos:
            self.catalog.add(info)
        self._served[name] = infos

    def _unserve(self, name: str) -> None:
        for info in self._served.pop(name, []):
            self.catalog.remove(info)
        prefix = self._storage_prefixes.pop(name, None)
        if prefix is not None:
            self.registry.cache.set_decoder(prefix, None, None)

    def _install_decoder(self, crd: Obj) -> None:
        """The storage decoder of the CRD's objects; objects cached under an older one are read again."""
        info = resources.storage_info(crd)
        if info is None:
            return
        key, decoder = codec.storage_decoder(info)
        if self.registry.cache.set_decoder(info.storage_prefix, key, decoder):
            self._stale.add(info.storage_prefix)
        self._storage_prefixes[crd["metadata"]["name"]] = info.storage_prefix

    async def _refresh_stale(self) -> None:
        while self._stale:
            prefix = self._stale.pop()
            try:
                await self.registry.cache.refresh(prefix)
            except BaseException:
                self._stale.add(prefix)
                raise

    # --- deletion --------------------------------------------------------------------------------
    async def _finalize(self, crd: Obj) -> None:
        """Delete every custom object of a deleted CRD, then let the CRD go (finalizer controller)."""
        name = crd["metadata"]["name"]
        if name in self._served:
            self._serve(crd)  # still served for reads and deletes, but refusing creates
        if CLEANUP_FINALIZER not in (crd["metadata"].get("finalizers") or []):
            return
        info = resources.storage_info(crd)
        if info is not None:
            await self._update_status(name, lambda c: self._terminating(c, "True", "InstanceDeletionInProgress",
                                                                        "CustomResource deletion is in progress"))
            cache = self.registry.cache.resource(info.storage_prefix)
            for obj in list(cache.items(info.storage_prefix)):
                meta = obj["metadata"]
                try:
                    await self.registry.delete(info, meta.get("namespace", ""), meta["name"], DeleteOptions())
                except errors.StatusError as err:
                    if err.code != 404:
                        raise
            await self.registry.fresh()
            if cache.items(info.storage_prefix):
                self._requeue(name)  # objects held by their own finalizers: wait for them
                return
            await self._update_status(name, lambda c: self._terminating(c, "False", "InstanceDeletionCompleted",
                                                                        "removed all instances"))

        def drop_finalizer(current: Obj) -> Obj:
            meta = current["metadata"]
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != CLEANUP_FINALIZER]
            if not meta["finalizers"]:
                del meta["finalizers"]
            return current

        await self.registry.patch(self.info, "", name, drop_finalizer, WriteOptions())

    @staticmethod
    def _terminating(crd: Obj, value: str, reason: str, message: str) -> Obj:
        status = copy.deepcopy(crd.get("status") or {})
        set_condition(status, TERMINATING, value, reason, message)
        return status
