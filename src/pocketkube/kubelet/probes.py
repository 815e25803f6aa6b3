"""Container probes as the kubelet runs them: the four handlers (exec, httpGet, tcpSocket, grpc), one attempt
each with upstream's result messages, and the prober worker that applies a probe's timing and thresholds.

Network probes connect from inside the pod's network namespace when the target names one (the socket is
created by a short-lived thread that has joined the namespace, as `nsenter` would, and then used from the
event loop), so they work when the pod IP is not routable from the host; otherwise they connect from here.

gRPC probes speak grpc.health.v1.Health/Check over HTTP/2 through the `h2` state machine (pure Python, small):
grpcio's channels open their sockets on their own threads, where no network namespace can be chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import http
import inspect
import ipaddress
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from pocketkube.kubelet.backoff import format_duration

if TYPE_CHECKING:
    from pocketkube.engine.engine import Engine
    from pocketkube.engine.streams import ExecStream

KUBE_VERSION = "1.37"
MAX_OUTPUT = 10 * 1024  # upstream keeps at most 10 KiB of a command's output or a response body
MAX_REDIRECTS = 10
MAX_ATTEMPTS = 3  # a probe that errors (rather than fails) is tried again at once, up to this many times

SUCCESS, WARNING, FAILURE, UNKNOWN = "success", "warning", "failure", "unknown"
KINDS = ("startup", "liveness", "readiness")

ExecFunc = Callable[[list[str], float], Awaitable[tuple[int, bytes]]]


@dataclass(frozen=True)
class ProbeResult:
    """One attempt's outcome, as upstream's probe.Result: success, warning (a success worth an event),
    failure, or unknown (the probe could not be run; its result is thrown away), and the output."""

    status: str
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (SUCCESS, WARNING)


@dataclass
class ProbeTarget:
    """What a handler needs to reach one container.

    exec(command, timeout) runs a command in the container and returns (exit code, combined output); it
    raises TimeoutError when the command outlives the timeout (and kills it), anything else when the command
    could not be run. container and pod ("name_namespace(uid)") only name the target in hook messages."""

    pod_ip: str
    netns: str | None
    exec: ExecFunc
    container: str = ""
    pod: str = ""


class TransportError(Exception):
    """A connection or HTTP exchange that failed; the message reads as Go's net/http error would."""


class TransportTimeout(TransportError):
    """An HTTP exchange that did not finish within its time."""


# --- Go-style text ------------------------------------------------------------------------------------

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\a": "\\a", "\b": "\\b",
               "\f": "\\f", "\v": "\\v"}


def go_quote(text: str) -> str:
    """A string as Go's %q prints it (upstream messages quote commands, addresses and outputs so)."""
    parts = []
    for char in text:
        if char in _GO_ESCAPES:
            parts.append(_GO_ESCAPES[char])
        elif char.isprintable():
            parts.append(char)
        elif ord(char) < 0x100:
            parts.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            parts.append(f"\\u{ord(char):04x}")
        else:
            parts.append(f"\\U{ord(char):08x}")
    return '"' + "".join(parts) + '"'


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_port(port: Any, container_ports: list[dict]) -> int:
    """A probe's port: a number, or the name of one of the container's ports (or a number in a string)."""
    if isinstance(port, int) and not isinstance(port, bool):
        number = port
    elif isinstance(port, str):
        named = [p.get("containerPort") for p in container_ports if p.get("name") == port]
        if named and isinstance(named[0], int):
            number = named[0]
        elif port.lstrip("+-").isdigit():
            number = int(port)
        else:
            raise ValueError(f"strconv.Atoi: parsing {go_quote(port)}: invalid syntax")
    else:
        raise ValueError(f"intOrString had no kind: {port!r}")
    if 0 < number < 65536:
        return number
    raise ValueError(f"invalid port number: {number}")


