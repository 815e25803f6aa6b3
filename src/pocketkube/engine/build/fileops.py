"""COPY, ADD and WORKDIR as file operations on a step's mounted root filesystem (Docker's semantics).

A directory source copies its contents; a file goes into a destination that ends with "/" or is a
directory, else becomes the destination; several sources need a directory. Copies keep modes, mtimes,
symlinks and hard links; ownership becomes root's (or --chown's) for the build context and is kept for
stages and images; --chmod sets the mode of what is copied. ADD unpacks local tar archives (plain, gzip,
bzip2, xz, zstd), keeping the archive's ownership.

Layers stay reproducible: directories the step creates get the epoch as mtime, and directories that were
already there get their mtime back once the step is done, so the same sources give the same layer."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from pocketkube.engine.build.context import SourceEntry, SourceTree
from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.steps import CopyStep
from pocketkube.engine.paths import resolve_in_root
from pocketkube.engine.runtime.users import UserNotFound, resolve_user
from pocketkube.engine.snapshots.unpack import apply_layer

CREATED_MTIME_NS = 0  # what directories a COPY creates get: the epoch, like SOURCE_DATE_EPOCH=0
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BZIP2_MAGIC = b"BZh"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def resolve_chown(rootfs: Path, chown: str) -> tuple[int, int] | None:
    """--chown=user[:group] against the image's /etc/passwd and /etc/group (BuildKit's rules: a numeric
    user without a group gets the same number as gid, a named one its primary group)."""
    if not chown:
        return None
    user, _, group = chown.partition(":")
    try:
        if user.isdigit():
            uid = gid = int(user)
        else:
            uid, gid, _, _ = resolve_user(rootfs, user)
        if group:
            gid = resolve_user(rootfs, f"0:{group}")[1]
    except UserNotFound as err:
        raise BuildError(f"unable to convert uid/gid chown string to host mapping: {err}") from None
    return uid, gid


class TreeWriter:
    """Writes into the root filesystem mounted at ``root`` and settles directory mtimes at the end."""

    def __init__(self, root: Path, owner: tuple[int, int] | None, chmod: int | None) -> None:
        self.root = root
        self.owner = owner
        self.chmod = chmod
        self._times: dict[Path, int] = {}
        self._links: dict[tuple[int, int], Path] = {}

    # --- directories ------------------------------------------------------------------------------

    def ensure_dir(self, path: str) -> Path:
        """The directory at ``path`` inside the root (symlinks followed inside it, never out of it),
        created with its parents (0755, owned by --chown's owner, else root) where missing."""
        owner = self.owner or (0, 0)
        current = self.root
        for part in [p for p in path.split("/") if p]:
            following = resolve_in_root(self.root, str(current.relative_to(self.root) / part))
            if not following.is_dir():
                self._touch(following.parent)
                if os.path.lexists(following):
                    os.unlink(following)  # a file where a directory must be: Docker replaces it too
                os.mkdir(following, 0o755)
                os.chmod(following, 0o755)
                os.lchown(following, *owner)
                self._times[following] = CREATED_MTIME_NS
            current = following
        return current

    def _touch(self, directory: Path) -> None:
        """``directory`` is about to change: remember its mtime to restore it."""
        if directory not in self._times:
            with contextlib.suppress(FileNotFoundError):
                self._times[directory] = os.lstat(directory).st_mtime_ns

    # --- entries ----------------------------------------------------------------------------------

    def copy_entry(self, source: Path, st: os.stat_result, dest: Path, keep_owner: bool) -> None:
        """One file, symlink, device or directory (without its contents) from ``source`` to ``dest``."""
        self._touch(dest.parent)
        mode = stat.S_IMODE(st.st_mode)
        owner = self.owner or ((st.st_uid, st.st_gid) if keep_owner else (0, 0))
        if stat.S_ISDIR(st.st_mode):
            if os.path.lexists(dest) and not (dest.is_dir() and not dest.is_symlink()):
                os.unlink(dest)
            if not os.path.lexists(dest):
                os.mkdir(dest, 0o700)
        else:
            self._remove(dest)
            if st.st_nlink > 1 and (first := self._links.get((st.st_dev, st.st_ino))) is not None:
                os.link(first, dest)
                return
            if stat.S_ISREG(st.st_mode):
                shutil.copyfile(source, dest, follow_symlinks=False)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(source), dest)
            elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                os.mknod(dest, st.st_mode, st.st_rdev)
            else:
                return  # sockets are not copied, as with Docker
            if st.st_nlink > 1:
                self._links[(st.st_dev, st.st_ino)] = dest
        os.lchown(dest, *owner)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dest, self.chmod if self.chmod is not None else mode)
        if stat.S_ISDIR(st.st_mode):
            self._times[dest] = st.st_mtime_ns
        else:
            os.utime(dest, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)

    def write_file(self, dest: Path, data: bytes) -> None:
        """A file made of ``data`` (a heredoc): 0644 unless --chmod, root's unless --chown."""
        self._touch(dest.parent)
        self._remove(dest)
        with open(dest, "xb") as out:
            out.write(data)
        os.lchown(dest, *(self.owner or (0, 0)))
        os.chmod(dest, self.chmod if self.chmod is not None else 0o644)
        os.utime(dest, ns=(CREATED_MTIME_NS, CREATED_MTIME_NS))

    def extract(self, open_tar: Callable[[], BinaryIO], directory: Path) -> None:
        """Unpack a tar (``open_tar`` gives it uncompressed) into ``directory`` (paths kept inside it),
        applying --chown/--chmod if given."""
        self._touch(directory)
        names = []
        if self.owner is not None or self.chmod is not None:
            with open_tar() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                names = [member.name for member in tar]
        with open_tar() as stream:
            apply_layer(stream, directory, overlay=False)
        for name in names:
            path = resolve_in_root(directory, posixpath.dirname(name)) / posixpath.basename(name.rstrip("/"))
            if not os.path.lexists(path):
                continue
            if self.owner is not None:
                os.lchown(path, *self.owner)
            if self.chmod is not None and not path.is_symlink():
                os.chmod(path, self.chmod)

    def _remove(self, dest: Path) -> None:
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif os.path.lexists(dest):
            os.unlink(dest)

    def finish(self) -> None:
        """Give directories their final mtimes (after the last entry was created in them)."""
        for directory, mtime in self._times.items():
            with contextlib.suppress(FileNotFoundError):
                os.utime(directory, ns=(mtime, mtime), follow_symlinks=False)


