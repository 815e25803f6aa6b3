"""Image config values as Dockerfile instructions write them: environment lists, exposed ports, health
checks (Go durations), stop signals, and the Go-style text BuildKit puts in history entries."""

from __future__ import annotations

import copy
import json
import re
import signal
from datetime import UTC, datetime

from pocketkube.engine.runtime.spec import DEFAULT_PATH

HISTORY_COMMENT = "buildkit.dockerfile.v0"
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_PORT = re.compile(r"(\d+)(?:-(\d+))?(?:/([a-zA-Z]+))?")


def empty_image(platform: tuple[str, ...]) -> dict:
    """What FROM scratch starts with (BuildKit's): PATH set, working directory /."""
    os_name, architecture, *variant = platform
    document = {"architecture": architecture, "os": os_name, "config": {"Env": [f"PATH={DEFAULT_PATH}"],
                                                                         "WorkingDir": "/"}}
    if variant:
        document["variant"] = variant[0]
    return document


def base_document(config: dict) -> dict:
    """An image's config document as the start of a stage: no rootfs (the export writes it); its ONBUILD
    triggers run now and are not inherited."""
    document = copy.deepcopy({k: v for k, v in config.items() if k not in ("rootfs", "created")})
    document.setdefault("config", {})
    document["config"].pop("OnBuild", None)
    return document


def env_dict(env: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        result[key] = value
    return result


def set_env(env: list[str], key: str, value: str) -> list[str]:
    """The list with KEY=value replaced in place, or appended."""
    entry = f"{key}={value}"
    for index, existing in enumerate(env):
        if existing.partition("=")[0] == key:
            return env[:index] + [entry] + env[index + 1:]
    return [*env, entry]


def parse_duration(text: str) -> int:
    """A Go duration ("1m30s", "500ms", "0") in nanoseconds."""
    if text in ("0", "+0", "-0"):
        return 0
    if not text:
        raise ValueError('time: invalid duration ""')
    position, total = 0, 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise ValueError(f"time: invalid duration {json.dumps(text)}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return int(total)


def format_duration(nanoseconds: int) -> str:
    """Go's time.Duration.String() for whole seconds and simple fractions: "30s", "1m30s", "500ms"."""
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanoseconds >= size:
                return f"{nanoseconds / size:g}{unit}"
    hours, rest = divmod(nanoseconds, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = f"{rest / 1_000_000_000:g}s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def port_specs(words: list[str]) -> list[str]:
    """EXPOSE arguments as ExposedPorts keys: "80" → "80/tcp", ranges expanded."""
    specs = []
    for word in words:
        match = _PORT.fullmatch(word)
        if match is None:
            raise ValueError(f"invalid containerPort: {word}")
        first, last, protocol = int(match.group(1)), int(match.group(2) or match.group(1)), \
            (match.group(3) or "tcp").lower()
        if protocol not in ("tcp", "udp", "sctp"):
            raise ValueError(f"invalid proto: {protocol}")
        if last < first or last > 65535:
            raise ValueError(f"invalid range specified for containerPort: {word}")
        specs += [f"{port}/{protocol}" for port in range(first, last + 1)]
    return specs


def check_signal(text: str) -> None:
    """STOPSIGNAL takes a signal name (SIGTERM, TERM) or number."""
    if text.isdigit():
        if not 0 < int(text) < 65:
            raise ValueError(f"Invalid signal: {text}")
        return
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in signal.Signals.__members__ and not re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name):
        raise ValueError(f"Invalid signal: {text}")


def go_quoted_list(values: list[str]) -> str:
    """Go's %q of a []string, as BuildKit writes CMD and ENTRYPOINT history: ["a" "b"]."""
    return "[" + " ".join(json.dumps(value, ensure_ascii=False) for value in values) + "]"


def go_list(values: list[str]) -> str:
    """Go's %v of a []string: [a b]."""
    return "[" + " ".join(values) + "]"


def healthcheck_text(health: dict) -> str:
    """Go's %+v of the health check struct, BuildKit's history text."""
    return (f"HEALTHCHECK &{{Test:{go_list(health['Test'])} Interval:{format_duration(health.get('Interval', 0))} "
            f"Timeout:{format_duration(health.get('Timeout', 0))} "
            f"StartPeriod:{format_duration(health.get('StartPeriod', 0))} "
            f"StartInterval:{format_duration(health.get('StartInterval', 0))} Retries:{health.get('Retries', 0)}}}")


def timestamp(seconds: float | None = None) -> str:
    """RFC 3339 with nanoseconds' worth of precision, as image configs carry."""
    moment = datetime.fromtimestamp(seconds, UTC) if seconds is not None else datetime.now(UTC)
    return moment.isoformat().replace("+00:00", "Z")
