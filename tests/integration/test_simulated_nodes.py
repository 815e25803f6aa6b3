"""Simulated nodes against a real API server: joining with the node token, node registration and
heartbeats, and pods bound to them going through Running/Ready, exits, restarts and deletion."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from cluster import Cluster
from harness import bare_server, connect, eventually, running

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver.nodetoken import TokenError, ca_hash, read_node_token
from pocketkube.client.rest import APIError, Client, ClientConfig
from pocketkube.kubelet.join import CA_FILE, join_config
from pocketkube.kubelet.simulated import (
    EXIT_CODE_ANNOTATION,
    KUBELET_VERSION,
    RUN_SECONDS_ANNOTATION,
    SimulatedNodes,
    SimulationConfig,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
CATALOG = ResourceCatalog()
NODES = CATALOG.resource("", "v1", "nodes")
PODS = CATALOG.resource("", "v1", "pods")
LEASES = CATALOG.resource("coordination.k8s.io", "v1", "leases")
assert NODES is not None and PODS is not None and LEASES is not None
NS = "default"
PREFIX = "simt-"
COUNT = 3


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(server: Cluster) -> AsyncIterator[Client]:
    async with connect(server) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(server: Cluster, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedNodes]:
    """Three nodes run by an agent that joined with the full node token (as `pocketkube agent` does)."""
    agent_dir = tmp_path_factory.mktemp("agent")
    config = await join_config(server.url, str(read_node_token(server.data_dir)), agent_dir)
    assert (agent_dir / CA_FILE).read_bytes() == (server.data_dir / "tls" / "ca.crt").read_bytes()
    async with Client(config) as client:
        nodes = SimulatedNodes(client, COUNT, SimulationConfig(
            name_prefix=PREFIX, cpu="8", memory="32Gi", pods=50, labels={"zone": "a"},
            taints=[{"key": "dedicated", "value": "sim", "effect": "PreferNoSchedule"}],
            pod_ready_delay=1.0, lease_interval=1.0, status_interval=2.0, delete_delay=0.3, restart_backoff=1.0))
        async with running(client, nodes=nodes):
            yield nodes


def conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


async def bound_pod(admin: Client, node: str, *, annotations: dict[str, str] | None = None,
                    restart_policy: str = "Always", containers: int = 1) -> str:
    """Create a pod and bind it to `node` through pods/binding, as the scheduler does."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    await admin.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "namespace": NS, "annotations": annotations or {}},
        "spec": {"restartPolicy": restart_policy, "terminationGracePeriodSeconds": 30,
                 "containers": [{"name": f"c{i}", "image": "busybox"} for i in range(containers)]}})
    await admin.request("POST", f"/api/v1/namespaces/{NS}/pods/{name}/binding", body={
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}})
    return name


async def pod(admin: Client, name: str) -> Obj:
    return await admin.get(PODS, name, NS)


# --- joining -------------------------------------------------------------------------------


async def test_cacerts_is_public_and_matches_the_token(server: Cluster) -> None:
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "ca.crt"))
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(server.url + "/cacerts", context=ctx).read())
    token = read_node_token(server.data_dir)
    assert ca_hash(body) == token.ca_hash
    assert str(token).startswith("K10") and f"::server:{token.secret}" in str(token)


async def test_token_forms_and_a_wrong_ca_hash(server: Cluster) -> None:
    token = read_node_token(server.data_dir)
    for presented in (str(token), token.secret):  # full token and bare secret both authenticate
        async with Client(await join_config(server.url, presented)) as client:
            assert (await client.list(NODES))["kind"] == "NodeList"
    forged = f"K10{'0' * 64}::server:{token.secret}"
    with pytest.raises(TokenError, match="does not match"):
        await join_config(server.url, forged)
    async with Client(ClientConfig(server.url, ca_data=(server.data_dir / "tls" / "ca.crt").read_bytes(),
                                   token="not-the-secret")) as client:
        with pytest.raises(APIError) as err:
            await client.list(NODES)
        assert err.value.status == 401


