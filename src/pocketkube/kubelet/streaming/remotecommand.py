"""Exec and attach sessions: the client's streams (over a channel.k8s.io WebSocket or SPDY streams) joined
to a process in a container (an engine ExecStream or AttachSession).

The client asks for stdin/stdout/stderr/tty in the query; the server then serves the process until its
output ends and reports how it went on the error stream: v4+ a metav1.Status (Success, or Failure with
reason NonZeroExitCode and the exit code as a cause), earlier versions only a failure's message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from pocketkube.engine.streams import ExecFailed
from pocketkube.kubelet.streaming import wsstream
from pocketkube.kubelet.streaming.spdy import RstStatus, SpdySession, SpdyStream
from pocketkube.kubelet.streaming.upgrade import UpgradeAbandoned, UpgradedConnection, switch_protocols

Status = dict[str, Any]

# Over SPDY v5 is v4: its addition, the close signal, is a WebSocket matter (SPDY streams half-close).
SPDY_PROTOCOLS = (wsstream.CHANNEL_V5, wsstream.CHANNEL_V4, wsstream.CHANNEL_V3, wsstream.CHANNEL_V2,
                  wsstream.CHANNEL_V1)
STREAM_CREATION_TIMEOUT = 30.0
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_PROTOCOLS_HEADER = "X-Accepted-Stream-Protocol-Versions"


class StreamRequestError(ValueError):
    """The request cannot start a stream session: answered with `status` and the message as text."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


@dataclass(frozen=True)
class StreamOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> StreamOptions:
        def flag(name: str) -> bool:
            return query.get(name, "").lower() in ("1", "true")

        tty = flag("tty")
        stdin, stdout = flag("stdin"), flag("stdout")
        stderr = flag("stderr") and not tty  # a terminal has one output stream
        if not (stdin or stdout or stderr):
            raise StreamRequestError(400, "you must specify at least 1 of stdin, stdout, stderr")
        return cls(stdin, stdout, stderr, tty)


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


# --- statuses on the error stream ---------------------------------------------------------------------------


def success_status() -> Status:
    return {"metadata": {}, "status": "Success"}


def exit_code_status(command: list[str], code: int) -> Status:
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: command '[{' '.join(command)}]' exited "
                       f"with {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def internal_error_status(message: str) -> Status:
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
            "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}


def status_payload(protocol_version: int, status: Status) -> bytes:
    """What goes on the error stream: v4+ the Status as JSON; before, a failure's message or nothing."""
    if protocol_version >= 4:
        return json.dumps(status, separators=(",", ":")).encode()
    return b"" if status["status"] == "Success" else status["message"].encode()


class ResizeDecoder:
    """Terminal sizes from a stream of concatenated JSON objects ({"Width": w, "Height": h})."""

    _LIMIT = 4096  # an object longer than this is not a terminal size: stop decoding

    def __init__(self) -> None:
        self._text = ""
        self._decoder = json.JSONDecoder()
        self.broken = False

    def feed(self, data: bytes) -> list[TerminalSize]:
        if self.broken:
            return []
        self._text += data.decode(errors="replace")
        sizes = []
        while self._text.strip():
            text = self._text.lstrip()
            try:
                value, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                self._text = text
                self.broken = len(text) > self._LIMIT
                break
            self._text = text[end:]
            if isinstance(value, dict):
                sizes.append(TerminalSize(int(value.get("Width") or 0), int(value.get("Height") or 0)))
        return sizes


# --- the client's side --------------------------------------------------------------------------------------


class CommandChannels(Protocol):
    """The client's end of a session, whichever protocol carries it."""

    response: web.StreamResponse  # what the HTTP handler returns once the session is over
    gone: asyncio.Event           # set once the client's connection has ended

    async def read_stdin(self) -> bytes: ...                       # b"" once the client ends stdin
    async def read_resize(self) -> TerminalSize | None: ...        # None once no more sizes come
    async def write_output(self, stream: str, data: bytes) -> None: ...
    async def finish(self, status: Status) -> None: ...            # report, then close everything


