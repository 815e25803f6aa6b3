"""Generated config.json documents run for real with runc and crun on a busybox rootfs; cgroups created,
measured, OOM-killed and removed; pinned namespaces joined by containers and unpinned without leftovers."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from engine_harness import make_busybox_rootfs

from pocketkube.engine.runtime import cgroups, mountns, namespaces
from pocketkube.engine.runtime.spec import (
    ALL_CAPABILITY_NAMES,
    DEFAULT_CAPABILITIES,
    ContainerSpec,
    Process,
    Resources,
    build_spec,
    effective_capabilities,
    host_devices,
    merge_env,
)
from pocketkube.engine.runtime.users import resolve_user

MiB = 1024 * 1024
ENV = merge_env([], [])


def _cap_mask(names: list[str]) -> str:
    return f"{sum(1 << ALL_CAPABILITY_NAMES.index(n) for n in names):016x}"


def _mountinfo(pid: int | str = "self") -> str:
    return Path(f"/proc/{pid}/mountinfo").read_text()


def _wait_until(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox files plus an `app` user (1000) who is also in the group `extra` (2000)."""
    root = make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    (root / "home" / "app").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
    return root


@pytest.fixture(scope="module")
def cgroup_parent() -> Iterator[str]:
    parent = f"/pocketkube-test-{secrets.token_hex(4)}"
    yield parent
    cgroups.remove(parent, kill=True)


@dataclass
class Runtime:
    name: str
    state_root: Path

    def command(self, *args: str) -> list[str]:
        if self.name == "runc":
            return ["runc", "--root", str(self.state_root), *args]
        # crun refuses a hybrid host; in a mount namespace of its own without the cgroup2 mount it sees v1
        inner = shlex.join(["crun", "--root", str(self.state_root), *args])
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                f"umount /sys/fs/cgroup/unified && exec {inner}"]

    def run(self, bundle: Path, cid: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command("run", "--bundle", str(bundle), cid), capture_output=True, text=True,
                              timeout=30)

    def run_detached(self, bundle: Path, cid: str) -> None:
        with open(bundle / "output", "wb") as output:
            subprocess.run(self.command("run", "--detach", "--bundle", str(bundle), cid), stdin=subprocess.DEVNULL,
                           stdout=output, stderr=output, check=True, timeout=30)

    def state(self, cid: str) -> dict:
        return json.loads(subprocess.run(self.command("state", cid), capture_output=True, text=True,
                                         check=True).stdout)

    def delete_all(self) -> None:
        listing = subprocess.run(self.command("list", "--quiet"), capture_output=True, text=True).stdout
        for cid in listing.split():
            subprocess.run(self.command("delete", "--force", cid), capture_output=True)


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    directory = Path(f"/run/pocketkube-test-{secrets.token_hex(4)}")
    directory.mkdir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module", params=["runc", "crun"])
def runtime(request, state_dir: Path) -> Iterator[Runtime]:
    runtime = Runtime(request.param, state_dir / request.param)
    yield runtime
    runtime.delete_all()


@pytest.fixture(scope="module")
def runc(state_dir: Path) -> Iterator[Runtime]:
    runtime = Runtime("runc", state_dir / "runc-detached")
    yield runtime
    runtime.delete_all()


def _bundle(tmp_path: Path, spec: ContainerSpec) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(build_spec(spec)))
    return bundle


def _script_spec(rootfs: Path, script: str, **kw) -> ContainerSpec:
    process = kw.pop("process", None) or Process(args=["sh", "-c", script], env=ENV, **kw.pop("process_kw", {}))
    return ContainerSpec(process=process, rootfs=str(rootfs), **kw)


def _report(result: subprocess.CompletedProcess) -> dict[str, str]:
    """The container printed `key=value` lines; failures show the runtime's own words."""
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


# --- config.json run for real ---------------------------------------------------------------------------

DEFAULT_SCRIPT = """
echo pid=$$
echo cmdline=$(tr '\\0' ' ' < /proc/1/cmdline)
echo hostname=$(hostname)
echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
echo memsw=$(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes)
echo pids_max=$(cat /sys/fs/cgroup/pids/pids.max)
echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
echo capeff=$(grep CapEff /proc/self/status | cut -f2)
echo keys_bytes=$(wc -c < /proc/keys)
echo firmware=$(ls /sys/firmware | wc -l)
echo nofile=$(ulimit -n)
echo rootfs_write=$(touch /written 2>&1 && echo ok)
echo sys_write=$(mkdir /sys/kernel/x 2>&1 && echo ok)
echo shm=$(grep ' /dev/shm ' /proc/self/mountinfo | grep -o 'size=[0-9a-z]*')
"""


