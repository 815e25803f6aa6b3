"""Fixtures shared across the test tree. Keep each one small and documented."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from etcd_fixture import running_etcd  # tests/ is on sys.path: pytest inserts this conftest's dir
from pocketkube.engine.runtime import favordynmods

# --- the host ----------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def host_cgroup_option_restored() -> Iterator[None]:
    """Engines started by the tests turn the host's cgroup2 option favordynmods on (their default setting);
    the machine gets its own setting back when the tests end."""
    before = favordynmods.cgroup2_mount()
    yield
    if before is not None and os.geteuid() == 0:
        favordynmods.set_favordynmods(before.favors_dynmods)

# --- storage ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_url() -> Iterator[str]:
    """A real etcd, one per test module; tests isolate themselves by key prefix."""
    with running_etcd() as url:
        yield url
