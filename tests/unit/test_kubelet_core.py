"""The kubelet's pure parts against upstream's rules: pod phase and conditions, container status shapes,
environment building, DNS and hosts files, QoS classes and cgroup values, node conditions and podCIDRs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pocketkube.kubelet import cgroups, node, podnetwork, status
from pocketkube.kubelet.env import EnvContext, EnvError, container_env, expand, service_env
from pocketkube.kubelet.podworker import default_pull_policy

Obj = dict[str, Any]
T0 = 1_800_000_000.0


def _pod(**spec: Any) -> Obj:
    return {"metadata": {"name": "web", "namespace": "prod", "uid": "u1", "generation": 1},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}, "status": {}}


def _instance(state: str, exit_code: int = 0, restarts: int = 0, **kw: Any) -> status.InstanceState:
    return status.InstanceState(container_id=f"pocketkube://{state}{restarts}", state=state, restart_count=restarts,
                                image="docker.io/library/busybox:latest", image_id="sha256:x", started_at=T0,
                                finished_at=T0 + 5 if state == "exited" else 0.0, exit_code=exit_code, **kw)


def _observe(pod: Obj, views: list[status.ContainerView], init: list[status.ContainerView] = (),
             terminal: bool = False) -> Obj:
    seen = status.PodObservation(init_views=list(init), views=views, sandbox_ready=True, host_ip="10.0.0.1",
                                 pod_ips=["10.42.0.5"], start_time=T0, terminal=terminal)
    return status.pod_status(pod, seen, T0 + 10)


def test_running_ready_pod() -> None:
    got = _observe(_pod(), [status.ContainerView("c", "busybox", _instance("running"), ready=True, started=True)])
    assert got["phase"] == "Running" and got["podIP"] == "10.42.0.5" and got["hostIPs"] == [{"ip": "10.0.0.1"}]
    assert [c["type"] for c in got["conditions"]] == ["PodReadyToStartContainers", "Initialized", "Ready",
                                                      "ContainersReady"]
    assert all(c["status"] == "True" for c in got["conditions"])
    cs = got["containerStatuses"][0]
    assert cs["state"] == {"running": {"startedAt": status.rfc3339(T0)}} and cs["ready"] and cs["started"]
    assert cs["lastState"] == {} and cs["containerID"] == "pocketkube://running0"


def test_crash_loop_shows_the_last_termination() -> None:
    view = status.ContainerView("c", "busybox", _instance("exited", 3, restarts=2), waiting_reason="CrashLoopBackOff",
                                waiting_message="back-off 20s restarting failed container=c pod=web_prod(u1)")
    got = _observe(_pod(), [view])
    cs = got["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff" and cs["restartCount"] == 2
    assert cs["lastState"]["terminated"]["exitCode"] == 3 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert got["phase"] == "Running"  # restartPolicy Always: on its way back
    ready = {c["type"]: c for c in got["conditions"]}["Ready"]
    assert ready["reason"] == "ContainersNotReady" and ready["message"] == "containers with unready status: [c]"


def test_completed_and_failed_phases() -> None:
    done = _observe(_pod(restartPolicy="Never"), [status.ContainerView("c", "busybox", _instance("exited", 0))])
    assert done["phase"] == "Succeeded"
    assert {c["type"]: c.get("reason") for c in done["conditions"]}["Ready"] == "PodCompleted"
    failed = _observe(_pod(restartPolicy="Never"),
                      [status.ContainerView("c", "busybox", _instance("exited", 137, reason="OOMKilled"))])
    assert failed["phase"] == "Failed"
    assert failed["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    retrying = _observe(_pod(restartPolicy="OnFailure"), [status.ContainerView("c", "busybox",
                                                                                _instance("exited", 1))])
    assert retrying["phase"] == "Running"


def test_init_containers_gate_initialized() -> None:
    pod = _pod(initContainers=[{"name": "setup", "image": "busybox"}])
    got = _observe(pod, [status.ContainerView("c", "busybox")],
                   init=[status.ContainerView("setup", "busybox", _instance("running"), started=True)])
    assert got["phase"] == "Pending"
    initialized = {c["type"]: c for c in got["conditions"]}["Initialized"]
    assert initialized["status"] == "False" and initialized["reason"] == "ContainersNotInitialized"
    assert initialized["message"] == "containers with incomplete status: [setup]"
    assert got["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}


def test_sidecar_counts_once_started() -> None:
    pod = _pod(initContainers=[{"name": "side", "image": "busybox", "restartPolicy": "Always"}])
    got = _observe(pod, [status.ContainerView("c", "busybox", _instance("running"), ready=True, started=True)],
                   init=[status.ContainerView("side", "busybox", _instance("running"), ready=True, started=True)])
    assert got["phase"] == "Running"
    assert all(c["status"] == "True" for c in got["conditions"])


def test_transition_times_are_kept() -> None:
    pod = _pod()
    first = _observe(pod, [status.ContainerView("c", "busybox", _instance("running"), ready=True, started=True)])
    pod["status"] = first
    seen = status.PodObservation([], [status.ContainerView("c", "busybox", _instance("running"), ready=True,
                                                           started=True)], True, "10.0.0.1", ["10.42.0.5"], T0)
    again = status.pod_status(pod, seen, T0 + 100)
    assert again["conditions"] == first["conditions"]
    assert not status.status_changed(pod, again)


def test_pull_policy_defaults() -> None:
    assert default_pull_policy("busybox") == "Always"
    assert default_pull_policy("busybox:latest") == "Always"
    assert default_pull_policy("busybox:1.36") == "IfNotPresent"
    assert default_pull_policy("registry:5000/app@sha256:" + "a" * 64) == "IfNotPresent"


# --- env ------------------------------------------------------------------------------------


def _context(objects: dict[tuple[str, str], Obj], services: list[Obj] = ()) -> EnvContext:
    async def configmap(namespace: str, name: str) -> Obj | None:
        return objects.get(("cm", name))

    async def secret(namespace: str, name: str) -> Obj | None:
        return objects.get(("secret", name))

    async def list_services(namespace: str) -> list[Obj]:
        return [s for s in services if s["metadata"]["namespace"] == namespace]

    return EnvContext("n1", ["10.0.0.1"], ["10.42.0.5"], {"cpu": "2", "memory": "1Gi"}, configmap, secret,
                      list_services)


def test_expansion_rules() -> None:
    assert expand("$(A)-$(B)-$$(A)-$(", {"A": "1"}) == "1-$(B)-$(A)-$("


def test_service_link_variables() -> None:
    env = service_env([{"metadata": {"name": "my-db"}, "spec": {"clusterIP": "10.43.0.20", "ports": [
        {"name": "sql", "port": 5432, "protocol": "TCP"}]}}])
    assert env["MY_DB_SERVICE_HOST"] == "10.43.0.20" and env["MY_DB_SERVICE_PORT"] == "5432"
    assert env["MY_DB_SERVICE_PORT_SQL"] == "5432" and env["MY_DB_PORT"] == "tcp://10.43.0.20:5432"
    assert env["MY_DB_PORT_5432_TCP_ADDR"] == "10.43.0.20" and env["MY_DB_PORT_5432_TCP_PROTO"] == "tcp"


def test_container_env_sources_and_errors() -> None:
    objects = {("cm", "conf"): {"data": {"mode": "fast", "bad key": "x"}},
               ("secret", "creds"): {"data": {"pw": "czNjcmV0"}}}
    kubernetes = {"metadata": {"name": "kubernetes", "namespace": "default"},
                  "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443}]}}
    mine = {"metadata": {"name": "api", "namespace": "prod"}, "spec": {"clusterIP": "10.43.0.9",
                                                                        "ports": [{"port": 80}]}}
    pod = _pod()
    container = {"name": "c", "resources": {"limits": {"cpu": "500m"}}, "envFrom": [
        {"configMapRef": {"name": "conf"}, "prefix": "CM_"}], "env": [
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
        # a zero divisor is an unset one (upstream serializes it so): 1
        {"name": "CORES", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MSG", "value": "$(CM_mode) on $(NODE)"},
        {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}}}]}
    pod["spec"]["containers"] = [container]
    env = dict(e.split("=", 1) for e in asyncio.run(container_env(pod, container,
                                                                   _context(objects, [kubernetes, mine]))))
    assert env["CM_mode"] == "fast" and "CM_bad key" not in env
    assert env["PW"] == "s3cret" and env["CPU"] == "500" and env["MEM"] == str(1024 ** 3)
    assert env["CORES"] == "1"  # 500m in cores, rounded up
    assert env["MSG"] == "fast on n1" and "OPT" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "10.43.0.1" and env["API_SERVICE_HOST"] == "10.43.0.9"
    no_links = asyncio.run(container_env(_pod(enableServiceLinks=False), {"name": "c"},
                                         _context(objects, [kubernetes, mine])))
    assert not any(e.startswith("API_") for e in no_links) and "KUBERNETES_SERVICE_PORT=443" in no_links
    with pytest.raises(EnvError, match="couldn't find key nope in Secret prod/creds"):
        asyncio.run(container_env(pod, {"name": "c", "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]}, _context(objects)))
    with pytest.raises(EnvError, match="unsupported container resource : limits.gpu"):
        asyncio.run(container_env(pod, {"name": "c", "env": [
            {"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]}, _context(objects)))
    with pytest.raises(EnvError, match='configmap "absent" not found'):
        asyncio.run(container_env(pod, {"name": "c", "envFrom": [{"configMapRef": {"name": "absent"}}]},
                                  _context(objects)))


# --- DNS and hosts -----------------------------------------------------------------------------


def test_resolv_conf_per_dns_policy(tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n")
    dns = podnetwork.DNSSettings(["10.43.0.10"], "cluster.local", host)
    cluster = podnetwork.pod_resolv_conf(_pod(), dns).render()
    assert cluster == ("search prod.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
                       "nameserver 10.43.0.10\noptions ndots:5\n")
    assert podnetwork.pod_resolv_conf(_pod(dnsPolicy="Default"), dns).render() == \
        "search corp.example\nnameserver 192.0.2.53\noptions edns0\n"
    assert podnetwork.pod_resolv_conf(_pod(hostNetwork=True), dns).nameservers == ["192.0.2.53"]
    assert podnetwork.pod_resolv_conf(_pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"),
                                      dns).nameservers == ["10.43.0.10"]
    custom = podnetwork.pod_resolv_conf(_pod(dnsPolicy="None", dnsConfig={
        "nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"},
                                                                          {"name": "rotate"}]}), dns)
    assert custom.render() == "search a.example\nnameserver 1.1.1.1\noptions ndots:2 rotate\n"
    merged = podnetwork.pod_resolv_conf(_pod(dnsConfig={"options": [{"name": "ndots", "value": "1"}]}), dns)
    assert merged.options == ["ndots:1"]
    assert podnetwork.default_cluster_dns("10.43.0.0/16") == "10.43.0.10"


def test_hosts_file_and_hostname() -> None:
    pod = _pod(hostname="db-0", subdomain="db", hostAliases=[{"ip": "127.0.0.2", "hostnames": ["foo", "bar"]}])
    hostname, fqdn = podnetwork.pod_hostname(pod, "cluster.local")
    assert (hostname, fqdn) == ("db-0", "db-0.db.prod.svc.cluster.local")
    text = podnetwork.hosts_file(pod, ["10.42.0.5"], hostname, fqdn)
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert "10.42.0.5\tdb-0.db.prod.svc.cluster.local\tdb-0\n" in text
    assert text.endswith("\n# Entries added by HostAliases.\n127.0.0.2\tfoo\tbar\n")
    assert podnetwork.pod_hostname(_pod(), "cluster.local") == ("web", "")
    long = {"metadata": {"name": "x" * 62 + "-yy", "namespace": "d"}, "spec": {}}
    assert podnetwork.pod_hostname(long, "cluster.local")[0] == "x" * 62


# --- QoS and cgroups ----------------------------------------------------------------------------


def _resources(requests: Obj | None = None, limits: Obj | None = None) -> Obj:
    return {"name": "c", "resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v}}


def test_qos_classes_and_paths() -> None:
    def pod(*containers: Obj) -> Obj:
        return {"metadata": {"uid": "u"}, "spec": {"containers": list(containers)}}

    guaranteed = pod(_resources({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"}))
    burstable = pod(_resources({"cpu": "100m"}))
    assert cgroups.qos_class(guaranteed) == "Guaranteed"
    assert cgroups.qos_class(burstable) == "Burstable"
    assert cgroups.qos_class(pod({"name": "c"})) == "BestEffort"
    tree = cgroups.PodCgroups("/pocketkube")
    assert tree.path(guaranteed) == "/pocketkube/kubepods/podu"
    assert tree.path(burstable) == "/pocketkube/kubepods/burstable/podu"
    assert tree.path(pod({"name": "c"})) == "/pocketkube/kubepods/besteffort/podu"


def test_cgroup_values() -> None:
    limits = cgroups.container_resources(_resources({"cpu": "250m"}, {"cpu": "500m", "memory": "64Mi"}))
    assert (limits.cpu_shares, limits.cpu_quota, limits.cpu_period) == (256, 50_000, 100_000)
    assert limits.memory == limits.memory_swap == 64 * 1024 * 1024
    assert cgroups.container_resources({"name": "c"}).cpu_shares == 2
    pod = {"metadata": {"uid": "u"}, "spec": {
        "containers": [_resources({"cpu": "1"}, {"cpu": "1", "memory": "100Mi"}),
                       _resources({"cpu": "500m"}, {"cpu": "1", "memory": "50Mi"})],
        "initContainers": [_resources({"cpu": "2"}, {"cpu": "2", "memory": "10Mi"})]}}
    total = cgroups.pod_resources(pod)
    assert total.cpu_shares == 2048 and total.cpu_quota == 200_000  # the init container's 2 CPUs win
    assert total.memory == 150 * 1024 * 1024


# --- node ---------------------------------------------------------------------------------------


def test_node_conditions_and_allocatable() -> None:
    readings = node.Readings(memory_total=8 << 30, memory_available=50 << 20, fs_total=100 << 30,
                             fs_available=50 << 30, inodes_total=1000, inodes_free=900, pids_used=100,
                             pid_max=32768)
    got = {c["type"]: c for c in node.conditions(readings, "", [], T0)}
    assert got["MemoryPressure"]["status"] == "True"
    assert got["MemoryPressure"]["reason"] == "KubeletHasInsufficientMemory"
    assert got["DiskPressure"]["status"] == "False" and got["Ready"]["reason"] == "KubeletReady"
    again = {c["type"]: c for c in node.conditions(readings, "", list(got.values()), T0 + 60)}
    assert again["Ready"]["lastTransitionTime"] == got["Ready"]["lastTransitionTime"]
    assert again["Ready"]["lastHeartbeatTime"] != got["Ready"]["lastHeartbeatTime"]
    allocatable = node.allocatable(readings, 110)
    assert allocatable["memory"] == f"{((8 << 30) - (100 << 20)) // 1024}Ki"
    assert allocatable["ephemeral-storage"] == str(int((100 << 30) * 0.9)) and allocatable["pods"] == "110"


def test_free_pod_cidr() -> None:
    nodes = [{"spec": {"podCIDR": "10.42.0.0/24"}}, {"spec": {"podCIDRs": ["10.42.2.0/24"]}}]
    assert node.free_pod_cidr(nodes, "10.42.0.0/16", 24) == "10.42.1.0/24"
    with pytest.raises(ValueError, match="no /24 left"):
        node.free_pod_cidr([{"spec": {"podCIDR": "10.42.0.0/23"}}], "10.42.0.0/23", 24)
