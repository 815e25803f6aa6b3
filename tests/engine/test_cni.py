"""CNI chains against the real plugins in /usr/lib/cni, real network namespaces, bridges and iptables.

Every test works on its own bridge ("pkt<hex>") and subnet (10.251.X.0/24) so nothing meets the engine's
default network or a running cluster; traffic goes only to 127.0.0.1 and into namespaces made here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import shlex
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pocketkube.network.cni import (
    CNI,
    AttachResult,
    CNIError,
    PortMapping,
    bridge_conflist,
    engine_default_network,
    plugin_chain_name,
)

# A TCP server for inside a namespace: answers every connection with argv[2], then hangs up.
ECHO_SERVER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen()
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(sys.argv[2].encode())
    conn.close()
"""

# Reads what a TCP server sends: argv[1] host, argv[2] port.
TCP_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as conn:
    print(conn.recv(100).decode())
"""

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
SHARED_PORTMAP_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK")


def run_sync(*command: str, check: bool = True) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


async def run(*command: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await proc.communicate()
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({proc.returncode}): {stderr.decode().strip()}")
    return stdout.decode()


async def nat_rules() -> str:
    return await run("iptables", "-w", "-t", "nat", "-S")


def free_host_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unused_test_subnet() -> str:
    routes = run_sync("ip", "-4", "route", "show", "table", "all")
    for _ in range(50):
        subnet = f"10.251.{secrets.randbelow(256)}.0/24"
        if subnet.split("/")[0].rsplit(".", 1)[0] + "." not in routes:
            return subnet
    raise AssertionError("no free 10.251.X.0/24 test subnet")


def nat_listing(tool: str = "iptables") -> list[str]:
    return run_sync(tool, "-w", "-t", "nat", "-S").splitlines()


def remove_idle_portmap_chains() -> None:
    rules = nat_listing()
    if any(line.startswith("-A CNI-HOSTPORT-DNAT ") for line in rules):
        return  # somebody's published ports live there
    for line in rules:
        words = shlex.split(line)
        if words[0] == "-A" and words[1] not in SHARED_PORTMAP_CHAINS and words[-1] in SHARED_PORTMAP_CHAINS:
            run_sync("iptables", "-w", "-t", "nat", "-D", *words[1:])
    for flag in ("-F", "-X"):
        for chain in SHARED_PORTMAP_CHAINS:
            run_sync("iptables", "-w", "-t", "nat", flag, chain, check=False)


@pytest.fixture(scope="module", autouse=True)
def restore_host_nat() -> Iterator[None]:
    """Plugins change host-wide state shared by every CNI user: the nat tables, portmap's CNI-HOSTPORT-*
    chains, and bridge turns on IPv4 forwarding. Undo what this module did, unless somebody else's rules
    have arrived meanwhile (then they need all of it)."""
    tables_before = run_sync("nft", "list", "tables")
    portmap_chains_before = "-N CNI-HOSTPORT-DNAT" in nat_listing()
    forwarding_before = IP_FORWARD.read_text().strip()
    yield
    if not portmap_chains_before:
        remove_idle_portmap_chains()
    nat_idle = True
    for family, tool in (("ip", "iptables"), ("ip6", "ip6tables")):
        idle = all(line.startswith("-P ") for line in nat_listing(tool))
        nat_idle = nat_idle and idle
        if idle and f"table {family} nat" not in tables_before:
            run_sync("nft", "delete", "table", family, "nat", check=False)
    if nat_idle and forwarding_before == "0":
        IP_FORWARD.write_text("0")


class Lab:
    """Creates networks, namespaces and attachments for one test and removes all of them afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tag = secrets.token_hex(2)
        self.bridges: list[str] = []
        self.namespaces: list[str] = []
        self.attachments: list[tuple[CNI, str, str]] = []
        self.servers: list[asyncio.subprocess.Process] = []

    def network(self, *, port_map: bool = True, prefix_length: int = 24) -> CNI:
        index = len(self.bridges)
        bridge = f"pkt{self.tag}{index}"
        self.bridges.append(bridge)
        subnet = unused_test_subnet().replace("/24", f"/{prefix_length}")
        conflist = bridge_conflist(f"pkt-{self.tag}-{index}", bridge=bridge, subnet=subnet,
                                   data_dir=self.root / "ipam", port_map=port_map)
        return CNI(conflist, cache_dir=self.root / "results")

    def container_id(self, name: str) -> str:
        return f"pkt{self.tag}-{name}"

    async def namespace(self, name: str) -> str:
        netns = f"pkt-{self.tag}-{name}"
        await run("ip", "netns", "add", netns)
        self.namespaces.append(netns)
        await run("ip", "-n", netns, "link", "set", "lo", "up")
        return f"/run/netns/{netns}"

    async def attach(self, cni: CNI, name: str, **kwargs: Any) -> tuple[str, AttachResult]:
        """A namespace called ``name`` attached to ``cni`` as container ``container_id(name)``."""
        netns = await self.namespace(name)
        self.attachments.append((cni, self.container_id(name), netns))
        return netns, await cni.add(self.container_id(name), netns, **kwargs)

    async def serve(self, netns: str, port: int, answer: str) -> None:
        server = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", Path(netns).name, sys.executable, "-c", ECHO_SERVER, str(port), answer,
            stdout=asyncio.subprocess.PIPE)
        self.servers.append(server)
        assert server.stdout is not None
        assert await asyncio.wait_for(server.stdout.readline(), 10) == b"ready\n"

    async def cleanup(self) -> None:
        for server in self.servers:
            if server.returncode is None:
                server.kill()  # by PID: `ip netns exec` execs the server itself
            await server.wait()
        failures = []
        for cni, container_id, netns in reversed(self.attachments):
            try:
                await cni.delete(container_id, netns)
            except CNIError as exc:
                failures.append(exc)
        for netns in self.namespaces:
            await run("ip", "netns", "del", netns, check=False)
        for bridge in self.bridges:
            await run("ip", "link", "del", bridge, check=False)
        assert not failures, failures


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        await lab.cleanup()


