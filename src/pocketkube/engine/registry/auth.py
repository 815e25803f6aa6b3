"""Registry authentication, the way Docker clients expect it: users in an htpasswd file (bcrypt entries as
``htpasswd -B`` writes them) and short-lived bearer tokens for scopes such as ``repository:app:pull,push``.

A client without credentials gets 401 and a ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``
challenge; it asks the realm (``/v2/token``) for a token with HTTP Basic and retries with
``Authorization: Bearer``. Tokens are ``<payload>.<signature>``: base64url JSON claims and their
HMAC-SHA256 under a key kept in the data directory, so they survive a restart and nobody can forge one.
Authenticated users may pull, push and delete everywhere; anonymous users may pull when allowed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bcrypt

from pocketkube.engine.registry.errors import DistributionError

SERVICE = "pocketkube-registry"
TOKEN_LIFETIME = 900
USER_ACTIONS = frozenset({"pull", "push", "delete"})
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


@dataclass(frozen=True)
class Access:
    """One resource and the actions wanted on (or granted for) it: ``repository:app:pull,push``."""
    type: str
    name: str
    actions: frozenset[str]

    @property
    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


def parse_scopes(values: Iterable[str]) -> list[Access]:
    """Scopes from ``scope`` query parameters (each may list several, space-separated). The name sits
    between the first and the last colon; malformed scopes are ignored, as distribution's token servers do."""
    accesses = []
    for value in values:
        for scope in value.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name and actions:
                accesses.append(Access(kind, name, frozenset(a for a in actions.split(",") if a)))
    return accesses


