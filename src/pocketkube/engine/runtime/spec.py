"""A container described without Kubernetes words, turned into the OCI runtime-spec config.json (1.0.2) that
runc and crun run. Defaults (mounts, masked paths, capabilities, device rules, rlimits) are the ones Docker
generates, so a container behaves here as it would under `docker run`."""

from __future__ import annotations

import os
import resource
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pocketkube.engine.runtime import cgroups

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CPU_PERIOD = 100_000  # µs, the kernel's CFS default
MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses smaller limits: the runtime itself needs a few MB
RLIM_INFINITY = 2**64 - 1

# Capability numbers are positions in this list (linux/capability.h).
ALL_CAPABILITY_NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

NAMESPACE_KINDS = ("pid", "network", "ipc", "uts", "mount", "cgroup")

RLIMIT_NAMES = {
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS", "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
}
# Docker leaves rlimits to the daemon's own; its service unit raises open files to the kernel's nr_open.
DEFAULT_NOFILE = 1048576


def _char_device(major: int, minor: int | None) -> dict:
    rule: dict = {"allow": True, "type": "c", "major": major, "access": "rwm"}
    if minor is not None:
        rule["minor"] = minor
    return rule


DEFAULT_DEVICE_RULES = [
    {"allow": False, "access": "rwm"},
    # mknod of any node is harmless while reads and writes stay denied; runc allows it too
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    _char_device(1, 3),     # null
    _char_device(1, 5),     # zero
    _char_device(1, 7),     # full
    _char_device(1, 8),     # random
    _char_device(1, 9),     # urandom
    _char_device(5, 0),     # tty
    _char_device(5, 1),     # console
    _char_device(5, 2),     # ptmx
    _char_device(136, None),  # pts/*
]

# Directories of /dev a privileged container does not get from the host: runc mounts its own.
_PRIVATE_DEV_ENTRIES = {"pts", "shm", "mqueue", "fd", "console", ".lxc", ".lxd-mounts", ".udev"}
_PROPAGATION_OPTIONS = {"private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable",
                        "runbindable"}


