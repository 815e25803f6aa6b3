"""is_mount_point: statx's answer agrees with the mount table, bind mounts on the same filesystem included."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pocketkube.mountpoint import _in_mount_table, _statx_says, is_mount_point


def test_mount_points_and_plain_directories(tmp_path: Path) -> None:
    for path in ("/", "/proc", "/sys"):
        assert is_mount_point(path) and _statx_says(path) is True and _in_mount_table(path)
    plain = tmp_path / "plain"
    plain.mkdir()
    assert not is_mount_point(plain) and not _in_mount_table(plain)
    assert not is_mount_point(tmp_path / "missing")
    assert not is_mount_point(tmp_path / "missing" / "below")


def test_bind_mount_on_the_same_filesystem(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        assert target.stat().st_dev == tmp_path.stat().st_dev  # st_dev alone could not tell
        assert is_mount_point(target) and _in_mount_table(target)
        assert is_mount_point(link)  # followed, as the mount table lookup resolves it
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert not is_mount_point(target)
