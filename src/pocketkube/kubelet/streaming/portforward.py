"""Port forwarding: TCP connections to 127.0.0.1:<port> inside a pod's network namespace, carried over
SPDY streams (kubectl: a data and an error stream per connection, paired by requestID), SPDY tunnelled in a
WebSocket (kubectl 1.31+), or channel.k8s.io WebSocket channels (one connection per requested port)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import WSMsgType, web

from pocketkube.kubelet.streaming import wsstream
from pocketkube.kubelet.streaming.remotecommand import PROTOCOL_HEADER, StreamRequestError, spdy_handshake
from pocketkube.kubelet.streaming.spdy import RstStatus, SpdySession, SpdyStream
from pocketkube.kubelet.streaming.upgrade import switch_protocols

log = logging.getLogger(__name__)

PORTFORWARD_PROTOCOL = "portforward.k8s.io"
STREAM_CREATION_TIMEOUT = 30.0
# After one direction of a forwarded connection ends, how long the other may still finish (as containerd).
_CLOSE_GRACE = 1.0
_CONNECT_TIMEOUT = 5.0
_CLONE_NEWNET = 0x40000000

Connector = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class PortForwardError(ConnectionError):
    """The pod's port could not be reached."""


# --- reaching the pod's port --------------------------------------------------------------------------------


def _dial_in_netns(netns: str, port: int) -> socket.socket:
    """Joins the network namespace and connects. Runs in a thread of its own that ends afterwards: a thread
    stays in the namespace it joined, while the socket keeps the namespace it was created in."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"cannot enter network namespace {netns}: {os.strerror(code)}")
    finally:
        os.close(fd)
    failures = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(_CONNECT_TIMEOUT)
        try:
            sock.connect((host, port))
        except OSError as err:
            sock.close()
            failures.append(f"dial {host} port {port}: {err.strerror or err}")
            continue
        sock.settimeout(None)
        return sock
    raise PortForwardError(f"failed to connect to localhost:{port} inside namespace \"{netns}\", "
                           f"IPv4: {failures[0]} IPv6 {failures[1]}")


async def connect_in_netns(netns: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to localhost:port inside the network namespace pinned at `netns`."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(sock: socket.socket | None, error: BaseException | None) -> None:
        if result.cancelled():
            if sock is not None:
                sock.close()
        elif error is not None:
            result.set_exception(error)
        else:
            result.set_result(sock)

    def dial() -> None:
        try:
            sock = _dial_in_netns(netns, port)
        except BaseException as err:  # handed to the awaiting task, which raises it
            loop.call_soon_threadsafe(deliver, None, err)
        else:
            loop.call_soon_threadsafe(deliver, sock, None)

    threading.Thread(target=dial, name=f"portforward-{port}", daemon=True).start()
    return await asyncio.open_connection(sock=await result)


# --- copying ------------------------------------------------------------------------------------------------


class ByteStream(Protocol):
    """The client's side of one forwarded connection."""

    async def read(self) -> bytes: ...            # b"" once the client sends no more
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...            # we send no more


async def forward(client: ByteStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies both ways. Each end learns when the other stops sending; once one direction is done the other
    gets a grace period, then the connection is closed. Raises what broke a direction, if anything did."""

    async def to_pod() -> None:
        while data := await client.read():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def from_pod() -> None:
        while data := await reader.read(64 * 1024):
            await client.write(data)
        await client.close()

    directions = [asyncio.ensure_future(to_pod()), asyncio.ensure_future(from_pod())]
    try:
        done, pending = await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        if pending and not any(task.exception() for task in done):
            await asyncio.wait(pending, timeout=_CLOSE_GRACE)
    finally:
        for task in directions:
            task.cancel()
        await asyncio.gather(*directions, return_exceptions=True)
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    for task in directions:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


def _forward_error(port: int, pod: str, err: BaseException) -> bytes:
    return f"error forwarding port {port} to pod {pod}: {err}".encode()


# --- SPDY (plain or tunnelled in a WebSocket) ---------------------------------------------------------------


@dataclass
class _StreamPair:
    request_id: str
    data: SpdyStream | None = None
    error: SpdyStream | None = None


def _invalid_headers(stream: SpdyStream) -> str:
    port = stream.header("port")
    if not port:
        return '"port" header is required'
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"unable to parse {port!r} as a port"
    kind = stream.header("streamType")
    if not kind:
        return '"streamType" header is required'
    if kind not in ("data", "error"):
        return f"invalid stream type {kind!r}"
    return ""


def _request_id(stream: SpdyStream) -> str:
    """The client's requestID; old clients sent none: their error and data streams have consecutive odd ids."""
    request_id = stream.header("requestID")
    if request_id:
        return request_id
    return str(stream.id if stream.header("streamType") == "error" else stream.id - 2)


async def serve_spdy(session: SpdySession, connect: Connector, pod: str) -> None:
    """Forwards every connection the client opens on the session until it ends."""
    pairs: dict[str, _StreamPair] = {}
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def expire(pair: _StreamPair) -> None:
        await asyncio.sleep(STREAM_CREATION_TIMEOUT)
        if pairs.get(pair.request_id) is pair:
            del pairs[pair.request_id]
            for stream in (pair.error, pair.data):
                if stream is not None:
                    with contextlib.suppress(ConnectionError):
                        if stream is pair.error:
                            message = f"(request={pair.request_id}) timed out waiting for streams"
                            await stream.write(message.encode())
                        await stream.close()

    async def forward_pair(pair: _StreamPair) -> None:
        assert pair.data is not None and pair.error is not None
        port = int(pair.data.header("port"))
        try:
            reader, writer = await connect(port)
            await forward(pair.data, reader, writer)
        except (OSError, ConnectionError) as err:
            with contextlib.suppress(ConnectionError):
                await pair.error.write(_forward_error(port, pod, err))
        finally:
            await pair.data.close()
            await pair.error.close()

    try:
        while (stream := await session.accept()) is not None:
            problem = _invalid_headers(stream)
            if problem:
                log.info("refusing port-forward stream %d of pod %s: %s", stream.id, pod, problem)
                await stream.abort(RstStatus.CANCEL)
                continue
            await stream.reply()
            request_id = _request_id(stream)
            pair = pairs.get(request_id)
            if pair is None:
                pair = pairs[request_id] = _StreamPair(request_id)
                spawn(expire(pair))
            kind = stream.header("streamType")
            if getattr(pair, kind) is not None:
                if pair.error is not None:
                    with contextlib.suppress(ConnectionError):
                        await pair.error.write(f"error processing stream for request {request_id}: {kind} "
                                               f"stream already assigned".encode())
                await stream.abort(RstStatus.PROTOCOL_ERROR)
                continue
            setattr(pair, kind, stream)
            if pair.data is not None and pair.error is not None:
                del pairs[request_id]
                spawn(forward_pair(pair))
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _websocket_bytes(ws: web.WebSocketResponse) -> bytes:
    """The next chunk of a tunnelled byte stream (binary messages); b"" once the WebSocket has closed."""
    while True:
        message = await ws.receive()
        if message.type == WSMsgType.BINARY:
            if message.data:
                return message.data
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return b""


# --- channel.k8s.io WebSocket -------------------------------------------------------------------------------


class _ChannelStream:
    """One port's data channel; the channel protocol cannot half-close, so close() sends nothing."""

    def __init__(self, connection: wsstream.ChannelConnection, channel: int) -> None:
        self.connection = connection
        self.channel = channel
        self.inbound: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self) -> bytes:
        return await self.inbound.get()

    async def write(self, data: bytes) -> None:
        await self.connection.send(self.channel, data)

    async def close(self) -> None:
        return None


