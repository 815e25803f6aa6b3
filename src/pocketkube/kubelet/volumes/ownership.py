"""fsGroup ownership of volume files (pkg/volume/volume_linux.go SetVolumeOwnership) and the pod's
effective file user (FsUserFrom)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pocketkube.kubelet.volumes.model import Obj

RW_MASK = 0o660
RO_MASK = 0o440
EXEC_MASK = 0o110
ON_ROOT_MISMATCH = "OnRootMismatch"


def pod_fs_group(pod: Obj) -> int | None:
    value = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
    return int(value) if value is not None else None


def fs_group_change_policy(pod: Obj) -> str | None:
    return ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroupChangePolicy")


def fs_user_from(pod: Obj) -> int | None:
    """The runAsUser every container of the pod runs as, or None when one has none or they differ."""
    spec = pod.get("spec") or {}
    pod_user = (spec.get("securityContext") or {}).get("runAsUser")
    fs_user: int | None = None
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(kind) or []:
            user = (container.get("securityContext") or {}).get("runAsUser", pod_user)
            if user is None or (fs_user is not None and fs_user != int(user)):
                return None
            fs_user = int(user)
    return fs_user


def set_volume_ownership(directory: Path, fs_group: int | None, *, read_only: bool,
                         change_policy: str | None = None) -> None:
    """Give every file of the volume to `fs_group`, group-readable (and group-writable unless the volume
    is read-only); directories also get the setgid bit so that new files inherit the group. Symlinks
    change owner only: chmod would pass through to their target."""
    if fs_group is None:
        return
    if change_policy == ON_ROOT_MISMATCH and not _requires_change(directory, fs_group, read_only):
        return
    _change(str(directory), fs_group, read_only)
    for parent, subdirs, files in os.walk(directory):
        for name in subdirs + files:
            _change(os.path.join(parent, name), fs_group, read_only)


def _change(path: str, fs_group: int, read_only: bool) -> None:
    os.lchown(path, -1, fs_group)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return
    mask = RO_MASK if read_only else RW_MASK
    if stat.S_ISDIR(info.st_mode):
        mask |= stat.S_ISGID | EXEC_MASK
    os.chmod(path, stat.S_IMODE(info.st_mode) | mask)


def _requires_change(directory: Path, fs_group: int, read_only: bool) -> bool:
    """OnRootMismatch: only when the volume's root lacks the group, the permissions or the setgid bit."""
    try:
        info = os.stat(directory)
    except OSError:
        return True
    if info.st_gid != fs_group or not stat.S_ISDIR(info.st_mode):
        return True
    wanted = (RO_MASK if read_only else RW_MASK) | EXEC_MASK
    return (info.st_mode & wanted) != wanted or not info.st_mode & stat.S_ISGID
