"""Fixtures for end-to-end engine tests: a data directory whose engine.json points at a test-only cgroup
parent, bridge and subnet, with the busybox base image imported; everything the tests started is removed
afterwards (containers, mounts, cgroups, network namespaces, the bridge and its iptables rules)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_harness import EngineEnv

from pocketkube.engine.images.busybox import busybox_rootfs_tar
from pocketkube.engine.runtime import cgroups


@pytest.fixture(scope="session")
def busybox_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "busybox-rootfs.tar"
    with open(path, "wb") as f:
        busybox_rootfs_tar(f)
    return path


def _test_settings() -> dict:
    tag = secrets.token_hex(2)
    return {"cgroup-parent": f"/pocketkube-test-{tag}", "bridge": f"pkt{tag}",
            "subnet": f"10.250.{int(tag, 16) % 250}.0/24"}


@pytest.fixture(scope="module")
def engine_env(tmp_path_factory: pytest.TempPathFactory, busybox_tarball: Path) -> Iterator[EngineEnv]:
    data_dir = tmp_path_factory.mktemp("engine")
    settings = _test_settings()
    (data_dir / "engine.json").write_text(json.dumps(settings))
    env = EngineEnv(data_dir, settings)
    env.out("import", "--change", 'CMD ["sh"]', str(busybox_tarball), "busybox:latest")
    try:
        yield env
    finally:
        _clean(env)


def _clean(env: EngineEnv) -> None:
    engine = env.engine()

    async def remove_all() -> None:
        for container in engine.containers.list():
            await engine.remove(container.id, force=True)

    asyncio.run(remove_all())
    asyncio.run(engine.network.remove_masquerade())
    cgroups.remove(env.settings["cgroup-parent"], kill=True)
    subprocess.run(["ip", "link", "delete", env.settings["bridge"]], capture_output=True)
    shutil.rmtree(engine.run_root, ignore_errors=True)
    leftovers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                 if str(env.data_dir) in line or str(engine.run_root) in line]
    assert not leftovers, f"mounts left behind: {leftovers}"
