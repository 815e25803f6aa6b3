"""Fixtures shared across the test tree. Keep each one small and documented."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from etcd_fixture import running_etcd  # tests/ is on sys.path: pytest inserts this conftest's dir

# --- storage ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_url() -> Iterator[str]:
    """A real etcd, one per test module; tests isolate themselves by key prefix."""
    with running_etcd() as url:
        yield url
