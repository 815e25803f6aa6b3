"""Simulated nodes, like kwok: many fake kubelets in one process, no containers.

`SimulatedNodes` registers N Node objects shaped as a real kubelet registers them, heartbeats them
(a Lease per node in kube-node-lease, plus node status reports), and plays the part of the kubelet
for the pods bound to them: Pending → Running → Ready, then, when annotations ask for it, exit and
Succeeded/Failed or a restart per restartPolicy with CrashLoopBackOff back-off, and finally graceful
deletion. Everything goes through the API client only, so the controllers and the scheduler see
exactly what a real node would show them.

Pod annotations (kwok's "stages", reduced to two knobs applied to every container of the pod):
- ``pocketkube.io/sim-run-seconds``: each container instance exits after this many seconds (whole
  seconds; absent: runs until deleted);
- ``pocketkube.io/sim-exit-code``: the exit code it exits with (default 0).

Scale: one worker pool for node registrations and heartbeats (timers on the event loop, never a task
per node), one work queue for pods, two informers (all nodes; all bound pods), one HTTP connection pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import platform
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.client.informer import Informer, object_key
from pocketkube.client.rest import APIError, Client
from pocketkube.client.workqueue import ShutDown, WorkQueue
from pocketkube.kubelet.join import join_config
from pocketkube.kubelet.status import (
    KUBELET_CONDITIONS,
    go_duration,
    micro_time,
    normalize_image,
    parse_time,
    pod_condition,
    rfc3339,
    status_changed,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

KUBELET_VERSION = "v1.37.0-pocketkube-sim"
RUNTIME_VERSION = "simulated://"
LEASE_NAMESPACE = "kube-node-lease"
RUN_SECONDS_ANNOTATION = "pocketkube.io/sim-run-seconds"
EXIT_CODE_ANNOTATION = "pocketkube.io/sim-exit-code"
# Node InternalIPs come from the benchmarking range (RFC 2544): they are only strings in the API.
NODE_IP_RANGE = ipaddress.ip_network("198.18.0.0/15")
KUBELET_PORT = 10250
MAX_BACKOFF = 300.0
# How early a timed pod sync may run, by the wall clock, and still count as that timer's sync.
WAKE_SLACK = 0.05
# Transitions computed in one sync; a guard against a pod whose timeline cannot advance.
MAX_STEPS = 1000
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass
class SimulationConfig:
    """What every simulated node looks like and how fast it acts."""

    name_prefix: str = "sim-"
    cpu: str = "32"
    memory: str = "256Gi"
    ephemeral_storage: str = "100Gi"
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Obj] = field(default_factory=list)
    # Seconds from a container's start until it reports ready.
    pod_ready_delay: float = 0.0
    lease_duration: int = 40
    lease_interval: float = 10.0
    status_interval: float = 60.0
    # A deleted pod goes after min(its grace period, this) seconds.
    delete_delay: float = 1.0
    # CrashLoopBackOff: first restart at once, then base, 2*base, … capped at 300 s (upstream: 10 s).
    restart_backoff: float = 10.0
    cluster_cidr: str = "10.42.0.0/16"
    node_cidr_mask: int = 24
    # Requests in flight at once for heartbeats/registration.
    concurrency: int = 32
    # Pods synced at once. Each waits on a status write: with a busy API server, 32 of them fall behind
    # the scheduler (10k pods on 100 nodes: Running 9 s after the last bind; 64 keep up).
    pod_workers: int = 64


# --- parsing helpers (CLI flags) ----------------------------------------------------------


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` → dict (kubelet --node-labels)."""
    labels: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"label {item!r} must look like key=value")
        labels[key] = value
    return labels


def parse_taints(text: str) -> list[Obj]:
    """``key[=value]:Effect,…`` → taints (kubelet --register-with-taints)."""
    taints: list[Obj] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        spec, sep, effect = item.rpartition(":")
        if not sep or effect not in _TAINT_EFFECTS:
            raise ValueError(f"taint {item!r} must look like key[=value]:{'|'.join(_TAINT_EFFECTS)}")
        key, _, value = spec.partition("=")
        if not key:
            raise ValueError(f"taint {item!r} has no key")
        taint: Obj = {"key": key, "effect": effect}
        if value:
            taint["value"] = value
        taints.append(taint)
    return taints