async def serve_channels(connection: wsstream.ChannelConnection, ports: list[int], connect: Connector,
                         pod: str) -> None:
    """Each requested port: data channel 2i and error channel 2i+1, both opened with the port number."""
    streams = [_ChannelStream(connection, 2 * index) for index in range(len(ports))]
    for index, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        await connection.send(2 * index, prefix)
        await connection.send(2 * index + 1, prefix)

    async def receive() -> None:
        try:
            while (message := await connection.receive()) is not None:
                if isinstance(message, wsstream.ChannelData) and message.channel % 2 == 0 \
                        and message.channel // 2 < len(streams) and message.data:
                    streams[message.channel // 2].inbound.put_nowait(message.data)
        finally:
            for stream in streams:
                stream.inbound.put_nowait(b"")

    async def forward_port(index: int, port: int) -> None:
        try:
            reader, writer = await connect(port)
            await forward(streams[index], reader, writer)
        except (OSError, ConnectionError) as err:
            with contextlib.suppress(ConnectionError):
                await connection.send(2 * index + 1, _forward_error(port, pod, err))

    receiver = asyncio.ensure_future(receive())
    try:
        await asyncio.gather(*(forward_port(index, port) for index, port in enumerate(ports)))
    finally:
        with contextlib.suppress(ConnectionError):
            await connection.close()
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)


# --- the request --------------------------------------------------------------------------------------------


def requested_ports(request: web.Request) -> list[int]:
    """The ports a WebSocket client asks for: `port` (what the API server sends; `ports` accepted too),
    each value a comma-separated list."""
    values = request.query.getall("port", []) + request.query.getall("ports", [])
    if not values:
        raise StreamRequestError(400, 'query parameter "port" is required')
    ports = []
    for value in values:
        if not value:
            raise StreamRequestError(400, 'query parameter "port" cannot be empty')
        for item in value.split(","):
            if not item.isdigit() or not 0 <= int(item) < 65536:
                raise StreamRequestError(400, f"unable to parse {value!r} as a port")
            if int(item) < 1:
                raise StreamRequestError(400, f"port {value!r} must be > 0")
            ports.append(int(item))
    return ports


async def serve_portforward(request: web.Request, connect: Connector, pod: str) -> web.StreamResponse:
    """Serves a port-forward request in whichever protocol the client chose; returns when it is over."""
    if wsstream.is_websocket_request(request):
        supported = (wsstream.SPDY_TUNNEL_PORTFORWARD, *wsstream.PORTFORWARD_PROTOCOLS)
        chosen = wsstream.negotiate(wsstream.offered_protocols(request), supported)
        ports = [] if chosen == wsstream.SPDY_TUNNEL_PORTFORWARD else requested_ports(request)
        ws, chosen = await wsstream.accept_websocket(request, supported)
        if chosen == wsstream.SPDY_TUNNEL_PORTFORWARD:
            session = SpdySession(ws.send_bytes, server=True)
            reader = asyncio.ensure_future(session.run(lambda: _websocket_bytes(ws)))
            try:
                await serve_spdy(session, connect, pod)
            finally:
                with contextlib.suppress(ConnectionError):
                    await ws.close()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        else:
            with contextlib.suppress(ConnectionError):  # the client left: nothing more to do
                await serve_channels(wsstream.ChannelConnection(ws, wsstream.ChannelProtocol.named(chosen)),
                                     ports, connect, pod)
        return ws
    protocol = spdy_handshake(request, (PORTFORWARD_PROTOCOL,))
    connection = await switch_protocols(request, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                                  (PROTOCOL_HEADER, protocol)])
    session = SpdySession(connection.write, server=True)
    reader = asyncio.ensure_future(session.run(connection.read))
    try:
        await serve_spdy(session, connect, pod)
    finally:
        connection.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return connection.response

