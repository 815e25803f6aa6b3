"""Probe handlers against real local servers (HTTP, HTTPS, TCP, a grpcio health server), the prober worker's
timing and thresholds on a fake clock, and lifecycle hooks; messages as upstream prints them."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from pocketkube.apiserver.pki import ensure_pki
from pocketkube.kubelet.hooks import HookFailed, run_hook
from pocketkube.kubelet.probes import (
    ProbeClock,
    ProbeResult,
    ProbeTarget,
    ProbeWorker,
    go_quote,
    resolve_port,
    run_probe,
)

LOCAL = "127.0.0.1"


async def no_exec(command: list[str], timeout: float) -> tuple[int, bytes]:
    raise AssertionError("this probe runs no command")


def target(exec_func: Callable = no_exec) -> ProbeTarget:
    return ProbeTarget(pod_ip=LOCAL, netns=None, exec=exec_func, container="app", pod="web_default(uid-1)")


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return sock.getsockname()[1]


# --- servers -----------------------------------------------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.requests: list[web.Request] = []


async def start_site(app: web.Application, ssl_context: ssl.SSLContext | None = None
                     ) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOCAL, 0, ssl_context=ssl_context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, Recorder]]:
    seen = Recorder()
    release = asyncio.Event()  # ends /slow requests at teardown, so shutting down waits for none

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.requests.append(request)
        path = request.path
        if path == "/healthz":
            return web.Response(text="ok")
        if path == "/fail":
            return web.Response(status=500, text="secret body")
        if path == "/hop":
            raise web.HTTPFound("/healthz")
        if path == "/away":
            raise web.HTTPFound(f"http://localhost:{request.url.port}/healthz")
        if path == "/loop":
            raise web.HTTPFound("/loop")
        if path == "/slow":
            await release.wait()
        if path == "/chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"part1-")
            await response.write(b"part2")
            await response.write_eof()
            return response
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner, port = await start_site(app)
    yield port, seen
    release.set()
    await runner.cleanup()


@pytest.fixture
async def https_port(tmp_path: Path) -> AsyncIterator[int]:
    pki = ensure_pki(tmp_path, sans=[LOCAL], hostname="probe-test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.tls_dir / "serving.crt", pki.tls_dir / "serving.key")
    async def secure(request: web.Request) -> web.Response:
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_get("/", secure)
    runner, port = await start_site(app, context)
    yield port
    await runner.cleanup()


def health_handler(statuses: dict[str, int]) -> grpc.GenericRpcHandler:
    """grpc.health.v1.Health/Check answering from `statuses` (service -> enum), NOT_FOUND otherwise; the
    messages are encoded by hand (field 1 of each)."""

    async def check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        service = request[2:].decode() if request else ""
        if service not in statuses:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return bytes([0x08, statuses[service]])

    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check)})


@pytest.fixture
async def grpc_port() -> AsyncIterator[Callable[..., int]]:
    servers: list[grpc.aio.Server] = []

    async def serve(handlers: list[grpc.GenericRpcHandler]) -> int:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(handlers)
        port = server.add_insecure_port(f"{LOCAL}:0")
        await server.start()
        servers.append(server)
        return port

    yield serve
    for server in servers:
        await server.stop(None)


# --- httpGet -----------------------------------------------------------------------------------------------

async def test_http_probe_success_failure_and_request_shape(http_server: tuple[int, Recorder]) -> None:
    port, seen = http_server
    ok = await run_probe({"httpGet": {"path": "/healthz", "port": "web", "httpHeaders": [
        {"name": "x-custom", "value": "v1"}, {"name": "Host", "value": "probe.example"}]}},
        target(), [{"name": "web", "containerPort": port}])
    assert ok == ProbeResult("success", "ok")
    request = seen.requests[-1]
    assert request.headers["User-Agent"] == "kube-probe/1.37"
    assert request.headers["Accept"] == "*/*"
    assert request.headers["X-Custom"] == "v1"
    assert request.headers["Host"] == "probe.example"
    assert request.headers["Connection"] == "close"
    assert "Accept-Encoding" not in request.headers

    failed = await run_probe({"httpGet": {"path": "/fail", "port": port}}, target(), [])
    assert failed == ProbeResult("failure", "HTTP probe failed with statuscode: 500")  # never the body

    chunked = await run_probe({"httpGet": {"path": "/chunked", "port": port}}, target(), [])
    assert chunked == ProbeResult("success", "part1-part2")


async def test_http_probe_redirects_follow_the_same_host_only(http_server: tuple[int, Recorder]) -> None:
    port, seen = http_server
    hop = await run_probe({"httpGet": {"path": "/hop", "port": port}}, target(), [])
    assert hop == ProbeResult("success", "ok")
    assert [r.path for r in seen.requests] == ["/hop", "/healthz"]

    away = await run_probe({"httpGet": {"path": "/away", "port": port}}, target(), [])
    assert away.status == "warning" and away.ok
    assert away.output.startswith("Probe terminated redirects, Response body: ")
    assert seen.requests[-1].path == "/away"  # localhost is another host name: not followed

    looping = await run_probe({"httpGet": {"path": "/loop", "port": port}}, target(), [])
    assert looping == ProbeResult("failure", f'Get "http://{LOCAL}:{port}/loop": stopped after 10 redirects')


async def test_http_probe_transport_failures(http_server: tuple[int, Recorder]) -> None:
    port, _ = http_server
    dead = closed_port()
    refused = await run_probe({"httpGet": {"path": "/healthz", "port": dead}}, target(), [])
    assert refused == ProbeResult(
        "failure", f'Get "http://{LOCAL}:{dead}/healthz": dial tcp {LOCAL}:{dead}: connect: connection refused')

    started = time.monotonic()
    slow = await run_probe({"httpGet": {"path": "/slow", "port": port}, "timeoutSeconds": 0.3}, target(), [])
    assert time.monotonic() - started < 2
    assert slow == ProbeResult("failure", f'Get "http://{LOCAL}:{port}/slow": context deadline exceeded '
                                          "(Client.Timeout exceeded while awaiting headers)")

    unnamed = await run_probe({"httpGet": {"path": "/", "port": "metrics"}}, target(), [])
    assert unnamed == ProbeResult("unknown", 'strconv.Atoi: parsing "metrics": invalid syntax')


async def test_https_probe_skips_verification_and_spots_plain_http(https_port: int,
                                                                   http_server: tuple[int, Recorder]) -> None:
    secure = await run_probe({"httpGet": {"path": "/", "port": https_port, "scheme": "HTTPS"}}, target(), [])
    assert secure == ProbeResult("success", "secure")
    plain_port, _ = http_server
    mismatch = await run_probe({"httpGet": {"path": "/", "port": plain_port, "scheme": "HTTPS"}}, target(), [])
    assert mismatch == ProbeResult(
        "failure", f'Get "https://{LOCAL}:{plain_port}/": http: server gave HTTP response to HTTPS client')


# --- tcpSocket and grpc ---------------------------------------------------------------------------------------

async def test_tcp_probe_open_and_closed(http_server: tuple[int, Recorder]) -> None:
    port, _ = http_server
    assert await run_probe({"tcpSocket": {"port": port}}, target(), []) == ProbeResult("success")
    dead = closed_port()
    assert await run_probe({"tcpSocket": {"port": dead}}, target(), []) == ProbeResult(
        "failure", f"dial tcp {LOCAL}:{dead}: connect: connection refused")


async def test_grpc_probe_against_a_real_grpc_server(grpc_port: Callable) -> None:
    port = await grpc_port([health_handler({"": 1, "db": 2})])
    assert await run_probe({"grpc": {"port": port}}, target(), []) == ProbeResult("success", "service healthy")
    assert await run_probe({"grpc": {"port": port, "service": "db"}}, target(), []) == ProbeResult(
        "failure", 'service unhealthy (responded with "NOT_SERVING")')
    assert await run_probe({"grpc": {"port": port, "service": "cache"}}, target(), []) == ProbeResult(
        "failure", "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service")

    bare = await grpc_port([])
    unimplemented = await run_probe({"grpc": {"port": bare}}, target(), [])
    assert unimplemented.status == "failure"
    assert unimplemented.output.startswith("error: this server does not implement the grpc health protocol "
                                           "(grpc.health.v1.Health): ")


async def test_grpc_probe_keeps_dialing_until_its_timeout() -> None:
    dead = closed_port()
    started = time.monotonic()
    result = await run_probe({"grpc": {"port": dead}, "timeoutSeconds": 0.5}, target(), [])
    assert 0.45 < time.monotonic() - started < 2
    assert result == ProbeResult(
        "failure", f'timeout: failed to connect service "{LOCAL}:{dead}" within 500ms: context deadline exceeded')


# --- exec ----------------------------------------------------------------------------------------------------

async def test_exec_probe_results() -> None:
    async def fake(command: list[str], timeout: float) -> tuple[int, bytes]:
        if command[0] == "hang":
            await asyncio.sleep(10)
        if command[0] == "missing":
            raise RuntimeError('exec: "missing": executable file not found in $PATH')
        return (0, b"fine\n") if command[0] == "ok" else (1, b"cat: can't open '/tmp/healthy'\n")

    assert await run_probe({"exec": {"command": ["ok"]}}, target(fake), []) == ProbeResult("success", "fine\n")
    assert await run_probe({"exec": {"command": ["cat", "/tmp/healthy"]}}, target(fake), []) == ProbeResult(
        "failure", "cat: can't open '/tmp/healthy'\n")
    timed_out = await run_probe({"exec": {"command": ["hang", "now"]}, "timeoutSeconds": 0.1}, target(fake), [])
    assert timed_out == ProbeResult("failure", 'command "hang now" timed out')
    missing = await run_probe({"exec": {"command": ["missing"]}}, target(fake), [])
    assert missing == ProbeResult("unknown", 'exec: "missing": executable file not found in $PATH')
    assert await run_probe({}, target(), []) == ProbeResult("unknown", "missing probe handler for "
                                                                       "web_default(uid-1):app")


def test_port_resolution_and_go_quoting() -> None:
    ports = [{"name": "http", "containerPort": 8080}]
    assert resolve_port(80, ports) == 80
    assert resolve_port("http", ports) == 8080
    assert resolve_port("9090", ports) == 9090
    with pytest.raises(ValueError, match="invalid port number: 70000"):
        resolve_port(70000, ports)
    assert go_quote('say "hi"\n\x01') == '"say \\"hi\\"\\n\\x01"'


# --- the worker ------------------------------------------------------------------------------------------------

class FakeClock(ProbeClock):
    """Time that moves only when the worker waits."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time

    async def wait(self, seconds: float, stop: asyncio.Event) -> bool:
        await asyncio.sleep(0)
        if not stop.is_set():
            self.time += max(seconds, 0.0)
        return stop.is_set()


