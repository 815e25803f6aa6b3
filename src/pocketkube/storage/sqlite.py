"""The embedded default backend: one SQLite file in WAL mode, with etcd's MVCC semantics.

Layout:
- `current`: the live keys, for fast reads at the latest revision.
- `log`: one row per change (revision, key, what it became, what it was before). It feeds watch
  replay and historical reads: the state at revision R is `current` with every change newer than R
  undone. `compact(R)` trims the log up to R.
- `meta`: the store revision and the compacted revision, so both survive a restart.

Concurrency: exactly one writer thread owns the only write connection, so SQLite never sees two
writers and never answers "database is locked". It drains every queued write into one transaction
(group commit), each write in its own SAVEPOINT so a failed precondition does not abort the others,
then hands results and events to the event loop. Reads run on read-only connections in a small
thread pool; WAL readers never block the writer nor each other. With synchronous=NORMAL a commit is
in the WAL (the OS page cache) before it is acknowledged, so it survives kill -9 of the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import os
import pathlib
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pocketkube.storage.interface import (
    CompactedError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionMismatchError,
    Storage,
    StorageError,
)

_PUT = 0
_DELETE = 1

_MAX_BATCH = 1000  # writes per group commit: bounds one transaction's size and latency
_REPLAY_CHUNK = 1000  # log rows per read transaction while a watch replays history

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS current (
    key BLOB PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    type INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    value BLOB NOT NULL,
    prev_mod_revision INTEGER NOT NULL,
    prev_value BLOB
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 1), ('compacted', 0);
"""
# Revision 1 is the empty store, as in etcd: the first write is revision 2.
# log.type is _PUT or _DELETE. For a PUT, prev_mod_revision is 0 when the key was created and
# prev_value holds the replaced value otherwise; for a DELETE, value is the last value and
# prev_value is unused.


class WatchOverflowError(StorageError):
    """A watcher fell so far behind that its buffer filled: it ends rather than lose events."""


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no upper bound)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return None


def _key_range(low: bytes, prefix: bytes) -> tuple[str, tuple[bytes, ...]]:
    """SQL condition and parameters for keys >= low that start with prefix."""
    end = _prefix_end(prefix)
    if end is None:
        return "key >= ?", (low,)
    return "key >= ? AND key < ?", (low, end)


def _event_from_log(row: tuple[Any, ...]) -> Event:
    revision, key_b, kind, create_revision, value, prev_mod, prev_value = row
    key = key_b.decode()
    kv = KeyValue(key, value, create_revision, revision)
    if kind == _DELETE:
        return Event("DELETED", kv, KeyValue(key, value, create_revision, prev_mod))
    if prev_mod == 0:
        return Event("ADDED", kv)
    return Event("MODIFIED", kv, KeyValue(key, prev_value, create_revision, prev_mod))


def _undo(key: str, kind: int, create_revision: int, value: bytes, prev_mod: int,
          prev_value: bytes | None) -> KeyValue | None:
    """The key's state just before a logged change."""
    if kind == _DELETE:
        return KeyValue(key, value, create_revision, prev_mod)
    if prev_mod == 0:
        return None
    assert prev_value is not None  # a PUT over an existing key always logs the replaced value
    return KeyValue(key, prev_value, create_revision, prev_mod)


@dataclass(slots=True)
class _Op:
    kind: Literal["create", "update", "delete", "compact"]
    future: asyncio.Future[Any]
    key: str = ""
    value: bytes = b""
    expected: int | None = None
    revision: int = 0  # compact only


# (future, result, error) for each op of a batch, handed to the loop in one call.
_Outcome = tuple[asyncio.Future[Any], Any, Exception | None]
_Deliver = Callable[[list[_Outcome], list[Event], int, int], None]


