"""Request authentication: client certificates and bearer tokens, as kube-apiserver does it.

The union follows upstream's order (x509, then bearer token): the first authenticator that
recognises the request decides. `None` means "not authenticated" and the server answers 401
(anonymous access is off, as in k3s).
"""

from __future__ import annotations

import csv
import hmac
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from pocketkube.apiserver.nodetoken import BOOTSTRAP_GROUPS, BOOTSTRAP_USER, JoinToken
from pocketkube.apiserver.pki import ADMIN_GROUP, ADMIN_USER
from pocketkube.apiserver.satokens import ServiceAccountTokens, looks_like_jwt

AUTHENTICATED_GROUP = "system:authenticated"

# ssl.getpeercert() shape: ((("commonName", "admin"),), (("organizationName", "x"),), ...)
PeerName = tuple[tuple[tuple[str, str], ...], ...]


@dataclass(frozen=True)
class UserInfo:
    """The authenticated identity (upstream's user.Info without `extra`)."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    def as_api(self) -> dict[str, object]:
        """authentication.k8s.io/v1 UserInfo, as reviews and AdmissionReviews carry it."""
        info: dict[str, object] = {"username": self.name}
        if self.uid:
            info["uid"] = self.uid
        if self.groups:
            info["groups"] = list(self.groups)
        return info


def _with_authenticated(groups: Iterable[str]) -> tuple[str, ...]:
    # Upstream's AuthenticatedGroupAdder: every authenticated user is in system:authenticated.
    out = list(groups)
    if AUTHENTICATED_GROUP not in out:
        out.append(AUTHENTICATED_GROUP)
    return tuple(out)


def load_token_file(path: Path) -> dict[str, UserInfo]:
    """Parse the token file.

    A line holding only a token is the admin token (what `ensure_pki` writes). Other lines use
    upstream's --token-auth-file CSV format: `token,user,uid,"group1,group2"`.
    """
    tokens: dict[str, UserInfo] = {}
    text = Path(path).read_text()
    for lineno, record in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True), start=1):
        if not record or not any(f.strip() for f in record):
            continue
        if len(record) == 1:
            user = UserInfo(ADMIN_USER, _with_authenticated([ADMIN_GROUP]))
        elif len(record) >= 3:
            groups = [g.strip() for g in record[3].split(",") if g.strip()] if len(record) > 3 else []
            user = UserInfo(record[1], _with_authenticated(groups), uid=record[2])
        else:
            raise ValueError(f"{path}:{lineno}: token file needs at least 3 columns (token,user,uid)")
        token = record[0].strip()
        if not token:
            raise ValueError(f"{path}:{lineno}: empty token")
        tokens[token] = user
    return tokens


class Authenticator:
    def __init__(self, pki_ca_path: Path, token_file: Path, node_token: JoinToken | None = None, *,
                 service_account_tokens: ServiceAccountTokens | None = None) -> None:
        self.service_account_tokens = service_account_tokens
        ca = x509.load_pem_x509_certificate(Path(pki_ca_path).read_bytes())
        cns = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        # The TLS layer has already verified the chain; remembering the CA's name lets us refuse
        # certificates from any other issuer should the SSL context ever trust more CAs.
        self._ca_cn = str(cns[-1].value) if cns else ""
        self.tokens: dict[str, UserInfo] = load_token_file(token_file)
        if node_token is not None:
            # Agents join with the node token: its secret alone, or the whole K10… string, as in k3s.
            joiner = UserInfo(BOOTSTRAP_USER, _with_authenticated(BOOTSTRAP_GROUPS))
            for credential in {node_token.secret, str(node_token)}:
                self.tokens[credential] = joiner

    def authenticate(
        self, transport_peercert: dict | None, authorization_header: str | None
    ) -> UserInfo | None:
        if transport_peercert:
            user = self._from_cert(transport_peercert)
            if user is not None:
                return user
        if authorization_header:
            return self._from_bearer(authorization_header)
        return None

    def _from_cert(self, peercert: dict) -> UserInfo | None:
        if _attrs(peercert.get("issuer", ()), "commonName")[-1:] != [self._ca_cn]:
            return None
        subject = peercert.get("subject", ())
        cns = _attrs(subject, "commonName")
        # Go's pkix.Name keeps the last CN; an empty one is not a user (upstream x509 authn).
        if not cns or not cns[-1]:
            return None
        return UserInfo(cns[-1], _with_authenticated(_attrs(subject, "organizationName")))

    def _from_bearer(self, header: str) -> UserInfo | None:
        # Mirrors upstream's bearertoken authenticator: "Bearer <token>", scheme case-insensitive.
        parts = header.strip().split(" ", 2)
        if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
            return None
        return self.authenticate_token(parts[1])[0]

    def authenticate_token(self, token: str, audiences: tuple[str, ...] = ()) -> tuple[UserInfo | None,
                                                                                      tuple[str, ...]]:
        """Who a bearer token names, and the audiences it was accepted for (``audiences``, else the API
        server's own). Static tokens are valid for any audience, as upstream's token file authenticator."""
        api_audiences = self.service_account_tokens.audiences if self.service_account_tokens else ()
        audiences = audiences or api_audiences
        if self.service_account_tokens is not None and looks_like_jwt(token):
            identity = self.service_account_tokens.verify(token, audiences)
            if identity is None:
                return None, ()
            return (UserInfo(identity.username, _with_authenticated(identity.groups), uid=identity.uid),
                    identity.audiences)
        presented = token.encode()
        found: UserInfo | None = None
        # Compare against every token, without stopping early, so timing reveals nothing.
        for known, user in self.tokens.items():
            if hmac.compare_digest(presented, known.encode()):
                found = user
        return found, (audiences if found else ())

def _attrs(name: PeerName, key: str) -> list[str]:
    return [value for rdn in name for (k, value) in rdn if k == key]
