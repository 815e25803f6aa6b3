"""The engine test environment: a data directory and the CLI run against it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pocketkube.engine.engine import Engine
from pocketkube.engine.images.busybox import busybox_rootfs_tar

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


def make_busybox_rootfs(root: Path) -> Path:
    """A plain busybox root filesystem directory (the files of the busybox base image), for tests that
    drive the runtimes directly with their own bundles."""
    data = io.BytesIO()
    busybox_rootfs_tar(data)
    data.seek(0)
    root.mkdir(parents=True)
    with tarfile.open(fileobj=data) as tar:
        tar.extractall(root, filter="tar")
    return root
