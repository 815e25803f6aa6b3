"""Snapshotter with real layer tars and real overlay/bind mounts (we run as root)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from pocketkube.engine.snapshots import snapshotter as snapshotter_module
from pocketkube.engine.snapshots.diff import diff_trees, diff_upper
from pocketkube.engine.snapshots.snapshotter import Mount, SnapshotNotFound, Snapshotter, chain_ids
from pocketkube.engine.snapshots.unpack import apply_layer

BIG = 4 << 20


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def _tar(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _diff_id(layer: bytes) -> str:
    return "sha256:" + hashlib.sha256(layer).hexdigest()


# Layer 1 lays down a tree, layer 2 deletes its big file, layer 3 makes etc/conf opaque.
LAYER1 = _tar(
    _entry("bin", tarfile.DIRTYPE),
    _entry("bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o4755, uid=10, gid=20),
    _entry("bin/sh", tarfile.SYMTYPE, linkname="tool"),
    _entry("data", tarfile.DIRTYPE, mode=0o750),
    _entry("data/big", data=bytes(range(256)) * (BIG // 256)),
    _entry("data/linked", data=b"one inode"),
    _entry("data/linked2", tarfile.LNKTYPE, linkname="data/linked"),
    _entry("etc", tarfile.DIRTYPE),
    _entry("etc/keep", data=b"keep me\n"),
    _entry("etc/conf", tarfile.DIRTYPE),
    _entry("etc/conf/a", data=b"a"),
    _entry("etc/conf/b", data=b"b"),
)
LAYER2 = _tar(
    _entry("data", tarfile.DIRTYPE, mode=0o750, mtime=1_600_000_100),
    _entry("data/.wh.big"),
    _entry("data/small", data=b"small"),
)
LAYER3 = _tar(
    _entry("etc", tarfile.DIRTYPE, mtime=1_600_000_200),
    _entry("etc/conf", tarfile.DIRTYPE, mtime=1_600_000_200),
    _entry("etc/conf/.wh..wh..opq"),
    _entry("etc/conf/c", data=b"c"),
)
LAYERS = [LAYER1, LAYER2, LAYER3]


def _openers(layers: list[bytes], calls: list[int] | None = None) -> list[tuple[str, Callable[[], BinaryIO]]]:
    def opener(blob: bytes) -> Callable[[], BinaryIO]:
        def open_blob() -> BinaryIO:
            if calls is not None:
                calls.append(1)
            return io.BytesIO(blob)

        return open_blob

    # the middle layer travels gzip-compressed, as registries serve layers
    blobs = [gzip.compress(layer) if i == 1 else layer for i, layer in enumerate(layers)]
    return [(_diff_id(layer), opener(blob)) for layer, blob in zip(layers, blobs, strict=True)]


def _tree(root: Path) -> dict[str, tuple]:
    """Everything visible below root (not root itself): type, mode, owner, mtime, content, xattrs."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                content = (hashlib.sha256(Path(path).read_bytes()).hexdigest(), st.st_nlink)
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = st.st_rdev
            xattrs = {
                x: os.getxattr(path, x, follow_symlinks=False)
                for x in os.listxattr(path, follow_symlinks=False)
            }
            xattrs = {k: v for k, v in xattrs.items() if not k.startswith("trusted.overlay.")}
            found[os.path.relpath(path, root)] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                content,
                xattrs,
            )
    return found


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Callable[[list[Mount], str], Path]]:
    """Mounts a snapshot's mounts at a fresh target; everything is unmounted at the end."""
    targets: list[Path] = []

    def mount(mounts: list[Mount], name: str) -> Path:
        target = tmp_path / "mnt" / name
        target.mkdir(parents=True)
        targets.append(target)
        for item in mounts:
            item.mount(target)
        return target

    yield mount
    for target in reversed(targets):
        Mount.unmount(target)
        Mount.unmount(target)  # unmounting what is not mounted is fine
        assert not os.path.ismount(target)


