"""The build cache: steps reused across builds and processes, the cascade when an early step changes,
content (not mtime) deciding for COPY, build args the step sees, --no-cache, cache mounts that persist,
and cache layers that image garbage collection keeps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from engine_harness import EngineEnv

from pocketkube.engine.build.cache import referenced_blobs

BUILD = [sys.executable, "-m", "pocketkube.cli.main", "build", "--progress", "plain"]


def build(env: EngineEnv, context: Path, *args: str) -> dict[str, str]:
    """Builds; returns each step's outcome by its name: "CACHED" or "DONE"."""
    result = subprocess.run([*BUILD, *args, str(context)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, POCKETKUBE_DATA_DIR=str(env.data_dir)))
    if result.returncode != 0:
        raise AssertionError(f"build failed ({result.returncode}):\n{result.stderr}")
    names: dict[str, str] = {}
    outcome: dict[str, str] = {}
    for line in result.stderr.splitlines():
        match = re.match(r"(#\d+) \[(?:\S+ )?\d+/\d+\] (.*)", line)
        if match:
            names[match.group(1)] = match.group(2)
            continue
        vertex, _, rest = line.partition(" ")
        if vertex in names and rest.split(" ")[0] in ("CACHED", "DONE"):
            outcome[names[vertex]] = rest.split(" ")[0]
    return outcome


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


DOCKERFILE = """\
FROM busybox
COPY first.txt /
RUN cat /first.txt > /derived-1
COPY second.txt /
RUN cat /second.txt > /derived-2
"""
STEPS = ["FROM docker.io/library/busybox:latest", "COPY first.txt /", "RUN cat /first.txt > /derived-1",
         "COPY second.txt /", "RUN cat /second.txt > /derived-2"]


def test_hits_and_the_cascade_after_a_change(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = write(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "first.txt": "1", "second.txt": "2"})
    first = build(engine_env, directory, "-t", "cascade:1")
    assert [first[name] for name in STEPS[1:]] == ["DONE"] * 4
    image = engine_env.engine().images.resolve("cascade:1").id

    assert build(engine_env, directory, "-t", "cascade:1") == dict.fromkeys(STEPS, "CACHED")
    assert engine_env.engine().images.resolve("cascade:1").id == image  # nothing changed: the same image

    os.utime(directory / "first.txt", (1, 1))  # a new mtime alone changes nothing
    assert set(build(engine_env, directory).values()) == {"CACHED"}

    (directory / "second.txt").write_text("two")  # a late change: only the steps from there on rebuild
    outcome = build(engine_env, directory)
    assert [outcome[name] for name in STEPS] == ["CACHED", "CACHED", "CACHED", "DONE", "DONE"]

    (directory / "first.txt").write_text("one")  # an early change: everything after it rebuilds
    outcome = build(engine_env, directory)
    assert [outcome[name] for name in STEPS] == ["CACHED", "DONE", "DONE", "DONE", "DONE"]

    (directory / "first.txt").chmod(0o600)  # the mode is content too
    assert build(engine_env, directory)["COPY first.txt /"] == "DONE"

    outcome = build(engine_env, directory, "--no-cache")
    assert [outcome[name] for name in STEPS[1:]] == ["DONE"] * 4


def test_build_args_a_step_sees_are_part_of_its_key(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo unrelated\nARG LEVEL=1\n"
                                                       "RUN echo level $LEVEL\n"})
    build(engine_env, directory, "--build-arg", "LEVEL=1")
    outcome = build(engine_env, directory, "--build-arg", "LEVEL=2")
    assert (outcome["RUN echo unrelated"], outcome["RUN echo level $LEVEL"]) == ("CACHED", "DONE")
    outcome = build(engine_env, directory, "--build-arg", "LEVEL=1", "--build-arg", "HTTP_PROXY=http://127.0.0.1:9")
    assert outcome["RUN echo level $LEVEL"] == "CACHED"  # proxies are not part of the key


def test_cache_mounts_persist_across_builds(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = write(tmp_path / "ctx", {"Dockerfile": """\
FROM busybox
RUN --mount=type=cache,target=/var/cache/app,id=counter \\
    echo run >> /var/cache/app/runs && wc -l < /var/cache/app/runs > /count && test ! -e /var/cache/x
"""})
    for expected in ("1", "2", "3"):
        build(engine_env, directory, "--no-cache", "-t", "counter:1")
        assert engine_env.out("run", "--rm", "counter:1", "cat", "/count").strip() == expected
    # the cache directory is a mount: nothing of it is in the image
    assert engine_env.cli("run", "--rm", "counter:1", "test", "-e", "/var/cache/app/runs").returncode == 1


def test_cache_layers_are_kept_by_image_garbage_collection(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo kept > /kept\n"})
    build(engine_env, directory, "-t", "gc:1")
    engine = engine_env.engine()
    layer = engine.images.resolve("gc:1").layers[-1].digest
    engine.images.remove("gc:1")
    with engine.images.locked():
        engine.images.gc(keep_blobs=referenced_blobs(engine_env.data_dir))
    assert engine.content.exists(layer)
    assert build(engine_env, directory, "-t", "gc:1")["RUN echo kept > /kept"] == "CACHED"
    engine.images.remove("gc:1")
    engine.images.gc()  # without the keep set the cache's layer goes; the step then runs again
    assert not engine.content.exists(layer)
    assert build(engine_env, directory, "-t", "gc:1")["RUN echo kept > /kept"] == "DONE"


def test_bind_mounted_context_and_linked_copies(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = write(tmp_path / "ctx", {"Dockerfile": """\
FROM busybox
ARG BASE=1
RUN echo base $BASE
COPY --link app.txt /app/
RUN --mount=type=bind,source=conf,target=/conf cat /conf/settings > /settings
""", "app.txt": "app"})
    (directory / "conf").mkdir()
    (directory / "conf" / "settings").write_text("one")
    build(engine_env, directory)
    (directory / "conf" / "settings").write_text("two")  # what a bind mount shows is part of the key
    outcome = build(engine_env, directory)
    assert outcome["RUN --mount=type=bind,source=conf,target=/conf cat /conf/settings > /settings"] == "DONE"
    assert outcome["COPY --link app.txt /app/"] == "CACHED"
    outcome = build(engine_env, directory, "--build-arg", "BASE=2", "-t", "linked:1")
    # a linked COPY does not depend on what lies below it; the steps after a miss still rebuild
    assert (outcome["RUN echo base $BASE"], outcome["COPY --link app.txt /app/"]) == ("DONE", "CACHED")
    assert outcome["RUN --mount=type=bind,source=conf,target=/conf cat /conf/settings > /settings"] == "DONE"
    assert engine_env.out("run", "--rm", "linked:1", "cat", "/app/app.txt", "/settings") == "apptwo"
