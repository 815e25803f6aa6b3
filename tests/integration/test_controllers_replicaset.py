"""ReplicaSet and ReplicationController controllers against a real API server, with the test as the kubelet."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import harness
import pytest
from cluster import Cluster
from harness import bare_server, connect, create_namespace, found, running

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import Client
from pocketkube.controllers.replicaset import ReplicaSetController, ReplicationControllerController

Obj = dict[str, Any]
CATALOG = ResourceCatalog()
PODS = CATALOG.resource("", "v1", "pods")
RS = CATALOG.resource("apps", "v1", "replicasets")
RC = CATALOG.resource("", "v1", "replicationcontrollers")
EVENTS = CATALOG.resource("", "v1", "events")
_ns_counter = itertools.count()
# The checks return a value or None: a value, even an empty list, is the answer.
eventually = partial(harness.eventually, until=found)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    yield from bare_server()


@pytest.fixture
async def env(cluster: Cluster) -> AsyncIterator[tuple[Client, str]]:
    """A client, a fresh namespace, and the controllers running in this test's event loop."""
    async with connect(cluster) as client:
        namespace = await create_namespace(client, f"rs-{next(_ns_counter)}")
        async with running(client, controllers=(ReplicaSetController, ReplicationControllerController),
                           identity="test-replicaset"):
            yield client, namespace


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def replica_set(name: str, namespace: str, replicas: int, **spec: Any) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, **spec,
                     "template": {"metadata": {"labels": {**labels, "tier": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}


async def active_pods(client: Client, namespace: str, selector: str = "") -> list[Obj]:
    items = (await client.list(PODS, namespace, label_selector=selector))["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


async def mark_ready(client: Client, pod: Obj, ready: bool = True, phase: str = "Running",
                     restarts: int = 0) -> None:
    """Play the kubelet: report the pod running (and Ready, since now)."""
    status: Obj = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now()}]}
    if restarts:
        status["containerStatuses"] = [{"name": "c", "image": "nginx", "imageID": "", "ready": ready,
                                        "restartCount": restarts, "state": {"running": {}}}]
    await client.patch(PODS, pod["metadata"]["name"], {"status": status}, pod["metadata"]["namespace"],
                       patch_type="strategic", subresource="status")


async def bind(client: Client, pod: Obj, node: str) -> None:
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
    await client.request("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body={
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}})


async def status_of(client: Client, info: Any, name: str, namespace: str) -> Obj:
    return (await client.get(info, name, namespace)).get("status") or {}


async def events(client: Client, namespace: str, reason: str) -> list[str]:
    return [e["message"] for e in (await client.list(EVENTS, namespace))["items"] if e["reason"] == reason]


async def test_scale_up_then_down_with_status_and_events(env: tuple[Client, str], cluster: Cluster) -> None:
    client, ns = env
    rs = await client.create(RS, replica_set("web", ns, 3))
    pods = await eventually(lambda: _count(client, ns, 3))
    for pod in pods:
        meta = pod["metadata"]
        assert meta["generateName"] == "web-" and meta["name"].startswith("web-")
        assert meta["labels"] == {"app": "web", "tier": "web"}
        assert meta["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                            "uid": rs["metadata"]["uid"], "controller": True,
                                            "blockOwnerDeletion": True}]
    status = await eventually(lambda: _status_matches(client, RS, "web", ns, replicas=3, fullyLabeledReplicas=3))
    assert status["observedGeneration"] == 1 and not status.get("readyReplicas")
    assert status["terminatingReplicas"] == 0
    for pod in pods[:2]:
        await mark_ready(client, pod)
    await eventually(lambda: _status_matches(client, RS, "web", ns, readyReplicas=2, availableReplicas=2))
    created = await eventually(lambda: _events_count(client, ns, "SuccessfulCreate", 3))
    assert sorted(created) == sorted(f"Created pod: {p['metadata']['name']}" for p in pods)

    # Scale down through kubectl (the /scale subresource): the pod that is not ready goes first.
    await asyncio.to_thread(cluster.kubectl, "-n", ns, "scale", "rs/web", "--replicas=2")
    left = await eventually(lambda: _count(client, ns, 2))
    assert {p["metadata"]["name"] for p in left} == {p["metadata"]["name"] for p in pods[:2]}
    status = await eventually(lambda: _status_matches(client, RS, "web", ns, replicas=2, observedGeneration=2))
    deleted = await eventually(lambda: _events_count(client, ns, "SuccessfulDelete", 1))
    assert deleted == [f"Deleted pod: {pods[2]['metadata']['name']}"]

    await client.patch(RS, "web", {"spec": {"replicas": 0}}, ns)
    await eventually(lambda: _count(client, ns, 0))
    status = await eventually(lambda: _status_matches(client, RS, "web", ns, replicas=0, observedGeneration=3))
    assert "readyReplicas" not in status and "availableReplicas" not in status


