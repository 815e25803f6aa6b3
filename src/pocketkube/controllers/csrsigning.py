"""CSR signing controller, as upstream's pkg/controller/certificates/signer (kube-controller-manager's
csrsigning).

An approved (and not denied) CertificateSigningRequest of one of the built-in signers
kubernetes.io/kube-apiserver-client, kubernetes.io/kube-apiserver-client-kubelet and
kubernetes.io/kubelet-serving, not yet issued and not failed, is checked against its signer's rules and
signed with the cluster CA (`--cluster-signing-cert-file/--cluster-signing-key-file`); the certificate goes
into status.certificate through the status subresource. A request that breaks its signer's rules gets a
Failed condition (reason SignerValidationFailure) instead. Requests of other signers are left to their own
signers (kubernetes.io/legacy-unknown included: the v1 API refuses to create such requests).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from pocketkube.controllers.base import ClusterSigning, Controller, ControllerContext

Obj = dict[str, Any]

KUBE_APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"
KUBE_APISERVER_CLIENT_KUBELET = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING = "kubernetes.io/kubelet-serving"
SIGNER_VALIDATION_FAILURE = "SignerValidationFailure"
# Every certificate is backdated this much against clock skew; a short-lived one (under SHORT_LIVED) keeps
# its whole duration, a longer one loses the backdating at its end (upstream's PermissiveSigningPolicy).
BACKDATE = dt.timedelta(minutes=5)
SHORT_LIVED = dt.timedelta(hours=8)
# spec.expirationSeconds is honoured down to twice the backdating.
MIN_DURATION = dt.timedelta(minutes=10)

# Usages as x509 KeyUsage flags (cryptography's argument names) and extended key usages (keyUsageDict,
# extKeyUsageDict of upstream's authority package).
_KEY_USAGES = {
    "signing": "digital_signature", "digital signature": "digital_signature",
    "content commitment": "content_commitment", "key encipherment": "key_encipherment",
    "key agreement": "key_agreement", "data encipherment": "data_encipherment", "cert sign": "key_cert_sign",
    "crl sign": "crl_sign", "encipher only": "encipher_only", "decipher only": "decipher_only",
}
_EXTENDED_KEY_USAGES = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE, "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH, "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION, "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec end system": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING, "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft sgc": x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    "netscape sgc": x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
}


# --- the signers' rules (pkg/apis/certificates/helpers.go, signer.go) ---------------------------------

def _san(request: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
    try:
        return request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _sans(request: x509.CertificateSigningRequest, kind: type[x509.GeneralName]) -> list[Any]:
    san = _san(request)
    return san.get_values_for_type(kind) if san is not None else []  # type: ignore[arg-type]


def _subject(request: x509.CertificateSigningRequest, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in request.subject.get_attributes_for_oid(oid)]


def _organization_is_nodes(request: x509.CertificateSigningRequest) -> str:
    return "" if _subject(request, x509.NameOID.ORGANIZATION_NAME) == ["system:nodes"] else \
        "subject organization is not system:nodes"


def _common_name_is_node(request: x509.CertificateSigningRequest) -> str:
    names = _subject(request, x509.NameOID.COMMON_NAME)
    # Go's pkix.Name keeps the last CN it reads.
    return "" if names and names[-1].startswith("system:node:") else \
        "subject common name does not begin with system:node:"


def _usages_match(usages: set[str], required: list[str]) -> str:
    """The usages must be exactly `required`, or `required` without key encipherment (non-RSA keys)."""
    without_rsa = set(required) - {"key encipherment"}
    if usages not in (set(required), without_rsa):
        return f"usages did not match [{' '.join(sorted(required))}]"
    return ""


def validate_kubelet_serving(request: x509.CertificateSigningRequest, usages: list[str]) -> str:
    """ValidateKubeletServingCSR: a node's serving certificate for its names or addresses."""
    problem = _organization_is_nodes(request)
    if problem:
        return problem
    if not _sans(request, x509.DNSName) and not _sans(request, x509.IPAddress):
        return "DNS or IP subjectAltName is required"
    if _sans(request, x509.RFC822Name):
        return "Email subjectAltNames are not allowed"
    if _sans(request, x509.UniformResourceIdentifier):
        return "URI subjectAltNames are not allowed"
    return (_usages_match(set(usages), ["digital signature", "key encipherment", "server auth"])
            or _common_name_is_node(request))


def validate_kubelet_client(request: x509.CertificateSigningRequest, usages: list[str]) -> str:
    """ValidateKubeletClientCSR: a node's client certificate, without subject alternative names."""
    problem = _organization_is_nodes(request)
    if problem:
        return problem
    for kind, what in ((x509.DNSName, "DNS"), (x509.RFC822Name, "Email"), (x509.IPAddress, "IP"),
                       (x509.UniformResourceIdentifier, "URI")):
        if _sans(request, kind):
            return f"{what} subjectAltNames are not allowed"
    return (_common_name_is_node(request)
            or _usages_match(set(usages), ["client auth", "digital signature", "key encipherment"]))


def validate_apiserver_client(_request: x509.CertificateSigningRequest, usages: list[str]) -> str:
    """validAPIServerClientUsages: client auth, optionally with digital signature and key encipherment; the
    subject is the approver's business."""
    for usage in usages:
        if usage not in ("digital signature", "key encipherment", "client auth"):
            return f"invalid usage for client certificate: {usage}"
    return "" if "client auth" in usages else "missing required usage for client certificate: client auth"


Check = Callable[[x509.CertificateSigningRequest, list[str]], str]
SIGNER_CHECKS: dict[str, Check] = {
    KUBELET_SERVING: validate_kubelet_serving,
    KUBE_APISERVER_CLIENT_KUBELET: validate_kubelet_client,
    KUBE_APISERVER_CLIENT: validate_apiserver_client,
}


