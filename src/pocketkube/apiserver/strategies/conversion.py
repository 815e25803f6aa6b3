"""Conversion between a served version and the stored one where they differ.

Two resources are served in a version other than the stored one:
- autoscaling/v1 HorizontalPodAutoscaler, stored as autoscaling/v2 (pkg/apis/autoscaling/v1/conversion.go).
  What v1 cannot express travels in autoscaling.alpha.kubernetes.io/* annotations, as upstream does, so a
  v2 -> v1 -> v2 round trip loses nothing.
- events.k8s.io/v1 Event, stored as core/v1 Event (pkg/apis/events/v1/conversion.go).
Custom resources are stored in their CRD's storage version and served in every served version: conversion
strategy None sets apiVersion, and the result is pruned with the target version's schema (crd.codec.convert).
Everything else is stored as served.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pocketkube.api.kinds import ResourceInfo
from pocketkube.apiserver.crd import codec as crd_codec

Obj = dict[str, Any]

METRIC_SPECS_ANNOTATION = "autoscaling.alpha.kubernetes.io/metrics"
METRIC_STATUSES_ANNOTATION = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS_ANNOTATION = "autoscaling.alpha.kubernetes.io/conditions"
BEHAVIOR_ANNOTATION = "autoscaling.alpha.kubernetes.io/behavior"
_HPA_ANNOTATIONS = (METRIC_SPECS_ANNOTATION, METRIC_STATUSES_ANNOTATION, CONDITIONS_ANNOTATION,
                    BEHAVIOR_ANNOTATION)


def to_storage(info: ResourceInfo, obj: Obj) -> Obj:
    """The object as stored, for an object received in `info`'s version. Returns a new (top-level) dict."""
    if info.custom is not None and info.storage_version and info.storage_version != info.version:
        return crd_codec.convert(info, obj, info.storage_version, info.stored_version)
    if info.group == "autoscaling" and info.version == "v1":
        return hpa_v1_to_v2(obj)
    if info.group == "events.k8s.io":
        return events_to_core(obj)
    # Same version: a shallow copy with the right apiVersion/kind; callers never mutate nested parts.
    return {**obj, "apiVersion": info.stored_version, "kind": info.kind}


def from_storage(info: ResourceInfo, obj: Obj) -> Obj:
    """The stored object in `info`'s version. Returns a new (top-level) dict."""
    if info.custom is not None:
        return crd_codec.convert(info, obj, info.version, info.group_version)
    if info.group == "autoscaling" and info.version == "v1":
        return hpa_v2_to_v1(obj)
    if info.group == "events.k8s.io":
        return core_to_events(obj)
    return {**obj, "apiVersion": info.group_version, "kind": info.kind}


# --- HorizontalPodAutoscaler ---------------------------------------------------------------

def _compact(d: Obj) -> Obj:
    """Drop unset (None) members, as Go's omitempty does for nil pointers."""
    return {k: v for k, v in d.items() if v is not None}


def _is_cpu_utilization(metric: Obj) -> bool:
    res = metric.get("resource") or {}
    return (metric.get("type") == "Resource" and res.get("name") == "cpu"
            and (res.get("target") or {}).get("averageUtilization") is not None)


def _metric_spec_v2_to_v1(m: Obj) -> Obj:
    kind = m.get("type", "")
    out: Obj = {"type": kind}
    if kind == "Object" and m.get("object") is not None:
        src = m["object"]
        target = src.get("target") or {}
        metric = src.get("metric") or {}
        out["object"] = _compact({
            "target": src.get("describedObject") or {}, "metricName": metric.get("name", ""),
            "targetValue": target.get("value", "0"), "selector": metric.get("selector"),
            "averageValue": target.get("averageValue")})
    elif kind == "Pods" and m.get("pods") is not None:
        src = m["pods"]
        metric = src.get("metric") or {}
        out["pods"] = _compact({"metricName": metric.get("name", ""),
                                "targetAverageValue": (src.get("target") or {}).get("averageValue", "0"),
                                "selector": metric.get("selector")})
    elif kind in ("Resource", "ContainerResource") and m.get(_lower_first(kind)) is not None:
        src = m[_lower_first(kind)]
        target = src.get("target") or {}
        conv = _compact({"name": src.get("name", ""),
                         "targetAverageUtilization": target.get("averageUtilization"),
                         "targetAverageValue": target.get("averageValue")})
        if kind == "ContainerResource":
            conv["container"] = src.get("container", "")
        out[_lower_first(kind)] = conv
    elif kind == "External" and m.get("external") is not None:
        src = m["external"]
        target = src.get("target") or {}
        metric = src.get("metric") or {}
        out["external"] = _compact({"metricName": metric.get("name", ""), "metricSelector": metric.get("selector"),
                                    "targetValue": target.get("value"),
                                    "targetAverageValue": target.get("averageValue")})
    return out


