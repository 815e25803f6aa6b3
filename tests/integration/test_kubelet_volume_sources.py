"""The kubelet's volume manager against a real API server: configMap and secret volumes (layout, modes,
tmpfs, fsGroup, optional and missing sources), a live configMap update through refresh(), projected
volumes (and the service account token they cannot get until the server serves TokenRequest), and
persistentVolumeClaim volumes resolved to their PersistentVolume's path."""

from __future__ import annotations

import base64
import itertools
import os
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cluster import Cluster
from harness import bare_server, connect, create_namespace, resource

from pocketkube.client.rest import Client
from pocketkube.kubelet.volumes import VolumeError, VolumeManager, mounts
from pocketkube.mountpoint import is_mount_point

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
CONFIGMAPS, SECRETS = resource("", "configmaps"), resource("", "secrets")
PVCS, PVS = resource("", "persistentvolumeclaims"), resource("", "persistentvolumes")
SERVICEACCOUNTS = resource("", "serviceaccounts")
_ns = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: Cluster) -> AsyncIterator[Client]:
    async with connect(server) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def manager(client: Client, tmp_path: Path) -> AsyncIterator[VolumeManager]:
    yield VolumeManager(tmp_path / "pods", client, node_name="node-1",
                        node_allocatable={"cpu": "2", "memory": "1Gi", "ephemeral-storage": "10Gi"})
    for point in mounts.mount_points_under(tmp_path):  # whatever a failed test left mounted
        mounts.unmount(point)


async def namespace(client: Client) -> str:
    return await create_namespace(client, f"vol-{next(_ns)}")