class WebSocketCommandChannels:
    def __init__(self, connection: wsstream.ChannelConnection, options: StreamOptions) -> None:
        self.response = connection.ws
        self._connection = connection
        self._options = options
        self._stdin: asyncio.Queue[bytes] = asyncio.Queue()
        self._resizes: asyncio.Queue[TerminalSize | None] = asyncio.Queue()
        self._resize_decoder = ResizeDecoder()
        self.gone = asyncio.Event()
        self._receiver = asyncio.ensure_future(self._receive())

    @classmethod
    async def accept(cls, request: web.Request, options: StreamOptions) -> WebSocketCommandChannels:
        try:
            ws, chosen = await wsstream.accept_websocket(request, wsstream.REMOTECOMMAND_PROTOCOLS)
        except wsstream.ProtocolNotSupported as err:
            raise StreamRequestError(403, str(err)) from None
        channels = cls(wsstream.ChannelConnection(ws, wsstream.ChannelProtocol.named(chosen)), options)
        # An empty message on the lowest writable channel tells the client the streams are up (as upstream).
        first = wsstream.STDOUT if options.stdout else wsstream.STDERR if options.stderr else wsstream.ERROR
        try:
            await channels._connection.send(first, b"")
        except ConnectionError as err:
            await channels.finish(success_status())
            raise UpgradeAbandoned(f"the client left: {err}", ws) from None
        return channels

    async def _receive(self) -> None:
        try:
            while (message := await self._connection.receive()) is not None:
                if isinstance(message, wsstream.ChannelClosed):
                    if message.channel == wsstream.STDIN:
                        self._stdin.put_nowait(b"")
                    elif message.channel == wsstream.RESIZE:
                        self._resizes.put_nowait(None)
                elif message.channel == wsstream.STDIN and self._options.stdin and message.data:
                    self._stdin.put_nowait(message.data)
                elif message.channel == wsstream.RESIZE and self._options.tty:
                    for size in self._resize_decoder.feed(message.data):
                        self._resizes.put_nowait(size)
        finally:
            self._stdin.put_nowait(b"")
            self._resizes.put_nowait(None)
            self.gone.set()

    async def read_stdin(self) -> bytes:
        return await self._stdin.get()

    async def read_resize(self) -> TerminalSize | None:
        return await self._resizes.get()

    async def write_output(self, stream: str, data: bytes) -> None:
        await self._connection.send(wsstream.STDOUT if stream == "stdout" else wsstream.STDERR, data)

    async def finish(self, status: Status) -> None:
        payload = status_payload(self._connection.protocol.version, status)
        with contextlib.suppress(ConnectionError):
            if payload:
                await self._connection.send(wsstream.ERROR, payload)
            await self._connection.close()
        self._receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._receiver


class SpdyCommandChannels:
    """The streams a SPDY client opens, one per stream type (error, stdin, stdout, stderr, resize)."""

    def __init__(self, connection: UpgradedConnection, session: SpdySession, reader: asyncio.Task[None],
                 version: int, streams: dict[str, SpdyStream]) -> None:
        self.response = connection.response
        self._connection = connection
        self._session = session
        self._reader = reader
        self._version = version
        self._streams = streams
        self._resize_decoder = ResizeDecoder()
        self._pending_sizes: list[TerminalSize] = []
        self.gone = asyncio.Event()
        reader.add_done_callback(lambda _: self.gone.set())

    @classmethod
    async def accept(cls, request: web.Request, options: StreamOptions) -> SpdyCommandChannels:
        protocol = spdy_handshake(request, SPDY_PROTOCOLS)
        version = wsstream.ChannelProtocol.named(protocol).version
        connection = await switch_protocols(request, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                                      (PROTOCOL_HEADER, protocol)])
        session = SpdySession(connection.write, server=True)
        reader = asyncio.ensure_future(session.run(connection.read))
        wanted = {"error"}
        wanted |= {name for name, on in (("stdin", options.stdin), ("stdout", options.stdout),
                                          ("stderr", options.stderr)) if on}
        if options.tty and version >= 3:
            wanted.add("resize")
        try:
            streams = await asyncio.wait_for(_collect_streams(session, wanted), STREAM_CREATION_TIMEOUT)
        except TimeoutError:
            reason = "timed out waiting for client to create streams"
        except ConnectionError as err:
            reason = str(err)
        else:
            return cls(connection, session, reader, version, streams)
        await session.go_away()
        connection.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        raise UpgradeAbandoned(reason, connection.response)

    async def read_stdin(self) -> bytes:
        stream = self._streams.get("stdin")
        return await stream.read() if stream is not None else b""

    async def read_resize(self) -> TerminalSize | None:
        stream = self._streams.get("resize")
        while stream is not None and not self._pending_sizes:
            data = await stream.read()
            if not data:
                return None
            self._pending_sizes += self._resize_decoder.feed(data)
        return self._pending_sizes.pop(0) if self._pending_sizes else None

    async def write_output(self, stream: str, data: bytes) -> None:
        target = self._streams.get(stream)
        if target is not None:
            await target.write(data)

    async def finish(self, status: Status) -> None:
        with contextlib.suppress(ConnectionError):
            for name in ("stdout", "stderr"):
                if name in self._streams:
                    await self._streams[name].close()
            payload = status_payload(self._version, status)
            if payload:
                await self._streams["error"].write(payload)
            for stream in self._streams.values():
                await stream.close()
            await self._session.go_away()
        self._connection.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def _collect_streams(session: SpdySession, wanted: set[str]) -> dict[str, SpdyStream]:
    streams: dict[str, SpdyStream] = {}
    while not wanted <= streams.keys():
        stream = await session.accept()
        if stream is None:
            raise ConnectionResetError("the client closed the connection before opening its streams")
        kind = stream.header("streamType")
        if kind in wanted and kind not in streams:
            await stream.reply()
            streams[kind] = stream
        else:
            await stream.abort(RstStatus.REFUSED_STREAM)
    return streams


