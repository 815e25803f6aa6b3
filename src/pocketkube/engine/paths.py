"""Paths inside a container's root filesystem, resolved as the container would see them."""

from __future__ import annotations

import os
from pathlib import Path

MAX_SYMLINKS = 40


def resolve_in_root(root: Path, path: str) -> Path:
    """`path` as seen from inside `root`: symlinks (absolute or relative, in any component) resolve
    against root, never outside it — the same rule as runc's securejoin. The result may not exist."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)  # not a symlink (or absent): take it as is
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(f"too many levels of symbolic links in {path}")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return root.joinpath(*resolved)
