"""Node lifecycle and taint-based eviction against a real API server with simulated nodes: a node whose
heartbeats stop turns Unknown and gets tainted, its pods lose Ready and are evicted per tolerationSeconds,
recovery removes the taints, and cordoning adds the unschedulable taint. Last, the grace period set by
`pocketkube server --node-monitor-grace-period` reaches the controller manager the server starts."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from cluster import Cluster, new_cluster, serving
from harness import bare_server, connect, eventually, get_or_none, resource, running

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client
from pocketkube.controllers.namespace import NamespaceController
from pocketkube.controllers.nodelifecycle import NodeLifecycleController, TaintEvictionController
from pocketkube.kubelet.simulated import SimulatedNodes, SimulationConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
CATALOG = ResourceCatalog()
NODES = CATALOG.resource("", "v1", "nodes")
PODS = CATALOG.resource("", "v1", "pods")
EVENTS = CATALOG.resource("", "v1", "events")
assert NODES is not None and PODS is not None and EVENTS is not None
NS = "default"
GRACE = 2.0
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(server: Cluster) -> AsyncIterator[tuple[Client, SimulatedNodes]]:
    async with connect(server) as client:
        nodes = SimulatedNodes(client, 3, SimulationConfig(name_prefix="nlc-", lease_interval=0.5,
                                                           status_interval=1.0, delete_delay=0.2))
        controllers = (NodeLifecycleController.with_options(grace_period=GRACE, startup_grace_period=GRACE),
                       TaintEvictionController, NamespaceController)
        async with running(client, nodes=nodes, controllers=controllers, identity="test-nlc"):
            yield client, nodes


def conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def taints(node: Obj) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in (node.get("spec") or {}).get("taints") or []}


async def bound_pod(client: Client, node: str, tolerations: list[Obj] | None = None) -> str:
    name = f"p-{uuid.uuid4().hex[:8]}"
    spec: Obj = {"containers": [{"name": "c", "image": "busybox"}], "terminationGracePeriodSeconds": 30}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    await client.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
                               "spec": spec})
    await client.request("POST", f"/api/v1/namespaces/{NS}/pods/{name}/binding", body={
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}})
    return name


async def ready_pod(client: Client, name: str) -> Obj | None:
    p = await client.get(PODS, name, NS)
    return p if conditions(p).get("Ready", {}).get("status") == "True" else None


async def test_lost_heartbeat_unknown_taints_eviction_and_recovery(env: tuple[Client, SimulatedNodes]) -> None:
    client, sim = env
    node = "nlc-0"
    short = await bound_pod(client, node, [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                                            "tolerationSeconds": 1}])
    default = await bound_pod(client, node)  # admission gives it 300 s for unreachable/not-ready
    forever = await bound_pod(client, node, [{"operator": "Exists"}])
    for name in (short, default, forever):
        await eventually(lambda n=name: ready_pod(client, n), 10, f"{name} Ready")
    assert taints(await client.get(NODES, node)) == set()

    sim.pause(node)
    stopped = time.monotonic()

    async def unknown() -> Obj | None:
        n = await client.get(NODES, node)
        return n if conditions(n)["Ready"]["status"] == "Unknown" else None
    n = await eventually(unknown, 15, "Ready=Unknown")
    assert time.monotonic() - stopped >= GRACE - 0.6  # not before the grace period (lease renewals were 0.5 s)
    for ctype in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
        cond = conditions(n)[ctype]
        assert (cond["status"], cond["reason"], cond["message"]) == (
            "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")

    async def tainted() -> Obj | None:
        n = await client.get(NODES, node)
        return n if taints(n) == {(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")} else None
    n = await eventually(tainted, 5, "unreachable taints")
    no_execute = next(t for t in n["spec"]["taints"] if t["effect"] == "NoExecute")
    assert no_execute["timeAdded"]
    assert "timeAdded" not in next(t for t in n["spec"]["taints"] if t["effect"] == "NoSchedule")

    async def not_ready(name: str) -> bool:
        return conditions(await client.get(PODS, name, NS))["Ready"]["status"] == "False"
    for name in (default, forever):
        await eventually(lambda n=name: not_ready(n), 5, f"{name} marked not ready")

    async def evicted() -> Obj | None:
        p = await client.get(PODS, short, NS)
        return p if p["metadata"].get("deletionTimestamp") else None
    p = await eventually(evicted, 8, "eviction after tolerationSeconds")
    target = conditions(p)["DisruptionTarget"]
    assert (target["status"], target["reason"]) == ("True", "DeletionByTaintManager")
    # The others tolerate longer (300 s) or forever.
    for name in (default, forever):
        assert not (await client.get(PODS, name, NS))["metadata"].get("deletionTimestamp")
    events = (await client.list(EVENTS, NS, field_selector=f"involvedObject.name={short}"))["items"]
    assert any(e["reason"] == "TaintManagerEviction" and e["message"] == f"Marking for deletion Pod {NS}/{short}"
               for e in events)
    node_events = (await client.list(EVENTS, NS, field_selector=f"involvedObject.name={node}"))["items"]
    assert any(e["reason"] == "NodeNotReady" and e["message"] == f"Node {node} status is now: NodeNotReady"
               for e in node_events)

    # The kubelet comes back: Ready again, taints gone, the evicted pod is finished and removed.
    sim.resume(node)

    async def recovered() -> bool:
        n = await client.get(NODES, node)
        return conditions(n)["Ready"]["status"] == "True" and not taints(n)
    await eventually(recovered, 10, "recovery")

    async def gone() -> bool:
        try:
            await client.get(PODS, short, NS)
        except APIError as err:
            return err.not_found
        return False
    await eventually(gone, 10, "evicted pod deleted")
    await eventually(lambda: ready_pod(client, default), 10, "pod Ready again")


async def test_ready_false_gives_not_ready_taints(env: tuple[Client, SimulatedNodes]) -> None:
    client, sim = env
    node = "nlc-1"
    sim.pause(node)
    try:
        # A kubelet that reports NotReady (fresh heartbeat, so the node is not unreachable).
        n = await client.get(NODES, node)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conds = [{**c, "status": "False", "reason": "KubeletNotReady", "message": "runtime is down",
                  "lastHeartbeatTime": stamp, "lastTransitionTime": stamp} if c["type"] == "Ready" else c
                 for c in n["status"]["conditions"]]
        await client.patch(NODES, node, {"status": {"conditions": conds}}, subresource="status")

        async def tainted() -> bool:
            return taints(await client.get(NODES, node)) == {(NOT_READY, "NoExecute"), (NOT_READY, "NoSchedule")}
        await eventually(tainted, 5, "not-ready taints")
    finally:
        sim.resume(node)

    async def cleared() -> bool:
        return not taints(await client.get(NODES, node))
    await eventually(cleared, 10, "taints removed")


async def test_cordon_adds_unschedulable_taint(env: tuple[Client, SimulatedNodes]) -> None:
    client, _ = env
    node = "nlc-2"
    await client.patch(NODES, node, {"spec": {"unschedulable": True}})

    async def has(present: bool) -> bool:
        found = ("node.kubernetes.io/unschedulable", "NoSchedule") in taints(await client.get(NODES, node))
        return found == present
    await eventually(lambda: has(True), 5, "unschedulable taint")
    await client.patch(NODES, node, {"spec": {"unschedulable": None}})
    await eventually(lambda: has(False), 5, "unschedulable taint removed")


@pytest.fixture
def flagged_server() -> Iterator[Cluster]:
    """A server that runs its own controller manager (a child process), told a 2 s grace period by flags."""
    yield from serving(new_cluster(extra_args=["--disable-scheduler", f"--node-monitor-grace-period={GRACE:g}s",
                                               f"--node-startup-grace-period={GRACE:g}s"]))


async def test_server_flag_sets_the_controller_managers_grace_period(flagged_server: Cluster) -> None:
    leases = resource("coordination.k8s.io", "leases")

    async def leading() -> bool:
        lease = await get_or_none(client, leases, "kube-controller-manager", "kube-system")
        return bool(lease and (lease.get("spec") or {}).get("holderIdentity"))

    async with connect(flagged_server) as client:
        nodes = SimulatedNodes(client, 1, SimulationConfig(name_prefix="flag-", lease_interval=0.5,
                                                           status_interval=1.0))
        async with running(client, nodes=nodes):
            await eventually(leading, 30, "the controller manager to lead")
            await eventually(lambda: ready_node(client, "flag-0"), 10, "flag-0 Ready")
            nodes.pause("flag-0")
            stopped = time.monotonic()

            async def unknown() -> bool:
                n = await client.get(NODES, "flag-0")
                return conditions(n)["Ready"]["status"] == "Unknown"
            await eventually(unknown, 15, "Ready=Unknown")  # far sooner than the default 40 s
            assert time.monotonic() - stopped >= GRACE - 0.6


async def ready_node(client: Client, name: str) -> bool:
    n = await client.get(NODES, name)
    return conditions(n).get("Ready", {}).get("status") == "True"
