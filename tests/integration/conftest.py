"""Integration fixtures: one real server per backend for the whole session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cluster import Cluster, new_cluster, serving

from etcd_fixture import running_etcd


@pytest.fixture(scope="session", params=["sqlite", "etcd"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running pocketkube server on the embedded SQLite store or on a real etcd."""
    if request.param == "etcd":
        with running_etcd() as url:
            yield from serving(new_cluster(url))
    else:
        yield from serving(new_cluster())


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods are admitted only then); deleted after."""
    name = "t-" + uuid.uuid4().hex[:8]
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=30s")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
