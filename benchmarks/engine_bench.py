"""Engine benchmark: container run-to-exit latency, parallel start, layer unpack and idle memory.

Run (as root): .venv/bin/python benchmarks/engine_bench.py [--runs 100] [--quick] [--runtime auto|runc|crun]
                   [--sections latency,parallel,unpack,rss]

Everything runs against a throwaway data directory whose engine.json names its own cgroup parent, bridge and
subnet, with the busybox image imported; all of it (containers, monitors, mounts, cgroups, bridge, NAT rules,
directories) is removed at the end, also after Ctrl-C or SIGTERM (which stop it between engine operations).

Sections; "vs anchor" compares with a baseline measured in the same run:
- latency:  `/bin/true` from create to removal through the Engine API (networks none and default, split into
            create/start/wait/remove), the same with conmon's exit command as `run -d` sets it up,
            `pocketkube run --rm` as a process, and the bare runtime (`crun run` through the hybrid-cgroup
            wrapper, `runc run`) on a prepared bundle. Anchor: the bare runtime the engine uses, as installed;
            an extra row runs it the way the engine calls it (crun from a sealed copy, without the wrapper).
            A second table splits the engine's network-none run by internal call (wall time, nested calls
            marked). The engine turns the cgroup2 option favordynmods on (runtime/favordynmods.py) before the
            bare rows run, so they have it too. Python processes started by the benchmark (CLI rows, exit commands) cache bytecode.
- parallel: detached `sleep 300` containers started sequentially (anchor) and 100 at once through
            asyncio.gather (at most PARALLEL_LIMIT in flight) until all run; then all removed.
- unpack:   a ~200 MB four-layer gzip image (many small files, some big ones) unpacked by
            Snapshotter.ensure_layers into an empty snapshotter. Anchor: `tar -xzf` of the same blobs, each
            into its own directory, then syncfs as the snapshotter does before publishing a layer.
- rss:      50 idle `sleep 300` containers: RSS and PSS of their conmon monitors and of the container
            processes, and the RSS of this process (the engine is a library: its caller is the engine process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pocketkube.engine.engine as engine_module
from pocketkube.engine import etcfiles
from pocketkube.engine.containers import ContainerConfig, ContainerNotFound
from pocketkube.engine.engine import Engine
from pocketkube.engine.images import mediatypes
from pocketkube.engine.images.busybox import ensure_busybox_image
from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.store import Layer, host_platform
from pocketkube.engine.runtime import cgroups, conmon, favordynmods, mountns, spec
from pocketkube.engine.runtime.oci import OCIRuntime, runtime_error_text
from pocketkube.engine.snapshots.snapshotter import Mount as SnapshotMount
from pocketkube.engine.snapshots.snapshotter import Snapshotter

IMAGE = "busybox:latest"
POCKETKUBE = [sys.executable, "-m", "pocketkube.cli.main"]
SECTIONS = ("latency", "parallel", "unpack", "rss")
PHASES = ("create", "start", "wait", "remove")
WARMUP = 3
PARALLEL_LIMIT = 8          # creates+starts in flight at once: enough to keep 2 cores busy between processes
SERIAL_ANCHOR_COUNT = 10    # containers started one after another for the parallel section's anchor
IDLE_SETTLE_SECONDS = 2.0   # after the last start, before memory is read
PROCESS_WAIT_SECONDS = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TARGET_RATIO = 1.5          # issue 3: run-to-exit through the engine vs the bare runtime it uses


class BenchError(RuntimeError):
    pass


@dataclass
class Scale:
    runs: int
    cli_runs: int
    breakdown_runs: int
    parallel: int
    idle: int
    unpack_mb: int
    unpack_trials: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Scale:
        if args.quick:
            return cls(runs=args.runs or 10, cli_runs=3, breakdown_runs=5, parallel=20, idle=10, unpack_mb=40,
                       unpack_trials=1)
        runs = args.runs or 100
        return cls(runs=runs, cli_runs=max(5, runs // 5), breakdown_runs=20, parallel=100, idle=50, unpack_mb=200,
                   unpack_trials=3)


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

    def p50(self) -> float:
        return percentile(self.samples, 0.5)

    def cells(self) -> list[str]:
        timing = [f"{percentile(self.samples, q) * 1000:.1f}" for q in (0.5, 0.99)] if self.samples else ["", ""]
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else ""
        return [self.name, str(len(self.samples) or ""), *timing, self.result, ratio]


def print_table(title: str, header: list[str], rows: Iterable[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


# --- the throwaway engine ---------------------------------------------------------------------------


@dataclass
class BenchEnv:
    data_dir: Path
    cgroup_parent: str
    bridge: str
    subnet: str
    runtime_choice: str
    engine: Engine | None = None

    @property
    def cli_environment(self) -> dict[str, str]:
        env = dict(os.environ, POCKETKUBE_DATA_DIR=str(self.data_dir))
        if self.runtime_choice != "auto":
            env["POCKETKUBE_RUNTIME"] = self.runtime_choice
        return env


def _free_subnet() -> str:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    for n in random.sample(range(1, 250), 249):
        if f"10.251.{n}." not in routes:
            return f"10.251.{n}.0/24"
    raise BenchError("no free 10.251.N.0/24 subnet for the benchmark's bridge")


@contextlib.contextmanager
def bench_env(runtime: str) -> Iterator[BenchEnv]:
    tag = secrets.token_hex(2)
    env = BenchEnv(Path(tempfile.mkdtemp(prefix="pocketkube-enginebench-")), f"/pocketkube-enginebench-{tag}",
                   f"pkeb{tag}", _free_subnet(), runtime)
    host_cgroup2 = favordynmods.cgroup2_mount()  # the engine turns favordynmods on; the host gets its own back
    try:
        (env.data_dir / "engine.json").write_text(json.dumps(
            {"cgroup-parent": env.cgroup_parent, "bridge": env.bridge, "subnet": env.subnet}))
        env.engine = Engine(env.data_dir, runtime=runtime)
        ensure_busybox_image(env.engine.images)
        with _bytecode_cached(env.data_dir / "pycache"):
            yield env
    finally:
        _clean(env)
        if host_cgroup2 is not None:
            favordynmods.set_favordynmods(host_cgroup2.favors_dynmods)


@contextlib.contextmanager
def _bytecode_cached(directory: Path) -> Iterator[None]:
    """Python processes started meanwhile (the CLI rows, conmon's exit commands) keep compiled bytecode in
    `directory`, as an installed pocketkube has it; with PYTHONDONTWRITEBYTECODE each would compile every
    module again (~0.1 s)."""
    saved = {name: os.environ.get(name) for name in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")}
    os.environ["PYTHONPYCACHEPREFIX"] = str(directory)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _clean(env: BenchEnv) -> None:
    engine = env.engine
    if engine is not None:
        asyncio.run(_remove_all_containers(engine))
        _wait_for_engine_processes(env)
        _unmount_below((env.data_dir, engine.run_root))
        shutil.rmtree(engine.run_root, ignore_errors=True)
    cgroups.remove(env.cgroup_parent, kill=True)
    _delete_nat_rules(env.subnet)
    subprocess.run(["ip", "link", "delete", env.bridge], capture_output=True, check=False)
    _unmount_below((env.data_dir,))
    shutil.rmtree(env.data_dir, ignore_errors=True)


async def _remove_all_containers(engine: Engine) -> None:
    for container in engine.containers.list():
        try:
            await engine.remove(container.id, force=True)
        except ContainerNotFound:
            pass  # removed meanwhile (its exit command, or a removal that was under way)
        except Exception as err:  # keep cleaning; what is left is unmounted and deleted below
            print(f"cleanup: removing {container.short_id}: {err}", file=sys.stderr)


def _engine_processes(env: BenchEnv) -> list[int]:
    """Monitors of our containers and the exit commands they run (`pocketkube container-cleanup`)."""
    assert env.engine is not None
    run_root, data_dir = str(env.engine.run_root).encode(), str(env.data_dir).encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        joined = b" ".join(argv)
        if (os.path.basename(argv[0]) == b"conmon" and run_root in joined) or \
                (b"container-cleanup" in joined and data_dir in joined):
            found.append(int(entry.name))
    return found


def _wait_for_engine_processes(env: BenchEnv, timeout: float = PROCESS_WAIT_SECONDS) -> None:
    """An exit command still running would recreate the data directory it was pointed at."""
    deadline = time.monotonic() + timeout
    while (pids := _engine_processes(env)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:  # started by this benchmark's containers, stuck past the deadline
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _unmount_below(roots: Iterable[Path]) -> None:
    prefixes = tuple(f"{root}/" for root in roots)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefixes):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _delete_nat_rules(subnet: str) -> None:
    """Masquerade rules the bridge plugin left for our subnet (a container interrupted mid-start)."""
    prefix = "-s " + subnet.rsplit(".", 1)[0] + "."
    saved = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=False).stdout
    for line in saved.splitlines():
        if not (line.startswith("-A POSTROUTING ") and prefix in line):
            continue
        rule = shlex.split(line)[1:]
        subprocess.run(["iptables", "-t", "nat", "-D", *rule], capture_output=True, check=False)
        chain = rule[rule.index("-j") + 1] if "-j" in rule else ""
        if chain.startswith("CNI-"):
            subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True, check=False)
            subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True, check=False)


class StopRequest:
    """Ctrl-C and SIGTERM only ask the benchmark to stop; it does so between engine operations. Raising
    inside an operation (the default KeyboardInterrupt) or cancelling it midway can leave a task holding a
    container's lock, and the cleanup (and conmon's exit commands) would then wait for it forever."""

    requested = False

    @classmethod
    def install(cls) -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, cls._request)

    @classmethod
    def _request(cls, signum: int, frame: object) -> None:
        if not cls.requested:
            print("stopping after the operations under way…", file=sys.stderr, flush=True)
        cls.requested = True

    @classmethod
    def check(cls) -> None:
        """Called where nothing is half done: stops the benchmark (its cleanup then runs) if asked to."""
        if cls.requested:
            raise KeyboardInterrupt


# --- latency: run-to-exit ---------------------------------------------------------------------------


class CallTimer:
    """Wall time of chosen engine calls, per phase of a run, for the breakdown table. It wraps them until
    the `with` block ends (measurement only); a call made inside another timed call is recorded with it."""

    _outer: contextvars.ContextVar[str] = contextvars.ContextVar("timed_call", default="")

    def __init__(self) -> None:
        self.phase = ""
        # (phase, label, label of the timed call it ran inside or "") -> seconds, calls
        self.seconds: dict[tuple[str, str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str, str], int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: object, attribute: str, label: str) -> None:
        raw = inspect.getattr_static(owner, attribute)
        original = getattr(owner, attribute)
        timer = self

        if inspect.iscoroutinefunction(original):
            async def wrapper(*args, **kwargs):
                outer = timer._outer.set(label)
                start = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    timer._record(label, time.perf_counter() - start, outer.old_value)
                    timer._outer.reset(outer)
        else:
            def wrapper(*args, **kwargs):
                outer = timer._outer.set(label)
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    timer._record(label, time.perf_counter() - start, outer.old_value)
                    timer._outer.reset(outer)

        own = attribute in vars(owner)
        setattr(owner, attribute, staticmethod(wrapper) if isinstance(raw, staticmethod) else wrapper)
        self._undo.append(lambda: setattr(owner, attribute, raw) if own else delattr(owner, attribute))

    def _record(self, label: str, seconds: float, outer: object) -> None:
        key = (self.phase, label, outer if isinstance(outer, str) else "")
        self.seconds[key] += seconds
        self.calls[key] += 1

    def __enter__(self) -> CallTimer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def instrument(timer: CallTimer, engine: Engine) -> None:
    runtime = engine.runtime
    for owner, attribute, label in (
        (engine.images, "resolve", "images.resolve"),
        (engine.snapshots, "ensure_layers", "snapshots.ensure_layers"),
        (engine.containers, "add", "containers.add (id, name, record)"),
        (engine.snapshots, "prepare", "snapshots.prepare"),
        (engine.containers, "resolve", "containers.resolve"),
        (engine.containers, "save", "containers.save"),
        (engine.containers, "release", "containers.release (record gone, files later)"),
        (runtime, "delete", f"{runtime.name} delete (process)"),
        (runtime, "start", f"{runtime.name} start (process)"),
        (conmon, "create_container", f"conmon + {runtime.name} create (processes)"),
        (conmon, "wait_exit", "conmon.wait_exit (the container runs)"),
        (conmon, "cleanup", "conmon.cleanup"),
        (cgroups, "remove", "cgroups.remove"),
        (engine.network, "attach", "network.attach (pinned netns)"),
        (engine.network, "detach", "network.detach"),
        (etcfiles, "write", "etcfiles.write"),
        (engine_module, "resolve_user", "resolve_user"),
        (spec, "build_spec", "spec.build_spec"),
        (SnapshotMount, "mount", "rootfs mount"),
        (SnapshotMount, "unmount", "rootfs unmount"),
        (engine.snapshots, "release", "snapshots.release (index entry gone, files later)"),
    ):
        timer.wrap(owner, attribute, label)


def _true_config(network: str, exit_command: bool) -> ContainerConfig:
    # cleanup_on_exit=False is what the foreground `run` asks for: the caller records the exit itself.
    return ContainerConfig(image=IMAGE, command=["/bin/true"], network=network, cleanup_on_exit=exit_command)


async def engine_runs(engine: Engine, runs: int, network: str, *, exit_command: bool = False,
                      timer: CallTimer | None = None) -> dict[str, list[float]]:
    """create + start + wait + remove of `/bin/true`, one after another: seconds per phase and in all."""
    phases: dict[str, list[float]] = {name: [] for name in (*PHASES, "total")}
    marks: list[float] = []

    def mark(phase: str) -> None:
        marks.append(time.perf_counter())
        if timer is not None:
            timer.phase = phase

    for _ in range(runs):
        StopRequest.check()
        marks.clear()
        mark("create")
        container = await engine.create(_true_config(network, exit_command))
        mark("start")
        await engine.start(container.id)
        mark("wait")
        finished = await engine.wait(container.id, timeout=30)
        mark("remove")
        await engine.remove(container.id)
        mark("")
        if finished.state.exit_code != 0:
            raise BenchError(f"/bin/true exited {finished.state.exit_code}: {finished.state.error}")
        for name, begin, end in zip(PHASES, marks, marks[1:], strict=False):
            phases[name].append(end - begin)
        phases["total"].append(marks[-1] - marks[0])
    return phases


@contextlib.contextmanager
def bare_bundle(env: BenchEnv) -> Iterator[Path]:
    """A bundle whose rootfs is the busybox image, mounted from the snapshotter as the engine mounts it."""
    engine = env.engine
    assert engine is not None
    image = engine.images.resolve(IMAGE)
    chain = engine.snapshots.ensure_layers(
        [(layer.diff_id, functools.partial(engine.content.open, layer.digest)) for layer in image.layers])
    key = "bench-bare-bundle"
    bundle = env.data_dir / "bare-bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)  # left by an earlier use: the mount goes, the directory stays
    for mount in engine.snapshots.prepare(key, chain):
        mount.mount(rootfs)
    try:
        yield bundle
    finally:
        SnapshotMount.unmount(rootfs)
        engine.snapshots.remove(key)


def bare_runtime_runs(env: BenchEnv, bundle: Path, name: str, runs: int, *, as_engine_calls_it: bool = False
                      ) -> list[float]:
    """`<runtime> run` of `/bin/true` in new pid, mount, ipc, uts and network namespaces and its own cgroup:
    the runtime's own cost, without the engine. By default the runtime as installed (crun on this hybrid
    host through the unshare wrapper); as_engine_calls_it: crun from the engine's sealed copy, started in a
    mount namespace without the cgroup2 mount (mountns.py), as conmon runs it for the engine."""
    assert env.engine is not None
    runtime = OCIRuntime.detect(env.engine.run_root / "bare", name)
    if not as_engine_calls_it:
        runtime.binary = shutil.which(name) or runtime.binary
    image_env = env.engine.images.resolve(IMAGE).config.get("config", {}).get("Env") or []
    seconds = []
    for i in range(WARMUP + runs):
        StopRequest.check()
        cid = f"bench-bare-{name}-{i}"
        document = spec.build_spec(spec.ContainerSpec(
            process=spec.Process(args=["/bin/true"], env=[*image_env, "HOME=/"]), rootfs=str(bundle / "rootfs"),
            hostname="bare", cgroups_path=f"{env.cgroup_parent}/{cid}"))
        (bundle / "config.json").write_text(json.dumps(document))
        argv = ["run", "--bundle", str(bundle), cid]
        options = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        start = time.perf_counter()
        if as_engine_calls_it and runtime.hidden_mount is not None:
            process = mountns.spawn_without_mount(runtime.hidden_mount, [*runtime.command("run", mount_hidden=True),
                                                                        *argv], **options)
            _, stderr = process.communicate()
            returncode = process.returncode
        else:
            done = subprocess.run([*runtime.command("run"), *argv], check=False, **options)
            stderr, returncode = done.stderr, done.returncode
        elapsed = time.perf_counter() - start
        if returncode != 0:
            raise BenchError(f"{name} run failed: {runtime_error_text(stderr) or returncode}")
        if i >= WARMUP:
            seconds.append(elapsed)
    return seconds


def cli_runs(env: BenchEnv, argv: list[str], runs: int) -> list[float]:
    seconds = []
    for i in range(1 + runs):  # the first one fills the page cache with the CLI's modules
        StopRequest.check()
        start = time.perf_counter()
        done = subprocess.run([*POCKETKUBE, *argv], env=env.cli_environment, capture_output=True, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise BenchError(f"pocketkube {' '.join(argv)} exited {done.returncode}: "
                             f"{done.stderr.decode(errors='replace').strip()}")
        if i:
            seconds.append(elapsed)
    return seconds


@dataclass
class Breakdown:
    network: str
    timer: CallTimer
    runs: int
    phase_ms: dict[str, float]  # mean per phase over the same instrumented runs


def breakdown_runs(engine: Engine, network: str, runs: int) -> Breakdown:
    with CallTimer() as timer:
        instrument(timer, engine)
        phases = asyncio.run(engine_runs(engine, runs, network, timer=timer))
    return Breakdown(network, timer, runs, {phase: sum(phases[phase]) * 1000 / runs for phase in PHASES})


def latency_section(env: BenchEnv, scale: Scale) -> tuple[list[Row], list[Breakdown]]:
    engine = env.engine
    assert engine is not None
    runtime_name = engine.runtime.name
    with bare_bundle(env) as bundle:
        bare = {name: Row(f"bare `{name} run`" + (" (hybrid-cgroup wrapper)" if name == "crun" else ""),
                          bare_runtime_runs(env, bundle, name, scale.runs)) for name in ("crun", "runc")}
        as_engine = Row(f"  bare `{runtime_name} run` as the engine calls the runtime (sealed copy, no wrapper)",
                        bare_runtime_runs(env, bundle, runtime_name, scale.runs, as_engine_calls_it=True))
    anchor = bare[runtime_name]
    anchor.name += " — anchor"
    anchor.ratio = 1.0
    as_engine.ratio = as_engine.p50() / anchor.p50()
    rows = [anchor, as_engine, *(row for name, row in bare.items() if name != runtime_name)]

    def engine_rows(label: str, phases: dict[str, list[float]], split: bool) -> list[Row]:
        total = Row(label, phases["total"])
        total.ratio = total.p50() / anchor.p50()
        return [total, *(Row(f"  ↳ {phase}", phases[phase]) for phase in PHASES if split)]

    for network in ("none", "default"):
        asyncio.run(engine_runs(engine, WARMUP, network))
        phases = asyncio.run(engine_runs(engine, scale.runs, network))
        rows += engine_rows(f"engine API, network {network} ({runtime_name})", phases, split=True)
    phases = asyncio.run(engine_runs(engine, scale.runs, "none", exit_command=True))
    _wait_for_engine_processes(env)
    rows += engine_rows("engine API, network none, with conmon exit command (as `run -d`)", phases, split=False)

    run_row = Row("CLI `pocketkube run --rm --network none busybox /bin/true`",
                  cli_runs(env, ["run", "--rm", "--network", "none", IMAGE, "/bin/true"], scale.cli_runs))
    run_row.ratio = run_row.p50() / anchor.p50()
    rows += [run_row, Row("  CLI start-up alone: `pocketkube ps -q`", cli_runs(env, ["ps", "-q"], scale.cli_runs))]
    return rows, [breakdown_runs(engine, network, scale.breakdown_runs) for network in ("none", "default")]


def print_breakdown(breakdown: Breakdown) -> None:
    timer, runs = breakdown.timer, breakdown.runs
    lines = []
    for phase in PHASES:
        total_ms = breakdown.phase_ms[phase]
        keys = sorted((k for k in timer.seconds if k[0] == phase), key=lambda k: -timer.seconds[k])
        outer_keys = [k for k in keys if not k[2]]
        lines.append([f"**{phase}**", "", f"{total_ms:.1f}", "100%"])
        for key in outer_keys:
            lines.append(_breakdown_line(timer, key, key[1], runs, total_ms))
            for inner in (k for k in keys if k[2] == key[1]):
                lines.append(_breakdown_line(timer, inner, f"  ↳ {inner[1]}", runs, total_ms))
        rest = total_ms - sum(timer.seconds[k] for k in outer_keys) * 1000 / runs
        lines.append(["(rest: Python between those calls, locks, record reads)", "", f"{rest:.1f}",
                      f"{rest / total_ms:.0%}"])
    print_table(f"Where the engine's run-to-exit time goes: network {breakdown.network}, {runs} runs with these "
                "calls timed (mean wall ms per run; ↳ = inside the call above)",
                ["phase / call", "calls per run", "ms per run", "share of phase"], lines)


def _breakdown_line(timer: CallTimer, key: tuple[str, str, str], label: str, runs: int, total_ms: float) -> list[str]:
    ms = timer.seconds[key] * 1000 / runs
    return [label, f"{timer.calls[key] / runs:g}", f"{ms:.1f}", f"{ms / total_ms:.0%}"]


# --- parallel start ---------------------------------------------------------------------------------


def _sleep_config(network: str) -> ContainerConfig:
    return ContainerConfig(image=IMAGE, command=["sleep", "300"], network=network)


async def start_detached(engine: Engine, count: int, network: str, limit: int) -> tuple[list[str], float, list[float]]:
    """create + start of `count` detached containers, at most `limit` at a time: their ids, the wall time
    until all run, and each one's create+start time."""
    gate = asyncio.Semaphore(limit)
    latencies: list[float] = []

    async def one() -> str:
        async with gate:
            if StopRequest.requested:
                return ""  # the ones under way finish first: no task is left holding a lock
            start = time.perf_counter()
            container = await engine.create(_sleep_config(network))
            await engine.start(container.id)
            latencies.append(time.perf_counter() - start)
            return container.id

    start = time.perf_counter()
    ids = list(await asyncio.gather(*(one() for _ in range(count))))
    wall = time.perf_counter() - start
    StopRequest.check()
    stopped = [cid for cid in ids if not (await engine.refresh(cid)).running]
    if stopped:
        raise BenchError(f"{len(stopped)} of {count} containers are not running after start")
    return ids, wall, latencies


