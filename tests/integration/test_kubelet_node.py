"""Node-level kubelet behaviour on a real cluster: static pods with their mirror pods, and a second real node
joining with the join token (`pocketkube agent --server --token`)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
from cluster import free_port
from kubelet_harness import NodeCluster, clean_node, first_pod_cidr, isolated_settings, start_node_cluster

from pocketkube.engine.engine import Engine
from pocketkube.engine.images.busybox import ensure_busybox_image
from pocketkube.engine.registry.client import RegistryClient
from pocketkube.engine.registry.credentials import CredentialStore


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    yield from start_node_cluster()


STATIC = """apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {tier: static}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [httpd, -f, -p, "80", -h, /etc]
"""


def test_static_pod_runs_with_a_mirror_pod(node: NodeCluster) -> None:
    manifests = Path(node.data_dir) / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "web.yaml").write_text(STATIC)
    name = f"web-{node.node}"
    node.wait_status(name, "Running", timeout=30)
    mirror = node.get("pod", name)
    annotations = mirror["metadata"]["annotations"]
    assert annotations["kubernetes.io/config.source"] == "file"
    assert annotations["kubernetes.io/config.mirror"] == annotations["kubernetes.io/config.hash"]
    assert mirror["metadata"]["ownerReferences"][0]["kind"] == "Node"
    assert mirror["spec"]["nodeName"] == node.node
    with urllib.request.urlopen(f"http://{mirror['status']['podIP']}/hostname", timeout=5) as resp:
        assert resp.read().decode().strip() == name
    assert "httpd" in node.kubectl("exec", name, "--", "ps").stdout

    # deleting the mirror pod does not stop the static pod: the mirror comes back
    container = mirror["status"]["containerStatuses"][0]["containerID"]
    node.kubectl("delete", "pod", name, "--wait=false")
    node.wait_for(lambda: node.get("pod", name)["metadata"]["uid"] != mirror["metadata"]["uid"], 30,
                  what="a new mirror pod")
    node.wait_status(name, "Running", timeout=30)
    assert node.get("pod", name)["status"]["containerStatuses"][0]["containerID"] == container

    # removing the manifest stops the pod and removes the mirror
    (manifests / "web.yaml").unlink()
    node.wait_for(lambda: name not in node.kubectl("get", "pods", "-o", "name").stdout, 30, what="mirror gone")
    engine = Engine(node.data_dir)
    node.wait_for(lambda: not [c for c in engine.containers.list()
                               if c.config.labels.get("io.kubernetes.pod.name") == name], 30,
                  what="the static pod's containers removed")


def test_an_agent_joins_as_a_second_node(node: NodeCluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    data_dir.mkdir()
    settings, bridge, _ = isolated_settings()
    cluster_cidr = node.cluster.extra_args[node.cluster.extra_args.index("--cluster-cidr") + 1]
    (data_dir / "engine.json").write_text(json.dumps(settings))
    ensure_busybox_image(Engine(data_dir).images)
    name = f"agent-{secrets.token_hex(2)}"
    token = (Path(node.data_dir) / "node-token").read_text().strip()
    pod_cidr = first_pod_cidr(cluster_cidr)
    log = open(tmp_path / "agent.log", "wb")
    agent = subprocess.Popen([sys.executable, "-m", "pocketkube.cli.main", "agent", "--server", node.cluster.url,
                              "--token", token, "--data-dir", str(data_dir), "--node-name", name, "--node-ip",
                              "127.0.0.1", "--kubelet-port", str(free_port()), "--cni-bridge", bridge,
                              "--cluster-cidr", cluster_cidr], stdout=log, stderr=subprocess.STDOUT)
    try:
        node.wait_for(lambda: " Ready " in node.kubectl("get", "node", name, "--no-headers", check=False).stdout,
                      30, what=f"node {name} Ready")
        joined = node.get("node", name, namespace="")
        assert "node-role.kubernetes.io/control-plane" not in joined["metadata"]["labels"]
        pod_cidr = joined["spec"]["podCIDR"]  # what its cleanup below must use
        assert pod_cidr != node.get("node", node.node, namespace="")["spec"]["podCIDR"]
        node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-agent"}, "spec": {
            "nodeName": name, "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                              "command": ["sh", "-c", "echo joined; sleep 3600"]}]}})
        node.wait_status("on-agent", "Running", timeout=30)
        ip = node.get("pod", "on-agent")["status"]["podIP"]
        assert ip.startswith(pod_cidr.rsplit(".", 2)[0])
        logs = node.wait_for(lambda: "joined" in (out := node.kubectl("logs", "on-agent").stdout) and out, 15,
                             what="logs through the agent's kubelet")
        assert logs.strip() == "joined"
        assert (data_dir / "kubelet" / "client-kubelet.pem").exists()
        node.kubectl("delete", "pod", "on-agent", "--grace-period=1", "--wait=true", timeout=60)
    finally:
        agent.terminate()
        agent.wait(30)
        log.close()
        node.kubectl("delete", "node", name, "--ignore-not-found")  # nothing may be scheduled there any more
        clean_node(data_dir, settings, bridge, pod_cidr)


def test_images_pull_with_an_image_pull_secret(node: NodeCluster, tmp_path: Path) -> None:
    user, password = "puller", "pull-s3cret"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    (tmp_path / "htpasswd").write_text(f"{user}:{hashed}\n")
    port = free_port()
    host = f"127.0.0.1:{port}"
    registry = subprocess.Popen([sys.executable, "-m", "pocketkube.cli.main", "registry", "--data-dir",
                                 str(tmp_path / "registry"), "--listen", host, "--htpasswd",
                                 str(tmp_path / "htpasswd")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        store = Engine(node.data_dir).images
        store.tag("busybox:latest", f"{host}/team/box:1")
        credentials = CredentialStore(tmp_path / "docker.json")
        client = RegistryClient(credentials=credentials)
        node.wait_for(lambda: _try(lambda: asyncio.run(client.login(host, user, password))), 15,
                      what="the registry up")
        asyncio.run(client.push(store, f"{host}/team/box:1"))
        spec = {"containers": [{"name": "c", "image": f"{host}/team/box:1", "imagePullPolicy": "Always",
                                "command": ["sleep", "3600"]}], "terminationGracePeriodSeconds": 1}
        node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nosecret"}, "spec": spec})
        node.wait_status("nosecret", "ErrImagePull", timeout=30)
        node.wait_status("nosecret", "ImagePullBackOff", timeout=30)
        waiting = node.get("pod", "nosecret")["status"]["containerStatuses"][0]["state"]["waiting"]
        assert waiting["message"] == f'Back-off pulling image "{host}/team/box:1"'

        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        node.kubectl("create", "secret", "generic", "pull", "--type=kubernetes.io/dockerconfigjson",
                     f"--from-literal=.dockerconfigjson={json.dumps({'auths': {host: {'auth': auth}}})}")
        node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "withsecret"},
                    "spec": {**spec, "imagePullSecrets": [{"name": "pull"}]}})
        node.wait_status("withsecret", "Running", timeout=30)
        status = node.get("pod", "withsecret")["status"]["containerStatuses"][0]
        assert status["image"] == f"{host}/team/box:1"
        assert status["imageID"].startswith(f"{host}/team/box@sha256:")
        events = node.kubectl("get", "events", "--field-selector", "involvedObject.name=withsecret").stdout
        assert f'Successfully pulled image "{host}/team/box:1"' in events
        node.kubectl("delete", "pod", "nosecret", "withsecret", "--wait=true", timeout=60)
    finally:
        registry.terminate()
        registry.wait(30)


def _try(action: Callable[[], object]) -> bool:
    try:
        action()
    except Exception:
        return False
    return True


def test_termination_message_from_file_and_from_logs(node: NodeCluster) -> None:
    node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "messages"}, "spec": {
        "restartPolicy": "Never", "containers": [
            {"name": "file", "image": "busybox", "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", "echo -n all done > /dev/termination-log"]},
            {"name": "broken", "image": "busybox", "imagePullPolicy": "IfNotPresent",
             "terminationMessagePolicy": "FallbackToLogsOnError", "command": ["sh", "-c", "echo it broke; exit 2"]}]}})
    node.wait_for(lambda: node.get("pod", "messages")["status"]["phase"] == "Failed", 30, what="pod Failed")
    found = {s["name"]: s["state"]["terminated"] for s in node.get("pod", "messages")["status"]["containerStatuses"]}
    assert found["file"]["message"] == "all done" and found["file"]["reason"] == "Completed"
    assert found["broken"]["message"] == "it broke\n" and found["broken"]["exitCode"] == 2
    assert node.pod_status_column("messages") == "Error"  # the first container by name speaks for the pod
