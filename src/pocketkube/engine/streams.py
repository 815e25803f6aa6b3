"""One shape for a container's interactive streams, whichever side carries them (an exec session's pipes
or pty, or conmon's attach socket): read() -> ("stdout"|"stderr", bytes) until None, write_stdin(),
close_stdin(), resize(), and for exec wait() -> exit code. The CLI and, later, the kubelet's streaming
server pump these."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select

from pocketkube.engine.runtime.oci import ExecSession, OCIRuntimeError

_CHUNK = 32 * 1024


def exec_error_code(message: str) -> int:
    """Docker's exit code for a command the runtime could not start: 127 when it is missing, 126 when it
    cannot be executed, 125 for anything else."""
    lowered = message.lower()
    if "no such file or directory" in lowered or "not found" in lowered:
        return 127
    if "permission denied" in lowered or "is a directory" in lowered or "exec format error" in lowered:
        return 126
    return 125


class ExecFailed(RuntimeError):
    """The runtime could not start the command (missing or non-executable binary)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.exit_code = exec_error_code(message)


class ExecStream:
    def __init__(self, session: ExecSession) -> None:
        self.session = session
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self._readers: list[asyncio.Task] = []
        if session.pty is not None:
            self._open = 1
            self._readers.append(asyncio.ensure_future(self._read_pty(session.pty)))
        else:
            pipes = [(name, reader) for name, reader in (("stdout", session.stdout), ("stderr", session.stderr))
                     if reader is not None]
            self._open = len(pipes)
            self._readers += [asyncio.ensure_future(self._read_pipe(name, reader)) for name, reader in pipes]
        if not self._open:
            self._queue.put_nowait(None)

    async def _read_pipe(self, name: str, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(_CHUNK):
                await self._queue.put((name, data))
        finally:
            await self._closed_one()

    async def _read_pty(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                try:
                    data = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: the terminal's last holder has gone
                    break
                if not data:
                    break
                await self._queue.put(("stdout", data))
        finally:
            loop.remove_reader(fd)
            await self._closed_one()

    async def _closed_one(self) -> None:
        self._open -= 1
        if self._open == 0:
            await self._queue.put(None)

    async def read(self) -> tuple[str, bytes] | None:
        return await self._queue.get()

    async def write_stdin(self, data: bytes) -> None:
        if self.session.pty is not None:
            await asyncio.get_running_loop().run_in_executor(None, _write_all, self.session.pty, data)
        elif self.session.stdin is not None:
            self.session.stdin.write(data)
            await self.session.stdin.drain()

    async def close_stdin(self) -> None:
        if self.session.pty is not None:
            await self.write_stdin(b"\x04")  # a terminal has no half-close: send EOF as a keypress
        elif self.session.stdin is not None:
            self.session.stdin.close()
            with contextlib.suppress(ConnectionError):
                await self.session.stdin.wait_closed()

    def resize(self, rows: int, cols: int) -> None:
        if self.session.pty is not None:
            self.session.resize(rows, cols)

    async def wait(self) -> int:
        """The exit code; ExecFailed when the command never started."""
        try:
            code = await self.session.wait()
        except OCIRuntimeError as err:
            raise ExecFailed(str(err)) from None
        finally:
            await asyncio.gather(*self._readers, return_exceptions=True)
            self.session.close()
        return code if code is not None else 0

    def kill(self, signal: int) -> None:
        self.session.kill(signal)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