async def test_agent_cli_joins_and_registers(server: Cluster, admin: Client) -> None:
    token = (server.data_dir / "node-token").read_text().strip()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pocketkube.cli.main", "agent", "--simulate", "2", "--server", server.url,
        "--token", token, "--node-name-prefix", "cli-", "--labels", "tier=cli", "--taints", "only=cli:NoSchedule",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async def registered() -> list[Obj]:
            items = (await admin.list(NODES, label_selector="tier=cli"))["items"]
            return items if len(items) == 2 else []
        nodes = await eventually(registered, 30, "CLI agent nodes")
        assert sorted(n["metadata"]["name"] for n in nodes) == ["cli-0", "cli-1"]
        assert nodes[0]["spec"]["taints"] == [{"key": "only", "value": "cli", "effect": "NoSchedule"}]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        for name in ("cli-0", "cli-1"):
            await admin.delete(NODES, name)
    forged = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pocketkube.cli.main", "agent", "--simulate", "1", "--server", server.url,
        "--token", f"K10{'f' * 64}::server:x", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(forged.communicate(), 30)
    assert forged.returncode == 1 and b"does not match" in stderr


# --- nodes ---------------------------------------------------------------------------------


async def test_nodes_registered_ready_with_kubelet_shape(admin: Client, sim: SimulatedNodes) -> None:
    nodes = {n["metadata"]["name"]: n for n in (await admin.list(NODES, label_selector="type=simulated"))["items"]
             if n["metadata"]["name"].startswith(PREFIX)}
    assert sorted(nodes) == [f"{PREFIX}{i}" for i in range(COUNT)]
    cidrs = set()
    for name, node in nodes.items():
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == name and labels["kubernetes.io/os"] == "linux"
        assert labels["zone"] == "a" and labels["type"] == "simulated" and labels["kubernetes.io/arch"]
        status = node["status"]
        assert status["capacity"]["cpu"] == "8" and status["capacity"]["memory"] == "32Gi"
        assert status["capacity"]["pods"] == "50" and status["allocatable"] == status["capacity"]
        assert "ephemeral-storage" in status["capacity"]
        info = status["nodeInfo"]
        assert info["kubeletVersion"] == KUBELET_VERSION and info["containerRuntimeVersion"] == "simulated://"
        assert info["operatingSystem"] == "linux" and info["architecture"]
        ready = conditions(node)["Ready"]
        assert (ready["status"], ready["reason"], ready["message"]) == (
            "True", "KubeletReady", "kubelet is posting ready status")
        assert conditions(node)["MemoryPressure"]["reason"] == "KubeletHasSufficientMemory"
        assert conditions(node)["DiskPressure"]["reason"] == "KubeletHasNoDiskPressure"
        assert conditions(node)["PIDPressure"]["reason"] == "KubeletHasSufficientPID"
        addresses = {a["type"]: a["address"] for a in status["addresses"]}
        assert addresses["Hostname"] == name and ipaddress.ip_address(addresses["InternalIP"])
        assert node["spec"]["taints"] == [{"key": "dedicated", "value": "sim", "effect": "PreferNoSchedule"}]
        cidrs.add(node["spec"]["podCIDR"])
        assert node["spec"]["podCIDRs"] == [node["spec"]["podCIDR"]]
    assert len(cidrs) == COUNT  # every node its own pod range


