"""Garbage collector against a real API server: cascading deletion in all three modes, through the API
and through `kubectl delete --cascade=...`, blockOwnerDeletion, dangling references, custom resources."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import harness
import pytest
import pytest_asyncio
from cluster import Cluster
from harness import bare_server, connect, eventually, running

from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.client.rest import APIError, Client
from pocketkube.controllers.garbagecollector import GarbageCollector

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
NS = "default"
CATALOG = ResourceCatalog()
CM = CATALOG.resource("", "v1", "configmaps")
RS = CATALOG.resource("apps", "v1", "replicasets")
PODS = CATALOG.resource("", "v1", "pods")
assert CM is not None and RS is not None and PODS is not None
HOLD = "example.com/hold"


class FastGarbageCollector(GarbageCollector):
    resync_period = 1.0  # notice new custom resources quickly


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: Cluster) -> AsyncIterator[Client]:
    async with connect(server) as client, running(client, controllers=(FastGarbageCollector,), identity="test-gc"):
        yield client


async def get_or_none(client: Client, info: ResourceInfo, name: str, namespace: str = NS) -> Obj | None:
    return await harness.get_or_none(client, info, name, namespace)


async def gone(client: Client, info: ResourceInfo, *names: str, namespace: str = NS) -> bool:
    return all([await get_or_none(client, info, n, namespace) is None for n in names])


def owner_ref(owner: Obj, *, block: bool = False, controller: bool = False) -> Obj:
    ref = {"apiVersion": owner.get("apiVersion", "v1"), "kind": owner.get("kind", "ConfigMap"),
           "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}
    if block:
        ref["blockOwnerDeletion"] = True
    if controller:
        ref["controller"] = True
    return ref


async def make_cm(client: Client, name: str, owners: list[Obj] | None = None,
                  finalizers: list[str] | None = None, namespace: str = NS) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace}
    if owners:
        meta["ownerReferences"] = owners
    if finalizers:
        meta["finalizers"] = finalizers
    return await client.create(CM, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                                    "data": {"k": name}})


async def release(client: Client, info: ResourceInfo, name: str, namespace: str = NS) -> None:
    await client.patch(info, name, {"metadata": {"finalizers": None}}, namespace)


async def test_background_deletes_dependents_of_a_deleted_owner(client: Client) -> None:
    owner = await make_cm(client, "bg-owner")
    await make_cm(client, "bg-a", [owner_ref(owner)])
    await make_cm(client, "bg-b", [owner_ref(owner, block=True, controller=True)])
    grandchild_owner = await make_cm(client, "bg-c", [owner_ref(owner)])
    await make_cm(client, "bg-c-child", [owner_ref(grandchild_owner)])
    await client.delete(CM, "bg-owner", NS, propagation_policy="Background")
    await eventually(lambda: gone(client, CM, "bg-owner", "bg-a", "bg-b", "bg-c", "bg-c-child"),
                     what="background cascade")


async def test_orphan_keeps_dependents_and_strips_the_reference(client: Client) -> None:
    owner = await make_cm(client, "or-owner")
    other = await make_cm(client, "or-other")
    await make_cm(client, "or-a", [owner_ref(owner, block=True)])
    await make_cm(client, "or-b", [owner_ref(owner), owner_ref(other)])
    await client.delete(CM, "or-owner", NS, propagation_policy="Orphan")
    await eventually(lambda: gone(client, CM, "or-owner"), what="orphaned owner to go")
    a = await client.get(CM, "or-a", NS)
    b = await client.get(CM, "or-b", NS)
    assert not a["metadata"].get("ownerReferences")
    assert [r["name"] for r in b["metadata"]["ownerReferences"]] == ["or-other"]
    await asyncio.sleep(0.5)  # and nothing collects them afterwards
    assert await get_or_none(client, CM, "or-a") is not None


async def test_foreground_waits_for_blocking_dependents(client: Client) -> None:
    owner = await make_cm(client, "fg-owner")
    await make_cm(client, "fg-held", [owner_ref(owner, block=True)], finalizers=[HOLD])
    await make_cm(client, "fg-free", [owner_ref(owner)])
    await client.delete(CM, "fg-owner", NS, propagation_policy="Foreground")

    async def dependents_handled() -> bool:
        held = await get_or_none(client, CM, "fg-held")
        return held is not None and bool(held["metadata"].get("deletionTimestamp")) and \
            await gone(client, CM, "fg-free")

    await eventually(dependents_handled, what="dependents deleted")
    # The blocking dependent is still there (held by its own finalizer), so the owner waits, visibly.
    await asyncio.sleep(0.5)
    waiting = await client.get(CM, "fg-owner", NS)
    assert waiting["metadata"]["deletionTimestamp"]
    assert waiting["metadata"]["finalizers"] == ["foregroundDeletion"]
    held = await client.get(CM, "fg-held", NS)
    assert held["metadata"]["deletionTimestamp"]

    await release(client, CM, "fg-held")
    await eventually(lambda: gone(client, CM, "fg-owner", "fg-held"), what="owner to go after its dependents")


async def test_foreground_through_a_chain_with_a_non_blocking_dependent(client: Client) -> None:
    top = await make_cm(client, "ch-top")
    mid = await make_cm(client, "ch-mid", [owner_ref(top, block=True)])
    await make_cm(client, "ch-leaf", [owner_ref(mid, block=True)], finalizers=[HOLD])
    await client.delete(CM, "ch-top", NS, propagation_policy="Foreground")

    async def mid_in_foreground() -> bool:
        obj = await get_or_none(client, CM, "ch-mid")
        return obj is not None and obj["metadata"].get("finalizers") == ["foregroundDeletion"]

    # The middle object has a dependent, so it too is deleted in the foreground.
    await eventually(mid_in_foreground, what="middle object deleted in the foreground")
    assert (await client.get(CM, "ch-top", NS))["metadata"]["deletionTimestamp"]
    await release(client, CM, "ch-leaf")
    await eventually(lambda: gone(client, CM, "ch-top", "ch-mid", "ch-leaf"), what="the whole chain")


async def test_dangling_references(client: Client) -> None:
    live = await make_cm(client, "dg-live")
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "dg-ghost", "uid": "00000000-dead-beef-0000-000000000001"}
    # Same name as a live object but another UID: the owner it names is gone all the same.
    stale = {**owner_ref(live), "uid": "00000000-dead-beef-0000-000000000002"}
    await make_cm(client, "dg-both", [owner_ref(live), ghost])
    await make_cm(client, "dg-only-ghost", [ghost])
    await make_cm(client, "dg-stale-uid", [stale])

    async def only_live_ref_left() -> bool:
        obj = await client.get(CM, "dg-both", NS)
        return [r["name"] for r in obj["metadata"].get("ownerReferences") or []] == ["dg-live"]

    await eventually(only_live_ref_left, what="dangling reference removed")
    await eventually(lambda: gone(client, CM, "dg-only-ghost", "dg-stale-uid"), what="orphans collected")
    assert await get_or_none(client, CM, "dg-live") is not None


async def test_pods_of_a_replicaset_object(client: Client) -> None:
    rs = await client.create(RS, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "gc-rs", "namespace": NS},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "gc-rs"}},
                 "template": {"metadata": {"labels": {"app": "gc-rs"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    for i in range(2):
        await client.create(PODS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"gc-rs-{i}", "namespace": NS, "labels": {"app": "gc-rs"},
                         "ownerReferences": [owner_ref(rs, block=True, controller=True)]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    await client.delete(RS, "gc-rs", NS, propagation_policy="Foreground")
    await eventually(lambda: gone(client, PODS, "gc-rs-0", "gc-rs-1"), what="pods deleted")
    await eventually(lambda: gone(client, RS, "gc-rs"), what="replicaset deleted")


def _kubectl_json(server: Cluster, *args: str) -> Obj:
    return json.loads(server.kubectl(*args, "-o", "json").stdout)


async def test_kubectl_delete_cascade_modes(server: Cluster, client: Client) -> None:
    for mode in ("background", "foreground", "orphan"):
        owner = await make_cm(client, f"kc-{mode}")
        await make_cm(client, f"kc-{mode}-dep", [owner_ref(owner, block=True)])
        # kubectl waits for the owner to be gone, which in the foreground needs the collector's help.
        result = await asyncio.to_thread(server.kubectl, "delete", "configmap", f"kc-{mode}",
                                         f"--cascade={mode}", "-n", NS, "--timeout=30s")
        assert f'configmap "kc-{mode}" deleted' in result.stdout
        if mode == "orphan":
            dep = await asyncio.to_thread(_kubectl_json, server, "get", "configmap", f"kc-{mode}-dep", "-n", NS)
            assert not dep["metadata"].get("ownerReferences")
        else:
            await eventually(lambda mode=mode: gone(client, CM, f"kc-{mode}-dep"), what=f"{mode} dependent")


async def test_custom_resource_owner_found_by_discovery(server: Cluster, client: Client) -> None:
    crd_info = CATALOG.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert crd_info is not None
    await client.create(crd_info, {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.gc.example.com"},
        "spec": {"group": "gc.example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]}})
    widgets = ResourceInfo("gc.example.com", "v1", "Widget", "widgets", True)

    async def created() -> Obj | None:
        try:
            return await client.create(widgets, {"apiVersion": "gc.example.com/v1", "kind": "Widget",
                                                 "metadata": {"name": "w1", "namespace": NS}})
        except APIError as err:
            if err.not_found:
                return None
            raise

    widget: Obj | None = None
    deadline = time.monotonic() + 15
    while widget is None and time.monotonic() < deadline:
        widget = await created()
        if widget is None:
            await asyncio.sleep(0.2)
    assert widget is not None, "the custom resource was never served"
    # A custom resource owned by a ConfigMap, and a ConfigMap owned by the custom resource.
    owner = await make_cm(client, "cr-owner")
    await client.patch(widgets, "w1", {"metadata": {"ownerReferences": [owner_ref(owner)]}}, NS)
    await make_cm(client, "cr-dep", [owner_ref(widget, block=True)])
    await client.delete(CM, "cr-owner", NS)
    await eventually(lambda: gone(client, widgets, "w1"), timeout=20, what="custom resource collected")
    await eventually(lambda: gone(client, CM, "cr-dep"), what="its dependent collected")
