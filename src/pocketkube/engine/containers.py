"""Container records on disk: what was asked for, and what happened. One directory per container
(`ROOT/containers/<id>/`) with its record (container.json, replaced atomically), its bundle and its log.
Several processes (the CLI, the server's kubelet, conmon's exit command) share the store, so every change
happens under the container's lock."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pocketkube.engine import names
from pocketkube.engine.runtime.spec import Mount, Resources
from pocketkube.fsutil import write_atomic

# One asyncio lock per (store, container) for the whole process, shared by every Engine instance.
_TASK_LOCKS: dict[tuple[str, str], asyncio.Lock] = {}

NAME_PATTERN = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


class ContainerNotFound(KeyError):
    def __str__(self) -> str:
        return f"No such container: {self.args[0]}"


class NameConflict(ValueError):
    pass


class ContainerStateError(RuntimeError):
    """The operation does not fit the container's state (remove a running container, exec into a stopped one)."""


@dataclass
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass
class ContainerConfig:
    """What to run: Kubernetes-agnostic, the union of what `docker run` and a CRI container config ask for."""

    image: str
    name: str = ""
    entrypoint: list[str] | None = None          # overrides the image's ENTRYPOINT ([] or [""] clears it)
    command: list[str] | None = None             # overrides the image's CMD
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tty: bool = False
    stdin: bool = False                           # keep stdin open (docker -i)
    mounts: list[Mount] = field(default_factory=list)
    readonly_rootfs: bool = False
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    no_new_privileges: bool = False
    resources: Resources = field(default_factory=Resources)
    network: str = "default"                      # "default" | "none" | "host" | "sandbox"
    ports: list[PortMapping] = field(default_factory=list)
    sandbox_namespaces: dict[str, str] = field(default_factory=dict)   # kind -> pinned path, for network="sandbox"
    stop_signal: str = ""
    stop_timeout: int | None = None
    cgroup_parent: str = ""                       # default: the engine's
    auto_remove: bool = False
    log_path: str = ""                            # default: the container's own directory
    sysctls: dict[str, str] = field(default_factory=dict)
    shm_size: int = 64 * 1024 * 1024
    manage_etc_files: bool = True                 # write /etc/hosts, /etc/hostname, /etc/resolv.conf (Docker does)
    cleanup_on_exit: bool = True                  # conmon runs `pocketkube container-cleanup` when it exits

    @classmethod
    def from_dict(cls, data: dict) -> ContainerConfig:
        data = dict(data)
        data["mounts"] = [Mount(**m) for m in data.get("mounts", [])]
        data["resources"] = Resources(**data.get("resources", {}))
        data["ports"] = [PortMapping(**p) for p in data.get("ports", [])]
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ContainerState:
    status: str = "created"          # created | running | paused | exited | dead
    pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    restart_count: int = 0
    ip_address: str = ""
    gateway: str = ""
    mac_address: str = ""
    rootfs_mounted: bool = False
    netns: str = ""                  # pinned network namespace of a default-network container


@dataclass
class Container:
    id: str
    name: str
    image: str                        # as the user typed it
    image_id: str
    created: float
    config: ContainerConfig
    args: list[str]                   # the resolved command line (entrypoint + cmd)
    env: list[str]                    # the resolved environment (image + overrides)
    working_dir: str
    stop_signal: str
    state: ContainerState = field(default_factory=ContainerState)
    directory: Path = field(default=Path("."), repr=False, compare=False)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def running(self) -> bool:
        return self.state.status in ("running", "paused")

    @property
    def bundle(self) -> Path:
        return self.directory / "bundle"

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    @property
    def log_path(self) -> Path:
        return Path(self.config.log_path) if self.config.log_path else self.directory / "container.log"

    @property
    def cgroups_path(self) -> str:
        return f"{self.config.cgroup_parent.rstrip('/')}/{self.id}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("directory")
        return data

    @classmethod
    def from_dict(cls, data: dict, directory: Path) -> Container:
        data = dict(data)
        data["config"] = ContainerConfig.from_dict(data["config"])
        data["state"] = ContainerState(**data.get("state", {}))
        return cls(**data, directory=directory)


class ContainerStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _dir(self, cid: str) -> Path:
        return self.root / cid

    @contextmanager
    def _store_lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    @asynccontextmanager
    async def locked(self, cid: str) -> AsyncIterator[None]:
        """Serializes lifecycle changes of one container: between tasks of this process (an asyncio lock,
        since a second flock from the same process would block its own event loop) and between processes
        (an flock, polled without blocking the loop)."""
        key = (str(self.root), cid)
        lock = _TASK_LOCKS.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                f = open(self._dir(cid) / "lock", "a+")
            except FileNotFoundError:
                raise ContainerNotFound(cid) from None
            with f:
                delay = 0.001
                while True:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 0.05)
                yield

    def add(self, make: callable) -> Container:
        """Reserves a new id and unique name, then saves the record `make(id, name, directory)` returns."""
        with self._store_lock():
            cid = secrets.token_hex(32)
            directory = self._dir(cid)
            wanted = ""
            container = None
            directory.mkdir()
            try:
                container = make(cid, directory)
                wanted = container.name
                if wanted:
                    if not NAME_PATTERN.match(wanted):
                        raise ValueError(f'Invalid container name ({wanted}), only [a-zA-Z0-9][a-zA-Z0-9_.-] '
                                         "are allowed")
                    wanted = wanted.lstrip("/")
                    owner = self._name_owner(wanted)
                    if owner:
                        raise NameConflict(
                            f'Conflict. The container name "/{wanted}" is already in use by container "{owner}". '
                            "You have to remove (or rename) that container to be able to reuse that name.")
                else:
                    taken = {c.name for c in self.list()}
                    wanted = names.generate(taken)
                container.name = wanted
                (directory / "lock").touch()
                self.save(container)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            return container

    def _name_owner(self, name: str) -> str:
        for container in self.list():
            if container.name == name:
                return container.id
        return ""

    def save(self, container: Container) -> None:
        write_atomic(container.directory / "container.json", json.dumps(container.to_dict()).encode())

    def load(self, cid: str) -> Container:
        directory = self._dir(cid)
        try:
            with open(directory / "container.json") as f:
                return Container.from_dict(json.load(f), directory)
        except FileNotFoundError:
            raise ContainerNotFound(cid) from None

    def list(self) -> list[Container]:
        containers = []
        for entry in os.scandir(self.root):
            if entry.is_dir():
                try:
                    containers.append(self.load(entry.name))
                except (ContainerNotFound, json.JSONDecodeError):
                    continue  # being created or removed right now
        containers.sort(key=lambda c: c.created, reverse=True)
        return containers

    def resolve(self, ref: str) -> Container:
        """By full id, unique id prefix or name, as Docker resolves container references."""
        ref = ref.strip()
        if not ref:
            raise ContainerNotFound(ref)
        if re.fullmatch(r"[0-9a-f]{64}", ref) and self._dir(ref).is_dir():
            return self.load(ref)
        containers = self.list()
        name = ref.lstrip("/")
        for container in containers:
            if container.name == name:
                return container
        matches = [c for c in containers if c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(f"multiple IDs found with provided prefix: {ref}")
        raise ContainerNotFound(ref)

    def remove(self, container: Container) -> None:
        shutil.rmtree(container.directory, ignore_errors=True)


def now() -> float:
    return time.time()
