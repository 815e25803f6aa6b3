"""Container cgroups through the cgroupfs files (no systemd): creating, limiting, measuring and removing them.
Written for cgroups v1 and hybrid hosts (v1 controllers, cgroup2 mounted at /sys/fs/cgroup/unified without
controllers); a pure cgroup2 host works too. A cgroup is named by its path below the hierarchy roots, the
`cgroupsPath` of the runtime spec, e.g. "/pocketkube/<id>"."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pocketkube.engine.runtime.spec import Resources

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED = "unified"  # key of the cgroup2 hierarchy in controller_dirs()
V1_CONTROLLERS = {"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc",
                  "net_cls", "net_prio", "perf_event", "pids", "rdma"}
# The kernel reports "no limit" as the largest page-aligned counter; anything this big is no limit at all.
_UNLIMITED = 1 << 62
_POLL = 0.01


class CgroupError(RuntimeError):
    pass


@dataclass(frozen=True)
class _Hierarchy:
    mount: Path
    controllers: frozenset[str]
    unified: bool


@dataclass
class CgroupStats:
    cpu_usage_ns: int
    cpu_user_ns: int
    cpu_system_ns: int
    throttled_periods: int
    throttled_ns: int
    nr_periods: int
    memory_usage: int
    memory_limit: int | None
    memory_working_set: int  # usage minus inactive file pages, what cadvisor and the kubelet evict on
    memory_rss: int
    memory_cache: int
    memory_max_usage: int
    memory_page_faults: int        # minor and major, of everything below too
    memory_major_page_faults: int
    swap_usage: int | None         # None when the kernel does not account swap per cgroup
    oom_kills: int
    pids_current: int
    pids_limit: int | None


# --- the hierarchies ---------------------------------------------------------------------------------


def mode() -> str:
    """The host's cgroup layout: "v2" (one cgroup2 hierarchy), "hybrid" (v1 controllers plus a cgroup2
    without controllers) or "v1"."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return "v2"
    if (CGROUP_ROOT / UNIFIED / "cgroup.controllers").exists():
        return "hybrid"
    return "v1"


@lru_cache(maxsize=4)
def _hierarchies(root: Path) -> tuple[_Hierarchy, ...]:
    """The cgroup mounts below root, from our mount table (hierarchies do not change while we run)."""
    if (root / "cgroup.controllers").exists():
        return (_Hierarchy(root, frozenset((root / "cgroup.controllers").read_text().split()), True),)
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields, _, tail = line.partition(" - ")
            fstype, _source, options = (tail.split() + ["", "", ""])[:3]
            mount_point = Path(fields.split()[4].replace("\\040", " "))
            if mount_point.parent != root:
                continue
            if fstype == "cgroup2":
                found.append(_Hierarchy(mount_point, frozenset(), True))
            elif fstype == "cgroup":
                controllers = {o for o in options.split(",") if o in V1_CONTROLLERS or o.startswith("name=")}
                found.append(_Hierarchy(mount_point, frozenset(controllers), False))
    return tuple(found)


def _relative(path: str) -> Path:
    parts = [p for p in path.split("/") if p]
    if not path.startswith("/") or not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"invalid cgroup path {path!r}: expected an absolute path below the root, e.g. /pocketkube/x")
    return Path(*parts)


def hierarchy_roots() -> dict[str, Path]:
    """Controller (or "name=systemd", or "unified" for cgroup2) -> the mount point of its hierarchy."""
    roots: dict[str, Path] = {}
    for hierarchy in _hierarchies(CGROUP_ROOT):
        if hierarchy.unified:
            roots[UNIFIED] = hierarchy.mount
        for controller in hierarchy.controllers:
            roots[controller] = hierarchy.mount
    return roots


def controller_dirs(path: str) -> dict[str, Path]:
    """Controller (or "name=systemd", or "unified" for cgroup2) -> the cgroup's directory in it."""
    relative = _relative(path)
    return {controller: root / relative for controller, root in hierarchy_roots().items()}


def _directories(path: str) -> list[tuple[_Hierarchy, Path]]:
    """One directory per hierarchy (co-mounted controllers share theirs)."""
    relative = _relative(path)
    hierarchies = _hierarchies(CGROUP_ROOT)
    if not hierarchies:
        raise CgroupError(f"no cgroup hierarchy is mounted below {CGROUP_ROOT}")
    return [(h, h.mount / relative) for h in hierarchies]


