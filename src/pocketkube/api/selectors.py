"""Label and field selectors, ported from k8s.io/apimachinery pkg/labels and pkg/fields.

Parse errors carry upstream's exact wording; the API server returns them as 400 BadRequest
(e.g. ``unable to parse requirement: found '', expected: identifier``).

Selector semantics, as upstream:

* ``LabelSelector.parse("")`` and ``LabelSelector.from_dict({})`` are *everything* (empty,
  matches every object);
* ``LabelSelector.from_dict(None)`` is *nothing* (a nil ``*metav1.LabelSelector``: matches no
  object, and is not empty).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pocketkube.api.errors import Cause
from pocketkube.api.validation import (
    cause_text,
    child,
    forbidden,
    go_quote,
    invalid_value,
    is_label_value,
    is_qualified_name,
    not_supported,
    required,
    validate_label_name,
    validate_labels,
)

# selection.Operator values.
IN = "in"
NOT_IN = "notin"
EQUALS = "="
DOUBLE_EQUALS = "=="
NOT_EQUALS = "!="
EXISTS = "exists"
DOES_NOT_EXIST = "!"
GREATER_THAN = "gt"
LESS_THAN = "lt"

_BINARY_OPERATORS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)
_VALID_OPERATORS = _BINARY_OPERATORS + (EXISTS, DOES_NOT_EXIST)

# metav1.LabelSelectorOperator -> selection.Operator.
_METAV1_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_GO_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)


class SelectorError(ValueError):
    """A selector that cannot be parsed or is not supported; ``message`` is upstream's text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _parse_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64): no whitespace, no underscores, int64 range."""
    if _GO_INT_RE.fullmatch(text) is None:
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def _aggregate(causes: list[Cause]) -> str:
    """field.ErrorList.ToAggregate().Error(): de-duplicated, bracketed when more than one."""
    seen: list[str] = []
    for text in map(cause_text, causes):
        if text not in seen:
            seen.append(text)
    return seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"


# --------------------------------------------------------------------------------------------
# Label selectors.