class Script:
    """A container whose probe command answers from a script of exit codes (or exceptions); when the
    script runs out it sets `stop`."""

    def __init__(self, clock: FakeClock, outcomes: list, stop: asyncio.Event) -> None:
        self.clock, self.outcomes, self.stop = clock, list(outcomes), stop
        self.times: list[float] = []

    async def __call__(self, command: list[str], timeout: float) -> tuple[int, bytes]:
        self.times.append(self.clock.now())
        if not self.outcomes:
            self.stop.set()
            return 0, b""
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome, b"" if outcome == 0 else f"exit {outcome}".encode()


def make_worker(kind: str, probe: dict, outcomes: list, clock: FakeClock | None = None,
                stop: asyncio.Event | None = None) -> tuple[ProbeWorker, Script, list, list]:
    clock = clock or FakeClock()
    stop = stop or asyncio.Event()
    script = Script(clock, outcomes, stop)
    results: list = []
    events: list = []
    worker = ProbeWorker(kind, {"exec": {"command": ["check"]}, **probe}, target(script), [],
                         lambda *args: results.append(args), on_event=lambda *args: events.append(args),
                         clock=clock)
    return worker, script, results, events


async def test_liveness_reports_failure_at_the_threshold_and_ends() -> None:
    worker, script, results, events = make_worker(
        "liveness", {"periodSeconds": 10, "failureThreshold": 3, "terminationGracePeriodSeconds": 7},
        [0, 1, 1, 0, 1, 1, 1, 0])
    worker.started()
    assert worker.result is True
    await asyncio.wait_for(worker.run(script.stop), 5)
    assert script.times == [0, 10, 20, 30, 40, 50, 60]  # ended at the third failure in a row
    assert results == [("liveness", False, "Liveness probe failed: exit 1", 7)]
    assert events == [("Unhealthy", "Liveness probe failed: exit 1")] * 5
    assert worker.result is False


