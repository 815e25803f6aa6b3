"""PodDisruptionBudget status, the eviction subresource honouring it, and `kubectl drain`, against a real
API server with simulated nodes, the scheduler and the workload controllers in-process."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from cluster import Cluster
from harness import bare_server, connect, create_namespace, eventually, resource, running

from pocketkube.client.rest import APIError, Client
from pocketkube.controllers.deployment import DeploymentController
from pocketkube.controllers.disruption import DisruptionController
from pocketkube.controllers.garbagecollector import GarbageCollector
from pocketkube.controllers.namespace import NamespaceController
from pocketkube.controllers.replicaset import ReplicaSetController
from pocketkube.kubelet.simulated import SimulatedNodes, SimulationConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
PODS, NODES = resource("", "pods"), resource("", "nodes")
DEPLOYMENTS, PDBS = resource("apps", "deployments"), resource("policy", "poddisruptionbudgets")
_ns = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: Cluster) -> AsyncIterator[Client]:
    nodes_config = SimulationConfig(name_prefix="pdb-", pod_ready_delay=0.5, lease_interval=5, delete_delay=0.2)
    async with connect(server) as client, running(
            client, identity="test-disruption", scheduler=True, nodes=SimulatedNodes(client, 3, nodes_config),
            controllers=(DisruptionController, DeploymentController, ReplicaSetController, GarbageCollector,
                         NamespaceController)):
        yield client


async def namespace(client: Client) -> str:
    return await create_namespace(client, f"pdb-{next(_ns)}")


async def deployment(client: Client, ns: str, name: str, replicas: int) -> None:
    await client.create(DEPLOYMENTS, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})


async def pdb(client: Client, ns: str, name: str, app: str, **spec: Any) -> Obj:
    return await client.create(PDBS, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                      "metadata": {"name": name, "namespace": ns},
                                      "spec": {"selector": {"matchLabels": {"app": app}}, **spec}})


async def status_when(client: Client, ns: str, name: str, **wanted: Any) -> Obj:
    async def check() -> Obj | None:
        obj = await client.get(PDBS, name, ns)
        status = obj.get("status") or {}
        return obj if all(status.get(k) == v for k, v in wanted.items()) and \
            status.get("observedGeneration") == obj["metadata"]["generation"] else None
    return await eventually(check, what=f"PDB {name} status {wanted}")


async def ready_pods(client: Client, ns: str, app: str) -> list[Obj]:
    pods = (await client.list(PODS, ns, label_selector=f"app={app}"))["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])]


async def evict(client: Client, ns: str, pod: str) -> Obj:
    return await client.request("POST", f"/api/v1/namespaces/{ns}/pods/{pod}/eviction", body={
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": ns}})


def condition(obj: Obj) -> Obj:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "DisruptionAllowed")


async def test_status_eviction_and_budget_spending(client: Client) -> None:
    ns = await namespace(client)
    await deployment(client, ns, "web", 3)
    await eventually(lambda: _count(ready_pods(client, ns, "web"), 3), what="three ready pods")
    await pdb(client, ns, "by-count", "web", minAvailable=2)
    await pdb(client, ns, "by-percent", "other", maxUnavailable="50%")
    obj = await status_when(client, ns, "by-count", expectedPods=3, currentHealthy=3, desiredHealthy=2,
                            disruptionsAllowed=1)
    cond = condition(obj)
    assert (cond["status"], cond["reason"]) == ("True", "SufficientPods")
    assert cond["observedGeneration"] == obj["metadata"]["generation"]

    # maxUnavailable as a percentage is resolved against the Deployment's scale (found via the owners).
    await client.patch(PDBS, "by-percent", {"spec": {"selector": {"matchLabels": {"app": "web"}}}}, ns)
    obj = await status_when(client, ns, "by-percent", expectedPods=3, desiredHealthy=1, currentHealthy=3,
                            disruptionsAllowed=2)
    await client.delete(PDBS, "by-percent", ns)  # one budget per pod, or eviction refuses (500)

    # One eviction spends the budget at once (the API server records it); the next is refused with 429.
    victims = [p["metadata"]["name"] for p in await ready_pods(client, ns, "web")]
    result = await evict(client, ns, victims[0])
    assert result["status"] == "Success"
    obj = await client.get(PDBS, "by-count", ns)
    assert obj["status"]["disruptionsAllowed"] == 0
    assert victims[0] in obj["status"]["disruptedPods"]
    assert (condition(obj)["status"], condition(obj)["reason"]) == ("False", "InsufficientPods")
    with pytest.raises(APIError) as refused:
        await evict(client, ns, victims[1])
    assert refused.value.status == 429
    assert refused.value.reason == "TooManyRequests"
    assert refused.value.body["details"]["causes"][0]["reason"] == "DisruptionBudget"

    # The replacement becomes ready: the budget allows one disruption again, the evicted pod is forgotten.
    obj = await status_when(client, ns, "by-count", currentHealthy=3, disruptionsAllowed=1)
    assert not obj["status"].get("disruptedPods")


async def _count(pods: Awaitable[list[Obj]], n: int) -> bool:
    return len(await pods) == n


async def test_kubectl_drain_blocked_by_budget_then_allowed(server: Cluster, client: Client) -> None:
    ns = await namespace(client)
    await deployment(client, ns, "app", 2)
    pods = await eventually(lambda: _ready(client, ns, "app", 2), what="two ready pods")
    await pdb(client, ns, "strict", "app", minAvailable=2)
    await status_when(client, ns, "strict", expectedPods=2, currentHealthy=2, disruptionsAllowed=0)
    node = pods[0]["spec"]["nodeName"]

    # kubectl runs in a thread: the simulated kubelets and controllers share this event loop.
    blocked = await asyncio.to_thread(server.kubectl, "drain", node, "--ignore-daemonsets", "--timeout=4s",
                                      check=False)
    assert blocked.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget" in blocked.stderr + blocked.stdout
    assert {p["metadata"]["uid"] for p in await ready_pods(client, ns, "app")} == \
        {p["metadata"]["uid"] for p in pods}  # nothing was evicted

    # A looser budget lets the drain through: the pod is evicted and replaced elsewhere.
    await client.patch(PDBS, "strict", {"spec": {"minAvailable": 1}}, ns)
    await status_when(client, ns, "strict", disruptionsAllowed=1)
    drained = await asyncio.to_thread(server.kubectl, "drain", node, "--ignore-daemonsets", "--timeout=30s",
                                      check=False, timeout=60)
    assert drained.returncode == 0, drained.stderr
    assert f"node/{node} drained" in drained.stdout
    remaining = await eventually(lambda: _ready(client, ns, "app", 2), what="two ready pods again")
    assert all(p["spec"]["nodeName"] != node for p in remaining)
    assert (await client.get(NODES, node))["spec"]["unschedulable"] is True
    await asyncio.to_thread(server.kubectl, "uncordon", node)


async def _ready(client: Client, ns: str, app: str, n: int) -> list[Obj] | None:
    pods = await ready_pods(client, ns, app)
    return pods if len(pods) == n else None
