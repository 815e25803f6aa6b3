"""Admission through the real server and the real kubectl: namespace lifecycle, the pod plugins with the
controller manager's service accounts, system priority classes, quotas and limit ranges."""

from __future__ import annotations

import json
import time
import uuid

from cluster import Cluster


def _namespace(cluster: Cluster) -> str:
    """A new namespace with its `default` account: right after the server starts, the controller manager
    may need longer than admission waits for it (upstream refuses such pods too)."""
    ns = f"adm-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    deadline = time.monotonic() + 20
    while cluster.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default").status != 200:
        assert time.monotonic() < deadline, "the serviceaccount controller made no default account"
        time.sleep(0.05)
    return ns


def _pod(name: str, ns: str, **spec: object) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                       "spec": {"containers": [{"name": "c", "image": "nginx"}], **spec}})


def test_immortal_namespaces(cluster: Cluster) -> None:
    result = cluster.kubectl("delete", "namespace", "kube-system", check=False)
    assert result.returncode == 1
    assert 'Error from server (Forbidden): namespaces "kube-system" is forbidden: this namespace may not be deleted' \
        in result.stderr


def test_pod_in_new_namespace_gets_admission_defaults(cluster: Cluster) -> None:
    ns = _namespace(cluster)
    cluster.create(_pod("web", ns))
    spec = json.loads(cluster.kubectl("get", "pod", "web", "-n", ns, "-o", "json").stdout)["spec"]
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "default"
    assert (spec["priority"], spec["preemptionPolicy"]) == (0, "PreemptLowerPriority")
    assert {t["key"]: t["tolerationSeconds"] for t in spec["tolerations"]} == {
        "node.kubernetes.io/not-ready": 300, "node.kubernetes.io/unreachable": 300}
    refused = cluster.kubectl("create", "-f", "-", input=_pod("robot", ns, serviceAccountName="robot"), check=False)
    assert (f'Error from server (Forbidden): error when creating "STDIN": pods "robot" is forbidden: error looking '
            f'up service account {ns}/robot: serviceaccount "robot" not found') in refused.stderr


def test_system_priority_classes(cluster: Cluster) -> None:
    out = cluster.kubectl("get", "priorityclass", "-o", "jsonpath={range .items[*]}{.metadata.name}={.value} {end}")
    assert {"system-cluster-critical=2000000000", "system-node-critical=2000001000"} <= set(out.stdout.split())
    ns = _namespace(cluster)
    cluster.create(_pod("critical", ns, priorityClassName="system-cluster-critical"))
    priority = cluster.kubectl("get", "pod", "critical", "-n", ns, "-o", "jsonpath={.spec.priority}").stdout
    assert priority == "2000000000"


def test_quota_and_limit_range(cluster: Cluster) -> None:
    ns = _namespace(cluster)
    cluster.kubectl("create", "quota", "q", "--hard=pods=1,requests.cpu=1", "-n", ns)
    cluster.create(json.dumps({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr", "namespace": ns},
                               "spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "200m"}}]}}))
    # Dry run: checked, not charged.
    cluster.kubectl("create", "-f", "-", "--dry-run=server", input=_pod("a", ns))
    cluster.create(_pod("a", ns))
    cpu = cluster.kubectl("get", "pod", "a", "-n", ns, "-o", "jsonpath={.spec.containers[0].resources.requests.cpu}")
    assert cpu.stdout == "200m"
    used = json.loads(cluster.kubectl("get", "quota", "q", "-n", ns, "-o", "json").stdout)["status"]
    assert used == {"hard": {"pods": "1", "requests.cpu": "1"}, "used": {"pods": "1", "requests.cpu": "200m"}}
    refused = cluster.kubectl("create", "-f", "-", input=_pod("b", ns), check=False)
    assert ('pods "b" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1'
            in refused.stderr)
    cluster.kubectl("delete", "pod", "a", "-n", ns, "--wait=true")
    cluster.create(_pod("b", ns))
