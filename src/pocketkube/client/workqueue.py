"""A rate-limited work queue with client-go's semantics.

- A key is queued at most once (de-duplication) and processed by one worker at a time: a key added
  while it is being processed is queued again when that worker calls done().
- add_rate_limited() delays a key by its own exponential back-off (base * 2^failures, capped);
  forget() resets it after a success.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Hashable

BASE_DELAY = 0.005
MAX_DELAY = 1000.0


class ShutDown(Exception):
    """get() on a queue that is shutting down."""


class WorkQueue:
    def __init__(self, base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY) -> None:
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._waiting: list[tuple[float, int, Hashable]] = []  # heap of (ready_at, seq, key)
        self._seq = itertools.count()
        self._ready = asyncio.Event()  # set whenever _queue may be non-empty
        self._timer: asyncio.TimerHandle | None = None
        self._shutting_down = False
        self.base_delay = base_delay
        self.max_delay = max_delay

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: Hashable) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        heapq.heappush(self._waiting, (loop.time() + delay, next(self._seq), key))
        self._arm_timer()

    def add_rate_limited(self, key: Hashable) -> None:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self.add_after(key, min(self.base_delay * (2 ** failures), self.max_delay))

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> Hashable:
        while not self._queue:
            if self._shutting_down:
                raise ShutDown()
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._notify()

    def shutdown(self) -> None:
        self._shutting_down = True
        if self._timer is not None:
            self._timer.cancel()
        self._notify()

    def _notify(self) -> None:
        self._ready.set()

    def _arm_timer(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        if self._waiting:
            self._timer = loop.call_at(self._waiting[0][0], self._release_due)

    def _release_due(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._waiting and self._waiting[0][0] <= now:
            _, _, key = heapq.heappop(self._waiting)
            self.add(key)
        self._timer = None
        self._arm_timer()