@pytest.fixture
def overlay(tmp_path: Path) -> Snapshotter:
    snapshotter = Snapshotter(tmp_path / "overlay-root")
    assert snapshotter.mode == "overlay"  # the probe found overlayfs usable here
    return snapshotter


def test_overlay_rootfs_merges_layers_and_keeps_writes_in_the_upper(overlay: Snapshotter, mounted) -> None:
    chain = overlay.ensure_layers(_openers(LAYERS))
    assert chain == chain_ids([_diff_id(layer) for layer in LAYERS])[-1]
    bottom = chain_ids([_diff_id(LAYER1)])[0]

    mounts = overlay.prepare("c1", chain)
    assert mounts[0].type == "overlay"
    root = mounted(mounts, "c1")

    assert not (root / "data/big").exists()
    assert (root / "data/small").read_bytes() == b"small"
    assert sorted(os.listdir(root / "etc/conf")) == ["c"]
    assert (root / "etc/keep").read_bytes() == b"keep me\n"
    assert stat.S_IMODE((root / "bin/tool").stat().st_mode) == 0o4755
    assert (overlay.layer_dir(bottom) / "data/big").stat().st_size == BIG
    (root / "new.txt").write_text("written by the container")
    (root / "etc/keep").write_text("changed")
    upper = overlay.upper_dir("c1")
    assert (upper / "new.txt").read_text() == "written by the container"
    assert (upper / "etc/keep").read_text() == "changed"
    for layer in overlay.lower_dirs("c1"):
        assert not (layer / "new.txt").exists()
    assert (overlay.layer_dir(bottom) / "etc/keep").read_bytes() == b"keep me\n"

    other = mounted(overlay.prepare("c2", chain), "c2")
    assert not (other / "new.txt").exists()
    assert (other / "etc/keep").read_bytes() == b"keep me\n"
    assert overlay.keys() == ["c1", "c2"]


def test_lower_dirs_are_top_first(overlay: Snapshotter) -> None:
    chains = chain_ids([_diff_id(layer) for layer in LAYERS])
    overlay.ensure_layers(_openers(LAYERS))
    overlay.prepare("c", chains[-1])
    assert overlay.lower_dirs("c") == [overlay.layer_dir(chain) for chain in reversed(chains)]


def test_copy_mode_shows_the_same_tree(tmp_path: Path, overlay: Snapshotter, mounted) -> None:
    copy = Snapshotter(tmp_path / "copy-root", mode="copy")
    assert copy.mode == "copy"
    chain = overlay.ensure_layers(_openers(LAYERS))
    assert copy.ensure_layers(_openers(LAYERS)) == chain

    copy_mounts = copy.prepare("c", chain)
    assert [m.type for m in copy_mounts] == ["bind"]
    via_copy = mounted(copy_mounts, "copy")
    via_overlay = mounted(overlay.prepare("c", chain), "overlay")

    assert _tree(via_copy) == _tree(via_overlay)
    (via_copy / "written").write_text("x")
    assert (copy.upper_dir("c") / "written").exists()
    assert not (copy.lower_dirs("c")[0] / "written").exists()
    # a bottom layer in copy mode still has the file a later layer deleted
    assert (copy.layer_dir(chain_ids([_diff_id(LAYER1)])[0]) / "data/big").stat().st_size == BIG


def test_ensure_layers_unpacks_each_layer_once(overlay: Snapshotter) -> None:
    calls: list[int] = []
    first = overlay.ensure_layers(_openers(LAYERS, calls))
    assert len(calls) == 3
    assert overlay.ensure_layers(_openers(LAYERS, calls)) == first
    assert overlay.ensure_layers(_openers(LAYERS[:2], calls)) in overlay.chain_ids()
    assert len(calls) == 3
    assert len(overlay.chain_ids()) == 3