# --- connecting, from the pod's network namespace when asked -------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _socket_in(netns: str, family: int) -> socket.socket:
    """Runs on a thread of its own: joins the namespace (for this thread only) and makes the socket there;
    a socket keeps the namespace it was made in. The thread ends right after, so nothing else runs in it."""
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns {netns}: {os.strerror(code)}")
    finally:
        os.close(fd)
    return socket.socket(family, socket.SOCK_STREAM)


async def _new_socket(netns: str | None, family: int) -> socket.socket:
    if netns is None:
        return socket.socket(family, socket.SOCK_STREAM)
    loop = asyncio.get_running_loop()
    made: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(sock: socket.socket | None, error: BaseException | None) -> None:
        if made.cancelled():
            if sock is not None:
                sock.close()
        elif error is not None:
            made.set_exception(error)
        else:
            made.set_result(sock)

    def create() -> None:
        try:
            sock = _socket_in(netns, family)
        except OSError as err:
            loop.call_soon_threadsafe(deliver, None, err)
        else:
            loop.call_soon_threadsafe(deliver, sock, None)

    threading.Thread(target=create, name="probe-netns-socket", daemon=True).start()
    return await made


def _errno_text(err: OSError) -> str:
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]  # Go spells errno texts in lower case


async def dial(host: str, port: int, netns: str | None) -> socket.socket:
    """A connected TCP socket to host:port (from inside netns when given); TransportError as Go's dialer."""
    address = join_host_port(host, port)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise TransportError(f"dial tcp: lookup {host}: no such host") from None
        family, sockaddr = infos[0][0], infos[0][4]
    else:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sockaddr = (host, port, 0, 0) if ip.version == 6 else (host, port)
    try:
        sock = await _new_socket(netns, family)
    except OSError as err:
        raise TransportError(f"dial tcp {address}: cannot open a socket in network namespace {netns}: "
                             f"{_errno_text(err)}") from None
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, sockaddr)
    except OSError as err:
        sock.close()
        raise TransportError(f"dial tcp {address}: connect: {_errno_text(err)}") from None
    except BaseException:
        sock.close()
        raise
    return sock


# --- exec ------------------------------------------------------------------------------------------------

async def exec_probe(command: list[str], target: ProbeTarget, timeout: float) -> ProbeResult:
    try:
        async with asyncio.timeout(timeout):
            code, output = await target.exec(list(command), timeout)
    except TimeoutError:
        return ProbeResult(FAILURE, f"command {go_quote(' '.join(command))} timed out")
    except Exception as err:  # the command could not be run at all: the probe errors, it does not fail
        return ProbeResult(UNKNOWN, str(err) or type(err).__name__)
    text = output[:MAX_OUTPUT].decode(errors="replace")
    return ProbeResult(SUCCESS if code == 0 else FAILURE, text)


# --- HTTP GET (probes and lifecycle hooks) ---------------------------------------------------------------

