"""Printers for core/v1 kinds (and events.k8s.io/v1 Events, printed as core Events like upstream does)."""

from __future__ import annotations

from datetime import datetime

from pocketkube.apiserver.printers.base import (
    AGE,
    CONTAINERS,
    IMAGES,
    NAME,
    NONE,
    UNSET,
    Cell,
    Obj,
    Printer,
    age,
    ago,
    column,
    container_cells,
    dig,
    format_labels,
    join_host_port,
    meta,
    name,
    parse_time,
    quantity,
    since,
)
from pocketkube.apiserver.printers.docs import DOCS

# --- Pod ---------------------------------------------------------------------------------------

_POD_COLUMNS = (
    NAME,
    column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    column("Status", "string", "The aggregate status of the containers in this pod."),
    column("Restarts", "string", "The number of times the containers in this pod have been restarted "
           "and when the last container in this pod has restarted."),
    AGE,
    column("IP", "string", DOCS["core/v1.PodStatus.podIP"], priority=1),
    column("Node", "string", DOCS["core/v1.PodSpec.nodeName"], priority=1),
    column("Nominated Node", "string", DOCS["core/v1.PodStatus.nominatedNodeName"], priority=1),
    column("Readiness Gates", "string", DOCS["core/v1.PodSpec.readinessGates"], priority=1),
)

_TERMINAL_PHASES = ("Succeeded", "Failed")
_NODE_UNREACHABLE_REASON = "NodeLost"


