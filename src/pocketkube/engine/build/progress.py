"""Build progress in BuildKit's two looks. Plain (logs, CI): every step a numbered vertex, its output
lines streamed with their time since the step began, then CACHED, DONE <seconds> or ERROR. TTY: one line
per finished step, and a redrawn status block of the running steps with their latest output."""

from __future__ import annotations

import time
from collections import deque
from typing import TextIO

_TAIL = 10           # output lines kept for an error report
_REDRAW_EVERY = 0.1  # seconds between status redraws on a terminal


class Vertex:
    def __init__(self, progress: Progress, number: int, name: str) -> None:
        self.progress = progress
        self.number = number
        self.name = name
        self.started = time.monotonic()
        self.finished: float | None = None
        self.state = "running"
        self.tail: deque[str] = deque(maxlen=_TAIL)
        self._partial = ""

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def output(self, data: bytes) -> None:
        """Raw output of the step's process; complete lines are shown."""
        text = self._partial + data.decode(errors="replace")
        *lines, self._partial = text.split("\n")
        for line in lines:
            self.log(line.rstrip("\r"))

    def log(self, line: str) -> None:
        self.tail.append(line)
        self.progress._log(self, line)

    def status(self, text: str) -> None:
        """A sub-status line: "writing image sha256:… done"."""
        self.progress._status(self, text)

    def cached(self) -> None:
        self._finish("cached")

    def done(self) -> None:
        self._finish("done")

    def error(self, message: str) -> None:
        self._finish("error", message)

    def _finish(self, state: str, message: str = "") -> None:
        if self.finished is not None:
            return
        if self._partial:
            partial, self._partial = self._partial, ""
            self.log(partial)
        self.finished = time.monotonic()
        self.state = state
        self.progress._finish(self, message)


class Progress:
    """``mode``: "plain", "tty" or "quiet" (nothing shown)."""

    def __init__(self, stream: TextIO, mode: str = "plain") -> None:
        if mode not in ("plain", "tty", "quiet"):
            raise ValueError(f"progress mode must be plain, tty or quiet, not {mode!r}")
        self.stream = stream
        self.mode = mode
        self.vertices: list[Vertex] = []
        self.started = time.monotonic()
        self._drawn = 0
        self._last_draw = 0.0

    def vertex(self, name: str) -> Vertex:
        vertex = Vertex(self, len(self.vertices) + 1, name)
        self.vertices.append(vertex)
        if self.mode == "plain":
            self._write(f"\n#{vertex.number} {name}\n" if vertex.number > 1 else f"#{vertex.number} {name}\n")
        elif self.mode == "tty":
            self._redraw(force=True)
        return vertex

    def close(self, success: bool) -> None:
        if self.mode == "tty":
            self._clear()
            total = len(self.vertices)
            finished = sum(1 for v in self.vertices if v.finished is not None)
            state = "FINISHED" if success else "FAILED"
            self._write(f"[+] Building {time.monotonic() - self.started:.1f}s ({finished}/{total}) {state}\n")

    # --- events ----------------------------------------------------------------------------------

    def _log(self, vertex: Vertex, line: str) -> None:
        if self.mode == "plain":
            self._write(f"#{vertex.number} {vertex.elapsed:.3f} {line}\n")
        elif self.mode == "tty":
            self._redraw()

    def _status(self, vertex: Vertex, text: str) -> None:
        if self.mode == "plain":
            self._write(f"#{vertex.number} {text}\n")
        elif self.mode == "tty":
            self._permanent(f" => => {text}")

    def _finish(self, vertex: Vertex, message: str) -> None:
        if self.mode == "plain":
            if vertex.state == "cached":
                self._write(f"#{vertex.number} CACHED\n")
            elif vertex.state == "done":
                self._write(f"#{vertex.number} DONE {vertex.elapsed:.1f}s\n")
            else:
                self._write(f"#{vertex.number} ERROR: {message}\n")
        elif self.mode == "tty":
            label = {"cached": "CACHED ", "error": "ERROR ", "done": ""}[vertex.state]
            timing = "" if vertex.state == "cached" else f"  {vertex.elapsed:.1f}s"
            self._permanent(f" => {label}{vertex.name}{timing}")

    # --- terminal drawing ------------------------------------------------------------------------

    def _permanent(self, line: str) -> None:
        self._clear()
        self._write(line + "\n")
        self._redraw(force=True)

    def _clear(self) -> None:
        if self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < _REDRAW_EVERY:
            return
        self._last_draw = now
        self._clear()
        running = [v for v in self.vertices if v.finished is None]
        lines = [f"[+] Building {now - self.started:.1f}s ({len(self.vertices) - len(running)}/"
                 f"{len(self.vertices)})"]
        for vertex in running[-4:]:
            lines.append(f" => {vertex.name}  {vertex.elapsed:.1f}s")
            if vertex.tail:
                lines.append(f" => > {vertex.tail[-1][:120]}")
        self._write("".join(line + "\n" for line in lines))
        self._drawn = len(lines)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
