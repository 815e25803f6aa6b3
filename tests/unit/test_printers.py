"""Server-side Table printing: columns and cells as upstream kube-apiserver prints them."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pocketkube.api.errors import StatusError
from pocketkube.api.kinds import BUILTIN_RESOURCES, ResourceCatalog, ResourceInfo
from pocketkube.apiserver.printers import column_definitions, human_duration, to_table

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
CATALOG = ResourceCatalog()
KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"


def ago(**delta: float) -> str:
    """An RFC 3339 timestamp that long before NOW."""
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def info(group: str, version: str, kind: str) -> ResourceInfo:
    found = CATALOG.kind(group, version, kind)
    assert found is not None
    return found


def cells(group: str, version: str, kind: str, obj: dict[str, Any]) -> list[Any]:
    """The cells of the one row printed for obj."""
    table = to_table(info(group, version, kind), [obj], list_meta={}, now=NOW)
    return table["rows"][0]["cells"]


def row(group: str, version: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The one row's cells keyed by column name, for readable assertions."""
    table = to_table(info(group, version, kind), [obj], list_meta={}, now=NOW)
    names = [c["name"] for c in table["columnDefinitions"]]
    return dict(zip(names, table["rows"][0]["cells"], strict=True))


def md(name: str = "x", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(minutes=5), **extra}


# --- HumanDuration -----------------------------------------------------------------------------

@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(seconds=-2), "<invalid>"),
    (timedelta(seconds=-1.5), "0s"),
    (timedelta(seconds=-1), "0s"),
    (timedelta(0), "0s"),
    (timedelta(seconds=5), "5s"),
    (timedelta(seconds=119.9), "119s"),
    (timedelta(seconds=120), "2m"),
    (timedelta(minutes=3, seconds=20), "3m20s"),
    (timedelta(minutes=9, seconds=59), "9m59s"),
    (timedelta(minutes=10, seconds=30), "10m"),
    (timedelta(minutes=179), "179m"),
    (timedelta(hours=3), "3h"),
    (timedelta(hours=3, minutes=5), "3h5m"),
    (timedelta(hours=8, minutes=5), "8h"),
    (timedelta(hours=47, minutes=59), "47h"),
    (timedelta(hours=48), "2d"),
    (timedelta(days=2, hours=3), "2d3h"),
    (timedelta(days=8, hours=3), "8d"),
    (timedelta(days=729), "729d"),
    (timedelta(days=730), "2y"),
    (timedelta(days=735), "2y5d"),
    (timedelta(days=365 * 8 + 40), "8y"),
])
def test_human_duration(delta: timedelta, text: str) -> None:
    assert human_duration(delta) == text


def test_age_is_unknown_without_creation_timestamp() -> None:
    assert row("", "v1", "ConfigMap", {"metadata": {"name": "c"}})["Age"] == "<unknown>"


# --- Table envelope, includeObject, column definitions ----------------------------------------

