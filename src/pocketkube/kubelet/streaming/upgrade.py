"""Taking a client connection over from aiohttp after `101 Switching Protocols`.

aiohttp only hands WebSocket upgrades to its own WebSocket code; for `Upgrade: SPDY/3.1` (and to splice any
upgrade as bytes) we install our own payload parser on the connection's protocol, which then receives
every byte the client sends, and write through the response. The parser goes in before the 101 is written:
a client sends nothing of the new protocol until it has read the 101, so no byte reaches aiohttp's HTTP
parser in between."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiohttp import web

_READ_LIMIT = 1024 * 1024   # buffered client bytes before we stop reading the socket


class UpgradeAbandoned(ConnectionError):
    """The client's connection ended, or its streams never came, after the protocol switch: nothing is left
    to answer, the HTTP handler just returns `response`."""

    def __init__(self, message: str, response: web.StreamResponse) -> None:
        super().__init__(message)
        self.response = response


class UpgradedConnection:
    """The raw byte stream of an upgraded HTTP connection (both ways)."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.response = response
        self._transport = request.transport
        self._buffer = bytearray()
        self._eof = False
        self._paused = False
        self._wakeup = asyncio.Event()

    # The payload-parser interface aiohttp's RequestHandler feeds (RequestHandler.set_parser).
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._buffer += data
        self._wakeup.set()
        if len(self._buffer) > _READ_LIMIT and not self._paused and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._wakeup.set()

    async def read(self, limit: int = 64 * 1024) -> bytes:
        """The next bytes from the client; b"" once it has closed the connection."""
        while not self._buffer:
            if self._eof:
                return b""
            self._wakeup.clear()
            await self._wakeup.wait()
        data = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        if self._paused and len(self._buffer) < _READ_LIMIT // 2 and self._transport is not None:
            self._transport.resume_reading()
            self._paused = False
        return data

    async def write(self, data: bytes) -> None:
        """Sends bytes to the client (waiting while its socket buffer is full); ConnectionResetError once
        the connection is gone."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the upgraded connection is closed")
        await self.response.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def switch_protocols(request: web.Request, headers: Iterable[tuple[str, str]]) -> UpgradedConnection:
    """Answers 101 with `headers` and returns the connection, now carrying the new protocol."""
    response = web.StreamResponse(status=101)
    for name, value in headers:
        response.headers.add(name, value)
    response.force_close()
    connection = UpgradedConnection(request, response)
    request.protocol.set_parser(connection)
    await response.prepare(request)
    return connection