# --- signing (pkg/controller/certificates/authority) ---------------------------------------------------

def certificate_duration(expiration_seconds: int | None, maximum: dt.timedelta) -> dt.timedelta:
    """spec.expirationSeconds within [MIN_DURATION, maximum]; the maximum when absent."""
    if expiration_seconds is None:
        return maximum
    return min(max(dt.timedelta(seconds=expiration_seconds), MIN_DURATION), maximum)


def _key_usage(usages: list[str]) -> tuple[x509.KeyUsage | None, list[x509.ObjectIdentifier]]:
    flags = {name: False for name in set(_KEY_USAGES.values())}
    extended: list[x509.ObjectIdentifier] = []
    unknown = []
    for usage in usages:
        if usage in _KEY_USAGES:
            flags[_KEY_USAGES[usage]] = True
        elif usage in _EXTENDED_KEY_USAGES:
            if _EXTENDED_KEY_USAGES[usage] not in extended:
                extended.append(_EXTENDED_KEY_USAGES[usage])
        else:
            unknown.append(usage)
    if unknown:
        raise ValueError("unrecognized usage values: [" + " ".join(f'"{u}"' for u in unknown) + "]")
    return (x509.KeyUsage(**flags) if any(flags.values()) else None), extended


def sign(request: x509.CertificateSigningRequest, usages: list[str], duration: dt.timedelta,
         ca_cert: x509.Certificate, ca_key: Any, now: dt.datetime) -> bytes:
    """The PEM certificate for the request: its subject, public key and subject alternative names, the
    usages asked for, valid from BACKDATE ago for `duration` (never beyond the CA)."""
    key_usage, extended = _key_usage(usages)
    ca_expiry = ca_cert.not_valid_after_utc
    if now >= ca_expiry:
        raise ValueError(f"refusing to sign a certificate that expired in the past: NotAfter={ca_expiry}")
    not_after = min(now + duration if duration < SHORT_LIVED else now + duration - BACKDATE, ca_expiry)
    builder = (x509.CertificateBuilder()
               .subject_name(request.subject)
               .issuer_name(ca_cert.subject)
               .public_key(request.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    san = _san(request)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                                        critical=False)
    except x509.ExtensionNotFound:
        pass
    algorithm = None if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    return builder.sign(ca_key, algorithm).public_bytes(serialization.Encoding.PEM)


def load_ca(signing: ClusterSigning) -> tuple[x509.Certificate, Any]:
    return (x509.load_pem_x509_certificate(signing.cert_file.read_bytes()),
            serialization.load_pem_private_key(signing.key_file.read_bytes(), password=None))


# --- the controller ----------------------------------------------------------------------------------

def _conditions(csr: Obj) -> list[Obj]:
    return (csr.get("status") or {}).get("conditions") or []


def awaits_signature(csr: Obj) -> bool:
    """Approved and not denied (whatever the conditions' status, as upstream), not failed, not issued."""
    types = {c.get("type") for c in _conditions(csr)}
    failed = any(c.get("type") == "Failed" and c.get("status") == "True" for c in _conditions(csr))
    return ("Approved" in types and "Denied" not in types and not failed
            and not (csr.get("status") or {}).get("certificate"))


def parse_request(csr: Obj) -> x509.CertificateSigningRequest:
    """spec.request (its PEM form was checked when the request was created)."""
    return x509.load_pem_x509_csr(base64.b64decode((csr.get("spec") or {}).get("request") or ""))


class CSRSigningController(Controller):
    name = "csrsigning"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        super().__init__(ctx)

    @classmethod
    def wanted(cls, ctx: ControllerContext) -> bool:
        return ctx.signing is not None  # upstream skips the signers without the CA's files

    def setup(self) -> None:
        assert self.ctx.signing is not None
        self.signing = self.ctx.signing
        self.info = self.ctx.resource("certificates.k8s.io", "v1", "certificatesigningrequests")
        self.requests = self.ctx.informer("certificates.k8s.io", "v1", "certificatesigningrequests")
        self.requests.add_handler(on_add=self._maybe_enqueue, on_update=lambda _old, new: self._maybe_enqueue(new))

    def _maybe_enqueue(self, csr: Obj) -> None:
        if (csr.get("spec") or {}).get("signerName") in SIGNER_CHECKS and awaits_signature(csr):
            self.enqueue(csr)

    async def reconcile(self, key: str) -> None:
        csr = self.requests.store.get(key)
        if csr is None or not awaits_signature(csr):
            return
        spec = csr.get("spec") or {}
        check = SIGNER_CHECKS.get(spec.get("signerName"))
        if check is None:
            return
        try:
            request = parse_request(csr)
        except ValueError as err:
            raise ValueError(f"unable to parse csr {key!r}: {err}") from None
        usages = [str(u) for u in spec.get("usages") or []]
        updated = copy.deepcopy(csr)
        status = updated.setdefault("status", {})
        problem = check(request, usages)
        if problem:
            now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
            status.setdefault("conditions", []).append({
                "type": "Failed", "status": "True", "reason": SIGNER_VALIDATION_FAILURE, "message": problem,
                "lastUpdateTime": now})
        else:
            ca_cert, ca_key = load_ca(self.signing)  # read for each request: a replaced CA is used at once
            duration = certificate_duration(spec.get("expirationSeconds"), self.signing.duration)
            certificate = sign(request, usages, duration, ca_cert, ca_key, self.clock())
            status["certificate"] = base64.b64encode(certificate).decode()
        await self.client.update(self.info, updated, "status")
