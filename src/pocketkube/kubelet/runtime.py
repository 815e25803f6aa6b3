"""The kubelet's container runtime: a CRI-shaped adapter over the engine.

Pod sandboxes are the engine's pinned namespaces (net, ipc, uts) plus a small record on disk; a pod that
shares one process namespace (shareProcessNamespace) also gets an infrastructure ("pause") container, the
init of that namespace, as upstream's sandboxes always have. Containers are
engine containers labelled with the pod and container they belong to (io.kubernetes.* labels, as CRI
runtimes label them), so a restarted kubelet finds and adopts them without any state of its own besides
the sandbox records. Images are pulled per imagePullPolicy with the registry client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pocketkube import __version__
from pocketkube.engine.containers import Container, ContainerConfig, ContainerNotFound
from pocketkube.engine.engine import Engine, EngineError
from pocketkube.engine.images.pause import ensure_pause_image
from pocketkube.engine.images.staticbinary import StaticBinaryUnavailable
from pocketkube.engine.images.store import Image, ImageNotFound
from pocketkube.engine.logs import read_log
from pocketkube.engine.registry.client import RegistryClient
from pocketkube.engine.registry.credentials import CredentialError, CredentialStore
from pocketkube.engine.registry.hosts import RegistryHosts
from pocketkube.engine.runtime import conmon
from pocketkube.engine.runtime.attach import AttachSession
from pocketkube.engine.runtime.conmon import MonitorGone
from pocketkube.engine.runtime.namespaces import is_pinned
from pocketkube.engine.streams import ExecStream
from pocketkube.fsutil import spread_subdirectories
from pocketkube.kubelet.logrotation import remove_rotated
from pocketkube.kubelet.status import InstanceState, normalize_image

log = logging.getLogger(__name__)
Obj = dict[str, Any]

RUNTIME_NAME = "pocketkube"
RUNTIME_VERSION = f"{RUNTIME_NAME}://{__version__}"
ID_PREFIX = f"{RUNTIME_NAME}://"

LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_RESTART_COUNT = "io.kubernetes.container.restartCount"
LABEL_SANDBOX_ID = "io.kubernetes.sandbox.id"
# Marks a sandbox's infrastructure container, as dockershim did; the kubelet lists it with its sandbox,
# never as one of the pod's containers.
LABEL_CONTAINER_TYPE = "io.kubernetes.docker.type"
INFRA_CONTAINER_TYPE = "podsandbox"
LABEL_CONTAINER_HASH = "io.kubernetes.container.hash"
LABEL_TERMINATION_LOG = "io.kubernetes.container.terminationMessageFile"
LABEL_TERMINATION_POLICY = "io.kubernetes.container.terminationMessagePolicy"
# kernel limit for termination messages, and the log tail FallbackToLogsOnError uses (upstream's numbers)
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
START_ERROR_EXIT_CODE = 128


class ImagePullError(RuntimeError):
    """The image could not be made available; `reason` is ErrImagePull or ErrImageNeverPull."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ContainerCreateError(RuntimeError):
    """The runtime refused to create or start a container (CreateContainerError / RunContainerError)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Sandbox:
    """A pod's shared namespaces; `namespaces` maps net/ipc/uts (and pid when the pod's containers share
    one) to pinned paths; kinds left out share the host's, except pid, which is then each container's own
    unless host_pid."""

    id: str
    pod_uid: str
    pod_name: str
    pod_namespace: str
    attempt: int
    host_network: bool
    namespaces: dict[str, str] = field(default_factory=dict)
    ips: list[str] = field(default_factory=list)
    network_ready: bool = False
    host_ports: bool = False                 # attached through the chain with portmap
    created: float = 0.0
    host_pid: bool = False
    infra_container: str = ""                # the init of the shared pid namespace, when there is one

    @property
    def netns(self) -> str | None:
        return self.namespaces.get("net")


def host_namespace(kind: str) -> str:
    """The node's own namespace of a kind, as the kubelet's process holds it (pid 1's may not be openable)."""
    return f"/proc/{os.getpid()}/ns/{kind}"


def _namespaces_pinned(sandbox: Sandbox) -> bool:
    return all(is_pinned(Path(path)) for path in sandbox.namespaces.values())


def pod_labels(pod: Obj) -> dict[str, str]:
    meta = pod["metadata"]
    return {LABEL_POD_UID: meta["uid"], LABEL_POD_NAME: meta["name"], LABEL_POD_NAMESPACE: meta.get("namespace", "")}


class Runtime:
    def __init__(self, engine: Engine, root: Path) -> None:
        """`root` is the kubelet's directory; sandbox records live in root/sandboxes, logs in root/logs."""
        self.engine = engine
        self.sandbox_dir = root / "sandboxes"
        self.log_dir = root / "logs"
        self.sandbox_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        spread_subdirectories(self.log_dir)  # a directory per pod
        self._pull_locks: dict[str, asyncio.Lock] = {}
        self._container_locks: dict[str, asyncio.Lock] = {}
        # container id -> its imageID, found once (as CRI runtimes record it at creation): every status
        # report needs it, and finding it reads the image store's files
        self._image_refs: dict[str, str] = {}

    # --- sandboxes -----------------------------------------------------------------------------------

    async def run_sandbox(self, pod: Obj, attempt: int, hostname: str, cgroup_parent: str) -> Sandbox:
        """The pod's namespaces, pinned (and the record saved); for a pod sharing its process namespace, also
        the infrastructure container that is its init, started in the pod's cgroup."""
        spec = pod.get("spec") or {}
        meta = pod["metadata"]
        host_network = bool(spec.get("hostNetwork"))
        host_pid = bool(spec.get("hostPID"))
        kinds = [k for k, shared in (("net", host_network), ("ipc", spec.get("hostIPC")), ("uts", host_network))
                 if not shared]
        sandbox = Sandbox(id=secrets.token_hex(16), pod_uid=meta["uid"], pod_name=meta["name"],
                          pod_namespace=meta.get("namespace", ""), attempt=attempt, host_network=host_network,
                          created=time.time(), host_pid=host_pid)
        await asyncio.to_thread(self._pin_and_save, sandbox, tuple(kinds), hostname if "uts" in kinds else None)
        if spec.get("shareProcessNamespace") and not host_pid:
            try:
                await self._start_infra_container(sandbox, pod, cgroup_parent)
            except BaseException:
                await self.remove_sandbox(sandbox)
                raise
        return sandbox

    async def _start_infra_container(self, sandbox: Sandbox, pod: Obj, cgroup_parent: str) -> None:
        meta = pod["metadata"]
        image = await asyncio.to_thread(ensure_pause_image, self.engine.images)
        config = ContainerConfig(
            image=image.id, name=f"k8s_POD_{meta['name']}_{meta.get('namespace', '')}_{meta['uid']}_{sandbox.attempt}",
            labels={**pod_labels(pod), LABEL_SANDBOX_ID: sandbox.id, LABEL_CONTAINER_TYPE: INFRA_CONTAINER_TYPE},
            # it holds the namespace and reaps orphans: no privilege, no writes
            cap_drop=["ALL"], no_new_privileges=True, readonly_rootfs=True, network="sandbox",
            sandbox_namespaces=self.container_namespaces(sandbox), cgroup_parent=cgroup_parent,
            stop_timeout=0, manage_etc_files=False, cleanup_on_exit=False)
        try:
            container = await self.engine.create(config)
            sandbox.infra_container = container.id
            started = await self.engine.start(container.id)
            pinned = await asyncio.to_thread(self.engine.pin_sandbox_namespace, sandbox.id, "pid", started.state.pid)
        except (EngineError, StaticBinaryUnavailable, OSError) as err:
            raise ContainerCreateError("CreatePodSandboxError", f"pod infrastructure container: {err}") from err
        sandbox.namespaces["pid"] = str(pinned)
        await asyncio.to_thread(self.save_sandbox, sandbox)

    async def sandbox_alive(self, sandbox: Sandbox) -> bool:
        """Its namespaces are still pinned and its infrastructure container (if any) still runs."""
        if not _namespaces_pinned(sandbox):  # a reboot, say, took them
            return False
        if not sandbox.infra_container:
            return True
        infra = await self.inspect(sandbox.infra_container)
        return infra is not None and infra.running

    def _pin_and_save(self, sandbox: Sandbox, kinds: tuple[str, ...], hostname: str | None) -> None:
        if kinds:
            pinned = self.engine.create_sandbox(sandbox.id, kinds=kinds, hostname=hostname)
            sandbox.namespaces = {kind: str(path) for kind, path in pinned.items()}
        self.save_sandbox(sandbox)

    def save_sandbox(self, sandbox: Sandbox) -> None:
        """Blocking (a file creation can take milliseconds): call it from a worker thread."""
        path = self.sandbox_dir / f"{sandbox.id}.json"
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(asdict(sandbox)))
        os.replace(scratch, path)

    def list_sandboxes(self) -> list[Sandbox]:
        found = []
        for path in self.sandbox_dir.glob("*.json"):
            try:
                found.append(Sandbox(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as err:
                log.warning("ignoring unreadable sandbox record %s: %s", path, err)
        found.sort(key=lambda s: (s.created, s.attempt))
        return found

    async def remove_stray_infra_containers(self, sandboxes: list[Sandbox]) -> None:
        """Removes infrastructure containers that no sandbox record names (left by a crash between their
        creation and the record)."""
        named = {sandbox.infra_container for sandbox in sandboxes}
        for container in self.engine.containers.list():
            if container.config.labels.get(LABEL_CONTAINER_TYPE) == INFRA_CONTAINER_TYPE and container.id not in named:
                await self._force_remove(container.id)

    async def remove_sandbox(self, sandbox: Sandbox) -> None:
        """Removes the infrastructure container, unpins the namespaces and forgets the sandbox (its network
        must be torn down first)."""
        if sandbox.infra_container:
            await self._force_remove(sandbox.infra_container)
        if sandbox.namespaces:
            await asyncio.to_thread(self.engine.remove_sandbox, sandbox.id)
        (self.sandbox_dir / f"{sandbox.id}.json").unlink(missing_ok=True)

    @staticmethod
    def container_namespaces(sandbox: Sandbox) -> dict[str, str]:
        """The engine's sandbox_namespaces for a container of the pod: pinned ones, the host's otherwise
        (a network kind left out shares the host's; uts and ipc must be named to join the host's)."""
        joined = {"ipc": sandbox.namespaces.get("ipc", host_namespace("ipc")),
                  "uts": sandbox.namespaces.get("uts", host_namespace("uts"))}
        if "net" in sandbox.namespaces:
            joined["network"] = sandbox.namespaces["net"]
        if "pid" in sandbox.namespaces:
            joined["pid"] = sandbox.namespaces["pid"]
        elif sandbox.host_pid:
            joined["pid"] = host_namespace("pid")
        return joined

    # --- logs ----------------------------------------------------------------------------------------

    def pod_log_dir(self, namespace: str, name: str, uid: str) -> Path:
        """upstream's /var/log/pods/<namespace>_<name>_<uid>."""
        return self.log_dir / f"{namespace}_{name}_{uid}"

    def container_log_path(self, pod: Obj, container: str, restart_count: int) -> Path:
        meta = pod["metadata"]
        return self.pod_log_dir(meta.get("namespace", ""), meta["name"], meta["uid"]) / container / \
            f"{restart_count}.log"

    # --- containers ----------------------------------------------------------------------------------

    async def create_container(self, config: ContainerConfig) -> Container:
        try:
            return await self.engine.create(config)
        except (EngineError, ValueError, OSError) as err:
            raise ContainerCreateError("CreateContainerError", str(err)) from err

    # The engine holds a container's file lock (flock) across awaits, so two operations on one container from
    # this event loop would block it for good: every call that names a container goes through its lock here.
    def _lock(self, container_id: str) -> asyncio.Lock:
        return self._container_locks.setdefault(container_id, asyncio.Lock())

    async def start_container(self, container_id: str) -> Container:
        """The container as started (an exit since then shows in the next inspect)."""
        async with self._lock(container_id):
            try:
                return await self.engine.start(container_id)
            except (EngineError, OSError) as err:
                raise ContainerCreateError("RunContainerError", str(err)) from err

    async def stop_container(self, container_id: str, grace: int) -> None:
        async with self._lock(container_id):
            try:
                await self.engine.stop(container_id, timeout=max(grace, 0))
            except ContainerNotFound:
                pass

    async def remove_container(self, container: Container) -> None:
        await self._force_remove(container.id)
        self._image_refs.pop(container.id, None)
        _remove_files(container)

    async def _force_remove(self, container_id: str) -> None:
        async with self._lock(container_id):
            with contextlib.suppress(ContainerNotFound):
                await self.engine.remove(container_id, force=True)
        self._container_locks.pop(container_id, None)

    async def wait_exit(self, container_id: str) -> None:
        """Returns once the container's process has exited (its monitor recorded the exit, or is gone)."""
        try:
            await conmon.wait_exit(self.engine.monitor_paths, container_id)
        except MonitorGone:
            pass

    async def inspect(self, container_id: str) -> Container | None:
        """The container refreshed (an exit is recorded), or None once it is gone."""
        async with self._lock(container_id):
            try:
                return await self.engine.refresh(container_id)
            except ContainerNotFound:
                return None

    async def exec(self, container_id: str, command: list[str], *, tty: bool = False, stdin: bool = False
                   ) -> ExecStream:
        """Starts a command in the running container (the engine's exec, under the container's lock)."""
        async with self._lock(container_id):
            return await self.engine.exec(container_id, command, tty=tty, stdin=stdin)

    async def attach(self, container_id: str) -> AttachSession:
        return await self.engine.attach(container_id)

    async def list_containers(self, pod_uid: str | None = None) -> list[Container]:
        """The kubelet's containers (of one pod when given), each refreshed so exits are recorded."""
        found = []
        for container in self.engine.containers.list():
            labels = container.config.labels
            if LABEL_POD_UID not in labels or (pod_uid is not None and labels[LABEL_POD_UID] != pod_uid):
                continue
            if labels.get(LABEL_CONTAINER_TYPE) == INFRA_CONTAINER_TYPE:
                continue  # its sandbox's record names it
            if container.running:
                refreshed = await self.inspect(container.id)
                if refreshed is None:
                    continue
                container = refreshed
            found.append(container)
        return found

    def running_logs(self) -> list[tuple[str, Path]]:
        """(container id, log path) of the kubelet's running containers, as their records say (blocking)."""
        return [(c.id, Path(c.config.log_path)) for c in self.engine.containers.list()
                if c.running and c.config.log_path and LABEL_POD_UID in c.config.labels]

    async def reopen_log(self, container_id: str) -> None:
        """The CRI's ReopenContainerLog."""
        self.engine.reopen_log(container_id)

    def instance_state(self, container: Container) -> InstanceState:
        state = container.state
        labels = container.config.labels
        instance = InstanceState(
            container_id=ID_PREFIX + container.id, state="exited", restart_count=int(labels.get(LABEL_RESTART_COUNT,
                                                                                                  0)),
            image=normalize_image(container.image), image_id=self._image_ref(container),
            started_at=state.started_at, finished_at=state.finished_at, exit_code=state.exit_code,
            user=(state.uid, state.gid, list(state.groups)) if state.groups else None)
        if container.running:
            instance.state = "running"
        elif state.status == "created" and not state.error:
            instance.state = "created"
        elif state.error and not state.started_at:
            instance.reason = "StartError"
            instance.message = state.error
            instance.exit_code = exit_code(container)
            instance.finished_at = instance.finished_at or container.created
        else:
            instance.reason = "OOMKilled" if state.oom_killed else ("Completed" if state.exit_code == 0 else "Error")
            instance.message = termination_message(container)
        return instance

    def _image_ref(self, container: Container) -> str:
        known = self._image_refs.get(container.id)
        if known is None:
            try:
                image = self.engine.images.resolve(container.image_id) if container.image_id else None
            except ImageNotFound:  # removed since: what the record says is all there is
                image = None
            known = self._image_refs[container.id] = image_id(image, container.image_id)
        return known

    # --- images --------------------------------------------------------------------------------------

    def image_present(self, reference: str) -> Image | None:
        try:
            return self.engine.images.resolve(reference)
        except (ImageNotFound, ValueError):
            return None

    async def pull_image(self, reference: str, pull_secrets: list[bytes]) -> Image:
        """Pull with the pod's image pull secrets (.dockerconfigjson documents), tried in order."""
        lock = self._pull_locks.setdefault(reference, asyncio.Lock())
        async with lock:
            stores: list[CredentialStore | None] = []
            for document in pull_secrets:
                try:
                    stores.append(CredentialStore.from_document(document))
                except CredentialError as err:
                    log.warning("ignoring an image pull secret: %s", err)
            failure: Exception | None = None
            for credentials in [*stores, None] if stores else [None]:
                try:
                    client = RegistryClient(credentials=credentials,
                                            hosts=RegistryHosts.for_data_dir(self.engine.data_dir))
                    return await client.pull(self.engine.images, reference)
                except Exception as err:  # registry, network and content errors all mean "pull failed"
                    failure = err
            raise ImagePullError("ErrImagePull", f'failed to pull and unpack image "{normalize_image(reference)}": '
                                                 f"{failure}")


def exit_code(container: Container) -> int:
    """The exit code the kubelet reasons with: a container that failed to start counts as 128 (StartError)."""
    state = container.state
    if state.error and not state.started_at:
        return START_ERROR_EXIT_CODE  # what CRI runtimes report for StartError, whatever the engine's code
    return state.exit_code


def image_id(image: Image | None, fallback: str) -> str:
    """What CRI runtimes report as imageID: the repo digest when the image came from a registry."""
    if image is not None and image.repo_digests:
        return normalize_image(image.repo_digests[0])
    return image.id if image is not None else fallback


def termination_message(container: Container) -> str:
    """The message file's contents (at most 4096 bytes), or for FallbackToLogsOnError and a failed exit,
    the tail of the log."""
    labels = container.config.labels
    path = labels.get(LABEL_TERMINATION_LOG)
    message = b""
    if path:
        try:
            with open(path, "rb") as f:
                message = f.read(MAX_TERMINATION_MESSAGE)
        except OSError:
            message = b""
    if not message and labels.get(LABEL_TERMINATION_POLICY) == "FallbackToLogsOnError" and \
            container.state.exit_code != 0:
        message = _log_tail(Path(container.config.log_path))
    return message.decode(errors="replace")


def _remove_files(container: Container) -> None:
    """A removed container's log (rotated files too) and termination message file go with it."""
    Path(container.config.log_path).unlink(missing_ok=True)
    remove_rotated(Path(container.config.log_path))
    termination = container.config.labels.get(LABEL_TERMINATION_LOG)
    if termination:
        Path(termination).unlink(missing_ok=True)


def _log_tail(path: Path) -> bytes:
    try:
        lines = read_log(path)
    except OSError:
        return b""
    text = b"".join(line.data for line in lines[-FALLBACK_LOG_LINES:])
    return text[-FALLBACK_LOG_BYTES:]
