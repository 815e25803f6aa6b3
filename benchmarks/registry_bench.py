"""Registry benchmark: push and pull of a large image through a local `pocketkube registry` against skopeo
copying the same image in the same run, and the registry's blob GET throughput under parallel clients.

Run: .venv/bin/python benchmarks/registry_bench.py [--size-mb 500] [--quick]

- push/pull: an image of --size-mb MB in five gzip layers of random (incompressible) data, built with the
  image store API. `pocketkube push` from a data directory holding it, and `pocketkube pull` into an empty
  one, against `skopeo copy` of the same image from an OCI layout written by save_oci_layout (and back into
  an empty layout). Each tool gets a fresh registry process per round, so nothing is already there or can be
  mounted from another repository. Anchor: skopeo, as MB/s of image bytes; the target is ≥ 0.8 of it. One
  untimed round of each comes first; pocketkube's processes cache their bytecode, as an installation does.
- blob GET: CONCURRENCY aiohttp clients GET one 64 MiB blob, then many 4 KiB blobs, from the registry.
  Anchor: a bare aiohttp server (FileResponse, no registry logic) serving the same files.
All processes, temp directories and data are removed at the end, also after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from pocketkube.engine.images import mediatypes
from pocketkube.engine.images.archive import save_oci_layout
from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.store import ImageStore, Layer, host_platform

POCKETKUBE = [sys.executable, "-m", "pocketkube.cli.main"]
SKOPEO = "skopeo"
LAYER_COUNT = 5
FILE_CHUNK = 16 * 1024 * 1024  # random data is generated and stored in pieces of this size
SOURCE_TAG = "bench/big:latest"
CONCURRENCY = 8
BIG_BLOB = 64 * 1024 * 1024
SMALL_BLOB = 4096
SMALL_BLOB_COUNT = 500
READY_SECONDS = 30.0
TARGET_RATIO = 0.8  # issue 7: push/pull throughput against skopeo's

# The anchor for blob GETs: aiohttp serving the registry's blob files with nothing in between.
BARE_SERVER = """
import sys
from aiohttp import web

root = sys.argv[1]

async def blob(request):
    return web.FileResponse(root + "/" + request.match_info["hex"])

