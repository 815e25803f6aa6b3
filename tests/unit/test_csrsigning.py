"""The CSR signing controller's signer rules and certificates (upstream's signer and authority packages)."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pocketkube.controllers import csrsigning
from pocketkube.controllers.csrsigning import (
    SIGNER_CHECKS,
    awaits_signature,
    certificate_duration,
    sign,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365)


def request(cn: str, orgs: tuple[str, ...] = (), sans: list[x509.GeneralName] | None = None
            ) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs] + [x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                                cn)]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - YEAR).not_valid_after(NOW + 2 * YEAR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


@pytest.mark.parametrize(("usages", "problem"), [
    (["client auth"], ""),
    (["digital signature", "key encipherment", "client auth"], ""),
    (["client auth", "server auth"], "invalid usage for client certificate: server auth"),
    (["digital signature"], "missing required usage for client certificate: client auth"),
])
def test_apiserver_client_signer_usages(usages: list[str], problem: str) -> None:
    check = SIGNER_CHECKS["kubernetes.io/kube-apiserver-client"]
    assert check(request("alice", ("devs",)), usages) == problem


NODE = ("system:node:n1", ("system:nodes",))
ADDRESS = [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]


@pytest.mark.parametrize(("req", "usages", "problem"), [
    (request(*NODE, ADDRESS), ["digital signature", "server auth"], ""),
    (request(*NODE, ADDRESS), ["digital signature", "key encipherment", "server auth"], ""),
    (request("system:node:n1", ("other",), ADDRESS), ["digital signature", "server auth"],
     "subject organization is not system:nodes"),
    (request(*NODE), ["digital signature", "server auth"], "DNS or IP subjectAltName is required"),
    (request(*NODE, [*ADDRESS, x509.RFC822Name("a@example.com")]), ["digital signature", "server auth"],
     "Email subjectAltNames are not allowed"),
    (request(*NODE, ADDRESS), ["server auth"], "usages did not match [digital signature key encipherment server auth]"),
    (request("n1", ("system:nodes",), ADDRESS), ["digital signature", "server auth"],
     "subject common name does not begin with system:node:"),
])
def test_kubelet_serving_signer_rules(req: x509.CertificateSigningRequest, usages: list[str], problem: str) -> None:
    assert SIGNER_CHECKS["kubernetes.io/kubelet-serving"](req, usages) == problem


@pytest.mark.parametrize(("req", "usages", "problem"), [
    (request(*NODE), ["digital signature", "client auth"], ""),
    (request(*NODE, [x509.DNSName("n1")]), ["digital signature", "client auth"],
     "DNS subjectAltNames are not allowed"),
    (request(*NODE, ADDRESS), ["digital signature", "client auth"], "IP subjectAltNames are not allowed"),
    (request("n1", ("system:nodes",)), ["client auth"], "subject common name does not begin with system:node:"),
    (request(*NODE), ["client auth"], "usages did not match [client auth digital signature key encipherment]"),
])
def test_kubelet_client_signer_rules(req: x509.CertificateSigningRequest, usages: list[str], problem: str) -> None:
    assert SIGNER_CHECKS["kubernetes.io/kube-apiserver-client-kubelet"](req, usages) == problem


def test_only_the_built_in_signers_are_signed() -> None:
    assert set(SIGNER_CHECKS) == {"kubernetes.io/kube-apiserver-client", "kubernetes.io/kubelet-serving",
                                  "kubernetes.io/kube-apiserver-client-kubelet"}


@pytest.mark.parametrize(("seconds", "expected"), [
    (None, YEAR), (600, dt.timedelta(minutes=10)), (3600, dt.timedelta(hours=1)), (10 * 365 * 86400, YEAR)])
def test_requested_duration_is_kept_within_bounds(seconds: int | None, expected: dt.timedelta) -> None:
    assert certificate_duration(seconds, YEAR) == expected


def test_a_signed_certificate_carries_the_request_and_the_usages() -> None:
    ca_cert, ca_key = ca()
    req = request(*NODE, [x509.DNSName("n1.example.com"), *ADDRESS])
    cert = x509.load_pem_x509_certificate(sign(req, ["digital signature", "server auth"], YEAR, ca_cert, ca_key,
                                               NOW))
    cert.verify_directly_issued_by(ca_cert)
    assert cert.subject == req.subject and cert.issuer == ca_cert.subject
    assert cert.public_key() == req.public_key()
    assert cert.not_valid_before_utc == NOW - csrsigning.BACKDATE
    assert cert.not_valid_after_utc == NOW + YEAR - csrsigning.BACKDATE  # a long one loses the backdating
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_encipherment
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
        req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # Never valid beyond the CA.
    late = x509.load_pem_x509_certificate(sign(req, ["client auth"], 5 * YEAR, ca_cert, ca_key, NOW))
    assert late.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_unknown_usages_are_refused_at_signing() -> None:
    ca_cert, ca_key = ca()
    with pytest.raises(ValueError, match='unrecognized usage values: \\["bogus"\\]'):
        sign(request("alice"), ["client auth", "bogus"], YEAR, ca_cert, ca_key, NOW)


@pytest.mark.parametrize(("status", "expected"), [
    ({}, False),
    ({"conditions": [{"type": "Approved", "status": "True"}]}, True),
    ({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]}, False),
    ({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Failed", "status": "True"}]}, False),
    ({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Y2VydA=="}, False),
])
def test_which_requests_await_a_signature(status: dict, expected: bool) -> None:
    assert awaits_signature({"spec": {}, "status": status}) is expected
