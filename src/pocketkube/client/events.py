"""An event recorder: core/v1 Events about objects, correlated as client-go's EventCorrelator does.

- The same event again (same object, type, reason and message) bumps the count of the Event already
  written instead of making a new one.
- Similar events (same object, type and reason, other messages): from the tenth distinct message within
  ten minutes on they are combined into one Event whose message starts with "(combined from similar
  events): " (EventAggregator).
- Spam filter: each object gets a burst of 25 events from this recorder, then one more every five
  minutes; the rest are dropped (EventSourceObjectSpamFilter). A dropped repeat still counts: the next
  one written carries the whole count, as upstream.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, TypeVar

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]
# defaultAggregateIntervalInSeconds: similar events this close are combined; repeats this close are counted.
AGGREGATION_WINDOW = 600.0
AGGREGATE_MAX_EVENTS = 10  # defaultAggregateMaxEvents
COMBINED_PREFIX = "(combined from similar events): "
SPAM_BURST = 25  # defaultSpamBurst
SPAM_QPS = 1.0 / 300.0  # defaultSpamQPS
# maxLruCacheEntries: each cache forgets its least recently used entries beyond this many.
MAX_RECENT = 4096

ObjectId = tuple[str, str, str, str, str]  # kind, namespace, name, uid, apiVersion
EventKey = tuple[str, str, str, str, str, str, str, str | None]  # ObjectId, type, reason, message (None: combined)
_CREATING = ""  # the name of an Event while it is being created
K = TypeVar("K")
V = TypeVar("V")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lru_put(cache: dict[K, V], key: K, value: V) -> None:
    """A dict as an LRU: re-inserting moves the key to the end; the oldest goes once it is full."""
    cache.pop(key, None)
    cache[key] = value
    if len(cache) > MAX_RECENT:
        del cache[next(iter(cache))]


class EventRecorder:
    def __init__(self, client: Client, component: str, host: str = "") -> None:
        info = ResourceCatalog().resource("", "v1", "events")
        assert info is not None
        self.info = info
        self.client = client
        self.component = component
        self.host = host
        # Event observed -> (its Event's name: None while none is written, _CREATING while one is being
        # created; namespace; count; last seen)
        self._recent: dict[EventKey, tuple[str | None, str, int, float]] = {}
        # (object, type, reason) -> (distinct messages lately, last seen)
        self._similar: dict[tuple[str, ...], tuple[set[str], float]] = {}
        # object -> (tokens left, when counted)
        self._spam: dict[ObjectId, tuple[float, float]] = {}

    async def event(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        """Record that `reason` happened to `obj`; failures are logged, never raised (as client-go)."""
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        obj_id: ObjectId = (obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""),
                            meta.get("uid", ""), obj.get("apiVersion", ""))
        now = time.monotonic()
        key, message = self._aggregate(obj_id, event_type, reason, message, now)
        recent = self._recent.get(key)
        name, count = None, 1
        if recent is not None and now - recent[3] < AGGREGATION_WINDOW:
            name, count = recent[0], recent[2] + 1
        # Observed even when the spam filter drops it, or while its Event is being created: the next
        # write carries the count (client-go writes one event at a time; this recorder does not wait).
        accepted = self._accept(obj_id, now)
        if not accepted or name == _CREATING:
            _lru_put(self._recent, key, (name, namespace, count, now))
            return
        _lru_put(self._recent, key, (name or _CREATING, namespace, count, now))
        try:
            if name is not None and await self._patch(name, namespace, count, message):
                return
            _lru_put(self._recent, key, (_CREATING, namespace, count, now))
            stamp = _now()
            created = await self.client.create(self.info, {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
                "involvedObject": {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", ""),
                                   "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                                   "uid": meta.get("uid", ""),
                                   "resourceVersion": meta.get("resourceVersion", "")},
                "reason": reason, "message": message, "type": event_type,
                "source": {"component": self.component, **({"host": self.host} if self.host else {})},
                "firstTimestamp": stamp, "lastTimestamp": stamp, "count": count,
                "reportingComponent": self.component, "reportingInstance": self.host or self.component,
            })
            current = self._recent.get(key)
            if current is not None and current[0] == _CREATING:
                _lru_put(self._recent, key, (created["metadata"]["name"], *current[1:]))
                if current[2] != count:  # repeats counted while it was being created: write their count
                    await self._patch(created["metadata"]["name"], namespace, current[2], message)
        except (APIError, OSError) as err:
            current = self._recent.get(key)
            if current is not None and current[0] == _CREATING:
                _lru_put(self._recent, key, (None, *current[1:]))  # a later event creates it
            log.debug("could not record event %s for %s: %s", reason, meta.get("name"), err)

    async def _patch(self, name: str, namespace: str, count: int, message: str) -> bool:
        """Bump an Event already written; False when it is gone (then it is created again, as upstream)."""
        try:
            await self.client.patch(self.info, name, {"count": count, "lastTimestamp": _now(), "message": message},
                                    namespace)
            return True
        except APIError as err:
            if err.not_found:
                return False
            raise

    def _aggregate(self, obj_id: ObjectId, event_type: str, reason: str, message: str,
                   now: float) -> tuple[EventKey, str]:
        """EventAggregate: the key to count this event under, and the message to write."""
        similar_key = (*obj_id, event_type, reason)
        record = self._similar.get(similar_key)
        messages = record[0] if record is not None and now - record[1] <= AGGREGATION_WINDOW else set()
        messages.add(message)
        _lru_put(self._similar, similar_key, (messages, now))
        if len(messages) < AGGREGATE_MAX_EVENTS:
            return (*obj_id, event_type, reason, message), message
        messages.pop()  # the set never grows past the threshold (PopAny)
        return (*obj_id, event_type, reason, None), COMBINED_PREFIX + message

    def _accept(self, obj_id: ObjectId, now: float) -> bool:
        """EventSourceObjectSpamFilter: a token bucket per object (burst 25, one more every 300 s)."""
        tokens, counted = self._spam.get(obj_id, (float(SPAM_BURST), now))
        tokens = min(float(SPAM_BURST), tokens + (now - counted) * SPAM_QPS)
        accepted = tokens >= 1.0
        _lru_put(self._spam, obj_id, (tokens - 1.0 if accepted else tokens, now))
        return accepted
