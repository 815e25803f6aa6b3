"""Leader election against a real API server: one leader at a time, hand-over on release, a leader that cannot
renew stops acting before anyone else starts, transient client errors are survived, and expiry is judged by
the local clock, never by the holder's renewTime. Durations are short (lease 2 s, renew deadline 1 s, retry
0.2 s) so that each test takes a few seconds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from cluster import Cluster
from harness import bare_server, connect, eventually, get_or_none, resource

from pocketkube.client.leaderelection import ElectionTiming, LeaderElectionLost, LeaderElector
from pocketkube.client.rest import APIError, Client, ClientConfig
from pocketkube.controllers.base import Controller
from pocketkube.controllers.manager import LEASE_NAME, ControllerManager
from pocketkube.scheduler.config import parse_configuration
from pocketkube.scheduler.plugins import REGISTRY
from pocketkube.scheduler.scheduler import Scheduler

Obj = dict[str, Any]
LEASES = resource("coordination.k8s.io", "leases")
NAMESPACE = "default"
LEASE, RENEW, RETRY = 2, 1.0, 0.2
FAST = {"lease_duration": LEASE, "renew_deadline": RENEW, "retry_period": RETRY}
# The longest a candidate sleeps between two attempts (the retry period with full jitter) plus slack.
CANDIDATE_POLL = RETRY * 2.2 + 0.5
# The longest a leader that can no longer renew keeps acting: its next round starts a retry period after the
# last renewal and is given up renew_deadline later; plus slack.
LEADER_STOPS_WITHIN = RETRY + RENEW + 0.5


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


class FaultyClient(Client):
    """A real client whose requests can be made to fail (`fail`: makes the exception every request raises;
    `failures`: exceptions the next requests raise, one each) or to hang (`hang`)."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        self.fail: Callable[[], BaseException] | None = None
        self.failures: list[BaseException] = []
        self.hang = False

    async def request(self, method: str, path: str, **kwargs: Any) -> Obj:
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail is not None:
            raise self.fail()
        if self.failures:
            raise self.failures.pop(0)
        return await super().request(method, path, **kwargs)


class Race:
    """Candidates for one Lease, each with a client of its own, each running `lead` with work that notes when
    it acts; `overlaps` records every moment two acted at once."""

    def __init__(self, server: Cluster, *identities: str, name: str = "") -> None:
        self.name = name or "le-" + uuid.uuid4().hex[:8]
        config = ClientConfig.from_kubeconfig(server.kubeconfig)
        self.clients = {i: FaultyClient(config) for i in identities}
        self.electors = {i: LeaderElector(self.clients[i], self.name, i, namespace=NAMESPACE, **FAST)
                         for i in identities}
        self.stops = {i: asyncio.Event() for i in identities}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.acting: set[str] = set()
        self.overlaps: list[set[str]] = []
        self.started: dict[str, float] = {}
        self.stopped: dict[str, float] = {}

    def start(self, identity: str) -> None:
        async def work() -> None:
            self.acting.add(identity)
            self.started[identity] = time.monotonic()
            if len(self.acting) > 1:
                self.overlaps.append(set(self.acting))
            try:
                await asyncio.get_running_loop().create_future()
            finally:
                self.acting.discard(identity)
                self.stopped[identity] = time.monotonic()
        self.tasks[identity] = asyncio.create_task(self.electors[identity].lead(self.stops[identity], work))

    async def leader(self, timeout: float = 10) -> str:
        acting = await eventually(lambda: _value(set(self.acting)), timeout, "a leader")
        assert len(acting) == 1, acting
        return next(iter(acting))

    async def __aenter__(self) -> Race:
        for identity in self.electors:
            self.start(identity)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for stop in self.stops.values():
            stop.set()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for client in self.clients.values():
            await client.close()


async def _value(value: Any) -> Any:
    return value


async def holder(client: Client, name: str, namespace: str = NAMESPACE) -> str | None:
    lease = await get_or_none(client, LEASES, name, namespace)
    return None if lease is None else lease["spec"].get("holderIdentity") or ""


def micro_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- (a) one leader; a clean stop hands over at once -----------------------------------------------

async def test_one_leader_and_release_hands_over_promptly(server: Cluster) -> None:
    async with connect(server) as admin, Race(server, "a", "b") as race:
        first = await race.leader()
        other = "b" if first == "a" else "a"
        # Well past a lease duration: the leader keeps renewing, so the other never gets in.
        await asyncio.sleep(LEASE * 1.5)
        assert race.acting == {first} and not race.overlaps
        assert await holder(admin, race.name) == first
        assert race.electors[first].is_leader.is_set() and not race.electors[other].is_leader.is_set()

        race.stops[first].set()
        await race.tasks[first]  # returns cleanly: work stopped, lease released
        released = time.monotonic()
        assert await race.leader() == other
        # Taken over within a poll, not after waiting for the lease to expire.
        assert race.started[other] - released < CANDIDATE_POLL < LEASE
        assert race.started[other] > race.stopped[first] and not race.overlaps
        lease = await admin.get(LEASES, race.name, NAMESPACE)
        assert lease["spec"]["holderIdentity"] == other and lease["spec"]["leaseTransitions"] >= 1

        race.stops[other].set()
        await race.tasks[other]
        assert await holder(admin, race.name) == ""


