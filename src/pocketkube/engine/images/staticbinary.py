"""Images built offline from one of the host's statically linked binaries (busybox, catatonit): the binary
must run in a root filesystem without a C library, so a missing or dynamically linked one is refused."""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

_PT_INTERP = 3


class StaticBinaryUnavailable(RuntimeError):
    """No statically linked binary to build the image from."""


def check_static(binary: Path, package: str) -> None:
    """Refuses a missing, non-ELF or dynamically linked `binary`; the message names the Debian package."""
    try:
        with binary.open("rb") as f:
            header = f.read(1 << 16)  # ELF and program headers sit at the start
    except FileNotFoundError:
        raise StaticBinaryUnavailable(f"{binary} not found: install the Debian package {package}") from None
    if header[:4] != b"\x7fELF" or header[4] != 2:
        raise StaticBinaryUnavailable(f"{binary} is not a 64-bit ELF executable: install the Debian package {package}")
    endian = "<" if header[5] == 1 else ">"
    (phoff,) = struct.unpack_from(endian + "Q", header, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", header, 0x36)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", header, phoff + i * phentsize)
        if p_type == _PT_INTERP:
            raise StaticBinaryUnavailable(f"{binary} is dynamically linked: install the Debian package {package}")


def tar_entry(name: str, mtime: int, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    """A root-owned tar entry with a fixed mtime, so that the same binary always makes the same layer."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
