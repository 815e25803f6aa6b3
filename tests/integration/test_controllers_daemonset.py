"""DaemonSet controller against a real API server, with the scheduler and simulated nodes in-process.

Tests change node labels and taints and put them back; the pod garbage collector (with a short
quarantine) removes pods of deleted nodes, the garbage collector removes pods of deleted DaemonSets.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import harness
import pytest
import pytest_asyncio
from cluster import Cluster
from harness import bare_server, connect, create_namespace, found, resource, running

from pocketkube.client.rest import Client
from pocketkube.controllers.daemonset import DaemonSetController
from pocketkube.controllers.garbagecollector import GarbageCollector
from pocketkube.controllers.podgc import PodGCController
from pocketkube.controllers.serviceaccount import ServiceAccountsController
from pocketkube.kubelet.simulated import SimulatedNodes, SimulationConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
PODS, NODES, EVENTS = resource("", "pods"), resource("", "nodes"), resource("", "events")
DS, REVISIONS = resource("apps", "daemonsets"), resource("apps", "controllerrevisions")
NODE_NAMES = ["dsn-0", "dsn-1", "dsn-2"]
SIM = SimulationConfig(name_prefix="dsn-", pod_ready_delay=0.2, delete_delay=0.1)
_ns_counter = itertools.count()
# The checks return a value or None: a value, even an empty list, is the answer.
eventually = partial(harness.eventually, until=found)


class FastPodGC(PodGCController):
    """Pods of deleted nodes go within a second rather than after the 40 s quarantine."""

    gc_period = 0.3
    quarantine = 0.3


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    """The API client, with the controllers, the scheduler and three simulated nodes running."""
    async with connect(cluster) as c, running(
            c, scheduler=True, nodes=SimulatedNodes(c, 3, SIM), identity="test-ds",
            controllers=(DaemonSetController, GarbageCollector, FastPodGC, ServiceAccountsController)):
        yield c


class Env:
    def __init__(self, cluster: Cluster, client: Client, namespace: str) -> None:
        self.cluster = cluster
        self.client = client
        self.ns = namespace

    async def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl in a thread, so the controllers in this event loop keep running meanwhile."""
        return await asyncio.to_thread(self.cluster.kubectl, "-n", self.ns, *args, check=check, timeout=60)

    async def create(self, name: str = "agent", *, update: Obj | None = None, **pod_spec: Any) -> Obj:
        labels = {"app": name}
        return await self.client.create(DS, {
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": self.ns},
            "spec": {"selector": {"matchLabels": labels}, **({"updateStrategy": update} if update else {}),
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "c", "image": "agent:1"}], **pod_spec}}}})

    async def ds(self, name: str = "agent") -> Obj:
        return await self.client.get(DS, name, self.ns)

    async def pods(self) -> list[Obj]:
        return [p for p in (await self.client.list(PODS, self.ns))["items"]
                if not p["metadata"].get("deletionTimestamp")]

    async def nodes_with_pods(self) -> list[str]:
        return sorted(p["spec"].get("nodeName") or "?" for p in await self.pods())

    async def settled(self, desired: int, name: str = "agent") -> Obj | None:
        ds = await self.ds(name)
        status = ds.get("status") or {}
        done = (status.get("observedGeneration") == ds["metadata"]["generation"]
                and status.get("desiredNumberScheduled") == desired == status.get("currentNumberScheduled")
                == status.get("numberReady") == status.get("numberAvailable", 0)
                == status.get("updatedNumberScheduled", 0) and status.get("numberMisscheduled") == 0)
        return ds if done else None

    async def patch_node(self, name: str, body: Obj) -> None:
        await self.client.patch(NODES, name, body)


@pytest_asyncio.fixture(loop_scope="module")
async def env(cluster: Cluster, client: Client) -> AsyncIterator[Env]:
    namespace = await create_namespace(client, f"ds-{next(_ns_counter)}")
    e = Env(cluster, client, namespace)
    try:
        yield e
    finally:
        for ds in (await client.list(DS, namespace))["items"]:  # the garbage collector takes the pods
            await client.delete(DS, ds["metadata"]["name"], namespace)
        for name in NODE_NAMES:  # back to plain nodes
            await client.patch(NODES, name, {"metadata": {"labels": {"disk": None}}, "spec": {"taints": None}})


def ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions")
               or [])


