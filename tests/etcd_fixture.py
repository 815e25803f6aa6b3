"""Start a real, throwaway etcd on 127.0.0.1 for tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator

_STARTUP_TIMEOUT = 20.0


def etcd_binary() -> str:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)
    if found is None:
        raise RuntimeError("etcd is not installed (tests need it): run scripts/install-deps.sh")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=1) as resp:
            return b'"health":"true"' in resp.read()
    except OSError:
        return False


@contextlib.contextmanager
def running_etcd() -> Iterator[str]:
    """Run a single-member etcd in a temporary data dir; yields its client URL."""
    binary = etcd_binary()
    data_dir = tempfile.mkdtemp(prefix="pocketkube-etcd-")
    client_url = f"http://127.0.0.1:{_free_port()}"
    peer_url = f"http://127.0.0.1:{_free_port()}"
    log_path = os.path.join(data_dir, "etcd.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                "--name", "test",
                "--data-dir", os.path.join(data_dir, "data"),
                "--listen-client-urls", client_url,
                "--advertise-client-urls", client_url,
                "--listen-peer-urls", peer_url,
                "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"test={peer_url}",
                "--initial-cluster-state", "new",
                "--logger", "zap",
                "--log-outputs", "stderr",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not _healthy(client_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as f:
                    tail = f.read()[-3000:]
                raise RuntimeError(f"etcd did not become healthy at {client_url}:\n{tail}")
            time.sleep(0.05)
        yield client_url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
