"""The container records on disk: names claimed and resolved through the name index (without reading every
record), links left by a crash, stores from before the index, prefixes, and records that survive a kill -9
of their writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pocketkube.engine import exitcleanup
from pocketkube.engine.containers import (
    Container,
    ContainerConfig,
    ContainerNotFound,
    ContainerStore,
    NameConflict,
)


def _maker(name: str = ""):
    def make(cid: str, directory: Path) -> Container:
        return Container(id=cid, name=name, image="busybox", image_id="sha256:" + "0" * 64, created=1.0,
                         config=ContainerConfig(image="busybox"), args=["true"], env=[], working_dir="/",
                         stop_signal="SIGTERM", directory=directory)
    return make


def test_names_are_claimed_resolved_and_released(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    web = store.add(_maker("web"))
    assert os.readlink(tmp_path / ".names" / "web") == web.id
    assert store.resolve("web").id == store.resolve("/web").id == store.resolve(web.id[:5]).id == web.id
    with pytest.raises(NameConflict, match='"/web" is already in use'):
        store.add(_maker("/web"))
    generated = {store.add(_maker()).name for _ in range(20)}
    assert len(generated) == 20 and all("_" in name for name in generated)
    assert {c.name for c in store.list()} == generated | {"web"}  # the index directory is no container
    store.remove(web)
    assert not (tmp_path / ".names" / "web").exists()
    with pytest.raises(ContainerNotFound):
        store.resolve("web")
    assert store.add(_maker("web")).id != web.id  # free again


def test_a_refused_name_undoes_what_make_did(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    store.add(_maker("web"))
    undone: list[str] = []
    made: list[str] = []

    def make(cid: str, directory: Path) -> Container:
        made.append(cid)
        return _maker("web")(cid, directory)

    with pytest.raises(NameConflict):
        store.add(make, undone.append)
    assert undone == made and len(made) == 1
    assert not (tmp_path / made[0]).exists()
    with pytest.raises(ValueError, match="Invalid container name"):
        store.add(_maker("bad name"), undone.append)
    assert len(undone) == 2 and [c.name for c in store.list()] == ["web"]


def test_a_link_left_by_a_crash_holds_no_name(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    os.symlink("f" * 64, tmp_path / ".names" / "db")  # its record was never saved
    with pytest.raises(ContainerNotFound):
        store.resolve("db")
    db = store.add(_maker("db"))
    assert store.resolve("db").id == db.id


def test_a_store_from_before_the_index_gets_one(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    old = store.add(_maker("old"))
    (tmp_path / ".names" / "old").unlink()
    (tmp_path / ".names").rmdir()
    reopened = ContainerStore(tmp_path)
    assert reopened.resolve("old").id == old.id
    with pytest.raises(NameConflict):
        reopened.add(_maker("old"))


def test_prefixes(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    ids = [store.add(_maker()).id for _ in range(17)]  # 17 ids: two of them share their first hex digit
    shared = next(cid[0] for cid in ids if sum(other[0] == cid[0] for other in ids) > 1)
    with pytest.raises(ValueError, match="multiple IDs"):
        store.resolve(shared)
    assert all(store.resolve(cid[:12]).id == cid for cid in ids)
    with pytest.raises(ContainerNotFound):
        store.resolve("nosuchcontainer")


def test_lifecycle_saves_survive_kill_9_of_the_writer(tmp_path: Path) -> None:
    """State saves skip fsync (a machine crash takes the container's processes along anyway) but stay
    atomic: a writer killed mid-loop leaves a whole record, never a torn one."""
    store = ContainerStore(tmp_path)
    container = store.add(_maker("busy"))
    writer = textwrap.dedent(f"""
        from pocketkube.engine.containers import ContainerStore
        from pathlib import Path
        store = ContainerStore(Path({str(tmp_path)!r}))
        container = store.load({container.id!r})
        print("ready", flush=True)
        n = 0
        while True:
            n += 1
            container.state.restart_count = n
            container.env = ["X=" + "y" * (n % 5000)]
            store.save(container)
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 20
        while True:  # readers never see a torn record while it is replaced over and over
            record = json.loads((container.directory / "container.json").read_text())
            assert record["id"] == container.id
            if record["state"]["restart_count"] > 200 or time.monotonic() > deadline:
                break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = store.load(container.id)
    assert saved.state.restart_count > 0 and saved.name == "busy"


def test_the_exit_command_skips_what_an_engine_handles(tmp_path: Path) -> None:
    """conmon's exit command loads the engine only for a container still waiting for its exit to be
    recorded (or for --rm), not for one gone, already recorded, or being removed by an engine."""
    store = ContainerStore(tmp_path / "engine" / "containers")
    container = store.add(_maker("job"))
    assert not exitcleanup.cleanup_needed(tmp_path, container.id)  # created, never started
    container.state.status = "running"
    store.save(container)
    assert exitcleanup.cleanup_needed(tmp_path, container.id)
    (container.directory / exitcleanup.REMOVAL_MARKER).touch()
    assert not exitcleanup.cleanup_needed(tmp_path, container.id)
    (container.directory / exitcleanup.REMOVAL_MARKER).unlink()
    container.state.status = "exited"
    store.save(container)
    assert not exitcleanup.cleanup_needed(tmp_path, container.id)
    container.config.auto_remove = True
    store.save(container)
    assert exitcleanup.cleanup_needed(tmp_path, container.id)  # --rm: still to be removed
    store.remove(container)
    assert not exitcleanup.cleanup_needed(tmp_path, container.id)
    assert exitcleanup.run(tmp_path, container.id) == 0  # nothing to do, and no engine loaded for it


def test_the_exit_command_process_stays_light(tmp_path: Path) -> None:
    """One exit command runs per container exit: when there is nothing to do it imports neither asyncio
    nor the engine (the command line dispatches it before anything else)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "pocketkube.cli.main", "container-cleanup",
                           "--data-dir", str(tmp_path), "f" * 64], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import")}
    assert "pocketkube.engine.exitcleanup" in imported
    assert not imported & {"asyncio", "pocketkube.engine.engine", "pocketkube.cli.docker.commands"}
