"""apply_layer on real tar streams: metadata kept, compression detected, whiteouts, hostile layers."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from pocketkube.engine.snapshots.unpack import UnsafeLayer, apply_layer


def _entry(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    data = attrs.pop("data", b"")
    assert isinstance(data, bytes)
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def _tar(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _apply(layer: bytes, dest: Path, *, overlay: bool = False):
    return apply_layer(io.BytesIO(layer), dest, overlay=overlay)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dest"
    path.mkdir()
    return path


def test_files_dirs_links_keep_their_metadata(dest: Path) -> None:
    layer = _tar(
        _entry("usr", tarfile.DIRTYPE, mode=0o750, uid=11, gid=12, mtime=1_500_000_000),
        _entry("usr/bin", tarfile.DIRTYPE),
        _entry(
            "usr/bin/tool",
            data=b"#!/bin/sh\n",
            mode=0o4755,
            uid=1234,
            gid=5678,
            pax_headers={"mtime": "1600000000.123456789", "SCHILY.xattr.user.origin": "layer-one"},
        ),
        _entry("usr/bin/alias", tarfile.LNKTYPE, linkname="usr/bin/tool"),
        _entry("usr/bin/sh", tarfile.SYMTYPE, linkname="tool", uid=7, gid=8),
        _entry("tmp", tarfile.DIRTYPE, mode=0o1777),
        _entry("/etc/absolute", data=b"made relative"),
    )
    _apply(layer, dest)

    usr = (dest / "usr").stat()
    assert (stat.S_IMODE(usr.st_mode), usr.st_uid, usr.st_gid) == (0o750, 11, 12)
    assert usr.st_mtime_ns == 1_500_000_000 * 10**9  # set after its contents were written
    tool = (dest / "usr/bin/tool").stat()
    assert (dest / "usr/bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid) == (0o4755, 1234, 5678)
    assert tool.st_mtime_ns == 1_600_000_000_123_456_789
    assert os.getxattr(dest / "usr/bin/tool", "user.origin") == b"layer-one"
    alias = (dest / "usr/bin/alias").stat()
    assert (alias.st_ino, alias.st_nlink) == (tool.st_ino, 2)
    assert os.readlink(dest / "usr/bin/sh") == "tool"
    link = os.lstat(dest / "usr/bin/sh")
    assert (link.st_uid, link.st_gid, link.st_mtime_ns) == (7, 8, 1_600_000_000 * 10**9)
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o1777
    assert (dest / "etc/absolute").read_bytes() == b"made relative"


@pytest.mark.parametrize("compression", ["plain", "gzip", "zstd"])
def test_compression_is_detected_and_diff_id_hashes_the_plain_tar(dest: Path, compression: str) -> None:
    layer = _tar(_entry("hello", data=b"world" * 1000), _entry("dir", tarfile.DIRTYPE))
    blob = {
        "plain": lambda: layer,
        "gzip": lambda: gzip.compress(layer),
        "zstd": lambda: zstandard.ZstdCompressor().compress(layer),
    }[compression]()

    stats = apply_layer(io.BytesIO(blob), dest, overlay=False)

    assert stats.diff_id == "sha256:" + hashlib.sha256(layer).hexdigest()
    assert stats.size == len(layer)
    assert (dest / "hello").read_bytes() == b"world" * 1000


def test_whiteouts_become_overlay_markers(dest: Path) -> None:
    layer = _tar(
        _entry(".wh.gone"),
        _entry("conf", tarfile.DIRTYPE),
        _entry("conf/.wh..wh..opq"),
        _entry("conf/fresh", data=b"new"),
        _entry("deep/down/.wh.file"),
    )
    _apply(layer, dest, overlay=True)

    for whiteout in (dest / "gone", dest / "deep/down/file"):
        st = os.lstat(whiteout)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "conf", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(dest / "conf")) == ["fresh"]
    assert not list(dest.glob("**/.wh.*"))


def test_whiteouts_delete_from_a_merged_tree(dest: Path) -> None:
    (dest / "gone").write_text("lower")
    (dest / "gonedir/sub").mkdir(parents=True)
    (dest / "gonedir/sub/file").write_text("lower")
    (dest / "conf/sub").mkdir(parents=True)
    (dest / "conf/old").write_text("lower")
    (dest / "conf/sub/older").write_text("lower")
    layer = _tar(
        _entry("conf", tarfile.DIRTYPE),
        _entry("conf/sub", tarfile.DIRTYPE),
        _entry("conf/sub/newer", data=b"this layer"),
        _entry("conf/mine", data=b"this layer"),
        _entry("conf/.wh..wh..opq"),  # after this layer's own entries: those must stay
        _entry(".wh.gone"),
        _entry(".wh.gonedir"),
        _entry("kept", data=b"this layer"),
        _entry(".wh.kept"),  # a whiteout never hides its own layer's files
        _entry("missing/.wh.nothing"),
    )
    _apply(layer, dest)

    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "conf",
        "conf/mine",
        "conf/sub",
        "conf/sub/newer",
        "kept",
    ]


def test_overlay_xattrs_from_a_layer_are_dropped(dest: Path) -> None:
    steering = {
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.user.kept": "yes",
    }
    _apply(_tar(_entry("dir", tarfile.DIRTYPE, pax_headers=steering)), dest, overlay=True)
    assert os.listxattr(dest / "dir") == ["user.kept"]


def test_dotdot_members_are_refused(tmp_path: Path, dest: Path) -> None:
    for name in ("../escaped", "a/../../escaped"):
        with pytest.raises(UnsafeLayer, match=r"layer member '[a/.]*\.\./escaped' escapes the root"):
            _apply(_tar(_entry(name, data=b"x")), dest)
    assert not (tmp_path / "escaped").exists()


def test_symlinked_parents_stay_inside_the_root(tmp_path: Path, dest: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = _tar(
        _entry("evil", tarfile.SYMTYPE, linkname=str(outside)),
        _entry("evil/file", data=b"absolute"),
        _entry("up", tarfile.SYMTYPE, linkname="../../../../../../" + str(outside)),
        _entry("up/file2", data=b"relative"),
        # a chain: hop1 -> hop2 -> sub/.. -> / (the root, not the host's)
        _entry("hop1", tarfile.SYMTYPE, linkname="hop2"),
        _entry("hop2", tarfile.SYMTYPE, linkname="sub/../../.."),
        _entry("sub", tarfile.DIRTYPE),
        _entry("hop1/tmp/chained", data=b"chained"),
    )
    _apply(layer, dest)

    assert list(outside.iterdir()) == []
    inside = dest / str(outside).lstrip("/")
    assert (inside / "file").read_bytes() == b"absolute"
    assert (inside / "file2").read_bytes() == b"relative"
    assert (dest / "tmp/chained").read_bytes() == b"chained"
    assert os.readlink(dest / "evil") == str(outside)  # the symlink itself is kept as written


def test_symlink_loops_are_refused(dest: Path) -> None:
    layer = _tar(
        _entry("loop1", tarfile.SYMTYPE, linkname="loop2"),
        _entry("loop2", tarfile.SYMTYPE, linkname="loop1"),
        _entry("loop1/file", data=b"x"),
    )
    with pytest.raises(UnsafeLayer, match="too many levels of symbolic links"):
        _apply(layer, dest)


def test_hard_links_cannot_reach_outside(dest: Path) -> None:
    passwd_links = os.stat("/etc/passwd").st_nlink
    with pytest.raises(UnsafeLayer, match="links to '../../etc/passwd', which escapes the root"):
        _apply(_tar(_entry("pw", tarfile.LNKTYPE, linkname="../../etc/passwd")), dest)
    with pytest.raises(FileNotFoundError, match="hard link target '/etc/passwd' does not exist"):
        _apply(_tar(_entry("pw", tarfile.LNKTYPE, linkname="/etc/passwd")), dest)
    through_symlink = _tar(
        _entry("host", tarfile.SYMTYPE, linkname="/etc"),
        _entry("pw", tarfile.LNKTYPE, linkname="host/passwd"),
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _apply(through_symlink, dest)
    assert os.stat("/etc/passwd").st_nlink == passwd_links
    assert not (dest / "pw").exists()


def test_device_nodes_and_fifos_are_created(dest: Path) -> None:
    layer = _tar(
        _entry("dev", tarfile.DIRTYPE),
        _entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        _entry("dev/loop9", tarfile.BLKTYPE, devmajor=7, devminor=9, mode=0o660, gid=6),
        _entry("run/pipe", tarfile.FIFOTYPE, mode=0o620),
    )
    _apply(layer, dest)

    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = os.lstat(dest / "dev/loop9")
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 9) and loop.st_gid == 6
    pipe = os.lstat(dest / "run/pipe")
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620


def test_members_replace_what_is_there(tmp_path: Path, dest: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (dest / "was_file").write_text("old")
    (dest / "was_dir/sub").mkdir(parents=True)
    (dest / "merged").mkdir()
    (dest / "merged/lower").write_text("lower")
    (dest / "was_link").symlink_to(outside)
    layer = _tar(
        _entry("was_file", tarfile.DIRTYPE),
        _entry("was_file/child", data=b"child"),
        _entry("was_dir", data=b"now a file"),
        _entry("merged", tarfile.DIRTYPE, mode=0o700),
        _entry("merged/upper", data=b"upper"),
        _entry("was_link", tarfile.DIRTYPE),
        _entry("was_link/inside", data=b"inside"),
    )
    _apply(layer, dest)

    assert (dest / "was_file/child").read_bytes() == b"child"
    assert (dest / "was_dir").read_bytes() == b"now a file"
    assert sorted(os.listdir(dest / "merged")) == ["lower", "upper"]
    assert stat.S_IMODE((dest / "merged").stat().st_mode) == 0o700
    assert not (dest / "was_link").is_symlink() and (dest / "was_link/inside").exists()
    assert list(outside.iterdir()) == []


def test_not_a_tar_is_a_clear_error(dest: Path) -> None:
    with pytest.raises(ValueError, match="not a valid layer tar stream"):
        apply_layer(io.BytesIO(gzip.compress(b"definitely not a tar archive" * 40)), dest, overlay=False)
