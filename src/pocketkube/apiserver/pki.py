"""The API server's PKI: cluster CA, serving certificate, admin credentials and kubeconfig.

Modelled on k3s: everything lives under DATA_DIR/tls/, is created on first start and reused
afterwards. Only the serving certificate is re-issued when the requested SANs grow (or it nears
expiry), so kubeconfigs and client certificates handed out earlier stay valid.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pocketkube.fsutil import write_atomic

TLS_DIR = "tls"
TOKEN_FILE = "token"
KUBECONFIG_FILE = "kubeconfig.yaml"
# k3s' default service CIDR; its first address is the in-cluster `kubernetes` Service IP.
DEFAULT_SERVICE_CIDR = "10.43.0.0/16"

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
# Like k3s, rotate leaf certificates on startup once they are this close to expiring.
RENEW_BEFORE = dt.timedelta(days=90)
# Back-date notBefore a little so peers with a slightly slow clock accept fresh certificates.
CLOCK_SKEW = dt.timedelta(minutes=5)

# The names every API server answers to inside the cluster (upstream adds the same set).
KUBERNETES_SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"
# The API server's identity towards kubelets (logs, exec, attach, port-forward), named as kubeadm names it.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
# Where a joining agent gets its node client certificate (CN=system:node:NAME, O=system:nodes) with the join
# token, naming its node in the header (k3s: /v1-k3s/client-kubelet.crt).
NODE_CERT_PATH = "/v1-pocketkube/client-kubelet.crt"
NODE_NAME_HEADER = "X-Pocketkube-Node-Name"


def kubeconfig_path(data_dir: Path) -> Path:
    """Where `pocketkube server` writes the admin kubeconfig and `pocketkube kubectl` reads it."""
    return Path(data_dir) / KUBECONFIG_FILE


@dataclass(frozen=True)
class PKI:
    """Paths of the cluster's credentials plus the operations the server needs on them."""

    tls_dir: Path
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path
    token_file: Path

    @classmethod
    def at(cls, data_dir: Path) -> PKI:
        tls = Path(data_dir) / TLS_DIR
        return cls(
            tls_dir=tls,
            ca_cert=tls / "ca.crt",
            ca_key=tls / "ca.key",
            serving_cert=tls / "serving.crt",
            serving_key=tls / "serving.key",
            admin_cert=tls / "admin.crt",
            admin_key=tls / "admin.key",
            kubelet_client_cert=tls / "kubelet-client.crt",
            kubelet_client_key=tls / "kubelet-client.key",
            token_file=Path(data_dir) / TOKEN_FILE,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Server-side TLS: client certificates are verified against the CA when offered, but
        optional, because bearer tokens are accepted too (upstream's VerifyClientCertIfGiven)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.serving_cert, self.serving_key)
        ctx.load_verify_locations(cafile=self.ca_cert)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        # aiohttp speaks HTTP/1.1 only; kubectl offers h2 first, so pin the ALPN answer.
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def admin_token(self) -> str:
        return self.token_file.read_text().strip()

    def issue_client_cert(self, cn: str, orgs: list[str]) -> tuple[bytes, bytes]:
        """Sign a client certificate (CN → user, O → groups); returns (cert PEM, key PEM)."""
        ca_cert, ca_key = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _client_cert(ca_cert, ca_key, key, cn, orgs)
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issue_serving_cert(self, cn: str, hosts: list[str]) -> tuple[bytes, bytes]:
        """Sign a serving certificate for `hosts` (IPs or DNS names), e.g. a kubelet's; returns (cert PEM,
        key PEM)."""
        ca_cert, ca_key = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _serving_cert(ca_cert, ca_key, key, _dedup([_to_san(h) for h in hosts]), cn)
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.ca_key}: expected an EC private key")
        return cert, key


def ensure_pki(
    data_dir: Path,
    *,
    sans: list[str],
    hostname: str | None = None,
    service_cidr: str = DEFAULT_SERVICE_CIDR,
) -> PKI:
    """Create (first start) or reuse (later starts) the cluster's CA, certificates and admin token.

    `sans` are the extra --tls-san values; IP literals become IP SANs, anything else DNS SANs.
    """
    pki = PKI.at(data_dir)
    pki.tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    fresh_ca = not (pki.ca_cert.exists() and pki.ca_key.exists())
    if fresh_ca:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_cert(ca_key)
        write_atomic(pki.ca_key, _key_pem(ca_key), mode=0o600)
        write_atomic(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    else:
        ca_cert, ca_key = pki._load_ca()

    wanted = _serving_sans(sans, hostname or socket.gethostname(), service_cidr)
    serving = _load_cert(pki.serving_cert) if pki.serving_key.exists() else None
    if fresh_ca or not _still_good(serving, ca_cert) or not _covers(serving, wanted):
        key = ec.generate_private_key(ec.SECP256R1())
        # Keep the SANs of the old certificate: a --tls-san dropped from the command line must
        # not break clients that were already configured with it.
        names = wanted if serving is None or fresh_ca else _dedup(_sans_of(serving) + wanted)
        cert = _serving_cert(ca_cert, ca_key, key, names)
        write_atomic(pki.serving_key, _key_pem(key), mode=0o600)
        write_atomic(pki.serving_cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)

    admin = _load_cert(pki.admin_cert) if pki.admin_key.exists() else None
    if fresh_ca or not _still_good(admin, ca_cert):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _client_cert(ca_cert, ca_key, key, ADMIN_USER, [ADMIN_GROUP])
        write_atomic(pki.admin_key, _key_pem(key), mode=0o600)
        write_atomic(pki.admin_cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)

    kubelet_client = _load_cert(pki.kubelet_client_cert) if pki.kubelet_client_key.exists() else None
    if fresh_ca or not _still_good(kubelet_client, ca_cert):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _client_cert(ca_cert, ca_key, key, KUBELET_CLIENT_USER, [ADMIN_GROUP])
        write_atomic(pki.kubelet_client_key, _key_pem(key), mode=0o600)
        write_atomic(pki.kubelet_client_cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)

    if not pki.token_file.exists() or not pki.token_file.read_text().strip():
        write_atomic(pki.token_file, (secrets.token_urlsafe(32) + "\n").encode(), mode=0o600)
    return pki


def write_kubeconfig(
    path: Path,
    *,
    server_url: str,
    pki: PKI,
    cluster_name: str = "default",
    user: str = "default",
    context: str = "default",
    client_cert: bytes | None = None,
    client_key: bytes | None = None,
) -> None:
    """Write a kubeconfig with the CA and client credentials embedded, as k3s does: the admin's, or the
    given client certificate and key (a component's own identity)."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    cert_data = base64.b64encode(client_cert).decode() if client_cert else b64(pki.admin_cert)
    key_data = base64.b64encode(client_key).decode() if client_key else b64(pki.admin_key)

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"certificate-authority-data": b64(pki.ca_cert), "server": server_url},
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": context,
        "preferences": {},
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": cert_data,
                    "client-key-data": key_data,
                },
            }
        ],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(config, sort_keys=False).encode(), mode=0o600)


# --- certificate construction ---------------------------------------------------------------

SAN = x509.DNSName | x509.IPAddress


def _ca_cert(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    # k3s names its CAs "<purpose>-ca@<unix time>", which makes every cluster's CA distinct.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pocketkube-ca@{int(time.time())}")])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    now = _now()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )


def _serving_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    sans: list[SAN],
    cn: str = "kube-apiserver",
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = _leaf(ca_cert, ca_key, key, subject, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _client_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    cn: str,
    orgs: list[str],
) -> x509.Certificate:
    # One O attribute per group: the x509 authenticator maps each Organization to a group.
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )
    builder = _leaf(ca_cert, ca_key, key, subject, ExtendedKeyUsageOID.CLIENT_AUTH)
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- SAN handling -----------------------------------------------------------------------------


def _serving_sans(extra: list[str], hostname: str, service_cidr: str) -> list[SAN]:
    service_ip = next(ipaddress.ip_network(service_cidr, strict=False).hosts())
    names = ["127.0.0.1", "::1", "localhost", hostname, str(service_ip), *KUBERNETES_SERVICE_NAMES, *extra]
    return _dedup([_to_san(n) for n in (s.strip() for s in names) if n])


def _to_san(value: str) -> SAN:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        # DNS names compare case-insensitively; store them lower-cased so set checks work.
        return x509.DNSName(value.lower())


def _dedup(sans: list[SAN]) -> list[SAN]:
    return list(dict.fromkeys(sans))


def _sans_of(cert: x509.Certificate) -> list[SAN]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n for n in ext if isinstance(n, x509.DNSName | x509.IPAddress)]


def _covers(cert: x509.Certificate | None, wanted: list[SAN]) -> bool:
    return cert is not None and set(wanted) <= set(_sans_of(cert))


def _still_good(cert: x509.Certificate | None, ca_cert: x509.Certificate) -> bool:
    """True when `cert` exists, was signed by this CA, and is not about to expire."""
    if cert is None:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


# --- files ------------------------------------------------------------------------------------


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # SEC1 "EC PRIVATE KEY", the form k3s and kubeadm write.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
