"""The OCI runtime command line (runc or crun): one short-lived runtime process per call, from asyncio.

Every call passes `--log-format json` so the runtime's own messages can be parsed; a failure raises
OCIRuntimeError carrying the runtime's error text. Long-lived containers are started through conmon
(conmon.py); this module covers everything else, including `exec` sessions."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import signal as signals
import struct
import subprocess
import termios
from dataclasses import dataclass
from pathlib import Path

from pocketkube import childprocess
from pocketkube.engine.runtime import mountns
from pocketkube.engine.runtime.console import ConsoleSocket
from pocketkube.engine.runtime.sealed import sealed_copy
from pocketkube.fsutil import spread_subdirectories

# The order "auto" tries them. crun is faster here: create+start+exit through conmon ~29 ms vs ~47 ms for
# runc, an exec ~13 ms vs ~33 ms, a state query ~4 ms vs ~7 ms.
RUNTIMES = ("crun", "runc")
# Subcommands that set up the cgroups of a new container. On a cgroup v1/v2 hybrid host crun refuses only
# these (measured: start, exec, kill, state, list, pause, resume, update and delete work without the wrapper).
CGROUP_SETUP_SUBCOMMANDS = frozenset({"create", "run"})
# Runtimes that copy themselves on every call unless started from a sealed copy (sealed.py); runc 1.1 does so
# only for its `init`, where measured runs gained nothing, so it keeps its installed binary.
SELF_COPYING_RUNTIMES = frozenset({"crun"})
# Runtimes whose created container waits on an `exec.fifo` in its state directory, and whose `start` only
# writes a byte into it (as crun's does when no hooks or notify socket are configured, and pocketkube
# configures neither). The engine writes that byte itself: it saves a runtime process (~3-4 ms) per start.
# runc's fifo works the other way round (its init writes, `runc start` reads), so runc keeps its command.
EXEC_FIFO_RUNTIMES = frozenset({"crun"})
DEFAULT_CONSOLE_SIZE = (24, 80)  # rows, cols: what a terminal session starts with unless the process says
_ERROR_LEVELS = frozenset({"error", "fatal", "panic"})
_LOG_READ_LIMIT = 64 * 1024


class OCIRuntimeError(RuntimeError):
    """The runtime refused or failed; the message is the runtime's own error text."""


class ContainerNotFound(OCIRuntimeError):
    """The runtime has no container with this id."""