def _canonical_header(name: str) -> str:
    """Go's canonical MIME header key: "x-custom-header" -> "X-Custom-Header"."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


@dataclass
class HTTPGet:
    scheme: str  # "http" or "https"
    host: str
    port: int
    path: str  # as written in the action; may carry a query
    host_header: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        path = self.path if not self.path or self.path.startswith("/") else "/" + self.path
        return f"{self.scheme}://{join_host_port(self.host, self.port)}{path}"

    @property
    def request_target(self) -> str:
        return self.path if self.path.startswith("/") else "/" + self.path


def http_get_request(action: dict, default_host: str, container_ports: list[dict], purpose: str) -> HTTPGet:
    """The request an httpGet action describes (purpose "probe" or "lifecycle" names the User-Agent);
    ValueError when its port cannot be resolved."""
    scheme = (action.get("scheme") or "HTTP").lower()
    host = action.get("host") or default_host
    port = resolve_port(action.get("port"), container_ports)
    headers: list[tuple[str, str]] = []
    host_header = join_host_port(host, port)
    for header in action.get("httpHeaders") or []:
        name = _canonical_header(header.get("name", ""))
        if name == "Host":
            host_header = header.get("value", "")
        else:
            headers.append((name, header.get("value", "")))
    names = {name for name, _ in headers}
    if "User-Agent" not in names:
        headers.append(("User-Agent", f"kube-{purpose}/{KUBE_VERSION}"))
    if "Accept" not in names:
        headers.append(("Accept", "*/*"))
    # An Accept header given empty means "send none", as upstream.
    headers = [(n, v) for n, v in headers if not (n in ("Accept", "User-Agent") and v == "")]
    return HTTPGet(scheme, host, port, action.get("path") or "", host_header, headers)


def _insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # probes never verify the container's certificate
    return context


def _tls_error_text(err: ssl.SSLError) -> str:
    if err.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"):
        return "http: server gave HTTP response to HTTPS client"
    return f"tls: {(err.reason or str(err)).lower().replace('_', ' ')}"


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], status: int) -> bytes:
    if status in (204, 304):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while len(body) < MAX_OUTPUT:
            size_field = (await reader.readline()).split(b";")[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise TransportError("net/http: malformed chunked encoding") from None
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return bytes(body[:MAX_OUTPUT])
    length = headers.get("content-length", "")
    wanted = min(int(length), MAX_OUTPUT) if length.isdigit() else MAX_OUTPUT
    body = bytearray()
    while len(body) < wanted and (chunk := await reader.read(wanted - len(body))):
        body += chunk
    return bytes(body)


def _read_error(request: HTTPGet, err: OSError) -> TransportError:
    if isinstance(err, ssl.SSLError):
        return TransportError(_tls_error_text(err))
    return TransportError(f"read tcp {join_host_port(request.host, request.port)}: read: {_errno_text(err)}")


async def _round_trip(request: HTTPGet, netns: str | None) -> tuple[int, dict[str, str], bytes]:
    sock = await dial(request.host, request.port, netns)
    https = request.scheme == "https"
    try:
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=_insecure_tls() if https else None, server_hostname=request.host if https else None,
            limit=1 << 20)
    except OSError as err:
        sock.close()
        raise _read_error(request, err) from None
    except BaseException:
        sock.close()
        raise
    try:
        lines = [f"GET {request.request_target} HTTP/1.1", f"Host: {request.host_header}"]
        lines += [f"{name}: {value}" for name, value in request.headers]
        lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace"))
        await writer.drain()
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *header_lines = head[:-4].split("\r\n")
            version, _, rest = status_line.partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit():
                raise TransportError(f"net/http: HTTP/1.x transport connection broken: malformed HTTP response "
                                     f"{go_quote(status_line)}")
            status = int(code)
            if not (100 <= status < 200) or status == 101:
                break  # interim responses (100 Continue, 103 Early Hints) precede the real one
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, await _read_body(reader, headers, status)
    except asyncio.IncompleteReadError as err:
        raise TransportError("unexpected EOF" if err.partial else "EOF") from None
    except asyncio.LimitOverrunError:
        raise TransportError("net/http: server response headers exceeded 1048576 bytes; aborted") from None
    except OSError as err:
        raise _read_error(request, err) from None
    finally:
        # No keep-alive: the connection ends with the exchange (abort skips waiting on a TLS close_notify).
        writer.transport.abort()


async def http_get(request: HTTPGet, netns: str | None, timeout: float) -> tuple[int, bytes]:
    """GETs the URL as the kubelet's probe client does: redirects followed only to the same host name (a
    redirect elsewhere ends with the redirect response itself), at most 10 of them, no keep-alive, at most
    10 KiB of body. Raises TransportError with Go's error text (`Get "url": ...`)."""
    current = request
    original_host = request.host.lower()
    redirects = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    status, headers, body = await _round_trip(current, netns)
                except TransportError as err:
                    raise TransportError(f"Get {go_quote(current.url)}: {err}") from None
                location = headers.get("location")
                if status not in (301, 302, 303, 307, 308) or not location:
                    return status, body
                try:
                    target = urlsplit(urljoin(current.url, location))
                    if (target.hostname or "").lower() != original_host:
                        return status, body
                    following = _redirected(current, target, relative=not urlsplit(location).netloc)
                except ValueError:
                    raise TransportError(f"{status} response to GET {go_quote(current.url)} has a bad Location "
                                         f"header {go_quote(location)}") from None
                if redirects == MAX_REDIRECTS:
                    raise TransportError(f"Get {go_quote(following.url)}: stopped after {MAX_REDIRECTS} redirects")
                redirects += 1
                current = following
    except TimeoutError:
        raise TransportTimeout(f"Get {go_quote(current.url)}: context deadline exceeded (Client.Timeout exceeded "
                             "while awaiting headers)") from None


