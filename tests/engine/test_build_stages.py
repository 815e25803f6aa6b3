"""Multistage builds (only what the target needs, independent stages at the same time, a runtime image
with nothing of the build stage), layers as Docker accounts them, and secrets and build args that never
land in an image."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from engine_harness import EngineEnv

from pocketkube.engine.build.cache import BuildCache
from pocketkube.engine.registry.client import RegistryClient
from pocketkube.engine.registry.server import RegistryConfig, start_registry

BUILD = [sys.executable, "-m", "pocketkube.cli.main", "build", "--progress", "plain"]


def build(env: EngineEnv, context: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*BUILD, *args, str(context)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, POCKETKUBE_DATA_DIR=str(env.data_dir)))
    if check and result.returncode != 0:
        raise AssertionError(f"build failed ({result.returncode}):\n{result.stderr}")
    return result


def dockerfile(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(text)
    return directory


def layer_names(env: EngineEnv, digest: str) -> list[str]:
    with env.engine().content.open(digest) as blob, tarfile.open(fileobj=blob, mode="r|*") as tar:
        return [member.name for member in tar]


def test_go_style_build_ships_only_the_artifact(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = dockerfile(tmp_path / "ctx", """\
FROM busybox AS build
WORKDIR /go/src/app
COPY main.go .
RUN mkdir -p /toolchain && echo compiler > /toolchain/gc \\
 && printf '#!/bin/busybox sh\\necho "built from %s"\\n' "$(head -1 main.go)" > /go/bin-app && chmod 755 /go/bin-app

FROM busybox AS test
RUN false

FROM scratch
COPY --from=build /bin/busybox /bin/busybox
COPY --from=build /go/bin-app /app
ENTRYPOINT ["/app"]
""")
    (directory / "main.go").write_text("package main\n")
    result = build(engine_env, directory, "-t", "goapp:1")
    assert "[test" not in result.stderr  # the failing stage is not needed, so it never runs
    assert "[build 4/4] RUN" in result.stderr and "[stage-2 3/3] COPY --from=build /go/bin-app /app" in result.stderr
    image = engine_env.engine().images.resolve("goapp:1")
    assert len(image.layers) == 2  # its own two COPY layers, nothing of the build stage
    names = [name for layer in image.layers for name in layer_names(engine_env, layer.digest)]
    assert sorted(names) == ["app", "bin", "bin/busybox"]
    assert engine_env.out("run", "--rm", "goapp:1") == "built from package main\n"


def test_target_stops_at_a_stage(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = dockerfile(tmp_path / "ctx", """\
FROM busybox AS base
RUN echo base > /base

FROM base AS dev
RUN echo dev > /dev-only

FROM base AS release
RUN exit 3
""")
    result = build(engine_env, directory, "--target", "dev", "-t", "targets:dev")
    assert "[release" not in result.stderr
    assert engine_env.out("run", "--rm", "targets:dev", "cat", "/base", "/dev-only") == "base\ndev\n"


def test_independent_stages_run_at_the_same_time(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = dockerfile(tmp_path / "ctx", """\
FROM busybox AS left
RUN sleep 1 && echo left-finished > /left

FROM busybox AS right
RUN sleep 1 && echo right-finished > /right

FROM busybox
COPY --from=left /left /
COPY --from=right /right /
""")
    lines = build(engine_env, directory, "-t", "parallel:1").stderr.splitlines()

    def span(name: str) -> tuple[int, int]:
        start = next(i for i, line in enumerate(lines) if f"[{name} 2/2] RUN" in line)
        vertex = lines[start].split()[0]
        return start, next(i for i, line in enumerate(lines) if line.startswith(f"{vertex} DONE"))

    (left_start, left_done), (right_start, right_done) = span("left"), span("right")
    assert left_start < right_done and right_start < left_done  # each started before the other finished
    assert engine_env.out("run", "--rm", "parallel:1", "cat", "/left", "/right") == "left-finished\nright-finished\n"


def test_a_deleted_file_still_occupies_its_layer(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = dockerfile(tmp_path / "ctx", """\
FROM busybox
RUN head -c 3000000 /dev/urandom > /big
RUN rm /big
""")
    build(engine_env, directory, "-t", "deleted:1")
    history = engine_env.engine().images.history("deleted:1")
    remove, create = history[0], history[1]
    assert create["created_by"].startswith("RUN /bin/sh -c head") and create["size"] > 3_000_000
    assert remove["created_by"].startswith("RUN /bin/sh -c rm") and remove["size"] < 20_000
    image = engine_env.engine().images.resolve("deleted:1")
    assert layer_names(engine_env, image.layers[-1].digest) == [".wh.big"]
    assert engine_env.cli("run", "--rm", "deleted:1", "test", "-e", "/big").returncode == 1


def test_secrets_and_build_args_never_land_in_the_image(engine_env: EngineEnv, tmp_path: Path) -> None:
    secret_value, arg_value = "s3cr3t-Wm9vYmFy", "arg-value-Qmxhcmc"
    secret_hash, arg_hash = (hashlib.sha256(value.encode()).hexdigest() for value in (secret_value, arg_value))
    (tmp_path / "token.txt").write_text(secret_value)
    # the Dockerfile compares hashes: the values themselves must appear nowhere but in the build's inputs
    directory = dockerfile(tmp_path / "ctx", f"""\
