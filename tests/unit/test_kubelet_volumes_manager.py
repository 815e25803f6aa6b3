"""VolumeManager for the sources that need no API object (emptyDir, hostPath, downwardAPI): upstream's
on-disk layout, tmpfs mounts, container bind mounts with subPath checks, refresh and teardown. Real
mounts (run as root); tests/integration/test_kubelet_volume_sources.py covers the API-backed sources."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from pocketkube.client.rest import Client, ClientConfig
from pocketkube.kubelet.volumes import (
    ContainerMountsError,
    PodVolumes,
    VolumeError,
    VolumeManager,
    mounts,
    subpath,
)
from pocketkube.kubelet.volumes.model import SourceError
from pocketkube.mountpoint import is_mount_point

MiB = 1024 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for point in mounts.mount_points_under(tmp_path):  # whatever a failed test left mounted
        mounts.unmount(point)


@pytest_asyncio.fixture
async def manager(root: Path) -> AsyncIterator[VolumeManager]:
    # nothing here reads the API: the client is never used
    async with Client(ClientConfig(server="https://127.0.0.1:9")) as client:
        yield VolumeManager(root / "pods", client, node_name="node-1",
                            node_allocatable={"cpu": "2", "memory": "1Gi", "ephemeral-storage": "10Gi"})


def _pod(volumes: list[dict], containers: list[dict] | None = None, **spec: object) -> dict:
    return {"metadata": {"name": "web", "namespace": "shop", "uid": str(uuid.uuid4()), "labels": {"app": "web"}},
            "spec": {"volumes": volumes, "containers": containers or [{"name": "app"}], **spec}}


def _mount_options(path: Path) -> list[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if fields[4] == str(path):
            return fields[fields.index("-") + 3].split(",")
    raise AssertionError(f"{path} is not mounted")


def _read(path: str | Path) -> str:
    return Path(path).read_text()


def _mode(path: Path) -> int:
    info = path.stat()
    return stat.S_IMODE(info.st_mode) | (info.st_mode & (stat.S_ISGID | stat.S_ISVTX))


async def test_empty_dir_on_disk(manager: VolumeManager) -> None:
    pod = _pod([{"name": "scratch", "emptyDir": {}}], securityContext={"fsGroup": 2000})
    ready = await manager.setup(pod)
    path = manager.pods_dir / pod["metadata"]["uid"] / "volumes" / "kubernetes.io~empty-dir" / "scratch"
    assert ready["scratch"].path == path and not ready["scratch"].tmpfs and not ready["scratch"].read_only
    assert (_mode(path), path.stat().st_gid) == (0o2777, 2000)
    # a container's changes survive a second setup (a retry, a restarted kubelet)
    path.chmod(0o700)
    await manager.setup(pod)
    assert _mode(path) == 0o700


async def test_empty_dir_in_memory(manager: VolumeManager) -> None:
    pod = _pod([{"name": "sized", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                {"name": "pod-limit", "emptyDir": {"medium": "Memory"}},
                {"name": "node", "emptyDir": {"medium": "Memory"}}],
               containers=[{"name": "app", "resources": {"limits": {"memory": "8Mi"}}}])
    ready = await manager.setup(pod)
    assert all(v.tmpfs for v in ready.volumes.values())
    assert "size=1024k" in _mount_options(ready["sized"].path)
    assert "size=8192k" in _mount_options(ready["pod-limit"].path)
    assert _mode(ready["sized"].path) == 0o1777  # tmpfs's own root mode, as upstream leaves it
    await manager.setup(pod)
    mounted = [p for p in mounts.mount_points_under(manager.pods_dir) if p == ready["sized"].path]
    assert len(mounted) == 1  # mounted once
    unlimited = _pod([{"name": "node", "emptyDir": {"medium": "Memory"}}])
    node_sized = await manager.setup(unlimited)
    assert f"size={1024 * 1024}k" in _mount_options(node_sized["node"].path)  # the node's allocatable
    await manager.teardown(pod["metadata"]["uid"])
    await manager.teardown(unlimited["metadata"]["uid"])


async def test_unsupported_sources(manager: VolumeManager) -> None:
    with pytest.raises(VolumeError) as err:
        await manager.setup(_pod([{"name": "huge", "emptyDir": {"medium": "HugePages"}}]))
    assert str(err.value) == ("MountVolume.SetUp failed for volume \"huge\" : emptyDir medium 'HugePages' is not "
                              "supported on this node (only the default and Memory)")
    with pytest.raises(VolumeError, match='volume "share" : volume type nfs is not supported on this node$'):
        await manager.setup(_pod([{"name": "share", "nfs": {"server": "x", "path": "/"}}]))


async def test_host_path(manager: VolumeManager, root: Path) -> None:
    created = root / "host" / "made"
    ready = await manager.setup(_pod([{"name": "h", "hostPath": {"path": str(created), "type": "DirectoryOrCreate"}}]))
    assert ready["h"].path == created and created.is_dir()
    (root / "host" / "file").write_text("x")
    with pytest.raises(VolumeError) as err:
        await manager.setup(_pod([{"name": "h", "hostPath": {"path": str(root / "host" / "file"),
                                                             "type": "Directory"}}]))
    assert str(err.value) == (f'MountVolume.SetUp failed for volume "h" : hostPath type check failed: '
                              f'{root}/host/file is not a directory')
    assert err.value.cause == f"hostPath type check failed: {root}/host/file is not a directory"
    # an untyped missing path becomes a directory when mounted, as containerd's CRI makes it
    untyped = _pod([{"name": "u", "hostPath": {"path": str(root / "host" / "later")}}],
                   [{"name": "app", "volumeMounts": [{"name": "u", "mountPath": "/u"}]}])
    volumes = await manager.setup(untyped)
    manager.mounts_for(untyped, untyped["spec"]["containers"][0], volumes)
    assert (root / "host" / "later").is_dir()


async def test_downward_api_volume_and_refresh(manager: VolumeManager) -> None:
    pod = _pod([{"name": "info", "downwardAPI": {"defaultMode": 0o440, "items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "meta/name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o400},
        {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}}]}}])
    ready = await manager.setup(pod)
    volume = ready["info"]
    assert volume.path.name == "info" and volume.path.parent.name == "kubernetes.io~downward-api"
    assert volume.read_only and volume.tmpfs and "size=1048576k" in _mount_options(volume.path)
    assert (volume.path / "labels").read_text() == 'app="web"'
    assert (volume.path / "meta" / "name").read_text() == "web"
    assert (volume.path / "cpu").read_text() == "2000"  # no limit: the node's 2 CPUs
    assert os.readlink(volume.path / "meta") == "..data/meta"
    data = volume.path / os.readlink(volume.path / "..data")
    assert stat.S_IMODE((data / "labels").stat().st_mode) == 0o440
    assert stat.S_IMODE((data / "meta" / "name").stat().st_mode) == 0o400
    assert await manager.refresh(pod, ready) is False
    pod["metadata"]["labels"] = {"app": "web", "track": "canary"}
    assert await manager.refresh(pod, ready) is True
    assert (volume.path / "labels").read_text() == 'app="web"\ntrack="canary"'
    assert not data.exists()


async def test_fs_group_bits_survive_refresh(manager: VolumeManager) -> None:
    pod = _pod([{"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}],
               securityContext={"fsGroup": 4000})
    ready = await manager.setup(pod)
    root = ready["info"].path
    assert (_mode(root), root.stat().st_gid) == (0o3777, 4000)  # tmpfs's 1777, plus setgid
    assert await manager.refresh(pod, ready) is False
    await manager.setup(pod)
    assert (_mode(root), root.stat().st_gid) == (0o3777, 4000)
    pod["metadata"]["name"] = "other"
    assert await manager.refresh(pod, ready) is True
    data = root / os.readlink(root / "..data")
    assert ((data / "name").stat().st_gid, _mode(data / "name"), _mode(data)) == (4000, 0o644, 0o2755)
    await manager.teardown(pod["metadata"]["uid"])


async def test_container_mounts(manager: VolumeManager, root: Path) -> None:
    (root / "data").mkdir()
    containers = [{"name": "app", "volumeMounts": [
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "data", "mountPath": "/data", "readOnly": True, "mountPropagation": "HostToContainer"},
        {"name": "data", "mountPath": "/shared", "mountPropagation": "Bidirectional"},
        {"name": "info", "mountPath": "/etc/podinfo", "mountPropagation": "None"}]}]
    pod = _pod([{"name": "scratch", "emptyDir": {}}, {"name": "data", "hostPath": {"path": str(root / "data")}},
                {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}],
               containers)
    ready = await manager.setup(pod)
    result = manager.mounts_for(pod, containers[0], ready)
    assert [(m.destination, m.source, m.type, m.options) for m in result] == [
        ("/scratch", str(ready["scratch"].path), "bind", ["rbind", "rw", "rprivate"]),
        ("/data", str(root / "data"), "bind", ["rbind", "ro", "rslave"]),
        ("/shared", str(root / "data"), "bind", ["rbind", "rw", "rshared"]),
        ("/etc/podinfo", str(ready["info"].path), "bind", ["rbind", "ro", "rprivate"])]  # always read-only
    with pytest.raises(ContainerMountsError, match='^cannot find volume "ghost" to mount into container "x"$'):
        manager.mounts_for(pod, {"name": "x", "volumeMounts": [{"name": "ghost", "mountPath": "/g"}]}, ready)
    with pytest.raises(ContainerMountsError, match='^invalid MountPropagation mode: "Sideways"$'):
        manager.mounts_for(pod, {"name": "x", "volumeMounts": [{"name": "scratch", "mountPath": "/s",
                                                                "mountPropagation": "Sideways"}]}, ready)
    await manager.teardown(pod["metadata"]["uid"])


@pytest.mark.parametrize(("mount", "message"), [
    ({"readOnly": True, "recursiveReadOnly": "IfPossible"}, None),  # plain read-only: runc 1.1 has no rro
    ({"readOnly": True, "recursiveReadOnly": "Disabled"}, None),
    ({"readOnly": True, "recursiveReadOnly": "Enabled"},
     'volume "scratch" requested recursive read-only mode, but it is not supported by the container runtime'),
    ({"recursiveReadOnly": "IfPossible"}, 'volume "scratch" requested recursive read-only mode, but it is not read-only'),
    ({"readOnly": True, "recursiveReadOnly": "IfPossible", "mountPropagation": "HostToContainer"},
     'volume "scratch" requested recursive read-only mode, but it is not compatible with propagation "HostToContainer"'),
])
async def test_recursive_read_only(manager: VolumeManager, mount: dict, message: str | None) -> None:
    container = {"name": "app", "volumeMounts": [{"name": "scratch", "mountPath": "/s", **mount}]}
    pod = _pod([{"name": "scratch", "emptyDir": {}}], [container])
    ready = await manager.setup(pod)
    if message is None:
        (bind,) = manager.mounts_for(pod, container, ready)
        assert bind.options == ["rbind", "ro", "rprivate"]
        return
    with pytest.raises(ContainerMountsError) as err:
        manager.mounts_for(pod, container, ready)
    assert str(err.value) == message


async def test_sub_paths(manager: VolumeManager) -> None:
    container = {"name": "app", "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "volumeMounts": [{"name": "scratch", "mountPath": "/logs", "subPathExpr": "logs/$(POD)"},
                                  {"name": "info", "mountPath": "/etc/name", "subPath": "name"}]}
    pod = _pod([{"name": "scratch", "emptyDir": {}},
                {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}],
               [container], securityContext={"fsGroup": 3000})
    ready = await manager.setup(pod)
    pod_dir = manager.pod_dir(pod["metadata"]["uid"])
    logs_mount, name_mount = manager.mounts_for(pod, container, ready)
    assert logs_mount.source == str(pod_dir / "volume-subpaths" / "scratch" / "app" / "0")
    assert name_mount.source == str(pod_dir / "volume-subpaths" / "info" / "app" / "1")
    assert name_mount.options == ["rbind", "ro", "rprivate"]
    created = ready["scratch"].path / "logs" / "web"
    # made with the volume's permissions; the setgid volume root passes its group down
    assert (_mode(created), created.stat().st_gid) == (0o2777, 3000)
    assert is_mount_point(Path(logs_mount.source))
    (Path(logs_mount.source) / "out.log").write_text("hello")
    assert (created / "out.log").read_text() == "hello"
    assert _read(name_mount.source) == "web"
    # a subPath of an updated volume keeps the file it was mounted with (upstream's behaviour) ...
    pod["metadata"]["name"] = "renamed"
    assert await manager.refresh(pod, ready)
    assert (ready["info"].path / "name").read_text() == "renamed"
    assert _read(name_mount.source) == "web"
    # ... until the container is started again: the stale bind is replaced, the live one kept
    manager.mounts_for(pod, {**container, "env": [{"name": "POD", "value": "web"}]}, ready)
    assert _read(name_mount.source) == "renamed"
    assert len([p for p in mounts.mount_points_under(pod_dir) if p == Path(name_mount.source)]) == 1
    await manager.teardown(pod["metadata"]["uid"])
    assert not pod_dir.exists()


@pytest.mark.parametrize(("mount", "message"), [
    ({"subPath": "/etc"}, "error SubPath `/etc` must not be an absolute path"),
    ({"subPath": "a/../../x"}, "unable to provision SubPath `a/../../x`: must not contain '..'"),
    ({"subPath": "escape"}, 'failed to prepare subPath for volumeMount "scratch" of container "app"'),
    ({"subPath": "escape/deeper"}, 'failed to create subPath directory for volumeMount "scratch" of container "app"'),
    ({"subPathExpr": "$(NOPE)"}, "missing value for NOPE"),
])
async def test_sub_path_refusals(manager: VolumeManager, root: Path, mount: dict, message: str) -> None:
    outside = root / "outside"
    outside.mkdir()
    container = {"name": "app", "volumeMounts": [{"name": "scratch", "mountPath": "/m", **mount}]}
    pod = _pod([{"name": "scratch", "emptyDir": {}}], [container])
    ready = await manager.setup(pod)
    (ready["scratch"].path / "escape").symlink_to(outside)  # what a container could plant
    with pytest.raises(ContainerMountsError) as err:
        manager.mounts_for(pod, container, ready)
    assert str(err.value) == message
    assert list(outside.iterdir()) == []
    assert mounts.mount_points_under(root) == []


async def test_symlinks_inside_the_volume_are_followed(manager: VolumeManager) -> None:
    container = {"name": "app", "volumeMounts": [{"name": "scratch", "mountPath": "/m", "subPath": "alias"}]}
    pod = _pod([{"name": "scratch", "emptyDir": {}}], [container])
    ready = await manager.setup(pod)
    (ready["scratch"].path / "real").mkdir()
    (ready["scratch"].path / "real" / "f").write_text("inside")
    (ready["scratch"].path / "alias").symlink_to("real")
    (bind,) = manager.mounts_for(pod, container, ready)
    assert (Path(bind.source) / "f").read_text() == "inside"
    await manager.teardown(pod["metadata"]["uid"])


def test_safe_open_refuses_a_symlink_component(tmp_path: Path) -> None:
    """Between resolving a subPath and opening it, a component swapped for a symlink is caught."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    with pytest.raises(SourceError, match=f"^unexpected symlink found {tmp_path}/link$"):
        subpath.open_within(str(tmp_path / "link"), str(tmp_path))


