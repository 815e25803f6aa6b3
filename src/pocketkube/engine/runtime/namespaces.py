"""Pinned namespaces: network, IPC and UTS namespaces kept alive by a bind mount of their /proc file rather
than by a process, so a pod's containers can join them (by path in the runtime spec, or a CNI plugin's
netns argument) without a pause container. The same mechanism as `ip netns add`. A pid namespace cannot
live without its init process, so it is pinned from one already running in it (pin_process_namespace).

A short-lived thread does the unshare: net, ipc and uts namespaces belong to a thread, not to the whole
process, so no fork of this (possibly large, threaded) process is needed and the caller's own namespaces
never change. The thread bind-mounts /proc/thread-self/ns/<kind> onto the pin file and ends.

Mount propagation: mount namespaces copied from ours after pinning (a runtime's, a monitor's) hold copies
of the pin mounts. `ip netns` makes its directory a shared mount so that its unmount reaches them; here
that is not needed, because removing a pin also unlinks the file, and the kernel (>= 3.18) detaches the
mounts on an unlinked file in every other mount namespace. A copy never keeps a namespace alive."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

_CLONE_FLAGS = {"net": 0x40000000, "ipc": 0x08000000, "uts": 0x04000000}  # CLONE_NEWNET, NEWIPC, NEWUTS
_PINNABLE = (*_CLONE_FLAGS, "pid")  # a pid namespace is only pinned from a process (its init) already in it
_MS_BIND = 0x1000
_MNT_DETACH = 2
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: interface name, then ifr_flags in a 24-byte union

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(RuntimeError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _mount(source: str, target: Path, flags: int) -> None:
    _check(_libc.mount(source.encode(), str(target).encode(), None, flags, None), f"mount {source} on {target}")


def _umount(target: Path) -> None:
    _check(_libc.umount2(str(target).encode(), _MNT_DETACH), f"umount {target}")


def _nsfs_device() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def is_pinned(path: Path) -> bool:
    """Whether path is a namespace file (nsfs), as a pinned namespace's bind mount is."""
    try:
        return os.stat(path).st_dev == _nsfs_device()
    except (FileNotFoundError, NotADirectoryError):
        return False


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0)
        (flags,) = struct.unpack_from("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request), 0)[1:]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


def _pin_in_thread(targets: dict[str, Path], hostname: str | None) -> None:
    """Runs in a thread of its own, which the new namespaces die with unless pinned."""
    flags = 0
    for kind in targets:
        flags |= _CLONE_FLAGS[kind]
    _check(_libc.unshare(flags), "unshare")
    if hostname is not None:
        encoded = hostname.encode()
        _check(_libc.sethostname(encoded, len(encoded)), f"sethostname {hostname}")
    if "net" in targets:
        _loopback_up()
    for kind, target in targets.items():
        _mount(f"/proc/thread-self/ns/{kind}", target, _MS_BIND)


def create_pinned(directory: Path, kinds: Iterable[str] = ("net", "ipc", "uts"), *,
                  hostname: str | None = None) -> dict[str, Path]:
    """New namespaces of the given kinds ("net", "ipc", "uts"), pinned at directory/<kind>; a new network
    namespace has its loopback up, a new uts namespace gets the hostname. The directory is created when
    missing (remove_pinned removes it when empty)."""
    kinds = list(dict.fromkeys(kinds))
    unknown = [k for k in kinds if k not in _CLONE_FLAGS]
    if unknown or not kinds:
        raise ValueError(f"cannot pin namespace kinds {unknown or kinds}: expected some of {', '.join(_CLONE_FLAGS)}")
    if hostname is not None and "uts" not in kinds:
        raise ValueError("a hostname needs a new uts namespace")
    directory = Path(os.path.realpath(directory))
    targets = {kind: directory / kind for kind in kinds}
    for target in targets.values():
        if is_pinned(target):
            raise NamespaceError(f"{target} already pins a namespace")
    directory.mkdir(parents=True, exist_ok=True)
    failure: list[BaseException] = []

    def pin() -> None:
        try:
            _pin_in_thread(targets, hostname)
        except BaseException as err:  # handed to the caller's thread
            failure.append(err)

    try:
        for target in targets.values():
            target.touch(exist_ok=True)
        thread = threading.Thread(target=pin, name=f"pin-namespaces {directory.name}")
        thread.start()
        thread.join()
        if failure:
            raise NamespaceError(f"cannot create namespaces in {directory}: {failure[0]}") from failure[0]
    except BaseException:
        for target in targets.values():
            _unpin(target)
        if not any(is_pinned(directory / kind) for kind in _PINNABLE):  # keep pins of earlier calls
            remove_pinned(directory)
        raise
    return targets


def pin_process_namespace(directory: Path, kind: str, pid: int) -> Path:
    """Pins the `kind` namespace of process `pid` at directory/<kind>. A pin keeps the namespace, not its
    processes: new processes can enter a pid namespace only while its init lives."""
    if kind not in _PINNABLE:
        raise ValueError(f"cannot pin namespace kind {kind!r}: expected one of {', '.join(_PINNABLE)}")
    directory = Path(os.path.realpath(directory))
    target = directory / kind
    if is_pinned(target):
        raise NamespaceError(f"{target} already pins a namespace")
    directory.mkdir(parents=True, exist_ok=True)
    target.touch(exist_ok=True)
    try:
        _mount(f"/proc/{pid}/ns/{kind}", target, _MS_BIND)
    except OSError as err:
        target.unlink(missing_ok=True)
        raise NamespaceError(f"cannot pin the {kind} namespace of process {pid}: {err}") from err
    return target


def _unpin(target: Path) -> None:
    while is_pinned(target):
        _umount(target)
    target.unlink(missing_ok=True)


def remove_pinned(directory: Path) -> None:
    """Unmounts and deletes the pinned namespace files and removes the directory when empty. Namespaces
    still used by a process live on until it exits. Idempotent."""
    directory = Path(os.path.realpath(directory))
    if not directory.is_dir():
        return
    for kind in _PINNABLE:
        _unpin(directory / kind)
    try:
        directory.rmdir()
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise
