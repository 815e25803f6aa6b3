"""Engine settings kept in DATA_DIR/engine.json, the role Docker's daemon.json plays: every process that
opens the data directory (CLI, server, conmon's exit command) then agrees on them.

    {"runtime": "crun", "cgroup-parent": "/pocketkube", "bridge": "pk0", "subnet": "10.88.0.0/16",
     "snapshotter": "overlay", "cgroup-favordynmods": "on"}

cgroup-favordynmods "on" lets the engine turn on the host's cgroup2 option that makes moving a process into
a cgroup cheap (runtime/favordynmods.py); "off" leaves the host's setting alone.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path

SETTINGS_FILE = "engine.json"


class SettingsError(ValueError):
    pass


@dataclass
class EngineSettings:
    runtime: str = "auto"
    snapshotter: str = "auto"
    cgroup_parent: str = "/pocketkube"
    bridge: str = "pk0"
    subnet: str = "10.88.0.0/16"
    cgroup_favordynmods: str = "on"

    @classmethod
    def load(cls, data_dir: Path) -> EngineSettings:
        path = data_dir / SETTINGS_FILE
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except ValueError as err:
            raise SettingsError(f"{path}: invalid JSON: {err}") from None
        if not isinstance(document, dict):
            raise SettingsError(f"{path}: expected a JSON object")
        settings = cls()
        for key, value in document.items():
            attribute = key.replace("-", "_")
            if attribute not in cls.__dataclass_fields__ or not isinstance(value, str):
                raise SettingsError(f"{path}: unknown or non-string setting {key!r}")
            setattr(settings, attribute, value)
        settings.validate(path)
        return settings

    def validate(self, source: Path) -> None:
        if self.runtime not in ("auto", "runc", "crun"):
            raise SettingsError(f"{source}: runtime must be auto, runc or crun")
        if self.snapshotter not in ("auto", "overlay", "copy"):
            raise SettingsError(f"{source}: snapshotter must be auto, overlay or copy")
        if self.cgroup_favordynmods not in ("on", "off"):
            raise SettingsError(f"{source}: cgroup-favordynmods must be on or off")
        if not self.cgroup_parent.startswith("/"):
            raise SettingsError(f"{source}: cgroup-parent must be an absolute cgroup path")
        if not re.fullmatch(r"[a-zA-Z0-9_.-]{1,15}", self.bridge):
            raise SettingsError(f"{source}: bridge must be a network interface name (at most 15 characters)")
        try:
            ipaddress.ip_network(self.subnet)
        except ValueError as err:
            raise SettingsError(f"{source}: subnet: {err}") from None
