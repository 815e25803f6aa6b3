"""The API server's watch cache: every stored object in memory, kept current by one storage watch.

LISTs, GETs and watches are served from here, so that many clients do not each hit the store.
A consistent read first waits until the cache has seen the store's current revision.

A resource may have a storage decoder (custom resources: their CRD's pruning and defaulting on read). The
cache holds objects decoded, so the work is done once per stored change rather than once per reader.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pocketkube.storage.interface import CompactedError, Event, KeyValue, Storage

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ObjectFilter = Callable[[Obj], bool]
# Turns a freshly decoded stored object (the decoder may change it in place) into the object readers see.
Decoder = Callable[[Obj], Obj]

ROOT_PREFIX = "/registry/"
# Events kept per resource for watches that resume from a resourceVersion.
HISTORY_PER_RESOURCE = 10_000
# A watcher that falls this far behind is closed; its client re-lists, as with upstream's cacher.
WATCHER_QUEUE_LIMIT = 50_000


def decode_kv(kv: KeyValue) -> Obj:
    """A stored value as an object carrying its resourceVersion (no storage decoder applied)."""
    obj = orjson.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


@dataclass(slots=True, frozen=True)
class CachedKeyValue(KeyValue):
    """A KeyValue rebuilt from a cached object: its value was already through the storage decoder."""


@dataclass(slots=True)
class CacheEvent:
    type: str  # ADDED, MODIFIED, DELETED
    revision: int
    obj: Obj
    prev: Obj | None
    key: str
    _json: bytes | None = None

    def json(self) -> bytes:
        """The object's JSON, encoded once however many watchers receive it."""
        if self._json is None:
            self._json = orjson.dumps(self.obj)
        return self._json


# What a watcher receives: (type, object, the event when the object is the event's own, else None).
WatchItem = tuple[str, Obj, CacheEvent | None]