FROM busybox
ARG API_TOKEN
RUN --mount=type=secret,id=token,required test "$(sha256sum < /run/secrets/token | cut -c1-64)" = {secret_hash} \\
 && test "$(printf %s "$API_TOKEN" | sha256sum | cut -c1-64)" = {arg_hash} && echo token > /proof
RUN --mount=type=secret,id=token,target=/etc/app/token,mode=0440,uid=33 stat -c '%a %u' /etc/app/token
RUN --mount=type=secret,id=token,env=TOKEN test "$(printf %s "$TOKEN" | sha256sum | cut -c1-64)" = {secret_hash} \\
 && echo env-ok
""")
    result = build(engine_env, directory, "-t", "secrets:1", "--secret", f"id=token,src={tmp_path / 'token.txt'}",
                   "--build-arg", f"API_TOKEN={arg_value}")
    assert "440 33" in result.stderr and "env-ok" in result.stderr
    engine = engine_env.engine()
    image = engine.images.resolve("secrets:1")
    blobs = [layer.digest for layer in image.layers]
    blobs += [record.layer.digest for record in BuildCache(engine.root / "build" / "cache", engine.content).records()
              if record.layer is not None]
    documents = [engine.content.read_bytes(image.manifest_digest), engine.content.read_bytes(image.id)]
    for digest in set(blobs):
        documents.append(gzip.decompress(engine.content.read_bytes(digest)))
    documents += [path.read_bytes() for path in (engine.root / "build" / "cache").glob("*.json")]
    for document in documents:
        assert secret_value.encode() not in document and arg_value.encode() not in document
    names = [name for digest in blobs for name in layer_names(engine_env, digest)]
    assert "proof" in names and not any(name.startswith(("run", "etc/app")) for name in names)
    missing = build(engine_env, directory, "-t", "secrets:2", "--no-cache", check=False)
    assert missing.returncode == 1 and "secret token not found" in missing.stderr


async def test_from_an_image_not_in_the_store_needs_pull(engine_env: EngineEnv, tmp_path: Path) -> None:
    registry = await start_registry(RegistryConfig(tmp_path / "registry", listen="127.0.0.1:0"))
    try:
        host = registry.url.split("://", 1)[1]
        await RegistryClient().push(engine_env.engine().images, "busybox", target=f"{host}/base/busybox:1")
        directory = dockerfile(tmp_path / "ctx", f"FROM {host}/base/busybox:1\nRUN echo pulled > /pulled\n")

        async def build_async(*args: str) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                *BUILD, *args, str(directory), stderr=asyncio.subprocess.PIPE,
                env=dict(os.environ, POCKETKUBE_DATA_DIR=str(engine_env.data_dir)))
            _, stderr = await asyncio.wait_for(process.communicate(), 120)
            return process.returncode or 0, stderr.decode()

        code, output = await build_async("-t", "pulled:1")
        assert code == 1 and "pull access denied" in output and "Dockerfile:1" in output
        code, output = await build_async("--pull", "-t", "pulled:1")
        assert code == 0, output
        assert f"[internal] load metadata for {host}/base/busybox:1" in output
    finally:
        await registry.stop()
    assert engine_env.out("run", "--rm", "pulled:1", "cat", "/pulled") == "pulled\n"
