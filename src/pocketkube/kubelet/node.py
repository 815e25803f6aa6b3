"""The Node object a kubelet registers and keeps current: capacity and allocatable from this machine,
addresses, nodeInfo, labels, a podCIDR, conditions from real readings, and the Lease heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import platform
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketkube import KUBERNETES_VERSION
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client
from pocketkube.kubelet.status import micro_time, rfc3339

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_CATALOG = ResourceCatalog()
NODES = _CATALOG.resource("", "v1", "nodes")
LEASES = _CATALOG.resource("coordination.k8s.io", "v1", "leases")
assert NODES is not None and LEASES is not None

KUBELET_VERSION = KUBERNETES_VERSION
LEASE_NAMESPACE = "kube-node-lease"
DEFAULT_MAX_PODS = 110
# upstream's default hard eviction thresholds, which allocatable also subtracts
EVICTION_MEMORY_AVAILABLE = 100 * 1024 * 1024
EVICTION_NODEFS_AVAILABLE = 0.10
EVICTION_NODEFS_INODES_FREE = 0.05
# upstream sets no PID threshold by default; a node with fewer free PIDs than this reports pressure
PID_AVAILABLE_FRACTION = 0.05
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def arch() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine or "amd64")


def default_node_ip() -> str:
    """The address the host uses to reach the outside (the default route's source), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: a UDP connect sends nothing, it only picks a route
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def default_node_name() -> str:
    return socket.gethostname().lower()


# --- readings -----------------------------------------------------------------------------


def _meminfo() -> dict[str, int]:
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    return values


@dataclass
class Readings:
    memory_total: int
    memory_available: int
    fs_total: int
    fs_available: int
    inodes_total: int
    inodes_free: int
    pids_used: int
    pid_max: int

    @classmethod
    def take(cls, data_dir: Path) -> Readings:
        memory = _meminfo()
        fs = os.statvfs(data_dir)
        with open("/proc/loadavg") as f:
            threads = int(f.read().split()[3].split("/")[1])
        with open("/proc/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
        return cls(memory["MemTotal"], memory.get("MemAvailable", memory["MemFree"]), fs.f_blocks * fs.f_frsize,
                   fs.f_bavail * fs.f_frsize, fs.f_files, fs.f_favail, threads, pid_max)

    @property
    def memory_pressure(self) -> bool:
        return self.memory_available < EVICTION_MEMORY_AVAILABLE

    @property
    def disk_pressure(self) -> bool:
        low_space = self.fs_available < self.fs_total * EVICTION_NODEFS_AVAILABLE
        low_inodes = self.inodes_total > 0 and self.inodes_free < self.inodes_total * EVICTION_NODEFS_INODES_FREE
        return low_space or low_inodes

    @property
    def pid_pressure(self) -> bool:
        return self.pid_max - self.pids_used < self.pid_max * PID_AVAILABLE_FRACTION


def capacity(readings: Readings, max_pods: int) -> dict[str, str]:
    return {"cpu": str(os.cpu_count() or 1), "ephemeral-storage": f"{readings.fs_total // 1024}Ki",
            "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": f"{readings.memory_total // 1024}Ki",
            "pods": str(max_pods)}


def allocatable(readings: Readings, max_pods: int) -> dict[str, str]:
    """Capacity minus the hard eviction thresholds (no kube/system reservations are configured)."""
    memory = max(readings.memory_total - EVICTION_MEMORY_AVAILABLE, 0)
    storage = int(readings.fs_total * (1 - EVICTION_NODEFS_AVAILABLE))
    return {**capacity(readings, max_pods), "ephemeral-storage": str(storage), "memory": f"{memory // 1024}Ki"}


_CONDITIONS = (
    ("MemoryPressure", "memory_pressure", ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
     ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available")),
    ("DiskPressure", "disk_pressure", ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
     ("KubeletHasDiskPressure", "kubelet has disk pressure")),
    ("PIDPressure", "pid_pressure", ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
     ("KubeletHasInsufficientPID", "kubelet has insufficient PID available")),
)


def conditions(readings: Readings, not_ready: str, observed: list[Obj], now: float) -> list[Obj]:
    """The four kubelet conditions; transition times kept while a status does not change."""
    old = {c.get("type"): c for c in observed}
    stamp = rfc3339(now)
    wanted = []
    for ctype, attribute, healthy, pressured in _CONDITIONS:
        pressure = getattr(readings, attribute)
        reason, message = pressured if pressure else healthy
        wanted.append((ctype, "True" if pressure else "False", reason, message))
    if not_ready:
        wanted.append(("Ready", "False", "KubeletNotReady", not_ready))
    else:
        wanted.append(("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
    result = []
    for ctype, status, reason, message in wanted:
        prior = old.pop(ctype, None)
        changed = prior is None or prior.get("status") != status
        result.append({"type": ctype, "status": status, "lastHeartbeatTime": stamp,
                       "lastTransitionTime": stamp if changed else prior.get("lastTransitionTime", stamp),
                       "reason": reason, "message": message})
    return result + list(old.values())


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        key, _, value = line.partition("=")
        if key == "PRETTY_NAME":
            return value.strip().strip('"')
    return "Linux"


def node_info(runtime_version: str) -> Obj:
    machine_id = _read("/etc/machine-id") or uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname()).hex
    system_uuid = _read("/sys/class/dmi/id/product_uuid") or str(uuid.UUID(machine_id))
    return {"machineID": machine_id, "systemUUID": system_uuid, "bootID": _read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": platform.release(), "osImage": os_image(), "containerRuntimeVersion": runtime_version,
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": arch()}


def free_pod_cidr(nodes: list[Obj], cluster_cidr: str, mask: int) -> str:
    """The first /mask of the cluster CIDR no other node has (what the node IPAM controller would pick)."""
    network = ipaddress.ip_network(cluster_cidr)
    if mask < network.prefixlen:
        raise ValueError(f"node CIDR mask /{mask} is larger than the cluster CIDR {network}")
    taken = set()
    for node in nodes:
        for cidr in (node.get("spec") or {}).get("podCIDRs") or [(node.get("spec") or {}).get("podCIDR")]:
            if cidr:
                with_prefix = ipaddress.ip_network(cidr, strict=False)
                if with_prefix.version == network.version:
                    taken.add(with_prefix)
    for subnet in network.subnets(new_prefix=mask):
        if not any(subnet.overlaps(other) for other in taken):
            return str(subnet)
    raise ValueError(f"the cluster CIDR {network} has no /{mask} left for another node")


@dataclass
class NodeConfig:
    name: str
    ip: str
    data_dir: Path
    kubelet_port: int
    runtime_version: str
    cluster_cidr: str = "10.42.0.0/16"
    node_cidr_mask: int = 24
    max_pods: int = DEFAULT_MAX_PODS
    labels: dict[str, str] = field(default_factory=dict)
    control_plane: bool = False
    lease_duration: int = 40
    lease_interval: float = 10.0
    status_interval: float = 60.0


class NodeStatus:
    """Registration, the Lease heartbeat and status reports of one real node."""

    def __init__(self, client: Client, config: NodeConfig) -> None:
        self.client = client
        self.config = config
        self.uid = ""
        self.pod_cidr = ""
        self.not_ready = ""          # why the node is not Ready ("" when it is)
        self.readings = Readings.take(config.data_dir)
        self._lease: Obj | None = None
        self._conditions: list[Obj] = []
        self._reported = 0.0

    def node_object(self, now: float) -> Obj:
        cfg = self.config
        labels = {"beta.kubernetes.io/arch": arch(), "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": arch(),
                  "kubernetes.io/hostname": cfg.name, "kubernetes.io/os": "linux", **cfg.labels}
        if cfg.control_plane:
            labels["node-role.kubernetes.io/control-plane"] = "true"
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": cfg.name, "labels": labels,
                         "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true",
                                         "node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {},
            "status": self.status(now),
        }

    def status(self, now: float) -> Obj:
        cfg = self.config
        self._conditions = conditions(self.readings, self.not_ready, self._conditions, now)
        return {
            "capacity": capacity(self.readings, cfg.max_pods),
            "allocatable": allocatable(self.readings, cfg.max_pods),
            "conditions": self._conditions,
            "addresses": [{"type": "InternalIP", "address": cfg.ip}, {"type": "Hostname", "address": cfg.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
            "nodeInfo": node_info(cfg.runtime_version),
            # the runtime honours supplementalGroupsPolicy (Strict), so the scheduler may place such pods here
            "features": {"supplementalGroupsPolicy": True},
        }

    async def register(self) -> Obj:
        """Create the Node (or take over an existing one of that name), and make sure it has a podCIDR."""
        now = time.time()
        wanted = self.node_object(now)
        try:
            node = await self.client.create(NODES, wanted)
        except APIError as err:
            if not err.already_exists:
                raise
            existing = await self.client.get(NODES, self.config.name)
            self._conditions = (existing.get("status") or {}).get("conditions") or []
            node = await self.client.patch(NODES, self.config.name, {"metadata": {
                "labels": wanted["metadata"]["labels"], "annotations": wanted["metadata"]["annotations"]}})
            node = await self.client.patch(NODES, self.config.name, {"status": self.status(now)},
                                           subresource="status")
        self.uid = node["metadata"]["uid"]
        self.pod_cidr = (node.get("spec") or {}).get("podCIDR") or ""
        if not self.pod_cidr:
            others = (await self.client.list(NODES)).get("items") or []
            cidr = free_pod_cidr([n for n in others if n["metadata"]["name"] != self.config.name],
                                 self.config.cluster_cidr, self.config.node_cidr_mask)
            node = await self.client.patch(NODES, self.config.name, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
            self.pod_cidr = cidr
        self._reported = time.monotonic()
        await self.renew_lease()
        return node

    async def renew_lease(self) -> None:
        now = micro_time(time.time())
        name = self.config.name
        if self._lease is not None:
            lease = {**self._lease, "spec": {**self._lease["spec"], "renewTime": now}}
            try:
                self._lease = await self.client.update(LEASES, lease)
                return
            except APIError as err:
                if not (err.conflict or err.not_found):
                    raise
        spec = {"holderIdentity": name, "leaseDurationSeconds": self.config.lease_duration, "renewTime": now}
        try:
            current = await self.client.get(LEASES, name, LEASE_NAMESPACE)
        except APIError as err:
            if not err.not_found:
                raise
            self._lease = await self.client.create(LEASES, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.uid}]},
                "spec": spec})
            return
        current["spec"] = {**(current.get("spec") or {}), **spec}
        self._lease = await self.client.update(LEASES, current)

    async def heartbeat(self) -> None:
        """Renew the Lease; report status when a condition changed or the report period has passed."""
        await self.renew_lease()
        before = {c["type"]: c["status"] for c in self._conditions}
        self.readings = await asyncio.to_thread(Readings.take, self.config.data_dir)
        after = {ctype: "True" if getattr(self.readings, attribute) else "False"
                 for ctype, attribute, _, _ in _CONDITIONS}
        after["Ready"] = "False" if self.not_ready else "True"
        if after != before or time.monotonic() - self._reported >= self.config.status_interval:
            await self.client.patch(NODES, self.config.name, {"status": self.status(time.time())},
                                    subresource="status")
            self._reported = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.lease_interval)
            if stop.is_set():
                return
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the API server may be restarting: the next beat tries again
                log.warning("node %s: heartbeat failed: %s", self.config.name, err)