class TooOldError(Exception):
    """The cache no longer holds the history a watch asked for (the API answers 410)."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")


@dataclass(eq=False)
class CacheWatcher:
    """One client watch: a queue of (type, object) already filtered for that client."""

    key_prefix: str
    matches: ObjectFilter
    queue: asyncio.Queue[WatchItem | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def offer(self, event: CacheEvent) -> None:
        if self.overflowed:
            return
        kind = self._translate(event)
        if kind is None:
            return
        if self.queue.qsize() >= WATCHER_QUEUE_LIMIT:
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(kind)

    def _translate(self, event: CacheEvent) -> WatchItem | None:
        """Selector-aware event type: an object that stops matching is DELETED for this watcher."""
        now = event.type != "DELETED" and self.matches(event.obj)
        before = event.prev is not None and self.matches(event.prev)
        if event.type == "DELETED":
            return ("DELETED", event.obj, event) if before or self.matches(event.obj) else None
        if now and before:
            return ("MODIFIED", event.obj, event)
        if now:
            return ("ADDED", event.obj, event)
        if before:
            prev = dict(event.prev or {})
            prev["metadata"] = {**prev.get("metadata", {}), "resourceVersion": str(event.revision)}
            return ("DELETED", prev, None)
        return None


class ResourceCache:
    """The objects and recent history under one storage prefix (one resource)."""

    def __init__(self, prefix: str, start_revision: int) -> None:
        self.prefix = prefix
        self.objects: dict[str, Obj] = {}
        self._sorted_keys: list[str] | None = None
        self.history: deque[CacheEvent] = deque(maxlen=HISTORY_PER_RESOURCE)
        # Events at or below this revision may be missing from `history`.
        self.oldest_revision = start_revision
        self.watchers: set[CacheWatcher] = set()
        # JSON of cached objects, made on first use; keyed by object identity, which changes with each write.
        self._encoded: dict[int, bytes] = {}

    def encoded(self, obj: Obj) -> bytes:
        """The JSON of a cached object (objects in the cache are never mutated, only replaced)."""
        data = self._encoded.get(id(obj))
        if data is None:
            data = self._encoded[id(obj)] = orjson.dumps(obj)
        return data

    def apply(self, event: CacheEvent, key: str) -> None:
        replaced = self.objects.get(key)
        if replaced is not None:
            self._encoded.pop(id(replaced), None)
        if event.type == "DELETED":
            self.objects.pop(key, None)
            self._sorted_keys = None
        else:
            if key not in self.objects:
                self._sorted_keys = None
            self.objects[key] = event.obj
        if len(self.history) == self.history.maxlen:
            self.oldest_revision = self.history[0].revision
        self.history.append(event)
        for watcher in list(self.watchers):
            if key.startswith(watcher.key_prefix):
                watcher.offer(event)

    def replace(self, key: str, obj: Obj) -> None:
        """Put a re-decoded version of a cached object in its place (same resourceVersion, no event)."""
        replaced = self.objects.get(key)
        if replaced is not None:
            self._encoded.pop(id(replaced), None)
            self.objects[key] = obj

    def sorted_keys(self) -> list[str]:
        if self._sorted_keys is None:
            self._sorted_keys = sorted(self.objects)
        return self._sorted_keys

    def items(self, key_prefix: str) -> list[Obj]:
        """Objects whose key starts with key_prefix, in key order."""
        keys = self.sorted_keys()
        if key_prefix == self.prefix:
            return [self.objects[k] for k in keys]
        start = bisect.bisect_left(keys, key_prefix)
        out = []
        for k in keys[start:]:
            if not k.startswith(key_prefix):
                break
            out.append(self.objects[k])
        return out

    def events_since(self, revision: int, key_prefix: str) -> list[CacheEvent]:
        """Events under key_prefix newer than `revision`; TooOldError if they are no longer all held."""
        if revision < self.oldest_revision:
            raise TooOldError(revision, self.oldest_revision)
        return [e for e in self.history if e.revision > revision and e.key.startswith(key_prefix)]

    def forget_before(self, revision: int) -> None:
        """Storage compacted: resuming from an older revision must now answer 410, as upstream."""
        while self.history and self.history[0].revision < revision:
            self.history.popleft()
        self.oldest_revision = max(self.oldest_revision, revision)


class WatchCache:
    """All resources' caches, fed by a single storage watch over /registry/."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.revision = 0
        self._resources: dict[str, ResourceCache] = {}
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._start_revision = 0
        self.ready = asyncio.Event()
        # Coalesced "what is the store's revision?" questions (see _current_revision).
        self._revision_asked: asyncio.Future[int] | None = None
        self._revision_next: asyncio.Future[int] | None = None
        # Storage decoders by resource prefix, with the key each was installed under (see set_decoder).
        self._decoders: dict[str, Decoder] = {}
        self._decoder_keys: dict[str, Hashable] = {}
        self._ever_decoded: set[str] = set()  # prefixes whose cached objects may have been decoded

    def resource(self, prefix: str) -> ResourceCache:
        cache = self._resources.get(prefix)
        if cache is None:
            cache = self._resources[prefix] = ResourceCache(prefix, self._start_revision)
        return cache

    @staticmethod
    def _split(key: str) -> str:
        """The resource prefix of a key: /registry/<group>/<resource>/."""
        parts = key.split("/", 4)
        return "/".join(parts[:4]) + "/"

    # --- storage decoders --------------------------------------------------------------------------
    def decoder(self, prefix: str) -> Decoder | None:
        return self._decoders.get(prefix) if self._decoders else None

    def decode(self, kv: KeyValue) -> Obj:
        """A stored value as readers see it: decode_kv, then the resource's storage decoder if it has one
        (a CachedKeyValue has been through it already)."""
        obj = decode_kv(kv)
        if not self._decoders or isinstance(kv, CachedKeyValue):
            return obj
        decoder = self._decoders.get(self._split(kv.key))
        return obj if decoder is None else decoder(obj)

    def set_decoder(self, prefix: str, key: Hashable, decoder: Decoder | None) -> bool:
        """Install (or, with None, remove) the storage decoder of the resource under ``prefix``.

        Returns True when the cached objects must be read from storage again (``refresh``): the decoding
        changed for objects that were already decoded. A first decoder applies to the cached objects at once.
        Installing again under the same key changes nothing.
        """
        if decoder is None:
            self._decoders.pop(prefix, None)
            self._decoder_keys.pop(prefix, None)
            return False
        if prefix in self._decoders and self._decoder_keys.get(prefix) == key:
            return False
        first = prefix not in self._ever_decoded
        self._decoders[prefix] = decoder
        self._decoder_keys[prefix] = key
        self._ever_decoded.add(prefix)
        cache = self._resources.get(prefix)
        if cache is None or not cache.objects:
            return False
        if first:
            # Cached objects are as stored: decode copies of them (readers may hold the originals).
            for obj_key, obj in list(cache.objects.items()):
                cache.replace(obj_key, decoder(orjson.loads(orjson.dumps(obj))))
            return False
        return True

    async def refresh(self, prefix: str) -> None:
        """Decode the cached objects under ``prefix`` again from storage, after their decoder changed.

        An object changed meanwhile is left alone: its newer version came through the watch, decoded anew."""
        decoder = self._decoders.get(prefix)
        if decoder is None:
            return
        listing = await self.storage.list(prefix)
        if self._decoders.get(prefix) is not decoder:
            return  # replaced again meanwhile: that one's refresh takes over
        cache = self.resource(prefix)
        for kv in listing.items:
            current = cache.objects.get(kv.key)
            if current is not None and current["metadata"].get("resourceVersion") == str(kv.mod_revision):
                cache.replace(kv.key, decoder(decode_kv(kv)))

    async def start(self) -> None:
        await self._fill()
        self._task = asyncio.create_task(self._run(), name="watch-cache")

    async def _fill(self) -> None:
        listing = await self.storage.list(ROOT_PREFIX)
        self._resources.clear()
        self._start_revision = listing.revision
        for kv in listing.items:
            self.resource(self._split(kv.key)).objects[kv.key] = self.decode(kv)
        self.revision = listing.revision
        self.ready.set()

    async def _run(self) -> None:
        while True:
            try:
                async for event in self.storage.watch(ROOT_PREFIX, self.revision + 1):
                    self._dispatch(event)
                    if event.kv.mod_revision > self.revision:
                        await self._advance(event.kv.mod_revision)
            except asyncio.CancelledError:
                raise
            except CompactedError:
                # We fell behind compaction: rebuild from a fresh list; watchers must re-list.
                log.warning("watch cache fell behind compaction; refilling")
                self._close_all_watchers()
                await self._fill()
            except Exception:
                log.exception("watch cache storage watch failed; resuming")
                await asyncio.sleep(0.5)

    def _dispatch(self, event: Event) -> None:
        kv = event.kv
        prefix = self._split(kv.key)
        decoder = self._decoders.get(prefix) if self._decoders else None
        obj = decode_kv(kv)
        if decoder is not None:
            obj = decoder(obj)
        cache = self.resource(prefix)
        prev = cache.objects.get(kv.key)
        if event.prev_kv is not None and (prev is None or prev["metadata"].get("resourceVersion")
                                          != str(event.prev_kv.mod_revision)):
            # Usually the cache holds exactly that version already (its objects are never mutated), and
            # decoding it a second time is a good part of the cost of a write.
            prev = decode_kv(event.prev_kv)
            if decoder is not None:
                prev = decoder(prev)
        elif event.prev_kv is None and event.type == "ADDED":
            prev = None
        cache.apply(CacheEvent(event.type, kv.mod_revision, obj, prev, kv.key), kv.key)

    async def _advance(self, revision: int) -> None:
        async with self._progress:
            self.revision = revision
            self._progress.notify_all()

    async def wait_for(self, revision: int, timeout: float = 3.0) -> bool:
        """Wait until the cache has seen `revision`; False on timeout."""
        if self.revision >= revision:
            return True
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(lambda: self.revision >= revision), timeout)
            except TimeoutError:
                return False
        return True

    async def wait_fresh(self, timeout: float = 3.0) -> bool:
        """Wait until the cache reflects every write acknowledged so far (a consistent read)."""
        return await self.wait_for(await self._current_revision(), timeout)

    async def _current_revision(self) -> int:
        """The store's revision, asking it once for every batch of concurrent readers.

        A reader may not share a question already on its way (it could predate the reader's own
        acknowledged writes), so it joins the next one, which starts when the current one returns.
        """
        if self._revision_asked is None:
            self._revision_asked = asyncio.get_running_loop().create_future()
            asyncio.ensure_future(self._ask_revision(self._revision_asked))
            return await asyncio.shield(self._revision_asked)
        if self._revision_next is None:
            self._revision_next = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._revision_next)

    async def _ask_revision(self, answer: asyncio.Future[int]) -> None:
        while True:
            try:
                answer.set_result(await self.storage.current_revision())
            except Exception as err:  # every waiter sees the failure
                answer.set_exception(err)
            waiting, self._revision_next = self._revision_next, None
            if waiting is None:
                self._revision_asked = None
                return
            self._revision_asked = answer = waiting

    def forget_before(self, revision: int) -> None:
        for cache in self._resources.values():
            cache.forget_before(revision)

    def _close_all_watchers(self) -> None:
        for cache in self._resources.values():
            for watcher in cache.watchers:
                watcher.overflowed = True
                watcher.queue.put_nowait(None)
            cache.watchers.clear()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._close_all_watchers()
