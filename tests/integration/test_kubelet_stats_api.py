"""The kubelet's /stats/summary and /metrics/resource, read as users and metrics-server read them: through the
API server's nodes/{name}/proxy, with the real kubectl and the official Python client, from a real node
running a pod with a busy container and a sleeping one."""

from __future__ import annotations

import json
import math
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import free_port
from kubelet_harness import NodeCluster, start_node_cluster
from kubernetes import client, config

Obj = dict[str, Any]
BUSYBOX = {"image": "busybox", "imagePullPolicy": "IfNotPresent"}
# a sample line of the Prometheus text format: name, {labels}, value, timestamp (ms)
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? '
                    r"(\S+)(?: (-?\d+))?$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    yield from start_node_cluster()


@pytest.fixture(scope="module")
def stats_pod(node: NodeCluster) -> Obj:
    """A pod with a busy container (held to a quarter of a core: the machine is shared) and a sleeping one
    that wrote 64 KiB into an emptyDir."""
    node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stats"}, "spec": {
        "terminationGracePeriodSeconds": 0,
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [
            {**BUSYBOX, "name": "busy", "command": ["sh", "-c", "while true; do :; done"],
             "resources": {"limits": {"cpu": "250m"}}},
            {**BUSYBOX, "name": "sleepy", "command": ["sh", "-c", "dd if=/dev/zero of=/scratch/f bs=1024 count=64 "
                                                                  "&& exec sleep 3600"],
             "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}})
    node.wait_status("stats", "Running")
    return node.get("pod", "stats")


def raw(node: NodeCluster, path: str) -> str:
    return node.kubectl("get", "--raw", f"/api/v1/nodes/{node.node}/proxy{path}").stdout


def pod_entry(summary: Obj, name: str) -> Obj:
    return next(p for p in summary["pods"] if p["podRef"]["name"] == name)


def test_summary_through_kubectl_and_the_python_client(node: NodeCluster, stats_pod: Obj) -> None:
    first = json.loads(raw(node, "/stats/summary"))
    entry = first["node"]
    assert entry["nodeName"] == node.node and entry["startTime"].endswith("Z")
    assert entry["cpu"]["usageCoreNanoSeconds"] > 0 and entry["memory"]["workingSetBytes"] > 0
    assert entry["memory"]["availableBytes"] > 0 and entry["fs"]["capacityBytes"] >= entry["fs"]["availableBytes"]
    assert entry["runtime"]["imageFs"]["usedBytes"] > 0   # the busybox image
    assert entry["rlimit"]["maxpid"] > 0 and entry["rlimit"]["curproc"] > 0
    assert entry["network"]["interfaces"] and all(i["name"] != "lo" for i in entry["network"]["interfaces"])
    assert "pods" in [c["name"] for c in entry["systemContainers"]]

    pod = pod_entry(first, "stats")
    assert pod["podRef"] == {"name": "stats", "namespace": "default", "uid": stats_pod["metadata"]["uid"]}
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"busy", "sleepy"}
    for container in containers.values():
        assert container["memory"]["workingSetBytes"] > 0 and container["cpu"]["usageCoreNanoSeconds"] > 0
        assert container["rootfs"]["capacityBytes"] > 0 and container["logs"]["inodesUsed"] >= 1
    assert pod["memory"]["workingSetBytes"] >= containers["sleepy"]["memory"]["workingSetBytes"]
    assert pod["network"]["name"] == "eth0" and pod["network"]["rxBytes"] >= 0
    [scratch] = [v for v in pod["volume"] if v["name"] == "scratch"]
    assert scratch["usedBytes"] >= 64 * 1024
    assert pod["ephemeral-storage"]["usedBytes"] >= scratch["usedBytes"]
    assert pod["process_stats"]["process_count"] >= 2

    time.sleep(1.2)   # the CPU rate is measured between two readings at least a second apart
    with config.new_client_from_config(config_file=str(node.cluster.kubeconfig)) as api:
        # raw: the generated client would turn a JSON answer declared "str" into a Python repr
        answer = client.CoreV1Api(api).connect_get_node_proxy_with_path(node.node, "stats/summary",
                                                                        _preload_content=False)
        assert answer.status == 200 and answer.headers["Content-Type"] == "application/json"
        second = json.loads(answer.data)
    pod = pod_entry(second, "stats")
    busy = next(c for c in pod["containers"] if c["name"] == "busy")
    assert busy["cpu"]["usageNanoCores"] > 0 and pod["cpu"]["usageNanoCores"] >= busy["cpu"]["usageNanoCores"] // 2
    assert busy["cpu"]["usageNanoCores"] < 600_000_000   # held to 250m by its limit, with room for noise
    assert second["node"]["cpu"]["usageNanoCores"] > 0

    only = json.loads(raw(node, "/stats/summary/?only_cpu_and_memory=true"))
    assert set(only["node"]) <= {"nodeName", "systemContainers", "startTime", "cpu", "memory", "swap"}
    assert set(pod_entry(only, "stats")) == {"podRef", "startTime", "containers", "cpu", "memory", "swap"}


def parse_prometheus(text: str) -> tuple[dict[str, str], dict[str, list[tuple[dict[str, str], float, int | None]]]]:
    """(family -> TYPE, family -> samples) of a Prometheus text exposition; fails on any malformed line."""
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict[str, str], float, int | None]]] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert line.split(" ", 3)[3].startswith(("[STABLE] ", "[ALPHA] ")), line
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge") and name not in types, line
            types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value, timestamp = match.groups()
            assert name in types, f"{name} sampled before its TYPE"
            samples.setdefault(name, []).append((dict(LABEL.findall(labels or "")), float(value),
                                                 int(timestamp) if timestamp else None))
    return types, samples


