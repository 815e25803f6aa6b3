"""pods/log, pods/exec, pods/attach and pods/portforward: the API server finds the pod's node and proxies to
its kubelet, as upstream does; and nodes/proxy, which passes any request on to a node's kubelet (e.g.
`kubectl get --raw /api/v1/nodes/N/proxy/stats/summary`).

Logs are an ordinary streamed GET of the kubelet's /containerLogs. Exec, attach and port-forward are HTTP
upgrades (WebSocket or SPDY/3.1): like upstream's UpgradeAwareHandler we send the request on to the kubelet
and, once it answers 101, splice the bytes both ways; any other answer goes back to the client as it came.
The API server talks to kubelets over TLS as itself (its kubelet-client certificate); kubelets' serving
certificates are not verified unless asked (upstream's default without --kubelet-certificate-authority)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web
from yarl import URL

from pocketkube.api import errors
from pocketkube.api.errors import Cause
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver import request as req
from pocketkube.apiserver.registry import Registry
from pocketkube.kubelet.streaming.upgrade import UpgradedConnection, switch_protocols

Obj = dict[str, Any]

DEFAULT_KUBELET_PORT = 10250
# Which node address to dial, best first (k3s' order: nodes here are reached by IP).
_ADDRESS_PREFERENCE = ("InternalIP", "Hostname", "InternalDNS", "ExternalIP", "ExternalDNS")
_CONNECT_TIMEOUT = 30.0
_MAX_HEAD = 64 * 1024
_MAX_ERROR_BODY = 1024 * 1024
# Not passed on to the kubelet: the client's credentials stay here, the message framing is ours.
_REQUEST_HEADERS_DROPPED = {"authorization", "proxy-authorization", "host", "content-length",
                            "transfer-encoding", "cookie", "keep-alive", "te", "trailer"}
# Not copied from the kubelet's answer: aiohttp frames (and dates) the response it sends itself.
_RESPONSE_HEADERS_DROPPED = {"content-length", "transfer-encoding", "date", "server", "keep-alive"}
_HOP_BY_HOP = {"connection", "upgrade", "proxy-connection"}   # also dropped from an answer that is no upgrade
_NODE_PROXY_SCHEMES = ("", "http", "https")


def kubelet_client_ssl_context(cert: Path, key: Path, ca: Path, *, verify: bool) -> ssl.SSLContext:
    """TLS towards kubelets with the API server's client certificate; `verify` checks their serving
    certificates against the cluster CA (and the address dialled)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(cert, key)
    if verify:
        context.load_verify_locations(cafile=ca)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass(frozen=True)
class KubeletEndpoint:
    host: str
    port: int

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def node_endpoint(node: Obj) -> KubeletEndpoint:
    """Where a node's kubelet listens: its preferred address and status.daemonEndpoints' port."""
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    for kind in _ADDRESS_PREFERENCE:
        for address in addresses:
            if address.get("type") == kind and address.get("address"):
                port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 0
                return KubeletEndpoint(address["address"], int(port) or DEFAULT_KUBELET_PORT)
    raise errors.StatusError(500, "", f"no preferred addresses found; known addresses: {addresses}")


def node_name_and_port(node_id: str) -> tuple[str, str]:
    """The node and port ("" when none) a nodes/proxy name gives: "NAME", "NAME:PORT" or "SCHEME:NAME:PORT"
    (upstream's SplitSchemeNamePort; the kubelet's port is always reached by https)."""
    parts = node_id.split(":")
    scheme = parts.pop(0) if len(parts) == 3 else ""
    name, port = (parts + [""])[:2] if len(parts) <= 2 else ("", "")
    if not name or scheme not in _NODE_PROXY_SCHEMES:
        raise errors.bad_request(f'invalid node request "{node_id}"')
    return name, port


