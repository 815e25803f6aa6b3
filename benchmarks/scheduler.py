"""Scheduler benchmark, modelled on upstream's scheduler_perf.

Run: .venv/bin/python benchmarks/scheduler.py --nodes 5000 --pods 10000 [--init-pods 1000]
         [--workload basic|anti-affinity|spread|preemption] [--preload]

A real `pocketkube server` runs as a subprocess (SQLite; no controller manager, scheduler or agent);
nodes are Node objects created through the API (4 cpu, 32Gi, 110 pods, Ready; zones zone-0..2); the
scheduler runs in this process (on uvloop, as `pocketkube scheduler`), with its own client; the workload's objects
go through another. Initial pods are scheduled first and not measured; then the measured pods are created
(concurrently with scheduling, as scheduler_perf does; with --preload they are all created before the
scheduler starts, which measures the scheduler alone). The last line is one JSON object:
pods/s (measured pods bound / wall time), p50/p90/p99 scheduling latency (queue entry to bind: like upstream's
pod_scheduling_sli_duration it includes the wait in the queue, which grows whenever pods arrive faster than they
are scheduled), p50/p99 of the attempt that bound the pod (pop from the queue to bind, like
scheduling_attempt_duration plus the binding), CPU seconds of this process (scheduler and workload client), of
the server and of the server's event-loop thread, and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from pocketkube.api.gcpolicy import tune_for_large_heaps
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import Client, ClientConfig
from pocketkube.scheduler.config import parse_configuration
from pocketkube.scheduler.plugins import REGISTRY
from pocketkube.scheduler.scheduler import Scheduler

Obj = dict[str, Any]
CATALOG = ResourceCatalog()
PODS = CATALOG.resource("", "v1", "pods")
NODES = CATALOG.resource("", "v1", "nodes")
NAMESPACES = CATALOG.resource("", "v1", "namespaces")
SERVICE_ACCOUNTS = CATALOG.resource("", "v1", "serviceaccounts")
PRIORITY_CLASSES = CATALOG.resource("scheduling.k8s.io", "v1", "priorityclasses")
# The preemption workload's priorities (admission resolves a pod's priority from its class).
BENCH_PRIORITY_CLASSES = {"bench-low": 10, "bench-high": 1000}
CREATE_CONCURRENCY = 32
ZONES = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - handed to the child for its lifetime
    proc = subprocess.Popen([sys.executable, "-m", "pocketkube.cli.main", "server", "--data-dir", str(data_dir),
                             "--https-port", str(port), "--disable-controller-manager", "--disable-scheduler",
                             "--disable-agent"], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((data_dir / "server.log").read_text())
        if (data_dir / "kubeconfig.yaml").exists() and (data_dir / "token").exists():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return proc
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def proc_cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU seconds of a process, or of one of its threads."""
    stat = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def node_obj(i: int) -> Obj:
    name = f"node-{i}"
    capacity = {"cpu": "4", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  "topology.kubernetes.io/zone": f"zone-{i % ZONES}"}},
            "status": {"capacity": capacity, "allocatable": capacity,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod_obj(workload: str, name: str, namespace: str, measured: bool) -> Obj:
    labels = {"app": "bench", "color": "measured" if measured else "init"}
    spec: Obj = {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                 "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
    if workload == "anti-affinity":
        spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "bench"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    elif workload == "spread":
        spec["topologySpreadConstraints"] = [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "bench"}}},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"app": "bench"}}}]
    elif workload == "preemption":
        # Initial pods fill the nodes at low priority; each measured pod needs to evict three of them.
        cpu = "3" if measured else "900m"
        spec["containers"][0]["resources"]["requests"] = {"cpu": cpu, "memory": "500Mi"}
        spec["priorityClassName"] = "bench-high" if measured else "bench-low"
        spec["terminationGracePeriodSeconds"] = 0
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": spec}


