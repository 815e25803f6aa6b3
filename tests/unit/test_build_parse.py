"""Dockerfile parsing and planning: stages, ARG scoping, expansion per instruction, the image config and
history each instruction writes, and the errors (with their line) a bad Dockerfile gets."""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest

from pocketkube.engine.build.errors import BuildError, Location
from pocketkube.engine.build.parse import parse_dockerfile
from pocketkube.engine.build.plan import BuildPlan, Planner, parse_platform
from pocketkube.engine.build.steps import CopyStep, MetaStep, RunStep, WorkdirStep
from pocketkube.engine.images.store import Image

BASE = Image(id="sha256:" + "a" * 64, manifest_digest="sha256:" + "b" * 64, manifest={}, layers=[], config={
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/bin", "FROM_BASE=1"], "Cmd": ["sh"], "OnBuild": ["RUN echo triggered"]},
    "history": [{"created_by": "base"}]})


async def _resolve(reference: str) -> Image:
    if reference == "base":
        return BASE
    raise BuildError(f"no such image {reference}")


def plan(text: str, *, target: str | None = None, build_args: dict[str, str] | None = None) -> BuildPlan:
    dockerfile = parse_dockerfile(textwrap.dedent(text).lstrip())
    planner = Planner(dockerfile, build_args=build_args or {}, target=target, platform=("linux", "amd64"),
                      network="default", resolve_image=_resolve)
    return asyncio.run(planner.plan())


def final(built: BuildPlan):
    return built.stages[built.target]


def test_global_args_reach_from_but_need_redeclaring_in_a_stage() -> None:
    built = plan("""
        ARG IMAGE=base
        ARG VERSION=1
        FROM $IMAGE
        RUN echo $VERSION
        ARG VERSION
        RUN echo $VERSION
    """, build_args={"VERSION": "2"})
    stage = final(built)
    assert stage.base == "image" and stage.base_ref == "base"
    trigger, first, second = [step for step in stage.steps if isinstance(step, RunStep)]
    assert trigger.args[-1] == "echo triggered"
    assert "VERSION=2" not in first.env
    assert "VERSION=2" in second.env
    assert second.key_text != first.key_text


def test_env_wins_over_arg_and_expands_against_the_env_before_the_instruction() -> None:
    stage = final(plan("""
        FROM scratch
        ARG NAME=arg
        ENV NAME=env
        ENV A=1 B=$A
        LABEL who=$NAME
    """))
    assert stage.image["config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                             "NAME=env", "A=1", "B="]
    assert stage.image["config"]["Labels"] == {"who": "env"}
    assert [step.created_by for step in stage.steps] == ["ARG NAME=arg", "ENV NAME=env", "ENV A=1 B=", "LABEL who=env"]


def test_build_args_never_reach_history() -> None:
    stage = final(plan("""
        FROM scratch
        ARG TOKEN=default
        RUN check $TOKEN
    """, build_args={"TOKEN": "s3cr3t", "HTTP_PROXY": "http://proxy:3128"}))
    run = stage.steps[1]
    assert isinstance(run, RunStep)
    assert "TOKEN=s3cr3t" in run.env and run.proxy_env == ["HTTP_PROXY=http://proxy:3128"]
    assert all("s3cr3t" not in step.created_by for step in stage.steps)
    assert "proxy" not in run.key_text


def test_cmd_entrypoint_shell_and_inherited_cmd() -> None:
    stage = final(plan("""
        FROM base
        SHELL ["/bin/bash", "-c"]
        ENTRYPOINT exec app
    """))
    config = stage.image["config"]
    assert config["Entrypoint"] == ["/bin/bash", "-c", "exec app"]
    assert "Cmd" not in config  # the base's CMD goes with a new ENTRYPOINT
    assert "OnBuild" not in config
    stage = final(plan("""
        FROM base
        CMD ["x"]
        ENTRYPOINT ["y"]
    """))
    assert stage.image["config"]["Cmd"] == ["x"] and stage.image["config"]["Entrypoint"] == ["y"]
    assert stage.steps[-2].created_by == 'CMD ["x"]'


def test_onbuild_triggers_of_the_base_run_first() -> None:
    stage = final(plan("""
        FROM base
        ONBUILD RUN echo later
    """))
    assert isinstance(stage.steps[0], RunStep) and stage.steps[0].args[-1] == "echo triggered"
    assert stage.image["config"]["OnBuild"] == ["RUN echo later"]


def test_metadata_instructions() -> None:
    config = final(plan("""
        FROM scratch
        EXPOSE 80 8000-8001/udp
        VOLUME ["/data"]
        VOLUME /logs /cache
        USER 1000:1000
        STOPSIGNAL SIGQUIT
        HEALTHCHECK --interval=1m30s --timeout=500ms --retries=3 CMD curl -f localhost
        MAINTAINER someone
    """)).image
    assert config["author"] == "someone"
    config = config["config"]
    assert config["ExposedPorts"] == {"80/tcp": {}, "8000/udp": {}, "8001/udp": {}}
    assert config["Volumes"] == {"/data": {}, "/logs": {}, "/cache": {}}
    assert config["User"] == "1000:1000" and config["StopSignal"] == "SIGQUIT"
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 90_000_000_000,
                                     "Timeout": 500_000_000, "Retries": 3}