# --- (b) a leader that cannot renew stops within renew_deadline; the other waits for expiry ----------

@pytest.mark.parametrize("fault", ["hang", "disconnect"])
async def test_leader_that_cannot_renew_stops_before_the_lease_expires(server: Cluster, fault: str) -> None:
    async with Race(server, "a", "b") as race:
        first = await race.leader()
        other = "b" if first == "a" else "a"
        await asyncio.sleep(RETRY * 3)  # a few renewals
        broken = time.monotonic()
        if fault == "hang":
            race.clients[first].hang = True  # requests hang far longer than renew_deadline
        else:
            race.clients[first].fail = lambda: aiohttp.ServerDisconnectedError()
        with pytest.raises(LeaderElectionLost):
            await asyncio.wait_for(race.tasks[first], LEADER_STOPS_WITHIN + 1)
        assert race.electors[first].lost.is_set() and not race.electors[first].is_leader.is_set()
        assert race.stopped[first] - broken < LEADER_STOPS_WITHIN

        assert await race.leader() == other
        # The other waited for the lease to expire: a lease duration after it last saw a renewal (at most a
        # retry period before the fault), and it started only once the old leader had stopped.
        assert race.started[other] - broken > LEASE - RETRY - 0.1
        assert race.started[other] > race.stopped[first] and not race.overlaps


# --- (c) errors that are not OSError do not kill the election ----------------------------------------

async def test_non_oserror_client_errors_are_retried(server: Cluster) -> None:
    race = Race(server, "a")
    client, elector = race.clients["a"], race.electors["a"]
    client.failures = [aiohttp.ServerDisconnectedError(), aiohttp.ClientPayloadError("cut short"),
                       TimeoutError(), KeyError("surprise")]
    async with race:
        assert await race.leader() == "a"
        assert not client.failures and not race.tasks["a"].done()
        # Failures while leading: retried within the round, leadership kept.
        client.failures = [aiohttp.ClientPayloadError("cut short"), aiohttp.ServerDisconnectedError()]
        await asyncio.sleep(RENEW + RETRY * 3)
        assert not client.failures
        assert elector.is_leader.is_set() and not elector.lost.is_set() and not race.tasks["a"].done()


async def test_run_survives_aiohttp_errors(server: Cluster) -> None:
    """The bare `run` loop too: a candidate that only ever sees errors keeps campaigning."""
    client = FaultyClient(ClientConfig.from_kubeconfig(server.kubeconfig))
    client.fail = lambda: aiohttp.ServerDisconnectedError()
    elector = LeaderElector(client, "le-" + uuid.uuid4().hex[:8], "a", namespace=NAMESPACE, **FAST)
    task = asyncio.create_task(elector.run())
    try:
        await asyncio.sleep(RETRY * 5)
        assert not task.done()
        client.fail = None
        await asyncio.wait_for(elector.is_leader.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await elector.release()
        await client.close()


# --- (d) expiry by local observation, not by the holder's wall clock -----------------------------------

async def test_expiry_follows_local_observation_not_renew_time(server: Cluster) -> None:
    name = "le-" + uuid.uuid4().hex[:8]
    async with connect(server) as admin:
        past = datetime(2000, 1, 1, tzinfo=UTC)
        lease = await admin.create(LEASES, {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"holderIdentity": "skewed", "leaseDurationSeconds": LEASE, "acquireTime": micro_time(past),
                     "renewTime": micro_time(past), "leaseTransitions": 0}})
        async with Race(server, "candidate", name=name) as race:
            # The holder renews on time, but its clock says the year 2000: its lease is alive all the same.
            for step in range(int(LEASE * 2 / 0.3)):
                lease["spec"]["renewTime"] = micro_time(past + timedelta(seconds=step + 1))
                lease = await admin.update(LEASES, lease)
                await asyncio.sleep(0.3)
            assert not race.acting and await holder(admin, name) == "skewed"
            assert race.electors["candidate"].leader == "skewed"

            # Its last renewal claims the year 2100, and then it dies: the lease expires a lease duration after
            # the candidate last saw it change, whatever renewTime says.
            lease["spec"]["renewTime"] = micro_time(datetime(2100, 1, 1, tzinfo=UTC))
            await admin.update(LEASES, lease)
            died = time.monotonic()
            assert await race.leader(timeout=LEASE + CANDIDATE_POLL + 2) == "candidate"
            assert LEASE - 0.2 < race.started["candidate"] - died < LEASE + 2 * CANDIDATE_POLL
            held = await admin.get(LEASES, name, NAMESPACE)
            assert held["spec"]["holderIdentity"] == "candidate" and held["spec"]["leaseTransitions"] == 1


