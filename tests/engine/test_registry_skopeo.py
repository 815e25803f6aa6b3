"""Our registry with an independent client: Debian's skopeo copies OCI layouts (built with umoci) into it and
back out, with and without htpasswd logins, and inspects what our own client pushed."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import bcrypt
import pytest

from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.store import ImageStore, Layer
from pocketkube.engine.registry.client import RegistryClient
from pocketkube.engine.registry.server import RegistryConfig, start_registry

SKOPEO = "/usr/bin/skopeo"
USER, PASSWORD = "ci", "pushpass"


@asynccontextmanager
async def serving(config: RegistryConfig) -> AsyncIterator[str]:
    """Yields ``127.0.0.1:PORT``."""
    running = await start_registry(config)
    try:
        yield running.url.split("://", 1)[1]
    finally:
        await running.stop()


async def run(*command: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command without blocking the event loop the registry is served from."""
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                   env=env)
    out, _ = await process.communicate()
    return process.returncode, out.decode()


async def skopeo(tmp_path: Path, *args: str, check: bool = True) -> str:
    # The policy accepts anything (no signatures here); the auth file keeps root's logins out of the test.
    code, out = await run(SKOPEO, "--insecure-policy", *args,
                          env={"PATH": "/usr/bin:/bin", "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
                               "HOME": str(tmp_path)})
    if check:
        assert code == 0, f"skopeo {' '.join(args)} failed:\n{out}"
    return out if code == 0 else f"exit {code}: {out}"


@pytest.fixture
def oci_layout(tmp_path: Path) -> Path:
    """An OCI image layout with one tagged image, built by umoci from a small root filesystem."""
    layout = tmp_path / "layout"
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "greeting").write_text("hello from umoci\n")
    (rootfs / "bin").mkdir()
    (rootfs / "bin" / "payload").write_bytes(bytes(range(256)) * 400)
    for command in (["umoci", "init", "--layout", str(layout)], ["umoci", "new", "--image", f"{layout}:v1"],
                    ["umoci", "insert", "--image", f"{layout}:v1", str(rootfs), "/"]):
        subprocess.run(command, check=True, capture_output=True)
    return layout


def layout_manifest(layout: Path, tag: str) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return next(d for d in index["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == tag)


async def test_skopeo_copies_into_the_registry_and_back(oci_layout: Path, tmp_path: Path) -> None:
    async with serving(RegistryConfig(tmp_path / "data", listen="127.0.0.1:0")) as host:
        await skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{oci_layout}:v1", f"docker://{host}/umoci/img:v1")
        copied = tmp_path / "copied"
        await skopeo(tmp_path, "copy", "--src-tls-verify=false", f"docker://{host}/umoci/img:v1", f"oci:{copied}:v1")
        listed = json.loads(await skopeo(tmp_path, "list-tags", "--tls-verify=false", f"docker://{host}/umoci/img"))
        # skopeo inspect digests the manifest bytes it got, so equal digests mean untouched content
        inspected = json.loads(await skopeo(tmp_path, "inspect", "--tls-verify=false", f"docker://{host}/umoci/img:v1"))
    original, roundtrip = layout_manifest(oci_layout, "v1"), layout_manifest(copied, "v1")
    assert roundtrip["digest"] == original["digest"] == inspected["Digest"]
    assert listed["Tags"] == ["v1"]
    manifest = json.loads((oci_layout / "blobs" / "sha256" / original["digest"][7:]).read_bytes())
    assert inspected["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    for layer in manifest["layers"]:
        assert (copied / "blobs" / "sha256" / layer["digest"][7:]).read_bytes() == \
            (oci_layout / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()


async def test_skopeo_with_htpasswd_logins(oci_layout: Path, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    (tmp_path / "htpasswd").write_text(f"{USER}:{hashed}\n")
    config = RegistryConfig(tmp_path / "data", listen="127.0.0.1:0", htpasswd=tmp_path / "htpasswd")
    async with serving(config) as host:
        refused = await skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{oci_layout}:v1",
                               f"docker://{host}/private/img:v1", check=False)
        assert refused.startswith("exit ") and "unauthorized" in refused
        wrong = await skopeo(tmp_path, "copy", "--dest-tls-verify=false", "--dest-creds", f"{USER}:nope",
                             f"oci:{oci_layout}:v1", f"docker://{host}/private/img:v1", check=False)
        assert wrong.startswith("exit ") and "invalid username/password" in wrong
        await skopeo(tmp_path, "copy", "--dest-tls-verify=false", "--dest-creds", f"{USER}:{PASSWORD}",
                     f"oci:{oci_layout}:v1", f"docker://{host}/private/img:v1")
        copied = tmp_path / "copied"
        await skopeo(tmp_path, "copy", "--src-tls-verify=false", "--src-creds", f"{USER}:{PASSWORD}",
                     f"docker://{host}/private/img:v1", f"oci:{copied}:v1")
    assert layout_manifest(copied, "v1")["digest"] == layout_manifest(oci_layout, "v1")["digest"]


def small_image(store: ImageStore, ref: str) -> tuple[str, list[str]]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("etc/motd")
        data = b"pushed by pocketkube\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    compressed = gzip.compress(raw.getvalue(), mtime=0)
    layer = Layer(store.content.write_bytes(compressed), mt.OCI_LAYER_GZIP, len(compressed),
                  "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
    image = store.create({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["cat", "/etc/motd"]}},
                         [layer], refs=[ref])
    return image.manifest_digest, [layer.digest]


async def test_skopeo_reads_what_our_client_pushed_and_we_pull_what_skopeo_pushed(oci_layout: Path,
                                                                                  tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", ContentStore(tmp_path / "content"))
    async with serving(RegistryConfig(tmp_path / "data", listen="127.0.0.1:0")) as host:
        digest, layers = small_image(store, f"{host}/ours/app:1")
        client = RegistryClient()
        assert await client.push(store, f"{host}/ours/app:1") == digest
        inspected = json.loads(await skopeo(tmp_path, "inspect", "--tls-verify=false", f"docker://{host}/ours/app:1"))
        assert inspected["Digest"] == digest and inspected["Layers"] == layers
        assert inspected["Architecture"] == "amd64" and inspected["Os"] == "linux"

        await skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{oci_layout}:v1", f"docker://{host}/theirs:v1")
        pulled = await client.pull(store, f"{host}/theirs:v1")
    assert pulled.manifest_digest == layout_manifest(oci_layout, "v1")["digest"]
    assert [layer.digest for layer in pulled.layers] == \
        [layer["digest"] for layer in json.loads((oci_layout / "blobs" / "sha256" / pulled.manifest_digest[7:])
                                                 .read_bytes())["layers"]]
