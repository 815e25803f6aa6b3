"""The engine: images, snapshots and containers behind one small interface (what dockerd/containerd are to
Docker and the kubelet). Daemonless like Podman: every process that opens an Engine on the same data
directory sees the same state, and each container's conmon keeps it alive and records its exit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal as signals
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pocketkube.engine import etcfiles, exitcleanup
from pocketkube.engine.containers import (
    Container,
    ContainerConfig,
    ContainerNotFound,
    ContainerState,
    ContainerStateError,
    ContainerStore,
)
from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.store import Image, ImageStore
from pocketkube.engine.network import DefaultNetwork
from pocketkube.engine.paths import resolve_in_root
from pocketkube.engine.runtime import cgroups, conmon, favordynmods, namespaces, spec
from pocketkube.engine.runtime.attach import AttachSession
from pocketkube.engine.runtime.attach import attach as attach_stdio
from pocketkube.engine.runtime.oci import OCIRuntime, OCIRuntimeError
from pocketkube.engine.runtime.users import resolve_user
from pocketkube.engine.settings import EngineSettings
from pocketkube.engine.snapshots.snapshotter import Mount as SnapshotMount
from pocketkube.engine.snapshots.snapshotter import Snapshotter, chain_ids
from pocketkube.engine.snapshots.unpack import apply_layer
from pocketkube.engine.streams import ExecStream, exec_error_code
from pocketkube.fsutil import spread_subdirectories

DEFAULT_STOP_TIMEOUT = 10


class EngineError(RuntimeError):
    """A failure to do what was asked; exit_code follows Docker's CLI (125 engine, 126 cannot invoke,
    127 command not found)."""

    def __init__(self, message: str, exit_code: int = 125) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _short_hash(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]


class Engine:
    def __init__(self, data_dir: Path, *, runtime: str | None = None, run_root: Path | None = None) -> None:
        """Settings come from DATA_DIR/engine.json; `runtime` overrides its choice for this process."""
        self.data_dir = data_dir
        self.settings = EngineSettings.load(data_dir)
        self.cgroup_parent = self.settings.cgroup_parent
        self.root = data_dir / "engine"
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_root = run_root or Path("/run/pocketkube") / _short_hash(self.root)
        self.content = ContentStore(self.root / "content")
        self.images = ImageStore(self.root / "images", self.content)
        self.snapshots = Snapshotter(self.root / "snapshots", mode=self.settings.snapshotter)
        self.containers = ContainerStore(self.root / "containers")
        # Created on first use (conmon.create_container), not here: commands that start nothing leave no trace.
        self.monitor_paths = conmon.MonitorPaths(
            exit_dir=self.run_root / "exits", persist_dir=self.run_root / "persist",
            socket_dir=self.run_root / "sockets")
        self._runtime_choice = runtime if runtime and runtime != "auto" else self.settings.runtime
        self._runtime: OCIRuntime | None = None
        self._network: DefaultNetwork | None = None

    # --- parts built on first use (detection costs a probe; not every command needs them) -----------

    @property
    def runtime(self) -> OCIRuntime:
        if self._runtime is None:
            self._runtime = OCIRuntime.detect(self.run_root / "runtime", self._runtime_choice)
            # conmon keeps a directory per container there (made on first use, with the others)
            self.monitor_paths.persist_dir.mkdir(parents=True, exist_ok=True)
            spread_subdirectories(self.monitor_paths.persist_dir)
            if self.settings.cgroup_favordynmods == "on":
                favordynmods.favor_dynamic_modifications()  # ~11 ms off most container starts
        return self._runtime

    @property
    def network(self) -> DefaultNetwork:
        if self._network is None:
            self._network = DefaultNetwork(self.root / "network", self.run_root / "netns",
                                           bridge=self.settings.bridge, subnet=self.settings.subnet)
        return self._network

    # --- images --------------------------------------------------------------------------------------

    def image_in_use(self, image_id: str) -> str:
        """The id of a container using the image, or ''."""
        for container in self.containers.list():
            if container.image_id == image_id:
                return container.id
        return ""

    async def _rootfs_chain(self, image: Image) -> str | None:
        """The image's top chain ID, its layers unpacked (None: an image without layers). Usually they are
        already, which one index read tells; only an unpack goes to a worker thread."""
        if not image.layers:
            return None
        top = chain_ids([layer.diff_id for layer in image.layers])[-1]
        if not self.snapshots.has_layer(top):
            layers = [(layer.diff_id, (lambda d=layer.digest: self.content.open(d))) for layer in image.layers]
            await asyncio.to_thread(self.snapshots.ensure_layers, layers)
        return top

    # --- containers: create --------------------------------------------------------------------------

    async def create(self, config: ContainerConfig) -> Container:
        image = self.images.resolve(config.image)
        image_config = image.config.get("config") or {}
        try:
            args = spec.resolve_command(config.entrypoint, config.command,
                                        image_config.get("Entrypoint"), image_config.get("Cmd"))
        except ValueError as err:
            raise EngineError(str(err)) from None
        for mount in config.mounts:
            if mount.type == "bind" and not os.path.exists(mount.source):
                raise EngineError(f"invalid mount config for type \"bind\": bind source path does not exist: "
                                  f"{mount.source}")
        if not config.cgroup_parent:
            config.cgroup_parent = self.cgroup_parent
        if config.ports and config.network != "default":
            raise EngineError("published ports need the default network")
        chain = await self._rootfs_chain(image)
        env = spec.merge_env(image_config.get("Env") or [], config.env)
        config.user = config.user or image_config.get("User") or ""  # the image's USER unless overridden

        def make(cid: str, directory: Path) -> Container:
            self.snapshots.prepare(cid, chain, readonly=False)
            return Container(
                id=cid, name=config.name, image=config.image, image_id=image.id, created=_now(),
                config=config, args=args, env=env,
                working_dir=config.working_dir or image_config.get("WorkingDir") or "/",
                stop_signal=config.stop_signal or image_config.get("StopSignal") or "SIGTERM",
                directory=directory)

        # In a worker thread: it waits for fsyncs, which must not hold up the other tasks of the event loop.
        return await asyncio.to_thread(self.containers.add, make, self.snapshots.remove)

    # --- start ---------------------------------------------------------------------------------------

    async def start(self, ref: str, *, on_created: Callable[[Container], Awaitable[None]] | None = None
                    ) -> Container:
        """Starts the container; `on_created` runs once its process exists but before it runs (to
        attach to its stdio without missing a byte)."""
        container = self.containers.resolve(ref)
        async with self.containers.locked(container.id):
            container = await self._refresh_locked(container.id)
            if container.running:
                return container
            await self._teardown(container)
            try:
                await self._start_locked(container, on_created)
            except BaseException as err:
                await self._teardown(container)
                container.state.error = str(err)
                if isinstance(err, OCIRuntimeError):
                    container.state.exit_code = exec_error_code(str(err))
                self.containers.save(container)
                if isinstance(err, OCIRuntimeError):
                    raise EngineError(str(err), container.state.exit_code) from err
                raise
            return container

    async def _start_locked(self, container: Container,
                            on_created: Callable[[Container], Awaitable[None]] | None) -> None:
        config = container.config
        self._mount_rootfs(container)
        state = container.state
        state.error = ""
        namespaces_spec: dict[str, str | None] = {"pid": None, "mount": None, "ipc": None, "uts": None}
        if config.network == "sandbox":
            namespaces_spec.update(config.sandbox_namespaces)
        elif config.network == "none":
            # A namespace of its own that nothing else needs to enter: the runtime makes it (both bring its
            # loopback up), which spares pinning and unpinning one.
            namespaces_spec["network"] = None
        elif config.network == "default":
            attachment = await self.network.attach(container.id, config.ports)
            namespaces_spec["network"] = attachment.netns
            state.netns = attachment.netns
            state.ip_address, state.gateway, state.mac_address = attachment.ip, attachment.gateway, attachment.mac
        elif config.network != "host":
            raise EngineError(f"network {config.network} not found")
        hostname = config.hostname or (container.short_id if config.network != "host" else os.uname().nodename)
        if config.network == "sandbox" and "uts" in config.sandbox_namespaces:
            hostname = ""  # the sandbox's uts namespace already carries the pod's hostname
        mounts = list(config.mounts)
        if config.manage_etc_files:
            mounts += etcfiles.write(container.directory, hostname=hostname or os.uname().nodename,
                                     ip=state.ip_address, host_network=config.network == "host")
        try:
            uid, gid, groups, home = resolve_user(container.rootfs, config.user, config.group_add,
                                                  image_groups=config.image_groups)
        except ValueError as err:
            raise EngineError(str(err)) from None
        env = list(container.env)
        if not any(e.startswith("HOSTNAME=") for e in env) and hostname:
            env.append(f"HOSTNAME={hostname}")
        if not any(e.startswith("HOME=") for e in env):
            env.append(f"HOME={home or '/'}")
        process = spec.Process(
            args=container.args, env=env, cwd=container.working_dir, uid=uid, gid=gid,
            additional_gids=groups, terminal=config.tty, cap_add=config.cap_add, cap_drop=config.cap_drop,
            no_new_privileges=config.no_new_privileges)
        container_spec = spec.ContainerSpec(
            process=process, rootfs=str(container.rootfs), hostname=hostname if "uts" in namespaces_spec
            and namespaces_spec["uts"] is None else "",
            readonly_rootfs=config.readonly_rootfs, mounts=mounts, namespaces=namespaces_spec,
            cgroups_path=container.cgroups_path, resources=config.resources, privileged=config.privileged,
            sysctls=config.sysctls, shm_size=config.shm_size)
        self._ensure_workdir(container, uid, gid)
        state.uid, state.gid, state.groups = uid, gid, groups
        document = spec.build_spec(container_spec)
        bundle = container.bundle
        (bundle / "config.json").write_text(json.dumps(document))
        exit_command = self._exit_command(container) if config.cleanup_on_exit else None
        # Not saved as "created" in between: until the record says running, a restarted engine (or a start
        # after a crash here) tears down whatever this attempt left, the runtime's container included.
        state.pid = await conmon.create_container(
            self.runtime, container.id, bundle, log_path=container.log_path, paths=self.monitor_paths,
            terminal=config.tty, stdin=config.stdin, exit_command=exit_command)
        state.status = "created"
        if on_created is not None:
            await on_created(container)
        await self.runtime.start(container.id)
        state.status = "running"
        state.started_at = _now()
        state.finished_at = 0.0
        state.exit_code = 0
        state.oom_killed = False
        self.containers.save(container)

    def _exit_command(self, container: Container) -> list[str]:
        return [sys.executable, "-m", "pocketkube.cli.main", "container-cleanup",
                "--data-dir", str(self.data_dir), container.id]

    def _ensure_workdir(self, container: Container, uid: int, gid: int) -> None:
        """Docker creates a missing WORKDIR (owned by the container's user) before the process starts."""
        target = resolve_in_root(container.rootfs, container.working_dir)
        if not target.exists():
            target.mkdir(parents=True, mode=0o755)
            os.chown(target, uid, gid)

    def _mount_rootfs(self, container: Container) -> None:
        rootfs = container.rootfs
        rootfs.mkdir(parents=True, exist_ok=True)
        if SnapshotMount.is_mounted(rootfs):
            return
        for mount in self.snapshots.mounts(container.id):
            mount.mount(rootfs)
        container.state.rootfs_mounted = True

    # --- observing exits -----------------------------------------------------------------------------

    async def refresh(self, ref: str) -> Container:
        """The container as it is now: a running record whose process has exited becomes exited, with
        its exit code, OOM flag and finish time, and its runtime resources are released."""
        container = self.containers.resolve(ref)
        if container.state.status not in ("running", "paused", "created"):
            return container
        async with self.containers.locked(container.id):
            return await self._refresh_locked(container.id)

    async def _refresh_locked(self, cid: str) -> Container:
        container = self.containers.load(cid)
        state = container.state
        if state.status not in ("running", "paused"):
            return container
        exited = conmon.exit_status(self.monitor_paths, cid)
        if exited is None:
            if conmon.monitor_alive(self.monitor_paths, cid):
                return container
            # It may have written the exit file and ended between the two looks: the file comes first.
            exited = conmon.exit_status(self.monitor_paths, cid)
        if exited is None:
            # The monitor is gone without recording an exit (machine reboot, kill -9 of conmon).
            runtime_state = await self.runtime.state(cid)
            if runtime_state and runtime_state.get("status") in ("running", "paused"):
                return container
            exited = (255, _now())
            state.error = "container monitor exited without recording an exit code"
        state.exit_code, state.finished_at = exited
        state.oom_killed = conmon.oom_killed(self.monitor_paths, cid) or cgroups.oom_killed(container.cgroups_path)
        state.status = "exited"
        state.pid = 0
        await self._teardown(container)
        self.containers.save(container)
        return container

    async def _teardown(self, container: Container) -> None:
        """Releases what a started container holds: runtime state and cgroup, then (meanwhile) network and
        rootfs mount, which do not depend on them."""
        outcomes = await asyncio.gather(self._release_runtime(container), self._release_network_and_rootfs(container),
                                        return_exceptions=True)
        for outcome in outcomes:  # both ran to their end before either failure is reported
            if isinstance(outcome, BaseException):
                raise outcome

    async def _release_runtime(self, container: Container) -> None:
        # The runtime keeps a state directory per container: without one there is nothing to delete, and
        # skipping the call saves a runtime process (~3 ms) on every start and remove.
        if (self.runtime.state_root / container.id).exists() and not (
                container.state.status == "exited" and self.runtime.discard_ended(container.id)):
            try:
                await self.runtime.delete(container.id, force=True)
            except OCIRuntimeError:
                pass
        if cgroups.exists(container.cgroups_path):  # left by discard_ended, or a delete that failed
            await asyncio.to_thread(cgroups.remove, container.cgroups_path, kill=True)

    async def _release_network_and_rootfs(self, container: Container) -> None:
        state = container.state
        if state.netns:
            await self.network.detach(container.id, state.netns, connected=container.config.network == "default",
                                      ports=bool(container.config.ports))
            state.netns = ""
        if SnapshotMount.is_mounted(container.rootfs):
            # In a worker thread, beside the cgroup removal: unmounting an overlay syncs its upper filesystem
            # (~2 ms here), which need not hold up the event loop.
            await asyncio.to_thread(SnapshotMount.unmount, container.rootfs)
        state.rootfs_mounted = False

    # --- stop, kill, wait, remove --------------------------------------------------------------------

    async def kill(self, ref: str, signal: str | int = "KILL") -> Container:
        container = await self.refresh(ref)
        if not container.running:
            raise ContainerStateError(f"Cannot kill container: {ref}: Container {container.id} is not running")
        await self.runtime.kill(container.id, signal)
        return container

    async def stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> Container:
        container = await self.refresh(ref)
        if not container.running:
            return container
        if timeout is None:
            timeout = container.config.stop_timeout if container.config.stop_timeout is not None \
                else DEFAULT_STOP_TIMEOUT
        stop_signal = signal or container.stop_signal
        if timeout != 0:
            await self.runtime.kill(container.id, stop_signal)
            try:
                await conmon.wait_exit(self.monitor_paths, container.id, timeout=timeout if timeout > 0 else None)
                return await self.refresh(container.id)
            except TimeoutError:
                pass
        await self.runtime.kill(container.id, signals.SIGKILL, all=True)
        await conmon.wait_exit(self.monitor_paths, container.id, timeout=30)
        return await self.refresh(container.id)

    async def restart(self, ref: str, timeout: int | None = None) -> Container:
        await self.stop(ref, timeout)
        container = await self.start(ref)
        container.state.restart_count += 1
        async with self.containers.locked(container.id):
            self.containers.save(container)
        return container

    async def wait(self, ref: str, timeout: float | None = None) -> Container:
        container = await self.refresh(ref)
        if container.running:
            await conmon.wait_exit(self.monitor_paths, container.id, timeout=timeout)
            container = await self.refresh(container.id)
        return container

    async def remove(self, ref: str, *, force: bool = False) -> Container:
        container = await self.refresh(ref)
        if container.running:
            if not force:
                raise ContainerStateError(
                    f'cannot remove container "/{container.name}": container is running: stop the container '
                    "before removing or force remove")
            # This process records the exit: conmon's exit command need not load the engine to do it again.
            marker = container.directory / exitcleanup.REMOVAL_MARKER
            marker.touch()
            try:
                await self.runtime.kill(container.id, signals.SIGKILL, all=True)
                await conmon.wait_exit(self.monitor_paths, container.id, timeout=30)
                container = await self.refresh(container.id)
            except BaseException:
                marker.unlink(missing_ok=True)  # the exit command is back in charge
                raise
        async with self.containers.locked(container.id):
            await self._teardown(container)
            snapshot_files = await asyncio.to_thread(self.snapshots.release, container.id)
            record_files = self.containers.release(container)
        # Gone from the stores: the files themselves, and what the monitor left (ids are never reused), are
        # deleted off the caller's path (asyncio.run waits for the worker thread before it returns, so a CLI
        # still leaves nothing behind).
        asyncio.get_running_loop().run_in_executor(None, _delete_files, self.monitor_paths, container.id,
                                                   snapshot_files, record_files)
        return container

    async def cleanup_exited(self, ref: str) -> None:
        """What conmon's exit command runs: record the exit, release resources, honour --rm."""
        try:
            container = await self.refresh(ref)
        except ContainerNotFound:
            return
        if container.config.auto_remove and not container.running:
            try:
                await self.remove(container.id)
            except ContainerNotFound:
                pass

    # --- exec, logs, processes, stats ----------------------------------------------------------------

    async def exec(self, ref: str, args: list[str], *, tty: bool = False, stdin: bool = False,
                   env: list[str] = (), user: str = "", working_dir: str = "", privileged: bool = False
                   ) -> ExecStream:
        container = await self.refresh(ref)
        if container.state.status != "running":
            raise ContainerStateError(f"container {container.id} is not running")
        try:
            uid, gid, groups, home = resolve_user(container.rootfs, user or container.config.user,
                                                  container.config.group_add,
                                                  image_groups=container.config.image_groups)
        except ValueError as err:
            raise EngineError(str(err)) from None
        process = spec.Process(
            args=list(args), env=spec.merge_env(container.env, list(env)),
            cwd=working_dir or container.working_dir, uid=uid, gid=gid, additional_gids=groups, terminal=tty,
            cap_add=container.config.cap_add, cap_drop=container.config.cap_drop,
            no_new_privileges=container.config.no_new_privileges)
        document = spec.process_spec(process, privileged=privileged or container.config.privileged)
        try:
            session = await self.runtime.exec(container.id, document, tty=tty, stdin=stdin)
        except OCIRuntimeError as err:
            raise EngineError(str(err), exec_error_code(str(err))) from err
        return ExecStream(session)

    def processes(self, container: Container) -> list[int]:
        return cgroups.pids(container.cgroups_path) if container.running else []

    def stats(self, container: Container) -> cgroups.CgroupStats | None:
        return cgroups.read_stats(container.cgroups_path) if container.running else None

    async def attach(self, ref: str) -> AttachSession:
        """The container's stdio through its monitor (stdin only if it was created with it open)."""
        container = self.containers.resolve(ref)
        return await attach_stdio(self.monitor_paths, container.id)

    def reopen_log(self, ref: str) -> None:
        """The running container's monitor starts a new log file at the log path, after the caller renamed
        the old one away (log rotation); MonitorGone once the container has ended."""
        conmon.reopen_log(self.monitor_paths, self.containers.resolve(ref).id)

    # --- copying files in and out (docker cp) --------------------------------------------------------

    @contextmanager
    def _rootfs_for_copy(self, container: Container) -> Iterator[Path]:
        """The container's root filesystem, mounted for the duration when the container is not running."""
        if SnapshotMount.is_mounted(container.rootfs):
            yield container.rootfs
            return
        container.rootfs.mkdir(parents=True, exist_ok=True)
        for mount in self.snapshots.mounts(container.id):
            mount.mount(container.rootfs)
        try:
            yield container.rootfs
        finally:
            SnapshotMount.unmount(container.rootfs)

    async def copy_from(self, ref: str, path: str, out: BinaryIO, *, follow_link: bool = False) -> None:
        """A tar of `path` inside the container; `dir/.` archives the directory's contents (docker cp)."""
        container = await self.refresh(ref)
        async with self.containers.locked(container.id):
            with self._rootfs_for_copy(container) as rootfs:
                contents_only = path.endswith("/.")
                parent, _, name = path.rstrip("/").rstrip(".").rstrip("/").rpartition("/") if contents_only \
                    else path.rstrip("/").rpartition("/")
                base = resolve_in_root(rootfs, parent or "/")
                target = resolve_in_root(rootfs, path) if follow_link or contents_only else base / name
                if not target.exists() and not target.is_symlink():
                    raise FileNotFoundError(f"Could not find the file {path} in container {container.name}")
                await asyncio.to_thread(_write_tar, target, "." if contents_only else (name or "/"), out)

    async def copy_to(self, ref: str, path: str, data: BinaryIO, *, archive: bool = False) -> None:
        """Unpacks a tar into the container: into `path` when it is a directory (the entries keep their
        names), else the single top entry becomes `path` (docker cp)."""
        container = await self.refresh(ref)
        async with self.containers.locked(container.id):
            with self._rootfs_for_copy(container) as rootfs:
                target = resolve_in_root(rootfs, path)
                if target.is_dir():
                    await asyncio.to_thread(apply_layer, data, target, overlay=False)
                    return
                if archive:
                    raise FileNotFoundError(f"Could not find the file {path} in container {container.name}")
                if not target.parent.is_dir():
                    raise FileNotFoundError(f"Could not find the file {path.rpartition('/')[0] or '/'} in container "
                                            f"{container.name}")
                staging = Path(tempfile.mkdtemp(prefix=".pocketkube-cp-", dir=target.parent))
                try:
                    await asyncio.to_thread(apply_layer, data, staging, overlay=False)
                    entries = list(staging.iterdir())
                    if len(entries) != 1:
                        raise ValueError("the archive must hold exactly one top-level entry to copy to a new path")
                    os.replace(entries[0], target)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)

    # --- disk ----------------------------------------------------------------------------------------

    def collect_snapshots(self) -> list[str]:
        """Removes unpacked layers that no image and no container needs any more."""
        keep: set[str] = set()
        for image in self.images.list():
            keep.update(chain_ids([layer.diff_id for layer in image.layers]))
        return self.snapshots.gc(keep)

    # --- sandboxes: pinned namespaces a group of containers shares (a pod) ---------------------------

    def create_sandbox(self, sandbox_id: str, *, kinds: tuple[str, ...] = ("net", "ipc", "uts"),
                       hostname: str | None = None) -> dict[str, Path]:
        sandboxes = self.run_root / "sandboxes"
        if not sandboxes.is_dir():
            sandboxes.mkdir(parents=True, exist_ok=True)
            spread_subdirectories(sandboxes)  # a directory per sandbox
        return namespaces.create_pinned(sandboxes / sandbox_id, kinds, hostname=hostname)

    def pin_sandbox_namespace(self, sandbox_id: str, kind: str, pid: int) -> Path:
        """Adds process `pid`'s namespace of `kind` to the sandbox (a pod's shared pid namespace: the pid of
        its init, which must run as long as the namespace is used)."""
        return namespaces.pin_process_namespace(self.run_root / "sandboxes" / sandbox_id, kind, pid)

    def remove_sandbox(self, sandbox_id: str) -> None:
        directory = self.run_root / "sandboxes" / sandbox_id
        namespaces.remove_pinned(directory)
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass

    # --- restart of the engine -----------------------------------------------------------------------

    async def recover(self) -> dict[str, list[str]]:
        """Reconciles the records with what really runs after an engine (or machine) restart: running
        records whose process is gone become exited; runtime containers nobody records are removed."""
        known = set()
        exited = []
        for container in self.containers.list():
            known.add(container.id)
            if container.running:
                refreshed = await self.refresh(container.id)
                if not refreshed.running:
                    exited.append(container.id)
        orphans = []
        for entry in await self.runtime.list():
            cid = entry.get("id", "")
            if cid not in known and len(cid) == 64:
                try:
                    await self.runtime.kill(cid, signals.SIGKILL, all=True)
                except OCIRuntimeError:
                    pass
                await self.runtime.delete(cid, force=True)
                conmon.cleanup(self.monitor_paths, cid)
                orphans.append(cid)
        return {"exited": exited, "orphans_removed": orphans}



def _now() -> float:
    return time.time()


def _delete_files(monitor_paths: conmon.MonitorPaths, cid: str, *directories: Path) -> None:
    conmon.cleanup(monitor_paths, cid)
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def _write_tar(target: Path, arcname: str, out: BinaryIO) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(target, arcname=arcname)


__all__ = ["Container", "ContainerConfig", "ContainerNotFound", "ContainerState", "ContainerStateError", "Engine",
           "EngineError"]
