"""Apply one image layer (a tar stream: plain, gzip or zstd) onto a directory, safely.

The layer is streamed once: the uncompressed bytes are hashed (the layer's diff_id) while members are
extracted. Whiteouts follow the OCI image spec. With ``overlay=True`` the layer gets its own directory and
whiteouts become what overlayfs understands (a 0/0 character device, the ``trusted.overlay.opaque`` xattr);
with ``overlay=False`` the layer is applied onto a merged tree and whiteouts really delete.

Security: member paths are made relative (a leading '/' is dropped, as Docker does) and rejected when they
climb out with '..'. Every parent directory is resolved inside ``dest`` as if it were '/', following
symlinks only within it, so a layer that plants ``evil -> /etc`` cannot write through ``evil/...``. The
last component is never followed: whatever sits there is replaced. ``trusted.overlay.*`` xattrs carried
in a layer are dropped, since they would steer overlayfs. Device nodes and fifos are created with mknod
(we run as root; the devices cgroup keeps containers from using them); where the filesystem refuses
device nodes (EPERM, e.g. inside a user namespace) the layer is refused with a PermissionError.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO

import zstandard

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_XATTR_PREFIX = "trusted.overlay."
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
PAX_XATTR_PREFIX = "SCHILY.xattr."

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# tarfile's stream reader re-slices its whole buffer on every read: a large buffer makes each header costly
_TAR_BUFSIZE = 64 << 10
_MAX_SYMLINK_HOPS = 40  # Linux's MAXSYMLINKS
_NS_PER_SECOND = 1_000_000_000


class UnsafeLayer(ValueError):
    """A layer member tries to reach outside the directory the layer is applied to."""


@dataclass(frozen=True)
class LayerStats:
    diff_id: str  # "sha256:<hex>" of the uncompressed tar stream
    size: int  # bytes in the uncompressed tar stream
    left_out: int = 0  # entries a tar cannot hold (sockets), when the tar was written from a directory


def apply_layer(source: BinaryIO, dest: Path, *, overlay: bool) -> LayerStats:
    """Extract the layer tar read from ``source`` into the existing directory ``dest``."""
    stream = _HashingReader(_decompressed(source))
    applier = _LayerApplier(str(dest), overlay=overlay)
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=_TAR_BUFSIZE) as tar:
            for member in tar:
                applier.apply(member, tar)
        stream.drain()  # the end-of-archive padding is part of the diff_id too
    except (tarfile.TarError, gzip.BadGzipFile, zstandard.ZstdError, EOFError) as err:
        raise ValueError(f"not a valid layer tar stream: {err}") from err
    applier.finish()
    return stream.stats()


def member_mtime_ns(member: tarfile.TarInfo) -> int:
    """The member's mtime in nanoseconds, exact when a PAX header carries the fraction."""
    text = member.pax_headers.get("mtime")
    if text:
        try:
            return int(Decimal(text).scaleb(9))
        except InvalidOperation:
            pass
    return int(member.mtime * _NS_PER_SECOND)


def pax_mtime(mtime_ns: int) -> str | None:
    """The PAX ``mtime`` record for a nanosecond mtime, or None when whole seconds suffice."""
    if mtime_ns % _NS_PER_SECOND == 0:
        return None
    return str(Decimal(mtime_ns).scaleb(-9).normalize())


