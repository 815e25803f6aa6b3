"""Registry credentials in Docker's ``config.json`` format, which ``docker login`` writes and the kubelet reads
from ``kubernetes.io/dockerconfigjson`` secrets::

    {"auths": {"localhost:5000": {"auth": "<base64 of user:password>"}}}

Docker Hub's entry is keyed ``https://index.docker.io/v1/``; other registries by ``host[:port]``. Entries
written by other tools (a URL with a scheme or path, ``username``/``password`` fields instead of ``auth``)
are understood too. Credential helpers (``credsStore``/``credHelpers``) are not run.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocketkube.engine.images.reference import DEFAULT_DOMAIN

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})


class CredentialError(ValueError):
    """A credentials file or document that cannot be read or written."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def normalize_registry(text: str) -> str:
    """The registry a login or a config key names, as image references spell its domain: ``docker.io``
    for Docker Hub, ``host[:port]`` otherwise (scheme and path dropped)."""
    host = text.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    if not host:
        raise CredentialError(f"invalid registry {text!r}")
    return DEFAULT_DOMAIN if host in _DOCKER_HUB_ALIASES else host


def config_key(registry: str) -> str:
    """The key Docker writes for a registry in ``auths``."""
    domain = normalize_registry(registry)
    return DOCKER_HUB_KEY if domain == DEFAULT_DOMAIN else domain


def default_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def _decode_entry(entry: Any) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("auth"):
        try:
            username, colon, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, binascii.Error):
            return None
        return Credentials(username, password) if colon else None
    if entry.get("username") is not None and entry.get("password") is not None:
        return Credentials(str(entry["username"]), str(entry["password"]))
    return None


class CredentialStore:
    """Credentials per registry, kept in a Docker config file (``path``), or only in memory when built
    from a document with ``from_document``."""

    def __init__(self, path: Path | None = None, *, document: dict[str, Any] | None = None) -> None:
        self._memory = document
        self.path: Path | None = None if document is not None else Path(path or default_config_path())

    @classmethod
    def from_document(cls, document: bytes | str | dict) -> CredentialStore:
        """Credentials from a ``.dockerconfigjson`` document (``{"auths": {...}}``) or the older
        ``.dockercfg`` one (the ``auths`` map itself), as Kubernetes image pull secrets carry them."""
        if isinstance(document, bytes | str):
            try:
                document = json.loads(document)
            except ValueError as err:
                raise CredentialError(f"invalid docker config document: {err}") from None
        if not isinstance(document, dict):
            raise CredentialError("invalid docker config document: not a JSON object")
        return cls(document=document if "auths" in document else {"auths": document})

    def _load(self) -> dict[str, Any]:
        if self.path is None:
            return self._memory or {}
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as err:
            raise CredentialError(f"{self.path}: invalid JSON: {err}") from None
        if not isinstance(document, dict):
            raise CredentialError(f"{self.path}: not a JSON object")
        return document

    def _store(self, document: dict[str, Any]) -> None:
        if self.path is None:
            self._memory = document
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".config.json.")
        try:
            with os.fdopen(fd, "w") as f:  # mkstemp files are 0600: the file holds passwords
                json.dump(document, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _matching_keys(self, auths: dict[str, Any], registry: str) -> list[str]:
        domain = normalize_registry(registry)
        matches = []
        for key in auths:
            try:
                if normalize_registry(key) == domain:
                    matches.append(key)
            except CredentialError:
                continue
        return matches

    def get(self, registry: str) -> Credentials | None:
        """The credentials saved for a registry (``localhost:5000``, ``docker.io``, a URL...), or None."""
        auths = self._load().get("auths") or {}
        preferred = config_key(registry)
        keys = self._matching_keys(auths, registry)
        for key in sorted(keys, key=lambda k: k != preferred):
            credentials = _decode_entry(auths[key])
            if credentials is not None:
                return credentials
        return None

    def save(self, registry: str, username: str, password: str) -> None:
        document = self._load()
        auths = document.setdefault("auths", {})
        for key in self._matching_keys(auths, registry):
            del auths[key]
        auths[config_key(registry)] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
        self._store(document)

    def remove(self, registry: str) -> bool:
        """Forget a registry's credentials; False when there were none."""
        document = self._load()
        auths = document.get("auths") or {}
        keys = self._matching_keys(auths, registry)
        for key in keys:
            del auths[key]
        if keys:
            self._store(document)
        return bool(keys)
