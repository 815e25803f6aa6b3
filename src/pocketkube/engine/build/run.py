"""RUN: the command in a real container on the step's snapshot, in the foreground, its output streamed into
the progress. No container record: a bundle in the step's directory, `runc|crun run`, a cgroup under the
engine's parent, the network the step asked for. Whatever the runtime had to create as mount points in
the root filesystem is removed afterwards, so only the command's own changes reach the layer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from pocketkube.engine import etcfiles
from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.fileops import make_workdir
from pocketkube.engine.build.netpool import NetworkPool
from pocketkube.engine.build.progress import Vertex
from pocketkube.engine.build.runmounts import MountPreparer
from pocketkube.engine.build.steps import RunStep
from pocketkube.engine.build.workspace import Sandbox
from pocketkube.engine.engine import Engine
from pocketkube.engine.paths import resolve_in_root
from pocketkube.engine.runtime import cgroups, spec
from pocketkube.engine.runtime.oci import OCIRuntime, OCIRuntimeError
from pocketkube.engine.runtime.users import UserNotFound, resolve_user

HOSTNAME = "buildkitsandbox"
# Mount points the runtime needs besides the step's own mounts (the rest live inside these).
_RUNTIME_MOUNT_POINTS = ("/proc", "/dev", "/sys")
_OUTPUT_DRAIN_TIMEOUT = 10.0


@dataclass
class RunEnvironment:
    """What every RUN of a build shares."""

    engine: Engine
    networks: NetworkPool
    mounts: MountPreparer
    _detecting: asyncio.Future[OCIRuntime] | None = field(default=None, init=False)

    async def runtime(self) -> OCIRuntime:
        """The engine's OCI runtime, detected on first use (a fully cached build never needs it) in a worker
        thread: detection runs the runtime (~15 ms), which would stall the event loop and the other stages.
        The builder asks early, so that this overlaps the steps before the first RUN."""
        if self._detecting is None:
            self._detecting = asyncio.ensure_future(asyncio.to_thread(lambda: self.engine.runtime))
        return await asyncio.shield(self._detecting)


class MountStubs:
    """Mount points the runtime will create in the root filesystem (a missing /etc/hosts, /run/secrets/x):
    found before the run, removed after it (when still empty), their parents' times restored."""

    def __init__(self, rootfs: Path, destinations: list[str]) -> None:
        self.rootfs = rootfs
        self.stubs: list[tuple[Path, Path, os.stat_result]] = []  # (first missing path, parent, parent's stat)
        targets = sorted({os.path.normpath(d) for d in destinations})
        for destination in targets:
            if any(destination != other and destination.startswith(other.rstrip("/") + "/") for other in targets):
                continue  # inside another mount: its stub lives there, not in the root filesystem
            missing = self._first_missing(destination)
            if missing is not None:
                self.stubs.append((missing, missing.parent, os.lstat(missing.parent)))

    def _first_missing(self, destination: str) -> Path | None:
        current = ""
        for part in [p for p in destination.split("/") if p]:
            current = f"{current}/{part}"
            path = resolve_in_root(self.rootfs, current)
            if not os.path.lexists(path):
                return path
        return None

    @property
    def parents(self) -> list[str]:
        """The directories that received stubs, relative to the root filesystem."""
        return [os.path.relpath(parent, self.rootfs) for _, parent, _ in self.stubs]

    def remove(self) -> None:
        for missing, parent, parent_stat in self.stubs:
            if _remove_if_empty(missing):
                with contextlib.suppress(FileNotFoundError):
                    os.utime(parent, ns=(parent_stat.st_atime_ns, parent_stat.st_mtime_ns))


def _remove_if_empty(path: Path) -> bool:
    """Remove a stub: an empty file, or directories holding nothing but empty stubs."""
    try:
        if path.is_symlink() or not path.is_dir():
            if path.stat().st_size:
                return False
            path.unlink()
            return True
        if all(_remove_if_empty(child) for child in list(path.iterdir())):
            path.rmdir()
            return True
    except FileNotFoundError:
        return True
    return False


