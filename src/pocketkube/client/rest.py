"""The components' API client: typed-by-ResourceInfo REST calls and watches over HTTPS."""

from __future__ import annotations

import base64
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import yaml

from pocketkube.api.kinds import ResourceInfo

Obj = dict[str, Any]
DEFAULT_USER_AGENT = "pocketkube/0.1.0"
# Connections one client keeps for requests (watches are apart and unbounded).
REQUEST_CONNECTIONS = 32


class APIError(Exception):
    """A failed API call, carrying the server's Status."""

    def __init__(self, status: int, body: Obj | None, method: str, path: str) -> None:
        self.status = status
        self.body = body or {}
        self.reason = str(self.body.get("reason", ""))
        message = self.body.get("message") or f"{method} {path} failed with HTTP {status}"
        super().__init__(message)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409 and self.reason == "Conflict"

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def gone(self) -> bool:
        return self.status == 410


@dataclass
class ClientConfig:
    server: str
    ca_data: bytes | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str | None = None) -> ClientConfig:
        """OSError when the file cannot be read, ValueError when it is not a kubeconfig naming a context,
        its cluster and user."""
        try:
            config = yaml.safe_load(Path(path).read_text())
            context_name = context or config.get("current-context")
            ctx = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
            cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
            user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        except (yaml.YAMLError, AttributeError, KeyError, TypeError, StopIteration) as err:
            raise ValueError(f"{path} is not a usable kubeconfig ({type(err).__name__}: {err})") from None

        def data(section: Obj, key: str) -> bytes | None:
            if section.get(f"{key}-data"):
                return base64.b64decode(section[f"{key}-data"])
            if section.get(key):
                return Path(section[key]).read_bytes()
            return None

        return cls(server=cluster["server"], ca_data=data(cluster, "certificate-authority"),
                   cert_data=data(user, "client-certificate"), key_data=data(user, "client-key"),
                   token=user.get("token"))

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_data.decode() if self.ca_data else None)
        if self.cert_data and self.key_data:
            # ssl only loads key pairs from files: keep them private and short-lived.
            with tempfile.TemporaryDirectory(prefix="pocketkube-client-") as tmp:
                cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
                cert.write_bytes(self.cert_data)
                key.touch(mode=0o600)
                key.write_bytes(self.key_data)
                ctx.load_cert_chain(cert, key)
        return ctx


def resource_path(info: ResourceInfo, namespace: str = "", name: str = "", subresource: str = "") -> str:
    base = f"/apis/{info.group}/{info.version}" if info.group else "/api/v1"
    path = f"{base}/namespaces/{namespace}/{info.plural}" if info.namespaced and namespace else \
        f"{base}/{info.plural}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


_PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


class Client:
    """One connection pool to one API server. Every method raises APIError on failure."""

    def __init__(self, config: ClientConfig, user_agent: str = DEFAULT_USER_AGENT) -> None:
        self.config = config
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        ssl_context = config.ssl_context()
        # Requests share a bounded pool: past the bound they queue in the client, where waiting costs nothing,
        # instead of opening ever more connections whose TLS handshakes load both ends just when the server
        # is busiest. Watches get their own pool with no cap: each holds its connection for as long as it
        # runs, and a cap would leave the informers past it (the garbage collector watches every resource)
        # waiting forever.
        self._session = aiohttp.ClientSession(
            config.server, headers=headers,
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=REQUEST_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        self._watch_session = aiohttp.ClientSession(
            config.server, headers=headers, connector=aiohttp.TCPConnector(ssl=ssl_context, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def close(self) -> None:
        await self._session.close()
        await self._watch_session.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json", timeout: float = 60) -> Obj:
        query = {k: v for k, v in (params or {}).items() if v not in (None, "", False)}
        url = f"{path}?{urlencode(query)}" if query else path
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else None
        async with self._session.request(method, url, data=data, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            try:
                decoded = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                decoded = {"message": raw.decode(errors="replace")}
            if resp.status >= 400:
                raise APIError(resp.status, decoded if isinstance(decoded, dict) else None, method, path)
            return decoded

    # --- verbs -------------------------------------------------------------------------
    async def get(self, info: ResourceInfo, name: str, namespace: str = "", subresource: str = "") -> Obj:
        return await self.request("GET", resource_path(info, namespace, name, subresource))

    async def list(self, info: ResourceInfo, namespace: str = "", *, label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> Obj:
        return await self.request("GET", resource_path(info, namespace), params={
            "labelSelector": label_selector, "fieldSelector": field_selector, "limit": limit or None,
            "continue": continue_token, "resourceVersion": resource_version})

    async def create(self, info: ResourceInfo, obj: Obj, namespace: str = "", *,
                     field_manager: str = "") -> Obj:
        namespace = namespace or obj.get("metadata", {}).get("namespace", "")
        return await self.request("POST", resource_path(info, namespace), body=obj,
                                  params={"fieldManager": field_manager})

    async def update(self, info: ResourceInfo, obj: Obj, subresource: str = "", *,
                     field_manager: str = "") -> Obj:
        meta = obj["metadata"]
        return await self.request("PUT", resource_path(info, meta.get("namespace", ""), meta["name"],
                                                       subresource), body=obj,
                                  params={"fieldManager": field_manager})

    async def patch(self, info: ResourceInfo, name: str, patch: Any, namespace: str = "", *,
                    patch_type: str = "merge", subresource: str = "", field_manager: str = "",
                    force: bool = False) -> Obj:
        return await self.request("PATCH", resource_path(info, namespace, name, subresource), body=patch,
                                  content_type=_PATCH_TYPES[patch_type],
                                  params={"fieldManager": field_manager, "force": "true" if force else None})

    async def delete(self, info: ResourceInfo, name: str, namespace: str = "", *,
                     propagation_policy: str | None = None, grace_period_seconds: int | None = None,
                     preconditions: Obj | None = None) -> Obj:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            body["preconditions"] = preconditions
        return await self.request("DELETE", resource_path(info, namespace, name), body=body)

    async def watch(self, info: ResourceInfo, namespace: str = "", *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "", timeout_seconds: int = 300,
                    bookmarks: bool = True) -> AsyncIterator[tuple[str, Obj]]:
        """Yield (type, object) until the server ends the watch. ERROR events raise APIError."""
        params = {"watch": "1", "resourceVersion": resource_version, "labelSelector": label_selector,
                  "fieldSelector": field_selector, "timeoutSeconds": timeout_seconds,
                  "allowWatchBookmarks": "true" if bookmarks else None}
        query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
        path = resource_path(info, namespace)
        async with self._watch_session.get(f"{path}?{query}",
                                     timeout=aiohttp.ClientTimeout(total=timeout_seconds + 30)) as resp:
            if resp.status >= 400:
                raw = await resp.read()
                raise APIError(resp.status, orjson.loads(raw) if raw else None, "GET", path)
            async for line in resp.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                if event["type"] == "ERROR":
                    status = event.get("object") or {}
                    raise APIError(int(status.get("code", 500)), status, "WATCH", path)
                yield event["type"], event["object"]
