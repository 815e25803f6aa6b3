"""Pod networking: CNI attachment of sandboxes, and the /etc/hosts, /etc/resolv.conf and /etc/hostname the
kubelet writes for every pod (upstream's kubelet_pods.go and dns.go rules).

Pods join one bridge network (default bridge "pkcni0") with host-local addresses from the node's podCIDR:
the bridge is the gateway (the CIDR's first address), so pod IPs are reachable from the host and pods on
the node reach each other; portmap publishes hostPorts.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketkube import childprocess
from pocketkube.network.cni import CNI, CNIError, PortMapping, bridge_conflist

Obj = dict[str, Any]

NETWORK_NAME = "pocketkube-pods"
DEFAULT_BRIDGE = "pkcni0"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOST_HOSTS = Path("/etc/hosts")
# upstream's limits for the search list (validation.MaxDNSSearchPaths / MaxDNSSearchListChars)
MAX_SEARCH_PATHS = 32
MAX_SEARCH_CHARS = 2048
MAX_HOSTNAME = 63


def default_cluster_dns(service_cidr: str) -> str:
    """The cluster DNS Service IP by convention: the 10th address of the service CIDR (10.43.0.10)."""
    network = ipaddress.ip_network(service_cidr, strict=False)
    return str(network.network_address + 10)


@dataclass
class DNSSettings:
    cluster_dns: list[str]
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    host_resolv_conf: Path = HOST_RESOLV_CONF


@dataclass
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> ResolvConf:
        conf = cls()
        for line in text.splitlines():
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if not words:
                continue
            if words[0] == "nameserver" and len(words) > 1:
                conf.nameservers.append(words[1])
            elif words[0] in ("search", "domain"):
                conf.searches = words[1:]  # the last search/domain line wins, as in the resolver
            elif words[0] == "options":
                conf.options.extend(words[1:])
        return conf

    def render(self) -> str:
        """The layout CRI runtimes write: search, nameservers, options."""
        text = ""
        if self.searches:
            text += f"search {' '.join(self.searches)}\n"
        for server in self.nameservers:
            text += f"nameserver {server}\n"
        if self.options:
            text += f"options {' '.join(self.options)}\n"
        return text


def _dedup(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_options(base: list[str], extra: list[Obj]) -> list[str]:
    """dnsConfig options override same-named ones (ndots:5 replaced by ndots:2)."""
    merged: dict[str, str] = {}
    for option in base:
        merged[option.partition(":")[0]] = option
    for option in extra:
        name = option.get("name", "")
        if name:
            merged[name] = f"{name}:{option['value']}" if option.get("value") is not None else name
    return list(merged.values())


def pod_resolv_conf(pod: Obj, dns: DNSSettings) -> ResolvConf:
    """upstream GetPodDNS: the policy picks the base, dnsConfig is merged into it."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    host_network = bool(spec.get("hostNetwork"))
    try:
        host = ResolvConf.parse(dns.host_resolv_conf.read_text())
    except OSError:
        host = ResolvConf()
    if policy == "ClusterFirst" and host_network:
        policy = "Default"  # only ClusterFirstWithHostNet gives host-network pods the cluster DNS
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and dns.cluster_dns:
        namespace = pod["metadata"].get("namespace") or "default"
        domain = dns.cluster_domain
        conf = ResolvConf(list(dns.cluster_dns), [f"{namespace}.svc.{domain}", f"svc.{domain}", domain,
                                                  *host.searches], ["ndots:5"])
    elif policy == "None":
        conf = ResolvConf()
    else:  # Default (and ClusterFirst without cluster DNS): the node's settings
        conf = ResolvConf(list(host.nameservers), list(host.searches), list(host.options))
    config = spec.get("dnsConfig") or {}
    conf.nameservers = _dedup(conf.nameservers + list(config.get("nameservers") or []))[:3]
    conf.searches = _dedup(conf.searches + list(config.get("searches") or []))
    conf.options = _merge_options(conf.options, config.get("options") or [])
    kept: list[str] = []
    for search in conf.searches:
        if len(kept) >= MAX_SEARCH_PATHS or len(" ".join([*kept, search])) > MAX_SEARCH_CHARS:
            break
        kept.append(search)
    conf.searches = kept
    return conf


def pod_hostname(pod: Obj, cluster_domain: str) -> tuple[str, str]:
    """(hostname, fqdn or "") as upstream's GeneratePodHostNameAndDomain: spec.hostname or the pod name cut to
    63 characters; with a subdomain the FQDN is hostname.subdomain.namespace.svc.domain."""
    spec = pod.get("spec") or {}
    meta = pod["metadata"]
    hostname = spec.get("hostname") or meta["name"]
    if len(hostname) > MAX_HOSTNAME:
        hostname = hostname[:MAX_HOSTNAME].rstrip("-.")
    fqdn = ""
    if spec.get("subdomain"):
        fqdn = f"{hostname}.{spec['subdomain']}.{meta.get('namespace') or 'default'}.svc.{cluster_domain}"
    if spec.get("setHostnameAsFQDN") and fqdn:
        return fqdn, fqdn
    return hostname, fqdn


