"""The engine test environment: a data directory and the CLI run against it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pocketkube.engine.engine import Engine

POCKETKUBE = [sys.executable, "-m", "pocketkube.cli.main"]


@dataclass
class EngineEnv:
    data_dir: Path
    settings: dict

    def engine(self) -> Engine:
        return Engine(self.data_dir)

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess:
        """Runs `pocketkube ARGS` against this data directory, as a user would."""
        env = dict(os.environ, POCKETKUBE_DATA_DIR=str(self.data_dir))
        result = subprocess.run([*POCKETKUBE, *args], input=input, capture_output=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"pocketkube {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.decode(errors='replace')}")
        return result

    def out(self, *args: str, **kw) -> str:
        return self.cli(*args, check=True, **kw).stdout.decode()