def _later(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


def _last_termination(status: Obj) -> datetime | None:
    return parse_time(dig(status, "lastState", "terminated", "finishedAt"))


def _is_sidecar(container: Obj | None) -> bool:
    """podutil.IsRestartableInitContainer: an init container with restartPolicy Always."""
    return container is not None and container.get("restartPolicy") == "Always"


def _condition_status(conditions: list[Obj], type_: str) -> str | None:
    for cond in conditions:
        if cond.get("type") == type_:
            return cond.get("status")
    return None


def _pod_cells(pod: Obj, now: datetime) -> list[Cell]:
    """printPod: the READY count, the STATUS "reason" and the RESTARTS summary kubectl users know."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    conditions = status.get("conditions") or []
    init_specs = spec.get("initContainers") or []
    init_by_name = {c.get("name"): c for c in init_specs}

    phase = status.get("phase", "")
    reason = status.get("reason") or phase
    if any(c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated" for c in conditions):
        reason = "SchedulingGated"

    total = len(spec.get("containers") or []) + sum(1 for c in init_specs if _is_sidecar(c))
    ready = restarts = sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None

    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += cs.get("restartCount", 0)
        last_restart = _later(last_restart, _last_termination(cs))
        sidecar = _is_sidecar(init_by_name.get(cs.get("name")))
        if sidecar:
            sidecar_restarts += cs.get("restartCount", 0)
            last_sidecar_restart = _later(last_sidecar_restart, _last_termination(cs))
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and terminated.get("exitCode", 0) == 0:
            continue
        if sidecar and cs.get("started"):
            ready += 1 if cs.get("ready") else 0
            continue
        if terminated is not None:  # initialization failed
            if terminated.get("reason"):
                reason = "Init:" + terminated["reason"]
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{terminated.get('exitCode', 0)}"
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_status(conditions, "Initialized") == "True":
        # Only sidecars' restarts count once the pod is initialized; other init containers are done.
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        # Walked backwards, so the first container's state wins the STATUS column.
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            last_restart = _later(last_restart, _last_termination(cs))
            state = cs.get("state") or {}
            terminated, waiting = state.get("terminated"), state.get("waiting")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                if terminated.get("signal"):
                    reason = f"Signal:{terminated['signal']}"
                else:
                    reason = f"ExitCode:{terminated.get('exitCode', 0)}"
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        # A container still running means the pod is not "Completed" yet.
        if reason == "Completed" and has_running:
            ready_cond = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            reason = "Running" if ready_cond else "NotReady"

    deleting = meta(pod).get("deletionTimestamp") is not None
    if deleting and status.get("reason") == _NODE_UNREACHABLE_REASON:
        reason = "Unknown"
    elif deleting and phase not in _TERMINAL_PHASES:
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts != 0 and last_restart is not None:
        restarts_text = f"{restarts} ({ago(last_restart, now)} ago)"

    pod_ips = status.get("podIPs") or []
    pod_ip = (pod_ips[0].get("ip") if pod_ips else status.get("podIP")) or NONE
    gates = spec.get("readinessGates") or []
    readiness = NONE
    if gates:
        true_count = sum(1 for g in gates if _condition_status(conditions, g.get("conditionType")) == "True")
        readiness = f"{true_count}/{len(gates)}"
    return [name(pod), f"{ready}/{total}", reason, restarts_text, age(pod, now),
            pod_ip, spec.get("nodeName") or NONE, status.get("nominatedNodeName") or NONE, readiness]


def _pod_conditions(pod: Obj) -> list[Obj]:
    """Row conditions marking finished pods, which clients may use to hide them."""
    phase = dig(pod, "status", "phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return []


# --- Service, Endpoints ------------------------------------------------------------------------

_SERVICE_COLUMNS = (
    NAME,
    column("Type", "string", DOCS["core/v1.ServiceSpec.type"]),
    column("Cluster-IP", "string", DOCS["core/v1.ServiceSpec.clusterIP"]),
    column("External-IP", "string", DOCS["core/v1.ServiceSpec.externalIPs"]),
    column("Port(s)", "string", DOCS["core/v1.ServiceSpec.ports"]),
    AGE,
    column("Selector", "string", DOCS["core/v1.ServiceSpec.selector"], priority=1),
)


def load_balancer_ingress(status: Obj | None) -> str:
    """loadBalancerStatusStringer (wide, as the server always prints): sorted unique IPs or hostnames."""
    found = {i.get("ip") or i.get("hostname") for i in dig(status, "ingress") or []}
    return ",".join(sorted(f for f in found if f))


def _service_external_ip(svc: Obj) -> str:
    spec = svc.get("spec") or {}
    external_ips = spec.get("externalIPs") or []
    match spec.get("type", ""):
        case "ClusterIP" | "NodePort":
            return ",".join(external_ips) or NONE
        case "LoadBalancer":
            lb = load_balancer_ingress(dig(svc, "status", "loadBalancer"))
            if external_ips:
                return ",".join(([lb] if lb else []) + external_ips)
            return lb or "<pending>"
        case "ExternalName":
            return spec.get("externalName", "")
    return "<unknown>"


def _service_cells(svc: Obj, now: datetime) -> list[Cell]:
    spec = svc.get("spec") or {}
    # The internal type always carries clusterIPs; v1 objects may only have the singular field.
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    ports = []
    for p in spec.get("ports") or []:  # makePortString: port[:nodePort]/protocol
        node_port = p.get("nodePort", 0)
        via_node = f":{node_port}" if node_port > 0 else ""
        ports.append(f"{p.get('port', 0)}{via_node}/{p.get('protocol', 'TCP')}")
    cluster_ip = cluster_ips[0] if cluster_ips else NONE
    return [name(svc), spec.get("type", ""), cluster_ip, _service_external_ip(svc), ",".join(ports) or NONE,
            age(svc, now), format_labels(spec.get("selector"))]


_ENDPOINTS_COLUMNS = (NAME, column("Endpoints", "string", DOCS["core/v1.Endpoints.subsets"]), AGE)


def _format_endpoints(ep: Obj) -> str:
    """formatEndpoints: up to three ip:port pairs, then "+ N more..."."""
    subsets = ep.get("subsets") or []
    if not subsets:
        return NONE
    limit, shown, count = 3, [], 0
    for ss in subsets:
        addresses = [a.get("ip", "") for a in ss.get("addresses") or []]
        ports = ss.get("ports") or []
        if not ports:  # headless services may have no ports
            count += len(addresses)
            shown.extend(addresses[: limit - len(shown)])
            continue
        for port in ports:
            count += len(addresses)
            shown.extend(join_host_port(ip, port.get("port", 0)) for ip in addresses[: limit - len(shown)])
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if count > limit else text


def _endpoints_cells(ep: Obj, now: datetime) -> list[Cell]:
    return [name(ep), _format_endpoints(ep), age(ep, now)]


# --- Node --------------------------------------------------------------------------------------

_NODE_COLUMNS = (
    NAME,
    column("Status", "string", "The status of the node"),
    column("Roles", "string", "The roles of the node"),
    AGE,
    column("Version", "string", DOCS["core/v1.NodeSystemInfo.kubeletVersion"]),
    column("Internal-IP", "string", DOCS["core/v1.NodeStatus.addresses"], priority=1),
    column("External-IP", "string", DOCS["core/v1.NodeStatus.addresses"], priority=1),
    column("OS-Image", "string", DOCS["core/v1.NodeSystemInfo.osImage"], priority=1),
    column("Kernel-Version", "string", DOCS["core/v1.NodeSystemInfo.kernelVersion"], priority=1),
    column("Container-Runtime", "string", DOCS["core/v1.NodeSystemInfo.containerRuntimeVersion"], priority=1),
)

_NODE_ROLE_PREFIX = "node-role.kubernetes.io/"
_NODE_ROLE_LABEL = "kubernetes.io/role"


def _node_roles(node: Obj) -> str:
    """findNodeRoles: node-role.kubernetes.io/<role> label keys and kubernetes.io/role label values."""
    roles = set()
    for key, value in (meta(node).get("labels") or {}).items():
        if key.startswith(_NODE_ROLE_PREFIX) and key[len(_NODE_ROLE_PREFIX):]:
            roles.add(key[len(_NODE_ROLE_PREFIX):])
        elif key == _NODE_ROLE_LABEL and value:
            roles.add(value)
    return ",".join(sorted(roles)) or NONE


def _node_address(node: Obj, type_: str) -> str:
    for address in dig(node, "status", "addresses") or []:
        if address.get("type") == type_:
            return address.get("address", "")
    return NONE


def _node_cells(node: Obj, now: datetime) -> list[Cell]:
    # Upstream indexes conditions by type, so the last Ready condition wins.
    ready = _condition_status(list(reversed(dig(node, "status", "conditions") or [])), "Ready")
    states = ["Unknown" if ready is None else "Ready" if ready == "True" else "NotReady"]
    if dig(node, "spec", "unschedulable"):
        states.append("SchedulingDisabled")
    info = dig(node, "status", "nodeInfo") or {}
    return [name(node), ",".join(states), _node_roles(node), age(node, now), info.get("kubeletVersion", ""),
            _node_address(node, "InternalIP"), _node_address(node, "ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


# --- Event -------------------------------------------------------------------------------------

_EVENT_COLUMNS = (
    column("Last Seen", "string", DOCS["core/v1.Event.lastTimestamp"]),
    column("Type", "string", DOCS["core/v1.Event.type"]),
    column("Reason", "string", DOCS["core/v1.Event.reason"]),
    column("Object", "string", DOCS["core/v1.Event.involvedObject"]),
    column("Subobject", "string", DOCS["core/v1.ObjectReference.fieldPath"], priority=1),
    column("Source", "string", DOCS["core/v1.Event.source"], priority=1),
    column("Message", "string", DOCS["core/v1.Event.message"]),
    column("First Seen", "string", DOCS["core/v1.Event.firstTimestamp"], priority=1),
    column("Count", "string", DOCS["core/v1.Event.count"], priority=1),
    {**NAME, "priority": 1},
)


def event_as_core(event: Obj) -> Obj:
    """The fields of an events.k8s.io/v1 Event under their core/v1 names (pkg/apis/events/v1 conversion)."""
    return {
        "metadata": event.get("metadata") or {},
        "involvedObject": event.get("regarding") or {},
        "source": event.get("deprecatedSource") or {},
        "message": event.get("note", ""),
        "firstTimestamp": event.get("deprecatedFirstTimestamp"),
        "lastTimestamp": event.get("deprecatedLastTimestamp"),
        "count": event.get("deprecatedCount", 0),
        "eventTime": event.get("eventTime"),
        "series": event.get("series"),
        "type": event.get("type", ""),
        "reason": event.get("reason", ""),
        "reportingComponent": event.get("reportingController", ""),
        "reportingInstance": event.get("reportingInstance", ""),
    }


def _event_source(event: Obj) -> str:
    """formatEventSource: component[, host], falling back to the reporting controller and instance."""
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    instance = source.get("host") or event.get("reportingInstance") or ""
    return f"{component}, {instance}" if instance else component


def _event_cells(event: Obj, now: datetime) -> list[Cell]:
    first_seen = since(event.get("firstTimestamp") or event.get("eventTime"), now)
    last_seen = since(event["lastTimestamp"], now) if event.get("lastTimestamp") else first_seen
    count = event.get("count", 0)
    series = event.get("series")
    if series is not None:
        last_seen = since(series.get("lastObservedTime"), now)
        count = series.get("count", 0)
    elif count == 0:  # singleton events of the new API carry no count
        count = 1
    involved = event.get("involvedObject") or {}
    kind = involved.get("kind", "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    return [last_seen, event.get("type", ""), event.get("reason", ""), target, involved.get("fieldPath", ""),
            _event_source(event), event.get("message", "").strip(), first_seen, count, name(event)]


def _events_v1_cells(event: Obj, now: datetime) -> list[Cell]:
    return _event_cells(event_as_core(event), now)


# --- PersistentVolume, PersistentVolumeClaim ---------------------------------------------------

_PV_COLUMNS = (
    NAME,
    column("Capacity", "string", DOCS["core/v1.PersistentVolumeSpec.capacity"]),
    column("Access Modes", "string", DOCS["core/v1.PersistentVolumeSpec.accessModes"]),
    column("Reclaim Policy", "string", DOCS["core/v1.PersistentVolumeSpec.persistentVolumeReclaimPolicy"]),
    column("Status", "string", DOCS["core/v1.PersistentVolumeStatus.phase"]),
    column("Claim", "string", DOCS["core/v1.PersistentVolumeSpec.claimRef"]),
    column("StorageClass", "string", "StorageClass of the pv"),
    column("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
    column("Reason", "string", DOCS["core/v1.PersistentVolumeStatus.reason"]),
    AGE,
    column("VolumeMode", "string", DOCS["core/v1.PersistentVolumeSpec.volumeMode"], priority=1),
)

_PVC_COLUMNS = (
    NAME,
    column("Status", "string", DOCS["core/v1.PersistentVolumeClaimStatus.phase"]),
    column("Volume", "string", DOCS["core/v1.PersistentVolumeClaimSpec.volumeName"]),
    column("Capacity", "string", DOCS["core/v1.PersistentVolumeClaimStatus.capacity"]),
    column("Access Modes", "string", DOCS["core/v1.PersistentVolumeClaimStatus.accessModes"]),
    column("StorageClass", "string", "StorageClass of the pvc"),
    column("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
    AGE,
    column("VolumeMode", "string", DOCS["core/v1.PersistentVolumeClaimSpec.volumeMode"], priority=1),
)

_ACCESS_MODES = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
                 ("ReadWriteOncePod", "RWOP"))
_BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"


def access_modes(modes: list[str] | None) -> str:
    """helper.GetAccessModesAsString: abbreviations in a fixed order, duplicates dropped."""
    present = set(modes or [])
    return ",".join(short for mode, short in _ACCESS_MODES if mode in present)


def _terminating_phase(obj: Obj) -> str:
    if meta(obj).get("deletionTimestamp") is not None:
        return "Terminating"
    return dig(obj, "status", "phase") or ""


def _pv_cells(pv: Obj, now: datetime) -> list[Cell]:
    spec = pv.get("spec") or {}
    claim = spec.get("claimRef")
    annotations = meta(pv).get("annotations") or {}
    storage_class = annotations.get(_BETA_STORAGE_CLASS, spec.get("storageClassName", ""))
    return [name(pv), quantity(dig(spec, "capacity", "storage")), access_modes(spec.get("accessModes")),
            spec.get("persistentVolumeReclaimPolicy", ""), _terminating_phase(pv),
            f"{claim.get('namespace', '')}/{claim.get('name', '')}" if claim is not None else "",
            storage_class, spec.get("volumeAttributesClassName") or UNSET, dig(pv, "status", "reason") or "",
            age(pv, now), spec.get("volumeMode") or UNSET]


def _pvc_cells(pvc: Obj, now: datetime) -> list[Cell]:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    annotations = meta(pvc).get("annotations") or {}
    storage_class = annotations.get(_BETA_STORAGE_CLASS, spec.get("storageClassName") or "")
    capacity = modes = ""
    if spec.get("volumeName"):  # capacity and modes are only meaningful once bound
        modes = access_modes(status.get("accessModes"))
        capacity = quantity(dig(status, "capacity", "storage"))
    return [name(pvc), _terminating_phase(pvc), spec.get("volumeName", ""), capacity, modes, storage_class,
            spec.get("volumeAttributesClassName") or UNSET, age(pvc, now), spec.get("volumeMode") or UNSET]


# --- ResourceQuota -----------------------------------------------------------------------------

_RESOURCE_QUOTA_COLUMNS = (
    NAME,
    column("Request", "string",
           "Request represents a minimum amount of cpu/memory that a container may consume."),
    column("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use "
           "independent of contention on the node."),
    AGE,
)


def _resource_quota_cells(quota: Obj, now: datetime) -> list[Cell]:
    hard = dig(quota, "status", "hard") or {}
    used = dig(quota, "status", "used") or {}
    requests, limits = [], []
    for resource in sorted(hard):
        pieces = resource.split(".")
        target = limits if len(pieces) > 1 and pieces[0] == "limits" else requests
        target.append(f"{resource}: {quantity(used.get(resource))}/{quantity(hard[resource])}")
    return [name(quota), ", ".join(requests), ", ".join(limits), age(quota, now)]


# --- ReplicationController, Namespace, Secret, ConfigMap, ServiceAccount -----------------------

_RC_COLUMNS = (
    NAME,
    column("Desired", "integer", DOCS["core/v1.ReplicationControllerSpec.replicas"]),
    column("Current", "integer", DOCS["core/v1.ReplicationControllerStatus.replicas"]),
    column("Ready", "integer", DOCS["core/v1.ReplicationControllerStatus.readyReplicas"]),
    AGE,
    CONTAINERS,
    IMAGES,
    column("Selector", "string", DOCS["core/v1.ReplicationControllerSpec.selector"], priority=1),
)


def _rc_cells(rc: Obj, now: datetime) -> list[Cell]:
    spec, status = rc.get("spec") or {}, rc.get("status") or {}
    return [name(rc), spec.get("replicas", 1), status.get("replicas", 0), status.get("readyReplicas", 0),
            age(rc, now), *container_cells(dig(spec, "template", "spec", "containers")),
            format_labels(spec.get("selector"))]


_NAMESPACE_COLUMNS = (NAME, column("Status", "string", "The status of the namespace"), AGE)


def _namespace_cells(ns: Obj, now: datetime) -> list[Cell]:
    return [name(ns), dig(ns, "status", "phase") or "", age(ns, now)]


_SECRET_COLUMNS = (
    NAME,
    column("Type", "string", DOCS["core/v1.Secret.type"]),
    column("Data", "string", DOCS["core/v1.Secret.data"]),
    AGE,
)


def _secret_cells(secret: Obj, now: datetime) -> list[Cell]:
    return [name(secret), secret.get("type", ""), len(secret.get("data") or {}), age(secret, now)]


_CONFIGMAP_COLUMNS = (NAME, column("Data", "string", DOCS["core/v1.ConfigMap.data"]), AGE)


def _configmap_cells(cm: Obj, now: datetime) -> list[Cell]:
    return [name(cm), len(cm.get("data") or {}) + len(cm.get("binaryData") or {}), age(cm, now)]


_SERVICE_ACCOUNT_COLUMNS = (NAME, column("Secrets", "string", DOCS["core/v1.ServiceAccount.secrets"]), AGE)


def _service_account_cells(sa: Obj, now: datetime) -> list[Cell]:
    return [name(sa), len(sa.get("secrets") or []), age(sa, now)]


# --- ComponentStatus ---------------------------------------------------------------------------------

_COMPONENT_STATUS_COLUMNS = (
    NAME,
    column("Status", "string", "Status of the component conditions"),
    column("Message", "string", "Message of the component conditions"),
    column("Error", "string", "Error of the component conditions"),
)


def _component_status_cells(component: Obj, now: datetime) -> list[Cell]:
    status, message, error = "Unknown", "", ""
    for condition in component.get("conditions") or []:
        if condition.get("type") == "Healthy":
            status = "Healthy" if condition.get("status") == "True" else "Unhealthy"
            message, error = condition.get("message", ""), condition.get("error", "")
            break
    return [name(component), status, message, error]


PRINTERS: dict[tuple[str, str, str], Printer] = {
    ("", "v1", "Pod"): Printer(_POD_COLUMNS, _pod_cells, _pod_conditions),
    ("", "v1", "Service"): Printer(_SERVICE_COLUMNS, _service_cells),
    ("", "v1", "Endpoints"): Printer(_ENDPOINTS_COLUMNS, _endpoints_cells),
    ("", "v1", "Node"): Printer(_NODE_COLUMNS, _node_cells),
    ("", "v1", "Event"): Printer(_EVENT_COLUMNS, _event_cells),
    ("events.k8s.io", "v1", "Event"): Printer(_EVENT_COLUMNS, _events_v1_cells),
    ("", "v1", "PersistentVolume"): Printer(_PV_COLUMNS, _pv_cells),
    ("", "v1", "PersistentVolumeClaim"): Printer(_PVC_COLUMNS, _pvc_cells),
    ("", "v1", "ResourceQuota"): Printer(_RESOURCE_QUOTA_COLUMNS, _resource_quota_cells),
    ("", "v1", "ReplicationController"): Printer(_RC_COLUMNS, _rc_cells),
    ("", "v1", "Namespace"): Printer(_NAMESPACE_COLUMNS, _namespace_cells),
    ("", "v1", "Secret"): Printer(_SECRET_COLUMNS, _secret_cells),
    ("", "v1", "ConfigMap"): Printer(_CONFIGMAP_COLUMNS, _configmap_cells),
    ("", "v1", "ServiceAccount"): Printer(_SERVICE_ACCOUNT_COLUMNS, _service_account_cells),
    ("", "v1", "ComponentStatus"): Printer(_COMPONENT_STATUS_COLUMNS, _component_status_cells),
}
