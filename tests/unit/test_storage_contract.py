"""The storage contract, run against every backend: the SQLite file and a real etcd."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pocketkube.storage.etcd import EtcdStorage
from pocketkube.storage.interface import (
    CompactedError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    RevisionMismatchError,
    Storage,
    StorageError,
)
from pocketkube.storage.sqlite import SQLiteStorage

Opener = Callable[[], Awaitable[Storage]]


@pytest.fixture(params=["sqlite", "etcd"])
async def open_storage(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Opener]:
    """Opens (and later closes) clients of one backing store: same SQLite file / same etcd."""
    opened: list[Storage] = []
    etcd_url = request.getfixturevalue("etcd_url") if request.param == "etcd" else ""

    async def opener() -> Storage:
        if request.param == "sqlite":
            storage: Storage = SQLiteStorage(str(tmp_path / "state" / "db.sqlite"))
        else:
            storage = EtcdStorage([etcd_url])
        await storage.start()
        opened.append(storage)
        return storage

    yield opener
    for storage in opened:
        await storage.close()


@pytest.fixture
async def storage(open_storage: Opener) -> Storage:
    return await open_storage()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: the etcd is shared by the whole module."""
    return f"/registry/t{uuid.uuid4().hex[:12]}/"


async def take(watch: AsyncIterator[Event], n: int) -> list[Event]:
    return [await asyncio.wait_for(anext(watch), 5) for _ in range(n)]


async def test_create_get_and_exists(storage: Storage, prefix: str) -> None:
    before = await storage.current_revision()
    kv = await storage.create(prefix + "a", b"one")
    assert kv.key == prefix + "a" and kv.value == b"one"
    assert kv.create_revision == kv.mod_revision > before
    assert await storage.get(prefix + "a") == kv
    assert await storage.get(prefix + "missing") is None
    with pytest.raises(KeyExistsError) as err:
        await storage.create(prefix + "a", b"two")
    assert err.value.key == prefix + "a"
    assert (await storage.get(prefix + "a")) == kv
    assert await storage.current_revision() == kv.mod_revision  # a failed create writes nothing


async def test_update_compares_mod_revision(storage: Storage, prefix: str) -> None:
    created = await storage.create(prefix + "a", b"v1")
    updated = await storage.update(prefix + "a", b"v2", created.mod_revision)
    assert updated.value == b"v2"
    assert updated.create_revision == created.create_revision
    assert updated.mod_revision > created.mod_revision
    with pytest.raises(RevisionMismatchError) as err:
        await storage.update(prefix + "a", b"stale", created.mod_revision)
    assert err.value.current == updated
    with pytest.raises(KeyNotFoundError):
        await storage.update(prefix + "missing", b"x", updated.mod_revision)
    with pytest.raises(KeyNotFoundError):
        await storage.update(prefix + "missing", b"x", 0)
    assert await storage.get(prefix + "missing") is None
    assert await storage.get(prefix + "a") == updated


async def test_delete_with_and_without_precondition(storage: Storage, prefix: str) -> None:
    a = await storage.create(prefix + "a", b"last-a")
    b = await storage.create(prefix + "b", b"last-b")
    deleted = await storage.delete(prefix + "a")
    assert deleted.value == b"last-a" and deleted.create_revision == a.create_revision
    assert deleted.mod_revision == await storage.current_revision() > b.mod_revision
    assert await storage.get(prefix + "a") is None
    with pytest.raises(KeyNotFoundError):
        await storage.delete(prefix + "a")
    with pytest.raises(KeyNotFoundError):
        await storage.delete(prefix + "a", deleted.mod_revision)

    b2 = await storage.update(prefix + "b", b"newer", b.mod_revision)
    with pytest.raises(RevisionMismatchError) as err:
        await storage.delete(prefix + "b", b.mod_revision)
    assert err.value.current == b2
    gone = await storage.delete(prefix + "b", b2.mod_revision)
    assert gone.value == b"newer"
    assert await storage.count(prefix) == 0


async def test_list_order_pagination_and_prefix_isolation(storage: Storage, prefix: str) -> None:
    names = ["m", "c", "x", "a", "q", "b"]
    for name in names:
        await storage.create(f"{prefix}a/{name}", name.encode())
    await storage.create(f"{prefix}ab/other", b"other")  # shares "a" but not "a/"
    await storage.create(f"{prefix}a", b"bare")  # the prefix itself minus the slash

    full = await storage.list(prefix + "a/")
    assert [kv.key for kv in full.items] == [f"{prefix}a/{n}" for n in sorted(names)]
    assert not full.more
    assert full.revision == await storage.current_revision()
    assert await storage.count(prefix + "a/") == len(names)
    assert await storage.count(prefix + "ab/") == 1
    assert [kv.key for kv in (await storage.list(prefix + "ab/")).items] == [f"{prefix}ab/other"]

    pages, start_after, more = [], "", True
    while more:
        page = await storage.list(prefix + "a/", revision=full.revision, start_after=start_after, limit=4)
        assert page.revision == full.revision
        pages.append([kv.key for kv in page.items])
        start_after, more = page.items[-1].key, page.more
    assert pages == [[kv.key for kv in full.items[:4]], [kv.key for kv in full.items[4:]]]

    exact = await storage.list(prefix + "a/", limit=len(names))
    assert len(exact.items) == len(names) and not exact.more
    after_last = await storage.list(prefix + "a/", start_after=full.items[-1].key)
    assert after_last.items == [] and not after_last.more
    everything = await storage.list(prefix)
    assert [kv.key for kv in everything.items] == sorted(kv.key for kv in everything.items)
    assert len(everything.items) == len(names) + 2