async def test_readiness_starts_false_and_reports_changes_only() -> None:
    worker, script, results, _ = make_worker(
        "readiness", {"periodSeconds": 5, "successThreshold": 2, "failureThreshold": 1}, [0, 0, 0, 2, 2, 0, 0])
    assert worker.result is False
    worker.started()
    await asyncio.wait_for(worker.run(script.stop), 5)
    assert results == [("readiness", True, "", None), ("readiness", False, "Readiness probe failed: exit 2", None),
                       ("readiness", True, "", None)]


async def test_initial_delay_and_period() -> None:
    worker, script, _, _ = make_worker("liveness", {"initialDelaySeconds": 5, "periodSeconds": 3}, [0, 0, 0])
    worker.started()
    await asyncio.wait_for(worker.run(script.stop), 5)
    assert script.times == [5, 8, 11, 14]


async def test_startup_gates_liveness_and_readiness() -> None:
    clock, stop = FakeClock(), asyncio.Event()
    startup, startup_script, startup_results, _ = make_worker(
        "startup", {"periodSeconds": 2, "failureThreshold": 30}, [1, 1, 0], clock, stop)
    readiness, ready_script, ready_results, _ = make_worker("readiness", {"periodSeconds": 10}, [0], clock, stop)
    assert startup.result is None

    async def startup_then_open_the_gate() -> None:
        await startup.run(stop)
        readiness.started()  # what the core does on the startup worker's success

    await asyncio.wait_for(asyncio.gather(startup_then_open_the_gate(), readiness.run(stop)), 5)
    assert startup_script.times == [0, 2, 4]
    assert startup_results == [("startup", True, "", None)]
    assert ready_script.times[0] == 4  # not before the container counted as started
    assert ready_results == [("readiness", True, "", None)]


