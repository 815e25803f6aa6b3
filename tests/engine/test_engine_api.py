"""The engine's own interface, as the kubelet will use it: sandboxes shared by several containers, layered
images with whiteouts, recovery after a restart, hostile image input, interactive terminals."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import pty
import select
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from engine_harness import POCKETKUBE, EngineEnv

from pocketkube.engine.containers import ContainerConfig
from pocketkube.engine.engine import Engine
from pocketkube.engine.images.store import Layer
from pocketkube.engine.runtime import conmon, favordynmods
from pocketkube.engine.snapshots.unpack import UnsafeLayer


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A layer tar: (name, content) files, (name, None) directories."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _add_layer_image(engine: Engine, base_ref: str, ref: str, layer_tars: list[bytes], created_by: list[str]) -> None:
    """An image made of the base image's layers plus the given ones (each stored gzip-compressed)."""
    base = engine.images.resolve(base_ref)
    layers = list(base.layers)
    history = list(base.config.get("history", []))
    for data, command in zip(layer_tars, created_by, strict=True):
        blob = gzip.compress(data, mtime=0)
        digest = engine.content.write_bytes(blob)
        layers.append(Layer(digest=digest, media_type="application/vnd.oci.image.layer.v1.tar+gzip", size=len(blob),
                            diff_id="sha256:" + hashlib.sha256(data).hexdigest(), uncompressed_size=len(data)))
        history.append({"created": "2026-11-22T00:00:00Z", "created_by": command})
    config = json.loads(json.dumps(base.config))
    config["rootfs"]["diff_ids"] = [layer.diff_id for layer in layers]
    config["history"] = history
    engine.images.create(config, layers, refs=[ref])


def test_deleted_file_is_gone_but_still_shipped(engine_env: EngineEnv) -> None:
    """The well-known gotcha: deleting a file in a later layer hides it, yet the earlier layer still carries it."""
    engine = engine_env.engine()
    big = os.urandom(3 * 1024 * 1024)
    _add_layer_image(engine, "busybox", "whiteouts:1",
                     [_tar([("data/", None), ("data/big.bin", big), ("data/keep.txt", b"keep")]),
                      _tar([("data/.wh.big.bin", b"")])],
                     ["/bin/sh -c dd if=/dev/urandom of=/data/big.bin", "/bin/sh -c rm /data/big.bin"])
    out = engine_env.out("run", "--rm", "whiteouts:1", "ls", "/data")
    assert out.split() == ["keep.txt"]
    history = engine_env.out("history", "--format", "{{.CreatedBy}}|{{.Size}}", "--no-trunc", "whiteouts:1")
    rows = [line.split("|") for line in history.splitlines()]
    assert rows[0][0].endswith("rm /data/big.bin") and rows[0][1].endswith("kB")   # the whiteout layer: tiny
    assert rows[1][0].endswith("of=/data/big.bin") and rows[1][1].endswith("MB")   # still 3 MB in its layer
    engine_env.out("rmi", "whiteouts:1")