def pod(ns: str, volumes: list[Obj], containers: list[Obj] | None = None, **spec: Any) -> Obj:
    return {"metadata": {"name": "app", "namespace": ns, "uid": str(uuid.uuid4()), "labels": {"app": "demo"}},
            "spec": {"volumes": volumes, "containers": containers or [{"name": "main"}], **spec}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def data_dir(volume: Path) -> Path:
    return volume / os.readlink(volume / "..data")


def read(path: str | Path) -> str:
    return Path(path).read_text()


def is_link(path: Path) -> bool:
    return path.is_symlink()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_configmap_volume(client: Client, manager: VolumeManager) -> None:
    ns = await namespace(client)
    await client.create(CONFIGMAPS, {"metadata": {"name": "settings", "namespace": ns},
                                     "data": {"app.conf": "debug=1\n", "name": "demo"},
                                     "binaryData": {"blob": b64("\x00\x01")}})
    spec = pod(ns, [{"name": "all", "configMap": {"name": "settings", "defaultMode": 0o600}},
                    {"name": "some", "configMap": {"name": "settings", "items": [
                        {"key": "app.conf", "path": "conf/app.conf", "mode": 0o640}, {"key": "blob", "path": "b"}]}}])
    ready = await manager.setup(spec)
    every = ready["all"]
    assert every.path == manager.pods_dir / spec["metadata"]["uid"] / "volumes" / "kubernetes.io~configmap" / "all"
    assert every.read_only and not every.tmpfs and not is_mount_point(every.path)
    assert mode(every.path) == 0o777
    assert sorted(p.name for p in every.path.iterdir() if not p.name.startswith("..")) == ["app.conf", "blob", "name"]
    assert (every.path / "app.conf").read_text() == "debug=1\n" and (every.path / "blob").read_bytes() == b"\x00\x01"
    assert {mode(data_dir(every.path) / key) for key in ("app.conf", "blob", "name")} == {0o600}
    some = ready["some"].path
    assert sorted(p.name for p in some.iterdir() if not p.name.startswith("..")) == ["b", "conf"]
    assert mode(data_dir(some) / "conf" / "app.conf") == 0o640 and mode(data_dir(some) / "b") == 0o644
    await manager.teardown(spec["metadata"]["uid"])
    assert not manager.pod_dir(spec["metadata"]["uid"]).exists()


async def test_secret_volume_on_tmpfs_with_fs_group(client: Client, manager: VolumeManager) -> None:
    ns = await namespace(client)
    await client.create(SECRETS, {"metadata": {"name": "creds", "namespace": ns},
                                  "data": {"user": b64("admin")}, "stringData": {"password": "s3cret"}})
    spec = pod(ns, [{"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}}],
               securityContext={"fsGroup": 2000})
    ready = await manager.setup(spec)
    volume = ready["creds"].path
    assert volume.parent.name == "kubernetes.io~secret" and ready["creds"].tmpfs
    assert is_mount_point(volume)
    assert (volume / "user").read_text() == "admin" and (volume / "password").read_text() == "s3cret"
    # fsGroup: the group reads (the volume is read-only: no group write), directories are setgid
    for key in ("user", "password"):
        info = (data_dir(volume) / key).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o440, 2000)
    assert data_dir(volume).stat().st_mode & stat.S_ISGID and data_dir(volume).stat().st_gid == 2000
    await manager.teardown(spec["metadata"]["uid"])
    assert not is_mount_point(volume) and not volume.exists()


async def test_missing_and_optional_sources(client: Client, manager: VolumeManager) -> None:
    ns = await namespace(client)
    missing_cm = pod(ns, [{"name": "cfg", "configMap": {"name": "nope"}}])
    with pytest.raises(VolumeError) as err:
        await manager.setup(missing_cm)
    assert str(err.value) == 'MountVolume.SetUp failed for volume "cfg" : configmap "nope" not found'
    assert (err.value.volume, err.value.reason) == ("cfg", "FailedMount")
    assert not (manager.pod_dir(missing_cm["metadata"]["uid"]) / "volumes" / "kubernetes.io~configmap" / "cfg").exists()
    with pytest.raises(VolumeError, match='^MountVolume.SetUp failed for volume "s" : secret "nope" not found$'):
        await manager.setup(pod(ns, [{"name": "s", "secret": {"secretName": "nope"}}]))

    optional = pod(ns, [{"name": "cfg", "configMap": {"name": "nope", "optional": True}},
                        {"name": "s", "secret": {"secretName": "nope", "optional": True}}])
    ready = await manager.setup(optional)
    for name in ("cfg", "s"):
        assert sorted(p.name for p in ready[name].path.iterdir() if not p.name.startswith("..2")) == ["..data"]

    await client.create(CONFIGMAPS, {"metadata": {"name": "partial", "namespace": ns}, "data": {"a": "1"}})
    items = [{"key": "a", "path": "a"}, {"key": "b", "path": "b"}]
    with pytest.raises(VolumeError, match="configmap references non-existent config key: b$"):
        await manager.setup(pod(ns, [{"name": "cfg", "configMap": {"name": "partial", "items": items}}]))
    ready = await manager.setup(pod(ns, [{"name": "cfg", "configMap": {"name": "partial", "items": items,
                                                                       "optional": True}}]))
    assert sorted(p.name for p in ready["cfg"].path.iterdir() if not p.name.startswith("..")) == ["a"]


async def test_live_configmap_update(client: Client, manager: VolumeManager) -> None:
    ns = await namespace(client)
    await client.create(CONFIGMAPS, {"metadata": {"name": "live", "namespace": ns},
                                     "data": {"color": "blue", "size": "m", "gone": "soon"}})
    container = {"name": "main", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"},
                                                  {"name": "cfg", "mountPath": "/etc/color", "subPath": "color"}]}
    spec = pod(ns, [{"name": "cfg", "configMap": {"name": "live"}}], [container])
    ready = await manager.setup(spec)
    volume = ready["cfg"].path
    whole, single = manager.mounts_for(spec, container, ready)
    assert (whole.source, whole.options) == (str(volume), ["rbind", "ro", "rprivate"])
    first = os.readlink(volume / "..data")
    assert await manager.refresh(spec, ready) is False

    await client.patch(CONFIGMAPS, "live", {"data": {"color": "green", "gone": None}}, ns)
    assert await manager.refresh(spec, ready) is True
    assert os.readlink(volume / "..data") != first and not (volume / first).exists()
    assert (volume / "color").read_text() == "green" and (volume / "size").read_text() == "m"
    assert not is_link(volume / "gone")
    assert read(single.source) == "blue"  # subPath mounts keep their version, as upstream
    assert await manager.refresh(spec, ready) is False

    await client.delete(CONFIGMAPS, "live", ns)
    with pytest.raises(VolumeError, match='configmap "live" not found$'):
        await manager.refresh(spec, ready)
    assert (volume / "color").read_text() == "green"  # the last version stays
    await manager.teardown(spec["metadata"]["uid"])
    assert mounts.mount_points_under(manager.pods_dir) == []


async def test_projected_volume(client: Client, manager: VolumeManager) -> None:
    ns = await namespace(client)
    await client.create(CONFIGMAPS, {"metadata": {"name": "kube-root-ca.crt", "namespace": ns},
                                     "data": {"ca.crt": "---CA---"}})
    await client.create(SECRETS, {"metadata": {"name": "creds", "namespace": ns}, "data": {"token": b64("abc")}})
    sources = [{"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
               {"secret": {"name": "creds", "items": [{"key": "token", "path": "secret/token", "mode": 0o400}]}},
               {"secret": {"name": "absent", "optional": True}},
               {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                             "fieldPath": "metadata.namespace"}}]}}]
    spec = pod(ns, [{"name": "bundle", "projected": {"defaultMode": 0o444, "sources": sources}}])
    ready = await manager.setup(spec)
    volume = ready["bundle"]
    assert volume.path.parent.name == "kubernetes.io~projected" and volume.tmpfs and volume.read_only
    assert (volume.path / "ca.crt").read_text() == "---CA---"
    assert (volume.path / "secret" / "token").read_text() == "abc"
    assert (volume.path / "namespace").read_text() == ns
    assert mode(data_dir(volume.path) / "ca.crt") == 0o444 and mode(data_dir(volume.path) / "secret" / "token") == 0o400

    missing = pod(ns, [{"name": "bundle", "projected": {"sources": [{"secret": {"name": "absent"}},
                                                                    {"configMap": {"name": "absent"}}]}}])
    with pytest.raises(VolumeError) as err:
        await manager.setup(missing)
    assert err.value.cause == '[secret "absent" not found, configmap "absent" not found]'
    await manager.teardown(spec["metadata"]["uid"])