async def test_startup_failure_carries_the_probe_grace_period() -> None:
    worker, script, results, _ = make_worker(
        "startup", {"failureThreshold": 2, "terminationGracePeriodSeconds": 3}, [1, 1, 0])
    await asyncio.wait_for(worker.run(script.stop), 5)
    assert results == [("startup", False, "Startup probe failed: exit 1", 3)]


async def test_errors_are_retried_and_thrown_away() -> None:
    boom = RuntimeError("container not running")
    worker, script, results, events = make_worker(
        "liveness", {"failureThreshold": 1}, [boom, boom, boom, boom, boom, boom])
    worker.started()
    await asyncio.wait_for(worker.run(script.stop), 5)
    assert len(script.times) == 7 and script.times[:3] == [0, 0, 0]  # three tries per period
    assert results == []  # an errored probe never counts as a failure
    assert events == [("Unhealthy", "Liveness probe errored and resulted in unknown state: container not running")] * 2


async def test_stop_ends_a_worker_waiting_for_startup() -> None:
    worker, script, _, _ = make_worker("readiness", {}, [0])
    task = asyncio.ensure_future(worker.run(script.stop))
    await asyncio.sleep(0.01)
    assert not task.done() and script.times == []
    script.stop.set()
    await asyncio.wait_for(task, 5)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown probe kind"):
        ProbeWorker("sideways", {}, target(), [], lambda *a: None)