def _dir_for(path: str, *controllers: str) -> Path | None:
    """The cgroup's directory in the first hierarchy having one of the controllers (cgroup2 has them all)."""
    dirs = controller_dirs(path)
    for controller in controllers:
        if controller in dirs:
            return dirs[controller]
    return dirs.get(UNIFIED) if mode() == "v2" else None


def swap_accounting() -> bool:
    """Whether this kernel accounts swap per cgroup, i.e. whether a memory+swap limit can be written."""
    if mode() == "v2":
        return any(CGROUP_ROOT.glob("*/memory.swap.max"))
    memory = next((h.mount for h in _hierarchies(CGROUP_ROOT) if "memory" in h.controllers), None)
    return memory is not None and (memory / "memory.memsw.limit_in_bytes").exists()


# --- reading -----------------------------------------------------------------------------------------


def _read(directory: Path, name: str) -> str:
    return (directory / name).read_text().strip()


def _read_int(directory: Path | None, name: str, default: int = 0) -> int:
    if directory is None or not (directory / name).exists():
        return default
    return int(_read(directory, name))


def _read_limit(directory: Path | None, name: str) -> int | None:
    if directory is None or not (directory / name).exists():
        return None
    text = _read(directory, name)
    if text == "max":
        return None
    value = int(text)
    return None if value >= _UNLIMITED else value


def _read_keyed(directory: Path | None, name: str) -> dict[str, int]:
    """A "key value" per line file (memory.stat, cpu.stat, memory.oom_control, memory.events)."""
    if directory is None or not (directory / name).exists():
        return {}
    values = {}
    for line in _read(directory, name).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def _v1_stats(dirs: Mapping[str, Path]) -> CgroupStats | None:
    memory = dirs.get("memory")
    if memory is None or not memory.is_dir():
        return None
    cpuacct, cpu, pids_dir = dirs.get("cpuacct"), dirs.get("cpu"), dirs.get("pids")
    if cpuacct is not None and (cpuacct / "cpuacct.usage_user").exists():
        user_ns, system_ns = _read_int(cpuacct, "cpuacct.usage_user"), _read_int(cpuacct, "cpuacct.usage_sys")
    else:  # older kernels: clock ticks only
        ticks = _read_keyed(cpuacct, "cpuacct.stat")
        to_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        user_ns, system_ns = ticks.get("user", 0) * to_ns, ticks.get("system", 0) * to_ns
    cpu_stat = _read_keyed(cpu, "cpu.stat")
    memory_stat = _read_keyed(memory, "memory.stat")
    usage = _read_int(memory, "memory.usage_in_bytes")
    # memory+swap is only there with swap accounting (swapaccount=1)
    with_swap = _read_int(memory, "memory.memsw.usage_in_bytes", -1)
    return CgroupStats(
        cpu_usage_ns=_read_int(cpuacct, "cpuacct.usage"), cpu_user_ns=user_ns, cpu_system_ns=system_ns,
        throttled_periods=cpu_stat.get("nr_throttled", 0), throttled_ns=cpu_stat.get("throttled_time", 0),
        nr_periods=cpu_stat.get("nr_periods", 0),
        memory_usage=usage, memory_limit=_read_limit(memory, "memory.limit_in_bytes"),
        memory_working_set=max(0, usage - memory_stat.get("total_inactive_file", 0)),
        memory_rss=memory_stat.get("total_rss", 0), memory_cache=memory_stat.get("total_cache", 0),
        memory_max_usage=_read_int(memory, "memory.max_usage_in_bytes"),
        memory_page_faults=memory_stat.get("total_pgfault", 0),
        memory_major_page_faults=memory_stat.get("total_pgmajfault", 0),
        swap_usage=max(0, with_swap - usage) if with_swap >= 0 else None,
        oom_kills=_read_keyed(memory, "memory.oom_control").get("oom_kill", 0),
        pids_current=_read_int(pids_dir, "pids.current"), pids_limit=_read_limit(pids_dir, "pids.max"))


