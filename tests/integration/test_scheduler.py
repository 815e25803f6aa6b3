"""The scheduler against a real API server; nodes are plain Node objects created through the API."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import harness
import pytest
from cluster import Cluster
from harness import bare_server, connect, create_namespace, found, resource

from pocketkube.client.rest import APIError, Client
from pocketkube.controllers.deployment import DeploymentController
from pocketkube.controllers.manager import ControllerManager
from pocketkube.controllers.replicaset import ReplicaSetController
from pocketkube.scheduler.config import parse_configuration
from pocketkube.scheduler.plugins import REGISTRY
from pocketkube.scheduler.scheduler import Scheduler

Obj = dict[str, Any]
PODS, NODES, EVENTS = resource("", "pods"), resource("", "nodes"), resource("", "events")
DEPLOYMENTS, LEASES = resource("apps", "deployments"), resource("coordination.k8s.io", "leases")
PRIORITY_CLASSES = resource("scheduling.k8s.io", "priorityclasses")
_counter = itertools.count()
IDENTITY = "test-scheduler"
# The checks return a value or None: a value, even an empty list, is the answer.
eventually = partial(harness.eventually, until=found)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    yield from bare_server()


class Env:
    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.nodes: list[str] = []
        self.tasks: list[tuple[asyncio.Task[None], asyncio.Event]] = []

    def start_scheduler(self, config: Obj | None = None) -> Scheduler:
        sched = Scheduler(self.client, parse_configuration(config, REGISTRY), identity=IDENTITY)
        stop = asyncio.Event()
        self.tasks.append((asyncio.create_task(sched.run(stop)), stop))
        return sched

    async def node(self, name: str, cpu: str = "4", memory: str = "16Gi", labels: Obj | None = None,
                   taints: list[Obj] | None = None, extra: Obj | None = None) -> None:
        allocatable = {"cpu": cpu, "memory": memory, "pods": "110", **(extra or {})}
        await self.client.create(NODES, {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or []},
            "status": {"capacity": allocatable, "allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True"}]}})
        self.nodes.append(name)

    async def pod(self, name: str, cpu: str = "100m", labels: Obj | None = None, extra: Obj | None = None,
                  **spec: Any) -> Obj:
        resources: Obj = {"requests": {"cpu": cpu, **(extra or {})}}
        if extra:
            resources["limits"] = dict(extra)
        return await self.client.create(PODS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "resources": resources}], **spec}})

    async def get_pod(self, name: str) -> Obj:
        return await self.client.get(PODS, name, self.namespace)

    async def bound(self, name: str, timeout: float = 20) -> str:
        async def check() -> str | None:
            return (await self.get_pod(name))["spec"].get("nodeName")
        return str(await eventually(check, timeout))

    async def failed_scheduling(self, name: str, timeout: float = 20) -> str:
        async def check() -> str | None:
            events = await self.client.list(EVENTS, self.namespace, field_selector=f"involvedObject.name={name}")
            found = [e["message"] for e in events["items"] if e["reason"] == "FailedScheduling"]
            return found[-1] if found else None
        return str(await eventually(check, timeout))


@pytest.fixture
async def env(cluster: Cluster) -> AsyncIterator[Env]:
    client = connect(cluster)
    namespace = await create_namespace(client, f"sched-{next(_counter)}")
    e = Env(client, namespace)
    try:
        yield e
    finally:
        for task, stop in e.tasks:
            stop.set()
            await asyncio.wait_for(task, 10)
        for name in e.nodes:
            try:
                await client.delete(NODES, name)
            except APIError:
                pass
        await client.close()


def zone(z: str) -> Obj:
    return {"topology.kubernetes.io/zone": z}


async def test_deployment_spreads_over_three_zones(env: Env) -> None:
    for z in "abc":
        for i in range(2):
            await env.node(f"spread-{z}{i}", labels=zone(z))
    env.start_scheduler()
    stop = asyncio.Event()
    manager = ControllerManager(env.client, controllers=(DeploymentController, ReplicaSetController),
                                identity=IDENTITY)
    manager_task = asyncio.create_task(manager.run(stop))
    try:
        labels = {"app": "web"}
        await env.client.create(DEPLOYMENTS, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": env.namespace},
            "spec": {"replicas": 6, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "nginx",
                                         "resources": {"requests": {"cpu": "100m"}}}]}}}})

        async def placed() -> list[str] | None:
            pods = (await env.client.list(PODS, env.namespace, label_selector="app=web"))["items"]
            nodes = [p["spec"].get("nodeName") for p in pods]
            return nodes if len(nodes) == 6 and all(nodes) else None
        nodes = await eventually(placed, 30)
    finally:
        stop.set()
        await asyncio.wait_for(manager_task, 10)
    per_zone = {z: sum(1 for n in nodes if n.startswith(f"spread-{z}")) for z in "abc"}
    # Default spreading (topology.kubernetes.io/zone, kubernetes.io/hostname) puts one replica per node.
    assert per_zone == {"a": 2, "b": 2, "c": 2}
    assert sorted(nodes) == sorted(env.nodes)


async def test_topology_spread_constraint_do_not_schedule(env: Env) -> None:
    for z in "ab":
        await env.node(f"tsc-{z}", labels=zone(z))
    env.start_scheduler()
    constraint = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                   "labelSelector": {"matchLabels": {"app": "tsc"}}}]
    for i in range(4):
        await env.pod(f"tsc-{i}", labels={"app": "tsc"}, topologySpreadConstraints=constraint)
        await env.bound(f"tsc-{i}")
    placed = [(await env.get_pod(f"tsc-{i}"))["spec"]["nodeName"] for i in range(4)]
    assert sorted(placed) == ["tsc-a", "tsc-a", "tsc-b", "tsc-b"]


async def test_anti_affinity_one_per_node_then_pending(env: Env) -> None:
    for i in range(3):
        await env.node(f"aa-{i}")
    # Other tests' nodes may linger briefly: keep this test to its own nodes.
    selector = {"aa": "yes"}
    for i in range(3):
        await env.client.patch(NODES, f"aa-{i}", {"metadata": {"labels": selector}})
    env.start_scheduler()
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    for i in range(3):
        await env.pod(f"db-{i}", labels={"app": "db"}, affinity=anti, nodeSelector=selector)
    nodes = {await env.bound(f"db-{i}") for i in range(3)}
    assert nodes == {"aa-0", "aa-1", "aa-2"}
    await env.pod("db-3", labels={"app": "db"}, affinity=anti, nodeSelector=selector)
    message = await env.failed_scheduling("db-3")
    total = len((await env.client.list(NODES))["items"])
    others = total - 3
    filter_part = "3 node(s) didn't satisfy existing pods anti-affinity rules"
    if others:
        filter_part = f"3 node(s) didn't satisfy existing pods anti-affinity rules, " \
                      f"{others} node(s) didn't match Pod's node affinity/selector"
        filter_part = ", ".join(sorted(filter_part.split(", ")))
    preemption = "3 No preemption victims found for incoming pod"
    if others:
        preemption = ", ".join(sorted([preemption, f"{others} Preemption is not helpful for scheduling"]))
    assert message == (f"0/{total} nodes are available: {filter_part}. "
                       f"preemption: 0/{total} nodes are available: {preemption}.")
    pod = await env.get_pod("db-3")
    condition = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (condition["status"], condition["reason"], condition["message"]) == ("False", "Unschedulable", message)
    assert not pod["spec"].get("nodeName")


async def test_gpu_pod_only_on_gpu_node(env: Env) -> None:
    await env.node("gpu-0", labels={"gpu-test": "1"}, extra={"nvidia.com/gpu": "1"})
    await env.node("cpu-0", labels={"gpu-test": "1"})
    await env.node("cpu-1", labels={"gpu-test": "1"})
    env.start_scheduler()
    await env.pod("trainer", extra={"nvidia.com/gpu": "1"}, nodeSelector={"gpu-test": "1"})
    assert await env.bound("trainer") == "gpu-0"
    await env.pod("trainer-2", extra={"nvidia.com/gpu": "1"}, nodeSelector={"gpu-test": "1"})
    message = await env.failed_scheduling("trainer-2")
    assert "3 Insufficient nvidia.com/gpu" in message
    assert "preemption: " in message and "1 No preemption victims found for incoming pod" in message


async def test_preemption_of_low_priority_pod(env: Env) -> None:
    await env.node("prio-0", cpu="2", labels={"prio": "1"})
    env.start_scheduler()
    # Priority admission sets spec.priority from the pod's PriorityClass (a pod may not set it itself).
    for name, value in (("low-priority", 10), ("high-priority", 1000)):
        await env.client.create(PRIORITY_CLASSES, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                                   "metadata": {"name": name}, "value": value})
    await env.pod("low", cpu="1500m", priorityClassName="low-priority", nodeSelector={"prio": "1"},
                  terminationGracePeriodSeconds=0)
    assert await env.bound("low") == "prio-0"
    await env.pod("high", cpu="1500m", priorityClassName="high-priority", nodeSelector={"prio": "1"})
    assert await env.bound("high", timeout=30) == "prio-0"
    with pytest.raises(APIError) as err:
        await env.get_pod("low")
    assert err.value.not_found
    high = await env.get_pod("high")

    async def preempted_event() -> bool:
        events = (await env.client.list(EVENTS, env.namespace, field_selector="involvedObject.name=low"))["items"]
        return any(e["reason"] == "Preempted" and e["message"] == f"Preempted by pod {high['metadata']['uid']} "
                   f"on node prio-0" for e in events)
    assert await eventually(preempted_event)


async def test_pod_waits_for_a_node(env: Env) -> None:
    env.start_scheduler()
    await env.pod("waiter", nodeSelector={"waiter-node": "yes"})
    message = await env.failed_scheduling("waiter")
    assert "didn't match Pod's node affinity/selector" in message or message == "no nodes available to schedule pods"
    await env.node("late-node", labels={"waiter-node": "yes"})
    assert await env.bound("waiter", timeout=30) == "late-node"

    async def scheduled_event() -> bool:  # events are recorded after the bind, asynchronously
        events = (await env.client.list(EVENTS, env.namespace,
                                        field_selector="involvedObject.name=waiter"))["items"]
        return any(e["reason"] == "Scheduled" and e["message"] == f"Successfully assigned {env.namespace}/waiter "
                   f"to late-node" for e in events)
    assert await eventually(scheduled_event)


async def test_two_profiles(env: Env) -> None:
    await env.node("prof-small", cpu="4", labels={"prof": "1"})
    await env.node("prof-big", cpu="8", labels={"prof": "1"})
    env.start_scheduler({"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
                         "profiles": [
                             {"schedulerName": "default-scheduler"},
                             {"schedulerName": "bin-packer", "pluginConfig": [{"name": "NodeResourcesFit", "args": {
                                 "scoringStrategy": {"type": "MostAllocated"}}}],
                              "plugins": {"score": {"disabled": [{"name": "NodeResourcesBalancedAllocation"}]}}}]})
    await env.pod("spread", cpu="2", nodeSelector={"prof": "1"})
    await env.pod("packed", cpu="2", nodeSelector={"prof": "1"}, schedulerName="bin-packer")
    await env.pod("foreign", cpu="100m", nodeSelector={"prof": "1"}, schedulerName="someone-else")
    # LeastAllocated picks the roomier node; MostAllocated the fuller one.
    assert await env.bound("spread") == "prof-big"
    assert await env.bound("packed") == "prof-small"
    await asyncio.sleep(0.5)
    assert not (await env.get_pod("foreign"))["spec"].get("nodeName")


async def test_leader_election_lease(env: Env) -> None:
    env.start_scheduler()

    async def lease() -> Obj | None:
        """The Lease once this scheduler holds it (an earlier test's scheduler may have just released it)."""
        try:
            found = await env.client.get(LEASES, "kube-scheduler", "kube-system")
        except APIError:
            return None
        return found if found["spec"].get("holderIdentity") == IDENTITY else None
    held = await eventually(lease)
    assert held["spec"]["holderIdentity"] == IDENTITY
