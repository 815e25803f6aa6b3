"""Registry mirrors (k3s's registries.yaml): parsing and its errors, the order endpoints are tried in,
repository rewrites, per-mirror credentials, and falling back to the registry itself — against our
registry on 127.0.0.1 (nothing here may reach a registry outside this machine)."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest
from test_registry_client import BASE, PASSWORD, USER, make_image, new_store, serving, write_htpasswd

from pocketkube.engine.registry.client import RegistryClient
from pocketkube.engine.registry.errors import RegistryError
from pocketkube.engine.registry.hosts import RegistryConfigError, RegistryHosts
from pocketkube.engine.registry.server import RegistryConfig


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_endpoint_order_rewrites_and_configs() -> None:
    hosts = RegistryHosts.parse({
        "mirrors": {
            "docker.io": {"endpoint": ["http://127.0.0.1:5000", "https://mirror.test:5443/cache"],
                          "rewrite": {"^library/(.*)": "hub/${1}"}},
            "*": {"endpoint": ["https://everything.test"]},
        },
        "configs": {
            "mirror.test:5443": {"auth": {"auth": base64.b64encode(b"bob:pw").decode()},
                                 "tls": {"insecure_skip_verify": True}},
            "quay.io": {"auth": {"username": "q", "password": "p"}},
        },
    })
    plain, cache, hub = hosts.endpoints("docker.io")
    assert (plain.scheme, plain.host, plain.api_root, plain.credentials) == ("http", "127.0.0.1:5000", "/v2", None)
    assert plain.repository("library/nginx") == "hub/nginx" and plain.repository("bitnami/x") == "bitnami/x"
    assert (cache.host, cache.api_root, cache.skip_verify) == ("mirror.test:5443", "/cache/v2", True)
    assert cache.credentials is not None and (cache.credentials.username, cache.credentials.password) == ("bob", "pw")
    assert cache.location("hub/nginx/manifests/1") == "/cache/v2/hub/nginx/manifests/1"
    # the registry itself comes last and never takes the mirrors' rewrites
    assert (hub.host, hub.scheme, hub.mirror) == ("registry-1.docker.io", None, False)
    assert hub.repository("library/nginx") == "library/nginx"
    wildcard, quay = hosts.endpoints("quay.io")
    assert wildcard.host == "everything.test" and quay.host == "quay.io"
    assert quay.credentials is not None and quay.credentials.username == "q"
    assert [e.host for e in RegistryHosts().endpoints("ghcr.io")] == ["ghcr.io"]


@pytest.mark.parametrize(("document", "message"), [
    ([], "expected a mapping with mirrors and configs"),
    ({"mirrors": {"docker.io": {"endpoint": "http://x"}}}, "mirrors.docker.io.endpoint: expected a list of URLs"),
    ({"mirrors": {"docker.io": {"endpoint": ["ftp://x"]}}}, "'ftp://x' is not an http(s) URL"),
    ({"mirrors": {"docker.io": {"endpoint": ["http://x"], "rewrite": {"(": "y"}}}}, "bad pattern '('"),
    ({"configs": {"x": {"auth": {"auth": "%%%"}}}}, "configs.x.auth.auth: not base64 of user:password"),
    ({"configs": {"x": {"tls": {"ca_file": "/nonexistent/ca.pem"}}}}, "configs.x.tls:"),
])
def test_bad_configuration_says_where(document: object, message: str) -> None:
    with pytest.raises(RegistryConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RegistryHosts.parse(document, "registries.yaml")


def test_load_missing_and_malformed_files(tmp_path: Path) -> None:
    assert RegistryHosts.load(tmp_path / "absent.yaml").endpoints("docker.io")[0].host == "registry-1.docker.io"
    bad = tmp_path / "registries.yaml"
    bad.write_text("mirrors: [unclosed\n")
    with pytest.raises(RegistryConfigError, match="not valid YAML"):
        RegistryHosts.load(bad)


async def test_pull_through_a_mirror_with_rewrite_and_credentials(tmp_path: Path) -> None:
    config = RegistryConfig(tmp_path / "mirror-data", listen="127.0.0.1:0",
                            htpasswd=write_htpasswd(tmp_path / "htpasswd"))
    async with serving(config) as mirror:
        source = new_store(tmp_path / "s")
        image = make_image(source, f"{mirror.host}/hub/app:1", [BASE])
        pusher = RegistryClient(hosts=RegistryHosts.parse({"configs": {mirror.host: {
            "auth": {"username": USER, "password": PASSWORD}}}}))
        await pusher.push(source, f"{mirror.host}/hub/app:1")
        hosts = RegistryHosts.parse({
            "mirrors": {"docker.io": {"endpoint": [f"http://127.0.0.1:{closed_port()}", f"http://{mirror.host}"],
                                      "rewrite": {"^library/(.*)": "hub/$1"}}},
            "configs": {mirror.host: {"auth": {"username": USER, "password": PASSWORD}}},
        })
        target = new_store(tmp_path / "t")
        pulled = await RegistryClient(hosts=hosts).pull(target, "app:1")
        # stored under the name asked for, whatever the mirror calls it
        assert pulled.id == image.id and pulled.repo_tags == ["app:1"]
        assert target.resolve("docker.io/library/app:1").id == image.id


async def test_falls_back_to_the_registry_itself(tmp_path: Path) -> None:
    async with serving(RegistryConfig(tmp_path / "data", listen="127.0.0.1:0")) as registry:
        source = new_store(tmp_path / "s")
        image = make_image(source, f"{registry.host}/app:2", [BASE])
        await RegistryClient().push(source, f"{registry.host}/app:2")
        dead = closed_port()
        hosts = RegistryHosts.parse({"mirrors": {registry.host: {"endpoint": [f"http://127.0.0.1:{dead}"]}}})
        client = RegistryClient(hosts=hosts)
        assert (await client.pull(new_store(tmp_path / "t"), f"{registry.host}/app:2")).id == image.id
        with pytest.raises(RegistryError) as missing:
            await client.pull(new_store(tmp_path / "u"), f"{registry.host}/app:nope")
        # the registry's own answer decides, and the mirror's failure is told too
        assert missing.value.code == "MANIFEST_UNKNOWN"
        assert f"mirrors: 127.0.0.1:{dead}: cannot reach registry" in str(missing.value)