app = web.Application()
app.router.add_get("/blobs/sha256:{hex}", blob)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
"""


class BenchError(RuntimeError):
    pass


@dataclass
class Scale:
    size_mb: int
    rounds: int
    big_gets: int
    small_gets: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Scale:
        if args.quick:
            return cls(size_mb=args.size_mb or 100, rounds=1, big_gets=16, small_gets=1000)
        return cls(size_mb=args.size_mb or 500, rounds=3, big_gets=64, small_gets=10000)


# --- results and the table ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    name: str
    samples: list[float] = field(default_factory=list)  # seconds
    result: str = ""
    ratio: float | None = None

    def cells(self) -> list[str]:
        timing = [f"{percentile(self.samples, q) * 1000:.1f}" for q in (0.5, 0.99)] if self.samples else ["", ""]
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else ""
        return [self.name, str(len(self.samples) or ""), *timing, self.result, ratio]


def print_table(title: str, rows: list[Row]) -> None:
    header = ["measurement", "n", "p50 ms", "p99 ms", "result", "vs anchor"]
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"server did not come up on {url}:\n{log.read_text(errors='replace')}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def serving(argv: list[str], url: str, log: Path) -> Iterator[None]:
    """A server process for the block's duration; stopped (SIGTERM, then SIGKILL) however the block ends."""
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_until_serving(url, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Registry:
    host: str       # 127.0.0.1:PORT
    data_dir: Path

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "registry" / "blobs" / "sha256"


@contextlib.contextmanager
def registry(work: Path) -> Iterator[Registry]:
    """A fresh `pocketkube registry` on 127.0.0.1; its data goes away afterwards."""
    served = Registry(f"127.0.0.1:{free_port()}", Path(tempfile.mkdtemp(prefix="registry-", dir=work)))
    try:
        with serving([*POCKETKUBE, "registry", "--data-dir", str(served.data_dir), "--listen", served.host],
                     f"http://{served.host}/v2/", served.data_dir.with_suffix(".log")):
            yield served
    finally:
        shutil.rmtree(served.data_dir, ignore_errors=True)


def run(argv: list[str], **kwargs: object) -> float:
    """Seconds `argv` took; BenchError with its output if it failed."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False, **kwargs)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')}")
    return elapsed


# --- the image ------------------------------------------------------------------------------------


class _LayerSink:
    """Where tarfile writes a layer: hashed as it is (the diff_id) and stored gzip-compressed. Level 0 (stored
    blocks): random data does not compress, so the blob is what any level would give, without minutes of
    deflate."""

    def __init__(self, blob: object) -> None:
        self._blob = blob
        self._gzip = zlib.compressobj(0, zlib.DEFLATED, 31)  # 31: gzip framing
        self.diff_id = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.diff_id.update(data)
        self.size += len(data)
        self._blob.write(self._gzip.compress(data))
        return len(data)

    def finish(self) -> None:
        self._blob.write(self._gzip.flush())


def _random_layer(content: ContentStore, rng: random.Random, size: int) -> Layer:
    """A gzip layer holding `size` bytes of random data in FILE_CHUNK files."""
    with content.writer() as blob:
        sink = _LayerSink(blob)
        with tarfile.open(fileobj=sink, mode="w|") as tar:
            for number, offset in enumerate(range(0, size, FILE_CHUNK)):
                data = rng.randbytes(min(FILE_CHUNK, size - offset))
                info = tarfile.TarInfo(f"data/part{number:04d}.bin")
                info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
        sink.finish()
    return Layer(blob.digest, mediatypes.OCI_LAYER_GZIP, blob.size, "sha256:" + sink.diff_id.hexdigest(), sink.size)


def build_image(data_dir: Path, size_mb: int) -> tuple[ImageStore, int]:
    """The benchmark image in DATA_DIR's engine image store (where `pocketkube push` looks); its blob bytes."""
    root = data_dir / "engine"
    store = ImageStore(root / "images", ContentStore(root / "content"))
    rng = random.Random(7)
    layer_size = size_mb * 1024 * 1024 // LAYER_COUNT
    layers = [_random_layer(store.content, rng, layer_size) for _ in range(LAYER_COUNT)]
    image = store.create({"os": "linux", "architecture": host_platform()[1], "config": {"Cmd": ["sh"]}}, layers,
                         [SOURCE_TAG])
    return store, image.size + store.content.size(image.id)


# --- push and pull --------------------------------------------------------------------------------


@dataclass
class Transfers:
    push: list[float] = field(default_factory=list)
    pull: list[float] = field(default_factory=list)


def _flush_page_cache_writes() -> None:
    """Dirty pages of the previous step must not be written back during the next one's clock."""
    subprocess.run(["sync"], check=True)


def pocketkube_round(work: Path, source: Path, store: ImageStore, timings: Transfers) -> None:
    with registry(work) as served:
        target = f"{served.host}/bench/pocketkube:latest"
        store.tag(SOURCE_TAG, target)
        pulled = Path(tempfile.mkdtemp(prefix="pull-", dir=work))
        try:
            _flush_page_cache_writes()
            timings.push.append(run([*POCKETKUBE, "push", "--data-dir", str(source), target]))
            _flush_page_cache_writes()
            timings.pull.append(run([*POCKETKUBE, "pull", "--data-dir", str(pulled), target]))
        finally:
            store.remove(target)
            shutil.rmtree(pulled, ignore_errors=True)


def skopeo_round(work: Path, layout: Path, timings: Transfers) -> None:
    with registry(work) as served:
        target = f"docker://{served.host}/bench/skopeo:latest"
        pulled = Path(tempfile.mkdtemp(prefix="skopeo-pull-", dir=work))
        try:
            _flush_page_cache_writes()
            timings.push.append(run([SKOPEO, "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                                     f"oci:{layout}:latest", target]))
            _flush_page_cache_writes()
            timings.pull.append(run([SKOPEO, "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                                     target, f"oci:{pulled}:latest"]))
        finally:
            shutil.rmtree(pulled, ignore_errors=True)


def transfer_rows(work: Path, scale: Scale) -> list[Row]:
    source = work / "source"
    store, image_bytes = build_image(source, scale.size_mb)
    layout = work / "layout"
    save_oci_layout(store, [SOURCE_TAG], layout)
    megabytes = image_bytes / 1e6
    ours, skopeo = Transfers(), Transfers()
    # One untimed round each first: bytecode compiled and cached, binaries and source blobs in the page cache.
    pocketkube_round(work, source, store, Transfers())
    skopeo_round(work, layout, Transfers())
    for number in range(scale.rounds):  # alternating who goes first: neither always meets a warmer machine
        if number % 2 == 0:
            pocketkube_round(work, source, store, ours)
            skopeo_round(work, layout, skopeo)
        else:
            skopeo_round(work, layout, skopeo)
            pocketkube_round(work, source, store, ours)

    def rate(seconds: list[float]) -> float:
        return megabytes / percentile(seconds, 0.5)

    what = f"{megabytes:.0f} MB in {LAYER_COUNT} layers"
    rows = []
    for direction in ("push", "pull"):
        anchor, mine = getattr(skopeo, direction), getattr(ours, direction)
        verb = "oci: layout → registry" if direction == "push" else "registry → empty oci: layout"
        rows.append(Row(f"{direction} {what}: `skopeo copy` {verb} — anchor", anchor, f"{rate(anchor):.0f} MB/s", 1.0))
        place = "from a data dir" if direction == "push" else "into an empty data dir"
        rows.append(Row(f"{direction} {what}: `pocketkube {direction}` {place}", mine, f"{rate(mine):.0f} MB/s",
                        rate(mine) / rate(anchor)))
    return rows


# --- blob GETs ------------------------------------------------------------------------------------


async def _upload(http: aiohttp.ClientSession, base: str, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with http.post(f"{base}/v2/{repository}/blobs/uploads/", params={"digest": digest}, data=data) as response:
        if response.status != 201:
            raise BenchError(f"upload of {digest}: {response.status} {await response.text()}")
    return digest


async def store_blobs(host: str) -> tuple[str, list[str]]:
    rng = random.Random(11)
    async with aiohttp.ClientSession() as http:
        base = f"http://{host}"
        big = await _upload(http, base, "bench/blobs", b"".join(rng.randbytes(FILE_CHUNK)
                                                                  for _ in range(BIG_BLOB // FILE_CHUNK)))
        small = [await _upload(http, base, "bench/blobs", rng.randbytes(SMALL_BLOB)) for _ in range(SMALL_BLOB_COUNT)]
    return big, small


async def parallel_gets(urls: list[str], expected_size: int) -> tuple[float, list[float]]:
    """GET every url, CONCURRENCY at a time over kept-alive connections: wall seconds, each GET's seconds."""
    latencies: list[float] = []
    pending = iter(urls)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as http:
        async def worker() -> None:
            for url in pending:
                start = time.perf_counter()
                async with http.get(url) as response:
                    size = 0
                    async for chunk in response.content.iter_chunked(256 * 1024):
                        size += len(chunk)
                    if response.status != 200 or size != expected_size:
                        raise BenchError(f"GET {url}: status {response.status}, {size} bytes")
                latencies.append(time.perf_counter() - start)

        await parallel_warm_up(http, urls[0])
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - start, latencies


async def parallel_warm_up(http: aiohttp.ClientSession, url: str) -> None:
    """Open every connection first: the clock is for steady-state GETs, not connection setup."""
    async def one() -> None:
        async with http.get(url) as response:
            await response.read()

    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))


def get_rows(work: Path, scale: Scale) -> list[Row]:
    rows = []
    with registry(work) as served:
        host = served.host
        big, small = asyncio.run(store_blobs(host))
        bare_port = free_port()
        bare_host = f"127.0.0.1:{bare_port}"
        with serving([sys.executable, "-c", BARE_SERVER, str(served.blob_dir), str(bare_port)],
                     f"http://{bare_host}/", work / "bare-server.log"):
            for label, digests, count, size in (
                    (f"{BIG_BLOB >> 20} MiB blob", [big], scale.big_gets, BIG_BLOB),
                    (f"{SMALL_BLOB >> 10} KiB blobs ({len(small)} distinct)", small, scale.small_gets, SMALL_BLOB)):
                picks = [digests[i % len(digests)] for i in range(count)]
                bare_wall, bare = asyncio.run(parallel_gets([f"http://{bare_host}/blobs/{d}" for d in picks], size))
                wall, ours = asyncio.run(parallel_gets([f"http://{host}/v2/bench/blobs/blobs/{d}" for d in picks], size))
                rows.append(Row(f"GET {label}, {CONCURRENCY} clients: bare aiohttp FileResponse — anchor", bare,
                                _rates(count, size, bare_wall), 1.0))
                rows.append(Row(f"GET {label}, {CONCURRENCY} clients: `pocketkube registry`", ours,
                                _rates(count, size, wall), bare_wall / wall))
    return rows


def _rates(count: int, size: int, wall: float) -> str:
    return f"{count * size / wall / 1e6:.0f} MB/s, {count / wall:,.0f} requests/s"


# --- main -------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up the same way as Ctrl-C


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=0, help="image size for push/pull (500; --quick: 100)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small image, one round, fewer GETs")
    args = parser.parse_args()
    if shutil.which(SKOPEO) is None:
        parser.error("skopeo is needed for the anchor: install the Debian package skopeo")
    scale = Scale.from_args(args)
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="pocketkube-registry-bench-"))
    # The pocketkube processes keep compiled bytecode, as an installed pocketkube has it (with
    # PYTHONDONTWRITEBYTECODE each would compile every module again, ~0.3 s a command here).
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        rows = transfer_rows(work, scale)
        print(f"(push/pull done: {scale.rounds} rounds)", flush=True)
        rows += get_rows(work, scale)
    except KeyboardInterrupt:
        print("interrupted; everything the benchmark created has been removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(f"Registry benchmark ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, everything "
                "on 127.0.0.1)", rows)
    for row in rows:
        if row.name.startswith(("push", "pull")) and "pocketkube" in row.name and row.ratio is not None:
            verdict = "met" if row.ratio >= TARGET_RATIO else "not met"
            print(f"target: {row.name.split(':')[0]} ≥ {TARGET_RATIO} of skopeo's throughput: {row.ratio:.2f} — "
                  f"{verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