def container_for(pod: Obj, requested: str) -> str:
    """The container a request addresses (upstream's validateContainer): the named one, which must exist,
    or the pod's only container."""
    spec = pod.get("spec") or {}
    name = pod["metadata"]["name"]
    every = [c.get("name", "") for kind in ("initContainers", "containers", "ephemeralContainers")
             for c in spec.get(kind) or []]
    if requested:
        if requested not in every:
            raise errors.bad_request(f"container {requested} is not valid for pod {name}")
        return requested
    containers = spec.get("containers") or []
    if len(containers) == 1:
        return containers[0].get("name", "")
    if not containers:
        raise errors.bad_request(f"a container name must be specified for pod {name}")
    raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                             f"[{' '.join(every)}]")


def _log_query(request: web.Request, pod_name: str) -> dict[str, str]:
    """PodLogOptions from the request, validated as upstream, in the kubelet's query form."""
    tail = req.int_param(request, "tailLines")
    limit = req.int_param(request, "limitBytes")
    since_seconds = req.int_param(request, "sinceSeconds")
    since_time = request.query.get("sinceTime", "")
    causes = []
    if tail is not None and tail < 0:
        causes.append(Cause("tailLines", f"Invalid value: {tail}: must be greater than or equal to 0"))
    if limit is not None and limit < 1:
        causes.append(Cause("limitBytes", f"Invalid value: {limit}: must be greater than 0"))
    if since_seconds is not None and since_time:
        causes.append(Cause("", "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
                            "FieldValueForbidden"))
    elif since_seconds is not None and since_seconds < 1:
        causes.append(Cause("sinceSeconds", f"Invalid value: {since_seconds}: must be greater than 0"))
    if causes:
        raise errors.invalid("PodLogOptions", pod_name, "", causes)
    query = {name: "true" for name in ("follow", "previous", "timestamps") if req.bool_param(request, name)}
    for name, value in (("sinceSeconds", since_seconds), ("tailLines", tail), ("limitBytes", limit)):
        if value is not None:
            query[name] = str(value)
    if since_time:
        query["sinceTime"] = since_time
    return query


def _stream_query(request: web.Request, subresource: str) -> list[tuple[str, str]]:
    """Exec/attach/port-forward options in the kubelet's query form ("1" flags, `port`)."""
    if subresource == "portforward":
        ports = []
        for value in request.query.getall("ports", []):
            for item in value.split(","):
                if not item.isdigit() or int(item) > 65535:
                    raise errors.bad_request(f'cannot convert to []int32: strconv.ParseUint: parsing "{item}": '
                                             "invalid syntax")
                ports.append(item)
        return [("port", ",".join(ports))] if ports else []
    query = [(name, "1") for name in ("stdin", "stdout", "stderr", "tty") if req.bool_param(request, name)]
    if subresource == "exec":
        query += [("command", command) for command in request.query.getall("command", [])]
    return query


