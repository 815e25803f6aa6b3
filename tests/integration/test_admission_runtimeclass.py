"""RuntimeClass admission through the real kubectl: overhead and scheduling copied into pods, and the
refusals (unknown class, contradicting overhead or node selector, overhead without a class)."""

from __future__ import annotations

import json
import uuid

import pytest
from cluster import Cluster


@pytest.fixture
def runtime_class(cluster: Cluster):
    name = "sandboxed-" + uuid.uuid4().hex[:6]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": "crun",
        "overhead": {"podFixed": {"cpu": "250m", "memory": "64Mi"}},
        "scheduling": {"nodeSelector": {"sandbox": "yes"},
                       "tolerations": [{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}]}}))
    yield name
    cluster.kubectl("delete", "runtimeclass", name)


def _pod(name: str, namespace: str, **spec: object) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                       "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}})


def test_pod_gets_the_class_overhead_and_scheduling(cluster: Cluster, namespace: str, runtime_class: str) -> None:
    cluster.kubectl("create", "-f", "-", input=_pod("p", namespace, runtimeClassName=runtime_class,
                                                       nodeSelector={"disk": "ssd"}))
    spec = json.loads(cluster.kubectl("get", "pod", "p", "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["overhead"] == {"cpu": "250m", "memory": "64Mi"}
    assert spec["nodeSelector"] == {"disk": "ssd", "sandbox": "yes"}
    assert {"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_refusals(cluster: Cluster, namespace: str, runtime_class: str) -> None:
    missing = cluster.kubectl("create", "-f", "-", check=False,
                              input=_pod("a", namespace, runtimeClassName="no-such-class"))
    assert missing.returncode != 0 and 'pod rejected: RuntimeClass "no-such-class" not found' in missing.stderr
    conflict = cluster.kubectl("create", "-f", "-", check=False,
                               input=_pod("b", namespace, runtimeClassName=runtime_class,
                                          nodeSelector={"sandbox": "no"}))
    assert conflict.returncode != 0
    assert "conflict: runtimeClass.scheduling.nodeSelector[sandbox] = yes; pod.spec.nodeSelector[sandbox] = no" \
        in conflict.stderr
    other = cluster.kubectl("create", "-f", "-", check=False,
                            input=_pod("c", namespace, runtimeClassName=runtime_class, overhead={"cpu": "1"}))
    assert other.returncode != 0 and "Pod's Overhead doesn't match RuntimeClass's defined Overhead" in other.stderr
    classless = cluster.kubectl("create", "-f", "-", check=False, input=_pod("d", namespace, overhead={"cpu": "1"}))
    assert classless.returncode != 0
    assert "Pod Overhead set without corresponding RuntimeClass defined Overhead" in classless.stderr
    assert cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.strip() == ""
