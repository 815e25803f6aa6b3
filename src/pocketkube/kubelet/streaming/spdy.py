"""SPDY/3.1 framing and sessions: the multiplexed stream protocol kubectl speaks for port-forward (and, before
WebSockets, for exec and attach) after an `Upgrade: SPDY/3.1` handshake.

A frame is control (high bit set: version 3, type, flags, 24-bit length) or data (31-bit stream id, flags,
24-bit length). Name/value header blocks in SYN_STREAM, SYN_REPLY and HEADERS are zlib-compressed with the
SPDY/3 dictionary, one compression context per direction for the whole connection, each block ending on a
sync flush. Streams opened by the client carry odd ids; either side half-closes a stream with FLAG_FIN.

Flow control: SPDY/3.1 gives each stream and the session a 64 KiB send window that the receiver reopens
with WINDOW_UPDATE. We always send WINDOW_UPDATE as the application consumes data, so a peer that honours
windows keeps flowing. Go's spdystream (kubectl's side) neither sends WINDOW_UPDATE nor honours it, so
waiting on its windows would stall every transfer past 64 KiB: the send side waits on windows only once the
peer has shown it takes part (a SETTINGS_INITIAL_WINDOW_SIZE or a WINDOW_UPDATE), otherwise it relies on
the transport's backpressure. The receive side bounds what it buffers by pausing its reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 3

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

SETTINGS_INITIAL_WINDOW_SIZE = 7
DEFAULT_WINDOW = 64 * 1024
MAX_LENGTH = (1 << 24) - 1
MAX_WINDOW = (1 << 31) - 1

_GOAWAY_PROTOCOL_ERROR = 1
# Largest DATA frame we send: small enough to interleave streams fairly.
_MAX_DATA_CHUNK = 32 * 1024
# Received bytes buffered (not yet read by the application) before the session stops reading.
_MAX_BUFFERED = 4 * 1024 * 1024


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9


class SpdyProtocolError(ValueError):
    """The peer sent bytes that are not valid SPDY/3."""


# The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): length-prefixed header names and
# common values, then a run of status codes, reason phrases, dates and media types.
_DICTIONARY_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
    "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
    "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
    "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
    "keep-alive", "origin",
)
_DICTIONARY_TAIL = (
    b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    b"203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    b"403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    b"Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    b"chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    b"text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
HEADER_DICTIONARY = b"".join(struct.pack(">I", len(word)) + word.encode() for word in _DICTIONARY_WORDS) \
    + _DICTIONARY_TAIL

Headers = dict[str, list[str]]

log = logging.getLogger(__name__)


# --- frames -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    associated_to: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    values: dict[int, int]
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = 0


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"SPDY control frame of {len(payload)} bytes is too long")
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, flags << 24 | len(payload)) + payload


def _header_block(headers: Headers) -> bytes:
    parts = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        encoded_name = name.lower().encode()
        encoded_value = "\x00".join(values).encode()
        parts += [struct.pack(">I", len(encoded_name)), encoded_name,
                  struct.pack(">I", len(encoded_value)), encoded_value]
    return b"".join(parts)


def _parse_header_block(block: bytes) -> Headers:
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        offset = 4
        headers: Headers = {}
        for _ in range(count):
            (length,) = struct.unpack_from(">I", block, offset)
            name = block[offset + 4:offset + 4 + length].decode().lower()
            offset += 4 + length
            (length,) = struct.unpack_from(">I", block, offset)
            value = block[offset + 4:offset + 4 + length].decode()
            offset += 4 + length
            headers.setdefault(name, []).extend(value.split("\x00"))
    except (struct.error, UnicodeDecodeError) as err:
        raise SpdyProtocolError(f"malformed SPDY header block: {err}") from None
    if offset != len(block):
        raise SpdyProtocolError("malformed SPDY header block: trailing bytes")
    return headers


class FrameWriter:
    """Encodes frames going one way; owns that direction's header compression context, so frames must be
    sent in the order they were encoded."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(level=9, zdict=HEADER_DICTIONARY)

    def _compress(self, headers: Headers) -> bytes:
        return self._compressor.compress(_header_block(headers)) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            if len(frame.data) > MAX_LENGTH:
                raise ValueError(f"SPDY data frame of {len(frame.data)} bytes is too long")
            flags = FLAG_FIN if frame.fin else 0
            return struct.pack(">II", frame.stream_id & 0x7FFFFFFF, flags << 24 | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            head = struct.pack(">IIBB", frame.stream_id, frame.associated_to, (frame.priority & 7) << 5, 0)
            return _control(SYN_STREAM, flags, head + self._compress(frame.headers))
        if isinstance(frame, SynReply):
            return _control(SYN_REPLY, FLAG_FIN if frame.fin else 0,
                            struct.pack(">I", frame.stream_id) + self._compress(frame.headers))
        if isinstance(frame, HeadersFrame):
            return _control(HEADERS, FLAG_FIN if frame.fin else 0,
                            struct.pack(">I", frame.stream_id) + self._compress(frame.headers))
        if isinstance(frame, RstStream):
            return _control(RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            entries = b"".join(struct.pack(">II", key & 0xFFFFFF, value) for key, value in frame.values.items())
            return _control(SETTINGS, FLAG_SETTINGS_CLEAR if frame.clear else 0,
                            struct.pack(">I", len(frame.values)) + entries)
        if isinstance(frame, Ping):
            return _control(PING, 0, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAway):
            return _control(GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            return _control(WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameReader:
    """Decodes the frames of one direction from bytes fed in arbitrary pieces."""

    def __init__(self) -> None:
        self._decompressor = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            (first, second) = struct.unpack_from(">II", self._buffer, 0)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            flags = second >> 24
            if first & 0x80000000:
                frame = self._control((first >> 16) & 0x7FFF, first & 0xFFFF, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(DataFrame(first & 0x7FFFFFFF, payload, bool(flags & FLAG_FIN)))
        return frames

    def _headers(self, compressed: bytes) -> Headers:
        try:
            block = self._decompressor.decompress(compressed)
        except zlib.error as err:
            raise SpdyProtocolError(f"cannot decompress SPDY headers: {err}") from None
        return _parse_header_block(block)

    def _control(self, version: int, frame_type: int, flags: int, payload: bytes) -> Frame | None:
        if version != VERSION:
            raise SpdyProtocolError(f"unsupported SPDY version {version}")
        fin = bool(flags & FLAG_FIN)
        try:
            if frame_type == SYN_STREAM:
                stream_id, associated, priority, _slot = struct.unpack_from(">IIBB", payload, 0)
                return SynStream(stream_id & 0x7FFFFFFF, self._headers(payload[10:]), associated & 0x7FFFFFFF,
                                 priority >> 5, fin, bool(flags & FLAG_UNIDIRECTIONAL))
            if frame_type in (SYN_REPLY, HEADERS):
                (stream_id,) = struct.unpack_from(">I", payload, 0)
                kind = SynReply if frame_type == SYN_REPLY else HeadersFrame
                return kind(stream_id & 0x7FFFFFFF, self._headers(payload[4:]), fin)
            if frame_type == RST_STREAM:
                stream_id, status = struct.unpack_from(">II", payload, 0)
                return RstStream(stream_id & 0x7FFFFFFF, status)
            if frame_type == SETTINGS:
                (count,) = struct.unpack_from(">I", payload, 0)
                values = {}
                for index in range(count):
                    key, value = struct.unpack_from(">II", payload, 4 + 8 * index)
                    values[key & 0xFFFFFF] = value
                return Settings(values, bool(flags & FLAG_SETTINGS_CLEAR))
            if frame_type == PING:
                return Ping(struct.unpack_from(">I", payload, 0)[0])
            if frame_type == GOAWAY:
                last_good, status = struct.unpack_from(">II", payload, 0) if len(payload) >= 8 \
                    else (struct.unpack_from(">I", payload, 0)[0], 0)
                return GoAway(last_good & 0x7FFFFFFF, status)
            if frame_type == WINDOW_UPDATE:
                stream_id, delta = struct.unpack_from(">II", payload, 0)
                return WindowUpdate(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error:
            raise SpdyProtocolError(f"truncated SPDY control frame of type {frame_type}") from None
        return None  # unknown control frame types are ignored (draft 3, section 2.2.1)


# --- sessions -----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class SpdyStream:
    """One stream of a session: a byte pipe each way, half-closed independently."""

    session: SpdySession = field(repr=False)
    id: int
    headers: Headers
    send_window: int
    _inbound: deque[bytes] = field(default_factory=deque, repr=False)
    _readable: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _window_open: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    remote_closed: bool = False     # the peer sent FIN: no more data will arrive
    local_closed: bool = False      # we sent FIN
    reset: bool = False
    replied: bool = False
    _unacknowledged: int = 0        # bytes read by the application, not yet given back as window

    def header(self, name: str) -> str:
        """The first value of a header ("" if absent)."""
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    async def read(self) -> bytes:
        """The next data received; b"" once the peer has finished (FIN, reset or lost connection)."""
        while not self._inbound:
            if self.remote_closed or self.reset:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._inbound.popleft()
        await self.session._consumed(self, len(data))
        return data

    async def write(self, data: bytes) -> None:
        """Sends data, waiting on the peer's windows when it does flow control."""
        if self.local_closed or self.reset:
            raise ConnectionResetError(f"SPDY stream {self.id} is closed for writing")
        view = memoryview(data)
        while view:
            size = await self.session._reserve(self, len(view))
            await self.session._send(DataFrame(self.id, bytes(view[:size])))
            view = view[size:]

    async def close(self) -> None:
        """Half-closes our side (FIN); reading continues until the peer finishes too."""
        if self.local_closed or self.reset:
            return
        self.local_closed = True
        with contextlib.suppress(ConnectionError):
            await self.session._send(DataFrame(self.id, b"", fin=True))
        self.session._forget_if_done(self)

    async def reply(self, headers: Headers | None = None) -> None:
        """Accepts a stream the peer opened (SYN_REPLY)."""
        if not self.replied:
            self.replied = True
            await self.session._send(SynReply(self.id, headers or {}))

    async def abort(self, status: int = RstStatus.CANCEL) -> None:
        """Tears the stream down both ways (RST_STREAM)."""
        if self.reset:
            return
        self._mark_reset()
        with contextlib.suppress(ConnectionError):
            await self.session._send(RstStream(self.id, status))

    def _mark_reset(self) -> None:
        self.reset = True
        self.session._discard(self)
        self._readable.set()
        self._window_open.set()

    def _deliver(self, data: bytes, fin: bool) -> None:
        if data and not self.reset:
            self._inbound.append(data)
        if fin:
            self.remote_closed = True
        self._readable.set()


class SpdySession:
    """Both directions of one SPDY connection. `send` writes bytes to the transport; run() reads from it,
    answers pings and windows, and hands out the streams the peer opens through accept()."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], *, server: bool) -> None:
        self._send_bytes = send
        self._server = server
        self._writer = FrameWriter()
        self._reader = FrameReader()
        self._send_lock = asyncio.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._next_stream_id = 2 if server else 1
        self._last_accepted = 0
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_flow_control = False
        self._session_send_window = DEFAULT_WINDOW
        self._session_window_open = asyncio.Event()
        self._session_unacknowledged = 0
        self._buffered = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._replies: dict[int, asyncio.Future[None]] = {}
        self._sent_go_away = False
        self.going_away = False      # no new streams either way (a GOAWAY was sent or received)
        self.closed = False          # the transport has ended

    # --- the read side -----------------------------------------------------------------------------------

    async def run(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        """Reads frames until the transport ends (receive() returns b"" or fails), then ends every stream.
        A peer that breaks the protocol gets a GOAWAY (PROTOCOL_ERROR) and the session ends."""
        try:
            await self._send(Settings({SETTINGS_INITIAL_WINDOW_SIZE: DEFAULT_WINDOW}))
            while True:
                await self._drained.wait()
                data = await receive()
                if not data:
                    break
                for frame in self._reader.feed(data):
                    await self._dispatch(frame)
        except SpdyProtocolError as err:
            log.info("ending SPDY session: %s", err)
            with contextlib.suppress(ConnectionError):
                await self._send(GoAway(self._last_accepted, _GOAWAY_PROTOCOL_ERROR))
        except ConnectionError:
            pass  # the transport broke: same as its end
        finally:
            self._end()

    def _end(self) -> None:
        self.closed = True
        for stream in list(self._streams.values()):
            stream.remote_closed = True
            stream._readable.set()
            stream._window_open.set()
        for waiter in self._replies.values():
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("SPDY connection closed"))
        self._session_window_open.set()
        self._incoming.put_nowait(None)

    async def _dispatch(self, frame: Frame) -> None:
        if isinstance(frame, DataFrame):
            stream = self._streams.get(frame.stream_id)
            if stream is None:
                if frame.stream_id > 0 and not self._closed_id(frame.stream_id):
                    await self._send(RstStream(frame.stream_id, RstStatus.INVALID_STREAM))
                return
            self._buffered += len(frame.data)
            if self._buffered > _MAX_BUFFERED:
                self._drained.clear()
            stream._deliver(frame.data, frame.fin)
            if frame.fin:
                self._forget_if_done(stream)
        elif isinstance(frame, SynStream):
            await self._opened(frame)
        elif isinstance(frame, SynReply):
            stream = self._streams.get(frame.stream_id)
            waiter = self._replies.pop(frame.stream_id, None)
            if stream is not None:
                stream.replied = True
                stream.headers.update(frame.headers)
                if frame.fin:
                    stream._deliver(b"", True)
                    self._forget_if_done(stream)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif isinstance(frame, HeadersFrame):
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream.headers.update(frame.headers)
                if frame.fin:
                    stream._deliver(b"", True)
                    self._forget_if_done(stream)
        elif isinstance(frame, RstStream):
            stream = self._streams.get(frame.stream_id)
            waiter = self._replies.pop(frame.stream_id, None)
            if stream is not None:
                stream._mark_reset()
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionResetError(f"SPDY stream {frame.stream_id} was reset by the peer "
                                                          f"(status {frame.status})"))
        elif isinstance(frame, Settings):
            self._settings(frame)
        elif isinstance(frame, WindowUpdate):
            self._window_update(frame)
        elif isinstance(frame, Ping):
            if frame.ping_id % 2 != (0 if self._server else 1):  # the peer's ping: echo it
                await self._send(frame)
        elif isinstance(frame, GoAway):
            self.going_away = True

    async def _opened(self, frame: SynStream) -> None:
        peer_parity = 1 if self._server else 0
        if frame.stream_id % 2 != peer_parity or frame.stream_id <= self._last_accepted:
            await self._send(RstStream(frame.stream_id, RstStatus.PROTOCOL_ERROR))
            return
        if self.going_away:
            await self._send(RstStream(frame.stream_id, RstStatus.REFUSED_STREAM))
            return
        self._last_accepted = frame.stream_id
        stream = SpdyStream(self, frame.stream_id, dict(frame.headers), self._peer_initial_window)
        stream._window_open.set()
        stream.remote_closed = frame.fin
        stream.local_closed = frame.unidirectional
        self._streams[stream.id] = stream
        await self._incoming.put(stream)

    def _closed_id(self, stream_id: int) -> bool:
        """A stream id that was in use and has finished (late frames for it are ignored)."""
        ours = stream_id % 2 == (0 if self._server else 1)
        return stream_id < self._next_stream_id if ours else stream_id <= self._last_accepted

    def _settings(self, frame: Settings) -> None:
        window = frame.values.get(SETTINGS_INITIAL_WINDOW_SIZE)
        if window is None:
            return
        self._peer_flow_control = True
        delta = min(window, MAX_WINDOW) - self._peer_initial_window
        self._peer_initial_window = min(window, MAX_WINDOW)
        for stream in self._streams.values():  # a new initial window shifts every open stream's window
            stream.send_window += delta
            if stream.send_window > 0:
                stream._window_open.set()

    def _window_update(self, frame: WindowUpdate) -> None:
        self._peer_flow_control = True
        if frame.stream_id == 0:
            self._session_send_window = min(self._session_send_window + frame.delta, MAX_WINDOW)
            self._session_window_open.set()
            return
        stream = self._streams.get(frame.stream_id)
        if stream is not None:
            stream.send_window = min(stream.send_window + frame.delta, MAX_WINDOW)
            stream._window_open.set()

    async def _consumed(self, stream: SpdyStream, size: int) -> None:
        """The application read `size` bytes: release the buffer and hand the window back to the peer."""
        self._release(size)
        self._session_unacknowledged += size
        stream._unacknowledged += size
        updates = []
        if stream._unacknowledged >= DEFAULT_WINDOW // 2 and not stream.remote_closed and not stream.reset:
            updates.append(WindowUpdate(stream.id, stream._unacknowledged))
            stream._unacknowledged = 0
        if self._session_unacknowledged >= DEFAULT_WINDOW // 2:
            updates.append(WindowUpdate(0, self._session_unacknowledged))
            self._session_unacknowledged = 0
        for update in updates:
            with contextlib.suppress(ConnectionError):
                await self._send(update)

    # --- the write side ----------------------------------------------------------------------------------

    async def _send(self, frame: Frame) -> None:
        # Encoding and sending under one lock: the header compressor's state follows the wire order.
        async with self._send_lock:
            await self._send_bytes(self._writer.encode(frame))

    async def _reserve(self, stream: SpdyStream, wanted: int) -> int:
        """How much of `wanted` may go out now, waiting for window if the peer does flow control."""
        while self._peer_flow_control and (stream.send_window <= 0 or self._session_send_window <= 0):
            if stream.reset or self.closed:
                break
            event = stream._window_open if stream.send_window <= 0 else self._session_window_open
            event.clear()
            await event.wait()
        if stream.reset or self.closed:
            raise ConnectionResetError(f"SPDY stream {stream.id} was reset")
        size = min(wanted, _MAX_DATA_CHUNK)
        if self._peer_flow_control:
            size = min(size, stream.send_window, self._session_send_window)
        stream.send_window -= size
        self._session_send_window -= size
        return size

    # --- streams -----------------------------------------------------------------------------------------

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened (reply() or abort() it); None once the connection has ended."""
        if self.closed and self._incoming.empty():
            return None
        return await self._incoming.get()

    async def open_stream(self, headers: Headers, *, fin: bool = False) -> SpdyStream:
        """Opens a stream (the client's side of a SPDY exchange) and waits for the peer's SYN_REPLY."""
        if self.closed or self.going_away:
            raise ConnectionResetError("SPDY connection is closing")
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        stream = SpdyStream(self, stream_id, dict(headers), self._peer_initial_window)
        stream._window_open.set()
        stream.local_closed = fin
        self._streams[stream_id] = stream
        waiter = asyncio.get_running_loop().create_future()
        self._replies[stream_id] = waiter
        await self._send(SynStream(stream_id, headers, fin=fin))
        await waiter
        return stream

    def _forget_if_done(self, stream: SpdyStream) -> None:
        """Stops routing frames to a stream closed both ways (its unread data stays readable)."""
        if stream.local_closed and stream.remote_closed and self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    def _discard(self, stream: SpdyStream) -> None:
        """A reset stream: drop it and the data nobody will read."""
        self._streams.pop(stream.id, None)
        self._release(sum(map(len, stream._inbound)))
        stream._inbound.clear()

    def _release(self, size: int) -> None:
        self._buffered -= size
        if self._buffered <= _MAX_BUFFERED // 2:
            self._drained.set()

    async def go_away(self) -> None:
        """Tells the peer no new streams will be accepted (GOAWAY, status OK)."""
        if self._sent_go_away:
            return
        self._sent_go_away = True
        self.going_away = True
        with contextlib.suppress(ConnectionError):
            await self._send(GoAway(self._last_accepted))
