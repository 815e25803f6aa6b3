"""Pod status as the kubelet reports it, field by field (upstream's generateAPIPodStatus, getPhase and the
pod condition generators), plus the time and image helpers the simulated nodes share.

The real kubelet describes each container by what the runtime knows of its newest instance and of the one
before it (`ContainerView`); `pod_status` turns those views, the sandbox's state and the pod into the
status object the API server stores and kubectl prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

# Conditions the kubelet owns; any other condition type on a pod (readiness gates, DisruptionTarget…) is kept.
KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
CONTAINER_CREATING = "ContainerCreating"
POD_INITIALIZING = "PodInitializing"


# --- time ---------------------------------------------------------------------------------


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def go_duration(seconds: float) -> str:
    """time.Duration's String() for whole seconds: 10s, 1m20s, 5m0s."""
    total = int(seconds)
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# --- images -------------------------------------------------------------------------------


def normalize_image(image: str) -> str:
    """The reference the runtime reports: docker.io/library/busybox:latest for `busybox`."""
    name, digest = image.split("@", 1) if "@" in image else (image, "")
    first, slash, rest = name.partition("/")
    if not slash:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if digest:
        return f"{name}@{digest}"
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


# --- conditions ---------------------------------------------------------------------------


def pod_condition(old: dict[str, Obj], ctype: str, status: str, now: float, generation: Any,
                  reason: str = "", message: str = "") -> Obj:
    """A pod condition keeping the previous transition time while its status stays the same."""
    prior = old.get(ctype)
    cond: Obj = {"type": ctype, "status": status}
    if generation is not None:
        cond["observedGeneration"] = generation
    cond["lastProbeTime"] = None
    same = prior is not None and prior.get("status") == status
    cond["lastTransitionTime"] = prior.get("lastTransitionTime") if same and prior else rfc3339(now)
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def format_pod(pod: Obj) -> str:
    """upstream format.Pod: name_namespace(uid), the form kubelet messages name pods by."""
    meta = pod["metadata"]
    return f"{meta['name']}_{meta.get('namespace', '')}({meta.get('uid', '')})"


# --- containers ---------------------------------------------------------------------------


@dataclass
class InstanceState:
    """One runtime instance of a container, as the runtime reports it."""

    container_id: str            # pocketkube://<engine id>
    state: str                   # "created" | "running" | "exited"
    restart_count: int
    image: str
    image_id: str
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    reason: str = ""             # for exited instances: Completed, Error, OOMKilled, ContainerCannotRun
    message: str = ""
    signal: int = 0
    user: tuple[int, int, list[int]] | None = None  # uid, gid, supplementary gids its process started with


@dataclass
class ContainerView:
    """What the kubelet knows of one container of the spec right now."""

    name: str
    image: str                   # the spec's image, reported until an instance exists
    latest: InstanceState | None = None
    previous: InstanceState | None = None
    waiting_reason: str = ""     # set while the container does not run: ErrImagePull, CrashLoopBackOff…
    waiting_message: str = ""
    ready: bool = False
    started: bool = False


def _terminated(instance: InstanceState) -> Obj:
    term: Obj = {"exitCode": instance.exit_code}
    if instance.signal:
        term["signal"] = instance.signal
    term["reason"] = instance.reason or ("Completed" if instance.exit_code == 0 else "Error")
    if instance.message:
        term["message"] = instance.message
    term["startedAt"] = rfc3339(instance.started_at) if instance.started_at else None
    term["finishedAt"] = rfc3339(instance.finished_at) if instance.finished_at else None
    term["containerID"] = instance.container_id
    return term


