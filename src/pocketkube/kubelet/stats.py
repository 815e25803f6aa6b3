"""The kubelet's resource usage readings, served as upstream's Summary API (/stats/summary,
k8s.io/kubelet/pkg/apis/stats/v1alpha1) and as its resource metrics (/metrics/resource, Prometheus text).

Where the figures come from:
  node        /proc: stat (cpu time, boot time), meminfo and vmstat (memory), net/dev of the kubelet's own
              network namespace, loadavg and sys/kernel/pid_max (rlimit); statvfs of the kubelet's
              directory (nodefs) and of the engine's (imagefs)
  pods        their pod cgroup (cpu, memory, processes), /proc/<pid>/net/dev of one of their processes
              (network), their volume directories
  containers  their engine cgroup, writable layer and log directory

CPU rates (usageNanoCores) are measured at request time against the previous reading of the same cgroup
when that is at least MIN_RATE_WINDOW old, else the last rate is repeated; the first reading has none. We
take no periodic samples (cAdvisor does, every 10 s): an idle node does no work for statistics, and the
clients that want rates scrape periodically anyway (metrics-server, a monitoring agent), so they get the
rate over their own scrape interval. Disk usage of writable layers and volumes means walking their files;
those walks are reused for DISK_USAGE_MAX_AGE, as upstream's volume statistics are.

The collector returns the Summary with its times as epoch floats (the metrics carry them to the
millisecond); summary_document() turns it into the JSON upstream serves, resource_metrics() into the
text."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pocketkube.engine.runtime import cgroups
from pocketkube.engine.runtime.cgroups import UNIFIED, CgroupStats

Obj = dict[str, Any]

MIN_RATE_WINDOW = 1.0        # seconds between two readings a CPU rate is measured over, at least
DISK_USAGE_MAX_AGE = 60.0    # seconds a walk of a directory's files is reused (upstream's volume stats period)
SYSTEM_CONTAINER_KUBELET = "kubelet"
SYSTEM_CONTAINER_PODS = "pods"
# Interfaces left out of the node's network figures: loopback, and the host ends of pod veths (counted
# in their pods), as cAdvisor leaves them out.
_NODE_IGNORED_INTERFACES = ("lo", "veth")


# --- what the kubelet knows about its pods ---------------------------------------------------------------

@dataclass(frozen=True)
class ContainerSource:
    name: str
    cgroup: str                  # cgroup path, e.g. /pocketkube/kubepods/besteffort/pod<uid>/<id>
    start_time: float
    rootfs: Path | None = None   # where its writes land (its writable layer)
    logs: Path | None = None     # the directory of its log files


@dataclass(frozen=True)
class VolumeSource:
    name: str
    path: Path
    ephemeral: bool = False      # a disk-backed emptyDir, part of the pod's ephemeral storage


@dataclass(frozen=True)
class PodSource:
    name: str
    namespace: str
    uid: str
    start_time: float
    cgroup: str
    containers: list[ContainerSource] = field(default_factory=list)
    volumes: list[VolumeSource] = field(default_factory=list)
    network_pid: int | None = None   # a process in the pod's network namespace


@dataclass(frozen=True)
class NodeSource:
    name: str
    pods_cgroup: str             # the cgroup every pod's is below (kubepods)
    root_dir: Path               # the kubelet's directory: its filesystem is the nodefs
    image_dir: Path              # the engine's directory: its filesystem is the imagefs
    image_bytes: int | None = None   # bytes the images take there
    pods: list[PodSource] = field(default_factory=list)


# --- cgroup files ----------------------------------------------------------------------------------------

class CgroupReader:
    """Reads cgroups below given hierarchy roots (controller, or "unified", -> its mount point): the host's
    (host()), or a tree laid out the same way elsewhere."""

    def __init__(self, roots: Mapping[str, Path], *, v2: bool) -> None:
        self.roots = dict(roots)
        self.v2 = v2

    @classmethod
    def host(cls) -> CgroupReader:
        return cls(cgroups.hierarchy_roots(), v2=cgroups.mode() == "v2")

    def dirs(self, path: str) -> dict[str, Path]:
        relative = path.strip("/")
        return {controller: root / relative for controller, root in self.roots.items()}

    def stats(self, path: str) -> CgroupStats | None:
        return self.read(self.dirs(path))

    def read(self, dirs: Mapping[str, Path]) -> CgroupStats | None:
        return cgroups.read_stats_in(dirs, v2=self.v2)

    def created(self, path: str) -> float | None:
        """When the cgroup was made (its directory's change time: cgroupfs never changes it later)."""
        dirs = self.dirs(path)
        directory = dirs.get(UNIFIED) if self.v2 else dirs.get("memory")
        try:
            return directory.stat().st_ctime if directory is not None else None
        except FileNotFoundError:
            return None

    def process_count(self, path: str) -> int:
        """Processes (not threads) in the cgroup and below."""
        dirs = self.dirs(path)
        directory = dirs.get(UNIFIED) if self.v2 else dirs.get("pids") or dirs.get("memory")
        count = 0
        for current, _, _ in os.walk(directory) if directory is not None else ():
            with contextlib.suppress(FileNotFoundError):
                count += len(Path(current, "cgroup.procs").read_text().split())
        return count

    def of_process(self, cgroup_file: Path) -> dict[str, Path] | None:
        """The directories of a process's own cgroup from its /proc/<pid>/cgroup; None when the process sits
        in a root cgroup for cpu or memory (its figures would be the whole machine's)."""
        paths: dict[str, str] = {}
        for line in cgroup_file.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [UNIFIED]:
                paths[controller] = path
        if any(paths.get(c, "/") == "/" for c in ((UNIFIED,) if self.v2 else ("cpuacct", "memory"))):
            return None
        return {c: self.roots[c] / path.strip("/") for c, path in paths.items() if c in self.roots}


# --- /proc -----------------------------------------------------------------------------------------------

def _keyed_numbers(text: str, separator: str | None = None) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(separator) if separator else line.partition(" ")
        words = rest.split()
        if words and words[0].isdigit():
            values[key.strip()] = int(words[0])
    return values


def _interfaces(net_dev: Path) -> list[Obj]:
    """InterfaceStats of every interface in a /proc/<pid>/net/dev."""
    found = []
    for line in net_dev.read_text().splitlines()[2:]:
        name, _, counters = line.partition(":")
        values = [int(v) for v in counters.split()]
        found.append({"name": name.strip(), "rxBytes": values[0], "rxErrors": values[2],
                      "txBytes": values[8], "txErrors": values[10]})
    return found


def _default_interface(net_route: Path) -> str | None:
    """The interface of the default route in a /proc/<pid>/net/route (upstream picks "eth0" by name)."""
    with contextlib.suppress(FileNotFoundError):
        for line in net_route.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                return fields[0]
    return None


def _network(net_dir: Path, now: float, ignored: tuple[str, ...]) -> Obj | None:
    """NetworkStats of the namespace whose /proc/<pid>/net is `net_dir`."""
    try:
        interfaces = [i for i in _interfaces(net_dir / "dev") if not i["name"].startswith(ignored)]
    except FileNotFoundError:
        return None   # the process went away
    default = _default_interface(net_dir / "route") or "eth0"
    network: Obj = {"time": now}
    for interface in interfaces:
        if interface["name"] == default:
            network.update(interface)
    network["interfaces"] = interfaces
    return network


def _fs(path: Path, now: float, used: tuple[int, int | None] | None = None) -> Obj | None:
    """FsStats of the filesystem holding `path`; `used` (bytes, inodes or None: unknown) replaces the
    filesystem's own use."""
    try:
        fs = os.statvfs(path)
    except FileNotFoundError:
        return None
    used_bytes, inodes_used = used if used is not None else ((fs.f_blocks - fs.f_bfree) * fs.f_frsize,
                                                             fs.f_files - fs.f_ffree)
    return _without_none({"time": now, "availableBytes": fs.f_bavail * fs.f_frsize,
                          "capacityBytes": fs.f_blocks * fs.f_frsize, "usedBytes": used_bytes,
                          "inodesFree": fs.f_ffree, "inodes": fs.f_files, "inodesUsed": inodes_used})


def disk_usage(directory: Path) -> tuple[int, int]:
    """(bytes, inodes) the files below a directory take, as `du -x` counts them: allocated blocks, each hard
    link once, nothing on other filesystems."""
    top = directory.lstat()
    seen: set[int] = set()
    total, inodes = top.st_blocks * 512, 1
    pending = [str(directory)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue   # removed while we walked
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_dev != top.st_dev or st.st_ino in seen:
                continue
            if st.st_nlink > 1:
                seen.add(st.st_ino)
            total += st.st_blocks * 512
            inodes += 1
            if stat.S_ISDIR(st.st_mode):
                pending.append(entry.path)
    return total, inodes


# --- readings that need memory of the previous ones --------------------------------------------------------

@dataclass
class _Sample:
    time: float
    value: int


class CpuRates:
    """usageNanoCores per cgroup: cpu time used between two readings over the time between them."""

    def __init__(self, min_window: float = MIN_RATE_WINDOW) -> None:
        self.min_window = min_window
        self._base: dict[str, _Sample] = {}
        self._rate: dict[str, int] = {}

    def rate(self, key: str, now: float, usage_ns: int) -> int | None:
        base = self._base.get(key)
        if base is None or usage_ns < base.value:   # new, or made anew under the same name
            self._base[key] = _Sample(now, usage_ns)
            self._rate.pop(key, None)
            return None
        if now - base.time >= self.min_window:
            self._rate[key] = int((usage_ns - base.value) / (now - base.time))
            self._base[key] = _Sample(now, usage_ns)
        return self._rate.get(key)

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forgets the cgroups not read this time (gone)."""
        kept = set(keys)
        for table in (self._base, self._rate):
            for key in [k for k in table if k not in kept]:
                del table[key]


class DiskUsageCache:
    def __init__(self, max_age: float = DISK_USAGE_MAX_AGE) -> None:
        self.max_age = max_age
        self._walks: dict[Path, tuple[float, tuple[int, int]]] = {}

    def usage(self, directory: Path, now: float) -> tuple[int, int] | None:
        cached = self._walks.get(directory)
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        try:
            found = disk_usage(directory)
        except FileNotFoundError:
            self._walks.pop(directory, None)
            return None
        self._walks[directory] = (now, found)
        return found

    def keep_only(self, directories: Iterable[Path]) -> None:
        kept = set(directories)
        for directory in [d for d in self._walks if d not in kept]:
            del self._walks[directory]


# --- collecting ------------------------------------------------------------------------------------------

class StatsCollector:
    """Takes the readings of a node. Blocking (files): run it in a thread; calls are serialised."""

    def __init__(self, cgroup_reader: CgroupReader | None = None, *, proc: Path = Path("/proc"),
                 clock: Callable[[], float] = time.time, disk_usage_max_age: float = DISK_USAGE_MAX_AGE) -> None:
        self.cgroups = cgroup_reader or CgroupReader.host()
        self.proc = proc
        self.clock = clock
        self.rates = CpuRates()
        self.disk = DiskUsageCache(disk_usage_max_age)
        self._lock = threading.Lock()

    def collect(self, node: NodeSource, *, only_cpu_and_memory: bool = False) -> Obj:
        """The Summary of the node, its times as epoch seconds (see summary_document())."""
        with self._lock:
            return _Collection(self, node, only_cpu_and_memory).summary()


class _Collection:
    """One pass over the node: remembers what it read so the collector can forget the rest."""

    def __init__(self, collector: StatsCollector, node: NodeSource, only_cpu_and_memory: bool) -> None:
        self.collector = collector
        self.node = node
        self.full = not only_cpu_and_memory
        self.now = collector.clock()
        self.cpu_keys: list[str] = []
        self.walked: list[Path] = []

    def summary(self) -> Obj:
        summary = {"node": self._node(), "pods": [p for p in map(self._pod, self.node.pods) if p is not None]}
        self.collector.rates.keep_only(self.cpu_keys)
        if self.full:
            self.collector.disk.keep_only(self.walked)
        return summary

    # --- the node ---

    def _node(self) -> Obj:
        node = self.node
        proc = self.collector.proc
        proc_stat = (proc / "stat").read_text()
        entry: Obj = {"nodeName": node.name, "systemContainers": self._system_containers() or None,
                      "startTime": float(_keyed_numbers(proc_stat)["btime"]),
                      "cpu": self._cpu("node", _busy_cpu_ns(proc_stat))}
        entry["memory"], entry["swap"] = _proc_memory(proc, self.now)
        if self.full:
            network = _network(proc / "net", self.now, _NODE_IGNORED_INTERFACES)
            if network is not None:
                entry["network"] = network
            entry["fs"] = _fs(node.root_dir, self.now)
            # the images' bytes when known (not their inodes), else the filesystem's own use
            image_used = (node.image_bytes, None) if node.image_bytes is not None else None
            entry["runtime"] = {"imageFs": _fs(node.image_dir, self.now, image_used)}
            entry["rlimit"] = {"time": self.now, "maxpid": int((proc / "sys/kernel/pid_max").read_text()),
                               "curproc": int((proc / "loadavg").read_text().split()[3].split("/")[1])}
        return _without_none(entry)

    def _system_containers(self) -> list[Obj]:
        reader = self.collector.cgroups
        pods_cgroup = self.node.pods_cgroup
        found = []
        kubelet_dirs = reader.of_process(self.collector.proc / "self/cgroup")
        kubelet = reader.read(kubelet_dirs) if kubelet_dirs is not None else None
        if kubelet is not None:
            # the cgroup may be older than the process (a service's): the process's own start is reported
            found.append(self._system_container(SYSTEM_CONTAINER_KUBELET, kubelet,
                                                _process_start(self.collector.proc)))
        pods = reader.stats(pods_cgroup)
        if pods is not None:
            found.append(self._system_container(SYSTEM_CONTAINER_PODS, pods, reader.created(pods_cgroup)))
        return found

    def _system_container(self, name: str, stats: CgroupStats, start: float | None) -> Obj:
        return _without_none({"name": name, "startTime": start,
                              **self._cgroup_figures(f"system:{name}", stats)})

    # --- pods and containers ---

    def _pod(self, pod: PodSource) -> Obj | None:
        stats = self.collector.cgroups.stats(pod.cgroup)
        if stats is None:
            return None   # not set up yet, or torn down meanwhile
        containers = [c for c in map(self._container, pod.containers) if c is not None]
        entry: Obj = {"podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                      "startTime": pod.start_time, "containers": containers,
                      **self._cgroup_figures(pod.cgroup, stats)}
        if self.full:
            if pod.network_pid is not None:
                entry["network"] = _network(self.collector.proc / str(pod.network_pid) / "net", self.now, ("lo",))
            volumes = [(v, self._walked_fs(v.path)) for v in pod.volumes]
            entry["volume"] = [{**fs, "name": v.name} for v, fs in volumes if fs is not None] or None
            entry["ephemeral-storage"] = self._ephemeral_storage(containers, [fs for v, fs in volumes
                                                                              if v.ephemeral and fs is not None])
            entry["process_stats"] = {"process_count": self.collector.cgroups.process_count(pod.cgroup)}
        return _without_none(entry)

    def _container(self, container: ContainerSource) -> Obj | None:
        stats = self.collector.cgroups.stats(container.cgroup)
        if stats is None:
            return None
        entry: Obj = {"name": container.name, "startTime": container.start_time,
                      **self._cgroup_figures(container.cgroup, stats)}
        if self.full:
            entry["rootfs"] = self._walked_fs(container.rootfs) if container.rootfs is not None else None
            if container.logs is not None:
                with contextlib.suppress(FileNotFoundError):
                    entry["logs"] = _fs(container.logs, self.now, disk_usage(container.logs))
        return _without_none(entry)

    def _ephemeral_storage(self, containers: list[Obj], volumes: list[Obj]) -> Obj | None:
        """Writable layers, logs and disk-backed emptyDirs together, on the node's filesystem (upstream's
        accounting for ephemeral-storage limits)."""
        parts = [*(c[kind] for c in containers for kind in ("rootfs", "logs") if kind in c), *volumes]
        used = (sum(p["usedBytes"] for p in parts), sum(p["inodesUsed"] for p in parts))
        return _fs(self.node.root_dir, self.now, used)

    def _walked_fs(self, directory: Path) -> Obj | None:
        used = self.collector.disk.usage(directory, self.now)
        if used is None:
            return None
        self.walked.append(directory)
        return _fs(directory, self.now, used)

    # --- cpu and memory ---

    def _cgroup_figures(self, key: str, stats: CgroupStats) -> Obj:
        memory = {"time": self.now, "usageBytes": stats.memory_usage, "workingSetBytes": stats.memory_working_set,
                  "rssBytes": stats.memory_rss, "pageFaults": stats.memory_page_faults,
                  "majorPageFaults": stats.memory_major_page_faults}
        if stats.memory_limit is not None:
            memory["availableBytes"] = max(0, stats.memory_limit - stats.memory_working_set)
        figures = {"cpu": self._cpu(key, stats.cpu_usage_ns), "memory": memory}
        if stats.swap_usage is not None:
            figures["swap"] = {"time": self.now, "swapUsageBytes": stats.swap_usage}
        return figures

    def _cpu(self, key: str, usage_ns: int) -> Obj:
        self.cpu_keys.append(key)
        return _without_none({"time": self.now, "usageNanoCores": self.collector.rates.rate(key, self.now, usage_ns),
                              "usageCoreNanoSeconds": usage_ns})


def _busy_cpu_ns(proc_stat: str) -> int:
    """CPU time the machine spent busy, from /proc/stat: user, nice, system, irq, softirq and steal (guests
    count in user)."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            ticks = [int(v) for v in line.split()[1:]]
            busy = sum(ticks[i] for i in (0, 1, 2, 5, 6, 7) if i < len(ticks))
            return busy * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    raise ValueError("/proc/stat has no cpu line")


def _proc_memory(proc: Path, now: float) -> tuple[Obj, Obj]:
    """The machine's MemoryStats and SwapStats. Working set as cAdvisor's: in use minus inactive file pages
    (a v2 root cgroup has no memory.current: runc reads /proc/meminfo there too)."""
    info = {k: v * 1024 for k, v in _keyed_numbers((proc / "meminfo").read_text(), ":").items()}
    vmstat = _keyed_numbers((proc / "vmstat").read_text())
    usage = info["MemTotal"] - info["MemFree"]
    working_set = max(0, usage - info.get("Inactive(file)", 0))
    memory = {"time": now, "availableBytes": info["MemTotal"] - working_set, "usageBytes": usage,
              "workingSetBytes": working_set, "rssBytes": info.get("AnonPages", 0),
              "pageFaults": vmstat.get("pgfault", 0), "majorPageFaults": vmstat.get("pgmajfault", 0)}
    swap = {"time": now, "swapAvailableBytes": info.get("SwapFree", 0),
            "swapUsageBytes": info.get("SwapTotal", 0) - info.get("SwapFree", 0)}
    return memory, swap


def _process_start(proc: Path) -> float | None:
    """When this process started: its start in clock ticks after boot (field 22 of /proc/self/stat)."""
    try:
        after_name = (proc / "self/stat").read_text().rpartition(")")[2].split()
        boot = _keyed_numbers((proc / "stat").read_text())["btime"]
    except (FileNotFoundError, KeyError):
        return None
    return boot + int(after_name[19]) / os.sysconf("SC_CLK_TCK")


def _without_none(entry: Obj) -> Obj:
    """Optional fields are left out, as upstream's omitempty pointers."""
    return {k: v for k, v in entry.items() if v is not None}


# --- the Summary document ----------------------------------------------------------------------------------

_TIME_KEYS = frozenset({"time", "startTime"})


def summary_document(readings: Obj) -> Obj:
    """The Summary as the kubelet serves it: times as RFC 3339 in UTC, to the second (metav1.Time)."""
    def convert(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: convert(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if key in _TIME_KEYS and isinstance(value, float | int):
            return dt.datetime.fromtimestamp(int(value), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return value

    return convert(readings)


# --- the resource metrics ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Family:
    name: str
    kind: str
    help: str
    stability: str = "STABLE"


_CONTAINER_CPU = _Family("container_cpu_usage_seconds_total", "counter",
                         "Cumulative cpu time consumed by the container in core-seconds")
_CONTAINER_MEMORY = _Family("container_memory_working_set_bytes", "gauge",
                            "Current working set of the container in bytes")
_CONTAINER_START = _Family("container_start_time_seconds", "gauge",
                           "Start time of the container since unix epoch in seconds")
_CONTAINER_SWAP = _Family("container_swap_usage_bytes", "gauge", "Current amount of the container swap usage "
                          "in bytes. Reported only on non-windows systems", "ALPHA")
_NODE_CPU = _Family("node_cpu_usage_seconds_total", "counter",
                    "Cumulative cpu time consumed by the node in core-seconds")
_NODE_MEMORY = _Family("node_memory_working_set_bytes", "gauge", "Current working set of the node in bytes")
_NODE_SWAP = _Family("node_swap_usage_bytes", "gauge",
                     "Current swap usage of the node in bytes. Reported only on non-windows systems", "ALPHA")
_POD_CPU = _Family("pod_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the pod in core-seconds")
_POD_MEMORY = _Family("pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes")
_POD_SWAP = _Family("pod_swap_usage_bytes", "gauge", "Current amount of the pod swap usage in bytes. Reported "
                    "only on non-windows systems", "ALPHA")
_SCRAPE_ERROR = _Family("resource_scrape_error", "gauge",
                        "1 if there was an error while getting container metrics, 0 otherwise")
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (labels in name order, value, timestamp in seconds or None)
_MetricSample = tuple[tuple[tuple[str, str], ...], float, float | None]


def resource_metrics(readings: Obj | None) -> str:
    """/metrics/resource from the readings (None: they could not be taken, which only resource_scrape_error
    then tells). Families in name order, each with its HELP and TYPE, samples stamped in milliseconds."""
    samples: dict[_Family, list[_MetricSample]] = {}

    def add(family: _Family, labels: Mapping[str, str], value: float, timestamp: float | None = None) -> None:
        samples.setdefault(family, []).append((tuple(sorted(labels.items())), value, timestamp))

    def usage(labels: Mapping[str, str], entry: Obj, cpu: _Family, memory: _Family, swap: _Family) -> None:
        if "usageCoreNanoSeconds" in entry.get("cpu", {}):
            add(cpu, labels, entry["cpu"]["usageCoreNanoSeconds"] / 1e9, entry["cpu"]["time"])
        if "workingSetBytes" in entry.get("memory", {}):
            add(memory, labels, entry["memory"]["workingSetBytes"], entry["memory"]["time"])
        if "swapUsageBytes" in entry.get("swap", {}):
            add(swap, labels, entry["swap"]["swapUsageBytes"], entry["swap"]["time"])

    if readings is not None:
        usage({}, readings["node"], _NODE_CPU, _NODE_MEMORY, _NODE_SWAP)
        for pod in readings["pods"]:
            ref = {"namespace": pod["podRef"]["namespace"], "pod": pod["podRef"]["name"]}
            for container in pod["containers"]:
                labels = {**ref, "container": container["name"]}
                if container.get("startTime", 0) > 0:
                    add(_CONTAINER_START, labels, container["startTime"])
                usage(labels, container, _CONTAINER_CPU, _CONTAINER_MEMORY, _CONTAINER_SWAP)
            usage(ref, pod, _POD_CPU, _POD_MEMORY, _POD_SWAP)
    add(_SCRAPE_ERROR, {}, 0 if readings is not None else 1)
    lines = []
    for family in sorted(samples, key=lambda f: f.name):
        lines += [f"# HELP {family.name} [{family.stability}] {family.help}", f"# TYPE {family.name} {family.kind}"]
        for labels, value, timestamp in sorted(samples[family], key=lambda s: s[0]):
            text = ",".join(f'{name}="{_escape(v)}"' for name, v in labels)
            line = f"{family.name}{{{text}}} {_number(value)}" if text else f"{family.name} {_number(value)}"
            lines.append(line if timestamp is None else f"{line} {int(timestamp * 1000)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A value as the Go client writes it: strconv.FormatFloat(v, 'g', -1, 64), i.e. the shortest digits
    that read back the same, with an exponent from 1e+06 up or below 1e-04 (1.430994944e+09, 0.25)."""
    if value == 0:
        return "0"
    _, digit_tuple, exponent = Decimal(repr(abs(float(value)))).as_tuple()
    assert isinstance(exponent, int)   # finite: cgroup and /proc readings are
    point = len(digit_tuple) + exponent   # where the decimal point goes after the digits' first
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    sign = "-" if value < 0 else ""
    if not -4 <= point - 1 < 6:
        mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'+' if point > 0 else '-'}{abs(point - 1):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"
