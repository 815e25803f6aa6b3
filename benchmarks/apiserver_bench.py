"""API server benchmark: throughput and latency of create/get/update/list/watch on SQLite and etcd.

Run: .venv/bin/python benchmarks/apiserver_bench.py [--backends sqlite,etcd] [--objects 1000]
Prints one table per backend. The anchor is the raw store's own create rate, measured in the same run
with the same concurrency; the "vs anchor" column is API creates / raw store creates. A list is timed from
the request to the last byte of its answer; decoding it is the client's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from etcd_fixture import running_etcd  # noqa: E402
from pocketkube.storage.interface import open_storage  # noqa: E402
from selfsigned import self_signed  # noqa: E402

CONCURRENCY = (1, 10, 100)
TABLE_ACCEPT = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Result:
    name: str
    clients: int
    ops: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@contextlib.contextmanager
def server(datastore: str) -> Iterator[tuple[str, str, Path, int]]:
    data_dir = Path(tempfile.mkdtemp(prefix="pocketkube-bench-"))
    port = free_port()
    # The API server alone: its own controllers and scheduler would react to the benchmark's objects.
    args = [sys.executable, "-m", "pocketkube.cli.main", "server", "--data-dir", str(data_dir),
            "--https-port", str(port), "--disable-controller-manager", "--disable-scheduler", "--disable-agent"]
    if datastore:
        args += ["--datastore-endpoint", datastore]
    log = open(data_dir / "server.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"API server ready" not in (data_dir / "server.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data_dir / "server.log").read_text())
            time.sleep(0.1)
        yield f"https://127.0.0.1:{port}", (data_dir / "token").read_text().strip(), data_dir, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_clients(name: str, clients: int, total: int, op: Callable[[int], Awaitable[None]]) -> Result:
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return Result(name, clients, total, time.perf_counter() - start, latencies)


def configmap(name: str, i: int) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"bench": "yes"}},
            "data": {"i": str(i), "payload": "x" * 200}}


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}


async def raw_store_rate(datastore: str, clients: int, total: int) -> Result:
    tmp = tempfile.mkdtemp(prefix="pocketkube-raw-")
    storage = open_storage(datastore or f"sqlite://{tmp}/raw.db")
    await storage.start()
    prefix = f"/registry/raw/{time.time_ns()}/"
    value = orjson.dumps(configmap("x", 0))

    async def op(i: int) -> None:
        await storage.create(f"{prefix}{i}", value)

    try:
        return await run_clients("raw store create", clients, total, op)
    finally:
        await storage.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def bare_http_rate(clients: int, total: int) -> Result:
    """Creates answered by a bare aiohttp server (benchmarks/bare_http_server.py): the ceiling of the HTTP
    stack alone, for the same client and body."""
    tmp = Path(tempfile.mkdtemp(prefix="pocketkube-bare-"))
    cert, key = self_signed(tmp)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, str(Path(__file__).with_name("bare_http_server.py")),
                                                str(port), str(cert), str(key))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with aiohttp.ClientSession(f"https://127.0.0.1:{port}",
                                         connector=aiohttp.TCPConnector(ssl=ctx, limit=200)) as http:
            async def post(i: int) -> None:
                async with http.post("/api/v1/namespaces/bench/configmaps",
                                     data=orjson.dumps(configmap(f"cm-{i}", i))) as resp:
                    await resp.read()

            for _ in range(100):  # until it listens
                try:
                    await post(0)
                    break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)
            await run_clients("(warm-up)", clients, clients * 4, post)
            return await run_clients("bare aiohttp POST", clients, total, post)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        shutil.rmtree(tmp, ignore_errors=True)


async def api_benchmarks(url: str, token: str, objects: int, list_sizes: tuple[int, ...]) -> list[Result]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    results: list[Result] = []
    connector = aiohttp.TCPConnector(ssl=ctx, limit=200)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as http:
        async def call(method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
            async with http.request(method, path, data=orjson.dumps(body) if body else None) as resp:
                data = await resp.read()
                if resp.status != expect:
                    raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
                return orjson.loads(data)

        for clients in CONCURRENCY:
            ns = f"bench-{clients}"
            await call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}}, 201)
            base = f"/api/v1/namespaces/{ns}/configmaps"
            # Open every client's connection first: steady-state latency, not TLS handshakes.
            await run_clients("(warm-up)", clients, clients * 4, lambda i, b=base: call("GET", b + "?limit=1"))
            results.append(await run_clients("create", clients, objects, lambda i, b=base: call(
                "POST", b, configmap(f"cm-{i}", i), 201)))
            results.append(await run_clients("get", clients, objects, lambda i, b=base: call(
                "GET", f"{b}/cm-{i}")))
            results.append(await run_clients("update (merge patch)", clients, objects,
                                             lambda i, b=base: _patch(http, f"{b}/cm-{i}", i)))
        for size in list_sizes:
            ns = f"pods-{size}"
            await call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}}, 201)
            # No controller manager runs here to make the account pods are admitted with.
            await call("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "default"}}, 201)
            base = f"/api/v1/namespaces/{ns}/pods"
            await run_clients("(fill)", 50, size, lambda i, b=base: call("POST", b, pod(f"p-{i}"), 201))

            # Timed to the last byte of the answer: what the client does with it next is its own work.
            async def list_pods(i: int, b: str = base, accept: dict | None = None) -> None:
                async with http.get(b, headers=accept) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"GET {b}: {resp.status}")
            results.append(await run_clients(f"list {size} pods", 1, 5, list_pods))
            results.append(await run_clients(f"list {size} pods (Table)", 1, 5,
                                             lambda i, b=base: list_pods(i, b, TABLE_ACCEPT)))
        results.append(await watch_delivery(http, call))
    return results


async def _patch(http: aiohttp.ClientSession, path: str, i: int) -> None:
    async with http.patch(path, data=orjson.dumps({"data": {"i": f"{i}-2"}}),
                          headers={"Content-Type": "application/merge-patch+json"}) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"PATCH {path}: {resp.status}")


async def watch_delivery(http: aiohttp.ClientSession, call: Callable[..., Awaitable[dict]],
                         watchers: int = 100, events: int = 200) -> Result:
    """Latency from a write's acknowledgement to its event arriving at each of 100 watchers."""
    ns = "watch-bench"
    await call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}}, 201)
    base = f"/api/v1/namespaces/{ns}/configmaps"
    listing = await call("GET", base)
    rv = listing["metadata"]["resourceVersion"]
    sent: dict[str, float] = {}
    latencies: list[float] = []
    ready = asyncio.Event()
    done = 0

    async def watcher() -> None:
        nonlocal done
        async with http.get(f"{base}?watch=1&resourceVersion={rv}&timeoutSeconds=120") as resp:
            seen = 0
            async for line in resp.content:
                event = orjson.loads(line)
                name = event["object"]["metadata"]["name"]
                arrived = time.perf_counter()
                await ready.wait()
                latencies.append(arrived - sent.get(name, arrived))
                seen += 1
                if seen == events:
                    break
        done += 1

    tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
    await asyncio.sleep(1.0)
    start = time.perf_counter()
    for i in range(events):
        name = f"w-{i}"
        sent[name] = time.perf_counter()
        ready.set()
        await call("POST", base, configmap(name, i), 201)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return Result(f"watch delivery ({watchers} watchers)", watchers, len(latencies),
                  time.perf_counter() - start, latencies)


