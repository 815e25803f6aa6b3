"""The kubelet's events leave one at a time, in the order they happened, as upstream's event broadcaster
writes them from a single goroutine behind a queue of 1000.

Recording never waits: a pod worker hands the event over and goes on starting its pod. Sending events
one by one keeps a burst of pod starts (three events each) from opening a burst of API connections, each
a TLS handshake for the kubelet and the API server, and from crowding the status updates the pods wait
for. When the queue is full the event is dropped, as upstream drops it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pocketkube.client.events import EventRecorder

log = logging.getLogger(__name__)
Obj = dict[str, Any]

MAX_QUEUED = 1000  # upstream's maxQueuedEvents


class EventQueue:
    def __init__(self, recorder: EventRecorder, max_queued: int = MAX_QUEUED) -> None:
        self.recorder = recorder
        self._queue: asyncio.Queue[tuple[Obj, str, str, str]] = asyncio.Queue(max_queued)

    def record(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        """Queue an event about `obj` (a whole API object: kind, apiVersion and metadata are used)."""
        try:
            self._queue.put_nowait((obj, event_type, reason, message))
        except asyncio.QueueFull:
            meta = obj.get("metadata") or {}
            log.warning("dropping event %s for %s/%s: %d events are already waiting to be sent", reason,
                        meta.get("namespace", ""), meta.get("name", ""), self._queue.maxsize)

    async def run(self) -> None:
        """Send queued events until cancelled. An event that cannot be sent is lost, never the ones after it."""
        while True:
            obj, event_type, reason, message = await self._queue.get()
            try:
                await self.recorder.event(obj, event_type, reason, message)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the recorder swallows API errors, not every transport failure
                log.warning("could not send event %s for %s: %s", reason, (obj.get("metadata") or {}).get("name"),
                            err)