async def _count(client: Client, ns: str, n: int, selector: str = "") -> list[Obj] | None:
    pods = await active_pods(client, ns, selector)
    return pods if len(pods) == n else None


async def _status_matches(client: Client, info: Any, name: str, ns: str, **want: int) -> Obj | None:
    status = await status_of(client, info, name, ns)
    return status if all(status.get(k, 0) == v for k, v in want.items()) else None


async def _events_count(client: Client, ns: str, reason: str, n: int) -> list[str] | None:
    found = await events(client, ns, reason)
    return found if len(found) >= n else None


async def test_self_healing_after_pod_deletion(env: tuple[Client, str]) -> None:
    client, ns = env
    await client.create(RS, replica_set("heal", ns, 2))
    pods = await eventually(lambda: _count(client, ns, 2))
    await client.delete(PODS, pods[0]["metadata"]["name"], ns)
    replaced = await eventually(lambda: _renewed(client, ns, pods[0]["metadata"]["name"]))
    assert len(replaced) == 2 and pods[1]["metadata"]["name"] in {p["metadata"]["name"] for p in replaced}


async def _renewed(client: Client, ns: str, gone: str) -> list[Obj] | None:
    pods = await active_pods(client, ns)
    names = {p["metadata"]["name"] for p in pods}
    return pods if len(pods) == 2 and gone not in names else None


async def test_no_double_creation_while_the_cache_catches_up(env: tuple[Client, str]) -> None:
    client, ns = env
    await client.create(RS, replica_set("burst", ns, 20))
    await eventually(lambda: _status_matches(client, RS, "burst", ns, replicas=20))
    await asyncio.sleep(0.5)  # give a double-creating controller time to show itself
    assert len(await active_pods(client, ns)) == 20