def test_workdir_and_copy_destinations() -> None:
    stage = final(plan("""
        FROM scratch
        WORKDIR /app
        WORKDIR src
        COPY a b ./
        COPY c rel
        COPY <<EOF <<"RAW" /etc/
        v=$HOME
        EOF
        v=$HOME
        RAW
    """))
    workdirs = [step for step in stage.steps if isinstance(step, WorkdirStep)]
    assert [step.path for step in workdirs] == ["/app", "/app/src"]
    copies = [step for step in stage.steps if isinstance(step, CopyStep)]
    assert (copies[0].sources, copies[0].dest) == (["a", "b"], "/app/src/")
    assert copies[1].dest == "/app/src/rel"
    assert copies[2].inline == [("EOF", "v=\n"), ("RAW", "v=$HOME\n")]


def test_run_heredocs() -> None:
    steps = final(plan('''
        FROM scratch
        RUN <<EOF
        echo one
        echo two
        EOF
        RUN <<EOF
        #!/usr/bin/env python3
        print(1)
        EOF
        RUN python3 <<EOF
        print(2)
        EOF
    ''')).steps
    assert steps[0].args == ["/bin/sh", "-c", "echo one\necho two\n"]
    assert steps[1].args == ["/dev/pipes/EOF"] and steps[1].mounts[0].content.startswith("#!")
    assert steps[2].args == ["/bin/sh", "-c", "python3 <<EOF\nprint(2)\nEOF"]


def test_run_mounts() -> None:
    run = final(plan("""
        FROM scratch AS tools
        FROM scratch
        WORKDIR /w
        RUN --mount=type=cache,target=cache,sharing=locked --mount=type=secret,id=tok,required \\
            --mount=type=bind,from=tools,source=/bin,target=/tools --mount=type=tmpfs,target=/t,size=1m true
    """)).steps[-1]
    cache, secret, bind, tmpfs = run.mounts
    assert (cache.target, cache.id, cache.sharing, cache.readonly) == ("/w/cache", "/w/cache", "locked", False)
    assert (secret.id, secret.target, secret.required, secret.mode) == ("tok", "/run/secrets/tok", True, 0o400)
    assert (bind.from_stage, bind.source, bind.readonly) == (0, "/bin", True)
    assert tmpfs.size == 1 << 20


def test_only_the_stages_the_target_needs_are_planned() -> None:
    built = plan("""
        FROM scratch AS tools
        COPY x /x
        FROM scratch AS unused
        COPY
        FROM scratch AS app
        COPY --from=tools /x /x
        FROM app AS release
        LABEL done=yes
    """, target="app")
    assert sorted(built.stages) == [0, 2]
    assert built.stages[2].depends_on == {0}
    assert built.target == 2
    with pytest.raises(BuildError, match='target stage "nope" could not be found'):
        plan("FROM scratch AS a\n", target="nope")


