"""SPDY/3.1 framing and sessions (kubelet/streaming/spdy.py): frame round trips, header compression that
spans frames, and sessions talking to each other and to a peer that ignores flow control like kubectl's."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import zlib

import pytest

from pocketkube.kubelet.streaming.spdy import (
    DEFAULT_WINDOW,
    HEADER_DICTIONARY,
    SETTINGS_INITIAL_WINDOW_SIZE,
    DataFrame,
    FrameReader,
    FrameWriter,
    GoAway,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    Settings,
    SpdyProtocolError,
    SpdySession,
    SynReply,
    SynStream,
    WindowUpdate,
)


def test_header_dictionary_is_the_spdy3_one() -> None:
    # The 1423-byte dictionary of the SPDY/3 draft (and of Go's spdy package that kubectl uses).
    assert len(HEADER_DICTIONARY) == 1423
    assert hashlib.sha256(HEADER_DICTIONARY).hexdigest() == \
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def test_every_frame_round_trips_even_fed_byte_by_byte() -> None:
    frames = [
        SynStream(1, {"streamtype": ["error"], "port": ["8080"], "requestid": ["0"]}, priority=3),
        SynReply(1, {}),
        DataFrame(1, b"hello", fin=False),
        DataFrame(3, b"", fin=True),
        SynStream(3, {"x": ["a", "b"]}, associated_to=1, fin=True, unidirectional=True),
        HeadersFrame(3, {"trailer": ["yes"]}, fin=True),
        RstStream(5, RstStatus.CANCEL),
        Settings({SETTINGS_INITIAL_WINDOW_SIZE: 65536, 4: 100}),
        Ping(7),
        GoAway(5, 0),
        WindowUpdate(0, 12345),
        WindowUpdate(1, 1),
    ]
    writer = FrameWriter()
    wire = b"".join(writer.encode(frame) for frame in frames)
    reader = FrameReader()
    decoded = []
    for byte in wire:
        decoded += reader.feed(bytes([byte]))
    assert decoded == frames


def test_wire_format_of_simple_frames() -> None:
    writer = FrameWriter()
    assert writer.encode(DataFrame(1, b"ab", fin=True)) == b"\x00\x00\x00\x01\x01\x00\x00\x02ab"
    # control bit + version 3, type 6 (PING), no flags, length 4, id
    assert writer.encode(Ping(1)) == b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"
    assert writer.encode(WindowUpdate(3, 1000)) == b"\x80\x03\x00\x09\x00\x00\x00\x08" + struct.pack(">II", 3, 1000)


def test_header_compression_is_one_context_per_direction() -> None:
    headers = {"streamtype": ["data"], "port": ["8080"], "requestid": ["0"]}
    writer = FrameWriter()
    first = writer.encode(SynStream(1, headers))
    second = writer.encode(SynStream(3, headers))
    assert len(second) < len(first)  # the second block refers back to the first
    reader = FrameReader()
    assert reader.feed(first + second) == [SynStream(1, headers), SynStream(3, headers)]
    # A reader that missed the first frame cannot make sense of the second.
    with pytest.raises(SpdyProtocolError):
        FrameReader().feed(second)
    # The blocks are standard zlib streams primed with the dictionary, sync-flushed per frame.
    plain = zlib.decompressobj(zdict=HEADER_DICTIONARY).decompress(first[18:])
    assert plain == struct.pack(">I", 3) + b"".join(
        struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v[0])) + v[0].encode()
        for k, v in headers.items())


def test_header_names_are_lowercased_and_values_split_on_nul() -> None:
    block = struct.pack(">I", 1) + struct.pack(">I", 4) + b"Port" + struct.pack(">I", 4) + b"1\x0022"
    compressor = zlib.compressobj(level=9, zdict=HEADER_DICTIONARY)
    payload = struct.pack(">IIBB", 1, 0, 0, 0) + compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = struct.pack(">HHI", 0x8003, 1, len(payload)) + payload
    assert FrameReader().feed(frame) == [SynStream(1, {"port": ["1", "22"]})]


def test_unknown_control_frames_are_skipped_and_bad_versions_refused() -> None:
    unknown = struct.pack(">HHI", 0x8003, 10, 2) + b"xx"  # type 10: CREDENTIAL, which we do not use
    assert FrameReader().feed(unknown + FrameWriter().encode(Ping(2))) == [Ping(2)]
    with pytest.raises(SpdyProtocolError):
        FrameReader().feed(struct.pack(">HHI", 0x8002, 6, 4) + b"\x00\x00\x00\x01")


# --- sessions -----------------------------------------------------------------------------------------------


class Pipe:
    """One direction of an in-memory connection, with a tap that decodes what crosses it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.tap = FrameReader()
        self.frames: list = []
        self.closed = False

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("pipe closed")
        self.frames += self.tap.feed(data)
        self.queue.put_nowait(data)

    async def receive(self) -> bytes:
        return await self.queue.get()

    def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(b"")


async def _pair() -> tuple[SpdySession, SpdySession, Pipe, Pipe, list[asyncio.Task]]:
    to_server, to_client = Pipe(), Pipe()
    client = SpdySession(to_server.send, server=False)
    server = SpdySession(to_client.send, server=True)
    tasks = [asyncio.ensure_future(client.run(to_client.receive)), asyncio.ensure_future(server.run(to_server.receive))]
    return client, server, to_server, to_client, tasks


