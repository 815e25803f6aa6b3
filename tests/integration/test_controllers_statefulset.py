"""StatefulSet controller against a real API server, with the scheduler and three simulated nodes in-process.

A small stand-in for the PV controller binds every claim to a fresh PersistentVolume, so that pods with
claims get scheduled. The garbage collector runs too, for the claim retention policy.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import harness
import pytest
import pytest_asyncio
from cluster import Cluster
from harness import bare_server, connect, create_namespace, found, resource, running

from pocketkube.client.rest import APIError, Client
from pocketkube.controllers.garbagecollector import GarbageCollector
from pocketkube.controllers.serviceaccount import ServiceAccountsController
from pocketkube.controllers.statefulset import StatefulSetController
from pocketkube.kubelet.simulated import SimulatedNodes, SimulationConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
PODS, PVCS, PVS = resource("", "pods"), resource("", "persistentvolumeclaims"), resource("", "persistentvolumes")
EVENTS = resource("", "events")
STS, REVISIONS = resource("apps", "statefulsets"), resource("apps", "controllerrevisions")
_ns_counter = itertools.count()
# The checks return a value or None: a value, even an empty list, is the answer.
eventually = partial(harness.eventually, until=found)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    yield from bare_server()


async def _bind_claims(client: Client) -> None:
    """Play the PV controller: each unbound claim gets its own PV and is marked Bound."""
    while True:
        for claim in (await client.list(PVCS))["items"]:
            meta, spec = claim["metadata"], claim["spec"]
            if spec.get("volumeName") or meta.get("deletionTimestamp"):
                continue
            pv = f"pv-{meta['uid']}"
            try:
                await client.create(PVS, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                                          "spec": {"capacity": {"storage": spec["resources"]["requests"]["storage"]},
                                                   "accessModes": spec["accessModes"],
                                                   "hostPath": {"path": f"/tmp/{pv}"},
                                                   "claimRef": {"namespace": meta["namespace"], "name": meta["name"],
                                                                "uid": meta["uid"]}}})
                await client.patch(PVCS, meta["name"], {"spec": {"volumeName": pv}}, meta["namespace"])
                await client.patch(PVCS, meta["name"], {"status": {"phase": "Bound"}}, meta["namespace"],
                                   subresource="status")
            except APIError as err:
                if not (err.not_found or err.already_exists or err.conflict):
                    raise
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    """The API client, with controllers, scheduler, simulated nodes and the claim binder running."""
    nodes_config = SimulationConfig(name_prefix="stsn-", pod_ready_delay=0.2, delete_delay=0.1)
    async with connect(cluster) as c, running(
            c, scheduler=True, nodes=SimulatedNodes(c, 3, nodes_config), identity="test-sts",
            controllers=(StatefulSetController, GarbageCollector, ServiceAccountsController)):
        binder = asyncio.create_task(_bind_claims(c))
        try:
            yield c
        finally:
            binder.cancel()
            await asyncio.gather(binder, return_exceptions=True)


class Env:
    def __init__(self, cluster: Cluster, client: Client, namespace: str) -> None:
        self.cluster = cluster
        self.client = client
        self.ns = namespace

    async def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl in a thread, so the controllers in this event loop keep running meanwhile."""
        return await asyncio.to_thread(self.cluster.kubectl, "-n", self.ns, *args, check=check, timeout=60)

    async def create(self, name: str = "web", replicas: int = 3, *, claims: bool = True, **spec: Any) -> Obj:
        labels = {"app": name}
        body: Obj = {"apiVersion": "apps/v1", "kind": "StatefulSet",
                     "metadata": {"name": name, "namespace": self.ns},
                     "spec": {"serviceName": f"{name}-svc", "replicas": replicas,
                              "selector": {"matchLabels": labels},
                              "template": {"metadata": {"labels": labels}, "spec": {
                                  "terminationGracePeriodSeconds": 1,
                                  "containers": [{"name": "c", "image": "nginx:1"}]}}, **spec}}
        if claims:
            body["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        return await self.client.create(STS, body)

    async def sts(self, name: str = "web") -> Obj:
        return await self.client.get(STS, name, self.ns)

    async def pods(self) -> dict[str, Obj]:
        return {p["metadata"]["name"]: p for p in (await self.client.list(PODS, self.ns))["items"]}

    async def claims(self) -> dict[str, Obj]:
        return {c["metadata"]["name"]: c for c in (await self.client.list(PVCS, self.ns))["items"]}

    async def patch(self, body: Obj, name: str = "web") -> None:
        await self.client.patch(STS, name, body, self.ns)

    async def events(self, reason: str) -> list[str]:
        return [e["message"] for e in (await self.client.list(EVENTS, self.ns))["items"] if e["reason"] == reason]

    async def settled(self, replicas: int, name: str = "web") -> Obj | None:
        """The set once every replica is ready and at the update revision, else None."""
        sts = await self.sts(name)
        status = sts.get("status") or {}
        done = (status.get("observedGeneration") == sts["metadata"]["generation"]
                and status.get("replicas") == replicas == status.get("readyReplicas") == status.get("updatedReplicas")
                and status.get("currentRevision") == status.get("updateRevision"))
        return sts if done else None


@pytest_asyncio.fixture(loop_scope="module")
async def env(cluster: Cluster, client: Client) -> Env:
    namespace = await create_namespace(client, f"sts-{next(_ns_counter)}")
    return Env(cluster, client, namespace)


def ready(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def live(pods: dict[str, Obj]) -> dict[str, Obj]:
    return {n: p for n, p in pods.items() if not p["metadata"].get("deletionTimestamp")}


async def test_ordered_creation_identity_claims_and_status(env: Env) -> None:
    await env.create(replicas=3)

    async def ordered_and_done() -> Obj | None:
        pods = await env.pods()
        for name in pods:  # OrderedReady: a pod exists only once its predecessor is Running and Ready
            ordinal = int(name.rsplit("-", 1)[1])
            if ordinal > 0:
                assert ready(pods[f"web-{ordinal - 1}"]), f"{name} created before web-{ordinal - 1} was ready"
        return await env.settled(3)
    sts = await eventually(ordered_and_done)
    status = sts["status"]
    assert status["currentReplicas"] == status["availableReplicas"] == 3
    assert status["collisionCount"] == 0
    revision = status["updateRevision"]

    pods = await env.pods()
    assert sorted(pods) == ["web-0", "web-1", "web-2"]
    for i in range(3):
        pod = pods[f"web-{i}"]
        labels = pod["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == f"web-{i}"
        assert labels["apps.kubernetes.io/pod-index"] == str(i)
        assert labels["controller-revision-hash"] == revision
        assert pod["metadata"]["generateName"] == "web-"
        assert pod["spec"]["hostname"] == f"web-{i}" and pod["spec"]["subdomain"] == "web-svc"
        assert pod["spec"]["nodeName"].startswith("stsn-")
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "data")
        assert volume["persistentVolumeClaim"]["claimName"] == f"data-web-{i}"
        ref = pod["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["controller"]) == ("StatefulSet", "web", True)

    claims = await env.claims()
    assert sorted(claims) == ["data-web-0", "data-web-1", "data-web-2"]
    assert all(c["metadata"]["labels"] == {"app": "web"} for c in claims.values())
    assert all(not c["metadata"].get("ownerReferences") for c in claims.values())  # Retain/Retain

    revisions = (await env.client.list(REVISIONS, env.ns))["items"]
    assert [(r["metadata"]["name"], r["revision"]) for r in revisions] == [(revision, 1)]
    assert revisions[0]["data"]["spec"]["template"]["$patch"] == "replace"
    assert revisions[0]["metadata"]["labels"]["app"] == "web"

    created = await eventually(lambda: _all_events(env, "SuccessfulCreate", 6))
    assert "create Pod web-0 in StatefulSet web successful" in created
    assert "create Claim data-web-2 Pod web-2 in StatefulSet web success" in created

    # The server defaults rollingUpdate.partition to 0, so kubectl reports a (complete) partitioned rollout.
    out = (await env.kubectl("rollout", "status", "statefulset/web", "--timeout=20s")).stdout
    assert "partitioned roll out complete: 3 new pods have been updated..." in out


async def _all_events(env: Env, reason: str, count: int) -> list[str] | None:
    messages = await env.events(reason)
    return messages if len(messages) >= count else None


async def test_deleted_pod_comes_back_with_its_name_and_claim(env: Env) -> None:
    await env.create(replicas=2)
    await eventually(lambda: env.settled(2))
    pod_uid = (await env.pods())["web-1"]["metadata"]["uid"]
    claim_uid = (await env.claims())["data-web-1"]["metadata"]["uid"]
    await env.client.delete(PODS, "web-1", env.ns)

    async def replaced() -> Obj | None:
        pod = (await env.pods()).get("web-1")
        return pod if pod and pod["metadata"]["uid"] != pod_uid and ready(pod) else None
    pod = await eventually(replaced)
    assert pod["spec"]["hostname"] == "web-1"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "data")
    assert volume["persistentVolumeClaim"]["claimName"] == "data-web-1"
    assert (await env.claims())["data-web-1"]["metadata"]["uid"] == claim_uid
    assert await eventually(lambda: env.settled(2))


async def test_scale_down_in_reverse_order_keeps_claims(env: Env) -> None:
    await env.create(replicas=3)
    await eventually(lambda: env.settled(3))
    await env.patch({"spec": {"replicas": 1}})

    async def reverse_and_done() -> bool:
        pods = live(await env.pods())
        assert not ("web-2" in pods and "web-1" not in pods), "web-1 went before web-2"
        return sorted(pods) == ["web-0"] and await env.settled(1) is not None
    await eventually(reverse_and_done)
    assert sorted(await env.claims()) == ["data-web-0", "data-web-1", "data-web-2"]
    deleted = await env.events("SuccessfulDelete")
    assert "delete Pod web-2 in StatefulSet web successful" in deleted

    await env.patch({"spec": {"replicas": 2}})  # scaling up again reuses the claim
    await eventually(lambda: env.settled(2))
    pod = (await env.pods())["web-1"]
    assert next(v for v in pod["spec"]["volumes"] if v["name"] == "data")["persistentVolumeClaim"] == {
        "claimName": "data-web-1"}


async def test_rolling_update_with_partition_then_rollout_status(env: Env) -> None:
    await env.create(replicas=3, updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}})
    old = (await eventually(lambda: env.settled(3)))["status"]["updateRevision"]
    await env.patch({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}})

    async def partitioned() -> Obj | None:
        sts = await env.sts()
        status = sts.get("status") or {}
        pods = await env.pods()
        if status.get("updatedReplicas") == 1 and status.get("readyReplicas") == 3 and len(pods) == 3 \
                and all(ready(p) for p in pods.values()):
            return sts
        return None
    sts = await eventually(partitioned)
    new = sts["status"]["updateRevision"]
    assert new != old and sts["status"]["currentRevision"] == old and sts["status"]["currentReplicas"] == 2
    pods = await env.pods()
    assert {n: p["metadata"]["labels"]["controller-revision-hash"] for n, p in pods.items()} == {
        "web-0": old, "web-1": old, "web-2": new}
    assert pods["web-2"]["spec"]["containers"][0]["image"] == "nginx:2"
    assert pods["web-0"]["spec"]["containers"][0]["image"] == "nginx:1"
    out = (await env.kubectl("rollout", "status", "statefulset/web", "--timeout=20s")).stdout
    assert "partitioned roll out complete: 1 new pods have been updated..." in out

    # Lifting the partition updates the rest from the highest ordinal down, one at a time.
    await env.patch({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})
    status_cmd = asyncio.create_task(env.kubectl("rollout", "status", "statefulset/web", "--timeout=30s"))

    async def in_order() -> Obj | None:
        pods = await env.pods()
        labels = {n: p["metadata"]["labels"]["controller-revision-hash"] for n, p in pods.items()}
        assert not (labels.get("web-0") == new and labels.get("web-1") == old), "web-0 updated before web-1"
        assert sum(bool(not ready(p) or p["metadata"].get("deletionTimestamp")) for p in pods.values()) <= 1
        return await env.settled(3)
    sts = await eventually(in_order)
    assert sts["status"]["currentRevision"] == new
    assert "partitioned roll out complete: 3 new pods have been updated..." in (await status_cmd).stdout
    revisions = sorted((r["revision"], r["metadata"]["name"])
                       for r in (await env.client.list(REVISIONS, env.ns))["items"])
    assert revisions == [(1, old), (2, new)]
    history = (await env.kubectl("rollout", "history", "statefulset/web")).stdout
    assert history.split("\n")[2:4] == ["1         <none>", "2         <none>"]

    # Undo: the old template comes back as the newest revision (renumbered, not copied).
    await env.kubectl("rollout", "undo", "statefulset/web")

    async def rolled_back() -> Obj | None:
        sts = await env.settled(3)
        return sts if sts and sts["status"]["updateRevision"] == old else None
    await eventually(rolled_back)
    assert all(p["spec"]["containers"][0]["image"] == "nginx:1" for p in (await env.pods()).values())
    revisions = sorted((r["revision"], r["metadata"]["name"])
                       for r in (await env.client.list(REVISIONS, env.ns))["items"])
    assert revisions == [(2, new), (3, old)]


