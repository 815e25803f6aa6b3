"""The cgroup2 mount is found in a mount table and remounted with exactly its own options plus (or minus)
favordynmods: a cgroup2 remount resets whatever it is not given."""

from __future__ import annotations

from pathlib import Path

from pocketkube.engine.runtime.favordynmods import cgroup2_mount

HYBRID = """\
25 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 24 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
33 31 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
PURE_V2 = """\
25 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 30 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot,favordynmods
"""
ELSEWHERE = "50 25 0:40 / /mnt/my\\040cgroup rw,relatime - cgroup2 cgroup2 rw\n"


def test_hybrid_mount_found_and_remounted_with_its_own_options():
    mount = cgroup2_mount(HYBRID)
    assert mount is not None
    assert mount.mount_point == Path("/sys/fs/cgroup/unified")
    assert not mount.favors_dynmods
    flags, data = mount.remount_arguments(True)
    # MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME: the mount keeps its per-mount flags
    assert flags == 0x20 | 0x2 | 0x4 | 0x8 | 0x200000
    assert data == "nsdelegate,favordynmods"
    assert mount.remount_arguments(False)[1] == "nsdelegate"


def test_pure_cgroup2_host_and_turning_the_option_off():
    mount = cgroup2_mount(PURE_V2)
    assert mount is not None and mount.mount_point == Path("/sys/fs/cgroup")
    assert mount.favors_dynmods
    assert mount.remount_arguments(False)[1] == "nsdelegate,memory_recursiveprot"
    assert mount.remount_arguments(True)[1] == "nsdelegate,memory_recursiveprot,favordynmods"


def test_cgroup2_mounted_elsewhere_or_not_at_all_is_not_the_hosts():
    assert cgroup2_mount(ELSEWHERE) is None
    assert cgroup2_mount(HYBRID.replace("cgroup2", "tmpfs")) is None
