"""An acknowledged write survives kill -9 of the API server, with writes in flight."""

from __future__ import annotations

import shutil
import signal
import threading
import time

import pytest
from cluster import Cluster, new_cluster

from etcd_fixture import running_etcd


def _hammer(cluster: Cluster, acked: list[str], stop: threading.Event, worker: int) -> None:
    i = 0
    while not stop.is_set():
        name = f"w{worker}-{i}"
        try:
            resp = cluster.request("POST", "/api/v1/namespaces/default/configmaps",
                                   {"metadata": {"name": name}, "data": {"i": str(i)}}, timeout=5)
        except OSError:
            return  # the server is gone
        if resp.status == 201:
            acked.append(name)
        i += 1


def _kill_during_writes(cluster: Cluster) -> list[str]:
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_hammer, args=(cluster, acked, stop, w)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    cluster.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    return acked


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_acknowledged_writes_survive_kill_9(backend: str) -> None:
    def run(datastore: str) -> None:
        cluster = new_cluster(datastore)
        try:
            cluster.start()
            acked = _kill_during_writes(cluster)
            assert len(acked) > 20, "too few writes were acknowledged to prove anything"
            cluster.start()
            items = cluster.request("GET", "/api/v1/namespaces/default/configmaps").json()["items"]
            present = {i["metadata"]["name"] for i in items}
            lost = [name for name in acked if name not in present]
            assert lost == []
        finally:
            cluster.stop()
            shutil.rmtree(cluster.data_dir, ignore_errors=True)

    if backend == "etcd":
        with running_etcd() as url:
            run(url)
    else:
        run("")
