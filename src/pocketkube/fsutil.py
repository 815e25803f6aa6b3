"""Atomic file writes shared by every on-disk store (engine stores, keys): a file appears whole or not at all,
and (unless asked not to) survives a machine crash once the call returns (temp file, fsync, rename, fsync of
the directory)."""

from __future__ import annotations

import ctypes
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syncfs.argtypes = [ctypes.c_int]


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


def write_json_atomic(path: Path, document: Any) -> None:
    write_atomic(path, json.dumps(document, indent=1, sort_keys=True).encode())