async def test_get_and_list_at_an_old_revision(storage: Storage, prefix: str) -> None:
    a = await storage.create(prefix + "a", b"a1")
    b = await storage.create(prefix + "b", b"b1")
    snapshot = await storage.current_revision()
    assert snapshot == b.mod_revision
    await storage.update(prefix + "a", b"a2", a.mod_revision)
    await storage.delete(prefix + "b")
    c = await storage.create(prefix + "c", b"c1")
    await storage.create(prefix + "0", b"zero")

    assert await storage.get(prefix + "a", snapshot) == a
    assert await storage.get(prefix + "b", snapshot) == b
    assert await storage.get(prefix + "c", snapshot) is None
    assert await storage.get(prefix + "a", a.mod_revision) == a
    assert await storage.get(prefix + "b", a.mod_revision) is None
    assert await storage.get(prefix + "c", c.mod_revision) == c

    old = await storage.list(prefix, revision=snapshot)
    assert old.items == [a, b] and old.revision == snapshot
    first = await storage.list(prefix, revision=snapshot, limit=1)
    assert first.items == [a] and first.more
    second = await storage.list(prefix, revision=snapshot, start_after=first.items[0].key, limit=1)
    assert second.items == [b] and not second.more
    # count sees the same keys as list: at the snapshot "b" (deleted since) counts, "c" and "0" (created
    # since) do not, and start_after skips the keys up to it.
    assert await storage.count(prefix, revision=snapshot) == 2
    assert await storage.count(prefix, revision=snapshot, start_after=prefix + "a") == 1
    assert await storage.count(prefix, revision=a.mod_revision, start_after=prefix + "a") == 0
    assert await storage.count(prefix, revision=c.mod_revision) == 2
    assert await storage.count(prefix, start_after=prefix + "a") == 1
    assert await storage.count(prefix) == 3
    now = await storage.list(prefix)
    assert [(kv.key, kv.value) for kv in now.items] == [
        (prefix + "0", b"zero"), (prefix + "a", b"a2"), (prefix + "c", b"c1"),
    ]


async def test_watch_replays_history_then_live_without_gap_or_duplicate(storage: Storage, prefix: str) -> None:
    a = await storage.create(prefix + "a", b"1")
    await storage.update(prefix + "a", b"2", a.mod_revision)
    await storage.create(prefix + "b", b"1")

    async def writer() -> None:
        for i in range(30):
            await storage.create(f"{prefix}live{i:02d}", b"x")
            if i % 7 == 0:
                await asyncio.sleep(0)

    # Live writes race the watch's start: whatever the interleaving, every revision arrives once.
    watch = storage.watch(prefix, a.mod_revision)
    task = asyncio.create_task(writer())
    events = await take(watch, 33)
    await task
    await watch.aclose()

    revisions = [e.kv.mod_revision for e in events]
    assert revisions == sorted(set(revisions))
    assert revisions == list(range(a.mod_revision, a.mod_revision + 33))
    assert [e.type for e in events[:3]] == ["ADDED", "MODIFIED", "ADDED"]
    assert [e.kv.key for e in events[3:]] == [f"{prefix}live{i:02d}" for i in range(30)]


async def test_watch_from_now_and_from_the_future(storage: Storage, prefix: str) -> None:
    await storage.create(prefix + "old", b"x")
    now = storage.watch(prefix, 0)
    future_start = await storage.current_revision() + 2
    future = storage.watch(prefix, future_start)
    pending_now = asyncio.ensure_future(anext(now))
    pending_future = asyncio.ensure_future(anext(future))
    await asyncio.sleep(0.2)  # both watches are established before the writes
    first = await storage.create(prefix + "new1", b"x")
    second = await storage.create(prefix + "new2", b"x")
    assert (await asyncio.wait_for(pending_now, 5)).kv == first
    assert (await asyncio.wait_for(pending_future, 5)).kv == second
    await now.aclose()
    await future.aclose()


async def test_watch_of_a_prefix_ignores_other_keys(storage: Storage, prefix: str) -> None:
    start = await storage.current_revision() + 1
    await storage.create(prefix + "ab/x", b"not mine")
    await storage.create(prefix + "a/x", b"mine")
    watch = storage.watch(prefix + "a/", start)
    await storage.create(prefix + "ab/y", b"not mine")
    await storage.create(prefix + "b/y", b"not mine")
    await storage.create(prefix + "a/y", b"mine too")
    events = await take(watch, 2)
    assert [e.kv.key for e in events] == [prefix + "a/x", prefix + "a/y"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(watch), 0.3)
    await watch.aclose()