async def create_all(client: Client, objs: list[Obj], info: Any) -> None:
    it = iter(objs)

    async def worker() -> None:
        for obj in it:
            await client.create(info, obj)
    await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_bound(sched: Scheduler, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(sched.scheduled) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(sched.scheduled)}/{count} pods bound in {timeout}s")
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> Obj:
    data_dir = Path(tempfile.mkdtemp(prefix="pocketkube-sched-bench-"))
    port = free_port()
    server = start_server(data_dir, port)
    try:
        kubeconfig = ClientConfig.from_kubeconfig(data_dir / "kubeconfig.yaml")
        # The workload's objects go through a client of their own, as scheduler_perf's test client is apart
        # from the scheduler's: the scheduler's binds never queue behind pod creations.
        client = Client(kubeconfig, user_agent="scheduler-bench")
        scheduler_client = Client(kubeconfig, user_agent="scheduler")
        namespace = "bench"
        await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        # Pod admission requires the namespace's default ServiceAccount; with no controller manager to make it,
        # the benchmark does.
        await client.create(SERVICE_ACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                               "metadata": {"name": "default", "namespace": namespace}})
        if args.workload == "preemption":
            for name, value in BENCH_PRIORITY_CLASSES.items():
                await client.create(PRIORITY_CLASSES, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                                       "metadata": {"name": name}, "value": value})
        t0 = time.monotonic()
        await create_all(client, [node_obj(i) for i in range(args.nodes)], NODES)
        print(f"created {args.nodes} nodes in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        config = parse_configuration({"leaderElection": {"leaderElect": False}}, REGISTRY)
        init_pods = [pod_obj(args.workload, f"init-{i}", namespace, False) for i in range(args.init_pods)]
        measured = [pod_obj(args.workload, f"pod-{i}", namespace, True) for i in range(args.pods)]

        sched = Scheduler(scheduler_client, config)
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop))
        t0 = time.monotonic()
        await create_all(client, init_pods, PODS)
        await wait_bound(sched, len(init_pods), args.timeout)
        print(f"scheduled {len(init_pods)} initial pods in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        if args.preload:
            stop.set()
            await task
            await create_all(client, measured, PODS)
            sched = Scheduler(scheduler_client, config)
            stop = asyncio.Event()
        base = len(sched.scheduled)
        cpu0, server_cpu0 = self_cpu_seconds(), proc_cpu_seconds(server.pid)
        # The server's event loop thread: it runs every request, so its share shows how close it is to saturation.
        loop_cpu0 = proc_cpu_seconds(server.pid, server.pid)
        start = time.monotonic()
        if args.preload:
            task = asyncio.create_task(sched.run(stop))
            creating = None
        else:
            creating = asyncio.create_task(create_all(client, measured, PODS))
        await wait_bound(sched, base + len(measured), args.timeout)
        elapsed = time.monotonic() - start
        if creating is not None:
            await creating
        cpu, server_cpu = self_cpu_seconds() - cpu0, proc_cpu_seconds(server.pid) - server_cpu0
        loop_cpu = proc_cpu_seconds(server.pid, server.pid) - loop_cpu0
        latencies = [lat for _, _, lat, _ in sched.scheduled[base:]]
        attempts = [attempt for _, _, _, attempt in sched.scheduled[base:]]
        placements: dict[str, int] = {}
        for _, node, _, _ in sched.scheduled[base:]:
            placements[node] = placements.get(node, 0) + 1
        stop.set()
        await task
        await client.close()
        await scheduler_client.close()
        return {
            "workload": args.workload, "nodes": args.nodes, "init_pods": args.init_pods, "pods": args.pods,
            "mode": "preload" if args.preload else "stream",
            "pods_per_second": round(len(measured) / elapsed, 1), "seconds": round(elapsed, 2),
            "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "latency_p90_ms": round(percentile(latencies, 0.9) * 1000, 1),
            "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "attempt_p50_ms": round(percentile(attempts, 0.5) * 1000, 1),
            "attempt_p99_ms": round(percentile(attempts, 0.99) * 1000, 1),
            "scheduler_cpu_seconds": round(cpu, 1), "server_cpu_seconds": round(server_cpu, 1),
            "server_loop_cpu_seconds": round(loop_cpu, 1),
            "scheduler_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "server_rss_mb": round(proc_rss_mb(server.pid), 1),
            "nodes_used": len(placements), "max_pods_per_node": max(placements.values(), default=0),
        }
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pods", type=int, default=None,
                        help="measured pods (default: 1000; as upstream's SchedulingPodAntiAffinity 400 for "
                             "anti-affinity and PreemptionBasic 500 for preemption, so that every pod can fit)")
    parser.add_argument("--init-pods", type=int, default=None, help="pods scheduled before measuring "
                        "(default: pods/10; for preemption: 4 per node)")
    parser.add_argument("--workload", choices=("basic", "anti-affinity", "spread", "preemption"), default="basic")
    parser.add_argument("--preload", action="store_true", help="create the measured pods before scheduling them")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    if args.pods is None:
        args.pods = {"anti-affinity": 400, "preemption": 500}.get(args.workload, 1000)
    if args.init_pods is None:
        args.init_pods = (args.nodes * 4 if args.workload == "preemption" else
                          100 if args.workload == "anti-affinity" else args.pods // 10)
    logging.basicConfig(level=logging.WARNING)
    tune_for_large_heaps()  # as `pocketkube scheduler` does: this process is the scheduler's
    print(orjson.dumps(uvloop.run(run(args))).decode())  # the event loop `pocketkube scheduler` runs on


if __name__ == "__main__":
    main()