async def test_one_pod_per_node_placed_by_the_scheduler(env: Env) -> None:
    await env.create()
    ds = await eventually(lambda: env.settled(3))
    assert "numberUnavailable" not in ds["status"]  # zero: omitted, as Go writes it
    pods = await env.pods()
    assert sorted(p["spec"]["nodeName"] for p in pods) == NODE_NAMES
    revisions = (await env.client.list(REVISIONS, env.ns))["items"]
    assert len(revisions) == 1 and revisions[0]["revision"] == 1
    hash_ = revisions[0]["metadata"]["labels"]["controller-revision-hash"]
    assert revisions[0]["metadata"]["name"] == f"agent-{hash_}"
    for pod in pods:
        node = pod["spec"]["nodeName"]
        assert pod["metadata"]["generateName"] == "agent-"
        assert pod["metadata"]["labels"]["controller-revision-hash"] == hash_
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms == {"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node]}]}]}
        tolerated = {(t["key"], t["effect"]) for t in pod["spec"]["tolerations"]}
        assert {("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
                ("node.kubernetes.io/disk-pressure", "NoSchedule"), ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                ("node.kubernetes.io/unschedulable", "NoSchedule")} <= tolerated
        assert ("node.kubernetes.io/network-unavailable", "NoSchedule") not in tolerated  # not hostNetwork
    created = [e["message"] for e in (await env.client.list(EVENTS, env.ns))["items"]
               if e["reason"] == "SuccessfulCreate" and e["involvedObject"]["kind"] == "DaemonSet"]
    assert len(created) == 3 and all(m.startswith("Created pod: agent-") for m in created)
    out = (await env.kubectl("rollout", "status", "daemonset/agent", "--timeout=20s")).stdout
    assert 'daemon set "agent" successfully rolled out' in out


async def test_node_selector_follows_node_labels(env: Env) -> None:
    await env.patch_node("dsn-1", {"metadata": {"labels": {"disk": "ssd"}}})
    await env.create(nodeSelector={"disk": "ssd"}, hostNetwork=True)
    await eventually(lambda: env.settled(1))
    pods = await env.pods()
    assert [p["spec"]["nodeName"] for p in pods] == ["dsn-1"]
    tolerated = {(t["key"], t["effect"]) for t in pods[0]["spec"]["tolerations"]}
    assert ("node.kubernetes.io/network-unavailable", "NoSchedule") in tolerated  # hostNetwork pods

    await env.patch_node("dsn-2", {"metadata": {"labels": {"disk": "ssd"}}})
    await eventually(lambda: env.settled(2))
    assert await env.nodes_with_pods() == ["dsn-1", "dsn-2"]
    await env.patch_node("dsn-1", {"metadata": {"labels": {"disk": None}}})

    async def moved() -> bool:
        return await env.nodes_with_pods() == ["dsn-2"] and await env.settled(1) is not None
    await eventually(moved)


async def test_taints_and_tolerations(env: Env) -> None:
    await env.create()
    await eventually(lambda: env.settled(3))
    # A NoSchedule taint keeps new pods away but lets the running one stay (misscheduled).
    await env.patch_node("dsn-0", {"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})

    async def misscheduled() -> Obj | None:
        status = (await env.ds()).get("status") or {}
        return status if status.get("desiredNumberScheduled") == 2 and status.get("numberMisscheduled") == 1 else None
    await eventually(misscheduled)
    assert await env.nodes_with_pods() == NODE_NAMES
    # NoExecute: the pod goes.
    await env.patch_node("dsn-0", {"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoExecute"}]}})

    async def evicted() -> bool:
        return await env.nodes_with_pods() == ["dsn-1", "dsn-2"] and await env.settled(2) is not None
    await eventually(evicted)
    # A DaemonSet that tolerates the taint runs there; the default tolerations cover cordoned nodes.
    await env.patch_node("dsn-1", {"spec": {"unschedulable": True}})
    await env.create("tolerant", tolerations=[{"key": "dedicated", "operator": "Exists"}])
    await eventually(lambda: env.settled(3, "tolerant"))
    await env.patch_node("dsn-1", {"spec": {"unschedulable": False}})
    await env.patch_node("dsn-0", {"spec": {"taints": None}})
    await eventually(lambda: env.settled(3))


async def test_new_nodes_get_a_pod_and_removed_nodes_lose_it(env: Env) -> None:
    await env.create()
    await eventually(lambda: env.settled(3))
    stop = asyncio.Event()
    extra = SimulatedNodes(env.client, 1, SimulationConfig(name_prefix="dsx-", pod_ready_delay=0.2))
    task = asyncio.create_task(extra.run(stop))
    try:
        await eventually(lambda: env.settled(4))
        assert await env.nodes_with_pods() == [*NODE_NAMES, "dsx-0"]
        await env.client.delete(NODES, "dsx-0")

        async def gone() -> bool:
            return await env.nodes_with_pods() == NODE_NAMES and await env.settled(3) is not None
        await eventually(gone)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _watch_rollout(env: Env, done: Callable[[], Awaitable[bool]]) -> tuple[int, int]:
    """Sample until done(): the most nodes without an available pod, and the most pods on one node."""
    worst_unavailable = worst_per_node = 0
    deadline = asyncio.get_running_loop().time() + 30
    while not await done():
        assert asyncio.get_running_loop().time() < deadline, "rollout did not finish"
        pods = await env.pods()
        available = {p["spec"].get("nodeName") for p in pods if ready(p)}
        worst_unavailable = max(worst_unavailable, len(set(NODE_NAMES) - available))
        per_node = [sum(p["spec"].get("nodeName") == n for p in pods) for n in NODE_NAMES]
        worst_per_node = max(worst_per_node, *per_node)
        await asyncio.sleep(0.03)
    return worst_unavailable, worst_per_node


async def _updated(env: Env) -> bool:
    pods = await env.pods()
    return (len(pods) == 3 and all(p["spec"]["containers"][0]["image"] == "agent:2" for p in pods)
            and await env.settled(3) is not None)


async def test_rolling_update_within_max_unavailable(env: Env) -> None:
    await env.create(update={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}})
    await eventually(lambda: env.settled(3))
    await env.client.patch(DS, "agent", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "agent:2"}]}}}}, env.ns)
    status_cmd = asyncio.create_task(env.kubectl("rollout", "status", "daemonset/agent", "--timeout=30s"))
    worst_unavailable, worst_per_node = await _watch_rollout(env, lambda: _updated(env))
    assert worst_unavailable <= 1 and worst_per_node == 1
    out = (await status_cmd).stdout
    assert 'daemon set "agent" successfully rolled out' in out
    revisions = sorted((r["revision"], r["metadata"]["labels"]["controller-revision-hash"])
                       for r in (await env.client.list(REVISIONS, env.ns))["items"])
    assert [r[0] for r in revisions] == [1, 2]
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in await env.pods()} == {revisions[1][1]}
    deleted = [e["message"] for e in (await env.client.list(EVENTS, env.ns))["items"]
               if e["reason"] == "SuccessfulDelete"]
    assert len(deleted) == 3
    history = (await env.kubectl("rollout", "history", "daemonset/agent")).stdout
    assert history.split("\n")[2:4] == ["1         <none>", "2         <none>"]
    await env.kubectl("rollout", "undo", "daemonset/agent")

    async def rolled_back() -> bool:
        pods = await env.pods()
        return (len(pods) == 3 and all(p["spec"]["containers"][0]["image"] == "agent:1" for p in pods)
                and await env.settled(3) is not None)
    await eventually(rolled_back)
    (_, first), (_, second) = revisions
    revisions = sorted((r["revision"], r["metadata"]["labels"]["controller-revision-hash"])
                       for r in (await env.client.list(REVISIONS, env.ns))["items"])
    assert revisions == [(2, second), (3, first)]  # the first template is renumbered, not copied


