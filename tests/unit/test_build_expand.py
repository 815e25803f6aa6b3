"""Dockerfile variable expansion and word splitting (BuildKit's shell lexer rules)."""

from __future__ import annotations

import pytest

from pocketkube.engine.build.expand import ExpansionError, ShellLex

ENV = {"A": "hello", "EMPTY": "", "P": "/usr/local/bin/tool.tar.gz", "SPACED": "a b"}


@pytest.mark.parametrize("word, expected", [
    ("$A", "hello"),
    ("${A}x", "hellox"),
    ("$UNSET", ""),
    ("${EMPTY:-default}", "default"),
    ("${EMPTY-default}", ""),
    ("${UNSET-default}", "default"),
    ("${A:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET:-$A world}", "hello world"),
    ('"$A world"', "hello world"),
    ("'$A'", "$A"),
    ("a\\ b", "a b"),
    ("\\$A", "$A"),
    ('"a\\"b"', 'a"b'),
    ('"a\\nb"', "a\\nb"),
    ("${P##*/}", "tool.tar.gz"),
    ("${P#*/}", "usr/local/bin/tool.tar.gz"),
    ("${P%.*}", "/usr/local/bin/tool.tar"),
    ("${P%%.*}", "/usr/local/bin/tool"),
    ("${A/l/L}", "heLlo"),
    ("${A//l/L}", "heLLo"),
    ("$", "$"),
    ("${A:?must be set}", "hello"),
])
def test_process_word(word: str, expected: str) -> None:
    assert ShellLex().process_word(word, ENV) == expected


def test_words_split_after_expansion_but_not_inside_quotes() -> None:
    lex = ShellLex()
    assert lex.process_words("$SPACED c", ENV) == ["a", "b", "c"]
    assert lex.process_words('"$SPACED" c', ENV) == ["a b", "c"]
    assert lex.process_words("  x   y ", ENV) == ["x", "y"]


def test_backtick_escape_directive() -> None:
    lex = ShellLex("`")
    assert lex.process_word("C:\\dir `$A", ENV) == "C:\\dir $A"


def test_heredoc_bodies_keep_their_quotes() -> None:
    lex = ShellLex(process_quotes=False)
    assert lex.process_word("say '$A' \"$A\"", ENV) == "say 'hello' \"hello\""


@pytest.mark.parametrize("word, message", [
    ("${UNSET:?must be set}", "UNSET: must be set"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${A", "missing '}'"),
    ('"open', "matching double-quote"),
    ("'open", "matching single-quote"),
    ("${}", "bad substitution"),
    ("${A:x}", "unsupported modifier (:x)"),
])
def test_errors(word: str, message: str) -> None:
    with pytest.raises(ExpansionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ShellLex().process_word(word, ENV)
