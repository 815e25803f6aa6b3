"""The runc/crun command line wrapper, with the real runtimes on a busybox bundle: detection (and crun's
hybrid-cgroup wrapper), foreground runs, the container lifecycle calls, and exec sessions with pipes, with a
terminal, detached, and into containers that cannot take one."""

from __future__ import annotations

import asyncio
import copy
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from engine_harness import make_busybox_rootfs

from pocketkube.engine.runtime.oci import ContainerNotFound, OCIRuntime, OCIRuntimeError

TAG = secrets.token_hex(3)
RUN_BASE = Path(f"/run/pocketkube-test-{TAG}")
CGROUP_PARENT = f"pocketkube-test-{TAG}"
BUSYBOX_APPLETS = ("sh", "cat", "sleep", "true", "echo", "stty", "tty")
RUNTIMES = ["runc", "crun"]

pytestmark = pytest.mark.timeout(60)


# --- fixtures: a busybox rootfs, bundles made from `runc spec`, both runtimes ------------------------------


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
    found = {name: OCIRuntime.detect(RUN_BASE / "runtime", name) for name in RUNTIMES}
    try:
        yield found
    finally:
        remove_everything(found)


@pytest.fixture
def bundle(tmp_path: Path, rootfs: Path, spec_template: dict) -> Callable[..., Path]:
    def make(cid: str, args: list[str]) -> Path:
        config = copy.deepcopy(spec_template)
        config["root"] = {"path": str(rootfs), "readonly": True}
        config["process"].update(args=args, terminal=False)
        config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/{cid}"
        directory = tmp_path / cid
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(config))
        return directory
    return make


@pytest.fixture
def running(runtimes, bundle) -> Callable:
    """Starts `sleep 100` (created directly by the runtime, no monitor) and returns its id."""
    async def start(name: str) -> str:
        runtime, cid = runtimes[name], container_id("exec")
        created = await asyncio.create_subprocess_exec(
            *runtime.command("create"), "create", "--bundle", str(bundle(cid, ["/bin/sleep", "100"])), cid,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # the container keeps
        assert await created.wait() == 0                                      # these: no pipes
        await runtime.start(cid)
        return cid
    return start


def remove_everything(runtimes: dict[str, OCIRuntime]) -> None:
    for runtime in runtimes.values():
        listing = subprocess.run([*runtime.command(), "list", "--format", "json"], capture_output=True).stdout
        for entry in json.loads(listing or b"null") or []:
            subprocess.run([*runtime.command(), "delete", "--force", entry["id"]], capture_output=True)
    shutil.rmtree(RUN_BASE, ignore_errors=True)
    for controller in Path("/sys/fs/cgroup").iterdir():
        parent = controller / CGROUP_PARENT
        if parent.is_dir():
            for child in (c for c in parent.iterdir() if c.is_dir()):
                child.rmdir()
            parent.rmdir()


def container_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


async def status_becomes(runtime: OCIRuntime, cid: str, status: str) -> None:
    async with asyncio.timeout(5):
        while (await runtime.state(cid))["status"] != status:
            await asyncio.sleep(0.02)


def wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def read_pty(fd: int) -> bytes:
    """The next bytes from a non-blocking pty master; b"" once the other side is gone (EIO)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, 4096)
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(fd, wake, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
        except OSError as err:
            if err.errno == errno.EIO:
                return b""
            raise


async def read_pty_until(fd: int, needle: bytes) -> bytes:
    output = b""
    async with asyncio.timeout(5):
        while needle not in output:
            chunk = await read_pty(fd)
            assert chunk, f"terminal closed before {needle!r}; got {output!r}"
            output += chunk
    return output


def memory_limit(cid: str) -> int:
    return int(Path(f"/sys/fs/cgroup/memory/{CGROUP_PARENT}/{cid}/memory.limit_in_bytes").read_text())


def has_ended(pid: int) -> bool:
    """Gone, or a zombie: a detached process is reparented to pid 1, which reaps it when it likes."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def executable_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]


def process(args: list[str], **extra) -> dict:
    return {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}, **extra}


# --- detection -----------------------------------------------------------------------------------------------


