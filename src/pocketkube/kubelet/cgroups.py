"""QoS classes and pod cgroups, as upstream's kubelet lays them out (cgroupfs driver):

    <root>/kubepods/pod<uid>                  Guaranteed
    <root>/kubepods/burstable/pod<uid>        Burstable
    <root>/kubepods/besteffort/pod<uid>       BestEffort

with the pod's containers below its cgroup. requests → cpu.shares, limits → CFS quota and memory limit, on
the pod cgroup (sums over the containers, at least the largest init container) and on each container's.
"""

from __future__ import annotations

from typing import Any

from pocketkube.api.quantity import parse_quantity
from pocketkube.engine.runtime import cgroups
from pocketkube.engine.runtime.spec import Resources

Obj = dict[str, Any]

GUARANTEED, BURSTABLE, BEST_EFFORT = "Guaranteed", "Burstable", "BestEffort"
CPU_PERIOD = 100_000       # µs, upstream's quotaPeriod
MIN_SHARES = 2
MIN_QUOTA = 1000           # µs
SHARES_PER_CPU = 1024
_COMPUTE = ("cpu", "memory")


def _milli(value: Any) -> int:
    return parse_quantity(str(value)).milli_value()


def _bytes(value: Any) -> int:
    return parse_quantity(str(value)).value()


def qos_class(pod: Obj) -> str:
    """status.qosClass when the API server set it, else upstream's GetPodQOS over cpu and memory."""
    known = (pod.get("status") or {}).get("qosClass")
    if known:
        return known
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    requests_seen = limits_seen = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests = {k: v for k, v in (resources.get("requests") or {}).items() if k in _COMPUTE and _milli(v)}
        limits = {k: v for k, v in (resources.get("limits") or {}).items() if k in _COMPUTE and _milli(v)}
        requests_seen = requests_seen or bool(requests)
        limits_seen = limits_seen or bool(limits)
        if set(limits) != set(_COMPUTE) or any(_milli(requests.get(k, limits[k])) != _milli(limits[k])
                                               for k in limits):
            guaranteed = False
    if not requests_seen and not limits_seen:
        return BEST_EFFORT
    return GUARANTEED if guaranteed else BURSTABLE


def shares(milli_cpu: int) -> int:
    """upstream MilliCPUToShares."""
    return max(MIN_SHARES, milli_cpu * SHARES_PER_CPU // 1000) if milli_cpu else MIN_SHARES


def quota(milli_cpu: int) -> int:
    """upstream MilliCPUToQuota for the default period."""
    return max(MIN_QUOTA, milli_cpu * CPU_PERIOD // 1000)


def container_resources(container: Obj) -> Resources:
    """The container's own cgroup limits. No swap, as Kubernetes runs without it."""
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    cpu_request = requests.get("cpu", limits.get("cpu"))
    memory = _bytes(limits["memory"]) if "memory" in limits else None
    return Resources(
        cpu_shares=shares(_milli(cpu_request) if cpu_request is not None else 0),
        cpu_quota=quota(_milli(limits["cpu"])) if "cpu" in limits else None,
        cpu_period=CPU_PERIOD if "cpu" in limits else None,
        memory=memory, memory_swap=memory)


def _pod_total(pod: Obj, kind: str, resource: str, parse: Any) -> int | None:
    """Sum over the app containers (and sidecars), at least the largest init container; None when some
    container has no value (the pod then has no limit of that kind)."""
    spec = pod.get("spec") or {}
    total = 0
    for container in [*(spec.get("containers") or []),
                      *(c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always")]:
        value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
        if value is None:
            if kind == "limits":
                return None
            continue
        total += parse(value)
    for container in spec.get("initContainers") or []:
        value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
        if value is not None:
            total = max(total, parse(value))
    return total


def pod_resources(pod: Obj) -> Resources:
    qos = qos_class(pod)
    if qos == BEST_EFFORT:
        return Resources(cpu_shares=MIN_SHARES)
    cpu_requests = _pod_total(pod, "requests", "cpu", _milli) or 0
    cpu_limit = _pod_total(pod, "limits", "cpu", _milli)
    memory_limit = _pod_total(pod, "limits", "memory", _bytes)
    return Resources(cpu_shares=shares(cpu_requests),
                     cpu_quota=quota(cpu_limit) if cpu_limit else None,
                     cpu_period=CPU_PERIOD if cpu_limit else None,
                     memory=memory_limit or None, memory_swap=memory_limit or None)


class PodCgroups:
    """The node's pod cgroup tree below `root` (the engine's cgroup parent)."""

    def __init__(self, root: str) -> None:
        self.kubepods = f"{root.rstrip('/')}/kubepods"
        # Pod cgroup -> the limits last written there: a pod is synced again and again, and re-creating its
        # directories in every hierarchy and rewriting unchanged limits each time cost a good part of a sync.
        self._applied: dict[str, Resources] = {}

    def path(self, pod: Obj) -> str:
        qos = qos_class(pod)
        uid = pod["metadata"]["uid"]
        if qos == GUARANTEED:
            return f"{self.kubepods}/pod{uid}"
        return f"{self.kubepods}/{qos.lower()}/pod{uid}"

    def ensure_qos_tree(self) -> None:
        cgroups.ensure(self.kubepods)
        cgroups.ensure(f"{self.kubepods}/burstable")
        cgroups.ensure(f"{self.kubepods}/besteffort")
        cgroups.set_limits(f"{self.kubepods}/besteffort", Resources(cpu_shares=MIN_SHARES))

    def ensure_pod(self, pod: Obj) -> str:
        path = self.path(pod)
        resources = pod_resources(pod)
        if self._applied.get(path) == resources and self._exists(path):
            return path
        cgroups.ensure(path)
        cgroups.set_limits(path, resources)
        self._applied[path] = resources
        return path

    @staticmethod
    def _exists(path: str) -> bool:
        """Still there (nobody removed it behind our back): its memory controller directory is."""
        dirs = cgroups.controller_dirs(path)
        directory = dirs.get("memory") or dirs.get(cgroups.UNIFIED)
        return directory is not None and directory.is_dir()

    def remove_pod(self, pod_uid: str) -> None:
        for parent in (self.kubepods, f"{self.kubepods}/burstable", f"{self.kubepods}/besteffort"):
            self._applied.pop(f"{parent}/pod{pod_uid}", None)
            cgroups.remove(f"{parent}/pod{pod_uid}", kill=True)

    def pod_uids(self) -> set[str]:
        """Pods that have a cgroup on this node (to find leftovers of pods deleted while we were down)."""
        found: set[str] = set()
        for parent in (self.kubepods, f"{self.kubepods}/burstable", f"{self.kubepods}/besteffort"):
            directory = cgroups.controller_dirs(parent).get("memory") or cgroups.controller_dirs(parent).get(
                cgroups.UNIFIED)
            if directory is None or not directory.is_dir():
                continue
            found |= {entry.name[3:] for entry in directory.iterdir() if entry.is_dir()
                      and entry.name.startswith("pod")}
        return found
