"""Container logs in the Kubernetes CRI format that conmon writes (one line per chunk:
`<RFC3339Nano time> <stdout|stderr> <P|F> <text>`, P = partial line continued by the next entry)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass
class LogLine:
    time: str            # RFC3339Nano as conmon wrote it
    stream: str          # "stdout" | "stderr"
    data: bytes          # the full line including its trailing newline (absent on a final partial line)

    @property
    def timestamp(self) -> float:
        return parse_time(self.time)


def parse_time(text: str) -> float:
    """Epoch seconds of an RFC3339Nano time; fromisoformat handles only microseconds."""
    head, _, rest = text.partition(".")
    if not rest:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
    zone = rest[len(digits):] or "+00:00"
    base = datetime.fromisoformat(head + zone.replace("Z", "+00:00")).timestamp()
    return base + int(digits) / 10 ** len(digits)


def _parse_entry(raw: bytes) -> tuple[str, str, bool, bytes] | None:
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None  # a torn or foreign line: skip rather than fail the whole log
    text = parts[3] if len(parts) == 4 else b""
    return parts[0].decode(), parts[1].decode(), parts[2] == b"F", text


class _Joiner:
    """Joins partial (P) entries of each stream into whole lines."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[str, bytearray]] = {}

    def feed(self, raw: bytes) -> LogLine | None:
        entry = _parse_entry(raw)
        if entry is None:
            return None
        time, stream, full, text = entry
        first_time, buffer = self.pending.pop(stream, (time, bytearray()))
        buffer += text
        if not full:
            self.pending[stream] = (first_time, buffer)
            return None
        return LogLine(first_time, stream, bytes(buffer) + b"\n")

    def flush(self) -> Iterator[LogLine]:
        for stream, (time, buffer) in self.pending.items():
            yield LogLine(time, stream, bytes(buffer))
        self.pending.clear()


def read_log(path: Path) -> list[LogLine]:
    """Every whole line in the log so far (a trailing partial line included)."""
    joiner = _Joiner()
    lines: list[LogLine] = []
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = joiner.feed(raw)
                if line is not None:
                    lines.append(line)
    except FileNotFoundError:
        return []
    lines.extend(joiner.flush())
    return lines


def select(lines: list[LogLine], *, tail: int | None = None, since: float | None = None,
           until: float | None = None) -> list[LogLine]:
    if since is not None:
        lines = [line for line in lines if line.timestamp >= since]
    if until is not None:
        lines = [line for line in lines if line.timestamp < until]
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    return lines


async def follow(path: Path, *, start_offset: int, running: callable, poll: float = 0.05
                 ) -> AsyncIterator[LogLine]:
    """New lines written after start_offset, until `running()` is false and the file is drained."""
    joiner = _Joiner()
    buffer = b""
    offset = start_offset
    while True:
        alive = running()
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = joiner.feed(raw + b"\n")
                if line is not None:
                    yield line
            continue
        if not alive:
            for line in joiner.flush():
                yield line
            return
        await asyncio.sleep(poll)


def log_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