def _v2_stats(directory: Path) -> CgroupStats | None:
    if not directory.is_dir():
        return None
    cpu_stat = _read_keyed(directory, "cpu.stat")
    memory_stat = _read_keyed(directory, "memory.stat")
    usage = _read_int(directory, "memory.current")
    return CgroupStats(
        cpu_usage_ns=cpu_stat.get("usage_usec", 0) * 1000, cpu_user_ns=cpu_stat.get("user_usec", 0) * 1000,
        cpu_system_ns=cpu_stat.get("system_usec", 0) * 1000, throttled_periods=cpu_stat.get("nr_throttled", 0),
        throttled_ns=cpu_stat.get("throttled_usec", 0) * 1000, nr_periods=cpu_stat.get("nr_periods", 0),
        memory_usage=usage, memory_limit=_read_limit(directory, "memory.max"),
        memory_working_set=max(0, usage - memory_stat.get("inactive_file", 0)),
        memory_rss=memory_stat.get("anon", 0), memory_cache=memory_stat.get("file", 0),
        memory_max_usage=_read_int(directory, "memory.peak"),
        memory_page_faults=memory_stat.get("pgfault", 0), memory_major_page_faults=memory_stat.get("pgmajfault", 0),
        swap_usage=_read_int(directory, "memory.swap.current") if (directory / "memory.swap.current").exists()
        else None,
        oom_kills=_read_keyed(directory, "memory.events").get("oom_kill", 0),
        pids_current=_read_int(directory, "pids.current"), pids_limit=_read_limit(directory, "pids.max"))


def read_stats(path: str) -> CgroupStats | None:
    """Usage and limits of the cgroup (and everything below it); None when it does not exist (any more)."""
    return read_stats_in(controller_dirs(path), v2=mode() == "v2")


def read_stats_in(dirs: Mapping[str, Path], *, v2: bool) -> CgroupStats | None:
    """read_stats of a cgroup given by its directory in each hierarchy (controller -> directory, as
    controller_dirs() maps them; "unified" alone for cgroup2). Reads a root cgroup too, and trees laid
    out like /sys/fs/cgroup elsewhere."""
    try:
        return _v2_stats(dirs[UNIFIED]) if v2 else _v1_stats(dirs)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENODEV):  # removed while we read
            return None
        raise


def oom_killed(path: str) -> bool:
    """Whether the kernel's OOM killer killed a process of this cgroup (kernels >= 4.13 count this)."""
    try:
        if mode() == "v2":
            return _read_keyed(controller_dirs(path)[UNIFIED], "memory.events").get("oom_kill", 0) > 0
        return _read_keyed(controller_dirs(path).get("memory"), "memory.oom_control").get("oom_kill", 0) > 0
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENODEV):
            return False
        raise


def _procs_below(directory: Path) -> set[int]:
    found: set[int] = set()
    for current, _subdirs, _files in os.walk(directory):
        try:
            found.update(int(line) for line in Path(current, "cgroup.procs").read_text().split())
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENODEV):
                raise
    return found


def pids(path: str) -> list[int]:
    """Process ids in the cgroup and its descendants (empty when the cgroup does not exist)."""
    directory = _dir_for(path, "pids", "memory")
    return sorted(_procs_below(directory)) if directory is not None else []


# --- creating and limiting ---------------------------------------------------------------------------


def _deepest_existing(mount: Path, relative: Path) -> tuple[Path, tuple[str, ...]]:
    """The deepest level of `relative` that exists below `mount` already, and the parts still missing below
    it (a pod's cgroup usually lacks only its last level)."""
    parts = relative.parts
    for depth in range(len(parts), -1, -1):
        existing = mount.joinpath(*parts[:depth])
        if existing.is_dir():
            return existing, parts[depth:]
    return mount, parts


def _mkdir_cpuset(mount: Path, relative: Path) -> None:
    """A new v1 cpuset cgroup starts with no cpus and no memory nodes and refuses tasks; inherit them."""
    current, missing = _deepest_existing(mount, relative)
    for part in missing:
        child = current / part
        child.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not _read(child, name):
                (child / name).write_text(_read(current, name))
        current = child