def hosts_file(pod: Obj, ips: list[str], hostname: str, fqdn: str) -> str:
    """upstream managedHostsFileContent (and the host-network variant), plus hostAliases."""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        try:
            host = HOST_HOSTS.read_text()
        except OSError:
            host = ""
        text = "# Kubernetes-managed hosts file (host network).\n" + host
    else:
        text = ("# Kubernetes-managed hosts file.\n"
                "127.0.0.1\tlocalhost\n"
                "::1\tlocalhost ip6-localhost ip6-loopback\n"
                "fe00::0\tip6-localnet\n"
                "fe00::0\tip6-mcastprefix\n"
                "fe00::1\tip6-allnodes\n"
                "fe00::2\tip6-allrouters\n")
        short = hostname.split(".", 1)[0]
        for ip in ips:
            text += f"{ip}\t{fqdn}\t{short}\n" if fqdn else f"{ip}\t{hostname}\n"
    aliases = spec.get("hostAliases") or []
    if aliases:
        text += "\n# Entries added by HostAliases.\n"
        for alias in aliases:
            text += f"{alias.get('ip', '')}\t{chr(9).join(alias.get('hostnames') or [])}\n"
    return text


def host_ports(pod: Obj) -> list[PortMapping]:
    mappings = []
    for container in [*(pod["spec"].get("initContainers") or []), *(pod["spec"].get("containers") or [])]:
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                mappings.append(PortMapping(host_port=int(port["hostPort"]), container_port=int(port["containerPort"]),
                                            protocol=(port.get("protocol") or "TCP").lower(),
                                            host_ip=port.get("hostIP") or ""))
    return mappings


class PodNetwork:
    """CNI for the node's pods. `configure(pod_cidr)` once the node's podCIDR is known.

    Two plugin chains share one network (one address allocator): bridge alone for most pods, bridge then
    portmap for pods with hostPorts, so that only those pay for portmap's iptables work. Traffic from pods
    to the outside is masqueraded by one rule for the whole podCIDR rather than a chain per pod (as flannel
    and k3s do), which keeps starting a pod free of iptables calls.
    """

    def __init__(self, root: Path, *, bridge: str = DEFAULT_BRIDGE, dns: DNSSettings) -> None:
        self.root = root / "cni"
        self.bridge = bridge
        self.dns = dns
        self.pod_cidr = ""
        self._plain: CNI | None = None
        self._with_ports: CNI | None = None

    def configure(self, pod_cidr: str) -> None:
        self.pod_cidr = pod_cidr
        chains = []
        for port_map in (False, True):
            conflist = bridge_conflist(NETWORK_NAME, bridge=self.bridge, subnet=pod_cidr, ip_masq=False,
                                       port_map=port_map, data_dir=self.root / "networks")
            chains.append(CNI(conflist, cache_dir=self.root / "cache"))
        self._plain, self._with_ports = chains

    def _cni(self, host_ports: bool) -> CNI:
        cni = self._with_ports if host_ports else self._plain
        if cni is None:
            raise RuntimeError("container runtime network not ready: the node has no podCIDR yet")
        return cni

    def _masquerade_rule(self) -> list[str]:
        return ["POSTROUTING", "-s", self.pod_cidr, "!", "-d", self.pod_cidr, "-m", "comment", "--comment",
                f"pocketkube pods on {self.bridge}", "-j", "MASQUERADE"]

    async def ensure_masquerade(self) -> None:
        """Pods reach beyond the node with the node's address (one rule for the podCIDR, added once)."""
        rule = self._masquerade_rule()
        if await _iptables("-t", "nat", "-C", *rule, check=False) != 0:
            await _iptables("-t", "nat", "-A", *rule)

    async def remove_masquerade(self) -> None:
        while await _iptables("-t", "nat", "-D", *self._masquerade_rule(), check=False) == 0:
            pass

    async def attach(self, sandbox_id: str, netns: str, pod: Obj) -> list[str]:
        """The pod's IPs once its sandbox is on the network."""
        meta = pod["metadata"]
        ports = host_ports(pod)
        result = await self._cni(bool(ports)).add(sandbox_id, netns, port_mappings=ports, args={
            "K8S_POD_NAMESPACE": meta.get("namespace", ""), "K8S_POD_NAME": meta["name"],
            "K8S_POD_INFRA_CONTAINER_ID": sandbox_id, "K8S_POD_UID": meta["uid"]})
        return [str(ipaddress.ip_interface(ip).ip) for ip in result.ips]

    async def detach(self, sandbox_id: str, netns: str | None, *, host_ports: bool) -> None:
        await self._cni(host_ports).delete(sandbox_id, netns)

    def write_files(self, directory: Path, pod: Obj, ips: list[str]) -> dict[str, Path]:
        """/etc/hosts, /etc/resolv.conf and /etc/hostname of the pod, to bind-mount into each container."""
        directory.mkdir(parents=True, exist_ok=True)
        hostname, fqdn = pod_hostname(pod, self.dns.cluster_domain)
        if (pod.get("spec") or {}).get("hostNetwork"):
            hostname = os.uname().nodename
        files = {"/etc/hosts": directory / "etc-hosts", "/etc/resolv.conf": directory / "resolv.conf",
                 "/etc/hostname": directory / "hostname"}
        contents = {"/etc/hosts": hosts_file(pod, ips, hostname, fqdn),
                    "/etc/resolv.conf": pod_resolv_conf(pod, self.dns).render(),
                    "/etc/hostname": hostname + "\n"}
        for target, path in files.items():
            scratch = path.with_name(path.name + ".tmp")
            scratch.write_text(contents[target])
            os.chmod(scratch, 0o644)
            os.replace(scratch, path)
        return files


async def _iptables(*args: str, check: bool = True) -> int:
    proc = await childprocess.run(["iptables", "-w", *args])
    if check and proc.returncode != 0:
        raise CNIError(None, f"iptables {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.returncode