class KubeletProxy:
    """Serves the pod subresources that live on the pod's kubelet."""

    def __init__(self, catalog: ResourceCatalog, registry: Registry, ssl_context: ssl.SSLContext) -> None:
        pods = catalog.resource("", "v1", "pods")
        nodes = catalog.resource("", "v1", "nodes")
        assert pods is not None and nodes is not None
        self._pods, self._nodes = pods, nodes
        self._registry = registry
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def pod_subresource(self, request: web.Request) -> web.StreamResponse:
        subresource = request.match_info["subresource"]
        allowed = ("GET",) if subresource == "log" else ("GET", "POST")
        if request.method not in allowed:
            raise errors.method_not_allowed(f"the server does not allow this method on the requested resource "
                                            f"({request.method} pods/{subresource})")
        pod = await self._registry.get(self._pods, request.match_info["namespace"], request.match_info["name"])
        if subresource == "log":
            return await self._log(request, pod)
        return await self._upgrade(request, pod, subresource)

    async def _endpoint(self, node_name: str) -> KubeletEndpoint:
        return node_endpoint(await self._registry.get(self._nodes, "", node_name))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # bodies are relayed as they come: a compressed one stays compressed, with its Content-Encoding
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl),
                                                  timeout=aiohttp.ClientTimeout(total=None,
                                                                                sock_connect=_CONNECT_TIMEOUT),
                                                  auto_decompress=False)
        return self._session

    # --- logs ----------------------------------------------------------------------------------------------

    async def _log(self, request: web.Request, pod: Obj) -> web.StreamResponse:
        meta = pod["metadata"]
        query = _log_query(request, meta["name"])
        container = container_for(pod, request.query.get("container", ""))
        node_name = (pod.get("spec") or {}).get("nodeName", "")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        if not node_name:  # not scheduled yet: no log anywhere, an empty one (as upstream)
            await response.prepare(request)
            await response.write_eof()
            return response
        endpoint = await self._endpoint(node_name)
        path = "/containerLogs/" + "/".join(quote(part, safe="") for part in (meta["namespace"], meta["name"],
                                                                              container))
        url = f"https://{endpoint.authority}{path}" + (f"?{urlencode(query)}" if query else "")
        try:
            upstream = await self._client().get(url)
        except (aiohttp.ClientError, OSError) as err:
            raise errors.StatusError(500, "", f'Get "{url}": {err}') from None
        async with upstream:
            if not 200 <= upstream.status <= 206:
                text = (await upstream.content.read(_MAX_ERROR_BODY)).decode(errors="replace")
                raise _kubelet_error(upstream.status, text, meta["name"])
            response.enable_chunked_encoding()
            await response.prepare(request)
            await _relay_body(upstream, response)
        return response

    # --- upgrades (exec, attach, port-forward) --------------------------------------------------------------

    async def _upgrade(self, request: web.Request, pod: Obj, subresource: str) -> web.StreamResponse:
        meta = pod["metadata"]
        node_name = (pod.get("spec") or {}).get("nodeName", "")
        if not node_name:
            raise errors.bad_request(f"pod {meta['name']} does not have a host assigned")
        parts = [meta["namespace"], meta["name"]]
        if subresource != "portforward":
            parts.append(container_for(pod, request.query.get("container", "")))
        query = _stream_query(request, subresource)
        endpoint = await self._endpoint(node_name)
        target = f"/{subresource}/" + "/".join(quote(part, safe="") for part in parts)
        if query:
            target += "?" + urlencode(query)
        return await self._proxy_upgrade(request, endpoint, self._ssl, target,
                                         lambda err: errors.StatusError(500, "", f"error dialing backend: {err}"))

    # --- nodes/proxy --------------------------------------------------------------------------------------

    async def node_proxy(self, request: web.Request) -> web.StreamResponse:
        """/api/v1/nodes/{name}/proxy[/{path}]: the request, any method, on to the node's kubelet with its
        query; the answer comes back as the kubelet gave it."""
        name, port = node_name_and_port(request.match_info["name"])
        endpoint = node_endpoint(await self._registry.get(self._nodes, "", name))
        if port and port != str(endpoint.port):
            # upstream reaches other ports of a node too (not at loopback or link-local addresses)
            raise errors.bad_request(f'only the kubelet\'s port {endpoint.port} of node "{name}" can be proxied '
                                     f"to, not {port}")
        # the path after .../proxy, escaped anew as Go escapes a URL's path (an escaped "/" is a "/" there too)
        target = "/" + quote(request.match_info.get("path", ""), safe="/:@!$&'()*+,;=")
        if request.rel_url.raw_query_string:
            target += "?" + request.rel_url.raw_query_string

        def unreachable(err: BaseException) -> errors.StatusError:
            return errors.StatusError(503, "ServiceUnavailable", f"error trying to reach service: {err}")

        if request.headers.get("Upgrade"):
            return await self._proxy_upgrade(request, endpoint, self._ssl, target, unreachable)
        try:
            upstream = await self._client().request(
                request.method, URL(f"https://{endpoint.authority}{target}", encoded=True),
                headers=_forwarded_headers(request), data=request.content if request.body_exists else None,
                allow_redirects=False)
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise unreachable(err) from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=[
                (k, v) for k, v in upstream.headers.items()
                if k.lower() not in _RESPONSE_HEADERS_DROPPED and k.lower() not in _HOP_BY_HOP])
            await response.prepare(request)
            await _relay_body(upstream, response)
        return response

    async def _proxy_upgrade(self, request: web.Request, endpoint: KubeletEndpoint, tls: ssl.SSLContext,
                             target: str, unreachable: Callable[[BaseException], errors.StatusError]
                             ) -> web.StreamResponse:
        """Sends an upgrade request on; a 101 answer splices client and kubelet, any other goes back."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.host, endpoint.port, ssl=tls), _CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as err:
            raise unreachable(err) from None
        try:
            writer.write(_request_head(request, target, endpoint))
            await writer.drain()
            status, reason, headers = await _read_head(reader)
            if status != 101:
                return web.Response(status=status, reason=reason, body=await _read_body(reader, headers),
                                    headers=[(k, v) for k, v in headers
                                             if k.lower() not in _RESPONSE_HEADERS_DROPPED])
            client = await switch_protocols(request, [(k, v) for k, v in headers
                                                      if k.lower() not in _RESPONSE_HEADERS_DROPPED])
            await _splice(client, reader, writer)
            client.close()
            return client.response
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as err:
            raise errors.StatusError(500, "", f"error proxying to the kubelet: {err}") from None
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def _relay_body(upstream: aiohttp.ClientResponse, response: web.StreamResponse) -> None:
    """Passes the kubelet's body on as it comes (a followed log, say)."""
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    except (ConnectionError, aiohttp.ClientPayloadError):
        pass  # the client left, or the kubelet went away mid-stream: the response just ends


