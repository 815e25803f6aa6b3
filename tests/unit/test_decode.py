"""Schema-driven decoding of built-in kinds, matching upstream's strict Go decoder."""

from __future__ import annotations

import copy
import time

import orjson
import pytest
import yaml

from pocketkube.apiserver.decode import DecodeError, decode_object

POD = "io.k8s.api.core.v1.Pod"
DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"
SERVICE = "io.k8s.api.core.v1.Service"

DEPLOYMENT_YAML = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
  annotations: null
spec:
  replicas: 3
  foo: bar
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 1}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports: [{containerPort: 80, name: http}]
        resources:
          limits: {cpu: 0.5, memory: 128Mi}
          requests: {cpu: 1000m, memory: 1024Mi}
      - name: sidecar
        imagee: busybox
        env:
        - {name: MODE, value: "fast", valueFromm: x}
"""

SERVICE_YAML = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 8080, targetPort: 9090, nodePort: 30080}
"""


def _decode(definition: str, obj: dict) -> dict:
    return decode_object(definition, obj).obj


def _error(definition: str, obj: object) -> str:
    with pytest.raises(DecodeError) as info:
        decode_object(definition, obj)
    return info.value.message


def test_deployment_unknown_fields_are_reported_and_dropped() -> None:
    obj = yaml.safe_load(DEPLOYMENT_YAML)
    result = decode_object(DEPLOYMENT, obj)
    assert result.unknown_fields == [
        "spec.foo",
        "spec.template.spec.containers[1].imagee",
        "spec.template.spec.containers[1].env[0].valueFromm",
    ]
    spec = result.obj["spec"]
    assert "foo" not in spec
    assert spec["template"]["spec"]["containers"][1] == {"name": "sidecar",
                                                         "env": [{"name": "MODE", "value": "fast"}]}
    assert "annotations" not in result.obj["metadata"]  # null leaves Go's zero value: omitted
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 1}
    # quantities come back in Go's canonical form
    resources = spec["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": "500m", "memory": "128Mi"},
                         "requests": {"cpu": "1", "memory": "1Gi"}}


def test_strict_error_and_warnings_text() -> None:
    result = decode_object(DEPLOYMENT, yaml.safe_load(DEPLOYMENT_YAML))
    assert result.warnings()[0] == 'unknown field "spec.foo"'
    message = result.strict_error_message()
    assert message.startswith('strict decoding error: unknown field "spec.foo", unknown field "spec.template')
    status = result.strict_error("Deployment", "v1")
    assert status.code == 400 and status.reason == "BadRequest"
    assert status.message == f'Deployment in version "v1" cannot be handled as a Deployment: {message}'


def test_service_int_or_string() -> None:
    result = decode_object(SERVICE, yaml.safe_load(SERVICE_YAML))
    assert result.unknown_fields == []
    ports = result.obj["spec"]["ports"]
    assert [p["targetPort"] for p in ports] == ["http", 9090]
    assert _error(SERVICE, {"spec": {"ports": [{"port": 80, "targetPort": True}]}}) == (
        "json: cannot unmarshal bool into Go struct field ServicePort.spec.ports.targetPort of type int32")
    assert _error(SERVICE, {"spec": {"ports": [{"port": 80, "targetPort": 1.5}]}}) == (
        "json: cannot unmarshal number 1.5 into Go struct field ServicePort.spec.ports.targetPort of type int32")
    assert "number 4294967296" in _error(SERVICE, {"spec": {"ports": [{"port": 80, "targetPort": 2**32}]}})


