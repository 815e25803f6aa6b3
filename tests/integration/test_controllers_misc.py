"""ServiceAccount and root CA publisher, pod GC and TTL-after-finished against a real API server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from cluster import Cluster
from harness import bare_server, connect, eventually, get_or_none, resource, running

from pocketkube.client.rest import Client
from pocketkube.controllers.garbagecollector import GarbageCollector
from pocketkube.controllers.namespace import NamespaceController
from pocketkube.controllers.podgc import PodGCController
from pocketkube.controllers.serviceaccount import (
    DESCRIPTION,
    DESCRIPTION_ANNOTATION,
    ROOT_CA_CONFIGMAP,
    RootCACertPublisher,
    ServiceAccountsController,
)
from pocketkube.controllers.ttlafterfinished import TTLAfterFinishedController

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
NAMESPACES, SAS, CMS = resource("", "namespaces"), resource("", "serviceaccounts"), resource("", "configmaps")
PODS, NODES, JOBS = resource("", "pods"), resource("", "nodes"), resource("batch", "jobs")


class FastPodGC(PodGCController):
    gc_period = 0.3
    quarantine = 1.0
    terminated_pod_threshold = 2


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: Cluster) -> AsyncIterator[Client]:
    async with connect(server) as client, running(client, identity="test-misc", controllers=(
            ServiceAccountsController, RootCACertPublisher, FastPodGC, TTLAfterFinishedController, GarbageCollector,
            NamespaceController)):
        yield client


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_new_namespace_gets_default_service_account_and_root_ca(server: Cluster, client: Client) -> None:
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sa-test"}})
    sa = await eventually(lambda: get_or_none(client, SAS, "default", "sa-test"), what="default service account")
    cm = await eventually(lambda: get_or_none(client, CMS, ROOT_CA_CONFIGMAP, "sa-test"), what="root CA configmap")
    ca = (server.data_dir / "tls" / "ca.crt").read_text()
    assert cm["data"] == {"ca.crt": ca}
    assert cm["metadata"]["annotations"][DESCRIPTION_ANNOTATION] == DESCRIPTION

    # Deleted: it comes back (a new object).
    await client.delete(SAS, "default", "sa-test")

    async def recreated_sa() -> bool:
        new = await get_or_none(client, SAS, "default", "sa-test")
        return new is not None and new["metadata"]["uid"] != sa["metadata"]["uid"]

    await eventually(recreated_sa, what="default service account recreated")

    # Edited: the data and the description are put back, other additions are kept.
    await client.patch(CMS, ROOT_CA_CONFIGMAP, {"data": {"ca.crt": "tampered", "extra": "x"},
                                                "metadata": {"annotations": {DESCRIPTION_ANNOTATION: None,
                                                                             "mine": "yes"}}}, "sa-test")

    async def restored() -> Obj | None:
        obj = await client.get(CMS, ROOT_CA_CONFIGMAP, "sa-test")
        return obj if obj["data"] == {"ca.crt": ca} else None

    fixed = await eventually(restored, what="root CA configmap restored")
    assert fixed["metadata"]["annotations"] == {DESCRIPTION_ANNOTATION: DESCRIPTION, "mine": "yes"}

    # Deleted: recreated.
    await client.delete(CMS, ROOT_CA_CONFIGMAP, "sa-test")

    async def recreated_cm() -> bool:
        new = await get_or_none(client, CMS, ROOT_CA_CONFIGMAP, "sa-test")
        return new is not None and new["metadata"]["uid"] != fixed["metadata"]["uid"]

    await eventually(recreated_cm, what="root CA configmap recreated")


async def test_existing_namespaces_are_covered(client: Client) -> None:
    for ns in ("default", "kube-system"):
        assert await eventually(lambda ns=ns: get_or_none(client, SAS, "default", ns))
        assert await eventually(lambda ns=ns: get_or_none(client, CMS, ROOT_CA_CONFIGMAP, ns))


def _pod(name: str, node: str = "") -> Obj:
    spec: Obj = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


async def test_podgc_collects_pods_of_missing_nodes_after_quarantine(client: Client) -> None:
    await client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gc-node"}})
    await client.create(PODS, _pod("on-real-node", "gc-node"))
    await client.create(PODS, _pod("on-ghost-node", "ghost-node"))
    started = time.monotonic()
    # Not before the quarantine is over...
    await asyncio.sleep(0.6)
    assert await get_or_none(client, PODS, "on-ghost-node", "default") is not None

    async def ghost_pod_gone() -> bool:
        return await get_or_none(client, PODS, "on-ghost-node", "default") is None

    await eventually(ghost_pod_gone, what="orphaned pod collected")
    assert time.monotonic() - started >= FastPodGC.quarantine
    assert await get_or_none(client, PODS, "on-real-node", "default") is not None

    # A node that goes away takes its pods with it.
    await client.delete(NODES, "gc-node")
    await eventually(lambda: _gone(client, "on-real-node"), what="pod of the deleted node collected")


async def _gone(client: Client, name: str) -> bool:
    return await get_or_none(client, PODS, name, "default") is None


async def test_podgc_keeps_only_threshold_terminated_pods(client: Client) -> None:
    # Oldest first; pods created within the same second go by name, which is the same order here.
    await client.create(PODS, _pod("still-pending"))
    for i in range(4):
        await client.create(PODS, _pod(f"done-{i}"))
        await client.patch(PODS, f"done-{i}", {"status": {"phase": "Succeeded"}}, "default", subresource="status")

    async def oldest_collected() -> bool:
        return await _gone(client, "done-0") and await _gone(client, "done-1")

    await eventually(oldest_collected, what="oldest terminated pods collected")
    for name in ("done-2", "done-3", "still-pending"):
        assert await get_or_none(client, PODS, name, "default") is not None


def _job(name: str, ttl: int | None) -> Obj:
    spec: Obj = {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "busybox"}]}}}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": spec}


async def _finish(client: Client, name: str) -> None:
    stamp = _now()
    await client.patch(JOBS, name, {"status": {
        "startTime": stamp, "completionTime": stamp, "succeeded": 1,
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp,
                        "lastProbeTime": stamp},
                       {"type": "Complete", "status": "True", "lastTransitionTime": stamp, "lastProbeTime": stamp}]}},
        "default", subresource="status")


async def test_ttl_after_finished_deletes_finished_jobs(client: Client) -> None:
    await client.create(JOBS, _job("ttl-job", 1))
    await client.create(JOBS, _job("no-ttl-job", None))
    await client.create(JOBS, _job("unfinished-ttl-job", 0))
    await _finish(client, "ttl-job")
    await _finish(client, "no-ttl-job")

    async def ttl_job_gone() -> bool:
        return await get_or_none(client, JOBS, "ttl-job", "default") is None

    await eventually(ttl_job_gone, what="job deleted after its TTL")
    assert await get_or_none(client, JOBS, "no-ttl-job", "default") is not None
    assert await get_or_none(client, JOBS, "unfinished-ttl-job", "default") is not None


async def test_ttl_waits_for_the_deadline(client: Client) -> None:
    await client.create(JOBS, _job("ttl-later", 3))
    await _finish(client, "ttl-later")
    finished = time.monotonic()
    await asyncio.sleep(1.5)
    assert await get_or_none(client, JOBS, "ttl-later", "default") is not None

    async def gone() -> bool:
        return await get_or_none(client, JOBS, "ttl-later", "default") is None

    await eventually(gone, what="job deleted after 3 s")
    assert time.monotonic() - finished >= 2.0  # 3 s after a finish time truncated to the second


async def test_namespace_deletion_is_not_held_up_by_recreated_defaults(client: Client) -> None:
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sa-gone"}})
    await eventually(lambda: get_or_none(client, CMS, ROOT_CA_CONFIGMAP, "sa-gone"), what="root CA configmap")
    await eventually(lambda: get_or_none(client, SAS, "default", "sa-gone"), what="default service account")
    await client.delete(NAMESPACES, "sa-gone")

    async def namespace_gone() -> bool:
        return await get_or_none(client, NAMESPACES, "sa-gone") is None

    await eventually(namespace_gone, timeout=20, what="namespace deleted")
