"""Container networking for `run`: a container on the default network gets a pinned network namespace
attached to the engine's bridge through the CNI plugins (with -p port publishing).

What the plugins do costs iptables-nft transactions, each one waiting for the kernel to commit (~10 ms
here), so the work per container is kept to what it needs: traffic from the bridge to the outside is
masqueraded by one rule for the whole subnet (as Docker does) rather than a chain per container, and only
containers that publish ports run the portmap plugin."""

from __future__ import annotations

import asyncio
import fcntl
import shutil
from dataclasses import dataclass
from pathlib import Path

from pocketkube import childprocess
from pocketkube.engine.containers import PortMapping
from pocketkube.engine.runtime import namespaces
from pocketkube.network import cni

NETWORK_NAME = "pocketkube"


@dataclass
class Attachment:
    netns: str
    ip: str = ""
    gateway: str = ""
    mac: str = ""


class DefaultNetwork:
    def __init__(self, state_dir: Path, netns_dir: Path, *, bridge: str, subnet: str) -> None:
        self.state_dir = state_dir
        self.netns_dir = netns_dir
        self.bridge = bridge
        self.subnet = subnet
        self._chains: dict[bool, cni.CNI] = {}
        self._masquerading = False

    def cni(self, *, ports: bool) -> cni.CNI:
        """The plugin chain for containers with (portmap after the bridge) or without published ports."""
        if ports not in self._chains:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            conflist = cni.bridge_conflist(NETWORK_NAME, bridge=self.bridge, subnet=self.subnet, ip_masq=False,
                                           port_map=ports, data_dir=self.state_dir / "leases")
            self._chains[ports] = cni.CNI(conflist, cache_dir=self.state_dir / "cache")
        return self._chains[ports]

    async def attach(self, container_id: str, ports: list[PortMapping]) -> Attachment:
        """A new network namespace (loopback up), pinned, with an address on the bridge."""
        await self.ensure_masquerade()
        pinned = namespaces.create_pinned(self.netns_dir / container_id, ("net",))
        attachment = Attachment(netns=str(pinned["net"]))
        try:
            result = await self.cni(ports=bool(ports)).add(container_id, attachment.netns, port_mappings=[
                cni.PortMapping(p.host_port, p.container_port, p.protocol, p.host_ip) for p in ports])
        except BaseException:
            await self.detach(container_id, attachment.netns, connected=True, ports=bool(ports))
            raise
        attachment.ip = result.ips[0].split("/")[0] if result.ips else ""
        attachment.gateway = result.gateway or ""
        attachment.mac = result.mac or ""
        return attachment

    async def detach(self, container_id: str, netns: str, *, connected: bool, ports: bool = False) -> None:
        """Releases the attachment (`ports`: it was made with published ports) and the namespace;
        connected=False: only the namespace.

        The namespace goes first, its processes being gone: the kernel then removes its veth pair in the
        background, which the bridge plugin's DEL would otherwise wait for (~60 ms here). Without a namespace
        the plugins still release the address and their host-side state (the spec's DEL for a namespace
        that is gone)."""
        directory = self.netns_dir / container_id
        namespaces.remove_pinned(directory)
        shutil.rmtree(directory, ignore_errors=True)
        if connected:
            await self.cni(ports=ports).delete(container_id, None)

    # --- the subnet's masquerade rule ----------------------------------------------------------------

    def _masquerade_rule(self) -> list[str]:
        return ["POSTROUTING", "-s", self.subnet, "!", "-o", self.bridge, "-m", "comment", "--comment",
                f"pocketkube containers on {self.bridge}", "-j", "MASQUERADE"]

    async def ensure_masquerade(self) -> None:
        """Traffic from the subnet leaving through another interface is masqueraded (once per process: the
        rule outlives it, like the bridge)."""
        if self._masquerading:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "masquerade.lock", "a") as lock:  # one check-then-add at a time
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            if await _iptables("-t", "nat", "-C", *self._masquerade_rule(), check=False) != 0:
                await _iptables("-t", "nat", "-A", *self._masquerade_rule())
        self._masquerading = True

    async def remove_masquerade(self) -> None:
        """Deletes the subnet's rule (with the bridge, when the network goes away altogether)."""
        while await _iptables("-t", "nat", "-D", *self._masquerade_rule(), check=False) == 0:
            pass
        self._masquerading = False


async def _iptables(*args: str, check: bool = True) -> int:
    process = await childprocess.run([cni.find_iptables(), "-w", *args])
    if check and process.returncode != 0:
        raise cni.CNIError(None, f"iptables {' '.join(args)} failed: "
                                 f"{process.stderr.decode(errors='replace').strip()}")
    return process.returncode