def test_table_envelope_and_include_object_variants() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": md("web", uid="u1", labels={"a": "b"}),
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    pods = info("", "v1", "Pod")
    list_meta = {"resourceVersion": "42"}

    table = to_table(pods, [pod], list_meta=list_meta, now=NOW)
    assert (table["kind"], table["apiVersion"], table["metadata"]) == ("Table", "meta.k8s.io/v1", list_meta)
    assert table["rows"][0]["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                          "metadata": pod["metadata"]}
    assert to_table(pods, [pod], list_meta={}, include_object="", now=NOW)["rows"][0]["object"]["kind"] == \
        "PartialObjectMetadata"
    assert to_table(pods, [pod], list_meta={}, include_object="None", now=NOW)["rows"][0]["object"] is None
    full = to_table(pods, [pod], list_meta={}, include_object="Object", now=NOW)["rows"][0]["object"]
    assert full == pod
    # The full object is in the served version even when the dict lacks its type fields.
    bare = {k: v for k, v in pod.items() if k not in ("kind", "apiVersion")}
    full = to_table(pods, [bare], list_meta={}, include_object="Object", now=NOW)["rows"][0]["object"]
    assert (full["kind"], full["apiVersion"]) == ("Pod", "v1")
    with pytest.raises(StatusError) as err:
        to_table(pods, [pod], list_meta={}, include_object="Everything")
    assert err.value.code == 400
    assert to_table(pods, [], list_meta={}, now=NOW)["rows"] == []


def _columns(group: str, version: str, kind: str) -> list[tuple[str, int]]:
    return [(c["name"], c["priority"]) for c in column_definitions(info(group, version, kind))]


def test_column_definitions_flag_wide_columns() -> None:
    assert _columns("", "v1", "Pod") == [
        ("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0),
        ("IP", 1), ("Node", 1), ("Nominated Node", 1), ("Readiness Gates", 1)]
    assert _columns("apps", "v1", "Deployment") == [
        ("Name", 0), ("Ready", 0), ("Up-to-date", 0), ("Available", 0), ("Age", 0),
        ("Containers", 1), ("Images", 1), ("Selector", 1)]
    assert _columns("", "v1", "Service") == [
        ("Name", 0), ("Type", 0), ("Cluster-IP", 0), ("External-IP", 0), ("Port(s)", 0), ("Age", 0),
        ("Selector", 1)]
    assert _columns("", "v1", "Node") == [
        ("Name", 0), ("Status", 0), ("Roles", 0), ("Age", 0), ("Version", 0), ("Internal-IP", 1),
        ("External-IP", 1), ("OS-Image", 1), ("Kernel-Version", 1), ("Container-Runtime", 1)]
    event_columns = [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Subobject", 1),
                     ("Source", 1), ("Message", 0), ("First Seen", 1), ("Count", 1), ("Name", 1)]
    assert _columns("", "v1", "Event") == event_columns
    assert _columns("events.k8s.io", "v1", "Event") == event_columns
    assert _columns("rbac.authorization.k8s.io", "v1", "RoleBinding") == [
        ("Name", 0), ("Role", 0), ("Age", 0), ("Users", 1), ("Groups", 1), ("ServiceAccounts", 1)]
    # PreemptionPolicy is not a wide column upstream, even though it is filled only when printing wide.
    assert _columns("scheduling.k8s.io", "v1", "PriorityClass")[-1] == ("PreemptionPolicy", 0)


def test_column_definition_fields() -> None:
    name_col, ready_col, _, restarts_col, age_col, ip_col = column_definitions(info("", "v1", "Pod"))[:6]
    assert name_col["format"] == "name" and name_col["type"] == "string"
    assert name_col["description"].startswith("Name must be unique within a namespace.")
    assert ready_col == {"name": "Ready", "type": "string", "format": "",
                         "description": "The aggregate readiness state of this pod for accepting traffic.",
                         "priority": 0}
    assert restarts_col["type"] == "string"
    assert age_col["description"].startswith("CreationTimestamp is a timestamp representing the server time")
    assert ip_col["description"].startswith("podIP address allocated to the pod.")
    # Callers may modify what they get without affecting later tables.
    name_col["name"] = "changed"
    assert column_definitions(info("", "v1", "Pod"))[0]["name"] == "Name"


def test_kinds_without_printer_get_the_default_table() -> None:
    role = info("rbac.authorization.k8s.io", "v1", "Role")
    cols = column_definitions(role)
    assert [(c["name"], c["type"], c["format"]) for c in cols] == [("Name", "string", "name"),
                                                                   ("Created At", "date", "")]
    table = to_table(role, [{"metadata": {"name": "reader", "creationTimestamp": "2024-03-04T05:06:07Z"}},
                            {"metadata": {"name": "fresh"}}], list_meta={}, now=NOW)
    assert [r["cells"] for r in table["rows"]] == [["reader", "2024-03-04T05:06:07Z"],
                                                   ["fresh", "0001-01-01T00:00:00Z"]]
    assert [c["name"] for c in column_definitions(info("", "v1", "LimitRange"))] == ["Name", "Created At"]


@pytest.mark.parametrize("res", BUILTIN_RESOURCES, ids=lambda r: f"{r.group or 'core'}/{r.version}/{r.kind}")
def test_every_builtin_row_matches_its_columns(res: ResourceInfo) -> None:
    table = to_table(res, [{"metadata": md()}, {}], list_meta={}, now=NOW)
    for r in table["rows"]:
        assert len(r["cells"]) == len(table["columnDefinitions"])
        assert all(isinstance(c, str | int | bool) for c in r["cells"])


# --- Pods --------------------------------------------------------------------------------------

def pod(status: dict[str, Any], *, spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    containers = [{"name": "app", "image": "nginx"}, {"name": "log", "image": "busybox"}]
    return {"metadata": md("web-1", **meta), "spec": spec or {"containers": containers, "nodeName": "node-1"},
            "status": status}


RUNNING = {"running": {"startedAt": ago(minutes=4)}}


def test_pod_running_ready_with_wide_columns() -> None:
    p = pod({"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
             "conditions": [{"type": "Ready", "status": "True"},
                            {"type": "example.com/gate", "status": "True"}],
             "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "state": RUNNING},
                                   {"name": "log", "ready": True, "restartCount": 0, "state": RUNNING}]},
            spec={"containers": [{"name": "app"}, {"name": "log"}], "nodeName": "node-1",
                  "readinessGates": [{"conditionType": "example.com/gate"}, {"conditionType": "other"}]})
    assert cells("", "v1", "Pod", p) == ["web-1", "2/2", "Running", "0", "5m", "10.0.0.5", "node-1", "<none>",
                                         "1/2"]


def test_pod_pending_unscheduled() -> None:
    p = pod({"phase": "Pending"}, spec={"containers": [{"name": "app"}]})
    assert cells("", "v1", "Pod", p) == ["web-1", "0/1", "Pending", "0", "5m", "<none>", "<none>", "<none>",
                                         "<none>"]
    p["status"]["nominatedNodeName"] = "node-2"
    assert row("", "v1", "Pod", p)["Nominated Node"] == "node-2"


def test_pod_crash_loop_shows_waiting_reason_and_last_restart() -> None:
    crashing = {"name": "app", "ready": False, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(minutes=2)}}}
    sidecar = {"name": "log", "ready": True, "restartCount": 1, "state": RUNNING,
               "lastState": {"terminated": {"exitCode": 137, "finishedAt": ago(minutes=30)}}}
    r = row("", "v1", "Pod", pod({"phase": "Running", "containerStatuses": [crashing, sidecar]}))
    assert (r["Ready"], r["Status"], r["Restarts"]) == ("1/2", "CrashLoopBackOff", "6 (2m ago)")


