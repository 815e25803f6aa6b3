"""hostPath (pkg/volume/hostpath): a path of the node, checked against the volume's `type` with
upstream's messages; DirectoryOrCreate and FileOrCreate make what is missing."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pocketkube.kubelet.volumes.model import SourceError

# type -> (stat predicate, what upstream says it is not)
_CHECKS = {
    "Directory": (stat.S_ISDIR, "a directory"),
    "File": (stat.S_ISREG, "a file"),
    "Socket": (stat.S_ISSOCK, "a socket file"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}


def validate_no_backsteps(path: str) -> None:
    if ".." in path.split("/"):
        raise SourceError(f"invalid HostPath `{path}`: must not contain '..'")


def _go_error(operation: str, path: str, err: OSError) -> SourceError:
    """An OSError worded as Go's *PathError, which upstream passes on unchanged."""
    text = os.strerror(err.errno or errno.EIO)
    return SourceError(f"{operation} {path}: {text[0].lower()}{text[1:]}")


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode  # follows symlinks, as upstream's os.Stat
    except FileNotFoundError:
        return None


def check_type(path: str, path_type: str | None, *, dir_mode: int = 0o755) -> None:
    """Upstream's checkType. `dir_mode` is what DirectoryOrCreate creates with (before the umask)."""
    path_type = path_type or ""
    if path_type == "":
        return
    if path_type == "DirectoryOrCreate":
        if _mode(path) is None:
            try:
                os.makedirs(path, mode=dir_mode, exist_ok=True)
            except OSError as err:
                raise _go_error("mkdir", path, err) from err
            return
        path_type = "Directory"
    elif path_type == "FileOrCreate":
        if _mode(path) is None:
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            except OSError as err:  # the parent directory is not created: upstream fails the same way
                raise _go_error("open", path, err) from err
            return
        path_type = "File"
    if path_type not in _CHECKS:
        raise SourceError(f"{path_type} is an invalid volume type")
    predicate, what = _CHECKS[path_type]
    mode = _mode(path)
    if mode is None or not predicate(mode):
        raise SourceError(f"hostPath type check failed: {path} is not {what}")


def ensure_source_exists(path: Path) -> None:
    """What the container runtime (containerd's CRI) does for a bind source that is missing: make it a
    directory, so a hostPath without a type behaves as on upstream nodes."""
    if not os.path.lexists(path):
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