async def ns_exec(netns: str, *command: str) -> str:
    return await run("ip", "netns", "exec", Path(netns).name, *command)


async def ping(address: str, *, from_netns: str | None = None) -> None:
    command = ("busybox", "ping", "-c", "1", "-W", "2", address)
    await (ns_exec(from_netns, *command) if from_netns else run(*command))


async def read_tcp(host: str, port: int) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    try:
        return (await asyncio.wait_for(reader.read(100), 5)).decode()
    finally:
        writer.close()


def address(cidr: str) -> str:
    return cidr.split("/")[0]


def lease_file(cni: CNI, ip_cidr: str) -> Path:
    return Path(cni.plugins[0]["ipam"]["dataDir"]) / cni.name / address(ip_cidr)


def attachment_records(cni: CNI) -> list[str]:
    return [path.name for path in cni.cache_dir.rglob("*.json")]


def subnet_of(cni: CNI) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cni.plugins[0]["ipam"]["ranges"][0][0]["subnet"])


async def assert_no_rules_for(cni: CNI, container_id: str) -> None:
    rules = await nat_rules()
    assert container_id not in rules
    assert plugin_chain_name(cni.name, container_id) not in rules
    assert plugin_chain_name(cni.name, container_id, "DN-") not in rules


async def test_two_namespaces_share_a_network(lab: Lab) -> None:
    cni = lab.network()
    # At once, as the spec allows for different containers; the plugins lock the bridge and IPAM themselves.
    # Kubernetes-style args: IgnoreUnknown lets bridge and host-local accept keys they do not know.
    (ns_a, a), (ns_b, b) = await asyncio.gather(
        lab.attach(cni, "a"),
        lab.attach(cni, "b", args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "b"}))

    subnet = subnet_of(cni)
    for netns, result in ((ns_a, a), (ns_b, b)):
        assert result.interface == "eth0"
        assert len(result.ips) == 1 and ipaddress.ip_interface(result.ips[0]).network == subnet
        assert result.gateway == str(subnet[1])
        assert result.mac and result.mac in await ns_exec(netns, "ip", "link", "show", "eth0")
        assert result.raw["cniVersion"] == "1.0.0"
    assert a.ips != b.ips

    await ping(address(b.ips[0]), from_netns=ns_a)
    await ping(address(a.ips[0]), from_netns=ns_b)
    await ping(address(a.ips[0]))  # the host, through the bridge it routes for the subnet
    await ping(address(b.ips[0]))


