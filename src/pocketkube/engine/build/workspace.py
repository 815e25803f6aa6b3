"""A build's scratch space: snapshots over layer chains (writable for a step, read-only for sources),
where they are mounted, and the sweep that removes what a killed build left behind.

Everything a build creates is named after its process and a token (work dir `ROOT/build/work/<pid>-<hex>`,
snapshot keys `build-<pid>-<hex>-<n>`), so a later build can tell leftovers of dead processes from work in
progress."""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.snapshots.diff import diff_trees, diff_upper
from pocketkube.engine.snapshots.snapshotter import Mount, SnapshotNotFound, Snapshotter, chain_ids
from pocketkube.engine.snapshots.unpack import OVERLAY_OPAQUE_XATTR, LayerStats, is_overlay_whiteout

OWNER = re.compile(r"(\d+)-[0-9a-f]+")  # a work dir's name: the building process and a token


class Sandbox:
    """A writable snapshot for one step, mounted at ``rootfs``."""

    def __init__(self, snapshots: Snapshotter, key: str, directory: Path) -> None:
        self.snapshots = snapshots
        self.key = key
        self.directory = directory
        self.rootfs = directory / "rootfs"
        self.committed = False

    def mount(self, mounts: list[Mount]) -> None:
        """Mount the snapshot's ``mounts`` (what Snapshotter.prepare returned) at ``rootfs``."""
        self.rootfs.mkdir(parents=True, exist_ok=True)
        for mount in mounts:
            if mount.type == "overlay":
                _mount_volatile(mount, self.rootfs)
            else:
                mount.mount(self.rootfs)

    def commit(self, diff_id: str) -> None:
        """Make the (unmounted) snapshot the layer ``diff_id`` of the snapshotter, in place."""
        self.snapshots.commit(self.key, diff_id)
        self.committed = True

    def unmount(self) -> None:
        # not os.path.ismount: it cannot see a bind mount of a directory of the same filesystem
        Mount.unmount(self.rootfs)

    # looked up once: each lookup reads the snapshotter's index, and a snapshot's dirs never change
    @functools.cached_property
    def upper(self) -> Path:
        return self.snapshots.upper_dir(self.key)

    @functools.cached_property
    def lowers(self) -> list[Path]:
        return self.snapshots.lower_dirs(self.key)

    def drop_unchanged(self, directories: list[str]) -> None:
        """Take directories (relative to the root) back out of the upper dir when the step changed nothing
        in them: the runtime copied them up only to create mount points, since removed (overlay only)."""
        if self.snapshots.mode != "overlay":
            return
        upper, lowers = self.upper, self.lowers
        for relative in directories:
            while relative not in ("", "."):
                path = upper / relative
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    relative = os.path.dirname(relative)
                    continue
                lower = _lower_stat(lowers, relative)
                if (not stat.S_ISDIR(st.st_mode) or os.listdir(path) or _opaque(path) or lower is None
                        or _identity(lower) != _identity(st)):
                    break
                os.rmdir(path)
                relative = os.path.dirname(relative)

    def diff(self, dest: BinaryIO, empty_dir: Path) -> LayerStats:
        """The step's changes as a layer tar (unmount first)."""
        if self.snapshots.mode == "overlay":
            return diff_upper(self.upper, dest, lower=self.lowers)
        lowers = self.lowers
        return diff_trees(lowers[0] if lowers else empty_dir, self.upper, dest)

    def close(self) -> None:
        self.unmount()
        if not self.committed:  # a committed snapshot is a layer now: nothing left to remove
            with contextlib.suppress(SnapshotNotFound):
                self.snapshots.remove(self.key)
        shutil.rmtree(self.directory, ignore_errors=True)


