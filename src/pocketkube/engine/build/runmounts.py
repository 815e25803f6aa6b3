"""RUN --mount: what each mount type puts at its target for the duration of one step.

cache   a directory under DATA_DIR/engine/build/mounts/cache kept between builds (sharing=shared, locked
        (one step at a time) or private (a throwaway directory when another step holds it))
secret  the secret's bytes in a file on tmpfs (under /run), bind-mounted read-only; never in a layer
bind    a path of the build context (as .dockerignore leaves it), a stage or an image; writes to a
        read-write bind are thrown away
tmpfs   a fresh tmpfs
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from pocketkube.engine.build.context import SourceTree
from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.steps import RunMount
from pocketkube.engine.build.workspace import Workspace
from pocketkube.engine.paths import resolve_in_root
from pocketkube.engine.runtime.spec import Mount

# Where a stage's or image's files are, for as long as the step runs: given the mount, a context manager
# yielding the root directory.
SourceOpener = Callable[[RunMount], Awaitable[contextlib.AbstractContextManager[Path]]]


@dataclass
class PreparedMounts:
    mounts: list[Mount]
    env: list[str]  # secrets exposed as variables (env=NAME)


class MountPreparer:
    def __init__(self, *, cache_root: Path, secret_root: Path, secrets: dict[str, bytes], workspace: Workspace,
                 context: SourceTree, open_source: SourceOpener) -> None:
        self.cache_root = cache_root
        self.secret_root = secret_root
        self.secrets = secrets
        self.workspace = workspace
        self.context = context
        self.open_source = open_source
        self._context_copy: Path | None = None
        self._context_lock = asyncio.Lock()

    async def prepare(self, mounts: list[RunMount], stack: AsyncExitStack, step_dir: Path) -> PreparedMounts:
        prepared = PreparedMounts([], [])
        for index, mount in enumerate(mounts):
            if mount.type == "cache":
                prepared.mounts.append(await self._cache(mount, stack))
            elif mount.type == "secret":
                self._secret(mount, index, prepared, stack)
            elif mount.type == "bind":
                prepared.mounts.append(await self._bind(mount, stack))
            elif mount.type == "tmpfs":
                options = [f"size={mount.size}"] if mount.size else []
                prepared.mounts.append(Mount(destination=mount.target, source="tmpfs", type="tmpfs",
                                             options=options))
            elif mount.type == "heredoc":
                script = step_dir / f"heredoc-{index}"
                script.write_text(mount.content)
                script.chmod(0o755)
                prepared.mounts.append(Mount(destination=mount.target, source=str(script), options=["ro"]))
        return prepared

    # --- cache -----------------------------------------------------------------------------------

    async def _cache(self, mount: RunMount, stack: AsyncExitStack) -> Mount:
        name = hashlib.sha256(mount.id.encode()).hexdigest()[:32]
        directory = self.cache_root / name
        lock_path = self.cache_root / f"{name}.lock"
        self.cache_root.mkdir(parents=True, exist_ok=True)
        if mount.sharing != "shared":
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            stack.callback(os.close, fd)
            if mount.sharing == "locked":
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # private: someone else has it, so this step gets its own
                    directory = self.workspace.new_dir() / "cache"
        if not directory.exists():
            staging = self.cache_root / f".{name}.{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            if mount.from_stage is not None or mount.from_image is not None:
                with await self.open_source(mount) as root:
                    await asyncio.to_thread(_copy_tree, resolve_in_root(root, mount.source), staging)
            else:
                staging.mkdir()
            os.chmod(staging, mount.mode if mount.mode is not None else 0o755)
            os.lchown(staging, mount.uid or 0, mount.gid or 0)
            with contextlib.suppress(OSError):  # another build may have created it meanwhile
                os.rename(staging, directory)
            shutil.rmtree(staging, ignore_errors=True)
        return Mount(destination=mount.target, source=str(directory), options=["ro" if mount.readonly else "rw"])

    # --- secrets ---------------------------------------------------------------------------------

    def _secret(self, mount: RunMount, index: int, prepared: PreparedMounts, stack: AsyncExitStack) -> None:
        value = self.secrets.get(mount.id)
        if value is None:
            if mount.required:
                raise BuildError(f"secret {mount.id} not found: pass it with --secret id={mount.id},src=PATH")
            return
        if mount.env:
            prepared.env.append(f"{mount.env}={value.decode(errors='replace')}")
        if not mount.target:
            return
        self.secret_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.secret_root / f"{self.workspace.new_name()}-{index}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(value)
        stack.callback(path.unlink, missing_ok=True)
        os.chown(path, mount.uid or 0, mount.gid or 0)
        os.chmod(path, mount.mode if mount.mode is not None else 0o400)
        prepared.mounts.append(Mount(destination=mount.target, source=str(path), options=["ro"]))

    # --- bind ------------------------------------------------------------------------------------

    async def _bind(self, mount: RunMount, stack: AsyncExitStack) -> Mount:
        if mount.from_stage is None and mount.from_image is None:
            root = await self._context_view()
        else:
            root = stack.enter_context(await self.open_source(mount))
        source = resolve_in_root(root, mount.source)
        if not os.path.lexists(source):
            raise BuildError(f'failed to compute cache key: "{mount.source}": not found')
        if not mount.readonly:  # BuildKit throws a writable bind's changes away: give it a copy
            scratch = self.workspace.new_dir() / "bind"
            await asyncio.to_thread(_copy_tree, source, scratch)
            source = scratch
        return Mount(destination=mount.target, source=str(source), options=["ro" if mount.readonly else "rw"])

    async def _context_view(self) -> Path:
        """The build context as a directory holding only what .dockerignore lets through (made once)."""
        async with self._context_lock:
            if self._context_copy is None:
                target = self.workspace.new_dir("context")
                await asyncio.to_thread(_materialize, self.context, target)
                self._context_copy = target
            return self._context_copy


def _materialize(tree: SourceTree, target: Path) -> None:
    entry = tree.resolve(".")[0]
    for path, name, st in tree.walk(entry):
        if not name:
            continue
        dest = target / name
        if stat.S_ISDIR(st.st_mode):
            dest.mkdir(mode=stat.S_IMODE(st.st_mode))
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(path), dest)
        elif stat.S_ISREG(st.st_mode):
            shutil.copy2(path, dest)


def _copy_tree(source: Path, dest: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest, follow_symlinks=False)
