"""Container log rotation by size, as upstream's container log manager does it.

Every MONITOR_INTERVAL, the log of each running container that has grown to `max_size` is renamed to
`<log>.<YYYYmmdd-HHMMSS>` and its monitor starts a new file at the old path (the CRI's ReopenContainerLog).
A container keeps at most `max_files` files: the live one, the latest rotated one as it was written, and
older ones gzip-compressed (`.gz`); the oldest go first. A reopen that fails renames the file back, so the
next round tries again. `kubectl logs` reads the live file only, as upstream; a follower moves on to the new
file when the old one is rotated away.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pocketkube.api.quantity import parse_quantity

log = logging.getLogger(__name__)

MONITOR_INTERVAL = 10.0           # seconds, upstream's containerLogMonitorInterval
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"
COMPRESSED_SUFFIX = ".gz"
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class LogRotationPolicy:
    """upstream's defaults: --container-log-max-size 10Mi, --container-log-max-files 5."""

    max_size: int = 10 * 1024 * 1024
    max_files: int = 5

    def __post_init__(self) -> None:
        if self.max_size <= 0:
            raise ValueError(f"container log max size must be positive, not {self.max_size}")
        if self.max_files < 2:
            raise ValueError(f"container log max files must be at least 2, not {self.max_files}")

    @classmethod
    def parse(cls, max_size: str, max_files: int) -> LogRotationPolicy:
        """From the flags' forms: a quantity ("10Mi") and a count."""
        try:
            size = parse_quantity(max_size).value()
        except ValueError:
            raise ValueError(f"invalid container log max size {max_size!r}: not a quantity such as 10Mi") from None
        return cls(size, max_files)


# Where a running container's log is, and how to make its monitor reopen it.
LogTarget = tuple[str, Path]


class ContainerLogRotator:
    def __init__(self, policy: LogRotationPolicy, reopen: Callable[[str], Awaitable[None]]) -> None:
        self.policy = policy
        self._reopen = reopen

    async def rotate(self, targets: Iterable[LogTarget]) -> list[Path]:
        """One round over the running containers' logs; returns the files rotated away."""
        rotated = []
        for container_id, path in targets:
            try:
                size = (await asyncio.to_thread(os.stat, path)).st_size
            except FileNotFoundError:
                # Gone (say, a rotation whose reopen never happened): the monitor starts a new one.
                await self._try_reopen(container_id, path)
                continue
            if size < self.policy.max_size:
                continue
            renamed = await asyncio.to_thread(self._prepare_and_rename, path)
            if await self._try_reopen(container_id, path):
                rotated.append(renamed)
            else:
                await asyncio.to_thread(os.rename, renamed, path)  # try again next round
        return rotated

    async def _try_reopen(self, container_id: str, path: Path) -> bool:
        try:
            await self._reopen(container_id)
            return True
        except Exception as err:  # a monitor that went away with its container, mostly
            log.info("cannot reopen the log %s of container %s: %s", path, container_id, err)
            return False

    def _prepare_and_rename(self, path: Path) -> Path:
        """Makes room for one more rotated file, compresses the earlier ones, and renames the live one."""
        rotated = self._rotated_files(path)
        keep = self.policy.max_files - 2  # besides the live file and the one rotated now
        for old in rotated[:max(len(rotated) - keep, 0)]:
            old.unlink(missing_ok=True)  # oldest first, so that a reader of the newer ones is not disturbed
        for old in rotated[max(len(rotated) - keep, 0):]:
            if not old.name.endswith(COMPRESSED_SUFFIX):
                _compress(old)
        renamed = path.with_name(f"{path.name}.{time.strftime(TIMESTAMP_FORMAT)}")
        os.rename(path, renamed)
        return renamed

    @staticmethod
    def _rotated_files(path: Path) -> list[Path]:
        """The rotated files of the log, oldest first, after removing what an interrupted round left: temporary
        files, and uncompressed files whose compressed copy was completed."""
        found = sorted(path.parent.glob(f"{path.name}.*"))
        for candidate in found:
            if candidate.name.endswith(TMP_SUFFIX) or (
                    not candidate.name.endswith(COMPRESSED_SUFFIX)
                    and candidate.with_name(candidate.name + COMPRESSED_SUFFIX).exists()):
                candidate.unlink(missing_ok=True)
        return [p for p in found if p.exists()]


def _compress(path: Path) -> None:
    """path -> path.gz, through a temporary file so that a crash never leaves a truncated .gz."""
    target = path.with_name(path.name + COMPRESSED_SUFFIX)
    scratch = target.with_name(target.name + TMP_SUFFIX)
    with open(path, "rb") as source, gzip.open(scratch, "wb") as sink:
        shutil.copyfileobj(source, sink)
    os.rename(scratch, target)
    path.unlink()


def remove_rotated(path: Path) -> None:
    """A removed container's rotated log files."""
    for rotated in path.parent.glob(f"{path.name}.*"):
        rotated.unlink(missing_ok=True)