async def remove_containers(engine: Engine, ids: list[str], limit: int) -> tuple[float, list[float]]:
    gate = asyncio.Semaphore(limit)
    latencies: list[float] = []

    async def one(cid: str) -> None:
        async with gate:
            start = time.perf_counter()
            await engine.remove(cid, force=True)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(one(cid) for cid in ids))
    return time.perf_counter() - start, latencies


async def parallel_rows(engine: Engine, count: int, network: str) -> list[Row]:
    ids, serial_wall, serial = await start_detached(engine, SERIAL_ANCHOR_COUNT, network, limit=1)
    await remove_containers(engine, ids, limit=1)
    serial_rate = SERIAL_ANCHOR_COUNT / serial_wall
    anchor = Row(f"start {SERIAL_ANCHOR_COUNT} × `sleep 300` one at a time, network {network} — anchor", serial,
                 f"{serial_rate:.1f} containers/s", 1.0)
    ids, wall, latencies = await start_detached(engine, count, network, PARALLEL_LIMIT)
    parallel = Row(f"start {count} × `sleep 300` in parallel (≤{PARALLEL_LIMIT} at once), network {network}",
                   latencies, f"{count / wall:.1f} containers/s, all running after {wall:.2f} s",
                   count / wall / serial_rate)
    remove_wall, removals = await remove_containers(engine, ids, PARALLEL_LIMIT)
    removed = Row(f"  remove those {count} (force, ≤{PARALLEL_LIMIT} at once)", removals,
                  f"{count / remove_wall:.1f} containers/s, {remove_wall:.2f} s")
    return [anchor, parallel, removed]