async def test_service_account_token_needs_token_request(client: Client, manager: VolumeManager) -> None:
    """The kube-api-access-* volume the ServiceAccount admission plugin injects: this server does not serve
    TokenRequest yet, so the volume fails with a message saying so."""
    ns = await namespace(client)
    await client.create(SERVICEACCOUNTS, {"metadata": {"name": "default", "namespace": ns}})
    await client.create(CONFIGMAPS, {"metadata": {"name": "kube-root-ca.crt", "namespace": ns},
                                     "data": {"ca.crt": "---CA---"}})
    api_access = {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                      "fieldPath": "metadata.namespace"}}]}}]}}
    spec = pod(ns, [api_access], serviceAccountName="default")
    with pytest.raises(VolumeError) as err:
        await manager.setup(spec)
    assert err.value.volume == "kube-api-access-x7k2p"
    assert err.value.cause.startswith(
        f"failed to fetch token: the API server does not serve the TokenRequest API (POST /api/v1/namespaces/{ns}/"
        "serviceaccounts/default/token answered HTTP ")
    assert not manager.pod_dir(spec["metadata"]["uid"]).exists()


async def _claim(client: Client, ns: str, name: str, pv: Obj | None, *, read_only_uid: str = "") -> Obj:
    """A claim, bound by hand to `pv` (no PersistentVolume controller runs here)."""
    claim = await client.create(PVCS, {"metadata": {"name": name, "namespace": ns}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "manual",
        **({"volumeName": pv["metadata"]["name"]} if pv else {})}})
    if pv is None:
        return claim
    pv["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": ns, "name": name,
                              "uid": read_only_uid or claim["metadata"]["uid"]}
    await client.create(PVS, pv)
    claim["status"] = {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}
    return await client.update(PVCS, claim, "status")