def print_table(backend: str, results: list[Result], anchors: dict[int, Result], bare: dict[int, Result],
                idle_rss: float) -> None:
    print(f"\n### {backend}\n")
    print("| operation | clients | ops | ops/s | p50 ms | p99 ms | vs anchor | vs bare HTTP |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c, anchor in anchors.items():
        print(f"| {anchor.name} (anchor) | {c} | {anchor.ops} | {anchor.rate:,.0f} | {anchor.pct(0.5):.2f} | "
              f"{anchor.pct(0.99):.2f} | 1.00 | |")
    for c, floor in bare.items():
        print(f"| {floor.name} | {c} | {floor.ops} | {floor.rate:,.0f} | {floor.pct(0.5):.2f} | "
              f"{floor.pct(0.99):.2f} | | 1.00 |")
    for r in results:
        creates = r.name == "create"
        ratio = f"{r.rate / anchors[r.clients].rate:.2f}" if creates and r.clients in anchors else ""
        to_bare = f"{r.rate / bare[r.clients].rate:.2f}" if creates and r.clients in bare else ""
        print(f"| {r.name} | {r.clients} | {r.ops} | {r.rate:,.0f} | {r.pct(0.5):.2f} | {r.pct(0.99):.2f} | "
              f"{ratio} | {to_bare} |")
    print(f"\nidle server RSS: {idle_rss:.0f} MB")


async def bench_backend(backend: str, datastore: str, objects: int, list_sizes: tuple[int, ...]) -> None:
    anchors = {c: await raw_store_rate(datastore, c, objects) for c in CONCURRENCY}
    bare = {c: await bare_http_rate(c, objects) for c in CONCURRENCY}
    with server(datastore) as (url, token, _data_dir, pid):
        await asyncio.sleep(2)
        idle = rss_mb(pid)
        results = await api_benchmarks(url, token, objects, list_sizes)
    print_table(backend, results, anchors, bare, idle)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,etcd")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--list-sizes", default="1000,10000")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.list_sizes.split(","))
    for backend in args.backends.split(","):
        if backend == "etcd":
            with running_etcd() as url:
                asyncio.run(bench_backend("etcd", url, args.objects, sizes))
        else:
            asyncio.run(bench_backend("sqlite", "", args.objects, sizes))


if __name__ == "__main__":
    main()