def test_default_container_runs_as_specified(runtime: Runtime, rootfs: Path, cgroup_parent: str, tmp_path: Path):
    resources = Resources.from_cpus(0.5, memory=64 * MiB, pids_limit=50)
    spec = _script_spec(rootfs, DEFAULT_SCRIPT, hostname="boxy", readonly_rootfs=True,
                        cgroups_path=f"{cgroup_parent}/{runtime.name}-default", resources=resources,
                        shm_size=8 * MiB, process_kw={"cap_drop": ["NET_RAW"]})
    report = _report(runtime.run(_bundle(tmp_path, spec), f"default-{secrets.token_hex(3)}"))
    assert report["pid"] == "1"
    assert report["cmdline"].startswith("sh -c")
    assert report["hostname"] == "boxy"
    assert report["memory"] == str(64 * MiB)
    assert report["memsw"] == str(128 * MiB if cgroups.swap_accounting() else 0)
    assert report["pids_max"] == "50"
    assert report["quota"] == "50000"
    assert report["capeff"] == _cap_mask([c for c in DEFAULT_CAPABILITIES if c != "CAP_NET_RAW"])
    assert report["keys_bytes"] == "0"  # masked with /dev/null
    assert report["firmware"] == "0"    # masked with an empty read-only tmpfs
    assert report["nofile"] == str(build_spec(spec)["process"]["rlimits"][0]["soft"])
    assert "Read-only file system" in report["rootfs_write"]
    assert "Read-only file system" in report["sys_write"]
    assert report["shm"] == "size=8192k"


def test_privileged_container(runtime: Runtime, rootfs: Path, cgroup_parent: str, tmp_path: Path):
    block = next(d for d in host_devices() if d["type"] == "b")
    script = f"""
echo capeff=$(grep CapEff /proc/self/status | cut -f2)
echo keys_bytes=$(wc -c < /proc/keys)
echo sys=$(grep ' /sys ' /proc/self/mountinfo | cut -d' ' -f6 | cut -d, -f1)
echo block=$(stat -c '%t:%T' {block['path']})
"""
    spec = _script_spec(rootfs, script, privileged=True, cgroups_path=f"{cgroup_parent}/{runtime.name}-privileged")
    report = _report(runtime.run(_bundle(tmp_path, spec), f"privileged-{secrets.token_hex(3)}"))
    assert report["capeff"] == _cap_mask(effective_capabilities([], [], True))
    assert int(report["keys_bytes"]) > 0
    assert report["sys"] == "rw"
    assert report["block"] == f"{block['major']:x}:{block['minor']:x}"


def test_user_from_the_image(runtime: Runtime, rootfs: Path, cgroup_parent: str, tmp_path: Path):
    uid, gid, groups, home = resolve_user(rootfs, "app")
    process = Process(args=["sh", "-c", "echo id=$(id); echo capeff=$(grep CapEff /proc/self/status | cut -f2);"
                                        "echo capbnd=$(grep CapBnd /proc/self/status | cut -f2); echo home=$HOME"],
                      env=[*ENV, f"HOME={home}"], uid=uid, gid=gid, additional_gids=groups)
    spec = _script_spec(rootfs, "", process=process, cgroups_path=f"{cgroup_parent}/{runtime.name}-user")
    report = _report(runtime.run(_bundle(tmp_path, spec), f"user-{secrets.token_hex(3)}"))
    # busybox id lists getgroups(): the primary group is one of them, as Docker and containerd set it
    assert report["id"] == "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)"
    assert report["capeff"] == "0000000000000000"
    assert report["capbnd"] == _cap_mask(DEFAULT_CAPABILITIES)
    assert report["home"] == "/home/app"


# --- cgroups ------------------------------------------------------------------------------------------------


def _enter(path: str, pid: int) -> None:
    """Moves a process into the cgroup in every hierarchy (what the runtime does for a container)."""
    for directory in {d for d in cgroups.controller_dirs(path).values()}:
        (directory / "cgroup.procs").write_text(str(pid))


