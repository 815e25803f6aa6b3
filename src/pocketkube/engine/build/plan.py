"""The build plan: platform and global ARGs, the stage the build targets, and every stage it needs
(BuildKit's rule: only those), each compiled with its base image's config."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pocketkube.engine.build import imageconfig as ic
from pocketkube.engine.build.dispatch import StageCompiler, StageScope
from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.expand import ExpansionError, ShellLex
from pocketkube.engine.build.parse import Dockerfile, StageDef, parse_trigger
from pocketkube.engine.build.steps import StagePlan
from pocketkube.engine.images.store import Image

ImageResolver = Callable[[str], Awaitable[Image]]


@dataclass
class BuildPlan:
    dockerfile: Dockerfile
    platform: tuple[str, ...]
    stages: dict[int, StagePlan]   # the stages the target needs, by index
    target: int
    base_images: dict[int, Image] = field(default_factory=dict)  # stage index -> its FROM image

    @property
    def multi_stage(self) -> bool:
        return len(self.dockerfile.stages) > 1


def parse_platform(text: str | None, host: tuple[str, ...]) -> tuple[str, ...]:
    """--platform or FROM --platform; only this machine's platform can be built (no emulation here)."""
    if not text:
        return host
    parts = tuple(part.lower() for part in text.split("/"))
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise BuildError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
    if parts[:2] != host[:2] or (len(parts) == 3 and parts[2] != (host[2] if len(host) > 2 else None)):
        raise BuildError(f"cannot build for {'/'.join(parts)}: this machine runs {'/'.join(host)} containers "
                         "and has no emulator for other platforms")
    return host


def platform_args(platform: tuple[str, ...]) -> dict[str, str]:
    """The automatic platform ARGs (build and target are the same machine here)."""
    os_name, architecture, *variant = platform
    text = "/".join(platform)
    values = {}
    for prefix in ("BUILD", "TARGET"):
        values.update({f"{prefix}PLATFORM": text, f"{prefix}OS": os_name, f"{prefix}ARCH": architecture,
                       f"{prefix}VARIANT": variant[0] if variant else ""})
    return values


class Planner:
    def __init__(self, dockerfile: Dockerfile, *, build_args: dict[str, str], target: str | None,
                 platform: tuple[str, ...], network: str, resolve_image: ImageResolver) -> None:
        self.dockerfile = dockerfile
        self.build_args = build_args
        self.target_name = target
        self.platform = platform
        self.network = network
        self.resolve_image = resolve_image
        self.lex = ShellLex(dockerfile.escape)
        self.global_args = self._global_args()
        self.plans: dict[int, StagePlan] = {}
        self.base_images: dict[int, Image] = {}

    async def plan(self) -> BuildPlan:
        target = self._target()
        await self._compile(target)
        return BuildPlan(dockerfile=self.dockerfile, platform=self.platform, stages=self.plans, target=target,
                         base_images=self.base_images)

    def _global_args(self) -> dict[str, str | None]:
        values: dict[str, str | None] = dict(platform_args(self.platform))
        for instruction in self.dockerfile.meta_args:
            for token in instruction.args:
                name, has_default, default = token.partition("=")
                if not name:
                    raise BuildError("ARG names can not be blank", location=instruction.location)
                if name in self.build_args:
                    values[name] = self.build_args[name]
                elif has_default:
                    env = {k: v for k, v in values.items() if v is not None}
                    try:
                        values[name] = self.lex.process_word(default, env)
                    except ExpansionError as err:
                        raise BuildError(str(err), location=instruction.location) from None
                else:
                    values.setdefault(name, None)  # an automatic platform ARG keeps its value
        return values

    def _target(self) -> int:
        stages = self.dockerfile.stages
        if self.target_name is None:
            return stages[-1].index
        for stage in stages:
            if stage.name == self.target_name.lower():
                return stage.index
        raise BuildError(f'target stage "{self.target_name}" could not be found')

    def _earlier_stage(self, stage: StageDef) -> Callable[[str], int | None]:
        def find(name: str) -> int | None:
            if name.isdigit():
                index = int(name)
                if index >= stage.index:
                    raise BuildError(f"invalid stage index {index}: only earlier stages can be referenced")
                return index
            for other in self.dockerfile.stages[:stage.index]:
                if other.name == name.lower():
                    return other.index
            return None
        return find

    async def _compile(self, index: int) -> StagePlan:
        if index in self.plans:
            return self.plans[index]
        stage = self.dockerfile.stages[index]
        env = {k: v for k, v in self.global_args.items() if v is not None}
        try:
            base = self.lex.process_word(stage.base, env)
            if stage.platform is not None:
                parse_platform(self.lex.process_word(stage.platform, env), self.platform)
        except ExpansionError as err:
            raise BuildError(str(err), location=stage.location) from None
        except BuildError as err:
            raise err.at(stage.location) from None
        if not base:
            raise BuildError(f"base name ({stage.base}) should not be blank", location=stage.location)
        base_stage = self._earlier_stage(stage)(base) if not base.isdigit() else None
        instructions = list(stage.instructions)
        if base.lower() == "scratch":
            kind, document = "scratch", ic.empty_image(self.platform)
        elif base_stage is not None:
            kind = "stage"
            source = await self._compile(base_stage)
            document = ic.base_document(source.image)
            instructions = self._triggers(source.image, stage) + instructions
        else:
            kind = "image"
            try:
                image = await self.resolve_image(base)
            except BuildError as err:
                raise err.at(stage.location) from None
            self._check_platform(image, base, stage)
            self.base_images[index] = image
            document = ic.base_document(image.config)
            instructions = self._triggers(image.config, stage) + instructions
        scope = StageScope(lex=self.lex, build_args=self.build_args, global_args=self.global_args,
                           network=self.network, find_stage=self._earlier_stage(stage))
        compiler = StageCompiler(scope, document)
        steps = compiler.compile(instructions)
        plan = StagePlan(index=index, name=stage.display_name, base=kind, base_stage=base_stage, base_ref=base,
                         image=document, steps=steps, depends_on=compiler.depends_on | ({base_stage} if base_stage is not None else set()))
        self.plans[index] = plan
        for dependency in sorted(compiler.depends_on):
            await self._compile(dependency)
        return plan

    @staticmethod
    def _triggers(config: dict, stage: StageDef) -> list:
        """The base's ONBUILD triggers, run right after FROM."""
        return [parse_trigger(text, stage.location) for text in (config.get("config") or {}).get("OnBuild") or []]

    def _check_platform(self, image: Image, reference: str, stage: StageDef) -> None:
        actual = (image.config.get("os") or "linux", image.config.get("architecture") or self.platform[1])
        if actual != tuple(self.platform[:2]):
            raise BuildError(f"image {reference} is for {'/'.join(actual)}, not {'/'.join(self.platform)}",
                             location=stage.location)
