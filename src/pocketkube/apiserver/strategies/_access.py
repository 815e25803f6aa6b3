"""Reading decoded objects defensively: a field the client left out, or sent as null, reads as empty."""

from __future__ import annotations

from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int | None:
    """An integer field's value; None when unset (or not an integer: the decoder already refused those)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return as_dict(obj.get("spec"))


def name_of(obj: dict[str, Any]) -> str:
    return as_str(as_dict(obj.get("metadata")).get("name"))
