"""Where COPY and ADD read from: the build context (a directory seen through .dockerignore) or the root
filesystem of a stage or image. Resolves a source path or glob to entries, walks them, and checksums
them for the build cache (content, type, mode, ownership and link targets; never mtimes)."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.patterns import PatternMatcher, read_ignore_file
from pocketkube.engine.paths import resolve_in_root

_GLOB_CHARS = re.compile(r"[*?\[]")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceEntry:
    """One resolved source: ``path`` on the host, ``name`` its path relative to the source root."""

    path: Path
    name: str

    @property
    def is_dir(self) -> bool:
        return self.path.is_dir() and not self.path.is_symlink()


class SourceTree:
    """A directory tree files are copied from. ``matcher`` hides paths (the build context's
    .dockerignore); ``keep_owner`` says whether copies keep the files' uid/gid (stages and images)
    or become root's (the build context, as with Docker)."""

    def __init__(self, root: Path, matcher: PatternMatcher | None = None, *, keep_owner: bool) -> None:
        self.root = root
        self.matcher = matcher
        self.keep_owner = keep_owner

    def visible(self, relative: str) -> bool:
        return self.matcher is None or not self.matcher.excluded(relative)

    def resolve(self, source: str) -> list[SourceEntry]:
        """The entries a COPY source names: a path (its last symlink followed, inside the tree) or a glob
        (which may match nothing). A missing path is an error."""
        relative = posixpath.normpath("/" + source).lstrip("/") or "."
        if not _GLOB_CHARS.search(relative):
            target = resolve_in_root(self.root, relative)
            if relative == "." or (os.path.lexists(target) and self._visible_path(target)):
                return [SourceEntry(target, relative)]
            raise BuildError(f'failed to compute cache key: failed to calculate checksum of ref: '
                             f'"/{relative}": not found')
        return [SourceEntry(resolve_in_root(self.root, name), name) for name in self._glob(relative)]

    def walk(self, entry: SourceEntry) -> Iterator[tuple[Path, str, os.stat_result]]:
        """The entry and, for a directory, everything visible below it, parents first and in name order:
        (host path, path relative to the entry ("" for the entry itself), lstat)."""
        yield entry.path, "", os.lstat(entry.path)
        if entry.is_dir:
            yield from self._walk_dir(entry.path, "", self._relative(entry.path))

    def _walk_dir(self, directory: Path, prefix: str, base: str) -> Iterator[tuple[Path, str, os.stat_result]]:
        with os.scandir(directory) as scan:
            children = sorted(scan, key=lambda child: child.name)
        for child in children:
            name = posixpath.join(prefix, child.name)
            st = child.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            relative = posixpath.join(base, name) if base != "." else name
            # a `!` exception may bring back something below an excluded directory
            if not self.visible(relative) and not (is_dir and self._has_visible(Path(child.path), relative)):
                continue
            yield Path(child.path), name, st
            if is_dir:
                yield from self._walk_dir(Path(child.path), name, base)

    def checksum(self, entries: list[SourceEntry]) -> str:
        """The cache identity of what ``entries`` hold."""
        digest = hashlib.sha256()
        for entry in entries:
            digest.update(f"source {entry.name}\0".encode())
            for path, name, st in self.walk(entry):
                digest.update(_describe(path, name, st).encode())
                if stat.S_ISREG(st.st_mode):
                    digest.update(_file_digest(path))
        return "sha256:" + digest.hexdigest()

    def _relative(self, path: Path) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def _visible_path(self, path: Path) -> bool:
        relative = self._relative(path)
        if relative.startswith(".."):
            return False
        return self.visible(relative) or (path.is_dir() and self._has_visible(path, relative))

    def _has_visible(self, directory: Path, relative: str) -> bool:
        """Whether an excluded directory holds something a `!` pattern brings back."""
        if self.matcher is None or not self.matcher.has_exclusions:
            return False
        for current, dirs, files in os.walk(directory):
            base = posixpath.join(relative, os.path.relpath(current, directory).replace(os.sep, "/"))
            for name in dirs + files:
                if self.visible(posixpath.normpath(posixpath.join(base, name))):
                    return True
        return False

    def _glob(self, pattern: str) -> list[str]:
        """Relative paths matching ``pattern`` component by component (Go's filepath.Match rules)."""
        matches = [""]
        for part in pattern.split("/"):
            following = []
            for prefix in matches:
                directory = resolve_in_root(self.root, prefix) if prefix else self.root
                if not directory.is_dir():
                    continue
                if not _GLOB_CHARS.search(part):
                    candidates = [part] if os.path.lexists(directory / part) else []
                else:
                    regex = _component_regex(part)
                    candidates = sorted(name for name in os.listdir(directory) if regex.fullmatch(name))
                following += [posixpath.join(prefix, name) for name in candidates]
            matches = following
        return [name for name in matches if self._visible_path(resolve_in_root(self.root, name))]


def load_context(directory: Path, dockerfile: Path | None) -> SourceTree:
    """The build context: ``directory`` seen through ``<Dockerfile>.dockerignore`` (next to the
    Dockerfile, BuildKit's rule) or else its own .dockerignore."""
    if not directory.is_dir():
        raise BuildError(f"unable to prepare context: path {str(directory)!r} not found or not a directory")
    ignore_file = directory / ".dockerignore"
    if dockerfile is not None:
        specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
        if specific.is_file():
            ignore_file = specific
    try:
        matcher = PatternMatcher(read_ignore_file(ignore_file))
    except ValueError as err:
        raise BuildError(f"failed to parse {ignore_file.name}: {err}") from None
    return SourceTree(directory.resolve(), matcher, keep_owner=False)


def check_inside_context(instruction: str, source: str) -> None:
    """Sources that climb out of the context fail as they do with Docker."""
    if posixpath.normpath(source).startswith("../") or posixpath.normpath(source) == "..":
        raise BuildError(f"{instruction} failed: forbidden path outside the build context: {source} ()")


def _component_regex(part: str) -> re.Pattern[str]:
    """One path component of a Go filepath.Match pattern as a regex (fnmatch, minus its differences)."""
    translated = fnmatch.translate(part.replace("[^", "[!"))
    return re.compile(translated)


def _describe(path: Path, name: str, st: os.stat_result) -> str:
    kind = stat.S_IFMT(st.st_mode)
    text = f"{name}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}\0{st.st_gid}\0"
    if stat.S_ISLNK(st.st_mode):
        text += os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        text += f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
    elif stat.S_ISREG(st.st_mode):
        text += str(st.st_size)
    return text + "\0"


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()