def test_a_layer_whose_content_does_not_match_is_not_committed(overlay: Snapshotter) -> None:
    wrong = [(_diff_id(LAYER2), lambda: io.BytesIO(LAYER1))]
    with pytest.raises(ValueError, match="does not match its content"):
        overlay.ensure_layers(wrong)
    assert overlay.chain_ids() == []
    assert list((overlay.root / "snapshots").iterdir()) == []
    assert list((overlay.root / "tmp").iterdir()) == []


def _race_worker(root: str, paths: list[str], barrier, counter, results) -> None:
    def opener(path: str) -> Callable[[], BinaryIO]:
        def open_blob() -> BinaryIO:
            with counter.get_lock():
                counter.value += 1
            return open(path, "rb")

        return open_blob

    snapshotter = Snapshotter(Path(root))
    layers = [(_diff_id(Path(path).read_bytes()), opener(path)) for path in paths]
    barrier.wait()
    results.put(snapshotter.ensure_layers(layers))


def test_processes_racing_on_the_same_layers_unpack_them_once(tmp_path: Path, overlay: Snapshotter) -> None:
    paths = []
    for i, layer in enumerate(LAYERS):
        paths.append(str(tmp_path / f"layer{i}.tar"))
        Path(paths[-1]).write_bytes(layer)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    counter = context.Value("i", 0)
    queue = context.SimpleQueue()
    workers = [
        context.Process(target=_race_worker, args=(str(overlay.root), paths, barrier, counter, queue))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(timeout=60)
            assert worker.exitcode == 0
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()

    results = [queue.get(), queue.get()]
    assert results[0] == results[1] == chain_ids([_diff_id(layer) for layer in LAYERS])[-1]
    assert counter.value == 3
    assert len(overlay.chain_ids()) == 3
    assert sorted(p.name for p in (overlay.root / "snapshots").iterdir()) == ["1", "2", "3"]
    assert list((overlay.root / "tmp").iterdir()) == []
    bottom = overlay.layer_dir(chain_ids([_diff_id(LAYER1)])[0])
    assert (bottom / "data/big").stat().st_size == BIG


def test_threads_racing_on_the_same_layers_unpack_them_once(overlay: Snapshotter) -> None:
    calls: list[int] = []
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(overlay.ensure_layers(_openers(LAYERS, calls))))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 3
    assert len(calls) == 3


def _change_rootfs(root: Path) -> None:
    (root / "added").mkdir()
    (root / "added/file").write_text("new")
    os.link(root / "added/file", root / "added/hardlink")
    (root / "etc/keep").write_text("modified")
    os.chmod(root / "bin/tool", 0o700)
    os.unlink(root / "bin/sh")
    os.unlink(root / "data/small")
    shutil.rmtree(root / "etc/conf")
    (root / "etc/conf").mkdir()  # recreated: overlayfs makes it opaque
    (root / "etc/conf/d").write_text("d")
    os.mkfifo(root / "added/pipe")


