""".dockerignore matching with Docker's rules, and the build context seen through it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pocketkube.engine.build.context import SourceTree
from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.patterns import PatternError, PatternMatcher, read_ignore_file


@pytest.mark.parametrize("patterns, path, excluded", [
    (["*.md"], "README.md", True),
    (["*.md"], "docs/guide.md", False),            # * never crosses a /
    (["**/*.md"], "docs/deep/guide.md", True),
    (["**/*.md"], "guide.md", True),                # ** matches zero directories too
    (["docs"], "docs/guide.md", True),              # a matching parent excludes everything below
    (["docs/**"], "docs/a/b", True),
    (["**"], "anything/at/all", True),
    (["logs", "!logs/keep.log"], "logs/keep.log", False),
    (["logs", "!logs/keep.log"], "logs/other.log", True),
    (["*", "!src"], "src/main.go", False),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[a-c]x"], "bx", True),
    (["[^a-c]x"], "bx", False),
    (["**/node_modules"], "web/node_modules/x/index.js", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["tmp*"], "tmpdir/x", True),
    (["!*.md"], "README.md", False),
], ids=lambda value: str(value))
def test_matching(patterns: list[str], path: str, excluded: bool) -> None:
    assert PatternMatcher(patterns).excluded(path) is excluded


def test_last_matching_pattern_wins() -> None:
    matcher = PatternMatcher(["*.log", "!important.log", "important.log"])
    assert matcher.excluded("important.log")


def test_context_root_is_never_excluded() -> None:
    assert not PatternMatcher(["**"]).excluded(".")


def test_bad_patterns() -> None:
    with pytest.raises(PatternError):
        PatternMatcher(["!"])
    with pytest.raises(PatternError):
        PatternMatcher(["abc\\"])


def test_ignore_file_rules(tmp_path: Path) -> None:
    ignore = tmp_path / ".dockerignore"
    ignore.write_text("# a comment\n\n  /build/  \n!/build/keep\n./tmp/../cache\n  # not a comment\n")
    assert read_ignore_file(ignore) == ["build", "!build/keep", "cache", "# not a comment"]
    assert read_ignore_file(tmp_path / "missing") == []


def test_context_walk_and_exceptions_below_excluded_directories(tmp_path: Path) -> None:
    for name in ("logs/a.log", "logs/keep.log", "src/x.go", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    tree = SourceTree(tmp_path, PatternMatcher(["logs", "!logs/keep.log", "*.md"]), keep_owner=False)
    root = tree.resolve(".")[0]
    names = [name for _, name, _ in tree.walk(root)]
    assert names == ["", "logs", "logs/keep.log", "src", "src/x.go"]
    with pytest.raises(BuildError, match='"/README.md": not found'):
        tree.resolve("README.md")
    assert [entry.name for entry in tree.resolve("logs/*.log")] == ["logs/keep.log"]
    assert [entry.name for entry in tree.resolve("*")] == ["logs", "src"]


def test_checksum_follows_content_mode_and_owner_not_mtime(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("one")
    tree = SourceTree(tmp_path, None, keep_owner=True)
    first = tree.checksum(tree.resolve("f"))
    os.utime(tmp_path / "f", (1, 1))
    assert tree.checksum(tree.resolve("f")) == first
    (tmp_path / "f").chmod(0o600)
    assert tree.checksum(tree.resolve("f")) != first
    (tmp_path / "f").chmod(0o644)
    os.chown(tmp_path / "f", 1234, 1234)
    second = tree.checksum(tree.resolve("f"))
    assert second != first
    (tmp_path / "f").write_text("two")
    assert tree.checksum(tree.resolve("f")) != second