def _redirected(request: HTTPGet, target: Any, *, relative: bool) -> HTTPGet:
    scheme = target.scheme or request.scheme
    port = target.port or (443 if scheme == "https" else 80)
    path = target.path + (f"?{target.query}" if target.query else "")
    # A Host header the action set survives relative redirects only, as in Go's client.
    host_header = request.host_header if relative else join_host_port(target.hostname, port)
    return HTTPGet(scheme, target.hostname, port, path or "/", host_header, list(request.headers))


async def http_probe(action: dict, target: ProbeTarget, container_ports: list[dict], timeout: float) -> ProbeResult:
    try:
        request = http_get_request(action, target.pod_ip, container_ports, "probe")
    except ValueError as err:
        return ProbeResult(UNKNOWN, str(err))
    try:
        status, body = await http_get(request, target.netns, timeout)
    except TransportError as err:
        return ProbeResult(FAILURE, str(err))
    text = body.decode(errors="replace")
    if 200 <= status < 300:
        return ProbeResult(SUCCESS, text)
    if 300 <= status < 400:
        return ProbeResult(WARNING, f"Probe terminated redirects, Response body: {text}")
    return ProbeResult(FAILURE, f"HTTP probe failed with statuscode: {status}")


# --- TCP -------------------------------------------------------------------------------------------------

async def tcp_probe(action: dict, target: ProbeTarget, container_ports: list[dict], timeout: float) -> ProbeResult:
    try:
        port = resolve_port(action.get("port"), container_ports)
    except ValueError as err:
        return ProbeResult(UNKNOWN, str(err))
    host = action.get("host") or target.pod_ip
    try:
        async with asyncio.timeout(timeout):
            sock = await dial(host, port, target.netns)
    except TimeoutError:
        return ProbeResult(FAILURE, f"dial tcp {join_host_port(host, port)}: i/o timeout")
    except TransportError as err:
        return ProbeResult(FAILURE, str(err))
    sock.close()
    return ProbeResult(SUCCESS)


# --- gRPC health checking over HTTP/2 ---------------------------------------------------------------------

GRPC_CODES = ("OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
              "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
              "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated")
HEALTH_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_CONNECT_BACKOFF, _CONNECT_BACKOFF_FACTOR = 1.0, 1.6  # grpc-go's defaults for a blocking dial


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _health_status(message: bytes) -> int:
    """HealthCheckResponse.status (field 1, an enum) from its protobuf encoding; other fields are skipped."""
    pos, status = 0, 0
    while pos < len(message):
        key, pos = _read_varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(message, pos)
            if number == 1:
                status = value
        elif wire == 2:
            length, pos = _read_varint(message, pos)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return status


def _grpc_timeout(seconds: float) -> str:
    micros = max(1, int(seconds * 1e6))
    return f"{micros}u" if micros < 10**8 else f"{max(1, micros // 1000)}m"


class _RPCError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"rpc error: code = {GRPC_CODES[code]} desc = {message}")
        self.code = code
        self.message = message


