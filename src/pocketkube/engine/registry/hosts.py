"""Where images of a registry are pulled from: mirrors, then the registry itself.

The configuration is k3s's registries.yaml (the file containerd's registry hosts are generated from):

    mirrors:
      docker.io:                       # a registry, or "*" for every registry without its own entry
        endpoint: ["http://127.0.0.1:5000", "https://mirror.example:5443/prefix"]
        rewrite: {"^library/(.*)": "mirror/$1"}   # repository rewrites, for the mirrors only
    configs:
      "mirror.example:5443":           # an endpoint's host[:port], or "*"
        auth: {username: u, password: p}            # or auth: base64("u:p")
        tls: {ca_file: /path, cert_file: /path, key_file: /path, insecure_skip_verify: true}

A pull tries a registry's mirror endpoints in order and the registry's own (default) endpoint last, as
containerd does; pushes and logins go to the registry itself. An endpoint's path, when it has one, is the
API root in place of /v2.
"""

from __future__ import annotations

import base64
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yarl import URL

from pocketkube.engine.images.reference import DEFAULT_DOMAIN
from pocketkube.engine.registry.credentials import Credentials

DOCKER_HUB_HOST = "registry-1.docker.io"
REGISTRIES_FILE = "registries.yaml"  # in the data directory, as k3s keeps /etc/rancher/k3s/registries.yaml
WILDCARD = "*"


class RegistryConfigError(ValueError):
    """registries.yaml is malformed; the message says where."""


@dataclass(frozen=True)
class Endpoint:
    """One place to talk to a registry's API."""

    host: str  # host[:port], as configs and credentials are keyed
    scheme: str | None  # None: https, or http as well for insecure registries (the default endpoint)
    api_root: str  # "/v2" unless the endpoint's URL has a path
    credentials: Credentials | None = None
    ssl_context: ssl.SSLContext | None = None  # custom CA or client certificate
    skip_verify: bool = False
    rewrites: tuple[tuple[re.Pattern[str], str], ...] = ()
    mirror: bool = False

    def repository(self, path: str) -> str:
        """The repository to ask this endpoint for: the first matching rewrite applied (mirrors only)."""
        for pattern, replacement in self.rewrites:
            if pattern.search(path):
                return pattern.sub(_go_replacement(replacement), path, count=1)
        return path

    def location(self, rest: str) -> str:
        """An API path under this endpoint's root: ``location("library/x/manifests/1")``."""
        return f"{self.api_root}/{rest}" if rest else f"{self.api_root}/"

    @property
    def key(self) -> str:
        return f"{self.scheme or ''}://{self.host}{self.api_root}"


def _go_replacement(replacement: str) -> str:
    # Go's regexp uses $1 / ${1} for groups; Python's re wants \1.
    return re.sub(r"\$\{?(\d+)\}?", r"\\\1", replacement.replace("\\", "\\\\"))


def registry_host(domain: str) -> str:
    """The host serving a reference's domain: Docker Hub's API lives at registry-1.docker.io."""
    return DOCKER_HUB_HOST if domain == DEFAULT_DOMAIN else domain


@dataclass(frozen=True)
class _HostConfig:
    credentials: Credentials | None = None
    ssl_context: ssl.SSLContext | None = None
    skip_verify: bool = False