def test_import_refuses_paths_escaping_the_root(engine_env: EngineEnv, tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    evil.write_bytes(_tar([("../../escaped.txt", b"x")]))
    result = engine_env.cli("import", str(evil), "evil:1")
    if result.returncode == 0:
        # Accepted into the store as a blob: it must then be refused when unpacked for a container.
        run = engine_env.cli("run", "--rm", "evil:1", "true")
        assert run.returncode == 125 and b"escapes" in run.stderr
        engine_env.out("rmi", "evil:1")
    else:
        assert b"escapes" in result.stderr
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_unpack_rejects_escaping_members_directly(tmp_path: Path) -> None:
    from pocketkube.engine.snapshots.unpack import apply_layer
    with pytest.raises(UnsafeLayer):
        apply_layer(io.BytesIO(_tar([("a/../../x", b"x")])), tmp_path / "dest", overlay=True)


async def test_sandbox_shares_network_uts_and_ipc(engine_env: EngineEnv) -> None:
    """Two containers in one sandbox (a pod): same hostname, same network namespace (localhost works between
    them), shared IPC; each still has its own pid namespace and root filesystem."""
    engine = engine_env.engine()
    sandbox = "sbx" + os.urandom(4).hex()
    pinned = engine.create_sandbox(sandbox, hostname="pod-a")
    namespaces = {"network": str(pinned["net"]), "ipc": str(pinned["ipc"]), "uts": str(pinned["uts"])}
    server = client = None
    try:
        server = await engine.create(ContainerConfig(
            image="busybox", command=["sh", "-c", "echo shared > /www/index.html 2>/dev/null || "
                                                  "(mkdir /www && echo shared > /www/index.html); "
                                                  "httpd -f -p 8080 -h /www"],
            network="sandbox", sandbox_namespaces=namespaces, manage_etc_files=False, cleanup_on_exit=False))
        await engine.start(server.id)
        client = await engine.create(ContainerConfig(
            image="busybox", command=["sh", "-c", "for i in $(seq 50); do wget -q -O- http://127.0.0.1:8080/ "
                                                  "&& break; sleep 0.1; done; hostname"],
            network="sandbox", sandbox_namespaces=namespaces, manage_etc_files=False, cleanup_on_exit=False))
        await engine.start(client.id)
        finished = await engine.wait(client.id, timeout=30)
        assert finished.state.exit_code == 0
        lines = client.log_path.read_text().splitlines()
        assert lines[0].endswith("shared") and lines[-1].endswith("pod-a")
        server_ns = os.readlink(f"/proc/{(await engine.refresh(server.id)).state.pid}/ns/net")
        assert server_ns == f"net:[{os.stat(pinned['net']).st_ino}]"
    finally:
        for container in (client, server):
            if container is not None:
                await engine.remove(container.id, force=True)
        engine.remove_sandbox(sandbox)
    assert not (engine.run_root / "sandboxes" / sandbox).exists()


async def _run_true(engine: Engine) -> None:
    container = await engine.create(ContainerConfig(image="busybox", command=["/bin/true"], network="none",
                                                    cleanup_on_exit=False))
    try:
        await engine.start(container.id)
        assert (await engine.wait(container.id, timeout=30)).state.exit_code == 0
    finally:
        await engine.remove(container.id, force=True)


async def test_cgroup_favordynmods_setting(engine_env: EngineEnv) -> None:
    """"off" leaves the host's cgroup2 option as it is; "on", the default, turns it on at the first start and
    keeps the mount's other options (the session fixture puts the host's own setting back afterwards)."""
    before = favordynmods.cgroup2_mount()
    assert before is not None, "this test machine has a cgroup2 mount"
    assert favordynmods.set_favordynmods(False)
    settings_file = engine_env.data_dir / "engine.json"
    saved = settings_file.read_text()
    try:
        settings_file.write_text(json.dumps({**engine_env.settings, "cgroup-favordynmods": "off"}))
        await _run_true(Engine(engine_env.data_dir))
        assert not favordynmods.cgroup2_mount().favors_dynmods
    finally:
        settings_file.write_text(saved)
    await _run_true(Engine(engine_env.data_dir))
    after = favordynmods.cgroup2_mount()
    assert after.favors_dynmods
    assert after.mount_options == before.mount_options
    assert set(after.super_options) - {"favordynmods"} == set(before.super_options) - {"favordynmods"}


async def test_recover_marks_lost_containers_and_removes_orphans(engine_env: EngineEnv) -> None:
    engine = engine_env.engine()
    container = await engine.create(ContainerConfig(image="busybox", command=["sleep", "300"], network="none",
                                                    cleanup_on_exit=False))
    await engine.start(container.id)
    try:
        # The monitor dies with no exit recorded and the runtime's container goes (as after a reboot).
        monitor = conmon.monitor_pid(engine.monitor_paths, container.id)
        assert monitor
        await engine.runtime.kill(container.id, 9, all=True)
        os.kill(monitor, 9)
        deadline = time.time() + 10
        while conmon.monitor_alive(engine.monitor_paths, container.id):
            assert time.time() < deadline
            await asyncio.sleep(0.05)
        for path in engine.monitor_paths.exit_dir.glob(container.id + "*"):
            path.unlink()
        restarted = Engine(engine_env.data_dir)
        report = await restarted.recover()
        assert container.id in report["exited"]
        state = (await restarted.refresh(container.id)).state
        assert state.status == "exited" and state.error
    finally:
        await engine.remove(container.id, force=True)


def test_run_with_a_terminal(engine_env: EngineEnv) -> None:
    """`run -it` through a real pseudo-terminal, as a user at a shell."""
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["POCKETKUBE_DATA_DIR"] = str(engine_env.data_dir)
        os.execv(sys.executable, [*POCKETKUBE, "run", "--rm", "-it", "busybox", "sh"])
    output = b""
    typed = False
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            if not typed and b"# " in output:
                # Type once the shell prompts, as a person would (input sent before it starts may be flushed).
                os.write(fd, b"stty size; tty; echo ma''rker; exit 7\n")
                typed = True
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert b"marker" in output and b"/dev/pts/" in output, output
    assert os.waitstatus_to_exitcode(status) == 7


def test_exec_with_a_terminal(engine_env: EngineEnv) -> None:
    cid = engine_env.out("run", "-d", "busybox", "sleep", "60").strip()
    try:
        result = subprocess.run(
            ["script", "-qec", " ".join([*POCKETKUBE, "exec", "-it", cid, "sh", "-c", "'tty; exit 4'"]),
             "/dev/null"], capture_output=True, timeout=30,
            env=dict(os.environ, POCKETKUBE_DATA_DIR=str(engine_env.data_dir)))
        assert b"/dev/pts/" in result.stdout
        assert result.returncode == 4
    finally:
        engine_env.cli("rm", "-f", cid)
