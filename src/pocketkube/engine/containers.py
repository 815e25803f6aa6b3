"""Container records on disk: what was asked for, and what happened. One directory per container
(`ROOT/containers/<id>/`) with its record (container.json, replaced atomically), its bundle and its log.
Several processes (the CLI, the server's kubelet, conmon's exit command) share the store, so every change
happens under the container's lock."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

from pocketkube.engine import names
from pocketkube.engine.runtime.spec import Mount, Resources
from pocketkube.fsutil import fsync_dir, spread_subdirectories, write_atomic

# One asyncio lock per (store, container) for the whole process, shared by every Engine instance.
_TASK_LOCKS: dict[tuple[str, str], asyncio.Lock] = {}

NAME_PATTERN = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_FULL_ID = re.compile(r"[0-9a-f]{64}")
_REMOVED_PREFIX = ".removed-"  # a removed container's files, until they are deleted
# Polling another process's flock on a container: first retry after 1 ms, then at most every 5 ms.
_LOCK_POLL_FIRST = 0.001
_LOCK_POLL_MAX = 0.005


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
    group_add: list[str] = field(default_factory=list)   # supplementary groups besides the user's own
    image_groups: bool = True                     # and those the image's /etc/group gives the user (CRI: Merge)
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
    uid: int = 0                     # the identity the process was started with: user, group and
    gid: int = 0                     # supplementary groups (the primary group first)
    groups: list[int] = field(default_factory=list)


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

    def to_json(self) -> str:
        """json.dumps(self.to_dict()), without the deep copy asdict makes first (the record is saved several
        times per container run)."""
        return json.dumps(self, default=_record_fields)

    @classmethod
    def from_dict(cls, data: dict, directory: Path) -> Container:
        data = dict(data)
        data["config"] = ContainerConfig.from_dict(data["config"])
        data["state"] = ContainerState(**data.get("state", {}))
        return cls(**data, directory=directory)


def _record_fields(value: object) -> dict:
    if isinstance(value, Container):
        return {name: item for name, item in vars(value).items() if name != "directory"}
    if is_dataclass(value) and not isinstance(value, type):
        return vars(value)
    raise TypeError(f"a container record cannot hold {type(value).__name__} values")


class ContainerStore:
    """The records, plus a name index: `ROOT/.names/<name>` is a symlink to the id holding the name, so that
    a name is claimed, checked and resolved without reading every record."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        spread_subdirectories(root)  # a directory per container
        if not self._names.is_dir():
            self._build_name_index()
        self._sweep_removed()

    def _dir(self, cid: str) -> Path:
        return self.root / cid

    @property
    def _names(self) -> Path:
        return self.root / ".names"

    @contextmanager
    def _store_lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _build_name_index(self) -> None:
        """The index of a store written before it existed (or being created): built once, then published."""
        with self._store_lock():
            if self._names.is_dir():
                return
            staging = self.root / f".names.{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for container in self.list():
                os.symlink(container.id, staging / container.name)
            os.rename(staging, self._names)

    @asynccontextmanager
    async def locked(self, cid: str) -> AsyncIterator[None]:
        """Serializes lifecycle changes of one container: between tasks of this process (an asyncio lock,
        since a second flock from the same process would block its own event loop) and between processes
        (an flock, polled without blocking the loop; the holder is usually another process's short
        refresh, such as conmon's exit command, so the polls stay frequent)."""
        key = (str(self.root), cid)
        lock = _TASK_LOCKS.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                f = open(self._dir(cid) / "lock", "a+")
            except FileNotFoundError:
                raise ContainerNotFound(cid) from None
            with f:
                delay = _LOCK_POLL_FIRST
                while True:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, _LOCK_POLL_MAX)
                yield

    def add(self, make: Callable[[str, Path], Container],
            undo: Callable[[str], object] | None = None) -> Container:
        """Reserves a new id and unique name, then saves the record `make(id, directory)` returns; `undo(id)`
        reverses what `make` did when the name is refused. Creations queue on the store's lock, `make`
        included: letting them all run at once was slower here, on a burst of pod starts."""
        with self._store_lock():
            cid = secrets.token_hex(32)
            directory = self._dir(cid)
            claimed = ""
            made = False
            directory.mkdir()
            try:
                container = make(cid, directory)
                made = True
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
                    wanted = names.generate(lambda name: bool(self._name_owner(name)))
                container.name = wanted
                (directory / "lock").touch()
                self._claim_name(wanted, cid)
                claimed = wanted
                self.save(container, durable=True)
                # the new entries of the store's own directories, which the record's fsync does not cover
                fsync_dir(self.root)
                fsync_dir(self._names)
            except BaseException:
                if claimed:
                    self._release_name(claimed, cid)
                shutil.rmtree(directory, ignore_errors=True)
                if made and undo is not None:
                    undo(cid)
                raise
            return container

    def _name_owner(self, name: str) -> str:
        """The id of the container holding `name`, or '' (a link whose record is gone, left by a crash, holds
        nothing)."""
        try:
            cid = os.readlink(self._names / name)
        except (FileNotFoundError, NotADirectoryError):
            return ""
        return cid if (self._dir(cid) / "container.json").exists() else ""

    def _claim_name(self, name: str, cid: str) -> None:
        staging = self._names / f".{cid}"
        os.symlink(cid, staging)
        os.replace(staging, self._names / name)  # over a stale link, if any (the caller checked the owner)

    def _release_name(self, name: str, cid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(self._names / name) == cid:
                (self._names / name).unlink()

    def save(self, container: Container, *, durable: bool = False) -> None:
        """Replaces the record atomically (a kill -9 at any point leaves the old one or the new one).
        durable=True also survives a machine crash; lifecycle states need not, because a crash takes the
        container's processes with it and `Engine.recover` then finds them gone anyway."""
        write_atomic(container.directory / "container.json", container.to_json().encode(), durable=durable)

    def load(self, cid: str) -> Container:
        directory = self._dir(cid)
        try:
            with open(directory / "container.json") as f:
                return Container.from_dict(json.load(f), directory)
        except (FileNotFoundError, NotADirectoryError):
            raise ContainerNotFound(cid) from None

    def list(self) -> list[Container]:
        containers = []
        for entry in os.scandir(self.root):
            if entry.is_dir() and not entry.name.startswith("."):
                try:
                    containers.append(self.load(entry.name))
                except (ContainerNotFound, json.JSONDecodeError):
                    continue  # being created or removed right now
        containers.sort(key=lambda c: c.created, reverse=True)
        return containers

    def resolve(self, ref: str) -> Container:
        """By full id, name or unique id prefix, as Docker resolves container references."""
        ref = ref.strip()
        if not ref:
            raise ContainerNotFound(ref)
        if _FULL_ID.fullmatch(ref) and self._dir(ref).is_dir():
            return self.load(ref)
        name = ref.lstrip("/")
        owner = self._name_owner(name) if NAME_PATTERN.match(name) else ""
        if owner:
            with contextlib.suppress(ContainerNotFound):
                return self.load(owner)
        matches = [entry.name for entry in os.scandir(self.root)
                   if entry.name.startswith(ref) and not entry.name.startswith(".") and entry.is_dir()]
        if len(matches) > 1:
            raise ValueError(f"multiple IDs found with provided prefix: {ref}")
        if matches:
            return self.load(matches[0])
        raise ContainerNotFound(ref)

    def remove(self, container: Container) -> None:
        shutil.rmtree(self.release(container), ignore_errors=True)

    def release(self, container: Container) -> Path:
        """Take the container out of the store (its record and name) and return the directory its files
        were moved to, for the caller to delete when it suits (if its process dies first, the next store
        opened on this root deletes it)."""
        removed = self.root / f"{_REMOVED_PREFIX}{os.getpid()}-{container.id}"
        os.rename(container.directory, removed)
        self._release_name(container.name, container.id)
        return removed

    def _sweep_removed(self) -> None:
        """Deletes what removals by processes that died before finishing left behind."""
        for entry in os.scandir(self.root):
            if entry.name.startswith(_REMOVED_PREFIX):
                pid = entry.name.removeprefix(_REMOVED_PREFIX).partition("-")[0]
                if not os.path.exists(f"/proc/{pid}"):
                    shutil.rmtree(entry.path, ignore_errors=True)


def now() -> float:
    return time.time()