def test_type_errors_name_the_go_field() -> None:
    assert _error(POD, {"spec": {"containers": "web"}}) == (
        "json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type []v1.Container")
    assert _error(POD, {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": "80"}]}]}}) == (
        "json: cannot unmarshal string into Go struct field "
        "ContainerPort.spec.containers.ports.containerPort of type int32")
    assert _error(POD, {"spec": {"containers": [{"name": "a", "env": [{"name": "P", "value": 8080}]}]}}) == (
        "json: cannot unmarshal number into Go struct field EnvVar.spec.containers.env.value of type string")
    assert _error(POD, {"spec": "x"}) == (
        "json: cannot unmarshal string into Go struct field Pod.spec of type v1.PodSpec")
    assert _error(POD, ["x"]) == "json: cannot unmarshal array into Go value of type v1.Pod"
    assert _error(POD, {"spec": {"hostNetwork": "true"}}) == (
        "json: cannot unmarshal string into Go struct field PodSpec.spec.hostNetwork of type bool")
    assert _error(POD, {"spec": {"hostNetwork": 1}}) == (
        "json: cannot unmarshal number into Go struct field PodSpec.spec.hostNetwork of type bool")


def test_numbers_follow_go_rules() -> None:
    # Go refuses 2.0 and 1.5 for integers, bools for numbers, and out-of-range values.
    assert "number 2.0 into" in _error(DEPLOYMENT, {"spec": {"replicas": 2.0}})
    assert "number 1.5 into" in _error(DEPLOYMENT, {"spec": {"replicas": 1.5}})
    assert "bool into" in _error(DEPLOYMENT, {"spec": {"replicas": True}})
    assert _error(DEPLOYMENT, {"spec": {"replicas": 2**31}}) == (
        "json: cannot unmarshal number 2147483648 into Go struct field DeploymentSpec.spec.replicas of type int32")
    assert _decode(POD, {"spec": {"activeDeadlineSeconds": 2**40}})["spec"]["activeDeadlineSeconds"] == 2**40
    assert "of type int64" in _error(POD, {"spec": {"activeDeadlineSeconds": 2**63}})


def test_maps() -> None:
    obj = _decode(POD, {"metadata": {"labels": {"a": "1", "b": None}, "annotations": {}}})
    assert obj["metadata"] == {"labels": {"a": "1", "b": ""}}  # an empty omitempty map is not re-encoded
    assert _error(POD, {"metadata": {"labels": {"a": 1}}}) == (
        "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string")
    assert _error(POD, {"metadata": {"labels": ["a"]}}) == (
        "json: cannot unmarshal array into Go struct field ObjectMeta.metadata.labels of type map[string]string")
    # map keys are part of strict paths
    result = decode_object(POD, {"spec": {"overhead": {"cpu": "1"}, "nodeSelector": {"x": "y"}},
                                 "metadata": {"labels": {"x": "y"}, "Labels": {}}})
    assert result.unknown_fields == ["metadata.Labels"]  # matching is case-sensitive


def test_empty_omitempty_fields_are_dropped_as_go_reencodes_them() -> None:
    obj = _decode(POD, {"metadata": {"name": "", "finalizers": [], "generation": 0},
                        "spec": {"hostNetwork": False, "nodeName": "", "volumes": [], "nodeSelector": {},
                                 "containers": [], "securityContext": {}, "enableServiceLinks": False,
                                 "priority": 0}})
    # Pointers keep their zero value once set; a slice without omitempty stays; structs are never dropped.
    assert obj == {"metadata": {}, "spec": {"containers": [], "securityContext": {}, "enableServiceLinks": False,
                                            "priority": 0}}
    assert _decode(DEPLOYMENT, {"spec": {"paused": False, "strategy": {}, "replicas": 0}})["spec"] == {
        "strategy": {}, "replicas": 0}


def test_quantities() -> None:
    limits = _decode(POD, {"spec": {"containers": [{"name": "a", "resources": {"limits": {
        "cpu": 2, "memory": "1.5Gi", "ephemeral-storage": "1e3", "nvidia.com/gpu": None}}}]}})[
        "spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": "1536Mi", "ephemeral-storage": "1e3", "nvidia.com/gpu": "0"}
    regex = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    for bad in ("1KB", "lots", True, {"a": 1}):
        assert _error(POD, {"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": bad}}}]}}) == regex


def test_nulls() -> None:
    obj = _decode(POD, {"metadata": {"name": "p", "labels": None, "creationTimestamp": None},
                        "spec": {"containers": [None, {"name": "b", "args": ["x", None]}], "nodeName": None}})
    assert obj == {"metadata": {"name": "p"}, "spec": {"containers": [{}, {"name": "b", "args": ["x", ""]}]}}


def test_times() -> None:
    obj = _decode(POD, {"metadata": {"creationTimestamp": "2024-03-01T10:00:00.75+02:00"},
                        "status": {"conditions": [{"type": "Ready", "status": "True",
                                                   "lastTransitionTime": "2024-03-01T08:00:00Z"}]}})
    assert obj["metadata"]["creationTimestamp"] == "2024-03-01T08:00:00Z"
    assert obj["status"]["conditions"][0]["lastTransitionTime"] == "2024-03-01T08:00:00Z"
    assert _error(POD, {"metadata": {"creationTimestamp": "yesterday"}}) == (
        'parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006"')
    assert _error(POD, {"metadata": {"creationTimestamp": "2024-03-01 10:00:00Z"}}) == (
        'parsing time "2024-03-01 10:00:00Z" as "2006-01-02T15:04:05Z07:00": cannot parse " 10:00:00Z" as "T"')
    assert _error(POD, {"metadata": {"creationTimestamp": "2024-13-01T10:00:00Z"}}) == (
        'parsing time "2024-13-01T10:00:00Z": month out of range')
    assert _error(POD, {"metadata": {"creationTimestamp": "2024-02-30T10:00:00Z"}}) == (
        'parsing time "2024-02-30T10:00:00Z": day out of range')
    assert _error(POD, {"metadata": {"creationTimestamp": 5}}) == (
        "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.creationTimestamp of type string")
    event = _decode("io.k8s.api.events.v1.Event", {"eventTime": "2024-03-01T10:00:00.123456+01:00"})
    assert event["eventTime"] == "2024-03-01T09:00:00.123456Z"
    assert 'cannot parse "Z" as ".000000"' in _error("io.k8s.api.events.v1.Event",
                                                      {"eventTime": "2024-03-01T10:00:00Z"})


