"""The few mount operations volumes need (tmpfs, bind of an open file descriptor, detach), straight from
libc, and the mount table read from /proc/self/mountinfo."""

from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MS_BIND = 0x1000
MNT_DETACH = 2
MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _mount(source: str, target: Path, fstype: str | None, flags: int, data: str | None) -> None:
    result = _libc.mount(os.fsencode(source), os.fsencode(str(target)),
                         fstype.encode() if fstype else None, flags, data.encode() if data else None)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {source} on {target}: {os.strerror(code)}")


def mount_tmpfs(target: Path, options: list[str]) -> None:
    _mount("tmpfs", target, "tmpfs", 0, ",".join(options) or None)


def bind_mount(source: str, target: Path) -> None:
    _mount(source, target, None, MS_BIND, None)


def unmount(target: Path) -> None:
    """Detach the mount at `target` (lazily: a process still inside keeps its view until it leaves)."""
    if _libc.umount2(os.fsencode(str(target)), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unmount {target}: {os.strerror(code)}")


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> list[str]:
    """The mount point of every mount this process sees, in the mount table's order."""
    return [_unescape(line.split(" ", 5)[4]) for line in MOUNTINFO.read_text().splitlines()]


def mount_points_under(root: Path, points: list[str] | None = None) -> list[Path]:
    """Mount points at or below `root`, deepest first (the order to unmount them in), from `points` (a
    mount_points() read earlier) or the mount table now. Compared as strings: a node with many pods has
    hundreds of mounts, and a pod's teardown asks about several roots."""
    prefix = os.path.realpath(root)
    found = {point for point in (mount_points() if points is None else points)
             if point == prefix or point.startswith(prefix.rstrip("/") + "/")}
    return [Path(point) for point in sorted(found, key=lambda point: point.count("/"), reverse=True)]


