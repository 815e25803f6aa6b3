"""fsutil: atomic writes, and the Orlov top-directory mark on per-object parent directories."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from pocketkube.fsutil import spread_subdirectories, write_atomic


def _filesystem(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "record.json"
    write_atomic(target, b"one", mode=0o600)
    write_atomic(target, lambda f: f.write(b"two"), durable=False)
    assert target.read_bytes() == b"two" and oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]  # no temporary file left
    with pytest.raises(ZeroDivisionError):
        write_atomic(target, lambda f: 1 / 0)
    assert target.read_bytes() == b"two" and len(list(target.parent.iterdir())) == 1


def test_spread_subdirectories_marks_ext4_directories(tmp_path: Path) -> None:
    if _filesystem(tmp_path) != "ext2/ext3":  # what stat calls ext4 too
        pytest.fail(f"the test needs {tmp_path} on ext4, not {_filesystem(tmp_path)}")
    spread_subdirectories(tmp_path)
    spread_subdirectories(tmp_path)  # idempotent
    attributes = subprocess.run(["lsattr", "-d", str(tmp_path)], capture_output=True, text=True, check=True)
    assert "T" in attributes.stdout.split()[0]
    # new subdirectories (and their files) no longer all land in the parent's block group
    groups = {os.stat(_made(tmp_path / f"d{n}")).st_ino // 8192 for n in range(16)}
    assert len(groups) >= 8, groups  # unmarked, they share one or two


def test_spread_subdirectories_elsewhere_changes_nothing() -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
        assert _filesystem(Path(directory)) == "tmpfs"
        spread_subdirectories(Path(directory))  # no such attribute on tmpfs: nothing to do, no error
    with pytest.raises(NotADirectoryError):
        spread_subdirectories(Path("/etc/hostname"))


def _made(path: Path) -> Path:
    path.mkdir()
    return path