class Htpasswd:
    """Users of an htpasswd file; reread when the file changes. A verified password is remembered (as a
    hash) so that clients sending Basic credentials with every request do not pay bcrypt each time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, bytes] = {}
        self._verified: set[tuple[str, bytes, bytes]] = set()
        self._load()

    def _load(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        entries = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, colon, hashed = line.partition(":")
            if not colon or not hashed.startswith(_BCRYPT_PREFIXES):
                raise ValueError(f"{self.path}:{number}: only bcrypt entries are supported (create them with htpasswd -B)")
            entries[user] = hashed.encode()
        self._entries, self._stamp, self._verified = entries, stamp, set()

    async def verify(self, username: str, password: str) -> bool:
        self._load()
        hashed = self._entries.get(username)
        if hashed is None:
            return False
        key = (username, hashed, hashlib.sha256(password.encode()).digest())
        if key in self._verified:
            return True
        try:
            ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
        except ValueError:  # a password bcrypt cannot take (over 72 bytes) or a damaged entry
            return False
        if ok:
            self._verified.add(key)
        return ok


@dataclass
class Grant:
    """Who a request acts as and what it may do."""
    subject: str
    access: list[Access]
    everything: bool = False  # an authenticated user on Basic auth

    def allows(self, needed: Access) -> bool:
        if self.everything:
            return True
        return any(a.type == needed.type and a.name == needed.name and needed.actions <= a.actions for a in self.access)


class TokenAuthority:
    """Issues and checks signed bearer tokens for one service."""

    def __init__(self, key_path: Path, service: str = SERVICE, lifetime: int = TOKEN_LIFETIME) -> None:
        self.service = service
        self.lifetime = lifetime
        self._key = _load_or_create_key(Path(key_path))

    def issue(self, subject: str, access: list[Access]) -> dict:
        now = int(time.time())
        claims = {"iss": self.service, "aud": self.service, "sub": subject, "iat": now, "exp": now + self.lifetime,
                  "jti": secrets.token_hex(8),
                  "access": [{"type": a.type, "name": a.name, "actions": sorted(a.actions)} for a in access]}
        payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
        token = f"{payload}.{_b64encode(self._sign(payload))}"
        issued = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": self.lifetime, "issued_at": issued}

    def verify(self, token: str) -> Grant | None:
        """The grant a token carries, or None when it is forged, damaged, expired or for another service."""
        payload, _, signature = token.partition(".")
        try:
            if not hmac.compare_digest(_b64decode(signature), self._sign(payload)):
                return None
            claims = json.loads(_b64decode(payload))
            if claims["aud"] != self.service or claims["exp"] < time.time():
                return None
            access = [Access(a["type"], a["name"], frozenset(a["actions"])) for a in claims["access"]]
            return Grant(subject=claims["sub"], access=access)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None

    def _sign(self, payload: str) -> bytes:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).digest()


class Authenticator:
    """The registry's access policy over an htpasswd file and a token authority."""

    def __init__(self, users: Htpasswd, tokens: TokenAuthority, *, allow_anonymous_pull: bool = False) -> None:
        self.users = users
        self.tokens = tokens
        self.allow_anonymous_pull = allow_anonymous_pull

    async def authorize(self, authorization: str | None, needed: Access | None, realm: str) -> Grant:
        """Check a request's credentials against what it needs (None: any valid credentials, for ``/v2/``).
        UNAUTHORIZED with a challenge when they are missing or invalid; DENIED when valid but insufficient."""
        scheme, _, value = (authorization or "").partition(" ")
        grant = None
        error = None
        if scheme.lower() == "bearer":
            grant = self.tokens.verify(value.strip())
            error = None if grant else "invalid_token"
        elif scheme.lower() == "basic":
            user = await self._basic_user(value)
            grant = Grant(subject=user, access=[], everything=True) if user else None
        if grant is None:
            raise DistributionError("UNAUTHORIZED", "authentication required",
                                    headers={"WWW-Authenticate": self.challenge(realm, needed, error)})
        if needed is not None and not grant.allows(needed):
            raise DistributionError("DENIED", detail=[{"Type": needed.type, "Name": needed.name,
                                                      "Action": ",".join(sorted(needed.actions))}])
        return grant

    def challenge(self, realm: str, needed: Access | None, error: str | None = None) -> str:
        parts = [f'Bearer realm="{realm}"', f'service="{self.tokens.service}"']
        if needed is not None:
            parts.append(f'scope="{needed.scope}"')
        if error:
            parts.append(f'error="{error}"')
        return ",".join(parts)

    async def issue_token(self, authorization: str | None, scopes: list[Access]) -> dict:
        """The token endpoint: authenticate with Basic (or anonymously) and grant what the policy allows of
        the requested scopes."""
        scheme, _, value = (authorization or "").partition(" ")
        user = await self._basic_user(value) if scheme.lower() == "basic" else None
        if user is None and (authorization or not self.allow_anonymous_pull):
            raise DistributionError("UNAUTHORIZED", "authentication required" if not authorization
                                    else "incorrect username or password",
                                    headers={"WWW-Authenticate": f'Basic realm="{self.tokens.service}"'})
        return self.tokens.issue(user or "", self.grantable(user, scopes))

    async def issue_token_for_password(self, username: str, password: str, scopes: list[Access]) -> dict:
        """The OAuth2 password grant (POST to the realm), which Docker uses for some logins."""
        if not await self.users.verify(username, password):
            raise DistributionError("UNAUTHORIZED", "incorrect username or password")
        return self.tokens.issue(username, self.grantable(username, scopes))

    @staticmethod
    def grantable(user: str | None, scopes: list[Access]) -> list[Access]:
        granted = []
        for scope in scopes:
            if scope.type == "repository":
                allowed = USER_ACTIONS if user else frozenset({"pull"})
                actions = allowed if "*" in scope.actions else scope.actions & allowed
            elif scope.type == "registry" and scope.name == "catalog" and user:
                actions = scope.actions & frozenset({"*"})
            else:
                actions = frozenset()
            if actions:
                granted.append(Access(scope.type, scope.name, actions))
        return granted

    async def _basic_user(self, value: str) -> str | None:
        try:
            username, colon, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, binascii.Error):
            return None
        if colon and await self.users.verify(username, password):
            return username
        return None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _load_or_create_key(path: Path) -> bytes:
    """The signing key, created (0600) on first use; when two processes race, both end up with the
    one that was linked into place first."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)
    return path.read_bytes()
