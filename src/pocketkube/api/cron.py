"""Cron schedules as upstream reads them (robfig/cron's standard parser), evaluated with cronsim.

Five fields with names, `?` and `N/step`, the @yearly...@hourly descriptors, `@every <duration>`, and an
optional `TZ=`/`CRON_TZ=` prefix. Shared by CronJob validation in the API server and the CronJob controller.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from cronsim import CronSim, CronSimError

_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                           "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (low, high, names) per field: minute, hour, day of month, month, day of week.
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = ((0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS),
                                                        (0, 6, _DAYS))
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")


class ScheduleError(ValueError):
    """A schedule robfig/cron would not parse (the message is the library's)."""


class Schedule(Protocol):
    def next(self, after: datetime) -> datetime | None:
        """The first activation strictly after `after` (whole seconds), or None if there is none."""


@dataclass(frozen=True)
class CronSchedule:
    expression: str  # five cronsim fields, normalized from robfig's syntax
    zone: tzinfo

    def next(self, after: datetime) -> datetime | None:
        try:
            return next(CronSim(self.expression, after.astimezone(self.zone))).astimezone(UTC)
        except (CronSimError, StopIteration):
            return None  # e.g. "0 0 31 2 *": grammatical but never due


@dataclass(frozen=True)
class EverySchedule:
    """robfig's ConstantDelaySchedule: `@every 90s` fires every 90 s counted from the last run."""

    seconds: int

    def next(self, after: datetime) -> datetime | None:
        return after.replace(microsecond=0) + timedelta(seconds=self.seconds)


def _parse_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ScheduleError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax')
    value = int(text)
    if value < 0:
        raise ScheduleError(f"negative number ({value}) not allowed: {text}")
    return value


def _normalize_field(text: str, low: int, high: int, names: dict[str, int]) -> tuple[str, bool]:
    """robfig getField: ranges as cronsim reads them, and whether the field carries the "star" bit
    (`*` or `?` without a step above 1) that makes day-of-month and day-of-week AND instead of OR."""
    parts: list[str] = []
    star = False
    for expr in (p for p in text.split(",") if p):
        range_and_step = expr.split("/")
        low_high = range_and_step[0].split("-")
        extra = False
        if low_high[0] in ("*", "?"):
            start, end, extra = low, high, True
        else:
            start = names.get(low_high[0].lower()) if names else None
            start = _parse_int(low_high[0]) if start is None else start
            if len(low_high) == 1:
                end = start
            elif len(low_high) == 2:
                named = names.get(low_high[1].lower()) if names else None
                end = _parse_int(low_high[1]) if named is None else named
            else:
                raise ScheduleError(f"too many hyphens: {expr}")
        step = 1
        if len(range_and_step) == 2:
            step = _parse_int(range_and_step[1])
            if len(low_high) == 1:
                end = high  # "N/step" means "N-max/step"
            if step > 1:
                extra = False
        elif len(range_and_step) > 2:
            raise ScheduleError(f"too many slashes: {expr}")
        if start < low:
            raise ScheduleError(f"beginning of range ({start}) below minimum ({low}): {expr}")
        if end > high:
            raise ScheduleError(f"end of range ({end}) above maximum ({high}): {expr}")
        if start > end:
            raise ScheduleError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
        if step == 0:
            raise ScheduleError(f"step of range should be a positive number: {expr}")
        if step > 1:
            parts.append(f"{start}-{end}/{step}")
        else:
            parts.append(str(start) if start == end else f"{start}-{end}")
        star = star or extra
    if not parts:
        raise ScheduleError(f"empty field: {text!r}")
    return ",".join(parts), star


def parse_go_duration(text: str) -> float:
    """time.ParseDuration for what `@every` takes: "1h30m", "90s", "1.5h", "500ms"."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos or match.group(1) in ("", "."):
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ScheduleError(f'failed to parse duration {text}: time: invalid duration "{text}"')
    return -total if text.startswith("-") else total


def local_zone() -> tzinfo:
    """time.Local as Go finds it: $TZ, else /etc/localtime, else UTC."""
    name = os.environ.get("TZ")
    try:
        if name:
            return zoneinfo.ZoneInfo(name.lstrip(":"))
        with open("/etc/localtime", "rb") as data:
            return zoneinfo.ZoneInfo.from_file(data)
    except (OSError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        return UTC


def parse_schedule(spec: str, time_zone: str | None = None) -> Schedule:
    """cron.ParseStandard of the schedule, in `time_zone` (None: the controller's local zone)."""
    text = spec.strip()
    zone: tzinfo = zoneinfo.ZoneInfo(time_zone) if time_zone else local_zone()
    if text.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, text = text.partition(" ")
        try:
            zone = zoneinfo.ZoneInfo(prefix.split("=", 1)[1])
        except (ValueError, zoneinfo.ZoneInfoNotFoundError) as err:
            raise ScheduleError(f"provided bad location {prefix.split('=', 1)[1]}: {err}") from err
        text = text.strip()
    if text.startswith("@"):
        if text.startswith("@every "):
            seconds = max(int(parse_go_duration(text[len("@every "):].strip())), 1)
            return EverySchedule(seconds)
        if text not in _DESCRIPTORS:
            raise ScheduleError(f"unrecognized descriptor: {text}")
        text = _DESCRIPTORS[text]
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    normalized = []
    for expr, (low, high, names) in zip(fields, _FIELDS, strict=True):
        value, star = _normalize_field(expr, low, high, names)
        # A starred field covers its whole range, and cronsim ANDs the day fields only when one of
        # them starts with "*": writing "*" exactly for robfig's star bit keeps both rules.
        normalized.append("*" if star else value)
    return CronSchedule(" ".join(normalized), zone)
