"""Service account tokens: JWTs the API server signs for TokenRequest (serviceaccounts/<name>/token) and
accepts back as bearer credentials, as kube-apiserver's --service-account-issuer/--service-account-key-file."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pocketkube.fsutil import write_atomic

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (ISSUER,)
ALGORITHM = "RS256"
KEY_FILE = "service-account.key"


@dataclass(frozen=True)
class ServiceAccountIdentity:
    namespace: str
    name: str
    uid: str
    bound_kind: str = ""        # "Pod" | "Secret" | "Node" when the token is bound to an object
    bound_name: str = ""
    bound_uid: str = ""
    audiences: tuple[str, ...] = ()  # of a verified token: those it was accepted for

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def groups(self) -> tuple[str, ...]:
        return ("system:serviceaccounts", f"system:serviceaccounts:{self.namespace}")


class ServiceAccountTokens:
    def __init__(self, tls_dir: Path, *, issuer: str = ISSUER, audiences: tuple[str, ...] = API_AUDIENCES) -> None:
        self.issuer = issuer
        self.audiences = audiences
        self._private = _load_or_create_key(tls_dir / KEY_FILE)
        self._public = self._private.public_key()

    def issue(self, identity: ServiceAccountIdentity, *, expiration_seconds: int, audiences: list[str],
              now: float | None = None) -> tuple[str, float]:
        """A signed token and its expiry (epoch seconds)."""
        issued = int(now if now is not None else time.time())
        expires = issued + expiration_seconds
        private_claims: dict = {"namespace": identity.namespace,
                                "serviceaccount": {"name": identity.name, "uid": identity.uid}}
        if identity.bound_kind:
            private_claims[identity.bound_kind.lower()] = {"name": identity.bound_name, "uid": identity.bound_uid}
        claims = {
            "iss": self.issuer, "sub": identity.username, "aud": audiences, "iat": issued, "nbf": issued,
            "exp": expires, "jti": str(uuid.uuid4()), "kubernetes.io": private_claims,
        }
        return jwt.encode(claims, self._private, algorithm=ALGORITHM), float(expires)

    def verify(self, token: str, audiences: tuple[str, ...] = ()) -> ServiceAccountIdentity | None:
        """The identity a token carries, or None when it is not one of ours, expired, or meant for none of
        ``audiences`` (by default the API server's own)."""
        try:
            claims = jwt.decode(token, self._public, algorithms=[ALGORITHM], audience=list(audiences or self.audiences),
                                issuer=self.issuer, options={"require": ["exp", "iat", "sub"]})
        except jwt.PyJWTError:
            return None
        private = claims.get("kubernetes.io") or {}
        account = private.get("serviceaccount") or {}
        namespace = private.get("namespace", "")
        if not namespace or not account.get("name"):
            return None
        bound_kind, bound = next(((kind.capitalize(), private[kind]) for kind in ("pod", "secret", "node")
                                  if isinstance(private.get(kind), dict)), ("", {}))
        aud = claims.get("aud")
        accepted = tuple(a for a in ([aud] if isinstance(aud, str) else aud) if a in (audiences or self.audiences))
        return ServiceAccountIdentity(namespace, account["name"], account.get("uid", ""), bound_kind,
                                      bound.get("name", ""), bound.get("uid", ""), accepted)


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_atomic(path, pem, mode=0o600)
        return key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: the service account signing key must be an RSA key")
    return key


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")

