"""The join token agents present to the server, in k3s' format.

DATA_DIR/node-token holds ``K10<sha256 of the CA certificate PEM, hex>::server:<secret>``. The secret is
the credential (accepted as a bearer token); the hash lets an agent that has never seen the cluster
check the CA it downloads from the unauthenticated ``/cacerts`` endpoint before trusting it, which is
how k3s joins nodes without copying files around.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

NODE_TOKEN_FILE = "node-token"
TOKEN_PREFIX = "K10"
SERVER_USER = "server"
# The identity a join token authenticates as, with upstream's bootstrap-token groups plus system:nodes.
BOOTSTRAP_USER = "system:node-bootstrap"
BOOTSTRAP_GROUPS = ("system:bootstrappers", "system:nodes")


class TokenError(ValueError):
    """A join token that cannot be parsed, or a CA that does not match it."""


@dataclass(frozen=True)
class JoinToken:
    """A parsed token: `ca_hash` is empty for a bare secret (nothing to verify the CA with)."""

    secret: str
    ca_hash: str = ""
    username: str = SERVER_USER

    def __str__(self) -> str:
        if not self.ca_hash:
            return self.secret
        return f"{TOKEN_PREFIX}{self.ca_hash}::{self.username}:{self.secret}"

    def verify_ca(self, ca_pem: bytes) -> None:
        """Raise TokenError unless `ca_pem` is the CA this token was issued for (no-op without a hash)."""
        if self.ca_hash and not hmac.compare_digest(ca_hash(ca_pem), self.ca_hash):
            raise TokenError("the server's CA certificate does not match the hash in the join token")


def ca_hash(ca_pem: bytes) -> str:
    # k3s hashes the exact bytes served at /cacerts, so agent and server agree without parsing PEM.
    return hashlib.sha256(ca_pem).hexdigest()


def parse_token(token: str) -> JoinToken:
    """Accept the full ``K10<hash>::<user>:<secret>`` form or a bare secret, as k3s does."""
    token = token.strip()
    if not token:
        raise TokenError("empty join token")
    if not token.startswith(TOKEN_PREFIX) or "::" not in token:
        return JoinToken(secret=token)
    digest, _, credentials = token[len(TOKEN_PREFIX):].partition("::")
    username, sep, secret = credentials.partition(":")
    if not sep or not secret or not username:
        raise TokenError("join token must look like K10<ca-hash>::<user>:<secret>")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise TokenError("the CA hash in the join token is not a sha256 hex digest")
    return JoinToken(secret=secret, ca_hash=digest.lower(), username=username)


def ensure_node_token(data_dir: Path, ca_cert: Path) -> JoinToken:
    """Create DATA_DIR/node-token on first start; later starts reuse its secret.

    The hash is refreshed should the CA have been replaced, so the file always verifies the CA being served.
    """
    path = Path(data_dir) / NODE_TOKEN_FILE
    digest = ca_hash(Path(ca_cert).read_bytes())
    secret = ""
    if path.exists():
        try:
            secret = parse_token(path.read_text()).secret
        except TokenError:
            secret = ""
    token = JoinToken(secret=secret or secrets.token_hex(16), ca_hash=digest)
    if not path.exists() or path.read_text().strip() != str(token):
        _write_private(path, f"{token}\n")
    return token


def read_node_token(data_dir: Path) -> JoinToken:
    return parse_token((Path(data_dir) / NODE_TOKEN_FILE).read_text())


def _write_private(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
