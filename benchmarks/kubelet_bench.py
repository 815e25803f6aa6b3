"""Kubelet benchmark: pod startup latency and throughput on one real node, and the node's footprint.

Run (as root): .venv/bin/python benchmarks/kubelet_bench.py [--rounds 30,100] [--idle-pods 50] [--idle 30]
A fresh `pocketkube server` with its kubelet (test-isolated cgroup parent, CNI bridge and cluster CIDR, the
busybox image imported, so no pull is timed) runs without controller manager and scheduler: pods are
created already bound (spec.nodeName), so what is measured is the kubelet. Latency is the Kubernetes SLO's:
from just before the create call to the moment a watch sees every container of the pod running. Pods
are created from a pool of 16 concurrent requests. Afterwards --idle-pods pods stay up for --idle seconds
and the kubelet's RSS and CPU, and the conmon monitors' RSS, are measured. Each round also reports the
kubelet's CPU seconds, its own and its children's (CNI plugins, OCI runtime calls): steadier than latencies
when the machine is shared. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests" / "integration"),
                str(Path(__file__).resolve().parent.parent / "tests")]

from kubelet_harness import NodeCluster, start_node_cluster  # noqa: E402

from pocketkube.api.kinds import ResourceCatalog  # noqa: E402
from pocketkube.client.rest import APIError, Client, ClientConfig  # noqa: E402

PODS = ResourceCatalog().resource("", "v1", "pods")
assert PODS is not None
CONCURRENCY = 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pod_manifest(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [
                {"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}}


def _running(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def start_pods(client: Client, node: str, prefix: str, count: int) -> dict[str, float]:
    """Creates `count` pods; returns name -> seconds from its create call until a watch saw it running."""
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    listing = await client.list(PODS, "default")
    done = asyncio.Event()

    async def watch() -> None:
        async for kind, obj in client.watch(PODS, "default", resource_version=listing["metadata"]["resourceVersion"]):
            if kind == "BOOKMARK":
                continue  # carries only a resourceVersion
            name = obj["metadata"]["name"]
            if name.startswith(prefix) and name not in running and _running(obj):
                running[name] = time.monotonic()
                if len(running) == count:
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    limit = asyncio.Semaphore(CONCURRENCY)

    async def create(i: int) -> None:
        name = f"{prefix}{i}"
        async with limit:
            created[name] = time.monotonic()
            await client.create(PODS, pod_manifest(name, node))

    await asyncio.gather(*(create(i) for i in range(count)))
    await asyncio.wait_for(done.wait(), 300)
    watcher.cancel()
    return {name: running[name] - created[name] for name in created}


async def delete_pods(client: Client, prefix: str) -> None:
    pods = (await client.list(PODS, "default"))["items"]
    names = [p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith(prefix)]
    await asyncio.gather(*(client.delete(PODS, n, "default", grace_period_seconds=1) for n in names),
                         return_exceptions=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = [p for p in (await client.list(PODS, "default"))["items"] if p["metadata"]["name"].startswith(prefix)]
        if not left:
            return
        await asyncio.sleep(0.5)
    raise APIError(504, {"message": f"pods {prefix}* still there after 120 s"}, "DELETE", "pods")


def _processes(match: Any) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if match(cmdline):
                found.append(int(entry.name))
    return found


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of the process itself, and of the children it has waited for (CNI plugins, runtime calls)."""
    fields = [int(value) for value in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15]]
    return (fields[0] + fields[1]) / CLOCK_TICKS, (fields[2] + fields[3]) / CLOCK_TICKS


async def run(env: NodeCluster, rounds: list[int], idle_pods: int, idle: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    data_dir = str(env.data_dir).encode()
    [kubelet] = _processes(lambda cmd: b"kubelet" in cmd and data_dir in cmd)
    async with Client(ClientConfig.from_kubeconfig(env.cluster.kubeconfig)) as client:
        for count in rounds:
            prefix = f"bench{count}-"
            # CPU seconds are steadier than latencies on a shared machine: they say what the round cost
            cpu_before = _cpu_seconds(kubelet)
            started = time.monotonic()
            latencies = await start_pods(client, env.node, prefix, count)
            elapsed = time.monotonic() - started
            cpu_after = _cpu_seconds(kubelet)
            round_result = {"p50_s": round(percentile(list(latencies.values()), 0.5), 3),
                            "p99_s": round(percentile(list(latencies.values()), 0.99), 3),
                            "mean_s": round(statistics.mean(latencies.values()), 3),
                            "pods_per_s": round(count / elapsed, 2),
                            "kubelet_cpu_s": round(cpu_after[0] - cpu_before[0], 2),
                            "kubelet_children_cpu_s": round(cpu_after[1] - cpu_before[1], 2)}
            results[f"pods_{count}"] = round_result
            print(f"{count} pods: p50 {round_result['p50_s']} s, p99 {round_result['p99_s']} s, "
                  f"{round_result['pods_per_s']} pods/s; kubelet CPU {round_result['kubelet_cpu_s']} s "
                  f"(+{round_result['kubelet_children_cpu_s']} s in CNI plugins and runtime calls)", flush=True)
            await delete_pods(client, prefix)
        if idle_pods:  # --idle-pods 0 skips the footprint measurement
            await start_pods(client, env.node, "idle-", idle_pods)
            monitors = _processes(lambda cmd: cmd[0].endswith(b"conmon") and any(data_dir in part for part in cmd))
            idle_before = _cpu_seconds(kubelet)[0]
            await asyncio.sleep(idle)
            cpu = _cpu_seconds(kubelet)[0] - idle_before
            results["idle"] = {"pods": idle_pods, "kubelet_rss_mib": round(_rss_mib(kubelet), 1),
                               "conmon_rss_mib_total": round(sum(_rss_mib(p) for p in monitors), 1),
                               "conmon_processes": len(monitors),
                               "kubelet_cpu_percent": round(100 * cpu / idle, 2)}
            print(f"idle with {idle_pods} pods: kubelet RSS {results['idle']['kubelet_rss_mib']} MiB, "
                  f"{results['idle']['kubelet_cpu_percent']} % CPU; {len(monitors)} conmon monitors, "
                  f"{results['idle']['conmon_rss_mib_total']} MiB RSS in all", flush=True)
            await delete_pods(client, "idle-")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", default="30,100", help="pods started per round (%(default)s)")
    parser.add_argument("--idle-pods", type=int, default=50, help="pods kept up while idle (%(default)s)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement (%(default)s)")
    args = parser.parse_args()
    rounds = [int(n) for n in args.rounds.split(",") if n]
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the cluster and its containers are torn down
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = start_node_cluster("--disable-controller-manager", "--disable-scheduler")
    env = next(cluster)
    try:
        results = asyncio.run(run(env, rounds, args.idle_pods, args.idle))
    finally:
        cluster.close()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