def test_diff_upper_reapplied_on_the_lower_gives_the_overlay_tree(
    tmp_path: Path, overlay: Snapshotter, mounted
):
    diff_ids = [_diff_id(layer) for layer in LAYERS]
    chain = overlay.ensure_layers(_openers(LAYERS))
    root = mounted(overlay.prepare("c", chain), "c")
    _change_rootfs(root)
    expected = _tree(root)
    assert "etc/conf/c" not in expected and "data/small" not in expected
    Mount.unmount(root)

    layer = io.BytesIO()
    stats = diff_upper(overlay.upper_dir("c"), layer, lower=overlay.lower_dirs("c"))
    assert stats.diff_id == _diff_id(layer.getvalue()) and stats.size == len(layer.getvalue())
    again = io.BytesIO()
    assert diff_upper(overlay.upper_dir("c"), again, lower=overlay.lower_dirs("c")) == stats  # deterministic
    with tarfile.open(fileobj=io.BytesIO(layer.getvalue())) as tar:
        names = tar.getnames()
    assert "etc/conf/.wh..wh..opq" in names and "data/.wh.small" in names and "bin/.wh.sh" in names
    assert "added/.wh..wh..opq" not in names  # a new directory hides nothing below it

    # as a fourth overlay layer
    top = overlay.ensure_layers([*_openers(LAYERS), (stats.diff_id, lambda: io.BytesIO(layer.getvalue()))])
    assert _tree(mounted(overlay.prepare("view", top, readonly=True), "view")) == expected

    # applied onto a merged copy of the lower layers
    copy = Snapshotter(tmp_path / "copy-root", mode="copy")
    copy.ensure_layers(_openers(LAYERS))
    merged = tmp_path / "merged"
    subprocess.run(["cp", "-a", str(copy.layer_dir(chain_ids(diff_ids)[-1])), str(merged)], check=True)
    apply_layer(io.BytesIO(layer.getvalue()), merged, overlay=False)
    assert _tree(merged) == expected


@pytest.mark.parametrize("mode", ["overlay", "copy"])
def test_commit_publishes_a_snapshot_as_its_layer(tmp_path: Path, mounted, mode: str) -> None:
    """A committed snapshot shows as the layer its diff describes (what unpacking that diff would give),
    without an unpack; an already unpacked chain just drops the snapshot."""
    snapshots = Snapshotter(tmp_path / "root", mode=mode)
    chain = snapshots.ensure_layers(_openers(LAYERS))
    root = mounted(snapshots.prepare("c", chain), "c")
    _change_rootfs(root)
    expected = _tree(root)
    Mount.unmount(root)
    layer = io.BytesIO()
    stats = (diff_upper(snapshots.upper_dir("c"), layer, lower=snapshots.lower_dirs("c")) if mode == "overlay"
             else diff_trees(snapshots.layer_dir(chain), snapshots.upper_dir("c"), layer))
    assert stats.left_out == 0
    top = snapshots.commit("c", stats.diff_id)
    assert top == chain_ids([*(_diff_id(lay) for lay in LAYERS), stats.diff_id])[-1]
    assert "c" not in snapshots.keys() and snapshots.has_layer(top)
    assert not (snapshots.layer_dir(top).parent / "work").exists()
    unpacks: list[int] = []
    assert snapshots.ensure_layers([*_openers(LAYERS), (stats.diff_id, lambda: unpacks.append(1))]) == top
    assert not unpacks
    assert _tree(mounted(snapshots.prepare("view", top, readonly=True, durable=False), "view")) == expected
    snapshots.prepare("again", chain)
    assert snapshots.commit("again", stats.diff_id) == top and "again" not in snapshots.keys()
    with pytest.raises(ValueError, match="read-only"):
        snapshots.commit("view", stats.diff_id)


def test_a_committed_layer_counts_after_a_crash_only_once_synced(tmp_path: Path, monkeypatch) -> None:
    """commit skips the syncfs: the layer serves this boot at once; the first durable snapshot on it syncs
    it; one that no durable snapshot synced is gone after a reboot (with what stands on it)."""
    snapshots = Snapshotter(tmp_path / "root", mode="overlay")
    chain = snapshots.ensure_layers(_openers(LAYERS[:1]))

    def committed(key: str, content: bytes) -> str:
        snapshots.prepare(key, chain, durable=False)
        (snapshots.upper_dir(key) / "file").write_bytes(content)
        return snapshots.commit(key, _diff_id(content))  # any digest will do for the index

    synced, unsynced = committed("a", b"synced"), committed("b", b"unsynced")
    snapshots.prepare("scratch", unsynced, durable=False)
    snapshots.prepare("container", synced)  # durable: syncs the layer it stands on
    metadata = json.loads((tmp_path / "root" / "metadata.json").read_text())
    assert "unsynced_boot" not in metadata["layers"][synced] and "unsynced_boot" in metadata["layers"][unsynced]
    monkeypatch.setattr(snapshotter_module, "_boot_id", lambda: "another-boot")
    assert snapshots.has_layer(synced) and not snapshots.has_layer(unsynced)
    assert set(snapshots.keys()) == {"container"}


