"""Every built-in resource through every verb: create, get, list (JSON and Table), patch, watch, delete."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cluster import Cluster, wait_until

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
POD_SPEC = {"containers": [{"name": "c", "image": "busybox:1.36"}]}
TEMPLATE = {"metadata": {"labels": {"app": "x"}}, "spec": POD_SPEC}
SELECTOR = {"matchLabels": {"app": "x"}}

# (group, version, plural, namespaced, body without metadata)
SAMPLES: list[tuple[str, str, str, bool, dict[str, Any]]] = [
    ("", "v1", "pods", True, {"spec": POD_SPEC}),
    ("", "v1", "services", True, {"spec": {"ports": [{"port": 80}]}}),
    ("", "v1", "endpoints", True, {"subsets": [{"addresses": [{"ip": "10.42.0.5"}], "ports": [{"port": 80}]}]}),
    ("", "v1", "configmaps", True, {"data": {"a": "b"}}),
    ("", "v1", "secrets", True, {"stringData": {"a": "b"}}),
    ("", "v1", "serviceaccounts", True, {}),
    ("", "v1", "nodes", False, {"spec": {"podCIDR": "10.42.9.0/24"}}),
    ("", "v1", "events", True, {"involvedObject": {"kind": "Pod", "name": "p", "namespace": "NS"},
                                "reason": "Test", "message": "hello", "type": "Normal",
                                "source": {"component": "tests"}}),
    ("", "v1", "persistentvolumes", False, {"spec": {"capacity": {"storage": "1Gi"}, "accessModes": [
        "ReadWriteOnce"], "hostPath": {"path": "/tmp/pv"}}}),
    ("", "v1", "persistentvolumeclaims", True, {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {
        "requests": {"storage": "1Gi"}}}}),
    ("", "v1", "resourcequotas", True, {"spec": {"hard": {"pods": "10"}}}),
    ("", "v1", "limitranges", True, {"spec": {"limits": [{"type": "Container", "default": {"cpu": "100m"}}]}}),
    ("", "v1", "replicationcontrollers", True, {"spec": {"replicas": 1, "selector": {"app": "x"},
                                                         "template": TEMPLATE}}),
    ("apps", "v1", "deployments", True, {"spec": {"selector": SELECTOR, "template": TEMPLATE}}),
    ("apps", "v1", "replicasets", True, {"spec": {"selector": SELECTOR, "template": TEMPLATE}}),
    ("apps", "v1", "statefulsets", True, {"spec": {"selector": SELECTOR, "serviceName": "x", "template": TEMPLATE}}),
    ("apps", "v1", "daemonsets", True, {"spec": {"selector": SELECTOR, "template": TEMPLATE}}),
    ("apps", "v1", "controllerrevisions", True, {"revision": 1, "data": {"spec": {}}}),
    ("batch", "v1", "jobs", True, {"spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}}),
    ("batch", "v1", "cronjobs", True, {"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {
        "template": {"spec": {**POD_SPEC, "restartPolicy": "OnFailure"}}}}}}),
    ("autoscaling", "v2", "horizontalpodautoscalers", True, {"spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 70}}}]}}),
    ("autoscaling", "v1", "horizontalpodautoscalers", True, {"spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 3,
        "targetCPUUtilizationPercentage": 50}}),
    ("networking.k8s.io", "v1", "ingresses", True, {"spec": {"rules": [{"host": "example.test", "http": {
        "paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {
            "number": 80}}}}]}}]}}),
    ("networking.k8s.io", "v1", "ingressclasses", False, {"spec": {"controller": "example.com/ingress"}}),
    ("networking.k8s.io", "v1", "networkpolicies", True, {"spec": {"podSelector": {}}}),
    ("storage.k8s.io", "v1", "storageclasses", False, {"provisioner": "example.com/local"}),
    ("rbac.authorization.k8s.io", "v1", "roles", True, {"rules": [{"apiGroups": [""], "resources": ["pods"],
                                                                   "verbs": ["get"]}]}),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", False, {"rules": [{"apiGroups": [""],
                                                                           "resources": ["pods"], "verbs": ["list"]}]}),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", True, {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]}),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", False, {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
        "subjects": [{"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"}]}),
    ("coordination.k8s.io", "v1", "leases", True, {"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}),
    ("discovery.k8s.io", "v1", "endpointslices", True, {"addressType": "IPv4", "endpoints": [
        {"addresses": ["10.42.0.7"]}], "ports": [{"port": 80, "protocol": "TCP"}]}),
    ("policy", "v1", "poddisruptionbudgets", True, {"spec": {"minAvailable": 1, "selector": SELECTOR}}),
    ("scheduling.k8s.io", "v1", "priorityclasses", False, {"value": 1000, "description": "test"}),
    ("events.k8s.io", "v1", "events", True, {"eventTime": "2026-11-22T00:00:00.000000Z", "reportingController":
                                             "example.com/tests", "reportingInstance": "tests-1",
                                             "action": "Testing", "reason": "Test", "type": "Normal",
                                             "regarding": {"kind": "Pod", "name": "p", "namespace": "NS"},
                                             "note": "hello"}),
]


def _path(group: str, version: str, plural: str, namespace: str | None) -> str:
    base = f"/apis/{group}/{version}" if group else "/api/v1"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def _fill_namespace(value: Any, namespace: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill_namespace(v, namespace) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_namespace(v, namespace) for v in value]
    return namespace if value == "NS" else value


@pytest.fixture(scope="module")
def sweep_ns(cluster: Cluster) -> str:
    name = f"all-{uuid.uuid4().hex[:6]}"
    assert cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    # pods need the namespace's default service account, which the controller manager adds
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=30s")
    return name


@pytest.mark.parametrize("group,version,plural,namespaced,sample", SAMPLES,
                         ids=[f"{s[2]}.{s[0] or 'core'}.{s[1]}" for s in SAMPLES])
def test_every_verb(cluster: Cluster, sweep_ns: str, group: str, version: str, plural: str, namespaced: bool,
                    sample: dict[str, Any]) -> None:
    name = f"s-{uuid.uuid4().hex[:6]}"
    collection = _path(group, version, plural, sweep_ns if namespaced else None)
    body = {"apiVersion": f"{group}/{version}" if group else version, **_fill_namespace(sample, sweep_ns),
            "metadata": {"name": name, "labels": {"sweep": "yes"}}}
    created = cluster.request("POST", collection + "?fieldValidation=Strict", body)
    assert created.status == 201, created.body
    obj = created.json()
    assert obj["metadata"]["uid"] and obj["metadata"]["resourceVersion"]
    rv = obj["metadata"]["resourceVersion"]

    got = cluster.request("GET", f"{collection}/{name}")
    assert got.status == 200 and got.json()["metadata"]["uid"] == obj["metadata"]["uid"]
    assert got.json()["kind"] == obj["kind"]

    listed = cluster.request("GET", collection + "?labelSelector=sweep%3Dyes").json()
    assert name in [i["metadata"]["name"] for i in listed["items"]]
    table = cluster.request("GET", collection, headers={"Accept": TABLE}).json()
    assert table["kind"] == "Table" and table["columnDefinitions"]
    assert any(r["object"]["metadata"]["name"] == name for r in table["rows"])

    patched = cluster.request("PATCH", f"{collection}/{name}", {"metadata": {"labels": {"patched": "yes"}}},
                              content_type="application/merge-patch+json")
    assert patched.status == 200, patched.body
    assert patched.json()["metadata"]["labels"] == {"sweep": "yes", "patched": "yes"}

    # Only this object: controllers' own objects in the namespace (revisions of the sampled StatefulSet and
    # DaemonSet, collected once their owners go) would otherwise interleave their events.
    watched = cluster.request(
        "GET", f"{collection}?watch=1&resourceVersion={rv}&timeoutSeconds=1&fieldSelector=metadata.name%3D{name}")
    events = [line for line in watched.body.splitlines() if line.strip()]
    assert events and b'"MODIFIED"' in events[0]

    kubectl_resource = f"{plural}.{version}.{group}" if group else plural
    args = ["get", kubectl_resource, name] + (["-n", sweep_ns] if namespaced else [])
    printed = cluster.kubectl(*args, "-o", "wide").stdout.splitlines()
    assert name in printed[1].split()

    deleted = cluster.request("DELETE", f"{collection}/{name}")
    assert deleted.status == 200, deleted.body
    after = cluster.request("GET", f"{collection}/{name}")
    if after.status == 200:  # pods on no node go at once; anything else still present must be terminating
        assert after.json()["metadata"].get("deletionTimestamp")
    else:
        assert after.status == 404


def test_delete_collection_with_selector(cluster: Cluster, sweep_ns: str) -> None:
    base = f"/api/v1/namespaces/{sweep_ns}/configmaps"
    for name, team in (("dc1", "a"), ("dc2", "a"), ("dc3", "b")):
        assert cluster.request("POST", base, {"metadata": {"name": name, "labels": {"team": team}}}).status == 201
    resp = cluster.request("DELETE", base + "?labelSelector=team%3Da")
    assert resp.status == 200
    left = [i["metadata"]["name"] for i in cluster.request("GET", base + "?labelSelector=team").json()["items"]]
    assert left == ["dc3"]


def test_delete_preconditions(cluster: Cluster, sweep_ns: str) -> None:
    base = f"/api/v1/namespaces/{sweep_ns}/configmaps"
    created = cluster.request("POST", base, {"metadata": {"name": "pre"}}).json()
    wrong = cluster.request("DELETE", base + "/pre", {"preconditions": {"uid": "not-the-uid"}})
    assert wrong.status == 409 and "Precondition failed" in wrong.json()["message"]
    stale = cluster.request("DELETE", base + "/pre", {"preconditions": {"resourceVersion": "1"}})
    assert stale.status == 409
    ok = cluster.request("DELETE", base + "/pre", {"preconditions": {"uid": created["metadata"]["uid"]}})
    assert ok.status == 200 and ok.json()["status"] == "Success"


def test_namespace_deletion_empties_it_and_blocks_new_content(cluster: Cluster) -> None:
    name = f"term-{uuid.uuid4().hex[:6]}"
    cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    base = f"/api/v1/namespaces/{name}/configmaps"
    cluster.request("POST", base, {"metadata": {"name": "plain"}})
    cluster.request("POST", base, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    assert cluster.request("DELETE", f"/api/v1/namespaces/{name}").status == 200
    ns = wait_until(lambda: _terminating_with_content(cluster, name), 15, "the namespace Terminating with content")
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["deletionTimestamp"]
    remaining = next(c for c in ns["status"]["conditions"] if c["type"] == "NamespaceContentRemaining")
    assert remaining["message"] == "Some resources are remaining: configmaps has 1 resource instances"
    assert cluster.request("GET", base + "/plain").status == 404
    refused = cluster.request("POST", base, {"metadata": {"name": "late"}})
    assert refused.status == 403
    assert "because it is being terminated" in refused.json()["message"]
    # Once the last finalizer goes, the namespace controller finishes and the namespace disappears.
    cluster.request("PATCH", base + "/held", {"metadata": {"finalizers": None}},
                    content_type="application/merge-patch+json")
    wait_until(lambda: cluster.request("GET", f"/api/v1/namespaces/{name}").status == 404, 15, "the namespace gone")


def _terminating_with_content(cluster: Cluster, name: str) -> dict | None:
    ns = cluster.request("GET", f"/api/v1/namespaces/{name}").json()
    conditions = {c["type"]: c["status"] for c in ns.get("status", {}).get("conditions") or []}
    return ns if conditions.get("NamespaceContentRemaining") == "True" else None


def test_pod_binding_and_graceful_delete(cluster: Cluster, sweep_ns: str) -> None:
    base = f"/api/v1/namespaces/{sweep_ns}/pods"
    # Bound by hand: a scheduler of its own keeps the cluster's scheduler out of the way.
    cluster.request("POST", base, {"metadata": {"name": "bound"}, "spec": {**POD_SPEC,
                                                                         "schedulerName": "by-hand"}})
    bind = cluster.request("POST", base + "/bound/binding", {"apiVersion": "v1", "kind": "Binding",
                                                             "metadata": {"name": "bound"},
                                                             "target": {"kind": "Node", "name": "node-a"}})
    assert bind.status == 201
    pod = cluster.request("GET", base + "/bound").json()
    assert pod["spec"]["nodeName"] == "node-a"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in pod["status"]["conditions"])
    again = cluster.request("POST", base + "/bound/binding", {"target": {"kind": "Node", "name": "node-b"}})
    assert again.status == 409
    # A pod on a node waits for its kubelet: deletion marks it with the grace period.
    deleted = cluster.request("DELETE", base + "/bound")
    assert deleted.status == 200 and deleted.json()["metadata"]["deletionGracePeriodSeconds"] == 30
    gone = cluster.request("DELETE", base + "/bound?gracePeriodSeconds=0")
    assert gone.status == 200
    assert cluster.request("GET", base + "/bound").status == 404