class _Writer(threading.Thread):
    """Owns the single write connection; applies queued ops in group commits."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop, deliver: _Deliver) -> None:
        super().__init__(name="pocketkube-sqlite-writer", daemon=True)
        self.path = path
        # Ops arrive in lists, one per event-loop turn that submitted any; None stops the writer.
        self.ops: queue.SimpleQueue[list[_Op] | None] = queue.SimpleQueue()
        self.ready: concurrent.futures.Future[tuple[int, int]] = concurrent.futures.Future()
        self._loop = loop
        self._deliver = deliver
        self._revision = 0
        self._compacted = 0

    def _open(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        # auto_vacuum only takes effect before the first table exists, hence first.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # Only a TRUNCATE checkpoint can wait (for readers to leave the WAL); readers are short.
        conn.execute("PRAGMA busy_timeout=5000")
        # Cap the WAL file left behind after a checkpoint resets it.
        conn.execute("PRAGMA journal_size_limit=16777216")
        conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT name, value FROM meta"))
        self._revision, self._compacted = meta["revision"], meta["compacted"]
        return conn

    def run(self) -> None:
        try:
            conn = self._open()
        except Exception as exc:  # the opener awaits `ready`; it must hear why
            self.ready.set_exception(exc)
            return
        self.ready.set_result((self._revision, self._compacted))
        try:
            stop = False
            while not stop:
                handed = self.ops.get()
                if handed is None:
                    break
                ops = list(handed)
                while len(ops) < _MAX_BATCH:
                    try:
                        more = self.ops.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    ops.extend(more)
                for start in range(0, len(ops), _MAX_BATCH):
                    self._process(conn, ops[start:start + _MAX_BATCH])
        finally:
            conn.close()

    def _process(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        try:
            writes = [o for o in batch if o.kind != "compact"]
            if writes:
                self._commit(conn, writes)
            for o in batch:
                if o.kind == "compact":
                    self._compact(conn, o)
        except Exception as exc:  # a bug must fail these callers, never stop the writer
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._hand_over([(o.future, None, exc) for o in batch], [])

    def _hand_over(self, outcomes: list[_Outcome], events: list[Event]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, outcomes, events, self._revision, self._compacted)
        except RuntimeError:
            pass  # the event loop is closed: nobody is left waiting for these results

    def _commit(self, conn: sqlite3.Connection, ops: list[_Op]) -> None:
        outcomes: list[_Outcome] = []
        events: list[Event] = []
        revision = self._revision
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                try:
                    result, event = self._apply(conn, op, revision + 1)
                except (KeyExistsError, KeyNotFoundError, RevisionMismatchError) as exc:
                    # refused before it wrote anything: only this op fails, the batch goes on
                    outcomes.append((op.future, None, exc))
                    continue
                revision += 1
                outcomes.append((op.future, result, None))
                events.append(event)
            if revision != self._revision:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = StorageError(f"sqlite commit failed: {exc}")
            outcomes = [(op.future, None, error) for op in ops]
            events = []
            revision = self._revision
        self._revision = revision
        self._hand_over(outcomes, events)

    @staticmethod
    def _apply(conn: sqlite3.Connection, op: _Op, revision: int) -> tuple[KeyValue, Event]:
        """One op inside the batch's transaction. Its refusals are raised before it writes anything, so a
        refused op needs no savepoint; an SQLite error fails the whole batch (rolled back, nothing stored)."""
        key_b = op.key.encode()
        row = conn.execute(
            "SELECT create_revision, mod_revision, value FROM current WHERE key = ?", (key_b,)
        ).fetchone()
        if op.kind == "create":
            if row is not None:
                raise KeyExistsError(op.key)
            conn.execute("INSERT INTO current VALUES (?, ?, ?, ?)", (key_b, revision, revision, op.value))
            conn.execute("INSERT INTO log VALUES (?, ?, ?, ?, ?, 0, NULL)",
                         (revision, key_b, _PUT, revision, op.value))
            kv = KeyValue(op.key, op.value, revision, revision)
            return kv, Event("ADDED", kv)
        if row is None:
            raise KeyNotFoundError(op.key)
        prev = KeyValue(op.key, row[2], row[0], row[1])
        if op.expected is not None and op.expected != prev.mod_revision:
            raise RevisionMismatchError(op.key, prev)
        if op.kind == "update":
            conn.execute("UPDATE current SET mod_revision = ?, value = ? WHERE key = ?",
                         (revision, op.value, key_b))
            conn.execute("INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (revision, key_b, _PUT, prev.create_revision, op.value, prev.mod_revision, prev.value))
            kv = KeyValue(op.key, op.value, prev.create_revision, revision)
            return kv, Event("MODIFIED", kv, prev)
        conn.execute("DELETE FROM current WHERE key = ?", (key_b,))
        conn.execute("INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, NULL)",
                     (revision, key_b, _DELETE, prev.create_revision, prev.value, prev.mod_revision))
        kv = KeyValue(op.key, prev.value, prev.create_revision, revision)
        return kv, Event("DELETED", kv, prev)

    def _compact(self, conn: sqlite3.Connection, op: _Op) -> None:
        error: Exception | None = None
        try:
            if op.revision > self._revision:
                raise FutureRevisionError(op.revision, self._revision)
            if op.revision > self._compacted:
                # Reads at `revision` undo only newer changes, and watches may start at revision+1:
                # every log row up to and including `revision` is dead.
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("DELETE FROM log WHERE revision <= ?", (op.revision,))
                conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (op.revision,))
                conn.execute("COMMIT")
                self._compacted = op.revision
                # Give freed pages back to the filesystem, then fold the WAL in and truncate it.
                # (executescript: the sqlite3 module steps a row-less statement only once, and
                # incremental_vacuum frees one page per step.)
                conn.executescript("PRAGMA incremental_vacuum;")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except FutureRevisionError as exc:
            error = exc
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = StorageError(f"sqlite compaction failed: {exc}")
        self._hand_over([(op.future, None, error)], [])


@dataclass(eq=False)
class _Watcher:
    """A live watch's buffer, filled by the loop after each commit."""

    prefix: str
    min_revision: int
    max_buffered: int
    events: deque[Event] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    error: StorageError | None = None
    closed: bool = False

    def push(self, event: Event) -> bool:
        if len(self.events) >= self.max_buffered:
            self.error = WatchOverflowError(
                f"watch on {self.prefix} fell {self.max_buffered} events behind; restart it"
                f" from revision {self.events[0].kv.mod_revision}"
            )
            self.wakeup.set()
            return False
        self.events.append(event)
        self.wakeup.set()
        return True

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()

    async def next(self) -> Event | None:
        """The next live event; None once the store closed; raises if the buffer overflowed."""
        while True:
            if self.error is not None:
                raise self.error
            if self.events:
                return self.events.popleft()
            if self.closed:
                return None
            self.wakeup.clear()
            await self.wakeup.wait()


