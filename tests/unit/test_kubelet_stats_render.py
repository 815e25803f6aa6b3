"""kubelet/stats.py over fabricated cgroup (v1 and v2) and /proc trees: the Summary's arithmetic, CPU rates,
disk usage, and the two documents rendered from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pocketkube.kubelet.stats import (
    CgroupReader,
    ContainerSource,
    NodeSource,
    PodSource,
    StatsCollector,
    VolumeSource,
    disk_usage,
    resource_metrics,
    summary_document,
)

KUBEPODS = "/pocketkube/kubepods"
POD = f"{KUBEPODS}/besteffort/pod-uid-1"
BUSY, IDLE = f"{POD}/c-busy", f"{POD}/c-idle"
NO_LIMIT = 9223372036854771712
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024


class Clock:
    def __init__(self, now: float = 1_700_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_cgroup(root: Path, path: str, *, cpu_ns: int, usage: int, inactive_file: int, rss: int = 0,
              limit: int = NO_LIMIT, with_swap: int | None = None, procs: str = "") -> None:
    relative = path.strip("/")
    write(root / "cpuacct" / relative / "cpuacct.usage", f"{cpu_ns}\n")
    write(root / "cpuacct" / relative / "cpuacct.usage_user", f"{cpu_ns // 2}\n")
    write(root / "cpuacct" / relative / "cpuacct.usage_sys", f"{cpu_ns // 2}\n")
    write(root / "cpu" / relative / "cpu.stat", "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n")
    memory = root / "memory" / relative
    write(memory / "memory.usage_in_bytes", f"{usage}\n")
    write(memory / "memory.limit_in_bytes", f"{limit}\n")
    write(memory / "memory.max_usage_in_bytes", f"{usage}\n")
    write(memory / "memory.stat", f"rss 0\npgfault 1\ntotal_rss {rss}\ntotal_cache 4096\n"
                                  f"total_inactive_file {inactive_file}\ntotal_pgfault 700\ntotal_pgmajfault 7\n")
    write(memory / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    write(memory / "cgroup.procs", procs)
    if with_swap is not None:
        write(memory / "memory.memsw.usage_in_bytes", f"{with_swap}\n")
    write(root / "pids" / relative / "pids.current", f"{len(procs.split())}\n")
    write(root / "pids" / relative / "cgroup.procs", procs)


def v1_reader(root: Path) -> CgroupReader:
    return CgroupReader({c: root / c for c in ("cpu", "cpuacct", "memory", "pids")}, v2=False)


def fake_proc(proc: Path, *, busy_ticks: int = 1000, self_cgroup: str = "4:memory:/\n2:cpuacct:/\n0::/\n") -> None:
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy time
    user, nice, system, irq, softirq, steal = busy_ticks - 60, 10, 20, 10, 10, 10
    write(proc / "stat", f"cpu  {user} {nice} {system} 99999 555 {irq} {softirq} {steal} 0 0\n"
                         f"cpu0 1 2 3 4 5 6 7 8 0 0\nbtime 1690000000\nprocesses 42\n")
    write(proc / "meminfo", "MemTotal:        4000000 kB\nMemFree:         1000000 kB\nAnonPages:        500000 kB\n"
                            "Inactive(file):   800000 kB\nSwapTotal:       1000 kB\nSwapFree:        600 kB\n")
    write(proc / "vmstat", "nr_free_pages 1\npgfault 123456\npgmajfault 789\n")
    write(proc / "loadavg", "0.50 0.40 0.30 3/321 4242\n")
    write(proc / "sys/kernel/pid_max", "4194304\n")
    write(proc / "self/cgroup", self_cgroup)
    # the process started 250 ticks after boot (field 22)
    write(proc / "self/stat", "4242 (python (kubelet)) S " + " ".join(["0"] * 18) + " 250 0 0\n")
    net_dev(proc / "net", {"lo": (5, 0, 5, 0), "eth0": (1000, 1, 2000, 2), "veth12": (7, 0, 7, 0),
                                   "cni0": (30, 0, 40, 0)})
    write(proc / "net/route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                              "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n")


def net_dev(net: Path, interfaces: dict[str, tuple[int, int, int, int]]) -> None:
    lines = ["Inter-|   Receive                                                |  Transmit",
             " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo "
             "colls carrier compressed"]
    for name, (rx, rx_errors, tx, tx_errors) in interfaces.items():
        lines.append(f"{name:>6}: {rx} 3 {rx_errors} 0 0 0 0 0 {tx} 4 {tx_errors} 0 0 0 0 0")
    write(net / "dev", "\n".join(lines) + "\n")


@pytest.fixture
def node_tree(tmp_path: Path) -> tuple[Path, Path, NodeSource]:
    """A node with one pod: a busy container with a memory limit, an idle one, two volumes."""
    cgroup_root, proc = tmp_path / "cgroup", tmp_path / "proc"
    fake_proc(proc)
    v1_cgroup(cgroup_root, KUBEPODS, cpu_ns=9_000_000_000, usage=300 * MiB, inactive_file=100 * MiB)
    v1_cgroup(cgroup_root, POD, cpu_ns=5_000_000_000, usage=64 * MiB, inactive_file=16 * MiB, rss=40 * MiB,
              with_swap=64 * MiB, procs="")
    v1_cgroup(cgroup_root, BUSY, cpu_ns=4_000_000_000, usage=32 * MiB, inactive_file=2 * MiB, rss=30 * MiB,
              limit=128 * MiB, with_swap=33 * MiB, procs="101\n102\n")
    # more inactive file pages than usage: the working set stays at 0
    v1_cgroup(cgroup_root, IDLE, cpu_ns=1_000_000, usage=1 * MiB, inactive_file=3 * MiB, procs="201\n")
    net_dev(proc / "101/net", {"lo": (9, 0, 9, 0), "eth0": (5000, 0, 6000, 1)})
    write(proc / "101/net/route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                                  "eth0\t00000000\t01F5C80A\t0003\t0\t0\t0\t00000000\n")

    files = tmp_path / "files"
    rootfs = files / "upper-busy"
    write(rootfs / "tmp/written", "x" * 10_000)
    os.link(rootfs / "tmp/written", rootfs / "tmp/hardlink")   # counted once
    logs = files / "logs/busy"
    write(logs / "0.log", "line\n" * 100)
    scratch = files / "volumes/empty-dir/scratch"
    write(scratch / "data", "y" * 20_000)
    config = files / "volumes/configmap/config"
    write(config / "key", "value")
    pod = PodSource("busy-pod", "default", "uid-1", 1_699_999_000.0, POD, containers=[
        ContainerSource("busy", BUSY, 1_699_999_100.5, rootfs=rootfs, logs=logs),
        ContainerSource("idle", IDLE, 1_699_999_101.0),
        ContainerSource("gone", f"{POD}/c-gone", 1_699_999_102.0),   # exited meanwhile: no cgroup any more
    ], volumes=[VolumeSource("scratch", scratch, ephemeral=True), VolumeSource("config", config)], network_pid=101)
    gone = PodSource("deleted", "default", "uid-2", 1_699_999_000.0, f"{KUBEPODS}/podgone")
    node = NodeSource("node-a", KUBEPODS, root_dir=files, image_dir=files, image_bytes=5_000_000, pods=[pod, gone])
    return cgroup_root, proc, node


def test_summary_arithmetic_from_cgroup_v1_and_proc(node_tree: tuple[Path, Path, NodeSource]) -> None:
    cgroup_root, proc, node = node_tree
    clock = Clock()
    summary = StatsCollector(v1_reader(cgroup_root), proc=proc, clock=clock).collect(node)

    node_entry = summary["node"]
    assert node_entry["nodeName"] == "node-a" and node_entry["startTime"] == 1690000000
    assert node_entry["cpu"] == {"time": clock.now, "usageCoreNanoSeconds": 1000 * TICK_NS}   # no rate yet
    assert node_entry["memory"] == {"time": clock.now, "availableBytes": 1_800_000 * 1024,
                                    "usageBytes": 3_000_000 * 1024, "workingSetBytes": 2_200_000 * 1024,
                                    "rssBytes": 500_000 * 1024, "pageFaults": 123456, "majorPageFaults": 789}
    assert node_entry["swap"] == {"time": clock.now, "swapAvailableBytes": 600 * 1024, "swapUsageBytes": 400 * 1024}
    network = node_entry["network"]
    assert [i["name"] for i in network["interfaces"]] == ["eth0", "cni0"]   # no lo, no pod veths
    assert (network["name"], network["rxBytes"], network["rxErrors"], network["txBytes"], network["txErrors"]) == \
        ("eth0", 1000, 1, 2000, 2)
    assert node_entry["rlimit"] == {"time": clock.now, "maxpid": 4194304, "curproc": 321}
    fs = node_entry["fs"]
    assert fs["capacityBytes"] >= fs["availableBytes"] and fs["usedBytes"] > 0 and fs["inodes"] >= fs["inodesFree"]
    image_fs = node_entry["runtime"]["imageFs"]
    assert image_fs["usedBytes"] == 5_000_000 and "inodesUsed" not in image_fs
    # the kubelet process sits in root cgroups: only the pods' system container
    [pods_container] = node_entry["systemContainers"]
    assert pods_container["name"] == "pods" and pods_container["startTime"] > 0
    assert pods_container["memory"]["workingSetBytes"] == 200 * MiB
    assert pods_container["cpu"]["usageCoreNanoSeconds"] == 9_000_000_000

    [pod] = summary["pods"]   # the pod whose cgroup is gone is left out
    assert pod["podRef"] == {"name": "busy-pod", "namespace": "default", "uid": "uid-1"}
    assert pod["startTime"] == 1_699_999_000.0
    assert pod["memory"] == {"time": clock.now, "usageBytes": 64 * MiB, "workingSetBytes": 48 * MiB,
                             "rssBytes": 40 * MiB, "pageFaults": 700, "majorPageFaults": 7}   # no limit: no available
    assert pod["swap"] == {"time": clock.now, "swapUsageBytes": 0}
    assert pod["process_stats"] == {"process_count": 3}
    assert pod["network"]["name"] == "eth0" and pod["network"]["txErrors"] == 1
    assert [i["name"] for i in pod["network"]["interfaces"]] == ["eth0"]

    busy, idle = pod["containers"]
    assert (busy["name"], busy["startTime"], idle["name"]) == ("busy", 1_699_999_100.5, "idle")
    assert busy["memory"]["workingSetBytes"] == 30 * MiB and busy["memory"]["availableBytes"] == 98 * MiB
    assert busy["swap"]["swapUsageBytes"] == 1 * MiB and "swap" not in idle   # no swap accounting there
    assert idle["memory"]["workingSetBytes"] == 0 and "availableBytes" not in idle["memory"]
    rootfs = busy["rootfs"]
    assert rootfs["inodesUsed"] == 3   # the top, tmp/, the file: its second link is the same inode
    assert 10_000 <= rootfs["usedBytes"] < 40_000
    assert busy["logs"]["inodesUsed"] == 2 and busy["logs"]["usedBytes"] >= 500
    assert "rootfs" not in idle and "logs" not in idle

    volumes = {v["name"]: v for v in pod["volume"]}
    assert set(volumes) == {"scratch", "config"} and volumes["scratch"]["usedBytes"] >= 20_000
    ephemeral = pod["ephemeral-storage"]
    assert ephemeral["usedBytes"] == rootfs["usedBytes"] + busy["logs"]["usedBytes"] + volumes["scratch"]["usedBytes"]
    assert ephemeral["inodesUsed"] == 3 + 2 + volumes["scratch"]["inodesUsed"]
    assert ephemeral["capacityBytes"] == fs["capacityBytes"]


def test_cpu_rates_between_readings(node_tree: tuple[Path, Path, NodeSource]) -> None:
    cgroup_root, proc, node = node_tree
    clock = Clock()
    collector = StatsCollector(v1_reader(cgroup_root), proc=proc, clock=clock)
    collector.collect(node)

    clock.now += 2.0
    v1_cgroup(cgroup_root, BUSY, cpu_ns=5_000_000_000, usage=32 * MiB, inactive_file=0, procs="101\n")
    fake_proc(proc, busy_ticks=1000 + 4 * os.sysconf("SC_CLK_TCK"))   # two cores busy for those 2 s
    second = collector.collect(node)
    busy = second["pods"][0]["containers"][0]
    assert busy["cpu"]["usageNanoCores"] == 500_000_000   # one second of cpu in two
    assert second["pods"][0]["containers"][1]["cpu"]["usageNanoCores"] == 0
    assert second["node"]["cpu"]["usageNanoCores"] == 2_000_000_000

    # a reading less than MIN_RATE_WINDOW later repeats the last rate rather than measuring over a sliver
    clock.now += 0.2
    v1_cgroup(cgroup_root, BUSY, cpu_ns=5_200_000_000, usage=32 * MiB, inactive_file=0, procs="101\n")
    assert collector.collect(node)["pods"][0]["containers"][0]["cpu"]["usageNanoCores"] == 500_000_000
    clock.now += 1.0   # 1.2 s after the reading the rate was measured at, 0.8 s of cpu more
    v1_cgroup(cgroup_root, BUSY, cpu_ns=5_960_000_000, usage=32 * MiB, inactive_file=0, procs="101\n")
    rate = collector.collect(node)["pods"][0]["containers"][0]["cpu"]["usageNanoCores"]
    assert rate == pytest.approx(800_000_000, rel=1e-6)   # epoch floats are exact to ~0.2 µs

    # the same cgroup made anew (its counter went back): no rate until the next reading
    clock.now += 2.0
    v1_cgroup(cgroup_root, BUSY, cpu_ns=1000, usage=32 * MiB, inactive_file=0, procs="101\n")
    assert "usageNanoCores" not in collector.collect(node)["pods"][0]["containers"][0]["cpu"]


def test_only_cpu_and_memory(node_tree: tuple[Path, Path, NodeSource]) -> None:
    cgroup_root, proc, node = node_tree
    summary = StatsCollector(v1_reader(cgroup_root), proc=proc, clock=Clock()).collect(node, only_cpu_and_memory=True)
    assert set(summary["node"]) == {"nodeName", "systemContainers", "startTime", "cpu", "memory", "swap"}
    pod = summary["pods"][0]
    assert set(pod) == {"podRef", "startTime", "containers", "cpu", "memory", "swap"}
    assert set(pod["containers"][0]) == {"name", "startTime", "cpu", "memory", "swap"}


def test_kubelet_system_container_from_its_own_cgroup(node_tree: tuple[Path, Path, NodeSource]) -> None:
    cgroup_root, proc, node = node_tree
    fake_proc(proc, self_cgroup="5:pids:/kubelet.slice\n4:memory:/kubelet.slice\n2:cpuacct:/kubelet.slice\n"
                                "1:cpu:/kubelet.slice\n0::/\n")
    v1_cgroup(cgroup_root, "/kubelet.slice", cpu_ns=77, usage=10 * MiB, inactive_file=1 * MiB, procs="4242\n")
    containers = StatsCollector(v1_reader(cgroup_root), proc=proc, clock=Clock()).collect(node)["node"][
        "systemContainers"]
    assert [c["name"] for c in containers] == ["kubelet", "pods"]
    kubelet = containers[0]
    assert kubelet["startTime"] == 1690000000 + 250 / os.sysconf("SC_CLK_TCK")
    assert kubelet["cpu"]["usageCoreNanoSeconds"] == 77 and kubelet["memory"]["workingSetBytes"] == 9 * MiB


def test_cgroup_v2_readings(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup2", tmp_path / "proc"
    fake_proc(proc)
    write(root / "cgroup.controllers", "cpu memory pids\n")
    for path, usage_usec, current in ((KUBEPODS, 9000, 50 * MiB), (POD, 3000, 20 * MiB), (BUSY, 2500, 16 * MiB)):
        directory = root / path.strip("/")
        write(directory / "cpu.stat", f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
        write(directory / "memory.current", f"{current}\n")
        write(directory / "memory.max", "max\n" if path != BUSY else f"{64 * MiB}\n")
        write(directory / "memory.stat", f"anon {current // 2}\nfile 0\ninactive_file {4 * MiB}\npgfault 11\n"
                                         "pgmajfault 1\n")
        write(directory / "memory.swap.current", "4096\n")
        write(directory / "cgroup.procs", "300\n" if path == BUSY else "")
    node = NodeSource("node-b", KUBEPODS, root_dir=tmp_path, image_dir=tmp_path, pods=[
        PodSource("p", "ns", "u", 1.0, POD, containers=[ContainerSource("c", BUSY, 2.0)])])
    summary = StatsCollector(CgroupReader({"unified": root}, v2=True), proc=proc, clock=Clock()).collect(node)
    pod = summary["pods"][0]
    container = pod["containers"][0]
    assert container["cpu"]["usageCoreNanoSeconds"] == 2_500_000
    assert container["memory"] == {"time": Clock().now, "usageBytes": 16 * MiB, "workingSetBytes": 12 * MiB,
                                   "rssBytes": 8 * MiB, "pageFaults": 11, "majorPageFaults": 1,
                                   "availableBytes": 52 * MiB}
    assert container["swap"]["swapUsageBytes"] == 4096
    assert pod["memory"]["workingSetBytes"] == 16 * MiB and pod["process_stats"] == {"process_count": 1}
    assert summary["node"]["systemContainers"][0]["memory"]["usageBytes"] == 50 * MiB


def test_disk_usage_walks_are_reused(node_tree: tuple[Path, Path, NodeSource]) -> None:
    cgroup_root, proc, node = node_tree
    clock = Clock()
    collector = StatsCollector(v1_reader(cgroup_root), proc=proc, clock=clock, disk_usage_max_age=60)
    scratch = node.pods[0].volumes[0].path

    def used() -> int:
        volumes = collector.collect(node)["pods"][0]["volume"]
        return next(v["usedBytes"] for v in volumes if v["name"] == "scratch")

    before = used()
    write(scratch / "more", "z" * 50_000)
    clock.now += 30
    assert used() == before
    clock.now += 31
    assert used() >= before + 50_000
    assert disk_usage(scratch)[1] == 3


def test_summary_document_times() -> None:
    readings = {"node": {"nodeName": "n", "startTime": 1690000000.0, "cpu": {"time": 1700000000.75,
                                                                             "usageCoreNanoSeconds": 5}},
                "pods": [{"podRef": {"name": "p", "namespace": "d", "uid": "u"}, "startTime": 1699999999.9,
                          "containers": [{"name": "c", "startTime": 1699999999.0, "logs": {"time": 1700000000.0}}]}]}
    assert summary_document(readings) == {
        "node": {"nodeName": "n", "startTime": "2023-07-22T04:26:40Z",
                 "cpu": {"time": "2023-11-14T22:13:20Z", "usageCoreNanoSeconds": 5}},
        "pods": [{"podRef": {"name": "p", "namespace": "d", "uid": "u"}, "startTime": "2023-11-14T22:13:19Z",
                  "containers": [{"name": "c", "startTime": "2023-11-14T22:13:19Z",
                                  "logs": {"time": "2023-11-14T22:13:20Z"}}]}]}


def test_resource_metrics_text() -> None:
    t = 1700000000.123
    readings = {
        "node": {"cpu": {"time": t, "usageCoreNanoSeconds": 1234567890123}, "memory": {"time": t,
                                                                                      "workingSetBytes": 1430994944},
                 "swap": {"time": t, "swapUsageBytes": 0}},
        "pods": [{"podRef": {"name": "web-1", "namespace": "prod", "uid": "u"},
                  "cpu": {"time": t, "usageCoreNanoSeconds": 250_000_000},
                  "memory": {"time": t, "workingSetBytes": 4096},
                  "containers": [
                      {"name": "b", "startTime": 1699999999.5, "cpu": {"time": t, "usageCoreNanoSeconds": 2_000_000},
                       "memory": {"time": t, "workingSetBytes": 0}},
                      {"name": 'a"x', "startTime": 1699999990.0, "cpu": {"time": t, "usageCoreNanoSeconds": 5}},
                  ]}],
    }
    assert resource_metrics(readings) == """\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="a\\"x",namespace="prod",pod="web-1"} 5e-09 1700000000123
container_cpu_usage_seconds_total{container="b",namespace="prod",pod="web-1"} 0.002 1700000000123
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="b",namespace="prod",pod="web-1"} 0 1700000000123
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="a\\"x",namespace="prod",pod="web-1"} 1.69999999e+09
container_start_time_seconds{container="b",namespace="prod",pod="web-1"} 1.6999999995e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 1234.567890123 1700000000123
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.430994944e+09 1700000000123
# HELP node_swap_usage_bytes [ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems
# TYPE node_swap_usage_bytes gauge
node_swap_usage_bytes 0 1700000000123
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="prod",pod="web-1"} 0.25 1700000000123
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="prod",pod="web-1"} 4096 1700000000123
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
"""


def test_resource_metrics_when_readings_failed() -> None:
    assert resource_metrics(None) == (
        "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n"
        "# TYPE resource_scrape_error gauge\nresource_scrape_error 1\n")
