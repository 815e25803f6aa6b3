"""Docker's output conventions: human durations and sizes, aligned tables and `--format` Go templates."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: float) -> str:
    """go-units HumanSize: decimal units, four significant digits ("4.26MB", "1.2kB", "0B")."""
    unit = 0
    while size >= 1000 and unit < len(_DECIMAL_UNITS) - 1:
        size /= 1000
        unit += 1
    return f"{size:.4g}{_DECIMAL_UNITS[unit]}"


def bytes_size(size: float) -> str:
    """go-units BytesSize: binary units, as `docker stats` shows memory ("1.5MiB")."""
    unit = 0
    while size >= 1024 and unit < len(_BINARY_UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{size:.4g}{_BINARY_UNITS[unit]}"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, the wording of `Up 3 minutes` and `2 hours ago`."""
    seconds = int(seconds)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def ago(timestamp: float, now: float | None = None) -> str:
    return human_duration((now or time.time()) - timestamp) + " ago"


def rfc3339(timestamp: float, nano: bool = True) -> str:
    """Docker's timestamps: UTC with nanoseconds ("2026-11-22T03:43:56.828189807Z"); zero is Go's zero time."""
    if not timestamp:
        return "0001-01-01T00:00:00Z"
    whole = int(timestamp)
    base = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if not nano:
        return base + "Z"
    fraction = f"{timestamp - whole:.9f}"[2:]
    return f"{base}.{fraction}Z"


_UNIT_FACTORS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "p": 1024 ** 5}


def parse_bytes(text: str) -> int:
    """Docker's RAMInBytes: `512m`, `1g`, `100k`, `1.5GB`, plain bytes; binary multiples."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtTpPbB]?)(?:[iI]?[bB])?\s*", text)
    if not match:
        raise ValueError(f"invalid size: '{text}'")
    return int(float(match.group(1)) * _UNIT_FACTORS[match.group(2).lower()])


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded like Go's tabwriter with Docker's settings (min width, padding 3)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


# --- Go templates: the subset people use with --format -----------------------------------------------

class TemplateError(ValueError):
    pass


_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


def _lookup(value: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict):
            if part not in value:
                raise TemplateError(f'template: :1: map has no entry for key "{part}"')
            value = value[part]
        else:
            try:
                value = getattr(value, part)
            except AttributeError:
                raise TemplateError(f"template: :1: can't evaluate field {part}") from None
    return value


def _render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<no value>"
    if isinstance(value, (dict, list)):
        if isinstance(value, list):
            return "[" + " ".join(_render_value(v) for v in value) + "]"
        return "map[" + " ".join(f"{k}:{_render_value(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": lambda v: json.dumps(v, separators=(",", ":")),
    "upper": lambda v: str(v).upper(),
    "lower": lambda v: str(v).lower(),
    "title": lambda v: str(v).title(),
    "join": lambda v, sep: sep.join(str(x) for x in v),
    "len": lambda v: len(v),
    "println": lambda *v: " ".join(_render_value(x) for x in v) + "\n",
}


def _evaluate(expression: str, data: Any) -> Any:
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\S+', expression)
    if not tokens:
        raise TemplateError("template: :1: missing value for command")

    def term(token: str) -> Any:
        if token.startswith('"'):
            return json.loads(token)
        if token.startswith("."):
            return _lookup(data, token)
        if token.isdigit():
            return int(token)
        raise TemplateError(f'template: :1: function "{token}" not defined')

    head, *rest = tokens
    if head in _FUNCTIONS:
        return _FUNCTIONS[head](*[term(t) for t in rest])
    if rest:
        raise TemplateError(f"template: :1: can't give argument to non-function {head}")
    return term(head)


def render_template(template: str, data: Any) -> str:
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    out = []
    position = 0
    for match in _ACTION.finditer(template):
        out.append(template[position:match.start()])
        out.append(_render_value(_evaluate(match.group(1), data)))
        position = match.end()
    out.append(template[position:])
    return "".join(out)


def format_rows(template: str, rows: Sequence[dict], headers: dict[str, str]) -> str:
    """`--format` for list commands: "table ..." prints a header row and aligns columns; a plain template
    prints one line per row; "json" prints each row as JSON."""
    if template == "json":
        return "\n".join(json.dumps(row, separators=(",", ":")) for row in rows)
    if template.startswith("table"):
        body = template[len("table"):].strip() or "\t".join("{{." + key + "}}" for key in headers)
        body = body.replace("\\t", "\t")
        header_row = _ACTION.sub(lambda m: headers.get(m.group(1).lstrip("."), m.group(1).lstrip(".").upper()),
                                 body)
        lines = [render_template(body, row) for row in rows]
        return table(header_row.split("\t"), [line.split("\t") for line in lines])
    return "\n".join(render_template(template, row) for row in rows)