def container_status(view: ContainerView, spec: Obj, default_waiting: str) -> Obj:
    latest = view.latest
    if view.waiting_reason or latest is None or latest.state == "created":
        waiting: Obj = {"reason": view.waiting_reason or default_waiting}
        if view.waiting_message:
            waiting["message"] = view.waiting_message
        state: Obj = {"waiting": waiting}
    elif latest.state == "running":
        state = {"running": {"startedAt": rfc3339(latest.started_at)}}
    else:
        state = {"terminated": _terminated(latest)}
    # The last termination: the newest instance's when it exited and a new one is awaited, else the one before.
    last: Obj = {}
    if "waiting" in state and latest is not None and latest.state == "exited":
        last = {"terminated": _terminated(latest)}
    elif view.previous is not None and view.previous.state == "exited":
        last = {"terminated": _terminated(view.previous)}
    running = "running" in state
    status: Obj = {
        "name": view.name, "state": state, "lastState": last, "ready": view.ready and running,
        "restartCount": latest.restart_count if latest is not None else 0,
        "image": latest.image if latest is not None else normalize_image(view.image),
        "imageID": latest.image_id if latest is not None else "",
        "started": view.started and running,
    }
    if latest is not None:
        status["containerID"] = latest.container_id
    resources = {k: v for k, v in (spec.get("resources") or {}).items() if k in ("limits", "requests") and v}
    if resources:
        status["resources"] = resources
    mounts = []
    for m in spec.get("volumeMounts") or []:
        mount: Obj = {"name": m.get("name"), "mountPath": m.get("mountPath")}
        if m.get("readOnly"):
            mount["readOnly"] = True
            mount["recursiveReadOnly"] = "Disabled"
        mounts.append(mount)
    if mounts:
        status["volumeMounts"] = mounts
    if latest is not None and latest.user is not None:
        uid, gid, groups = latest.user
        status["user"] = {"linux": {"uid": uid, "gid": gid, "supplementalGroups": list(groups)}}
    return status


# --- phase --------------------------------------------------------------------------------


def _state(status: Obj) -> Obj:
    return status.get("state") or {}


def pod_phase(spec: Obj, init_statuses: list[Obj], statuses: list[Obj], terminal: bool) -> str:
    """upstream getPhase: counts of init, sidecar and regular containers by state."""
    restart_policy = spec.get("restartPolicy") or "Always"
    by_name = {s["name"]: s for s in (*init_statuses, *statuses)}
    pending_init = failed_init = pending_sidecars = 0
    for c in spec.get("initContainers") or []:
        s = by_name.get(c["name"])
        if c.get("restartPolicy") == "Always":
            if s is None:
                pending_sidecars += 1
            elif "running" in _state(s) and not s.get("started"):
                pending_sidecars += 1
            elif "waiting" in _state(s) and not (s.get("lastState") or {}).get("terminated"):
                pending_sidecars += 1
            continue
        if s is None or "running" in _state(s):
            pending_init += 1
        elif "terminated" in _state(s):
            if _state(s)["terminated"].get("exitCode"):
                failed_init += 1
        elif (s.get("lastState") or {}).get("terminated"):
            if s["lastState"]["terminated"].get("exitCode"):
                failed_init += 1
        else:
            pending_init += 1
    running = waiting = stopped = succeeded = unknown = 0
    for c in spec.get("containers") or []:
        s = by_name.get(c["name"])
        if s is None:
            unknown += 1
        elif "running" in _state(s):
            running += 1
        elif "terminated" in _state(s):
            stopped += 1
            if not _state(s)["terminated"].get("exitCode"):
                succeeded += 1
        elif (s.get("lastState") or {}).get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if failed_init and restart_policy == "Never":
        return "Failed"
    if pending_init or (pending_sidecars and running == 0):
        return "Pending"
    if waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if stopped == len(spec.get("containers") or []) and stopped:
        if restart_policy == "Always" and not terminal:
            return "Running"  # every container is on its way to a restart
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never" or terminal:
            return "Failed"
        return "Running"
    return "Pending"


# --- the whole status ---------------------------------------------------------------------


@dataclass
class PodObservation:
    """Everything the kubelet observed about one pod, the input of `pod_status`."""

    init_views: list[ContainerView]
    views: list[ContainerView]
    sandbox_ready: bool
    host_ip: str
    pod_ips: list[str]
    start_time: float
    terminal: bool = False        # the kubelet decided the pod is finished (or stopped it for deletion)
    ephemeral_views: list[ContainerView] = field(default_factory=list)


def _unready(spec: Obj, init_statuses: list[Obj], statuses: list[Obj]) -> list[str]:
    by_name = {s["name"]: s for s in init_statuses}
    names = [c["name"] for c in spec.get("initContainers") or []
             if c.get("restartPolicy") == "Always" and not by_name.get(c["name"], {}).get("ready")]
    return names + [s["name"] for s in statuses if not s.get("ready")]


