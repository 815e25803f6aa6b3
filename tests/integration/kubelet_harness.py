"""A real single-node cluster for kubelet tests: `pocketkube server` with its kubelet, isolated from the host's
own settings (a test-only cgroup parent, CNI bridge, cluster CIDR and kubelet port), the busybox image
imported, and everything it made removed afterwards — containers, sandboxes, CNI attachments and their
iptables rules, the bridge, cgroups, mounts."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cluster import Cluster, free_port, new_cluster

from pocketkube.engine.engine import Engine
from pocketkube.engine.images.busybox import ensure_busybox_image
from pocketkube.engine.runtime import cgroups
from pocketkube.kubelet.podnetwork import DNSSettings, PodNetwork
from pocketkube.kubelet.runtime import Runtime

Obj = dict[str, Any]


class NodeCluster:
    """The cluster, its node's name and settings, and waits on what kubectl shows."""

    def __init__(self, cluster: Cluster, node: str, settings: dict[str, str], bridge: str) -> None:
        self.cluster = cluster
        self.node = node
        self.settings = settings
        self.bridge = bridge

    @property
    def data_dir(self) -> Path:
        return self.cluster.data_dir

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, **kw)

    def apply(self, manifest: Obj | str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-f", "-", input=text)

    def get(self, kind: str, name: str, namespace: str = "default") -> Obj:
        return json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)

    def wait_for(self, check: Callable[[], Any], timeout: float = 60, interval: float = 0.2, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (AssertionError, KeyError, IndexError, ValueError) as err:
                last = err
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")

    def pod_status_column(self, name: str, namespace: str = "default") -> str:
        out = self.kubectl("get", "pod", name, "-n", namespace, "--no-headers").stdout.split()
        return out[2] if len(out) > 2 else ""

    def wait_status(self, name: str, wanted: str, timeout: float = 60, namespace: str = "default") -> None:
        try:
            self.wait_for(lambda: self.pod_status_column(name, namespace) == wanted, timeout,
                          what=f"pod {name} STATUS {wanted}")
        except AssertionError as err:
            shown = self.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False).stdout
            events = self.kubectl("get", "events", "-n", namespace, "--field-selector",
                                  f"involvedObject.name={name}", check=False).stdout
            raise AssertionError(f"{err}\n{shown[-3000:]}\n{events}") from None

    def delete_all_pods(self) -> None:
        self.kubectl("delete", "deployments,jobs,pods", "--all", "-A", "--wait=false", check=False)
        self.wait_for(lambda: not self.kubectl("get", "pods", "-A", "-o", "name").stdout.strip(), 60,
                      what="every pod gone")


def isolated_settings() -> tuple[dict[str, str], str, str]:
    tag = secrets.token_hex(2)
    octet = 200 + int(tag, 16) % 40
    return ({"cgroup-parent": f"/pocketkube-ktest-{tag}", "bridge": f"pke{tag}",
             "subnet": f"10.{octet}.250.0/24"}, f"pkc{tag}", f"10.{octet}.0.0/16")


def start_node_cluster(*extra: str) -> Iterator[NodeCluster]:
    """For a module-scoped fixture to yield from: the server with its kubelet, torn down completely after."""
    settings, bridge, cluster_cidr = isolated_settings()
    node = f"knode-{secrets.token_hex(2)}"
    cluster = new_cluster(extra_args=["--node-name", node, "--node-ip", "127.0.0.1", "--kubelet-port",
                                      str(free_port()), "--cni-bridge", bridge, "--cluster-cidr", cluster_cidr,
                                      *extra])
    (cluster.data_dir / "engine.json").write_text(json.dumps(settings))
    ensure_busybox_image(Engine(cluster.data_dir).images)
    try:
        cluster.start()
        env = NodeCluster(cluster, node, settings, bridge)
        try:
            env.wait_for(lambda: "Ready" in env.kubectl("get", "node", node, "--no-headers", check=False).stdout,
                         60, what=f"node {node} Ready")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{cluster.log_path.read_text()[-3000:]}") from None
        yield env
    finally:
        cluster.stop()
        clean_node(cluster.data_dir, settings, bridge, first_pod_cidr(cluster_cidr))


def first_pod_cidr(cluster_cidr: str) -> str:
    """The podCIDR a lone node gets from the cluster CIDR."""
    return str(next(ipaddress.ip_network(cluster_cidr).subnets(new_prefix=24)))


def clean_node(data_dir: Path, settings: dict[str, str], bridge: str, pod_cidr: str) -> None:
    """Removes whatever the kubelet left: it leaves containers running when it stops, as upstream's does."""
    engine = Engine(data_dir)
    runtime = Runtime(engine, data_dir / "kubelet")
    network = PodNetwork(data_dir / "kubelet", bridge=bridge, dns=DNSSettings([]))
    network.configure(pod_cidr)

    async def remove_all() -> None:
        for container in engine.containers.list():
            await engine.remove(container.id, force=True)
        for sandbox in runtime.list_sandboxes():
            if sandbox.network_ready and not sandbox.host_network:
                await network.detach(sandbox.id, sandbox.netns, host_ports=sandbox.host_ports)
            await runtime.remove_sandbox(sandbox)
        await network.remove_masquerade()
        await engine.network.remove_masquerade()  # the engine's own bridge network, used by its containers

    asyncio.run(remove_all())
    for line in Path("/proc/self/mountinfo").read_text().splitlines()[::-1]:
        point = line.split()[4]
        if point.startswith(str(data_dir)):
            subprocess.run(["umount", "-l", point], capture_output=True)
    cgroups.remove(settings["cgroup-parent"], kill=True)
    for link in (bridge, settings["bridge"]):
        subprocess.run(["ip", "link", "delete", link], capture_output=True)
    shutil.rmtree(engine.run_root, ignore_errors=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    leftovers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                 if str(data_dir) in line or str(engine.run_root) in line]
    assert not leftovers, f"mounts left behind: {leftovers}"
    assert not os.path.exists(data_dir)


def running_container(data_dir: Path, pod: str, container: str, namespace: str = "default") -> str:
    """The engine id of the pod's running container (found by the labels the kubelet puts on it)."""
    for candidate in Engine(data_dir).containers.list():
        labels = candidate.config.labels
        if labels.get("io.kubernetes.pod.name") == pod and labels.get("io.kubernetes.pod.namespace") == namespace \
                and labels.get("io.kubernetes.container.name") == container and candidate.running:
            return candidate.id
    raise AssertionError(f"no running container {container} of pod {namespace}/{pod}")


def exec_in(data_dir: Path, pod: str, container: str, command: list[str], namespace: str = "default"
            ) -> tuple[int, str]:
    """Runs a command in a pod's container through the engine: (exit code, stdout+stderr)."""
    engine = Engine(data_dir)
    cid = running_container(data_dir, pod, container, namespace)

    async def run() -> tuple[int, str]:
        stream = await engine.exec(cid, command)
        output = b""
        while (chunk := await stream.read()) is not None:
            output += chunk[1]
        return await stream.wait(), output.decode()

    return asyncio.run(run())
