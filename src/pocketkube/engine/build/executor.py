"""Running a build: every needed stage as its own task (independent stages run concurrently; a stage
waits for another only when a step reads from it), each step taken from the build cache or executed,
and the target stage exported as an image that is tagged only once everything succeeded."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pocketkube.engine.build import fileops
from pocketkube.engine.build import imageconfig as ic
from pocketkube.engine.build.cache import BuildCache, CacheRecord, cache_key
from pocketkube.engine.build.context import SourceEntry, SourceTree, check_inside_context, load_context
from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.images import ImageResolver
from pocketkube.engine.build.layers import diff_to_tar, store_layer
from pocketkube.engine.build.netpool import NetworkPool
from pocketkube.engine.build.parse import Dockerfile, parse_dockerfile
from pocketkube.engine.build.plan import Planner, parse_platform
from pocketkube.engine.build.progress import Progress, Vertex
from pocketkube.engine.build.run import RunEnvironment, run_step
from pocketkube.engine.build.runmounts import MountPreparer
from pocketkube.engine.build.steps import CopyStep, MetaStep, RunMount, RunStep, StagePlan, Step, WorkdirStep
from pocketkube.engine.build.sweep import sweep_abandoned_builds
from pocketkube.engine.build.workspace import Sandbox, Workspace
from pocketkube.engine.engine import Engine
from pocketkube.engine.images.reference import InvalidReference, parse_reference
from pocketkube.engine.images.store import Image, Layer, host_platform
from pocketkube.engine.snapshots.snapshotter import chain_ids
from pocketkube.engine.snapshots.unpack import LayerStats

T = TypeVar("T")


@dataclass
class BuildOptions:
    context: Path
    dockerfile: Path | None = None         # default: CONTEXT/Dockerfile
    dockerfile_text: str | None = None     # the Dockerfile itself (`-f -`)
    tags: list[str] = field(default_factory=list)
    target: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)
    no_cache: bool = False
    pull: bool = False
    platform: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "default"
    insecure_registries: list[str] = field(default_factory=list)


@dataclass
class BuildResult:
    image: Image
    tags: list[str]


@dataclass
class LayerSlot:
    """A layer of a stage: its diff_id at once; its stored blob either known (the base image's, the
    cache's) or still being compressed in the background (a layer this build just made)."""

    diff_id: str
    layer: Layer | None = None
    storing: asyncio.Task[Layer] | None = None

    @property
    def source(self) -> tuple[str, str | None]:
        """(diff_id, blob digest if known), what unpacking needs."""
        return self.diff_id, self.layer.digest if self.layer is not None else None

    async def stored(self) -> Layer:
        if self.layer is None:
            assert self.storing is not None
            self.layer = await self.storing
        return self.layer


@dataclass
class StageState:
    """A stage's filesystem and history so far, and the cache key that stands for them."""

    layers: list[LayerSlot]
    history: list[dict]
    key: str

    def copy(self) -> StageState:
        return StageState(list(self.layers), copy.deepcopy(self.history), self.key)

    @property
    def chain_text(self) -> str:
        return ",".join(chain_ids([slot.diff_id for slot in self.layers]))


class Builder:
    def __init__(self, engine: Engine, options: BuildOptions, progress: Progress) -> None:
        self.engine = engine
        self.options = options
        self.progress = progress
        self.build_root = engine.root / "build"
        self.cache = BuildCache(self.build_root / "cache", engine.content)
        self.platform = host_platform()
        self.dockerfile: Dockerfile | None = None
        self._tasks: dict[int, asyncio.Task[StageState]] = {}
        self._background: set[asyncio.Task] = set()  # compressions and cleanups off the critical path
        self._warming = False
        self._failure: BuildError | None = None

    async def build(self) -> BuildResult:
        tags = self._check_tags()
        self.dockerfile = self._load_dockerfile()
        context = self._load_context()
        self.build_root.mkdir(parents=True, exist_ok=True)
        await sweep_abandoned_builds(self.engine, self.build_root)
        self.platform = parse_platform(self.options.platform, host_platform())
        self.images = ImageResolver(self.engine.images, self.progress, pull=self.options.pull,
                                    platform=self.platform, insecure_registries=self.options.insecure_registries)
        plan = await Planner(self.dockerfile, build_args=self.options.build_args, target=self.options.target,
                             platform=self.platform, network=self.options.network,
                             resolve_image=self.images.resolve).plan()
        self.workspace = Workspace(self.build_root, self.engine.snapshots, self.engine.content)
        networks = NetworkPool(self.engine.network, f"pkb-{self.workspace.token}")
        try:
            self.context = context
            self.plan = plan
            self.run_environment = RunEnvironment(
                engine=self.engine, networks=networks,
                mounts=MountPreparer(cache_root=self.build_root / "mounts" / "cache",
                                     secret_root=self.engine.run_root / "build" / self.workspace.token,
                                     secrets=self.options.secrets, workspace=self.workspace, context=context,
                                     open_source=self._mount_source))
            final = await self._run_stages()
            # no step needs the network any more: detach it while the image is written
            closing = asyncio.ensure_future(networks.close())
            try:
                return await self._export(plan.stages[plan.target], final, tags)
            finally:
                await closing
        finally:
            try:
                # every background thread finishes before what it works on goes away
                while self._background:
                    await asyncio.gather(*list(self._background), return_exceptions=True)
                await networks.close()
            finally:
                self.workspace.close()
                shutil.rmtree(self.engine.run_root / "build" / self.workspace.token, ignore_errors=True)

    def _in_background(self, work: Awaitable[object]) -> asyncio.Task:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- inputs ----------------------------------------------------------------------------------

    def _check_tags(self) -> list[str]:
        tags = []
        for tag in self.options.tags:
            try:
                ref = parse_reference(tag)
            except InvalidReference as err:
                raise BuildError(f"invalid tag {tag!r}: {err}") from None
            if ref.digest is not None:
                raise BuildError(f"invalid tag {tag!r}: a tag cannot name a digest")
            tags.append(str(ref))
        return tags

    def _load_dockerfile(self) -> Dockerfile:
        path = self.options.dockerfile or self.options.context / "Dockerfile"
        name = "Dockerfile" if self.options.dockerfile_text is not None else path.name
        vertex = self.progress.vertex(f"[internal] load build definition from {name}")
        if self.options.dockerfile_text is not None:
            text = self.options.dockerfile_text
        else:
            try:
                text = path.read_text()
            except FileNotFoundError:
                vertex.error("not found")
                raise BuildError(f"failed to read dockerfile: open {path}: no such file or directory") from None
        vertex.status(f"transferring dockerfile: {len(text.encode())}B done")
        try:
            dockerfile = parse_dockerfile(text)
        except BuildError as err:
            vertex.error(err.message)
            raise
        vertex.done()
        return dockerfile

    def _load_context(self) -> SourceTree:
        vertex = self.progress.vertex("[internal] load .dockerignore")
        try:
            context = load_context(self.options.context, self.options.dockerfile)
        except BuildError as err:
            vertex.error(err.message)
            raise
        vertex.done()
        return context

    # --- stages ----------------------------------------------------------------------------------

    async def _run_stages(self) -> StageState:
        self._tasks = {index: asyncio.create_task(self._stage(self.plan.stages[index]), name=f"stage {index}")
                       for index in sorted(self.plan.stages)}
        pending = set(self._tasks.values())
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                if any(task.cancelled() or task.exception() is not None for task in done):
                    break
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._failure is not None:
            raise self._failure
        for task in self._tasks.values():
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return self._tasks[self.plan.target].result()

    async def _stage_state(self, index: int) -> StageState:
        return await asyncio.shield(self._tasks[index])

    async def _stage(self, plan: StagePlan) -> StageState:
        try:
            return await self._build_stage(plan)
        except BuildError as err:
            if self._failure is None:
                self._failure = err
            raise

    async def _build_stage(self, plan: StagePlan) -> StageState:
        prefix = f"{plan.name} " if self.plan.multi_stage else ""
        total = plan.numbered_steps
        if plan.base == "image":
            image = self.plan.base_images[plan.index]
            vertex = self.progress.vertex(f"[{prefix}1/{total}] FROM {parse_reference(plan.base_ref)}")
            vertex.cached()
            state = StageState([LayerSlot(layer.diff_id, layer) for layer in image.layers],
                               copy.deepcopy(image.config.get("history") or []), cache_key("image", image.id))
        elif plan.base == "stage":
            assert plan.base_stage is not None
            state = (await self._stage_state(plan.base_stage)).copy()
        else:
            state = StageState([], [], cache_key("scratch", "/".join(self.platform)))
        missed = self.options.no_cache
        number = 1
        for step in plan.steps:
            if isinstance(step, MetaStep):
                missed = self._meta_step(step, state, missed)
                continue
            number += 1
            await self._sources_ready(step)  # a step shows up once it can start, as with BuildKit
            vertex = self.progress.vertex(f"[{prefix}{number}/{total}] {step.display}")
            try:
                missed = await self._fs_step(step, state, vertex, missed)
            except BuildError as err:
                raise self._step_failed(err, step, vertex) from None
            except (OSError, ValueError, RuntimeError, LookupError) as err:  # the engine's own failures
                raise self._step_failed(BuildError(str(err) or type(err).__name__), step, vertex) from err
            except asyncio.CancelledError:
                vertex.error("cancelled")
                raise
        return state

    @staticmethod
    def _step_failed(err: BuildError, step: Step, vertex: Vertex) -> BuildError:
        err.at(step.location)
        err.step = err.step or vertex.name
        err.logs = err.logs or list(vertex.tail)
        vertex.error(err.message)
        return err

    async def _sources_ready(self, step: Step) -> None:
        stages = {step.from_stage} if isinstance(step, CopyStep) else \
            {mount.from_stage for mount in step.mounts} if isinstance(step, RunStep) else set()
        for index in stages - {None}:
            await self._stage_state(index)

    def _warm_up(self) -> None:
        """Once steps start to run: detect the OCI runtime and attach the network RUN steps use, in the
        background, if any RUN needs them (both then overlap the steps before the first RUN)."""
        if self._warming:
            return
        self._warming = True
        runs = [step for stage in self.plan.stages.values() for step in stage.steps if isinstance(step, RunStep)]
        if runs:
            self._in_background(self.run_environment.runtime())
        if any(step.network == "default" for step in runs):
            self._in_background(self.run_environment.networks.warm())

    def _meta_step(self, step: MetaStep, state: StageState, missed: bool) -> bool:
        key = cache_key(state.key, step.key_text)
        record = None if missed else self.cache.get(key)
        if record is None:
            missed = True
            record = CacheRecord(created=ic.timestamp(), layer=None)
            self.cache.put(key, record)
        state.key = key
        state.history.append(_history(step, record.created, empty=True))
        return missed

    async def _fs_step(self, step: Step, state: StageState, vertex: Vertex, missed: bool) -> bool:
        with contextlib.ExitStack() as sources:
            tree, entries, inputs = None, [], ""
            if isinstance(step, CopyStep):
                tree, entries = await self._copy_sources(step, sources)
                inputs = await in_thread(tree.checksum, entries)
            elif isinstance(step, RunStep):
                inputs = await self._bind_inputs(step)
            link = isinstance(step, CopyStep) and step.link
            # COPY --link makes a layer of its own, reusable whatever lies below it (BuildKit's rule)
            key = cache_key("link", step.key_text, inputs) if link else \
                cache_key(state.key, state.chain_text, step.key_text, inputs)
            record = None if (missed and not link) or self.options.no_cache else self.cache.get(key)
            if record is not None:
                vertex.cached()
                slot = None if record.layer is None else LayerSlot(record.layer.diff_id, record.layer)
                created = record.created
            else:
                missed = True
                self._warm_up()
                created = ic.timestamp()
                slot = await self._execute(step, [] if link else state.layers, tree, entries, vertex, key, created)
                vertex.done()
        state.key = cache_key(state.key, key) if link else key
        if slot is not None:
            state.layers.append(slot)
        state.history.append(_history(step, created, empty=slot is None))
        return missed

    async def _bind_inputs(self, step: RunStep) -> str:
        """What RUN's bind mounts show, for its cache key: the context files' checksum, the stage's layers,
        the image's ID."""
        parts = []
        for mount in step.mounts:
            if mount.type != "bind":
                continue
            if mount.from_stage is not None:
                parts.append((await self._stage_state(mount.from_stage)).chain_text)
            elif mount.from_image is not None:
                parts.append((await self.images.resolve(mount.from_image)).id)
            else:
                source = mount.source.lstrip("/") or "."
                parts.append(await in_thread(lambda s=source: self.context.checksum(self.context.resolve(s))))
        return ",".join(parts)

    async def _copy_sources(self, step: CopyStep, stack: contextlib.ExitStack) -> tuple[SourceTree, list[SourceEntry]]:
        if step.from_stage is not None or step.from_image is not None:
            root = await in_thread(stack.enter_context, await self._mount_source(step))
            tree = SourceTree(root, keep_owner=True)
        else:
            tree = self.context
            for source in step.sources:
                check_inside_context(step.instruction, source)
        entries = await in_thread(lambda: [entry for source in step.sources for entry in tree.resolve(source)])
        return tree, entries

    async def _mount_source(self, holder: CopyStep | RunMount) -> contextlib.AbstractContextManager[Path]:
        """The read-only root filesystem of the stage or image a COPY --from or RUN --mount from= names."""
        if holder.from_stage is not None:
            layers = [slot.source for slot in (await self._stage_state(holder.from_stage)).layers]
        else:
            assert holder.from_image is not None
            layers = [(layer.diff_id, layer.digest) for layer in (await self.images.resolve(holder.from_image)).layers]
        chain = await in_thread(self.workspace.ensure_chain, layers)
        return self.workspace.readonly(chain)

    async def _execute(self, step: Step, below: list[LayerSlot], tree: SourceTree | None,
                       entries: list[SourceEntry], vertex: Vertex, key: str, created: str) -> LayerSlot | None:
        """Run the step on the layers ``below``; its layer (None: it changed nothing) is compressed and
        recorded in the cache in the background."""
        sandbox = await in_thread(self._sandbox_on, below)
        try:
            stub_parents: list[str] = []
            if isinstance(step, RunStep):
                stub_parents = await run_step(self.run_environment, sandbox, step, vertex)
            elif isinstance(step, CopyStep):
                await in_thread(fileops.copy_into, sandbox.rootfs, step, tree, entries)
            elif isinstance(step, WorkdirStep):
                await in_thread(fileops.make_workdir, sandbox.rootfs, step.path, step.user)
            diff = await in_thread(self._diff, sandbox, stub_parents)
        finally:
            self._in_background(in_thread(sandbox.close))
        if diff is None:
            self.cache.put(key, CacheRecord(created=created, layer=None))
            return None
        stats, tar = diff
        self.workspace.local_tars[stats.diff_id] = tar
        return LayerSlot(stats.diff_id, storing=self._in_background(in_thread(self._store, tar, stats, key, created)))

    def _sandbox_on(self, below: list[LayerSlot]) -> Sandbox:
        """A writable snapshot over the layers ``below`` (unpacked first where needed), mounted."""
        return self.workspace.sandbox(self.workspace.ensure_chain([slot.source for slot in below]))

    def _diff(self, sandbox: Sandbox, stub_parents: list[str]) -> tuple[LayerStats, Path] | None:
        """The step's layer tar; the sandbox itself becomes that layer in the snapshotter (no unpack of the
        tar for the next step), unless it holds what a tar cannot (then the next step unpacks the tar)."""
        sandbox.unmount()
        sandbox.drop_unchanged(stub_parents)
        tar = self.workspace.directory / f"{sandbox.key}.tar"
        stats = diff_to_tar(sandbox, tar, self.workspace.empty_dir)
        if stats is None:
            tar.unlink()
            return None
        if not stats.left_out:
            sandbox.commit(stats.diff_id)
        return stats, tar

    def _store(self, tar: Path, stats: LayerStats, key: str, created: str) -> Layer:
        """Compress a new layer into the content store and record it in the cache, both under the store's
        lock: a concurrent image gc must not take the blob before the record names it."""
        with self.engine.images.locked():
            layer = store_layer(tar, stats, self.engine.content)
            self.cache.put(key, CacheRecord(created=created, layer=layer))
        return layer

    # --- export ----------------------------------------------------------------------------------

    async def _export(self, plan: StagePlan, state: StageState, tags: list[str]) -> BuildResult:
        vertex = self.progress.vertex("exporting to image")
        document = copy.deepcopy(plan.image)
        config = document.setdefault("config", {})
        if self.options.labels:
            config["Labels"] = {**(config.get("Labels") or {}), **self.options.labels}
        document["created"] = state.history[-1]["created"] if state.history else ic.timestamp()
        document["history"] = state.history
        try:
            layers = [await slot.stored() for slot in state.layers]
        except OSError as err:
            raise BuildError(f"failed to store a layer: {err}") from None
        vertex.status("exporting layers done")
        image = await in_thread(self.engine.images.create, document, layers, tags)
        vertex.status(f"writing image {image.id} done")
        for tag in tags:
            vertex.status(f"naming to {tag} done")
        vertex.done()
        return BuildResult(image=image, tags=tags)


def _history(step: Step, created: str, *, empty: bool) -> dict:
    entry = {"created": created, "created_by": step.created_by, "comment": ic.HISTORY_COMMENT}
    if empty:
        entry["empty_layer"] = True
    return entry


async def in_thread(function: Callable[..., T], *args: object) -> T:
    """``function`` in a worker thread. When the caller is cancelled the thread still runs to its end
    before the cancellation goes on: cleanup must not pull a mount from under a copy in progress."""
    work = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise
