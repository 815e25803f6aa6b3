"""conmon's exit command (`pocketkube container-cleanup --data-dir DIR ID`): when a container ends, record its
exit and release what it held (Engine.cleanup_exited), honouring --rm.

It runs once per container exit, as a process of its own, so it stays cheap: most often the engine that
started the container has already seen the exit (a foreground `run`, `wait`, a kubelet) and has nothing left
for it, which one read of the record tells before the engine and asyncio are imported."""

from __future__ import annotations

import json
from pathlib import Path

_ACTIVE = ("running", "paused")
# Left in a container's directory by an engine removing it by force: that engine records the exit itself.
REMOVAL_MARKER = "removal-in-progress"


def _record(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "container.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None


def cleanup_needed(data_dir: Path, cid: str) -> bool:
    """Whether the container still waits for its exit to be recorded, or for its removal (--rm)."""
    directory = data_dir / "engine" / "containers" / cid  # the layout Engine and ContainerStore use
    record = _record(directory)
    if record is None or (directory / REMOVAL_MARKER).exists():
        return False
    return record.get("state", {}).get("status") in _ACTIVE or bool(record.get("config", {}).get("auto_remove"))


def run(data_dir: Path, cid: str) -> int:
    if not cleanup_needed(data_dir, cid):
        return 0
    import asyncio

    from pocketkube.engine.engine import Engine

    asyncio.run(Engine(data_dir).cleanup_exited(cid))
    return 0