class Workspace:
    def __init__(self, root: Path, snapshots: Snapshotter, content: ContentStore) -> None:
        self.snapshots = snapshots
        self.content = content
        self.token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.work_root = root / "work"
        self.directory = self.work_root / self.token
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.empty_dir = self.directory / "empty"
        self.empty_dir.mkdir(exist_ok=True)
        self.local_tars: dict[str, Path] = {}  # diff_id -> plain tar of a layer this build made
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def new_name(self) -> str:
        with self._lock:
            return f"{self.token}-{next(self._counter)}"

    def new_dir(self, name: str | None = None) -> Path:
        path = self.directory / (name or self.new_name())
        path.mkdir(mode=0o700)
        return path

    # --- layer chains ----------------------------------------------------------------------------

    def ensure_chain(self, layers: list[tuple[str, str | None]]) -> str | None:
        """Unpack the layers — (diff_id, blob digest) pairs, bottom first — not unpacked yet; returns the
        top chain ID (None: no layers). Layers this build made are unpacked from their plain tars (a layer
        still being compressed has no blob yet)."""
        if not layers:
            return None
        top = chain_ids([diff_id for diff_id, _ in layers])[-1]
        if self.snapshots.has_layer(top):  # one index read instead of one per layer: the usual case
            return top

        def opener(diff_id: str, digest: str | None) -> Callable[[], BinaryIO]:
            path = self.local_tars.get(diff_id)
            if path is not None:
                return lambda: open(path, "rb")
            if digest is None:
                raise ValueError(f"layer {diff_id} has neither a blob nor a local tar")
            return lambda: self.content.open(digest)

        return self.snapshots.ensure_layers([(diff_id, opener(diff_id, digest)) for diff_id, digest in layers])

    def sandbox(self, chain: str | None) -> Sandbox:
        """A writable snapshot over ``chain``, mounted."""
        name = self.new_name()
        sandbox = Sandbox(self.snapshots, f"build-{name}", self.new_dir(name))
        try:
            sandbox.mount(self.snapshots.prepare(sandbox.key, chain, durable=False))
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    @contextlib.contextmanager
    def readonly(self, chain: str | None) -> Iterator[Path]:
        """The filesystem of ``chain``, read-only, for as long as the block runs."""
        if chain is None:
            yield self.empty_dir
            return
        if self.snapshots.mode == "copy":  # there every layer dir holds its whole chain already
            yield self.snapshots.layer_dir(chain)
            return
        name = self.new_name()
        directory = self.new_dir(name)
        key = f"build-{name}"
        try:
            self.snapshots.prepare(key, chain, readonly=True, durable=False)
            mountpoint = directory / "rootfs"
            mountpoint.mkdir()
            for mount in self.snapshots.mounts(key):
                mount.mount(mountpoint)
            try:
                yield mountpoint
            finally:
                Mount.unmount(mountpoint)
        finally:
            with contextlib.suppress(SnapshotNotFound):
                self.snapshots.remove(key)
            shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> None:
        unmount_below(self.directory)  # never let rmtree walk into something still mounted
        shutil.rmtree(self.directory, ignore_errors=True)


def _mount_volatile(mount: Mount, target: Path) -> None:
    """A sandbox's overlay with `volatile` where the kernel has it (5.10+): overlay then skips the sync of
    the whole upper filesystem on unmount, a wait for every other writer's dirty data. A sandbox needs no
    durability of its own: its layer is written out as a tar, and what it commits is synced once a container
    stands on it (Snapshotter.prepare)."""
    try:
        Mount(mount.type, mount.source, [*mount.options, "volatile"]).mount(target)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        mount.mount(target)


def _lower_stat(lowers: list[Path], relative: str) -> os.stat_result | None:
    for lower in lowers:
        try:
            st = os.lstat(lower / relative)
        except (FileNotFoundError, NotADirectoryError):
            continue
        return None if is_overlay_whiteout(st) else st
    return None


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def unmount_below(directory: Path) -> None:
    """Unmount everything mounted under ``directory``, deepest first."""
    prefix = str(directory) + "/"
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        Mount.unmount(Path(point))