@dataclass
class Resources:
    """Limits with Docker's meanings. memory_swap is memory+swap together (-1: unlimited swap; None: as
    much swap as memory, i.e. twice the memory in total). None everywhere else means no limit."""

    memory: int | None = None
    memory_swap: int | None = None
    memory_reservation: int | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None

    def __post_init__(self) -> None:
        # Docker's checks and messages (daemon verifyPlatformContainerResources)
        if self.memory is not None and self.memory < MIN_MEMORY:
            raise ValueError("Minimum memory limit allowed is 6MB")
        if self.memory is None and self.memory_swap is not None and self.memory_swap > 0:
            raise ValueError("You should always set the Memory limit when using Memoryswap limit")
        if self.memory is not None and self.memory_swap is not None and 0 < self.memory_swap < self.memory:
            raise ValueError("Minimum memoryswap limit should be larger than memory limit")
        if self.memory_reservation is not None:
            if self.memory_reservation < MIN_MEMORY:
                raise ValueError("Minimum memory reservation allowed is 6MB")
            if self.memory is not None and self.memory < self.memory_reservation:
                raise ValueError("Minimum memory limit can not be less than memory reservation limit")
        if self.cpu_period is not None and not 1000 <= self.cpu_period <= 1_000_000:
            raise ValueError("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
        if self.cpu_quota is not None and 0 < self.cpu_quota < 1000:
            raise ValueError("CPU cfs quota can not be less than 1ms (i.e. 1000)")

    @classmethod
    def from_cpus(cls, cpus: float, **kw) -> Resources:
        """`docker run --cpus`: that many CPUs' worth of time in every CFS period."""
        if cpus <= 0:
            raise ValueError(f"invalid --cpus value {cpus}: must be positive")
        period = kw.pop("cpu_period", None) or DEFAULT_CPU_PERIOD
        quota = round(cpus * period)
        if quota < 1000:
            raise ValueError(f"--cpus {cpus} is too small: the CFS quota must be at least 1ms per period")
        return cls(cpu_quota=quota, cpu_period=period, **kw)

    def swap_limit(self) -> int | None:
        """The memory+swap limit to write (runtime-spec memory.swap), Docker's default applied."""
        if self.memory is None:
            return -1 if self.memory_swap == -1 else None
        if not self.memory_swap:  # unset (Docker also treats 0 as unset)
            return 2 * self.memory
        return self.memory_swap

    def effective_cpu_period(self) -> int | None:
        if self.cpu_period is not None:
            return self.cpu_period
        return DEFAULT_CPU_PERIOD if self.cpu_quota is not None else None

    def effective_pids_limit(self) -> int | None:
        """Docker treats a pids limit of 0 or below as unlimited (-1 in the spec)."""
        if self.pids_limit is None:
            return None
        return self.pids_limit if self.pids_limit > 0 else -1


@dataclass
class Mount:
    destination: str
    source: str
    type: str = "bind"
    options: list[str] = field(default_factory=list)


@dataclass
class Process:
    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    terminal: bool = False
    cap_add: list[str] = ()
    cap_drop: list[str] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    # (name, soft, hard) as `ulimit` and `docker run --ulimit name=soft:hard` order them; "nofile" or
    # "RLIMIT_NOFILE"; -1 is unlimited. None: Docker's default, see default_rlimits().
    rlimits: list[tuple[str, int, int]] | None = None


def _default_namespaces() -> dict[str, str | None]:
    return {"pid": None, "mount": None, "ipc": None, "uts": None, "network": None}


@dataclass
class ContainerSpec:
    process: Process
    rootfs: str
    hostname: str = ""
    readonly_rootfs: bool = False
    mounts: list[Mount] = field(default_factory=list)
    # kind -> None (a new namespace) or the path of one to join; a kind left out shares the host's
    namespaces: dict[str, str | None] = field(default_factory=_default_namespaces)
    cgroups_path: str = ""
    resources: Resources = field(default_factory=Resources)
    privileged: bool = False
    sysctls: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    shm_size: int = 64 * 1024 * 1024


# --- capabilities ------------------------------------------------------------------------------------


def _normalize_capability(name: str) -> str:
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in ALL_CAPABILITY_NAMES:
        raise ValueError(f'unknown capability: "{upper}"')
    return upper


def _own_capabilities(kind: str) -> list[str]:
    """Our process's capability set of the given kind ("CapBnd", "CapEff") from /proc/self/status."""
    try:
        mask = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                        if line.startswith(kind + ":")), 16)
    except (OSError, StopIteration, ValueError):
        mask = (1 << len(ALL_CAPABILITY_NAMES)) - 1
    return [name for number, name in enumerate(ALL_CAPABILITY_NAMES) if mask >> number & 1]


def _grantable_capabilities() -> list[str]:
    """Every capability we can hand on: known to this kernel and still in our bounding set (a process that
    lost one, as inside a container of its own, cannot give it back; like Podman, "all" means these)."""
    return _own_capabilities("CapBnd")


def effective_capabilities(add: Iterable[str] | None, drop: Iterable[str] | None, privileged: bool) -> list[str]:
    """Docker's rules: privileged gets everything; "ALL" in add means everything but what is dropped;
    "ALL" in drop means only what is added; otherwise the default set minus drop plus add."""
    if privileged:
        return _grantable_capabilities()
    adds = [_normalize_capability(c) for c in add or ()]
    drops = [_normalize_capability(c) for c in drop or ()]
    if "ALL" in adds:
        result = [c for c in _grantable_capabilities() if c not in drops]
    elif "ALL" in drops:
        result = adds
    else:
        result = [c for c in DEFAULT_CAPABILITIES if c not in drops] + adds
    return list(dict.fromkeys(result))


def _capability_sets(capabilities: list[str], uid: int) -> dict:
    # As Docker does since CVE-2022-24769: a non-root user starts with empty effective/permitted sets, the
    # bounding set only limits what setuid/file capabilities may grant; inheritable stays empty for all.
    if uid == 0:
        return {"bounding": list(capabilities), "effective": list(capabilities), "permitted": list(capabilities)}
    return {"bounding": list(capabilities)}


# --- process -----------------------------------------------------------------------------------------


def _rlimit(name: str, soft: int, hard: int) -> dict:
    kind = name.strip().upper()
    if not kind.startswith("RLIMIT_"):
        kind = "RLIMIT_" + kind
    if kind not in RLIMIT_NAMES:
        raise ValueError(f"unknown rlimit: {name}")
    soft = RLIM_INFINITY if soft == -1 else soft
    hard = RLIM_INFINITY if hard == -1 else hard
    if soft > hard:
        raise ValueError(f"rlimit {kind}: soft limit {soft} is greater than the hard limit {hard}")
    return {"type": kind, "hard": hard, "soft": soft}


