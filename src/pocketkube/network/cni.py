"""Attach network namespaces to networks by running CNI plugin chains (CNI spec 1.0.0).

A network is a conflist: ``{"cniVersion", "name", "plugins": [...]}``. ``CNI.add`` runs the plugins in order,
handing each the previous plugin's result; ``CNI.delete`` runs them in reverse with the result of the ADD, which
is kept in ``cache_dir`` (the spec makes the runtime keep it; libcni does the same under /var/lib/cni/results);
``CNI.check`` asks every plugin to re-validate an attachment.

The builders at the end produce the networks pocketkube uses: a Linux bridge with host-local IPAM, masquerading
to the outside and port publishing through the portmap plugin, reachable from the host's 127.0.0.1 as well.

Callers must not run two operations on the same attachment (container id + interface) at once (spec rule).
Bad arguments (container id, interface name, CNI_ARGS) raise ValueError; everything a plugin or this runner
reports raises CNIError.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketkube import childprocess

DEFAULT_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CNI_VERSION = "1.0.0"
# From 0.3.0 on results share the interfaces/ips layout AttachResult reads; CHECK exists from 0.4.0 on.
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
CHECK_VERSIONS = ("0.4.0", "1.0.0")
PLUGIN_TIMEOUT = 60.0

ENGINE_NETWORK = "pocketkube"
ENGINE_BRIDGE = "pk0"
ENGINE_SUBNET = "10.88.0.0/16"

# Spec grammar for network names and container ids.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_ARG_KEY = re.compile(r"[A-Za-z0-9_]+")
_IFNAME_MAX = 15  # IFNAMSIZ - 1
# Plugins exec iptables from PATH; a daemon started with a user's PATH may lack the sbin directories.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# Spec error codes.
_INCOMPATIBLE_VERSION = 1
_INVALID_CONFIG = 7


class CNIError(RuntimeError):
    """A CNI operation failed.

    ``code``, ``msg`` and ``details`` are the plugin's error result when it printed one. ``code`` is None when
    pocketkube itself found the problem (plugin not found, no cached ADD, timeout, unreadable output).
    """

    def __init__(self, code: int | None, msg: str, details: str = "", *, plugin: str | None = None,
                 command: str | None = None) -> None:
        self.code = code
        self.msg = msg
        self.details = details
        self.plugin = plugin
        self.command = command
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = self.msg
        if self.details and self.details not in self.msg:
            text = f"{text}: {self.details}"
        if self.plugin:
            text = f"plugin {self.plugin!r} failed {self.command}: {text}"
        if self.code is not None:
            text = f"{text} (CNI error code {self.code})"
        return f"CNI: {text}"


@dataclass(frozen=True)
class PortMapping:
    """Publish ``container_port`` on ``host_port``; an empty ``host_ip`` means every host address."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def __post_init__(self) -> None:
        for port in (self.host_port, self.container_port):
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is outside 1-65535")
        if self.protocol not in ("tcp", "udp", "sctp"):
            raise ValueError(f"protocol must be tcp, udp or sctp, not {self.protocol!r}")
        if self.host_ip:
            ipaddress.ip_address(self.host_ip)

    def to_capability(self) -> dict[str, Any]:
        """The ``portMappings`` capability entry (CNI conventions)."""
        entry: dict[str, Any] = {"hostPort": self.host_port, "containerPort": self.container_port,
                                 "protocol": self.protocol}
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry


@dataclass
class AttachResult:
    """The container side of an attachment, read from the chain's final result (kept whole in ``raw``)."""

    interface: str
    ips: list[str]
    gateway: str | None
    mac: str | None
    raw: dict[str, Any]

    @classmethod
    def from_result(cls, result: dict[str, Any], ifname: str) -> AttachResult:
        interfaces = result.get("interfaces") or []
        index = next((i for i, iface in enumerate(interfaces)
                      if iface.get("name") == ifname and iface.get("sandbox")), None)
        # IPs name their interface by index; without a sandbox interface in the result, all IPs are the container's.
        ips = [ip for ip in result.get("ips") or []
               if index is None or ip.get("interface") in (None, index)]
        return cls(
            interface=ifname,
            ips=[ip["address"] for ip in ips],
            gateway=next((ip["gateway"] for ip in ips if ip.get("gateway")), None),
            mac=interfaces[index].get("mac") if index is not None else None,
            raw=result,
        )


