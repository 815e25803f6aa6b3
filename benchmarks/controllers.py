"""Controllers benchmark: the real `pocketkube server` (API server + controller manager + scheduler child
processes) driven by a simulated agent (`pocketkube agent --simulate N`, a separate process).

Run: .venv/bin/python benchmarks/controllers.py [--phases deploy,rollout,pods,idle,nodes]
         [--replicas 1000] [--deploy-nodes 100] [--deployments 100] [--pods 10000] [--max-pods 250]
         [--idle-seconds 30] [--node-counts 1000,10000] [--profile DIR]

Phases (each clock starts at the API call that asks for the work; every figure is read through a watch of
the API, never taken from a component):
- deploy:  a Deployment of --replicas replicas on --deploy-nodes simulated nodes, until it is complete
           as `kubectl rollout status` reads it (observedGeneration current, updated == available ==
           replicas, no old replicas left);
- rollout: a new image for that Deployment (RollingUpdate 25%/25%, the default), until rollout status
           would succeed again;
- pods:    --deployments Deployments with --pods pods in all (the first Deployment is deleted before),
           until every pod is Running (also: all created, all bound, all Deployments complete);
- idle:    with those objects in place, the controller manager's CPU (share of one core) and RSS over
           --idle-seconds, read from /proc of its process (the server's child);
- nodes:   for each of --node-counts, a fresh server and an agent with that many nodes, until a watch
           has seen all of them Ready.
With --profile DIR, py-spy records every process (raw collapsed stacks, one file per process and phase).
Prints a table, then one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.client.informer import Informer
from pocketkube.client.rest import Client, ClientConfig

Obj = dict[str, Any]
CATALOG = ResourceCatalog()


def _info(group: str, version: str, plural: str) -> ResourceInfo:
    info = CATALOG.resource(group, version, plural)
    assert info is not None
    return info


NODES = _info("", "v1", "nodes")
PODS = _info("", "v1", "pods")
NAMESPACES = _info("", "v1", "namespaces")
SERVICEACCOUNTS = _info("", "v1", "serviceaccounts")
DEPLOYMENTS = _info("apps", "v1", "deployments")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PYSPY = Path(sys.executable).parent / "py-spy"
CREATE_CONCURRENCY = 16


# --- processes --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def child_pid(parent: int, command: str) -> int | None:
    """The server's child running `pocketkube COMMAND` (the supervisor may have restarted it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and command.encode() in argv:
            return int(entry.name)
    return None


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Cluster:
    """A server (with its controller manager and scheduler children) and one simulated agent."""

    url: str
    data_dir: Path
    server: subprocess.Popen[bytes]
    agent: subprocess.Popen[bytes] | None = None
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pids(self) -> dict[str, int]:
        found = {"server": self.server.pid}
        for name in ("controller-manager", "scheduler"):
            pid = child_pid(self.server.pid, name)
            if pid is not None:
                found[name] = pid
        if self.agent is not None and self.agent.poll() is None:
            found["agent"] = self.agent.pid
        return found

    def cpu(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids().items():
            with contextlib.suppress(OSError):
                out[name] = cpu_seconds(pid)
        return out

    def start_agent(self, nodes: int, max_pods: int) -> None:
        token = (self.data_dir / "node-token").read_text().strip()
        log = open(self.data_dir / "agent.log", "ab")  # noqa: SIM115 - the child's for its lifetime
        # A /10 holds 16k /24 podCIDRs: room for the largest node counts.
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "pocketkube.cli.main", "agent", "--simulate", str(nodes), "--server", self.url,
             "--token", token, "--data-dir", str(self.data_dir / "agent"), "--node-name-prefix", "bench-",
             "--pods", str(max_pods), "--cluster-cidr", "10.64.0.0/10"], stdout=log, stderr=subprocess.STDOUT)

    def start_profiling(self, out_dir: Path, phase: str) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids().items():
            self.profilers.append(subprocess.Popen(
                [str(PYSPY), "record", "-p", str(pid), "-f", "raw", "--nonblocking", "-r", "50",
                 "-o", str(out_dir / f"{phase}-{name}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop_profiling(self) -> None:
        for proc in self.profilers:
            proc.send_signal(signal.SIGINT)
        for proc in self.profilers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.profilers.clear()


@contextlib.contextmanager
def cluster(keep: bool = False) -> Any:
    data_dir = Path(tempfile.mkdtemp(prefix="pocketkube-ctlbench-"))
    port = free_port()
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - the child's for its lifetime
    server = subprocess.Popen([sys.executable, "-m", "pocketkube.cli.main", "server", "--data-dir", str(data_dir),
                               "--https-port", str(port), "--disable-agent"],  # simulated nodes only
                              stdout=log, stderr=subprocess.STDOUT)
    c = Cluster(f"https://127.0.0.1:{port}", data_dir, server)
    try:
        deadline = time.monotonic() + 60
        while b"API server ready" not in (data_dir / "server.log").read_bytes():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data_dir / "server.log").read_text())
            time.sleep(0.1)
        yield c
    finally:
        c.stop_profiling()
        if c.agent is not None:
            _stop(c.agent)
        _stop(server)
        log.close()
        if keep:
            print(f"kept {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


# --- observing --------------------------------------------------------------------------------
class Tracker:
    """A watch (informer without indexes) that keeps one figure per object and wakes waiters on change."""

    def __init__(self, client: Client, info: ResourceInfo, stage: Callable[[Obj], Any], **kw: Any) -> None:
        self.informer = Informer(client, info, indexers={}, **kw)
        self.stage = stage
        self.stages: dict[str, Any] = {}
        self.changed = asyncio.Event()
        self.informer.add_handler(self._seen, lambda _old, new: self._seen(new), self._gone)
        self.task = asyncio.create_task(self.informer.run())

    def _seen(self, obj: Obj) -> None:
        self.stages[obj["metadata"]["name"]] = self.stage(obj)
        self.changed.set()

    def _gone(self, obj: Obj) -> None:
        self.stages.pop(obj["metadata"]["name"], None)
        self.changed.set()

    def count(self, predicate: Callable[[Any], bool] = bool) -> int:
        return sum(1 for value in self.stages.values() if predicate(value))

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> float:
        """Monotonic time at which `done()` first held."""
        deadline = time.monotonic() + timeout
        await self.informer.synced.wait()
        while not done():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what}: not reached in {timeout:.0f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
        return time.monotonic()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def node_ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


POD_CREATED, POD_BOUND, POD_RUNNING = 1, 2, 3


def pod_stage(pod: Obj) -> int:
    if (pod.get("status") or {}).get("phase") == "Running":
        return POD_RUNNING
    return POD_BOUND if (pod.get("spec") or {}).get("nodeName") else POD_CREATED


def rollout_complete(d: Obj) -> bool:
    """kubectl rollout status's DeploymentStatusViewer: the rollout is done and every replica available."""
    spec, status = d.get("spec") or {}, d.get("status") or {}
    if d["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        return False
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    return updated >= replicas and status.get("replicas", 0) <= updated \
        and status.get("availableReplicas", 0) >= updated


def deployment(name: str, namespace: str, replicas: int, image: str = "registry.k8s.io/pause:3.10") -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


async def create_namespace(client: Client, name: str, timeout: float) -> None:
    """A namespace ready for pods: its default ServiceAccount exists (so the controller manager runs)."""
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.get(SERVICEACCOUNTS, "default", name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


# --- phases -----------------------------------------------------------------------------------
def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes: others' work competes for the cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK  # minus idle and iowait


async def _trace(c: Cluster, every: float, progress: Callable[[], str]) -> None:
    """Every `every` seconds, on stderr: each process's share of a core since the last line (and the whole
    machine's, in cores), and progress."""
    start = last_time = time.monotonic()
    last, last_busy = c.cpu(), machine_busy_seconds()
    while True:
        await asyncio.sleep(every)
        now, cpu, busy = time.monotonic(), c.cpu(), machine_busy_seconds()
        shares = " ".join(f"{k}={100 * (v - last.get(k, v)) / (now - last_time):.0f}%" for k, v in cpu.items())
        print(f"    t={now - start:6.1f}s machine={(busy - last_busy) / (now - last_time):.2f} {shares} "
              f"{progress()}", file=sys.stderr)
        last, last_time, last_busy = cpu, now, busy


@contextlib.asynccontextmanager
async def phase(c: Cluster, name: str, result: Obj, args: argparse.Namespace,
                progress: Callable[[], str] = lambda: "") -> AsyncIterator[None]:
    """Per-process CPU seconds spent in the phase (and py-spy around it, a trace on stderr, when asked)."""
    if args.profile:
        c.start_profiling(Path(args.profile), name)
    tracer = asyncio.create_task(_trace(c, args.trace, progress)) if args.trace else None
    before = c.cpu()
    try:
        yield
    finally:
        after = c.cpu()
        if tracer is not None:
            tracer.cancel()
        if args.profile:
            c.stop_profiling()
        result[f"{name}_cpu_seconds"] = {k: round(after[k] - before.get(k, 0.0), 1) for k in after}
        print(f"  {name} done: cpu {result[f'{name}_cpu_seconds']}", file=sys.stderr)


async def workload_phases(args: argparse.Namespace, result: Obj) -> None:
    phases = args.phases
    with cluster(args.keep) as c:
        admin = Client(ClientConfig.from_kubeconfig(c.data_dir / "kubeconfig.yaml"), user_agent="controllers-bench")
        nodes = Tracker(admin, NODES, node_ready, label_selector="type=simulated")
        try:
            c.start_agent(args.deploy_nodes, args.max_pods)
            await nodes.until(lambda: nodes.count() >= args.deploy_nodes, args.timeout, "nodes Ready")
            namespace = "bench"
            await create_namespace(admin, namespace, args.timeout)
            deployments = Tracker(admin, DEPLOYMENTS, lambda d: d, namespace=namespace)
            pods = Tracker(admin, PODS, pod_stage, namespace=namespace)
            await pods.informer.synced.wait()
            await deployments.informer.synced.wait()

            def complete(names: list[str], generation: int = 1) -> Callable[[], bool]:
                """Every named Deployment at least at `generation` (the watch has seen our change) and done."""
                def check() -> bool:
                    return all(n in deployments.stages and rollout_complete(deployments.stages[n])
                               and deployments.stages[n]["metadata"].get("generation", 0) >= generation
                               for n in names)
                return check

            def deploy_progress(name: str) -> str:
                status = (deployments.stages.get(name) or {}).get("status") or {}
                return " ".join(f"{k}={status.get(k, 0)}" for k in ("replicas", "updatedReplicas",
                                                                     "availableReplicas"))

            if "deploy" in phases or "rollout" in phases:
                async with phase(c, "deploy", result, args, lambda: deploy_progress("big")):
                    start = time.monotonic()
                    await admin.create(DEPLOYMENTS, deployment("big", namespace, args.replicas))
                    done = await deployments.until(complete(["big"]), args.timeout, "deployment available")
                result |= {"deploy_replicas": args.replicas, "deploy_nodes": args.deploy_nodes,
                           "deploy_available_seconds": round(done - start, 2)}
                print(f"deploy: {args.replicas} replicas available in {done - start:.1f} s", file=sys.stderr)
            if "rollout" in phases:
                async with phase(c, "rollout", result, args, lambda: deploy_progress("big")):
                    start = time.monotonic()
                    patched = await admin.patch(DEPLOYMENTS, "big", {"spec": {"template": {"spec": {"containers": [
                        {"name": "app", "image": "registry.k8s.io/pause:3.9"}]}}}}, namespace,
                        patch_type="strategic")
                    done = await deployments.until(complete(["big"], patched["metadata"]["generation"]),
                                                   args.timeout, "rollout complete")
                result["rollout_seconds"] = round(done - start, 2)
                print(f"rollout: {args.replicas} replicas rolled in {done - start:.1f} s", file=sys.stderr)
            if "pods" in phases or "idle" in phases:
                if "big" in deployments.stages:
                    await admin.delete(DEPLOYMENTS, "big", namespace)
                    await pods.until(lambda: not pods.stages, args.timeout, "old pods gone")
                names = [f"d{i}" for i in range(args.deployments)]
                per = [args.pods // args.deployments + (1 if i < args.pods % args.deployments else 0)
                       for i in range(args.deployments)]
                def pods_progress() -> str:
                    stages = list(pods.stages.values())
                    return (f"created={len(stages)} bound={sum(1 for v in stages if v >= POD_BOUND)} "
                            f"running={sum(1 for v in stages if v == POD_RUNNING)}")

                async with phase(c, "pods", result, args, pods_progress):
                    start = time.monotonic()
                    sem = asyncio.Semaphore(CREATE_CONCURRENCY)

                    async def create(name: str, replicas: int) -> None:
                        async with sem:
                            await admin.create(DEPLOYMENTS, deployment(name, namespace, replicas))

                    await asyncio.gather(*(create(n, r) for n, r in zip(names, per, strict=True)))
                    want = args.pods
                    created = await pods.until(lambda: len(pods.stages) >= want, args.timeout, "pods created")
                    bound = await pods.until(lambda: pods.count(lambda s: s >= POD_BOUND) >= want, args.timeout,
                                             "pods bound")
                    running = await pods.until(lambda: pods.count(lambda s: s == POD_RUNNING) >= want,
                                               args.timeout, "pods Running")
                    done = await deployments.until(complete(names), args.timeout, "deployments complete")
                result |= {"pods": want, "pods_deployments": args.deployments,
                           "pods_created_seconds": round(created - start, 2),
                           "pods_bound_seconds": round(bound - start, 2),
                           "pods_running_seconds": round(running - start, 2),
                           "pods_deployments_complete_seconds": round(done - start, 2)}
                print(f"pods: {want} Running in {running - start:.1f} s", file=sys.stderr)
            if "idle" in phases:
                await asyncio.sleep(args.settle_seconds)  # events, late status writes
                pid = c.pids()["controller-manager"]
                async with phase(c, "idle", result, args):
                    cpu0 = cpu_seconds(pid)
                    await asyncio.sleep(args.idle_seconds)
                    cpu1 = cpu_seconds(pid)
                result |= {"idle_objects": len(pods.stages) + 2 * len(deployments.stages),
                           "idle_cm_cpu_percent": round(100 * (cpu1 - cpu0) / args.idle_seconds, 1),
                           "idle_cm_rss_mb": rss_mb(pid)}
            result["workload_rss_mb"] = {name: rss_mb(pid) for name, pid in c.pids().items()}
            await deployments.close()
            await pods.close()
        finally:
            await nodes.close()
            await admin.close()


async def nodes_phase(args: argparse.Namespace, count: int, result: Obj) -> None:
    with cluster(args.keep) as c:
        admin = Client(ClientConfig.from_kubeconfig(c.data_dir / "kubeconfig.yaml"), user_agent="controllers-bench")
        nodes = Tracker(admin, NODES, node_ready, label_selector="type=simulated")
        try:
            await nodes.informer.synced.wait()
            async with phase(c, f"nodes{count}", result, args, lambda: f"ready={nodes.count()}"):
                start = time.monotonic()
                c.start_agent(count, args.max_pods)
                done = await nodes.until(lambda: nodes.count() >= count, args.timeout, f"{count} nodes Ready")
            result[f"nodes_{count}_ready_seconds"] = round(done - start, 2)
            result[f"nodes_{count}_rss_mb"] = {name: rss_mb(pid) for name, pid in c.pids().items()}
            print(f"nodes: {count} Ready in {done - start:.1f} s", file=sys.stderr)
        finally:
            await nodes.close()
            await admin.close()


TABLE = (
    ("deploy_available_seconds", "Deployment {deploy_replicas} replicas available on {deploy_nodes} nodes", "s"),
    ("rollout_seconds", "Rolling update of {deploy_replicas} replicas", "s"),
    ("pods_created_seconds", "{pods} pods in {pods_deployments} Deployments: created", "s"),
    ("pods_bound_seconds", "{pods} pods in {pods_deployments} Deployments: bound", "s"),
    ("pods_running_seconds", "{pods} pods in {pods_deployments} Deployments: Running", "s"),
    ("pods_deployments_complete_seconds", "{pods} pods in {pods_deployments} Deployments: rollout complete", "s"),
    ("idle_cm_cpu_percent", "Controller manager idle CPU with {idle_objects} objects", "% of a core"),
    ("idle_cm_rss_mb", "Controller manager RSS with {idle_objects} objects", "MiB"),
)


def print_table(result: Obj) -> None:
    rows = [(label.format(**result), result[key], unit) for key, label, unit in TABLE if key in result]
    rows += [(f"{key.split('_')[1]} simulated nodes Ready", value, "s") for key, value in result.items()
             if key.startswith("nodes_") and key.endswith("_ready_seconds")]
    width = max((len(r[0]) for r in rows), default=10)
    for label, value, unit in rows:
        print(f"{label:<{width}}  {value:>8}  {unit}")


async def bench(args: argparse.Namespace) -> Obj:
    result: Obj = {}
    if set(args.phases) & {"deploy", "rollout", "pods", "idle"}:
        await workload_phases(args, result)
    if "nodes" in args.phases:
        for count in args.node_counts:
            await nodes_phase(args, count, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phases", type=lambda s: s.split(","), default=["deploy", "rollout", "pods", "idle", "nodes"])
    parser.add_argument("--replicas", type=int, default=1000, help="replicas of the deploy/rollout Deployment")
    parser.add_argument("--deploy-nodes", type=int, default=100, help="simulated nodes for the workload phases")
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--pods", type=int, default=10000, help="pods in all, spread over --deployments")
    parser.add_argument("--max-pods", type=int, default=250, help="pod capacity of each simulated node")
    parser.add_argument("--settle-seconds", type=float, default=10.0, help="wait before measuring idle")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--node-counts", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10000])
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase")
    parser.add_argument("--profile", default="", metavar="DIR", help="py-spy raw profiles of every process")
    parser.add_argument("--trace", type=float, default=0.0, metavar="SECONDS",
                        help="print CPU shares and progress this often (stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories (logs)")
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