def is_overlay_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class _HashingReader:
    """Hashes and counts every byte the tar reader pulls through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self._size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._sha.update(data)
        self._size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def stats(self) -> LayerStats:
        return LayerStats(diff_id=f"sha256:{self._sha.hexdigest()}", size=self._size)


class _Prefixed:
    """Replays the bytes peeked for format detection, then reads on from the source."""

    def __init__(self, prefix: bytes, raw: BinaryIO) -> None:
        self._prefix = prefix
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if not self._prefix:
            return self._raw.read(n)
        if n is None or n < 0:
            data, self._prefix = self._prefix + self._raw.read(), b""
            return data
        data, self._prefix = self._prefix[:n], self._prefix[n:]
        return data


def _decompressed(source: BinaryIO) -> BinaryIO:
    head = b""
    while len(head) < 4:
        chunk = source.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    raw = _Prefixed(head, source)
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    if head == _ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(  # type: ignore[return-value]
            raw, read_size=_CHUNK, read_across_frames=True, closefd=False
        )
    return raw  # type: ignore[return-value]


def _normalize(name: str) -> str | None:
    """``name`` relative to the root ("." for the root itself), or None when it climbs out of it."""
    relative = name.lstrip("/")
    cleaned = posixpath.normpath(relative) if relative else "."
    return None if cleaned == ".." or cleaned.startswith("../") else cleaned


def _member_path(member: tarfile.TarInfo) -> str:
    name = _normalize(member.name)
    if name is None:
        raise UnsafeLayer(f"layer member {member.name!r} escapes the root")
    return name


def _layer_xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    xattrs = {}
    for key, value in member.pax_headers.items():
        if key.startswith(PAX_XATTR_PREFIX):
            name = key[len(PAX_XATTR_PREFIX) :]
            if not name.startswith(OVERLAY_XATTR_PREFIX):
                # tarfile decodes undecodable bytes with surrogateescape: this restores them
                xattrs[name] = value.encode("utf-8", "surrogateescape")
    return xattrs


def _set_xattrs(target: str | int, member: tarfile.TarInfo) -> None:
    for name, value in _layer_xattrs(member).items():
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as err:
            # the filesystem does not support this namespace (or, for user.*, this file type)
            if err.errno not in (errno.ENOTSUP, errno.EPERM):
                raise


class _LayerApplier:
    """Applies members one by one; remembers what this layer wrote and which directories to finish."""

    def __init__(self, root: str, *, overlay: bool) -> None:
        self.root = root
        self.overlay = overlay
        # real paths written by this layer: whiteouts hide lower layers only, never the layer's own files
        self.unpacked: set[str] = set()
        # directories whose mode and mtime are set last, once their contents stop touching them
        self.directories: list[tarfile.TarInfo] = []
        # parent name -> real directory; valid until a directory or symlink is removed
        self.parents: dict[str, str] = {}

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = _member_path(member)
        if name == ".":
            return  # the root's own entry: the destination directory keeps its attributes
        parent_name, base = posixpath.split(name)
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent_name, base, member.name)
            return
        path = os.path.join(self._parent_dir(parent_name, member.name), base)
        if member.isdir():
            self._directory(path, member)
        elif member.islnk():
            self._hardlink(path, member)
        else:
            self._remove(path)
            if member.isreg():
                self._file(path, member, tar)
            elif member.issym():
                self._symlink(path, member)
            elif member.ischr() or member.isblk() or member.isfifo():
                self._special(path, member)
            else:
                raise ValueError(f"layer member {member.name!r} has unsupported tar type {member.type!r}")
        self.unpacked.add(path)

    def finish(self) -> None:
        for member in reversed(self.directories):
            # resolve again: a later member may have replaced the directory or one of its parents
            parent_name, base = posixpath.split(_member_path(member))
            path = os.path.join(self.root, *self._resolve(parent_name, member.name), base)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
            except (FileNotFoundError, NotADirectoryError):
                continue
            os.chmod(path, member.mode)
            ns = member_mtime_ns(member)
            os.utime(path, ns=(ns, ns), follow_symlinks=False)

    def _resolve(self, relative: str, member_name: str) -> list[str]:
        """Resolve ``relative`` inside the root as if the root were '/': the real components below it."""
        pending = deque(relative.split("/"))
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = os.path.join(self.root, *resolved, part)
            try:
                st = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                resolved.append(part)
                continue
            if not stat.S_ISLNK(st.st_mode):
                resolved.append(part)
                continue
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise UnsafeLayer(f"layer member {member_name!r}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending.extendleft(reversed(target.split("/")))
        return resolved

    def _parent_dir(self, relative: str, member_name: str) -> str:
        """The real directory for ``relative``, creating missing components (mode 0755)."""
        known = self.parents.get(relative)
        if known is not None:
            return known
        path = self.root
        for part in self._resolve(relative, member_name):
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(
                    errno.ENOTDIR, f"layer member {member_name!r}: parent {path!r} is not a directory"
                )
        self.parents[relative] = path
        return path

    def _remove(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self.parents.clear()  # paths resolved through it mean something else now

    def _whiteout(self, parent_name: str, base: str, member_name: str) -> None:
        if self.overlay:
            parent = self._parent_dir(parent_name, member_name)  # the whiteout itself must be stored
        else:
            parent = os.path.join(self.root, *self._resolve(parent_name, member_name))
            if not os.path.isdir(parent):
                return  # nothing below a missing directory to delete
        if base == OPAQUE_MARKER:
            if self.overlay:
                os.setxattr(parent, OVERLAY_OPAQUE_XATTR, b"y", follow_symlinks=False)
            else:
                self._clear_lower_entries(parent)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other ".wh..wh." names are aufs bookkeeping with no meaning here
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise UnsafeLayer(f"layer member {member_name!r} is not a valid whiteout")
        path = os.path.join(parent, hidden)
        if path in self.unpacked:
            return
        self._remove(path)
        if self.overlay:
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))

    def _clear_lower_entries(self, directory: str) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.path not in self.unpacked:
                    self._remove(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    self._clear_lower_entries(entry.path)

    def _directory(self, path: str, member: tarfile.TarInfo) -> None:
        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            self._remove(path)
            os.mkdir(path, 0o700)
        os.lchown(path, member.uid, member.gid)
        _set_xattrs(path, member)
        self.directories.append(member)

    def _file(self, path: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        data = tar.extractfile(member)
        assert data is not None  # regular members always have a data stream
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(data, out, _CHUNK)
            out.flush()
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode)  # after chown, which clears setuid/setgid
            _set_xattrs(fd, member)
            ns = member_mtime_ns(member)
            os.utime(fd, ns=(ns, ns))

    def _symlink(self, path: str, member: tarfile.TarInfo) -> None:
        os.symlink(member.linkname, path)  # kept as written: it is resolved inside the container's root
        os.lchown(path, member.uid, member.gid)
        _set_xattrs(path, member)
        ns = member_mtime_ns(member)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)

    def _hardlink(self, path: str, member: tarfile.TarInfo) -> None:
        target_name = _normalize(member.linkname)
        if target_name is None:
            raise UnsafeLayer(
                f"layer member {member.name!r} links to {member.linkname!r}, which escapes the root"
            )
        target_parent, target_base = posixpath.split(target_name)
        target = os.path.join(self.root, *self._resolve(target_parent, member.name), target_base)
        if target == path:
            return
        try:
            target_stat = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError) as err:
            raise FileNotFoundError(
                errno.ENOENT,
                f"layer member {member.name!r}: hard link target {member.linkname!r} does not exist",
            ) from err
        if stat.S_ISDIR(target_stat.st_mode):
            raise IsADirectoryError(
                errno.EISDIR,
                f"layer member {member.name!r}: hard link target {member.linkname!r} is a directory",
            )
        self._remove(path)
        os.link(target, path, follow_symlinks=False)

    def _special(self, path: str, member: tarfile.TarInfo) -> None:
        if member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            try:
                os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
            except PermissionError as err:
                raise PermissionError(
                    err.errno,
                    f"layer member {member.name!r}: this filesystem refuses device nodes ({err.strerror})",
                ) from err
        os.lchown(path, member.uid, member.gid)
        os.chmod(path, member.mode)
        _set_xattrs(path, member)
        ns = member_mtime_ns(member)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
