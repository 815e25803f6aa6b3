""".dockerignore: reading the file and matching paths with Docker's rules (moby/patternmatcher).

Patterns are Go filepath.Match patterns (`*` and `?` never cross a `/`, `[...]` classes, `\\` escapes)
plus `**`, which matches any number of directories (zero included). A pattern excludes a path when it
matches the path or one of its parent directories; a `!` pattern re-includes what it matches; the last
pattern that matches decides.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

_REGEX_SPECIAL = set(".+()|{}$")


class PatternError(ValueError):
    pass


@dataclass
class _Pattern:
    text: str
    exclusion: bool
    kind: str = ""  # "exact", "prefix", "suffix" or "regex"
    regex: re.Pattern[str] | None = None

    def compile(self) -> None:
        source = "^"
        kind = "exact"
        text = self.text
        pos = iteration = 0
        while pos < len(text):
            ch = text[pos]
            pos += 1
            if ch == "*":
                if pos < len(text) and text[pos] == "*":
                    pos += 1
                    if pos < len(text) and text[pos] == "/":
                        pos += 1  # "**/" is "**"
                    if pos >= len(text):  # a trailing "**" takes everything, as in .gitignore
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            source += ".*"
                            kind = "regex"
                    else:
                        source += "(.*/)?"
                        kind = "regex"
                    if iteration == 0:
                        kind = "suffix"
                else:
                    source += "[^/]*"
                    kind = "regex"
            elif ch == "?":
                source += "[^/]"
                kind = "regex"
            elif ch in _REGEX_SPECIAL:
                source += "\\" + ch
            elif ch == "\\":
                if pos >= len(text):
                    raise PatternError(f"syntax error in pattern {self.text!r}: trailing backslash")
                source += "\\" + text[pos]
                pos += 1
                kind = "regex"
            elif ch in "[]":
                source += ch
                kind = "regex"
            else:
                source += ch
            iteration += 1
        self.kind = kind
        if kind == "regex":
            try:
                self.regex = re.compile(source + "$", re.DOTALL)
            except re.error as err:
                raise PatternError(f"syntax error in pattern {self.text!r}: {err}") from None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None


class PatternMatcher:
    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[_Pattern] = []
        for text in patterns:
            text = text.strip()
            if not text:
                continue
            text = posixpath.normpath(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise PatternError('illegal exclusion pattern: "!"')
                text = text[1:]
            pattern = _Pattern(text, exclusion)
            pattern.compile()
            self.patterns.append(pattern)

    @property
    def has_exclusions(self) -> bool:
        """Whether some `!` pattern may bring back a path below an excluded directory."""
        return any(pattern.exclusion for pattern in self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether the relative, slash-separated ``path`` is left out of the build context."""
        path = posixpath.normpath(path)
        if path == ".":
            return False  # the context root itself is never left out
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # only an inclusion can exclude, only an exception can bring back
            hit = pattern.match(path)
            if not hit:
                hit = any(pattern.match("/".join(parents[:i + 1])) for i in range(len(parents)))
            if hit:
                matched = not pattern.exclusion
        return matched


def read_ignore_file(path: Path) -> list[str]:
    """The patterns of a .dockerignore: comments and blank lines dropped, paths cleaned and made relative
    to the context (a leading '/' means the context root)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    patterns = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = posixpath.normpath(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns
