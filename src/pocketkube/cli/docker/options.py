"""Turning `docker run`-style flags into an engine ContainerConfig (kept apart from argparse so that the
rules — volumes, ports, env files, resources — are testable on their own)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from pocketkube.cli.docker.format import parse_bytes
from pocketkube.engine.containers import ContainerConfig, PortMapping
from pocketkube.engine.runtime.spec import Mount, Resources


class OptionError(ValueError):
    pass


def parse_env(values: list[str], env_files: list[str], environ: dict[str, str] | None = None) -> list[str]:
    """-e K=V, -e K (taken from our environment, dropped when unset), --env-file lines, in Docker's order."""
    environ = os.environ if environ is None else environ
    result: list[str] = []

    def add(entry: str) -> None:
        if not entry:
            return
        key, eq, _ = entry.partition("=")
        if not key:
            raise OptionError(f"invalid environment variable: {entry}")
        if eq:
            result.append(entry)
        elif key in environ:
            result.append(f"{key}={environ[key]}")

    for path in env_files:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as err:
            raise OptionError(f"open {path}: {err.strerror.lower() if err.strerror else err}") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                add(line)
    for value in values:
        add(value)
    return result


def parse_labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, _, val = value.partition("=")
        labels[key] = val
    return labels


def parse_volume(value: str, volumes_dir: Path) -> Mount:
    """-v HOST:CTR[:ro|rw] binds a host path; -v NAME:CTR uses a named volume kept under the data dir;
    -v CTR alone makes an anonymous volume, as Docker does."""
    parts = value.split(":")
    options = ["rbind", "rprivate"]
    mode = "rw"
    if len(parts) == 3:
        mode = parts[2]
        parts = parts[:2]
        for flag in mode.split(","):
            if flag not in ("ro", "rw", "z", "Z", "private", "rprivate", "shared", "rshared", "slave", "rslave"):
                raise OptionError(f"invalid mode: {mode}")
    if len(parts) == 1:
        source, destination = "", parts[0]
    elif len(parts) == 2:
        source, destination = parts
    else:
        raise OptionError(f"invalid volume specification: '{value}'")
    if not destination.startswith("/"):
        raise OptionError(f"invalid volume specification: '{value}': invalid mount config for type \"volume\": "
                          f"invalid mount path: '{destination}' mount path must be absolute")
    if not source:
        source = _named_volume(volumes_dir, os.urandom(32).hex())
    elif not source.startswith("/"):
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", source):
            raise OptionError(f'create {source}: "{source}" includes invalid characters for a local volume name, '
                              "only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host "
                              "directory, use absolute path")
        source = _named_volume(volumes_dir, source)
    options.append("ro" if "ro" in mode.split(",") else "rw")
    return Mount(destination=destination, source=source, type="bind", options=options)


def _named_volume(volumes_dir: Path, name: str) -> str:
    data = volumes_dir / name / "_data"
    data.mkdir(parents=True, exist_ok=True)
    return str(data)


def parse_tmpfs(value: str) -> Mount:
    """--tmpfs PATH[:OPTIONS]: Docker's defaults (noexec, nosuid, nodev, mode 1777), overridable."""
    destination, _, options = value.partition(":")
    if not destination.startswith("/"):
        raise OptionError(f"invalid mount path: '{destination}' mount path must be absolute")
    flags = {"nosuid": True, "nodev": True, "noexec": True}
    extra = []
    for option in filter(None, options.split(",")):
        if option in ("exec", "suid", "dev"):
            flags["no" + option] = False
        elif option in flags:
            flags[option] = True
        else:
            extra.append(option)
    if not any(o.startswith("mode=") for o in extra):
        extra.append("mode=1777")
    return Mount(destination=destination, source="tmpfs", type="tmpfs",
                 options=[name for name, on in flags.items() if on] + extra)


def parse_publish(value: str) -> list[PortMapping]:
    """-p [IP:]HOST:CTR[/proto], -p HOST-RANGE:CTR-RANGE; a bare CTR port needs a free host port chosen."""
    spec, _, protocol = value.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp", "sctp"):
        raise OptionError(f"invalid proto: {protocol}")
    host_ip = ""
    if spec.startswith("["):
        close = spec.index("]")
        host_ip, spec = spec[1:close], spec[close + 2:]
    parts = spec.rsplit(":", 2)
    if len(parts) == 3:
        host_ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    else:
        host, container = "", parts[0]
    container_ports = _port_range(container, value)
    if not host:
        return [PortMapping(_free_port(), p, protocol, host_ip) for p in container_ports]
    host_ports = _port_range(host, value)
    if len(host_ports) != len(container_ports):
        raise OptionError(f"invalid ranges specified for container and host Ports: {container} and {host}")
    return [PortMapping(h, c, protocol, host_ip) for h, c in zip(host_ports, container_ports, strict=True)]


