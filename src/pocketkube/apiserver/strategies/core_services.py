"""Services and Endpoints (pkg/registry/core/service/{strategy.go,storage/alloc.go}, SetDefaults_Service,
ValidateService)."""

from __future__ import annotations

from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause, StatusError, internal, invalid
from pocketkube.api.kinds import ResourceInfo
from pocketkube.apiserver.strategy import FieldGetter, Obj, Strategy

from . import _fields as f
from .allocators import AllocationError, ClusterIPAllocator, NodePortAllocator

SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
SESSION_AFFINITIES = ["ClientIP", "None"]
SERVICE_PROTOCOLS = ["SCTP", "TCP", "UDP"]
TRAFFIC_POLICIES = ["Cluster", "Local"]
IP_FAMILY_POLICIES = ["PreferDualStack", "RequireDualStack", "SingleStack"]
DEFAULT_CLIENT_IP_TIMEOUT = 10800


def _spec(svc: Obj) -> Obj:
    spec = svc.get("spec")
    return spec if isinstance(spec, dict) else {}


def _type(svc: Obj) -> str:
    return _spec(svc).get("type") or "ClusterIP"


def needs_cluster_ip(svc: Obj) -> bool:
    return _type(svc) != "ExternalName"


def needs_node_port(svc: Obj) -> bool:
    return _type(svc) in ("NodePort", "LoadBalancer")


def should_allocate_node_ports(svc: Obj) -> bool:
    if _type(svc) == "NodePort":
        return True
    return _type(svc) == "LoadBalancer" and _spec(svc).get("allocateLoadBalancerNodePorts") is not False


def needs_health_check_node_port(svc: Obj) -> bool:
    return _type(svc) == "LoadBalancer" and _spec(svc).get("externalTrafficPolicy") == "Local"


def externally_accessible(svc: Obj) -> bool:
    spec = _spec(svc)
    return (_type(svc) in ("LoadBalancer", "NodePort")
            or (_type(svc) == "ClusterIP" and bool(spec.get("externalIPs"))))


def is_headless(svc: Obj) -> bool:
    return _spec(svc).get("clusterIP") == "None"


def _ports(svc: Obj) -> list[Obj]:
    return [p for p in _spec(svc).get("ports") or [] if isinstance(p, dict)]


def _node_ports(svc: Obj) -> set[int]:
    ports = {p["nodePort"] for p in _ports(svc) if isinstance(p.get("nodePort"), int) and p["nodePort"]}
    hc = _spec(svc).get("healthCheckNodePort")
    if isinstance(hc, int) and hc:
        ports.add(hc)
    return ports


def _cluster_ips(svc: Obj) -> list[str]:
    spec = _spec(svc)
    ips = [ip for ip in spec.get("clusterIPs") or [] if isinstance(ip, str) and ip and ip != "None"]
    if not ips and spec.get("clusterIP") not in (None, "", "None"):
        ips = [spec["clusterIP"]]
    return ips


def _get_str(*path: str) -> FieldGetter:
    def getter(obj: Obj) -> str:
        cur: Any = obj
        for key in path:
            cur = cur.get(key) if isinstance(cur, dict) else None
        return "" if cur is None else str(cur)
    return getter


