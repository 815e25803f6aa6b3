"""The kubelet's HTTPS API (upstream's port 10250): container logs, exec, attach and port-forward, which the
API server proxies to for kubectl, and the node's resource usage (/stats/summary, /metrics/resource). Only
clients presenting a certificate from the cluster CA whose common name is allowed (the API server's
kubelet-client identity) get in: 401 without one, 403 for another name."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from pocketkube.kubelet.stats import METRICS_CONTENT_TYPE, resource_metrics, summary_document
from pocketkube.kubelet.streaming.containerlogs import LogOptions, LogOptionsError, write_log
from pocketkube.kubelet.streaming.portforward import connect_in_netns, serve_portforward
from pocketkube.kubelet.streaming.remotecommand import (
    ExecProcess,
    InteractiveProcess,
    StreamOptions,
    StreamRequestError,
    accept_channels,
    serve_attach,
    serve_exec,
)
from pocketkube.kubelet.streaming.upgrade import UpgradeAbandoned
from pocketkube.kubelet.streaming.wsstream import ProtocolNotSupported

log = logging.getLogger(__name__)


class AttachableSession(InteractiveProcess, Protocol):
    async def close(self) -> None: ...


class StreamingBackend(Protocol):
    """What the kubelet server needs from the node agent. Lookups raise LookupError with a message for the
    user: container_id and pod_netns when the pod or container is unknown (answered 404), log_path when
    there is no such log, e.g. 'previous terminated container "c" in pod "p" not found' (answered 400)."""

    def container_id(self, namespace: str, pod: str, container: str | None) -> str:
        """The engine id of the pod's container (None: its only/default container)."""

    def log_path(self, namespace: str, pod: str, container: str | None, previous: bool) -> Path:
        """The CRI log file of the current (or the previous, terminated) instance of the container."""

    def container_running(self, container_id: str) -> bool: ...

    async def exec(self, container_id: str, command: list[str], *, tty: bool, stdin: bool) -> ExecProcess: ...

    async def attach(self, container_id: str) -> AttachableSession: ...

    def pod_netns(self, namespace: str, pod: str) -> str:
        """The path of the pod's pinned network namespace."""

    async def stats_summary(self, only_cpu_and_memory: bool) -> dict[str, Any]:
        """The node's usage readings: a Summary with its times as epoch seconds (kubelet/stats.py)."""


def _message(err: LookupError) -> str:
    return str(err.args[0]) if err.args else str(err)


