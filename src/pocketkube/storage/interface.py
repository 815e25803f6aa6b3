"""The storage contract: an MVCC key-value store whose revision is the resourceVersion.

Every backend (SQLite, etcd) implements `Storage` and passes the same contract tests
(tests/unit/test_storage_contract.py). Only the API server uses it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(slots=True, frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(slots=True, frozen=True)
class Event:
    """One change. For DELETED, `kv.value` is the last value and `kv.mod_revision` the deletion's revision."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(slots=True, frozen=True)
class ListResult:
    items: list[KeyValue]
    revision: int  # the revision the list was read at
    more: bool = False  # True when `limit` cut the result short


class StorageError(Exception):
    pass


class KeyExistsError(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key exists: {key}")
        self.key = key


class KeyNotFoundError(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class RevisionMismatchError(StorageError):
    """An update or delete named a mod_revision that is no longer current."""

    def __init__(self, key: str, current: KeyValue | None) -> None:
        super().__init__(f"revision mismatch for {key}")
        self.key = key
        self.current = current


class CompactedError(StorageError):
    """The requested revision is older than the compacted revision (the API answers 410 Expired)."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"required revision {requested} has been compacted (compacted revision {compacted})")
        self.requested = requested
        self.compacted = compacted


class FutureRevisionError(StorageError):
    """The requested revision is newer than the store's current revision."""

    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"revision {requested} is newer than the current revision {current}")
        self.requested = requested
        self.current = current


class Storage(abc.ABC):
    """MVCC store. Keys are strings such as /registry/core/pods/default/web; values are bytes."""

    # True when this process makes every write and sees its events at once (SQLite): a watch cache fed
    # by it is current as soon as a write is acknowledged. A remote store (etcd) delivers events later.
    events_are_immediate = False

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the store (create schema / connect)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every resource; running watches end."""

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> KeyValue:
        """Create `key`; KeyExistsError if present."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, expected_mod_revision: int) -> KeyValue:
        """Replace the value if its mod_revision still equals `expected_mod_revision`.

        KeyNotFoundError if absent; RevisionMismatchError(current) if changed since.
        """

    @abc.abstractmethod
    async def delete(self, key: str, expected_mod_revision: int | None = None) -> KeyValue:
        """Delete `key` (optionally only at `expected_mod_revision`). Returns the deleted value with
        mod_revision set to the deletion's revision. KeyNotFoundError / RevisionMismatchError."""

    @abc.abstractmethod
    async def get(self, key: str, revision: int = 0) -> KeyValue | None:
        """The value at `revision` (0 = latest), or None. CompactedError/FutureRevisionError."""

    @abc.abstractmethod
    async def list(self, prefix: str, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        """Keys under `prefix` in key order, at `revision` (0 = latest), after `start_after`,
        at most `limit` (0 = all). CompactedError/FutureRevisionError."""

    @abc.abstractmethod
    async def count(self, prefix: str, revision: int = 0, start_after: str = "") -> int:
        """How many keys `list` would return without a limit, without reading them: the keys under
        `prefix` at `revision` (0 = latest) after `start_after`. CompactedError/FutureRevisionError."""

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """Events under `prefix` with revision >= start_revision, history first, then live.

        Raises CompactedError (on first iteration) when start_revision is compacted.
        Close it with `aclose()`.
        """

    @abc.abstractmethod
    async def current_revision(self) -> int:
        """The newest revision in the store."""

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Forget history older than `revision`, and reclaim the space."""

    @property
    @abc.abstractmethod
    def compacted_revision(self) -> int:
        """The oldest revision still readable (as known to this client)."""


def open_storage(endpoint: str) -> Storage:
    """Make the backend named by a --datastore-endpoint: sqlite:///PATH or http://host:2379[,...]."""
    if endpoint.startswith("sqlite://"):
        from pocketkube.storage.sqlite import SQLiteStorage

        return SQLiteStorage(endpoint.removeprefix("sqlite://"))
    if endpoint.startswith(("http://", "https://")):
        from pocketkube.storage.etcd import EtcdStorage

        return EtcdStorage([e.strip() for e in endpoint.split(",") if e.strip()])
    raise ValueError(f"unsupported datastore endpoint {endpoint!r}: use sqlite:///PATH or http://HOST:2379")
