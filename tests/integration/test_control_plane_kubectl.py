"""What kube-controller-manager and kube-apiserver keep for the cluster, seen through the real kubectl: CSRs
signed with the cluster CA."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import yaml
from cluster import Cluster
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"


def new_request(user: str, groups: list[str]) -> tuple[bytes, bytes]:
    """A fresh key (PEM) and a PKCS#10 request (PEM) for CN=user, O=groups."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
                        + [x509.NameAttribute(NameOID.COMMON_NAME, user)])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, request.public_bytes(serialization.Encoding.PEM)


def csr_object(name: str, request: bytes, usages: list[str], **spec: object) -> str:
    return json.dumps({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                       "metadata": {"name": name},
                       "spec": {"request": base64.b64encode(request).decode(), "signerName": CLIENT_SIGNER,
                                "usages": usages, **spec}})


def wait_for_csr(cluster: Cluster, name: str, done: object, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        csr = json.loads(cluster.kubectl("get", "csr", name, "-o", "json").stdout)
        if done(csr):  # type: ignore[operator]
            return csr
        assert time.monotonic() < deadline, f"CSR {name} never got there: {csr.get('status')}"
        time.sleep(0.2)


def test_an_approved_client_csr_is_signed_and_its_certificate_authenticates(cluster: Cluster,
                                                                             tmp_path: Path) -> None:
    name = f"alice-{uuid.uuid4().hex[:6]}"
    key, request = new_request("alice", ["devs"])
    cluster.create(csr_object(name, request, ["client auth"], expirationSeconds=3600))
    assert "approved" in cluster.kubectl("certificate", "approve", name).stdout
    csr = wait_for_csr(cluster, name, lambda c: (c.get("status") or {}).get("certificate"))
    row = cluster.kubectl("get", "csr", name, "--no-headers").stdout.split()
    assert row[-1] == "Approved,Issued"

    pem = base64.b64decode(csr["status"]["certificate"])
    certificate = x509.load_pem_x509_certificate(pem)
    ca = x509.load_pem_x509_certificate((cluster.data_dir / "tls" / "ca.crt").read_bytes())
    certificate.verify_directly_issued_by(ca)
    assert certificate.subject == x509.load_pem_x509_csr(request).subject
    assert list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    # An hour asked for: an hour from five minutes back (short certificates keep their whole duration).
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime.total_seconds() == 3600 + 300

    # The certificate is alice's identity, in group devs.
    kubeconfig = tmp_path / "alice.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "alice",
        "clusters": [{"name": "c", "cluster": {"server": cluster.url, "certificate-authority-data":
                                               base64.b64encode(ca.public_bytes(serialization.Encoding.PEM))
                                               .decode()}}],
        "contexts": [{"name": "alice", "context": {"cluster": "c", "user": "alice"}}],
        "users": [{"name": "alice", "user": {"client-certificate-data": base64.b64encode(pem).decode(),
                                             "client-key-data": base64.b64encode(key).decode()}}]}))
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", "--kubeconfig", str(kubeconfig)).stdout)
    user = whoami["status"]["userInfo"]
    assert user["username"] == "alice"
    assert "devs" in user["groups"] and "system:authenticated" in user["groups"]
    cluster.kubectl("delete", "csr", name)


def test_a_csr_breaking_its_signers_rules_fails_and_denied_or_foreign_ones_are_left_alone(
        cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    _, request = new_request("bob", [])
    cluster.create(csr_object(f"server-{tag}", request, ["client auth", "server auth"]))
    cluster.create(csr_object(f"denied-{tag}", request, ["client auth"]))
    cluster.create(csr_object(f"pending-{tag}", request, ["client auth"]))
    cluster.create(csr_object(f"foreign-{tag}", request, ["client auth"], signerName="example.com/signer"))
    cluster.kubectl("certificate", "approve", f"server-{tag}", f"foreign-{tag}")
    cluster.kubectl("certificate", "deny", f"denied-{tag}")

    failed = wait_for_csr(cluster, f"server-{tag}",
                          lambda c: any(x["type"] == "Failed" for x in c["status"].get("conditions", [])))
    condition = failed["status"]["conditions"][-1]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "True", "SignerValidationFailure", "invalid usage for client certificate: server auth")
    assert "certificate" not in failed["status"]
    rows = cluster.kubectl("get", "csr", f"server-{tag}", f"denied-{tag}", f"pending-{tag}", f"foreign-{tag}",
                           "--no-headers").stdout.splitlines()
    assert [r.split()[-1] for r in rows] == ["Approved,Failed", "Denied", "Pending", "Approved"]
    cluster.kubectl("delete", "csr", f"server-{tag}", f"denied-{tag}", f"pending-{tag}", f"foreign-{tag}")