def test_cgroup_lifecycle(cgroup_parent: str):
    pod = f"{cgroup_parent}/pod-lifecycle"
    cgroups.ensure(pod)
    cgroups.ensure(f"{pod}/c1")
    cgroups.ensure(pod)  # existing is fine
    dirs = cgroups.controller_dirs(pod)
    assert {"memory", "cpu", "cpuacct", "pids", "freezer", "cpuset", "unified"} <= set(dirs)
    assert all(d.is_dir() for d in dirs.values())
    assert (dirs["cpuset"] / "c1" / "cpuset.cpus").read_text().strip()  # inherited, so tasks may join
    cgroups.ensure(f"{pod}/deep/er")  # two levels missing below an existing one
    assert (dirs["cpuset"] / "deep" / "er" / "cpuset.mems").read_text().strip()
    assert (dirs["memory"] / "deep" / "er").is_dir() and (dirs["unified"] / "deep" / "er").is_dir()

    cgroups.set_limits(pod, Resources(memory=48 * MiB, cpu_shares=256, cpu_quota=20_000, pids_limit=30))
    assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(48 * MiB)
    assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "20000"
    assert (dirs["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (dirs["cpu"] / "cpu.shares").read_text().strip() == "256"
    cgroups.set_limits(pod, Resources(memory=96 * MiB))  # raising memory above the old memory+swap
    assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(96 * MiB)

    # the shell forks its two children only once it is inside the cgroup
    workers = subprocess.Popen(["sh", "-c", "read go; sleep 60 & sleep 60 & wait"], stdin=subprocess.PIPE)
    try:
        _enter(f"{pod}/c1", workers.pid)
        workers.stdin.write(b"go\n")
        workers.stdin.close()
        children = _wait_until(lambda: len(cgroups.pids(pod)) == 3 and cgroups.pids(pod), what="3 processes")
        assert workers.pid in children and cgroups.pids(f"{pod}/c1") == children
        stats = cgroups.read_stats(pod)
        assert stats.pids_current == 3 and stats.pids_limit == 30
        assert stats.memory_limit == 96 * MiB and 0 < stats.memory_working_set <= stats.memory_usage
        assert stats.cpu_usage_ns > 0 and stats.oom_kills == 0
        assert not cgroups.oom_killed(pod)

        with pytest.raises(cgroups.CgroupError, match=f"cannot remove cgroup {pod}: still busy"):
            cgroups.remove(pod, timeout=0.2)
        started = time.monotonic()
        cgroups.remove(pod, kill=True)
        assert time.monotonic() - started < 2
        assert workers.wait(timeout=5) == -9
    finally:
        workers.kill()
        workers.wait()
    assert not any(d.exists() for d in dirs.values())
    assert cgroups.read_stats(pod) is None and cgroups.pids(pod) == [] and not cgroups.oom_killed(pod)
    cgroups.remove(pod, kill=True)  # gone already: fine


def test_removal_kills_a_process_found_in_one_hierarchy_only(cgroup_parent: str):
    """remove(kill=True) skips the freeze-and-kill when the first hierarchy's cgroup is empty; a process that
    sits in the cgroup of another hierarchy only (moved there by hand) is still found and killed."""
    path = f"{cgroup_parent}/one-hierarchy"
    cgroups.ensure(path)
    dirs = cgroups.controller_dirs(path)
    last = list(dirs.values())[-1]
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (last / "cgroup.procs").write_text(str(sleeper.pid))
        cgroups.remove(path, kill=True)
        assert sleeper.wait(timeout=5) == -9
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not any(d.exists() for d in dirs.values())


def test_cgroup_paths_are_checked():
    for bad in ("", "/", "relative/x", "/a/../b"):
        with pytest.raises(ValueError, match="invalid cgroup path"):
            cgroups.remove(bad, kill=True)
    with pytest.raises(cgroups.CgroupError, match="does not exist"):
        cgroups.set_limits(f"/pocketkube-test-missing-{secrets.token_hex(4)}", Resources(pids_limit=5))


def test_kill_and_stats_of_a_running_container(runc: Runtime, rootfs: Path, cgroup_parent: str, tmp_path: Path):
    path = f"{cgroup_parent}/running"
    spec = _script_spec(rootfs, "sleep 600 & exec sleep 600", cgroups_path=path,
                        resources=Resources(memory=32 * MiB, pids_limit=10))
    cid = f"running-{secrets.token_hex(3)}"
    runc.run_detached(_bundle(tmp_path, spec), cid)
    init = runc.state(cid)["pid"]
    assert _wait_until(lambda: len(cgroups.pids(path)) == 2, what="2 processes") and init in cgroups.pids(path)
    stats = cgroups.read_stats(path)
    assert stats.pids_current == 2 and stats.pids_limit == 10 and stats.memory_limit == 32 * MiB
    cgroups.remove(path, kill=True)
    assert _wait_until(lambda: runc.state(cid)["status"] == "stopped", what="container stopped")
    assert cgroups.read_stats(path) is None


def test_oom_killed(runc: Runtime, rootfs: Path, cgroup_parent: str, tmp_path: Path):
    path = f"{cgroup_parent}/oom"
    spec = _script_spec(rootfs, "exec tail /dev/zero", cgroups_path=path, resources=Resources(memory=16 * MiB))
    cid = f"oom-{secrets.token_hex(3)}"
    runc.run_detached(_bundle(tmp_path, spec), cid)
    _wait_until(lambda: runc.state(cid)["status"] == "stopped", what="the OOM kill")
    assert cgroups.oom_killed(path)
    stats = cgroups.read_stats(path)
    assert stats.oom_kills >= 1 and stats.memory_max_usage >= 15 * MiB
    subprocess.run(runc.command("delete", cid), check=True)
    cgroups.remove(path)


def test_cgroup2_code_path_on_the_unified_hierarchy(monkeypatch):
    """The hybrid host's cgroup2 mount, taken as the root, is a real cgroup2 tree (without controllers):
    the v2 path creates, lists, measures and kills through it."""
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", Path("/sys/fs/cgroup/unified"))
    assert cgroups.mode() == "v2"
    path = f"/pocketkube-test-v2-{secrets.token_hex(4)}/c1"
    cgroups.ensure(path)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (cgroups.controller_dirs(path)["unified"] / "cgroup.procs").write_text(str(sleeper.pid))
        assert cgroups.pids(path.rsplit("/", 1)[0]) == [sleeper.pid]
        stats = cgroups.read_stats(path)
        assert stats is not None and stats.memory_limit is None and stats.pids_limit is None
        cgroups.remove(path.rsplit("/", 1)[0], kill=True)
        assert sleeper.wait(timeout=5) == -9
    finally:
        sleeper.kill()
        sleeper.wait()
        cgroups.remove(path.rsplit("/", 1)[0], kill=True)
    assert cgroups.read_stats(path) is None


# --- pinned namespaces --------------------------------------------------------------------------------------


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    directory = Path(f"/run/pocketkube-test-{secrets.token_hex(4)}") / "sandbox"
    yield directory
    namespaces.remove_pinned(directory)
    shutil.rmtree(directory.parent, ignore_errors=True)


def test_container_joins_pinned_namespaces(runtime: Runtime, rootfs: Path, cgroup_parent: str, pin_dir: Path,
                                           tmp_path: Path):
    pinned = namespaces.create_pinned(pin_dir, hostname="pod-host")
    assert set(pinned) == {"net", "ipc", "uts"} and all(namespaces.is_pinned(p) for p in pinned.values())
    script = """
echo hostname=$(hostname)
echo net=$(readlink /proc/self/ns/net)
echo ipc=$(readlink /proc/self/ns/ipc)
echo links=$(ls /sys/class/net)
echo lo_flags=$(cat /sys/class/net/lo/flags)
"""
    spec = _script_spec(rootfs, script, hostname="not-used", cgroups_path=f"{cgroup_parent}/{runtime.name}-pod",
                        namespaces={"pid": None, "mount": None, "network": str(pinned["net"]),
                                    "ipc": str(pinned["ipc"]), "uts": str(pinned["uts"])})
    report = _report(runtime.run(_bundle(tmp_path, spec), f"pod-{secrets.token_hex(3)}"))
    assert report["hostname"] == "pod-host"
    assert report["net"] == f"net:[{os.stat(pinned['net']).st_ino}]"
    assert report["ipc"] == f"ipc:[{os.stat(pinned['ipc']).st_ino}]"
    assert report["links"] == "lo" and int(report["lo_flags"], 16) & 1  # IFF_UP

    namespaces.remove_pinned(pin_dir)
    assert str(pin_dir) not in _mountinfo()
    assert not pin_dir.exists()
    namespaces.remove_pinned(pin_dir)  # idempotent


def test_pin_the_pid_namespace_of_a_process(pin_dir: Path):
    init = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "60"])
    try:
        _wait_until(lambda: _children(init.pid), what="the namespace's init")
        [child] = _children(init.pid)
        pinned = namespaces.pin_process_namespace(pin_dir, "pid", child)
        assert pinned == pin_dir / "pid" and namespaces.is_pinned(pinned)
        assert os.stat(pinned).st_ino == os.stat(f"/proc/{child}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        with pytest.raises(namespaces.NamespaceError, match="already pins a namespace"):
            namespaces.pin_process_namespace(pin_dir, "pid", child)
    finally:
        init.kill()
        init.wait()
    with pytest.raises(ValueError, match="cannot pin namespace kind 'mnt'"):
        namespaces.pin_process_namespace(pin_dir, "mnt", os.getpid())
    with pytest.raises(namespaces.NamespaceError, match="cannot pin the net namespace of process 999999999"):
        namespaces.pin_process_namespace(pin_dir, "net", 999_999_999)
    assert not (pin_dir / "net").exists()
    namespaces.remove_pinned(pin_dir)
    assert str(pin_dir) not in _mountinfo() and not pin_dir.exists()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_unpinning_reaches_mount_namespaces_copied_later(pin_dir: Path):
    pinned = namespaces.create_pinned(pin_dir, ("net",))
    assert list(pinned) == ["net"]
    # a long-lived process in a mount namespace of its own (as a runtime's or monitor's may be)
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "slave", "sleep", "60"])
    try:
        own_mount_ns = os.readlink("/proc/self/ns/mnt")
        _wait_until(lambda: os.readlink(f"/proc/{holder.pid}/ns/mnt") != own_mount_ns, what="the unshare")
        assert str(pinned["net"]) in _mountinfo(holder.pid)  # copied
        namespaces.remove_pinned(pin_dir)
        _wait_until(lambda: str(pin_dir) not in _mountinfo(holder.pid), timeout=2, what="the unmount to propagate")
    finally:
        holder.kill()
        holder.wait()
    assert str(pin_dir) not in _mountinfo()


