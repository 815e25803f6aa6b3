"""conmon as the container monitor, with real runc, crun and conmon on a busybox bundle: CRI log lines, exit
codes and times, signals, OOM, a monitor that outlives its creator, attach (pipes and terminal), runtime errors
coming back through the sync pipe, and the files cleanup() removes."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from engine_harness import make_busybox_rootfs

from pocketkube.engine.runtime import attach, conmon, mountns
from pocketkube.engine.runtime.oci import OCIRuntime, OCIRuntimeError

TAG = secrets.token_hex(3)
RUN_BASE = Path(f"/run/pocketkube-test-{TAG}")
CGROUP_PARENT = f"pocketkube-test-{TAG}"
BUSYBOX_APPLETS = ("sh", "cat", "sleep", "true", "echo", "dd", "stty", "tty")
TRAP_TERM = ["/bin/sh", "-c", 'trap "exit 7" TERM; echo ready; while true; do sleep 0.1; done']

pytestmark = pytest.mark.timeout(60)


# --- fixtures: a busybox rootfs, bundles made from `runc spec`, both runtimes, monitor dirs --------------


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="module")
def spec_template(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("spec")
    subprocess.run(["runc", "spec", "--bundle", str(directory)], check=True)
    return json.loads((directory / "config.json").read_text())


@pytest.fixture(scope="module")
def runtimes() -> Iterator[dict[str, OCIRuntime]]:
    found = {name: OCIRuntime.detect(RUN_BASE / "runtime", name) for name in ("runc", "crun")}
    try:
        yield found
    finally:
        remove_everything(found, conmon.MonitorPaths(RUN_BASE / "exits", RUN_BASE / "persist", RUN_BASE / "sockets"))


@pytest.fixture
def paths() -> conmon.MonitorPaths:
    return conmon.MonitorPaths(RUN_BASE / "exits", RUN_BASE / "persist", RUN_BASE / "sockets")


@pytest.fixture
def bundle(tmp_path: Path, rootfs: Path, spec_template: dict) -> Callable[..., Path]:
    def make(cid: str, args: list[str], *, terminal: bool = False, memory_limit: int | None = None) -> Path:
        config = copy.deepcopy(spec_template)
        config["root"] = {"path": str(rootfs), "readonly": True}
        config["process"].update(args=args, terminal=terminal)
        config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/{cid}"
        if memory_limit is not None:
            config["linux"].setdefault("resources", {})["memory"] = {"limit": memory_limit, "swap": memory_limit}
        directory = tmp_path / cid
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(config))
        return directory
    return make


def remove_everything(runtimes: dict[str, OCIRuntime], paths: conmon.MonitorPaths) -> None:
    """Containers (their monitors then end), leftover monitors, run dirs and the test cgroup parent."""
    for runtime in runtimes.values():
        listing = subprocess.run([*runtime.command(), "list", "--format", "json"], capture_output=True).stdout
        for entry in json.loads(listing or b"null") or []:
            subprocess.run([*runtime.command(), "delete", "--force", entry["id"]], capture_output=True)
    if paths.persist_dir.is_dir():
        for persist in paths.persist_dir.iterdir():
            pid = conmon.monitor_pid(paths, persist.name)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(RUN_BASE, ignore_errors=True)
    for controller in Path("/sys/fs/cgroup").iterdir():
        parent = controller / CGROUP_PARENT
        if parent.is_dir():
            for child in (c for c in parent.iterdir() if c.is_dir()):
                child.rmdir()
            parent.rmdir()


def container_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


async def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def run(runtime: OCIRuntime, cid: str, bundle_dir: Path, paths: conmon.MonitorPaths, log: Path,
              **options) -> int:
    pid = await conmon.create_container(runtime, cid, bundle_dir, log_path=log, paths=paths, **options)
    await runtime.start(cid)
    return pid


def proc_file(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def log_lines(log: Path) -> list[tuple[str, str, str]]:
    """(stream, tag, text) of each CRI log line: `<RFC3339Nano> <stream> <F|P> <text>`."""
    return [tuple(line.split(" ", 3)[1:]) for line in log.read_text().splitlines()]


# --- tests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["runc", "crun"])
async def test_logs_exit_code_and_exit_time(name, runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes[name], container_id("logs")
    log = tmp_path / "ctr.log"
    recorded = tmp_path / "exit-command-saw"
    before = time.time()
    pid = await run(runtime, cid, bundle(cid, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]), paths, log,
                    exit_command=["/bin/sh", "-c", f"cat {paths.exit_dir / cid} > {recorded}"])
    assert pid > 0
    assert await conmon.wait_exit(paths, cid, timeout=10) == 3
    code, exited_at = conmon.exit_status(paths, cid)
    assert code == 3 and before <= exited_at <= time.time()
    await eventually(lambda: recorded.exists() and recorded.read_text() == "3")  # runs after the exit file
    assert ("stdout", "F", "out") in log_lines(log) and ("stderr", "F", "err") in log_lines(log)
    assert not any("level" in text for _, _, text in log_lines(log)), "runtime warnings belong in runtime.log"
    assert not conmon.oom_killed(paths, cid)
    await runtime.delete(cid)


async def test_reopen_log_after_a_rename(runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes["crun"], container_id("reopen")
    log = tmp_path / "ctr.log"
    script = 'i=0; while true; do i=$((i+1)); echo line$i; sleep 0.05; done'
    await run(runtime, cid, bundle(cid, ["/bin/sh", "-c", script]), paths, log)
    await eventually(lambda: len(log_lines(log)) >= 2)
    rotated = tmp_path / "ctr.log.1"
    log.rename(rotated)
    conmon.reopen_log(paths, cid)
    await eventually(lambda: log.exists() and len(log_lines(log)) >= 2)
    old, new = [int(text.removeprefix("line")) for _, _, text in log_lines(rotated)], \
        [int(text.removeprefix("line")) for _, _, text in log_lines(log)]
    assert new[0] == old[-1] + 1  # nothing lost, nothing twice
    await runtime.kill(cid, signal.SIGKILL)
    assert await conmon.wait_exit(paths, cid, timeout=10) == 137
    with pytest.raises(conmon.MonitorGone, match=f"cannot reopen the log of container {cid}"):
        await eventually(lambda: conmon.reopen_log(paths, cid) and False, timeout=5)
    await runtime.delete(cid)


@pytest.mark.parametrize("reentry", ["nsenter", "unavailable"])
async def test_crun_monitor_without_the_cgroup2_mount(reentry, runtimes, paths, bundle, tmp_path, monkeypatch):
    """On this hybrid host conmon starts in a mount namespace without cgroup2 and runs crun directly; its exit
    command gets back to our mount namespace through nsenter. Where that namespace cannot be named, conmon
    starts as it is and runs crun through the wrapper."""
    runtime, cid = runtimes["crun"], container_id("mountns")
    if reentry == "unavailable":
        monkeypatch.setattr(mountns, "host_reentry", lambda: None)
    cgroup2 = " /sys/fs/cgroup/unified "
    seen = tmp_path / "exit-command-saw"
    await run(runtime, cid, bundle(cid, ["/bin/sleep", "30"]), paths, tmp_path / "ctr.log",
              exit_command=["/bin/sh", "-c", f"cat /proc/self/mountinfo > {seen}"])
    monitor = conmon.monitor_pid(paths, cid)
    assert monitor is not None
    assert (cgroup2 in proc_file(monitor, "mountinfo")) == (reentry == "unavailable")
    await runtime.kill(cid, signal.SIGKILL)
    assert await conmon.wait_exit(paths, cid, timeout=10) == 137
    await eventually(lambda: seen.exists() and "/proc " in seen.read_text())
    assert cgroup2 in seen.read_text() and cgroup2 in proc_file(os.getpid(), "mountinfo")
    await runtime.delete(cid)


def _inotify_instances() -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.exists(fd) and os.readlink(fd) == "anon_inode:inotify")


async def test_waiters_share_one_inotify_instance(runtimes, paths, bundle, tmp_path):
    """Linux allows 128 inotify instances per user by default: waiters on many containers must not take
    one each. Each still wakes for its own container only."""
    runtime = runtimes["crun"]
    cids = [container_id(f"share{n}") for n in range(3)]
    for cid in cids:
        await run(runtime, cid, bundle(cid, ["/bin/sleep", "30"]), paths, tmp_path / f"{cid}.log")
    before = await asyncio.to_thread(_inotify_instances)
    waits = [asyncio.create_task(conmon.wait_exit(paths, cid, timeout=20)) for cid in cids]
    await asyncio.sleep(0.1)
    assert await asyncio.to_thread(_inotify_instances) == before + 1
    await runtime.kill(cids[0], signal.SIGKILL)
    assert await waits[0] == 137
    await asyncio.sleep(0.1)
    assert not waits[1].done() and not waits[2].done()
    for cid in cids[1:]:
        await runtime.kill(cid, signal.SIGKILL)
    assert await asyncio.gather(*waits[1:]) == [137, 137]
    for cid in cids:
        await runtime.delete(cid)


@pytest.mark.parametrize("name", ["runc", "crun"])
async def test_signal_deaths_and_trapped_term(name, runtimes, paths, bundle, tmp_path):
    runtime = runtimes[name]
    killed, trapping = container_id("kill"), container_id("trap")
    await run(runtime, killed, bundle(killed, ["/bin/sleep", "100"]), paths, tmp_path / "kill.log")
    await run(runtime, trapping, bundle(trapping, TRAP_TERM), paths, tmp_path / "trap.log")
    await runtime.kill(killed, signal.SIGKILL)
    assert await conmon.wait_exit(paths, killed, timeout=10) == 137
    await eventually(lambda: "ready" in (tmp_path / "trap.log").read_text())
    await runtime.kill(trapping, "TERM")
    assert await conmon.wait_exit(paths, trapping, timeout=10) == 7
    for cid in (killed, trapping):
        await runtime.delete(cid)


async def test_container_outlives_the_process_that_created_it(runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes["crun"], container_id("orphan")
    bundle_dir = bundle(cid, TRAP_TERM)
    log = tmp_path / "ctr.log"
    creator = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from pocketkube.engine.runtime import conmon
        from pocketkube.engine.runtime.oci import OCIRuntime
        runtime = OCIRuntime.detect(Path({str(RUN_BASE / "runtime")!r}), "crun")
        paths = conmon.MonitorPaths(Path({str(paths.exit_dir)!r}), Path({str(paths.persist_dir)!r}),
                                    Path({str(paths.socket_dir)!r}))
        async def main():
            print(await conmon.create_container(runtime, {cid!r}, Path({str(bundle_dir)!r}),
                                                log_path=Path({str(log)!r}), paths=paths))
            await runtime.start({cid!r})
        asyncio.run(main())
    """)
    creating = await asyncio.create_subprocess_exec(sys.executable, "-c", creator, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE)
    stdout, stderr = await creating.communicate()
    assert creating.returncode == 0, stderr
    container_pid = int(stdout)
    await eventually(lambda: "ready" in log.read_text())
    assert (await runtime.state(cid))["status"] == "running"
    monitor = conmon.monitor_pid(paths, cid)
    assert monitor is not None and conmon.monitor_alive(paths, cid)
    assert f"PPid:\t{monitor}\n" in proc_file(container_pid, "status")
    await runtime.kill(cid, signal.SIGTERM)
    assert await conmon.wait_exit(paths, cid, timeout=10) == 7
    assert conmon.exit_status(paths, cid)[0] == 7
    await eventually(lambda: not conmon.monitor_alive(paths, cid))
    await runtime.delete(cid)