async def test_adopts_matching_orphans_and_releases_pods_that_stop_matching(env: tuple[Client, str]) -> None:
    client, ns = env
    orphan = await client.create(PODS, {"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": "orphan", "namespace": ns,
                                                     "labels": {"app": "adopt"}},
                                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    rs = await client.create(RS, replica_set("adopt", ns, 2))
    pods = await eventually(lambda: _count(client, ns, 2))
    adopted = next(p for p in pods if p["metadata"]["name"] == "orphan")
    assert adopted["metadata"]["uid"] == orphan["metadata"]["uid"]
    assert adopted["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    assert adopted["metadata"]["ownerReferences"][0]["controller"] is True
    # Only one pod was created: the orphan counts. It lacks the template's tier label.
    await eventually(lambda: _status_matches(client, RS, "adopt", ns, replicas=2, fullyLabeledReplicas=1))

    await client.patch(PODS, "orphan", {"metadata": {"labels": {"app": "elsewhere"}}}, ns)
    released = await eventually(lambda: _released(client, ns))
    assert released["metadata"]["labels"] == {"app": "elsewhere"}
    await eventually(lambda: _count(client, ns, 2, "app=adopt"))
    await eventually(lambda: _status_matches(client, RS, "adopt", ns, replicas=2, fullyLabeledReplicas=2))


async def _released(client: Client, ns: str) -> Obj | None:
    pod = await client.get(PODS, "orphan", ns)
    return pod if not pod["metadata"].get("ownerReferences") else None


async def test_scale_down_picks_pods_in_upstream_order(env: tuple[Client, str]) -> None:
    client, ns = env
    await client.create(RS, replica_set("rank", ns, 5))
    pods = await eventually(lambda: _count(client, ns, 5))
    unassigned, pending, not_ready, restarted, ready = pods
    for pod in (pending, not_ready, restarted, ready):
        await bind(client, pod, "node-a")
    await mark_ready(client, not_ready, ready=False)
    await mark_ready(client, restarted, restarts=3)
    await mark_ready(client, ready)
    await eventually(lambda: _status_matches(client, RS, "rank", ns, readyReplicas=2))
    expected_order = [unassigned, pending, not_ready, restarted]
    for remaining, victim in zip(range(4, 0, -1), expected_order, strict=True):
        await client.patch(RS, "rank", {"spec": {"replicas": remaining}}, ns)
        left = await eventually(lambda n=remaining: _count(client, ns, n))
        assert victim["metadata"]["name"] not in {p["metadata"]["name"] for p in left}
    assert [p["metadata"]["name"] for p in await active_pods(client, ns)] == [ready["metadata"]["name"]]
    # The bound pods wait for a kubelet that is not there: they stay terminating, and are counted so.
    await eventually(lambda: _status_matches(client, RS, "rank", ns, replicas=1, terminatingReplicas=3))


async def test_min_ready_seconds_delays_availability(env: tuple[Client, str]) -> None:
    client, ns = env
    # Long enough that a loaded machine still sees the ready-but-not-yet-available window.
    await client.create(RS, replica_set("slow", ns, 2, minReadySeconds=4))
    pods = await eventually(lambda: _count(client, ns, 2))
    for pod in pods:
        await mark_ready(client, pod)
    status = await eventually(lambda: _status_matches(client, RS, "slow", ns, readyReplicas=2))
    assert status.get("availableReplicas", 0) == 0
    await eventually(lambda: _status_matches(client, RS, "slow", ns, availableReplicas=2), timeout=15)


async def test_replication_controller(env: tuple[Client, str], cluster: Cluster) -> None:
    client, ns = env
    rc = await client.create(RC, {"apiVersion": "v1", "kind": "ReplicationController",
                                  "metadata": {"name": "legacy", "namespace": ns},
                                  "spec": {"replicas": 3, "selector": {"app": "legacy"},
                                           "template": {"metadata": {"labels": {"app": "legacy"}},
                                                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    pods = await eventually(lambda: _count(client, ns, 3))
    for pod in pods:
        assert pod["metadata"]["generateName"] == "legacy-"
        assert pod["metadata"]["ownerReferences"][0] == {
            "apiVersion": "v1", "kind": "ReplicationController", "name": "legacy", "uid": rc["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}
        await mark_ready(client, pod)
    await eventually(lambda: _status_matches(client, RC, "legacy", ns, replicas=3, fullyLabeledReplicas=3,
                                             readyReplicas=3, availableReplicas=3, observedGeneration=1))
    await asyncio.to_thread(cluster.kubectl, "-n", ns, "scale", "rc/legacy", "--replicas=1")
    await eventually(lambda: _count(client, ns, 1))
    await eventually(lambda: _status_matches(client, RC, "legacy", ns, replicas=1, readyReplicas=1))
    out = (await asyncio.to_thread(cluster.kubectl, "-n", ns, "get", "rc", "legacy")).stdout
    assert out.split("\n")[1].split()[:4] == ["legacy", "1", "1", "1"]