async def _health_check(sock: socket.socket, authority: str, service: str, timeout: float) -> int:
    """One unary grpc.health.v1.Health/Check call on a connected socket; the serving status, or _RPCError."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [
        (":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
        (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers"),
        ("grpc-timeout", _grpc_timeout(timeout)), ("user-agent", f"kube-probe/{KUBE_VERSION}")])
    request = b"\x0a" + _varint(len(service.encode())) + service.encode() if service else b""
    conn.send_data(stream_id, b"\x00" + len(request).to_bytes(4, "big") + request, end_stream=True)
    reader, writer = await asyncio.open_connection(sock=sock)
    headers: dict[str, str] = {}
    trailers: dict[str, str] = {}
    payload = bytearray()
    try:
        writer.write(conn.data_to_send())
        ended = False
        while not ended:
            chunk = await reader.read(65536)
            if not chunk:
                raise _RPCError(14, "error reading from server: EOF")
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = dict(event.headers)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    payload += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    raise _RPCError(13, f"stream terminated by RST_STREAM with error code: {event.error_code.name}")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise _RPCError(14, f"the connection is draining (GOAWAY {event.error_code.name})")
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    ended = True
            writer.write(conn.data_to_send())
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    http_status = int(headers.get(":status", "0"))
    if http_status != 200:
        try:
            phrase = http.HTTPStatus(http_status).phrase
        except ValueError:
            phrase = ""
        raise _RPCError(_HTTP_TO_GRPC.get(http_status, 2),
                        f"unexpected HTTP status code received from server: {http_status} ({phrase})")
    status = trailers or headers  # a "trailers-only" response carries its status in the headers
    if "grpc-status" not in status:
        raise _RPCError(13, "server closed the stream without sending trailers")
    code = int(status["grpc-status"])
    if code != 0:
        raise _RPCError(code if code < len(GRPC_CODES) else 2, unquote(status.get("grpc-message", "")))
    if len(payload) < 5 or payload[0] != 0:
        raise _RPCError(13, "grpc: malformed or compressed response message")
    length = int.from_bytes(payload[1:5], "big")
    try:
        return _health_status(bytes(payload[5:5 + length]))
    except ValueError as err:
        raise _RPCError(13, f"grpc: failed to unmarshal the received message: {err}") from None


async def grpc_probe(action: dict, target: ProbeTarget, timeout: float) -> ProbeResult:
    try:
        port = resolve_port(action.get("port"), [])
    except ValueError as err:
        return ProbeResult(UNKNOWN, str(err))
    service = action.get("service") or ""
    address = join_host_port(target.pod_ip, port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    within = format_duration(timeout)
    delay = _CONNECT_BACKOFF
    sock = None
    # A blocking gRPC dial retries refused connections until its deadline.
    while sock is None:
        try:
            async with asyncio.timeout_at(deadline):
                sock = await dial(target.pod_ip, port, target.netns)
        except (TimeoutError, TransportError):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return ProbeResult(FAILURE, f"timeout: failed to connect service {go_quote(address)} within "
                                            f"{within}: context deadline exceeded")
            await asyncio.sleep(min(delay, remaining))
            delay *= _CONNECT_BACKOFF_FACTOR
    try:
        async with asyncio.timeout_at(deadline):
            status = await _health_check(sock, address, service, deadline - loop.time())
    except TimeoutError:
        return ProbeResult(FAILURE, f"timeout: health rpc did not complete within {within}")
    except _RPCError as err:
        if err.code == 12:
            return ProbeResult(FAILURE, "error: this server does not implement the grpc health protocol "
                                        f"(grpc.health.v1.Health): {err.message}")
        if err.code == 4:
            return ProbeResult(FAILURE, f"timeout: health rpc did not complete within {within}")
        return ProbeResult(FAILURE, f"error: health rpc probe failed: {err}")
    except (OSError, ValueError, h2.exceptions.H2Error) as err:  # not an HTTP/2 server, or a broken one
        return ProbeResult(FAILURE, f"error: health rpc probe failed: rpc error: code = Unavailable desc = {err}")
    finally:
        sock.close()
    if status != 1:
        name = HEALTH_STATUSES[status] if status < len(HEALTH_STATUSES) else str(status)
        return ProbeResult(FAILURE, f"service unhealthy (responded with {go_quote(name)})")
    return ProbeResult(SUCCESS, "service healthy")


# --- one attempt of any probe ------------------------------------------------------------------------------

async def run_probe(probe: dict, target: ProbeTarget, container_ports: list[dict]) -> ProbeResult:
    """One attempt of the probe's handler, bounded by its timeoutSeconds (default 1)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    if probe.get("exec") is not None:
        return await exec_probe(probe["exec"].get("command") or [], target, timeout)
    if probe.get("httpGet") is not None:
        return await http_probe(probe["httpGet"], target, container_ports, timeout)
    if probe.get("tcpSocket") is not None:
        return await tcp_probe(probe["tcpSocket"], target, container_ports, timeout)
    if probe.get("grpc") is not None:
        return await grpc_probe(probe["grpc"], target, timeout)
    return ProbeResult(UNKNOWN, f"missing probe handler for {target.pod}:{target.container}")


