"""Container logs as the kubelet serves them: the CRI log file conmon writes (one entry per line,
`<RFC3339Nano time> <stdout|stderr> <P|F> <text>`, P = a partial line the next entry continues) turned back
into what the container printed, with kubectl's options: tailLines, sinceSeconds/sinceTime, timestamps,
limitBytes and follow (until the container exits, across rotations of the file)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

_POLL = 0.1
_TIME = re.compile(r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)$")


class LogOptionsError(ValueError):
    """A query parameter that is not a valid log option."""


def _nanos(text: str) -> int:
    """Epoch nanoseconds of an RFC 3339 time (with any number of fraction digits)."""
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    seconds = int(datetime.fromisoformat(match["base"] + zone).timestamp())
    fraction = (match["fraction"] or "")[:9].ljust(9, "0")
    return seconds * 1_000_000_000 + int(fraction)


def format_timestamp(text: str) -> str:
    """The kubelet's timestamp form: nine fraction digits, "Z" for UTC, the original offset otherwise."""
    match = _TIME.match(text)
    if match is None:
        return text
    zone = "Z" if match["zone"] in ("Z", "+00:00") else match["zone"]
    return f"{match['base']}.{(match['fraction'] or '')[:9].ljust(9, '0')}{zone}"


@dataclass(frozen=True)
class LogEntry:
    time: str
    nanos: int
    stream: str
    partial: bool
    content: bytes

    def render(self, timestamps: bool) -> bytes:
        text = self.content if self.partial else self.content + b"\n"
        return f"{format_timestamp(self.time)} ".encode() + text if timestamps else text


def parse_entry(line: bytes) -> LogEntry | None:
    """One line of a CRI log (without its newline); None for a torn or foreign line."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"P", b"F"):
        return None
    try:
        stamp = parts[0].decode()
        nanos = _nanos(stamp)
    except (UnicodeDecodeError, ValueError):
        return None
    return LogEntry(stamp, nanos, parts[1].decode(), parts[2] == b"P", parts[3] if len(parts) == 4 else b"")


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_nanos: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str], now: float | None = None) -> LogOptions:
        def flag(name: str) -> bool:
            return query.get(name, "").lower() in ("1", "true")

        def number(name: str) -> int | None:
            value = query.get(name)
            if value is None or value == "":
                return None
            if not re.fullmatch(r"-?\d+", value):
                raise LogOptionsError(f"invalid value for {name}: {value!r} is not an integer")
            return int(value)

        since = None
        seconds = number("sinceSeconds")
        if seconds is not None:
            since = int(((time.time() if now is None else now) - seconds) * 1_000_000_000)
        elif query.get("sinceTime"):
            try:
                since = _nanos(query["sinceTime"])
            except ValueError:
                raise LogOptionsError(f"invalid value for sinceTime: {query['sinceTime']!r} is not an RFC 3339 "
                                      "time") from None
        tail = number("tailLines")
        limit = number("limitBytes")
        return cls(flag("follow"), flag("previous"), flag("timestamps"),
                   tail if tail is None or tail >= 0 else None, limit if limit is None or limit > 0 else None,
                   since)


class _LogReader:
    """Reads a log file on from where it last stopped, across rotation: once the path names a new file (the
    kubelet renamed the old one away and the monitor opened a new one), the old file's rest is read, then
    the new file from its start. Blocking: call it from a worker thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: BinaryIO | None = None

    def read(self) -> bytes:
        if self._file is None:
            try:
                self._file = open(self._path, "rb")  # kept open between reads: rotation renames it
            except FileNotFoundError:
                return b""
        data = self._file.read()
        if not data and self._rotated():
            data = self._file.read()  # written between the read above and the rename
            self._file.close()
            self._file = None
        return data

    def _rotated(self) -> bool:
        assert self._file is not None
        try:
            return os.stat(self._path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False  # renamed, its successor not yet opened: read on from the old file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Output:
    """Writes rendered entries, stopping for good once limitBytes is reached."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]], options: LogOptions) -> None:
        self._write = write
        self._options = options
        self._remaining = options.limit_bytes

    @property
    def full(self) -> bool:
        return self._remaining is not None and self._remaining <= 0

    async def entries(self, entries: list[LogEntry]) -> None:
        since = self._options.since_nanos
        chunk = b"".join(entry.render(self._options.timestamps) for entry in entries
                         if since is None or entry.nanos >= since)
        if self._remaining is not None:
            chunk = chunk[:self._remaining]
            self._remaining -= len(chunk)
        if chunk:
            await self._write(chunk)


def _complete_lines(data: bytes) -> tuple[list[LogEntry], int]:
    """The entries of the whole lines in `data`, and how many bytes they span."""
    end = data.rfind(b"\n") + 1
    entries = [entry for line in data[:end].split(b"\n")[:-1] if (entry := parse_entry(line)) is not None]
    return entries, end


async def write_log(path: Path, options: LogOptions, write: Callable[[bytes], Awaitable[None]],
                    running: Callable[[], bool]) -> None:
    """Writes the log as the options ask; with follow, keeps going until `running()` turns false and the
    file holds nothing new."""
    output = _Output(write, options)
    reader = _LogReader(path)
    try:
        data = await asyncio.to_thread(reader.read)
        entries, used = _complete_lines(data)
        pending = data[used:]
        if options.tail_lines is not None:
            entries = entries[-options.tail_lines:] if options.tail_lines else []
        await output.entries(entries)
        if not options.follow:
            return
        while not output.full:
            alive = running()  # asked before reading, so nothing written before the exit is missed
            data = await asyncio.to_thread(reader.read)
            if data:
                entries, used = _complete_lines(pending + data)
                pending = (pending + data)[used:]
                await output.entries(entries)
                continue
            if not alive:
                return
            await asyncio.sleep(_POLL)
    finally:
        reader.close()