async def test_teardown_is_idempotent_and_spares_host_data(manager: VolumeManager, root: Path) -> None:
    host = root / "node-data"
    host.mkdir()
    (host / "keep").mkdir()
    (host / "keep" / "precious").write_text("node's own")
    container = {"name": "app", "volumeMounts": [{"name": "host", "mountPath": "/h", "subPath": "keep"},
                                                 {"name": "mem", "mountPath": "/mem", "subPath": "x"}]}
    pod = _pod([{"name": "host", "hostPath": {"path": str(host)}}, {"name": "mem", "emptyDir": {"medium": "Memory"}},
                {"name": "info", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}}],
               [container])
    uid = pod["metadata"]["uid"]
    ready = await manager.setup(pod)
    manager.mounts_for(pod, container, ready)
    (manager.pod_dir(uid) / "etc-hosts").write_text("kubelet's file")  # not the volume manager's to remove
    assert len(mounts.mount_points_under(manager.pod_dir(uid))) == 4
    # a restarted kubelet knows only what is on disk
    async with Client(ClientConfig(server="https://127.0.0.1:9")) as client:
        restarted = VolumeManager(manager.pods_dir, client, node_name="node-1")
        await restarted.teardown(uid)
        await restarted.teardown(uid)
    assert mounts.mount_points_under(manager.pods_dir) == []
    assert sorted(p.name for p in manager.pod_dir(uid).iterdir()) == ["etc-hosts"]
    assert (host / "keep" / "precious").read_text() == "node's own"
    await manager.teardown(str(uuid.uuid4()))  # a pod never set up


async def test_volumes_lookup(manager: VolumeManager) -> None:
    ready = await manager.setup(_pod([{"name": "a", "emptyDir": {}}]))
    assert isinstance(ready, PodVolumes) and "a" in ready and "b" not in ready
