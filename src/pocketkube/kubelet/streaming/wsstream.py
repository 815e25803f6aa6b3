"""The channel.k8s.io WebSocket subprotocols: several byte streams multiplexed over one WebSocket.

Every message starts with the number of the channel it belongs to. Binary protocols carry that as one byte
followed by the raw data; the base64 protocols send text messages whose first character is '0' + channel,
followed by the data in standard base64. For remote commands the channels are 0 stdin, 1 stdout, 2 stderr,
3 error (v4+: a metav1.Status as JSON) and 4 terminal resize (JSON {"Width", "Height"}). v5 adds a way to
half-close a channel: the message [255, channel] (a client ending stdin). Port-forward over WebSocket gives
port i a data channel 2i and an error channel 2i+1.

`SPDY/3.1+portforward.k8s.io` is different: a tunnel whose binary messages carry a SPDY byte stream."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from aiohttp import WSMsgType, web

CHANNEL_V1 = "channel.k8s.io"
CHANNEL_V2 = "v2.channel.k8s.io"
CHANNEL_V3 = "v3.channel.k8s.io"
CHANNEL_V4 = "v4.channel.k8s.io"
CHANNEL_V5 = "v5.channel.k8s.io"
BASE64_V1 = "base64.channel.k8s.io"
BASE64_V4 = "v4.base64.channel.k8s.io"
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
SPDY_TUNNEL_PORTFORWARD = SPDY_TUNNEL_PREFIX + "portforward.k8s.io"
NO_PROTOCOL = ""   # a client that asks for none gets the binary channel protocol

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255

# In order of our preference; the client's order decides (the first it offers that we support).
REMOTECOMMAND_PROTOCOLS = (CHANNEL_V5, CHANNEL_V4, BASE64_V4, CHANNEL_V3, CHANNEL_V2, CHANNEL_V1, BASE64_V1,
                           NO_PROTOCOL)
PORTFORWARD_PROTOCOLS = (CHANNEL_V4, BASE64_V4, NO_PROTOCOL)


class ProtocolNotSupported(ValueError):
    """None of the subprotocols the client offered is served here."""


@dataclass(frozen=True)
class ChannelProtocol:
    name: str
    version: int        # 1 for the unversioned channel.k8s.io
    base64: bool

    @property
    def status_as_json(self) -> bool:
        """v4+: the error channel carries a metav1.Status (with the exit code), not a bare message."""
        return self.version >= 4

    @property
    def supports_close(self) -> bool:
        return self.version >= 5

    @classmethod
    def named(cls, name: str) -> ChannelProtocol:
        versions = {CHANNEL_V1: 1, CHANNEL_V2: 2, CHANNEL_V3: 3, CHANNEL_V4: 4, CHANNEL_V5: 5, BASE64_V1: 1,
                    BASE64_V4: 4, NO_PROTOCOL: 1}
        if name not in versions:
            raise ProtocolNotSupported(f"unknown channel protocol {name!r}")
        return cls(name, versions[name], "base64" in name)


def offered_protocols(request: web.BaseRequest) -> list[str]:
    header = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
    return [p.strip() for p in header.split(",") if p.strip()]


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str:
    """The first protocol the client offered that we support ("" when it offered none and "" is allowed);
    ProtocolNotSupported otherwise (upstream answers that with 403)."""
    for protocol in offered or [NO_PROTOCOL]:
        if protocol in supported:
            return protocol
    raise ProtocolNotSupported(f"requested protocol(s) are not supported: {offered}; supports "
                               f"{[p for p in supported if p]}")


def is_websocket_request(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket" and \
        "upgrade" in request.headers.get("Connection", "").lower()


# --- messages -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True)
class ChannelClosed:
    """v5: the peer will send nothing more on this channel."""

    channel: int


def encode(protocol: ChannelProtocol, channel: int, data: bytes) -> bytes | str:
    if protocol.base64:
        return chr(ord("0") + channel) + base64.b64encode(data).decode()
    return bytes((channel,)) + data


def decode(protocol: ChannelProtocol, message: bytes | str) -> ChannelData | ChannelClosed | None:
    """One received message; None for an empty one (nothing to deliver). ValueError if malformed."""
    if not message:
        return None
    if isinstance(message, str):
        message = message.encode()
    if protocol.supports_close and message[0] == CLOSE_SIGNAL:
        if len(message) != 2:
            raise ValueError("a stream close signal must name exactly one channel")
        return ChannelClosed(message[1])
    if protocol.base64:
        try:
            return ChannelData(message[0] - ord("0"), base64.b64decode(message[1:], validate=True))
        except binascii.Error as err:
            raise ValueError(f"invalid base64 channel data: {err}") from None
    return ChannelData(message[0], message[1:])


class ChannelConnection:
    """A prepared aiohttp WebSocket speaking one channel protocol."""

    def __init__(self, ws: web.WebSocketResponse, protocol: ChannelProtocol) -> None:
        self.ws = ws
        self.protocol = protocol

    async def send(self, channel: int, data: bytes) -> None:
        message = encode(self.protocol, channel, data)
        if isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_bytes(message)

    async def receive(self) -> ChannelData | ChannelClosed | None:
        """The next channel message; None once the WebSocket has closed. Malformed messages are skipped,
        as upstream logs and ignores them."""
        while True:
            message = await self.ws.receive()
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return None
            if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            try:
                decoded = decode(self.protocol, message.data)
            except ValueError:
                continue
            if decoded is not None:
                return decoded

    async def close(self) -> None:
        await self.ws.close()


async def accept_websocket(request: web.Request,
                           supported: tuple[str, ...]) -> tuple[web.WebSocketResponse, str]:
    """Completes the WebSocket handshake with the negotiated subprotocol (ProtocolNotSupported if none fits)."""
    chosen = negotiate(offered_protocols(request), supported)
    ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (), max_msg_size=0, timeout=5.0)
    await ws.prepare(request)
    return ws, chosen
