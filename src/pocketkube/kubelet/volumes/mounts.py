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


def mount_points() -> list[tuple[Path, str]]:
    """(mount point, filesystem type) of every mount this process sees."""
    result = []
    for line in MOUNTINFO.read_text().splitlines():
        fields = line.split(" ")
        separator = fields.index("-")
        result.append((Path(_unescape(fields[4])), fields[separator + 1]))
    return result


def mount_points_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, deepest first (the order to unmount them in)."""
    root = Path(os.path.realpath(root))
    found = {point for point, _ in mount_points() if point == root or root in point.parents}
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