def test_a_socket_is_left_out_of_the_tar_and_counted(overlay: Snapshotter, mounted) -> None:
    """What a tar cannot hold is counted, so that a caller does not publish a snapshot that differs from
    its layer tar (the build then unpacks the tar instead of committing)."""
    root = mounted(overlay.prepare("s", overlay.ensure_layers(_openers(LAYERS))), "s")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(root / "sock"))
    Mount.unmount(root)
    layer = io.BytesIO()
    stats = diff_upper(overlay.upper_dir("s"), layer, lower=overlay.lower_dirs("s"))
    assert stats.left_out == 1 and "sock" not in tarfile.open(fileobj=io.BytesIO(layer.getvalue())).getnames()


def test_diff_trees_reapplied_on_the_lower_gives_the_copy(tmp_path: Path) -> None:
    copy = Snapshotter(tmp_path / "copy-root", mode="copy")
    chain = copy.ensure_layers(_openers(LAYERS))
    copy.prepare("c", chain)
    upper = copy.upper_dir("c")
    _change_rootfs(upper)
    shutil.rmtree(upper / "data")
    (upper / "data").symlink_to("etc")  # a directory became a symlink
    os.unlink(upper / "etc/keep")
    (upper / "etc/keep").mkdir()  # a file became a directory
    os.setxattr(upper / "bin/tool", "user.note", b"xattr only change")
    expected = _tree(upper)

    layer = io.BytesIO()
    stats = diff_trees(copy.lower_dirs("c")[0], upper, layer)
    assert stats.diff_id == _diff_id(layer.getvalue())
    with tarfile.open(fileobj=io.BytesIO(layer.getvalue())) as tar:
        names = tar.getnames()
    assert {"bin/.wh.sh", "etc/conf/.wh.c", "bin", "bin/tool", "etc/conf/d", "data", "etc/keep"} <= set(names)
    assert "data/linked" not in names and "data/.wh.linked" not in names  # under a replaced dir: no need
    assert "etc/conf" in names and "etc" in names and "bin/tool" in names

    merged = tmp_path / "merged"
    subprocess.run(["cp", "-a", str(copy.lower_dirs("c")[0]), str(merged)], check=True)
    apply_layer(io.BytesIO(layer.getvalue()), merged, overlay=False)
    assert _tree(merged) == expected


def test_remove_keeps_layers_and_layers_in_use_are_refused(overlay: Snapshotter) -> None:
    chains = chain_ids([_diff_id(layer) for layer in LAYERS])
    overlay.ensure_layers(_openers(LAYERS))
    overlay.prepare("c", chains[-1])
    upper = overlay.upper_dir("c")

    with pytest.raises(ValueError, match="already exists"):
        overlay.prepare("c", chains[-1])
    with pytest.raises(ValueError, match="in use by snapshot 'c'"):
        overlay.remove_layer(chains[-1])
    with pytest.raises(ValueError, match=f"in use by layer {chains[1]}"):
        overlay.remove_layer(chains[0])

    overlay.remove("c")
    assert not upper.exists() and overlay.keys() == []
    assert overlay.chain_ids() == sorted(chains)
    with pytest.raises(SnapshotNotFound):
        overlay.remove("c")
    overlay.remove_layer(chains[-1])
    assert not overlay.has_layer(chains[-1]) and overlay.has_layer(chains[1])
    with pytest.raises(SnapshotNotFound):
        overlay.layer_dir(chains[-1])


