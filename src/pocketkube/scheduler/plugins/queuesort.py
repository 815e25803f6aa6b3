"""PrioritySort: higher spec.priority first, then the earlier queue timestamp."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pocketkube.scheduler.framework import Plugin

if TYPE_CHECKING:
    from pocketkube.scheduler.queue import QueuedPodInfo


class PrioritySort(Plugin):
    name = "PrioritySort"

    def less(self, a: QueuedPodInfo, b: QueuedPodInfo) -> bool:
        return self.sort_key(a) < self.sort_key(b)

    @staticmethod
    def sort_key(q: QueuedPodInfo) -> tuple[int, float]:
        """A heap key equivalent to less(): the queue orders by it without calling back per comparison."""
        return (-q.pod_info.priority, q.timestamp)
