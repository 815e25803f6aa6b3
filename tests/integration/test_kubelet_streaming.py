"""Logs, exec, attach, cp and port-forward end to end: the real kubectl (and the official Python client)
against a real API server, which proxies to a KubeletServer backed by real containers in one engine sandbox.

The kubelet core is not part of this: the test starts the pod's containers itself and maps
(namespace, pod, container) to engine ids in a small StreamingBackend; the Node and the Pod (bound to the node,
status Running) are written through the API so kubectl finds them."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import termios
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster, new_cluster
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.stream import portforward as k8s_portforward
from kubernetes.stream import stream as k8s_stream

from pocketkube.apiserver.kubeletproxy import kubelet_client_ssl_context
from pocketkube.apiserver.pki import KUBELET_CLIENT_USER, PKI
from pocketkube.cli.kubectl import find_kubectl
from pocketkube.engine.containers import ContainerConfig
from pocketkube.engine.engine import Engine
from pocketkube.engine.images.busybox import ensure_busybox_image
from pocketkube.engine.runtime import cgroups, conmon
from pocketkube.engine.streams import ExecStream
from pocketkube.kubelet.server import KubeletServer

NS = "default"
POD = "web"
NODE = "stream-node"
MAIN_SCRIPT = ("for i in 1 2 3 4 5; do echo line $i; done; echo to-stderr >&2; mkdir -p /www; "
               "echo hi-from-pod > /www/index.html; exec httpd -f -p 8080 -h /www")
ATTACH_SCRIPT = 'while read line; do echo "got $line"; done; echo bye'
# kubectl speaks WebSocket (exec: v5.channel.k8s.io; port-forward: SPDY tunnelled in a WebSocket) unless told
# to use its older SPDY clients.
EXEC_OVER_SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
PORT_FORWARD_OVER_SPDY = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


class LoopThread:
    """An event loop in a thread of its own: the kubelet serves there while tests block on kubectl."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kubelet-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class EngineBackend:
    """The StreamingBackend over one engine sandbox holding one pod's containers."""

    engine: Engine
    netns: str
    containers: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def container_id(self, namespace: str, pod: str, container: str | None) -> str:
        try:
            return self.containers[(namespace, pod, container or "main")]
        except KeyError:
            raise LookupError(f'container "{container}" not found in pod "{pod}"') from None

    def log_path(self, namespace: str, pod: str, container: str | None, previous: bool) -> Path:
        if previous:
            raise LookupError(f'previous terminated container "{container}" in pod "{pod}" not found')
        return self.engine.containers.load(self.container_id(namespace, pod, container)).log_path

    def container_running(self, container_id: str) -> bool:
        return self.engine.containers.load(container_id).running and \
            conmon.exit_status(self.engine.monitor_paths, container_id) is None

    async def exec(self, container_id: str, command: list[str], *, tty: bool, stdin: bool) -> ExecStream:
        return await self.engine.exec(container_id, command, tty=tty, stdin=stdin)

    async def attach(self, container_id: str) -> Any:
        return await self.engine.attach(container_id)

    def pod_netns(self, namespace: str, pod: str) -> str:
        if (namespace, pod) != (NS, POD):
            raise LookupError(f'pod "{pod}" not found')
        return self.netns


@dataclass
class Env:
    cluster: Cluster
    loop: LoopThread
    engine: Engine
    backend: EngineBackend
    sandbox: dict[str, str]
    kubelet_port: int
    scratch: Path

    def kubectl_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), **(extra or {})}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(find_kubectl()), *args], input=input, capture_output=True, text=True,
                                timeout=timeout, env=self.kubectl_env(env))
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
        return result

    def start_container(self, name: str, script: str, *, stdin: bool = False) -> str:
        async def start() -> str:
            container = await self.engine.create(ContainerConfig(
                image="busybox", command=["sh", "-c", script], stdin=stdin, network="sandbox",
                sandbox_namespaces=self.sandbox, manage_etc_files=False, cleanup_on_exit=False))
            await self.engine.start(container.id)
            return container.id

        cid = self.loop.run(start())
        self.backend.containers[(NS, POD, name)] = cid
        return cid


