"""The kubelet runs real pods: a `pocketkube server` with its node, driven by the real kubectl 1.37, with
real containers (crun/runc, conmon, CNI bridge) as root. Slow pods (crash loops, terminations) are created
first and checked later, so their waits overlap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import free_port
from kubelet_harness import NodeCluster, exec_in, running_container, start_node_cluster

from pocketkube.cli.kubectl import find_kubectl
from pocketkube.engine.engine import Engine
from pocketkube.engine.images.archive import import_rootfs
from pocketkube.engine.images.busybox import busybox_rootfs_tar
from pocketkube.engine.runtime import cgroups
from pocketkube.kubelet.status import parse_time

Obj = dict[str, Any]
BUSYBOX = {"image": "busybox", "imagePullPolicy": "IfNotPresent"}


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    yield from start_node_cluster()


def pod(name: str, *containers: Obj, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": name}},
            "spec": {"containers": [{**BUSYBOX, **c} for c in containers], **spec}}


def shell(name: str, script: str, **extra: Any) -> Obj:
    return {"name": name, "command": ["sh", "-c", script], **extra}


def statuses(node: NodeCluster, name: str) -> dict[str, Obj]:
    status = node.get("pod", name)["status"]
    return {s["name"]: s for s in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses")
                                                                                    or [])]}


def test_slow_pods_start(node: NodeCluster) -> None:
    """Pods whose checks need time: created now, looked at by later tests."""
    node.apply(pod("graceful", shell("c", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done"),
                   terminationGracePeriodSeconds=30))
    node.apply(pod("stubborn", shell("c", "trap '' TERM; while true; do sleep 0.1; done"),
                   terminationGracePeriodSeconds=3))
    node.wait_status("graceful", "Running")
    node.wait_status("stubborn", "Running")


def test_node_registered(node: NodeCluster) -> None:
    obj = node.get("node", node.node, namespace="")
    labels = obj["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == node.node
    assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"]
    assert labels["node-role.kubernetes.io/control-plane"] == "true"
    status = obj["status"]
    assert status["capacity"]["pods"] == "110" and int(status["capacity"]["cpu"]) >= 1
    assert status["allocatable"]["memory"].endswith("Ki")
    assert int(status["allocatable"]["memory"][:-2]) < int(status["capacity"]["memory"][:-2])
    assert {a["type"]: a["address"] for a in status["addresses"]} == {"InternalIP": "127.0.0.1",
                                                                        "Hostname": node.node}
    info = status["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("pocketkube://")
    assert info["kubeletVersion"].startswith("v1.37.") and info["osImage"] and info["kernelVersion"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"MemoryPressure": ("False", "KubeletHasSufficientMemory"),
                          "DiskPressure": ("False", "KubeletHasNoDiskPressure"),
                          "PIDPressure": ("False", "KubeletHasSufficientPID"),
                          "Ready": ("True", "KubeletReady")}
    assert obj["spec"]["podCIDR"].endswith("/24")
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    lease = node.get("lease", node.node, namespace="kube-node-lease")
    assert lease["spec"]["holderIdentity"] == node.node


def test_deployment_runs_and_pods_reach_each_other(node: NodeCluster) -> None:
    node.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {**BUSYBOX, "name": "httpd", "command": ["httpd", "-f", "-p", "80", "-h", "/etc"],
             "ports": [{"containerPort": 80}]}]}}}})
    node.kubectl("rollout", "status", "deployment/web", "--timeout=60s", timeout=90)
    rows = [line.split() for line in node.kubectl("get", "pods", "-l", "app=web", "--no-headers").stdout.splitlines()]
    assert len(rows) == 3 and all(r[1] == "1/1" and r[2] == "Running" and r[3] == "0" for r in rows), rows
    pods = json.loads(node.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == 3
    for p in pods:
        # from the host: the pod's /etc/hostname holds its name
        with urllib.request.urlopen(f"http://{p['status']['podIP']}/hostname", timeout=5) as resp:
            assert resp.read().decode().strip() == p["metadata"]["name"]
    # pod to pod on the node
    code, out = exec_in(node.data_dir, pods[0]["metadata"]["name"], "httpd",
                        ["wget", "-qO-", f"http://{ips[1]}/hostname"])
    assert code == 0 and out.strip() == pods[1]["metadata"]["name"]
    code, out = exec_in(node.data_dir, pods[0]["metadata"]["name"], "httpd", ["cat", "/etc/resolv.conf"])
    assert "nameserver 10.43.0.10" in out and "search default.svc.cluster.local svc.cluster.local" in out
    assert "options ndots:5" in out


def test_kubectl_port_forward_and_exec_with_stdin(node: NodeCluster) -> None:
    node.apply(pod("forwarded", shell("c", "httpd -f -p 8080 -h /etc"), terminationGracePeriodSeconds=1))
    node.wait_status("forwarded", "Running")
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(node.cluster.kubeconfig)}
    forward = subprocess.Popen([str(find_kubectl()), "port-forward", "pod/forwarded", f"{port}:8080"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        body = node.wait_for(lambda: _get(f"http://127.0.0.1:{port}/hostname"), 20, what="the forwarded port")
        assert body.strip() == "forwarded"
    finally:
        forward.terminate()
        forward.wait(10)
    echoed = node.kubectl("exec", "-i", "forwarded", "--", "sh", "-c", "tr a-z A-Z", input="shout\n")
    assert echoed.stdout == "SHOUT\n"


def test_host_port(node: NodeCluster) -> None:
    port = free_port()
    node.apply(pod("published", shell("c", "httpd -f -p 8080 -h /etc", ports=[
        {"containerPort": 8080, "hostPort": port, "hostIP": "127.0.0.1"}])))
    node.wait_status("published", "Running")
    hostname = node.wait_for(lambda: _get(f"http://127.0.0.1:{port}/hostname"), 15, what="the host port answering")
    assert hostname.strip() == "published"
    node.kubectl("delete", "pod", "published", "--grace-period=1", "--wait=true", timeout=60)
    node.wait_for(lambda: str(port) not in subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True,
                                                          text=True).stdout, 15, what="the port mapping removed")


def test_image_change_restarts_the_container(node: NodeCluster) -> None:
    Engine(node.data_dir).images.tag("busybox:latest", "busybox:v2")
    node.apply(pod("retag", shell("c", "sleep 3600"), terminationGracePeriodSeconds=1))
    node.wait_status("retag", "Running")
    node.kubectl("set", "image", "pod/retag", "c=busybox:v2")
    node.wait_for(lambda: (s := statuses(node, "retag")["c"])["restartCount"] == 1 and "running" in s["state"],
                  30, what="the container restarted with the new image")
    assert statuses(node, "retag")["c"]["image"] == "docker.io/library/busybox:v2"
    events = node.kubectl("get", "events", "--field-selector", "involvedObject.name=retag").stdout
    assert "Container c definition changed, will be restarted" in events


def test_a_command_that_cannot_start(node: NodeCluster) -> None:
    node.apply(pod("nostart", {"name": "c", "command": ["/no/such/binary"]}, restartPolicy="Never"))
    node.wait_status("nostart", "StartError", timeout=30)
    terminated = statuses(node, "nostart")["c"]["state"]["terminated"]
    assert terminated["exitCode"] == 128 and "/no/such/binary" in terminated["message"]
    assert node.get("pod", "nostart")["status"]["phase"] == "Failed"


def test_host_network_pod(node: NodeCluster) -> None:
    node.apply(pod("hostnet", shell("c", "sleep 3600"), hostNetwork=True, terminationGracePeriodSeconds=1))
    node.wait_status("hostnet", "Running")
    assert node.get("pod", "hostnet")["status"]["podIP"] == "127.0.0.1"
    code, links = exec_in(node.data_dir, "hostnet", "c", ["cat", "/proc/net/dev"])
    assert code == 0 and _interfaces(links) & _interfaces(Path("/proc/net/dev").read_text()) - {"lo"}
    hosts = exec_in(node.data_dir, "hostnet", "c", ["cat", "/etc/hosts"])[1]
    assert hosts.startswith("# Kubernetes-managed hosts file (host network).")
    node.kubectl("delete", "pod", "hostnet", "--wait=true", timeout=60)


def _interfaces(net_dev: str) -> set[str]:
    return {line.split(":", 1)[0].strip() for line in net_dev.splitlines()[2:] if ":" in line}


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return ""


def test_containers_share_localhost_and_an_empty_dir(node: NodeCluster) -> None:
    node.apply(pod("pair", shell("server", "echo from-server > /shared/index.html; httpd -f -p 8080 -h /shared",
                                 volumeMounts=[{"name": "shared", "mountPath": "/shared"}]),
                   shell("client", "sleep 3600", volumeMounts=[{"name": "shared", "mountPath": "/data"}]),
                   volumes=[{"name": "shared", "emptyDir": {}}]))
    node.wait_status("pair", "Running")
    code, out = node.wait_for(lambda: (r := exec_in(node.data_dir, "pair", "client",
                                                    ["wget", "-qO-", "http://localhost:8080/"]))[0] == 0 and r,
                              20, what="the server answering on localhost")
    assert out.strip() == "from-server"
    assert exec_in(node.data_dir, "pair", "client", ["cat", "/data/index.html"])[1].strip() == "from-server"


def _infra_containers(data_dir: Path, uid: str) -> list[Any]:
    return [c for c in Engine(data_dir).containers.list() if c.config.labels.get("io.kubernetes.pod.uid") == uid
            and c.config.labels.get("io.kubernetes.docker.type") == "podsandbox"]


def test_containers_share_a_process_namespace(node: NodeCluster) -> None:
    node.apply(pod("sharedpid", shell("app", "sleep 3600"), shell("debug", "sleep 3601"),
                   shareProcessNamespace=True, terminationGracePeriodSeconds=1))
    node.wait_status("sharedpid", "Running")
    code, processes = exec_in(node.data_dir, "sharedpid", "debug", ["ps", "-o", "pid,user,args"])
    assert code == 0, processes
    rows = [line.split(None, 2) for line in processes.splitlines()[1:]]
    # pid 1 is the pod's unprivileged init, and each container sees the other's processes
    assert ["1", "65535", "/catatonit -P"] in rows, processes
    assert any(args == "sleep 3600" for _, _, args in rows), processes
    uid = node.get("pod", "sharedpid")["metadata"]["uid"]
    [infra] = _infra_containers(node.data_dir, uid)
    assert infra.running and infra.config.cgroup_parent.endswith(f"/pod{uid}")
    # one container signals the other's process, which then restarts as any exited container does
    kill = "kill $(ps -o pid,args | awk '$2 == \"sleep\" && $3 == \"3600\" {print $1}')"
    assert exec_in(node.data_dir, "sharedpid", "debug", ["sh", "-c", kill]) == (0, "")
    node.wait_for(lambda: statuses(node, "sharedpid")["app"]["restartCount"] == 1, 30, what="app restarted")
    node.wait_status("sharedpid", "Running")
    assert statuses(node, "sharedpid")["debug"]["restartCount"] == 0
    # The init gone, the kernel ends every process of the namespace: a new sandbox, every container restarted.
    os.kill(infra.state.pid, signal.SIGKILL)
    node.wait_for(lambda: all(s["restartCount"] >= 1 and "running" in s["state"]
                              for s in statuses(node, "sharedpid").values()), 60, what="containers in a new sandbox")
    [new_infra] = _infra_containers(node.data_dir, uid)
    assert new_infra.id != infra.id and new_infra.running
    node.kubectl("delete", "pod", "sharedpid", "--wait=true", timeout=60)
    assert not _infra_containers(node.data_dir, uid)


def test_host_pid_pod_sees_the_node_processes(node: NodeCluster) -> None:
    node.apply(pod("hostpid", shell("c", "sleep 3600"), hostPID=True, terminationGracePeriodSeconds=1))
    node.wait_status("hostpid", "Running")
    code, out = exec_in(node.data_dir, "hostpid", "c", ["cat", f"/proc/{os.getpid()}/cmdline"])
    assert code == 0 and out == Path("/proc/self/cmdline").read_text()
    node.kubectl("delete", "pod", "hostpid", "--wait=false")


def test_init_containers_and_a_native_sidecar(node: NodeCluster) -> None:
    node.apply(pod("inits", shell("app", "cat /work/first /work/second; sleep 3600",
                                  volumeMounts=[{"name": "work", "mountPath": "/work"}]),
                   initContainers=[
                       {**BUSYBOX, **shell("first", "sleep 1; echo one > /work/first"),
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                       {**BUSYBOX, **shell("sidecar", "echo side > /work/second; sleep 3600"),
                        "restartPolicy": "Always", "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
                   volumes=[{"name": "work", "emptyDir": {}}]))
    node.wait_for(lambda: node.pod_status_column("inits").startswith("Init:"), 20, what="Init:x/2 shown")
    node.wait_status("inits", "Running")
    found = statuses(node, "inits")
    assert found["first"]["state"]["terminated"]["reason"] == "Completed"
    assert "running" in found["sidecar"]["state"] and found["sidecar"]["started"] is True
    assert found["app"]["ready"] is True
    assert node.kubectl("get", "pod", "inits", "--no-headers").stdout.split()[1] == "2/2"
    conditions = {c["type"]: c["status"] for c in node.get("pod", "inits")["status"]["conditions"]}
    assert conditions["Initialized"] == "True" and conditions["Ready"] == "True"


def test_job_pod_completes(node: NodeCluster) -> None:
    node.apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{**BUSYBOX, **shell("work", "echo done")}]}}}})
    node.kubectl("wait", "--for=condition=complete", "job/once", "--timeout=60s", timeout=90)
    name = node.kubectl("get", "pods", "-l", "job-name=once", "-o", "name").stdout.strip().split("/")[1]
    assert node.pod_status_column(name) == "Completed"
    status = node.get("pod", name)["status"]
    assert status["phase"] == "Succeeded"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "PodCompleted"


def test_stateful_set_pod_keeps_its_local_path_volume(node: NodeCluster) -> None:
    """The controllers, the scheduler, the local-path provisioner and the kubelet together: the pod comes back
    under its name after deletion and finds what it wrote."""
    node.apply({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {
        "serviceName": "db", "replicas": 1, "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
            "terminationGracePeriodSeconds": 1, "containers": [{**BUSYBOX, **shell(
                "db", "echo \"visit by $(hostname)\" >> /data/visits; sleep 3600",
                volumeMounts=[{"name": "data", "mountPath": "/data"}])}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}]}})
    node.wait_status("db-0", "Running", timeout=90)
    claim = node.get("pvc", "data-db-0")
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == "local-path"
    first_uid = node.get("pod", "db-0")["metadata"]["uid"]
    node.kubectl("delete", "pod", "db-0", "--wait=true", timeout=60)
    node.wait_for(lambda: node.get("pod", "db-0")["metadata"]["uid"] != first_uid, 60, what="db-0 recreated")
    node.wait_status("db-0", "Running", timeout=90)
    code, visits = exec_in(node.data_dir, "db-0", "db", ["cat", "/data/visits"])
    assert code == 0 and visits.splitlines() == ["visit by db-0", "visit by db-0"], visits
    volume = node.get("pv", claim["spec"]["volumeName"])
    node.kubectl("delete", "statefulset", "db", "--wait=true", timeout=60)
    node.kubectl("delete", "pvc", "data-db-0", "--wait=true", timeout=60)
    path = Path(volume["spec"]["hostPath"]["path"])
    assert path.parent == node.data_dir / "storage"  # the server's DATA_DIR/storage, made by the kubelet
    node.wait_for(lambda: not path.exists(), 30, what="the released volume's directory removed (reclaim Delete)")
    node.wait_for(lambda: "NotFound" in node.kubectl("get", "pv", volume["metadata"]["name"], check=False).stderr,
                  30, what="the volume gone once its directory is")


def test_oom_killed(node: NodeCluster) -> None:
    node.apply(pod("hog", shell("c", "a=$(head -c 200000000 /dev/zero | tr '\\0' x); sleep 5",
                                resources={"limits": {"memory": "20Mi"}}), restartPolicy="Never"))
    node.wait_status("hog", "OOMKilled", timeout=60)
    terminated = statuses(node, "hog")["c"]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137
    assert node.get("pod", "hog")["status"]["phase"] == "Failed"


def test_environment_from_config_map_secret_and_fields(node: NodeCluster) -> None:
    node.kubectl("create", "configmap", "settings", "--from-literal=mode=fast", "--from-literal=level=3")
    node.kubectl("create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    node.apply(pod("envs", shell("c", "sleep 3600", env=[
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MEMORY", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "GREETING", "value": "mode is $(MODE)"}],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CM_"}],
        resources={"limits": {"memory": "64Mi"}})))
    node.wait_status("envs", "Running")
    env = dict(line.split("=", 1) for line in exec_in(node.data_dir, "envs", "c", ["env"])[1].splitlines()
               if "=" in line)
    assert env["MODE"] == "fast" and env["PASSWORD"] == "s3cret" and env["POD_NAME"] == "envs"
    assert env["POD_IP"] == node.get("pod", "envs")["status"]["podIP"]
    assert env["MEMORY"] == "64" and env["GREETING"] == "mode is fast"
    assert env["CM_mode"] == "fast" and env["CM_level"] == "3"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.43.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"


def test_missing_config_map_is_a_config_error(node: NodeCluster) -> None:
    node.apply(pod("noconf", shell("c", "sleep 3600", env=[
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x"}}}])))
    node.wait_status("noconf", "CreateContainerConfigError")
    waiting = statuses(node, "noconf")["c"]["state"]["waiting"]
    assert waiting["message"] == 'configmap "absent" not found'


def test_run_as_non_root_refuses_a_root_image(node: NodeCluster) -> None:
    node.apply(pod("nonroot", shell("c", "sleep 3600"), securityContext={"runAsNonRoot": True}))
    node.wait_status("nonroot", "CreateContainerConfigError")
    message = statuses(node, "nonroot")["c"]["state"]["waiting"]["message"]
    assert message.startswith("container has runAsNonRoot and image will run as root")


def test_the_image_user_and_a_run_as_group_alone(node: NodeCluster) -> None:
    with tempfile.TemporaryFile() as rootfs:
        busybox_rootfs_tar(rootfs)
        rootfs.seek(0)
        import_rootfs(Engine(node.data_dir).images, rootfs, "as-nobody:1", changes={"User": "nobody"})
    image = {"image": "as-nobody:1", "imagePullPolicy": "Never"}
    node.apply(pod("imageuser", {**shell("plain", "sleep 3600"), **image},
                   {**shell("group", "sleep 3600"), **image, "securityContext": {"runAsGroup": 1234}}))
    node.wait_status("imageuser", "Running")
    assert exec_in(node.data_dir, "imageuser", "plain", ["sh", "-c", "id -u; id -g"])[1].split() == ["65534", "65534"]
    assert exec_in(node.data_dir, "imageuser", "group", ["sh", "-c", "id -u; id -g"])[1].split() == ["65534", "1234"]
    node.kubectl("delete", "pod", "imageuser", "--wait=false")


def test_pod_groups_join_every_process(node: NodeCluster) -> None:
    node.apply(pod("groups", shell("c", "sleep 3600"), securityContext={
        "runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000, 5000]}))
    node.wait_status("groups", "Running")
    # the container's own process, and a process exec'd into it later
    code, out = exec_in(node.data_dir, "groups", "c", ["sh", "-c", "grep -E '^(Uid|Gid|Groups)' /proc/1/status; "
                                                                   "id -u; id -g; id -G"])
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[1:] == ["1000"] * 4 and lines[1].split()[1:] == ["3000"] * 4
    assert sorted(lines[2].split()[1:]) == ["2000", "3000", "4000", "5000"]
    assert lines[3:5] == ["1000", "3000"] and set(lines[5].split()) == {"2000", "3000", "4000", "5000"}
    # the identity is reported in the status, as kubelets with supplementalGroupsPolicy do
    assert statuses(node, "groups")["c"]["user"] == {
        "linux": {"uid": 1000, "gid": 3000, "supplementalGroups": [3000, 2000, 4000, 5000]}}
    assert node.get("node", node.node)["status"]["features"] == {"supplementalGroupsPolicy": True}


def test_limits_reach_the_cgroups(node: NodeCluster) -> None:
    node.apply(pod("limited", shell("c", "sleep 3600", resources={
        "requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}})))
    node.wait_status("limited", "Running")
    uid = node.get("pod", "limited")["metadata"]["uid"]
    cid = running_container(node.data_dir, "limited", "c")
    pod_cgroup = f"{node.settings['cgroup-parent']}/kubepods/burstable/pod{uid}"
    for path in (pod_cgroup, f"{pod_cgroup}/{cid}"):
        dirs = cgroups.controller_dirs(path)
        assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 * 1024 * 1024)
        assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (dirs["cpu"] / "cpu.shares").read_text().strip() == "256"
    # the container sees its own limit
    code, out = exec_in(node.data_dir, "limited", "c", ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    assert code == 0 and out.strip() == str(64 * 1024 * 1024)


def test_crash_loop_back_off(node: NodeCluster) -> None:
    created = time.monotonic()
    node.apply(pod("crasher", shell("c", "echo crashing; exit 3")))
    runs: dict[int, tuple[float, float]] = {}  # restart count -> (started, finished) of that instance
    first_restart: list[float] = []

    def restarted_twice() -> bool:
        status = statuses(node, "crasher")["c"]
        if status["restartCount"] >= 1 and not first_restart:
            first_restart.append(time.monotonic() - created)
        term = status["lastState"].get("terminated") if "waiting" in status["state"] else None
        if term:
            runs[status["restartCount"]] = (parse_time(term["startedAt"]), parse_time(term["finishedAt"]))
        return 2 in runs

    node.wait_for(restarted_twice, 40, interval=0.1, what="two restarts")
    # the first restart comes at once, the second only once the 10 s back-off after the exit is over
    assert first_restart[0] < 5 and runs[2][0] - runs[1][1] >= 9, (first_restart, runs)
    node.wait_status("crasher", "CrashLoopBackOff", timeout=20)
    status = statuses(node, "crasher")["c"]
    waiting = status["state"]["waiting"]
    assert waiting["message"].startswith("back-off 20s restarting failed container=c pod=crasher_default(")
    last = status["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"
    assert node.get("pod", "crasher")["status"]["phase"] == "Running"
    events = node.kubectl("get", "events", "--field-selector", "involvedObject.name=crasher").stdout
    assert "BackOff" in events


def test_graceful_deletion_honours_the_grace_period(node: NodeCluster) -> None:
    started = time.monotonic()
    node.kubectl("delete", "pod", "graceful", "--wait=true", timeout=60)
    assert time.monotonic() - started < 10  # it exits on SIGTERM
    started = time.monotonic()
    node.kubectl("delete", "pod", "stubborn", "--wait=true", timeout=60)
    took = time.monotonic() - started
    assert 3 <= took < 15, took  # SIGKILL only when its 3 s grace period is over


def test_pod_files_are_gone_after_deletion(node: NodeCluster) -> None:
    uid = node.get("pod", "pair")["metadata"]["uid"]
    node.kubectl("delete", "pod", "pair", "--grace-period=1", "--wait=true", timeout=60)
    node.wait_for(lambda: "pair" not in node.kubectl("get", "pods", "-o", "name").stdout, 20, what="pair gone")
    kubelet = Path(node.data_dir) / "kubelet"
    assert not (kubelet / "pods" / uid).exists()
    assert not list((kubelet / "logs").glob(f"*_{uid}"))
    assert not [c for c in Engine(node.data_dir).containers.list()
                if c.config.labels.get("io.kubernetes.pod.uid") == uid]
    for parent in ("kubepods", "kubepods/burstable", "kubepods/besteffort"):
        assert not cgroups.controller_dirs(f"{node.settings['cgroup-parent']}/{parent}/pod{uid}")["memory"].exists()


def test_kubelet_restart_adopts_running_containers(node: NodeCluster) -> None:
    before = statuses(node, "limited")["c"]
    pids = _kubelet_pids(node)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGTERM)
    node.wait_for(lambda: (p := _kubelet_pids(node)) and p != pids, 30, what="a new kubelet")
    # a pod created while the kubelet was back runs, and the old one kept its container
    node.apply(pod("after-restart", shell("c", "sleep 3600")))
    node.wait_status("after-restart", "Running")
    after = statuses(node, "limited")["c"]
    assert after["containerID"] == before["containerID"] and after["restartCount"] == before["restartCount"]
    assert parse_time(after["state"]["running"]["startedAt"]) == parse_time(before["state"]["running"]["startedAt"])


def test_pod_deleted_while_the_kubelet_is_away_is_cleaned_up(node: NodeCluster) -> None:
    node.apply(pod("forgotten", shell("c", "sleep 3600")))
    node.wait_status("forgotten", "Running")
    uid = node.get("pod", "forgotten")["metadata"]["uid"]
    [pid] = _kubelet_pids(node)
    os.kill(pid, signal.SIGSTOP)  # frozen: it never hears of the deletion
    try:
        node.kubectl("delete", "pod", "forgotten", "--grace-period=0", "--force", timeout=30)
    finally:
        os.kill(pid, signal.SIGKILL)
    engine = Engine(node.data_dir)

    def gone() -> bool:
        return not [c for c in engine.containers.list() if c.config.labels.get("io.kubernetes.pod.uid") == uid]

    node.wait_for(gone, 30, what="the orphaned containers removed by the next kubelet")
    node.wait_for(lambda: not (Path(node.data_dir) / "kubelet" / "pods" / uid).exists(), 10, what="pod dir gone")
    assert not cgroups.controller_dirs(f"{node.settings['cgroup-parent']}/kubepods/besteffort/pod{uid}")[
        "memory"].exists()


def test_probes_drive_readiness_and_restarts(node: NodeCluster) -> None:
    probe = {"periodSeconds": 1, "failureThreshold": 1}
    node.apply(pod("probed", shell("c", "sleep 3600",
                                   readinessProbe={"exec": {"command": ["test", "-f", "/tmp/ready"]}, **probe},
                                   livenessProbe={"exec": {"command": ["test", "!", "-f", "/tmp/die"]}, **probe}),
                   terminationGracePeriodSeconds=1))
    node.wait_status("probed", "Running")
    assert node.kubectl("get", "pod", "probed", "--no-headers").stdout.split()[1] == "0/1"
    exec_in(node.data_dir, "probed", "c", ["touch", "/tmp/ready"])
    node.wait_for(lambda: statuses(node, "probed")["c"]["ready"], 15, what="ready")
    exec_in(node.data_dir, "probed", "c", ["touch", "/tmp/die"])
    node.wait_for(lambda: statuses(node, "probed")["c"]["restartCount"] == 1, 30, what="a liveness restart")
    status = statuses(node, "probed")["c"]
    assert status["ready"] is False  # the new instance has no /tmp/ready
    events = node.kubectl("get", "events", "--field-selector", "involvedObject.name=probed").stdout
    assert "Unhealthy" in events and "failed liveness probe, will be restarted" in events


def _kubelet_pids(node: NodeCluster) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"kubelet" in cmdline and str(node.data_dir).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_kubectl_logs_and_exec(node: NodeCluster) -> None:
    node.apply(pod("talker", shell("c", "echo hello; echo oops >&2; sleep 3600")))
    node.wait_status("talker", "Running")
    logs = node.wait_for(lambda: (out := node.kubectl("logs", "talker").stdout) and "hello" in out and out, 20,
                         what="logs")
    assert "hello" in logs and "oops" in logs
    result = node.kubectl("exec", "talker", "--", "sh", "-c", "echo $((6*7)); exit 3", check=False)
    assert result.stdout.strip() == "42" and result.returncode == 3
    previous = node.kubectl("logs", "talker", "--previous", check=False)
    assert previous.returncode != 0 and 'previous terminated container "c" in pod "talker" not found' in \
        previous.stderr
