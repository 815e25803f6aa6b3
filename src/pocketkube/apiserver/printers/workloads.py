"""Printers for workload kinds: apps/v1, batch/v1, autoscaling (v1 and v2) and policy/v1."""

from __future__ import annotations

from datetime import datetime

from pocketkube.apiserver.printers.base import (
    AGE,
    CONTAINERS,
    IMAGES,
    NAME,
    NONE,
    UNKNOWN,
    UNSET,
    Cell,
    Obj,
    Printer,
    age,
    bool_ptr,
    column,
    container_cells,
    dig,
    format_label_selector,
    format_labels,
    human_duration,
    meta,
    name,
    parse_time,
    quantity,
    selector_string,
    since,
)
from pocketkube.apiserver.printers.docs import DOCS

# --- Deployment, ReplicaSet, StatefulSet, DaemonSet, ControllerRevision ------------------------

_DEPLOYMENT_COLUMNS = (
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    column("Up-to-date", "string", DOCS["extensions/v1beta1.DeploymentStatus.updatedReplicas"]),
    column("Available", "string", DOCS["extensions/v1beta1.DeploymentStatus.availableReplicas"]),
    AGE,
    CONTAINERS,
    IMAGES,
    column("Selector", "string", DOCS["extensions/v1beta1.DeploymentSpec.selector"], priority=1),
)


def _template_containers(obj: Obj) -> list[Cell]:
    return container_cells(dig(obj, "spec", "template", "spec", "containers"))


def _deployment_cells(deploy: Obj, now: datetime) -> list[Cell]:
    spec, status = deploy.get("spec") or {}, deploy.get("status") or {}
    try:
        selector = selector_string(spec.get("selector"))
    except ValueError:
        selector = "<invalid>"
    return [name(deploy), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), age(deploy, now),
            *_template_containers(deploy), selector]


_REPLICASET_COLUMNS = (
    NAME,
    column("Desired", "integer", DOCS["extensions/v1beta1.ReplicaSetSpec.replicas"]),
    column("Current", "integer", DOCS["extensions/v1beta1.ReplicaSetStatus.replicas"]),
    column("Ready", "integer", DOCS["extensions/v1beta1.ReplicaSetStatus.readyReplicas"]),
    AGE,
    CONTAINERS,
    IMAGES,
    column("Selector", "string", DOCS["extensions/v1beta1.ReplicaSetSpec.selector"], priority=1),
)


def _replicaset_cells(rs: Obj, now: datetime) -> list[Cell]:
    spec, status = rs.get("spec") or {}, rs.get("status") or {}
    return [name(rs), spec.get("replicas", 1), status.get("replicas", 0), status.get("readyReplicas", 0),
            age(rs, now), *_template_containers(rs), format_label_selector(spec.get("selector"))]


_STATEFULSET_COLUMNS = (
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
)


def _statefulset_cells(sts: Obj, now: datetime) -> list[Cell]:
    ready, desired = dig(sts, "status", "readyReplicas") or 0, dig(sts, "spec", "replicas")
    return [name(sts), f"{ready}/{1 if desired is None else desired}", age(sts, now),
            *_template_containers(sts)]


_DAEMONSET_COLUMNS = (
    NAME,
    column("Desired", "integer", DOCS["extensions/v1beta1.DaemonSetStatus.desiredNumberScheduled"]),
    column("Current", "integer", DOCS["extensions/v1beta1.DaemonSetStatus.currentNumberScheduled"]),
    column("Ready", "integer", DOCS["extensions/v1beta1.DaemonSetStatus.numberReady"]),
    column("Up-to-date", "integer", DOCS["extensions/v1beta1.DaemonSetStatus.updatedNumberScheduled"]),
    column("Available", "integer", DOCS["extensions/v1beta1.DaemonSetStatus.numberAvailable"]),
    column("Node Selector", "string", DOCS["core/v1.PodSpec.nodeSelector"]),
    AGE,
    CONTAINERS,
    IMAGES,
    column("Selector", "string", DOCS["extensions/v1beta1.DaemonSetSpec.selector"], priority=1),
)


def _daemonset_cells(ds: Obj, now: datetime) -> list[Cell]:
    status = ds.get("status") or {}
    counts = [status.get(f, 0) for f in ("desiredNumberScheduled", "currentNumberScheduled", "numberReady",
                                          "updatedNumberScheduled", "numberAvailable")]
    node_selector = format_labels(dig(ds, "spec", "template", "spec", "nodeSelector"))
    return [name(ds), *counts, node_selector, age(ds, now), *_template_containers(ds),
            format_label_selector(dig(ds, "spec", "selector"))]


_CONTROLLER_REVISION_COLUMNS = (
    NAME,
    column("Controller", "string", "Controller of the object"),
    column("Revision", "string", DOCS["apps/v1beta1.ControllerRevision.revision"]),
    AGE,
)