def _mkdir_v2(mount: Path, relative: Path) -> None:
    """Each level hands all its controllers down, or the new cgroup could not be limited (a hybrid host's
    cgroup2 has no controllers to hand down)."""
    current, missing = _deepest_existing(mount, relative)
    for part in missing:
        enabled = set(_read(current, "cgroup.subtree_control").split())
        for controller in _read(current, "cgroup.controllers").split():
            if controller not in enabled:
                try:
                    (current / "cgroup.subtree_control").write_text(f"+{controller}")
                except OSError:
                    pass  # e.g. a parent with processes of its own; setting that limit then fails clearly
        current = current / part
        current.mkdir(exist_ok=True)


def ensure(path: str) -> None:
    """Creates the cgroup (and its parents) in every hierarchy; existing ones are fine, and the levels that
    exist already are left as they are."""
    for hierarchy, directory in _directories(path):
        if directory.is_dir():
            continue
        relative = directory.relative_to(hierarchy.mount)
        if hierarchy.unified:
            _mkdir_v2(hierarchy.mount, relative)
        elif "cpuset" in hierarchy.controllers:
            _mkdir_cpuset(hierarchy.mount, relative)
        else:
            directory.mkdir(parents=True, exist_ok=True)


def _write(directory: Path, name: str, value: object) -> None:
    try:
        (directory / name).write_text(str(value))
    except OSError as err:
        raise CgroupError(f"cannot set {directory / name} to {value}: {err.strerror}") from err


def _set_v1_memory(directory: Path, limit: int | None, swap: int | None) -> None:
    if limit is None:
        return
    if swap is None:
        _write(directory, "memory.limit_in_bytes", limit)
        return
    # The kernel keeps memory <= memory+swap at every step, so the order depends on the direction.
    current_swap = _read_int(directory, "memory.memsw.limit_in_bytes")
    if swap == -1 or swap > current_swap:
        _write(directory, "memory.memsw.limit_in_bytes", swap)
        _write(directory, "memory.limit_in_bytes", limit)
    else:
        _write(directory, "memory.limit_in_bytes", limit)
        _write(directory, "memory.memsw.limit_in_bytes", swap)


def _set_v1(path: str, resources: Resources) -> None:
    dirs = controller_dirs(path)
    memory = dirs.get("memory")
    if memory is not None:
        swap = resources.swap_limit() if swap_accounting() else None
        _set_v1_memory(memory, resources.memory, swap)
        if resources.memory_reservation is not None:
            _write(memory, "memory.soft_limit_in_bytes", resources.memory_reservation)
    cpu = dirs.get("cpu")
    if cpu is not None:
        if resources.cpu_shares is not None:
            _write(cpu, "cpu.shares", resources.cpu_shares)
        if resources.effective_cpu_period() is not None:
            _write(cpu, "cpu.cfs_period_us", resources.effective_cpu_period())
        if resources.cpu_quota is not None:
            _write(cpu, "cpu.cfs_quota_us", resources.cpu_quota)
    if resources.cpuset_cpus and "cpuset" in dirs:
        _write(dirs["cpuset"], "cpuset.cpus", resources.cpuset_cpus)
    if resources.effective_pids_limit() is not None and "pids" in dirs:
        limit = resources.effective_pids_limit()
        _write(dirs["pids"], "pids.max", "max" if limit == -1 else limit)