def test_gc_keeps_what_images_and_snapshots_stand_on(overlay: Snapshotter) -> None:
    chains = chain_ids([_diff_id(layer) for layer in LAYERS])
    other = _tar(_entry("other", data=b"other image"))
    other_chain = overlay.ensure_layers(_openers([other]))
    overlay.ensure_layers(_openers(LAYERS))
    overlay.prepare("uses-layer-2", chains[1])
    stale = overlay.root / "tmp" / "999999999-dead"  # left by a process that died mid-unpack
    stale.mkdir()

    assert overlay.gc({other_chain}) == [chains[2]]
    assert set(overlay.chain_ids()) == {other_chain, chains[0], chains[1]}
    assert not stale.exists()

    overlay.remove("uses-layer-2")
    assert overlay.gc(set()) == sorted([other_chain, chains[0], chains[1]])
    assert list((overlay.root / "snapshots").iterdir()) == []
    assert list((overlay.root / "locks").iterdir()) == []


def test_usage_counts_hard_links_once(overlay: Snapshotter) -> None:
    blob = os.urandom(1 << 20)
    layer = _tar(_entry("one", data=blob), _entry("two", tarfile.LNKTYPE, linkname="one"))
    chain = overlay.ensure_layers(_openers([layer]))
    assert (1 << 20) <= overlay.usage(chain) < (2 << 20)
    overlay.prepare("c", chain)
    before = overlay.usage("c")
    (overlay.upper_dir("c") / "grown").write_bytes(blob)
    assert overlay.usage("c") >= before + (1 << 20)
    with pytest.raises(SnapshotNotFound):
        overlay.usage("nothing")


def test_readonly_and_scratch_snapshots(overlay: Snapshotter, mounted) -> None:
    chains = chain_ids([_diff_id(layer) for layer in LAYERS])
    overlay.ensure_layers(_openers(LAYERS))

    readonly = mounted(overlay.prepare("ro", chains[-1], readonly=True), "ro")
    assert sorted(os.listdir(readonly / "etc/conf")) == ["c"]
    with pytest.raises(OSError) as refused:
        (readonly / "x").write_text("x")
    assert refused.value.errno == errno.EROFS

    single = overlay.prepare("ro-single", chains[0], readonly=True)
    assert [m.type for m in single] == ["bind"]  # overlay needs two lower dirs without an upper
    single_root = mounted(single, "ro-single")
    assert (single_root / "data/big").exists()
    with pytest.raises(OSError) as refused:
        (single_root / "x").write_text("x")
    assert refused.value.errno == errno.EROFS

    scratch = mounted(overlay.prepare("scratch", None), "scratch")
    assert os.listdir(scratch) == []
    (scratch / "file").write_text("x")
    assert (overlay.upper_dir("scratch") / "file").exists()
    assert overlay.lower_dirs("scratch") == []


def test_many_layers_mount_with_relative_lowerdirs(tmp_path: Path, mounted) -> None:
    snapshotter = Snapshotter(tmp_path / ("long-" + "x" * 180))
    layers = [_tar(_entry(f"file{i:02}", data=str(i).encode())) for i in range(24)]
    chain = snapshotter.ensure_layers(_openers(layers))
    mounts = snapshotter.prepare("c", chain)
    assert len(",".join(mounts[0].options)) > os.sysconf("SC_PAGE_SIZE")
    root = mounted(mounts, "c")
    assert sorted(os.listdir(root)) == [f"file{i:02}" for i in range(24)]
    (root / "written").write_text("x")
    assert (snapshotter.upper_dir("c") / "written").exists()


def test_the_mode_of_a_root_cannot_change_under_its_snapshots(tmp_path: Path, overlay: Snapshotter) -> None:
    overlay.ensure_layers(_openers([LAYER1]))
    with pytest.raises(ValueError, match="holds overlay snapshots"):
        Snapshotter(overlay.root, mode="copy")
    assert Snapshotter(overlay.root).mode == "overlay"
    with pytest.raises(ValueError, match="mode must be"):
        Snapshotter(tmp_path / "other", mode="fast")