def test_bytes() -> None:
    secret = _decode("io.k8s.api.core.v1.Secret", {"data": {"a": "YWJj\nZA==", "b": ""}, "stringData": {"c": "x"}})
    assert secret["data"] == {"a": "YWJjZA==", "b": ""}
    assert _error("io.k8s.api.core.v1.Secret", {"data": {"a": "abc"}}) == "illegal base64 data at input byte 0"
    assert _error("io.k8s.api.core.v1.Secret", {"data": {"a": "ab!d"}}) == "illegal base64 data at input byte 2"
    assert _error("io.k8s.api.core.v1.Secret", {"data": {"a": "YQ==YQ=="}}) == "illegal base64 data at input byte 4"
    assert _error("io.k8s.api.core.v1.ConfigMap", {"binaryData": {"a": 1}}) == (
        "json: cannot unmarshal number into Go struct field ConfigMap.binaryData of type []uint8")


def test_free_form_fields_are_kept() -> None:
    obj = _decode("io.k8s.api.apps.v1.ControllerRevision", {
        "revision": 1, "data": {"spec": {"anything": [1, {"x": None}]}},
        "metadata": {"managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:x": {}}}}]}})
    assert obj["data"] == {"spec": {"anything": [1, {"x": None}]}}
    assert obj["metadata"]["managedFields"][0]["fieldsV1"] == {"f:spec": {"f:x": {}}}


def test_unknown_fields_are_deduplicated_and_capped() -> None:
    obj = {"spec": {"containers": [{"name": str(i), "bogus": 1} for i in range(150)]}, "x": 1}
    result = decode_object(POD, obj)
    assert len(result.unknown_fields) == 100
    assert result.unknown_fields[0] == "spec.containers[0].bogus"
    assert all("bogus" not in c for c in obj["spec"]["containers"])
    assert "x" not in obj


def test_first_type_error_wins_but_fatal_errors_abort() -> None:
    # Go saves the first type error and keeps going; an UnmarshalJSON error (quantity) aborts at once.
    message = _error(POD, {"spec": {"hostNetwork": "x", "containers": [
        {"name": "a", "resources": {"limits": {"cpu": "bad"}}}]}})
    assert message.startswith("quantities must match")
    message = _error(POD, {"spec": {"hostNetwork": "x", "hostPID": "y"}})
    assert "spec.hostNetwork" in message


def test_decode_error_status() -> None:
    with pytest.raises(DecodeError) as info:
        decode_object(POD, {"spec": {"containers": "x"}})
    status = info.value.to_status("Pod", "v1")
    assert status.code == 400
    assert status.message == ('Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal string '
                              "into Go struct field PodSpec.spec.containers of type []v1.Container")


def test_every_builtin_kind_compiles() -> None:
    from pocketkube.api.kinds import BUILTIN_RESOURCES

    for info in BUILTIN_RESOURCES:
        result = decode_object(info.definition, {"apiVersion": info.group_version, "kind": info.kind,
                                                 "metadata": {"name": "x"}})
        assert result.unknown_fields == []


def test_pod_decode_is_fast() -> None:
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web", "tier": "fe"},
                     "annotations": {"note": "x"}},
        "spec": {
            "containers": [{
                "name": f"c{i}", "image": "nginx:1.25",
                "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
                "env": [{"name": "A", "value": "1"},
                        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                              "requests": {"cpu": "100m", "memory": "64Mi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                "securityContext": {"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
            } for i in range(2)],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "status": {"phase": "Running", "podIP": "10.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]},
    }
    raw = orjson.dumps(pod)
    decode_object(POD, copy.deepcopy(pod))  # compile the schemas outside the measurement
    start = time.perf_counter()
    for _ in range(1000):
        result = decode_object(POD, orjson.loads(raw))
    elapsed = time.perf_counter() - start
    assert result.unknown_fields == [] and result.obj == pod
    assert elapsed < 2.0, f"1000 pod decodes took {elapsed:.2f}s"