def _set_v2(path: str, resources: Resources) -> None:
    directory = controller_dirs(path)[UNIFIED]
    if resources.memory is not None:
        _write(directory, "memory.max", resources.memory)
        swap = resources.swap_limit() if swap_accounting() else None
        if swap is not None:  # cgroup2 limits swap alone, not memory+swap
            _write(directory, "memory.swap.max", "max" if swap == -1 else swap - resources.memory)
    if resources.memory_reservation is not None:
        _write(directory, "memory.low", resources.memory_reservation)
    if resources.cpu_shares is not None:  # the conversion runc and crun use
        _write(directory, "cpu.weight", 1 + ((resources.cpu_shares - 2) * 9999) // 262142)
    if resources.cpu_quota is not None:
        quota = "max" if resources.cpu_quota < 0 else resources.cpu_quota
        _write(directory, "cpu.max", f"{quota} {resources.effective_cpu_period()}")
    if resources.cpuset_cpus:
        _write(directory, "cpuset.cpus", resources.cpuset_cpus)
    if resources.effective_pids_limit() is not None:
        limit = resources.effective_pids_limit()
        _write(directory, "pids.max", "max" if limit == -1 else limit)


def set_limits(path: str, resources: Resources) -> None:
    """Applies the limits to an existing cgroup (a pod's, say). Fields left None are not touched."""
    if not any(d.is_dir() for _, d in _directories(path)):
        raise CgroupError(f"cgroup {path} does not exist")
    if mode() == "v2":
        _set_v2(path, resources)
    else:
        _set_v1(path, resources)


# --- removing ----------------------------------------------------------------------------------------


def _all_procs(path: str) -> set[int]:
    found: set[int] = set()
    for _, directory in _directories(path):
        found |= _procs_below(directory)
    return found


def _wait_for_state(directory: Path, name: str, wanted: str, deadline: float) -> bool:
    while _read(directory, name) != wanted:
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def _sigkill(targets: set[int]) -> None:
    for pid in targets:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill(path: str, deadline: float) -> None:
    """SIGKILLs every process of the cgroup and below. Freezing first makes it atomic: nothing forks in
    between (cgroup2's cgroup.kill is atomic by itself)."""
    dirs = controller_dirs(path)
    unified = dirs.get(UNIFIED)
    if mode() == "v2" and unified is not None and (unified / "cgroup.kill").exists():
        _write(unified, "cgroup.kill", 1)
        return
    freezer = dirs.get("freezer")
    if freezer is not None and freezer.is_dir():
        _write(freezer, "freezer.state", "FROZEN")
        try:
            frozen = _wait_for_state(freezer, "freezer.state", "FROZEN", min(deadline, time.monotonic() + 1))
            _sigkill(_all_procs(path))
        finally:
            _write(freezer, "freezer.state", "THAWED")  # the pending SIGKILLs take effect now
        if frozen:
            return
    # no freezer, or it did not freeze in time: a fork may slip through, so kill until nothing is left
    while left := _all_procs(path):
        _sigkill(left)
        if time.monotonic() >= deadline:
            break  # remove() reports what is left
        time.sleep(_POLL)


def _rmdir_tree(path: str, directory: Path, deadline: float, timeout: float,
                on_busy: Callable[[], None] | None = None) -> None:
    """Removes the directory and its sub-cgroups, deepest first; a busy one is retried until the deadline,
    after calling `on_busy` (once) to empty it."""
    below = [Path(current) for current, _, _ in os.walk(directory, topdown=False)]
    for cgroup in below:
        while True:
            try:
                cgroup.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as err:
                if err.errno != errno.EBUSY:
                    raise CgroupError(f"cannot remove cgroup {cgroup}: {err.strerror}") from err
                if on_busy is not None:
                    on_busy()
                    on_busy = None
                    continue
                if time.monotonic() >= deadline:
                    left = sorted(_procs_below(cgroup))
                    raise CgroupError(f"cannot remove cgroup {path}: still busy after {timeout}s "
                                      f"(processes {left or 'exiting'} in {cgroup})") from err
                time.sleep(_POLL)


def exists(path: str) -> bool:
    """Whether the cgroup exists in any hierarchy (a few stats: cheap enough to skip a worker thread)."""
    return any(directory.is_dir() for _, directory in _directories(path))


def remove(path: str, *, kill: bool = False, timeout: float = 5.0) -> None:
    """Removes the cgroup and all below it from every hierarchy; missing ones are fine. With kill=True its
    processes are SIGKILLed first; otherwise they must already be gone (waited for up to `timeout`)."""
    deadline = time.monotonic() + timeout
    directories = [d for _, d in _directories(path) if d.is_dir()]
    if not directories:
        return
    killed = False

    def kill_all() -> None:
        nonlocal killed
        if not killed:
            killed = True
            _kill(path, deadline)

    # An ended container's cgroups are empty, which one hierarchy tells: the freeze-and-kill (~1 ms) is then
    # left to a cgroup that refuses removal because someone is still in it.
    if kill and _procs_below(directories[0]):
        kill_all()
    for directory in directories:
        _rmdir_tree(path, directory, deadline, timeout, on_busy=kill_all if kill else None)