def _controller_revision_cells(cr: Obj, now: datetime) -> list[Cell]:
    controller = NONE
    owner = next((o for o in meta(cr).get("ownerReferences") or [] if o.get("controller")), None)
    if owner is not None:
        # formatResourceName: "<kind>.<group>/<name>" lower-cased, "<kind>/<name>" for the core group.
        api_version, kind = owner.get("apiVersion", ""), owner.get("kind", "")
        group = api_version.split("/")[0] if "/" in api_version else ""
        group_kind = f"{kind}.{group}" if group else kind
        controller = f"{group_kind.lower()}/{owner.get('name', '')}" if group_kind else owner.get("name", "")
    return [name(cr), controller, cr.get("revision", 0), age(cr, now)]


# --- Job, CronJob ------------------------------------------------------------------------------

_JOB_COLUMNS = (
    NAME,
    column("Status", "string", "Status of the job."),
    column("Completions", "string", DOCS["batch/v1.JobStatus.succeeded"]),
    column("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    column("Selector", "string", DOCS["batch/v1.JobSpec.selector"], priority=1),
)


def _job_condition(job: Obj, type_: str) -> bool:
    """hasJobCondition: the first condition of that type decides."""
    for cond in dig(job, "status", "conditions") or []:
        if cond.get("type") == type_:
            return cond.get("status") == "True"
    return False


def _job_status(job: Obj) -> str:
    if _job_condition(job, "Complete"):
        return "Complete"
    if _job_condition(job, "Failed"):
        return "Failed"
    if meta(job).get("deletionTimestamp") is not None:
        return "Terminating"
    if _job_condition(job, "Suspended"):
        return "Suspended"
    if _job_condition(job, "FailureTarget"):
        return "FailureTarget"
    return "Running"


def _job_cells(job: Obj, now: datetime) -> list[Cell]:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    succeeded = status.get("succeeded", 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    elif (spec.get("parallelism") or 0) > 1:
        completions = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        completions = f"{succeeded}/1"
    started, finished = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = ""
    if started is not None:
        duration = human_duration((finished or now) - started)
    return [name(job), _job_status(job), completions, duration, age(job, now), *_template_containers(job),
            format_label_selector(spec.get("selector"))]


_CRONJOB_COLUMNS = (
    NAME,
    column("Schedule", "string", DOCS["batch/v1beta1.CronJobSpec.schedule"]),
    column("Timezone", "string", DOCS["batch/v1beta1.CronJobSpec.timeZone"]),
    column("Suspend", "boolean", DOCS["batch/v1beta1.CronJobSpec.suspend"]),
    column("Active", "integer", DOCS["batch/v1beta1.CronJobStatus.active"]),
    column("Last Schedule", "string", DOCS["batch/v1beta1.CronJobStatus.lastScheduleTime"]),
    AGE,
    CONTAINERS,
    IMAGES,
    column("Selector", "string", DOCS["batch/v1.JobSpec.selector"], priority=1),
)


def _cronjob_cells(cj: Obj, now: datetime) -> list[Cell]:
    spec, status = cj.get("spec") or {}, cj.get("status") or {}
    last_schedule = since(status["lastScheduleTime"], now) if status.get("lastScheduleTime") else NONE
    job_spec = dig(spec, "jobTemplate", "spec") or {}
    return [name(cj), spec.get("schedule", ""), spec.get("timeZone") or NONE, bool_ptr(spec.get("suspend")),
            len(status.get("active") or []), last_schedule, age(cj, now),
            *container_cells(dig(job_spec, "template", "spec", "containers")),
            format_label_selector(job_spec.get("selector"))]


# --- HorizontalPodAutoscaler -------------------------------------------------------------------

_HPA_COLUMNS = (
    NAME,
    column("Reference", "string", DOCS["autoscaling/v2.HorizontalPodAutoscalerSpec.scaleTargetRef"]),
    column("Targets", "string", DOCS["autoscaling/v2.HorizontalPodAutoscalerSpec.metrics"]),
    column("MinPods", "string", DOCS["autoscaling/v2.HorizontalPodAutoscalerSpec.minReplicas"]),
    column("MaxPods", "string", DOCS["autoscaling/v2.HorizontalPodAutoscalerSpec.maxReplicas"]),
    column("Replicas", "string", DOCS["autoscaling/v2.HorizontalPodAutoscalerStatus.currentReplicas"]),
    AGE,
)

_DEFAULT_CPU_UTILIZATION = 80


def _cpu_utilization(target_key: str, value: int) -> Obj:
    return {"type": "Resource", "resource": {"name": "cpu", target_key: {"averageUtilization": value}}}


def hpa_v1_as_v2(hpa: Obj) -> Obj:
    """The autoscaling/v1 fields under their v2 shape, as the internal version has them (v1 conversion):
    the CPU target becomes a Resource metric, and an HPA without one gets the implicit 80% default."""
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    target = spec.get("targetCPUUtilizationPercentage")
    current = status.get("currentCPUUtilizationPercentage")
    target_metric = _cpu_utilization("target", _DEFAULT_CPU_UTILIZATION if target is None else target)
    current_metrics = [] if current is None else [_cpu_utilization("current", current)]
    return {
        "metadata": hpa.get("metadata") or {},
        "spec": {**spec, "metrics": [target_metric]},
        "status": {**status, "currentMetrics": current_metrics},
    }


def _resource_metric(spec: Obj, status: Obj | None) -> str:
    """A Resource or ContainerResource entry of formatHPAMetrics: "cpu: 30%/80%"."""
    target = spec.get("target") or {}
    current = (status or {}).get("current") or {}
    if target.get("averageValue") is not None:
        now_value = UNKNOWN if status is None else quantity(current.get("averageValue"), nil="<nil>")
        return f"{spec.get('name', '')}: {now_value}/{target['averageValue']}"
    now_value = UNKNOWN
    if status is not None and current.get("averageUtilization") is not None:
        now_value = f"{current['averageUtilization']}%"
    goal = "<auto>" if target.get("averageUtilization") is None else f"{target['averageUtilization']}%"
    return f"{spec.get('name', '')}: {now_value}/{goal}"


def _object_metric(spec: Obj, status: Obj | None) -> str:
    """An Object or External entry of formatHPAMetrics: "current/target", "(avg)" for average values."""
    target = spec.get("target") or {}
    current = (status or {}).get("current") or {}
    if target.get("averageValue") is not None:
        now_value = UNKNOWN if current.get("averageValue") is None else str(current["averageValue"])
        return f"{now_value}/{target['averageValue']} (avg)"
    now_value = UNKNOWN if status is None else quantity(current.get("value"), nil="<nil>")
    return f"{now_value}/{quantity(target.get('value'), nil='<nil>')}"


def _format_hpa_metrics(specs: list[Obj], statuses: list[Obj]) -> str:
    """formatHPAMetrics: "current/target" per metric, matched to statuses by position; two at most."""
    if not specs:
        return NONE
    shown = []
    for i, spec in enumerate(specs):
        status = statuses[i] if i < len(statuses) else {}
        match spec.get("type"):
            case "Resource" | "ContainerResource" as kind:
                source = "resource" if kind == "Resource" else "containerResource"
                shown.append(_resource_metric(spec.get(source) or {}, status.get(source)))
            case "Object" | "External" as kind:
                source = kind.lower()
                shown.append(_object_metric(spec.get(source) or {}, status.get(source)))
            case "Pods":
                pods = status.get("pods")
                current = UNKNOWN
                if pods is not None:
                    current = quantity(dig(pods, "current", "averageValue"), nil="<nil>")
                goal = quantity(dig(spec, "pods", "target", "averageValue"), nil="<nil>")
                shown.append(f"{current}/{goal}")
            case _:
                shown.append("<unknown type>")
    if len(shown) > 2:
        return f"{', '.join(shown[:2])} + {len(shown) - 2} more..."
    return ", ".join(shown)


def _hpa_cells(hpa: Obj, now: datetime) -> list[Cell]:
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    min_pods = spec.get("minReplicas")
    return [name(hpa), f"{ref.get('kind', '')}/{ref.get('name', '')}",
            _format_hpa_metrics(spec.get("metrics") or [], status.get("currentMetrics") or []),
            UNSET if min_pods is None else str(min_pods), spec.get("maxReplicas", 0),
            status.get("currentReplicas", 0), age(hpa, now)]


def _hpa_v1_cells(hpa: Obj, now: datetime) -> list[Cell]:
    return _hpa_cells(hpa_v1_as_v2(hpa), now)


# --- PodDisruptionBudget -----------------------------------------------------------------------

_PDB_COLUMNS = (
    NAME,
    column("Min Available", "string", "The minimum number of pods that must be available."),
    column("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
    column("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
    AGE,
)


def _pdb_cells(pdb: Obj, now: datetime) -> list[Cell]:
    spec = pdb.get("spec") or {}
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    return [name(pdb), "N/A" if min_available is None else str(min_available),
            "N/A" if max_unavailable is None else str(max_unavailable),
            dig(pdb, "status", "disruptionsAllowed") or 0, age(pdb, now)]


PRINTERS: dict[tuple[str, str, str], Printer] = {
    ("apps", "v1", "Deployment"): Printer(_DEPLOYMENT_COLUMNS, _deployment_cells),
    ("apps", "v1", "ReplicaSet"): Printer(_REPLICASET_COLUMNS, _replicaset_cells),
    ("apps", "v1", "StatefulSet"): Printer(_STATEFULSET_COLUMNS, _statefulset_cells),
    ("apps", "v1", "DaemonSet"): Printer(_DAEMONSET_COLUMNS, _daemonset_cells),
    ("apps", "v1", "ControllerRevision"): Printer(_CONTROLLER_REVISION_COLUMNS, _controller_revision_cells),
    ("batch", "v1", "Job"): Printer(_JOB_COLUMNS, _job_cells),
    ("batch", "v1", "CronJob"): Printer(_CRONJOB_COLUMNS, _cronjob_cells),
    ("autoscaling", "v2", "HorizontalPodAutoscaler"): Printer(_HPA_COLUMNS, _hpa_cells),
    ("autoscaling", "v1", "HorizontalPodAutoscaler"): Printer(_HPA_COLUMNS, _hpa_v1_cells),
    ("policy", "v1", "PodDisruptionBudget"): Printer(_PDB_COLUMNS, _pdb_cells),
}
