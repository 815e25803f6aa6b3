"""Table printing of custom resources: additionalPrinterColumns evaluated with (simple) JSONPath.

As apiextensions-apiserver's tableconvertor: a Name column, then one column per printer column (the
defaulted Age column when a version declares none). ``string`` cells print the value as Go's fmt does,
other types convert the JSON value (cellForJSONValue); ``date`` cells are human durations.

Supported JSONPath: ``.a.b``, ``['key']``, ``[0]``, ``[*]`` and filters ``[?(@.type=="Ready")]``.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any

import orjson

from pocketkube.api.kinds import ResourceInfo
from pocketkube.apiserver.printers.base import NAME, Obj, Printer, human_duration, name, parse_time

_TOKEN = re.compile(r"""\.\.?([A-Za-z0-9_\-/]+)|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]|\[\s*(-?\d+)\s*\]|\[\s*\*\s*\]"""
                    r"""|\[\?\(\s*@\.([A-Za-z0-9_.\-]+)\s*(==|!=)\s*(?:"([^"]*)"|'([^']*)'|(-?[\d.]+|true|false))\s*\)\]"""
                    r"""|\.\*""")


@functools.lru_cache(maxsize=1024)
def _parse(path: str) -> tuple[tuple[str, Any], ...]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"unrecognized JSONPath {path!r}")
        field, quoted1, quoted2, index, fkey, op, fstr1, fstr2, fraw = m.groups()
        token = m.group(0)
        if field is not None:
            steps.append(("field", field))
        elif quoted1 is not None or quoted2 is not None:
            steps.append(("field", quoted1 if quoted1 is not None else quoted2))
        elif index is not None:
            steps.append(("index", int(index)))
        elif fkey is not None:
            if fraw is not None:
                literal: Any = orjson.loads(fraw)
            else:
                literal = fstr1 if fstr1 is not None else fstr2
            steps.append(("filter", (fkey, op, literal)))
        elif token.endswith("*") or token.endswith("*]"):
            steps.append(("all", None))
        pos = m.end()
    return tuple(steps)


def evaluate(path: str, obj: Any) -> list[Any]:
    """Every value ``path`` selects in ``obj`` (missing keys select nothing, as AllowMissingKeys)."""
    try:
        steps = _parse(path)
    except ValueError:
        return []
    current = [obj]
    for kind, arg in steps:
        nxt: list[Any] = []
        for value in current:
            if kind == "field":
                if isinstance(value, dict) and arg in value:
                    nxt.append(value[arg])
            elif kind == "index":
                if isinstance(value, list) and -len(value) <= arg < len(value):
                    nxt.append(value[arg])
            elif kind == "all":
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value[k] for k in sorted(value))
            elif kind == "filter" and isinstance(value, list):
                key, op, literal = arg
                for item in value:
                    found = evaluate("." + key, item)
                    if found and (found[0] == literal) == (op == "=="):
                        nxt.append(item)
        current = nxt
    return current


def go_format(value: Any) -> str:
    """fmt.Sprint of a decoded JSON value (what jsonpath's PrintResults writes)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        text = repr(value)
        return re.sub(r"e([+-]?)0*(\d\d)", lambda m: f"e{m.group(1) or '+'}{m.group(2)}", text)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _cell(column_type: str, value: Any, now: datetime) -> Any:
    """cellForJSONValue, plus the string columns' printing."""
    if value is None:
        return None
    if column_type == "string":
        return go_format(value)
    if column_type == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if column_type == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        try:
            created = parse_time(value)
        except ValueError:
            return "<invalid>"
        return human_duration(now - created) if created else "<unknown>"
    return None


@functools.lru_cache(maxsize=256)
def printer_for(info: ResourceInfo) -> Printer:
    """The Table printer of one custom resource version."""
    assert info.custom is not None
    columns = [c for c in orjson.loads(info.custom.columns_json) if isinstance(c, dict)]
    definitions = [NAME] + [{
        "name": str(c.get("name") or ""), "type": str(c.get("type") or ""), "format": str(c.get("format") or ""),
        "description": str(c.get("description") or
                           f"Custom resource definition column (in JSONPath format): {c.get('jsonPath', '')}"),
        "priority": int(c.get("priority") or 0),
    } for c in columns]
    paths = [(str(c.get("jsonPath") or ""), str(c.get("type") or "")) for c in columns]

    def cells(obj: Obj, now: datetime) -> list[Any]:
        row: list[Any] = [name(obj)]
        for path, column_type in paths:
            found = evaluate(path, obj)
            row.append(_cell(column_type, found[0], now) if found else None)
        return row

    return Printer(tuple(definitions), cells)
