"""Probe handlers and lifecycle hooks against a real busybox container in a pod sandbox: exec through
Engine.exec, httpGet and tcpSocket through the sandbox's network namespace, where the pod IP lives only on
the namespace's loopback (so it is not reachable from the host and the namespace path must be used)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from engine_harness import EngineEnv

from pocketkube.engine.containers import ContainerConfig
from pocketkube.kubelet.hooks import HookFailed, run_hook
from pocketkube.kubelet.probes import (
    ProbeClock,
    ProbeResult,
    ProbeTarget,
    ProbeWorker,
    engine_exec,
    run_probe,
)

SERVE = ("mkdir -p /www && echo hello > /www/index.html && touch /tmp/healthy && "
         "exec httpd -f -p 8080 -h /www")


@dataclass
class Pod:
    env: EngineEnv
    container_id: str
    netns: str
    ip: str

    def target(self) -> ProbeTarget:
        return ProbeTarget(pod_ip=self.ip, netns=self.netns, exec=engine_exec(self.env.engine(), self.container_id),
                           container="web", pod="web_default(uid-1)")


async def _start_web(env: EngineEnv, namespaces: dict[str, str]) -> str:
    engine = env.engine()
    container = await engine.create(ContainerConfig(
        image="busybox", command=["sh", "-c", SERVE], network="sandbox", sandbox_namespaces=namespaces,
        manage_etc_files=False, cleanup_on_exit=False))
    await engine.start(container.id)
    return container.id


async def _until_serving(pod: Pod) -> None:
    deadline = time.monotonic() + 20
    while (await run_probe({"tcpSocket": {"port": 8080}}, pod.target(), [])).status != "success":
        assert time.monotonic() < deadline, "httpd in the pod did not start listening"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def pod(engine_env: EngineEnv) -> Iterator[Pod]:
    engine = engine_env.engine()
    sandbox = "probes" + os.urandom(4).hex()
    pinned = engine.create_sandbox(sandbox, hostname="web")
    ip = str(ipaddress.ip_network(engine_env.settings["subnet"])[77])
    container_id = ""
    try:
        subprocess.run(["nsenter", f"--net={pinned['net']}", "ip", "addr", "add", f"{ip}/32", "dev", "lo"],
                       check=True, capture_output=True)
        container_id = asyncio.run(_start_web(engine_env, {
            "network": str(pinned["net"]), "ipc": str(pinned["ipc"]), "uts": str(pinned["uts"])}))
        ready = Pod(engine_env, container_id, str(pinned["net"]), ip)
        asyncio.run(_until_serving(ready))
        yield ready
    finally:
        if container_id:
            asyncio.run(engine_env.engine().remove(container_id, force=True))
        engine.remove_sandbox(sandbox)


def test_the_pod_ip_exists_only_inside_the_sandbox(pod: Pod) -> None:
    host_addresses = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    assert f" {pod.ip}/" not in host_addresses


async def test_exec_probe_success_failure_timeout_and_error(pod: Pod) -> None:
    target = pod.target()
    assert await run_probe({"exec": {"command": ["sh", "-c", "echo fine"]}}, target, []) == \
        ProbeResult("success", "fine\n")
    assert await run_probe({"exec": {"command": ["sh", "-c", "echo sick >&2; exit 3"]}}, target, []) == \
        ProbeResult("failure", "sick\n")
    started = time.monotonic()
    timed_out = await run_probe({"exec": {"command": ["sleep", "30"]}, "timeoutSeconds": 1}, target, [])
    assert timed_out == ProbeResult("failure", 'command "sleep 30" timed out')
    assert time.monotonic() - started < 4
    missing = await run_probe({"exec": {"command": ["no-such-binary"]}}, target, [])
    assert missing.status == "unknown" and "no-such-binary" in missing.output
    # The killed command is gone from the container.
    leftover = await run_probe({"exec": {"command": ["sh", "-c", "ps | grep -v grep | grep 'sleep 30'"]}}, target, [])
    assert leftover.status == "failure"


async def test_http_probe_through_the_pod_network_namespace(pod: Pod) -> None:
    target = pod.target()
    ports = [{"name": "web", "containerPort": 8080}]
    assert await run_probe({"httpGet": {"path": "/", "port": "web"}}, target, ports) == \
        ProbeResult("success", "hello\n")
    assert await run_probe({"httpGet": {"path": "/missing", "port": 8080}}, target, ports) == \
        ProbeResult("failure", "HTTP probe failed with statuscode: 404")
    refused = await run_probe({"httpGet": {"path": "/", "port": 8081}}, target, ports)
    assert refused == ProbeResult(
        "failure", f'Get "http://{pod.ip}:8081/": dial tcp {pod.ip}:8081: connect: connection refused')


async def test_tcp_probe_open_and_closed_ports_in_the_pod(pod: Pod) -> None:
    target = pod.target()
    assert await run_probe({"tcpSocket": {"port": 8080}}, target, []) == ProbeResult("success")
    assert await run_probe({"tcpSocket": {"port": 8081}}, target, []) == ProbeResult(
        "failure", f"dial tcp {pod.ip}:8081: connect: connection refused")


async def test_lifecycle_hooks_in_a_real_container(pod: Pod) -> None:
    target = pod.target()
    await run_hook({"exec": {"command": ["sh", "-c", "echo started > /tmp/post-start"]}}, target,
                   timeout=10, hook="postStart")
    assert await run_probe({"exec": {"command": ["cat", "/tmp/post-start"]}}, target, []) == \
        ProbeResult("success", "started\n")
    with pytest.raises(HookFailed) as failed:
        await run_hook({"exec": {"command": ["sh", "-c", "echo nope; exit 2"]}}, target, timeout=10, hook="postStart")
    assert str(failed.value) == ('PostStartHookError: Exec lifecycle hook ([sh -c echo nope; exit 2]) for Container '
                                 '"web" in Pod "web_default(uid-1)" failed - error: command \'sh -c echo nope; exit 2\' '
                                 'exited with 2: nope\n, message: "nope\\n"')

    await run_hook({"httpGet": {"path": "/not-there", "port": 8080}}, target, timeout=10, hook="preStop")
    with pytest.raises(HookFailed) as refused:
        await run_hook({"httpGet": {"path": "/", "port": 8081}}, target, timeout=10, hook="preStop")
    assert refused.value.event_reason == "FailedPreStopHook" and "connection refused" in refused.value.detail

    started = time.monotonic()
    await run_hook({"sleep": {"seconds": 1}}, target, timeout=10, hook="preStop")
    assert 0.9 < time.monotonic() - started < 3


class InstantClock(ProbeClock):
    """Periods pass at once; only the real commands take time."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time

    async def wait(self, seconds: float, stop: asyncio.Event) -> bool:
        self.time += max(seconds, 0.0)
        await asyncio.sleep(0)
        return stop.is_set()


async def test_liveness_worker_notices_a_real_container_turning_unhealthy(pod: Pod) -> None:
    target = pod.target()
    results: list = []
    events: list = []
    checks = 0

    async def check_then_break(command: list[str], timeout: float) -> tuple[int, bytes]:
        nonlocal checks
        checks += 1
        if checks == 3:  # the app loses its health marker after two good checks
            await target.exec(["rm", "-f", "/tmp/healthy"], 5)
        return await target.exec(command, timeout)

    probing = ProbeTarget(pod.ip, pod.netns, check_then_break, "web", "web_default(uid-1)")
    worker = ProbeWorker("liveness", {"exec": {"command": ["cat", "/tmp/healthy"]}, "failureThreshold": 2,
                                      "periodSeconds": 10},
                         probing, [], lambda *args: results.append(args), on_event=lambda *args: events.append(args),
                         clock=InstantClock())
    worker.started()
    try:
        await asyncio.wait_for(worker.run(asyncio.Event()), 30)
        assert checks == 4
        assert results == [("liveness", False,
                            "Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory\n", None)]
        assert [reason for reason, _ in events] == ["Unhealthy", "Unhealthy"]
    finally:
        await target.exec(["touch", "/tmp/healthy"], 5)
