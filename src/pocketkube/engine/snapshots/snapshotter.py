"""Image layers unpacked once, and a root filesystem per container on top of them.

Same model as containerd's overlayfs snapshotter. Each layer is unpacked into its own directory, keyed by
its OCI chain ID; a container's snapshot is an empty upper dir (plus overlay's work dir) and its rootfs is
an overlay mount of the layer dirs below that upper dir. Where overlayfs cannot be used (or ``mode="copy"``
is asked for) each layer dir instead holds the full merged tree of its chain and a snapshot is a copy of
it, bind-mounted.

On disk, under ``root``::

    metadata.json      index: mode, chain ID -> layer, snapshot key -> parent chain (+ its numeric id)
    metadata.lock      flock guarding metadata.json across threads and processes
    snapshots/<n>/fs   a layer's files, or a container's upper dir (copy mode: its whole rootfs)
    snapshots/<n>/work overlay work dir of a container snapshot
    locks/<hex>.lock   one flock per chain ID, held while that layer is unpacked
    tmp/<pid>-<rand>/  unpacks and copies in progress; renamed into snapshots/ when complete

Numeric directory names keep overlay's lowerdir option short (it must fit in one page).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pocketkube.engine.snapshots.unpack import apply_layer
from pocketkube.fsutil import dump_json, spread_subdirectories, syncfs, write_atomic
from pocketkube.mountpoint import is_mount_point

_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_REMOUNT = 0x20
_MS_NOATIME = 0x400
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_RELATIME = 0x200000
_MNT_DETACH = 0x2
_MOUNT_FLAGS = {
    "ro": _MS_RDONLY,
    "rw": 0,
    "nosuid": _MS_NOSUID,
    "nodev": _MS_NODEV,
    "noexec": _MS_NOEXEC,
    "noatime": _MS_NOATIME,
    "relatime": _MS_RELATIME,
    "bind": _MS_BIND,
    "rbind": _MS_BIND | _MS_REC,
}
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Pinned, not left to the overlay module's defaults: redirect_dir and metacopy would keep a container's
# changes outside its upper dir (which diff_upper reads), and index would tie an upper dir to its lowers.
_OVERLAY_DEFAULTS = ["index=off", "redirect_dir=off", "metacopy=off"]
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_UNSYNCED = "unsynced_boot"  # a layer entry's key: the boot it was committed in without a sync

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

# Mounts an overlay from a child whose cwd holds the layer dirs, so lowerdir can use short relative paths
# (a chdir in this process would move every thread).
_MOUNT_IN_CWD = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
source, target, fstype, flags, data = (os.fsencode(arg) for arg in sys.argv[1:])
if libc.mount(source, target, fstype, int(flags), data) != 0:
    code = ctypes.get_errno()
    sys.stderr.write(os.strerror(code))
    sys.exit(code)
"""


class SnapshotNotFound(LookupError):
    """No snapshot with that key, or no unpacked layer with that chain ID."""


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain ID of each layer, bottom first: diff_id0, then sha256("<chain below> <diff_id>")."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(next_chain_id(chains[-1] if chains else None, diff_id))
    return chains


def next_chain_id(parent: str | None, diff_id: str) -> str:
    """The chain ID of layer ``diff_id`` on top of the chain ``parent`` (None: the bottom layer)."""
    if not _DIGEST.fullmatch(diff_id):
        raise ValueError(f"layer diff_id {diff_id!r} is not a sha256 digest")
    return diff_id if parent is None else "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