def copy_into(rootfs: Path, step: CopyStep, tree: SourceTree | None, entries: list[SourceEntry]) -> None:
    """Carry out a COPY/ADD step whose sources resolved to ``entries`` of ``tree``."""
    writer = TreeWriter(rootfs, resolve_chown(rootfs, step.chown), step.chmod)
    into = step.dest.endswith("/")
    target = resolve_in_root(rootfs, step.dest)
    if len(entries) + len(step.inline) > 1 and not into and not target.is_dir():
        raise BuildError(f"When using {step.instruction} with more than one source file, the destination must be "
                         "a directory and end with a /")
    for entry in entries:
        if entry.is_dir:
            assert tree is not None
            _copy_tree(writer, tree, entry, writer.ensure_dir(step.dest))
        elif step.instruction == "ADD" and (open_tar := _tar_opener(entry.path)) is not None:
            writer.extract(open_tar, writer.ensure_dir(step.dest))
        else:
            assert tree is not None
            dest = _file_target(writer, step.dest, into, posixpath.basename(entry.name))
            writer.copy_entry(entry.path, os.lstat(entry.path), dest, tree.keep_owner)
    for name, content in step.inline:
        writer.write_file(_file_target(writer, step.dest, True if len(step.inline) > 1 else into, name),
                          content.encode())
    if not entries and not step.inline:
        writer.ensure_dir(step.dest)  # an empty wildcard still creates the destination, as BuildKit does
    writer.finish()


def make_workdir(rootfs: Path, path: str, user: str) -> None:
    """WORKDIR's directory, created (with its parents) owned by USER where missing."""
    try:
        uid, gid, _, _ = resolve_user(rootfs, user)
    except UserNotFound as err:
        raise BuildError(str(err)) from None
    writer = TreeWriter(rootfs, (uid, gid), None)
    writer.ensure_dir(path)
    writer.finish()


def _file_target(writer: TreeWriter, dest: str, into: bool, name: str) -> Path:
    """Where a single file goes: inside ``dest`` when it is (or is named as) a directory."""
    target = resolve_in_root(writer.root, dest)
    if into or target.is_dir():
        return writer.ensure_dir(dest) / name
    parent, base = posixpath.split(dest.rstrip("/"))
    return writer.ensure_dir(parent or "/") / base


def _copy_tree(writer: TreeWriter, tree: SourceTree, entry: SourceEntry, directory: Path) -> None:
    created: dict[str, Path] = {"": directory}
    for path, name, st in _children(tree, entry):
        parent = created[posixpath.dirname(name)]
        dest = parent / posixpath.basename(name)
        writer.copy_entry(path, st, dest, tree.keep_owner)
        if stat.S_ISDIR(st.st_mode):
            created[name] = dest


def _children(tree: SourceTree, entry: SourceEntry) -> Iterator[tuple[Path, str, os.stat_result]]:
    walk = tree.walk(entry)
    next(walk)  # the directory itself: only its contents are copied
    yield from walk


def _tar_opener(path: Path) -> Callable[[], BinaryIO] | None:
    """For a tar archive (plain, gzip, bzip2, xz or zstd): a function opening it uncompressed; else None."""
    with open(path, "rb") as f:
        head = f.read(6)

    def open_tar() -> BinaryIO:
        if head.startswith(_GZIP_MAGIC):
            return gzip.open(path, "rb")
        if head.startswith(_BZIP2_MAGIC):
            return bz2.open(path, "rb")
        if head.startswith(_XZ_MAGIC):
            return lzma.open(path, "rb")
        if head.startswith(_ZSTD_MAGIC):
            return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
        return open(path, "rb")

    try:
        with open_tar() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            if tar.next() is None:
                return None
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, ValueError):
        return None
    return open_tar