async def test_published_port_is_reachable_from_host_loopback(lab: Lab) -> None:
    cni = lab.network()
    host_port = free_host_port()
    ns_web, web = await lab.attach(cni, "web", port_mappings=[PortMapping(host_port, 8080)])
    ns_peer, _ = await lab.attach(cni, "peer")
    await lab.serve(ns_web, 8080, "hello from web")

    assert await read_tcp("127.0.0.1", host_port) == "hello from web"
    bridge = cni.plugins[0]["bridge"]
    assert (await run("sysctl", "-n", f"net.ipv4.conf.{bridge}.route_localnet")).strip() == "1"
    # Through the gateway's published port: from a neighbour, and from the container itself (hairpin).
    assert web.gateway
    for netns in (ns_peer, ns_web):
        answer = await ns_exec(netns, sys.executable, "-c", TCP_CLIENT, web.gateway, str(host_port))
        assert answer.strip() == "hello from web"


async def test_delete_releases_address_and_rules_and_repeats(lab: Lab) -> None:
    cni = lab.network()
    host_port = free_host_port()
    netns, result = await lab.attach(cni, "c", port_mappings=[PortMapping(host_port, 80)])
    container_id = lab.container_id("c")
    lease = lease_file(cni, result.ips[0])
    assert lease.read_text().splitlines()[0] == container_id
    rules = await nat_rules()
    assert plugin_chain_name(cni.name, container_id) in rules
    assert plugin_chain_name(cni.name, container_id, "DN-") in rules
    assert attachment_records(cni)

    await cni.delete(container_id, netns)
    assert not lease.exists()
    await assert_no_rules_for(cni, container_id)
    assert not attachment_records(cni)
    assert "eth0" not in await ns_exec(netns, "ip", "-o", "link")
    with pytest.raises(ConnectionRefusedError):
        await read_tcp("127.0.0.1", host_port)

    await cni.delete(container_id, netns)  # again: nothing left, still fine
    again = await cni.add(container_id, netns)  # and the namespace can join anew
    assert ipaddress.ip_interface(again.ips[0]).network == subnet_of(cni)


async def test_delete_after_namespace_is_gone(lab: Lab) -> None:
    cni = lab.network()
    gone_by_path, gone_unnamed = lab.container_id("p"), lab.container_id("q")
    ns_p, p = await lab.attach(cni, "p", port_mappings=[PortMapping(free_host_port(), 80)])
    ns_q, q = await lab.attach(cni, "q", port_mappings=[PortMapping(free_host_port(), 80, "udp")])
    await run("ip", "netns", "del", Path(ns_p).name)
    await run("ip", "netns", "del", Path(ns_q).name)

    await cni.delete(gone_by_path, ns_p)  # the runtime still knows the path; it no longer exists
    await cni.delete(gone_unnamed, None)  # the runtime lost it
    for container_id, result in ((gone_by_path, p), (gone_unnamed, q)):
        assert not lease_file(cni, result.ips[0]).exists()
        await assert_no_rules_for(cni, container_id)
    assert not attachment_records(cni)


async def test_check_confirms_and_detects_a_broken_attachment(lab: Lab) -> None:
    cni = lab.network(port_map=False)
    netns, _ = await lab.attach(cni, "k")
    container_id = lab.container_id("k")
    await cni.check(container_id, netns)

    await ns_exec(netns, "ip", "link", "del", "eth0")
    with pytest.raises(CNIError) as broken:
        await cni.check(container_id, netns)
    assert broken.value.plugin == "bridge" and "eth0" in broken.value.msg

    with pytest.raises(CNIError, match="no completed attachment"):
        await cni.check(lab.container_id("never"), netns)
    # portmap 1.1.1's CHECK is broken for IPv4-only networks, so port-mapped networks disable CHECK.
    assert lab.network().conflist["disableCheck"] is True