# --- pod status: the kubelet's view of a simulated pod -------------------------------------


def _container_id(uid: str, name: str, instance: int) -> str:
    return RUNTIME_VERSION + hashlib.sha256(f"{uid}/{name}/{instance}".encode()).hexdigest()


def _backoff(restarts: int, base: float) -> float:
    """Delay before restart number restarts+1: none for the first (as the kubelet's back-off), then doubling."""
    if restarts <= 0:
        return 0.0
    return float(min(math.ceil(base) * 2 ** (restarts - 1), MAX_BACKOFF))


def _restarts(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def _terminated(code: int, started: float, finished: float, container_id: str) -> Obj:
    return {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": rfc3339(started),
            "finishedAt": rfc3339(finished), "containerID": container_id}


def _volume_mounts(container: Obj) -> list[Obj]:
    mounts = []
    for m in container.get("volumeMounts") or []:
        mount: Obj = {"name": m.get("name"), "mountPath": m.get("mountPath")}
        if m.get("readOnly"):
            mount["readOnly"] = True
            mount["recursiveReadOnly"] = "Disabled"
        mounts.append(mount)
    return mounts


@dataclass
class PodTimeline:
    """Per-pod simulation parameters read from the pod and the agent's configuration."""

    run_seconds: float | None
    exit_code: int
    policy: str
    ready_delay: float
    backoff: float

    @classmethod
    def of(cls, pod: Obj, config: SimulationConfig) -> PodTimeline:
        annotations = pod["metadata"].get("annotations") or {}
        run: float | None = None
        try:
            run = max(0.0, float(math.ceil(float(annotations[RUN_SECONDS_ANNOTATION]))))
        except (KeyError, ValueError):
            run = None
        try:
            code = int(annotations.get(EXIT_CODE_ANNOTATION, "0"))
        except ValueError:
            code = 1
        return cls(run, code, (pod.get("spec") or {}).get("restartPolicy") or "Always", config.pod_ready_delay,
                   max(config.restart_backoff, 0.001))


def _fresh_container(pod: Obj, container: Obj, started: float) -> Obj:
    return {"name": container["name"], "state": {"running": {"startedAt": rfc3339(started)}}, "lastState": {},
            "ready": False, "restartCount": 0, "image": normalize_image(container.get("image", "")),
            "imageID": normalize_image(container.get("image", "")),
            "containerID": _container_id(pod["metadata"].get("uid", ""), container["name"], 0), "started": True,
            "volumeMounts": _volume_mounts(container)}


def _advance(pod: Obj, status: Obj, now: float, tl: PodTimeline, wake: list[float]) -> Obj:
    """Play the container's timeline forward to `now`: exits, back-offs and restarts."""
    cs = {**status}
    meta = pod["metadata"]
    for _ in range(MAX_STEPS):
        state = cs.get("state") or {}
        if "running" in state:
            if tl.run_seconds is None:
                break
            started = parse_time(state["running"].get("startedAt")) or now
            end = started + tl.run_seconds
            if now < end:
                wake.append(end)
                break
            term = _terminated(tl.exit_code, started, end, cs.get("containerID", ""))
            cs["ready"] = False
            if not _restarts(tl.policy, tl.exit_code):
                cs["state"] = {"terminated": term}
                cs["started"] = False
                break
            cs["lastState"] = {"terminated": term}
            delay = _backoff(cs.get("restartCount", 0), tl.backoff)
            if delay == 0:
                cs = _restart(meta, cs, end)
                continue
            cs["state"] = {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {go_duration(delay)} restarting failed container={cs['name']} "
                           f"pod={meta['name']}_{meta.get('namespace', '')}({meta.get('uid', '')})"}}
            cs["started"] = False
        elif (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            finished = parse_time(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")) or now
            due = finished + _backoff(cs.get("restartCount", 0), tl.backoff)
            if now < due:
                wake.append(due)
                break
            cs = _restart(meta, cs, due)
        else:
            break
    return cs


def _restart(meta: Obj, cs: Obj, at: float) -> Obj:
    count = cs.get("restartCount", 0) + 1
    return {**cs, "state": {"running": {"startedAt": rfc3339(at)}}, "restartCount": count, "started": True,
            "ready": False, "containerID": _container_id(meta.get("uid", ""), cs["name"], count)}


def _phase(spec: Obj, statuses: list[Obj], terminal: bool) -> str:
    """kubelet getPhase for a pod whose containers have all been created."""
    terminated = [s["state"]["terminated"] for s in statuses if "terminated" in (s.get("state") or {})]
    if len(terminated) < len(statuses):
        return "Running"
    if terminal or (spec.get("restartPolicy") or "Always") != "Always":
        return "Failed" if any(t.get("exitCode") for t in terminated) else "Succeeded"
    return "Running"


def desired_pod_status(pod: Obj, now: float, host_ip: str, pod_ip: str, config: SimulationConfig,
                       *, stopping: bool = False) -> tuple[Obj, float | None]:
    """The status the kubelet would report now, and when it will next change by itself (or None).

    `stopping`: the pod is being deleted, so every container is stopped (exit 0) at `now`.
    """
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    meta = pod["metadata"]
    tl = PodTimeline.of(pod, config)
    wake: list[float] = []
    start = parse_time(status.get("startTime")) or now
    old = {c["name"]: c for c in status.get("containerStatuses") or []}
    statuses = []
    for c in spec.get("containers") or []:
        cs = old.get(c["name"]) or _fresh_container(pod, c, start)
        cs = _advance(pod, cs, now, tl, wake)
        statuses.append(cs)

    old_init = {c["name"]: c for c in status.get("initContainerStatuses") or []}
    init_statuses = []
    sidecars = []
    for c in spec.get("initContainers") or []:
        cs = old_init.get(c["name"])
        if c.get("restartPolicy") == "Always":  # a native sidecar: started first, runs alongside the app
            cs = cs or _fresh_container(pod, c, start)
            sidecars.append(cs)
        elif cs is None:  # plain init containers finish at once in a simulation
            cs = {**_fresh_container(pod, c, start), "started": False,
                  "state": {"terminated": {**_terminated(0, start, start, _container_id(meta.get("uid", ""),
                                                                                         c["name"], 0))}}}
        init_statuses.append(cs)

    phase = _phase(spec, statuses, stopping)
    terminal = phase in ("Succeeded", "Failed")
    if stopping or terminal:
        # The pod is finished (or being torn down): whatever still runs is stopped now.
        for group in (statuses, init_statuses):
            for i, cs in enumerate(group):
                running = (cs.get("state") or {}).get("running")
                if running is not None or (stopping and "waiting" in (cs.get("state") or {})):
                    started = parse_time((running or {}).get("startedAt")) or now
                    group[i] = {**cs, "state": {"terminated": _terminated(0, started, now, cs.get("containerID",
                                                                                                    ""))},
                                "ready": False, "started": False}
        phase = _phase(spec, statuses, True)
        terminal = True
        wake.clear()
    else:
        for cs in (*statuses, *sidecars):
            running = (cs.get("state") or {}).get("running")
            ready_at = (parse_time(running.get("startedAt")) or now) + tl.ready_delay if running else None
            cs["ready"] = ready_at is not None and now >= ready_at
            if ready_at is not None and not cs["ready"]:
                wake.append(ready_at)

    generation = meta.get("generation")
    old_conditions = {c.get("type"): c for c in status.get("conditions") or []}
    unready = [c["name"] for c in (*sidecars, *statuses) if not c.get("ready")]
    if terminal:
        reason = "PodFailed" if phase == "Failed" else "PodCompleted"
        containers_ready = pod_condition(old_conditions, "ContainersReady", "False", now, generation, reason)
        ready = pod_condition(old_conditions, "Ready", "False", now, generation, reason)
    elif unready:
        message = f"containers with unready status: [{' '.join(unready)}]"
        containers_ready = pod_condition(old_conditions, "ContainersReady", "False", now, generation,
                                      "ContainersNotReady", message)
        ready = pod_condition(old_conditions, "Ready", "False", now, generation, "ContainersNotReady", message)
    else:
        containers_ready = pod_condition(old_conditions, "ContainersReady", "True", now, generation)
        ready = pod_condition(old_conditions, "Ready", "True", now, generation)
        missing = [g["conditionType"] for g in spec.get("readinessGates") or []
                   if (old_conditions.get(g.get("conditionType")) or {}).get("status") != "True"]
        if missing:
            ready = pod_condition(old_conditions, "Ready", "False", now, generation, "ReadinessGatesNotReady",
                               f'corresponding condition of pod readiness gate "{missing[0]}" does not exist.')
    conditions = [
        pod_condition(old_conditions, "PodReadyToStartContainers", "False" if terminal else "True", now, generation),
        pod_condition(old_conditions, "Initialized", "True", now, generation),
        ready, containers_ready,
    ]
    conditions += [c for c in status.get("conditions") or [] if c.get("type") not in KUBELET_CONDITIONS]

    desired: Obj = {"phase": phase, "conditions": conditions, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                    "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": rfc3339(start),
                    "containerStatuses": statuses}
    if init_statuses:
        desired["initContainerStatuses"] = init_statuses
    if generation is not None:
        desired["observedGeneration"] = generation
    return desired, (min(wake) if wake else None)


# --- nodes --------------------------------------------------------------------------------


@dataclass
class SimNode:
    name: str
    slot: int
    pod_cidr: str
    ip: str
    uid: str = ""
    lease: Obj | None = None
    paused: bool = False
    removed: bool = False
    status_queued: bool = False
    status_timer: asyncio.TimerHandle | None = None
    lease_timer: asyncio.TimerHandle | None = None
    pod_ips: dict[str, str] = field(default_factory=dict)  # pod key -> IP

    def claim_ip(self, key: str, ip: str = "") -> str:
        """The pod's IP from this node's podCIDR (skipping the network and gateway addresses)."""
        if key in self.pod_ips:
            return self.pod_ips[key]
        used = set(self.pod_ips.values())
        if not ip or ip in used:
            network = ipaddress.ip_network(self.pod_cidr)
            ip = next((str(a) for i, a in enumerate(network.hosts()) if i > 0 and str(a) not in used), "")
            if not ip:
                raise RuntimeError(f"node {self.name}: no pod IP left in {self.pod_cidr}")
        self.pod_ips[key] = ip
        return ip


def _arch() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine or "amd64")


class SimulatedNodes:
    """N simulated nodes driven by one client. `run(stop)` until `stop` is set; `ready` once all registered."""

    def __init__(self, client: Client, count: int, config: SimulationConfig | None = None) -> None:
        self.client = client
        self.count = count
        self.config = config or SimulationConfig()
        catalog = ResourceCatalog()

        def info(group: str, plural: str) -> ResourceInfo:
            found = catalog.resource(group, "v1", plural)
            assert found is not None
            return found

        self.nodes_info = info("", "nodes")
        self.pods_info = info("", "pods")
        self.leases_info = info("coordination.k8s.io", "leases")
        self.names = [f"{self.config.name_prefix}{i}" for i in range(count)]
        self.nodes: dict[str, SimNode] = {}
        self.ready = asyncio.Event()
        self.registered = 0
        self._jobs: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._pod_queue = WorkQueue(base_delay=0.05, max_delay=10.0)
        self._wakes: dict[str, float] = {}  # pod key -> wall-clock time of its pending timed sync
        self._node_informer = Informer(client, self.nodes_info)
        self._pod_informer = Informer(client, self.pods_info, field_selector="spec.nodeName!=")
        self._arch = _arch()
        self._kernel = platform.release()

    # --- public controls -------------------------------------------------------------
    def pause(self, name: str) -> None:
        """Simulate a dead or cut-off kubelet: no Lease renewals, no status, pods left as they are."""
        node = self.nodes[name]
        node.paused = True
        for timer in (node.lease_timer, node.status_timer):
            if timer is not None:
                timer.cancel()

    def resume(self, name: str) -> None:
        """The kubelet is back: heartbeat and report at once, and look at its pods again."""
        node = self.nodes[name]
        node.paused = False
        self._jobs.put_nowait(("lease", name))
        self._queue_status(node)
        for pod in self._pod_informer.store.by_index("node", name):
            self._pod_queue.add(object_key(pod))

    # --- main loop -------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        tasks: list[asyncio.Task[Any]] = []
        try:
            self._node_informer.add_handler(on_update=self._on_node_update, on_delete=self._on_node_delete)
            tasks.append(asyncio.create_task(self._node_informer.run(), name="sim-node-informer"))
            await self._node_informer.synced.wait()
            self._plan_nodes()
            tasks += [asyncio.create_task(self._job_worker(), name=f"sim-heartbeat-{i}")
                      for i in range(self.config.concurrency)]
            for name in self.names:
                self._jobs.put_nowait(("register", name))
            self._pod_informer.add_handler(on_add=self._on_pod, on_update=lambda _old, new: self._on_pod(new),
                                           on_delete=self._on_pod_delete)
            tasks.append(asyncio.create_task(self._pod_informer.run(), name="sim-pod-informer"))
            tasks += [asyncio.create_task(self._pod_worker(), name=f"sim-pod-{i}")
                      for i in range(self.config.pod_workers)]
            await stop.wait()
        finally:
            self._pod_queue.shutdown()
            for node in self.nodes.values():
                for timer in (node.lease_timer, node.status_timer):
                    if timer is not None:
                        timer.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _plan_nodes(self) -> None:
        """Give each node its podCIDR and InternalIP: kept when the Node exists, else the first free slot."""
        network = ipaddress.ip_network(self.config.cluster_cidr)
        if self.config.node_cidr_mask < network.prefixlen:
            raise ValueError(f"node CIDR mask /{self.config.node_cidr_mask} is larger than {network}")
        step = 2 ** (network.max_prefixlen - self.config.node_cidr_mask)
        capacity = 2 ** (self.config.node_cidr_mask - network.prefixlen)
        used: set[int] = set()
        existing: dict[str, Obj] = {}
        for node in self._node_informer.store.list():
            existing[node["metadata"]["name"]] = node
            slot = self._slot_of(node, network, step)
            if slot is not None:
                used.add(slot)
        free = (s for s in range(capacity) if s not in used)
        for name in self.names:
            node = existing.get(name)
            slot = self._slot_of(node, network, step) if node else None
            if slot is None:
                slot = next(free, None)
                if slot is None:
                    raise ValueError(f"{network} has no /{self.config.node_cidr_mask} left for node {name}; "
                                     f"use a larger cluster CIDR (e.g. 10.64.0.0/10) or a longer mask")
            pod_cidr = ((node or {}).get("spec") or {}).get("podCIDR") or \
                f"{network.network_address + slot * step}/{self.config.node_cidr_mask}"
            ip = next((a.get("address") for a in ((node or {}).get("status") or {}).get("addresses") or []
                       if a.get("type") == "InternalIP"), None) or str(NODE_IP_RANGE.network_address + slot + 1)
            self.nodes[name] = SimNode(name, slot, pod_cidr, ip)

    @staticmethod
    def _slot_of(node: Obj | None, network: ipaddress.IPv4Network | ipaddress.IPv6Network, step: int) -> int | None:
        cidr = ((node or {}).get("spec") or {}).get("podCIDR")
        if not cidr:
            return None
        try:
            subnet = ipaddress.ip_network(cidr)
        except ValueError:
            return None
        if subnet.version != network.version or not subnet.subnet_of(network):  # type: ignore[arg-type]
            return None
        return (int(subnet.network_address) - int(network.network_address)) // step

    # --- heartbeats ------------------------------------------------------------------
    async def _job_worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            kind, name = await self._jobs.get()
            node = self.nodes.get(name)
            if node is None or node.removed or (node.paused and kind != "register"):
                continue
            try:
                if kind == "register":
                    await self._register(node)
                elif kind == "lease":
                    await self._renew_lease(node)
                    node.lease_timer = loop.call_later(self.config.lease_interval, self._jobs.put_nowait,
                                                       ("lease", name))
                else:
                    node.status_queued = False
                    await self._report_status(node)
                    self._schedule_status(node)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the API may be briefly unavailable: retry this job soon
                if isinstance(err, APIError) and err.not_found and kind == "status":
                    self._forget(name)
                    continue
                log.warning("simulated node %s: %s failed: %s", name, kind, err)
                if kind == "status":
                    node.status_queued = False
                    self._schedule_status(node, 1.0)
                else:
                    timer = loop.call_later(1.0, self._jobs.put_nowait, (kind, name))
                    if kind == "lease":
                        node.lease_timer = timer

    def _schedule_status(self, node: SimNode, delay: float | None = None) -> None:
        if node.status_timer is not None:
            node.status_timer.cancel()
        node.status_timer = asyncio.get_running_loop().call_later(
            self.config.status_interval if delay is None else delay, self._queue_status, node)

    def _queue_status(self, node: SimNode) -> None:
        if not node.status_queued and not node.removed:
            node.status_queued = True
            self._jobs.put_nowait(("status", node.name))

    def _node_object(self, node: SimNode, now: float) -> Obj:
        cfg = self.config
        labels = {"beta.kubernetes.io/arch": self._arch, "beta.kubernetes.io/os": "linux",
                  "kubernetes.io/arch": self._arch, "kubernetes.io/hostname": node.name,
                  "kubernetes.io/os": "linux", "type": "simulated", **cfg.labels}
        capacity = {"cpu": cfg.cpu, "ephemeral-storage": cfg.ephemeral_storage, "hugepages-1Gi": "0",
                    "hugepages-2Mi": "0", "memory": cfg.memory, "pods": str(cfg.pods)}
        ident = uuid.uuid5(uuid.NAMESPACE_DNS, f"{node.name}.pocketkube-sim")
        spec: Obj = {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]}
        if cfg.taints:
            spec["taints"] = [dict(t) for t in cfg.taints]
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": labels,
                         "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": spec,
            "status": {
                "capacity": capacity, "allocatable": dict(capacity),
                "conditions": self._conditions(None, now),
                "addresses": [{"type": "InternalIP", "address": node.ip}, {"type": "Hostname", "address": node.name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
                "nodeInfo": {"machineID": ident.hex, "systemUUID": str(ident), "bootID": str(uuid.uuid4()),
                             "kernelVersion": self._kernel, "osImage": "pocketkube simulated node",
                             "containerRuntimeVersion": RUNTIME_VERSION, "kubeletVersion": KUBELET_VERSION,
                             "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": self._arch},
            },
        }

    @staticmethod
    def _conditions(observed: Obj | None, now: float) -> list[Obj]:
        """The healthy conditions, keeping transition times that did not change (and foreign conditions)."""
        wanted = (("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                  ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                  ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                  ("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
        old = {c.get("type"): c for c in ((observed or {}).get("status") or {}).get("conditions") or []}
        stamp = rfc3339(now)
        conditions = []
        for ctype, status, reason, message in wanted:
            prior = old.pop(ctype, None)
            changed = prior is None or prior.get("status") != status
            conditions.append({"type": ctype, "status": status, "lastHeartbeatTime": stamp,
                               "lastTransitionTime": stamp if changed else prior.get("lastTransitionTime", stamp),
                               "reason": reason, "message": message})
        return conditions + list(old.values())

    async def _register(self, node: SimNode) -> None:
        loop = asyncio.get_running_loop()
        now = time.time()
        try:
            created = await self.client.create(self.nodes_info, self._node_object(node, now))
        except APIError as err:
            if not err.already_exists:
                raise
            # Re-registration (agent restart): keep the Node, refresh labels and report healthy status.
            wanted = self._node_object(node, now)
            created = await self.client.patch(self.nodes_info, node.name,
                                              {"metadata": {"labels": wanted["metadata"]["labels"]}})
            await self._report_status(node, created)
        node.uid = created["metadata"]["uid"]
        await self._renew_lease(node)
        # Spread later heartbeats over the interval so N nodes never renew in lock step.
        node.lease_timer = loop.call_later(self.config.lease_interval, self._jobs.put_nowait, ("lease", node.name))
        self._schedule_status(node, self.config.status_interval * (0.5 + (node.slot % 97) / 194))
        self.registered += 1
        if self.registered >= self.count:
            self.ready.set()

    async def _renew_lease(self, node: SimNode) -> None:
        now = micro_time(time.time())
        lease = node.lease
        if lease is not None:
            lease = {**lease, "spec": {**lease["spec"], "renewTime": now}}
            try:
                node.lease = await self.client.update(self.leases_info, lease)
                return
            except APIError as err:
                if not (err.conflict or err.not_found):
                    raise
        try:
            current = await self.client.get(self.leases_info, node.name, LEASE_NAMESPACE)
        except APIError as err:
            if not err.not_found:
                raise
            node.lease = await self.client.create(self.leases_info, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node.name, "namespace": LEASE_NAMESPACE, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid}]},
                "spec": {"holderIdentity": node.name, "leaseDurationSeconds": self.config.lease_duration,
                         "renewTime": now}})
            return
        current["spec"] = {**(current.get("spec") or {}), "holderIdentity": node.name,
                           "leaseDurationSeconds": self.config.lease_duration, "renewTime": now}
        node.lease = await self.client.update(self.leases_info, current)

    async def _report_status(self, node: SimNode, observed: Obj | None = None) -> None:
        observed = observed or self._node_informer.store.get(node.name)
        await self.client.patch(self.nodes_info, node.name,
                                {"status": {"conditions": self._conditions(observed, time.time())}},
                                subresource="status")

    def _on_node_update(self, _old: Obj, new: Obj) -> None:
        node = self.nodes.get(new["metadata"]["name"])
        if node is None or node.paused or not node.uid:
            return
        # Someone (the node lifecycle controller) changed our conditions: report the truth at once.
        conditions = {c.get("type"): c.get("status") for c in (new.get("status") or {}).get("conditions") or []}
        if conditions.get("Ready") != "True" or any(conditions.get(t) != "False" for t in
                                                    ("MemoryPressure", "DiskPressure", "PIDPressure")):
            self._queue_status(node)

    def _on_node_delete(self, obj: Obj) -> None:
        node = self.nodes.get(obj["metadata"]["name"])
        # Only a Node we registered and that is really gone; a kubelet does not re-register it by itself.
        if node is not None and node.uid and node.uid == obj["metadata"].get("uid"):
            self._forget(node.name)

    def _forget(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        node.removed = True
        for timer in (node.lease_timer, node.status_timer):
            if timer is not None:
                timer.cancel()

    # --- pods ------------------------------------------------------------------------
    def _on_pod(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName") in self.nodes:
            self._pod_queue.add(object_key(pod))

    def _on_pod_delete(self, pod: Obj) -> None:
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName", ""))
        if node is not None:
            node.pod_ips.pop(object_key(pod), None)
        self._wakes.pop(object_key(pod), None)

    async def _pod_worker(self) -> None:
        while True:
            try:
                key = await self._pod_queue.get()
            except ShutDown:
                return
            try:
                await self._sync_pod(str(key))
                self._pod_queue.forget(key)
            except asyncio.CancelledError:
                raise
            except APIError as err:
                if not err.not_found:
                    log.log(logging.DEBUG if err.conflict else logging.WARNING, "simulated pod %s: %s", key, err)
                    self._pod_queue.add_rate_limited(key)
            except Exception:
                log.exception("simulated pod %s: sync failed", key)
                self._pod_queue.add_rate_limited(key)
            finally:
                self._pod_queue.done(key)

    async def _sync_pod(self, key: str) -> None:
        now = time.time()
        self._clear_due_wake(key, now)
        pod = self._pod_informer.store.get(key)
        if pod is None:
            return
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName", ""))
        if node is None or node.paused or node.removed or not node.uid:
            return
        meta = pod["metadata"]
        status = pod.get("status") or {}
        if (pod.get("spec") or {}).get("hostNetwork"):
            pod_ip = node.ip
        else:
            pod_ip = node.claim_ip(key, status.get("podIP", ""))
        if meta.get("deletionTimestamp"):
            await self._finish_deleted(pod, node, pod_ip, now)
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            return  # terminal pods never run again
        desired, wake = desired_pod_status(pod, now, node.ip, pod_ip, self.config)
        if status_changed(pod, desired):
            await self.client.patch(self.pods_info, meta["name"],
                                    {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": desired},
                                    meta["namespace"], subresource="status")
        if wake is not None:
            # Timestamps have whole seconds: look again just after the moment things change.
            self._look_again(key, wake + 0.05)

    def _clear_due_wake(self, key: str, now: float) -> None:
        """Forget a timed sync that is due: this sync is it. The queue's timers run on the monotonic clock and
        may fire a little before the wall clock reaches `when`; kept, such a wake would look still pending and
        swallow the next one (a deleted pod then stayed Terminating for good)."""
        if self._wakes.get(key, math.inf) <= now + WAKE_SLACK:
            del self._wakes[key]

    def _look_again(self, key: str, when: float) -> None:
        """Sync the pod at wall-clock `when`; one pending timer per pod however many events come first."""
        now = time.time()
        pending = self._wakes.get(key)
        if pending is not None and now < pending <= when:
            return
        self._wakes[key] = when
        self._pod_queue.add_after(key, max(when - now, 0.0))

    async def _finish_deleted(self, pod: Obj, node: SimNode, pod_ip: str, now: float) -> None:
        meta = pod["metadata"]
        grace = float(meta.get("deletionGracePeriodSeconds") or 0)
        deadline = parse_time(meta["deletionTimestamp"]) or now
        due = deadline - grace + min(grace, self.config.delete_delay)
        if now < due:
            self._look_again(object_key(pod), due)
            return
        status = pod.get("status") or {}
        if status.get("containerStatuses") and status.get("phase") not in ("Succeeded", "Failed"):
            desired, _ = desired_pod_status(pod, now, node.ip, pod_ip, self.config, stopping=True)
            await self.client.patch(self.pods_info, meta["name"],
                                    {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": desired},
                                    meta["namespace"], subresource="status")
        # As the kubelet's status manager: the containers are gone, so the API object may go now.
        await self.client.delete(self.pods_info, meta["name"], meta["namespace"], grace_period_seconds=0,
                                 preconditions={"uid": meta["uid"]})


async def run_simulated_agent(server: str, token: str, count: int, config: SimulationConfig, stop: asyncio.Event,
                              data_dir: Path | None = None) -> None:
    """`pocketkube agent --simulate N`: join with the node token, then run the nodes until `stop`."""
    client_config = await join_config(server, token, data_dir)
    async with Client(client_config, user_agent=f"pocketkube-agent/{KUBELET_VERSION} (simulated)") as client:
        nodes = SimulatedNodes(client, count, config)
        runner = asyncio.create_task(nodes.run(stop), name="simulated-nodes")
        ready = asyncio.create_task(nodes.ready.wait())
        await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if nodes.ready.is_set():
            log.info("%d simulated nodes registered (%s0…%s%d)", count, config.name_prefix, config.name_prefix,
                     count - 1)
        ready.cancel()
        await runner