def _common_name(peercert: dict) -> str:
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class KubeletServer:
    def __init__(self, backend: StreamingBackend, *, bind: str, port: int, ssl_context: ssl.SSLContext,
                 client_ca_pem: str | bytes, allowed_client_cns: Iterable[str]) -> None:
        """`ssl_context` carries the kubelet's serving certificate; it is set here to ask clients for a
        certificate and verify it against `client_ca_pem`."""
        self.backend = backend
        self._bind = bind
        self._port = port
        self._allowed = frozenset(allowed_client_cns)
        ssl_context.load_verify_locations(cadata=client_ca_pem.decode() if isinstance(client_ca_pem, bytes)
                                          else client_ca_pem)
        # Optional at the TLS layer so a client without one gets an HTTP 401 rather than a handshake failure.
        ssl_context.verify_mode = ssl.CERT_OPTIONAL
        ssl_context.set_alpn_protocols(["http/1.1"])
        self._ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._authenticate])
        self.app.router.add_get("/healthz", self._healthz)
        for path in ("/stats/summary", "/stats/summary/"):
            self.app.router.add_get(path, self._stats_summary)
        self.app.router.add_get("/metrics/resource", self._resource_metrics)
        self.app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        for verb in ("GET", "POST"):
            self.app.router.add_route(verb, "/exec/{namespace}/{pod}/{container}", self._exec)
            self.app.router.add_route(verb, "/attach/{namespace}/{pod}/{container}", self._attach)
            self.app.router.add_route(verb, "/portforward/{namespace}/{pod}", self._portforward)

    @property
    def port(self) -> int:
        """The port listened on (the one chosen by the system when 0 was asked for)."""
        if self._runner is None or not self._runner.addresses:
            return self._port
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._bind, self._port, ssl_context=self._ssl_context,
                           reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        if not peercert:
            return web.Response(status=401, text="Unauthorized")
        user = _common_name(peercert)
        if user not in self._allowed:
            verb = "get" if request.method == "GET" else "create"
            return web.Response(status=403, text=f"Forbidden (user={user}, verb={verb}, resource=nodes, "
                                                  f"subresource=proxy)")
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _stats_summary(self, request: web.Request) -> web.Response:
        # upstream takes exactly "true", and only as the one value of the parameter
        only_cpu_and_memory = request.query.getall("only_cpu_and_memory", []) == ["true"]
        try:
            readings = await self.backend.stats_summary(only_cpu_and_memory)
        except (OSError, ValueError) as err:   # unreadable or unexpected /proc or cgroup files
            log.exception("reading the node's usage for /stats/summary")
            return web.Response(status=500, text=f"Internal Error: failed to get node stats: {err}")
        return web.Response(body=orjson.dumps(summary_document(readings), option=orjson.OPT_INDENT_2),
                            content_type="application/json")

    async def _resource_metrics(self, request: web.Request) -> web.Response:
        try:
            readings = await self.backend.stats_summary(True)
        except (OSError, ValueError):
            # a scrape still succeeds, telling of the failure in resource_scrape_error (as upstream)
            log.exception("reading the node's usage for /metrics/resource")
            readings = None
        return web.Response(body=resource_metrics(readings).encode(),
                            headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        try:
            options = LogOptions.from_query(request.query)
            path = self.backend.log_path(namespace, pod, container, options.previous)
        except LogOptionsError as err:
            return web.Response(status=400, text=str(err))
        except LookupError as err:
            return web.Response(status=400, text=_message(err))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        running = partial(self._running, namespace, pod, container) if not options.previous else _never
        try:
            await write_log(path, options, response.write, running)
            await response.write_eof()
        except ConnectionError:
            pass  # the client left (e.g. kubectl logs -f interrupted)
        return response

    def _running(self, namespace: str, pod: str, container: str) -> bool:
        try:
            return self.backend.container_running(self.backend.container_id(namespace, pod, container))
        except LookupError:
            return False

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        namespace, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        command = request.query.getall("command", [])
        try:
            if not command:
                raise StreamRequestError(400, "you must specify at least one command for the container")
            options = StreamOptions.from_query(request.query)
            container_id = self.backend.container_id(namespace, pod, container)
            channels = await accept_channels(request, options)
        except StreamRequestError as err:
            return web.Response(status=err.status, text=str(err), headers=err.headers)
        except LookupError as err:
            return web.Response(status=404, text=_message(err))
        except UpgradeAbandoned as err:
            log.info("%s %s: %s", request.method, request.path, err)
            return err.response
        await serve_exec(channels, options, command, partial(self.backend.exec, container_id, command,
                                                             tty=options.tty, stdin=options.stdin))
        return channels.response

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        namespace, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        try:
            options = StreamOptions.from_query(request.query)
            container_id = self.backend.container_id(namespace, pod, container)
            channels = await accept_channels(request, options)
        except StreamRequestError as err:
            return web.Response(status=err.status, text=str(err), headers=err.headers)
        except LookupError as err:
            return web.Response(status=404, text=_message(err))
        except UpgradeAbandoned as err:
            log.info("%s %s: %s", request.method, request.path, err)
            return err.response
        await serve_attach(channels, options, partial(self.backend.attach, container_id))
        return channels.response

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        namespace, pod = request.match_info["namespace"], request.match_info["pod"]
        try:
            netns = self.backend.pod_netns(namespace, pod)
        except LookupError as err:
            return web.Response(status=404, text=_message(err))
        try:
            return await serve_portforward(request, partial(connect_in_netns, netns), f"{pod}_{namespace}")
        except StreamRequestError as err:
            return web.Response(status=err.status, text=str(err), headers=err.headers)
        except ProtocolNotSupported as err:
            return web.Response(status=403, text=str(err))


def _never() -> bool:
    return False