def default_rlimits() -> list[tuple[str, int, int]]:
    """RLIMIT_NOFILE at Docker's 1048576. Raising a hard limit takes CAP_SYS_RESOURCE; without it (when we
    run inside a container ourselves) the runtime fails unless we stay within our own hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = DEFAULT_NOFILE
    if "CAP_SYS_RESOURCE" not in _own_capabilities("CapEff") and hard != resource.RLIM_INFINITY:
        nofile = min(nofile, hard)
    return [("RLIMIT_NOFILE", nofile, nofile)]


def process_spec(process: Process, *, privileged: bool = False) -> dict:
    """The config.json "process" object; alone it is what `runc exec --process` takes."""
    if not process.args:
        raise ValueError("no command specified")
    if not process.cwd.startswith("/"):
        raise ValueError(f"the working directory {process.cwd!r} is invalid: it needs to be an absolute path")
    user: dict = {"uid": process.uid, "gid": process.gid}
    if process.additional_gids:
        user["additionalGids"] = list(process.additional_gids)
    rlimits = default_rlimits() if process.rlimits is None else process.rlimits
    document = {
        "terminal": process.terminal,
        "user": user,
        "args": list(process.args),
        "env": list(process.env),
        "cwd": process.cwd,
        "capabilities": _capability_sets(
            effective_capabilities(process.cap_add, process.cap_drop, privileged), process.uid),
        "rlimits": [_rlimit(*entry) for entry in rlimits],
        "noNewPrivileges": process.no_new_privileges,
    }
    if process.oom_score_adj is not None:
        document["oomScoreAdj"] = process.oom_score_adj
    return document


# --- command and environment -------------------------------------------------------------------------


def resolve_command(entrypoint_override: list[str] | None, cmd_override: list[str] | None,
                    image_entrypoint: list[str] | None, image_cmd: list[str] | None) -> list[str]:
    """Docker's ENTRYPOINT/CMD rules: an --entrypoint (even "") replaces the image's and drops the image's
    CMD; given CMD arguments replace the image's CMD; the command is the entrypoint followed by the CMD."""
    if entrypoint_override is not None:
        entrypoint = [] if list(entrypoint_override) in ([], [""]) else list(entrypoint_override)
        cmd = list(cmd_override or [])
    else:
        entrypoint = list(image_entrypoint or [])
        cmd = list(cmd_override) if cmd_override else list(image_cmd or [])
    command = entrypoint + cmd
    if not command or not command[0]:
        raise ValueError("no command specified")
    return command


def merge_env(image_env: list[str], overrides: list[str]) -> list[str]:
    """KEY=VALUE lists merged by key, later entries winning in place; a bare KEY removes the variable (as
    Docker's daemon does). PATH gets the usual default when nobody set it."""
    merged: dict[str, str] = {}
    for entry in list(image_env) + list(overrides):
        key, sep, _ = entry.partition("=")
        if sep:
            merged[key] = entry
        else:
            merged.pop(key, None)
    if "PATH" not in merged:
        merged["PATH"] = f"PATH={DEFAULT_PATH}"
    return list(merged.values())


# --- mounts ------------------------------------------------------------------------------------------


def _default_mounts(spec: ContainerSpec) -> list[dict]:
    writable = "rw" if spec.privileged else "ro"
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={spec.shm_size}"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", writable]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", writable]},
    ]


def _user_mount(mount: Mount) -> dict:
    options = list(mount.options)
    if mount.type == "bind":
        if not {"bind", "rbind"} & set(options):
            options.insert(0, "rbind")
        if not {"ro", "rw"} & set(options):
            options.append("rw")
        if not _PROPAGATION_OPTIONS & set(options):
            options.append("rprivate")
    elif mount.type == "tmpfs":
        # Docker's --tmpfs defaults, unless the caller asked for the opposite
        for flag, opposite in (("nosuid", "suid"), ("nodev", "dev"), ("noexec", "exec")):
            if flag not in options and opposite not in options:
                options.append(flag)
    return {"destination": mount.destination, "type": mount.type, "source": mount.source, "options": options}