async def run_step(environment: RunEnvironment, sandbox: Sandbox, step: RunStep, vertex: Vertex) -> list[str]:
    """Run the step's command in ``sandbox`` (mounted). Returns the directories that received mount stubs
    (relative to the root filesystem), for the caller to drop again when they are unchanged."""
    rootfs = sandbox.rootfs
    try:
        uid, gid, groups, home = resolve_user(rootfs, step.user)
    except UserNotFound as err:
        raise BuildError(str(err)) from None
    if not resolve_in_root(rootfs, step.workdir).is_dir():
        await asyncio.to_thread(make_workdir, rootfs, step.workdir, step.user)
    cid = f"pkb-{sandbox.key.removeprefix('build-')}"
    cgroup = f"{environment.engine.cgroup_parent.rstrip('/')}/{cid}"
    async with AsyncExitStack() as stack:
        prepared = await environment.mounts.prepare(step.mounts, stack, sandbox.directory)
        namespaces: dict[str, str | None] = {"pid": None, "mount": None, "ipc": None, "uts": None}
        ip = ""
        if step.network == "default":
            entry = await environment.networks.acquire()
            stack.callback(environment.networks.release, entry)
            namespaces["network"] = entry[1].netns
            ip = entry[1].ip
        elif step.network == "none":
            namespaces["network"] = None
        etc = [mount for mount in etcfiles.write(sandbox.directory, hostname=HOSTNAME, ip=ip,
                                                 host_network=step.network == "host")
               if mount.destination != "/etc/hostname"]
        mounts = etc + prepared.mounts
        stubs = MountStubs(rootfs, [m.destination for m in mounts] + list(_RUNTIME_MOUNT_POINTS))
        stack.callback(stubs.remove)
        env = spec.merge_env(step.env, step.proxy_env + prepared.env)
        if not any(entry.startswith("HOME=") for entry in env):
            env.append(f"HOME={home or '/'}")
        process = spec.Process(args=step.args, env=env, cwd=step.workdir, uid=uid, gid=gid, additional_gids=groups)
        document = spec.build_spec(spec.ContainerSpec(
            process=process, rootfs=str(rootfs), hostname=HOSTNAME, mounts=mounts, namespaces=namespaces,
            cgroups_path=cgroup))
        (sandbox.directory / "config.json").write_text(json.dumps(document))
        stack.push_async_callback(asyncio.to_thread, cgroups.remove, cgroup, kill=True)
        command = " ".join(step.args)
        try:
            code = await _run_container(await environment.runtime(), cid, sandbox.directory, vertex)
        except OCIRuntimeError as err:
            raise BuildError(f'process "{command}" did not complete successfully: {err}') from None
        if code != 0:
            raise BuildError(f'process "{command}" did not complete successfully: exit code: {code}')
        return stubs.parents


async def _run_container(runtime: OCIRuntime, cid: str, bundle: Path, vertex: Vertex) -> int:
    """`run` in the foreground, stdout and stderr streamed to ``vertex``; killed when cancelled."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_fd, False)
    drained = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(read_fd, 1 << 16)
        except BlockingIOError:
            return
        if data:
            vertex.output(data)
        elif not drained.done():
            loop.remove_reader(read_fd)
            drained.set_result(None)

    loop.add_reader(read_fd, readable)
    try:
        try:
            code = await runtime.run_bundle(cid, bundle, stdout=write_fd, stderr=write_fd)
        except BaseException:
            with contextlib.suppress(OCIRuntimeError):
                await runtime.kill(cid, signal.SIGKILL, all=True)
            with contextlib.suppress(OCIRuntimeError):
                await runtime.delete(cid, force=True)
            raise
        finally:
            os.close(write_fd)
        # the container's processes are gone with it; what they wrote last is still in the pipe
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(drained), _OUTPUT_DRAIN_TIMEOUT)
        return code
    finally:
        loop.remove_reader(read_fd)
        os.close(read_fd)