@pytest.mark.parametrize("name", ["runc", "crun"])
async def test_oom_kill_is_137_and_flagged(name, runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes[name], container_id("oom")
    hog = ["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]  # a 64 MiB buffer, touched
    await run(runtime, cid, bundle(cid, hog, memory_limit=16 * 1024 * 1024), paths, tmp_path / "ctr.log")
    assert await conmon.wait_exit(paths, cid, timeout=10) == 137
    assert conmon.oom_killed(paths, cid)
    await runtime.delete(cid)


@pytest.mark.parametrize("name", ["runc", "crun"])
async def test_missing_executable_raises_the_runtime_message(name, runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes[name], container_id("missing")
    with pytest.raises(OCIRuntimeError) as raised:
        await conmon.create_container(runtime, cid, bundle(cid, ["/no/such/binary"]), log_path=tmp_path / "log",
                                      paths=paths)
    assert "/no/such/binary" in str(raised.value)
    assert "no such file or directory" in str(raised.value).lower()
    assert await runtime.state(cid) is None
    assert conmon.exit_status(paths, cid) is None


async def test_attach_writes_stdin_and_reads_output(runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes["runc"], container_id("cat")
    await conmon.create_container(runtime, cid, bundle(cid, ["/bin/cat"]), log_path=tmp_path / "ctr.log",
                                  paths=paths, stdin=True)
    session = await attach.attach(paths, cid)  # before start: no output can be missed
    await runtime.start(cid)
    await session.write_stdin(b"hello\n")
    assert await session.read() == ("stdout", b"hello\n")
    await session.close_stdin()
    assert await session.read() is None
    await session.close()
    assert await conmon.wait_exit(paths, cid, timeout=10) == 0
    assert ("stdout", "F", "hello") in log_lines(tmp_path / "ctr.log")
    await runtime.delete(cid)


async def test_stdin_left_open_survives_a_detach(runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes["crun"], container_id("reattach")
    await run(runtime, cid, bundle(cid, ["/bin/cat"]), paths, tmp_path / "ctr.log", stdin=True,
              leave_stdin_open=True)
    first = await attach.attach(paths, cid)
    await first.write_stdin(b"one\n")
    assert await first.read() == ("stdout", b"one\n")
    await first.close()
    second = await attach.attach(paths, cid)
    await second.write_stdin(b"two\n")
    assert await second.read() == ("stdout", b"two\n")
    await second.close()
    assert (await runtime.state(cid))["status"] == "running"
    await runtime.kill(cid, signal.SIGKILL)
    assert await conmon.wait_exit(paths, cid, timeout=10) == 137
    await runtime.delete(cid)


@pytest.mark.parametrize("name", ["runc", "crun"])
async def test_attach_to_a_terminal_and_resize_it(name, runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes[name], container_id("tty")
    await run(runtime, cid, bundle(cid, ["/bin/sh"], terminal=True), paths, tmp_path / "ctr.log", terminal=True,
              stdin=True)
    session = await attach.attach(paths, cid)
    session.resize(33, 99)  # conmon applies it from its ctl fifo, asynchronously: give it a moment
    await session.write_stdin(b"sleep 0.3; stty size; exit 4\n")
    output = b""
    async with asyncio.timeout(10):
        while (chunk := await session.read()) is not None:
            assert chunk[0] == "stdout"  # a terminal has one stream
            output += chunk[1]
    assert b"33 99" in output
    assert await conmon.wait_exit(paths, cid, timeout=10) == 4
    await session.close()

    def resize_refused() -> bool:
        try:
            attach.resize(paths, cid, 10, 10)
        except conmon.MonitorGone:
            return True
        return False
    await eventually(resize_refused)  # once the monitor, which exits just after the exit file, is gone
    await runtime.delete(cid)


async def test_monitor_pid_waits_and_cleanup(runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes["crun"], container_id("cleanup")
    bundle_dir = bundle(cid, ["/bin/sleep", "100"])
    await run(runtime, cid, bundle_dir, paths, tmp_path / "ctr.log")
    monitor = conmon.monitor_pid(paths, cid)
    assert monitor is not None and "conmon" in proc_file(monitor, "cmdline")
    with pytest.raises(TimeoutError):
        await conmon.wait_exit(paths, cid, timeout=0.2)
    waiter = asyncio.ensure_future(conmon.wait_exit(paths, cid, timeout=10))
    await asyncio.sleep(0.1)
    await runtime.kill(cid, signal.SIGKILL)
    assert await waiter == 137
    await eventually(lambda: conmon.monitor_pid(paths, cid) is None)
    await runtime.delete(cid)
    assert (paths.socket_dir / cid).is_symlink() and (bundle_dir / "ctl").exists()
    conmon.cleanup(paths, cid)
    assert not (paths.exit_dir / cid).exists() and not (paths.persist_dir / cid).exists()
    assert not (paths.socket_dir / cid).is_symlink()
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["config.json"]
    conmon.cleanup(paths, cid)  # twice is fine
    with pytest.raises(conmon.MonitorGone):
        await conmon.wait_exit(paths, cid, timeout=1)


async def test_wait_fails_fast_when_the_monitor_dies(runtimes, paths, bundle, tmp_path):
    runtime, cid = runtimes["runc"], container_id("nomon")
    await run(runtime, cid, bundle(cid, ["/bin/sleep", "100"]), paths, tmp_path / "ctr.log")
    waiter = asyncio.ensure_future(conmon.wait_exit(paths, cid, timeout=10))
    await asyncio.sleep(0.1)
    os.kill(conmon.monitor_pid(paths, cid), signal.SIGKILL)
    with pytest.raises(conmon.MonitorGone):
        await waiter
    with pytest.raises(conmon.MonitorGone):
        await attach.attach(paths, cid)
    await runtime.delete(cid, force=True)
