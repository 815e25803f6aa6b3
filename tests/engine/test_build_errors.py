"""Builds that fail: the error names the Dockerfile line and what went wrong, nothing gets tagged, and
nothing of the build is left behind (mounts, snapshots, containers, cgroups, network namespaces), Ctrl-C
included."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_harness import EngineEnv

from pocketkube.engine.runtime import cgroups

BUILD = [sys.executable, "-m", "pocketkube.cli.main", "build", "--progress", "plain"]


def build(env: EngineEnv, context: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUILD, *args, str(context)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, POCKETKUBE_DATA_DIR=str(env.data_dir)))


def dockerfile(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(text)
    return directory


def assert_nothing_left(env: EngineEnv) -> None:
    engine = env.engine()
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(env.data_dir) in line or str(engine.run_root) in line]
    assert not mounts
    assert not [key for key in engine.snapshots.keys() if key.startswith("build-")]
    work = engine.root / "build" / "work"
    assert not work.exists() or not list(work.iterdir())
    assert not [c for c in asyncio.run(engine.runtime.list()) if c.get("id", "").startswith("pkb-")]
    netns = engine.run_root / "netns"
    assert not netns.exists() or not [p for p in netns.iterdir() if p.name.startswith("pkb-")]
    parent = cgroups.controller_dirs(env.settings["cgroup-parent"]).get("memory")
    assert parent is None or not parent.exists() or not [p for p in parent.iterdir() if p.name.startswith("pkb-")]


def test_failing_run_reports_line_exit_code_and_output(engine_env: EngineEnv, tmp_path: Path) -> None:
    engine_env.out("tag", "busybox", "failing:1")  # a tag that must keep pointing where it did
    before = engine_env.engine().images.resolve("failing:1").id
    directory = dockerfile(tmp_path / "ctx", """\
FROM busybox
RUN echo fine > /fine

RUN echo step output && echo to stderr >&2 && exit 3
RUN echo never
""")
    result = build(engine_env, directory, "-t", "failing:1", "-t", "failing:2")
    assert result.returncode == 1
    error = result.stderr
    assert re.search(r"#\d+ ERROR: process \"/bin/sh -c echo step output && echo to stderr >&2 && exit 3\" did not "
                     r"complete successfully: exit code: 3", error)
    assert " > [3/4] RUN echo step output && echo to stderr >&2 && exit 3:\nstep output\nto stderr\n" in error
    assert "Dockerfile:4\n" in error and "   4 | >>> RUN echo step output" in error
    assert error.rstrip().endswith("ERROR: failed to solve: process \"/bin/sh -c echo step output && echo to "
                                   "stderr >&2 && exit 3\" did not complete successfully: exit code: 3")
    assert "echo never" not in error.split("Dockerfile:4")[0]
    engine = engine_env.engine()
    assert engine.images.resolve("failing:1").id == before
    assert "failing:2" not in engine_env.out("images")
    assert_nothing_left(engine_env)


@pytest.mark.parametrize("text, files, message, line", [
    ("FROM busybox\nRUN true\nFOOBAR baz\n", {}, "unknown instruction: FOOBAR", 3),
    ("RUN echo no base\n", {}, "no build stage in current context", 1),
    ("FROM busybox\nCOPY ../outside.txt /\n", {}, "COPY failed: forbidden path outside the build context: "
                                                 "../outside.txt ()", 2),
    ("FROM busybox\nCOPY missing.txt /\n", {}, '"/missing.txt": not found', 2),
    ("FROM busybox\nCOPY a.txt b.txt /single\n", {"a.txt": "a", "b.txt": "b"},
     "When using COPY with more than one source file, the destination must be a directory and end with a /", 2),
    ("FROM busybox\n\nFROM no-such-image:1\n", {}, "pull access denied", 3),
    ("FROM busybox\nUSER nobody-here\nRUN true\n", {}, "unable to find user nobody-here", 3),
    ("FROM busybox\nRUN [\"/no/such/binary\"]\n", {}, 'process "/no/such/binary" did not complete successfully', 2),
])
def test_bad_dockerfiles(engine_env: EngineEnv, tmp_path: Path, text: str, files: dict[str, str], message: str,
                         line: int) -> None:
    directory = dockerfile(tmp_path / "ctx", text)
    (tmp_path / "outside.txt").write_text("outside")
    for name, content in files.items():
        (directory / name).write_text(content)
    result = build(engine_env, directory, "-t", "broken:1")
    assert result.returncode == 1
    assert message in result.stderr
    assert f"Dockerfile:{line}\n" in result.stderr
    assert "broken" not in engine_env.out("images")
    assert_nothing_left(engine_env)


def test_ctrl_c_cleans_up(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = dockerfile(tmp_path / "ctx", "FROM busybox\nRUN echo started && sleep 60\n")
    # As typed in a terminal: a suite started in the background (`make test &`) runs with SIGINT ignored, and
    # an ignored signal stays ignored across exec, so Ctrl-C would never reach the build.
    process = subprocess.Popen([*BUILD, "--no-cache", "-t", "interrupted:1", str(directory)], stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, POCKETKUBE_DATA_DIR=str(engine_env.data_dir)),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stderr is not None
        for output in process.stderr:
            if output.rstrip().endswith(" started"):
                break
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=30)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, rest
    assert "interrupted" not in engine_env.out("images")
    assert_nothing_left(engine_env)