class RegistryHosts:
    """The mirrors and per-host settings of one registries.yaml (none when there is no file)."""

    def __init__(self, mirrors: dict[str, tuple[list[str], dict[str, str]]] | None = None,
                 configs: dict[str, _HostConfig] | None = None, source: str = "registries.yaml") -> None:
        self._mirrors = mirrors or {}
        self._configs = configs or {}
        self._source = source

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> RegistryHosts:
        return cls.load(data_dir / REGISTRIES_FILE)

    @classmethod
    def load(cls, path: Path) -> RegistryHosts:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls()
        except OSError as err:
            raise RegistryConfigError(f"{path}: {err.strerror}") from None
        try:
            document = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise RegistryConfigError(f"{path}: not valid YAML: {err}") from None
        return cls.parse(document, str(path))

    @classmethod
    def parse(cls, document: Any, source: str = "registries.yaml") -> RegistryHosts:
        if not isinstance(document, dict):
            raise RegistryConfigError(f"{source}: expected a mapping with mirrors and configs")
        mirrors: dict[str, tuple[list[str], dict[str, str]]] = {}
        for registry, entry in _mapping(document.get("mirrors"), f"{source}: mirrors").items():
            where = f"{source}: mirrors.{registry}"
            entry = _mapping(entry, where)
            endpoints = entry.get("endpoint") or []
            if not isinstance(endpoints, list) or not all(isinstance(e, str) and e for e in endpoints):
                raise RegistryConfigError(f"{where}.endpoint: expected a list of URLs")
            for endpoint in endpoints:
                _parse_url(endpoint, f"{where}.endpoint")
            rewrites = {str(k): str(v) for k, v in _mapping(entry.get("rewrite"), f"{where}.rewrite").items()}
            for pattern in rewrites:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise RegistryConfigError(f"{where}.rewrite: bad pattern {pattern!r}: {err}") from None
            mirrors[str(registry)] = (endpoints, rewrites)
        configs = {str(host): _host_config(entry, f"{source}: configs.{host}")
                   for host, entry in _mapping(document.get("configs"), f"{source}: configs").items()}
        return cls(mirrors, configs, source)

    def _config(self, host: str) -> _HostConfig:
        return self._configs.get(host) or self._configs.get(WILDCARD) or _HostConfig()

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Where to pull ``domain``'s images from, in order: its mirrors (or the wildcard's), then itself."""
        urls, rewrites = self._mirrors.get(domain) or self._mirrors.get(WILDCARD) or ([], {})
        compiled = tuple((re.compile(p), r) for p, r in rewrites.items())
        found = []
        for text in urls:
            url = _parse_url(text, self._source)
            host = url.raw_authority
            config = self._config(host)
            path = url.path.rstrip("/")
            found.append(Endpoint(host, url.scheme, path if path.endswith("/v2") else (path or "") + "/v2",
                                  config.credentials, config.ssl_context, config.skip_verify, compiled, mirror=True))
        found.append(self.default_endpoint(domain))
        # A mirror listing the registry itself adds nothing: keep the first mention.
        unique: dict[str, Endpoint] = {}
        for endpoint in found:
            unique.setdefault(endpoint.key if endpoint.mirror else f"default{endpoint.key}", endpoint)
        return list(unique.values())

    def default_endpoint(self, domain: str) -> Endpoint:
        host = registry_host(domain)
        config = self._configs.get(domain) or self._configs.get(host) or self._config(host)
        return Endpoint(host, None, "/v2", config.credentials, config.ssl_context, config.skip_verify)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RegistryConfigError(f"{where}: expected a mapping")
    return value


def _parse_url(text: str, where: str) -> URL:
    url = URL(text if "://" in text else f"https://{text}")
    if url.scheme not in ("http", "https") or not url.host:
        raise RegistryConfigError(f"{where}: {text!r} is not an http(s) URL")
    return url


def _host_config(entry: Any, where: str) -> _HostConfig:
    entry = _mapping(entry, where)
    auth = _mapping(entry.get("auth"), f"{where}.auth")
    credentials = None
    if auth.get("username") is not None:
        credentials = Credentials(str(auth["username"]), str(auth.get("password") or ""))
    elif auth.get("auth"):
        try:
            user, _, password = base64.b64decode(str(auth["auth"]), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise RegistryConfigError(f"{where}.auth.auth: not base64 of user:password") from None
        credentials = Credentials(user, password)
    tls = _mapping(entry.get("tls"), f"{where}.tls")
    context = None
    if tls.get("ca_file") or tls.get("cert_file"):
        try:
            context = ssl.create_default_context(cafile=tls.get("ca_file") or None)
            if tls.get("cert_file"):
                context.load_cert_chain(tls["cert_file"], tls.get("key_file") or None)
        except (OSError, ssl.SSLError) as err:
            raise RegistryConfigError(f"{where}.tls: {err}") from None
    return _HostConfig(credentials, context, bool(tls.get("insecure_skip_verify")))