def _metric_spec_v1_to_v2(m: Obj) -> Obj:
    kind = m.get("type", "")
    out: Obj = {"type": kind}
    if kind == "Object" and m.get("object") is not None:
        src = m["object"]
        target: Obj = {"type": "Value", "value": src.get("targetValue")}
        if src.get("averageValue") is not None:
            target = {"type": "AverageValue", "averageValue": src["averageValue"]}
        out["object"] = {"describedObject": src.get("target") or {},
                         "metric": _compact({"name": src.get("metricName", ""), "selector": src.get("selector")}),
                         "target": _compact(target)}
    elif kind == "Pods" and m.get("pods") is not None:
        src = m["pods"]
        out["pods"] = {"metric": _compact({"name": src.get("metricName", ""), "selector": src.get("selector")}),
                       "target": _compact({"type": "AverageValue", "averageValue": src.get("targetAverageValue")})}
    elif kind in ("Resource", "ContainerResource") and m.get(_lower_first(kind)) is not None:
        src = m[_lower_first(kind)]
        if src.get("targetAverageUtilization") is not None:
            target = {"type": "Utilization", "averageUtilization": src["targetAverageUtilization"]}
        else:
            target = _compact({"type": "AverageValue", "averageValue": src.get("targetAverageValue")})
        conv: Obj = {"name": src.get("name", ""), "target": target}
        if kind == "ContainerResource":
            conv["container"] = src.get("container", "")
        out[_lower_first(kind)] = conv
    elif kind == "External" and m.get("external") is not None:
        src = m["external"]
        if src.get("targetAverageValue") is not None:
            target = {"type": "AverageValue", "averageValue": src["targetAverageValue"]}
        else:
            target = _compact({"type": "Value", "value": src.get("targetValue")})
        out["external"] = {"metric": _compact({"name": src.get("metricName", ""),
                                               "selector": src.get("metricSelector")}),
                           "target": target}
    return out


def _metric_status_v2_to_v1(m: Obj) -> Obj:
    kind = m.get("type", "")
    out: Obj = {"type": kind}
    if kind == "Object" and m.get("object") is not None:
        src = m["object"]
        cur = src.get("current") or {}
        metric = src.get("metric") or {}
        out["object"] = _compact({"target": src.get("describedObject") or {}, "metricName": metric.get("name", ""),
                                  "currentValue": cur.get("value", "0"), "selector": metric.get("selector"),
                                  "averageValue": cur.get("averageValue")})
    elif kind == "Pods" and m.get("pods") is not None:
        src = m["pods"]
        metric = src.get("metric") or {}
        out["pods"] = _compact({"metricName": metric.get("name", ""),
                                "currentAverageValue": (src.get("current") or {}).get("averageValue", "0"),
                                "selector": metric.get("selector")})
    elif kind in ("Resource", "ContainerResource") and m.get(_lower_first(kind)) is not None:
        src = m[_lower_first(kind)]
        cur = src.get("current") or {}
        conv = _compact({"name": src.get("name", ""), "currentAverageUtilization": cur.get("averageUtilization"),
                         "currentAverageValue": cur.get("averageValue", "0")})
        if kind == "ContainerResource":
            conv["container"] = src.get("container", "")
        out[_lower_first(kind)] = conv
    elif kind == "External" and m.get("external") is not None:
        src = m["external"]
        cur = src.get("current") or {}
        metric = src.get("metric") or {}
        out["external"] = _compact({"metricName": metric.get("name", ""), "metricSelector": metric.get("selector"),
                                    "currentValue": cur.get("value", "0"),
                                    "currentAverageValue": cur.get("averageValue")})
    return out