async def test_leases_renewed_and_status_heartbeats(admin: Client, sim: SimulatedNodes) -> None:
    name = f"{PREFIX}0"
    lease = await admin.get(LEASES, name, "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == name and lease["spec"]["leaseDurationSeconds"] == 40
    node = await admin.get(NODES, name)
    assert lease["metadata"]["ownerReferences"][0] == {"apiVersion": "v1", "kind": "Node", "name": name,
                                                       "uid": node["metadata"]["uid"]}

    async def renewed() -> bool:
        return (await admin.get(LEASES, name, "kube-node-lease"))["spec"]["renewTime"] != lease["spec"]["renewTime"]
    await eventually(renewed, 5, "lease renewal")
    heartbeat = conditions(node)["Ready"]["lastHeartbeatTime"]

    async def reported() -> bool:
        return conditions(await admin.get(NODES, name))["Ready"]["lastHeartbeatTime"] != heartbeat
    await eventually(reported, 6, "node status report")
    # The transition time stays: the node never stopped being Ready.
    assert conditions(await admin.get(NODES, name))["Ready"]["lastTransitionTime"] == \
        conditions(node)["Ready"]["lastTransitionTime"]


async def test_kubectl_shows_ready_nodes(server: Cluster, sim: SimulatedNodes) -> None:
    out = await asyncio.to_thread(server.kubectl, "get", "nodes", "-l", "zone=a", "-o", "wide")
    lines = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [(cols[0], cols[1]) for cols in lines] == [(f"{PREFIX}{i}", "Ready") for i in range(COUNT)]
    assert all(KUBELET_VERSION in cols for cols in lines)


# --- pods ----------------------------------------------------------------------------------


async def test_bound_pod_runs_then_becomes_ready(admin: Client, sim: SimulatedNodes) -> None:
    node = await admin.get(NODES, f"{PREFIX}1")
    name = await bound_pod(admin, f"{PREFIX}1", containers=2)

    async def running() -> Obj | None:
        p = await pod(admin, name)
        return p if p["status"].get("phase") == "Running" else None
    p = await eventually(running, 10, "Running")
    status = p["status"]
    # Ready comes only after the configured delay.
    if conditions(p)["Ready"]["status"] == "False":
        assert conditions(p)["Ready"]["reason"] == "ContainersNotReady"
        assert conditions(p)["Ready"]["message"] == "containers with unready status: [c0 c1]"
    internal_ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert status["hostIP"] == internal_ip and status["hostIPs"] == [{"ip": internal_ip}]
    assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(node["spec"]["podCIDR"])
    assert status["podIPs"] == [{"ip": status["podIP"]}] and status["startTime"]
    for cs in status["containerStatuses"]:
        assert cs["image"] == "docker.io/library/busybox:latest" and cs["restartCount"] == 0
        assert cs["containerID"].startswith("simulated://") and cs["started"] is True
        assert "startedAt" in cs["state"]["running"]

    async def ready() -> Obj | None:
        p = await pod(admin, name)
        return p if conditions(p)["Ready"]["status"] == "True" else None
    p = await eventually(ready, 10, "Ready")
    conds = conditions(p)
    for ctype in ("PodScheduled", "PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"):
        assert conds[ctype]["status"] == "True" and conds[ctype]["lastTransitionTime"]
    assert all(cs["ready"] for cs in p["status"]["containerStatuses"])
    assert p["status"]["qosClass"] == "BestEffort"  # what the API server set stays
    other = await bound_pod(admin, f"{PREFIX}1")
    other_ip = (await eventually(lambda: _ip(admin, other), 10))
    assert other_ip != p["status"]["podIP"]


async def _ip(admin: Client, name: str) -> str:
    return (await pod(admin, name))["status"].get("podIP", "")


async def test_run_seconds_then_succeeded_or_failed(admin: Client, sim: SimulatedNodes) -> None:
    ok = await bound_pod(admin, f"{PREFIX}0", annotations={RUN_SECONDS_ANNOTATION: "1"}, restart_policy="Never")
    bad = await bound_pod(admin, f"{PREFIX}0", annotations={RUN_SECONDS_ANNOTATION: "1", EXIT_CODE_ANNOTATION: "3"},
                          restart_policy="Never")

    async def phase(name: str, want: str) -> Obj | None:
        p = await pod(admin, name)
        return p if p["status"].get("phase") == want else None
    done = await eventually(lambda: phase(ok, "Succeeded"), 10, "Succeeded")
    term = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert conditions(done)["Ready"]["status"] == "False" and conditions(done)["Ready"]["reason"] == "PodCompleted"
    assert conditions(done)["PodReadyToStartContainers"]["status"] == "False"
    failed = await eventually(lambda: phase(bad, "Failed"), 10, "Failed")
    term = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    assert conditions(failed)["ContainersReady"]["reason"] == "PodFailed"


async def test_restart_policy_counts_restarts_with_backoff(admin: Client, sim: SimulatedNodes) -> None:
    always = await bound_pod(admin, f"{PREFIX}2", annotations={RUN_SECONDS_ANNOTATION: "1"})
    on_failure_ok = await bound_pod(admin, f"{PREFIX}2", annotations={RUN_SECONDS_ANNOTATION: "1"},
                                    restart_policy="OnFailure")
    seen_backoff: list[Obj] = []

    async def restarted_twice() -> Obj | None:
        p = await pod(admin, always)
        cs = (p["status"].get("containerStatuses") or [{}])[0]
        if "waiting" in cs.get("state", {}):
            seen_backoff.append(cs)
        return p if cs.get("restartCount", 0) >= 2 else None
    p = await eventually(restarted_twice, 15, "two restarts")
    cs = p["status"]["containerStatuses"][0]
    assert p["status"]["phase"] == "Running"
    assert cs["lastState"]["terminated"]["exitCode"] == 0 and cs["lastState"]["terminated"]["reason"] == "Completed"
    assert seen_backoff, "CrashLoopBackOff was never reported between restarts"
    waiting = seen_backoff[0]["state"]["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff"
    assert waiting["message"].startswith("back-off 1s restarting failed container=c0 pod=")
    # OnFailure with exit 0: no restart, the pod completes.
    done = await eventually(lambda: _phase_is(admin, on_failure_ok, "Succeeded"), 10, "OnFailure Succeeded")
    assert done["status"]["containerStatuses"][0]["restartCount"] == 0


async def _phase_is(admin: Client, name: str, want: str) -> Obj | None:
    p = await pod(admin, name)
    return p if p["status"].get("phase") == want else None


async def test_graceful_deletion_finishes_the_pod(admin: Client, sim: SimulatedNodes) -> None:
    name = await bound_pod(admin, f"{PREFIX}0")
    await eventually(lambda: _phase_is(admin, name, "Running"), 10, "Running")
    await admin.delete(PODS, name, NS)
    terminating = await pod(admin, name)  # grace 30 s: the API keeps it until the kubelet is done
    assert terminating["metadata"]["deletionTimestamp"]

    async def gone() -> bool:
        try:
            await pod(admin, name)
        except APIError as err:
            return err.not_found
        return False
    started = time.monotonic()
    await eventually(gone, 10, "pod deleted by the agent")
    assert time.monotonic() - started < 5  # min(grace, delete_delay), not the 30 s grace
    # Its IP is free again for the next pod on the node.
    assert all(name not in key for key in sim.nodes[f"{PREFIX}0"].pod_ips)


async def test_pods_on_other_nodes_are_left_alone(admin: Client, sim: SimulatedNodes) -> None:
    name = await bound_pod(admin, "somebody-elses-node")
    await asyncio.sleep(1.0)
    p = await pod(admin, name)
    assert p["status"]["phase"] == "Pending" and "containerStatuses" not in p["status"]
    await admin.delete(PODS, name, NS, grace_period_seconds=0)


async def test_deleted_node_is_not_reregistered(admin: Client, server: Cluster) -> None:
    config = await join_config(server.url, str(read_node_token(server.data_dir)))
    async with Client(config) as client:
        nodes = SimulatedNodes(client, 1, SimulationConfig(name_prefix="gone-", lease_interval=0.3,
                                                           status_interval=0.3))
        stop = asyncio.Event()
        task = asyncio.create_task(nodes.run(stop))
        await asyncio.wait_for(nodes.ready.wait(), 15)
        await admin.delete(NODES, "gone-0")
        await eventually(lambda: _true(nodes.nodes["gone-0"].removed), 5, "agent noticed the deletion")
        await asyncio.sleep(1.0)
        with pytest.raises(APIError) as err:
            await admin.get(NODES, "gone-0")
        assert err.value.not_found
        stop.set()
        await asyncio.wait_for(task, 10)


async def _true(value: bool) -> bool:
    return value
