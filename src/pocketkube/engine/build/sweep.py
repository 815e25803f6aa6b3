"""Leftovers of builds whose process died without cleaning up (SIGKILL, a crash): a new build removes
them first. Everything a build creates carries its pid in its name (see workspace.py), so work of
builds still running is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from pathlib import Path

from pocketkube.engine.build.workspace import OWNER, unmount_below
from pocketkube.engine.engine import Engine
from pocketkube.engine.runtime import cgroups
from pocketkube.engine.runtime.oci import OCIRuntimeError


def _dead(name: str) -> bool:
    match = OWNER.match(name)
    return match is not None and not Path(f"/proc/{match.group(1)}").exists()


async def sweep_abandoned_builds(engine: Engine, build_root: Path) -> None:
    work_root = build_root / "work"
    dead = [d for d in work_root.iterdir() if _dead(d.name)] if work_root.is_dir() else []
    if not dead:
        return
    names = {d.name for d in dead}
    for entry in await engine.runtime.list():
        cid = entry.get("id", "")
        if cid.startswith("pkb-") and _owner(cid.removeprefix("pkb-")) in names:
            with contextlib.suppress(OCIRuntimeError):
                await engine.runtime.kill(cid, signal.SIGKILL, all=True)
            await engine.runtime.delete(cid, force=True)
            await asyncio.to_thread(cgroups.remove, f"{engine.cgroup_parent.rstrip('/')}/{cid}", kill=True)
    netns_dir = engine.run_root / "netns"
    if netns_dir.is_dir():
        for pinned in netns_dir.iterdir():
            if pinned.name.startswith("pkb-") and _owner(pinned.name.removeprefix("pkb-")) in names:
                await engine.network.detach(pinned.name, str(pinned / "net"), connected=True)
    for directory in dead:
        unmount_below(directory)
        for key in engine.snapshots.keys():
            if key.startswith(f"build-{directory.name}-"):
                engine.snapshots.remove(key)
        shutil.rmtree(directory, ignore_errors=True)


def _owner(name: str) -> str:
    """"<pid>-<hex>-<n>…" → "<pid>-<hex>", the work dir it belongs to."""
    match = OWNER.match(name)
    return match.group(0) if match else ""