class SQLiteStorage(Storage):
    """MVCC storage in one SQLite file (see the module docstring for the design)."""

    events_are_immediate = True

    def __init__(self, path: str, *, readers: int = 4, watch_buffer: int = 10000) -> None:
        self.path = path
        self._reader_count = readers
        self._watch_buffer = watch_buffer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: _Writer | None = None
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_conns_lock = threading.Lock()
        self._watchers: set[_Watcher] = set()
        self._pending: list[_Op] = []  # submitted this turn of the event loop, not yet handed over
        self._revision = 0
        self._compacted = 0
        self._closed = False

    # lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._writer = _Writer(self.path, self._loop, self._deliver)
        self._writer.start()
        self._revision, self._compacted = await asyncio.wrap_future(self._writer.ready)
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._reader_count, thread_name_prefix="pocketkube-sqlite-read"
        )

    async def close(self) -> None:
        if self._closed or self._writer is None:
            return
        self._closed = True
        for watcher in self._watchers:
            watcher.close()
        self._watchers.clear()
        self._flush()
        self._writer.ops.put(None)  # queued writes still commit before the writer stops
        await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, True)
        with self._reader_conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    # writes

    async def _submit(self, op: _Op) -> Any:
        if self._writer is None or self._closed:
            raise StorageError("sqlite storage is not open")
        # Everything submitted during this turn of the event loop goes to the writer at once: one
        # thread wake-up, and one transaction for the lot, instead of one per write.
        self._pending.append(op)
        if len(self._pending) == 1:
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        return await op.future

    def _flush(self) -> None:
        if self._pending and self._writer is not None:
            ops, self._pending = self._pending, []
            self._writer.ops.put(ops)

    def _future(self) -> asyncio.Future[Any]:
        assert self._loop is not None, "start() the storage first"
        return self._loop.create_future()

    async def create(self, key: str, value: bytes) -> KeyValue:
        result: KeyValue = await self._submit(_Op("create", self._future(), key, bytes(value)))
        return result

    async def update(self, key: str, value: bytes, expected_mod_revision: int) -> KeyValue:
        result: KeyValue = await self._submit(
            _Op("update", self._future(), key, bytes(value), expected_mod_revision)
        )
        return result

    async def delete(self, key: str, expected_mod_revision: int | None = None) -> KeyValue:
        result: KeyValue = await self._submit(_Op("delete", self._future(), key, b"", expected_mod_revision))
        return result

    async def compact(self, revision: int) -> None:
        await self._submit(_Op("compact", self._future(), revision=revision))

    def _deliver(self, outcomes: list[_Outcome], events: list[Event], revision: int, compacted: int) -> None:
        """On the loop: publish a commit — new revision, watcher fan-out, then the callers' results."""
        self._revision = revision
        self._compacted = compacted
        if events and self._watchers:
            for watcher in list(self._watchers):
                for event in events:
                    if event.kv.mod_revision >= watcher.min_revision and event.kv.key.startswith(watcher.prefix):
                        if not watcher.push(event):
                            self._watchers.discard(watcher)
                            break
        for future, result, error in outcomes:
            if future.done():  # the caller was cancelled; the write happened regardless
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    # reads

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            uri = pathlib.Path(self.path).absolute().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            self._reader_local.conn = conn
            with self._reader_conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _in_snapshot(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(conn, revision, compacted, *args) inside one read transaction (one snapshot)."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            meta = dict(conn.execute("SELECT name, value FROM meta"))
            return fn(conn, meta["revision"], meta["compacted"], *args)
        finally:
            conn.execute("ROLLBACK")

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._readers is None or self._closed:
            raise StorageError("sqlite storage is not open")
        assert self._loop is not None
        return await self._loop.run_in_executor(self._readers, self._in_snapshot, fn, *args)

    @staticmethod
    def _check_revision(requested: int, current: int, compacted: int) -> None:
        if requested > current:
            raise FutureRevisionError(requested, current)
        if requested < compacted:
            raise CompactedError(requested, compacted)

    async def get(self, key: str, revision: int = 0) -> KeyValue | None:
        result: KeyValue | None = await self._read(self._get, key, revision)
        return result

    def _get(self, conn: sqlite3.Connection, current: int, compacted: int, key: str,
             revision: int) -> KeyValue | None:
        key_b = key.encode()
        if revision:
            self._check_revision(revision, current, compacted)
            if revision < current:
                # The first change after `revision`, undone, is the state at `revision`.
                undo = conn.execute(
                    "SELECT type, create_revision, value, prev_mod_revision, prev_value FROM log"
                    " WHERE key = ? AND revision > ? ORDER BY revision LIMIT 1",
                    (key_b, revision),
                ).fetchone()
                if undo is not None:
                    return _undo(key, *undo)
        row = conn.execute(
            "SELECT create_revision, mod_revision, value FROM current WHERE key = ?", (key_b,)
        ).fetchone()
        return None if row is None else KeyValue(key, row[2], row[0], row[1])

    @classmethod
    def _range_at(cls, current: int, compacted: int, prefix: str, revision: int,
                  start_after: str) -> tuple[int, str, tuple[bytes, ...]]:
        """The revision a range read sees, and the SQL condition for its keys: under prefix, after start_after."""
        if revision:
            cls._check_revision(revision, current, compacted)
        prefix_b = prefix.encode()
        low = max(prefix_b, start_after.encode() + b"\x00") if start_after else prefix_b
        where, params = _key_range(low, prefix_b)
        return revision or current, where, params

    async def list(self, prefix: str, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        result: ListResult = await self._read(self._list, prefix, revision, start_after, limit)
        return result

    def _list(self, conn: sqlite3.Connection, current: int, compacted: int, prefix: str, revision: int,
              start_after: str, limit: int) -> ListResult:
        at, where, params = self._range_at(current, compacted, prefix, revision, start_after)
        rows = conn.execute(
            f"SELECT key, create_revision, mod_revision, value FROM current WHERE {where} ORDER BY key",
            params,
        )
        live: Iterator[KeyValue] = (KeyValue(k.decode(), v, c, m) for k, c, m, v in rows)
        if at < current:
            # Keys changed after `at`: their first later change, undone, gives their state at `at`.
            changed = {
                k.decode(): _undo(k.decode(), kind, c, v, pm, pv)
                for k, kind, c, v, pm, pv, _ in conn.execute(
                    "SELECT key, type, create_revision, value, prev_mod_revision, prev_value, MIN(revision)"
                    f" FROM log WHERE revision > ? AND {where} GROUP BY key",
                    (at, *params),
                )
            }
            unchanged = (kv for kv in live if kv.key not in changed)
            restored = sorted((kv for kv in changed.values() if kv is not None), key=lambda kv: kv.key)
            live = heapq.merge(unchanged, restored, key=lambda kv: kv.key)
        items: list[KeyValue] = []
        for kv in live:
            if limit and len(items) == limit:
                return ListResult(items, at, more=True)
            items.append(kv)
        return ListResult(items, at)

    async def count(self, prefix: str, revision: int = 0, start_after: str = "") -> int:
        result: int = await self._read(self._count, prefix, revision, start_after)
        return result

    def _count(self, conn: sqlite3.Connection, current: int, compacted: int, prefix: str, revision: int,
               start_after: str) -> int:
        at, where, params = self._range_at(current, compacted, prefix, revision, start_after)
        (n,) = conn.execute(f"SELECT COUNT(*) FROM current WHERE {where}", params).fetchone()
        if at < current:
            # Keys changed after `at`: whether each existed then (its first later change was a delete or a
            # replacement) replaces whether it exists now.
            for kind, prev_mod, _, exists_now in conn.execute(
                "SELECT type, prev_mod_revision, MIN(revision), key IN (SELECT key FROM current)"
                f" FROM log WHERE revision > ? AND {where} GROUP BY key",
                (at, *params),
            ):
                n += (kind == _DELETE or prev_mod != 0) - exists_now
        return int(n)

    @staticmethod
    def _replay(conn: sqlite3.Connection, current: int, compacted: int, prefix: str, first: int,
                last: int) -> tuple[list[Event], bool]:
        """Logged events under prefix with first <= revision <= last; True when the chunk is full."""
        if first <= compacted:
            raise CompactedError(first, compacted)
        prefix_b = prefix.encode()
        where, params = _key_range(prefix_b, prefix_b)
        rows = conn.execute(
            "SELECT revision, key, type, create_revision, value, prev_mod_revision, prev_value FROM log"
            f" WHERE revision >= ? AND revision <= ? AND {where} ORDER BY revision LIMIT ?",
            (first, last, *params, _REPLAY_CHUNK),
        ).fetchall()
        return [_event_from_log(r) for r in rows], len(rows) == _REPLAY_CHUNK

    # watch

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """History from the log, then live events. start_revision <= 0 means "from now on", as in etcd."""
        if self._closed or self._writer is None:
            raise StorageError("sqlite storage is not open")
        # Register before reading history: events committed from now on are buffered, and the
        # replay stops at the revision published at registration, so there is no gap and no repeat.
        registered_at = self._revision
        start = start_revision if start_revision > 0 else registered_at + 1
        watcher = _Watcher(prefix, max(start, registered_at + 1), self._watch_buffer)
        self._watchers.add(watcher)
        try:
            first = start
            while first <= registered_at:
                if self._closed:
                    return
                events, full = await self._read(self._replay, prefix, first, registered_at)
                for event in events:
                    yield event
                if not full:
                    break
                first = events[-1].kv.mod_revision + 1
            while True:
                live = await watcher.next()
                if live is None:
                    return
                yield live
        finally:
            self._watchers.discard(watcher)

    async def current_revision(self) -> int:
        return self._revision

    @property
    def compacted_revision(self) -> int:
        return self._compacted
