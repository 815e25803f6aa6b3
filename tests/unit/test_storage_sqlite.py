"""SQLite backend specifics: concurrency without "database is locked", bounded growth, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import pocketkube
from pocketkube.storage.interface import KeyExistsError
from pocketkube.storage.sqlite import SQLiteStorage, WatchOverflowError


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(str(tmp_path / "nested" / "dir" / "state.db"))
    await storage.start()
    yield storage
    await storage.close()


def _on_disk(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


async def test_file_layout(store: SQLiteStorage) -> None:
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # INCREMENTAL
    finally:
        conn.close()


async def test_concurrent_writes_and_reads_never_lock(store: SQLiteStorage) -> None:
    tasks_n, keys_per_task = 50, 10
    start = await store.current_revision()
    watch = store.watch("/registry/", start + 1)

    async def writer(t: int) -> None:
        kvs = {}
        for j in range(keys_per_task):
            kvs[j] = await store.create(f"/registry/c/{t:02d}/{j}", b"v0")
        for round_ in (1, 2):
            for j in range(keys_per_task):
                kvs[j] = await store.update(kvs[j].key, f"v{round_}".encode(), kvs[j].mod_revision)
        for j in range(5):
            await store.delete(kvs[j].key, kvs[j].mod_revision)
            await store.create(f"/registry/c/{t:02d}/new{j}", b"fresh")  # 10 + 20 + 5 + 5 = 40 writes

    done = asyncio.Event()
    reads = 0

    async def reader(r: int) -> None:
        nonlocal reads
        while not done.is_set():
            await store.get(f"/registry/c/{r:02d}/1")
            listing = await store.list("/registry/c/", limit=50)
            assert len(listing.items) <= 50
            await store.count("/registry/c/")
            reads += 3

    readers = [asyncio.create_task(reader(r)) for r in range(8)]
    results = await asyncio.gather(*(writer(t) for t in range(tasks_n)), return_exceptions=True)
    done.set()
    results += await asyncio.gather(*readers, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not [e for e in errors if "locked" in str(e)]
    assert not errors
    assert reads > 0

    total = tasks_n * 40
    assert await store.current_revision() == start + total
    listing = await store.list("/registry/c/")
    assert len(listing.items) == tasks_n * keys_per_task
    values = {kv.key.rsplit("/", 1)[1]: kv.value for kv in listing.items if kv.key.startswith("/registry/c/07/")}
    assert values == {**{str(j): b"v2" for j in range(5, 10)}, **{f"new{j}": b"fresh" for j in range(5)}}
    events = [await asyncio.wait_for(anext(watch), 5) for _ in range(total)]
    assert [e.kv.mod_revision for e in events] == list(range(start + 1, start + total + 1))
    await watch.aclose()


async def test_one_failed_write_does_not_abort_its_group(store: SQLiteStorage) -> None:
    # Submitted together, these share one group commit; each create is its own savepoint.
    results = await asyncio.gather(
        *(store.create(f"/registry/g/{i % 5}", str(i).encode()) for i in range(40)), return_exceptions=True
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    assert len(created) == 5
    assert all(isinstance(r, KeyExistsError) for r in results if isinstance(r, BaseException))
    assert sorted(kv.mod_revision for kv in created) == list(range(2, 7))
    assert await store.count("/registry/g/") == 5


async def test_slow_watcher_ends_with_an_error_instead_of_dropping(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "db"), watch_buffer=5)
    await storage.start()
    try:
        slow = storage.watch("/registry/", 0)
        first = asyncio.ensure_future(anext(slow))
        await asyncio.sleep(0.05)
        for i in range(20):
            await storage.create(f"/registry/s/{i}", b"x")
        assert (await first).kv.key == "/registry/s/0"
        with pytest.raises(WatchOverflowError):
            while True:
                await anext(slow)
    finally:
        await storage.close()


async def test_disk_usage_stays_bounded_under_churn(store: SQLiteStorage) -> None:
    value = os.urandom(1024).hex().encode()  # ~2 KB, incompressible
    keys = [f"/registry/churn/{i:03d}" for i in range(40)]
    live: dict[str, int] = {}

    async def churn(ops: int) -> None:
        for n in range(ops):
            key = keys[n % len(keys)]
            if key not in live:
                live[key] = (await store.create(key, value)).mod_revision
            elif n % 7 == 0:
                await store.delete(key, live.pop(key))
            else:
                live[key] = (await store.update(key, value, live[key])).mod_revision
            if n % 250 == 249:
                await store.compact(await store.current_revision())

    await churn(2000)
    after_first = _on_disk(store.path)
    await churn(2000)
    after_second = _on_disk(store.path)
    await churn(2000)
    after_third = _on_disk(store.path)
    # 6000 writes of 2 KB (plus their previous values) take ~28 MB without compaction; compacting
    # at the current revision leaves the 40 live keys (~80 KB) and gives freed pages back.
    assert after_third < 1024 * 1024
    assert after_second <= after_first * 1.25 + 65536
    assert after_third <= after_first * 1.25 + 65536
    assert store.compacted_revision == await store.current_revision()  # each round ends compacting


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    script = textwrap.dedent(
        """
        import asyncio, sys
        from pocketkube.storage.sqlite import SQLiteStorage

        async def main() -> None:
            storage = SQLiteStorage(sys.argv[1])
            await storage.start()

            async def writer(w: int) -> None:
                i = 0
                while True:
                    key = f"/registry/k/{w}-{i}"
                    await storage.create(key, b"x" * 200)
                    print(key, flush=True)  # only after the write is acknowledged
                    i += 1

            await asyncio.gather(*(writer(w) for w in range(8)))

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(pocketkube.__file__).parents[1])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, path, stdout=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    acknowledged: list[bytes] = []
    try:
        while len(acknowledged) < 1000:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                break
            acknowledged.append(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the writers are still going
    acknowledged += (await proc.stdout.read()).splitlines(keepends=True)
    await proc.wait()
    # A torn last line was never fully printed, so it does not count as acknowledged.
    keys = [line.decode().strip() for line in acknowledged if line.endswith(b"\n")]
    assert proc.returncode == -signal.SIGKILL
    assert len(keys) >= 1000

    reopened = SQLiteStorage(path)
    await reopened.start()
    try:
        present = {kv.key for kv in (await reopened.list("/registry/k/")).items}
        assert set(keys) <= present
        assert await reopened.current_revision() == 1 + len(present)
    finally:
        await reopened.close()