def _engine_dir(root: Path) -> Path:
    tag = secrets.token_hex(2)
    root.mkdir(parents=True, exist_ok=True)
    (root / "engine.json").write_text(json.dumps({"cgroup-parent": f"/pocketkube-test-{tag}", "bridge": f"pkt{tag}",
                                                  "subnet": f"10.251.{int(tag, 16) % 250}.0/24"}))
    return root


def _kubelet_tls(cluster: Cluster, directory: Path) -> ssl.SSLContext:
    cert, key = PKI.at(cluster.data_dir).issue_serving_cert(NODE, ["127.0.0.1"])
    (directory / "kubelet.crt").write_bytes(cert)
    (directory / "kubelet.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "kubelet.crt", directory / "kubelet.key")
    return context


def _register(cluster: Cluster, kubelet_port: int) -> None:
    def ok(response: Any) -> None:
        assert response.status < 300, response.body

    ok(cluster.request("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}))
    ok(cluster.request("PATCH", f"/api/v1/nodes/{NODE}/status", {"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}},
        content_type="application/merge-patch+json"))
    names = ("main", "sidecar", "ticker")
    containers = [{"name": n, "image": "busybox", **({"stdin": True} if n == "sidecar" else {})} for n in names]
    for pod, node in ((POD, NODE), ("pending", "")):
        ok(cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
            "spec": {"containers": containers if pod == POD else containers[:1],
                     **({"nodeName": node} if node else {})}}))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ok(cluster.request("PATCH", f"/api/v1/namespaces/{NS}/pods/{POD}/status", {"status": {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": n, "image": "busybox", "imageID": "", "ready": True, "restartCount": 0,
                               "state": {"running": {"startedAt": now}}} for n in names]}},
        content_type="application/merge-patch+json"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("streaming")
    # Every step undoes itself even when a later one (or another undo) fails.
    with contextlib.ExitStack() as undo:
        engine = Engine(_engine_dir(base / "node"))
        undo.callback(_assert_no_mounts_under, base, engine.run_root)
        undo.callback(shutil.rmtree, engine.run_root, ignore_errors=True)
        undo.callback(cgroups.remove, engine.cgroup_parent, kill=True)
        loop = LoopThread()
        undo.callback(loop.close)
        ensure_busybox_image(engine.images)
        sandbox_id = "sbx" + secrets.token_hex(4)
        pinned = engine.create_sandbox(sandbox_id, hostname=POD)
        undo.callback(engine.remove_sandbox, sandbox_id)
        undo.callback(lambda: loop.run(_remove_containers(engine)))
        sandbox = {"network": str(pinned["net"]), "ipc": str(pinned["ipc"]), "uts": str(pinned["uts"])}
        backend = EngineBackend(engine, str(pinned["net"]))
        cluster = new_cluster(extra_args=["--disable-controller-manager", "--disable-scheduler", "--disable-agent"])
        undo.callback(shutil.rmtree, cluster.data_dir, ignore_errors=True)
        undo.callback(cluster.stop)
        cluster.start()
        server = KubeletServer(backend, bind="127.0.0.1", port=0, ssl_context=_kubelet_tls(cluster, base),
                               client_ca_pem=PKI.at(cluster.data_dir).ca_cert.read_text(),
                               allowed_client_cns=[KUBELET_CLIENT_USER])
        loop.run(server.start())
        undo.callback(lambda: loop.run(server.stop()))
        environment = Env(cluster, loop, engine, backend, sandbox, server.port, base)
        environment.start_container("main", MAIN_SCRIPT)
        _register(cluster, server.port)
        _wait_for_http(environment)
        yield environment


async def _remove_containers(engine: Engine) -> None:
    failures = []
    for container in engine.containers.list():
        try:
            await engine.remove(container.id, force=True)
        except Exception as err:  # keep removing the others; report at the end
            failures.append(f"{container.name}: {err!r}")
    assert not failures, f"containers not removed: {failures}"


def _assert_no_mounts_under(*paths: Path) -> None:
    leftovers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                 if any(str(path) in line for path in paths)]
    assert not leftovers, f"mounts left behind: {leftovers}"


def _wait_for_http(env: Env) -> None:
    """The main container's httpd is up (its log is written before it starts)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        result = env.kubectl("exec", POD, "-c", "main", "--", "wget", "-q", "-O-", "http://127.0.0.1:8080/",
                             check=False)
        if result.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"httpd did not come up: {result.stderr}")


# --- logs ---------------------------------------------------------------------------------------------------


def test_logs(env: Env) -> None:
    out = env.kubectl("logs", POD, "-c", "main").stdout
    assert out == "line 1\nline 2\nline 3\nline 4\nline 5\nto-stderr\n"
    assert env.kubectl("logs", POD, "-c", "main", "--tail", "2").stdout == "line 5\nto-stderr\n"
    assert env.kubectl("logs", POD, "-c", "main", "--limit-bytes", "9").stdout == "line 1\nli"
    stamped = env.kubectl("logs", POD, "-c", "main", "--timestamps", "--tail", "1").stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z to-stderr\n", stamped), stamped
    assert env.kubectl("logs", POD, "-c", "main", "--since", "1h").stdout == out
    # without -c kubectl picks the first container
    assert env.kubectl("logs", POD).stdout == out


def test_logs_previous_and_bad_requests(env: Env) -> None:
    result = env.kubectl("logs", POD, "-c", "main", "--previous", check=False)
    assert result.returncode == 1
    assert 'previous terminated container "main" in pod "web" not found' in result.stderr
    response = env.cluster.request("GET", f"/api/v1/namespaces/{NS}/pods/{POD}/log")
    assert response.status == 400
    assert response.json()["message"] == \
        "a container name must be specified for pod web, choose one of: [main sidecar ticker]"
    response = env.cluster.request("GET", f"/api/v1/namespaces/{NS}/pods/{POD}/log?container=nope")
    assert (response.status, response.json()["message"]) == (400, "container nope is not valid for pod web")
    response = env.cluster.request("GET", f"/api/v1/namespaces/{NS}/pods/{POD}/log?container=main&tailLines=-1")
    assert response.status == 422 and response.json()["reason"] == "Invalid"
    # a pod on no node has no log yet: an empty one
    response = env.cluster.request("GET", f"/api/v1/namespaces/{NS}/pods/pending/log")
    assert (response.status, response.body) == (200, b"")


def test_logs_follow_until_the_container_exits(env: Env) -> None:
    env.start_container("ticker", "for i in 1 2 3 4; do echo tick $i; sleep 0.4; done")
    started = time.monotonic()
    result = env.kubectl("logs", "-f", POD, "-c", "ticker", timeout=20)
    assert result.stdout == "tick 1\ntick 2\ntick 3\ntick 4\n"
    assert 1.0 < time.monotonic() - started < 10  # it waited for the lines still to come, then ended


# --- exec ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_exec_outputs_and_exit_code(env: Env, transport: str) -> None:
    extra = EXEC_OVER_SPDY if transport == "spdy" else {}
    result = env.kubectl("exec", POD, "-c", "main", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                         check=False, env=extra)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "out\n"
    assert "err\n" in result.stderr and "command terminated with exit code 3" in result.stderr
    upper = env.kubectl("exec", "-i", POD, "-c", "main", "--", "tr", "a-z", "A-Z", input="hello\nworld\n",
                        env=extra)
    assert upper.stdout == "HELLO\nWORLD\n"


def test_exec_moves_megabytes_both_ways(env: Env) -> None:
    data = secrets.token_hex(1024 * 1024)  # 2 MiB of text in
    counted = env.kubectl("exec", "-i", POD, "-c", "main", "--", "wc", "-c", input=data)
    assert counted.stdout.strip() == str(len(data))
    out = env.kubectl("exec", POD, "-c", "main", "--", "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x")
    assert out.stdout == "x" * 3_000_000


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_exec_ends_when_the_client_leaves(env: Env, transport: str) -> None:
    """A killed kubectl takes its command with it (nobody is left to read the output)."""
    extra = EXEC_OVER_SPDY if transport == "spdy" else {}
    marker = "41" if transport == "spdy" else "42"
    process = subprocess.Popen([str(find_kubectl()), "exec", POD, "-c", "main", "--", "sleep", marker],
                               env=env.kubectl_env(extra))

    main = env.engine.containers.load(env.backend.container_id(NS, POD, "main"))

    def sleeping() -> bool:
        return any(_cmdline(pid) == ["sleep", marker] for pid in env.engine.processes(main))

    deadline = time.monotonic() + 20
    while not sleeping():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 20
    while sleeping():
        assert time.monotonic() < deadline, "the command outlived its client"
        time.sleep(0.05)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_exec_with_a_terminal(env: Env, transport: str) -> None:
    """kubectl sends the terminal's size (resize channel/stream); the command runs on a pty of that size."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    extra = EXEC_OVER_SPDY if transport == "spdy" else {}
    process = subprocess.Popen(
        [str(find_kubectl()), "exec", "-it", POD, "-c", "main", "--", "sh", "-c", "sleep 0.5; stty size; tty; exit 5"],
        stdin=slave, stdout=slave, stderr=slave,
        env=env.kubectl_env(extra), start_new_session=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 20
    try:
        while select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: kubectl has exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(20) == 5
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode(errors="replace")
    assert "33 101" in text and "/dev/pts/" in text, text


def test_cp_both_ways(env: Env) -> None:
    source = env.scratch / "payload.bin"
    source.write_bytes(os.urandom(300_000))
    env.kubectl("cp", str(source), f"{NS}/{POD}:/tmp/payload.bin", "-c", "main")
    listing = env.kubectl("exec", POD, "-c", "main", "--", "wc", "-c", "/tmp/payload.bin").stdout
    assert listing.split()[0] == "300000"
    back = env.scratch / "back.bin"
    env.kubectl("cp", f"{NS}/{POD}:/tmp/payload.bin", str(back), "-c", "main")
    assert back.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_attach(env: Env, transport: str) -> None:
    """Attached stdin reaches the container; closing it ends the container, and with it the session."""
    env.start_container("sidecar", ATTACH_SCRIPT, stdin=True)
    extra = EXEC_OVER_SPDY if transport == "spdy" else {}
    result = env.kubectl("attach", "-i", POD, "-c", "sidecar", input="hello\n", env=extra, timeout=20)
    assert "got hello\nbye\n" in result.stdout, (result.stdout, result.stderr)


# --- port-forward -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["websocket-tunnel", "spdy"])
def test_kubectl_port_forward(env: Env, transport: str) -> None:
    """Several connections over one session, megabytes each way (kubectl's SPDY has no flow control)."""
    big = os.urandom(4 * 1024 * 1024)
    upload_target = f"/tmp/upload-{transport}"
    # nc keeps its sending side open (a pod that half-closes ends the forwarded connection, as upstream)
    env.kubectl("exec", POD, "-c", "main", "--", "sh", "-c", f"head -c 4194304 /dev/urandom > /www/big.bin; "
                f"(sleep 30 | nc -l -p 9090 >{upload_target}) </dev/null >/dev/null 2>&1 &")
    extra = PORT_FORWARD_OVER_SPDY if transport == "spdy" else {}
    process = subprocess.Popen([str(find_kubectl()), "port-forward", f"pod/{POD}", "0:8080", "0:9090",
                                "--address", "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env.kubectl_env(extra))
    try:
        assert process.stdout is not None
        local = {}
        while len(local) < 2:
            line = process.stdout.readline()
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
            assert match, (line, process.stderr.read() if process.poll() is not None else "")
            local[int(match[2])] = int(match[1])
        url = f"http://127.0.0.1:{local[8080]}"
        for _ in range(2):
            with urllib.request.urlopen(url + "/", timeout=10) as response:
                assert response.read() == b"hi-from-pod\n"
        with urllib.request.urlopen(url + "/big.bin", timeout=20) as response:
            downloaded = response.read()
        with socket.create_connection(("127.0.0.1", local[9090]), timeout=20) as upload:
            upload.sendall(big)
            upload.shutdown(socket.SHUT_WR)
            assert upload.recv(1) == b""  # the pod's nc read everything and hung up
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    pod_digest = env.kubectl("exec", POD, "-c", "main", "--", "md5sum", "/www/big.bin", upload_target).stdout
    assert pod_digest.split()[0::2] == [hashlib.md5(downloaded).hexdigest(), hashlib.md5(big).hexdigest()]


# --- the official Python client -----------------------------------------------------------------------------


def test_python_client_exec_and_port_forward(env: Env) -> None:
    with k8s_config.new_client_from_config(config_file=str(env.cluster.kubeconfig)) as api_client:
        core = k8s.CoreV1Api(api_client)
        session = k8s_stream(core.connect_get_namespaced_pod_exec, POD, NS, container="main",
                             command=["sh", "-c", "echo py-out; echo py-err >&2; exit 4"], stderr=True,
                             stdin=False, stdout=True, tty=False, _preload_content=False)
        session.run_forever(timeout=10)
        assert session.read_stdout() == "py-out\n" and session.read_stderr() == "py-err\n"
        assert session.returncode == 4
        session.close()

        forward = k8s_portforward(core.connect_get_namespaced_pod_portforward, POD, NS, ports="8080")
        sock = forward.socket(8080)
        sock.settimeout(10)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        sock.close()
        assert reply.startswith(b"HTTP/1.") and reply.endswith(b"hi-from-pod\n")
        assert forward.error(8080) is None
        forward.close()

        closed = k8s_portforward(core.connect_get_namespaced_pod_portforward, POD, NS, ports="9999")
        sock = closed.socket(9999)
        sock.settimeout(10)
        assert sock.recv(10) == b""
        assert "failed to connect to localhost:9999" in closed.error(9999)
        closed.close()


# --- errors -------------------------------------------------------------------------------------------------


def test_errors_as_upstream_reports_them(env: Env) -> None:
    missing = env.kubectl("exec", POD, "-c", "nope", "--", "true", check=False)
    assert missing.returncode == 1 and "container nope is not valid for pod web" in missing.stderr
    unscheduled = env.kubectl("exec", "pending", "--", "true", check=False)
    assert unscheduled.returncode == 1 and "pod pending does not have a host assigned" in unscheduled.stderr
    response = env.cluster.request("POST", f"/api/v1/namespaces/{NS}/pods/pending/exec?command=true")
    assert (response.status, response.json()["reason"]) == (400, "BadRequest")
    response = env.cluster.request("GET", f"/api/v1/namespaces/{NS}/pods/ghost/exec?command=true")
    assert response.status == 404 and response.json()["message"] == 'pods "ghost" not found'
    # no upgrade: the kubelet's own answer comes back as it is
    response = env.cluster.request("POST", f"/api/v1/namespaces/{NS}/pods/{POD}/exec?container=main&command=true"
                                           "&stdout=true")
    assert response.status == 400 and b"X-Stream-Protocol-Version" in response.body


def test_kubelet_lets_in_only_the_api_server(env: Env) -> None:
    url = f"https://127.0.0.1:{env.kubelet_port}/healthz"
    anonymous = ssl.create_default_context(cafile=str(env.cluster.data_dir / "tls" / "ca.crt"))
    anonymous.check_hostname = False
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, context=anonymous, timeout=10)
    assert refused.value.code == 401
    admin = ssl.create_default_context(cafile=str(env.cluster.data_dir / "tls" / "ca.crt"))
    admin.check_hostname = False
    tls = env.cluster.data_dir / "tls"
    admin.load_cert_chain(tls / "admin.crt", tls / "admin.key")
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        urllib.request.urlopen(url, context=admin, timeout=10)
    assert forbidden.value.code == 403
    # the API server's own context, with the knob that verifies kubelets' serving certificates turned on
    apiserver = kubelet_client_ssl_context(tls / "kubelet-client.crt", tls / "kubelet-client.key", tls / "ca.crt",
                                           verify=True)
    with urllib.request.urlopen(url, context=apiserver, timeout=10) as response:
        assert response.read() == b"ok"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # not a name it was issued for
        urllib.request.urlopen(f"https://localhost:{env.kubelet_port}/healthz", context=apiserver, timeout=10)