def _metric_status_v1_to_v2(m: Obj) -> Obj:
    kind = m.get("type", "")
    out: Obj = {"type": kind}
    if kind == "Object" and m.get("object") is not None:
        src = m["object"]
        out["object"] = {"describedObject": src.get("target") or {},
                         "metric": _compact({"name": src.get("metricName", ""), "selector": src.get("selector")}),
                         "current": _compact({"value": src.get("currentValue"),
                                              "averageValue": src.get("averageValue")})}
    elif kind == "Pods" and m.get("pods") is not None:
        src = m["pods"]
        out["pods"] = {"metric": _compact({"name": src.get("metricName", ""), "selector": src.get("selector")}),
                       "current": _compact({"averageValue": src.get("currentAverageValue")})}
    elif kind in ("Resource", "ContainerResource") and m.get(_lower_first(kind)) is not None:
        src = m[_lower_first(kind)]
        conv: Obj = {"name": src.get("name", ""),
                     "current": _compact({"averageUtilization": src.get("currentAverageUtilization"),
                                          "averageValue": src.get("currentAverageValue")})}
        if kind == "ContainerResource":
            conv["container"] = src.get("container", "")
        out[_lower_first(kind)] = conv
    elif kind == "External" and m.get("external") is not None:
        src = m["external"]
        out["external"] = {"metric": _compact({"name": src.get("metricName", ""),
                                               "selector": src.get("metricSelector")}),
                           "current": _compact({"value": src.get("currentValue"),
                                                "averageValue": src.get("currentAverageValue")})}
    return out


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _loads_list(text: str | None) -> list[Obj] | None:
    """Upstream ignores annotations that do not decode."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def hpa_v2_to_v1(obj: Obj) -> Obj:
    src = copy.deepcopy(obj)
    spec = src.get("spec") or {}
    status = src.get("status")
    metadata = src.get("metadata") or {}
    annotations = dict(metadata.get("annotations") or {})
    for key in _HPA_ANNOTATIONS:
        annotations.pop(key, None)

    metrics = spec.get("metrics") or []
    target_cpu: int | None = None
    others: list[Obj] = []
    for metric in metrics:
        if _is_cpu_utilization(metric):
            # The first CPU utilization target becomes targetCPUUtilizationPercentage; upstream drops any other.
            if target_cpu is None:
                target_cpu = metric["resource"]["target"]["averageUtilization"]
            continue
        others.append(_metric_spec_v2_to_v1(metric))
    if others:
        annotations[METRIC_SPECS_ANNOTATION] = _dumps(others)
    if spec.get("behavior") is not None:
        annotations[BEHAVIOR_ANNOTATION] = _dumps(spec["behavior"])

    out_spec = _compact({"scaleTargetRef": spec.get("scaleTargetRef") or {}, "minReplicas": spec.get("minReplicas"),
                         "maxReplicas": spec.get("maxReplicas", 0), "targetCPUUtilizationPercentage": target_cpu})
    out: Obj = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": metadata,
                "spec": out_spec}
    if status is not None:
        current = status.get("currentMetrics") or []
        current_cpu: int | None = None
        for metric in current:
            res = metric.get("resource") or {}
            if (metric.get("type") == "Resource" and res.get("name") == "cpu"
                    and (res.get("current") or {}).get("averageUtilization") is not None):
                current_cpu = res["current"]["averageUtilization"]
                break
        # Every current metric is saved, the CPU one too, so its raw value survives the round trip.
        if current:
            annotations[METRIC_STATUSES_ANNOTATION] = _dumps([_metric_status_v2_to_v1(m) for m in current])
        if status.get("conditions"):
            annotations[CONDITIONS_ANNOTATION] = _dumps(status["conditions"])
        out["status"] = _compact({
            "observedGeneration": status.get("observedGeneration"), "lastScaleTime": status.get("lastScaleTime"),
            "currentReplicas": status.get("currentReplicas", 0), "desiredReplicas": status.get("desiredReplicas", 0),
            "currentCPUUtilizationPercentage": current_cpu})
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return out


def hpa_v1_to_v2(obj: Obj) -> Obj:
    src = copy.deepcopy(obj)
    spec = src.get("spec") or {}
    status = src.get("status")
    metadata = src.get("metadata") or {}
    annotations = dict(metadata.get("annotations") or {})

    metrics: list[Obj] = []
    others = _loads_list(annotations.pop(METRIC_SPECS_ANNOTATION, None))
    if others is not None:
        metrics.extend(_metric_spec_v1_to_v2(m) for m in others)
    if spec.get("targetCPUUtilizationPercentage") is not None:
        metrics.append({"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization",
                                      "averageUtilization": spec["targetCPUUtilizationPercentage"]}}})
    out_spec: Obj = _compact({"scaleTargetRef": spec.get("scaleTargetRef") or {},
                              "minReplicas": spec.get("minReplicas"), "maxReplicas": spec.get("maxReplicas", 0)})
    if metrics:
        out_spec["metrics"] = metrics
    behavior_text = annotations.pop(BEHAVIOR_ANNOTATION, None)
    if behavior_text is not None:
        try:
            behavior = json.loads(behavior_text)
        except ValueError:
            behavior = None
        if isinstance(behavior, dict):
            out_spec["behavior"] = behavior

    out: Obj = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata,
                "spec": out_spec}
    current_text = annotations.pop(METRIC_STATUSES_ANNOTATION, None)
    conditions_text = annotations.pop(CONDITIONS_ANNOTATION, None)
    if status is not None:
        out_status: Obj = _compact({
            "observedGeneration": status.get("observedGeneration"), "lastScaleTime": status.get("lastScaleTime"),
            "currentReplicas": status.get("currentReplicas"), "desiredReplicas": status.get("desiredReplicas", 0)})
        current = _loads_list(current_text)
        if current is not None:
            out_status["currentMetrics"] = [_metric_status_v1_to_v2(m) for m in current]
        elif status.get("currentCPUUtilizationPercentage") is not None:
            out_status["currentMetrics"] = [{"type": "Resource", "resource": {
                "name": "cpu", "current": {"averageUtilization": status["currentCPUUtilizationPercentage"]}}}]
        conditions = _loads_list(conditions_text)
        if conditions is not None:
            out_status["conditions"] = conditions
        out["status"] = out_status
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return out


# --- Event -------------------------------------------------------------------------------------

# events.k8s.io/v1 name -> core/v1 name, for the fields that differ only in name.
_EVENT_RENAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}
_EVENT_SHARED = ("metadata", "eventTime", "series", "reportingInstance", "action", "reason", "related", "type")


def events_to_core(obj: Obj) -> Obj:
    src = copy.deepcopy(obj)
    out: Obj = {"apiVersion": "v1", "kind": "Event"}
    for key in _EVENT_SHARED:
        if key in src:
            out[key] = src[key]
    for new_name, core_name in _EVENT_RENAMES.items():
        if new_name in src:
            out[core_name] = src[new_name]
    # core/v1 involvedObject is not optional.
    out.setdefault("involvedObject", {})
    return out


def core_to_events(obj: Obj) -> Obj:
    src = copy.deepcopy(obj)
    out: Obj = {"apiVersion": "events.k8s.io/v1", "kind": "Event"}
    for key in _EVENT_SHARED:
        if key in src:
            out[key] = src[key]
    for new_name, core_name in _EVENT_RENAMES.items():
        if core_name in src:
            out[new_name] = src[core_name]
    # eventTime is a required (non-omitempty) member of events.k8s.io/v1 Event.
    out.setdefault("eventTime", None)
    series = out.get("series")
    if isinstance(series, dict):
        # core/v1 EventSeries carries a deprecated `state` that events.k8s.io/v1 does not have.
        out["series"] = {k: v for k, v in series.items() if k in ("count", "lastObservedTime")}
    return out
