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
from dataclasses import dataclass

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


@dataclass
class Member:
    name: str
    client_url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def running_etcd() -> Iterator[str]:
    """Run a single-member etcd in a temporary data dir; yields its client URL."""
    with running_etcd_cluster(1) as members:
        yield members[0].client_url


@contextlib.contextmanager
def running_etcd_cluster(size: int) -> Iterator[list[Member]]:
    """Run an etcd cluster of `size` members on 127.0.0.1 in a temporary data dir; yields its members
    (a test may kill one by its process)."""
    binary = etcd_binary()
    data_dir = tempfile.mkdtemp(prefix="pocketkube-etcd-")
    names = ["test"] if size == 1 else [f"m{i}" for i in range(size)]
    peers = {name: f"http://127.0.0.1:{_free_port()}" for name in names}
    initial_cluster = ",".join(f"{name}={url}" for name, url in peers.items())
    members: list[Member] = []
    try:
        for name in names:
            client_url = f"http://127.0.0.1:{_free_port()}"
            with open(os.path.join(data_dir, f"{name}.log"), "wb") as log:
                process = subprocess.Popen(
                    [binary, "--name", name, "--data-dir", os.path.join(data_dir, name),
                     "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                     "--listen-peer-urls", peers[name], "--initial-advertise-peer-urls", peers[name],
                     "--initial-cluster", initial_cluster, "--initial-cluster-state", "new",
                     "--logger", "zap", "--log-outputs", "stderr"],
                    stdout=log, stderr=subprocess.STDOUT)
            members.append(Member(name, client_url, process))
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        for member in members:
            while not _healthy(member.client_url):
                if member.process.poll() is not None or time.monotonic() > deadline:
                    with open(os.path.join(data_dir, f"{member.name}.log"), errors="replace") as f:
                        tail = f.read()[-3000:]
                    raise RuntimeError(f"etcd did not become healthy at {member.client_url}:\n{tail}")
                time.sleep(0.05)
        yield members
    finally:
        for member in members:
            if member.process.poll() is None:
                os.kill(member.process.pid, signal.SIGKILL)
            member.process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
