"""conmon, the per-container monitor: it runs `<runtime> create`, then daemonizes and outlives whoever started
it, holds the container's stdio (CRI log file, attach socket), and records the exit code when the container
ends. Files it keeps, per container id CID:

    exit_dir/CID                 exit code (signal deaths as 128+N), written when the container ends
    persist_dir/CID/exit         the same code;  persist_dir/CID/oom  present when the OOM killer struck
    persist_dir/CID/conmon.pid   the monitor's pid;  .../pid  the container's;  .../runtime.log  runtime warnings
    socket_dir/CID -> bundle     symlink; the bundle gets `attach` (socket), `ctl` and `winsz` (fifos)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pocketkube.engine.runtime.oci import OCIRuntime, OCIRuntimeError

# inotify(7) constants (linux/inotify.h); the stdlib has no binding.
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_MONITOR_FILES = ("attach", "ctl", "winsz")  # what conmon leaves in the bundle, reached through the symlink


class MonitorGone(OCIRuntimeError):
    """The container's conmon is not running (and, for waits, ended without recording an exit code)."""


@dataclass(frozen=True)
class MonitorPaths:
    exit_dir: Path
    persist_dir: Path   # one subdirectory per container
    socket_dir: Path    # short: attach socket paths go through it


def _persist(paths: MonitorPaths, cid: str) -> Path:
    return paths.persist_dir / cid


async def create_container(runtime: OCIRuntime, cid: str, bundle: Path, *, log_path: Path, paths: MonitorPaths,
                           terminal: bool = False, stdin: bool = False, leave_stdin_open: bool = False,
                           log_size_max: int | None = None, pidfile: Path | None = None,
                           exit_command: list[str] | None = None, conmon: str = "/usr/bin/conmon") -> int:
    """Creates the container under a new conmon and returns its pid once the runtime has created it (start it
    with runtime.start). The runtime's refusal (bad config, missing executable, ...) raises OCIRuntimeError
    with the runtime's message.

    stdin=True keeps a stdin pipe open for attach; a client closing it closes the container's stdin unless
    leave_stdin_open. terminal=True gives the container a pty owned by conmon (config.json must say
    process.terminal too). exit_command runs (from conmon) after the exit code is recorded."""
    persist = _persist(paths, cid)
    cleanup(paths, cid)  # an earlier run's exit file must not answer for this one
    for directory in (paths.exit_dir, persist, paths.socket_dir):
        directory.mkdir(parents=True, exist_ok=True)
    global_options = runtime.command()
    argv = [conmon, "--api-version", "1", "--cid", cid, "--cuuid", cid,
            "--runtime", global_options[0],
            *(arg for option in global_options[1:] for arg in ("--runtime-arg", option)),
            # runtime warnings would otherwise land in the container's log as stderr lines
            "--runtime-arg", "--log", "--runtime-arg", str(persist / "runtime.log"),
            "--bundle", str(bundle), "--container-pidfile", str(pidfile or persist / "pid"),
            "--conmon-pidfile", str(persist / "conmon.pid"), "--log-path", f"k8s-file:{log_path}",
            "--exit-dir", str(paths.exit_dir), "--persist-dir", str(persist),
            "--socket-dir-path", str(paths.socket_dir)]
    if terminal:
        argv.append("--terminal")
    if stdin:
        argv.append("--stdin")
    if leave_stdin_open:
        argv.append("--leave-stdin-open")
    if log_size_max is not None:
        argv += ["--log-size-max", str(log_size_max)]
    if exit_command:
        argv += ["--exit-command", exit_command[0], *(a for arg in exit_command[1:] for a in ("--exit-command-arg", arg))]

    # conmon reports through the sync pipe: {"data": pid} once created, or {"data": -1, "message": error}.
    read_fd, write_fd = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, env={**os.environ, "_OCI_SYNCPIPE": str(write_fd)}, pass_fds=(write_fd,),
            cwd=persist,  # conmon also drops its "oom" marker into its working directory
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except FileNotFoundError:
        os.close(read_fd)
        raise OCIRuntimeError(f"{conmon} not found: install the Debian package conmon") from None
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    report = await _read_line(read_fd)
    # The first conmon exits right after forking the monitor, which drops its stdio before creating.
    output, _ = await process.communicate()
    try:
        message = json.loads(report)
    except ValueError:
        raise OCIRuntimeError(f"conmon failed for container {cid} (status {process.returncode}): "
                              f"{output.decode(errors='replace').strip() or 'no output'}") from None
    pid = int(message.get("data", -1))
    if pid <= 0:
        raise OCIRuntimeError(str(message.get("message", "")).strip()
                              or f"{runtime.name} create failed for container {cid}")
    return pid


