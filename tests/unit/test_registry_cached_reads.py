"""Writes that start from the watch cache's copy with a remote store (upstream's GuaranteedUpdate with a cached
object): the copy may be behind the store, so nothing is judged from it alone — not a conflict, not a no-op,
not a failed precondition."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pocketkube.api.errors import StatusError
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver.registry import DeleteOptions, Registry, WriteOptions, object_key
from pocketkube.apiserver.strategies import build_strategies
from pocketkube.apiserver.watchcache import WatchCache
from pocketkube.storage.interface import open_storage

CATALOG = ResourceCatalog()
CONFIGMAPS = CATALOG.resource("", "v1", "configmaps")
assert CONFIGMAPS is not None
KEY = object_key(CONFIGMAPS, "default", "cm")


@pytest.fixture
async def lagging(tmp_path: Path) -> AsyncIterator[tuple[Registry, WatchCache]]:
    """A registry whose store counts as remote, and whose cache stops following the store on demand."""
    storage = open_storage(f"sqlite://{tmp_path / 'state.db'}")
    await storage.start()
    storage.events_are_immediate = False  # type: ignore[misc]  # as etcd: the cache may lag the store
    cache = WatchCache(storage)
    await cache.start()
    try:
        yield Registry(storage, cache, build_strategies(CATALOG)), cache
    finally:
        await cache.close()
        await storage.close()


def _configmap(value: str, resource_version: str = "") -> dict[str, Any]:
    meta = {"name": "cm", "namespace": "default"}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": value}}


async def _stale_cache(registry: Registry, cache: WatchCache) -> tuple[str, str]:
    """cm at v1 in the cache and at v2 in the store; returns both resourceVersions."""
    first = await registry.create(CONFIGMAPS, "default", _configmap("one"), WriteOptions())
    assert await cache.wait_fresh()
    cache._task.cancel()  # the cache stops here, as one that lags behind a remote store
    second = await registry.patch(CONFIGMAPS, "default", "cm", lambda o: {**o, "data": {"k": "two"}}, WriteOptions())
    assert cache.resource(CONFIGMAPS.storage_prefix).objects[KEY]["data"] == {"k": "one"}
    return first["metadata"]["resourceVersion"], second["metadata"]["resourceVersion"]


async def test_a_write_equal_to_the_stale_copy_is_not_taken_for_a_no_op(lagging: tuple[Registry, WatchCache]) -> None:
    registry, cache = lagging
    _, latest = await _stale_cache(registry, cache)
    result, created = await registry.update(CONFIGMAPS, "default", "cm", _configmap("one"), WriteOptions())
    assert not created and result["data"] == {"k": "one"}
    assert int(result["metadata"]["resourceVersion"]) > int(latest)
    stored = await registry.storage.get(KEY)
    assert stored is not None and b'"one"' in stored.value


async def test_preconditions_are_judged_against_the_store(lagging: tuple[Registry, WatchCache]) -> None:
    registry, cache = lagging
    old, latest = await _stale_cache(registry, cache)
    # the client names the version it just wrote, newer than the cache's copy: no conflict
    result, _ = await registry.update(CONFIGMAPS, "default", "cm", _configmap("three", latest), WriteOptions())
    assert result["data"] == {"k": "three"}
    # a version that is really gone is a conflict
    with pytest.raises(StatusError) as err:
        await registry.update(CONFIGMAPS, "default", "cm", _configmap("four", old), WriteOptions())
    assert err.value.code == 409
    newest = result["metadata"]["resourceVersion"]
    gone, deleted = await registry.delete(CONFIGMAPS, "default", "cm",
                                          DeleteOptions(precondition_resource_version=newest))
    assert deleted and gone["data"] == {"k": "three"}


async def test_a_patch_with_a_resource_version_newer_than_the_cache(lagging: tuple[Registry, WatchCache]) -> None:
    registry, cache = lagging
    _, latest = await _stale_cache(registry, cache)

    def with_version(obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = latest
        obj["data"] = {"k": "five"}
        return obj
    result = await registry.patch(CONFIGMAPS, "default", "cm", with_version, WriteOptions())
    assert result["data"] == {"k": "five"}


async def test_a_write_starts_from_the_cache_without_a_store_read(lagging: tuple[Registry, WatchCache],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    registry, cache = lagging
    await registry.create(CONFIGMAPS, "default", _configmap("one"), WriteOptions())
    assert await cache.wait_fresh()
    reads: list[str] = []
    real_get = registry.storage.get

    async def counted_get(key: str) -> Any:
        reads.append(key)
        return await real_get(key)
    monkeypatch.setattr(registry.storage, "get", counted_get)
    await registry.patch(CONFIGMAPS, "default", "cm", lambda o: {**o, "data": {"k": "two"}}, WriteOptions())
    assert await cache.wait_fresh()
    await registry.delete(CONFIGMAPS, "default", "cm", DeleteOptions())
    assert reads == []  # one round trip each (the compare-and-swap), as upstream
