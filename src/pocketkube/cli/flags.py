"""Flag values in the syntax of upstream's components (spf13/pflag on Go's parsers), with pflag's errors.

`pocketkube controller-manager` takes kube-controller-manager's flags by their upstream names; their values
parse as there: a duration flag as Go's time.ParseDuration ("40s", "1m0s", "1h30m", "1.5h", "500ms"), an
int32 flag as strconv.ParseInt(s, 0, 32) ("12500", "0x30d4", "1_000"). A bad value raises ValueError with
the message pflag prints: invalid argument "abc" for "--node-monitor-grace-period" flag: time: invalid
duration "abc".
"""

from __future__ import annotations

import re

_NANOS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}
_MAX_INT64 = 2**63 - 1
_NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
_UNIT = re.compile(r"[^0-9.]*")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _quote(text: str) -> str:
    """Go's %q of a string, for the ASCII text flags hold."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_go_duration(text: str) -> int:
    """time.ParseDuration: a signed sequence of decimal numbers, each with a unit (ns, us/µs, ms, s, m, h),
    or "0"; in nanoseconds. ValueError carries Go's message."""
    invalid = ValueError(f"time: invalid duration {_quote(text)}")
    body, negative = text, False
    if body[:1] in ("+", "-"):
        negative, body = body[0] == "-", body[1:]
    if body == "0":
        return 0
    if not body:
        raise invalid
    total = 0
    while body:
        number = _NUMBER.match(body)
        assert number is not None  # both parts may be empty
        whole, fraction = number.group(1), number.group(2)
        if not whole and not fraction:  # no digits before a unit, or a lone "."
            raise invalid
        body = body[number.end():]
        unit_match = _UNIT.match(body)
        unit = unit_match.group() if unit_match else ""
        if not unit:
            raise ValueError(f"time: missing unit in duration {_quote(text)}")
        if unit not in _NANOS:
            raise ValueError(f"time: unknown unit {_quote(unit)} in duration {_quote(text)}")
        body = body[len(unit):]
        size = _NANOS[unit]
        total += int(whole or "0") * size
        if fraction:
            total += int(fraction) * size // 10 ** len(fraction)
        if total > _MAX_INT64:
            raise invalid
    return -total if negative else total


def duration_flag(flag: str, text: str, *, allow_negative: bool = False) -> float:
    """A duration flag's value in seconds. Negative durations parse in Go, but no period here means
    anything by them, so they are refused unless allowed."""
    try:
        nanos = parse_go_duration(text)
    except ValueError as err:
        raise ValueError(f"invalid argument {_quote(text)} for {_quote(flag)} flag: {err}") from None
    if nanos < 0 and not allow_negative:
        raise ValueError(f"invalid argument {_quote(text)} for {_quote(flag)} flag: must not be negative")
    return nanos / 1e9


def int32_flag(flag: str, text: str) -> int:
    """An int32 flag's value: strconv.ParseInt(text, 0, 32), so 0x/0o/0b prefixes, a leading 0 for octal
    and underscores between digits are accepted as in Go."""
    body = text[1:] if text[:1] in ("+", "-") else text
    value: int | None = None
    # Python's int() would also take surrounding blanks and non-ASCII digits: Go takes neither.
    if body[:1].isdigit() and body.isascii() and body == body.strip():
        try:
            if len(body) > 1 and body[0] == "0" and body[1] not in "xXoObB":
                value = int(body, 8)  # "0755": Go's base 0 reads a leading zero as octal
            else:
                value = int(body, 0)
        except ValueError:
            value = None
    if value is None:
        raise ValueError(f"invalid argument {_quote(text)} for {_quote(flag)} flag: strconv.ParseInt: parsing "
                         f"{_quote(text)}: invalid syntax")
    value = -value if text.startswith("-") else value
    if not INT32_MIN <= value <= INT32_MAX:
        raise ValueError(f"invalid argument {_quote(text)} for {_quote(flag)} flag: strconv.ParseInt: parsing "
                         f"{_quote(text)}: value out of range")
    return value


def go_duration(seconds: float) -> str:
    """time.Duration's String() of a period in seconds, as a flag value: 40s, 1m0s, 1.5s, 500ms."""
    from pocketkube.apiserver.protobuf import go_duration as format_nanos

    return format_nanos(round(seconds * 1e9))