@dataclass
class _Attachment:
    """What DEL and CHECK must replay: the ADD's arguments and its final result (None until ADD finished)."""

    container_id: str
    ifname: str
    args: dict[str, str] = field(default_factory=dict)
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"containerId": self.container_id, "ifName": self.ifname, "args": self.args,
                "capabilityArgs": self.capability_args, "result": self.result}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> _Attachment:
        return cls(doc["containerId"], doc["ifName"], doc.get("args") or {}, doc.get("capabilityArgs") or {},
                   doc.get("result"))


class CNI:
    """Runs one network's plugin chain against network namespaces."""

    def __init__(self, conflist: dict[str, Any], *, plugin_dirs: Sequence[str | Path] = DEFAULT_PLUGIN_DIRS,
                 cache_dir: Path) -> None:
        _validate_conflist(conflist)
        self.conflist = conflist
        self.name: str = conflist["name"]
        self.version: str = conflist["cniVersion"]
        self.plugins: list[dict[str, Any]] = conflist["plugins"]
        self.plugin_dirs = [str(directory) for directory in plugin_dirs]
        self.cache_dir = Path(cache_dir)

    async def add(self, container_id: str, netns: str, *, ifname: str = "eth0",
                  port_mappings: Sequence[PortMapping] = (), args: dict[str, str] | None = None) -> AttachResult:
        """Attach ``netns`` as ``ifname``. On failure the partial attachment is deleted before the error is raised."""
        _check_attachment_names(container_id, ifname)
        _cni_args(args or {})  # reject bad keys before anything runs
        if not _namespace_exists(netns):
            raise CNIError(None, f"network namespace {netns} does not exist")
        for plugin in self.plugins:  # a missing plugin fails before anything is set up that DEL could not undo
            self._find_plugin(plugin["type"], "ADD")
        cache = self._cache_path(container_id, ifname)
        if cache.exists():
            raise CNIError(None, f"container {container_id} is already attached to network {self.name!r} as "
                                 f"{ifname}; delete that attachment first")
        capability_args = {"portMappings": [m.to_capability() for m in port_mappings]} if port_mappings else {}
        attachment = _Attachment(container_id, ifname, dict(args or {}), capability_args)
        # Recorded before the first plugin runs so that a DEL after a crash still knows the port mappings.
        _write_json(cache, attachment.to_json())
        result: dict[str, Any] | None = None
        try:
            for plugin in self.plugins:
                result = await self._run_add(plugin, attachment, netns, result)
        except BaseException as failure:
            # The spec wants a DEL after every failed ADD; doing it here leaves callers no half-made attachment.
            try:
                await self.delete(container_id, netns, ifname=ifname)
            except Exception as cleanup:  # the ADD failure is the one to report
                failure.add_note(f"cleaning up the failed attachment also failed: {cleanup}")
            raise
        assert result is not None  # the conflist has at least one plugin
        attachment.result = result
        _write_json(cache, attachment.to_json())
        return AttachResult.from_result(result, ifname)

    async def delete(self, container_id: str, netns: str | None, *, ifname: str = "eth0") -> None:
        """Detach; succeeds when nothing is attached and when the namespace is already gone."""
        _check_attachment_names(container_id, ifname)
        cache = self._cache_path(container_id, ifname)
        attachment = self._load(cache) or _Attachment(container_id, ifname)
        # A vanished namespace is passed as "no namespace" (allowed for DEL): plugins then undo host-side state.
        live_netns = netns if netns and _namespace_exists(netns) else None
        for plugin in reversed(self.plugins):
            await self._run(
                "DEL", plugin, attachment, live_netns, self._request(plugin, attachment, attachment.result))
        await self._remove_leftover_masquerade(container_id, attachment.result)
        cache.unlink(missing_ok=True)

    async def check(self, container_id: str, netns: str, *, ifname: str = "eth0") -> None:
        """Raise CNIError unless every plugin confirms the attachment is as ADD left it."""
        _check_attachment_names(container_id, ifname)
        if self.conflist.get("disableCheck"):
            return
        if self.version not in CHECK_VERSIONS:
            raise CNIError(_INCOMPATIBLE_VERSION,
                           f"CHECK needs cniVersion 0.4.0 or later; network {self.name!r} uses {self.version}")
        attachment = self._load(self._cache_path(container_id, ifname))
        if attachment is None or attachment.result is None:
            raise CNIError(None, f"container {container_id} has no completed attachment to network "
                                 f"{self.name!r} as {ifname}")
        for plugin in self.plugins:
            await self._run("CHECK", plugin, attachment, netns, self._request(plugin, attachment, attachment.result))

    async def _run_add(self, plugin: dict[str, Any], attachment: _Attachment, netns: str,
                       prev_result: dict[str, Any] | None) -> dict[str, Any]:
        stdout = await self._run("ADD", plugin, attachment, netns, self._request(plugin, attachment, prev_result))
        try:
            result = json.loads(stdout)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            raise CNIError(None, f"printed no result JSON: {stdout[:200]!r}", plugin=plugin["type"], command="ADD")
        return result

    def _request(self, plugin: dict[str, Any], attachment: _Attachment,
                 prev_result: dict[str, Any] | None) -> dict[str, Any]:
        """Derive one plugin's stdin from its conflist entry (spec section 3)."""
        request = {key: value for key, value in plugin.items() if key != "capabilities"}
        request["name"] = self.name
        request["cniVersion"] = self.version
        wanted = {name for name, enabled in (plugin.get("capabilities") or {}).items() if enabled}
        runtime_config = {**(plugin.get("runtimeConfig") or {}),
                          **{name: value for name, value in attachment.capability_args.items() if name in wanted}}
        if runtime_config:
            request["runtimeConfig"] = runtime_config
        if prev_result is not None:
            request["prevResult"] = prev_result
        return request

    async def _run(self, command: str, plugin: dict[str, Any], attachment: _Attachment, netns: str | None,
                   request: dict[str, Any]) -> bytes:
        plugin_type = plugin["type"]
        executable = self._find_plugin(plugin_type, command)
        env = {key: value for key, value in os.environ.items() if not key.startswith("CNI_")}
        env["PATH"] = _path_with_sbin(env.get("PATH", ""))
        env["CNI_COMMAND"] = command
        env["CNI_CONTAINERID"] = attachment.container_id
        env["CNI_IFNAME"] = attachment.ifname
        env["CNI_PATH"] = os.pathsep.join(self.plugin_dirs)
        if netns:
            env["CNI_NETNS"] = netns
        if attachment.args:
            env["CNI_ARGS"] = _cni_args(attachment.args)
        return await _exec_plugin(executable, request, env, plugin=plugin_type, command=command)

    def _find_plugin(self, plugin_type: str, command: str) -> str:
        for directory in self.plugin_dirs:
            candidate = os.path.join(directory, plugin_type)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        raise CNIError(None, f"no executable named {plugin_type!r} in {', '.join(self.plugin_dirs)}",
                       plugin=plugin_type, command=command)

    async def _remove_leftover_masquerade(self, container_id: str, result: dict[str, Any] | None) -> None:
        """Finish the bridge/ptp masquerade teardown those plugins skip when the namespace is gone.

        They (1.1.1, and upstream still) learn the container's IPs from its veth, so with no veth they leave
        their per-container nat chain and its POSTROUTING jump behind for good.
        """
        if not any(plugin.get("ipMasq") for plugin in self.plugins):
            return
        chain = plugin_chain_name(self.name, container_id)
        for tool in _iptables_tools(result):
            await _delete_chain_and_jumps(tool, "nat", chain)

    def _cache_path(self, container_id: str, ifname: str) -> Path:
        # One directory per network keeps networks that share cache_dir apart whatever their names.
        return self.cache_dir / self.name / f"{container_id}-{ifname}.json"

    @staticmethod
    def _load(cache: Path) -> _Attachment | None:
        try:
            return _Attachment.from_json(json.loads(cache.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise CNIError(None, f"attachment record {cache} is unreadable: {exc}") from exc


def plugin_chain_name(network: str, container_id: str, prefix: str = "") -> str:
    """The iptables chain name CNI plugins derive for a container (``CNI-`` + prefix + sha512, 28 chars)."""
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    return f"CNI-{prefix}{digest}"[:28]


def bridge_conflist(name: str, *, bridge: str, subnet: str, gateway: str | None = None, ip_masq: bool = True,
                    hairpin: bool = True, data_dir: Path, port_map: bool = True,
                    mtu: int | None = None) -> dict[str, Any]:
    """A bridge network: containers get an address from ``subnet`` (leases in ``data_dir/<name>/``), the bridge
    is their gateway, traffic leaving the subnet is masqueraded, and ports can be published (``port_map``).

    Loopback inside the namespace is the namespace creator's job. No firewall plugin: it is needed only where
    the FORWARD chain drops by default, and this host's policy is ACCEPT. With ``port_map`` the list carries
    ``disableCheck`` (portmap 1.1.1's CHECK is broken), so ``CNI.check`` is a no-op for it.
    """
    network = ipaddress.ip_network(subnet)
    address_range: dict[str, str] = {"subnet": str(network)}
    if gateway:
        address_range["gateway"] = gateway
    bridge_plugin: dict[str, Any] = {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": ip_masq,
        "hairpinMode": hairpin,
        "ipam": {
            "type": "host-local",
            "dataDir": str(data_dir),
            "ranges": [[address_range]],
            "routes": [{"dst": "0.0.0.0/0" if network.version == 4 else "::/0"}],
        },
    }
    if mtu is not None:
        bridge_plugin["mtu"] = mtu
    conflist: dict[str, Any] = {"cniVersion": CNI_VERSION, "name": name, "plugins": [bridge_plugin]}
    if port_map:
        # snat masquerades connections to a published port that come from the host itself, 127.0.0.1 included
        # (portmap then also sets route_localnet on the bridge), so the container's reply comes back to us.
        conflist["plugins"].append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
        # portmap before 1.3.0 (Debian ships 1.1.1) CHECKs IPv6 rules for IPv4-only containers and always fails
        # once a port is published; disableCheck is the spec's switch for such known false alarms.
        conflist["disableCheck"] = True
    return conflist


def engine_default_network(data_dir: Path) -> dict[str, Any]:
    """The engine's default network; ``data_dir`` is the engine's data root, leases go to
    ``data_dir/cni/networks/pocketkube/`` (the layout of /var/lib/cni/networks)."""
    return bridge_conflist(ENGINE_NETWORK, bridge=ENGINE_BRIDGE, subnet=ENGINE_SUBNET,
                           data_dir=Path(data_dir) / "cni" / "networks")


def _validate_conflist(conflist: Any) -> None:
    def invalid(details: str) -> CNIError:
        return CNIError(_INVALID_CONFIG, "invalid network configuration list", details)

    if not isinstance(conflist, dict):
        raise invalid("it must be a JSON object")
    name = conflist.get("name")
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise invalid(f"name {name!r} must start with a letter or digit and hold only letters, digits, _ . -")
    version = conflist.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(_INCOMPATIBLE_VERSION, f"cniVersion {version!r} of network {name!r} is not supported",
                       f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise invalid(f"network {name!r} needs a non-empty 'plugins' list")
    for plugin in plugins:
        plugin_type = plugin.get("type") if isinstance(plugin, dict) else None
        if not isinstance(plugin_type, str) or plugin_type in ("", ".", "..") or "/" in plugin_type:
            raise invalid(f"every plugin of network {name!r} needs a plain 'type' (executable name), "
                          f"got {plugin!r}")


def _check_attachment_names(container_id: str, ifname: str) -> None:
    if not _IDENTIFIER.fullmatch(container_id):
        raise ValueError(f"container id {container_id!r} must start with a letter or digit and hold only "
                         "letters, digits, _ . -")
    if (not ifname or len(ifname) > _IFNAME_MAX or ifname in (".", "..")
            or any(ch in ifname for ch in "/:") or any(ch.isspace() for ch in ifname)):
        raise ValueError(f"interface name {ifname!r} is not a valid Linux interface name")


def _cni_args(args: dict[str, str]) -> str:
    """CNI_ARGS text. IgnoreUnknown=1 lets plugins skip keys meant for others (Kubernetes runtimes do the same)."""
    for key, value in args.items():
        if not _ARG_KEY.fullmatch(key) or any(ch in str(value) for ch in ";="):
            raise ValueError(f"CNI arg {key}={value!r}: keys are alphanumeric and values hold no ';' or '='")
    pairs = {"IgnoreUnknown": "1", **args} if args else {}
    return ";".join(f"{key}={value}" for key, value in pairs.items())


def _namespace_exists(netns: str) -> bool:
    return os.path.exists(netns)  # one stat of a tmpfs/nsfs path: not worth a thread


def _path_with_sbin(path: str) -> str:
    parts = [part for part in path.split(os.pathsep) if part]
    return os.pathsep.join(parts + [d for d in _SBIN_DIRS if d not in parts])


async def _exec_plugin(executable: str, request: dict[str, Any], env: dict[str, str], *, plugin: str,
                       command: str) -> bytes:
    try:
        proc = await childprocess.run([executable], input=json.dumps(request).encode(), env=env,
                                      timeout=PLUGIN_TIMEOUT)
    except TimeoutError:
        raise CNIError(None, f"did not finish within {PLUGIN_TIMEOUT:.0f} s", plugin=plugin,
                       command=command) from None
    if proc.returncode != 0:
        raise _plugin_failure(proc.stdout, proc.stderr, proc.returncode, plugin=plugin, command=command)
    return proc.stdout


def _plugin_failure(stdout: bytes, stderr: bytes, returncode: int, *, plugin: str, command: str) -> CNIError:
    doc: Any = None
    with contextlib.suppress(ValueError):
        doc = json.loads(stdout)
    if isinstance(doc, dict) and doc.get("msg"):
        code = doc.get("code")
        return CNIError(code if isinstance(code, int) else None, str(doc["msg"]), str(doc.get("details") or ""),
                        plugin=plugin, command=command)
    text = (stderr or stdout).decode(errors="replace").strip()
    return CNIError(None, text or f"exited with status {returncode}", plugin=plugin, command=command)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically: a crash leaves the old record or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(doc))
    os.replace(scratch, path)


def find_iptables() -> str:
    """The iptables executable, also where PATH lacks the sbin directories."""
    tool = shutil.which("iptables", path=_path_with_sbin(os.environ.get("PATH", "")))
    if tool is None:
        raise CNIError(None, "iptables is not installed (Debian package iptables)")
    return tool


def _iptables_tools(result: dict[str, Any] | None) -> list[str]:
    """iptables for IPv4, ip6tables for IPv6 addresses of the attachment (both when the result is unknown)."""
    if result is None:
        versions = {4, 6}
    else:
        versions = {ipaddress.ip_interface(ip["address"]).version for ip in result.get("ips") or []}
    search_path = _path_with_sbin(os.environ.get("PATH", ""))
    tools = [shutil.which(name, path=search_path) for name, version in (("iptables", 4), ("ip6tables", 6))
             if version in versions]
    return [tool for tool in tools if tool]


async def _delete_chain_and_jumps(tool: str, table: str, chain: str) -> None:
    listing = (await _iptables(tool, "-t", table, "-S")).splitlines()
    if f"-N {chain}" not in listing:
        return
    for line in listing:
        words = shlex.split(line)
        if words[:1] == ["-A"] and "-j" in words and words[words.index("-j") + 1:][:1] == [chain]:
            await _iptables(tool, "-t", table, "-D", *words[1:])
    await _iptables(tool, "-t", table, "-F", chain)
    await _iptables(tool, "-t", table, "-X", chain)


async def _iptables(tool: str, *args: str) -> str:
    proc = await childprocess.run([tool, "-w", *args])
    if proc.returncode != 0:
        raise CNIError(None, f"{os.path.basename(tool)} {' '.join(args)} failed: "
                             f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode()