def test_spawn_without_mount_and_back_to_the_host():
    """A process spawned in a private copy of our mount namespace misses the hidden mount (crun's view on a
    hybrid host), our own namespace and the thread pool's keep it, and host_reentry brings a descendant back."""
    hidden = "/sys/fs/cgroup/unified"
    assert f" {hidden} " in _mountinfo(), "this host is cgroup hybrid"
    copy = mountns.spawn_without_mount(hidden, ["cat", "/proc/self/mountinfo"], stdout=subprocess.PIPE, text=True)
    seen, _ = copy.communicate(timeout=10)
    assert copy.returncode == 0 and "/proc " in seen and f" {hidden} " not in seen
    assert f" {hidden} " in _mountinfo()
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert f" {hidden} " in pool.submit(_mountinfo).result()
    reentry = mountns.host_reentry()
    assert reentry is not None and reentry[0] == shutil.which("nsenter")
    back = mountns.spawn_without_mount(hidden, [*reentry, "cat", "/proc/self/mountinfo"], stdout=subprocess.PIPE,
                                       text=True)
    seen, _ = back.communicate(timeout=10)
    assert back.returncode == 0 and f" {hidden} " in seen
    with pytest.raises(FileNotFoundError):
        mountns.spawn_without_mount(hidden, ["/no/such/program"])
    with pytest.raises(OSError, match="unmount /no/such/mount"):
        mountns.spawn_without_mount("/no/such/mount", ["true"])