def _kubelet_error(status: int, text: str, name: str) -> errors.StatusError:
    """A kubelet's failure as the API reports it (upstream's GenericHttpResponseChecker)."""
    if status == 500:
        return errors.internal(text)
    if status == 400:
        return errors.bad_request(text)
    reason = {404: "NotFound", 403: "Forbidden", 401: "Unauthorized"}.get(status, "")
    return errors.StatusError(status, reason, text, {"name": name, "kind": "pods/log"})


def _forwarded_headers(request: web.Request) -> list[tuple[str, str]]:
    """The client's headers that go on to the kubelet (not its credentials, nor the message framing)."""
    return [(name, value) for name, value in request.headers.items()
            if name.lower() not in _REQUEST_HEADERS_DROPPED and not name.lower().startswith("impersonate-")]


def _request_head(request: web.Request, target: str, endpoint: KubeletEndpoint) -> bytes:
    lines = [f"{request.method} {target} HTTP/1.1", f"Host: {endpoint.authority}"]
    lines += [f"{name}: {value}" for name, value in _forwarded_headers(request)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")



async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, list[tuple[str, str]]]:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _MAX_HEAD:
        raise ValueError("the kubelet's response head is too long")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ValueError(f"not an HTTP response from the kubelet: {status_line!r}")
    headers = []
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return int(code), reason, headers


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    """A (non-upgrade) response body: by Content-Length, chunked, or up to the end of the connection."""
    fields = {k.lower(): v for k, v in headers}
    if "content-length" in fields:
        return await reader.readexactly(min(int(fields["content-length"]), _MAX_ERROR_BODY))
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = bytearray()
        while len(body) < _MAX_ERROR_BODY:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return bytes(body)
    return await reader.read(_MAX_ERROR_BODY)


async def _splice(client: UpgradedConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies bytes both ways until either side ends its connection (then both are closed, as upstream)."""

    async def client_to_kubelet() -> None:
        while data := await client.read():
            writer.write(data)
            await writer.drain()

    async def kubelet_to_client() -> None:
        while data := await reader.read(64 * 1024):
            await client.write(data)

    directions = [asyncio.ensure_future(client_to_kubelet()), asyncio.ensure_future(kubelet_to_client())]
    try:
        await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in directions:
            task.cancel()
        await asyncio.gather(*directions, return_exceptions=True)