# --- the components: a lost lease stops them and surfaces as LeaderElectionLost --------------------------

class Probe(Controller):
    """A controller that only notes whether it runs."""

    name = "probe"
    running: set[str] = set()

    async def run(self) -> None:
        Probe.running.add(self.name)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            Probe.running.discard(self.name)


async def steal(admin: Client, name: str, namespace: str, stop: asyncio.Event) -> None:
    """Another holder takes the lease over (as one whose clock ran ahead would) and keeps renewing it."""
    while not stop.is_set():
        try:
            lease = await admin.get(LEASES, name, namespace)
            lease["spec"].update(holderIdentity="intruder", leaseDurationSeconds=LEASE,
                                 renewTime=micro_time(datetime.now(UTC)))
            await admin.update(LEASES, lease)
        except APIError:
            pass
        await asyncio.sleep(RETRY)


async def test_controller_manager_stops_controllers_when_the_lease_is_lost(server: Cluster) -> None:
    async with connect(server) as admin:
        manager = ControllerManager(admin, controllers=(Probe,), identity="cm-a",
                                    election=ElectionTiming(LEASE, RENEW, RETRY))
        stop, intruder_stop = asyncio.Event(), asyncio.Event()
        run = asyncio.create_task(manager.run(stop))
        intruder: asyncio.Task[None] | None = None
        try:
            await eventually(lambda: _value(bool(Probe.running)), 10, "the probe controller running")
            assert await holder(admin, LEASE_NAME, "kube-system") == "cm-a"
            intruder = asyncio.create_task(steal(admin, LEASE_NAME, "kube-system", intruder_stop))
            stolen = time.monotonic()
            with pytest.raises(LeaderElectionLost):
                await asyncio.wait_for(run, LEADER_STOPS_WITHIN + 2)
            # Seeing another holder, it stops at its next renewal rather than at the renew deadline.
            assert time.monotonic() - stolen < RETRY * 3 + 0.5
            assert not Probe.running
            assert await holder(admin, LEASE_NAME, "kube-system") == "intruder"  # not released over it
        finally:
            stop.set()
            intruder_stop.set()
            await asyncio.gather(run, *([intruder] if intruder else []), return_exceptions=True)
            await admin.delete(LEASES, LEASE_NAME, "kube-system")


async def test_controller_manager_fails_instead_of_hanging_when_the_election_dies(
        server: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: LeaderElector) -> None:
        raise RuntimeError("election broke")
    monkeypatch.setattr(LeaderElector, "run", broken)
    async with connect(server) as admin:
        manager = ControllerManager(admin, controllers=(Probe,), identity="cm-b",
                                    election=ElectionTiming(LEASE, RENEW, RETRY))
        with pytest.raises(RuntimeError, match="election broke"):
            await asyncio.wait_for(manager.run(asyncio.Event()), 5)
        assert not Probe.running


async def test_controller_manager_stops_when_the_election_dies_while_leading(
        server: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: LeaderElector) -> bool:
        raise RuntimeError("renewal broke")
    monkeypatch.setattr(LeaderElector, "_renew", broken)
    async with connect(server) as admin:
        manager = ControllerManager(admin, controllers=(Probe,), identity="cm-c",
                                    election=ElectionTiming(LEASE, RENEW, RETRY))
        with pytest.raises(LeaderElectionLost) as info:
            await asyncio.wait_for(manager.run(asyncio.Event()), 10)
        assert isinstance(info.value.__cause__, RuntimeError) and not Probe.running
        await admin.delete(LEASES, LEASE_NAME, "kube-system")


async def test_scheduler_stops_when_the_lease_is_lost(server: Cluster) -> None:
    name = "le-" + uuid.uuid4().hex[:8]
    config = parse_configuration({"leaderElection": {
        "leaseDuration": f"{LEASE}s", "renewDeadline": f"{RENEW}s", "retryPeriod": f"{int(RETRY * 1000)}ms",
        "resourceName": name, "resourceNamespace": NAMESPACE}}, REGISTRY)
    async with connect(server) as admin:
        scheduler = Scheduler(admin, config, identity="sched-a")
        stop, intruder_stop = asyncio.Event(), asyncio.Event()
        run = asyncio.create_task(scheduler.run(stop))
        intruder: asyncio.Task[None] | None = None
        try:
            await eventually(lambda: holder(admin, name), 10, "the scheduler's lease",
                             until=lambda h: h == "sched-a")
            intruder = asyncio.create_task(steal(admin, name, NAMESPACE, intruder_stop))
            with pytest.raises(LeaderElectionLost):
                await asyncio.wait_for(run, LEADER_STOPS_WITHIN + 2)
        finally:
            stop.set()
            intruder_stop.set()
            await asyncio.gather(run, *([intruder] if intruder else []), return_exceptions=True)