async def _read_line(fd: int) -> bytes:
    """One line from a pipe (the fd is consumed), b"" at EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                os.fdopen(fd, "rb", buffering=0))
    try:
        return await reader.readline()
    finally:
        transport.close()


def exit_status(paths: MonitorPaths, cid: str) -> tuple[int, float] | None:
    """(exit code, exit time as epoch seconds) once the container has exited, else None."""
    path = paths.exit_dir / cid
    try:
        code = path.read_text()  # conmon writes it atomically (temp file + rename)
        written = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return int(code.strip()), written


def oom_killed(paths: MonitorPaths, cid: str) -> bool:
    """Whether conmon saw the OOM killer act in the container's memory cgroup."""
    return (_persist(paths, cid) / "oom").exists()


def monitor_pid(paths: MonitorPaths, cid: str) -> int | None:
    """The pid of the container's conmon while it runs, else None (checked against /proc: pids get reused)."""
    try:
        pid = int((_persist(paths, cid) / "conmon.pid").read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    if os.path.basename(argv[0]) != b"conmon" or cid.encode() not in argv:
        return None
    return pid


def monitor_alive(paths: MonitorPaths, cid: str) -> bool:
    return monitor_pid(paths, cid) is not None


async def wait_exit(paths: MonitorPaths, cid: str, timeout: float | None = None) -> int:
    """The exit code, once the container has exited. Sleeps on inotify (exit dir) and a pidfd (the monitor)
    instead of polling; raises TimeoutError after `timeout` seconds and MonitorGone if the monitor ends or
    is missing without an exit code."""
    async with asyncio.timeout(timeout):
        with _ExitWatch(paths.exit_dir) as watch:
            pid = monitor_pid(paths, cid)
            monitored = pid is not None and watch.watch_monitor(pid)
            while True:
                exited = exit_status(paths, cid)  # looked at after the watches are set: no write is missed
                if exited is not None:
                    return exited[0]
                if not monitored or watch.monitor_ended:  # conmon writes the exit file before it exits
                    raise MonitorGone(f"container {cid} has no running monitor and no recorded exit code")
                await watch.changed()


class _ExitWatch:
    """Wakes a waiter when a file lands in the exit dir (inotify) or when the monitor process ends (pidfd)."""

    _libc = ctypes.CDLL(None, use_errno=True)

    def __init__(self, exit_dir: Path) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._inotify = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._inotify < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if self._libc.inotify_add_watch(self._inotify, bytes(exit_dir), _IN_CLOSE_WRITE | _IN_MOVED_TO) < 0:
            errno = ctypes.get_errno()
            os.close(self._inotify)
            raise OSError(errno, f"cannot watch {exit_dir}")
        self._loop.add_reader(self._inotify, self._drain_inotify)
        self._pidfd: int | None = None
        self.monitor_ended = False

    def watch_monitor(self, pid: int) -> bool:
        """Starts watching the monitor; False if it is already gone."""
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        self._loop.add_reader(self._pidfd, self._monitor_ended)
        return True

    def _drain_inotify(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._inotify, 4096):
                pass
        self._event.set()

    def _monitor_ended(self) -> None:
        self.monitor_ended = True
        self._event.set()

    async def changed(self) -> None:
        await self._event.wait()
        self._event.clear()

    def __enter__(self) -> _ExitWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.remove_reader(self._inotify)
        # Closing an inotify instance waits for an SRCU grace period (measured: up to 15 ms here); that
        # wait must neither delay the caller nor stall the event loop.
        self._loop.run_in_executor(None, os.close, self._inotify)
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)


def cleanup(paths: MonitorPaths, cid: str) -> None:
    """Removes what the monitor of a removed container left: exit file, persist dir, attach symlink and the
    socket and fifos it put in the bundle."""
    with contextlib.suppress(FileNotFoundError):
        (paths.exit_dir / cid).unlink()
    shutil.rmtree(_persist(paths, cid), ignore_errors=True)
    link = paths.socket_dir / cid
    if link.is_symlink():
        for name in _MONITOR_FILES:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                (link / name).unlink()
        link.unlink()
