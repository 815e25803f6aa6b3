"""A sealed in-memory copy of a runtime binary, made once per process.

crun defends against CVE-2019-5736 (a container overwriting the host's runtime binary through
/proc/<pid>/exe) by re-executing itself from a private copy on every call, unless it already runs from a
memfd sealed against writes. That copy costs a temp file, a bind mount and a second exec with its dynamic
linking: ~2 ms of each crun call here. Running crun from a copy sealed once per engine process gives the
same protection without the per-call cost."""

from __future__ import annotations

import fcntl
import os

# crun accepts exactly these seals as "already cloned" (and so does runc's nsexec).
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_copies: dict[tuple[int, str], str] = {}  # (pid, binary) -> path: a forked child makes its own


def sealed_copy(binary: str) -> str:
    """An executable path to a sealed copy of `binary` held by this process: /proc/<pid>/fd/<n>, usable by
    any process started while this one lives (a child's exec resolves it at once)."""
    key = (os.getpid(), binary)
    path = _copies.get(key)
    if path is None:
        fd = os.memfd_create(os.path.basename(binary), os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            with open(binary, "rb") as source:
                size = os.fstat(source.fileno()).st_size
                copied = 0
                while copied < size:
                    sent = os.sendfile(fd, source.fileno(), copied, size - copied)
                    if sent == 0:
                        raise OSError(f"{binary} shrank while it was copied")
                    copied += sent
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        except BaseException:
            os.close(fd)
            raise
        path = _copies[key] = f"/proc/{os.getpid()}/fd/{fd}"
    return path
