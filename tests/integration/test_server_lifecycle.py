"""`pocketkube server` as a process: its flags for addresses and kubeconfigs, one ready line, a clean stop, and
health endpoints that report the datastore."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster, free_port, new_cluster, serving, wait_until

from etcd_fixture import running_etcd_cluster
from pocketkube.cli.kubectl import find_kubectl

READY = b"API server ready"


def test_bind_address_tls_san_extra_kubeconfig_one_ready_line_and_clean_stop(tmp_path: Path) -> None:
    data_dir, extra = tmp_path / "data", tmp_path / "elsewhere" / "admin.yaml"
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "pocketkube.cli.main", "server", "--data-dir", str(data_dir), "--https-port",
             str(port), "--bind-address", "127.0.0.2", "--tls-san", "pk.example", "--write-kubeconfig",
             str(extra), "--disable-agent", "--disable-controller-manager", "--disable-scheduler"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: READY in log.read_bytes() or server.poll() is not None, 60, "the ready line")
        assert server.poll() is None, log.read_text()
        kubectl = find_kubectl()
        for kubeconfig in (data_dir / "kubeconfig.yaml", extra):
            # the kubeconfig names the bound address, and the serving certificate covers it
            assert f"https://127.0.0.2:{port}" in kubeconfig.read_text()
            got = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "get", "ns", "default", "-o", "name"],
                                 capture_output=True, text=True, timeout=60)
            assert got.stdout.strip() == "namespace/default", got.stderr
        named = subprocess.run([kubectl, "--kubeconfig", str(extra), "--tls-server-name", "pk.example", "get",
                                "ns", "default", "-o", "name"], capture_output=True, text=True, timeout=60)
        assert named.returncode == 0, named.stderr
        unnamed = subprocess.run([kubectl, "--kubeconfig", str(extra), "--tls-server-name", "other.example",
                                  "get", "ns", "default"], capture_output=True, text=True, timeout=60)
        assert unnamed.returncode != 0 and "certificate" in unnamed.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert log.read_bytes().count(READY) == 1
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.fixture
def etcd_backed() -> Iterator[tuple[Cluster, int]]:
    with running_etcd_cluster(1) as members:
        for cluster in serving(new_cluster(members[0].client_url, extra_args=["--disable-controller-manager",
                                                                              "--disable-scheduler"])):
            yield cluster, members[0].process.pid


def test_readyz_and_livez_report_a_datastore_that_does_not_answer(etcd_backed: tuple[Cluster, int]) -> None:
    cluster, etcd_pid = etcd_backed
    os.kill(etcd_pid, signal.SIGSTOP)  # etcd stops answering, its connections stay open
    try:
        ready = cluster.request("GET", "/readyz", auth=False, timeout=30)
        lines = ready.body.decode().splitlines()
        assert ready.status == 500
        assert "[-]etcd failed: reason withheld" in lines and "[+]ping ok" in lines
        assert lines[-1] == "readyz check failed"
        one = cluster.request("GET", "/readyz/etcd", auth=False, timeout=30)
        assert one.status == 500 and one.body.startswith(b"internal server error")
        assert cluster.request("GET", "/livez", auth=False, timeout=30).status == 500
        assert cluster.request("GET", "/livez?exclude=etcd", auth=False, timeout=30).status == 200
    finally:
        os.kill(etcd_pid, signal.SIGCONT)
    wait_until(lambda: cluster.request("GET", "/readyz", auth=False, timeout=30).status == 200, 30,
              "/readyz to recover")


def test_the_server_fails_over_to_another_etcd_member() -> None:
    with running_etcd_cluster(3) as members:
        endpoints = ",".join(member.client_url for member in members)
        with contextlib.contextmanager(serving)(new_cluster(
                endpoints, extra_args=["--disable-controller-manager", "--disable-scheduler"])) as cluster:
            cluster.kubectl("create", "configmap", "before")
            # the member the server talks to (the first that answers) dies; the other two keep the quorum
            os.kill(members[0].process.pid, signal.SIGKILL)
            members[0].process.wait()
            manifest = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}}'
            # a request caught in flight may fail; the next ones go through another member
            wait_until(lambda: cluster.kubectl("apply", "-f", "-", input=manifest, check=False).returncode == 0,
                      30, "a write through another member")
            names = cluster.kubectl("get", "configmaps", "-o", "name").stdout.split()
            assert {"configmap/before", "configmap/after"} <= set(names)  # the watch cache followed too
            wait_until(lambda: cluster.request("GET", "/readyz", auth=False, timeout=30).status == 200, 30,
                      "/readyz")