# --- the prober worker ------------------------------------------------------------------------------------

class ProbeClock:
    """Monotonic time and stoppable waits; tests hand the worker a clock of their own."""

    def now(self) -> float:
        return time.monotonic()

    async def wait(self, seconds: float, stop: asyncio.Event) -> bool:
        """Waits `seconds`, or less when stop is set; True when stopped."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
        return stop.is_set()


ResultCallback = Callable[[str, bool, str, int | None], Awaitable[None] | None]
EventCallback = Callable[[str, str], Awaitable[None] | None]


async def notify(callback: Callable[..., Any] | None, *args: Any) -> None:
    """Calls an optional callback that may be a plain function or a coroutine function."""
    if callback is not None:
        outcome = callback(*args)
        if inspect.isawaitable(outcome):
            await outcome


class ProbeWorker:
    """Probes one container instance with one of its probes, as upstream's prober worker.

    Start it when the container starts (initialDelaySeconds counts from then) and give each new instance a
    new worker. Liveness and readiness probes wait until the core calls started(): at once when the
    container has no startup probe, else when the startup worker reports success. Then the probe runs every
    periodSeconds; successThreshold consecutive successes or failureThreshold consecutive failures set the
    result. The result starts as False for readiness, True for liveness, None (unknown) for startup, and
    each change is reported as on_result(kind, ok, message, grace) - message is "Liveness probe failed:
    <output>" on failure, "" on success; grace is the probe's terminationGracePeriodSeconds on a
    liveness/startup failure, else None. on_event(reason, message), when given, hears each attempt worth an
    event as upstream records them: "Unhealthy" for failures and errors, "ProbeWarning" for warnings.
    Either callback may be a coroutine function.

    run() returns when stop is set (checked between attempts; cancel the task to abandon one in flight),
    when the startup probe has succeeded, or when a liveness/startup probe has failed: the container is then
    to be restarted and its successor gets new workers."""

    def __init__(self, kind: str, probe: dict, target: ProbeTarget, ports: list[dict],
                 on_result: ResultCallback, *, on_event: EventCallback | None = None,
                 clock: ProbeClock | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown probe kind {kind!r}: expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.probe = probe
        self.target = target
        self.ports = ports
        self.on_result = on_result
        self.on_event = on_event
        self.clock = clock or ProbeClock()
        self.result: bool | None = {"readiness": False, "liveness": True, "startup": None}[kind]
        self._started = asyncio.Event()
        self._last_ok: bool | None = None
        self._run_length = 0

    @property
    def _label(self) -> str:
        return self.kind.capitalize()

    def _setting(self, name: str, default: int, minimum: int) -> float:
        value = self.probe.get(name)
        return float(max(value, minimum)) if isinstance(value, int | float) else float(default)

    def started(self) -> None:
        """The container counts as started: liveness and readiness probing may begin."""
        self._started.set()

    async def run(self, stop: asyncio.Event) -> None:
        begun = self.clock.now()
        if self.kind != "startup" and await self._wait_started(stop):
            return
        initial_delay = self._setting("initialDelaySeconds", 0, 0)
        period = self._setting("periodSeconds", 10, 1)
        if await self.clock.wait(begun + initial_delay - self.clock.now(), stop):
            return
        while True:
            attempt_at = self.clock.now()
            result = await self._attempt()
            if stop.is_set() or await self._record(result):
                return
            if await self.clock.wait(attempt_at + period - self.clock.now(), stop):
                return

    async def _wait_started(self, stop: asyncio.Event) -> bool:
        """Waits for started() or stop; True when stopped."""
        waiters = [asyncio.ensure_future(self._started.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return stop.is_set()

    async def _attempt(self) -> ProbeResult | None:
        """One probe, tried again at once when it errors; None when it kept erroring (result thrown away)."""
        for _ in range(MAX_ATTEMPTS):
            result = await run_probe(self.probe, self.target, self.ports)
            if result.status != UNKNOWN:
                break
        if result.status == UNKNOWN:
            await notify(self.on_event, "Unhealthy",
                        f"{self._label} probe errored and resulted in {UNKNOWN} state: {result.output}")
            return None
        if result.status == WARNING:
            await notify(self.on_event, "ProbeWarning", f"{self._label} probe warning: {result.output}")
        elif result.status == FAILURE:
            await notify(self.on_event, "Unhealthy", f"{self._label} probe failed: {result.output}")
        return result

    async def _record(self, result: ProbeResult | None) -> bool:
        """Applies the thresholds; True when this worker is done."""
        if result is None:
            return False
        ok = result.ok
        self._run_length = self._run_length + 1 if ok == self._last_ok else 1
        self._last_ok = ok
        threshold = self._setting("successThreshold" if ok else "failureThreshold", 1 if ok else 3, 1)
        if self._run_length < threshold:
            return False
        if ok != self.result:
            self.result = ok
            restarting = not ok and self.kind != "readiness"
            grace = self.probe.get("terminationGracePeriodSeconds") if restarting else None
            message = "" if ok else f"{self._label} probe failed: {result.output}"
            await notify(self.on_result, self.kind, ok, message, grace)
        if ok:
            return self.kind == "startup"
        return self.kind != "readiness"


# --- running commands in an engine container (what the core wires as ProbeTarget.exec) ---------------------

_reaping: set[asyncio.Task] = set()


def engine_exec(engine: Engine, container_id: str) -> ExecFunc:
    """ProbeTarget.exec for an engine container: runs the command (no stdin, no terminal), collects up to
    10 KiB of its stdout and stderr, and kills it when it outlives the timeout (raising TimeoutError)."""

    async def run(command: list[str], timeout: float) -> tuple[int, bytes]:
        stream = await engine.exec(container_id, command)
        output = bytearray()
        try:
            async with asyncio.timeout(timeout):
                while (chunk := await stream.read()) is not None:
                    output += chunk[1][:MAX_OUTPUT - len(output)]
                code = await stream.wait()
        except (TimeoutError, asyncio.CancelledError):
            stream.kill(signal.SIGKILL)
            _reap(stream)
            raise
        return code, bytes(output)

    return run


def _reap(stream: ExecStream) -> None:
    """Collects a killed command's runtime process in the background, so a caller that timed out or was
    cancelled need not wait for it."""

    async def collect() -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stream.wait(), 30)

    task = asyncio.ensure_future(collect())
    _reaping.add(task)
    task.add_done_callback(_reaping.discard)