def test_detect_auto_and_explicit(runtimes, monkeypatch):
    auto = OCIRuntime.detect(RUN_BASE / "runtime")
    assert auto.name in RUNTIMES and auto.state_root == RUN_BASE / "runtime" / auto.name
    assert subprocess.run([*auto.command(), "list"], capture_output=True).returncode == 0
    runc, crun = runtimes["runc"], runtimes["crun"]
    assert runc.wrapper is None and runc.command("create")[0] == runc.binary == shutil.which("runc")
    assert "/sys/fs/cgroup/unified" in Path("/proc/self/mountinfo").read_text(), "this host is cgroup hybrid"
    assert crun.wrapper == str(RUN_BASE / "runtime" / "crun-hybrid") and os.access(crun.wrapper, os.X_OK)
    assert crun.hidden_mount == "/sys/fs/cgroup/unified"
    assert crun.command("create")[:2] == crun.command()[:2] == [crun.wrapper, crun.binary]
    assert crun.command("state")[0] == crun.binary  # only create/run need the private mount namespace
    assert crun.command("create", mount_hidden=True)[0] == crun.binary  # for a caller already without it
    monkeypatch.setenv("PATH", str(RUN_BASE / "nowhere"))
    with pytest.raises(OCIRuntimeError, match="Debian package runc"):
        OCIRuntime.detect(RUN_BASE / "runtime", "runc")
    with pytest.raises(OCIRuntimeError, match="Debian package crun"):
        OCIRuntime.detect(RUN_BASE / "runtime")
    with pytest.raises(ValueError, match="unknown OCI runtime"):
        OCIRuntime.detect(RUN_BASE / "runtime", "kata")