class ServiceStrategy(Strategy):
    return_deleted_object = True
    name_validator = "dns1035label"

    def __init__(self, info: ResourceInfo, ips: ClusterIPAllocator, node_ports: NodePortAllocator) -> None:
        super().__init__(info)
        self.ips = ips
        self.node_ports = node_ports

    def field_getters(self) -> dict[str, FieldGetter]:
        getters = super().field_getters()
        getters["spec.clusterIP"] = _get_str("spec", "clusterIP")
        getters["spec.type"] = _get_str("spec", "type")
        return getters

    # --- defaults --------------------------------------------------------------------------------
    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        if not spec.get("sessionAffinity"):
            spec["sessionAffinity"] = "None"
        if spec["sessionAffinity"] == "None":
            spec.pop("sessionAffinityConfig", None)
        elif spec["sessionAffinity"] == "ClientIP":
            timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
            if timeout is None:
                spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": DEFAULT_CLIENT_IP_TIMEOUT}}
        if not spec.get("type"):
            spec["type"] = "ClusterIP"
        for port in _ports(obj):
            if not port.get("protocol"):
                port["protocol"] = "TCP"
            if port.get("targetPort") in (None, 0, ""):
                port["targetPort"] = port.get("port")
        if externally_accessible(obj) and not spec.get("externalTrafficPolicy"):
            spec["externalTrafficPolicy"] = "Cluster"
        if spec.get("internalTrafficPolicy") is None and spec["type"] in ("NodePort", "LoadBalancer", "ClusterIP"):
            spec["internalTrafficPolicy"] = "Cluster"
        if spec["type"] == "LoadBalancer":
            if spec.get("allocateLoadBalancerNodePorts") is None:
                spec["allocateLoadBalancerNodePorts"] = True
            for ingress in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                if ingress.get("ip") and ingress.get("ipMode") is None:
                    ingress["ipMode"] = "VIP"

    # --- update preparation ----------------------------------------------------------------------
    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        self._patch_allocated_values(new, old)
        self._drop_type_dependent_fields(new, old)

    @staticmethod
    def _patch_allocated_values(new: Obj, old: Obj) -> None:
        """Fill in allocated values a client left out (a PUT of an edited manifest) so updates stay idempotent."""
        new_spec, old_spec = _spec(new), _spec(old)
        if needs_cluster_ip(old) and needs_cluster_ip(new):
            if not new_spec.get("clusterIP") and old_spec.get("clusterIP"):
                new_spec["clusterIP"] = old_spec["clusterIP"]
            if not new_spec.get("clusterIPs") and old_spec.get("clusterIPs"):
                new_spec["clusterIPs"] = list(old_spec["clusterIPs"])
            # initIPFamilyFields keeps what the Service had when the client did not say.
            for key in ("ipFamilies", "ipFamilyPolicy"):
                if not new_spec.get(key) and old_spec.get(key):
                    new_spec[key] = old_spec[key]
        if needs_node_port(old) and needs_node_port(new):
            old_used = {p.get("nodePort") for p in _ports(old) if p.get("nodePort")}
            new_used = {p.get("nodePort") for p in _ports(new) if p.get("nodePort")}
            used = old_used & new_used
            by_name = {p.get("name", ""): p.get("nodePort") for p in _ports(old)}
            for port in _ports(new):
                if not port.get("nodePort"):
                    old_value = by_name.get(port.get("name", ""))
                    if old_value and old_value not in used:
                        port["nodePort"] = old_value
        if needs_health_check_node_port(old) and needs_health_check_node_port(new):
            if not new_spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
                new_spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]

    @staticmethod
    def _drop_type_dependent_fields(new: Obj, old: Obj) -> None:
        """dropTypeDependentFields: wipe values the new type does not use, when the client did not change them."""
        new_spec, old_spec = _spec(new), _spec(old)
        if needs_cluster_ip(old) and not needs_cluster_ip(new):
            if (new_spec.get("clusterIP"), new_spec.get("clusterIPs")) == (old_spec.get("clusterIP"),
                                                                           old_spec.get("clusterIPs")):
                new_spec.pop("clusterIP", None)
                new_spec.pop("clusterIPs", None)
            for key in ("ipFamilies", "ipFamilyPolicy"):
                if new_spec.get(key) == old_spec.get(key):
                    new_spec.pop(key, None)
        if needs_node_port(old) and not needs_node_port(new):
            if [p.get("nodePort") for p in _ports(new)] == [p.get("nodePort") for p in _ports(old)]:
                for port in _ports(new):
                    port.pop("nodePort", None)
        if needs_health_check_node_port(old) and not needs_health_check_node_port(new):
            if new_spec.get("healthCheckNodePort") == old_spec.get("healthCheckNodePort"):
                new_spec.pop("healthCheckNodePort", None)
        if _type(old) == "LoadBalancer" and _type(new) != "LoadBalancer":
            for key in ("allocateLoadBalancerNodePorts", "loadBalancerClass"):
                if key in new_spec and new_spec.get(key) == old_spec.get(key):
                    new_spec.pop(key)
        if externally_accessible(old) and not externally_accessible(new):
            if new_spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy"):
                new_spec.pop("externalTrafficPolicy", None)
        if _type(new) != "LoadBalancer" and isinstance(new.get("status"), dict):
            new["status"]["loadBalancer"] = {}

    # --- validation ------------------------------------------------------------------------------
    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs: list[Cause] = []
        stype = spec.get("type") or ""
        ports = spec.get("ports") or []
        if not ports and not is_headless(obj) and stype != "ExternalName":
            errs.append(v.required("spec.ports"))
        if stype == "ExternalName":
            name = spec.get("externalName") or ""
            if name:
                errs.extend(f.dns_subdomain_causes(name.rstrip("."), "spec.externalName"))
            else:
                errs.append(v.required("spec.externalName"))
        else:
            errs.extend(self._validate_cluster_ips(spec))
        names: set[str] = set()
        seen_ports: set[tuple[Any, Any]] = set()
        seen_node_ports: set[tuple[Any, Any]] = set()
        for i, port in enumerate(ports):
            p = f"spec.ports[{i}]"
            if not isinstance(port, dict):
                errs.append(v.invalid_value(p, port, "must be an object"))
                continue
            name = port.get("name") or ""
            if len(ports) > 1 and not name:
                errs.append(v.required(f"{p}.name"))
            elif name:
                errs.extend(f.dns_label_causes(name, f"{p}.name"))
                if name in names:
                    errs.append(v.duplicate(f"{p}.name", name))
                names.add(name)
            errs.extend(v.invalid_value(f"{p}.port", port.get("port", 0), m)
                        for m in f.port_num_errors(port.get("port", 0)))
            protocol = port.get("protocol") or ""
            if not protocol:
                errs.append(v.required(f"{p}.protocol"))
            elif protocol not in SERVICE_PROTOCOLS:
                errs.append(v.not_supported(f"{p}.protocol", protocol, SERVICE_PROTOCOLS))
            target = port.get("targetPort")
            if isinstance(target, str):
                errs.extend(v.invalid_value(f"{p}.targetPort", target, m) for m in v.is_valid_port_name(target))
            elif target is not None:
                errs.extend(v.invalid_value(f"{p}.targetPort", target, m) for m in f.port_num_errors(target))
            node_port = port.get("nodePort")
            if node_port:
                if stype == "ClusterIP":
                    errs.append(v.forbidden(f"{p}.nodePort", "may not be used when `type` is 'ClusterIP'"))
                errs.extend(v.invalid_value(f"{p}.nodePort", node_port, m) for m in f.port_num_errors(node_port))
                if (protocol, node_port) in seen_node_ports:
                    errs.append(v.duplicate(f"{p}.nodePort", node_port))
                seen_node_ports.add((protocol, node_port))
            if (protocol, port.get("port")) in seen_ports:
                errs.append(v.duplicate(p, {"port": port.get("port"), "protocol": protocol}))
            seen_ports.add((protocol, port.get("port")))
            if port.get("appProtocol"):
                errs.extend(f.qualified_name_causes(port["appProtocol"], f"{p}.appProtocol"))
        if spec.get("selector"):
            errs.extend(v.validate_labels(spec["selector"], "spec.selector"))
        affinity = spec.get("sessionAffinity") or ""
        if not affinity:
            errs.append(v.required("spec.sessionAffinity"))
        elif affinity not in SESSION_AFFINITIES:
            errs.append(v.not_supported("spec.sessionAffinity", affinity, SESSION_AFFINITIES))
        if not stype:
            errs.append(v.required("spec.type"))
        elif stype not in SERVICE_TYPES:
            errs.append(v.not_supported("spec.type", stype, SERVICE_TYPES))
        etp = spec.get("externalTrafficPolicy") or ""
        if etp:
            if not externally_accessible(obj):
                errs.append(v.invalid_value("spec.externalTrafficPolicy", etp,
                                            "may only be set for externally-accessible services"))
            elif etp not in TRAFFIC_POLICIES:
                errs.append(v.not_supported("spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES))
        elif externally_accessible(obj):
            errs.append(v.required("spec.externalTrafficPolicy"))
        itp = spec.get("internalTrafficPolicy")
        if itp is not None and itp not in TRAFFIC_POLICIES:
            errs.append(v.not_supported("spec.internalTrafficPolicy", itp, TRAFFIC_POLICIES))
        policy = spec.get("ipFamilyPolicy")
        if policy is not None and policy not in IP_FAMILY_POLICIES:
            errs.append(v.not_supported("spec.ipFamilyPolicy", policy, IP_FAMILY_POLICIES))
        for i, family in enumerate(spec.get("ipFamilies") or []):
            if family not in ("IPv4", "IPv6"):
                errs.append(v.not_supported(f"spec.ipFamilies[{i}]", family, ["IPv4", "IPv6"]))
        if spec.get("healthCheckNodePort") and not needs_health_check_node_port(obj):
            errs.append(v.invalid_value("spec.healthCheckNodePort", spec["healthCheckNodePort"],
                                        "may only be set when `type` is 'LoadBalancer' and "
                                        "`externalTrafficPolicy` is 'Local'"))
        if spec.get("allocateLoadBalancerNodePorts") is not None and stype != "LoadBalancer":
            errs.append(v.forbidden("spec.allocateLoadBalancerNodePorts",
                                    "may only be used when `type` is 'LoadBalancer'"))
        for i, ip in enumerate(spec.get("externalIPs") or []):
            errs.extend(v.is_valid_ip(f"spec.externalIPs[{i}]", ip))
        return errs

    @staticmethod
    def _validate_cluster_ips(spec: Obj) -> list[Cause]:
        errs: list[Cause] = []
        ips = spec.get("clusterIPs") or []
        for i, ip in enumerate(ips):
            if ip == "None":
                if i > 0 or len(ips) > 1:
                    errs.append(v.invalid_value(f"spec.clusterIPs[{i}]", ip,
                                                "'None' must be the first and only value"))
            elif ip:
                errs.extend(v.is_valid_ip(f"spec.clusterIPs[{i}]", ip))
        cluster_ip = spec.get("clusterIP") or ""
        if cluster_ip and ips and ips[0] != cluster_ip:
            errs.append(v.invalid_value("spec.clusterIPs", ips, "first value must match `clusterIP`"))
        elif cluster_ip and cluster_ip != "None" and not ips:
            errs.extend(v.is_valid_ip("spec.clusterIP", cluster_ip))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        errs = self.validate(new)
        if needs_cluster_ip(old) and needs_cluster_ip(new):
            old_ips, new_ips = _spec(old).get("clusterIPs") or [], _spec(new).get("clusterIPs") or []
            if old_ips and (not new_ips or new_ips[0] != old_ips[0]):
                errs.append(v.invalid_value("spec.clusterIPs[0]", new_ips, "may not change once set"))
        return errs

    # --- allocation ------------------------------------------------------------------------------
    async def before_create(self, obj: Obj) -> None:
        spec = _spec(obj)
        if not needs_cluster_ip(obj):
            spec.pop("ipFamilies", None)
            spec.pop("ipFamilyPolicy", None)
            return
        self._init_ip_families(obj)
        taken_ips = self._allocate_cluster_ips(obj)
        try:
            self._allocate_node_ports(obj, set())
        except BaseException:
            for ip in taken_ips:
                self.ips.release(ip)
            raise

    async def rollback_create(self, obj: Obj) -> None:
        await self.after_delete(obj)

    async def before_update(self, new: Obj, old: Obj) -> None:
        taken_ips: list[str] = []
        if needs_cluster_ip(new) and not needs_cluster_ip(old):
            self._init_ip_families(new)
            taken_ips = self._allocate_cluster_ips(new)
        try:
            self._allocate_node_ports(new, _node_ports(old) if needs_node_port(old) else set())
        except BaseException:
            for ip in taken_ips:
                self.ips.release(ip)
            raise

    async def rollback_update(self, new: Obj, old: Obj) -> None:
        """Undo before_update when the write failed: release what `new` holds and `old` did not."""
        for ip in set(_cluster_ips(new)) - set(_cluster_ips(old)):
            self.ips.release(ip)
        for port in _node_ports(new) - _node_ports(old):
            self.node_ports.release(port)

    async def after_update(self, new: Obj, old: Obj) -> None:
        for ip in set(_cluster_ips(old)) - set(_cluster_ips(new)):
            self.ips.release(ip)
        for port in _node_ports(old) - _node_ports(new):
            self.node_ports.release(port)

    async def after_delete(self, obj: Obj) -> None:
        for ip in _cluster_ips(obj):
            self.ips.release(ip)
        for port in _node_ports(obj):
            self.node_ports.release(port)

    def load(self, obj: Obj) -> None:
        """Mark what a stored Service holds (start-up repair); values outside today's ranges are ignored."""
        for ip in _cluster_ips(obj):
            if self.ips.contains(ip) and not self.ips.has(ip):
                self.ips.allocate(ip)
        for port in _node_ports(obj):
            if self.node_ports.contains(port) and not self.node_ports.has(port):
                self.node_ports.allocate(port)

    def _invalid(self, obj: Obj, causes: list[Cause]) -> StatusError:
        return invalid(self.info.kind, str((obj.get("metadata") or {}).get("name", "")), self.info.group, causes)

    def _init_ip_families(self, obj: Obj) -> None:
        """initIPFamilyFields for a single-stack cluster."""
        spec = _spec(obj)
        family = self.ips.family
        headless_selectorless = is_headless(obj) and not spec.get("selector")
        for i, requested in enumerate(spec.get("ipFamilies") or []):
            if requested != family:
                raise self._invalid(obj, [v.invalid_value(f"spec.ipFamilies[{i}]", requested,
                                                          "not configured on this cluster")])
        policy = spec.get("ipFamilyPolicy")
        if policy is None:
            policy = "RequireDualStack" if headless_selectorless else "SingleStack"
        elif policy == "RequireDualStack" and not headless_selectorless:
            raise self._invalid(obj, [v.invalid_value("spec.ipFamilyPolicy", policy,
                                                      "this cluster is not configured for dual-stack services")])
        spec["ipFamilyPolicy"] = policy
        spec["ipFamilies"] = [family]

    def _allocate_cluster_ips(self, obj: Obj) -> list[str]:
        """Allocate clusterIP/clusterIPs; returns what was taken so a later failure can give it back."""
        spec = _spec(obj)
        requested = spec.get("clusterIP") or ((spec.get("clusterIPs") or [""])[0]) or ""
        if requested == "None":
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
            return []
        if requested:
            try:
                self.ips.allocate(requested)
            except AllocationError as err:
                ips = spec.get("clusterIPs") or [requested]
                raise self._invalid(obj, [v.invalid_value("spec.clusterIPs", ips,
                                                          f"failed to allocate IP {requested}: {err}")]) from None
            ip = requested
        else:
            try:
                ip = self.ips.allocate_next()
            except AllocationError as err:
                raise internal(f"failed to allocate a serviceIP: {err}") from None
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]
        return [ip]

    def _allocate_node_ports(self, obj: Obj, already_held: set[int]) -> None:
        """initNodePorts / updateNodePorts: requested ports are taken as asked, missing ones assigned; ports of
        the same service port number share one node port (TCP and UDP on 53, say)."""
        taken: list[int] = []
        try:
            self._assign_node_ports(obj, already_held, taken)
        except BaseException:
            for port in taken:
                self.node_ports.release(port)
            raise

    def _take_port(self, obj: Obj, port: int, path: str, already_held: set[int], taken: list[int]) -> None:
        if port in already_held or port in taken:
            return
        try:
            self.node_ports.allocate(port)
        except AllocationError as err:
            raise self._invalid(obj, [v.invalid_value(path, port, str(err))]) from None
        taken.append(port)

    def _next_port(self, what: str, taken: list[int]) -> int:
        try:
            port = self.node_ports.allocate_next()
        except AllocationError as err:
            raise internal(f"failed to allocate a {what}: {err}") from None
        taken.append(port)
        return port

    def _assign_node_ports(self, obj: Obj, already_held: set[int], taken: list[int]) -> None:
        spec = _spec(obj)
        ports = spec.get("ports") or []
        by_service_port: dict[Any, int] = {}
        for i, port in enumerate(ports):
            if not isinstance(port, dict):
                continue
            if not port.get("nodePort") and not should_allocate_node_ports(obj):
                continue
            shared = by_service_port.get(port.get("port"))
            if port.get("nodePort"):
                self._take_port(obj, port["nodePort"], f"spec.ports[{i}].nodePort", already_held, taken)
                by_service_port.setdefault(port.get("port"), port["nodePort"])
            elif shared:
                port["nodePort"] = shared
            else:
                # A later entry for the same service port may name the node port the user wants.
                wanted = next((q.get("nodePort") for q in ports[i + 1:] if isinstance(q, dict)
                               and q.get("port") == port.get("port") and q.get("nodePort")), None)
                if wanted:
                    self._take_port(obj, wanted, f"spec.ports[{i}].nodePort", already_held, taken)
                    port["nodePort"] = wanted
                else:
                    port["nodePort"] = self._next_port("nodePort", taken)
                by_service_port[port.get("port")] = port["nodePort"]
        if needs_health_check_node_port(obj):
            hc = spec.get("healthCheckNodePort")
            if hc:
                self._take_port(obj, hc, "spec.healthCheckNodePort", already_held, taken)
            else:
                spec["healthCheckNodePort"] = self._next_port("healthCheck nodePort", taken)


class EndpointsStrategy(Strategy):
    allow_create_on_update = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        for subset in obj.get("subsets") or []:
            for port in (subset or {}).get("ports") or []:
                if isinstance(port, dict) and not port.get("protocol"):
                    port["protocol"] = "TCP"

    def validate(self, obj: Obj) -> list[Cause]:
        errs: list[Cause] = []
        for i, subset in enumerate(obj.get("subsets") or []):
            sp = f"subsets[{i}]"
            subset = subset or {}
            if not subset.get("addresses") and not subset.get("notReadyAddresses"):
                errs.append(v.required(sp, "must specify `addresses` or `notReadyAddresses`"))
            for kind in ("addresses", "notReadyAddresses"):
                for j, addr in enumerate(subset.get(kind) or []):
                    errs.extend(v.is_valid_ip(f"{sp}.{kind}[{j}].ip", str((addr or {}).get("ip", ""))))
            for j, port in enumerate(subset.get("ports") or []):
                pp = f"{sp}.ports[{j}]"
                port = port or {}
                if len(subset.get("ports") or []) > 1 and not port.get("name"):
                    errs.append(v.required(f"{pp}.name"))
                elif port.get("name"):
                    errs.extend(f.dns_label_causes(port["name"], f"{pp}.name"))
                errs.extend(v.invalid_value(f"{pp}.port", port.get("port", 0), m)
                            for m in f.port_num_errors(port.get("port", 0)))
                protocol = port.get("protocol") or ""
                if not protocol:
                    errs.append(v.required(f"{pp}.protocol"))
                elif protocol not in SERVICE_PROTOCOLS:
                    errs.append(v.not_supported(f"{pp}.protocol", protocol, SERVICE_PROTOCOLS))
        return errs
