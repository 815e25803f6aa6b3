"""Atomic file writes shared by every on-disk store (engine stores, keys): a file appears whole or not at all,
and (unless asked not to) survives a machine crash once the call returns (temp file, fsync, rename, fsync of
the directory)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syncfs.argtypes = [ctypes.c_int]
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000
_FLAGS_UNSUPPORTED = (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM, errno.EACCES)


def syncfs(path: Path) -> None:
    """Flush everything written to the filesystem holding ``path`` (data, and metadata such as renames): one
    call makes a whole batch of unsynced writes durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs {path}: {os.strerror(code)}")
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | Callable[[IO[bytes]], object], *, mode: int = 0o644,
                 durable: bool = True) -> None:
    """Replaces `path` with `data` (bytes, or a function writing to the open file). A process killed at any
    point leaves the old file or the new one; durable=False skips the two fsyncs, for state that need not
    outlive a machine crash (~1 ms saved)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def dump_json(document: Any) -> bytes:
    """A store's JSON file: compact, so that the json module's C encoder writes it (an indented dump runs
    its pure-Python encoder, ~3× slower), and with sorted keys, so that equal states make equal bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def write_json_atomic(path: Path, document: Any) -> None:
    write_atomic(path, dump_json(document))


def spread_subdirectories(path: Path) -> None:
    """Marks `path` as the top of a directory hierarchy for ext4's Orlov allocator (chattr +T), where the
    filesystem supports it; elsewhere nothing changes. Unmarked, ext4 puts a new subdirectory, and the files
    in it, in its parent's block group: per-object directories that come and go by the thousand (containers,
    snapshots, pods) then crowd one group, and on a filesystem without a journal every inode allocation there
    skips, one by one, each inode freed in the last minutes. Measured on such a node starting pods back to
    back: a fifth of the kubelet's CPU samples were in that search, and marking the parents cut the
    kubelet's CPU per pod by about a third."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(4)))[0]
        if not flags & _FS_TOPDIR_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | _FS_TOPDIR_FL))
    except OSError as err:
        if err.errno not in _FLAGS_UNSUPPORTED:
            raise
    finally:
        os.close(fd)