def test_pod_first_container_reason_wins() -> None:
    statuses = [{"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}},
                {"name": "log", "state": {"waiting": {"reason": "ContainerCreating"}}}]
    assert row("", "v1", "Pod", pod({"phase": "Pending", "containerStatuses": statuses}))["Status"] == \
        "ImagePullBackOff"


def test_pod_terminated_without_reason_shows_exit_code_or_signal() -> None:
    statuses = [{"name": "app", "state": {"terminated": {"exitCode": 3}}},
                {"name": "log", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
    failed = pod({"phase": "Failed", "containerStatuses": statuses})
    assert row("", "v1", "Pod", failed)["Status"] == "ExitCode:3"
    statuses[0]["state"]["terminated"]["signal"] = 9
    assert row("", "v1", "Pod", failed)["Status"] == "Signal:9"


def _init_pod(init_statuses: list[dict[str, Any]], **status: Any) -> dict[str, Any]:
    spec = {"initContainers": [{"name": "migrate"}, {"name": "warm"}], "containers": [{"name": "app"}]}
    return pod({"phase": "Pending", "initContainerStatuses": init_statuses,
                "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}],
                **status}, spec=spec)


def test_pod_init_container_states() -> None:
    waiting = {"state": {"waiting": {"reason": "PodInitializing"}}}
    done = {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    running = {"state": RUNNING}

    def status_of(p: dict[str, Any]) -> str:
        return row("", "v1", "Pod", p)["Status"]

    assert status_of(_init_pod([{"name": "migrate", **running}, {"name": "warm", **waiting}])) == "Init:0/2"
    assert status_of(_init_pod([{"name": "migrate", **done}, {"name": "warm", **running}])) == "Init:1/2"
    crash = {"name": "warm", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    assert status_of(_init_pod([{"name": "migrate", **done}, crash])) == "Init:CrashLoopBackOff"
    failed = {"name": "migrate", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}
    assert status_of(_init_pod([failed])) == "Init:Error"
    exited = {"name": "migrate", "state": {"terminated": {"exitCode": 2}}}
    assert status_of(_init_pod([exited])) == "Init:ExitCode:2"
    killed = {"name": "migrate", "state": {"terminated": {"exitCode": 1, "signal": 15}}}
    assert status_of(_init_pod([killed])) == "Init:Signal:15"
    # All init containers done: the app container's waiting reason shows.
    assert status_of(_init_pod([{"name": "migrate", **done}, {"name": "warm", **done}])) == "PodInitializing"
    # Init container restarts count while initializing.
    assert row("", "v1", "Pod", _init_pod([{"name": "migrate", **done}, crash]))["Restarts"] == "3"


def test_pod_sidecar_counts_towards_ready_and_restarts() -> None:
    spec = {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}, {"name": "setup"}],
            "containers": [{"name": "app"}]}
    status = {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"},
                                                 {"type": "Ready", "status": "True"}],
              "initContainerStatuses": [
                  {"name": "proxy", "started": True, "ready": True, "restartCount": 2, "state": RUNNING,
                   "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(minutes=3)}}},
                  {"name": "setup", "restartCount": 4, "state": {"terminated": {"exitCode": 0}},
                   "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(seconds=10)}}}],
              "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "state": RUNNING}]}
    r = row("", "v1", "Pod", pod(status, spec=spec))
    # Regular init containers' restarts stop counting once the pod is initialized.
    assert (r["Ready"], r["Status"], r["Restarts"]) == ("2/2", "Running", "2 (3m ago)")


def test_pod_completed_sets_row_condition() -> None:
    statuses = [{"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "log", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
    table = to_table(info("", "v1", "Pod"), [pod({"phase": "Succeeded", "containerStatuses": statuses})],
                     list_meta={}, now=NOW)
    r = table["rows"][0]
    assert r["cells"][1:3] == ["0/2", "Completed"]
    assert r["conditions"] == [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                "message": "The pod has completed successfully."}]
    failed = to_table(info("", "v1", "Pod"), [pod({"phase": "Failed"})], list_meta={}, now=NOW)
    assert failed["rows"][0]["conditions"][0]["reason"] == "Failed"
    running = to_table(info("", "v1", "Pod"), [pod({"phase": "Running"})], list_meta={}, now=NOW)
    assert "conditions" not in running["rows"][0]


def test_pod_completed_container_with_running_sibling() -> None:
    statuses = [{"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "log", "ready": True, "state": RUNNING}]
    status: dict[str, Any] = {"phase": "Running", "containerStatuses": statuses}
    assert row("", "v1", "Pod", pod(status))["Status"] == "NotReady"
    status["conditions"] = [{"type": "Ready", "status": "True"}]
    assert row("", "v1", "Pod", pod(status))["Status"] == "Running"


def test_pod_terminating_unknown_evicted_and_gated() -> None:
    deleting = {"deletionTimestamp": ago(seconds=3)}
    running = {"phase": "Running", "containerStatuses": [{"name": "app", "ready": True, "state": RUNNING}]}
    assert row("", "v1", "Pod", pod(running, **deleting))["Status"] == "Terminating"
    assert row("", "v1", "Pod", pod({**running, "reason": "NodeLost"}, **deleting))["Status"] == "Unknown"
    assert row("", "v1", "Pod", pod({**running, "reason": "NodeLost"}))["Status"] == "NodeLost"
    # A finished pod being deleted keeps its final status.
    assert row("", "v1", "Pod", pod({"phase": "Succeeded"}, **deleting))["Status"] == "Succeeded"
    assert row("", "v1", "Pod", pod({"phase": "Failed", "reason": "Evicted"}))["Status"] == "Evicted"
    gated = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                 "reason": "SchedulingGated"}]}
    assert row("", "v1", "Pod", pod(gated))["Status"] == "SchedulingGated"


# --- Workloads ---------------------------------------------------------------------------------

TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"},
                                    {"name": "log", "image": "busybox"}]}}


def test_deployment_row() -> None:
    selector = {"matchLabels": {"app": "web", "tier": "fe"}}
    d = {"metadata": md("web"), "spec": {"replicas": 3, "selector": selector, "template": TEMPLATE},
         "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert cells("apps", "v1", "Deployment", d) == ["web", "2/3", 3, 2, "5m", "web,log", "nginx:1.27,busybox",
                                                    "app=web,tier=fe"]
    d["spec"]["selector"] = {"matchExpressions": [{"key": "app", "operator": "Bogus"}]}
    assert row("apps", "v1", "Deployment", d)["Selector"] == "<invalid>"
    d["spec"]["selector"] = {}
    assert row("apps", "v1", "Deployment", d)["Selector"] == ""


def test_label_selector_formatting() -> None:
    selector = {"matchLabels": {"tier": "fe", "app": "web"},
                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["qa", "dev"]},
                                     {"key": "zone", "operator": "In", "values": ["b", "a"]},
                                     {"key": "canary", "operator": "DoesNotExist"},
                                     {"key": "beta", "operator": "Exists"}]}
    rs = {"metadata": md("web-abc"), "spec": {"replicas": 2, "selector": selector, "template": TEMPLATE},
          "status": {"replicas": 2, "readyReplicas": 1}}
    assert cells("apps", "v1", "ReplicaSet", rs) == [
        "web-abc", 2, 2, 1, "5m", "web,log", "nginx:1.27,busybox",
        "app=web,beta,!canary,env notin (dev,qa),tier=fe,zone in (a,b)"]
    rs["spec"]["selector"] = {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}
    assert row("apps", "v1", "ReplicaSet", rs)["Selector"] == "<error>"
    rs["spec"]["selector"] = {}
    assert row("apps", "v1", "ReplicaSet", rs)["Selector"] == "<none>"


def test_statefulset_daemonset_controllerrevision_rc() -> None:
    sts = {"metadata": md("db"), "spec": {"replicas": 3, "template": TEMPLATE},
           "status": {"readyReplicas": 1}}
    assert cells("apps", "v1", "StatefulSet", sts) == ["db", "1/3", "5m", "web,log", "nginx:1.27,busybox"]

    ds = {"metadata": md("agent"),
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                         "containers": [{"name": "agent", "image": "agent:1"}]}}},
          "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                     "updatedNumberScheduled": 3, "numberAvailable": 2}}
    assert cells("apps", "v1", "DaemonSet", ds) == ["agent", 3, 3, 2, 3, 2, "kubernetes.io/os=linux", "5m",
                                                    "agent", "agent:1", "app=agent"]

    cr = {"metadata": md("db-7d9f", ownerReferences=[
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": True}]), "revision": 2}
    assert cells("apps", "v1", "ControllerRevision", cr) == ["db-7d9f", "statefulset.apps/db", 2, "5m"]
    cr["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "p",
                                          "controller": False}]
    assert row("apps", "v1", "ControllerRevision", cr)["Controller"] == "<none>"

    rc = {"metadata": md("legacy"),
          "spec": {"replicas": 2, "selector": {"app": "legacy"}, "template": TEMPLATE},
          "status": {"replicas": 2, "readyReplicas": 2}}
    assert cells("", "v1", "ReplicationController", rc) == ["legacy", 2, 2, 2, "5m", "web,log",
                                                            "nginx:1.27,busybox", "app=legacy"]


def job(spec: dict[str, Any], status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"metadata": md("pi", **meta),
            "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}, **spec},
            "status": status}


def test_job_rows() -> None:
    done = job({"completions": 1, "parallelism": 1},
               {"succeeded": 1, "startTime": ago(minutes=4), "completionTime": ago(minutes=3, seconds=30),
                "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                               {"type": "Complete", "status": "True"}]})
    assert cells("batch", "v1", "Job", done) == ["pi", "Complete", "1/1", "30s", "5m", "pi", "perl",
                                                 "batch.kubernetes.io/controller-uid=u1"]
    running = job({"parallelism": 3}, {"succeeded": 1, "startTime": ago(minutes=2, seconds=10)})
    r = row("batch", "v1", "Job", running)
    assert (r["Status"], r["Completions"], r["Duration"]) == ("Running", "1/1 of 3", "2m10s")
    assert row("batch", "v1", "Job", job({}, {}))["Duration"] == ""
    assert row("batch", "v1", "Job", job({"completions": 5}, {}))["Completions"] == "0/5"
    failed = {"conditions": [{"type": "FailureTarget", "status": "True"},
                             {"type": "Failed", "status": "True"}]}
    assert row("batch", "v1", "Job", job({}, failed))["Status"] == "Failed"
    assert row("batch", "v1", "Job", job({}, {"conditions": [{"type": "FailureTarget", "status": "True"}]}))[
        "Status"] == "FailureTarget"
    suspended = {"conditions": [{"type": "Suspended", "status": "True"}]}
    assert row("batch", "v1", "Job", job({}, suspended))["Status"] == "Suspended"
    deleted = job({}, suspended, deletionTimestamp=ago(seconds=1))
    assert row("batch", "v1", "Job", deleted)["Status"] == "Terminating"


def test_cronjob_rows() -> None:
    cj = {"metadata": md("backup"),
          "spec": {"schedule": "*/5 * * * *", "suspend": False,
                   "jobTemplate": {"spec": {"template": {"spec": {
                       "containers": [{"name": "b", "image": "tool"}]}}}}},
          "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": ago(minutes=3)}}
    assert cells("batch", "v1", "CronJob", cj) == ["backup", "*/5 * * * *", "<none>", "False", 1, "3m", "5m",
                                                   "b", "tool", "<none>"]
    cj["spec"].update(timeZone="Europe/Paris", suspend=True)
    cj["status"] = {}
    r = row("batch", "v1", "CronJob", cj)
    assert (r["Timezone"], r["Suspend"], r["Active"], r["Last Schedule"]) == \
        ("Europe/Paris", "True", 0, "<none>")


def hpa(metrics: list[dict[str, Any]], current: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": md("web"),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 10, "metrics": metrics},
            "status": {"currentReplicas": 3, "currentMetrics": current or []}}


def cpu(target: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": "cpu", "target": target}}


def test_hpa_v2_targets() -> None:
    util = cpu({"type": "Utilization", "averageUtilization": 80})
    assert cells("autoscaling", "v2", "HorizontalPodAutoscaler", hpa([util])) == [
        "web", "Deployment/web", "cpu: <unknown>/80%", "2", 10, 3, "5m"]
    current = [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 30}}}]
    t = row("autoscaling", "v2", "HorizontalPodAutoscaler", hpa([util], current))["Targets"]
    assert t == "cpu: 30%/80%"

    memory = {"type": "Resource", "resource": {"name": "memory",
                                               "target": {"type": "AverageValue", "averageValue": "200Mi"}}}
    pods = {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue",
                                                                           "averageValue": "1k"}}}
    obj = {"type": "Object", "object": {"metric": {"name": "hits"},
                                        "target": {"type": "Value", "value": "10"}}}
    ext = {"type": "External", "external": {"metric": {"name": "queue"},
                                            "target": {"type": "AverageValue", "averageValue": "30"}}}
    statuses = [{"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "100Mi"}}},
                {"type": "Pods", "pods": {"current": {"averageValue": "500"}}}]
    t = row("autoscaling", "v2", "HorizontalPodAutoscaler", hpa([memory, pods], statuses))["Targets"]
    assert t == "memory: 100Mi/200Mi, 500/1k"
    t = row("autoscaling", "v2", "HorizontalPodAutoscaler", hpa([obj, ext]))["Targets"]
    assert t == "<unknown>/10, <unknown>/30 (avg)"
    four = hpa([util, memory, pods, obj], current)
    t = row("autoscaling", "v2", "HorizontalPodAutoscaler", four)["Targets"]
    assert t == "cpu: 30%/80%, memory: <unknown>/200Mi + 2 more..."
    no_metrics = hpa([])
    del no_metrics["spec"]["minReplicas"]
    r = row("autoscaling", "v2", "HorizontalPodAutoscaler", no_metrics)
    assert (r["Targets"], r["MinPods"]) == ("<none>", "<unset>")


def test_hpa_v1_targets() -> None:
    v1 = {"metadata": md("web"),
          "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
                   "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
          "status": {"currentReplicas": 2, "currentCPUUtilizationPercentage": 30}}
    assert cells("autoscaling", "v1", "HorizontalPodAutoscaler", v1) == [
        "web", "Deployment/web", "cpu: 30%/50%", "1", 5, 2, "5m"]
    del v1["spec"]["targetCPUUtilizationPercentage"], v1["status"]["currentCPUUtilizationPercentage"]
    # autoscaling/v1's implicit target
    assert row("autoscaling", "v1", "HorizontalPodAutoscaler", v1)["Targets"] == "cpu: <unknown>/80%"


def test_pdb_rows() -> None:
    pdb = {"metadata": md("web"), "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}}
    assert cells("policy", "v1", "PodDisruptionBudget", pdb) == ["web", "2", "N/A", 1, "5m"]
    pdb["spec"] = {"maxUnavailable": "25%"}
    assert cells("policy", "v1", "PodDisruptionBudget", pdb)[1:3] == ["N/A", "25%"]


# --- Services, endpoints, ingress --------------------------------------------------------------

def svc(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": md("web"), "spec": spec, "status": status or {}}


def test_service_types() -> None:
    cluster_ip = svc({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                      "selector": {"app": "web"},
                      "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]})
    assert cells("", "v1", "Service", cluster_ip) == [
        "web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP,53/UDP", "5m", "app=web"]
    headless = svc({"type": "ClusterIP", "clusterIP": "None", "externalIPs": ["1.2.3.4"]})
    assert cells("", "v1", "Service", headless)[1:5] == ["ClusterIP", "None", "1.2.3.4", "<none>"]

    node_port = svc({"type": "NodePort", "clusterIPs": ["10.96.0.11"],
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]})
    assert cells("", "v1", "Service", node_port)[1:5] == ["NodePort", "10.96.0.11", "<none>", "80:30080/TCP"]

    lb_spec = {"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"],
               "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}
    assert row("", "v1", "Service", svc(lb_spec))["External-IP"] == "<pending>"
    ingress = {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"},
                                            {"ip": "203.0.113.7"}]}}
    assert row("", "v1", "Service", svc(lb_spec, ingress))["External-IP"] == \
        "203.0.113.7,203.0.113.9,lb.example.com"
    with_external = svc({**lb_spec, "externalIPs": ["198.51.100.1"]}, ingress)
    assert row("", "v1", "Service", with_external)["External-IP"] == \
        "203.0.113.7,203.0.113.9,lb.example.com,198.51.100.1"

    external = svc({"type": "ExternalName", "externalName": "db.example.com"})
    assert cells("", "v1", "Service", external) == [
        "web", "ExternalName", "<none>", "db.example.com", "<none>", "5m", "<none>"]


def test_endpoints_truncation_and_ipv6() -> None:
    addresses = [{"ip": f"10.0.0.{i}"} for i in range(1, 6)]
    ep = {"metadata": md("web"), "subsets": [{"addresses": addresses, "ports": [{"port": 80}]}]}
    assert row("", "v1", "Endpoints", ep)["Endpoints"] == "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."
    two_ports = {"metadata": md("web"), "subsets": [{"addresses": addresses[:2],
                                                     "ports": [{"port": 80}, {"port": 443}]}]}
    assert row("", "v1", "Endpoints", two_ports)["Endpoints"] == \
        "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
    headless = {"metadata": md("web"), "subsets": [{"addresses": [{"ip": "fd00::1"}]}]}
    assert row("", "v1", "Endpoints", headless)["Endpoints"] == "fd00::1"
    v6 = {"metadata": md("web"), "subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}]}
    assert row("", "v1", "Endpoints", v6)["Endpoints"] == "[fd00::1]:8080"
    assert row("", "v1", "Endpoints", {"metadata": md("web")})["Endpoints"] == "<none>"


def test_endpoint_slice() -> None:
    es = {"metadata": md("web-abc"), "addressType": "IPv4",
          "ports": [{"name": "http", "port": 80}, {"name": "metrics"}, {}, {"port": 9000}],
          "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}]}
    assert cells("discovery.k8s.io", "v1", "EndpointSlice", es) == [
        "web-abc", "IPv4", "80,metrics,* + 1 more...", "10.0.0.1,10.0.0.2,10.0.0.3", "5m"]
    empty = {"metadata": md("e"), "addressType": "IPv6"}
    assert cells("discovery.k8s.io", "v1", "EndpointSlice", empty)[2:4] == ["<unset>", "<unset>"]


def test_ingress_and_ingress_class() -> None:
    ing = {"metadata": md("web"),
           "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                    "rules": [{"host": "a.example.com"}, {}, {"host": "b.example.com"},
                              {"host": "c.example.com"}, {"host": "d.example.com"}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}
    assert cells("networking.k8s.io", "v1", "Ingress", ing) == [
        "web", "nginx", "a.example.com,b.example.com,c.example.com + 2 more...", "192.0.2.1", "80, 443", "5m"]
    plain = {"metadata": md("web"), "spec": {"rules": [{}]}}
    assert cells("networking.k8s.io", "v1", "Ingress", plain)[1:5] == ["<none>", "*", "", "80"]

    ic = {"metadata": md("nginx"), "spec": {"controller": "k8s.io/ingress-nginx",
                                            "parameters": {"apiGroup": "k8s.example.com", "kind": "Params",
                                                           "name": "cfg"}}}
    assert cells("networking.k8s.io", "v1", "IngressClass", ic) == [
        "nginx", "k8s.io/ingress-nginx", "Params.k8s.example.com/cfg", "5m"]


def test_network_policy() -> None:
    np = {"metadata": md("deny"), "spec": {"podSelector": {}}}
    assert cells("networking.k8s.io", "v1", "NetworkPolicy", np) == ["deny", "<none>", "5m"]
    np["spec"]["podSelector"] = {"matchLabels": {"role": "db"}}
    assert cells("networking.k8s.io", "v1", "NetworkPolicy", np)[1] == "role=db"


# --- Nodes, events, namespaces, config -----------------------------------------------------------

def node(conditions: list[dict[str, Any]], labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "node-1", "labels": labels, "creationTimestamp": ago(days=3, hours=2)},
            "spec": spec,
            "status": {"conditions": conditions,
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                                     {"type": "Hostname", "address": "node-1"}],
                       "nodeInfo": {"kubeletVersion": "v1.37.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                                    "kernelVersion": "6.1.0-18-amd64",
                                    "containerRuntimeVersion": "pocketkube://0.1.0"}}}


def test_node_rows() -> None:
    ready = [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]
    labels = {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "",
              "kubernetes.io/role": "worker", "kubernetes.io/hostname": "node-1"}
    assert cells("", "v1", "Node", node(ready, labels)) == [
        "node-1", "Ready", "control-plane,worker", "3d2h", "v1.37.0", "192.168.1.10", "<none>",
        "Debian GNU/Linux 12 (bookworm)", "6.1.0-18-amd64", "pocketkube://0.1.0"]
    not_ready = [{"type": "Ready", "status": "Unknown"}]
    r = row("", "v1", "Node", node(not_ready, {}, unschedulable=True))
    assert (r["Status"], r["Roles"]) == ("NotReady,SchedulingDisabled", "<none>")
    assert row("", "v1", "Node", node([], {}))["Status"] == "Unknown"
    bare = {"metadata": {"name": "n"}}
    assert cells("", "v1", "Node", bare)[7:] == ["<unknown>", "<unknown>", "<unknown>"]


def test_core_event() -> None:
    ev = {"metadata": md("web-1.17a"), "type": "Warning", "reason": "BackOff",
          "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
          "source": {"component": "kubelet", "host": "node-1"},
          "message": "Back-off restarting failed container\n",
          "firstTimestamp": ago(hours=1), "lastTimestamp": ago(minutes=5), "count": 12}
    assert cells("", "v1", "Event", ev) == [
        "5m", "Warning", "BackOff", "pod/web-1", "spec.containers{app}", "kubelet, node-1",
        "Back-off restarting failed container", "60m", 12, "web-1.17a"]


def test_new_style_event_without_legacy_fields() -> None:
    ev = {"metadata": md("web.1"), "type": "Normal", "reason": "Scheduled",
          "involvedObject": {"kind": "Pod", "name": "web"}, "eventTime": "2025-06-01T11:58:00.000000Z",
          "reportingComponent": "default-scheduler", "reportingInstance": "", "message": "Assigned"}
    r = row("", "v1", "Event", ev)
    assert (r["Last Seen"], r["First Seen"], r["Count"], r["Source"]) == ("2m", "2m", 1, "default-scheduler")
    ev["series"] = {"count": 4, "lastObservedTime": "2025-06-01T11:59:30.000000Z"}
    r = row("", "v1", "Event", ev)
    assert (r["Last Seen"], r["Count"]) == ("30s", 4)
    unnamed = {"metadata": md("e"), "involvedObject": {"kind": "Node"}}
    assert row("", "v1", "Event", unnamed)["Object"] == "node"


def test_events_k8s_io_event_prints_like_core() -> None:
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": md("web.2"),
          "eventTime": "2025-06-01T11:50:00.000000Z", "reportingController": "kubelet",
          "reportingInstance": "node-1",
          "action": "Pulling", "reason": "Pulled", "type": "Normal", "note": "Pulled image",
          "regarding": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
          "series": {"count": 3, "lastObservedTime": "2025-06-01T11:59:00.000000Z"}}
    assert cells("events.k8s.io", "v1", "Event", ev) == [
        "60s", "Normal", "Pulled", "pod/web", "spec.containers{web}", "kubelet, node-1", "Pulled image",
        "10m", 3, "web.2"]
    legacy = {"metadata": md("old"), "regarding": {"kind": "Pod", "name": "p"}, "note": "n",
              "deprecatedSource": {"component": "kubelet"}, "deprecatedCount": 2,
              "deprecatedFirstTimestamp": ago(minutes=9), "deprecatedLastTimestamp": ago(minutes=1)}
    r = row("events.k8s.io", "v1", "Event", legacy)
    assert (r["Last Seen"], r["First Seen"], r["Count"], r["Source"]) == ("60s", "9m", 2, "kubelet")


def test_namespace_secret_configmap_serviceaccount() -> None:
    ns = {"metadata": {"name": "team-a", "creationTimestamp": ago(days=2, hours=3)},
          "status": {"phase": "Active"}}
    assert cells("", "v1", "Namespace", ns) == ["team-a", "Active", "2d3h"]
    secret = {"metadata": md("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}
    assert cells("", "v1", "Secret", secret) == ["tls", "kubernetes.io/tls", 2, "5m"]
    cm = {"metadata": md("cfg"), "data": {"a": "1"}, "binaryData": {"b": "AA=="}}
    assert cells("", "v1", "ConfigMap", cm) == ["cfg", 2, "5m"]
    sa = {"metadata": md("default"), "secrets": [{"name": "t"}]}
    assert cells("", "v1", "ServiceAccount", sa) == ["default", 1, "5m"]


def test_persistent_volumes_and_claims() -> None:
    pv = {"metadata": md("pv-1"),
          "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce",
                                                                    "ReadWriteOnce"],
                   "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
                   "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Filesystem"},
          "status": {"phase": "Bound"}}
    assert cells("", "v1", "PersistentVolume", pv) == [
        "pv-1", "10Gi", "RWO,RWX", "Retain", "Bound", "default/data", "fast", "<unset>", "", "5m",
        "Filesystem"]
    pv["metadata"]["deletionTimestamp"] = ago(seconds=1)
    assert row("", "v1", "PersistentVolume", pv)["Status"] == "Terminating"

    pvc = {"metadata": md("data", annotations={"volume.beta.kubernetes.io/storage-class": "legacy"}),
           "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}},
           "status": {"phase": "Pending"}}
    assert cells("", "v1", "PersistentVolumeClaim", pvc) == [
        "data", "Pending", "", "", "", "legacy", "<unset>", "5m", "<unset>"]
    pvc["spec"]["volumeName"] = "pv-1"
    pvc["status"] = {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOncePod"]}
    assert cells("", "v1", "PersistentVolumeClaim", pvc)[1:5] == ["Bound", "pv-1", "10Gi", "RWOP"]


def test_resource_quota_splits_requests_and_limits() -> None:
    quota = {"metadata": md("compute"),
             "status": {"hard": {"requests.cpu": "2", "pods": "10", "limits.memory": "4Gi",
                                 "limits.cpu": "4"},
                        "used": {"requests.cpu": "500m", "pods": "3", "limits.cpu": "1"}}}
    assert cells("", "v1", "ResourceQuota", quota) == [
        "compute", "pods: 3/10, requests.cpu: 500m/2", "limits.cpu: 1/4, limits.memory: 0/4Gi", "5m"]


# --- storage, rbac, coordination, scheduling ---------------------------------------------------

def test_storage_class_default_suffix() -> None:
    sc = {"metadata": md("standard", annotations={"storageclass.kubernetes.io/is-default-class": "true"}),
          "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
          "allowVolumeExpansion": True}
    assert cells("storage.k8s.io", "v1", "StorageClass", sc) == [
        "standard (default)", "rancher.io/local-path", "Delete", "WaitForFirstConsumer", True, "5m"]
    plain = {"metadata": md("slow"), "provisioner": "p", "reclaimPolicy": "Retain"}
    assert cells("storage.k8s.io", "v1", "StorageClass", plain)[:5] == [
        "slow", "p", "Retain", "Immediate", False]


def test_role_bindings_list_subjects() -> None:
    rb = {"metadata": md("edit"), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                             "name": "edit"},
          "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                       {"kind": "ServiceAccount", "namespace": "ci", "name": "deployer"},
                       {"kind": "User", "name": "bob"}]}
    assert cells("rbac.authorization.k8s.io", "v1", "RoleBinding", rb) == [
        "edit", "ClusterRole/edit", "5m", "alice, bob", "devs", "ci/deployer"]
    crb = {"metadata": md("admins"), "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}
    assert cells("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", crb) == [
        "admins", "ClusterRole/cluster-admin", "5m", "", "", ""]


def test_lease_and_priority_class() -> None:
    lease = {"metadata": md("kube-scheduler"), "spec": {"holderIdentity": "host_1234"}}
    assert cells("coordination.k8s.io", "v1", "Lease", lease) == ["kube-scheduler", "host_1234", "5m"]
    pc = {"metadata": md("high"), "value": 1000000, "globalDefault": True, "preemptionPolicy": "Never"}
    assert cells("scheduling.k8s.io", "v1", "PriorityClass", pc) == ["high", 1000000, True, "5m", "Never"]


# --- kubectl renders our tables as it renders kube-apiserver's ---------------------------------

_DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"],
         "verbs": ["get", "list"]},
        {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node", "shortNames": ["no"],
         "verbs": ["get", "list"]}]},
}


