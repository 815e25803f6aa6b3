"""Service account tokens for projected volumes, against a small local HTTP server that answers the
TokenRequest API as upstream's API server does (pocketkube's own server does not serve it yet): the
request sent, caching and renewal, error wording, and the token file's mode and owner in a volume."""

from __future__ import annotations

import socket
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from pocketkube.client.rest import Client, ClientConfig
from pocketkube.kubelet.volumes import VolumeError, VolumeManager, mounts
from pocketkube.kubelet.volumes import tokens as tokens_module
from pocketkube.kubelet.volumes.model import SourceError
from pocketkube.kubelet.volumes.tokens import ServiceAccountTokens

Obj = dict[str, Any]


@dataclass
class TokenServer:
    """Answers POST .../serviceaccounts/<sa>/token for the accounts it knows; `serve` off answers 404 for
    the route, as a server without TokenRequest does."""

    accounts: set[str] = field(default_factory=lambda: {"default"})
    serve: bool = True
    requests: list[tuple[str, Obj]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        namespace, account = request.match_info["ns"], request.match_info["sa"]
        if not self.serve:
            return web.json_response({"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                                      "message": "the server could not find the requested resource"}, status=404)
        if account not in self.accounts:
            return web.json_response({"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                                      "message": f'serviceaccounts "{account}" not found',
                                      "details": {"name": account, "kind": "serviceaccounts"}}, status=404)
        body = await request.json()
        self.requests.append((f"{namespace}/{account}", body))
        seconds = body["spec"]["expirationSeconds"]
        expires = datetime.fromtimestamp(time.time() + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({**body, "status": {"token": f"token-{len(self.requests)}",
                                                     "expirationTimestamp": expires}}, status=201)


@pytest.fixture
def token_server() -> TokenServer:
    return TokenServer()


@pytest_asyncio.fixture
async def client(token_server: TokenServer) -> AsyncIterator[Client]:
    app = web.Application()
    app.router.add_post("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", token_server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        async with Client(ClientConfig(server=f"http://127.0.0.1:{port}")) as client:
            yield client
    finally:
        await runner.cleanup()


def _pod(**spec: Any) -> Obj:
    return {"metadata": {"name": "web", "namespace": "shop", "uid": str(uuid.uuid4())},
            "spec": {"serviceAccountName": "default", "containers": [{"name": "app"}], **spec}}


async def test_token_request_and_cache(client: Client, token_server: TokenServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = ServiceAccountTokens(client)
    pod = _pod()
    assert await tokens.get(pod, "", 3600) == "token-1"
    assert await tokens.get(pod, "", 3600) == "token-1"  # cached
    assert await tokens.get(pod, "vault", None) == "token-2"  # another audience, the default lifetime
    ((account, first), (_, second)) = token_server.requests
    assert account == "shop/default"
    assert first == {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
        "expirationSeconds": 3600,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": pod["metadata"]["uid"]}}}
    assert second["spec"]["audiences"] == ["vault"] and second["spec"]["expirationSeconds"] == 3600

    now = time.time()
    monkeypatch.setattr(tokens_module.time, "time", lambda: now + 0.79 * 3600)
    assert await tokens.get(pod, "", 3600) == "token-1"
    monkeypatch.setattr(tokens_module.time, "time", lambda: now + 0.81 * 3600)  # past 80% of its life
    assert await tokens.get(pod, "", 3600) == "token-3"
    # a failed renewal keeps a token that is still valid, and reports one that expired
    token_server.serve = False
    monkeypatch.setattr(tokens_module.time, "time", lambda: now + 0.81 * 3600 + 0.9 * 3600)
    assert await tokens.get(pod, "", 3600) == "token-3"
    monkeypatch.setattr(tokens_module.time, "time", lambda: now + 3 * 3600)
    with pytest.raises(SourceError, match="^token for service account shop/default expired and refresh failed: "):
        await tokens.get(pod, "", 3600)
    tokens.forget_pod(pod["metadata"]["uid"])
    with pytest.raises(SourceError, match="^failed to fetch token: the API server does not serve the TokenRequest"):
        await tokens.get(pod, "", 3600)


async def test_missing_service_account(client: Client) -> None:
    with pytest.raises(SourceError, match='^failed to fetch token: serviceaccounts "robot" not found$'):
        await ServiceAccountTokens(client).get(_pod(serviceAccountName="robot"), "", 600)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for point in mounts.mount_points_under(tmp_path):
        mounts.unmount(point)


API_ACCESS = {"name": "token", "projected": {"defaultMode": 0o644, "sources": [
    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}


@pytest.mark.parametrize(("security", "mode", "uid", "gid"), [
    ({}, 0o644, 0, 0),                                     # the projection's defaultMode
    ({"fsGroup": 2000}, 0o640, 0, 2000),                   # 0600, then group-readable through fsGroup
    ({"runAsUser": 1000}, 0o600, 1000, 0),                 # owned by the user every container runs as
])
async def test_token_file_in_a_projected_volume(client: Client, root: Path, security: Obj, mode: int, uid: int,
                                                gid: int) -> None:
    manager = VolumeManager(root / "pods", client, node_name="node-1")
    pod = _pod(volumes=[API_ACCESS], securityContext=security)
    ready = await manager.setup(pod)
    token = ready["token"].path / "token"
    info = token.stat()
    assert token.read_text() == "token-1" and (ready["token"].path / "namespace").read_text() == "shop"
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, uid, gid)
    assert await manager.refresh(pod, ready) is False  # the cached token is still fresh
    await manager.teardown(pod["metadata"]["uid"])


async def test_token_volume_without_token_request(client: Client, token_server: TokenServer, root: Path) -> None:
    token_server.serve = False
    manager = VolumeManager(root / "pods", client, node_name="node-1")
    with pytest.raises(VolumeError) as err:
        await manager.setup(_pod(volumes=[API_ACCESS]))
    assert str(err.value) == (
        'MountVolume.SetUp failed for volume "token" : failed to fetch token: the API server does not serve the '
        "TokenRequest API (POST /api/v1/namespaces/shop/serviceaccounts/default/token answered HTTP 404): service "
        "account tokens cannot be projected")
