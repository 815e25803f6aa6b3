"""The AtomicWriter behind configMap, secret, downwardAPI and projected volumes: upstream's layout
(timestamped directory, ..data link, user-visible symlinks), whole-set updates and path checks."""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import pytest

from pocketkube.kubelet.volumes.atomic_writer import DATA_DIR, AtomicWriter, FileProjection, validate_path
from pocketkube.kubelet.volumes.model import SourceError

TS_DIR = re.compile(r"^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d+$")


def _files(**entries: str) -> dict[str, FileProjection]:
    return {key.replace("__", "/"): FileProjection(value.encode(), 0o644) for key, value in entries.items()}


def _ts_dirs(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if TS_DIR.match(p.name))


def test_first_write_layout(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)  # modes must not depend on the umask
    try:
        AtomicWriter(tmp_path).write({"a": FileProjection(b"1", 0o644), "dir/b": FileProjection(b"2", 0o400),
                                      "dir/sub/c": FileProjection(b"3", 0o755)})
    finally:
        os.umask(old_umask)
    (ts_dir,) = _ts_dirs(tmp_path)
    assert os.readlink(tmp_path / DATA_DIR) == ts_dir
    assert stat.S_IMODE((tmp_path / ts_dir).stat().st_mode) == 0o755
    # only the top-level names are visible, each a relative symlink through ..data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([DATA_DIR, ts_dir, "a", "dir"])
    assert os.readlink(tmp_path / "a") == "..data/a"
    assert os.readlink(tmp_path / "dir") == "..data/dir"
    assert (tmp_path / "dir" / "sub" / "c").read_text() == "3"
    modes = {name: stat.S_IMODE((tmp_path / ts_dir / name).stat().st_mode) for name in ("a", "dir/b", "dir/sub/c")}
    assert modes == {"a": 0o644, "dir/b": 0o400, "dir/sub/c": 0o755}


def test_update_swaps_data_and_removes_old_files(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    assert writer.write(_files(a="1", b="2", d__x="3"))
    (first,) = _ts_dirs(tmp_path)
    assert writer.write(_files(a="1", c="new"))
    (second,) = _ts_dirs(tmp_path)
    assert second != first and os.readlink(tmp_path / DATA_DIR) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([DATA_DIR, second, "a", "c"])
    assert (tmp_path / "c").read_text() == "new"
    assert not (tmp_path / first).exists()


def test_unchanged_payload_is_not_rewritten(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write(_files(a="1"))
    before = _ts_dirs(tmp_path)
    assert writer.write(_files(a="1")) is False
    assert _ts_dirs(tmp_path) == before
    # a lost user-visible link is put back even when nothing else changed
    (tmp_path / "a").unlink()
    assert writer.write(_files(a="1")) is False
    assert (tmp_path / "a").read_text() == "1"


def test_empty_payload_then_keys_appear(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({})
    assert os.readlink(tmp_path / DATA_DIR) in _ts_dirs(tmp_path)
    writer.write(_files(k="v"))
    assert (tmp_path / "k").read_text() == "v"


def test_set_perms_runs_before_the_new_version_is_visible(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write(_files(a="old"))
    seen = []

    def set_perms(ts_dir: str) -> None:
        seen.append((ts_dir, os.readlink(tmp_path / DATA_DIR), (tmp_path / "a").read_text()))

    writer.write(_files(a="new"), set_perms)
    ((new_dir, current, visible),) = seen
    assert current != new_dir and visible == "old"
    assert os.readlink(tmp_path / DATA_DIR) == new_dir


def test_leftover_tmp_link_from_a_crash_is_replaced(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write(_files(a="1"))
    os.symlink("..nowhere", tmp_path / "..data_tmp")
    writer.write(_files(a="2"))
    assert (tmp_path / "a").read_text() == "2"
    assert not os.path.lexists(tmp_path / "..data_tmp")


def test_fs_user_owns_the_file(tmp_path: Path) -> None:
    AtomicWriter(tmp_path).write({"token": FileProjection(b"t", 0o600, fs_user=4321)})
    info = (tmp_path / "token").stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (4321, 0o600)


def test_a_reader_never_sees_a_mixed_version(tmp_path: Path) -> None:
    """Readers that resolve ..data once (what opening the directory does) see one whole version."""
    writer = AtomicWriter(tmp_path)
    keys = [f"k{i}" for i in range(8)]
    writer.write({k: FileProjection(b"0", 0o644) for k in keys})
    stop = threading.Event()
    observed: list[set[bytes]] = []

    def read_versions() -> None:
        while not stop.is_set():
            try:
                fd = os.open(tmp_path / DATA_DIR, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                values = set()
                for key in keys:
                    with open(os.open(key, os.O_RDONLY, dir_fd=fd), "rb") as f:
                        values.add(f.read())
                observed.append(values)
            except FileNotFoundError:
                pass  # the version was removed while being read: never a mix, just gone
            finally:
                os.close(fd)

    reader = threading.Thread(target=read_versions)
    reader.start()
    try:
        for version in range(1, 150):
            writer.write({k: FileProjection(str(version).encode(), 0o644) for k in keys})
    finally:
        stop.set()
        reader.join()
    assert observed and all(len(values) == 1 for values in observed)
    assert (tmp_path / "k0").read_text() == "149"
    assert len(_ts_dirs(tmp_path)) == 1


@pytest.mark.parametrize(("path", "message"), [
    ("", 'invalid path: must not be empty: ""'),
    ("/abs", "invalid path: must be relative path: /abs"),
    ("a/../b", "invalid path: must not contain '..': a/../b"),
    ("..", "invalid path: must not contain '..': .."),
    ("..data", "invalid path: must not start with '..': ..data"),
    ("..x/y", "invalid path: must not start with '..': ..x/y"),
    ("a" * 256, "invalid path: filenames must be less than or equal to 255 characters"),
    ("a/" * 2049, "invalid path: must be less than or equal to 4096 characters"),
])
def test_invalid_paths(path: str, message: str) -> None:
    with pytest.raises(SourceError) as err:
        validate_path(path)
    assert str(err.value) == message


def test_valid_paths_are_cleaned(tmp_path: Path) -> None:
    for path in ("a", "a/b", ".a", "a..b", "./c", "d//e"):
        validate_path(path)
    AtomicWriter(tmp_path).write({"./c": FileProjection(b"c", 0o644), "d//e": FileProjection(b"e", 0o644)})
    assert (tmp_path / "c").read_text() == "c" and (tmp_path / "d" / "e").read_text() == "e"


def test_invalid_payload_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        AtomicWriter(tmp_path).write({"ok": FileProjection(b"", 0o644), "../x": FileProjection(b"", 0o644)})
    assert list(tmp_path.iterdir()) == []
