"""channel.k8s.io WebSocket subprotocols (kubelet/streaming/wsstream.py) and what exec sessions report on
the error channel (kubelet/streaming/remotecommand.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from pocketkube.kubelet.streaming import wsstream
from pocketkube.kubelet.streaming.remotecommand import (
    ResizeDecoder,
    StreamOptions,
    StreamRequestError,
    TerminalSize,
    exit_code_status,
    internal_error_status,
    status_payload,
    success_status,
)
from pocketkube.kubelet.streaming.wsstream import ChannelClosed, ChannelData, ChannelProtocol

V5 = ChannelProtocol.named(wsstream.CHANNEL_V5)
V4 = ChannelProtocol.named(wsstream.CHANNEL_V4)
V4_BASE64 = ChannelProtocol.named(wsstream.BASE64_V4)
V1 = ChannelProtocol.named(wsstream.CHANNEL_V1)


def test_binary_channels_prefix_one_byte() -> None:
    assert wsstream.encode(V4, wsstream.STDOUT, b"hi\n") == b"\x01hi\n"
    assert wsstream.decode(V4, b"\x00foo\n") == ChannelData(wsstream.STDIN, b"foo\n")
    assert wsstream.decode(V4, b"") is None


def test_base64_channels_are_text() -> None:
    # upstream's own example: "foo\n" on stdin is "0Zm9vCg=="
    assert wsstream.encode(V4_BASE64, wsstream.STDIN, b"foo\n") == "0Zm9vCg=="
    assert wsstream.decode(V4_BASE64, "1Cg==") == ChannelData(wsstream.STDOUT, b"\n")
    with pytest.raises(ValueError):
        wsstream.decode(V4_BASE64, "1***")


def test_close_signal_only_in_v5() -> None:
    assert wsstream.decode(V5, bytes([255, 0])) == ChannelClosed(wsstream.STDIN)
    with pytest.raises(ValueError):
        wsstream.decode(V5, bytes([255, 0, 1]))
    # before v5, 255 is just a (nonexistent) channel number
    assert wsstream.decode(V4, bytes([255, 0])) == ChannelData(255, b"\x00")


def test_protocol_versions() -> None:
    assert V5.supports_close and V5.status_as_json
    assert V4.status_as_json and not V4.supports_close
    assert not V1.status_as_json and V1.version == 1
    assert ChannelProtocol.named(wsstream.NO_PROTOCOL) == ChannelProtocol("", 1, False)
    with pytest.raises(wsstream.ProtocolNotSupported):
        ChannelProtocol.named("v6.channel.k8s.io")


def test_negotiation_follows_the_clients_order() -> None:
    supported = wsstream.REMOTECOMMAND_PROTOCOLS
    assert wsstream.negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"], supported) == "v5.channel.k8s.io"
    assert wsstream.negotiate(["v4.channel.k8s.io", "v5.channel.k8s.io"], supported) == "v4.channel.k8s.io"
    assert wsstream.negotiate([], supported) == ""
    # port-forward over channels knows no v5: the Python client's "v5, v4" gets v4
    assert wsstream.negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"],
                              wsstream.PORTFORWARD_PROTOCOLS) == "v4.channel.k8s.io"
    with pytest.raises(wsstream.ProtocolNotSupported, match="not supported"):
        wsstream.negotiate(["chat"], supported)


def test_v4_status_carries_the_exit_code_as_clients_read_it() -> None:
    payload = status_payload(4, exit_code_status(["sh", "-c", "exit 3"], 3))
    status = json.loads(payload)
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert status["message"].startswith("command terminated with non-zero exit code")
    # the Python client's reading of it (kubernetes.stream.ws_client.WSClient.returncode)
    parsed = yaml.safe_load(payload.decode())
    assert int(parsed["details"]["causes"][0]["message"]) == 3
    assert json.loads(status_payload(5, success_status())) == {"metadata": {}, "status": "Success"}


def test_before_v4_only_failures_are_reported_as_text() -> None:
    assert status_payload(3, success_status()) == b""
    failure = internal_error_status("boom")
    assert status_payload(2, failure) == b"Internal error occurred: boom"
    assert json.loads(status_payload(4, failure))["code"] == 500


def test_resize_messages_may_arrive_split_or_joined() -> None:
    decoder = ResizeDecoder()
    assert decoder.feed(b'{"Width":80,') == []
    assert decoder.feed(b'"Height":24}\n{"Width":100,"Height":30}\n') == [TerminalSize(80, 24),
                                                                          TerminalSize(100, 30)]
    assert decoder.feed(b"   ") == []


def test_stream_options() -> None:
    options = StreamOptions.from_query({"stdin": "1", "stdout": "true", "stderr": "1", "tty": "1"})
    assert options == StreamOptions(stdin=True, stdout=True, stderr=False, tty=True)  # a tty has no stderr
    with pytest.raises(StreamRequestError, match="at least 1 of stdin, stdout, stderr"):
        StreamOptions.from_query({"tty": "1"})