async def _serve_and_run_kubectl(tmp_path: Path, tables: dict[str, dict[str, Any]], *args: str) -> str:
    async def handle(request: web.Request) -> web.Response:
        path = request.path
        if path in _DISCOVERY:
            return web.json_response(_DISCOVERY[path])
        assert "as=Table" in request.headers.get("Accept", ""), "kubectl asks for server-side tables"
        return web.json_response(tables[path])

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t", "namespace": "default"}}],
        "users": [{"name": "t", "user": {}}]}))
    try:
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL), f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'cache'}", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return out.decode()
    finally:
        await runner.cleanup()


async def test_kubectl_get_pods_and_nodes_wide(tmp_path: Path) -> None:
    pods = [pod({"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}],
                 "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "state": RUNNING},
                                       {"name": "log", "ready": False, "restartCount": 3,
                                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                        "lastState": {"terminated": {"exitCode": 1,
                                                                     "finishedAt": ago(minutes=1)}}}]})]
    nodes = [node([{"type": "Ready", "status": "True"}], {"node-role.kubernetes.io/control-plane": ""},
                  unschedulable=True)]
    list_meta = {"resourceVersion": "7"}
    tables = {
        "/api/v1/namespaces/default/pods": to_table(info("", "v1", "Pod"), pods, list_meta=list_meta,
                                                    now=NOW),
        "/api/v1/nodes": to_table(info("", "v1", "Node"), nodes, list_meta=list_meta, now=NOW),
    }
    out = await _serve_and_run_kubectl(tmp_path, tables, "get", "pods")
    assert out.splitlines() == [
        "NAME    READY   STATUS             RESTARTS      AGE",
        "web-1   1/2     CrashLoopBackOff   3 (60s ago)   5m"]
    out = await _serve_and_run_kubectl(tmp_path, tables, "get", "nodes", "-o", "wide")
    assert out.splitlines() == [
        "NAME     STATUS                     ROLES           AGE    VERSION   INTERNAL-IP    EXTERNAL-IP   "
        "OS-IMAGE                         KERNEL-VERSION   CONTAINER-RUNTIME",
        "node-1   Ready,SchedulingDisabled   control-plane   3d2h   v1.37.0   192.168.1.10   <none>        "
        "Debian GNU/Linux 12 (bookworm)   6.1.0-18-amd64   pocketkube://0.1.0"]