def _volume(name: str, source: Obj, **meta: Any) -> Obj:
    return {"metadata": {"name": name, **meta}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
        "persistentVolumeReclaimPolicy": "Retain", **source}}


async def test_claim_volumes(client: Client, manager: VolumeManager, tmp_path: Path) -> None:
    ns = await namespace(client)
    storage = tmp_path / "storage"
    suffix = uuid.uuid4().hex[:8]
    provisioned = _volume(f"pvc-local-path-{suffix}",
                          {"hostPath": {"path": str(storage / "pvc-data"), "type": "DirectoryOrCreate"}},
                          annotations={"pv.kubernetes.io/provisioned-by": "pocketkube.io/local-path",
                                       "pv.beta.kubernetes.io/gid": "not-a-number"})
    local_dir = tmp_path / "disk"
    local_dir.mkdir()
    local = _volume(f"local-{suffix}", {"local": {"path": str(local_dir)}, "nodeAffinity": {"required": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                                     "values": ["node-1"]}]}]}}},
                    annotations={"pv.beta.kubernetes.io/gid": "1234"})
    await _claim(client, ns, "data", provisioned)
    await _claim(client, ns, "disk", local)
    await _claim(client, ns, "pending", None)
    container = {"name": "main", "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                                  {"name": "disk", "mountPath": "/disk"}]}
    spec = pod(ns, [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "disk", "persistentVolumeClaim": {"claimName": "disk", "readOnly": True}}],
               [container])
    ready = await manager.setup(spec)
    # the local-path provisioner's directory is made on first use, open to any container user
    assert ready["data"].path == storage / "pvc-data"
    assert mode(storage / "pvc-data") == 0o777
    assert ready["disk"].path == local_dir and ready["disk"].read_only
    assert ready.extra_groups() == [1234]  # every container joins the group its volume asks for
    data_mount, disk_mount = manager.mounts_for(spec, container, ready)
    assert (data_mount.source, data_mount.options) == (str(storage / "pvc-data"), ["rbind", "rw", "rprivate"])
    assert (disk_mount.source, disk_mount.options) == (str(local_dir), ["rbind", "ro", "rprivate"])
    (storage / "pvc-data" / "db").write_text("rows")
    await manager.teardown(spec["metadata"]["uid"])
    assert (storage / "pvc-data" / "db").read_text() == "rows"  # claims' data outlives the pod

    with pytest.raises(VolumeError) as err:
        await manager.setup(pod(ns, [{"name": "p", "persistentVolumeClaim": {"claimName": "pending"}}]))
    assert str(err.value) == (
        f"Unable to attach or mount volumes: unmounted volumes=[p], failed to process volumes=[p]: error processing "
        f'PVC {ns}/pending: PVC {ns}/pending has non-bound phase ("Pending") or empty pvc.Spec.VolumeName ("")')
    with pytest.raises(VolumeError, match=f"failed to fetch PVC {ns}/ghost from API server. err="):
        await manager.setup(pod(ns, [{"name": "g", "persistentVolumeClaim": {"claimName": "ghost"}}]))

    stolen = _volume(f"stolen-{suffix}", {"hostPath": {"path": str(tmp_path / "stolen")}})
    await _claim(client, ns, "stolen", stolen, read_only_uid="another-claim")
    with pytest.raises(VolumeError, match=f'found PV object "stolen-{suffix}" but its pv.Spec.ClaimRef.UID '
                                          '\\("another-claim"\\) does not point to claim.UID'):
        await manager.setup(pod(ns, [{"name": "s", "persistentVolumeClaim": {"claimName": "stolen"}}]))

    typed = _volume(f"typed-{suffix}", {"hostPath": {"path": str(tmp_path / "nothing"), "type": "Directory"}})
    await _claim(client, ns, "typed", typed)
    with pytest.raises(VolumeError) as err:
        await manager.setup(pod(ns, [{"name": "t", "persistentVolumeClaim": {"claimName": "typed"}}]))
    # past the claim, upstream names the PersistentVolume in the event
    assert str(err.value) == (f'MountVolume.SetUp failed for volume "typed-{suffix}" : hostPath type check failed: '
                              f"{tmp_path}/nothing is not a directory")