async def test_events_carry_previous_and_last_values(storage: Storage, prefix: str) -> None:
    watch = storage.watch(prefix, await storage.current_revision() + 1)
    created = await storage.create(prefix + "k", b"v1")
    updated = await storage.update(prefix + "k", b"v2", created.mod_revision)
    deleted = await storage.delete(prefix + "k")
    added, modified, removed = await take(watch, 3)
    await watch.aclose()
    assert added == Event("ADDED", created)
    assert modified == Event("MODIFIED", updated, created)
    assert removed.type == "DELETED"
    assert removed.kv == deleted
    assert removed.kv.value == b"v2" and removed.kv.mod_revision == deleted.mod_revision
    assert removed.prev_kv == updated


async def test_compaction(storage: Storage, prefix: str) -> None:
    kv = await storage.create(prefix + "k", b"0")
    history = [kv]
    for i in range(1, 6):
        kv = await storage.update(prefix + "k", str(i).encode(), kv.mod_revision)
        history.append(kv)
    await storage.create(prefix + "other", b"x")
    target = history[3].mod_revision
    await storage.compact(target)
    assert storage.compacted_revision == target

    old = history[2].mod_revision
    with pytest.raises(CompactedError) as err:
        await storage.get(prefix + "k", old)
    assert err.value.requested == old and err.value.compacted == target
    with pytest.raises(CompactedError):
        await storage.list(prefix, revision=old)
    with pytest.raises(CompactedError):
        await storage.count(prefix, revision=old)
    # The compacted revision itself is still readable; watches may start right after it.
    assert await storage.get(prefix + "k", target) == history[3]
    assert (await storage.list(prefix, revision=target)).items == [history[3]]
    for start in (old, target):
        watch = storage.watch(prefix, start)
        with pytest.raises(CompactedError):
            await anext(watch)
    watch = storage.watch(prefix, target + 1)
    assert [e.kv for e in await take(watch, 2)] == history[4:]
    await watch.aclose()

    await storage.compact(old)  # older than the compacted revision: nothing to do
    assert storage.compacted_revision == target
    with pytest.raises(FutureRevisionError):
        await storage.compact(await storage.current_revision() + 10)


async def test_future_revision(storage: Storage, prefix: str) -> None:
    kv = await storage.create(prefix + "k", b"v")
    future = await storage.current_revision() + 5
    with pytest.raises(FutureRevisionError) as err:
        await storage.get(prefix + "k", future)
    assert err.value.requested == future and err.value.current >= kv.mod_revision
    with pytest.raises(FutureRevisionError):
        await storage.list(prefix, revision=future)
    with pytest.raises(FutureRevisionError):
        await storage.count(prefix, revision=future)


async def test_current_revision_is_monotonic(storage: Storage, prefix: str) -> None:
    seen = [await storage.current_revision()]
    kv = await storage.create(prefix + "k", b"0")
    seen.append(await storage.current_revision())
    assert seen[-1] == kv.mod_revision
    for i in range(5):
        kv = await storage.update(prefix + "k", str(i).encode(), kv.mod_revision)
        assert await storage.current_revision() == kv.mod_revision
        seen.append(kv.mod_revision)
    with pytest.raises(KeyExistsError):
        await storage.create(prefix + "k", b"again")
    seen.append(await storage.current_revision())
    assert seen == sorted(seen) and len(set(seen)) == len(seen) - 1  # the failed create reused none


async def test_state_survives_reopen(open_storage: Opener, prefix: str) -> None:
    first = await open_storage()
    kv = await first.create(prefix + "k", b"kept")
    await first.create(prefix + "gone", b"x")
    await first.delete(prefix + "gone")
    await first.compact(kv.mod_revision)
    revision = await first.current_revision()
    await first.close()

    second = await open_storage()
    assert await second.current_revision() == revision
    assert second.compacted_revision == kv.mod_revision
    assert await second.get(prefix + "k") == kv
    assert await second.get(prefix + "gone") is None
    with pytest.raises(CompactedError):
        await second.get(prefix + "k", kv.mod_revision - 1)
    nxt = await second.create(prefix + "next", b"x")
    assert nxt.mod_revision == revision + 1


async def test_close_ends_running_watches(storage: Storage, prefix: str) -> None:
    watch = storage.watch(prefix, 0)
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.2)
    await storage.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)


async def test_etcd_connects_to_the_first_endpoint_that_answers(etcd_url: str, prefix: str) -> None:
    storage = EtcdStorage(["http://127.0.0.1:1", etcd_url])
    await storage.start()
    try:
        kv = await storage.create(prefix + "k", b"v")
        assert await storage.get(prefix + "k") == kv
    finally:
        await storage.close()
    with pytest.raises(StorageError, match="no etcd endpoint answered"):
        await EtcdStorage(["http://127.0.0.1:1"]).start()
