"""Cheap cgroup migrations: the cgroup2 mount option `favordynmods` (Linux >= 6.0).

Every container start moves its first process into the container's cgroups (the runtime writes its pid to
cgroup.procs). By default the kernel guards migrations with a lock whose writer waits for an RCU grace
period unless another migration ran just before: measured here, the first write took 11-13 ms of a ~40 ms
run-to-exit, paid by every start that is not part of a tight burst. `favordynmods` makes migrations cheap at
the price of slightly dearer forks and exits; the kernel documents it for hosts that move tasks between
cgroups often, which is what a container host does. The option belongs to the cgroup2 superblock and governs
the lock that v1 hierarchies share, so on a hybrid host the cgroup2 mount carries it for all of them.

The engine turns it on (setting `cgroup-favordynmods`, default "on"; "off" leaves the host as it is). It is a
host-wide, boot-long setting like the kernel tunables a kubelet applies; a kernel that lacks it, or a
container without the privilege to remount, keeps its default. Since Linux 6.18 the cheaper migrations stay
for the rest of the boot once the option has been on, even if it is taken off again."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from dataclasses import dataclass
from pathlib import Path

OPTION = "favordynmods"
_MS_REMOUNT = 0x20
# Per-mount flags a remount must repeat: mount(2) with MS_REMOUNT sets them anew from the flags it is given.
_MOUNT_FLAGS = {"ro": 0x1, "nosuid": 0x2, "nodev": 0x4, "noexec": 0x8, "noatime": 0x400, "nodiratime": 0x800,
                "relatime": 0x200000, "strictatime": 0x1000000}
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


@dataclass(frozen=True)
class Cgroup2Mount:
    mount_point: Path
    mount_options: tuple[str, ...]  # per mount: rw, nosuid, relatime, ...
    super_options: tuple[str, ...]  # of the cgroup2 superblock: rw, nsdelegate, favordynmods, ...

    @property
    def favors_dynmods(self) -> bool:
        return OPTION in self.super_options

    def remount_arguments(self, favor: bool) -> tuple[int, str]:
        """(flags, data) for mount(2) to remount with the option on or off and everything else unchanged:
        a cgroup2 remount resets every superblock option it is not given, and every per-mount flag."""
        flags = _MS_REMOUNT
        for option in self.mount_options:
            flags |= _MOUNT_FLAGS.get(option, 0)
        kept = [option for option in self.super_options if option not in ("rw", "ro", OPTION)]
        return flags, ",".join([*kept, OPTION] if favor else kept)


def cgroup2_mount(mountinfo: str | None = None) -> Cgroup2Mount | None:
    """The cgroup2 mount at /sys/fs/cgroup (a pure cgroup2 host) or below it (hybrid), else None."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        fstype, _source, super_options = (tail.split() + ["", "", ""])[:3]
        if fstype != "cgroup2":
            continue
        parts = fields.split()
        mount_point = Path(_OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), parts[4]))
        if mount_point == Path("/sys/fs/cgroup") or mount_point.parent == Path("/sys/fs/cgroup"):
            return Cgroup2Mount(mount_point, tuple(parts[5].split(",")), tuple(super_options.split(",")))
    return None


def set_favordynmods(favor: bool) -> bool:
    """Turns the option on (or off) for the host's cgroup2 superblock. True when it is as asked afterwards;
    False, having changed nothing, where there is no cgroup2 mount or the kernel or our privileges refuse."""
    mount = cgroup2_mount()
    if mount is None:
        return False
    if mount.favors_dynmods == favor:
        return True
    flags, data = mount.remount_arguments(favor)
    if _libc.mount(None, os.fsencode(mount.mount_point), None, flags, data.encode()) != 0:
        return False  # EINVAL: a kernel without the option; EPERM: no CAP_SYS_ADMIN in the init namespaces
    changed = cgroup2_mount()
    return changed is not None and changed.favors_dynmods == favor


def favor_dynamic_modifications() -> bool:
    """set_favordynmods(True), never raising: a host where it cannot be set only runs containers slower."""
    with contextlib.suppress(OSError):
        return set_favordynmods(True)
    return False