def spdy_handshake(request: web.Request, supported: tuple[str, ...]) -> str:
    """Picks the stream protocol (the client's first we support), then checks the SPDY upgrade headers, in
    upstream's order and with its messages."""
    values = request.headers.getall(PROTOCOL_HEADER, [])
    if not values:
        raise StreamRequestError(400, f"unable to upgrade: header {PROTOCOL_HEADER} does not exist in request "
                                      f"with {len(request.headers)} headers")
    offered = [p.strip() for value in values for p in value.split(",") if p.strip()]
    chosen = next((protocol for protocol in offered if protocol in supported), None)
    if chosen is None:
        raise StreamRequestError(403, f"unable to upgrade: unable to negotiate protocol: client supports "
                                      f"{offered}, server accepts {list(supported)}",
                                 [(ACCEPTED_PROTOCOLS_HEADER, p) for p in supported])
    if "upgrade" not in request.headers.get("Connection", "").lower() or \
            "spdy/3.1" not in request.headers.get("Upgrade", "").lower():
        raise StreamRequestError(400, "unable to upgrade: missing upgrade headers in request")
    return chosen


async def accept_channels(request: web.Request, options: StreamOptions) -> CommandChannels:
    """Upgrades the request (WebSocket or SPDY) and returns the client's streams. StreamRequestError before
    the upgrade (answer it), UpgradeAbandoned after (return its response)."""
    if wsstream.is_websocket_request(request):
        return await WebSocketCommandChannels.accept(request, options)
    return await SpdyCommandChannels.accept(request, options)


# --- the process's side -------------------------------------------------------------------------------------


class InteractiveProcess(Protocol):
    """What ExecStream and AttachSession have in common."""

    async def read(self) -> tuple[str, bytes] | None: ...
    async def write_stdin(self, data: bytes) -> None: ...
    async def close_stdin(self) -> None: ...
    def resize(self, rows: int, cols: int) -> None: ...


class ExecProcess(InteractiveProcess, Protocol):
    async def wait(self) -> int: ...
    def kill(self, signal: int) -> None: ...


async def _pump(process: InteractiveProcess, channels: CommandChannels, options: StreamOptions) -> None:
    """Copies stdin and resizes in, output out, until the process's output ends."""

    async def stdin() -> None:
        try:
            while data := await channels.read_stdin():
                await process.write_stdin(data)
            await process.close_stdin()
        except (ConnectionError, OSError):
            pass  # the process is gone: its exit decides the outcome

    async def resizes() -> None:
        while (size := await channels.read_resize()) is not None:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                process.resize(size.height, size.width)

    helpers = []
    if options.stdin:
        helpers.append(asyncio.ensure_future(stdin()))
    if options.tty:
        helpers.append(asyncio.ensure_future(resizes()))
    wanted = {"stdout"} if options.tty else {name for name, on in (("stdout", options.stdout),
                                                                      ("stderr", options.stderr)) if on}

    async def output() -> None:
        while (chunk := await process.read()) is not None:
            stream, data = chunk
            if options.tty:
                stream = "stdout"
            if stream in wanted:
                await channels.write_output(stream, data)

    copying = asyncio.ensure_future(output())
    client_gone = asyncio.ensure_future(channels.gone.wait())
    try:
        await asyncio.wait((copying, client_gone), return_when=asyncio.FIRST_COMPLETED)
        if not copying.done():
            raise ConnectionResetError("the client went away")
        copying.result()
    finally:
        for task in (*helpers, copying, client_gone):
            task.cancel()
        await asyncio.gather(*helpers, copying, client_gone, return_exceptions=True)


async def serve_exec(channels: CommandChannels, options: StreamOptions, command: list[str],
                     start: Callable[[], Awaitable[ExecProcess]]) -> None:
    """Runs an exec session to the end and reports its exit code."""
    try:
        process = await start()
    except Exception as err:  # the runtime's refusal (container gone, not running...) goes to the client
        await channels.finish(internal_error_status(f"error executing command in container: {err}"))
        return
    client_gone = False
    try:
        await _pump(process, channels, options)
    except ConnectionError:
        client_gone = True  # nobody is left to see the output: do not leave the command running
        with contextlib.suppress(OSError):
            process.kill(signal.SIGKILL)
    try:
        code = await process.wait()
    except ExecFailed as err:
        status = internal_error_status(f"error executing command in container: {err}")
    else:
        status = success_status() if code == 0 else exit_code_status(command, code)
    if client_gone:
        status = internal_error_status("the client connection was lost")
    await channels.finish(status)


async def serve_attach(channels: CommandChannels, options: StreamOptions,
                       start: Callable[[], Awaitable[Any]]) -> None:
    """Joins the container's stdio until it ends (the container exits) or the client goes."""
    try:
        session = await start()
    except Exception as err:
        await channels.finish(internal_error_status(f"error attaching to container: {err}"))
        return
    status = success_status()
    try:
        await _pump(session, channels, options)
    except ConnectionError:
        status = internal_error_status("the client connection was lost")
    finally:
        await session.close()
    await channels.finish(status)
