"""The way back from a filesystem to a layer: write a container's changes as an OCI layer tar.

``diff_upper`` reads an overlayfs upper directory, where the changes already are: overlay whiteouts (0/0
character devices) become ``.wh.<name>`` entries and opaque directories get a ``.wh..wh..opq`` entry.
``diff_trees`` compares two full trees (the copy fallback): whatever was added or changed is written,
whatever disappeared becomes a whiteout.

Both write uncompressed PAX tars in a deterministic order (per directory: the opaque marker, then
whiteouts, then entries by name, directories before what they hold), keep numeric uid/gid, modes,
nanosecond mtimes and xattrs (not ``trusted.overlay.*``: those are overlayfs' own bookkeeping), and write
a file with several links inside the tree once, the other names as hard links to it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

from pocketkube.engine.snapshots.unpack import (
    OPAQUE_MARKER,
    OVERLAY_OPAQUE_XATTR,
    OVERLAY_XATTR_PREFIX,
    PAX_XATTR_PREFIX,
    WHITEOUT_PREFIX,
    LayerStats,
    is_overlay_whiteout,
    pax_mtime,
)

_CHUNK = 1 << 20
# tarfile's stream writer copies its whole buffer on every header: a large buffer makes each one costly
_TAR_BUFSIZE = 64 << 10
_NS_PER_SECOND = 1_000_000_000
# upper dirs written with these features keep data outside the upper dir: a plain walk would miss it
_UNSUPPORTED_OVERLAY_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")


def diff_upper(upper: Path, dest: BinaryIO, *, lower: list[Path] | None = None) -> LayerStats:
    """Write the layer tar for an overlay upper dir to ``dest``.

    ``lower`` (the snapshot's lower dirs, top first) is optional: given, whiteouts and opaque markers that
    hide nothing below are left out (overlayfs marks every directory created in a merged directory
    opaque, as an optimisation).
    """
    lowers = [str(path) for path in lower] if lower is not None else None
    with _LayerWriter(dest) as out:
        _write_upper(out, str(upper), "", lowers)
    return out.stats()


def diff_trees(lower_root: Path, upper_root: Path, dest: BinaryIO) -> LayerStats:
    """Write the layer tar that turns the tree ``lower_root`` into the tree ``upper_root``."""
    with _LayerWriter(dest) as out:
        for change in _tree_changes(str(lower_root), str(upper_root), ""):
            if isinstance(change, str):
                out.whiteout(change)
            else:
                out.add(*change)
    return out.stats()


class _HashingWriter:
    def __init__(self, dest: BinaryIO) -> None:
        self._dest = dest
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        self.size += len(data)
        self._dest.write(data)
        return len(data)

    def stats(self, left_out: int) -> LayerStats:
        return LayerStats(diff_id=f"sha256:{self._sha.hexdigest()}", size=self.size, left_out=left_out)


class _LayerWriter:
    """A PAX tar stream of filesystem entries, hashed as it is written."""

    def __init__(self, dest: BinaryIO) -> None:
        self._sink = _HashingWriter(dest)
        self._tar = tarfile.open(
            fileobj=self._sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_TAR_BUFSIZE
        )
        self._first_names: dict[tuple[int, int], str] = {}
        self._left_out = 0

    def __enter__(self) -> _LayerWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:  # a failed layer gets no end-of-archive: it must not look complete
            self._tar.close()

    def stats(self) -> LayerStats:
        return self._sink.stats(self._left_out)

    def add(self, path: str, name: str, st: os.stat_result) -> None:
        info = _tar_info(path, name, st)
        if info is None:
            self._left_out += 1
            return
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            first = self._first_names.setdefault((st.st_dev, st.st_ino), name)
            if first != name:
                info.type, info.linkname, info.size = tarfile.LNKTYPE, first, 0
        if info.type == tarfile.REGTYPE:
            with open(path, "rb") as data:
                self._tar.addfile(info, data)
        else:
            self._tar.addfile(info)

    def whiteout(self, name: str) -> None:
        parent, base = posixpath.split(name)
        self._marker(posixpath.join(parent, WHITEOUT_PREFIX + base))

    def opaque(self, directory: str) -> None:
        self._marker(posixpath.join(directory, OPAQUE_MARKER))

    def _marker(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.mode = 0o644
        info.uname = info.gname = ""
        self._tar.addfile(info)


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}  # the filesystem keeps no xattrs
    for name in _UNSUPPORTED_OVERLAY_XATTRS:
        if name in names:
            raise ValueError(f"{path} carries {name}: overlay redirect_dir/metacopy layers cannot be diffed")
    return {
        name: os.getxattr(path, name, follow_symlinks=False)
        for name in sorted(names)
        if not name.startswith(OVERLAY_XATTR_PREFIX)
    }


def _tar_info(path: str, name: str, st: os.stat_result) -> tarfile.TarInfo | None:
    """The tar header for one entry, or None for what tar cannot hold (sockets)."""
    info = tarfile.TarInfo(name)
    mode = st.st_mode
    if stat.S_ISREG(mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        return None
    info.mode = stat.S_IMODE(mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""  # numeric ids only: names differ between hosts
    info.mtime = st.st_mtime_ns // _NS_PER_SECOND
    fraction = pax_mtime(st.st_mtime_ns)
    if fraction is not None:
        info.pax_headers["mtime"] = fraction
    for xattr, value in _xattrs(path).items():
        info.pax_headers[PAX_XATTR_PREFIX + xattr] = value.decode("utf-8", "surrogateescape")
    return info


def _sorted_entries(directory: str) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as entries:
        return sorted(entries, key=lambda entry: entry.name)


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _visible_below(lowers: list[str], name: str) -> bool:
    """Whether ``name`` shows in the lower dirs (top first); errs towards True, which only costs a marker."""
    *parents, base = name.split("/")
    for layer in lowers:
        directory = layer
        for part in parents:
            directory = os.path.join(directory, part)
            try:
                if not stat.S_ISDIR(os.lstat(directory).st_mode):
                    break
            except FileNotFoundError:
                break
        else:
            try:
                return not is_overlay_whiteout(os.lstat(os.path.join(directory, base)))
            except FileNotFoundError:
                continue
    return False


def _write_upper(out: _LayerWriter, directory: str, prefix: str, lowers: list[str] | None) -> None:
    entries = _sorted_entries(directory)
    stats = {entry.name: entry.stat(follow_symlinks=False) for entry in entries}
    for entry in entries:
        name = posixpath.join(prefix, entry.name)
        if is_overlay_whiteout(stats[entry.name]) and (lowers is None or _visible_below(lowers, name)):
            out.whiteout(name)
    for entry in entries:
        st = stats[entry.name]
        if is_overlay_whiteout(st):
            continue
        name = posixpath.join(prefix, entry.name)
        out.add(entry.path, name, st)
        if stat.S_ISDIR(st.st_mode):
            if _is_opaque(entry.path) and (lowers is None or _visible_below(lowers, name)):
                out.opaque(name)
            _write_upper(out, entry.path, name, lowers)


# A change is a whiteout (the deleted name) or an entry to add: (path in the upper tree, name, stat).
_Change = str | tuple[str, str, os.stat_result]


def _files_differ(first: str, second: str) -> bool:
    with open(first, "rb") as a, open(second, "rb") as b:
        while True:
            chunk = a.read(_CHUNK)
            if chunk != b.read(_CHUNK):
                return True
            if not chunk:
                return False


def _changed(lower_path: str, lower: os.stat_result, upper_path: str, upper: os.stat_result) -> bool:
    if stat.S_IFMT(lower.st_mode) != stat.S_IFMT(upper.st_mode):
        return True
    if (lower.st_mode, lower.st_uid, lower.st_gid, lower.st_mtime_ns) != (
        upper.st_mode,
        upper.st_uid,
        upper.st_gid,
        upper.st_mtime_ns,
    ):
        return True
    if _xattrs(lower_path) != _xattrs(upper_path):
        return True
    if stat.S_ISLNK(upper.st_mode):
        return os.readlink(lower_path) != os.readlink(upper_path)
    if stat.S_ISCHR(upper.st_mode) or stat.S_ISBLK(upper.st_mode):
        return lower.st_rdev != upper.st_rdev
    if stat.S_ISREG(upper.st_mode):
        return lower.st_size != upper.st_size or _files_differ(lower_path, upper_path)
    return False


def _whole_subtree(directory: str, prefix: str) -> list[_Change]:
    changes: list[_Change] = []
    for entry in _sorted_entries(directory):
        st = entry.stat(follow_symlinks=False)
        name = posixpath.join(prefix, entry.name)
        changes.append((entry.path, name, st))
        if stat.S_ISDIR(st.st_mode):
            changes.extend(_whole_subtree(entry.path, name))
    return changes


def _tree_changes(lower_root: str, upper_root: str, prefix: str) -> list[_Change]:
    lower_dir = os.path.join(lower_root, prefix)
    upper_dir = os.path.join(upper_root, prefix)
    upper_entries = _sorted_entries(upper_dir)
    upper_names = {entry.name for entry in upper_entries}
    changes: list[_Change] = [
        posixpath.join(prefix, name) for name in sorted(set(os.listdir(lower_dir)) - upper_names)
    ]
    for entry in upper_entries:
        name = posixpath.join(prefix, entry.name)
        st = entry.stat(follow_symlinks=False)
        lower_path = os.path.join(lower_dir, entry.name)
        try:
            lower_st = os.lstat(lower_path)
        except FileNotFoundError:
            lower_st = None
        if lower_st is not None and stat.S_ISDIR(lower_st.st_mode) and stat.S_ISDIR(st.st_mode):
            inside = _tree_changes(lower_root, upper_root, name)
            if inside or _changed(lower_path, lower_st, entry.path, st):
                changes.append((entry.path, name, st))
                changes.extend(inside)
        elif lower_st is None or _changed(lower_path, lower_st, entry.path, st):
            changes.append((entry.path, name, st))
            if stat.S_ISDIR(st.st_mode):
                changes.extend(_whole_subtree(entry.path, name))
    return changes
