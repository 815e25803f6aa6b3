"""Service account tokens for projected volumes, through the TokenRequest API
(POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token), cached and renewed as the kubelet's token
manager does: a token is replaced once 80% of its lifetime or 24 hours have passed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client, resource_path
from pocketkube.kubelet.volumes.model import Obj, SourceError

SERVICEACCOUNTS = ResourceCatalog().resource("", "v1", "serviceaccounts")
DEFAULT_EXPIRATION_SECONDS = 3600
MAX_TTL = 24 * 3600


@dataclass(frozen=True)
class _Token:
    value: str
    expires: float  # epoch seconds
    lifetime: int   # the seconds the server granted

    def needs_refresh(self, now: float) -> bool:
        issued = self.expires - self.lifetime
        return now > issued + MAX_TTL or now > self.expires - self.lifetime * 0.2

    def expired(self, now: float) -> bool:
        return now >= self.expires


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class ServiceAccountTokens:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._cache: dict[tuple[str, ...], _Token] = {}

    async def get(self, pod: Obj, audience: str, expiration_seconds: int | None) -> str:
        """A token of the pod's service account bound to the pod; raises SourceError when none can be had."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        namespace, account = meta.get("namespace") or "default", spec.get("serviceAccountName") or "default"
        seconds = expiration_seconds or DEFAULT_EXPIRATION_SECONDS
        key = (namespace, account, audience, str(seconds), meta.get("name", ""), meta.get("uid", ""))
        cached = self._cache.get(key)
        now = time.time()
        if cached is not None and not cached.needs_refresh(now):
            return cached.value
        try:
            token = await self._request(namespace, account, meta, audience, seconds)
        except SourceError as err:
            if cached is None:
                raise SourceError(f"failed to fetch token: {err}") from err
            if cached.expired(now):
                raise SourceError(f"token for service account {namespace}/{account} expired and refresh failed: "
                                  f"{err}") from err
            return cached.value  # still valid: try again at the next refresh
        self._cache[key] = token
        return token.value

    async def _request(self, namespace: str, account: str, meta: Obj, audience: str, seconds: int) -> _Token:
        spec: Obj = {"expirationSeconds": seconds,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name", ""),
                                        "uid": meta.get("uid", "")}}
        if audience:
            spec["audiences"] = [audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        path = resource_path(SERVICEACCOUNTS, namespace, account, "token")
        try:
            response = await self.client.request("POST", path, body=body)
        except APIError as err:
            details = err.body.get("details") or {}
            if err.status == 404 and details.get("kind") == "serviceaccounts":
                raise SourceError(str(err)) from err  # the service account itself is missing
            if err.status in (404, 405):
                raise SourceError(f"the API server does not serve the TokenRequest API (POST {path} answered "
                                  f"HTTP {err.status}): service account tokens cannot be projected") from err
            raise SourceError(str(err)) from err
        status = response.get("status") or {}
        if not status.get("token") or not status.get("expirationTimestamp"):
            raise SourceError(f"the TokenRequest for service account {namespace}/{account} returned no token")
        lifetime = int((response.get("spec") or {}).get("expirationSeconds") or seconds)
        return _Token(status["token"], _parse_time(status["expirationTimestamp"]), lifetime)

    def forget_pod(self, pod_uid: str) -> None:
        for key in [k for k in self._cache if k[-1] == pod_uid]:
            del self._cache[key]
