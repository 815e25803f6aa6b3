"""subPath and subPathExpr mounts, made safe as upstream's pkg/volume/util/subpath does.

A subPath is checked (relative, no '..'), created if missing (as a directory with the volume's
permissions, one openat/mkdirat at a time so that no symlink can redirect it), resolved (symlinks that
stay inside the volume are fine: a configMap key is one) and opened component by component without
following symlinks. The open file descriptor is then bind-mounted at
pods/<uid>/volume-subpaths/<volume>/<container>/<index>, and that is what the container mounts: swapping
a path component for a symlink after the checks can no longer redirect the mount outside the volume.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from pocketkube.kubelet.volumes import downward, mounts
from pocketkube.kubelet.volumes.model import Obj, SourceError
from pocketkube.mountpoint import is_mount_point

SUBPATHS_DIR = "volume-subpaths"
_NOFOLLOW_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_NOFOLLOW_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


# --- $(VAR) expansion (third_party/forked/golang/expansion) -------------------------------------------
def expand(text: str, mapping: Callable[[str], str]) -> str:
    """`$(NAME)` becomes mapping(NAME); `$$` is a literal `$`; anything else stays as written."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                advance = 1
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:  # an unterminated reference is kept as written
                    out.append("$(")
                    advance = 1
                else:
                    out.append(mapping(text[cursor + 2:closer]))
                    advance = closer - cursor
            else:
                out.append("$" + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def container_env(pod: Obj, container: Obj, allocatable: dict[str, str]) -> dict[str, str]:
    """The container's environment as far as the pod object tells it: literal values (with $(VAR)
    references to earlier variables expanded) and fieldRef/resourceFieldRef values. Values from
    configMaps and secrets need API reads: the kubelet passes its resolved environment instead."""
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        name = entry.get("name") or ""
        source = entry.get("valueFrom") or {}
        if "value" in entry or not source:
            env[name] = expand(entry.get("value") or "", lambda key: env.get(key, f"$({key})"))
        elif source.get("fieldRef"):
            env[name] = downward.pod_field_value(pod, source["fieldRef"].get("fieldPath") or "")
        elif source.get("resourceFieldRef"):
            ref = source["resourceFieldRef"]
            target = downward.find_container(pod, ref["containerName"]) if ref.get("containerName") else container
            env[name] = downward.container_resource_value(ref, target, allocatable)
    return env


def expand_subpath_expr(expression: str, env: dict[str, str]) -> str:
    """ExpandContainerVolumeMounts: every referenced variable must exist and be non-empty."""
    missing: set[str] = set()

    def lookup(key: str) -> str:
        value = env.get(key, "")
        if not value:
            missing.add(key)
        return value

    expanded = expand(expression, lookup)
    if missing:
        raise SourceError(f"missing value for {', '.join(sorted(missing))}")
    return expanded


# --- checks and safe file operations ----------------------------------------------------------------
def validate_subpath(subpath: str) -> None:
    if subpath.startswith("/"):
        raise SourceError(f"error SubPath `{subpath}` must not be an absolute path")
    if ".." in subpath.split("/"):
        raise SourceError(f"unable to provision SubPath `{subpath}`: must not contain '..'")


def path_within_base(path: str, base: str) -> bool:
    relative = os.path.relpath(path, base)
    return relative != ".." and not relative.startswith("../")


def open_within(path: str, base: str) -> int:
    """doSafeOpen: an O_PATH descriptor of `path`, reached from `base` one component at a time; a
    component that is a symlink is refused."""
    relative = os.path.relpath(path, base)
    segments = [] if relative == "." else relative.split("/")
    fd = os.open(base, _NOFOLLOW_PATH)
    current = base
    try:
        for segment in segments:
            current = os.path.join(current, segment)
            if not path_within_base(current, base):
                raise SourceError(f"path {current} is outside of allowed base {base}")
            try:
                child = os.open(segment, _NOFOLLOW_PATH, dir_fd=fd)
            except OSError as err:
                raise SourceError(f"cannot open {current}: {err.strerror}") from err
            os.close(fd)
            fd = child
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise SourceError(f"unexpected symlink found {current}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def safe_make_dir(path: str, base: str, mode: int) -> None:
    """doSafeMakeDir: create the missing directories of `path` below `base` with the permission bits of
    `mode` (exactly, not narrowed by the umask), never through a symlink leading out of `base`. Unlike
    upstream, whose chmod drops it, the setgid bit of `mode` is kept: with fsGroup, directories below the
    new one must get the volume's group too."""
    if not path_within_base(path, base):
        raise SourceError(f"path {path} is outside of allowed base {base}")
    if os.path.isdir(path):
        return
    existing, to_create = _existing_prefix(base, path)
    resolved = os.path.realpath(existing, strict=True)
    if not path_within_base(resolved, base):
        raise SourceError(f"path {resolved} is outside of allowed base {base}")
    permissions = (mode & 0o777) | (mode & stat.S_ISGID)
    fd = open_within(resolved, base)
    try:
        for name in to_create:
            try:
                os.mkdir(name, permissions, dir_fd=fd)
                child = os.open(name, _NOFOLLOW_DIR, dir_fd=fd)
            except OSError as err:
                raise SourceError(f"cannot create directory {name} in {existing}: {err.strerror}") from err
            os.close(fd)
            fd = child
            os.fchmod(fd, permissions)
    finally:
        os.close(fd)


def _existing_prefix(base: str, path: str) -> tuple[str, list[str]]:
    """The deepest existing directory on the way from `base` to `path` (symlinks followed: the caller
    checks where it leads), and the names still to create below it."""
    parts = os.path.relpath(path, base).split("/")
    current = base
    for index, part in enumerate(parts):
        candidate = os.path.join(current, part)
        if not os.path.exists(candidate):
            return current, parts[index:]
        current = candidate
    return path, []


def _same_file(a: str, b: Path) -> bool:
    first, second = os.lstat(a), os.lstat(b)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def bind_subpath(volume_path: Path, subpath: str, target: Path) -> Path:
    """Bind-mount the volume's `subpath` at `target` through a descriptor opened safely (see the module
    docstring); an existing bind of the same file is kept, a stale one replaced. Returns `target`."""
    base = os.path.realpath(volume_path, strict=True)
    resolved = os.path.realpath(os.path.join(volume_path, subpath), strict=True)
    if not path_within_base(resolved, base):
        raise SourceError(f'subpath "{resolved}" not within volume path "{base}"')
    fd = open_within(resolved, base)
    try:
        if is_mount_point(target):
            if _same_file(resolved, target):
                return target
            mounts.unmount(target)
        target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            target.mkdir(mode=0o750, exist_ok=True)
        elif not target.exists():
            target.touch(mode=0o640)  # a file takes a bind of any non-directory
        mounts.bind_mount(f"/proc/self/fd/{fd}", target)
    finally:
        os.close(fd)
    return target
