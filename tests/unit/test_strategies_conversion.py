"""autoscaling/v1 <-> v2 HPA and events.k8s.io/v1 <-> core/v1 Event conversions."""

from __future__ import annotations

import json

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver.strategies.conversion import (
    METRIC_SPECS_ANNOTATION,
    METRIC_STATUSES_ANNOTATION,
    from_storage,
    to_storage,
)

CATALOG = ResourceCatalog()
HPA_V1 = CATALOG.resource("autoscaling", "v1", "horizontalpodautoscalers")
HPA_V2 = CATALOG.resource("autoscaling", "v2", "horizontalpodautoscalers")
EVENTS_V1 = CATALOG.resource("events.k8s.io", "v1", "events")
CORE_EVENTS = CATALOG.resource("", "v1", "events")
PODS = CATALOG.resource("", "v1", "pods")


def _hpa_v2() -> dict:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"keep": "me"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                           "averageUtilization": 60}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"},
                                          "target": {"type": "AverageValue", "averageValue": "10"}}},
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
        },
        "status": {
            "currentReplicas": 2, "desiredReplicas": 3,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": 70, "averageValue": "350m"}}}],
            "conditions": [{"type": "AbleToScale", "status": "True"}],
        },
    }


def test_hpa_v2_to_v1() -> None:
    v1 = from_storage(HPA_V1, _hpa_v2())
    assert v1["apiVersion"] == "autoscaling/v1" and v1["kind"] == "HorizontalPodAutoscaler"
    assert v1["spec"] == {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                          "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60}
    assert v1["status"] == {"currentReplicas": 2, "desiredReplicas": 3, "currentCPUUtilizationPercentage": 70}
    annotations = v1["metadata"]["annotations"]
    assert annotations["keep"] == "me"
    assert json.loads(annotations[METRIC_SPECS_ANNOTATION]) == [
        {"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "10"}}]
    assert json.loads(annotations[METRIC_STATUSES_ANNOTATION]) == [
        {"type": "Resource", "resource": {"name": "cpu", "currentAverageUtilization": 70,
                                          "currentAverageValue": "350m"}}]


def test_hpa_round_trip() -> None:
    original = _hpa_v2()
    back = to_storage(HPA_V1, from_storage(HPA_V1, original))
    assert back["apiVersion"] == "autoscaling/v2"
    assert back["metadata"] == original["metadata"]
    # The v1 fields come last; the set of metrics is the same.
    assert sorted(json.dumps(m, sort_keys=True) for m in back["spec"]["metrics"]) == \
        sorted(json.dumps(m, sort_keys=True) for m in original["spec"]["metrics"])
    assert back["spec"]["behavior"] == original["spec"]["behavior"]
    assert back["status"]["currentMetrics"] == original["status"]["currentMetrics"]
    assert back["status"]["conditions"] == original["status"]["conditions"]


def test_hpa_v1_plain() -> None:
    v1 = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
          "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "a"}, "maxReplicas": 3,
                   "targetCPUUtilizationPercentage": 50},
          "status": {"currentReplicas": 1, "desiredReplicas": 1, "currentCPUUtilizationPercentage": 20}}
    v2 = to_storage(HPA_V1, v1)
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 50}}}]
    assert v2["status"]["currentMetrics"] == [{"type": "Resource", "resource": {"name": "cpu", "current": {
        "averageUtilization": 20}}}]
    assert "annotations" not in v2["metadata"]
    back = from_storage(HPA_V1, v2)
    assert back["spec"] == v1["spec"] and back["status"] == v1["status"]
    # As upstream, the raw current metrics always travel in an annotation (the CPU one included).
    assert json.loads(back["metadata"]["annotations"][METRIC_STATUSES_ANNOTATION]) == [
        {"type": "Resource", "resource": {"name": "cpu", "currentAverageUtilization": 20,
                                          "currentAverageValue": "0"}}]


def test_events_round_trip() -> None:
    new_event = {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e1", "namespace": "default"},
        "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "kubelet",
        "reportingInstance": "node-1", "action": "Pulling", "reason": "Pulling", "type": "Normal",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}, "note": "Pulling image",
        "series": {"count": 2, "lastObservedTime": "2025-01-01T00:00:01.000000Z"},
    }
    core = to_storage(EVENTS_V1, new_event)
    assert core["apiVersion"] == "v1"
    assert core["involvedObject"] == new_event["regarding"]
    assert core["message"] == "Pulling image"
    assert core["reportingComponent"] == "kubelet"
    assert "regarding" not in core and "note" not in core
    assert from_storage(EVENTS_V1, core) == new_event


def test_core_event_to_events_v1() -> None:
    core = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Started", "message": "hi",
            "source": {"component": "kubelet", "host": "n1"}, "count": 3,
            "firstTimestamp": "2025-01-01T00:00:00Z", "lastTimestamp": "2025-01-01T00:01:00Z", "type": "Normal"}
    out = from_storage(EVENTS_V1, core)
    assert out["eventTime"] is None
    assert out["deprecatedSource"] == {"component": "kubelet", "host": "n1"}
    assert out["deprecatedCount"] == 3
    assert out["deprecatedFirstTimestamp"] == "2025-01-01T00:00:00Z"
    assert to_storage(EVENTS_V1, out) == {**core, "eventTime": None}


def test_identity_for_other_kinds() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}
    assert to_storage(PODS, pod) == pod and to_storage(PODS, pod) is not pod
    assert from_storage(HPA_V2, {"metadata": {}})["apiVersion"] == "autoscaling/v2"
