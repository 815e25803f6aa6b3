"""The registry server over real HTTP on 127.0.0.1: every Distribution API endpoint, its error codes, token
authentication, TLS, garbage collection and the `pocketkube registry` command."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.registry import storage as storage_module
from pocketkube.engine.registry.server import RegistryConfig, start_registry
from pocketkube.engine.registry.storage import RegistryStorage
from selfsigned import self_signed

USER, PASSWORD = "alice", "s3cret"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    # As `htpasswd -B` writes them ($2y$); a low cost keeps the test fast.
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode().replace('$2b$', '$2y$', 1)}"
             for user, pw in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Registry:
    url: str
    root: Path  # DATA_DIR/registry


@asynccontextmanager
async def serving(config: RegistryConfig) -> AsyncIterator[Registry]:
    running = await start_registry(config)
    try:
        yield Registry(running.url, config.root)
    finally:
        await running.stop()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    async with serving(RegistryConfig(tmp_path / "data", listen="127.0.0.1:0")) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def error_code(response: aiohttp.ClientResponse) -> str:
    return (await response.json(content_type=None))["errors"][0]["code"]


async def push_blob(http: aiohttp.ClientSession, url: str, name: str, data: bytes,
                    headers: dict[str, str] | None = None) -> str:
    digest = digest_of(data)
    async with http.post(f"{url}/v2/{name}/blobs/uploads/?digest={digest}", data=data, headers=headers) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Location"] == f"/v2/{name}/blobs/{digest}"
        assert r.headers["Docker-Content-Digest"] == digest
    return digest


def image_manifest(config: bytes, layers: list[bytes], media_type: str = mt.OCI_MANIFEST, **extra) -> bytes:
    docker = media_type == mt.DOCKER_MANIFEST
    document = {
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, "digest": digest_of(config),
                   "size": len(config)},
        "layers": [{"mediaType": mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP, "digest": digest_of(layer),
                    "size": len(layer)} for layer in layers],
        **extra,
    }
    return json.dumps(document).encode()


async def push_image(http: aiohttp.ClientSession, url: str, name: str, tag: str, *, config: bytes = b'{"os":"linux"}',
                     layers: tuple[bytes, ...] = (b"layer-one",), media_type: str = mt.OCI_MANIFEST,
                     headers: dict[str, str] | None = None, **extra) -> str:
    for blob in (config, *layers):
        await push_blob(http, url, name, blob, headers)
    manifest = image_manifest(config, list(layers), media_type, **extra)
    async with http.put(f"{url}/v2/{name}/manifests/{tag}", data=manifest,
                        headers={"Content-Type": media_type, **(headers or {})}) as r:
        assert r.status == 201, await r.text()
        return r.headers["Docker-Content-Digest"]


# --- base, blobs ---------------------------------------------------------------------------------------

async def test_base_endpoint_answers_with_api_version(registry: Registry, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{registry.url}/v2/") as r:
        assert r.status == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert await r.json() == {}


async def test_monolithic_blob_get_head_and_ranges(registry: Registry, http: aiohttp.ClientSession) -> None:
    data = os.urandom(10000)
    digest = await push_blob(http, registry.url, "lib/app", data)
    blob_url = f"{registry.url}/v2/lib/app/blobs/{digest}"
    async with http.head(blob_url) as r:
        assert r.status == 200
        assert int(r.headers["Content-Length"]) == len(data)
        assert r.headers["Docker-Content-Digest"] == digest
        assert await r.read() == b""
    async with http.get(blob_url) as r:
        assert r.status == 200 and await r.read() == data
    async with http.get(blob_url, headers={"Range": "bytes=100-199"}) as r:
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert await r.read() == data[100:200]
    async with http.get(blob_url, headers={"Range": "bytes=20000-"}) as r:
        assert r.status == 416
    async with http.get(f"{registry.url}/v2/lib/app/blobs/{digest_of(b'absent')}") as r:
        assert r.status == 404 and await error_code(r) == "BLOB_UNKNOWN"
    async with http.get(f"{registry.url}/v2/lib/app/blobs/sha256:zz") as r:
        assert r.status == 400 and await error_code(r) == "DIGEST_INVALID"


async def test_chunked_upload_with_resume_and_out_of_order_chunk(registry: Registry,
                                                                  http: aiohttp.ClientSession) -> None:
    data = os.urandom(3000)
    async with http.post(f"{registry.url}/v2/app/blobs/uploads/") as r:
        assert r.status == 202
        location, upload_id = r.headers["Location"], r.headers["Docker-Upload-UUID"]
        assert location == f"/v2/app/blobs/uploads/{upload_id}"
        assert r.headers["Range"] == "0-0"
    upload_url = registry.url + location
    async with http.patch(upload_url, data=data[:1000], headers={"Content-Range": "0-999"}) as r:
        assert r.status == 202
        assert r.headers["Range"] == "0-999"
        location = r.headers["Location"]
    # resume: ask where the upload stands
    async with http.get(registry.url + location) as r:
        assert r.status == 204
        assert r.headers["Range"] == "0-999" and r.headers["Docker-Upload-UUID"] == upload_id
    async with http.patch(upload_url, data=data[2000:], headers={"Content-Range": "2000-2999"}) as r:
        assert r.status == 416 and await error_code(r) == "RANGE"
        assert r.headers["Range"] == "0-999"
    async with http.patch(upload_url, data=data[1000:1500], headers={"Content-Range": "1000-1999"}) as r:
        assert r.status == 400 and await error_code(r) == "SIZE_INVALID"  # Content-Length disagrees
    async with http.patch(upload_url, data=data[1000:2000], headers={"Content-Range": "1000-1999"}) as r:
        assert r.status == 202 and r.headers["Range"] == "0-1999"
    # the last chunk travels with the closing PUT
    async with http.put(f"{upload_url}?digest={digest_of(data)}", data=data[2000:],
                        headers={"Content-Range": "2000-2999"}) as r:
        assert r.status == 201
        assert r.headers["Docker-Content-Digest"] == digest_of(data)
    async with http.get(f"{registry.url}/v2/app/blobs/{digest_of(data)}") as r:
        assert await r.read() == data
    async with http.get(upload_url) as r:
        assert r.status == 404 and await error_code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_upload_with_wrong_digest_is_refused(registry: Registry, http: aiohttp.ClientSession) -> None:
    wrong = digest_of(b"something else")
    async with http.post(f"{registry.url}/v2/app/blobs/uploads/?digest={wrong}", data=b"content") as r:
        assert r.status == 400 and await error_code(r) == "DIGEST_INVALID"
    async with http.post(f"{registry.url}/v2/app/blobs/uploads/") as r:
        location = r.headers["Location"]
    async with http.put(f"{registry.url}{location}?digest={wrong}", data=b"content") as r:
        assert r.status == 400 and await error_code(r) == "DIGEST_INVALID"
    for digest in (wrong, digest_of(b"content")):
        async with http.head(f"{registry.url}/v2/app/blobs/{digest}") as r:
            assert r.status == 404
    assert not list((registry.root / "blobs" / "sha256").iterdir())


async def test_cancelled_upload_is_gone(registry: Registry, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{registry.url}/v2/app/blobs/uploads/") as r:
        upload_url = registry.url + r.headers["Location"]
    async with http.patch(upload_url, data=b"partial") as r:
        assert r.status == 202 and r.headers["Range"] == "0-6"
    async with http.delete(upload_url) as r:
        assert r.status == 204
    async with http.patch(upload_url, data=b"more") as r:
        assert r.status == 404 and await error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    async with http.get(f"{registry.url}/v2/app/blobs/uploads/not-a-uuid") as r:
        assert r.status == 404 and await error_code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_blobs_are_isolated_per_repository_unless_mounted(registry: Registry,
                                                                http: aiohttp.ClientSession) -> None:
    digest = await push_blob(http, registry.url, "team/a", b"shared content")
    async with http.get(f"{registry.url}/v2/team/b/blobs/{digest}") as r:
        assert r.status == 404 and await error_code(r) == "BLOB_UNKNOWN"
    async with http.post(f"{registry.url}/v2/team/b/blobs/uploads/?mount={digest}&from=team/a") as r:
        assert r.status == 201
        assert r.headers["Location"] == f"/v2/team/b/blobs/{digest}"
    async with http.get(f"{registry.url}/v2/team/b/blobs/{digest}") as r:
        assert r.status == 200 and await r.read() == b"shared content"
    # a blob the source does not hold: the registry opens an ordinary upload session instead
    async with http.post(f"{registry.url}/v2/team/c/blobs/uploads/?mount={digest_of(b'x')}&from=team/a") as r:
        assert r.status == 202 and "Docker-Upload-UUID" in r.headers
    # deleting unlinks it from one repository only
    async with http.delete(f"{registry.url}/v2/team/b/blobs/{digest}") as r:
        assert r.status == 202
    async with http.head(f"{registry.url}/v2/team/b/blobs/{digest}") as r:
        assert r.status == 404
    async with http.head(f"{registry.url}/v2/team/a/blobs/{digest}") as r:
        assert r.status == 200
    async with http.delete(f"{registry.url}/v2/team/b/blobs/{digest}") as r:
        assert r.status == 404 and await error_code(r) == "BLOB_UNKNOWN"


async def test_manifest_push_and_content_negotiation(registry: Registry, http: aiohttp.ClientSession) -> None:
    url = registry.url
    digest = await push_image(http, url, "app", "v1")
    manifest = image_manifest(b'{"os":"linux"}', [b"layer-one"])
    assert digest == digest_of(manifest)
    for reference in ("v1", digest):
        async with http.get(f"{url}/v2/app/manifests/{reference}", headers={"Accept": mt.OCI_MANIFEST}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == mt.OCI_MANIFEST
            assert r.headers["Docker-Content-Digest"] == digest
            assert await r.read() == manifest
    async with http.head(f"{url}/v2/app/manifests/v1") as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(manifest)
    # a client that only reads Docker manifests cannot use an OCI one
    async with http.get(f"{url}/v2/app/manifests/v1", headers={"Accept": mt.DOCKER_MANIFEST}) as r:
        assert r.status == 404 and await error_code(r) == "MANIFEST_UNKNOWN"
    async with http.get(f"{url}/v2/app/manifests/v2") as r:
        assert r.status == 404 and await error_code(r) == "MANIFEST_UNKNOWN"
    async with http.get(f"{url}/v2/app/manifests/{digest_of(b'none')}") as r:
        assert r.status == 404 and await error_code(r) == "MANIFEST_UNKNOWN"


async def test_manifest_list_serves_platform_manifest_to_old_clients(registry: Registry,
                                                                     http: aiohttp.ClientSession) -> None:
    url = registry.url
    amd64 = await push_image(http, url, "multi", "amd64", config=b'{"architecture":"amd64"}',
                             media_type=mt.DOCKER_MANIFEST)
    arm64 = await push_image(http, url, "multi", "arm64", config=b'{"architecture":"arm64"}', layers=(b"arm",),
                             media_type=mt.DOCKER_MANIFEST)
    sizes = {}
    for tag in ("amd64", "arm64"):
        async with http.get(f"{url}/v2/multi/manifests/{tag}") as r:
            sizes[tag] = len(await r.read())
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": [
        {"mediaType": mt.DOCKER_MANIFEST, "digest": amd64, "size": sizes["amd64"],
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": mt.DOCKER_MANIFEST, "digest": arm64, "size": sizes["arm64"],
         "platform": {"os": "linux", "architecture": "arm64"}}]}).encode()
    async with http.put(f"{url}/v2/multi/manifests/latest", data=index,
                        headers={"Content-Type": mt.DOCKER_MANIFEST_LIST}) as r:
        assert r.status == 201
    async with http.get(f"{url}/v2/multi/manifests/latest",
                        headers={"Accept": f"{mt.DOCKER_MANIFEST_LIST}, {mt.DOCKER_MANIFEST}"}) as r:
        assert r.headers["Content-Type"] == mt.DOCKER_MANIFEST_LIST and await r.read() == index
    async with http.get(f"{url}/v2/multi/manifests/latest", headers={"Accept": mt.DOCKER_MANIFEST}) as r:
        assert r.status == 200
        assert r.headers["Docker-Content-Digest"] == amd64  # this machine's platform


async def test_manifest_validation_errors(registry: Registry, http: aiohttp.ClientSession) -> None:
    url = registry.url

    async def put(reference: str, body: bytes, content_type: str = mt.OCI_MANIFEST) -> tuple[int, str]:
        async with http.put(f"{url}/v2/app/manifests/{reference}", data=body,
                            headers={"Content-Type": content_type}) as r:
            return r.status, (await error_code(r) if r.status >= 400 else "")

    config = await push_blob(http, url, "app", b"{}")
    missing_layer = image_manifest(b"{}", [b"never pushed"])
    assert await put("v1", missing_layer) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert await put("v1", b"{not json") == (400, "MANIFEST_INVALID")
    assert await put("v1", json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}).encode()) == \
        (400, "MANIFEST_INVALID")
    assert await put("v1", json.dumps({"schemaVersion": 1, "name": "app"}).encode()) == (400, "MANIFEST_INVALID")
    wrong_size = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": [],
                             "config": {"mediaType": mt.OCI_CONFIG, "digest": config, "size": 99}}).encode()
    assert await put("v1", wrong_size) == (400, "MANIFEST_INVALID")
    good = image_manifest(b"{}", [])
    assert await put("v1", good, mt.DOCKER_MANIFEST) == (400, "MANIFEST_INVALID")  # mediaType disagrees
    assert await put(digest_of(b"other"), good) == (400, "DIGEST_INVALID")
    assert await put("-bad", good) == (400, "MANIFEST_INVALID")
    assert await put(digest_of(good), good) == (201, "")
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": digest_of(b"no such manifest"), "size": 3}]}).encode()
    assert await put("idx", index, mt.OCI_INDEX) == (400, "MANIFEST_BLOB_UNKNOWN")
    async with http.put(f"{url}/v2/app/manifests/big", data=b" " * (4 * 1024 * 1024 + 1)) as r:
        assert r.status == 400 and await error_code(r) == "MANIFEST_INVALID"


async def test_tags_and_catalog_paginate_with_link(registry: Registry, http: aiohttp.ClientSession) -> None:
    url = registry.url
    for tag in ("e", "a", "c", "b", "d"):
        await push_image(http, url, "paged", tag)
    await push_image(http, url, "other/repo", "x")
    async with http.get(f"{url}/v2/paged/tags/list") as r:
        assert await r.json() == {"name": "paged", "tags": ["a", "b", "c", "d", "e"]}
        assert "Link" not in r.headers
    seen, next_url = [], f"{url}/v2/paged/tags/list?n=2"
    while next_url:
        async with http.get(next_url) as r:
            seen.append((await r.json())["tags"])
            link = r.headers.get("Link")
        next_url = url + link.split(">")[0].lstrip("<") if link else None
        if link:
            assert link.endswith('; rel="next"')
    assert seen == [["a", "b"], ["c", "d"], ["e"]]
    async with http.get(f"{url}/v2/paged/tags/list?n=0") as r:
        assert (await r.json())["tags"] == []
    async with http.get(f"{url}/v2/paged/tags/list?n=many") as r:
        assert r.status == 400
    async with http.get(f"{url}/v2/_catalog") as r:
        assert await r.json() == {"repositories": ["other/repo", "paged"]}
    async with http.get(f"{url}/v2/_catalog?n=1") as r:
        assert (await r.json())["repositories"] == ["other/repo"]
        assert r.headers["Link"] == '</v2/_catalog?n=1&last=other/repo>; rel="next"'
    async with http.get(f"{url}/v2/_catalog?n=1&last=other/repo") as r:
        assert (await r.json())["repositories"] == ["paged"] and "Link" not in r.headers


async def test_referrers_of_a_subject(registry: Registry, http: aiohttp.ClientSession) -> None:
    url = registry.url
    subject = await push_image(http, url, "signed", "v1")
    async with http.get(f"{url}/v2/signed/manifests/v1") as r:
        subject_size = len(await r.read())
    subject_descriptor = {"mediaType": mt.OCI_MANIFEST, "digest": subject, "size": subject_size}
    empty = b"{}"
    await push_blob(http, url, "signed", empty)
    signature = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(empty), "size": 2},
        "layers": [], "subject": subject_descriptor, "annotations": {"org.example": "yes"}}).encode()
    async with http.put(f"{url}/v2/signed/manifests/{digest_of(signature)}", data=signature,
                        headers={"Content-Type": mt.OCI_MANIFEST}) as r:
        assert r.status == 201
        assert r.headers["OCI-Subject"] == subject
    sbom = await push_image(http, url, "signed", "sbom", config=b'{"sbom":1}', subject=subject_descriptor)
    async with http.get(f"{url}/v2/signed/referrers/{subject}") as r:
        assert r.status == 200 and r.headers["Content-Type"] == mt.OCI_INDEX
        index = await r.json()
    assert index["mediaType"] == mt.OCI_INDEX and index["schemaVersion"] == 2
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert by_digest[digest_of(signature)] == {
        "mediaType": mt.OCI_MANIFEST, "digest": digest_of(signature), "size": len(signature),
        "artifactType": "application/vnd.example.signature", "annotations": {"org.example": "yes"}}
    assert by_digest[sbom]["artifactType"] == mt.OCI_CONFIG
    async with http.get(f"{url}/v2/signed/referrers/{subject}?artifactType=application/vnd.example.signature") as r:
        assert r.headers["OCI-Filters-Applied"] == "artifactType"
        assert [d["digest"] for d in (await r.json())["manifests"]] == [digest_of(signature)]
    async with http.get(f"{url}/v2/signed/referrers/{digest_of(b'nothing refers here')}") as r:
        assert r.status == 200 and (await r.json())["manifests"] == []
    # deleting a referrer removes it from the list
    async with http.delete(f"{url}/v2/signed/manifests/{digest_of(signature)}") as r:
        assert r.status == 202
    async with http.get(f"{url}/v2/signed/referrers/{subject}") as r:
        assert [d["digest"] for d in (await r.json())["manifests"]] == [sbom]


async def test_manifest_deletion_by_tag_and_by_digest(registry: Registry, http: aiohttp.ClientSession) -> None:
    url = registry.url
    digest = await push_image(http, url, "gone", "one")
    async with http.put(f"{url}/v2/gone/manifests/two", data=image_manifest(b'{"os":"linux"}', [b"layer-one"]),
                        headers={"Content-Type": mt.OCI_MANIFEST}) as r:
        assert r.status == 201
    async with http.delete(f"{url}/v2/gone/manifests/one") as r:
        assert r.status == 202
    async with http.get(f"{url}/v2/gone/tags/list") as r:
        assert (await r.json())["tags"] == ["two"]
    async with http.get(f"{url}/v2/gone/manifests/{digest}") as r:
        assert r.status == 200  # untagging kept the manifest
    async with http.delete(f"{url}/v2/gone/manifests/{digest}") as r:
        assert r.status == 202
    for reference in (digest, "two"):
        async with http.get(f"{url}/v2/gone/manifests/{reference}") as r:
            assert r.status == 404 and await error_code(r) == "MANIFEST_UNKNOWN"
    async with http.get(f"{url}/v2/gone/tags/list") as r:
        assert (await r.json())["tags"] == []
    async with http.delete(f"{url}/v2/gone/manifests/{digest}") as r:
        assert r.status == 404


async def test_names_and_methods(registry: Registry, http: aiohttp.ClientSession) -> None:
    url = registry.url
    async with http.get(f"{url}/v2/Upper/tags/list") as r:
        assert r.status == 400 and await error_code(r) == "NAME_INVALID"
    async with http.get(f"{url}/v2/a/_private/tags/list") as r:
        assert r.status == 400 and await error_code(r) == "NAME_INVALID"
    async with http.get(f"{url}/v2/unknown/tags/list") as r:
        assert r.status == 404 and await error_code(r) == "NAME_UNKNOWN"
    async with http.put(f"{url}/v2/app/tags/list") as r:
        assert r.status == 405 and await error_code(r) == "UNSUPPORTED"
    async with http.get(f"{url}/v2/app/nothing-here") as r:
        assert r.status == 404


async def test_too_many_upload_sessions(registry: Registry, http: aiohttp.ClientSession,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_module, "MAX_UPLOAD_SESSIONS", 2)
    for _ in range(2):
        async with http.post(f"{registry.url}/v2/app/blobs/uploads/") as r:
            assert r.status == 202
    async with http.post(f"{registry.url}/v2/app/blobs/uploads/") as r:
        assert r.status == 429 and await error_code(r) == "TOOMANYREQUESTS"


# --- authentication ------------------------------------------------------------------------------------

def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def parse_challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer"
    return dict(part.split("=", 1) for part in rest.replace('"', "").split(","))


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Registry]:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {USER: PASSWORD, "bob": "builder"})
    async with serving(RegistryConfig(tmp_path / "data", listen="127.0.0.1:0", htpasswd=htpasswd)) as running:
        yield running


async def test_token_flow(secured: Registry, http: aiohttp.ClientSession) -> None:
    url = secured.url
    async with http.get(f"{url}/v2/") as r:
        assert r.status == 401 and await error_code(r) == "UNAUTHORIZED"
        challenge = parse_challenge(r.headers["WWW-Authenticate"])
    assert challenge == {"realm": f"{url}/v2/token", "service": "pocketkube-registry"}
    async with http.get(f"{url}/v2/app/tags/list") as r:
        assert r.status == 401
        challenge = parse_challenge(r.headers["WWW-Authenticate"])
    assert challenge["scope"] == "repository:app:pull"
    async with http.head(f"{url}/v2/app/blobs/uploads/") as r:
        assert r.status == 405

    async def token(scope: str, headers: dict[str, str]) -> tuple[int, dict]:
        async with http.get(challenge["realm"], params={"service": challenge["service"], "scope": scope},
                            headers=headers) as r:
            return r.status, await r.json(content_type=None)

    status, body = await token("repository:app:pull,push", basic(USER, PASSWORD))
    assert status == 200
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"] and body["expires_in"] >= 60
    bearer = {"Authorization": f"Bearer {body['token']}"}
    await push_image(http, url, "app", "v1", headers=bearer)
    async with http.get(f"{url}/v2/app/tags/list", headers=bearer) as r:
        assert r.status == 200 and (await r.json())["tags"] == ["v1"]
    async with http.get(f"{url}/v2/", headers=bearer) as r:
        assert r.status == 200
    # the token is for "app" only
    async with http.get(f"{url}/v2/other/tags/list", headers=bearer) as r:
        assert r.status == 403 and await error_code(r) == "DENIED"

    status, body = await token("repository:app:pull", basic("bob", "builder"))
    pull_only = {"Authorization": f"Bearer {body['token']}"}
    async with http.get(f"{url}/v2/app/manifests/v1", headers=pull_only) as r:
        assert r.status == 200
    async with http.post(f"{url}/v2/app/blobs/uploads/", headers=pull_only) as r:
        assert r.status == 403 and await error_code(r) == "DENIED"

    assert (await token("repository:app:pull", basic(USER, "wrong")))[0] == 401
    assert (await token("repository:app:pull", {}))[0] == 401  # no anonymous access
    forged = body["token"][:-4] + ("AAAA" if not body["token"].endswith("AAAA") else "BBBB")
    async with http.get(f"{url}/v2/app/tags/list", headers={"Authorization": f"Bearer {forged}"}) as r:
        assert r.status == 401
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # HTTP Basic straight on the API works too
    async with http.get(f"{url}/v2/app/tags/list", headers=basic(USER, PASSWORD)) as r:
        assert r.status == 200
    async with http.get(f"{url}/v2/app/tags/list", headers=basic(USER, "wrong")) as r:
        assert r.status == 401
    async with http.get(f"{url}/v2/_catalog", headers=bearer) as r:
        assert r.status == 403  # the catalog needs registry:catalog:*
    status, body = await token("registry:catalog:*", basic(USER, PASSWORD))
    async with http.get(f"{url}/v2/_catalog", headers={"Authorization": f"Bearer {body['token']}"}) as r:
        assert r.status == 200 and (await r.json())["repositories"] == ["app"]
    # Docker's OAuth2 password grant
    async with http.post(challenge["realm"], data={"grant_type": "password", "username": USER, "password": PASSWORD,
                                                   "service": "pocketkube-registry",
                                                   "scope": "repository:app:pull"}) as r:
        assert r.status == 200 and "access_token" in await r.json()


async def test_anonymous_pull_when_allowed(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {USER: PASSWORD})
    config = RegistryConfig(tmp_path / "data", listen="127.0.0.1:0", htpasswd=htpasswd, allow_anonymous_pull=True)
    async with serving(config) as running:
        url = running.url
        async with http.get(f"{url}/v2/token", params={"scope": "repository:app:pull,push"},
                            headers=basic(USER, PASSWORD)) as r:
            user_token = (await r.json())["token"]
        await push_image(http, url, "app", "v1", headers={"Authorization": f"Bearer {user_token}"})
        async with http.get(f"{url}/v2/token", params={"scope": "repository:app:pull,push"}) as r:
            assert r.status == 200
            anonymous = {"Authorization": f"Bearer {(await r.json())['token']}"}
        async with http.get(f"{url}/v2/app/manifests/v1", headers=anonymous) as r:
            assert r.status == 200
        async with http.post(f"{url}/v2/app/blobs/uploads/", headers=anonymous) as r:
            assert r.status == 403 and await error_code(r) == "DENIED"


async def test_tls(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    cert, key = self_signed(tmp_path)
    async with serving(RegistryConfig(tmp_path / "data", listen="127.0.0.1:0", tls_cert=cert, tls_key=key)) as running:
        assert running.url.startswith("https://127.0.0.1:")
        async with http.get(f"{running.url}/v2/", ssl=False) as r:
            assert r.status == 200


async def run_cli(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "pocketkube.cli.main", *args,
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


# --- garbage collection --------------------------------------------------------------------------------

async def test_garbage_collect(registry: Registry, http: aiohttp.ClientSession) -> None:
    url = registry.url
    kept = await push_image(http, url, "gc", "keep", config=b'{"keep":1}', layers=(b"shared", b"kept-only"))
    dropped = await push_image(http, url, "gc", "drop", config=b'{"drop":1}', layers=(b"shared", b"dropped-only"))
    async with http.delete(f"{url}/v2/gc/manifests/{dropped}") as r:
        assert r.status == 202
    unreferenced = await push_blob(http, url, "gc", b"pushed but never used")
    storage = RegistryStorage(registry.root)

    # default grace period: everything was written just now, so nothing goes
    report = storage.garbage_collect()
    assert report.deleted == [] and set(report.recent) == {dropped, digest_of(b'{"drop":1}'),
                                                           digest_of(b"dropped-only"), unreferenced}
    dry = storage.garbage_collect(dry_run=True, grace=0)
    expected = sorted([dropped, digest_of(b'{"drop":1}'), digest_of(b"dropped-only"), unreferenced])
    assert [d for d, _ in dry.deleted] == expected
    assert all(storage.has_blob(d) for d in expected)

    report = storage.garbage_collect(grace=0)
    assert [d for d, _ in report.deleted] == expected
    assert report.marked == 4 and report.freed == sum(size for _, size in report.deleted)
    assert not any(storage.has_blob(d) for d in expected)
    async with http.head(f"{url}/v2/gc/blobs/{unreferenced}") as r:
        assert r.status == 404
    for blob in (kept, digest_of(b"shared"), digest_of(b"kept-only"), digest_of(b'{"keep":1}')):
        assert storage.has_blob(blob)
    async with http.get(f"{url}/v2/gc/manifests/keep") as r:
        assert r.status == 200

    # the command line: old blobs are reported, and an abandoned upload session goes too
    await push_blob(http, url, "gc", b"old and unused")
    old = time.time() - 7200
    os.utime(storage.blob_path(digest_of(b"old and unused")), (old, old))
    async with http.post(f"{url}/v2/gc/blobs/uploads/") as r:
        session = r.headers["Docker-Upload-UUID"]
    stale = time.time() - 2 * 86400
    os.utime(registry.root / "uploads" / session / "data", (stale, stale))
    command = ["registry", "garbage-collect", "--data-dir", str(registry.root.parent)]
    dry_out = await run_cli(*command, "--dry-run")
    assert f"blob eligible for deletion: {digest_of(b'old and unused')}" in dry_out
    assert storage.has_blob(digest_of(b"old and unused"))
    out = await run_cli(*command)
    assert f"blob deleted: {digest_of(b'old and unused')}" in out and f"abandoned upload deleted: {session}" in out
    assert "4 blobs marked, 1 blobs deleted" in out
    assert not storage.has_blob(digest_of(b"old and unused"))
    assert not (registry.root / "uploads" / session).exists()


# --- the command -----------------------------------------------------------------------------------------

def test_registry_command_serves_until_signalled(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "pocketkube.cli.main", "registry", "--listen",
                                f"127.0.0.1:{port}", "--data-dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert f"registry listening on http://127.0.0.1:{port}" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "registry" / "blobs" / "sha256").is_dir()


async def test_bad_htpasswd_entries_are_refused(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    with pytest.raises(ValueError, match="only bcrypt entries"):
        await start_registry(RegistryConfig(tmp_path / "data", listen="127.0.0.1:0", htpasswd=htpasswd))