async def test_plugin_error_carries_its_message_and_rolls_back(lab: Lab) -> None:
    cni = lab.network(prefix_length=30)  # one address besides the gateway
    netns_first, first = await lab.attach(cni, "first")
    netns = await lab.namespace("second")
    with pytest.raises(CNIError) as failed:
        await cni.add(lab.container_id("second"), netns)
    error = failed.value
    # host-local's error, passed up through bridge
    assert (error.plugin, error.command) == ("bridge", "ADD")
    assert "no IP addresses available" in error.msg and error.msg in str(error)
    # bridge made the veth before IPAM failed: the rollback DEL removed it and the attachment record.
    assert "eth0" not in await ns_exec(netns, "ip", "-o", "link")
    assert attachment_records(cni) == [f"{lab.container_id('first')}-eth0.json"]
    await ping(address(first.ips[0]))


async def test_unusable_config_fails_with_the_plugins_message(lab: Lab, tmp_path: Path) -> None:
    bridge = f"pkt{lab.tag}x"
    lab.bridges.append(bridge)
    ipam = {"type": "host-local", "ranges": [[{"subnet": "banana"}]], "dataDir": str(tmp_path / "ipam")}
    cni = CNI({"cniVersion": "1.0.0", "name": f"pkt-{lab.tag}-bad",
               "plugins": [{"type": "bridge", "bridge": bridge, "ipam": ipam}]}, cache_dir=tmp_path / "results")
    netns = await lab.namespace("bad")
    with pytest.raises(CNIError) as failed:
        await cni.add(lab.container_id("bad"), netns)
    assert failed.value.plugin == "bridge" and failed.value.msg == "invalid CIDR address: banana"
    # DEL cannot succeed with this config either (that is reported, and the record kept for a fixed config),
    # but bridge removed its veth before it failed.
    assert any("cleaning up" in note for note in failed.value.__notes__)
    assert "eth0" not in await ns_exec(netns, "ip", "-o", "link")


async def test_missing_plugin_and_bad_conflists(lab: Lab, tmp_path: Path) -> None:
    conflist = {"cniVersion": "1.0.0", "name": "pkt-missing", "plugins": [{"type": "pk-no-such-plugin"}]}
    cni = CNI(conflist, plugin_dirs=["/usr/lib/cni"], cache_dir=tmp_path / "results")
    netns = await lab.namespace("missing")
    with pytest.raises(CNIError, match="pk-no-such-plugin.*/usr/lib/cni"):
        await cni.add(lab.container_id("missing"), netns)
    assert not (tmp_path / "results").exists()

    with pytest.raises(CNIError) as no_plugins:
        CNI({"cniVersion": "1.0.0", "name": "pkt-empty", "plugins": []}, cache_dir=tmp_path)
    assert no_plugins.value.code == 7
    with pytest.raises(CNIError) as old_version:
        CNI({**conflist, "cniVersion": "0.2.0"}, cache_dir=tmp_path)
    assert old_version.value.code == 1
    with pytest.raises(CNIError, match="plain 'type'"):
        CNI({**conflist, "plugins": [{"type": "../bin/sh"}]}, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="container id"):
        await cni.add("../escape", netns)


def test_engine_default_network(tmp_path: Path) -> None:
    conflist = engine_default_network(tmp_path)
    bridge, portmap = conflist["plugins"]
    assert conflist["name"] == "pocketkube" and conflist["cniVersion"] == "1.0.0"
    assert bridge["bridge"] == "pk0" and bridge["isGateway"] and bridge["ipMasq"] and bridge["hairpinMode"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.88.0.0/16"}]]
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(tmp_path)
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    json.dumps(conflist)  # it is what gets written to disk / handed to plugins