async def _read_all(stream) -> bytes:
    chunks = []
    while data := await stream.read():
        chunks.append(data)
    return b"".join(chunks)


async def test_streams_carry_data_both_ways_with_half_close() -> None:
    client, server, to_server, to_client, tasks = await _pair()

    async def serve() -> None:
        stream = await server.accept()
        assert stream.header("streamType") == "data" and stream.header("port") == "80"
        await stream.reply()
        received = await _read_all(stream)
        await stream.write(received.upper())
        await stream.close()

    serving = asyncio.ensure_future(serve())
    stream = await client.open_stream({"streamtype": ["data"], "port": ["80"]})
    assert stream.id == 1
    await stream.write(b"hello ")
    await stream.write(b"world")
    await stream.close()
    assert await _read_all(stream) == b"HELLO WORLD"
    await serving
    to_server.close()
    to_client.close()
    await asyncio.gather(*tasks)
    assert any(isinstance(f, SynReply) and f.stream_id == 1 for f in to_client.frames)


async def test_large_transfers_follow_the_windows_between_flow_controlled_peers() -> None:
    client, server, to_server, to_client, tasks = await _pair()
    payload = os.urandom(1024 * 1024 + 17)

    async def serve() -> None:
        stream = await server.accept()
        await stream.reply()
        await stream.write(payload)
        await stream.close()
        assert await _read_all(stream) == payload

    serving = asyncio.ensure_future(serve())
    stream = await client.open_stream({"streamtype": ["data"]})
    sender = asyncio.ensure_future(stream.write(payload))
    assert await asyncio.wait_for(_read_all(stream), 10) == payload
    await sender
    await stream.close()
    await asyncio.wait_for(serving, 10)
    for pipe in (to_server, to_client):
        data_frames = [f for f in pipe.frames if isinstance(f, DataFrame)]
        assert max(len(f.data) for f in data_frames) <= DEFAULT_WINDOW
        # the receiver handed window back to the sender, per stream and for the session
        other = to_client if pipe is to_server else to_server
        updates = [f for f in other.frames if isinstance(f, WindowUpdate)]
        assert {u.stream_id for u in updates} == {0, 1}
        assert sum(u.delta for u in updates if u.stream_id == 1) >= len(payload) - DEFAULT_WINDOW
    to_server.close()
    to_client.close()
    await asyncio.gather(*tasks)


async def test_sending_never_waits_for_a_peer_that_ignores_flow_control() -> None:
    """kubectl's spdystream neither grants window nor announces settings: 1 MiB must still go out."""
    to_server, to_client = Pipe(), Pipe()
    server = SpdySession(to_client.send, server=True)
    running = asyncio.ensure_future(server.run(to_server.receive))
    peer = FrameWriter()
    await to_server.send(peer.encode(SynStream(1, {"streamtype": ["stdout"]})))
    stream = await server.accept()
    await stream.reply()
    payload = os.urandom(1024 * 1024)
    await asyncio.wait_for(stream.write(payload), 5)
    await stream.close()
    received = b"".join(f.data for f in to_client.frames if isinstance(f, DataFrame) and f.stream_id == 1)
    assert received == payload
    to_server.close()
    await running


async def test_pings_are_echoed_and_resets_end_streams() -> None:
    to_server, to_client = Pipe(), Pipe()
    server = SpdySession(to_client.send, server=True)
    running = asyncio.ensure_future(server.run(to_server.receive))
    peer = FrameWriter()
    await to_server.send(peer.encode(Ping(1)) + peer.encode(SynStream(1, {"streamtype": ["stdin"]})))
    stream = await server.accept()
    await stream.reply()
    await to_server.send(peer.encode(DataFrame(1, b"partial")) + peer.encode(RstStream(1, RstStatus.CANCEL)))
    assert await stream.read() == b""  # a reset stream's unread data is dropped
    with pytest.raises(ConnectionResetError):
        await stream.write(b"late")
    # data for a stream that never existed is answered with RST_STREAM INVALID_STREAM
    await to_server.send(peer.encode(DataFrame(9, b"?")))
    await server.go_away()
    await to_server.send(peer.encode(SynStream(11, {})))
    to_server.close()
    await running
    frames = to_client.frames
    assert Ping(1) in frames
    assert RstStream(9, RstStatus.INVALID_STREAM) in frames
    assert RstStream(11, RstStatus.REFUSED_STREAM) in frames
    assert GoAway(1, 0) in frames
    assert await server.accept() is None


async def test_streams_end_when_the_connection_does() -> None:
    client, server, to_server, to_client, tasks = await _pair()
    opening = asyncio.ensure_future(client.open_stream({"streamtype": ["error"]}))
    stream = await server.accept()
    await stream.reply()
    theirs = await opening
    to_server.close()
    to_client.close()
    await asyncio.gather(*tasks)
    assert await stream.read() == b"" and await theirs.read() == b""
    with pytest.raises(ConnectionResetError):
        await client.open_stream({})


async def test_a_protocol_error_ends_the_session_with_goaway() -> None:
    to_server, to_client = Pipe(), Pipe()
    server = SpdySession(to_client.send, server=True)
    running = asyncio.ensure_future(server.run(to_server.receive))
    to_server.queue.put_nowait(struct.pack(">HHI", 0x8002, 6, 4) + b"\x00\x00\x00\x01")  # a SPDY/2 PING
    await asyncio.wait_for(running, 5)
    assert GoAway(0, 1) in to_client.frames
    assert await server.accept() is None
