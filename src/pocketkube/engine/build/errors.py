"""What a failed build reports: the message, and where in the Dockerfile it comes from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Location:
    """Lines of the Dockerfile (1-based, inclusive) an instruction spans."""

    start: int
    end: int


class BuildError(RuntimeError):
    """A build that cannot go on. ``location`` points at the instruction to blame, ``step`` names the
    progress step that failed and ``logs`` are its last output lines."""

    def __init__(self, message: str, *, location: Location | None = None, step: str = "",
                 logs: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.step = step
        self.logs = list(logs or [])

    def at(self, location: Location | None) -> BuildError:
        """This error, pointing at ``location`` unless it already points somewhere."""
        if self.location is None:
            self.location = location
        return self


@dataclass
class ErrorReport:
    """What the CLI prints for a failed build (BuildKit's layout)."""

    message: str
    dockerfile_name: str = "Dockerfile"
    lines: list[str] = field(default_factory=list)
    location: Location | None = None
    step: str = ""
    logs: list[str] = field(default_factory=list)

    def render(self) -> str:
        out: list[str] = []
        if self.step:
            out += ["------", f" > {self.step}:"] + [f"{line}" for line in self.logs[-10:]] + ["------"]
        if self.location is not None and self.lines:
            out.append(f"{self.dockerfile_name}:{_span(self.location)}")
            out.append("-" * 20)
            first = max(1, self.location.start - 2)
            last = min(len(self.lines), self.location.end + 2)
            for number in range(first, last + 1):
                marker = ">>>" if self.location.start <= number <= self.location.end else "   "
                out.append(f" {number:>3} | {marker} {self.lines[number - 1]}".rstrip())
            out.append("-" * 20)
        out.append(f"ERROR: failed to solve: {self.message}")
        return "\n".join(out) + "\n"


def _span(location: Location) -> str:
    if location.start == location.end:
        return str(location.start)
    return f"{location.start}-{location.end}"