def _port_range(text: str, whole: str) -> list[int]:
    start, _, end = text.partition("-")
    try:
        first, last = int(start), int(end or start)
    except ValueError:
        raise OptionError(f"invalid containerPort: {text}" if text else f"no port specified: {whole}<empty>") \
            from None
    if not (0 < first <= last <= 65535):
        raise OptionError(f"invalid port range: {text}")
    return list(range(first, last + 1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_resources(memory: str | None, memory_swap: str | None, cpus: str | None, cpu_shares: int | None,
                    pids_limit: int | None, cpu_quota: int | None, cpu_period: int | None,
                    cpuset_cpus: str | None, memory_reservation: str | None) -> Resources:
    resources = Resources()
    if memory:
        resources.memory = parse_bytes(memory)
        if resources.memory < 6 * 1024 * 1024:
            raise OptionError("Minimum memory limit allowed is 6MB")
    if memory_swap:
        resources.memory_swap = -1 if memory_swap == "-1" else parse_bytes(memory_swap)
        if resources.memory is None:
            raise OptionError("You should always set the Memory limit when using Memoryswap limit, see usage")
        if resources.memory_swap != -1 and resources.memory_swap < resources.memory:
            raise OptionError("Minimum memoryswap limit should be larger than memory limit, see usage")
    if memory_reservation:
        resources.memory_reservation = parse_bytes(memory_reservation)
    if cpus:
        try:
            value = float(cpus)
        except ValueError:
            raise OptionError(f'invalid argument "{cpus}" for "--cpus" flag') from None
        if value <= 0:
            raise OptionError("Range of CPUs is from 0.01 to the number of CPUs available")
        resources.cpu_period = 100000
        resources.cpu_quota = int(value * 100000)
    if cpu_quota:
        resources.cpu_quota = cpu_quota
        resources.cpu_period = cpu_period or resources.cpu_period or 100000
    elif cpu_period:
        resources.cpu_period = cpu_period
    resources.cpu_shares = cpu_shares
    resources.pids_limit = pids_limit if pids_limit and pids_limit > 0 else None
    resources.cpuset_cpus = cpuset_cpus
    return resources


def parse_command_override(value: str | None) -> list[str] | None:
    """--entrypoint takes one word (a string, not a list), and "" clears the image's entrypoint."""
    if value is None:
        return None
    return [value] if value else []


def build_config(args, image: str, command: list[str], volumes_dir: Path) -> ContainerConfig:
    """ContainerConfig from parsed `run`/`create` arguments."""
    mounts = [parse_volume(v, volumes_dir) for v in args.volume] + [parse_tmpfs(t) for t in args.tmpfs]
    ports = [mapping for value in args.publish for mapping in parse_publish(value)]
    network = {"bridge": "default", "default": "default", "none": "none", "host": "host"}.get(args.network)
    if network is None:
        raise OptionError(f"network {args.network} not found")
    security = {opt.replace("=true", "").replace(":true", "") for opt in args.security_opt}
    unknown = security - {"no-new-privileges"}
    if unknown:
        raise OptionError(f"Invalid --security-opt: {sorted(unknown)[0]!r}")
    sysctls = {}
    for value in args.sysctl:
        key, eq, val = value.partition("=")
        if not eq:
            raise OptionError(f"invalid argument \"{value}\" for \"--sysctl\" flag: sysctl '{value}' is not allowed")
        sysctls[key] = val
    return ContainerConfig(
        image=image, name=args.name or "", entrypoint=parse_command_override(args.entrypoint),
        command=command or None, env=parse_env(args.env, args.env_file), working_dir=args.workdir or "",
        user=args.user or "", group_add=args.group_add, hostname=args.hostname or "",
        labels=parse_labels(args.label), tty=args.tty,
        stdin=args.interactive, mounts=mounts, readonly_rootfs=args.read_only, privileged=args.privileged,
        cap_add=args.cap_add, cap_drop=args.cap_drop, no_new_privileges="no-new-privileges" in security,
        resources=parse_resources(args.memory, args.memory_swap, args.cpus, args.cpu_shares, args.pids_limit,
                                  args.cpu_quota, args.cpu_period, args.cpuset_cpus, args.memory_reservation),
        network=network, ports=ports, stop_signal=args.stop_signal or "", stop_timeout=args.stop_timeout,
        auto_remove=args.rm, sysctls=sysctls,
        shm_size=parse_bytes(args.shm_size) if args.shm_size else 64 * 1024 * 1024)
