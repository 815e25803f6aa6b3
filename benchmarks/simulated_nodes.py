"""Simulated nodes benchmark: time until N simulated nodes are Ready, then P pods bound to them Running.

Run: .venv/bin/python benchmarks/simulated_nodes.py --nodes 1000 [--pods 1000] [--idle 20]
A fresh `pocketkube server` (SQLite, no controller manager) runs as a subprocess; the agent joins with the
node token and runs in this process. "Ready" is checked through the API, not taken from the agent: the
clock stops when a watch has seen every node with Ready=True (pods: phase Running). With --idle, the agent
then keeps heartbeating for that many seconds and the number of Leases renewed meanwhile is reported.
Ends with one JSON line of figures (seconds, RSS in MiB, CPU seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver.nodetoken import read_node_token
from pocketkube.client.informer import Informer
from pocketkube.client.rest import Client, ClientConfig
from pocketkube.kubelet.join import join_config
from pocketkube.kubelet.simulated import SimulatedNodes, SimulationConfig

CATALOG = ResourceCatalog()
NODES = CATALOG.resource("", "v1", "nodes")
PODS = CATALOG.resource("", "v1", "pods")
LEASES = CATALOG.resource("coordination.k8s.io", "v1", "leases")
assert NODES is not None and PODS is not None and LEASES is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server() -> Iterator[tuple[str, Path, int]]:
    data_dir = Path(tempfile.mkdtemp(prefix="pocketkube-simbench-"))
    port = free_port()
    log = open(data_dir / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pocketkube.cli.main", "server", "--data-dir", str(data_dir),
                             "--https-port", str(port), "--disable-controller-manager", "--disable-agent"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"API server ready" not in (data_dir / "server.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data_dir / "server.log").read_text())
            time.sleep(0.1)
        yield f"https://127.0.0.1:{port}", data_dir, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime in clock ticks (USER_HZ = 100)


def node_ready(node: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions") or [])


def pod_running(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


class Counter:
    """Watches a resource (an informer: one LIST, then a watch) and notes when `want` objects match."""

    def __init__(self, client: Client, info: Any, predicate: Any, **kw: Any) -> None:
        self.informer = Informer(client, info, **kw)
        self.predicate = predicate
        self.matching: set[str] = set()
        self.want = 0
        self.reached = asyncio.Event()
        self.informer.add_handler(self._seen, lambda _old, new: self._seen(new), self._gone)
        self.task = asyncio.create_task(self.informer.run())

    def _seen(self, obj: dict) -> None:
        key = obj["metadata"]["name"]
        if self.predicate(obj):
            self.matching.add(key)
        else:
            self.matching.discard(key)
        if self.want and len(self.matching) >= self.want:
            self.reached.set()

    def _gone(self, obj: dict) -> None:
        self.matching.discard(obj["metadata"]["name"])

    async def wait(self, want: int, timeout: float) -> float:
        self.want = want
        if len(self.matching) >= want:
            self.reached.set()
        await asyncio.wait_for(self.reached.wait(), timeout)
        return time.monotonic()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def bench(nodes: int, pods: int, idle: float, concurrency: int) -> dict[str, Any]:
    with server() as (url, data_dir, server_pid):
        admin = Client(ClientConfig.from_kubeconfig(data_dir / "kubeconfig.yaml"))
        agent = Client(await join_config(url, str(read_node_token(data_dir))))
        # /10 of /24s: room for 16k nodes outside the server's default service and pod ranges.
        sim = SimulatedNodes(agent, nodes, SimulationConfig(name_prefix="bench-", cluster_cidr="10.64.0.0/10",
                                                            concurrency=concurrency))
        stop = asyncio.Event()
        server_cpu0 = cpu_seconds(server_pid)
        start = time.monotonic()
        watch_nodes = Counter(admin, NODES, node_ready, label_selector="type=simulated")
        task = asyncio.create_task(sim.run(stop))
        ready_at = await watch_nodes.wait(nodes, 600)
        await watch_nodes.close()
        result: dict[str, Any] = {"nodes": nodes, "nodes_ready_seconds": round(ready_at - start, 2),
                                  "nodes_per_second": round(nodes / (ready_at - start), 1)}
        if pods:
            sem = asyncio.Semaphore(concurrency)

            async def create(i: int) -> None:
                async with sem:
                    await admin.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
                        "name": f"bench-{i}", "namespace": "default"}, "spec": {
                        "nodeName": f"bench-{i % nodes}", "containers": [{"name": "c", "image": "busybox"}]}})

            watch_pods = Counter(admin, PODS, pod_running, namespace="default")
            await watch_pods.informer.synced.wait()
            pods_start = time.monotonic()
            await asyncio.gather(*(create(i) for i in range(pods)))
            created_at = time.monotonic()
            running_at = await watch_pods.wait(pods, 600)
            await watch_pods.close()
            result |= {"pods": pods, "pods_created_seconds": round(created_at - pods_start, 2),
                       "pods_running_seconds": round(running_at - pods_start, 2)}
        if idle:
            before = await _renew_times(admin)
            await asyncio.sleep(idle)
            after = await _renew_times(admin)
            renewed = sum(1 for name, t in after.items() if before.get(name) != t)
            result |= {"idle_seconds": idle, "leases_renewed_in_idle": renewed}
        result |= {"agent_rss_mb": rss_mb(), "server_rss_mb": rss_mb(server_pid),
                   "agent_cpu_seconds": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
                   "server_cpu_seconds": round(cpu_seconds(server_pid) - server_cpu0, 1),
                   "wall_seconds": round(time.monotonic() - start, 1)}
        stop.set()
        await asyncio.wait_for(task, 60)
        await agent.close()
        await admin.close()
        return result


async def _renew_times(client: Client) -> dict[str, str]:
    out, token = {}, ""
    while True:
        page = await client.list(LEASES, "kube-node-lease", limit=2000, continue_token=token)
        out |= {item["metadata"]["name"]: item["spec"].get("renewTime", "") for item in page["items"]}
        token = page["metadata"].get("continue", "")
        if not token:
            return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=0, help="pods to bind round-robin once nodes are Ready")
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of heartbeating to measure afterwards")
    parser.add_argument("--concurrency", type=int, default=32, help="agent requests in flight")
    args = parser.parse_args()
    result = asyncio.run(bench(args.nodes, args.pods, args.idle, args.concurrency))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
