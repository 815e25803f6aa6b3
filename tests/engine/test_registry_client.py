"""RegistryClient against our registry on 127.0.0.1: push from one ImageStore, pull into another, skip blobs
that are already there, concurrent pushes, resuming a chunk cut off in transit, token login with a Docker
config file, pulls by digest and from an index, and the push/pull/login/logout commands."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from pocketkube.cli.registry import ProgressPrinter
from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.store import Image, ImageStore, Layer
from pocketkube.engine.registry.client import ProgressEvent, RegistryClient, is_insecure, parse_challenge
from pocketkube.engine.registry.credentials import CredentialStore, default_config_path
from pocketkube.engine.registry.errors import RegistryError
from pocketkube.engine.registry.server import RegistryConfig, start_registry
from selfsigned import self_signed

USER, PASSWORD = "alice", "s3cret"


@dataclass
class Registry:
    url: str
    host: str  # 127.0.0.1:PORT, as image references name it
    root: Path


@asynccontextmanager
async def serving(config: RegistryConfig) -> AsyncIterator[Registry]:
    running = await start_registry(config)
    try:
        yield Registry(running.url, running.url.split("://", 1)[1], config.root)
    finally:
        await running.stop()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    async with serving(RegistryConfig(tmp_path / "registry-data", listen="127.0.0.1:0")) as running:
        yield running


def new_store(root: Path) -> ImageStore:
    return ImageStore(root / "images", ContentStore(root / "content"))


def layer_blob(store: ImageStore, files: dict[str, bytes]) -> Layer:
    """A gzip layer holding ``files``; the same files give the same blob (fixed mtimes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    compressed = gzip.compress(raw.getvalue(), mtime=0)
    digest = store.content.write_bytes(compressed)
    return Layer(digest, mt.OCI_LAYER_GZIP, len(compressed), "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())


def make_image(store: ImageStore, ref: str, layers: list[dict[str, bytes]], *, architecture: str = "amd64",
               media: str = "oci") -> Image:
    config = {"architecture": architecture, "os": "linux", "config": {"Cmd": ["sh"], "Env": [f"REF={ref}"]}}
    return store.create(config, [layer_blob(store, files) for files in layers], refs=[ref], media=media)


def statuses(events: list[ProgressEvent]) -> dict[str, list[str]]:
    by_layer: dict[str, list[str]] = {}
    for event in events:
        if not by_layer.get(event.id) or by_layer[event.id][-1] != event.status:
            by_layer.setdefault(event.id, []).append(event.status)
    return by_layer


BASE = {"bin/tool": b"#!/bin/sh\necho base\n" * 100}


async def test_push_then_pull_into_an_empty_store(registry: Registry, tmp_path: Path) -> None:
    source, target = new_store(tmp_path / "a"), new_store(tmp_path / "b")
    ref = f"{registry.host}/team/app:1"
    image = make_image(source, ref, [BASE, {"app/data": os.urandom(200_000)}])
    events: list[ProgressEvent] = []
    client = RegistryClient(progress=events.append)
    digest = await client.push(source, ref)
    assert digest == image.manifest_digest
    assert statuses(events) == {layer.digest[7:19]: ["Preparing", "Waiting", "Pushing", "Pushed"]
                                for layer in image.layers}

    events.clear()
    pulled = await client.pull(target, ref)
    assert (pulled.id, pulled.manifest_digest) == (image.id, image.manifest_digest)
    assert pulled.repo_tags == [ref]
    assert pulled.repo_digests == [f"{registry.host}/team/app@{digest}"]
    for layer in image.layers:
        assert target.content.read_bytes(layer.digest) == source.content.read_bytes(layer.digest)
    assert statuses(events) == {layer.digest[7:19]: ["Waiting", "Downloading", "Pull complete"]
                                for layer in image.layers}
    assert target.resolve(ref).config["config"]["Env"] == [f"REF={ref}"]

    # pulling again transfers nothing
    events.clear()
    again = await client.pull(target, ref)
    assert again.id == image.id
    assert {e.status for e in events} == {"Already exists"}


async def test_second_push_transfers_no_blob(registry: Registry, tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    ref = f"{registry.host}/app:1"
    image = make_image(store, ref, [BASE, {"x": b"x" * 5000}])
    await RegistryClient().push(store, ref)
    uploads_before = sorted((registry.root / "uploads").iterdir())
    events: list[ProgressEvent] = []
    assert await RegistryClient(progress=events.append).push(store, ref) == image.manifest_digest
    assert {e.status for e in events} - {"Preparing", "Waiting"} == {"Layer already exists"}
    assert sorted((registry.root / "uploads").iterdir()) == uploads_before == []
    # pushing the image under another name of the same registry mounts its layers
    events.clear()
    store.tag(ref, f"{registry.host}/copy:2")
    await RegistryClient(progress=events.append).push(store, f"{registry.host}/copy:2")
    assert {e.status for e in events} - {"Preparing", "Waiting"} == {"Mounted from app"}


async def test_concurrent_pushes_of_images_sharing_a_layer(registry: Registry, tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    first = make_image(store, f"{registry.host}/one:1", [BASE, {"one": os.urandom(50_000)}])
    second = make_image(store, f"{registry.host}/two:1", [BASE, {"two": os.urandom(50_000)}], media="docker")
    third = make_image(store, f"{registry.host}/one:2", [BASE, {"three": b"3"}])
    assert first.layers[0].digest == second.layers[0].digest == third.layers[0].digest
    client = RegistryClient()
    digests = await asyncio.gather(client.push(store, f"{registry.host}/one:1"),
                                   client.push(store, f"{registry.host}/two:1"),
                                   client.push(store, f"{registry.host}/one:2"))
    assert digests == [first.manifest_digest, second.manifest_digest, third.manifest_digest]
    target = new_store(tmp_path / "t")
    pulled = await asyncio.gather(*(client.pull(target, f"{registry.host}/{name}")
                                    for name in ("one:1", "two:1", "one:2")))
    assert [image.id for image in pulled] == [first.id, second.id, third.id]
    assert pulled[1].manifest["mediaType"] == mt.DOCKER_MANIFEST


class Proxy:
    """An HTTP proxy in front of the registry, on its own port of 127.0.0.1."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.host = ""

    async def handle(self, request: web.Request) -> web.Response:
        return await self.forward(request, await request.read())

    async def forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding", "connection", "authorization")}
        async with aiohttp.ClientSession() as http:
            async with http.request(request.method, self.upstream + request.path_qs, headers=headers,
                                    data=body) as response:
                payload = await response.read()
                kept = {k: v for k, v in response.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server")}
                return web.Response(status=response.status, body=payload, headers=kept)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        app = web.Application(client_max_size=1 << 24)
        app.router.add_route("*", "/{path:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.host = f"127.0.0.1:{runner.addresses[0][1]}"
            yield self.host
        finally:
            await runner.cleanup()


class CuttingProxy(Proxy):
    """Cuts the second PATCH off halfway: the registry receives half the chunk and then the connection
    ends, as when a network fails mid-upload."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.patches = 0
        self.cut = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "PATCH":
            self.patches += 1
            if self.patches == 2:
                await self._send_half(request, body)
                self.cut += 1
                return web.Response(status=502, text="upstream connection lost")
        return await self.forward(request, body)

    async def _send_half(self, request: web.Request, body: bytes) -> None:
        host, port = self.upstream.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (f"PATCH {request.path_qs} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Range: {request.headers['Content-Range']}\r\nContent-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body[:len(body) // 2])
        await writer.drain()
        writer.write_eof()
        await reader.read()  # the registry hangs up once it has taken what arrived
        writer.close()
        await writer.wait_closed()


class BasicAuthGate(Proxy):
    """A registry front that wants HTTP Basic credentials (the challenge some registries send instead of
    the token flow)."""

    async def handle(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                     status=401, headers={"WWW-Authenticate": 'Basic realm="gate"'})
        return await super().handle(request)


async def test_chunked_push_resumes_after_a_failed_chunk(registry: Registry, tmp_path: Path) -> None:
    proxy = CuttingProxy(registry.url)
    async with proxy.running() as proxy_host:
        store = new_store(tmp_path / "s")
        big = os.urandom(700_000)  # random: gzip cannot shrink it below the chunk size
        image = make_image(store, f"{proxy_host}/big:1", [{"big": big}])
        events: list[ProgressEvent] = []
        client = RegistryClient(progress=events.append, chunk_size=128 * 1024)
        assert await client.push(store, f"{proxy_host}/big:1") == image.manifest_digest
    chunk = 128 * 1024
    assert proxy.cut == 1
    pushing = [e.current for e in events if e.status == "Pushing"]
    assert pushing == sorted(pushing) and pushing[-1] == image.layers[0].size
    # the second chunk was cut in half: the client went on from where the registry's data ended
    assert chunk + chunk // 2 + chunk in pushing
    target = new_store(tmp_path / "t")
    pulled = await RegistryClient().pull(target, f"{registry.host}/big:1")
    assert target.content.read_bytes(pulled.layers[0].digest) == store.content.read_bytes(image.layers[0].digest)


async def test_pull_by_digest_and_errors(registry: Registry, tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    image = make_image(store, f"{registry.host}/app:1", [BASE])
    client = RegistryClient()
    digest = await client.push(store, f"{registry.host}/app:1")
    target = new_store(tmp_path / "t")
    pulled = await client.pull(target, f"{registry.host}/app@{digest}")
    assert pulled.id == image.id and pulled.repo_tags == []
    assert pulled.repo_digests == [f"{registry.host}/app@{digest}"]
    assert target.resolve(f"{registry.host}/app@{digest}").id == image.id
    with pytest.raises(RegistryError) as missing:
        await client.pull(target, f"{registry.host}/app:nope")
    assert missing.value.code == "MANIFEST_UNKNOWN" and missing.value.status == 404
    assert str(missing.value).startswith("manifest unknown: ")
    with pytest.raises(RegistryError, match="cannot push to a digest reference"):
        await client.push(store, f"{registry.host}/app:1", target=f"{registry.host}/app@{digest}")


async def test_pull_selects_the_platform_from_an_index(registry: Registry, tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    amd64 = make_image(store, f"{registry.host}/multi:amd64", [BASE])
    arm64 = make_image(store, f"{registry.host}/multi:arm64", [{"arm": b"arm"}], architecture="arm64")
    client = RegistryClient()
    for image in (amd64, arm64):
        await client.push(store, image.repo_tags[0])
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": image.manifest_digest,
         "size": store.content.size(image.manifest_digest),
         "platform": {"os": "linux", "architecture": image.config["architecture"]}}
        for image in (amd64, arm64)]}).encode()
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{registry.url}/v2/multi/manifests/latest", data=index,
                            headers={"Content-Type": mt.OCI_INDEX}) as response:
            assert response.status == 201
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    target = new_store(tmp_path / "t")
    pulled = await client.pull(target, f"{registry.host}/multi:latest")
    assert pulled.id == amd64.id
    assert pulled.repo_digests == [f"{registry.host}/multi@{index_digest}"]  # Docker shows the index digest
    other = await client.pull(new_store(tmp_path / "u"), f"{registry.host}/multi:latest", platform=("linux", "arm64"))
    assert other.id == arm64.id
    with pytest.raises(RegistryError, match="no matching manifest for linux/s390x"):
        await client.pull(new_store(tmp_path / "v"), f"{registry.host}/multi:latest", platform=("linux", "s390x"))


def write_htpasswd(path: Path) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    path.write_text(f"{USER}:{hashed}\n")
    return path


async def test_login_saves_credentials_that_push_and_pull_use(tmp_path: Path) -> None:
    config = RegistryConfig(tmp_path / "registry-data", listen="127.0.0.1:0",
                            htpasswd=write_htpasswd(tmp_path / "htpasswd"))
    async with serving(config) as registry:
        store = new_store(tmp_path / "s")
        ref = f"{registry.host}/private/app:1"
        image = make_image(store, ref, [BASE])
        with pytest.raises(RegistryError) as denied:
            await RegistryClient().push(store, ref)
        assert denied.value.code == "UNAUTHORIZED"

        credentials = CredentialStore(tmp_path / "docker" / "config.json")
        client = RegistryClient(credentials=credentials)
        with pytest.raises(RegistryError, match="incorrect username or password"):
            await client.login(registry.host, USER, "wrong")
        assert credentials.get(registry.host) is None
        await client.login(f"http://{registry.host}/", USER, PASSWORD)
        saved = json.loads((tmp_path / "docker" / "config.json").read_text())
        assert saved == {"auths": {registry.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}
        assert (tmp_path / "docker" / "config.json").stat().st_mode & 0o777 == 0o600

        fresh = RegistryClient(credentials=CredentialStore(tmp_path / "docker" / "config.json"))
        assert await fresh.push(store, ref) == image.manifest_digest
        pulled = await fresh.pull(new_store(tmp_path / "t"), ref)
        assert pulled.id == image.id
        # a kubernetes.io/dockerconfigjson secret carries the same document
        from_secret = CredentialStore.from_document((tmp_path / "docker" / "config.json").read_bytes())
        assert (await RegistryClient(credentials=from_secret).pull(new_store(tmp_path / "u"), ref)).id == image.id

        assert credentials.remove(registry.host) and not credentials.remove(registry.host)
        with pytest.raises(RegistryError) as anonymous:
            await RegistryClient(credentials=credentials).pull(new_store(tmp_path / "w"), ref)
        assert anonymous.value.code == "UNAUTHORIZED"


async def test_basic_auth_challenge(registry: Registry, tmp_path: Path) -> None:
    async with BasicAuthGate(registry.url).running() as gate:
        store = new_store(tmp_path / "s")
        image = make_image(store, f"{gate}/basic:1", [BASE])
        with pytest.raises(RegistryError) as refused:
            await RegistryClient().push(store, f"{gate}/basic:1")
        assert refused.value.code == "UNAUTHORIZED", refused.value
        credentials = CredentialStore(tmp_path / "config.json")
        client = RegistryClient(credentials=credentials)
        with pytest.raises(RegistryError, match="authentication required"):
            await client.login(gate, USER, "wrong")
        await client.login(gate, USER, PASSWORD)
        assert await client.push(store, f"{gate}/basic:1") == image.manifest_digest
        assert (await client.pull(new_store(tmp_path / "t"), f"{gate}/basic:1")).id == image.id


async def test_pull_over_tls_from_a_loopback_registry(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = RegistryConfig(tmp_path / "registry-data", listen="127.0.0.1:0", tls_cert=cert, tls_key=key)
    async with serving(config) as registry:
        assert registry.url.startswith("https://")
        store = new_store(tmp_path / "s")
        image = make_image(store, f"{registry.host}/secure:1", [BASE])
        client = RegistryClient()
        await client.push(store, f"{registry.host}/secure:1")
        assert (await client.pull(new_store(tmp_path / "t"), f"{registry.host}/secure:1")).id == image.id


def test_credential_store_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    assert default_config_path() == tmp_path / "cfg" / "config.json"
    store = CredentialStore()
    store.save("docker.io", "hubuser", "hubpass")
    store.save("https://registry.example.com/v2/", "u", "p:with:colons")
    document = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert set(document["auths"]) == {"https://index.docker.io/v1/", "registry.example.com"}
    assert store.get("index.docker.io").username == "hubuser"
    assert store.get("registry-1.docker.io").password == "hubpass"
    assert store.get("registry.example.com").password == "p:with:colons"
    assert store.get("other.example.com") is None
    # entries written by other tools, and documents kept in Kubernetes secrets
    legacy = CredentialStore.from_document(json.dumps({"http://old.example.com:5000/v1/": {
        "username": "x", "password": "y"}}))
    assert legacy.get("old.example.com:5000").username == "x"
    assert store.remove("docker.io") and store.get("docker.io") is None
    assert "registry.example.com" in json.loads((tmp_path / "cfg" / "config.json").read_text())["auths"]


def test_transport_rules() -> None:
    assert is_insecure("localhost:5000", []) and is_insecure("127.0.0.2:80", []) and is_insecure("[::1]:5000", [])
    assert not is_insecure("registry.example.com", [])
    assert is_insecure("registry.example.com:5000", ["registry.example.com:5000"])
    assert is_insecure("10.1.2.3:5000", ["10.0.0.0/8"]) and not is_insecure("11.1.2.3", ["10.0.0.0/8"])
    assert parse_challenge('Bearer realm="https://auth.example.com/token",service="reg",scope="repository:a:pull"') == (
        "bearer", {"realm": "https://auth.example.com/token", "service": "reg", "scope": "repository:a:pull"})


def test_progress_printer_plain_and_terminal() -> None:
    plain = io.StringIO()
    printer = ProgressPrinter(plain, tty=False)
    for event in [ProgressEvent("aaa", "Waiting"), ProgressEvent("aaa", "Downloading", 1, 10),
                  ProgressEvent("aaa", "Downloading", 10, 10), ProgressEvent("aaa", "Pull complete", 10, 10)]:
        printer(event)
    assert plain.getvalue() == "aaa: Waiting\naaa: Pull complete\n"
    terminal = io.StringIO()
    printer = ProgressPrinter(terminal, tty=True)
    printer(ProgressEvent("aaa", "Waiting"))
    printer(ProgressEvent("bbb", "Waiting"))
    printer(ProgressEvent("aaa", "Downloading", 1_500_000, 3_000_000))
    assert terminal.getvalue().endswith("\x1b[2A\r\x1b[2Kaaa: Downloading [=========================>"
                                        "                        ]  1.5MB/3MB\x1b[2B\r")


async def run_cli(env: dict[str, str], *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pocketkube.cli.main", *args, env={**os.environ, **env},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await process.communicate(stdin)
    return process.returncode, out.decode(), err.decode()


async def test_push_pull_login_logout_commands(tmp_path: Path) -> None:
    config = RegistryConfig(tmp_path / "registry-data", listen="127.0.0.1:0",
                            htpasswd=write_htpasswd(tmp_path / "htpasswd"))
    async with serving(config) as registry:
        env = {"POCKETKUBE_DATA_DIR": str(tmp_path / "pk"), "DOCKER_CONFIG": str(tmp_path / "docker")}
        store = new_store(tmp_path / "pk" / "engine")
        ref = f"{registry.host}/cli/app:1"
        image = make_image(store, ref, [BASE])

        code, _, err = await run_cli(env, "push", ref)
        assert code == 1 and err.startswith("Error: unauthorized")
        code, out, err = await run_cli(env, "login", "-u", USER, "--password-stdin", registry.host,
                                       stdin=f"{PASSWORD}\n".encode())
        assert (code, out) == (0, "Login Succeeded\n"), err
        code, out, err = await run_cli(env, "push", ref)
        assert code == 0, err
        layer = image.layers[0].digest[7:19]
        size = store.content.size(image.manifest_digest)
        assert out == (f"The push refers to repository [{registry.host}/cli/app]\n{layer}: Preparing\n"
                       f"{layer}: Waiting\n{layer}: Pushed\n1: digest: {image.manifest_digest} size: {size}\n")
        code, out, err = await run_cli(env, "push", ref)
        assert f"{layer}: Layer already exists\n" in out

        pull_env = {**env, "POCKETKUBE_DATA_DIR": str(tmp_path / "pk2")}
        code, out, err = await run_cli(pull_env, "pull", ref)
        assert code == 0, err
        assert out == (f"1: Pulling from cli/app\n{layer}: Waiting\n{layer}: Pull complete\n"
                       f"Digest: {image.manifest_digest}\nStatus: Downloaded newer image for {ref}\n{ref}\n")
        code, out, err = await run_cli(pull_env, "pull", ref)
        assert f"{layer}: Already exists\n" in out and f"Status: Image is up to date for {ref}\n" in out
        assert new_store(tmp_path / "pk2" / "engine").resolve(ref).id == image.id

        code, out, err = await run_cli(env, "pull", f"{registry.host}/cli/absent:1")
        assert code == 1 and "manifest unknown" in err
        code, out, err = await run_cli(env, "push", f"{registry.host}/cli/nothing:1")
        assert (code, err) == (1, f"Error: An image does not exist locally with the tag: {registry.host}/cli/nothing\n")

        code, out, _ = await run_cli(env, "logout", registry.host)
        assert (code, out) == (0, f"Removing login credentials for {registry.host}\n")
        code, out, _ = await run_cli(env, "logout", registry.host)
        assert out == f"Not logged in to {registry.host}\n"
        code, _, err = await run_cli(env, "login", "-u", USER, "-p", "wrong", registry.host)
        assert code == 1 and "incorrect username or password" in err
