"""Leader election on a coordination.k8s.io Lease, as client-go's tools/leaderelection does.

A candidate campaigns by polling the Lease every `retry_period` (with jitter). It takes the Lease over when
nobody holds it, or when the record has not changed for the record's leaseDurationSeconds *as measured on
this process's own monotonic clock* from the moment this candidate last saw the record change: the holder's
renewTime is written for people to read, never compared with the local wall clock, so clock skew between
machines cannot make a live holder look expired (or a dead one look alive).

The leader renews every `retry_period`. Each renewal round, its requests included, is bounded by
`renew_deadline`; a leader that cannot renew within it stops leading (`lost`), well before a candidate may
take the Lease over (`lease_duration` > `renew_deadline`). Every write carries the resourceVersion read or
written last, so two candidates can never both win the same round.

`lead(stop, work)` is what a component runs (upstream's RunOrDie with ReleaseOnCancel): `work` runs only
while leading, is cancelled the moment leadership is lost, and LeaderElectionLost is raised then so the
process can exit and be restarted, as kube-controller-manager and kube-scheduler do.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]

# Candidates wait retry_period * (1 + rand * JITTER_FACTOR) between attempts to acquire (wait.JitterUntil).
JITTER_FACTOR = 1.2


class LeaderElectionLost(Exception):
    """This process led and could not keep the Lease: whatever the Lease guarded has been stopped, and the
    process should exit so that its supervisor restarts it as a fresh candidate."""


@dataclass(frozen=True)
class ElectionTiming:
    """LeaderElectionConfiguration's durations, in seconds."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def validate(self) -> None:
        """ValueError unless the durations keep the holder's deadline inside the candidates' wait (upstream's
        NewLeaderElector checks)."""
        if self.lease_duration < 1:
            raise ValueError("leaseDuration must be at least 1s (the Lease records whole seconds)")
        if self.renew_deadline <= 0:
            raise ValueError("renewDeadline must be greater than zero")
        if self.retry_period <= 0:
            raise ValueError("retryPeriod must be greater than zero")
        if int(self.lease_duration) <= self.renew_deadline:
            raise ValueError("leaseDuration must be greater than renewDeadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError("renewDeadline must be greater than retryPeriod*JitterFactor")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One candidate for one Lease. `is_leader` is set while it leads; `lost` once it has led and stopped
    leading because it could not renew (or its election failed). Use `lead`, or `run` + `release`."""

    def __init__(self, client: Client, name: str, identity: str, *, namespace: str = "kube-system",
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        ElectionTiming(lease_duration, renew_deadline, retry_period).validate()
        info = ResourceCatalog().resource("coordination.k8s.io", "v1", "leases")
        assert info is not None
        self.info = info
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = asyncio.Event()
        self.lost = asyncio.Event()
        # The Lease as last read or written (its resourceVersion guards the next write), its spec as last
        # observed, and when (event-loop monotonic clock) that spec was first seen: observedRecord/observedTime.
        self._lease: Obj | None = None
        self._observed: Obj | None = None
        self._observed_time = 0.0

    @property
    def description(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def leader(self) -> str:
        """The holder this candidate last observed ("" if none): upstream's GetLeader."""
        return str((self._observed or {}).get("holderIdentity") or "")

    # --- running -------------------------------------------------------------------------------
    async def lead(self, stop: asyncio.Event, work: Callable[[], Awaitable[None]]) -> None:
        """Campaign until leading (or until `stop`), then run `work()` until `stop` is set or it returns, and
        release the Lease once it has stopped. If leadership is lost meanwhile, `work` is cancelled (and
        awaited) first and LeaderElectionLost is raised. An election that fails before leading raises its
        error instead of leaving the caller waiting forever. `work`'s own exception propagates."""
        election = asyncio.create_task(self.run(), name=f"leader-election-{self.name}")
        stopping = asyncio.create_task(stop.wait())
        leading = asyncio.create_task(self.is_leader.wait())
        worker: asyncio.Task[None] | None = None
        lost = False
        try:
            await asyncio.wait({election, stopping, leading}, return_when=asyncio.FIRST_COMPLETED)
            if election.done():
                lost = True
                self._raise_lost(election, "the leader election ended before this candidate led")
            if stop.is_set():
                return
            worker = asyncio.create_task(work(), name=f"leading-{self.name}")
            await asyncio.wait({election, stopping, worker}, return_when=asyncio.FIRST_COMPLETED)
            if election.done():
                lost = True
                await _cancel(worker)
                self._raise_lost(election, f"lost the lease {self.description}")
            if worker.done():
                worker.result()
        finally:
            if worker is not None:
                await _cancel(worker)
            for task in (election, stopping, leading):
                task.cancel()
            await asyncio.gather(election, stopping, leading, return_exceptions=True)
            if not lost:
                await self.release()

    def _raise_lost(self, election: asyncio.Task[None], message: str) -> None:
        error = None if election.cancelled() else election.exception()
        if error is not None and not self.lost.is_set():
            raise error  # failed before ever leading: not a loss of leadership
        if error is not None:  # run() logged an ordinary loss itself
            log.error("%s: leader election failed while leading as %s, stopped leading: %s", self.name,
                      self.identity, _describe(error))
        raise LeaderElectionLost(f"{message} (identity {self.identity})") from error

    async def run(self) -> None:
        """Acquire, then keep renewing; returns (with `is_leader` cleared and `lost` set) once a renewal round
        fails to succeed within renew_deadline. Cancel it to stop campaigning or leading."""
        loop = asyncio.get_running_loop()
        log.info("%s: attempting to acquire leader lease %s as %s", self.name, self.description, self.identity)
        while not await self._attempt(loop.time() + self.renew_deadline):
            await asyncio.sleep(self.retry_period * (1 + random.random() * JITTER_FACTOR))
        log.info("%s: successfully acquired lease %s as %s", self.name, self.description, self.identity)
        self.is_leader.set()
        cancelled = False
        try:
            while True:
                await asyncio.sleep(self.retry_period)
                if not await self._renew():
                    log.error("%s: stopped leading lease %s as %s", self.name, self.description, self.identity)
                    return
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self.is_leader.clear()
            if not cancelled:
                self.lost.set()

    async def release(self) -> bool:
        """Give the Lease up so a successor need not wait for it to expire (ReleaseOnCancel). Call it only once
        whatever the Lease guards has stopped. Best effort, bounded by renew_deadline: False if it failed."""
        self.is_leader.clear()
        if self.leader != self.identity:
            return True
        try:
            async with asyncio.timeout(self.renew_deadline):
                lease = await self.client.get(self.info, self.name, self.namespace)
                spec = lease.get("spec") or {}
                if spec.get("holderIdentity") != self.identity:
                    return True
                now = _now()
                lease["spec"] = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now,
                                 "renewTime": now}
                released = await self.client.update(self.info, lease)
        except (APIError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
            log.warning("%s: could not release lease %s: %s", self.name, self.description, _describe(err))
            return False
        self._observe(released, written=True)
        log.info("%s: released lease %s", self.name, self.description)
        return True

    # --- one round --------------------------------------------------------------------------------
    async def _renew(self) -> bool:
        """One renewal round: try every retry_period until one attempt succeeds or renew_deadline has passed
        since the round began (requests in flight then are cancelled). Seeing another holder ends it at once:
        that one holds a lease just renewed (this process may have stalled past its own lease), and waiting
        for the deadline would only let both act longer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.renew_deadline
        while True:
            if await self._attempt(deadline):
                return True
            if self.leader not in ("", self.identity):
                log.error("%s: lease %s is now held by %s", self.name, self.description, self.leader)
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.error("%s: failed to renew lease %s within %.1fs", self.name, self.description,
                          self.renew_deadline)
                return False
            await asyncio.sleep(min(self.retry_period, remaining))

    async def _attempt(self, deadline: float) -> bool:
        """tryAcquireOrRenew, cut off at `deadline` (loop time). Any failure is logged and means False: only
        cancellation ends the election."""
        try:
            async with asyncio.timeout_at(deadline):
                return await self._try_acquire_or_renew()
        except TimeoutError:
            log.warning("%s: request on lease %s timed out", self.name, self.description)
        except (APIError, aiohttp.ClientError, OSError, ValueError) as err:
            log.warning("%s: error on lease %s: %s", self.name, self.description, _describe(err))
        except Exception:
            log.exception("%s: unexpected error on lease %s", self.name, self.description)
        return False

    def _observe(self, lease: Obj, *, written: bool = False) -> None:
        """Note the Lease as read (its observed time moves only when its spec changed) or as just written."""
        spec = dict(lease.get("spec") or {})
        self._lease = lease
        if written or spec != self._observed:
            self._observed = spec
            self._observed_time = asyncio.get_running_loop().time()

    def _observed_valid(self) -> bool:
        """The observed record has changed within its own leaseDurationSeconds, by the local clock."""
        duration = (self._observed or {}).get("leaseDurationSeconds")
        if not isinstance(duration, int | float) or duration <= 0:
            duration = self.lease_duration
        return self._observed_time + duration > asyncio.get_running_loop().time()

    def _record(self, spec: Obj, renewing: bool, now: str) -> Obj:
        record = {**spec, "holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                  "renewTime": now}
        if not renewing:
            record["acquireTime"] = now
            record["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if spec else 0)
        return record

    async def _try_acquire_or_renew(self) -> bool:
        now = _now()
        # 1. The leader's fast path: update the Lease last seen, trusting it is still current (one request).
        if self._lease is not None and self.leader == self.identity and self._observed_valid():
            lease = {**self._lease, "spec": self._record(self._lease.get("spec") or {}, True, now)}
            try:
                self._observe(await self.client.update(self.info, lease), written=True)
                return True
            except APIError as err:  # e.g. a conflict: someone else wrote it; look again
                log.info("%s: could not renew lease %s from the last version seen (%s), reading it again",
                         self.name, self.description, err)
        # 2. Read the Lease, or create it.
        try:
            lease = await self.client.get(self.info, self.name, self.namespace)
        except APIError as err:
            if not err.not_found:
                raise
            created = await self.client.create(self.info, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._record({}, False, now)})
            self._observe(created, written=True)
            return True
        self._observe(lease)
        # 3. Held by someone else, and changed within its duration by our clock: not ours to take.
        holder = self.leader
        if holder and holder != self.identity and self._observed_valid():
            log.debug("%s: lease %s is held by %s and has not yet expired", self.name, self.description, holder)
            return False
        # 4. Ours to renew, free, or expired: write it (guarded by the resourceVersion just read).
        lease = {**lease, "spec": self._record(lease.get("spec") or {}, holder == self.identity, now)}
        self._observe(await self.client.update(self.info, lease), written=True)
        return True


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait until it has ended (its outcome is dropped; our own cancellation is not)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
