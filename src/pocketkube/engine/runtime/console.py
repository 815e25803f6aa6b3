"""The receiving end of an OCI runtime's --console-socket: the runtime connects and hands over the master
side of the pseudo-terminal it created for the container process (one fd, SCM_RIGHTS)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path


class ConsoleSocket:
    """A listening unix socket at `path` (keep it short: 108-byte limit) for one terminal hand-over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._socket.bind(str(path))
            self._socket.listen(1)
            self._socket.setblocking(False)
        except BaseException:
            self._socket.close()
            raise

    async def receive(self, timeout: float = 10) -> int:
        """The pty master fd (non-blocking, owned by the caller) once the runtime has sent it."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            connection, _ = await loop.sock_accept(self._socket)
            with connection:
                readable = loop.create_future()
                loop.add_reader(connection.fileno(), lambda: readable.done() or readable.set_result(None))
                try:
                    await readable
                finally:
                    loop.remove_reader(connection.fileno())
                _, fds, _, _ = socket.recv_fds(connection, 4096, 1, socket.MSG_CMSG_CLOEXEC)
        if not fds:
            raise ConnectionError(f"the runtime closed {self.path} without sending a terminal")
        os.set_blocking(fds[0], False)
        return fds[0]

    def close(self) -> None:
        self._socket.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