def test_crun_runs_from_a_sealed_copy(runtimes):
    """crun re-executes itself from a private copy on every call unless its binary is a memfd with exactly
    these seals; runc, which gains nothing from it, keeps its installed binary."""
    crun = runtimes["crun"]
    assert crun.binary.startswith(f"/proc/{os.getpid()}/fd/")
    assert os.readlink(crun.binary).startswith("/memfd:crun")
    with open(crun.binary, "rb") as copy, open(shutil.which("crun"), "rb") as installed:
        assert fcntl.fcntl(copy.fileno(), fcntl.F_GET_SEALS) == (
            fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        assert copy.read() == installed.read()
    with pytest.raises(PermissionError), open(crun.binary, "r+b") as writable:  # refused at open or write
        writable.write(b"x")
        writable.flush()
    assert OCIRuntime.detect(RUN_BASE / "runtime", "crun").binary == crun.binary  # one copy per process
    assert subprocess.run([*crun.command(), "list", "--quiet"], capture_output=True).returncode == 0


# --- foreground runs and the lifecycle calls -----------------------------------------------------------------


@pytest.mark.parametrize("name", RUNTIMES)
async def test_run_bundle(name, runtimes, bundle, tmp_path):
    runtime = runtimes[name]
    assert await runtime.run_bundle(container_id("true"), bundle(container_id("b"), ["/bin/true"])) == 0
    read_end, write_end = os.pipe()
    try:
        code = await runtime.run_bundle(container_id("three"), bundle(container_id("b"), ["/bin/sh", "-c",
                                        "echo printed; exit 3"]), stdout=write_end)
        assert code == 3 and os.read(read_end, 100) == b"printed\n"
    finally:
        os.close(read_end)
        os.close(write_end)
    cid = container_id("missing")
    with pytest.raises(OCIRuntimeError, match="/no/such/binary"):
        await runtime.run_bundle(cid, bundle(cid, ["/no/such/binary"]))
    assert await runtime.list() == []  # run removes what it created, failed or not


@pytest.mark.parametrize("name", RUNTIMES)
async def test_lifecycle_calls(name, runtimes, running):
    runtime = runtimes[name]
    cid = await running(name)
    state = await runtime.state(cid)
    assert state["id"] == cid and state["status"] == "running" and state["pid"] > 0
    assert [entry["id"] for entry in await runtime.list()] == [cid]
    await runtime.pause(cid)
    assert (await runtime.state(cid))["status"] == "paused"
    await runtime.resume(cid)
    assert (await runtime.state(cid))["status"] == "running"
    await runtime.update(cid, {"memory": {"limit": 64 * 1024 * 1024}})
    assert memory_limit(cid) == 64 * 1024 * 1024
    with pytest.raises(OCIRuntimeError):
        await runtime.delete(cid)  # running: only force removes it
    await runtime.kill(cid, "SIGKILL")
    await status_becomes(runtime, cid, "stopped")
    await runtime.kill(cid, signal.SIGTERM)  # not running: no error
    await runtime.kill(cid, 9, all=True)
    await runtime.delete(cid)
    assert await runtime.state(cid) is None
    await runtime.delete(cid)  # absent: no error
    with pytest.raises(ContainerNotFound):
        await runtime.kill(cid, "KILL")
    with pytest.raises(ContainerNotFound):
        await runtime.start(cid)
    with pytest.raises(ContainerNotFound):
        await runtime.pause(cid)


@pytest.mark.parametrize("name", RUNTIMES)
async def test_start_and_discard_ended(name, runtimes, bundle):
    """crun's start and its delete of an ended container are done without a runtime process (the exec fifo,
    the state directory); the runtime's view of the container must be what its own commands leave."""
    runtime = runtimes[name]
    cid = container_id("fifo")
    created = await asyncio.create_subprocess_exec(
        *runtime.command("create"), "create", "--bundle", str(bundle(cid, ["/bin/sleep", "100"])), cid,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert await created.wait() == 0
    assert (await runtime.state(cid))["status"] == "created"
    await runtime.start(cid)
    assert (await runtime.state(cid))["status"] == "running"
    pid = (await runtime.state(cid))["pid"]
    assert executable_of(pid) == b"/bin/sleep"  # it went on to exec its command
    with pytest.raises(OCIRuntimeError):
        await runtime.start(cid)  # already started: the runtime's own answer
    assert not runtime.discard_ended(cid)  # still running
    await runtime.kill(cid, "SIGKILL")
    await status_becomes(runtime, cid, "stopped")
    async with asyncio.timeout(5):
        while not has_ended(pid):
            await asyncio.sleep(0.02)
    if runtime.discard_ended(cid):
        assert name == "crun"
    else:
        assert name == "runc"
        await runtime.delete(cid)
    assert await runtime.state(cid) is None and await runtime.list() == []


# --- exec ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RUNTIMES)
async def test_exec_with_pipes(name, runtimes, running):
    runtime = runtimes[name]
    cid = await running(name)
    session = await runtime.exec(cid, process(["/bin/sh", "-c", "cat; echo err >&2; exit 5"]))
    session.stdin.write(b"through stdin\n")
    await session.stdin.drain()
    session.stdin.close()
    stdout, stderr = await asyncio.gather(session.stdout.read(), session.stderr.read())
    assert (stdout, stderr) == (b"through stdin\n", b"err\n")
    assert await session.wait() == 5
    assert session.pid is not None
    session.close()
    quiet = await runtime.exec(cid, process(["/bin/sh", "-c", "cat; echo done"]), stdin=False)
    assert quiet.stdin is None and await quiet.stdout.read() == b"done\n" and await quiet.wait() == 0
    quiet.close()
    await runtime.delete(cid, force=True)


@pytest.mark.parametrize("name", RUNTIMES)
async def test_exec_with_a_terminal(name, runtimes, running):
    runtime = runtimes[name]
    cid = await running(name)
    # Each step waits for a line from us: crun's terminal only gets its size once exec has handed it over.
    script = 'tty; read first; stty size; read second; stty size; echo "got $second"; exit 2'
    session = await runtime.exec(cid, process(["/bin/sh", "-c", script]), tty=True)
    assert session.stdout is None and session.pty is not None
    await read_pty_until(session.pty, b"/dev/pts/")
    os.write(session.pty, b"first\n")
    await read_pty_until(session.pty, b"24 80")  # the default size
    session.resize(30, 100)
    await asyncio.sleep(0.3)  # runc applies the size on SIGWINCH, asynchronously
    os.write(session.pty, b"typed\n")
    output = await read_pty_until(session.pty, b"got typed")
    assert b"30 100" in output
    assert await session.wait() == 2
    session.close()
    await runtime.delete(cid, force=True)


@pytest.mark.parametrize("name", RUNTIMES)
async def test_exec_kill_and_detach(name, runtimes, running):
    runtime = runtimes[name]
    cid = await running(name)
    session = await runtime.exec(cid, process(["/bin/sleep", "100"]), stdin=False)
    async with asyncio.timeout(5):
        while session.pid is None:
            await asyncio.sleep(0.01)
    session.kill()
    assert await session.wait() == 137
    session.close()
    detached = await runtime.exec(cid, process(["/bin/sleep", "0.3"]), detach=True)
    assert detached.pid is not None and not has_ended(detached.pid)
    assert await asyncio.wait_for(detached.wait(), 5) is None
    assert has_ended(detached.pid)
    detached.close()
    console = await runtime.exec(cid, process(["/bin/sh", "-c", "echo on the terminal; sleep 100"]), tty=True,
                                 detach=True)
    assert b"on the terminal" in await read_pty_until(console.pty, b"terminal")
    console.kill()
    await asyncio.wait_for(console.wait(), 5)
    console.close()
    await runtime.delete(cid, force=True)


@pytest.mark.parametrize("name", RUNTIMES)
async def test_exec_errors(name, runtimes, running):
    runtime = runtimes[name]
    cid = await running(name)
    session = await runtime.exec(cid, process(["/no/such/binary"]))
    with pytest.raises(OCIRuntimeError, match="/no/such/binary"):
        await session.wait()
    session.close()
    with pytest.raises(OCIRuntimeError, match="/no/such/binary"):
        # crun reports it from exec() (no terminal arrives), runc's relay from wait()
        terminal = await runtime.exec(cid, process(["/no/such/binary"]), tty=True)
        try:
            await terminal.wait()
        finally:
            terminal.close()
    await runtime.kill(cid, "KILL")
    await status_becomes(runtime, cid, "stopped")
    with pytest.raises(OCIRuntimeError, match="not running"):
        await runtime.exec(cid, process(["/bin/true"]))
    await runtime.delete(cid)
    with pytest.raises(ContainerNotFound):
        await runtime.exec(cid, process(["/bin/true"]))
