"""This machine's capacity in Node resource terms: what downward API resource limits default to when a
container sets none, and what bounds a memory-backed volume, unless the kubelet passes its own figures."""

from __future__ import annotations

import os
from pathlib import Path


def machine_allocatable(data_path: Path) -> dict[str, str]:
    """cpu, memory and ephemeral-storage (the filesystem holding `data_path`) of this machine."""
    existing = next(p for p in (data_path, *data_path.parents) if p.exists())
    info = os.statvfs(existing)
    return {"cpu": str(os.cpu_count() or 1), "memory": str(_mem_total()),
            "ephemeral-storage": str(info.f_blocks * info.f_frsize)}


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")
