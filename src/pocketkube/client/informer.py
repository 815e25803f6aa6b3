"""Shared informers: list + watch into an indexed local cache, with event handlers.

A watch resumes from the last resourceVersion it saw (bookmarks keep that fresh); when the server
answers 410 Gone the informer lists again and tells its handlers what changed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
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
WATCH_TIMEOUT = 300
RETRY_DELAY = 1.0


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
                 field_selector: str = "", indexers: dict[str, IndexFunc] | None = None) -> None:
        self.client = client
        self.info = info
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.store = Indexer(indexers)
        self.synced = asyncio.Event()
        self.resource_version = ""
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
        while True:
            try:
                await self._list()
                await self._watch()
            except asyncio.CancelledError:
                raise
            except APIError as err:
                if not err.gone:
                    log.warning("%s informer: %s", self.info.plural, err)
                    await asyncio.sleep(RETRY_DELAY)
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                log.warning("%s informer: connection problem: %s", self.info.plural, err)
                await asyncio.sleep(RETRY_DELAY)

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

    async def _watch(self) -> None:
        """Watch until an error; a normal end of the stream just starts the next watch."""
        while True:
            async for event_type, obj in self.client.watch(
                    self.info, self.namespace, resource_version=self.resource_version,
                    label_selector=self.label_selector, field_selector=self.field_selector,
                    timeout_seconds=WATCH_TIMEOUT):
                self.resource_version = obj.get("metadata", {}).get("resourceVersion", self.resource_version)
                if event_type != "BOOKMARK":
                    self._apply(event_type, obj)

    def _apply(self, event_type: str, obj: Obj) -> None:
        if event_type == "DELETED":
            old = self.store.remove(object_key(obj))
            self._notify_delete(old or obj)
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