def parallel_section(env: BenchEnv, scale: Scale) -> list[Row]:
    assert env.engine is not None
    rows = []
    for network in ("none", "default"):
        rows += asyncio.run(parallel_rows(env.engine, scale.parallel, network))
        _wait_for_engine_processes(env)  # the exit commands of the removed containers
    return rows


# --- unpack -----------------------------------------------------------------------------------------


class _LayerSink:
    """Where tarfile writes a layer: hashed as it is (the diff_id) and stored gzip-compressed."""

    def __init__(self, blob: object) -> None:
        self._blob = blob
        self._gzip = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip framing
        self.diff_id = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.diff_id.update(data)
        self.size += len(data)
        self._blob.write(self._gzip.compress(data))
        return len(data)

    def finish(self) -> None:
        self._blob.write(self._gzip.flush())


def _layer_files(rng: random.Random, size: int, text: bytes) -> Iterator[tuple[str, bytes]]:
    """~40% of `size` as small text files (0.5-16 KiB, 40 per directory), the rest as three big random files."""
    small_budget, written, index = size * 2 // 5, 0, 0
    while written < small_budget:
        length = rng.randint(512, 16384)
        offset = rng.randrange(len(text) - length)
        yield f"usr/share/bench/d{index // 40:04d}/f{index:05d}.txt", text[offset:offset + length]
        written += length
        index += 1
    big = (size - written) // 3
    for n in range(3):
        yield f"opt/bench/blob{n}.bin", rng.randbytes(big)


