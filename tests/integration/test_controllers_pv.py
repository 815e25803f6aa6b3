"""The PersistentVolume controller against a real API server: static binding (smallest fit, access modes,
selector, volumeMode, pre-binding), release and reclaim, lost claims, and dynamic provisioning through
the default local-path class with the scheduler choosing the node (simulated nodes, all in-process); and a
whole `pocketkube server` provisioning under its own data directory."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from cluster import Cluster, new_cluster
from harness import bare_server, connect, create_namespace, eventually, get_or_none, resource, running

from pocketkube.api import localpath
from pocketkube.api.kinds import ResourceInfo
from pocketkube.client.rest import Client
from pocketkube.controllers.namespace import NamespaceController
from pocketkube.controllers.persistentvolume import (
    ANN_BIND_COMPLETED,
    ANN_BOUND_BY_CONTROLLER,
    ANN_DEFAULT_CLASS,
    ANN_DYNAMICALLY_PROVISIONED,
    ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER,
    LOCAL_PATH_PROVISIONER,
    PersistentVolumeController,
)
from pocketkube.kubelet.simulated import SimulatedNodes, SimulationConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
PODS, EVENTS, SERVICEACCOUNTS = resource("", "pods"), resource("", "events"), resource("", "serviceaccounts")
PVS, PVCS = resource("", "persistentvolumes"), resource("", "persistentvolumeclaims")
CLASSES = resource("storage.k8s.io", "storageclasses")
_ns = itertools.count()
_pv = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: Cluster) -> AsyncIterator[Client]:
    nodes_config = SimulationConfig(name_prefix="pv-", lease_interval=5, delete_delay=0.2)
    async with connect(server) as client, running(
            client, identity="test-pv", scheduler=True, nodes=SimulatedNodes(client, 2, nodes_config),
            controllers=(PersistentVolumeController, NamespaceController),
            local_storage_path=server.data_dir / "storage"):
        yield client


async def namespace(client: Client) -> str:
    return await create_namespace(client, f"pv-{next(_ns)}")


async def volume(client: Client, size: str, modes: list[str] | None = None, cls: str = "manual",
                 labels: Obj | None = None, policy: str = "Retain", **spec: Any) -> str:
    name = f"vol-{next(_pv)}"
    await client.create(PVS, {"apiVersion": "v1", "kind": "PersistentVolume",
                              "metadata": {"name": name, "labels": labels or {}},
                              "spec": {"capacity": {"storage": size}, "accessModes": modes or ["ReadWriteOnce"],
                                       "storageClassName": cls, "persistentVolumeReclaimPolicy": policy,
                                       "hostPath": {"path": f"/data/{name}"}, **spec}})
    await eventually(lambda: _phase(client, PVS, name, "", "Available"), what=f"{name} Available")
    return name


async def claim(client: Client, ns: str, name: str, size: str, modes: list[str] | None = None,
                cls: str | None = "manual", **spec: Any) -> Obj:
    body: Obj = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
                 "spec": {"accessModes": modes or ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                          **spec}}
    if cls is not None:
        body["spec"]["storageClassName"] = cls
    return await client.create(PVCS, body)


async def _phase(client: Client, info: ResourceInfo, name: str, ns: str, phase: str) -> Obj | None:
    obj = await get_or_none(client, info, name, ns)
    return obj if obj is not None and (obj.get("status") or {}).get("phase") == phase else None


async def bound(client: Client, ns: str, name: str) -> Obj:
    return await eventually(lambda: _phase(client, PVCS, name, ns, "Bound"), what=f"claim {name} Bound")


async def event(client: Client, ns: str, name: str, reason: str) -> Obj:
    async def check() -> Obj | None:
        events = (await client.list(EVENTS, ns, field_selector=f"involvedObject.name={name}"))["items"]
        return next((e for e in events if e["reason"] == reason), None)
    return await eventually(check, what=f"event {reason} on {name}")


async def test_static_binding_picks_the_smallest_fit(client: Client) -> None:
    ns = await namespace(client)
    small = await volume(client, "1Gi")
    medium = await volume(client, "5Gi")
    await volume(client, "10Gi")
    await volume(client, "3Gi", cls="other")
    await claim(client, ns, "data", "2Gi")
    pvc = await bound(client, ns, "data")
    assert pvc["spec"]["volumeName"] == medium
    assert pvc["metadata"]["annotations"][ANN_BIND_COMPLETED] == "yes"
    assert pvc["metadata"]["annotations"][ANN_BOUND_BY_CONTROLLER] == "yes"
    assert pvc["status"]["capacity"] == {"storage": "5Gi"}
    assert pvc["status"]["accessModes"] == ["ReadWriteOnce"]
    pv = await eventually(lambda: _phase(client, PVS, medium, "", "Bound"), what="volume Bound")
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert pv["spec"]["claimRef"]["name"] == "data" and pv["spec"]["claimRef"]["namespace"] == ns
    assert pv["metadata"]["annotations"][ANN_BOUND_BY_CONTROLLER] == "yes"
    assert (await client.get(PVS, small))["status"]["phase"] == "Available"

    # Retain: the claim goes, the volume is Released and kept with its claimRef.
    await client.delete(PVCS, "data", ns)
    pv = await eventually(lambda: _phase(client, PVS, medium, "", "Released"), what="volume Released")
    assert pv["spec"]["claimRef"]["name"] == "data"
    assert pv["status"]["lastPhaseTransitionTime"]


async def test_access_modes_selector_and_volume_mode(client: Client) -> None:
    ns = await namespace(client)
    await volume(client, "1Gi", cls="modes")
    rwx = await volume(client, "8Gi", ["ReadWriteOnce", "ReadWriteMany"], cls="modes")
    gold = await volume(client, "9Gi", cls="modes", labels={"tier": "gold"})
    block = await volume(client, "1Gi", cls="modes", volumeMode="Block")
    await claim(client, ns, "shared", "1Gi", ["ReadWriteMany"], cls="modes")
    await claim(client, ns, "picky", "1Gi", cls="modes", selector={"matchLabels": {"tier": "gold"}})
    await claim(client, ns, "raw", "1Gi", cls="modes", volumeMode="Block")
    assert (await bound(client, ns, "shared"))["spec"]["volumeName"] == rwx
    assert (await bound(client, ns, "picky"))["spec"]["volumeName"] == gold
    assert (await bound(client, ns, "raw"))["spec"]["volumeName"] == block
    # Nothing else fits: the claim waits, Pending, with upstream's event.
    await claim(client, ns, "none", "100Gi", cls="")
    await event(client, ns, "none", "FailedBinding")
    assert (await client.get(PVCS, "none", ns))["status"]["phase"] == "Pending"


async def test_pre_bound_claims_and_volumes(client: Client) -> None:
    ns = await namespace(client)
    big = await volume(client, "50Gi", cls="pre")
    await volume(client, "1Gi", cls="pre")
    await claim(client, ns, "mine", "1Gi", cls="pre", volumeName=big)  # not the smallest, but named
    assert (await bound(client, ns, "mine"))["spec"]["volumeName"] == big
    # A volume pre-bound (by name only) to a claim that does not exist yet.
    reserved = f"vol-{next(_pv)}"
    await client.create(PVS, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": reserved},
                              "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce"],
                                       "storageClassName": "pre", "hostPath": {"path": "/data/r"},
                                       "claimRef": {"namespace": ns, "name": "later"}}})
    await eventually(lambda: _phase(client, PVS, reserved, "", "Available"), what="pre-bound volume Available")
    await claim(client, ns, "later", "1Gi", cls="pre")
    pvc = await bound(client, ns, "later")
    assert pvc["spec"]["volumeName"] == reserved
    pv = await client.get(PVS, reserved)
    assert ANN_BOUND_BY_CONTROLLER not in (pv["metadata"].get("annotations") or {})  # the user bound it
    # A named volume that does not fit is refused with VolumeMismatch.
    tiny = await volume(client, "1Mi", cls="pre")
    await claim(client, ns, "toobig", "1Gi", cls="pre", volumeName=tiny)
    mismatch = await event(client, ns, "toobig", "VolumeMismatch")
    assert "requested PV is too small" in mismatch["message"]


async def test_lost_claim_and_failed_delete(client: Client) -> None:
    ns = await namespace(client)
    vol = await volume(client, "1Gi", cls="lost", policy="Delete")
    await claim(client, ns, "c", "1Gi", cls="lost")
    await bound(client, ns, "c")
    # Delete on a static volume: no plugin can delete it, so it is Failed.
    await client.delete(PVCS, "c", ns)
    pv = await eventually(lambda: _phase(client, PVS, vol, "", "Failed"), what="volume Failed")
    assert "no deletable volume plugin matched" in pv["status"]["message"]
    await event(client, "default", vol, "VolumeFailedDelete")
    # A bound claim whose volume disappears is Lost.
    other = await volume(client, "1Gi", cls="lost2")
    await claim(client, ns, "d", "1Gi", cls="lost2")
    await bound(client, ns, "d")
    await client.delete(PVS, other)
    await eventually(lambda: _phase(client, PVCS, "d", ns, "Lost"), what="claim Lost")
    lost = await event(client, ns, "d", "ClaimLost")
    assert lost["type"] == "Warning"


async def test_dynamic_provisioning_with_local_path(server: Cluster, client: Client) -> None:
    sc = await eventually(lambda: get_or_none(client, CLASSES, "local-path"), what="default StorageClass")
    assert sc["provisioner"] == LOCAL_PATH_PROVISIONER and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["metadata"]["annotations"][ANN_DEFAULT_CLASS] == "true" and sc["reclaimPolicy"] == "Delete"
    ns = await namespace(client)
    # No class given: the default class is assigned (retroactively, by the controller).
    await claim(client, ns, "cache", "3Gi", cls=None)
    pvc = await eventually(lambda: _with_class(client, ns, "cache"), what="default class assigned")
    assert pvc["spec"]["storageClassName"] == "local-path"
    await event(client, ns, "cache", "WaitForFirstConsumer")
    assert (await client.get(PVCS, "cache", ns))["status"]["phase"] == "Pending"

    await client.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": ns},
                               "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "cache"}}]}})
    pvc = await bound(client, ns, "cache")
    node = pvc["metadata"]["annotations"][ANN_SELECTED_NODE]
    assert pvc["metadata"]["annotations"][ANN_STORAGE_PROVISIONER] == LOCAL_PATH_PROVISIONER
    uid = pvc["metadata"]["uid"]
    assert pvc["spec"]["volumeName"] == f"pvc-{uid}"
    pv = await client.get(PVS, f"pvc-{uid}")
    assert pv["spec"]["hostPath"] == {"path": f"{server.data_dir}/storage/pvc-{uid}_{ns}_cache",
                                      "type": "DirectoryOrCreate"}
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]
    assert pv["spec"]["capacity"] == {"storage": "3Gi"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["metadata"]["annotations"][ANN_DYNAMICALLY_PROVISIONED] == LOCAL_PATH_PROVISIONER
    succeeded = await event(client, ns, "cache", "ProvisioningSucceeded")
    assert succeeded["message"] == f"Successfully provisioned volume pvc-{uid} using {LOCAL_PATH_PROVISIONER}"

    async def scheduled() -> str | None:
        return (await client.get(PODS, "user", ns))["spec"].get("nodeName")
    assert await eventually(scheduled, what="pod scheduled") == node

    assert pv["metadata"]["finalizers"] == [localpath.FINALIZER]

    # Delete reclaim: with the claim gone, the provisioned volume is deleted; its finalizer keeps it until the
    # node has removed the directory (no kubelet runs here: the test does the node's part).
    await client.delete(PODS, "user", ns, grace_period_seconds=0)
    await client.delete(PVCS, "cache", ns)

    async def volume_deleted() -> Obj | None:
        found = await get_or_none(client, PVS, f"pvc-{uid}")
        return found if found and found["metadata"].get("deletionTimestamp") else None
    deleted = await eventually(volume_deleted, what="provisioned volume deleted")
    assert deleted["metadata"]["finalizers"] == [localpath.FINALIZER]
    await client.patch(PVS, f"pvc-{uid}", {"metadata": {"finalizers": None}})

    async def volume_gone() -> bool:
        return await get_or_none(client, PVS, f"pvc-{uid}") is None
    await eventually(volume_gone, what="provisioned volume gone once the node's finalizer is")


async def _with_class(client: Client, ns: str, name: str) -> Obj | None:
    obj = await client.get(PVCS, name, ns)
    return obj if obj["spec"].get("storageClassName") else None


async def test_external_provisioner_is_waited_for(client: Client) -> None:
    await client.create(CLASSES, {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                  "metadata": {"name": "ext"}, "provisioner": "example.com/nfs"})
    ns = await namespace(client)
    await claim(client, ns, "nfs", "1Gi", cls="ext")
    waiting = await event(client, ns, "nfs", "ExternalProvisioning")
    assert "'example.com/nfs'" in waiting["message"]
    pvc = await client.get(PVCS, "nfs", ns)
    assert pvc["metadata"]["annotations"][ANN_STORAGE_PROVISIONER] == "example.com/nfs"
    assert pvc["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-provisioner"] == "example.com/nfs"
    assert pvc["status"]["phase"] == "Pending"


@pytest.mark.parametrize("storage_flag", [False, True], ids=["data-dir", "flag"])
async def test_server_provisions_under_its_data_dir(storage_flag: bool) -> None:
    """`pocketkube server --data-dir D` puts local-path volumes under D/storage (its controller manager is a
    child process of its own), or under --default-local-storage-path; a simulated node takes the pod."""
    cluster = new_cluster()
    elsewhere = cluster.data_dir / "elsewhere" / ".." / "volumes"  # stored normalized
    if storage_flag:
        cluster.extra_args += ["--default-local-storage-path", str(elsewhere)]
    try:
        await asyncio.to_thread(cluster.start)
        nodes_config = SimulationConfig(name_prefix="pv-dd-")
        async with connect(cluster) as client, running(client, nodes=SimulatedNodes(client, 1, nodes_config)):
            await eventually(lambda: get_or_none(client, SERVICEACCOUNTS, "default", "default"),
                             what="default service account")
            await claim(client, "default", "data", "1Gi", cls=None)
            await client.create(PODS, {"apiVersion": "v1", "kind": "Pod",
                                       "metadata": {"name": "user", "namespace": "default"},
                                       "spec": {"containers": [{"name": "c", "image": "nginx"}], "volumes": [
                                           {"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}})
            pvc = await eventually(lambda: _phase(client, PVCS, "data", "default", "Bound"), 60, "claim Bound")
            pv = await client.get(PVS, pvc["spec"]["volumeName"])
        root = cluster.data_dir / "volumes" if storage_flag else cluster.data_dir / "storage"
        assert pv["spec"]["hostPath"]["path"] == f"{root}/{pv['metadata']['name']}_default_data"
    finally:
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