@dataclass
class Mount:
    """What to mount at a container's rootfs."""

    type: str  # "overlay" or "bind"
    source: str
    options: list[str] = field(default_factory=list)

    def mount(self, target: Path) -> None:
        flags = 0
        data = []
        for option in self.options:
            if option in _MOUNT_FLAGS:
                flags |= _MOUNT_FLAGS[option]
            else:
                data.append(option)
        if self.type == "bind":
            _mount(self.source, target, None, _MS_BIND | (flags & _MS_REC), None)
            # mount(2) ignores ro/nosuid/... on the bind itself: they need a remount of the new mount
            extra = flags & ~(_MS_BIND | _MS_REC)
            if extra:
                try:
                    _mount(None, target, None, _MS_REMOUNT | _MS_BIND | extra, None)
                except OSError:
                    Mount.unmount(target)
                    raise
            return
        text = ",".join(data)
        if self.type == "overlay" and len(os.fsencode(text)) >= _PAGE_SIZE:
            self._mount_overlay_relative(target, flags, data)
        else:
            _mount(self.source, target, self.type, flags, text)

    @staticmethod
    def is_mounted(target: Path) -> bool:
        """Whether something is mounted at `target` (os.path.ismount misses a bind mount of a directory
        on the same filesystem, which is what copy mode mounts)."""
        return is_mount_point(target)

    @staticmethod
    def unmount(target: Path) -> None:
        if _libc.umount2(os.fsencode(str(target)), _MNT_DETACH) != 0:
            code = ctypes.get_errno()
            if code not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
                raise OSError(code, f"cannot unmount {target}: {os.strerror(code)}")

    def _mount_overlay_relative(self, target: Path, flags: int, data: list[str]) -> None:
        """Mount with the directory options relative to their common parent, from a child there."""
        dirs: dict[str, list[str]] = {}
        others = []
        for option in data:
            key, _, value = option.partition("=")
            if key in ("lowerdir", "upperdir", "workdir"):
                dirs[key] = value.split(":") if key == "lowerdir" else [value]
            else:
                others.append(option)
        base = os.path.commonpath([path for paths in dirs.values() for path in paths])
        relative = [
            f"{key}={':'.join(os.path.relpath(p, base) for p in paths)}" for key, paths in dirs.items()
        ]
        text = ",".join(others + relative)
        if len(os.fsencode(text)) >= _PAGE_SIZE:
            raise ValueError(f"overlay options for {target} exceed one page even with relative paths")
        command = [sys.executable, "-c", _MOUNT_IN_CWD, self.source, str(Path(target).absolute())]
        done = subprocess.run(
            [*command, self.type, str(flags), text],
            cwd=base,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise OSError(done.returncode, f"cannot mount overlay on {target}: {done.stderr.strip()}")


def _mount(source: str | None, target: Path, fstype: str | None, flags: int, data: str | None) -> None:
    encoded = [os.fsencode(value) if value is not None else None for value in (source, fstype, data)]
    if _libc.mount(encoded[0], os.fsencode(str(target)), encoded[1], flags, encoded[2]) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cannot mount {fstype or 'bind'} {source} on {target}: {os.strerror(code)}")


@dataclass
class _Index:
    """metadata.json: what is unpacked and which snapshots exist."""

    mode: str | None = None
    next_id: int = 1
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # chain ID -> {id, parent, diff_id}
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {id, parent, readonly}

    def chain(self, top: str | None) -> list[str]:
        """Chain IDs from ``top`` down to the bottom layer."""
        chain = []
        while top is not None:
            chain.append(top)
            top = self.layers[top]["parent"]
        return chain

    def drop_unsynced(self, boot: str) -> None:
        """Layers committed without a sync (Snapshotter.commit) in an earlier boot may have lost data in the
        crash that ended it: they count as absent, with what stands on them; their dirs are gc's leftovers."""
        stale = {chain for chain, layer in self.layers.items() if layer.get(_UNSYNCED) not in (None, boot)}
        while True:
            children = {chain for chain, layer in self.layers.items() if layer["parent"] in stale} - stale
            if not children:
                break
            stale |= children
        for chain in stale:
            del self.layers[chain]
        for key in [key for key, snapshot in self.snapshots.items() if snapshot["parent"] in stale]:
            del self.snapshots[key]

    def in_use(self) -> set[str]:
        """Chains that snapshots stand on, with every layer below them."""
        used: set[str] = set()
        for snapshot in self.snapshots.values():
            used.update(self.chain(snapshot["parent"]))
        return used


class Snapshotter:
    """Unpacked layers and container snapshots under one root, shared safely by threads and processes.

    ``mode``: "overlay", "copy", or "auto" (overlay if a probe mount works here, else copy). A root keeps
    the mode it was first used with while it holds layers or snapshots.
    """

    def __init__(self, root: Path, *, mode: str = "auto") -> None:
        if mode not in ("auto", "overlay", "copy"):
            raise ValueError(f"snapshotter mode must be 'auto', 'overlay' or 'copy', not {mode!r}")
        self.root = Path(root)
        self._last_read: tuple[bytes, str, _Index] | None = None  # metadata.json's bytes, boot, their parse
        for directory in (self.root, self._snapshots_dir, self._locks_dir, self._tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        spread_subdirectories(self._tmp_dir)  # where every snapshot and layer directory is made
        # unpacked layers hold setuid binaries: keep unprivileged users out of them
        os.chmod(self.root, 0o700)
        with self._index() as index:
            settled = index.mode is not None and (index.layers or index.snapshots or mode in ("auto", index.mode))
            self.mode: str = index.mode if settled else ""
        if not settled:  # the first use, or a mode change while empty: worth a write (and the overlay probe)
            with self._index(write=True) as index:
                if index.mode is None or not (index.layers or index.snapshots):
                    index.mode = mode if mode != "auto" else ("overlay" if self._overlay_works() else "copy")
                self.mode = index.mode
        if mode not in ("auto", self.mode):
            raise ValueError(f"{self.root} holds {self.mode} snapshots; it cannot be used in {mode} mode")

    # --- layers ----------------------------------------------------------------------------------

    def ensure_layers(self, layers: list[tuple[str, Callable[[], BinaryIO]]]) -> str:
        """Unpack the layers (bottom first) that are not unpacked yet; returns the top chain ID."""
        if not layers:
            raise ValueError("an image needs at least one layer")
        chains = chain_ids([diff_id for diff_id, _ in layers])
        parent: str | None = None
        for chain, (diff_id, opener) in zip(chains, layers, strict=True):
            if not self.has_layer(chain):
                with self._chain_lock(chain):
                    if not self.has_layer(chain):  # another thread or process may have finished it
                        self._unpack(chain, parent, diff_id, opener)
            parent = chain
        return chains[-1]

    def layer_dir(self, chain_id: str) -> Path:
        with self._index() as index:
            return self._fs_dir(self._layer(index, chain_id)["id"])

    def has_layer(self, chain_id: str) -> bool:
        with self._index() as index:
            return chain_id in index.layers

    def remove_layer(self, chain_id: str) -> None:
        """Remove an unpacked layer; refuses (ValueError) while a snapshot or a child layer uses it."""
        with self._index(write=True) as index:
            layer = self._layer(index, chain_id)
            users = [
                f"snapshot {key!r}" for key, snap in index.snapshots.items() if snap["parent"] == chain_id
            ]
            users += [
                f"layer {child}" for child, other in index.layers.items() if other["parent"] == chain_id
            ]
            if users:
                raise ValueError(f"layer {chain_id} is in use by {', '.join(users)}")
            del index.layers[chain_id]
            trash = self._to_trash(layer["id"])
        shutil.rmtree(trash)

    def chain_ids(self) -> list[str]:
        with self._index() as index:
            return sorted(index.layers)

    def gc(self, keep_chains: set[str]) -> list[str]:
        """Remove the unpacked layers neither kept (with what they stand on) nor used by a snapshot."""
        with self._index(write=True) as index:
            needed = index.in_use()
            for chain in keep_chains & index.layers.keys():
                needed.update(index.chain(chain))
            removed = sorted(index.layers.keys() - needed)
            trash = [self._to_trash(index.layers.pop(chain)["id"]) for chain in removed]
            trash += self._leftovers(index)
            self._remove_lock_files(index)
        for directory in trash:
            shutil.rmtree(directory)
        return removed

    # --- snapshots -------------------------------------------------------------------------------

    def prepare(self, key: str, parent_chain: str | None, *, readonly: bool = False,
                durable: bool = True) -> list[Mount]:
        """Create the snapshot ``key`` over the layer chain ``parent_chain`` (None: an empty rootfs).
        A durable snapshot (a container's) first syncs the layers below it that commit left unsynced;
        durable=False is for scratch snapshots that a crash may take (a build's)."""
        with self._index() as index:
            self._check_new_snapshot(index, key, parent_chain)
            source = self._fs_dir(index.layers[parent_chain]["id"]) if parent_chain is not None else None
            unsynced = [chain for chain in index.chain(parent_chain) if _UNSYNCED in index.layers[chain]] \
                if durable else []
        if unsynced:
            syncfs(self.root)  # before the index says they are synced (below)
        work = self._new_tmp_dir()
        try:
            if self.mode == "copy" and source is not None:
                _copy_tree(source, work / "fs")
            else:
                (work / "fs").mkdir(mode=0o755)
            if self.mode == "overlay":
                (work / "work").mkdir(mode=0o700)
            with self._index(write=True) as index:
                self._check_new_snapshot(index, key, parent_chain)
                number = self._allocate(index)
                os.rename(work, self._snapshot_dir(number))
                index.snapshots[key] = {"id": number, "parent": parent_chain, "readonly": readonly}
                for chain in unsynced:
                    index.layers[chain].pop(_UNSYNCED, None)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return self.mounts(key)

    def mounts(self, key: str) -> list[Mount]:
        with self._index() as index:
            snapshot = self._snapshot(index, key)
            upper = self._fs_dir(snapshot["id"])
            readonly = snapshot["readonly"]
            lowers = [self._fs_dir(index.layers[chain]["id"]) for chain in index.chain(snapshot["parent"])]
        access = "ro" if readonly else "rw"
        if self.mode == "copy" or not lowers:
            return [Mount("bind", str(upper), ["rbind", access])]
        lowerdir = "lowerdir=" + ":".join(str(path) for path in lowers)
        if readonly:
            if len(lowers) == 1:  # overlay wants two lower dirs when it has no upper dir
                return [Mount("bind", str(lowers[0]), ["rbind", "ro"])]
            return [Mount("overlay", "overlay", ["ro", *_OVERLAY_DEFAULTS, lowerdir])]
        work = self._snapshot_dir(snapshot["id"]) / "work"
        options = [*_OVERLAY_DEFAULTS, lowerdir, f"upperdir={upper}", f"workdir={work}"]
        return [Mount("overlay", "overlay", options)]

    def upper_dir(self, key: str) -> Path:
        """Where the container's writes land (copy mode: its whole rootfs)."""
        with self._index() as index:
            return self._fs_dir(self._snapshot(index, key)["id"])

    def lower_dirs(self, key: str) -> list[Path]:
        """The layer dirs under the snapshot, top first (copy mode: the merged tree it was copied from)."""
        with self._index() as index:
            chains = index.chain(self._snapshot(index, key)["parent"])
            if self.mode == "copy":
                chains = chains[:1]
            return [self._fs_dir(index.layers[chain]["id"]) for chain in chains]

    def remove(self, key: str) -> None:
        """Remove the snapshot's own files (unmount it first); the image layers stay."""
        shutil.rmtree(self.release(key))

    def release(self, key: str) -> Path:
        """Remove the snapshot from the index and return the directory its files were moved to, for the
        caller to delete when it suits (a process that dies first leaves it to gc)."""
        with self._index(write=True) as index:
            snapshot = self._snapshot(index, key)
            del index.snapshots[key]
            return self._to_trash(snapshot["id"])

    def commit(self, key: str, diff_id: str) -> str:
        """Turn the writable snapshot ``key`` (unmounted) into the layer ``diff_id`` on its parent chain, the
        way Docker's overlay2 commits a container: its upper dir (copy mode: its whole tree) already is what
        unpacking that layer's tar would produce, so it is published in place of an unpack. Returns the new
        chain ID. When that chain is unpacked already, the snapshot is just removed. The layer's files are
        not synced here (see prepare)."""
        with self._index() as index:
            snapshot = self._snapshot(index, key)
            parent = snapshot["parent"]
            directory = self._snapshot_dir(snapshot["id"])
        if snapshot["readonly"]:
            raise ValueError(f"snapshot {key!r} is read-only: there is nothing to commit")
        chain = next_chain_id(parent, diff_id)
        shutil.rmtree(directory / "work", ignore_errors=True)  # overlay's scratch dir is no part of a layer
        with self._index(write=True) as index:
            snapshot = self._snapshot(index, key)
            del index.snapshots[key]
            if chain in index.layers or (parent is not None and parent not in index.layers):
                trash = self._to_trash(snapshot["id"])
            else:
                # Not synced (a syncfs waits for every writer of the filesystem): usable at once in this boot,
                # synced by the first durable snapshot that stands on it, dropped after a crash otherwise.
                index.layers[chain] = {"id": snapshot["id"], "parent": parent, "diff_id": diff_id,
                                       _UNSYNCED: _boot_id()}
                trash = None
        if trash is not None:
            shutil.rmtree(trash)
        return chain

    def keys(self) -> list[str]:
        with self._index() as index:
            return sorted(index.snapshots)

    def usage(self, key_or_chain: str) -> int:
        """Bytes on disk of a snapshot's own files or of one layer (hard links counted once)."""
        with self._index() as index:
            entry = index.snapshots.get(key_or_chain) or index.layers.get(key_or_chain)
            if entry is None:
                raise SnapshotNotFound(f"no snapshot or layer {key_or_chain!r}")
            directory = self._snapshot_dir(entry["id"])
        return _disk_usage(directory)

    # --- internals -------------------------------------------------------------------------------

    @property
    def _snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def _locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def _tmp_dir(self) -> Path:
        return self.root / "tmp"

    def _snapshot_dir(self, number: int) -> Path:
        return self._snapshots_dir / str(number)

    def _fs_dir(self, number: int) -> Path:
        return self._snapshot_dir(number) / "fs"

    @staticmethod
    def _layer(index: _Index, chain: str) -> dict[str, Any]:
        try:
            return index.layers[chain]
        except KeyError:
            raise SnapshotNotFound(f"layer {chain} is not unpacked") from None

    @staticmethod
    def _snapshot(index: _Index, key: str) -> dict[str, Any]:
        try:
            return index.snapshots[key]
        except KeyError:
            raise SnapshotNotFound(f"no snapshot {key!r}") from None

    @staticmethod
    def _check_new_snapshot(index: _Index, key: str, parent_chain: str | None) -> None:
        if not key:
            raise ValueError("a snapshot key must not be empty")
        if key in index.snapshots:
            raise ValueError(f"snapshot {key!r} already exists")
        if parent_chain is not None and parent_chain not in index.layers:
            raise SnapshotNotFound(f"layer {parent_chain} is not unpacked")

    @contextlib.contextmanager
    def _index(self, *, write: bool = False) -> Iterator[_Index]:
        """The index under a shared flock, or an exclusive one when ``write`` (saved if no error). A reader
        gets the parse of the last read while the file's bytes are unchanged (a build reads the index
        about fifteen times per step), so it must not change what it is given; a writer gets its own."""
        lock = os.open(self.root / "metadata.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            path = self.root / "metadata.json"
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = b""
            boot, last = _boot_id(), self._last_read
            if not write and last is not None and last[:2] == (data, boot):
                index = last[2]
            else:
                index = _Index(**json.loads(data)) if data else _Index()
                index.drop_unsynced(boot)
                if not write:
                    self._last_read = (data, boot, index)
            yield index
            if write:
                write_atomic(path, dump_json(index.__dict__))
        finally:
            os.close(lock)

    @contextlib.contextmanager
    def _chain_lock(self, chain: str) -> Iterator[None]:
        path = self._locks_dir / f"{chain.removeprefix('sha256:')}.lock"
        lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)

    def _allocate(self, index: _Index) -> int:
        """A free numeric dir name (a crash after a rename but before the save may have left one taken)."""
        while self._snapshot_dir(index.next_id).exists():
            index.next_id += 1
        index.next_id += 1
        return index.next_id - 1

    def _remove_lock_files(self, index: _Index) -> None:
        """Drop the lock files of chains that are not unpacked and that nobody is unpacking right now."""
        known = {chain.removeprefix("sha256:") for chain in index.layers}
        for path in self._locks_dir.iterdir():
            if path.stem in known:
                continue
            lock = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            else:
                path.unlink()
            finally:
                os.close(lock)

    def _new_tmp_dir(self) -> Path:
        # the pid in the name lets gc tell a crashed process's leftovers from work in progress
        path = self._tmp_dir / f"{os.getpid()}-{secrets.token_hex(6)}"
        path.mkdir(mode=0o700)
        return path

    def _to_trash(self, number: int) -> Path:
        """Move a numbered dir out of snapshots/ (atomic, under the index lock) for removal after it."""
        return self._move_to_trash(self._snapshot_dir(number))

    def _move_to_trash(self, path: Path) -> Path:
        trash = self._new_tmp_dir()
        os.rename(path, trash / "old")
        return trash

    def _leftovers(self, index: _Index) -> list[Path]:
        """Temp dirs of dead processes, and numbered dirs no index entry owns (a crash after a rename)."""
        found = []
        for path in self._tmp_dir.iterdir():
            pid = path.name.partition("-")[0]
            if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
                found.append(path)
        known = {str(entry["id"]) for entry in (*index.layers.values(), *index.snapshots.values())}
        found += [
            self._move_to_trash(path) for path in self._snapshots_dir.iterdir() if path.name not in known
        ]
        return found

    def _unpack(self, chain: str, parent: str | None, diff_id: str, opener: Callable[[], BinaryIO]) -> None:
        work = self._new_tmp_dir()
        fs = work / "fs"
        try:
            if self.mode == "copy" and parent is not None:
                _copy_tree(self.layer_dir(parent), fs)  # copy mode: every layer dir is a full tree
            else:
                fs.mkdir(mode=0o755)
            with opener() as source:
                stats = apply_layer(source, fs, overlay=self.mode == "overlay")
            if stats.diff_id != diff_id:
                raise ValueError(
                    f"layer {diff_id} does not match its content, whose diff_id is {stats.diff_id}"
                )
            syncfs(fs)  # the rename below must never publish a layer whose files are not on disk
            with self._index(write=True) as index:
                if parent is not None and parent not in index.layers:
                    raise SnapshotNotFound(f"layer {parent} was removed while {chain} was unpacked onto it")
                # the chain lock makes this rare (gc may drop a lock file another process still holds)
                if chain not in index.layers:
                    number = self._allocate(index)
                    os.rename(work, self._snapshot_dir(number))
                    index.layers[chain] = {"id": number, "parent": parent, "diff_id": diff_id}
        finally:
            shutil.rmtree(work, ignore_errors=True)  # gone already when it was committed

    def _overlay_works(self) -> bool:
        """Probe: can we create whiteouts and mount an overlay of dirs on this filesystem?"""
        probe = self._new_tmp_dir()
        try:
            for name in ("lower", "upper", "work", "merged"):
                (probe / name).mkdir()
            os.mknod(probe / "lower" / "whiteout", stat.S_IFCHR, os.makedev(0, 0))
            dirs = [f"lowerdir={probe / 'lower'}", f"upperdir={probe / 'upper'}", f"workdir={probe / 'work'}"]
            Mount("overlay", "overlay", [*_OVERLAY_DEFAULTS, *dirs]).mount(probe / "merged")
            Mount.unmount(probe / "merged")
            return True
        except OSError:
            return False
        finally:
            shutil.rmtree(probe, ignore_errors=True)


@functools.cache
def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _copy_tree(source: Path, dest: Path) -> None:
    """``cp -a`` (hard links, xattrs, devices, sparse files; reflinks where the filesystem can)."""
    done = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", str(source), str(dest)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise OSError(f"cannot copy {source} to {dest}: {done.stderr.strip()}")


def _disk_usage(directory: Path) -> int:
    seen: set[int] = set()
    total = directory.lstat().st_blocks * 512
    pending = [str(directory)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return total
