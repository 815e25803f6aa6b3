"""What every printer shares: the Printer record, column definitions and upstream's formatting helpers.

The helpers mirror the Go functions upstream's printers call (duration.HumanDuration, labels.FormatLabels,
metav1.FormatLabelSelector, layoutContainerCells, ...), so cells come out character for character alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pocketkube.apiserver.printers.docs import DOCS

Obj = dict[str, Any]
Cell = str | int | bool
CellsFn = Callable[[Obj, datetime], list[Cell]]

NONE = "<none>"
UNSET = "<unset>"
UNKNOWN = "<unknown>"


@dataclass(frozen=True)
class Printer:
    """One kind's table: its columns, the function producing a row's cells, and optional row conditions."""

    columns: tuple[Obj, ...]
    cells: CellsFn
    conditions: Callable[[Obj], list[Obj]] | None = None


def column(name: str, type_: str, description: str, *, fmt: str = "", priority: int = 0) -> Obj:
    """A metav1.TableColumnDefinition; every field is serialized, as Go has no omitempty on them."""
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


# Columns nearly every kind shares.
NAME = column("Name", "string", DOCS["meta/v1.ObjectMeta.name"], fmt="name")
AGE = column("Age", "string", DOCS["meta/v1.ObjectMeta.creationTimestamp"])
CONTAINERS = column("Containers", "string", "Names of each container in the template.", priority=1)
IMAGES = column("Images", "string", "Images referenced by each container in the template.", priority=1)


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def name(obj: Obj) -> str:
    return meta(obj).get("name", "")


def dig(obj: Obj | None, *path: str) -> Any:
    """obj[path[0]][path[1]]...; None as soon as a step is missing or null."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


# --- time --------------------------------------------------------------------------------------

def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 (metav1.Time) or micro-precision (metav1.MicroTime) timestamp; None for Go's zero time."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(d: timedelta) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration: a short, rounded-down human form of d."""
    # Go converts float seconds to int by truncating toward zero, hence int() rather than floor.
    seconds = int(d.total_seconds())
    # Up to 2 s (excluded) in the future counts as now, to tolerate clock skew between machines.
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def ago(t: datetime | None, now: datetime) -> str:
    """translateTimestampSince: the age of a time, or <unknown> for Go's zero time."""
    return UNKNOWN if t is None else human_duration(now - t)


def since(value: str | None, now: datetime) -> str:
    """translateTimestampSince on a serialized timestamp."""
    return ago(parse_time(value), now)


def age(obj: Obj, now: datetime) -> str:
    return since(meta(obj).get("creationTimestamp"), now)


# --- labels and selectors ----------------------------------------------------------------------

def format_labels(labels: dict[str, str] | None) -> str:
    """labels.FormatLabels: sorted k=v pairs, or <none>."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels)) if labels else NONE


_SELECTOR_OPS = {"In": " in ", "NotIn": " notin ", "Exists": "", "DoesNotExist": ""}


def selector_string(selector: Obj | None) -> str:
    """metav1.LabelSelectorAsSelector(selector).String(); ValueError where upstream returns an error.

    A nil selector selects nothing and an empty one everything; both print as "".
    """
    if not selector:
        return ""
    reqs: list[tuple[str, str]] = [(k, f"{k}={v}") for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
        if op not in _SELECTOR_OPS:
            raise ValueError(f"{op!r} is not a valid label selector operator")
        if op in ("In", "NotIn"):
            if not values:
                raise ValueError("for 'in', 'notin' operators, values set can't be empty")
            reqs.append((key, f"{key}{_SELECTOR_OPS[op]}({','.join(sorted(values))})"))
        elif values:
            raise ValueError("values set must be empty for exists and does not exist")
        else:
            reqs.append((key, key if op == "Exists" else f"!{key}"))
    reqs.sort(key=lambda r: r[0])  # Selector.Add sorts requirements by key
    return ",".join(text for _, text in reqs)


def format_label_selector(selector: Obj | None) -> str:
    """metav1.FormatLabelSelector: the selector string, <none> when empty, <error> when invalid."""
    try:
        return selector_string(selector) or NONE
    except ValueError:
        return "<error>"


# --- small value formatters --------------------------------------------------------------------

def container_cells(containers: Iterable[Obj] | None) -> list[Cell]:
    """layoutContainerCells: container names and images, each comma-joined on one line."""
    containers = list(containers or [])
    return [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)]


def bool_ptr(value: bool | None) -> str:
    """printBoolPtr: True/False, or <unset> for a nil pointer."""
    if value is None:
        return UNSET
    return "True" if value else "False"


def quantity(value: str | int | float | None, *, nil: str = "0") -> str:
    """A resource.Quantity as printed, assuming the stored string is already in canonical form.

    A missing value is a zero Quantity ("0") or a nil *Quantity ("<nil>"), as the Go field is.
    """
    return nil if value is None else str(value)


def list_with_more(shown: list[str], count: int, limit: int) -> str:
    """listWithMoreString: at most `limit` items, then "+ N more...", or <unset> when empty."""
    text = ",".join(shown)
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or UNSET


def join_host_port(host: str, port: int) -> str:
    """net.JoinHostPort: IPv6 literals get brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