@dataclass(frozen=True)
class Requirement:
    """One ``key op values`` term; build it with :func:`new_requirement` to get validation."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if op in (NOT_IN, NOT_EQUALS):
            return self.key not in labels or labels[self.key] not in self.values
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        if op in (GREATER_THAN, LESS_THAN):
            if self.key not in labels or len(self.values) != 1:
                return False
            have, want = _parse_int64(labels[self.key]), _parse_int64(self.values[0])
            if have is None or want is None:
                return False
            return have > want if op == GREATER_THAN else have < want
        return False

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        symbol = {EQUALS: "=", DOUBLE_EQUALS: "==", NOT_EQUALS: "!=", IN: " in ", NOT_IN: " notin ",
                  GREATER_THAN: ">", LESS_THAN: "<"}.get(op, "")
        # Values print sorted (without changing the stored order), as upstream's safeSort.
        values = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if op in (IN, NOT_IN):
            values = f"({values})"
        return f"{self.key}{symbol}{values}"


def new_requirement(key: str, operator: str, values: Sequence[str] | None,
                    path: str | None = None) -> Requirement:
    """labels.NewRequirement: validates and raises SelectorError with upstream's aggregate text.

    ``values=None`` stands for a nil Go slice (rendered ``null`` in messages); ``path`` prefixes
    the field paths in messages (``None`` as upstream's default nil path).
    """
    vals = list(values) if values is not None else None
    count = len(vals) if vals is not None else 0
    errs: list[Cause] = []
    key_problems = is_qualified_name(key)
    if key_problems:
        errs.append(invalid_value(child(path, "key"), key, "; ".join(key_problems)))
    values_path = child(path, "values")
    if operator in (IN, NOT_IN):
        if count == 0:
            errs.append(invalid_value(values_path, vals, "for 'in', 'notin' operators, values set can't be empty"))
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if count != 1:
            errs.append(invalid_value(values_path, vals, "exact-match compatibility requires one single value"))
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if count != 0:
            errs.append(invalid_value(values_path, vals, "values set must be empty for exists and does not exist"))
    elif operator in (GREATER_THAN, LESS_THAN):
        if count != 1:
            errs.append(invalid_value(values_path, vals, "for 'Gt', 'Lt' operators, exactly one value is required"))
        for i, v in enumerate(vals or []):
            if _parse_int64(v) is None:
                errs.append(invalid_value(f"{values_path}[{i}]", v,
                                          "for 'Gt', 'Lt' operators, the value must be an integer"))
    else:
        errs.append(not_supported(child(path, "operator"), operator, _VALID_OPERATORS))
    for i, v in enumerate(vals or []):
        problems = is_label_value(v)
        if problems:
            errs.append(invalid_value(f"{values_path}[{i}][{key}]", v, "; ".join(problems)))
    if errs:
        raise SelectorError(_aggregate(errs))
    return Requirement(key, operator, tuple(vals or ()))


# Lexer tokens.
_ERROR, _EOS, _CLOSE_PAR, _COMMA, _NOT, _DOUBLE_EQ, _EQ, _GT, _IDENT, _IN, _LT, _NOT_EQ, _NOT_IN, _OPEN_PAR = \
    range(14)

_STRING_TO_TOKEN = {")": _CLOSE_PAR, ",": _COMMA, "!": _NOT, "==": _DOUBLE_EQ, "=": _EQ, ">": _GT,
                    "in": _IN, "<": _LT, "!=": _NOT_EQ, "notin": _NOT_IN, "(": _OPEN_PAR}
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")


def _lex(text: str) -> list[tuple[int, str]]:
    """The label selector lexer: identifiers/keywords and greedy special-symbol operators."""
    items: list[tuple[int, str]] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= end:
            items.append((_EOS, ""))
            return items
        if text[pos] in _SPECIAL:
            # Longest run of special characters that is still a known token ("!=" over "!").
            buffer, last = "", None
            while pos < end and text[pos] in _SPECIAL:
                buffer += text[pos]
                if buffer in _STRING_TO_TOKEN:
                    last = (_STRING_TO_TOKEN[buffer], buffer)
                elif last is not None:
                    break
                pos += 1
            items.append(last if last is not None else (_ERROR, f"error expected: keyword found '{buffer}'"))
        else:
            start = pos
            while pos < end and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
                pos += 1
            word = text[start:pos]
            items.append((_STRING_TO_TOKEN.get(word, _IDENT), word))


class _Parser:
    """Recursive-descent parser over the scanned tokens (labels.Parser)."""

    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.position = 0

    def lookahead(self, values: bool) -> tuple[int, str]:
        tok, lit = self.items[self.position]
        # Inside values 'in' and 'notin' are plain identifiers ("x in (in)").
        return (_IDENT if values and tok in (_IN, _NOT_IN) else tok), lit

    def consume(self, values: bool) -> tuple[int, str]:
        result = self.lookahead(values)
        self.position += 1
        return result

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self.lookahead(True)
            if tok in (_IDENT, _NOT):
                try:
                    requirements.append(self.parse_requirement())
                except SelectorError as e:
                    raise SelectorError(f"unable to parse requirement: {e.message}") from None
                tok, lit = self.consume(True)
                if tok == _EOS:
                    return requirements
                if tok != _COMMA:
                    raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
                tok2, lit2 = self.lookahead(True)
                if tok2 not in (_IDENT, _NOT):
                    raise SelectorError(f"found '{lit2}', expected: identifier after ','")
            elif tok == _EOS:
                return requirements
            else:
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def parse_requirement(self) -> Requirement:
        key, operator = self.parse_key_and_infer_operator()
        if operator in (EXISTS, DOES_NOT_EXIST):
            return new_requirement(key, operator, [])
        operator = self.parse_operator()
        values = self.parse_values() if operator in (IN, NOT_IN) else self.parse_exact_value()
        return new_requirement(key, operator, sorted(values))

    def parse_key_and_infer_operator(self) -> tuple[str, str]:
        operator = ""
        tok, lit = self.consume(True)
        if tok == _NOT:
            operator = DOES_NOT_EXIST
            tok, lit = self.consume(True)
        if tok != _IDENT:
            raise SelectorError(f"found '{lit}', expected: identifier")
        problems = is_qualified_name(lit)
        if problems:
            # Upstream validates with a nil field path here, which prints as "<nil>".
            raise SelectorError(cause_text(invalid_value("<nil>", lit, "; ".join(problems))))
        if self.lookahead(True)[0] in (_EOS, _COMMA) and operator != DOES_NOT_EXIST:
            operator = EXISTS
        return lit, operator

    def parse_operator(self) -> str:
        tok, lit = self.consume(False)
        operator = {_IN: IN, _EQ: EQUALS, _DOUBLE_EQ: DOUBLE_EQUALS, _GT: GREATER_THAN, _LT: LESS_THAN,
                    _NOT_IN: NOT_IN, _NOT_EQ: NOT_EQUALS}.get(tok)
        if operator is None:
            raise SelectorError(f"found '{lit}', expected: {', '.join(_BINARY_OPERATORS)}")
        return operator

    def parse_values(self) -> set[str]:
        tok, lit = self.consume(True)
        if tok != _OPEN_PAR:
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead(True)
        if tok in (_IDENT, _COMMA):
            values = self.parse_identifiers_list()
            if self.consume(True)[0] != _CLOSE_PAR:
                raise SelectorError(f"found '{lit}', expected: ')'")
            return values
        if tok == _CLOSE_PAR:  # "()" means the single empty value
            self.consume(True)
            return {""}
        raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")

    def parse_identifiers_list(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, lit = self.consume(True)
            if tok == _IDENT:
                values.add(lit)
                tok2, lit2 = self.lookahead(True)
                if tok2 == _COMMA:
                    continue
                if tok2 == _CLOSE_PAR:
                    return values
                raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if tok == _COMMA:
                # Empty slots ("(,a", "a,,b", "a,)") stand for the empty value.
                if not values:
                    values.add("")
                tok2 = self.lookahead(True)[0]
                if tok2 in (_CLOSE_PAR, _COMMA):
                    values.add("")
                if tok2 == _CLOSE_PAR:
                    return values
                continue
            raise SelectorError(f"found '{lit}', expected: ',', or identifier")

    def parse_exact_value(self) -> set[str]:
        if self.lookahead(True)[0] in (_EOS, _COMMA):
            return {""}
        tok, lit = self.consume(True)
        if tok == _IDENT:
            return {lit}
        raise SelectorError(f"found '{lit}', expected: identifier")


class LabelSelector:
    """An AND of requirements, kept sorted by key like upstream's internalSelector."""

    def __init__(self, requirements: Iterable[Requirement] = (), *, nothing: bool = False) -> None:
        self._requirements = tuple(sorted(requirements, key=lambda r: r.key))
        self._nothing = nothing

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(nothing=True)

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """labels.Parse: the ``labelSelector`` query string syntax."""
        return cls(_Parser(text).parse())

    @classmethod
    def from_set(cls, labels: Mapping[str, str]) -> LabelSelector:
        """labels.SelectorFromSet: equality on every pair (no validation, as upstream)."""
        return cls(Requirement(k, EQUALS, (v,)) for k, v in labels.items())

    @classmethod
    def from_dict(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """metav1.LabelSelectorAsSelector: None matches nothing, ``{}`` matches everything."""
        if selector is None:
            return cls.nothing()
        match_labels = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
        if not match_labels and not expressions:
            return cls.everything()
        requirements = [new_requirement(k, EQUALS, [v]) for k, v in match_labels.items()]
        for expr in expressions:
            operator = expr.get("operator", "")
            if operator not in _METAV1_OPERATORS:
                raise SelectorError(f"{go_quote(str(operator))} is not a valid label selector operator")
            requirements.append(new_requirement(expr.get("key", ""), _METAV1_OPERATORS[operator],
                                                list(expr.get("values") or []) or None))
        return cls(requirements)

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        return self._requirements

    @property
    def empty(self) -> bool:
        """True when the selector does not restrict anything (never for ``nothing()``)."""
        return not self._nothing and not self._requirements

    @property
    def matches_nothing(self) -> bool:
        return self._nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self._nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self._requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The single value ``key`` must have (``key=v``, ``key==v``, ``key in (v)``), if any."""
        for r in self._requirements:
            if r.key == key:
                if r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return "" if self._nothing else ",".join(str(r) for r in self._requirements)

    def __repr__(self) -> str:
        return "LabelSelector.nothing()" if self._nothing else f"LabelSelector.parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSelector):
            return NotImplemented
        return (self._nothing, self._requirements) == (other._nothing, other._requirements)

    def __hash__(self) -> int:
        return hash((self._nothing, self._requirements))


def validate_label_selector(selector: Mapping[str, Any] | None, path: str, *,
                            allow_invalid_label_value: bool = False) -> list[Cause]:
    """metav1 validation.ValidateLabelSelector: 422 causes for a metav1.LabelSelector object.

    ``allow_invalid_label_value`` is upstream's escape hatch for updates of objects that
    already stored invalid values.
    """
    if selector is None:
        return []
    errs = validate_labels(selector.get("matchLabels"), child(path, "matchLabels"))
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        expr_path = f"{child(path, 'matchExpressions')}[{i}]"
        operator = expr.get("operator", "")
        values = list(expr.get("values") or [])
        if operator in ("In", "NotIn"):
            if not values:
                errs.append(required(f"{expr_path}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errs.append(forbidden(f"{expr_path}.values",
                                      "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            errs.append(invalid_value(f"{expr_path}.operator", operator, "not a valid selector operator"))
        errs.extend(validate_label_name(expr.get("key", ""), f"{expr_path}.key"))
        if not allow_invalid_label_value:
            for j, value in enumerate(values):
                errs.extend(invalid_value(f"{expr_path}.values[{j}]", value, msg) for msg in is_label_value(value))
    return errs


# --------------------------------------------------------------------------------------------
# Field selectors.

def escape_field_value(value: str) -> str:
    """fields.EscapeValue: backslash-escape '\\', ',' and '='."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def unescape_field_value(value: str) -> str:
    """fields.UnescapeValue; raises SelectorError on a bad escape or a bare ',' / '='."""
    if not any(c in value for c in "\\,="):
        return value
    out: list[str] = []
    in_slash = False
    for c in value:
        if in_slash:
            if c not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c in ",=":
            # Upstream formats the rune with %v, i.e. as its code point number.
            raise SelectorError(f"invalid field selector: unescaped character in value: {ord(c)}")
        else:
            out.append(c)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not backslash-escaped."""
    if not text:
        return []
    terms: list[str] = []
    start, in_slash = 0, False
    for i, c in enumerate(text):
        if in_slash:
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    """The leftmost operator wins; at one position '!=' and '==' are tried before '='."""
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


FieldGetter = Callable[[Mapping[str, Any]], str]


class FieldSelector:
    """fields.Selector: an AND of ``field=value`` / ``field!=value`` terms."""

    def __init__(self, requirements: Iterable[tuple[str, str, str]] = ()) -> None:
        self._requirements = [(f, EQUALS if op == DOUBLE_EQUALS else op, v) for f, op, v in requirements]

    @classmethod
    def everything(cls) -> FieldSelector:
        return cls()

    @classmethod
    def parse(cls, text: str) -> FieldSelector:
        """fields.ParseSelector: terms are sorted, empty terms skipped, values unescaped."""
        requirements: list[tuple[str, str, str]] = []
        for part in sorted(_split_terms(text)):
            if not part:
                continue
            split = _split_term(part)
            if split is None:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
            field, op, raw = split
            requirements.append((field, NOT_EQUALS if op == NOT_EQUALS else EQUALS, unescape_field_value(raw)))
        return cls(requirements)

    @property
    def requirements(self) -> list[tuple[str, str, str]]:
        """``(field, operator, value)`` with operator ``"="`` or ``"!="`` (``==`` folds to ``=``)."""
        return list(self._requirements)

    @property
    def empty(self) -> bool:
        return not self._requirements

    def check_supported(self, fields: Iterable[str]) -> None:
        """Raise like the API server's field-label conversion for a field the kind lacks."""
        supported = set(fields)
        for field, _, _ in self._requirements:
            if field not in supported:
                raise SelectorError(f"field label not supported: {field}")

    def exact_match(self, field: str) -> str | None:
        """RequiresExactMatch: the value an ``=`` term pins ``field`` to (e.g. metadata.name)."""
        for f, op, value in self._requirements:
            if f == field and op == EQUALS:
                return value
        return None

    def matches(self, getters: Mapping[str, FieldGetter], obj: Mapping[str, Any]) -> bool:
        """Evaluate against ``obj``; a field without a getter reads as "" (fields.Set.Get)."""
        for field, op, value in self._requirements:
            getter = getters.get(field)
            actual = getter(obj) if getter is not None else ""
            if (actual == value) != (op == EQUALS):
                return False
        return True

    def __str__(self) -> str:
        return ",".join(f"{f}{op}{escape_field_value(v)}" for f, op, v in self._requirements)

    def __repr__(self) -> str:
        return f"FieldSelector.parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSelector):
            return NotImplemented
        return self._requirements == other._requirements

    def __hash__(self) -> int:
        return hash(tuple(self._requirements))
