"""Variable expansion and shell-word splitting as the Dockerfile frontend does them (BuildKit's shell lexer).

Quotes are removed ('…' literal, "…" with $ expansion and \\ escaping only ", $ and the escape itself), the
escape character (\\ or ` by the `# escape` directive) makes the next character literal, and $VAR, ${VAR},
${VAR:-word}, ${VAR-word}, ${VAR:+word}, ${VAR+word}, ${VAR:?msg}, ${VAR?msg}, ${VAR#pat}, ${VAR##pat},
${VAR%pat}, ${VAR%%pat}, ${VAR/pat/repl} and ${VAR//pat/repl} are replaced. Unset variables expand to "".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SPECIAL_PARAMETERS = "@*#?-$!0"
_STAR, _ANY = object(), object()


class ExpansionError(ValueError):
    pass


class _Words:
    """Collects the words of a processed string: unquoted whitespace separates them."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_expanded(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def finish(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class ShellLex:
    """``process_quotes=False`` leaves quotes as they are (how COPY's heredoc bodies are expanded)."""

    def __init__(self, escape: str = "\\", *, process_quotes: bool = True) -> None:
        self.escape = escape
        self.process_quotes = process_quotes

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """The word with quotes removed and variables replaced; spaces stay as they are."""
        return _Scanner(word, env, self.escape, self.process_quotes).process()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """The same, then split into words at unquoted whitespace (after expansion)."""
        return _Scanner(word, env, self.escape, self.process_quotes).process()[1]


class _Scanner:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, process_quotes: bool) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.quotes = "'\"" if process_quotes else ""
        self.raw_escapes = False

    def process(self) -> tuple[str, list[str]]:
        try:
            return self._until(None, False)
        except ExpansionError as err:
            raise ExpansionError(f"failed to process {_go_quote(self.text)}: {err}") from None

    def _peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def _next(self) -> str | None:
        ch = self._peek()
        if ch is not None:
            self.pos += 1
        return ch

    def _until(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            result: list[str] = []
            words = _Words()
            while (ch := self._peek()) is not None:
                if stop is not None and ch == stop:
                    self.pos += 1
                    return "".join(result), words.finish()
                if ch == "$":
                    text = self._dollar()
                    result.append(text)
                    words.add_expanded(text)
                elif ch in self.quotes:
                    text = self._single_quoted() if ch == "'" else self._double_quoted()
                    result.append(text)
                    words.add_raw(text)
                else:
                    ch = self._next()
                    if ch == self.escape:
                        if self.raw_escapes:
                            words.add_raw(ch)
                            result.append(ch)
                        ch = self._next()
                        if ch is None:
                            break
                        words.add_raw(ch)
                    else:
                        words.add_char(ch)
                    result.append(ch)
            if stop is not None:
                raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.finish()
        finally:
            self.raw_escapes = saved

    def _single_quoted(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end < 0:
            raise ExpansionError("unexpected end of statement while looking for matching single-quote")
        text, self.pos = self.text[self.pos:end], end + 1
        return text

    def _double_quoted(self) -> str:
        self.pos += 1
        result: list[str] = []
        while True:
            ch = self._peek()
            if ch is None:
                raise ExpansionError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.pos += 1
                return "".join(result)
            if ch == "$":
                result.append(self._dollar())
                continue
            self.pos += 1
            if ch == self.escape:
                if self.raw_escapes:
                    result.append(ch)
                following = self._peek()
                if following is None:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self._next()
            result.append(ch)

    def _name(self) -> str:
        start = self.pos
        ch = self._peek()
        if ch is not None and ch.isdigit():
            while (ch := self._peek()) is not None and ch.isdigit():
                self.pos += 1
            return self.text[start:self.pos]
        if ch is not None and ch in _SPECIAL_PARAMETERS:
            self.pos += 1
            return ch
        while (ch := self._peek()) is not None and (ch.isalnum() or ch == "_"):
            self.pos += 1
        return self.text[start:self.pos]

    def _dollar(self) -> str:
        self.pos += 1
        if self._peek() != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self.pos += 1
        ch = self._peek()
        if ch is None:
            raise ExpansionError("syntax error: missing '}'")
        if ch in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self._name()
        ch = self._next()
        modifier = ch or ""
        if ch == "}":
            return self.env.get(name, "")
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self._next()
            modifier += ch or ""
        if ch is None:
            raise ExpansionError("syntax error: missing '}'")
        if ch in "+-?#%":
            word = self._word_until_brace(raw_escapes=ch in "#%")
            value = self.env.get(name)
            empty = value is None or (null_is_unset and value == "")
            if ch == "-":
                return word if empty else value
            if ch == "+":
                return "" if empty else word
            if ch == "?":
                if value is None:
                    raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
                if empty:
                    raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            greedy = word.startswith(ch)
            pattern = word[1:] if greedy else word
            return _trim(value or "", pattern, suffix=ch == "%", greedy=greedy)
        if ch == "/" and not null_is_unset:
            replace_all = self._peek() == "/"
            if replace_all:
                self.pos += 1
            pattern = self._word_until("/", "syntax error: missing '/' in ${}")
            replacement = self._word_until_brace(raw_escapes=True)
            return _replace(self.env.get(name, ""), pattern, replacement, replace_all)
        raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")

    def _word_until_brace(self, *, raw_escapes: bool) -> str:
        return self._word_until("}", "syntax error: missing '}'", raw_escapes=raw_escapes)

    def _word_until(self, stop: str, missing: str, *, raw_escapes: bool = True) -> str:
        try:
            return self._until(stop, raw_escapes)[0]
        except ExpansionError:
            if self._peek() is None:
                raise ExpansionError(missing) from None
            raise


def _pattern(pattern: str) -> list[object]:
    """A shell pattern as tokens: literal characters, _STAR (any run) and _ANY (one character)."""
    tokens: list[object] = []
    pos = 0
    while pos < len(pattern):
        ch = pattern[pos]
        pos += 1
        if ch == "*":
            tokens.append(_STAR)
        elif ch == "?":
            tokens.append(_ANY)
        elif ch == "\\":
            following = pattern[pos] if pos < len(pattern) else ""
            if following in ("}", "/"):
                continue  # escaped only to end the ${} part early; not part of the pattern
            if following not in ("*", "?", "\\"):
                raise ExpansionError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{following}'")
            tokens.append(following)
            pos += 1
        else:
            tokens.append(ch)
    return tokens


def _regex(tokens: list[object]) -> str:
    return "".join(".*" if t is _STAR else "." if t is _ANY else re.escape(str(t)) for t in tokens)


def _trim(value: str, pattern: str, *, suffix: bool, greedy: bool) -> str:
    """${VAR#pat}, ${VAR##pat} (prefix) and ${VAR%pat}, ${VAR%%pat} (suffix): remove the shortest (or,
    greedy, the longest) matching part."""
    regex = re.compile(_regex(_pattern(pattern)), re.DOTALL)
    cuts = range(len(value) + 1)
    if suffix:
        for cut in (cuts if greedy else reversed(cuts)):
            if regex.fullmatch(value, cut):
                return value[:cut]
        return value
    for cut in (reversed(cuts) if greedy else cuts):
        if regex.fullmatch(value[:cut]):
            return value[cut:]
    return value


def _replace(value: str, pattern: str, replacement: str, replace_all: bool) -> str:
    regex = re.compile(_regex(_pattern(pattern)), re.DOTALL)
    return regex.sub(lambda _: replacement, value, count=0 if replace_all else 1)


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