def _release_exec_fifo(fifo: Path) -> bool:
    """Does what `crun start` does to a created container: opens its exec fifo for writing, unlinks it (which is
    how crun tells "created" from "running" afterwards) and writes one byte. False, having done nothing, when
    there is no fifo or no process waits on it (already started, or the container died): then the runtime's
    own start gives the answer and the error message."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # no fifo; ENXIO: nobody reads it
        return False
    try:
        os.unlink(fifo)
        os.write(fd, b"\0")
    except FileNotFoundError:  # another start got there first
        return False
    finally:
        os.close(fd)
    return True


def _has_ended(pid: int) -> bool:
    """Gone, or a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def runtime_error_text(output: bytes | str) -> str:
    """The error in a runtime's stderr or --log output: the `msg` of its error-level JSON lines, or the
    plain text lines when it wrote no JSON. Empty when it reported no error."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    messages: list[str] = []
    plain: list[str] = []
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        try:
            entry = json.loads(line)
        except ValueError:
            plain.append(line)
            continue
        if isinstance(entry, dict) and "msg" in entry:
            if entry.get("level") in _ERROR_LEVELS:
                messages.append(str(entry["msg"]))
        else:
            plain.append(line)
    return "; ".join(messages or plain)


@dataclass
class OCIRuntime:
    name: str                        # "runc" | "crun"
    binary: str                      # what to execute: the runtime, or a sealed copy of it (sealed.py)
    state_root: Path                 # its --root
    wrapper: str | None = None       # crun on a hybrid host: runs crun where the cgroup2 mount is hidden
    hidden_mount: str | None = None  # the mount the wrapper hides (cgroup2 on a hybrid host)

    def command(self, subcommand: str | None = None, *, mount_hidden: bool = False) -> list[str]:
        """The argv prefix (executable(s) and global options) for `subcommand`; without a subcommand, a
        prefix valid for all of them (what conmon's --runtime and --runtime-arg get). The wrapper costs ~5 ms,
        so only the subcommands that need it use it, and not at all for a caller that runs the command where
        `hidden_mount` is already gone (mount_hidden=True; see mountns.py)."""
        needs_wrapper = self.wrapper is not None and not mount_hidden and (
            subcommand is None or subcommand in CGROUP_SETUP_SUBCOMMANDS)
        executables = [self.wrapper, self.binary] if needs_wrapper else [self.binary]
        return [*executables, "--root", str(self.state_root), "--log-format", "json"]

    @classmethod
    def detect(cls, state_root: Path, preferred: str = "auto") -> OCIRuntime:
        """The runtime to use, looked up on PATH; its --root becomes `state_root/<name>`. "auto" takes crun
        when it works here and runc otherwise. crun runs from a sealed copy (see sealed.py) when this kernel
        lets it; a probe (`list`) checks the command line once."""
        if preferred not in ("auto", *RUNTIMES):
            raise ValueError(f"unknown OCI runtime {preferred!r}: choose auto, crun or runc")
        problems = []
        for name in RUNTIMES if preferred == "auto" else (preferred,):
            installed = shutil.which(name)
            if installed is None:
                problems.append(f"{name} is not installed (install the Debian package {name})")
                continue
            runtime = cls(name, installed, state_root / name)
            runtime.state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            spread_subdirectories(runtime.state_root)  # the runtime keeps a directory per container
            try:
                runtime.wrapper, runtime.hidden_mount = _crun_wrapper_if_needed(runtime)
                runtime.binary = _fastest_working_binary(runtime, installed)
            except OCIRuntimeError as err:
                problems.append(str(err))
                continue
            return runtime
        raise OCIRuntimeError("no usable OCI runtime: " + "; ".join(problems))

    # --- simple calls ----------------------------------------------------------------------------------

    async def _run(self, subcommand: str, *args: str, cid: str | None = None, stdin: bytes | None = None) -> bytes:
        process = await childprocess.run([*self.command(subcommand), subcommand, *args], input=stdin)
        if process.returncode != 0:
            text = (runtime_error_text(process.stderr)
                    or f"{self.name} {subcommand} exited with status {process.returncode}")
            # Both runtimes keep one directory per container under --root: its absence is the reliable sign.
            if cid is not None and not (self.state_root / cid).exists():
                raise ContainerNotFound(f"container {cid} does not exist ({text})")
            raise OCIRuntimeError(text)
        return process.stdout

    async def start(self, cid: str) -> None:
        """Lets a created container's process go on to exec its command."""
        if self.name in EXEC_FIFO_RUNTIMES and _release_exec_fifo(self.state_root / cid / "exec.fifo"):
            return
        await self._run("start", cid, cid=cid)

    async def kill(self, cid: str, signal: int | str, *, all: bool = False) -> None:
        """Signals the container's init (every process with all=True); a stopped container is no error."""
        try:
            await self._run("kill", *(["--all"] if all else []), cid, str(_signal_number(signal)), cid=cid)
        except ContainerNotFound:
            raise
        except OCIRuntimeError:
            state = await self.state(cid)
            if state is None:
                raise ContainerNotFound(f"container {cid} does not exist") from None
            if state.get("status") != "stopped":
                raise

    async def delete(self, cid: str, *, force: bool = False) -> None:
        """Removes the runtime's record (and cgroups); an absent container is no error."""
        try:
            await self._run("delete", *(["--force"] if force else []), cid, cid=cid)
        except ContainerNotFound:
            pass

    def discard_ended(self, cid: str) -> bool:
        """Forgets a container whose init process has ended, without a runtime process where that is safe:
        for crun, whose delete of such a container removes its cgroups and then its state directory, the
        state directory is removed here and the cgroups are left to the caller (the engine removes them in
        every hierarchy anyway). False, having done nothing, where the runtime's own delete is needed: runc,
        or a container whose init crun's record says is still alive."""
        if self.name not in EXEC_FIFO_RUNTIMES:
            return False
        directory = self.state_root / cid
        try:
            pid = int(json.loads((directory / "status").read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if pid <= 0 or not _has_ended(pid):
            return False
        shutil.rmtree(directory, ignore_errors=True)
        return True

    async def state(self, cid: str) -> dict | None:
        """The runtime's state document (id, pid, status, bundle, ...), None when there is no such container."""
        try:
            return json.loads(await self._run("state", cid, cid=cid))
        except ContainerNotFound:
            return None

    async def list(self) -> list[dict]:
        return json.loads(await self._run("list", "--format", "json") or b"null") or []  # runc prints null

    async def pause(self, cid: str) -> None:
        await self._run("pause", cid, cid=cid)

    async def resume(self, cid: str) -> None:
        await self._run("resume", cid, cid=cid)

    async def update(self, cid: str, resources: dict) -> None:
        """Applies OCI linux.resources to a live container."""
        await self._run("update", "--resources", "-", cid, cid=cid, stdin=json.dumps(resources).encode())

    # --- foreground run ----------------------------------------------------------------------------------

    async def run_bundle(self, cid: str, bundle: Path, *, stdout: int = subprocess.DEVNULL,
                         stderr: int = subprocess.DEVNULL) -> int:
        """`run` in the foreground: the container process's exit code. The runtime removes the container when
        it ends. The process's output goes to `stdout`/`stderr` (fds); a runtime failure (bad config, missing
        executable) raises OCIRuntimeError, told apart from the process's own failure by the runtime's log."""
        log = os.memfd_create("runtime-log", os.MFD_CLOEXEC)
        try:
            options = dict(stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, pass_fds=(log,))
            arguments = ["--log", f"/proc/self/fd/{log}", "run", "--bundle", str(bundle), cid]
            if self.hidden_mount is not None:  # started where the mount is gone already: no wrapper
                child = mountns.spawn_without_mount(
                    self.hidden_mount, [*self.command("run", mount_hidden=True), *arguments], **options)
                code = await mountns.wait(child)
            else:
                process = await asyncio.create_subprocess_exec(*self.command("run"), *arguments, **options)
                code = await process.wait()
            error = runtime_error_text(os.pread(log, _LOG_READ_LIMIT, 0))
        finally:
            os.close(log)
        if code != 0 and error:
            raise OCIRuntimeError(error)
        return code

    # --- exec --------------------------------------------------------------------------------------------

    async def exec(self, cid: str, process: dict, *, tty: bool = False, detach: bool = False,
                   stdin: bool = True) -> ExecSession:
        """Starts `process` (an OCI process object) in the running container `cid`.

        Without a terminal the session has pipes (stdin only with stdin=True). With tty=True it has one pty
        master fd: crun hands its console over through --console-socket and still waits for the process;
        runc cannot do both, so in the foreground it gets a pty of ours as its stdio and relays. detach=True
        returns once the process runs; its exit code is then not observable (it is not our descendant)."""
        state = await self.state(cid)
        if state is None:
            raise ContainerNotFound(f"container {cid} does not exist")
        if state.get("status") != "running":
            raise OCIRuntimeError(f"cannot exec in container {cid}: it is {state.get('status')}, not running")
        work_dir = self.state_root.parent / "exec"
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = secrets.token_hex(8)
        pid_file = work_dir / f"{token}.pid"
        document = {**process, "terminal": tty}
        if tty:
            # runc sizes the pty before the process starts; crun 1.8 ignores this in exec, so the size only
            # lands when we set it on the master (the kernel then sends the process SIGWINCH).
            document.setdefault("consoleSize", {"height": DEFAULT_CONSOLE_SIZE[0], "width": DEFAULT_CONSOLE_SIZE[1]})
        spec_fd = _memfd("process.json", json.dumps(document).encode())
        log_fd = os.memfd_create("runtime-log", os.MFD_CLOEXEC)
        argv = [*self.command("exec"), "--log", f"/proc/self/fd/{log_fd}", "exec",
                "--process", f"/proc/self/fd/{spec_fd}", "--pid-file", str(pid_file)]
        if detach:
            argv.append("--detach")
        console: ConsoleSocket | None = None
        pty: int | None = None
        relay_pty: int | None = None  # runc in the foreground relays the container's terminal through this
        stdio = (subprocess.DEVNULL,) * 3
        try:
            if tty:
                argv.append("--tty")
                if detach or self.name == "crun":
                    console = ConsoleSocket(work_dir / f"{token}.sock")
                    argv += ["--console-socket", str(console.path)]
                else:
                    pty, relay_pty = os.openpty()
                    _set_window_size(pty, *_console_size(document))
                    stdio = (relay_pty,) * 3
            elif not detach:
                stdio = (subprocess.PIPE if stdin else subprocess.DEVNULL, subprocess.PIPE, subprocess.PIPE)
            runtime = await asyncio.create_subprocess_exec(
                *argv, cid, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], pass_fds=(spec_fd, log_fd),
                start_new_session=True)  # keep signals aimed at our process group away from the runtime
            if console is not None:
                pty = await _receive_console(console, runtime, log_fd, self.name)
                _set_window_size(pty, *_console_size(document))
            elif pty is not None:
                os.set_blocking(pty, False)
            if detach and await runtime.wait() != 0:
                raise OCIRuntimeError(_log_error(log_fd) or f"{self.name} exec exited with status {runtime.returncode}")
        except BaseException:
            for fd in (pty, log_fd):
                if fd is not None:
                    os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
            raise
        finally:
            os.close(spec_fd)
            if relay_pty is not None:
                os.close(relay_pty)
            if console is not None:
                console.close()
        return ExecSession(runtime, pty=pty, pid_file=pid_file, log_fd=log_fd, detached=detach,
                           relayed=relay_pty is not None)


class ExecSession:
    """A process started by OCIRuntime.exec. Pipe sessions: `stdin` (a StreamWriter, or None), `stdout` and
    `stderr` (StreamReaders). Terminal sessions: `pty`, a non-blocking master fd carrying both directions
    (reads fail with EIO once the process is gone). close() releases the session's fds."""

    def __init__(self, runtime: asyncio.subprocess.Process, *, pty: int | None, pid_file: Path, log_fd: int,
                 detached: bool, relayed: bool) -> None:
        self._runtime = runtime
        self.stdin = runtime.stdin
        self.stdout = runtime.stdout
        self.stderr = runtime.stderr
        self.pty = pty
        self._pid_file = pid_file
        self._pid: int | None = None
        self._log_fd: int | None = log_fd
        self._detached = detached
        self._relayed = relayed

    @property
    def pid(self) -> int | None:
        """The exec'd process's host pid, once the runtime has started it."""
        if self._pid is None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                self._pid = int(self._pid_file.read_text())
        return self._pid

    def resize(self, rows: int, cols: int) -> None:
        if self.pty is None:
            raise ValueError("resize needs a terminal session (tty=True)")
        _set_window_size(self.pty, rows, cols)
        if self._relayed and self._runtime.returncode is None:
            self._runtime.send_signal(signals.SIGWINCH)  # runc copies its stdin's size to the container's pty

    async def wait(self) -> int | None:
        """The process's exit code (signal deaths as 128+N). Raises OCIRuntimeError when the runtime could
        not start it (e.g. a missing executable), with the runtime's message. Detached sessions: returns
        None once the process has gone."""
        if self._detached:
            pid = self.pid
            if pid is not None:
                await _process_gone(pid)
            return None
        code = await self._runtime.wait()
        error = _log_error(self._log_fd) if code != 0 and self._log_fd is not None else ""
        self._pid = self.pid  # remembered before the file goes
        with contextlib.suppress(FileNotFoundError):
            self._pid_file.unlink()
        if error:
            raise OCIRuntimeError(error)
        return code

    def kill(self, signal: int = signals.SIGKILL) -> None:
        """Signals the exec'd process (or, before it has started, the runtime starting it)."""
        running = self._detached or self._runtime.returncode is None
        pid = self.pid
        if pid is not None and running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal)
        elif self._runtime.returncode is None:
            self._runtime.send_signal(signal)

    def close(self) -> None:
        for fd in (self.pty, self._log_fd):
            if fd is not None:
                os.close(fd)
        self.pty = self._log_fd = None
        with contextlib.suppress(FileNotFoundError):
            self._pid_file.unlink()


# --- helpers --------------------------------------------------------------------------------------------


def _signal_number(signal: int | str) -> int:
    if isinstance(signal, int):
        return int(signal)
    name = signal.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(signals.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        raise ValueError(f"unknown signal {signal!r}") from None


def _memfd(name: str, data: bytes) -> int:
    """An anonymous file holding `data`; a child given the fd opens it as /proc/self/fd/N."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def _log_error(log_fd: int) -> str:
    return runtime_error_text(os.pread(log_fd, _LOG_READ_LIMIT, 0))


def _console_size(process: dict) -> tuple[int, int]:
    size = process["consoleSize"]
    return size["height"], size["width"]


def _set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def _receive_console(console: ConsoleSocket, runtime: asyncio.subprocess.Process, log_fd: int,
                           name: str) -> int:
    """The pty master the runtime sends, or its error if it exits without sending one."""
    receive = asyncio.ensure_future(console.receive())
    exited = asyncio.ensure_future(runtime.wait())
    try:
        await asyncio.wait({receive, exited}, return_when=asyncio.FIRST_COMPLETED)
        if receive.done() or exited.result() == 0:  # a detached runtime may exit right after sending
            return await receive
        raise OCIRuntimeError(_log_error(log_fd) or f"{name} exec exited with status {runtime.returncode}")
    except BaseException:
        if runtime.returncode is None:
            runtime.kill()
        raise
    finally:
        receive.cancel()
        exited.cancel()


async def _process_gone(pid: int) -> None:
    """Waits for a process that is not our child to end (a pidfd turns readable when it exits)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(pidfd, lambda: gone.done() or gone.set_result(None))
    try:
        await gone
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def _hybrid_cgroup2_mount(mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """Where cgroup2 is mounted beside v1 controllers (a "hybrid" host), else None."""
    fstypes: dict[str, str] = {}
    for line in mountinfo.read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        mount_point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields.split()[4])
        fstypes[mount_point] = tail.split()[0]
    if fstypes.get("/sys/fs/cgroup") == "cgroup2":
        return None
    return next((point for point, fstype in fstypes.items() if fstype == "cgroup2"), None)


def _crun_wrapper_if_needed(runtime: OCIRuntime) -> tuple[str | None, str | None]:
    """crun refuses to create containers on a hybrid host ("cgroups in hybrid mode not supported"). It
    works in a private mount namespace where the cgroup2 mount is gone; conmon's -r takes one executable,
    so that step lives in a tiny script beside the state root, given the runtime to run as its first
    argument. Returns the script and the mount it hides (None, None where nothing needs hiding)."""
    if runtime.name != "crun":
        return None, None
    cgroup2 = _hybrid_cgroup2_mount()
    if cgroup2 is None:
        return None, None
    unshare, umount = shutil.which("unshare"), shutil.which("umount")
    if unshare is None or umount is None:
        raise OCIRuntimeError("crun on this cgroup hybrid host needs unshare and umount (Debian packages "
                              "util-linux and mount)")
    inner = f'{shlex.quote(umount)} {shlex.quote(cgroup2)} && exec "$0" "$@"'
    script = ("#!/bin/sh\n"
              "# Written by pocketkube: crun refuses cgroup v1/v2 hybrid hosts, so hide the cgroup2 mount\n"
              "# in a private mount namespace first. Usage: crun-hybrid RUNTIME [ARG...]\n"
              f'exec {shlex.quote(unshare)} --mount --propagation private /bin/sh -c {shlex.quote(inner)} "$@"\n')
    path = runtime.state_root.parent / "crun-hybrid"
    if not path.exists() or path.read_text() != script:
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(script)
        staging.chmod(0o755)
        staging.replace(path)
    return str(path), cgroup2


def _fastest_working_binary(runtime: OCIRuntime, installed: str) -> str:
    """crun's sealed copy if it runs here (a kernel may forbid executing memfds), else the installed
    binary; raises OCIRuntimeError when the runtime does not work at all."""
    candidates = [installed]
    if runtime.name in SELF_COPYING_RUNTIMES:
        with contextlib.suppress(OSError):
            candidates.insert(0, sealed_copy(installed))
    failure = b""
    for binary in candidates:
        runtime.binary = binary
        probe = subprocess.run([*runtime.command(), "list", "--quiet"], stdin=subprocess.DEVNULL,
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return binary
        failure = probe.stderr or str(probe.returncode).encode()
    where = f" even with {runtime.hidden_mount} hidden" if runtime.hidden_mount else ""
    raise OCIRuntimeError(f"{runtime.name} does not work on this host{where}: {runtime_error_text(failure)}")