def test_resource_metrics_through_the_proxy(node: NodeCluster, stats_pod: Obj) -> None:
    before_ms = time.time() * 1000
    types, samples = parse_prometheus(raw(node, "/metrics/resource"))
    assert types == {
        "container_cpu_usage_seconds_total": "counter", "container_memory_working_set_bytes": "gauge",
        "container_start_time_seconds": "gauge", "node_cpu_usage_seconds_total": "counter",
        "node_memory_working_set_bytes": "gauge", "pod_cpu_usage_seconds_total": "counter",
        "pod_memory_working_set_bytes": "gauge", "resource_scrape_error": "gauge",
        **{name: "gauge" for name in ("container_swap_usage_bytes", "node_swap_usage_bytes", "pod_swap_usage_bytes")
           if name in types}}
    assert list(types) == sorted(types)
    assert samples["resource_scrape_error"] == [({}, 0.0, None)]
    [(labels, node_cpu, stamp)] = samples["node_cpu_usage_seconds_total"]
    assert labels == {} and node_cpu > 0 and abs(stamp - before_ms) < 60_000

    def of_container(family: str, container: str) -> tuple[float, int | None]:
        [(value, stamp)] = [(v, t) for labels, v, t in samples[family]
                            if labels == {"container": container, "namespace": "default", "pod": "stats"}]
        return value, stamp

    busy_cpu, stamp = of_container("container_cpu_usage_seconds_total", "busy")
    assert busy_cpu > 0 and stamp is not None and abs(stamp - before_ms) < 60_000
    for container in ("busy", "sleepy"):
        assert of_container("container_memory_working_set_bytes", container)[0] > 0
        started, no_stamp = of_container("container_start_time_seconds", container)
        assert no_stamp is None and math.isclose(started, time.time(), abs_tol=600)
    pod_samples = {(labels["namespace"], labels["pod"]): v for labels, v, _ in samples["pod_cpu_usage_seconds_total"]}
    assert pod_samples[("default", "stats")] >= busy_cpu
    assert any(labels == {"namespace": "default", "pod": "stats"} and v > 0
               for labels, v, _ in samples["pod_memory_working_set_bytes"])


def test_only_the_api_server_reads_the_kubelet(node: NodeCluster) -> None:
    anonymous = ssl.create_default_context()
    anonymous.check_hostname, anonymous.verify_mode = False, ssl.CERT_NONE
    for path in ("/stats/summary", "/metrics/resource"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"https://127.0.0.1:{kubelet_port(node)}{path}", context=anonymous, timeout=10)
        assert refused.value.code == 401


def test_node_proxy_relays_answers_and_errors(node: NodeCluster) -> None:
    metrics = node.cluster.request("GET", f"/api/v1/nodes/{node.node}/proxy/metrics/resource",
                                   headers={"Accept": "text/plain"})
    assert metrics.status == 200 and metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"

    missing = node.cluster.request("GET", "/api/v1/nodes/no-such-node/proxy/stats/summary")
    assert missing.status == 404 and missing.json()["reason"] == "NotFound"
    assert missing.json()["message"] == 'nodes "no-such-node" not found'

    # a node whose kubelet does not answer: nothing listens on its port
    fake = f"gone-{free_port()}"
    node.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": fake}, "spec": {"unschedulable": True}}))
    try:
        node.kubectl("patch", "node", fake, "--subresource=status", "--type=merge", "-p", json.dumps({"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": free_port()}}}}))
        unreachable = node.cluster.request("GET", f"/api/v1/nodes/{fake}/proxy/stats/summary")
        assert unreachable.status == 503 and unreachable.json()["reason"] == "ServiceUnavailable"
        assert unreachable.json()["message"].startswith("error trying to reach service: ")
    finally:
        node.kubectl("delete", "node", fake, "--wait=false")

    # the kubelet's own answers come back as they are: a path it does not serve, a method it refuses
    not_served = node.cluster.request("GET", f"/api/v1/nodes/{node.node}/proxy/no/such/path")
    assert not_served.status == 404 and b"404" in not_served.body
    refused = node.cluster.request("DELETE", f"/api/v1/nodes/{node.node}/proxy/stats/summary")
    assert refused.status == 405
    healthz = node.cluster.request("GET", f"/api/v1/nodes/{node.node}:{kubelet_port(node)}/proxy/healthz")
    assert healthz.status == 200 and healthz.body == b"ok"

    discovery = node.cluster.request("GET", "/api/v1").json()
    [proxy] = [r for r in discovery["resources"] if r["name"] == "nodes/proxy"]
    assert proxy["kind"] == "NodeProxyOptions" and "get" in proxy["verbs"]


def kubelet_port(node: NodeCluster) -> int:
    return node.get("node", node.node, namespace="")["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
