"""What kube-controller-manager and kube-apiserver keep for the cluster, seen through the real kubectl: CSRs
signed with the cluster CA, the local APIServices of built-in and CRD group/versions, and the deprecated
component statuses."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cluster import Cluster, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from harness import bare_server

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


def get_json(cluster: Cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def apiservice_rows(cluster: Cluster) -> dict[str, list[str]]:
    rows = cluster.kubectl("get", "apiservices", "--no-headers").stdout.splitlines()
    return {row.split()[0]: row.split()[1:] for row in rows}


def test_every_built_in_group_version_has_a_local_apiservice(cluster: Cluster) -> None:
    rows = apiservice_rows(cluster)
    for name in ("v1.", "v1.apps", "v1.batch", "v1.autoscaling", "v2.autoscaling", "v1.certificates.k8s.io",
                 "v1.apiextensions.k8s.io", "v1.resource.k8s.io", "v1.flowcontrol.apiserver.k8s.io"):
        assert rows[name][:2] == ["Local", "True"], (name, rows.get(name))
    assert "v1.apiregistration.k8s.io" not in rows  # the aggregator's own group has none
    apps = get_json(cluster, "apiservice", "v1.apps")
    assert apps["metadata"]["labels"] == {"kube-aggregator.kubernetes.io/automanaged": "onstart"}
    assert apps["spec"] == {"group": "apps", "version": "v1", "groupPriorityMinimum": 17800, "versionPriority": 15}
    condition = apps["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"], condition["message"]) == (
        "Available", "True", "Local", "Local APIServices are always available")
    core = get_json(cluster, "apiservice", "v1.")["spec"]
    assert (core["group"], core["version"], core["groupPriorityMinimum"], core["versionPriority"]) == (
        "", "v1", 18000, 1)


def test_crd_group_versions_get_apiservices_that_go_with_them(cluster: Cluster) -> None:
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"widgets.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": version, "served": served, "storage": version == "v1",
                                  "schema": {"openAPIV3Schema": {"type": "object"}}}
                                 for version, served in (("v1", True), ("v2alpha1", False))]}}
    cluster.create(json.dumps(crd))
    wait_until(lambda: apiservice_rows(cluster).get(f"v1.{group}", [])[:2] == ["Local", "True"],
               what=f"APIService v1.{group}")
    apiservice = get_json(cluster, "apiservice", f"v1.{group}")
    assert apiservice["metadata"]["labels"] == {"kube-aggregator.kubernetes.io/automanaged": "true"}
    assert apiservice["spec"] == {"group": group, "version": "v1", "groupPriorityMinimum": 1000,
                                  "versionPriority": 100}
    assert f"v2alpha1.{group}" not in apiservice_rows(cluster)  # not served

    crd["spec"]["versions"][1]["served"] = True
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    wait_until(lambda: f"v2alpha1.{group}" in apiservice_rows(cluster), what=f"APIService v2alpha1.{group}")

    cluster.kubectl("delete", "crd", f"widgets.{group}")
    wait_until(lambda: not any(name.endswith(group) for name in apiservice_rows(cluster)),
               what=f"the APIServices of {group} to go")


def test_a_user_apiservice_with_a_service_is_stored_as_given(cluster: Cluster, namespace: str) -> None:
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    cluster.create(json.dumps({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": f"v1beta1.{group}"},
        "spec": {"group": group, "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 10,
                 "insecureSkipTLSVerify": True, "service": {"namespace": namespace, "name": "api"}}}))
    stored = get_json(cluster, "apiservice", f"v1beta1.{group}")
    assert "labels" not in stored["metadata"]
    assert stored["spec"]["service"] == {"namespace": namespace, "name": "api", "port": 443}
    assert apiservice_rows(cluster)[f"v1beta1.{group}"][0] == f"{namespace}/api"
    cluster.kubectl("delete", "apiservice", f"v1beta1.{group}")


COMPONENT_STATUS_WARNING = "Warning: v1 ComponentStatus is deprecated in v1.19+"


def test_component_statuses_report_the_supervised_components_and_storage(cluster: Cluster) -> None:
    result = cluster.kubectl("get", "componentstatuses")
    assert COMPONENT_STATUS_WARNING in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "MESSAGE", "ERROR"]
    assert [line.split() for line in lines[1:]] == [["scheduler", "Healthy", "ok"],
                                                    ["controller-manager", "Healthy", "ok"],
                                                    ["etcd-0", "Healthy", "ok"]]
    etcd = get_json(cluster, "cs", "etcd-0")
    assert etcd["conditions"] == [{"type": "Healthy", "status": "True", "message": "ok"}]
    assert [i["metadata"]["name"] for i in get_json(cluster, "cs", "--field-selector",
                                                     "metadata.name=scheduler")["items"]] == ["scheduler"]
    missing = cluster.kubectl("get", "cs", "nope", check=False)
    assert missing.returncode != 0 and "Error from server (Unknown): Component not found: nope" in missing.stderr
    response = cluster.request("POST", "/api/v1/componentstatuses", {
        "apiVersion": "v1", "kind": "ComponentStatus", "metadata": {"name": "mine"}})
    assert response.status == 405
    assert response.headers["Warning"] == f'299 - "{COMPONENT_STATUS_WARNING.removeprefix("Warning: ")}"'


@pytest.fixture(scope="module")
def server_alone() -> Iterator[Cluster]:
    yield from bare_server()


def test_components_the_server_does_not_run_are_unhealthy(server_alone: Cluster) -> None:
    rows = [line.rstrip().split(None, 2)
            for line in server_alone.kubectl("get", "cs", "--no-headers").stdout.splitlines()]
    assert rows == [["scheduler", "Unhealthy", "the scheduler is not run by this server"],
                    ["controller-manager", "Unhealthy", "the controller manager is not run by this server"],
                    ["etcd-0", "Healthy", "ok"]]
