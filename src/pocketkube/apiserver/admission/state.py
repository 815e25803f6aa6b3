"""The cluster as admission plugins see it: the API server's own watch cache, read-only.

Upstream's plugins read shared informers and fall back to a live read when the cache may lag; here the
watch cache plays the informer and a fresh read (the cache caught up with storage) the live lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pocketkube.api.kinds import ResourceInfo
from pocketkube.apiserver.strategies.conversion import from_storage

if TYPE_CHECKING:
    from pocketkube.apiserver.registry import Registry

Obj = dict[str, Any]


class ClusterState:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def info(self, group: str, version: str, plural: str) -> ResourceInfo:
        info = self._registry.strategies.catalog.resource(group, version, plural)
        if info is None:
            raise LookupError(f"no resource {plural} in {group or 'core'}/{version}")
        return info

    def resolve(self, group: str, plural: str) -> ResourceInfo | None:
        """Any served version of a resource (all versions of one resource share its stored objects)."""
        for info in self._registry.strategies.catalog.all():
            if info.group == group and info.plural == plural:
                return info
        return None

    async def fresh(self) -> None:
        """Catch up with every acknowledged write (upstream's live lookup)."""
        await self._registry.fresh()

    def get(self, info: ResourceInfo, namespace: str, name: str) -> Obj | None:
        """The cached object in `info`'s version (never mutate it), or None."""
        obj = self._registry.cached(info, namespace, name)
        return None if obj is None else from_storage(info, obj)

    async def get_fresh(self, info: ResourceInfo, namespace: str, name: str) -> Obj | None:
        """get() after the cache caught up with storage."""
        obj = self.get(info, namespace, name)
        if obj is None:
            await self.fresh()
            obj = self.get(info, namespace, name)
        return obj

    def list(self, info: ResourceInfo, namespace: str = "") -> list[Obj]:
        """Cached objects of a resource, in one namespace or everywhere (never mutate them)."""
        cache = self._registry.cache.resource(info.storage_prefix)
        prefix = f"{info.storage_prefix}{namespace}/" if namespace else info.storage_prefix
        return [from_storage(info, obj) for obj in cache.items(prefix)]

    async def update_status(self, info: ResourceInfo, obj: Obj) -> Obj:
        """Write an object's status subresource as the server itself (the precondition is the object's
        resourceVersion; a StatusError 409 means it changed meanwhile)."""
        from pocketkube.apiserver.registry import WriteOptions

        meta = obj["metadata"]
        result, _ = await self._registry.update(info, meta.get("namespace", ""), meta["name"], obj,
                                                WriteOptions(), "status")
        return result
