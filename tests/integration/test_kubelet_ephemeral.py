"""Ephemeral containers on a real node: `kubectl debug` adds one to a running pod; the kubelet starts it once,
in the target container's process namespace, and reports it in ephemeralContainerStatuses; `kubectl attach`
reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubelet_harness import NodeCluster, start_node_cluster

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    yield from start_node_cluster()


def _ephemeral_status(node: NodeCluster, pod: str, name: str) -> Obj | None:
    statuses = node.get("pod", pod)["status"].get("ephemeralContainerStatuses") or []
    return next((s for s in statuses if s["name"] == name), None)


def test_kubectl_debug_joins_the_target_and_runs_once(node: NodeCluster) -> None:
    node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "target"},
                "spec": {"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                         "command": ["sh", "-c", "exec sleep 3600"]}]}})
    node.wait_status("target", "Running")
    node.kubectl("debug", "target", "--image=busybox", "--image-pull-policy=IfNotPresent", "--container=dbg",
                 "--target=app", "--", "sh", "-c", "ps -o pid,args; echo done")

    def finished() -> Obj | None:
        status = _ephemeral_status(node, "target", "dbg")
        return status if status and "terminated" in status["state"] else None

    status = node.wait_for(finished, 60, what="the ephemeral container to finish")
    assert status["state"]["terminated"]["exitCode"] == 0 and status["restartCount"] == 0
    assert status["containerID"].startswith("pocketkube://") and status["image"].endswith("busybox:latest")
    logs = node.kubectl("logs", "target", "-c", "dbg").stdout
    # The target's process namespace: its `sleep 3600` is there, as pid 1.
    assert "sleep 3600" in logs and "done" in logs
    assert any(line.split()[:1] == ["1"] and "sleep 3600" in line for line in logs.splitlines())
    # Never restarted, and the pod itself is untouched.
    pod = node.get("pod", "target")
    assert pod["status"]["phase"] == "Running"
    assert [s["restartCount"] for s in pod["status"]["containerStatuses"]] == [0]


def test_debug_container_to_attach_to(node: NodeCluster) -> None:
    node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "attached"},
                "spec": {"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                         "command": ["sleep", "3600"]}]}})
    node.wait_status("attached", "Running")
    node.kubectl("debug", "attached", "--image=busybox", "--image-pull-policy=IfNotPresent", "--container=shell",
                 "--", "sh", "-c", "i=0; while [ $i -lt 60 ]; do echo tick; sleep 0.2; i=$((i+1)); done")
    node.wait_for(lambda: "running" in ((_ephemeral_status(node, "attached", "shell") or {}).get("state") or {}),
                  60, what="the ephemeral container to run")
    # Attach streams what the container writes from now on, until it ends (12 s after it started).
    attached = node.kubectl("attach", "attached", "-c", "shell", timeout=40)
    assert "tick" in attached.stdout