# --- lifecycle hooks ------------------------------------------------------------------------------------------

async def test_http_hook_ignores_status_but_not_transport(http_server: tuple[int, Recorder]) -> None:
    port, seen = http_server
    await run_hook({"httpGet": {"path": "/fail", "port": port}}, target(), timeout=5, hook="postStart")
    assert seen.requests[-1].headers["User-Agent"] == "kube-lifecycle/1.37"
    dead = closed_port()
    with pytest.raises(HookFailed) as failed:
        await run_hook({"httpGet": {"path": "/stop", "port": dead}}, target(), timeout=5, hook="preStop")
    assert failed.value.detail == (f'HTTP lifecycle hook (/stop) for Container "app" in Pod "web_default(uid-1)" '
                                   f'failed - error: Get "http://{LOCAL}:{dead}/stop": dial tcp {LOCAL}:{dead}: '
                                   "connect: connection refused")
    assert (failed.value.event_reason, failed.value.event_message) == ("FailedPreStopHook", "PreStopHook failed")
    assert str(failed.value).startswith("PreStopHook failed: HTTP lifecycle hook (/stop)")


async def test_https_hook_falls_back_to_http(http_server: tuple[int, Recorder]) -> None:
    port, seen = http_server
    events: list = []
    await run_hook({"httpGet": {"path": "/healthz", "port": port, "scheme": "HTTPS", "httpHeaders": [
        {"name": "Authorization", "value": "Bearer x"}]}}, target(), timeout=5, hook="postStart",
        on_event=lambda *args: events.append(args))
    assert events == [("LifecycleHTTPFallback", f"request to HTTPS lifecycle hook {LOCAL}:{port} got HTTP "
                                                "response, retry with HTTP succeeded")]
    assert "Authorization" not in seen.requests[-1].headers


async def test_exec_hook_messages() -> None:
    async def fake(command: list[str], timeout: float) -> tuple[int, bytes]:
        if command[0] == "hang":
            await asyncio.sleep(10)
        return (0, b"") if command[0] == "true" else (3, b"boom\n")

    await run_hook({"exec": {"command": ["true"]}}, target(fake), timeout=5, hook="postStart")
    with pytest.raises(HookFailed) as failed:
        await run_hook({"exec": {"command": ["sh", "-c", "exit 3"]}}, target(fake), timeout=5, hook="postStart")
    assert str(failed.value) == ('PostStartHookError: Exec lifecycle hook ([sh -c exit 3]) for Container "app" in '
                                 'Pod "web_default(uid-1)" failed - error: command \'sh -c exit 3\' exited with 3: '
                                 'boom\n, message: "boom\\n"')
    assert (failed.value.event_reason, failed.value.event_message) == ("FailedPostStartHook", "PostStartHook failed")
    assert not failed.value.timed_out
    with pytest.raises(HookFailed) as hung:
        await run_hook({"exec": {"command": ["hang"]}}, target(fake), timeout=0.1, hook="preStop")
    assert hung.value.timed_out


async def test_sleep_hook_and_invalid_handler() -> None:
    started = time.monotonic()
    await run_hook({"sleep": {"seconds": 0}}, target(), timeout=5, hook="preStop")
    with pytest.raises(HookFailed) as cut:
        await run_hook({"sleep": {"seconds": 30}}, target(), timeout=0.2, hook="preStop")
    assert time.monotonic() - started < 2
    assert cut.value.timed_out
    assert cut.value.detail.endswith("failed - error: container terminated before sleep hook finished")
    with pytest.raises(HookFailed, match="Cannot run handler: invalid handler"):
        await run_hook({"tcpSocket": {"port": 1}}, target(), timeout=1, hook="postStart")