async def test_parallel_creates_and_deletes_without_waiting(env: Env) -> None:
    unschedulable = {"nodeSelector": {"no-such-label": "x"}}
    for name, policy in (("par", "Parallel"), ("ord", "OrderedReady")):
        body = {"template": {"metadata": {"labels": {"app": name}}, "spec": {
            **unschedulable, "containers": [{"name": "c", "image": "nginx:1"}]}}}
        await env.create(name, replicas=3, claims=False, podManagementPolicy=policy, **body)

    async def parallel_created() -> bool:
        return sorted(n for n in await env.pods() if n.startswith("par-")) == ["par-0", "par-1", "par-2"]
    await eventually(parallel_created)

    async def counted() -> bool:
        return (await env.sts("par")).get("status", {}).get("replicas") == 3
    await eventually(counted)  # the pods created in a round are counted by the next one
    # OrderedReady waits on ord-0, which can never be scheduled.
    await asyncio.sleep(0.5)
    assert sorted(n for n in await env.pods() if n.startswith("ord-")) == ["ord-0"]

    await env.patch({"spec": {"replicas": 0}}, "par")

    async def all_gone() -> bool:
        return not [n for n in live(await env.pods()) if n.startswith("par-")]
    await eventually(all_gone)


async def test_retention_policy_delete_removes_claims(env: Env) -> None:
    await env.create(replicas=2, persistentVolumeClaimRetentionPolicy={"whenScaled": "Delete",
                                                                       "whenDeleted": "Delete"})
    sts = await eventually(lambda: env.settled(2))

    async def owned_by_set() -> bool:
        claims = await env.claims()
        return len(claims) == 2 and all(
            [(r["kind"], r["uid"], r.get("controller")) for r in c["metadata"].get("ownerReferences") or []]
            == [("StatefulSet", sts["metadata"]["uid"], True)] for c in claims.values())
    await eventually(owned_by_set)

    await env.patch({"spec": {"replicas": 1}})  # the scaled-down claim follows its pod

    async def scaled_claim_gone() -> bool:
        return sorted(await env.claims()) == ["data-web-0"]
    await eventually(scaled_claim_gone)

    await env.client.delete(STS, "web", env.ns)  # and the rest follow the set

    async def everything_gone() -> bool:
        return not await env.claims() and not live(await env.pods())
    await eventually(everything_gone)


async def test_on_delete_replaces_only_deleted_pods(env: Env) -> None:
    await env.create(replicas=2, claims=False, updateStrategy={"type": "OnDelete"})
    old = (await eventually(lambda: env.settled(2)))["status"]["updateRevision"]
    await env.patch({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}})

    async def observed() -> Obj | None:
        sts = await env.sts()
        status = sts["status"]
        return status if status["observedGeneration"] == 2 and status["updateRevision"] != old else None
    status = await eventually(observed)
    assert "updatedReplicas" not in status and status["currentReplicas"] == 2  # omitempty, as Go writes it
    pod_uid = (await env.pods())["web-0"]["metadata"]["uid"]
    await env.client.delete(PODS, "web-0", env.ns)

    async def replaced() -> Obj | None:
        pod = (await env.pods()).get("web-0")
        return pod if pod and pod["metadata"]["uid"] != pod_uid and ready(pod) else None
    pod = await eventually(replaced)
    assert pod["metadata"]["labels"]["controller-revision-hash"] == status["updateRevision"]
    assert pod["spec"]["containers"][0]["image"] == "nginx:2"
    assert (await env.pods())["web-1"]["metadata"]["labels"]["controller-revision-hash"] == old