def test_host_reentry_needs_a_namespace_a_system_process_shares():
    """From a mount namespace of its own it cannot be named for later: callers fall back (conmon: the wrapper)."""
    probe = "from pocketkube.engine.runtime import mountns; print(mountns.host_reentry())"
    inside = subprocess.run(["unshare", "--mount", sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert inside.stdout.strip() == "None"


def test_create_pinned_is_fast(pin_dir: Path):
    durations = []
    for _ in range(20):
        started = time.perf_counter()
        namespaces.create_pinned(pin_dir)
        durations.append(time.perf_counter() - started)
        namespaces.remove_pinned(pin_dir)
    median = statistics.median(durations)
    print(f"create_pinned(net, ipc, uts): median {median * 1000:.2f} ms, max {max(durations) * 1000:.2f} ms")
    assert median < 0.010
    assert str(pin_dir) not in _mountinfo()


def test_create_pinned_errors_leave_nothing(pin_dir: Path):
    with pytest.raises(namespaces.NamespaceError, match="cannot create namespaces"):
        namespaces.create_pinned(pin_dir, hostname="h" * 100)  # longer than the kernel's 64
    assert not pin_dir.exists() and str(pin_dir) not in _mountinfo()
    with pytest.raises(ValueError, match="cannot pin namespace kinds"):
        namespaces.create_pinned(pin_dir, ("mnt",))
    with pytest.raises(ValueError, match="needs a new uts namespace"):
        namespaces.create_pinned(pin_dir, ("net",), hostname="x")
    namespaces.create_pinned(pin_dir, ("ipc",))
    with pytest.raises(namespaces.NamespaceError, match="already pins a namespace"):
        namespaces.create_pinned(pin_dir, ("ipc",))
    with pytest.raises(namespaces.NamespaceError, match="sethostname"):
        namespaces.create_pinned(pin_dir, ("net", "uts"), hostname="h" * 100)
    # a failed call takes back only its own pins
    assert namespaces.is_pinned(pin_dir / "ipc")
    assert not (pin_dir / "net").exists() and not (pin_dir / "uts").exists()
