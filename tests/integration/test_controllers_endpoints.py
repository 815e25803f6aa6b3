"""Endpoints and EndpointSlice controllers against a real API server, with simulated nodes and the
scheduler in-process (pods become Ready on their own), plus a hand-driven node whose pods' statuses the
test writes itself (not-ready and terminating pods that stay so)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from cluster import Cluster
from harness import bare_server, connect, create_namespace, eventually, get_or_none, resource, running

from pocketkube.client.rest import Client
from pocketkube.controllers.endpoints import LAST_CHANGE_TRIGGER_TIME, EndpointsController
from pocketkube.controllers.endpointslice import (
    CONTROLLER_NAME,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    EndpointSliceController,
)
from pocketkube.controllers.garbagecollector import GarbageCollector
from pocketkube.controllers.namespace import NamespaceController
from pocketkube.kubelet.simulated import SimulatedNodes, SimulationConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
PODS, NODES, SERVICES = resource("", "pods"), resource("", "nodes"), resource("", "services")
ENDPOINTS = resource("", "endpoints")
SLICES = resource("discovery.k8s.io", "endpointslices")
MANUAL_NODE = "manual-node"
_ns = itertools.count()


class SmallSlices(EndpointSliceController):
    max_endpoints_per_slice = 3


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: Cluster) -> AsyncIterator[Client]:
    async with connect(server) as client:
        # A node no kubelet runs: the test sets its pods' statuses.
        await client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": MANUAL_NODE, "labels": {"kubernetes.io/hostname": MANUAL_NODE,
                                            "topology.kubernetes.io/zone": "zone-m"}},
            "spec": {"taints": [{"key": "manual", "effect": "NoSchedule"}]}})
        nodes_config = SimulationConfig(name_prefix="ep-", pod_ready_delay=1.0, lease_interval=5, delete_delay=0.2)
        async with running(client, identity="test-endpoints", scheduler=True,
                           nodes=SimulatedNodes(client, 2, nodes_config),
                           controllers=(EndpointsController, SmallSlices, GarbageCollector, NamespaceController)):
            yield client


async def namespace(client: Client) -> str:
    return await create_namespace(client, f"ep-{next(_ns)}")


async def service(client: Client, ns: str, name: str, **spec: Any) -> Obj:
    body: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns,
                                                                     "labels": {"team": "a"}},
                 "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}], **spec}}
    return await client.create(SERVICES, body)


def pod_body(ns: str, name: str, labels: Obj, port: int, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx",
                                     "ports": [{"name": "web", "containerPort": port}]}], **spec}}


async def manual_pod(client: Client, ns: str, name: str, labels: Obj, port: int, ip: str, ready: bool,
                     **spec: Any) -> Obj:
    """A Running pod on the hand-driven node, Ready or not as the test says."""
    body = pod_body(ns, name, labels, port, nodeName=MANUAL_NODE,
                    tolerations=[{"key": "manual", "operator": "Exists"}], **spec)
    await client.create(PODS, body)
    stamp = "2024-01-01T00:00:00Z"
    return await client.patch(PODS, name, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "198.51.100.1",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": stamp}]}},
        ns, subresource="status")


async def slices_of(client: Client, ns: str, svc: str) -> list[Obj]:
    found = await client.list(SLICES, ns, label_selector=f"{SERVICE_NAME_LABEL}={svc}")
    return found["items"]


def slice_endpoints(slices: list[Obj]) -> dict[str, Obj]:
    return {e["targetRef"]["name"]: e for s in slices for e in s.get("endpoints") or []}


async def test_ready_pods_named_ports_and_slices(client: Client) -> None:
    ns = await namespace(client)
    svc = await service(client, ns, "web", selector={"app": "web"})
    # The first sync of a new service reports the service's creation as the change that triggered it
    # (later syncs carry the annotation only when they see a new pod transition, as upstream).
    first = await eventually(lambda: get_or_none(client, ENDPOINTS, "web", ns), what="the service's Endpoints")
    assert LAST_CHANGE_TRIGGER_TIME in first["metadata"]["annotations"]
    # The named targetPort resolves differently in each pod: two port sets.
    await client.create(PODS, pod_body(ns, "a", {"app": "web"}, 8080))
    await client.create(PODS, pod_body(ns, "b", {"app": "web"}, 9090))
    await client.create(PODS, pod_body(ns, "other", {"app": "db"}, 8080))

    async def not_ready_first() -> Obj | None:
        ep = await get_or_none(client, ENDPOINTS, "web", ns)
        addrs = [a for s in (ep or {}).get("subsets") or [] for a in s.get("notReadyAddresses") or []]
        return ep if addrs else None
    await eventually(not_ready_first, what="pods listed as not ready before the readiness delay")

    async def all_ready() -> Obj | None:
        ep = await get_or_none(client, ENDPOINTS, "web", ns)
        subsets = (ep or {}).get("subsets") or []
        ready = sum(len(s.get("addresses") or []) for s in subsets)
        return ep if ready == 2 and not any(s.get("notReadyAddresses") for s in subsets) else None
    ep = await eventually(all_ready, what="both pods ready in the Endpoints")
    pods = {p["metadata"]["name"]: p for p in (await client.list(PODS, ns))["items"]}
    by_port = {s["ports"][0]["port"]: s for s in ep["subsets"]}
    assert set(by_port) == {8080, 9090}
    address = by_port[8080]["addresses"][0]
    assert address["ip"] == pods["a"]["status"]["podIP"]
    assert address["nodeName"] == pods["a"]["spec"]["nodeName"]
    assert address["targetRef"] == {"kind": "Pod", "namespace": ns, "name": "a", "uid": pods["a"]["metadata"]["uid"]}
    assert by_port[9090]["ports"] == [{"name": "http", "port": 9090, "protocol": "TCP"}]
    assert ep["metadata"]["labels"] == {"team": "a"}

    slices = await eventually(lambda: _ready_slices(client, ns, "web", 2), what="slices with both pods ready")
    assert len(slices) == 2  # one per port set
    for s in slices:
        meta = s["metadata"]
        assert meta["name"].startswith("web-") and meta["generateName"] == "web-"
        assert meta["labels"] == {"team": "a", SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: CONTROLLER_NAME}
        assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                            "uid": svc["metadata"]["uid"], "controller": True,
                                            "blockOwnerDeletion": True}]
        assert s["addressType"] == "IPv4"
        assert LAST_CHANGE_TRIGGER_TIME in meta["annotations"]
    endpoint = slice_endpoints(slices)["b"]
    assert endpoint["addresses"] == [pods["b"]["status"]["podIP"]]
    assert endpoint["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert endpoint["nodeName"] == pods["b"]["spec"]["nodeName"]
    assert [s["ports"] for s in slices if s["endpoints"][0]["targetRef"]["name"] == "b"] == [
        [{"name": "http", "port": 9090, "protocol": "TCP"}]]

    # The selector stops matching a pod: it leaves both objects.
    await client.patch(PODS, "a", {"metadata": {"labels": {"app": "gone"}}}, ns)

    async def only_b() -> bool:
        ep = await get_or_none(client, ENDPOINTS, "web", ns)
        names = {a["targetRef"]["name"] for s in (ep or {}).get("subsets") or [] for a in s.get("addresses") or []}
        return names == {"b"} and set(slice_endpoints(await slices_of(client, ns, "web"))) == {"b"}
    await eventually(only_b, what="pod a removed")

    # Deleting the Service deletes its Endpoints; its slices go with the garbage collector.
    await client.delete(SERVICES, "web", ns)
    await eventually(lambda: _gone(client, ns, "web"), what="endpoints and slices removed")


async def _ready_slices(client: Client, ns: str, svc: str, count: int) -> list[Obj] | None:
    slices = await slices_of(client, ns, svc)
    ready = [e for s in slices for e in s.get("endpoints") or [] if e["conditions"]["ready"]]
    return slices if len(ready) == count else None


async def _gone(client: Client, ns: str, svc: str) -> bool:
    return await get_or_none(client, ENDPOINTS, svc, ns) is None and not await slices_of(client, ns, svc)


async def test_not_ready_terminating_and_publish_not_ready(client: Client) -> None:
    ns = await namespace(client)
    await service(client, ns, "strict", selector={"app": "m"})
    await service(client, ns, "lenient", selector={"app": "m"}, publishNotReadyAddresses=True)
    await manual_pod(client, ns, "up", {"app": "m"}, 8080, "10.99.0.1", ready=True)
    await manual_pod(client, ns, "down", {"app": "m"}, 8080, "10.99.0.2", ready=False)

    async def strict_split() -> Obj | None:
        ep = await get_or_none(client, ENDPOINTS, "strict", ns)
        subsets = (ep or {}).get("subsets") or []
        if len(subsets) == 1 and len(subsets[0].get("addresses") or []) == 1 and \
                len(subsets[0].get("notReadyAddresses") or []) == 1:
            return subsets[0]
        return None
    subset = await eventually(strict_split, what="one ready and one not-ready address")
    assert subset["addresses"][0]["ip"] == "10.99.0.1"
    assert subset["notReadyAddresses"][0]["ip"] == "10.99.0.2"

    async def lenient_all_ready() -> bool:
        ep = await get_or_none(client, ENDPOINTS, "lenient", ns)
        subsets = (ep or {}).get("subsets") or []
        return len(subsets) == 1 and len(subsets[0].get("addresses") or []) == 2
    await eventually(lenient_all_ready, what="publishNotReadyAddresses lists every pod as ready")
    lenient = slice_endpoints(await slices_of(client, ns, "lenient"))
    assert lenient["down"]["conditions"] == {"ready": True, "serving": False, "terminating": False}
    strict = slice_endpoints(await slices_of(client, ns, "strict"))
    assert strict["down"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    assert strict["up"]["zone"] == "zone-m"

    # A terminating pod (nobody finishes its deletion on this node): gone from the strict Endpoints,
    # kept in the slices as serving and terminating (never ready).
    await client.delete(PODS, "up", ns, grace_period_seconds=300)

    async def terminating() -> Obj | None:
        ep = await get_or_none(client, ENDPOINTS, "strict", ns)
        ips = {a["ip"] for s in (ep or {}).get("subsets") or [] for a in s.get("addresses") or []}
        endpoint = slice_endpoints(await slices_of(client, ns, "strict")).get("up")
        return endpoint if not ips and endpoint and endpoint["conditions"]["terminating"] else None
    endpoint = await eventually(terminating, what="terminating endpoint")
    assert endpoint["conditions"] == {"ready": False, "serving": True, "terminating": True}
    await client.delete(PODS, "up", ns, grace_period_seconds=0)
    await client.delete(PODS, "down", ns, grace_period_seconds=0)


async def test_headless_hostnames_and_slice_packing(client: Client) -> None:
    ns = await namespace(client)
    await service(client, ns, "db", selector={"app": "db"}, clusterIP="None")
    for i in range(7):
        await manual_pod(client, ns, f"db-{i}", {"app": "db"}, 5432, f"10.99.1.{i + 1}", ready=True,
                         hostname=f"db-{i}", subdomain="db")

    async def seven() -> Obj | None:
        ep = await get_or_none(client, ENDPOINTS, "db", ns)
        addrs = [a for s in (ep or {}).get("subsets") or [] for a in s.get("addresses") or []]
        return ep if len(addrs) == 7 else None
    ep = await eventually(seven, what="seven addresses")
    assert ep["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    assert {a["hostname"] for a in ep["subsets"][0]["addresses"]} == {f"db-{i}" for i in range(7)}

    slices = await eventually(lambda: _ready_slices(client, ns, "db", 7), what="seven endpoints in slices")
    assert sorted(len(s["endpoints"]) for s in slices) == [1, 3, 3]  # at most 3 per slice here
    assert all(s["metadata"]["labels"]["service.kubernetes.io/headless"] == "" for s in slices)
    assert slice_endpoints(slices)["db-4"]["hostname"] == "db-4"

    # Fewer pods: endpoints leave their slices; emptied slices are deleted.
    for i in range(5):
        await client.delete(PODS, f"db-{i}", ns, grace_period_seconds=0)

    async def two_left() -> list[Obj] | None:
        slices = await slices_of(client, ns, "db")
        return slices if set(slice_endpoints(slices)) == {"db-5", "db-6"} and \
            all(s.get("endpoints") for s in slices) else None
    await eventually(two_left, what="two endpoints left")

    # No pods at all: one empty placeholder slice remains.
    for i in (5, 6):
        await client.delete(PODS, f"db-{i}", ns, grace_period_seconds=0)

    async def placeholder() -> Obj | None:
        slices = await slices_of(client, ns, "db")
        return slices[0] if len(slices) == 1 and not slices[0].get("endpoints") else None
    empty = await eventually(placeholder, what="placeholder slice")
    assert not empty.get("ports")


async def test_services_the_controllers_leave_alone(client: Client) -> None:
    ns = await namespace(client)
    await service(client, ns, "manual")  # no selector: endpoints are the user's
    await client.create(ENDPOINTS, {"apiVersion": "v1", "kind": "Endpoints",
                                    "metadata": {"name": "manual", "namespace": ns},
                                    "subsets": [{"addresses": [{"ip": "192.0.2.10"}],
                                                 "ports": [{"name": "http", "port": 8080}]}]})
    await client.create(SERVICES, {"apiVersion": "v1", "kind": "Service",
                                   "metadata": {"name": "ext", "namespace": ns},
                                   "spec": {"type": "ExternalName", "externalName": "example.com",
                                            "selector": {"app": "x"}}})
    await manual_pod(client, ns, "x", {"app": "x"}, 80, "10.99.2.1", ready=True)
    # A service with a selector made afterwards proves the controllers have looked at this namespace.
    await service(client, ns, "probe", selector={"app": "x"})
    await eventually(lambda: get_or_none(client, ENDPOINTS, "probe", ns), what="probe endpoints")
    manual = await client.get(ENDPOINTS, "manual", ns)
    assert manual["subsets"][0]["addresses"] == [{"ip": "192.0.2.10"}]
    assert await get_or_none(client, ENDPOINTS, "ext", ns) is None
    assert await slices_of(client, ns, "ext") == [] and await slices_of(client, ns, "manual") == []
    # The API server's own service keeps the endpoints the server maintains.
    kubernetes = await client.get(ENDPOINTS, "kubernetes", "default")
    assert LAST_CHANGE_TRIGGER_TIME not in (kubernetes["metadata"].get("annotations") or {})
