"""The API server process: TLS listener, authentication, routes, storage, watch cache and start-up."""

from __future__ import annotations

import asyncio
import logging
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pocketkube import KUBERNETES_VERSION, __version__
from pocketkube.api import errors
from pocketkube.api.gcpolicy import tune_for_large_heaps
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver import discovery, openapi
from pocketkube.apiserver.admission import ClusterState, build_chain
from pocketkube.apiserver.apiservices import APIServiceRegistration
from pocketkube.apiserver.authn import Authenticator
from pocketkube.apiserver.bootstrap import bootstrap_cluster
from pocketkube.apiserver.componentstatus import ComponentStatuses
from pocketkube.apiserver.crd.controller import CRDController
from pocketkube.apiserver.handlers import ResourceHandler, add_request_warnings, json_response
from pocketkube.apiserver.health import HealthEndpoint
from pocketkube.apiserver.kubeletproxy import KubeletProxy, kubelet_client_ssl_context
from pocketkube.apiserver.nodetoken import BOOTSTRAP_USER, ensure_node_token
from pocketkube.apiserver.pki import (
    ADMIN_GROUP,
    NODE_CERT_PATH,
    NODE_NAME_HEADER,
    ensure_pki,
    kubeconfig_path,
    write_kubeconfig,
)
from pocketkube.apiserver.registry import Registry
from pocketkube.apiserver.satokens import ServiceAccountTokens
from pocketkube.apiserver.strategies import build_strategies
from pocketkube.apiserver.watchcache import WatchCache
from pocketkube.storage.interface import Storage, open_storage

log = logging.getLogger(__name__)

# Paths that answer without credentials, as upstream's system:public-info-viewer allows.
# /cacerts is public as in k3s: joining agents fetch the CA there and check it against their token.
_PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/cacerts")
# The key the datastore check reads (absent is fine: the read itself is the check), and its time limit
# (kube-apiserver's --etcd-healthcheck-timeout).
_HEALTH_KEY = "/registry/health"
_HEALTH_TIMEOUT = 2.0
_AGGREGATED_DISCOVERY = "apidiscovery.k8s.io"
# The protobuf /openapi/v2: asked for as "...spec.v2@v1.0+protobuf", answered as "...spec.v2.v1.0+protobuf"
# ("@" is not allowed in a media type that Go's mime package parses), as kube-openapi's handler does.
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
OPENAPI_V2_PROTOBUF_PREFIX = "application/com.github.proto-openapi.spec.v2"
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass
class ServerConfig:
    data_dir: Path = Path("/var/lib/pocketkube")
    bind_address: str = "127.0.0.1"
    https_port: int = 6443
    datastore_endpoint: str = ""
    tls_sans: list[str] = field(default_factory=list)
    write_kubeconfig: Path | None = None
    service_cidr: str = "10.43.0.0/16"
    cluster_cidr: str = "10.42.0.0/16"
    # Seconds between compactions; each compacts to the revision seen at the previous one (as upstream).
    compaction_interval: float = 300.0
    # Admission plugins to leave out (kube-apiserver's --disable-admission-plugins); all others run.
    disable_admission_plugins: list[str] = field(default_factory=list)
    # Check kubelets' serving certificates against the cluster CA (upstream's --kubelet-certificate-authority);
    # off by default, as upstream without that flag.
    verify_kubelet_tls: bool = False

    @property
    def endpoint(self) -> str:
        return self.datastore_endpoint or f"sqlite://{self.data_dir / 'db' / 'state.db'}"

    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.bind_address in ("0.0.0.0", "::", "") else self.bind_address


def version_info() -> dict[str, str]:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "major": major, "minor": minor,
        "emulationMajor": major, "emulationMinor": minor,
        "minCompatibilityMajor": major, "minCompatibilityMinor": str(int(minor) - 1),
        "gitVersion": f"{KUBERNETES_VERSION}+pocketkube", "gitCommit": f"pocketkube-{__version__}",
        "gitTreeState": "clean", "buildDate": "2026-11-22T00:00:00Z",
        "goVersion": f"python{platform.python_version()}", "compiler": "cpython",
        "platform": f"linux/{machine}",
    }


def _wants_aggregated(request: web.Request) -> str | None:
    """The apidiscovery version asked for in Accept (v2 or v2beta1), if any."""
    for media_range in request.headers.get("Accept", "").split(","):
        params = dict(p.strip().split("=", 1) for p in media_range.split(";")[1:] if "=" in p)
        if params.get("g") == _AGGREGATED_DISCOVERY and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") in ("v2", "v2beta1"):
                return params["v"]
    return None


class APIServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.catalog = ResourceCatalog()
        self.storage: Storage | None = None
        self.cache: WatchCache | None = None
        self.registry: Registry | None = None
        self.ready = asyncio.Event()
        self._stopping = False
        self._runner: web.AppRunner | None = None
        self.kubelet_proxy: KubeletProxy | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.url = f"https://{config.client_host}:{config.https_port}"

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        tune_for_large_heaps()  # the watch cache holds every object
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # The address clients are told (the kubeconfig's) must be in the serving certificate, as k3s adds it.
        self.pki = pki = await asyncio.to_thread(ensure_pki, config.data_dir,
                                                 sans=[*config.tls_sans, config.client_host],
                                                 service_cidr=config.service_cidr)
        self.node_token = await asyncio.to_thread(ensure_node_token, config.data_dir, pki.ca_cert)
        self.service_account_tokens = ServiceAccountTokens(pki.tls_dir)
        self.authenticator = Authenticator(pki.ca_cert, pki.token_file, self.node_token,
                                           service_account_tokens=self.service_account_tokens)
        self.storage = open_storage(config.endpoint)
        await self.storage.start()
        self.cache = WatchCache(self.storage)
        await self.cache.start()
        strategies = build_strategies(self.catalog, service_cidr=config.service_cidr)
        self.registry = Registry(self.storage, self.cache, strategies)
        self.registry.admission = build_chain(ClusterState(self.registry), config.disable_admission_plugins)
        services = self.catalog.resource("", "v1", "services")
        assert services is not None
        await strategies.load_existing(
            {"Service": list(self.cache.resource(services.storage_prefix).objects.values())})
        self.handler = ResourceHandler(self.catalog, self.registry, self.service_account_tokens,
                                       self.authenticator)
        # `kubectl get cs`: the launcher gives the components it supervises their checks.
        self.component_statuses = ComponentStatuses(self.storage)
        self.handler.computed[("", "componentstatuses")] = self.component_statuses
        self.kubelet_proxy = KubeletProxy(self.catalog, self.registry, kubelet_client_ssl_context(
            pki.kubelet_client_cert, pki.kubelet_client_key, pki.ca_cert, verify=config.verify_kubelet_tls))
        # Established CRDs are served again before /readyz turns 200; the controller then keeps them current,
        # and their APIServices follow them.
        apiservices = APIServiceRegistration(self.catalog, self.registry)
        self._tasks.append(await CRDController(self.catalog, self.registry, apiservices.crds_changed).start())

        app = web.Application(middlewares=[self._errors_middleware, self._auth_middleware],
                              client_max_size=4 * 1024 * 1024)
        self._routes(app)
        app.on_response_prepare.append(add_request_warnings)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.bind_address, config.https_port, ssl_context=pki.ssl_context(),
                           reuse_address=True, backlog=1024)
        await site.start()

        await bootstrap_cluster(self.registry, self.catalog, service_cidr=config.service_cidr,
                                advertise_address=config.client_host, port=config.https_port)
        self._tasks.append(await apiservices.start())
        for path in (kubeconfig_path(config.data_dir), config.write_kubeconfig):
            if path is not None:
                await asyncio.to_thread(write_kubeconfig, path, server_url=self.url, pki=pki)
        self._tasks.append(asyncio.create_task(self._compactor(), name="compactor"))
        self.ready.set()

    async def stop(self) -> None:
        self._stopping = True
        self.ready.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._runner is not None:
            await self._runner.cleanup()
        if self.registry is not None:
            await self.registry.admission.close()
        if self.kubelet_proxy is not None:
            await self.kubelet_proxy.close()
        if self.cache is not None:
            await self.cache.close()
        if self.storage is not None:
            await self.storage.close()

    async def _compactor(self) -> None:
        """Every interval, forget history older than the revision seen one interval ago."""
        assert self.storage is not None and self.cache is not None
        previous = await self.storage.current_revision()
        while True:
            await asyncio.sleep(self.config.compaction_interval)
            try:
                if previous > self.storage.compacted_revision:
                    await self.storage.compact(previous)
                    self.cache.forget_before(previous)
                previous = await self.storage.current_revision()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("compaction failed")

    # --- middleware --------------------------------------------------------------------
    @web.middleware
    async def _errors_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.StatusError as err:
            response = json_response(err.to_status(), err.code)
            for name, value in err.headers.items():
                response.headers[name] = value
            return response
        except web.HTTPNotFound:
            return json_response(errors.StatusError(404, "NotFound", "the server could not find the requested "
                                                    "resource").to_status(), 404)
        except web.HTTPMethodNotAllowed:
            return json_response(errors.method_not_allowed("the server does not allow this method on the "
                                                           "requested resource").to_status(), 405)
        except web.HTTPRequestEntityTooLarge:
            return json_response(errors.too_large().to_status(), 413)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as err:
            # Objects are walked recursively and orjson encodes at most 255 levels: a body nested deeper
            # is the client's error (upstream's decoders stop at a maximum depth too), not a server fault.
            if isinstance(err, RecursionError) or (isinstance(err, orjson.JSONEncodeError)
                                                   and "Recursion limit" in str(err)):
                return json_response(errors.bad_request("the object is nested too deeply").to_status(), 400)
            log.exception("internal error serving %s %s", request.method, request.path)
            return json_response(errors.internal(f"{type(err).__name__}: {err}").to_status(), 500)

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(_PUBLIC_PATHS):
            return await handler(request)
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        user = self.authenticator.authenticate(peercert, request.headers.get("Authorization"))
        if user is None:
            raise errors.unauthorized()
        request["user"] = user
        return await handler(request)

    # --- routes ------------------------------------------------------------------------
    def _routes(self, app: web.Application) -> None:
        def get(path: str, fn: Any) -> None:
            app.router.add_get(path, fn)
            if path != "/":
                app.router.add_get(path + "/", fn)

        get("/version", self._version)
        get("/cacerts", self._cacerts)
        get(NODE_CERT_PATH, self._node_client_cert)
        for endpoint in self._health_endpoints():
            get("/" + endpoint.name, endpoint.handle)
            app.router.add_get(f"/{endpoint.name}/{{check:.+}}", endpoint.handle)
        get("/api", self._api)
        get("/api/v1", self._api_v1)
        get("/apis", self._apis)
        get("/apis/{group}", self._api_group)
        get("/apis/{group}/{version}", self._api_group_version)
        get("/openapi/v2", self._openapi_v2)
        get("/openapi/v3", self._openapi_v3_index)
        app.router.add_get("/openapi/v3/{path:.+}", self._openapi_v3)
        assert self.kubelet_proxy is not None
        app.router.add_route(  # pod subresources served by the pod's kubelet
            "*", "/api/v1/namespaces/{namespace}/pods/{name}/{subresource:log|exec|attach|portforward}",
            self.kubelet_proxy.pod_subresource)
        for path in ("/api/v1/nodes/{name}/proxy", "/api/v1/nodes/{name}/proxy/{path:.*}"):  # to a node's kubelet
            app.router.add_route("*", path, self.kubelet_proxy.node_proxy)
        app.router.add_route("*", "/api/v1/{tail:.+}", self._core_resource)
        app.router.add_route("*", "/apis/{group}/{version}/{tail:.+}", self._group_resource)

    async def _cacerts(self, request: web.Request) -> web.Response:
        return web.Response(body=self.pki.ca_cert.read_bytes(), content_type="text/plain")

    async def _node_client_cert(self, request: web.Request) -> web.Response:
        """A joining agent's client certificate (CN=system:node:NAME, O=system:nodes) for the node named in
        the X-Pocketkube-Node-Name header, as k3s' /v1-k3s/client-kubelet.crt: the join token (or an admin)
        may ask; the answer is the certificate followed by its key, PEM."""
        user = request["user"]
        if user.name != BOOTSTRAP_USER and ADMIN_GROUP not in user.groups:
            raise errors.StatusError(403, "Forbidden", f'User "{user.name}" cannot get node client certificates')
        name = request.headers.get(NODE_NAME_HEADER, "").strip()
        if not name or not _NODE_NAME.fullmatch(name):
            raise errors.bad_request(f"the {NODE_NAME_HEADER} header must hold a valid node name")
        cert, key = await asyncio.to_thread(self.pki.issue_client_cert, f"system:node:{name}", ["system:nodes"])
        return web.Response(body=cert + key, content_type="text/plain")

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(version_info(), pretty=True)

    def _health_endpoints(self) -> list[HealthEndpoint]:
        """upstream's checks: the datastore answers a read (its etcd check), start-up finished; /readyz also
        that the watch cache is filled and the server is not shutting down."""
        async def ping() -> None:
            return None

        async def datastore() -> None:
            if self.storage is None:
                raise RuntimeError("the datastore is not open")
            await asyncio.wait_for(self.storage.get(_HEALTH_KEY), _HEALTH_TIMEOUT)

        async def bootstrap() -> None:
            if not self.ready.is_set():
                raise RuntimeError("not finished")

        async def informer_sync() -> None:
            if self.cache is None or not self.cache.ready.is_set():
                raise RuntimeError("the watch cache is not filled yet")

        async def shutdown() -> None:
            if self._stopping:
                raise RuntimeError("process is shutting down")

        common = [("ping", ping), ("etcd", datastore), ("poststarthook/bootstrap", bootstrap)]
        return [HealthEndpoint("healthz", common), HealthEndpoint("livez", common),
                HealthEndpoint("readyz", [*common, ("informer-sync", informer_sync), ("shutdown", shutdown)])]

    def _discovery_response(self, body: dict[str, Any], aggregated: str | None) -> web.Response:
        response = web.Response(body=orjson.dumps(body))
        if aggregated:
            response.headers["Content-Type"] = (f"application/json;g={_AGGREGATED_DISCOVERY};v={aggregated};"
                                                f"as=APIGroupDiscoveryList")
        else:
            response.headers["Content-Type"] = "application/json"
        response.headers["Vary"] = "Accept"
        return response

    async def _api(self, request: web.Request) -> web.Response:
        aggregated = _wants_aggregated(request)
        if aggregated:
            body = discovery.aggregated_discovery(self.catalog, True, f"{_AGGREGATED_DISCOVERY}/{aggregated}")
        else:
            body = discovery.api_versions(f"{self.config.client_host}:{self.config.https_port}")
        return self._discovery_response(body, aggregated)

    async def _apis(self, request: web.Request) -> web.Response:
        aggregated = _wants_aggregated(request)
        if aggregated:
            body = discovery.aggregated_discovery(self.catalog, False, f"{_AGGREGATED_DISCOVERY}/{aggregated}")
        else:
            body = discovery.api_group_list(self.catalog)
        return self._discovery_response(body, aggregated)

    async def _api_v1(self, request: web.Request) -> web.Response:
        body = discovery.api_resource_list(self.catalog, "", "v1")
        assert body is not None
        return self._discovery_response(body, None)

    async def _api_group(self, request: web.Request) -> web.Response:
        body = discovery.api_group(self.catalog, request.match_info["group"])
        if body is None:
            raise web.HTTPNotFound()
        return self._discovery_response(body, None)

    async def _api_group_version(self, request: web.Request) -> web.Response:
        body = discovery.api_resource_list(self.catalog, request.match_info["group"],
                                           request.match_info["version"])
        if body is None:
            raise web.HTTPNotFound()
        return self._discovery_response(body, None)

    async def _openapi_v2(self, request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        if OPENAPI_V2_PROTOBUF_PREFIX in accept:
            body = await asyncio.to_thread(openapi.openapi_v2_protobuf, self.catalog)
            return web.Response(body=body, headers={"Content-Type": OPENAPI_V2_PROTOBUF})
        if "protobuf" in accept and "json" not in accept and "*/*" not in accept:
            raise errors.not_acceptable(f"only application/json and {OPENAPI_V2_PROTOBUF} are served for "
                                        "/openapi/v2")
        body = await asyncio.to_thread(openapi.openapi_v2, self.catalog)
        return web.Response(body=body, content_type="application/json")

    async def _openapi_v3_index(self, request: web.Request) -> web.Response:
        return json_response(await asyncio.to_thread(openapi.openapi_v3_index, self.catalog))

    async def _openapi_v3(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(openapi.openapi_v3_document, self.catalog, request.match_info["path"])
        if body is None:
            raise web.HTTPNotFound()
        response = web.Response(body=body, content_type="application/json")
        if "hash" in request.query:
            response.headers["Cache-Control"] = "public, immutable"
        return response

    async def _core_resource(self, request: web.Request) -> web.StreamResponse:
        return await self.handler.handle(request, "", "v1", request.match_info["tail"])

    async def _group_resource(self, request: web.Request) -> web.StreamResponse:
        return await self.handler.handle(request, request.match_info["group"], request.match_info["version"],
                                         request.match_info["tail"])