def _initialized(spec: Obj, init_statuses: list[Obj]) -> list[str]:
    """Init containers not done yet: regular ones not exited 0, sidecars not started."""
    by_name = {s["name"]: s for s in init_statuses}
    incomplete = []
    for c in spec.get("initContainers") or []:
        s = by_name.get(c["name"]) or {}
        if c.get("restartPolicy") == "Always":
            # a restarting sidecar stays initialized once it has started before
            done = bool(s.get("started")) or int(s.get("restartCount") or 0) > 0
        else:
            term = _state(s).get("terminated")
            done = term is not None and not term.get("exitCode")
        if not done:
            incomplete.append(c["name"])
    return incomplete


def pod_status(pod: Obj, seen: PodObservation, now: float) -> Obj:
    spec = pod.get("spec") or {}
    meta = pod["metadata"]
    status = pod.get("status") or {}
    has_init = bool(spec.get("initContainers"))
    default_waiting = POD_INITIALIZING if has_init else CONTAINER_CREATING
    init_specs = {c["name"]: c for c in spec.get("initContainers") or []}
    specs = {c["name"]: c for c in spec.get("containers") or []}
    init_statuses = [container_status(v, init_specs[v.name], POD_INITIALIZING) for v in seen.init_views]
    # regular containers sorted by name, init containers in their order, as upstream reports them
    statuses = sorted((container_status(v, specs[v.name], default_waiting) for v in seen.views),
                      key=lambda s: s["name"])
    phase = pod_phase(spec, init_statuses, statuses, seen.terminal)
    if seen.terminal and phase not in ("Succeeded", "Failed"):
        phase = "Failed" if status.get("phase") != "Succeeded" else "Succeeded"

    generation = meta.get("generation")
    old = {c.get("type"): c for c in status.get("conditions") or []}
    incomplete = _initialized(spec, init_statuses)
    unready = _unready(spec, init_statuses, statuses)
    if incomplete and phase != "Succeeded":
        initialized = pod_condition(old, "Initialized", "False", now, generation, "ContainersNotInitialized",
                                    f"containers with incomplete status: [{' '.join(incomplete)}]")
    else:
        initialized = pod_condition(old, "Initialized", "True", now, generation)
    if phase == "Succeeded":
        containers_ready = pod_condition(old, "ContainersReady", "False", now, generation, "PodCompleted")
        ready = pod_condition(old, "Ready", "False", now, generation, "PodCompleted")
    elif unready:
        message = f"containers with unready status: [{' '.join(unready)}]"
        containers_ready = pod_condition(old, "ContainersReady", "False", now, generation, "ContainersNotReady",
                                         message)
        ready = pod_condition(old, "Ready", "False", now, generation, "ContainersNotReady", message)
    else:
        containers_ready = pod_condition(old, "ContainersReady", "True", now, generation)
        ready = pod_condition(old, "Ready", "True", now, generation)
        missing = [g["conditionType"] for g in spec.get("readinessGates") or []
                   if (old.get(g.get("conditionType")) or {}).get("status") != "True"]
        if missing:
            ready = pod_condition(old, "Ready", "False", now, generation, "ReadinessGatesNotReady",
                                  f'corresponding condition of pod readiness gate "{missing[0]}" does not exist.')
    conditions = [
        pod_condition(old, "PodReadyToStartContainers", "True" if seen.sandbox_ready else "False", now, generation),
        initialized, ready, containers_ready,
    ]
    conditions += [c for c in status.get("conditions") or [] if c.get("type") not in KUBELET_CONDITIONS]

    desired: Obj = {"phase": phase, "conditions": conditions, "hostIP": seen.host_ip,
                    "hostIPs": [{"ip": seen.host_ip}]}
    if seen.pod_ips:
        desired["podIP"] = seen.pod_ips[0]
        desired["podIPs"] = [{"ip": ip} for ip in seen.pod_ips]
    desired["startTime"] = rfc3339(seen.start_time)
    if init_statuses:
        desired["initContainerStatuses"] = init_statuses
    desired["containerStatuses"] = statuses
    if seen.ephemeral_views:
        # Ephemeral containers never count for the phase or readiness; they are reported in spec order.
        ephemeral_specs = {c["name"]: c for c in spec.get("ephemeralContainers") or []}
        desired["ephemeralContainerStatuses"] = [
            container_status(v, ephemeral_specs[v.name], CONTAINER_CREATING) for v in seen.ephemeral_views]
    if generation is not None:
        desired["observedGeneration"] = generation
    return desired


def status_changed(pod: Obj, desired: Obj) -> bool:
    status = pod.get("status") or {}
    return any(status.get(k) != v for k, v in desired.items())
