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
import errno
import functools
import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pocketkube import childprocess
from pocketkube.engine.runtime import mountns
from pocketkube.engine.runtime.oci import OCIRuntime, OCIRuntimeError

# inotify(7) constants (linux/inotify.h); the stdlib has no binding.
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_Q_OVERFLOW = 0x00004000
_IN_NONBLOCK = os.O_NONBLOCK
_INOTIFY_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
_IN_CLOEXEC = os.O_CLOEXEC
_REOPEN_LOG_EVENT = 2  # a control fifo message type
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
    # Where the runtime must not see a mount (crun on a hybrid host), conmon itself starts without it, so
    # that it runs the runtime directly rather than through the wrapper script. Its exit command then has to
    # re-enter the host's mount namespace; where that cannot be named, the wrapper it is.
    reentry = mountns.host_reentry() if runtime.hidden_mount is not None and exit_command else []
    start_without = runtime.hidden_mount if reentry is not None else None
    global_options = runtime.command(mount_hidden=start_without is not None)
    if exit_command and reentry:
        exit_command = [*reentry, *exit_command]
    argv = [conmon, "--api-version", "1", "--cid", cid, "--cuuid", cid,
            "--runtime", global_options[0],
            *(arg for option in global_options[1:] for arg in ("--runtime-arg", option)),
            # runtime warnings would otherwise land in the container's log as stderr lines
            "--runtime-arg", "--log", "--runtime-arg", str(persist / "runtime.log"),
            "--bundle", str(bundle), "--container-pidfile", str(pidfile or persist / "pid"),
            "--conmon-pidfile", str(persist / "conmon.pid"), "--log-path", f"k8s-file:{log_path}",
            "--exit-dir", str(paths.exit_dir), "--persist-dir", str(persist),
            "--socket-dir-path", str(paths.socket_dir),
            # The log is fsynced only against a machine crash, which the container does not survive either;
            # skipping it takes a disk flush off the way from the container's exit to its exit file.
            "--no-sync-log"]
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
    options = dict(env={**_monitor_environment(), "_OCI_SYNCPIPE": str(write_fd)}, pass_fds=(write_fd,),
                   cwd=persist,  # conmon also drops its "oom" marker into its working directory
                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if start_without is not None:
        spawn = functools.partial(mountns.spawn_without_mount, start_without, argv, **options)
    else:
        spawn = functools.partial(subprocess.Popen, argv, **options)
    try:
        process = await childprocess.in_thread(spawn)
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
    output, _ = await childprocess.in_thread(process.communicate)
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


def _monitor_environment() -> dict[str, str]:
    """What conmon, and through it the runtime and the exit command, inherit: our PATH and the Python settings
    the exit command (a Python process of ours) should share, as CRI-O hands conmon a fixed PATH and little
    else. Not the rest of the caller's environment: a locale alone makes conmon load a dozen locale files on
    every start (~0.4 ms)."""
    environment = {name: value for name, value in os.environ.items() if name.startswith("PYTHON")}
    environment["PATH"] = os.environ.get("PATH") or os.defpath
    return environment


async def _read_line(fd: int) -> bytes:
    """One line from a pipe (the fd is consumed, closed exactly once), b"" at EOF. Not a read-pipe transport:
    uvloop's closes the fd a second time after the file object did, and in a process with worker threads that
    number may already belong to someone else's newly opened file."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = b""
    try:
        while b"\n" not in data:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                await _until_readable(loop, fd)
                continue
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    line, newline, _ = data.partition(b"\n")
    return line + newline


async def _until_readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    readable = loop.create_future()
    loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
    try:
        await readable
    finally:
        loop.remove_reader(fd)


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
    paths.exit_dir.mkdir(parents=True, exist_ok=True)  # watched even if no monitor has written there yet
    async with asyncio.timeout(timeout):
        with _ExitWatch(paths.exit_dir, cid) as watch:
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
    """Wakes a waiter when its container's exit file lands in the exit dir or when its monitor process ends
    (a pidfd)."""

    def __init__(self, exit_dir: Path, cid: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._cid = cid
        self._directory = _ExitDirWatch.subscribe(self._loop, exit_dir, cid, self._event)
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

    def _monitor_ended(self) -> None:
        self.monitor_ended = True
        self._event.set()

    async def changed(self) -> None:
        await self._event.wait()
        self._event.clear()

    def __enter__(self) -> _ExitWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._directory.unsubscribe(self._cid, self._event)
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)


class _ExitDirWatch:
    """One inotify instance per event loop and exit dir, shared by all the waiters on it: Linux allows 128
    instances per user by default, and a node runs more containers than that, each with a waiter."""

    _libc = ctypes.CDLL(None, use_errno=True)
    _shared: dict[tuple[int, Path], _ExitDirWatch] = {}  # (id of the loop, exit dir); gone with its last waiter

    def __init__(self, loop: asyncio.AbstractEventLoop, exit_dir: Path) -> None:
        self._loop = loop
        self._key = (id(loop), exit_dir)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed (fs.inotify.max_user_instances reached?)")
        if self._libc.inotify_add_watch(self._fd, bytes(exit_dir), _IN_CLOSE_WRITE | _IN_MOVED_TO) < 0:
            errno = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(errno, f"cannot watch {exit_dir}")
        loop.add_reader(self._fd, self._read_events)

    @classmethod
    def subscribe(cls, loop: asyncio.AbstractEventLoop, exit_dir: Path, cid: str, event: asyncio.Event
                  ) -> _ExitDirWatch:
        watch = cls._shared.get((id(loop), exit_dir))
        if watch is None:
            watch = cls._shared[(id(loop), exit_dir)] = cls(loop, exit_dir)
        watch._waiters.setdefault(cid, set()).add(event)
        return watch

    def unsubscribe(self, cid: str, event: asyncio.Event) -> None:
        events = self._waiters.get(cid, set())
        events.discard(event)
        if not events:
            self._waiters.pop(cid, None)
        if not self._waiters:
            del self._shared[self._key]
            self._loop.remove_reader(self._fd)
            # Closing an inotify instance waits for an SRCU grace period (measured: up to 15 ms here); that
            # wait must neither delay the caller nor stall the event loop.
            self._loop.run_in_executor(None, os.close, self._fd)

    def _read_events(self) -> None:
        """Wakes the waiters of the files named in the events; all of them if the kernel's queue overflowed."""
        names: set[str] = set()
        overflowed = False
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self._fd, 65536):
                offset = 0
                while offset + _INOTIFY_EVENT.size <= len(data):
                    _, mask, _, length = _INOTIFY_EVENT.unpack_from(data, offset)
                    start = offset + _INOTIFY_EVENT.size
                    names.add(data[start:start + length].rstrip(b"\0").decode(errors="replace"))
                    overflowed |= bool(mask & _IN_Q_OVERFLOW)
                    offset = start + length
        for cid, events in self._waiters.items():
            if overflowed or cid in names:
                for event in events:
                    event.set()


def send_control(paths: MonitorPaths, cid: str, line: str, purpose: str) -> None:
    """Writes one "<type> <rows> <cols>" line to the monitor's control fifo (type 1: terminal size, 2: reopen
    the log file); MonitorGone names `purpose` when no monitor reads it."""
    try:
        fd = os.open(paths.socket_dir / cid / "ctl", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENXIO):  # ENXIO: a fifo nobody reads, the monitor is gone
            raise MonitorGone(f"cannot {purpose} container {cid}: its monitor is not running") from None
        raise
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def reopen_log(paths: MonitorPaths, cid: str) -> None:
    """Makes the monitor reopen (create anew) the container's log file, after it was renamed away: the CRI's
    ReopenContainerLog, as CRI-O asks it of conmon."""
    send_control(paths, cid, f"{_REOPEN_LOG_EVENT} 0 0\n", "reopen the log of")


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
