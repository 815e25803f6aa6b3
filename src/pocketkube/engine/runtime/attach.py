"""Attaching to a container's stdio through its conmon.

conmon listens on SOCKET_DIR/<id>/attach (SOCK_SEQPACKET). Each packet it sends is one byte naming the
stream (2 stdout, 3 stderr; a terminal is all stdout) followed by the data; packets we send are raw stdin
bytes, and shutting down our sending side closes the container's stdin (unless conmon was told
--leave-stdin-open). Terminal size changes go through the `ctl` fifo beside the socket as
"1 <rows> <cols>\\n" lines."""

from __future__ import annotations

import asyncio
import os
import socket

from pocketkube.engine.runtime.conmon import MonitorGone, MonitorPaths, send_control

STREAMS = {2: "stdout", 3: "stderr"}
# conmon reads attach input with a 32 KiB buffer; a longer SEQPACKET message would be cut short.
MAX_PACKET = 32 * 1024
_READ_SIZE = 64 * 1024
_RESIZE_EVENT = 1


async def attach(paths: MonitorPaths, cid: str) -> AttachSession:
    """A session on the container's stdio; raises MonitorGone when its conmon is not running."""
    directory = paths.socket_dir / cid
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        # Through an O_PATH fd the address stays short whatever the socket dir's length.
        dir_fd = os.open(directory, os.O_PATH | os.O_CLOEXEC)
        try:
            await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{dir_fd}/attach")
        finally:
            os.close(dir_fd)
    except (FileNotFoundError, ConnectionRefusedError) as err:
        sock.close()
        raise MonitorGone(f"cannot attach to container {cid}: its monitor is not running ({err.strerror})") from None
    except BaseException:
        sock.close()
        raise
    return AttachSession(paths, cid, sock)


def resize(paths: MonitorPaths, cid: str, rows: int, cols: int) -> None:
    """Sets the size of the container's terminal (containers created with terminal=True)."""
    send_control(paths, cid, f"{_RESIZE_EVENT} {rows} {cols}\n", "resize the terminal of")


class AttachSession:
    def __init__(self, paths: MonitorPaths, cid: str, sock: socket.socket) -> None:
        self._paths = paths
        self._cid = cid
        self._socket = sock
        self._loop = asyncio.get_running_loop()

    async def read(self) -> tuple[str, bytes] | None:
        """The next chunk of output as ("stdout"|"stderr", data); None once the container's stdio is closed."""
        packet = await self._loop.sock_recv(self._socket, _READ_SIZE)
        if not packet:
            return None
        return STREAMS.get(packet[0], "stdout"), packet[1:]

    async def write_stdin(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_PACKET):
            await self._loop.sock_sendall(self._socket, data[start:start + MAX_PACKET])

    async def close_stdin(self) -> None:
        self._socket.shutdown(socket.SHUT_WR)

    def resize(self, rows: int, cols: int) -> None:
        resize(self._paths, self._cid, rows, cols)

    async def close(self) -> None:
        """Detaches. conmon treats this like close_stdin: without --leave-stdin-open the container's stdin
        closes too."""
        self._socket.close()
