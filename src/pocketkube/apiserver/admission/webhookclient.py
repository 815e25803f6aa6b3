"""Calling one admission webhook: the AdmissionReview it receives, where it is reached, what its answer means.

A webhook is reached at its clientConfig.url, or through its Service: the API server resolves the Service's
endpoints and connects to a ready one, naming `<service>.<namespace>.svc` for TLS, as kube-apiserver does with
aggregator routing (there is no service proxy on the API server's path).
"""

from __future__ import annotations

import base64
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from .interfaces import CREATE, DELETE, UPDATE, AdmissionAttributes
from .state import ClusterState

Obj = dict[str, Any]
DEFAULT_TIMEOUT_SECONDS = 10
REVIEW_VERSIONS = ("v1", "v1beta1")


class WebhookCallError(Exception):
    """The webhook could not be asked or gave no usable answer (its failurePolicy decides what follows)."""


@dataclass
class Verdict:
    allowed: bool
    status: Obj            # the response's status (a denial's code, reason and message)
    patch: list[Any] | None
    warnings: list[str]


@dataclass(frozen=True)
class Endpoint:
    url: str
    server_hostname: str | None
    ca_bundle: bytes


class WebhookClient:
    """One HTTPS session for every webhook of the server; TLS contexts kept per CA bundle."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[bytes, ssl.SSLContext] = {}

    async def review(self, webhook: Obj, attrs: AdmissionAttributes) -> Verdict:
        """Send the AdmissionReview for `attrs` to `webhook`; raises WebhookCallError when that fails."""
        versions = [v for v in webhook.get("admissionReviewVersions") or ["v1"] if v in REVIEW_VERSIONS]
        if not versions:
            raise WebhookCallError("webhook does not accept v1 or v1beta1 AdmissionReview")
        endpoint = self._endpoint(webhook.get("clientConfig") or {})
        request_uid = str(uuid.uuid4())
        review = {"apiVersion": f"admission.k8s.io/{versions[0]}", "kind": "AdmissionReview",
                  "request": _request(attrs, request_uid)}
        timeout = float(webhook.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)
        try:
            async with self._http().post(endpoint.url, data=orjson.dumps(review), ssl=self._context(endpoint),
                                         server_hostname=endpoint.server_hostname,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"},
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise WebhookCallError(f"failed to call webhook: an error on the server "
                                           f"({body[:200].decode(errors='replace')!r}) has prevented the request "
                                           f"from succeeding (post {endpoint.url}: HTTP {resp.status})")
        except (aiohttp.ClientError, OSError) as err:
            raise WebhookCallError(f'failed to call webhook: Post "{endpoint.url}": {err}') from None
        except TimeoutError:
            raise WebhookCallError(f'failed to call webhook: Post "{endpoint.url}": context deadline exceeded') \
                from None
        return _verdict(body, request_uid)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _context(self, endpoint: Endpoint) -> ssl.SSLContext | bool:
        if not endpoint.url.startswith("https://"):
            return False
        context = self._contexts.get(endpoint.ca_bundle)
        if context is None:
            context = ssl.create_default_context(cadata=endpoint.ca_bundle.decode() if endpoint.ca_bundle else None)
            self._contexts[endpoint.ca_bundle] = context
        return context

    def _endpoint(self, config: Obj) -> Endpoint:
        ca_bundle = base64.b64decode(config.get("caBundle") or "")
        if config.get("url"):
            return Endpoint(str(config["url"]), None, ca_bundle)
        service = config.get("service") or {}
        name, namespace = service.get("name", ""), service.get("namespace", "")
        port = int(service.get("port") or 443)
        address, target = self._service_backend(namespace, name, port)
        host = f"[{address}]" if ":" in address else address
        return Endpoint(f"https://{host}:{target}{service.get('path') or ''}", f"{name}.{namespace}.svc", ca_bundle)

    def _service_backend(self, namespace: str, name: str, port: int) -> tuple[str, int]:
        """A ready endpoint of the Service's port (address, target port)."""
        svc = self._state.get(self._state.info("", "v1", "services"), namespace, name)
        if svc is None:
            raise WebhookCallError(f'failed to call webhook: service "{name}" not found')
        ports = (svc.get("spec") or {}).get("ports") or []
        wanted = next((p for p in ports if p.get("port") == port), None)
        if wanted is None:
            raise WebhookCallError(f"failed to call webhook: service {namespace}/{name} has no port {port}")
        endpoints = self._state.get(self._state.info("", "v1", "endpoints"), namespace, name) or {}
        for subset in endpoints.get("subsets") or []:
            target = next((p.get("port") for p in subset.get("ports") or []
                           if (p.get("name") or "") == (wanted.get("name") or "")), None)
            addresses = subset.get("addresses") or []
            if target is not None and addresses:
                return str(addresses[0].get("ip")), int(target)
        raise WebhookCallError(f"failed to call webhook: service {namespace}/{name} has no ready endpoints")


def _request(attrs: AdmissionAttributes, request_uid: str) -> Obj:
    info = attrs.info
    kind = {"group": info.group, "version": info.version, "kind": info.kind}
    resource = {"group": info.group, "version": info.version, "resource": info.plural}
    request: Obj = {"uid": request_uid, "kind": kind, "resource": resource, "requestKind": kind,
                    "requestResource": resource, "name": attrs.name, "operation": attrs.operation,
                    "userInfo": attrs.user.as_api() if attrs.user is not None else {}, "object": attrs.object, "oldObject": attrs.old_object,
                    "dryRun": attrs.dry_run, "options": _options(attrs)}
    if attrs.subresource:
        request["subResource"] = request["requestSubResource"] = attrs.subresource
    if attrs.namespace:
        request["namespace"] = attrs.namespace
    return request


_OPTION_KINDS = {CREATE: "CreateOptions", UPDATE: "UpdateOptions", DELETE: "DeleteOptions"}


def _options(attrs: AdmissionAttributes) -> Obj | None:
    kind = _OPTION_KINDS.get(attrs.operation)
    if kind is None:
        return None
    options: Obj = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
    manager = getattr(attrs.options, "field_manager", "")
    if manager and attrs.operation != DELETE:
        options["fieldManager"] = manager
    if attrs.dry_run:
        options["dryRun"] = ["All"]
    return options


def _verdict(body: bytes, request_uid: str) -> Verdict:
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise WebhookCallError(f"received invalid webhook response: {err}") from None
    response = review.get("response") if isinstance(review, dict) else None
    if not isinstance(response, dict):
        raise WebhookCallError("webhook response was absent")
    if review.get("apiVersion") == "admission.k8s.io/v1" and response.get("uid") != request_uid:
        raise WebhookCallError(f"expected response.uid={request_uid!r}, got {response.get('uid')!r}")
    patch = None
    if response.get("patch"):
        if response.get("patchType") != "JSONPatch":
            raise WebhookCallError(f"unsupported patch type {response.get('patchType')!r}")
        try:
            patch = orjson.loads(base64.b64decode(response["patch"]))
        except (ValueError, orjson.JSONDecodeError) as err:
            raise WebhookCallError(f"received invalid webhook response: bad patch: {err}") from None
        if not isinstance(patch, list):
            raise WebhookCallError("received invalid webhook response: the patch is not a JSON patch")
    status = response.get("status") if isinstance(response.get("status"), dict) else {}
    warnings = [str(w) for w in response.get("warnings") or []]
    return Verdict(bool(response.get("allowed")), status, patch, warnings)

