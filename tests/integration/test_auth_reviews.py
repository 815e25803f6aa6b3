"""The review APIs (authentication.k8s.io and authorization.k8s.io): `kubectl auth whoami|can-i`, TokenReview,
the access reviews' validation, and that they are create-only and never stored."""

from __future__ import annotations

import json
import uuid

from cluster import Cluster

AUTHN = "/apis/authentication.k8s.io/v1"
AUTHZ = "/apis/authorization.k8s.io/v1"


def test_kubectl_auth_whoami_and_can_i(cluster: Cluster) -> None:
    table = cluster.kubectl("auth", "whoami").stdout
    assert "Username    admin" in table and "system:masters" in table
    review = json.loads(cluster.kubectl("auth", "whoami", "-o", "json").stdout)
    assert review["kind"] == "SelfSubjectReview" and review["metadata"]["creationTimestamp"]
    assert review["status"]["userInfo"]["username"] == "admin"
    assert "system:authenticated" in review["status"]["userInfo"]["groups"]
    assert cluster.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    assert cluster.kubectl("auth", "can-i", "get", "/logs").stdout.strip() == "yes"
    rules = cluster.kubectl("auth", "can-i", "--list").stdout.splitlines()
    assert rules[0].split() == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    assert rules[1].split() == ["*.*", "[]", "[]", "[*]"]


def test_token_review(cluster: Cluster) -> None:
    namespace = "review-" + uuid.uuid4().hex[:8]
    cluster.kubectl("create", "namespace", namespace)
    try:
        cluster.kubectl("create", "serviceaccount", "robot", "-n", namespace)
        token = cluster.kubectl("create", "token", "robot", "-n", namespace).stdout.strip()

        def review(spec: dict) -> dict:
            resp = cluster.request("POST", f"{AUTHN}/tokenreviews",
                                   {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec})
            assert resp.status == 201, resp.body
            return resp.json()["status"]

        status = review({"token": token})
        assert status["authenticated"] is True
        assert status["user"]["username"] == f"system:serviceaccount:{namespace}:robot"
        assert f"system:serviceaccounts:{namespace}" in status["user"]["groups"]
        assert status["audiences"] == ["https://kubernetes.default.svc.cluster.local"]
        other = review({"token": token, "audiences": ["https://vault.example"]})
        assert not other.get("authenticated") and other["user"] == {} and "audiences" in other["error"]
        assert not review({"token": "not-a-token"}).get("authenticated")
        assert review({"token": cluster.token})["user"]["username"] == "admin"
        missing = cluster.request("POST", f"{AUTHN}/tokenreviews",
                                  {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}})
        assert missing.status == 400 and missing.json()["message"] == \
            "token is required for TokenReview in authentication.k8s.io"
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def _access_review(cluster: Cluster, path: str, kind: str, spec: dict):
    return cluster.request("POST", path, {"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec})


def test_access_reviews_validate_and_allow(cluster: Cluster) -> None:
    attributes = {"verb": "get", "resource": "pods"}
    allowed = _access_review(cluster, f"{AUTHZ}/subjectaccessreviews", "SubjectAccessReview",
                             {"user": "alice", "resourceAttributes": attributes})
    assert allowed.status == 201 and allowed.json()["status"] == {"allowed": True}
    empty = _access_review(cluster, f"{AUTHZ}/subjectaccessreviews", "SubjectAccessReview", {})
    assert empty.status == 422 and empty.json()["reason"] == "Invalid"
    fields = {c["field"] for c in empty.json()["details"]["causes"]}
    assert fields == {"spec.resourceAttributes", "spec.user"}
    both = _access_review(cluster, f"{AUTHZ}/selfsubjectaccessreviews", "SelfSubjectAccessReview",
                          {"resourceAttributes": attributes, "nonResourceAttributes": {"path": "/x", "verb": "get"}})
    assert both.status == 422 and "cannot be specified in combination" in both.json()["message"]
    own = _access_review(cluster, f"{AUTHZ}/selfsubjectaccessreviews", "SelfSubjectAccessReview",
                         {"user": "someone-else", "resourceAttributes": attributes})
    assert own.status == 201 and own.json()["spec"]["user"] == "admin"

    local = f"{AUTHZ}/namespaces/default/localsubjectaccessreviews"
    defaulted = _access_review(cluster, local, "LocalSubjectAccessReview",
                               {"user": "alice", "resourceAttributes": attributes})
    assert defaulted.status == 201
    assert defaulted.json()["spec"]["resourceAttributes"]["namespace"] == "default"
    elsewhere = _access_review(cluster, local, "LocalSubjectAccessReview",
                               {"user": "alice", "resourceAttributes": {**attributes, "namespace": "kube-system"}})
    assert elsewhere.status == 400
    assert elsewhere.json()["message"] == "spec.resourceAttributes.namespace must match namespace: default"


def test_reviews_are_create_only(cluster: Cluster) -> None:
    listed = cluster.request("GET", f"{AUTHZ}/subjectaccessreviews")
    assert listed.status == 405 and listed.json()["reason"] == "MethodNotAllowed"
    resources = {r["name"]: r["verbs"] for r in cluster.request("GET", AUTHN).json()["resources"]}
    assert resources == {"selfsubjectreviews": ["create"], "tokenreviews": ["create"]}
