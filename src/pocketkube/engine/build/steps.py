"""The steps a stage compiles to: everything a step needs is resolved at planning time (variables
expanded, paths made absolute, the environment and user it runs with), so executing one needs only the
filesystem below it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from pocketkube.engine.build.errors import Location


@dataclass
class Step:
    location: Location
    display: str      # the progress line's text: "RUN make"
    created_by: str   # the image history entry
    key_text: str     # what the build cache compares (never a secret, never a proxy setting)


@dataclass
class MetaStep(Step):
    """ENV, LABEL, CMD, USER, …: a change of the image config only, no layer."""


@dataclass
class RunMount:
    type: str                       # "bind", "cache", "secret", "tmpfs" or "heredoc" (a RUN <<EOF script)
    target: str = ""
    source: str = ""
    from_stage: int | None = None   # bind/cache from another stage
    from_image: str | None = None   # bind/cache from an image
    readonly: bool = False
    id: str = ""                    # cache id or secret id
    sharing: str = "shared"         # cache: shared, private or locked
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False          # secret: fail when the build was given no such secret
    env: str = ""                   # secret: expose it as this environment variable
    size: int | None = None         # tmpfs size in bytes
    content: str = ""               # heredoc: the script

    def key_text(self) -> str:
        """The mount for the cache key: what it is, not what a secret holds."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class RunStep(Step):
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)       # includes the build args the step sees
    proxy_env: list[str] = field(default_factory=list)  # proxy build args: passed, never cached or recorded
    user: str = ""
    workdir: str = "/"
    network: str = "default"                           # "default", "none" or "host"
    mounts: list[RunMount] = field(default_factory=list)


@dataclass
class CopyStep(Step):
    instruction: str = "COPY"                            # or "ADD" (which unpacks local archives)
    sources: list[str] = field(default_factory=list)
    inline: list[tuple[str, str]] = field(default_factory=list)  # heredoc files: (name, content)
    dest: str = "/"                                      # absolute; a trailing "/" means a directory
    from_stage: int | None = None
    from_image: str | None = None
    chown: str = ""
    chmod: int | None = None
    link: bool = False


@dataclass
class WorkdirStep(Step):
    path: str = "/"
    user: str = ""  # the directory is created owned by the stage's USER, as BuildKit does


@dataclass
class StagePlan:
    """A stage ready to build: its base, its steps and the image config it ends with."""

    index: int
    name: str                 # "build" or "stage-1", for progress
    base: str                 # "scratch", "stage" or "image"
    base_stage: int | None    # base == "stage"
    base_ref: str             # base == "image": the reference as written after expansion
    image: dict               # the final image config document (history and rootfs are added at export)
    steps: list[Step]
    depends_on: set[int] = field(default_factory=set)  # stages this one reads from (base, COPY, mounts)

    @property
    def numbered_steps(self) -> int:
        """What BuildKit counts in "[i/n]": the FROM and every step that changes files."""
        return 1 + sum(1 for step in self.steps if not isinstance(step, MetaStep))
