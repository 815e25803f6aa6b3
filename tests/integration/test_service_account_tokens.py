"""TokenRequest (serviceaccounts/<name>/token): `kubectl create token`, and the tokens as credentials."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cluster import Cluster


@pytest.fixture
def sa_namespace(cluster: Cluster):
    name = "sa-" + uuid.uuid4().hex[:8]
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("create", "serviceaccount", "robot", "-n", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def _as_token(cluster: Cluster, token: str, *args: str):
    """kubectl with nothing but the token as credentials (the admin kubeconfig's client certificate would
    authenticate first)."""
    empty = cluster.data_dir / "empty-kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\n")
    return cluster.kubectl("--kubeconfig", str(empty), "--server", f"https://127.0.0.1:{cluster.port}",
                           "--certificate-authority", str(cluster.data_dir / "tls" / "ca.crt"), "--token", token,
                           *args, check=False)


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_create_token_and_use_it(cluster: Cluster, sa_namespace: str) -> None:
    token = cluster.kubectl("create", "token", "robot", "-n", sa_namespace, "--duration", "15m").stdout.strip()
    claims = _claims(token)
    assert claims["sub"] == f"system:serviceaccount:{sa_namespace}:robot"
    assert claims["kubernetes.io"]["namespace"] == sa_namespace
    assert claims["exp"] - claims["iat"] == 900
    allowed = _as_token(cluster, token, "get", "serviceaccounts", "-n", sa_namespace, "-o", "name")
    assert allowed.returncode == 0 and "serviceaccount/robot" in allowed.stdout, allowed.stderr
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    refused = _as_token(cluster, forged, "get", "pods")
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr


def test_token_request_validation_and_binding(cluster: Cluster, sa_namespace: str) -> None:
    short = cluster.kubectl("create", "token", "robot", "-n", sa_namespace, "--duration", "1m", check=False)
    assert short.returncode != 0 and "may not specify a duration less than 10 minutes" in short.stderr
    missing = cluster.kubectl("create", "token", "nobody", "-n", sa_namespace, check=False)
    assert missing.returncode != 0 and 'serviceaccounts "nobody" not found' in missing.stderr
    cluster.kubectl("create", "secret", "generic", "bound", "-n", sa_namespace, "--from-literal=a=b")
    token = cluster.kubectl("create", "token", "robot", "-n", sa_namespace, "--bound-object-kind", "Secret",
                            "--bound-object-name", "bound", "--audience", "https://example.com").stdout.strip()
    claims = _claims(token)
    assert claims["aud"] == ["https://example.com"] and claims["kubernetes.io"]["secret"]["name"] == "bound"
    # A token for another audience is not a credential for this API server.
    refused = _as_token(cluster, token, "get", "pods")
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr


def test_pods_get_the_token_volume_unless_they_opt_out(cluster: Cluster, sa_namespace: str) -> None:
    def pod(name: str, **spec: object) -> dict:
        cluster.create(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name,
                                   "namespace": sa_namespace}, "spec": {"serviceAccountName": "robot", "containers": [
                                       {"name": "c", "image": "busybox"}], **spec}}))
        return json.loads(cluster.kubectl("get", "pod", name, "-n", sa_namespace, "-o", "json").stdout)["spec"]

    spec = pod("mounted")
    [volume] = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    sources = volume["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt" and volume["projected"]["defaultMode"] == 420
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": volume["name"], "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    assert "volumes" not in pod("opted-out", automountServiceAccountToken=False)
    cluster.kubectl("patch", "serviceaccount", "robot", "-n", sa_namespace, "-p",
                    '{"automountServiceAccountToken": false}')
    assert "volumes" not in pod("account-opted-out")
    assert any(v["name"].startswith("kube-api-access-")
               for v in pod("pod-overrides", automountServiceAccountToken=True)["volumes"])
