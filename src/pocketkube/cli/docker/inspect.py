"""`inspect` documents and list rows in Docker's shapes, built from engine records."""

from __future__ import annotations

import time

from pocketkube.cli.docker.format import ago, human_duration, human_size, rfc3339, truncate
from pocketkube.engine.containers import Container
from pocketkube.engine.images.store import Image
from pocketkube.engine.logs import parse_time


def status_text(container: Container, now: float | None = None) -> str:
    """The STATUS column: "Up 3 seconds", "Exited (1) 2 minutes ago", "Created"."""
    state = container.state
    now = now or time.time()
    if state.status == "running":
        return f"Up {human_duration(now - state.started_at)}"
    if state.status == "paused":
        return f"Up {human_duration(now - state.started_at)} (Paused)"
    if state.status == "exited":
        return f"Exited ({state.exit_code}) {ago(state.finished_at, now)}"
    if state.status == "dead":
        return "Dead"
    return "Created"


def ports_text(container: Container) -> str:
    if container.config.network != "default":
        return ""
    parts = []
    for port in container.config.ports:
        host_ip = port.host_ip or "0.0.0.0"
        parts.append(f"{host_ip}:{port.host_port}->{port.container_port}/{port.protocol}")
    return ", ".join(parts)


def command_text(container: Container) -> str:
    return '"' + truncate(" ".join(container.args), 20) + '"'


def container_row(container: Container, *, no_trunc: bool = False) -> dict:
    """One `ps` row; the keys are the --format field names Docker documents."""
    return {
        "ID": container.id if no_trunc else container.short_id,
        "Image": container.image,
        "Command": '"' + " ".join(container.args) + '"' if no_trunc else command_text(container),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(container.created)),
        "RunningFor": ago(container.created),
        "Ports": ports_text(container),
        "State": container.state.status,
        "Status": status_text(container),
        "Names": container.name,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(container.config.labels.items())),
        "Mounts": ",".join(m.source for m in container.config.mounts if m.type == "bind"),
        "Networks": "" if container.config.network == "none" else
                    ("bridge" if container.config.network == "default" else container.config.network),
    }


def inspect_container(container: Container, *, graph: dict[str, str]) -> dict:
    config = container.config
    state = container.state
    resources = config.resources
    port_bindings: dict[str, list[dict]] = {}
    for port in config.ports:
        port_bindings.setdefault(f"{port.container_port}/{port.protocol}", []).append(
            {"HostIp": port.host_ip, "HostPort": str(port.host_port)})
    network_mode = {"default": "bridge"}.get(config.network, config.network)
    return {
        "Id": container.id,
        "Created": rfc3339(container.created),
        "Path": container.args[0] if container.args else "",
        "Args": container.args[1:],
        "State": {
            "Status": state.status,
            "Running": state.status in ("running", "paused"),
            "Paused": state.status == "paused",
            "Restarting": False,
            "OOMKilled": state.oom_killed,
            "Dead": state.status == "dead",
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": rfc3339(state.started_at),
            "FinishedAt": rfc3339(state.finished_at),
        },
        "Image": container.image_id,
        "ResolvConfPath": str(container.directory / "resolv.conf"),
        "HostnamePath": str(container.directory / "hostname"),
        "HostsPath": str(container.directory / "hosts"),
        "LogPath": str(container.log_path),
        "Name": "/" + container.name,
        "RestartCount": state.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "Binds": [f"{m.source}:{m.destination}" + (":ro" if "ro" in m.options else "")
                      for m in config.mounts if m.type == "bind"],
            "Tmpfs": {m.destination: ",".join(m.options) for m in config.mounts if m.type == "tmpfs"},
            "NetworkMode": network_mode,
            "PortBindings": port_bindings,
            "AutoRemove": config.auto_remove,
            "GroupAdd": config.group_add or None,
            "CapAdd": config.cap_add or None,
            "CapDrop": config.cap_drop or None,
            "Privileged": config.privileged,
            "ReadonlyRootfs": config.readonly_rootfs,
            "SecurityOpt": ["no-new-privileges"] if config.no_new_privileges else None,
            "ShmSize": config.shm_size,
            "Memory": resources.memory or 0,
            "MemorySwap": resources.memory_swap or 0,
            "NanoCpus": int(resources.cpu_quota * 1e9 / resources.cpu_period)
            if resources.cpu_quota and resources.cpu_period else 0,
            "CpuShares": resources.cpu_shares or 0,
            "CpuQuota": resources.cpu_quota or 0,
            "CpuPeriod": resources.cpu_period or 0,
            "PidsLimit": resources.pids_limit,
            "CgroupParent": config.cgroup_parent,
            "Sysctls": config.sysctls or None,
        },
        "GraphDriver": {"Name": "overlay2", "Data": graph},
        "Mounts": [{"Type": m.type, "Source": m.source, "Destination": m.destination,
                    "Mode": "ro" if "ro" in m.options else "", "RW": "ro" not in m.options,
                    "Propagation": "rprivate"} for m in config.mounts],
        "Config": {
            "Hostname": config.hostname or container.short_id,
            "User": config.user,
            "Tty": config.tty,
            "OpenStdin": config.stdin,
            "Env": container.env,
            "Cmd": config.command,
            "Image": container.image,
            "WorkingDir": config.working_dir,
            "Entrypoint": config.entrypoint,
            "Labels": config.labels,
            "StopSignal": container.stop_signal,
            "StopTimeout": config.stop_timeout,
        },
        "NetworkSettings": {
            "IPAddress": state.ip_address,
            "Gateway": state.gateway,
            "MacAddress": state.mac_address,
            "IPPrefixLen": 16 if state.ip_address else 0,
            "Ports": port_bindings if state.status == "running" else {},
            "SandboxKey": state.netns,
        },
    }


def image_rows(images: list[Image], *, show_all_tags: bool = True, no_trunc: bool = False,
               digests: bool = False) -> list[dict]:
    rows = []
    for image in images:
        image_id = image.id if no_trunc else image.id.removeprefix("sha256:")[:12]
        created = image.created
        created_ts = _parse_created(created)
        tags = image.repo_tags or ["<none>:<none>"]
        for tag in tags:
            repository, _, tag_name = tag.rpartition(":")
            if "/" in tag_name:  # a registry port, not a tag
                repository, tag_name = tag, "<none>"
            digest = next((d.split("@", 1)[1] for d in image.repo_digests if d.startswith(repository + "@")),
                          "<none>")
            rows.append({
                "Repository": repository, "Tag": tag_name, "ID": image_id, "Digest": digest,
                "CreatedSince": ago(created_ts) if created_ts else "N/A",
                "CreatedAt": created or "", "Size": human_size(image.size),
            })
    return rows


def _parse_created(created: str | None) -> float:
    if not created:
        return 0.0
    try:
        return parse_time(created)
    except ValueError:
        return 0.0


def history_rows(entries: list[dict], *, no_trunc: bool = False, human: bool = True) -> list[dict]:
    rows = []
    for entry in entries:
        created_by = entry.get("created_by", "")
        rows.append({
            "ID": entry.get("id", "<missing>") if no_trunc or entry.get("id", "<missing>") == "<missing>"
            else entry["id"].removeprefix("sha256:")[:12],
            "CreatedSince": ago(_parse_created(entry.get("created"))) if entry.get("created") else "N/A",
            "CreatedAt": entry.get("created", ""),
            "CreatedBy": created_by if no_trunc else truncate(created_by, 45),
            "Size": human_size(entry.get("size", 0)) if human else str(entry.get("size", 0)),
            "Comment": entry.get("comment", ""),
        })
    return rows