def test_copy_from_a_later_stage_name_means_an_image() -> None:
    stage = final(plan("""
        FROM scratch
        COPY --from=base /x /x
    """))
    step = stage.steps[0]
    assert isinstance(step, CopyStep) and (step.from_stage, step.from_image) == (None, "base")


@pytest.mark.parametrize("text, message, line", [
    ("FROM scratch\nRUN true\nFOO bar\n", "unknown instruction: FOO", 3),
    ("RUN true\n", "no build stage in current context", 1),
    ("FROM scratch\n\nENV A\n", "ENV must have two arguments", 3),
    ("FROM scratch\nCOPY --bogus a b\n", "unknown flag: bogus", 2),
    ("FROM scratch AS 1x\n", "invalid name for build stage", 1),
    ("FROM scratch\nCOPY --from=$X a b\n", "variable expansion is not supported for --from", 2),
    ("FROM scratch\nCOPY onlyone\n", "COPY requires at least two arguments", 2),
    ("FROM scratch\nSHELL /bin/bash\n", "SHELL requires the arguments to be in JSON form", 2),
    ("FROM scratch\nSTOPSIGNAL SIGNOPE\n", "Invalid signal: SIGNOPE", 2),
    ("FROM scratch\nADD https://example.com/x /x\n", "no network access", 2),
    ("FROM scratch\nENV A=${B\n", "missing '}'", 2),
    ("FROM scratch\nONBUILD ONBUILD RUN x\n", "Chaining ONBUILD", 2),
])
def test_errors_point_at_the_line(text: str, message: str, line: int) -> None:
    with pytest.raises(BuildError, match=message.replace("$", r"\$")) as caught:
        plan(text)
    assert caught.value.location is not None and caught.value.location.start == line


def test_instruction_spans_and_step_display() -> None:
    dockerfile = parse_dockerfile("FROM scratch\nrun echo a \\\n  b\n")
    instruction = dockerfile.stages[0].instructions[0]
    assert instruction.location == Location(2, 3)
    assert instruction.display == "RUN echo a   b"


def test_meta_step_keys_follow_their_values() -> None:
    one = [s.key_text for s in final(plan("FROM scratch\nENV A=1\n")).steps if isinstance(s, MetaStep)]
    two = [s.key_text for s in final(plan("FROM scratch\nENV A=2\n")).steps if isinstance(s, MetaStep)]
    assert one != two and json.dumps(one)


def test_platforms() -> None:
    host = ("linux", "amd64")
    assert parse_platform(None, host) == host
    assert parse_platform("linux/AMD64", host) == host
    with pytest.raises(BuildError, match="cannot build for linux/arm64: this machine runs linux/amd64"):
        parse_platform("linux/arm64", host)
    with pytest.raises(BuildError, match="invalid platform"):
        parse_platform("linux", host)
    built = plan("""
        ARG TARGETARCH
        FROM --platform=$BUILDPLATFORM scratch
        ARG TARGETARCH
        ARG TARGETPLATFORM
        ENV ARCH=$TARGETARCH PLATFORM=$TARGETPLATFORM
    """)
    assert final(built).image["config"]["Env"][-2:] == ["ARCH=amd64", "PLATFORM=linux/amd64"]
    with pytest.raises(BuildError, match="cannot build for linux/arm64") as caught:
        plan("FROM --platform=linux/arm64 scratch\n")
    assert caught.value.location == Location(1, 1)


def test_escape_directive_changes_the_escape_character() -> None:
    stage = final(plan("""
        # escape=`
        FROM scratch
        ENV WIN=C:\\tools PRICE=`$5
        RUN echo a `
            b
    """))
    assert stage.image["config"]["Env"][-2:] == ["WIN=C:\\tools", "PRICE=$5"]
    assert stage.steps[-1].args[-1] == "echo a     b"
