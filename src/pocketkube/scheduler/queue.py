"""The scheduling queue: activeQ, backoffQ and the unschedulable pods, plus the nominator.

- activeQ is a heap ordered by the QueueSort plugin (PrioritySort: priority, then queue timestamp).
- A pod that failed waits in backoffQ for 1 s doubling per attempt up to 10 s (podInitialBackoffSeconds /
  podMaxBackoffSeconds), or in the unschedulable set until a cluster event that one of the plugins that
  rejected it registered for (and whose queueing hint agrees) moves it back. Pods stuck there longer
  than 5 minutes are flushed back anyway, as upstream's podMaxInUnschedulablePodsDuration.
- If such an event arrives while the pod is being scheduled, a rejection sends it to backoffQ instead
  of the unschedulable set (the moveRequestCycle rule), so no event is lost.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pocketkube.scheduler.framework import (
    EVENT_UNSCHEDULABLE_TIMEOUT,
    WILDCARD,
    ClusterEvent,
    ClusterEventWithHint,
    Status,
    is_success,
)
from pocketkube.scheduler.types import PodInfo

log = logging.getLogger(__name__)
Obj = dict[str, Any]
POD_MAX_IN_UNSCHEDULABLE = 300.0
UNSCHEDULABLE_FLUSH_INTERVAL = 30.0


@dataclass(eq=False)
class QueuedPodInfo:
    pod_info: PodInfo
    timestamp: float
    attempts: int = 0
    initial_attempt_timestamp: float | None = None
    unschedulable_plugins: set[str] = field(default_factory=set)
    pending_plugins: set[str] = field(default_factory=set)
    gated: bool = False
    first_queued: float = 0.0  # when the pod first entered the queue (scheduling latency starts here)

    @property
    def uid(self) -> str:
        return self.pod_info.uid


class Nominator:
    """Pods nominated to a node by preemption: the node's room is kept for them."""

    def __init__(self) -> None:
        self._by_node: dict[str, dict[str, PodInfo]] = {}
        self._node_of: dict[str, str] = {}

    def add(self, pi: PodInfo, node: str) -> None:
        self.delete(pi)
        if node:
            self._by_node.setdefault(node, {})[pi.uid] = pi
            self._node_of[pi.uid] = node

    def delete(self, pi: PodInfo) -> None:
        node = self._node_of.pop(pi.uid, None)
        if node is not None:
            pods = self._by_node.get(node, {})
            pods.pop(pi.uid, None)
            if not pods:
                self._by_node.pop(node, None)

    def update(self, pi: PodInfo) -> None:
        node = self._node_of.get(pi.uid)
        if node is not None:
            self._by_node[node][pi.uid] = pi

    def nominated_node(self, uid: str) -> str:
        return self._node_of.get(uid, "")

    def nominated_pods_for_node(self, node: str) -> list[PodInfo]:
        return list(self._by_node.get(node, {}).values())

    def nominated_node_names(self) -> list[str]:
        return list(self._by_node)


