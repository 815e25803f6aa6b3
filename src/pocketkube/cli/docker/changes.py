"""`import --change` instructions (CMD, ENV, WORKDIR, …) applied to an image config, as `docker import -c`."""

from __future__ import annotations

import json
import shlex


class ChangeError(ValueError):
    pass


def _command(value: str) -> list[str]:
    """JSON (exec) form, else the shell form that runs through /bin/sh -c."""
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return parsed
    return ["/bin/sh", "-c", value]


def _pairs(value: str) -> list[tuple[str, str]]:
    words = shlex.split(value)
    if len(words) == 2 and "=" not in words[0]:
        return [(words[0], words[1])]  # legacy `ENV KEY value`
    pairs = []
    for word in words:
        key, eq, val = word.partition("=")
        if not eq:
            raise ChangeError(f"{word}: expected KEY=VALUE")
        pairs.append((key, val))
    return pairs


def apply_changes(changes: list[str]) -> dict:
    """The image config fields the instructions set."""
    config: dict = {}
    for change in changes:
        instruction, _, value = change.strip().partition(" ")
        instruction, value = instruction.upper(), value.strip()
        if instruction == "CMD":
            config["Cmd"] = _command(value)
        elif instruction == "ENTRYPOINT":
            config["Entrypoint"] = _command(value)
        elif instruction == "ENV":
            env = {e.split("=", 1)[0]: e for e in config.get("Env", [])}
            env.update({k: f"{k}={v}" for k, v in _pairs(value)})
            config["Env"] = list(env.values())
        elif instruction == "LABEL":
            config.setdefault("Labels", {}).update(dict(_pairs(value)))
        elif instruction == "WORKDIR":
            config["WorkingDir"] = value
        elif instruction == "USER":
            config["User"] = value
        elif instruction == "EXPOSE":
            for port in value.split():
                config.setdefault("ExposedPorts", {})[port if "/" in port else f"{port}/tcp"] = {}
        elif instruction == "VOLUME":
            paths = _command(value) if value.startswith("[") else value.split()
            for path in paths:
                config.setdefault("Volumes", {})[path] = {}
        elif instruction == "STOPSIGNAL":
            config["StopSignal"] = value
        else:
            raise ChangeError(f"{instruction} is not a valid change command")
    return config