def write_layer(content: ContentStore, files: Iterable[tuple[str, bytes]]) -> Layer:
    made: set[str] = set()
    with content.writer() as blob:
        sink = _LayerSink(blob)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name, data in files:
                parents = Path(name).parents
                for directory in reversed([str(p) for p in parents if str(p) != "."]):
                    if directory not in made:
                        made.add(directory)
                        info = tarfile.TarInfo(directory)
                        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                        tar.addfile(info)
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
                tar.addfile(info, _BytesReader(data))
        sink.finish()
    return Layer(blob.digest, mediatypes.OCI_LAYER_GZIP, blob.size, "sha256:" + sink.diff_id.hexdigest(), sink.size)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        chunk, self._view = (self._view, self._view[len(self._view):]) if n < 0 else (self._view[:n], self._view[n:])
        return bytes(chunk)


def build_unpack_image(engine: Engine, total_mb: int, layer_count: int = 4) -> list[Layer]:
    rng = random.Random(20240601)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10))) for _ in range(2000)]
    text = b" ".join(rng.choices(words, k=12000))
    layers = [write_layer(engine.content, _layer_files(rng, total_mb * 1024 * 1024 // layer_count, text))
              for _ in range(layer_count)]
    engine.images.create({"os": "linux", "architecture": host_platform()[1], "config": {}}, layers,
                         ["bench/unpack:latest"])
    return layers


def time_snapshotter(content: ContentStore, layers: list[Layer], root: Path, mode: str) -> float:
    snapshotter = Snapshotter(root, mode=mode)  # an explicit mode: no overlay probe inside the timing
    openers = [(layer.diff_id, functools.partial(content.open, layer.digest)) for layer in layers]
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    snapshotter.ensure_layers(openers)
    return time.perf_counter() - start


def time_tar(content: ContentStore, layers: list[Layer], root: Path) -> tuple[float, float]:
    """Seconds of `tar -xzf` for all layers, and of the syncfs after each one."""
    extract = flush = 0.0
    subprocess.run(["sync"], check=True)
    for number, layer in enumerate(layers):
        target = root / str(number)
        target.mkdir(parents=True)
        start = time.perf_counter()
        subprocess.run(["tar", "-xzf", str(content.path(layer.digest)), "-C", str(target)], check=True)
        middle = time.perf_counter()
        subprocess.run(["sync", "-f", str(target)], check=True)
        extract += middle - start
        flush += time.perf_counter() - middle
    return extract, flush


def unpack_section(env: BenchEnv, scale: Scale) -> list[Row]:
    engine = env.engine
    assert engine is not None
    layers = build_unpack_image(engine, scale.unpack_mb)
    megabytes = sum(layer.uncompressed_size or 0 for layer in layers) / 1e6
    compressed = sum(layer.size for layer in layers) / 1e6
    work = env.data_dir / "unpack"
    ours, tar_alone, tar_synced = [], [], []
    for trial in range(scale.unpack_trials):
        StopRequest.check()
        root = work / str(trial)
        for which in (("snapshotter", "tar") if trial % 2 == 0 else ("tar", "snapshotter")):
            if which == "snapshotter":
                ours.append(time_snapshotter(engine.content, layers, root / "snapshotter", engine.snapshots.mode))
            else:
                extract, flush = time_tar(engine.content, layers, root / "tar")
                tar_alone.append(extract)
                tar_synced.append(extract + flush)
        shutil.rmtree(root)

    def rate(seconds: list[float]) -> float:
        return megabytes / percentile(seconds, 0.5)

    what = f"{len(layers)} layers, {megabytes:.0f} MB unpacked / {compressed:.0f} MB gzip"
    return [Row(f"unpack: `tar -xzf` + syncfs per layer ({what}) — anchor", tar_synced,
                f"{rate(tar_synced):.0f} MB/s", 1.0),
            Row("  `tar -xzf` alone", tar_alone, f"{rate(tar_alone):.0f} MB/s", rate(tar_alone) / rate(tar_synced)),
            Row(f"unpack: Snapshotter.ensure_layers ({engine.snapshots.mode}) into an empty snapshotter", ours,
                f"{rate(ours):.0f} MB/s", rate(ours) / rate(tar_synced))]


# --- idle memory ------------------------------------------------------------------------------------


def _kilobytes(pid: int, file: str, key: str) -> int:
    for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/{file} has no {key}")


@dataclass
class Memory:
    rss_mb: float
    pss_mb: float


def memory_of(pids: list[int]) -> Memory:
    return Memory(sum(_kilobytes(pid, "status", "VmRSS") for pid in pids) / 1024,
                  sum(_kilobytes(pid, "smaps_rollup", "Pss") for pid in pids) / 1024)


def own_rss_mb() -> float:
    return _kilobytes(os.getpid(), "status", "VmRSS") / 1024


async def idle_memory(engine: Engine, count: int) -> tuple[Memory, Memory, float, float]:
    """Memory of `count` idle containers' monitors and processes, and this process's RSS before and after."""
    before = own_rss_mb()
    ids, _, _ = await start_detached(engine, count, "none", PARALLEL_LIMIT)
    try:
        await asyncio.sleep(IDLE_SETTLE_SECONDS)
        monitors = [conmon.monitor_pid(engine.monitor_paths, cid) for cid in ids]
        if None in monitors:
            raise BenchError("a running container has no conmon")
        workloads = [engine.containers.load(cid).state.pid for cid in ids]
        return memory_of(monitors), memory_of(workloads), before, own_rss_mb()
    finally:
        await remove_containers(engine, ids, PARALLEL_LIMIT)


def rss_section(env: BenchEnv, scale: Scale) -> list[Row]:
    assert env.engine is not None
    count = scale.idle
    monitors, workloads, before, after = asyncio.run(idle_memory(env.engine, count))
    _wait_for_engine_processes(env)
    return [
        Row(f"idle: {count} conmon monitors", result=f"RSS {monitors.rss_mb:.1f} MB "
            f"({monitors.rss_mb / count * 1024:.0f} KB/container), PSS {monitors.pss_mb:.1f} MB "
            f"({monitors.pss_mb / count * 1024:.0f} KB/container)"),
        Row(f"idle: {count} container processes (`sleep 300`, for scale)", result=f"RSS {workloads.rss_mb:.1f} MB, "
            f"PSS {workloads.pss_mb:.1f} MB ({workloads.pss_mb / count * 1024:.0f} KB/container)"),
        Row("idle: engine process (this benchmark) RSS", result=f"{after:.1f} MB with {count} running, "
            f"{before:.1f} MB before them"),
    ]


# --- main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=0, help="run-to-exit runs per row (100; --quick: 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few runs, small image, few containers")
    parser.add_argument("--runtime", default="auto", choices=("auto", "runc", "crun"), help="the engine's runtime")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of %(default)s")
    args = parser.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        parser.error("the engine benchmark runs containers: run it as root")
    scale = Scale.from_args(args)
    StopRequest.install()
    rows: list[Row] = []
    try:
        with bench_env(args.runtime) as env:
            assert env.engine is not None
            print(f"engine runtime: {env.engine.runtime.name}, snapshotter: {env.engine.snapshots.mode}, "
                  f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (others' work skews the "
                  f"figures), data in {env.data_dir}", flush=True)
            breakdowns: list[Breakdown] = []
            for section in sections:
                if section == "latency":
                    latency_rows, breakdowns = latency_section(env, scale)
                    rows += latency_rows
                else:
                    rows += {"parallel": parallel_section, "unpack": unpack_section, "rss": rss_section}[section](
                        env, scale)
                print(f"({section} done)", flush=True)
    except KeyboardInterrupt:
        print("interrupted; everything the benchmark created has been removed", file=sys.stderr)
        return 130
    print_table("Engine benchmark", ["measurement", "n", "p50 ms", "p99 ms", "result", "vs anchor"],
                (row.cells() for row in rows))
    target = next((row for row in rows if row.name.startswith("engine API, network none (")), None)
    if target is not None and target.ratio is not None:
        verdict = "met" if target.ratio <= TARGET_RATIO else "not met"
        print(f"\ntarget: engine API (network none) p50 ≤ {TARGET_RATIO}× the bare runtime's: {target.ratio:.2f}× — "
              f"{verdict}")
    for breakdown in breakdowns:
        print_breakdown(breakdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