def _mounts(spec: ContainerSpec) -> list[dict]:
    """Docker's defaults, minus those a user mount replaces (a user /dev replaces every /dev/* default),
    then the user mounts, parents before children."""
    targets = {os.path.normpath(m.destination) for m in spec.mounts}
    defaults = [m for m in _default_mounts(spec)
                if m["destination"] not in targets and not ("/dev" in targets and m["destination"].startswith("/dev/"))]
    ordered = sorted(spec.mounts, key=lambda m: len(Path(os.path.normpath(m.destination)).parts))
    return defaults + [_user_mount(m) for m in ordered]


# --- devices -----------------------------------------------------------------------------------------


def host_devices(root: str = "/dev") -> list[dict]:
    """Every character and block device of the host, as a privileged container sees them (Docker adds
    them all to the spec; runc creates the standard ones and the /dev/pts, /dev/shm mounts itself)."""
    devices = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _PRIVATE_DEV_ENTRIES)
        for name in sorted(files):
            if name in _PRIVATE_DEV_ENTRIES:
                continue
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue  # udev removed it while we walked
            if stat.S_ISCHR(info.st_mode):
                kind = "c"
            elif stat.S_ISBLK(info.st_mode):
                kind = "b"
            else:
                continue
            devices.append({"path": path, "type": kind, "major": os.major(info.st_rdev),
                            "minor": os.minor(info.st_rdev), "fileMode": stat.S_IMODE(info.st_mode),
                            "uid": info.st_uid, "gid": info.st_gid})
    return devices


# --- resources ---------------------------------------------------------------------------------------


def _resources(resources: Resources, privileged: bool) -> dict:
    rules = [{"allow": True, "access": "rwm"}] if privileged else [dict(rule) for rule in DEFAULT_DEVICE_RULES]
    document: dict = {"devices": rules}
    memory: dict = {}
    if resources.memory is not None:
        memory["limit"] = resources.memory
    if resources.memory_reservation is not None:
        memory["reservation"] = resources.memory_reservation
    swap = resources.swap_limit()
    # Writing a swap limit fails outright on kernels without swap accounting (no memory.memsw.* files).
    if swap is not None and cgroups.swap_accounting():
        memory["swap"] = swap
    if memory:
        document["memory"] = memory
    cpu: dict = {}
    if resources.cpu_shares is not None:
        cpu["shares"] = resources.cpu_shares
    if resources.cpu_quota is not None:
        cpu["quota"] = resources.cpu_quota
    if resources.effective_cpu_period() is not None:
        cpu["period"] = resources.effective_cpu_period()
    if resources.cpuset_cpus:
        cpu["cpus"] = resources.cpuset_cpus
    if cpu:
        document["cpu"] = cpu
    if resources.effective_pids_limit() is not None:
        document["pids"] = {"limit": resources.effective_pids_limit()}
    return document


# --- the whole document ------------------------------------------------------------------------------


def _namespaces(kinds: dict[str, str | None]) -> list[dict]:
    entries = []
    for kind, path in kinds.items():
        if kind not in NAMESPACE_KINDS:
            raise ValueError(f"unknown namespace kind {kind!r}: expected one of {', '.join(NAMESPACE_KINDS)}")
        entries.append({"type": kind} if path is None else {"type": kind, "path": str(path)})
    return entries


def build_spec(spec: ContainerSpec) -> dict:
    """The complete config.json document for `runc run` / `crun run`."""
    linux: dict = {
        "namespaces": _namespaces(spec.namespaces),
        "resources": _resources(spec.resources, spec.privileged),
    }
    if spec.cgroups_path:
        linux["cgroupsPath"] = spec.cgroups_path
    if spec.sysctls:
        linux["sysctl"] = dict(spec.sysctls)
    if spec.privileged:
        linux["devices"] = host_devices()
    else:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    document: dict = {
        "ociVersion": OCI_VERSION,
        "process": process_spec(spec.process, privileged=spec.privileged),
        "root": {"path": spec.rootfs, "readonly": spec.readonly_rootfs},
        "mounts": _mounts(spec),
        "linux": linux,
    }
    # runc refuses a hostname it cannot set without its own uts namespace; a joined one keeps its name.
    if spec.hostname and "uts" in spec.namespaces and spec.namespaces["uts"] is None:
        document["hostname"] = spec.hostname
    if spec.annotations:
        document["annotations"] = dict(spec.annotations)
    return document
