"""Dynamic admission webhooks against a real HTTPS webhook server in this process: a mutating webhook's JSON
patch lands in the stored object, a validating webhook's denial reaches kubectl with upstream's message, the
AdmissionReview carries what upstream sends, selectors pick the requests, failurePolicy decides about a webhook
that cannot be reached, and a webhook behind a Service is reached through its endpoints."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster, free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Obj = dict[str, Any]


def _certificates(directory: Path, dns_names: list[str]) -> tuple[bytes, Path, Path]:
    """A CA (its PEM) and a serving certificate for 127.0.0.1 and `dns_names` signed by it (files)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), *(x509.DNSName(n) for n in dns_names)]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(ca_key, hashes.SHA256()))
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file


class WebhookServer:
    """/mutate labels objects mutated=yes; /deny refuses names starting with bad-; /allow allows. Every
    AdmissionReview received is kept."""

    def __init__(self, ca: bytes, cert_file: Path, key_file: Path) -> None:
        self.ca_bundle = base64.b64encode(ca).decode()
        self.reviews: list[tuple[str, Obj]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.reviews.append((self.path, review))
                request = review["request"]
                response: Obj = {"uid": request["uid"], "allowed": True}
                name = (request.get("object") or request.get("oldObject") or {}).get("metadata", {}).get("name", "")
                if self.path == "/mutate" and request["object"] is not None:
                    has_labels = "labels" in request["object"]["metadata"]
                    op = ([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}] if has_labels else
                          [{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(op).encode()).decode()
                elif self.path == "/deny" and name.startswith("bad-"):
                    response = {"uid": request["uid"], "allowed": False,
                                "status": {"code": 403, "message": "names starting with bad- are not allowed"}}
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hooks(tmp_path: Path, namespace: str) -> Iterator[WebhookServer]:
    server = WebhookServer(*_certificates(tmp_path, [f"hooks.{namespace}.svc"]))
    yield server
    server.stop()


@pytest.fixture
def configs(cluster: Cluster) -> Iterator[list[str]]:
    """Names of webhook configurations a test made (deleted after it, whatever happened)."""
    made: list[str] = []
    yield made
    for kind_and_name in made:
        cluster.kubectl("delete", kind_and_name, "--ignore-not-found")


def _configure(cluster: Cluster, configs: list[str], kind: str, namespace: str, webhooks: list[Obj]) -> None:
    name = f"{kind.lower()}-{uuid.uuid4().hex[:6]}"
    for hook in webhooks:
        # Only this test's namespace: the cluster is shared with every other test.
        hook.setdefault("namespaceSelector", {"matchLabels": {"kubernetes.io/metadata.name": namespace}})
        hook.setdefault("rules", [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                   "resources": ["configmaps"]}])
        hook.setdefault("sideEffects", "None")
        hook.setdefault("admissionReviewVersions", ["v1"])
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
        "webhooks": webhooks}))
    configs.append(f"{kind.lower()}/{name}")


def _configmap(name: str, namespace: str, labels: dict[str, str] | None = None) -> str:
    meta: Obj = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "1"}})