class SchedulingQueue:
    def __init__(self, sort_key: Callable[[QueuedPodInfo], Any],
                 pre_enqueue: Callable[[PodInfo], Status | None],
                 events: Mapping[str, list[ClusterEventWithHint]], *,
                 initial_backoff: float = 1.0, max_backoff: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sort_key = sort_key
        self.pre_enqueue = pre_enqueue
        self.events = events
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.clock = clock
        self.nominator = Nominator()
        self._seq = itertools.count()
        self._active: list[tuple[Any, int, str]] = []
        self._active_pods: dict[str, tuple[int, QueuedPodInfo]] = {}
        self._backoff: list[tuple[float, int, str]] = []
        self._backoff_pods: dict[str, tuple[int, QueuedPodInfo]] = {}
        self.unschedulable: dict[str, QueuedPodInfo] = {}
        self.in_flight: set[str] = set()
        self.scheduling_cycle = 0
        self.move_request_cycle = -1
        self._ready = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    # -- sizes ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._active_pods) + len(self._backoff_pods) + len(self.unschedulable)

    def active_count(self) -> int:
        return len(self._active_pods)

    def backoff_count(self) -> int:
        return len(self._backoff_pods)

    def contains(self, uid: str) -> bool:
        return uid in self._active_pods or uid in self._backoff_pods or uid in self.unschedulable

    # -- internal moves -------------------------------------------------------------------------
    def _push_active(self, q: QueuedPodInfo) -> None:
        seq = next(self._seq)
        self._active_pods[q.uid] = (seq, q)
        heapq.heappush(self._active, (self.sort_key(q), seq, q.uid))
        self._ready.set()

    def _push_backoff(self, q: QueuedPodInfo) -> None:
        seq = next(self._seq)
        self._backoff_pods[q.uid] = (seq, q)
        heapq.heappush(self._backoff, (self.backoff_expiry(q), seq, q.uid))
        self._arm_timer()

    def _remove(self, uid: str) -> QueuedPodInfo | None:
        entry = self._active_pods.pop(uid, None) or self._backoff_pods.pop(uid, None)
        if entry is not None:
            return entry[1]
        return self.unschedulable.pop(uid, None)

    def backoff_duration(self, q: QueuedPodInfo) -> float:
        duration = self.initial_backoff
        for _ in range(1, q.attempts):
            duration *= 2
            if duration >= self.max_backoff:
                return self.max_backoff
        return min(duration, self.max_backoff)

    def backoff_expiry(self, q: QueuedPodInfo) -> float:
        return q.timestamp + self.backoff_duration(q)

    def _is_backing_off(self, q: QueuedPodInfo) -> bool:
        return q.attempts > 0 and self.backoff_expiry(q) > self.clock()

    def _requeue(self, q: QueuedPodInfo) -> None:
        """Move a pod out of the unschedulable set: backoffQ while its back-off runs, else activeQ."""
        if self._is_backing_off(q):
            self._push_backoff(q)
        else:
            self._push_active(q)

    # -- API used by the informer handlers ------------------------------------------------------
    def add(self, pod: Obj) -> None:
        pi = PodInfo(pod)
        if self.contains(pi.uid) or pi.uid in self.in_flight:
            self.update(None, pod)
            return
        now = self.clock()
        q = QueuedPodInfo(pi, now, first_queued=now)
        self._enqueue_new(q)
        nominated = (pod.get("status") or {}).get("nominatedNodeName")
        if nominated:
            self.nominator.add(pi, nominated)

    def _enqueue_new(self, q: QueuedPodInfo) -> None:
        status = self.pre_enqueue(q.pod_info)
        if not is_success(status):
            assert status is not None
            q.gated = True
            q.unschedulable_plugins = {status.plugin} if status.plugin else set()
            self.unschedulable[q.uid] = q
            return
        q.gated = False
        self._push_active(q)

    def update(self, old: Obj | None, new: Obj) -> None:
        pi_uid = (new.get("metadata") or {}).get("uid") or ""
        entry = self._active_pods.get(pi_uid)
        if entry is not None:
            q = entry[1]
            q.pod_info.update(new)
            self._active_pods.pop(pi_uid)
            self._push_active(q)  # the sort key may have changed
            self.nominator.update(q.pod_info)
            return
        entry = self._backoff_pods.get(pi_uid)
        if entry is not None:
            entry[1].pod_info.update(new)
            self.nominator.update(entry[1].pod_info)
            return
        q = self.unschedulable.get(pi_uid)
        if q is not None:
            q.pod_info.update(new)
            self.nominator.update(q.pod_info)
            if q.gated:
                del self.unschedulable[pi_uid]
                self._enqueue_new(q)
            elif old is None or _pod_changed(old, new):
                # The pod itself changed (labels, tolerations, resources): it may fit now.
                del self.unschedulable[pi_uid]
                self._requeue(q)
            return
        if pi_uid not in self.in_flight:
            self.add(new)

    def delete(self, pod: Obj) -> None:
        uid = (pod.get("metadata") or {}).get("uid") or ""
        q = self._remove(uid)
        self.nominator.delete(q.pod_info if q is not None else PodInfo(pod))

    # -- the scheduling loop's side -------------------------------------------------------------
    async def pop(self) -> QueuedPodInfo:
        while True:
            while self._active:
                _, seq, uid = heapq.heappop(self._active)
                entry = self._active_pods.get(uid)
                if entry is None or entry[0] != seq:
                    continue  # stale heap entry
                del self._active_pods[uid]
                q = entry[1]
                q.attempts += 1
                if q.initial_attempt_timestamp is None:
                    q.initial_attempt_timestamp = self.clock()
                self.scheduling_cycle += 1
                self.in_flight.add(uid)
                return q
            if self._closed:
                raise asyncio.CancelledError()
            self._ready.clear()
            await self._ready.wait()

    def done(self, uid: str) -> None:
        self.in_flight.discard(uid)

    def add_unschedulable_if_not_present(self, q: QueuedPodInfo, pod_scheduling_cycle: int) -> None:
        """A pod that failed this cycle: to backoffQ if a move request arrived meanwhile or it failed with
        an error, otherwise to the unschedulable set to wait for an event."""
        self.in_flight.discard(q.uid)
        if self.contains(q.uid):
            return
        q.timestamp = self.clock()
        if self.move_request_cycle >= pod_scheduling_cycle or \
                (not q.unschedulable_plugins and not q.pending_plugins):
            self._push_backoff(q)
        else:
            self.unschedulable[q.uid] = q

    def move_all_to_active_or_backoff(self, event: ClusterEvent, old: Any = None, new: Any = None,
                                      pre_check: Callable[[QueuedPodInfo], bool] | None = None) -> None:
        moved = [q for q in self.unschedulable.values()
                 if not q.gated and (pre_check is None or pre_check(q)) and self._event_matters(q, event, old, new)]
        for q in moved:
            del self.unschedulable[q.uid]
            self._requeue(q)
        if self.in_flight and self._event_registered(event):
            self.move_request_cycle = self.scheduling_cycle

    def _event_registered(self, event: ClusterEvent) -> bool:
        if event.resource == WILDCARD:
            return True
        return any(e.event.matches(event) for events in self.events.values() for e in events)

    def _event_matters(self, q: QueuedPodInfo, event: ClusterEvent, old: Any, new: Any) -> bool:
        if event.resource == WILDCARD:
            return True
        plugins = q.unschedulable_plugins | q.pending_plugins
        if not plugins:
            return True
        for name in plugins:
            for registered in self.events.get(name, ()):
                if not registered.event.matches(event):
                    continue
                if registered.hint is None:
                    return True
                try:
                    if registered.hint(q.pod_info, old, new):
                        return True
                except Exception:  # a failing hint must not strand the pod: queue it
                    log.exception("queueing hint of %s failed", name)
                    return True
        return False

    # -- timers ---------------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._backoff:
            expiry, seq, uid = self._backoff[0]
            entry = self._backoff_pods.get(uid)
            if entry is None or entry[0] != seq:
                heapq.heappop(self._backoff)
                continue
            delay = max(0.0, expiry - self.clock())
            self._timer = loop.call_later(delay, self.flush_backoff_completed)
            return

    def flush_backoff_completed(self) -> None:
        """Move every pod whose back-off expired from backoffQ to activeQ."""
        now = self.clock()
        while self._backoff:
            expiry, seq, uid = self._backoff[0]
            entry = self._backoff_pods.get(uid)
            if entry is None or entry[0] != seq:
                heapq.heappop(self._backoff)
                continue
            if expiry > now:
                break
            heapq.heappop(self._backoff)
            del self._backoff_pods[uid]
            self._push_active(entry[1])
        self._timer = None
        self._arm_timer()

    def flush_unschedulable_leftover(self) -> None:
        now = self.clock()
        stale = [q for q in self.unschedulable.values()
                 if not q.gated and now - q.timestamp > POD_MAX_IN_UNSCHEDULABLE]
        if stale:
            stale_ids = {q.uid for q in stale}
            self.move_all_to_active_or_backoff(EVENT_UNSCHEDULABLE_TIMEOUT,
                                               pre_check=lambda q: q.uid in stale_ids)

    async def run(self) -> None:
        """Background flushes; runs until cancelled."""
        self._arm_timer()
        while True:
            await asyncio.sleep(UNSCHEDULABLE_FLUSH_INTERVAL)
            self.flush_unschedulable_leftover()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._ready.set()


def _pod_changed(old: Obj, new: Obj) -> bool:
    """Did anything scheduling-relevant change (not just status or resourceVersion)?"""
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    return old.get("spec") != new.get("spec") or om.get("labels") != nm.get("labels")
