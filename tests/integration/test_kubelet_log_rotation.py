"""Container log rotation on a real node: a chatty pod's log is rotated by size every monitor round, at most
--container-log-max-files files are kept (older ones compressed), and `kubectl logs -f` reads on across the
rotations without losing or repeating a line."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubelet_harness import NodeCluster, start_node_cluster

from pocketkube.cli.kubectl import find_kubectl
from pocketkube.kubelet.logrotation import MONITOR_INTERVAL

MAX_SIZE = 4096
# ~4.5 KiB a second: every round of the monitor finds the log over the limit
CHATTY = 'i=0; pad=$(head -c 400 /dev/zero | tr "\\0" x); while true; do i=$((i+1)); echo "line $i $pad"; ' \
         'sleep 0.1; done'


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    yield from start_node_cluster("--container-log-max-size", str(MAX_SIZE), "--container-log-max-files", "3")


def _line_numbers(text: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^line (\d+) x+$", text, re.MULTILINE)]


def test_chatty_log_is_rotated_and_followed(node: NodeCluster) -> None:
    node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chatty"}, "spec": {
        "terminationGracePeriodSeconds": 1, "containers": [
            {"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", CHATTY]}]}})
    node.wait_status("chatty", "Running")
    uid = node.get("pod", "chatty")["metadata"]["uid"]
    log_dir = Path(node.data_dir) / "kubelet" / "logs" / f"default_chatty_{uid}" / "c"
    binary = find_kubectl()
    assert binary is not None
    follower = subprocess.Popen([str(binary), "logs", "-f", "chatty"], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "KUBECONFIG": str(node.cluster.kubeconfig)})
    try:
        # two rounds of the monitor: one rotated file compressed, the latest one as written
        node.wait_for(lambda: any(p.name.endswith(".gz") for p in log_dir.iterdir()), 4 * MONITOR_INTERVAL,
                      interval=1, what="a compressed rotated log")
        time.sleep(1)
    finally:
        follower.terminate()
        followed, _ = follower.communicate(timeout=10)
    names = sorted(p.name for p in log_dir.iterdir())
    assert len(names) <= 3 and "0.log" in names, names
    assert sum(name.endswith(".gz") for name in names) == 1 and len(names) == 3, names
    numbers = _line_numbers(followed)
    assert numbers[0] == 1 and numbers == list(range(1, len(numbers) + 1)), "lines lost or repeated by -f"
    assert numbers[-1] > 2 * MAX_SIZE // 400, "the follower read past a rotation"
    # without -f: the live file only, as upstream
    current = _line_numbers(node.kubectl("logs", "chatty").stdout)
    assert current and current[0] > 1 and current == list(range(current[0], current[0] + len(current)))
    node.kubectl("delete", "pod", "chatty", "--wait=true", timeout=60)
    assert not log_dir.exists()
