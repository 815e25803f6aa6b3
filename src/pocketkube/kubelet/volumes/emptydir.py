"""emptyDir (pkg/volume/emptydir): a directory on the node's disk, or a tmpfs mounted at the volume's
directory for medium Memory, sized as upstream's calculateEmptyDirMemorySize does. Secret, projected and
downwardAPI volumes are built on a memory-backed one too."""

from __future__ import annotations

import stat
from pathlib import Path

from pocketkube.api.quantity import parse_quantity
from pocketkube.kubelet.volumes import mounts
from pocketkube.kubelet.volumes.model import Obj, SourceError
from pocketkube.mountpoint import is_mount_point

MEDIUM_DEFAULT = ""
MEDIUM_MEMORY = "Memory"
DIR_MODE = 0o777


def setup_dir(directory: Path) -> None:
    """The volume's directory, world-writable as upstream makes it whatever the umask."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    info = directory.stat()
    if stat.S_IMODE(info.st_mode) & 0o777 != DIR_MODE or info.st_mode & stat.S_ISGID:
        directory.chmod(DIR_MODE)


def setup_tmpfs(directory: Path, size: int | None) -> None:
    """A tmpfs at the volume's directory, mounted once (a retry or a kubelet restart finds it there)."""
    if is_mount_point(directory):
        return
    setup_dir(directory)
    mounts.mount_tmpfs(directory, [f"size={size}"] if size else [])


def setup_empty_dir(directory: Path, source: Obj, pod: Obj, node_memory: int) -> bool:
    """Make the volume; returns whether it is a tmpfs."""
    medium = source.get("medium") or MEDIUM_DEFAULT
    if medium == MEDIUM_DEFAULT:
        setup_dir(directory)
        return False
    if medium == MEDIUM_MEMORY:
        setup_tmpfs(directory, memory_volume_size(pod, source.get("sizeLimit"), node_memory))
        return True
    raise SourceError(f"emptyDir medium {medium!r} is not supported on this node (only the default and Memory)")


def memory_volume_size(pod: Obj, size_limit: str | None, node_memory: int) -> int:
    """The tmpfs size: the node's allocatable memory, lowered to the pod's memory limit when every
    container declares one, lowered again to the volume's sizeLimit when that is smaller."""
    size = node_memory
    pod_limit = pod_memory_limit(pod)
    if pod_limit is not None and 0 < pod_limit <= size:
        size = pod_limit
    if size_limit is not None:
        limit = parse_quantity(str(size_limit)).value()
        if 0 < limit <= size:
            size = limit
    return size


def _memory_limit(container: Obj) -> int:
    value = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return parse_quantity(str(value)).value() if value is not None else 0


def pod_memory_limit(pod: Obj) -> int | None:
    """The pod cgroup's memory limit (ResourceConfigForPod): None unless every container has one.
    Regular containers and restartable init containers (sidecars) run together; each other init
    container runs alone beside the sidecars started before it."""
    spec = pod.get("spec") or {}
    containers, init_containers = spec.get("containers") or [], spec.get("initContainers") or []
    limits = [_memory_limit(c) for c in containers + init_containers]
    if not limits or not all(limits):
        return None
    sidecars = 0
    init_peak = 0
    for container in init_containers:
        if container.get("restartPolicy") == "Always":
            sidecars += _memory_limit(container)
        else:
            init_peak = max(init_peak, sidecars + _memory_limit(container))
    total = max(sum(_memory_limit(c) for c in containers) + sidecars, init_peak)
    overhead = (spec.get("overhead") or {}).get("memory")
    if overhead is not None:
        total += parse_quantity(str(overhead)).value()
    return total