async def test_rolling_update_with_max_surge_keeps_every_node_served(env: Env) -> None:
    # minReadySeconds keeps each old pod until its replacement has been ready for a second.
    await env.create(update={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    await env.client.patch(DS, "agent", {"spec": {"minReadySeconds": 1}}, env.ns)
    await eventually(lambda: env.settled(3))
    await env.client.patch(DS, "agent", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "agent:2"}]}}}}, env.ns)
    worst_unavailable, worst_per_node = await _watch_rollout(env, lambda: _updated(env))
    assert worst_unavailable == 0 and worst_per_node == 2


async def test_on_delete_replaces_only_deleted_pods(env: Env) -> None:
    await env.create(update={"type": "OnDelete"})
    await eventually(lambda: env.settled(3))
    await env.client.patch(DS, "agent", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "agent:2"}]}}}}, env.ns)

    async def observed() -> Obj | None:
        ds = await env.ds()
        return ds if ds["status"].get("observedGeneration") == 2 else None
    ds = await eventually(observed)
    assert "updatedNumberScheduled" not in ds["status"]
    victim = next(p for p in await env.pods() if p["spec"]["nodeName"] == "dsn-2")
    await env.client.delete(PODS, victim["metadata"]["name"], env.ns)

    async def replaced() -> Obj | None:
        pods = [p for p in await env.pods() if p["spec"].get("nodeName") == "dsn-2"
                and p["metadata"]["uid"] != victim["metadata"]["uid"]]
        return pods[0] if pods and ready(pods[0]) else None
    pod = await eventually(replaced)
    assert pod["spec"]["containers"][0]["image"] == "agent:2"
    await eventually(lambda: _status_with(env, updatedNumberScheduled=1, numberAvailable=3, numberReady=3))
    images = sorted(p["spec"]["containers"][0]["image"] for p in await env.pods())
    assert images == ["agent:1", "agent:1", "agent:2"]


async def _status_with(env: Env, **fields: int) -> Obj | None:
    status = (await env.ds()).get("status") or {}
    return status if all(status.get(k) == v for k, v in fields.items()) else None
