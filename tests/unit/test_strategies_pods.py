"""Pod defaulting, admission-like defaults, QoS, validation and update rules."""

from __future__ import annotations

import copy

import pytest

from pocketkube.api.errors import Cause
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver.strategies import build_strategies
from pocketkube.apiserver.strategies.core_pods import PodStrategy


@pytest.fixture
def pods() -> PodStrategy:
    strategy = build_strategies(ResourceCatalog()).strategy_for(("", "v1", "pods"))
    assert isinstance(strategy, PodStrategy)
    return strategy


def _pod(**spec) -> dict:
    base = {"containers": [{"name": "web", "image": "nginx"}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": base}


def _create(strategy: PodStrategy, pod: dict) -> dict:
    strategy.default(pod)
    strategy.prepare_for_create(pod)
    return pod


def _texts(causes: list[Cause]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


def test_pod_defaults(pods: PodStrategy) -> None:
    pod = _create(pods, _pod())
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    # The service account, priority and default tolerations come from admission (tests/unit/test_admission.py).
    assert not {"serviceAccountName", "priority", "preemptionPolicy", "tolerations"} & set(spec)
    c = spec["containers"][0]
    assert c["imagePullPolicy"] == "Always"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert pods.validate(pod) == []


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.27", "IfNotPresent"),
    ("registry:5000/app", "Always"), ("registry:5000/app:v1", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
])
def test_image_pull_policy(pods: PodStrategy, image: str, policy: str) -> None:
    pod = _create(pods, _pod(containers=[{"name": "c", "image": image}]))
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_nested_defaults(pods: PodStrategy) -> None:
    pod = _create(pods, _pod(
        containers=[{"name": "c", "image": "x:1", "ports": [{"containerPort": 80}],
                     "livenessProbe": {"httpGet": {"port": 80}},
                     "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
        volumes=[{"name": "a"}, {"name": "s", "secret": {"secretName": "s"}},
                 {"name": "cm", "configMap": {"name": "cm"}}]))
    c = pod["spec"]["containers"][0]
    assert c["ports"][0]["protocol"] == "TCP"
    assert c["livenessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                                  "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert c["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    vols = pod["spec"]["volumes"]
    assert vols[0]["emptyDir"] == {}
    assert vols[1]["secret"]["defaultMode"] == 420
    assert vols[2]["configMap"]["defaultMode"] == 420
    assert pod["status"]["qosClass"] == "Guaranteed"


def test_qos_burstable(pods: PodStrategy) -> None:
    pod = _create(pods, _pod(containers=[{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m"}}}]))
    assert pod["status"]["qosClass"] == "Burstable"


def test_validation_messages(pods: PodStrategy) -> None:
    pod = _create(pods, _pod(containers=[
        {"name": "Web", "image": ""},
        {"name": "dup", "image": "x", "ports": [{"containerPort": 70000}],
         "volumeMounts": [{"name": "missing", "mountPath": "/m"}]},
        {"name": "dup", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
    ], restartPolicy="Sometimes"))
    texts = _texts(pods.validate(pod))
    assert ('spec.containers[0].name: Invalid value: "Web": a lowercase RFC 1123 label must consist of lower '
            "case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. "
            "'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')") in texts
    assert "spec.containers[0].image: Required value" in texts
    assert 'spec.containers[2].name: Duplicate value: "dup"' in texts
    assert ("spec.containers[1].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, "
            "inclusive") in texts
    assert 'spec.containers[1].volumeMounts[0].name: Not found: "missing"' in texts
    assert ('spec.containers[2].resources.requests[cpu]: Invalid value: "2": must be less than or equal to cpu '
            "limit of 1") in texts
    assert ('spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", '
            '"Never"') in texts


def test_security_context_validation(pods: PodStrategy) -> None:
    pod = _create(pods, _pod(containers=[
        {"name": "a", "image": "x", "securityContext": {"runAsUser": -1, "privileged": True,
                                                         "allowPrivilegeEscalation": False}},
        {"name": "b", "image": "x", "securityContext": {"procMount": "Odd", "seccompProfile": {"type": "Localhost"}}},
    ], shareProcessNamespace=True, hostPID=True, securityContext={
        "runAsGroup": 2**31, "fsGroup": -5, "supplementalGroups": [1, -2], "supplementalGroupsPolicy": "Loose",
        "fsGroupChangePolicy": "Sometimes", "seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "p"}}))
    texts = _texts(pods.validate(pod))
    for expected in [
        "spec.securityContext.runAsGroup: Invalid value: 2147483648: must be between 0 and 2147483647, inclusive",
        "spec.securityContext.fsGroup: Invalid value: -5: must be between 0 and 2147483647, inclusive",
        "spec.securityContext.supplementalGroups[1]: Invalid value: -2: must be between 0 and 2147483647, inclusive",
        "spec.securityContext.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot "
        "both be enabled",
        'spec.securityContext.supplementalGroupsPolicy: Unsupported value: "Loose": supported values: "Merge", '
        '"Strict"',
        'spec.securityContext.fsGroupChangePolicy: Unsupported value: "Sometimes": supported values: "Always", '
        '"OnRootMismatch"',
        'spec.securityContext.seccompProfile.localhostProfile: Invalid value: "p": can only be set when seccomp '
        "type is Localhost",
        "spec.containers[0].securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
        'spec.containers[1].securityContext.procMount: Unsupported value: "Odd": supported values: "Default", '
        '"Unmasked"',
        "spec.containers[1].securityContext.seccompProfile.localhostProfile: Required value: must be set when "
        "seccomp type is Localhost",
    ]:
        assert expected in texts, texts
    assert any(t.startswith("spec.containers[0].securityContext: Invalid value: ") and t.endswith(
        "cannot set `allowPrivilegeEscalation` to false and `privileged` to true") for t in texts), texts
    fine = _create(pods, _pod(shareProcessNamespace=True, securityContext={
        "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000, "supplementalGroupsPolicy": "Strict"}))
    assert pods.validate(fine) == []


def test_no_containers(pods: PodStrategy) -> None:
    pod = _create(pods, _pod(containers=[]))
    assert "spec.containers: Required value" in _texts(pods.validate(pod))


def test_duplicate_volumes(pods: PodStrategy) -> None:
    pod = _create(pods, _pod(volumes=[{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]))
    assert 'spec.volumes[1].name: Duplicate value: "a"' in _texts(pods.validate(pod))


# What DefaultTolerationSeconds admission gives every pod.
_TOLERATIONS = [{"key": k, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]


def test_update_allows_image_and_added_toleration(pods: PodStrategy) -> None:
    old = _create(pods, _pod(tolerations=_TOLERATIONS))
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:2"
    new["spec"]["tolerations"].append({"key": "k", "operator": "Exists", "effect": "NoSchedule"})
    pods.default(new)
    pods.prepare_for_update(new, old)
    assert pods.validate_update(new, old) == []


def test_update_forbids_other_spec_changes(pods: PodStrategy) -> None:
    old = _create(pods, _pod())
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    pods.default(new)
    texts = _texts(pods.validate_update(new, old))
    assert any(t.startswith("spec: Forbidden: pod updates may not change fields other than "
                            "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                            "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
                            "tolerations),`spec.terminationGracePeriodSeconds`") for t in texts)


def test_update_forbids_removing_toleration(pods: PodStrategy) -> None:
    old = _create(pods, _pod(tolerations=_TOLERATIONS))
    new = copy.deepcopy(old)
    new["spec"]["tolerations"] = new["spec"]["tolerations"][:1]
    texts = _texts(pods.validate_update(new, old))
    assert "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds" in texts


def test_status_reset_on_create_and_kept_on_update(pods: PodStrategy) -> None:
    pod = _pod()
    pod["status"] = {"phase": "Running"}
    _create(pods, pod)
    assert pod["status"]["phase"] == "Pending"
    new = copy.deepcopy(pod)
    new["status"] = {"phase": "Failed"}
    pods.prepare_for_update(new, pod)
    assert new["status"]["phase"] == "Pending"


def test_grace_period(pods: PodStrategy) -> None:
    pod = _create(pods, _pod())
    assert pods.grace_period(pod, None) == 0  # never scheduled
    pod["spec"]["nodeName"] = "n1"
    assert pods.grace_period(pod, None) == 30
    assert pods.grace_period(pod, 5) == 5
    assert pods.grace_period(pod, 0) == 0
    pod["status"]["phase"] = "Succeeded"
    assert pods.grace_period(pod, None) == 0


def test_field_getters(pods: PodStrategy) -> None:
    pod = _create(pods, _pod(nodeName="n1"))
    getters = pods.field_getters()
    assert getters["spec.nodeName"](pod) == "n1"
    assert getters["status.phase"](pod) == "Pending"
    assert getters["spec.hostNetwork"](pod) == "false"
    assert getters["metadata.namespace"](pod) == "default"
    assert pods.tracks_generation
