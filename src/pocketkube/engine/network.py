"""Container networking for `run`: each container gets a pinned network namespace; on the default
network it is attached to the engine's bridge through the CNI plugins (with -p port publishing)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pocketkube.engine.containers import PortMapping
from pocketkube.engine.runtime import namespaces
from pocketkube.network import cni


@dataclass
class Attachment:
    netns: str
    ip: str = ""
    gateway: str = ""
    mac: str = ""


class DefaultNetwork:
    def __init__(self, state_dir: Path, netns_dir: Path, conflist: dict) -> None:
        self.state_dir = state_dir
        self.netns_dir = netns_dir
        self.conflist = conflist
        self._cni: cni.CNI | None = None

    @property
    def cni(self) -> cni.CNI:
        if self._cni is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._cni = cni.CNI(self.conflist, cache_dir=self.state_dir / "cache")
        return self._cni

    async def attach(self, container_id: str, ports: list[PortMapping], *, connect: bool) -> Attachment:
        """A new network namespace (loopback up); on the default network also an address on the bridge."""
        pinned = namespaces.create_pinned(self.netns_dir / container_id, ("net",))
        attachment = Attachment(netns=str(pinned["net"]))
        if not connect:
            return attachment
        try:
            result = await self.cni.add(container_id, attachment.netns, port_mappings=[
                cni.PortMapping(p.host_port, p.container_port, p.protocol, p.host_ip) for p in ports])
        except BaseException:
            await self.detach(container_id, attachment.netns, connected=True)
            raise
        attachment.ip = result.ips[0].split("/")[0] if result.ips else ""
        attachment.gateway = result.gateway or ""
        attachment.mac = result.mac or ""
        return attachment

    async def detach(self, container_id: str, netns: str, *, connected: bool) -> None:
        if connected:
            await self.cni.delete(container_id, netns)
        directory = self.netns_dir / container_id
        namespaces.remove_pinned(directory)
        shutil.rmtree(directory, ignore_errors=True)
