"""An event recorder: core/v1 Events about objects, aggregated when the same thing happens again."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]
# Remember recent events this long, so repeats bump a count instead of making new Events.
AGGREGATION_WINDOW = 600.0
# At most this many recent events are remembered, least recently seen dropped first (client-go's LRU).
MAX_RECENT = 4096


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, client: Client, component: str, host: str = "") -> None:
        info = ResourceCatalog().resource("", "v1", "events")
        assert info is not None
        self.info = info
        self.client = client
        self.component = component
        self.host = host
        # (uid, type, reason, message) -> (event name, namespace, count, last seen)
        self._recent: dict[tuple[str, str, str, str], tuple[str, str, int, float]] = {}

    async def event(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        """Record that `reason` happened to `obj`; failures are logged, never raised (as client-go)."""
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid", ""), event_type, reason, message)
        now = time.monotonic()
        recent = self._recent.get(key)
        try:
            if recent is not None and now - recent[3] < AGGREGATION_WINDOW:
                name, ns, count, _ = recent
                await self.client.patch(self.info, name, {"count": count + 1, "lastTimestamp": _now()}, ns)
                self._remember(key, (name, ns, count + 1, now))
                return
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
                "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
                "reportingComponent": self.component, "reportingInstance": self.host or self.component,
            })
            self._remember(key, (created["metadata"]["name"], namespace, 1, now))
        except (APIError, OSError) as err:
            log.debug("could not record event %s for %s: %s", reason, meta.get("name"), err)

    def _remember(self, key: tuple[str, str, str, str], value: tuple[str, str, int, float]) -> None:
        """An LRU in insertion order: re-inserting moves the key to the end, the oldest one goes first.
        (Dropping by age instead rebuilt the whole map on every event once it held MAX_RECENT recent ones.)"""
        self._recent.pop(key, None)
        self._recent[key] = value
        if len(self._recent) > MAX_RECENT:
            del self._recent[next(iter(self._recent))]
