"""Starting a process in a private copy of our mount namespace with one mount taken away: how conmon (and a
foreground `crun run`) runs crun on a cgroup v1/v2 hybrid host without the shell wrapper (oci.py), saving its
four extra execs (~5 ms per container).

A fresh thread does the work: a thread may unshare its own mount namespace (its filesystem context is
unshared with it), the process it spawns (vfork + exec, no Python runs in the child) inherits that namespace,
and the thread ends. The copy is taken at that moment, so it holds every mount made before it (the container's
rootfs, its pinned namespaces). A thread pool's worker must not do this: it would stay in the copy.

Mounts made or removed in our namespace afterwards do not reach the copy (the host's mounts are private).
Removing a mount point directory detaches its copies everywhere (Linux >= 3.18), which is how the rootfs
and volume copies a long-lived monitor holds go away when their directories are removed.

A process started this way runs its descendants in the copy too; `host_reentry` gives the command prefix
that brings one back to the host's mount namespace (conmon's exit command needs it: it unmounts the rootfs)."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_MNT_DETACH = 2
_SYSTEM_LIFETIME_PIDS = (1, 2)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _enter_private_copy(hidden: str) -> None:
    _check(_libc.unshare(_CLONE_NEWNS), "unshare the mount namespace")
    _check(_libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make the mount namespace copy private")
    _check(_libc.umount2(os.fsencode(hidden), _MNT_DETACH), f"unmount {hidden} in the mount namespace copy")


def spawn_without_mount(hidden: str, argv: Sequence[str], **popen_options: object) -> subprocess.Popen:
    """subprocess.Popen(argv, **popen_options), started in a private copy of our mount namespace where the
    mount at `hidden` is gone."""
    outcome: list[subprocess.Popen | BaseException] = []

    def spawn() -> None:
        try:
            _enter_private_copy(hidden)
            outcome.append(subprocess.Popen(argv, **popen_options))  # type: ignore[call-overload]
        except BaseException as err:  # handed to the caller's thread
            outcome.append(err)

    thread = threading.Thread(target=spawn, name=f"spawn {os.path.basename(argv[0])} without {hidden}")
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


async def wait(process: subprocess.Popen) -> int:
    """The exit code of a process spawn_without_mount started, awaited without blocking the event loop (a
    pidfd turns readable when the process ends)."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(process.pid)
    ended = loop.create_future()
    loop.add_reader(pidfd, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return process.wait()


@functools.cache  # a process's mount namespace and the system processes do not change
def host_reentry() -> list[str] | None:
    """A command prefix (nsenter) that runs a command in our mount namespace again from a copy made by
    spawn_without_mount, or None when that namespace cannot be named for later: a namespace cannot be pinned
    from inside itself, so it is named through a process that lives as long as the system and shares it,
    the init process or (where init's namespaces are closed to us) the kernel's kthreadd."""
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        return None
    try:
        ours = os.stat("/proc/self/ns/mnt")
    except OSError:
        return None
    for pid in _SYSTEM_LIFETIME_PIDS:
        path = f"/proc/{pid}/ns/mnt"
        try:
            theirs = os.stat(path)
        except OSError:
            continue
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino) and _lives_as_long_as_the_system(pid):
            return [nsenter, f"--mount={path}", "--"]
    return None


def _lives_as_long_as_the_system(pid: int) -> bool:
    """pid 1, or pid 2 when it is kthreadd: a parentless pid 2 exists only in the initial pid namespace (in a
    container's, pid 2 is an ordinary process and its number may be reused)."""
    if pid == 1:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "Name:\tkthreadd\n" in status and "PPid:\t0\n" in status
