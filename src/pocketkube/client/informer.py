"""Shared informers: list + watch into an indexed local cache, with event handlers.

As client-go's reflector: a watch that ends (the server's timeout, a closed connection) is opened again from
the last resourceVersion seen (bookmarks keep that fresh) without listing; only 410 Gone (the server no
longer has that history) makes the informer list again, and tell its handlers what changed meanwhile:
updates, adds, and deletes for what vanished. Other failures (connection refused, 5xx, a broken stream) back
off exponentially and resume the watch where it was.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from pocketkube.api.kinds import ResourceInfo
from pocketkube.client.rest import APIError, Client

log = logging.getLogger(__name__)

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], list[str]]
LIST_PAGE = 500
# Each watch asks the server to end it after a random 5 to 10 minutes (client-go's minWatchTimeout), so that
# watches do not hang on a dead connection and a fleet of informers does not reconnect at once.
WATCH_TIMEOUT = 300
# A watch that ends this soon having delivered nothing counts as a failure (backs off), as client-go's
# "very short watch": a server closing every watch at once must not be hammered in a loop.
SHORT_WATCH = 1.0


class Backoff:
    """client-go's ExponentialBackoffManager: the delay doubles from `initial` up to `cap`, with up to
    `jitter` of it added at random, and starts again from `initial` once `reset_after` seconds passed
    without a backoff."""

    def __init__(self, initial: float = 0.8, cap: float = 30.0, reset_after: float = 120.0,
                 jitter: float = 1.0) -> None:
        self.initial = initial
        self.cap = cap
        self.reset_after = reset_after
        self.jitter = jitter
        self._delay = initial
        self._last: float | None = None

    def next_delay(self) -> float:
        now = asyncio.get_running_loop().time()
        if self._last is None or now - self._last > self.reset_after:
            self._delay = self.initial
        delay = self._delay
        self._delay = min(self.cap, self._delay * 2)
        self._last = now
        return min(delay, self.cap) * (1 + self.jitter * random.random())

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


def _by_namespace(obj: Obj) -> list[str]:
    return [obj.get("metadata", {}).get("namespace", "")]


def _by_owner(obj: Obj) -> list[str]:
    return [ref.get("uid", "") for ref in obj.get("metadata", {}).get("ownerReferences") or []]


def _by_node(obj: Obj) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def _by_label(obj: Obj) -> list[str]:
    return [f"{k}={v}" for k, v in (obj.get("metadata", {}).get("labels") or {}).items()]


DEFAULT_INDEXERS: dict[str, IndexFunc] = {
    "namespace": _by_namespace,
    "owner": _by_owner,
    "node": _by_node,
    "label": _by_label,
}


class Indexer:
    """Objects by key, plus secondary indexes (index name -> value -> keys)."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None) -> None:
        self.indexers = dict(DEFAULT_INDEXERS if indexers is None else indexers)
        self._items: dict[str, Obj] = {}
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self.indexers}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def list(self) -> list[Obj]:
        return list(self._items.values())

    def keys(self) -> list[str]:
        return list(self._items)

    def by_index(self, index: str, value: str) -> list[Obj]:
        return [self._items[k] for k in self._indices[index].get(value, ())]

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """Index by one more function (client-go's AddIndexers), existing objects included. A shared
        informer gets the same index from every controller that asks: the first one wins."""
        if name in self.indexers:
            return
        self.indexers[name] = func
        index: dict[str, set[str]] = {}
        self._indices[name] = index
        for key, obj in self._items.items():
            for value in func(obj):
                index.setdefault(value, set()).add(key)

    def put(self, obj: Obj) -> Obj | None:
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name, func in self.indexers.items():
            for value in func(obj):
                self._indices[name].setdefault(value, set()).add(key)
        return old

    def remove(self, key: str) -> Obj | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, func in self.indexers.items():
            index = self._indices[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


@dataclass
class Handler:
    on_add: Callable[[Obj], None] | None = None
    on_update: Callable[[Obj, Obj], None] | None = None
    on_delete: Callable[[Obj], None] | None = None


class Informer:
    def __init__(self, client: Client, info: ResourceInfo, *, namespace: str = "", label_selector: str = "",
                 field_selector: str = "", indexers: dict[str, IndexFunc] | None = None,
                 watch_timeout: int | None = None) -> None:
        self.client = client
        self.info = info
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.store = Indexer(indexers)
        self.synced = asyncio.Event()
        # The last resourceVersion seen: the list's, then each event's and bookmark's; watches resume from it.
        self.resource_version = ""
        # timeoutSeconds of each watch; None: a random 5 to 10 minutes, as client-go.
        self.watch_timeout = watch_timeout
        self.backoff = Backoff()
        self._listed_at = 0.0
        self._handlers: list[Handler] = []

    def add_handler(self, on_add: Callable[[Obj], None] | None = None,
                    on_update: Callable[[Obj, Obj], None] | None = None,
                    on_delete: Callable[[Obj], None] | None = None) -> None:
        handler = Handler(on_add, on_update, on_delete)
        self._handlers.append(handler)
        if on_add is not None:  # a late handler still hears about what is already known
            for obj in self.store.list():
                on_add(obj)

    async def run(self) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                if not await self._watch():
                    await self.backoff.wait()  # a very short watch: back off before the next one
            except asyncio.CancelledError:
                raise
            except APIError as err:
                if err.gone:  # the history since our resourceVersion is gone: only a list catches up
                    log.info("%s informer: %s; listing again", self.info.plural, err)
                    if not need_list and asyncio.get_running_loop().time() - self._listed_at < SHORT_WATCH:
                        await self.backoff.wait()  # a watch from a fresh list is Gone at once: do not spin
                    need_list = True
                    continue
                log.warning("%s informer: %s", self.info.plural, err)
                await self.backoff.wait()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
                # ValueError: a garbled event line. The next watch resumes from the last resourceVersion.
                log.warning("%s informer: connection problem: %s", self.info.plural,
                            str(err) or type(err).__name__)
                await self.backoff.wait()

    async def _list(self) -> None:
        items: list[Obj] = []
        token = ""
        revision = ""
        while True:
            page = await self.client.list(self.info, self.namespace, label_selector=self.label_selector,
                                          field_selector=self.field_selector, limit=LIST_PAGE,
                                          continue_token=token)
            items.extend(page.get("items") or [])
            revision = revision or page["metadata"]["resourceVersion"]
            token = page["metadata"].get("continue", "")
            if not token:
                break
        self._replace(items)
        self.resource_version = revision
        self._listed_at = asyncio.get_running_loop().time()
        self.synced.set()

    def _replace(self, items: list[Obj]) -> None:
        kind = self.info.kind
        fresh = set()
        for obj in items:
            obj.setdefault("kind", kind)
            obj.setdefault("apiVersion", self.info.group_version)
            fresh.add(object_key(obj))
            self._apply("ADDED", obj)
        for key in set(self.store.keys()) - fresh:
            old = self.store.remove(key)
            if old is not None:
                self._notify_delete(old)

    async def _watch(self) -> bool:
        """One watch from the last resourceVersion, until the server ends it; False when it ended at once
        without an event. Errors, ERROR events included, raise."""
        timeout = self.watch_timeout or int(WATCH_TIMEOUT * (1 + random.random()))
        loop = asyncio.get_running_loop()
        started = loop.time()
        events = 0
        async for event_type, obj in self.client.watch(
                self.info, self.namespace, resource_version=self.resource_version,
                label_selector=self.label_selector, field_selector=self.field_selector,
                timeout_seconds=timeout):
            events += 1
            if event_type != "BOOKMARK":
                self._apply(event_type, obj)
            self.resource_version = obj.get("metadata", {}).get("resourceVersion") or self.resource_version
        return events > 0 or loop.time() - started >= SHORT_WATCH

    def _apply(self, event_type: str, obj: Obj) -> None:
        if event_type == "DELETED":
            # Handlers get the object's final state, as the event carries it; a deletion of an object never
            # known is dropped (client-go's DeltaFIFO does the same).
            if self.store.remove(object_key(obj)) is not None:
                self._notify_delete(obj)
            return
        old = self.store.put(obj)
        for handler in self._handlers:
            try:
                if old is None:
                    if handler.on_add:
                        handler.on_add(obj)
                elif handler.on_update:
                    handler.on_update(old, obj)
            except Exception:
                log.exception("%s informer handler failed", self.info.plural)

    def _notify_delete(self, obj: Obj) -> None:
        for handler in self._handlers:
            if handler.on_delete:
                try:
                    handler.on_delete(obj)
                except Exception:
                    log.exception("%s informer handler failed", self.info.plural)


class InformerFactory:
    """One informer per (resource, namespace), shared by every controller that asks for it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._informers: dict[tuple[str, str, str, str], Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def informer(self, info: ResourceInfo, namespace: str = "") -> Informer:
        key = (info.group, info.version, info.plural, namespace)
        informer = self._informers.get(key)
        if informer is None:
            informer = self._informers[key] = Informer(self.client, info, namespace=namespace)
            if self._tasks:  # already started: start late informers right away
                self._tasks.append(asyncio.create_task(informer.run(), name=f"informer-{info.plural}"))
        return informer

    def start(self) -> None:
        for informer in self._informers.values():
            self._tasks.append(asyncio.create_task(informer.run(), name=f"informer-{informer.info.plural}"))

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self._informers.values()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