def test_mutating_webhook_patches_and_sees_the_request(cluster: Cluster, namespace: str, hooks: WebhookServer,
                                                       configs: list[str]) -> None:
    _configure(cluster, configs, "MutatingWebhookConfiguration", namespace, [
        {"name": "label.example.com", "clientConfig": {"url": hooks.url("/mutate"), "caBundle": hooks.ca_bundle}}])
    cluster.kubectl("create", "-f", "-", input=_configmap("cm", namespace, {"app": "x"}))
    stored = json.loads(cluster.kubectl("get", "configmap", "cm", "-n", namespace, "-o", "json").stdout)
    assert stored["metadata"]["labels"] == {"app": "x", "mutated": "yes"}
    path, review = hooks.reviews[-1]
    assert path == "/mutate" and review["apiVersion"] == "admission.k8s.io/v1"
    request = review["request"]
    assert request["operation"] == "CREATE" and request["namespace"] == namespace and request["name"] == "cm"
    assert request["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
    assert request["resource"] == {"group": "", "version": "v1", "resource": "configmaps"}
    assert request["userInfo"]["username"] and "system:authenticated" in request["userInfo"]["groups"]
    assert request["object"]["data"] == {"a": "1"} and request["oldObject"] is None
    assert request["options"]["kind"] == "CreateOptions" and request["dryRun"] is False
    # An update goes to the webhook too, with the stored object as oldObject.
    cluster.kubectl("label", "configmap", "cm", "-n", namespace, "more=1")
    update = hooks.reviews[-1][1]["request"]
    assert update["operation"] == "UPDATE" and update["oldObject"]["metadata"]["labels"]["mutated"] == "yes"


def test_validating_webhook_denial_reaches_kubectl(cluster: Cluster, namespace: str, hooks: WebhookServer,
                                                   configs: list[str]) -> None:
    _configure(cluster, configs, "ValidatingWebhookConfiguration", namespace, [
        {"name": "deny.example.com", "clientConfig": {"url": hooks.url("/deny"), "caBundle": hooks.ca_bundle}}])
    refused = cluster.kubectl("create", "-f", "-", input=_configmap("bad-one", namespace), check=False)
    assert refused.returncode != 0
    assert ('admission webhook "deny.example.com" denied the request: names starting with bad- are not allowed'
            in refused.stderr)
    resp = cluster.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                           json.loads(_configmap("bad-two", namespace)))
    assert resp.status == 403 and resp.json()["status"] == "Failure"
    cluster.kubectl("create", "-f", "-", input=_configmap("good", namespace))
    # Other namespaces are not selected: nothing is sent for them.
    sent = len(hooks.reviews)
    cluster.kubectl("create", "-f", "-", input=_configmap("bad-elsewhere", "default"))
    cluster.kubectl("delete", "configmap", "bad-elsewhere", "-n", "default")
    assert len(hooks.reviews) == sent


def test_object_selector_and_failure_policy(cluster: Cluster, namespace: str, hooks: WebhookServer,
                                            configs: list[str]) -> None:
    closed = f"https://127.0.0.1:{free_port()}/nothing-listens"
    _configure(cluster, configs, "ValidatingWebhookConfiguration", namespace, [
        {"name": "strict.example.com", "failurePolicy": "Fail", "timeoutSeconds": 2,
         "objectSelector": {"matchLabels": {"checked": "strictly"}},
         "clientConfig": {"url": closed, "caBundle": hooks.ca_bundle}},
        {"name": "lenient.example.com", "failurePolicy": "Ignore", "timeoutSeconds": 2,
         "clientConfig": {"url": closed, "caBundle": hooks.ca_bundle}}])
    cluster.kubectl("create", "-f", "-", input=_configmap("unlabelled", namespace))  # only the lenient one runs
    failed = cluster.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                             json.loads(_configmap("labelled", namespace, {"checked": "strictly"})))
    assert failed.status == 500 and failed.json()["reason"] == "InternalError"
    assert 'failed calling webhook "strict.example.com"' in failed.json()["message"]


def test_webhook_behind_a_service(cluster: Cluster, namespace: str, hooks: WebhookServer,
                                  configs: list[str]) -> None:
    # A Service without a selector and its Endpoints by hand, pointing at the test's webhook server.
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hooks", "namespace": namespace},
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hooks.port}]}}))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hooks", "namespace": namespace},
         "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": hooks.port}]}]}))
    _configure(cluster, configs, "MutatingWebhookConfiguration", namespace, [
        {"name": "svc.example.com", "clientConfig": {
            "service": {"name": "hooks", "namespace": namespace, "path": "/mutate"}, "caBundle": hooks.ca_bundle}}])
    cluster.kubectl("create", "-f", "-", input=_configmap("via-service", namespace))
    stored = json.loads(cluster.kubectl("get", "configmap", "via-service", "-n", namespace, "-o", "json").stdout)
    assert stored["metadata"]["labels"] == {"mutated": "yes"}
