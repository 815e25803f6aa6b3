"""networking.k8s.io/v1 Ingress, IngressClass, NetworkPolicy."""

from __future__ import annotations

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.api.selectors import validate_label_selector
from pocketkube.apiserver.strategy import Obj, Strategy

from . import _fields as f

PATH_TYPES = ["Exact", "ImplementationSpecific", "Prefix"]
POLICY_TYPES = ["Ingress", "Egress"]


def _validate_backend(backend: Obj, path: str) -> list[Cause]:
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        return [v.invalid_value(path, "", "cannot set both resource and service backends")]
    if service is None and resource is None:
        return [v.invalid_value(path, "", "resource or service backend is required")]
    errs: list[Cause] = []
    if service is not None:
        name = service.get("name") or ""
        if not name:
            errs.append(v.required(f"{path}.service.name"))
        else:
            errs.extend(v.invalid_value(f"{path}.service.name", name, m) for m in v.is_dns1035_label(name))
        port = service.get("port") or {}
        has_name, has_number = bool(port.get("name")), bool(port.get("number"))
        if has_name and has_number:
            errs.append(v.invalid_value(f"{path}.service.port", "", "cannot set both port name & port number"))
        elif has_name:
            errs.extend(v.invalid_value(f"{path}.service.port.name", port["name"], m)
                        for m in v.is_valid_port_name(port["name"]))
        elif has_number:
            errs.extend(v.invalid_value(f"{path}.service.port.number", port["number"], m)
                        for m in f.port_num_errors(port["number"]))
        else:
            errs.append(v.required(f"{path}.service.port", "port name or number is required"))
    return errs


class IngressStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        spec = obj.get("spec") or {}
        errs: list[Cause] = []
        if spec.get("defaultBackend") is not None:
            errs += _validate_backend(spec["defaultBackend"], "spec.defaultBackend")
        if not spec.get("rules") and spec.get("defaultBackend") is None:
            errs.append(v.invalid_value("spec", spec, "either `defaultBackend` or `rules` must be specified"))
        for i, tls in enumerate(spec.get("tls") or []):
            for j, host in enumerate((tls or {}).get("hosts") or []):
                msgs = v.is_wildcard_dns1123_subdomain(host) if host.startswith("*.") else v.is_dns1123_subdomain(host)
                errs.extend(v.invalid_value(f"spec.tls[{i}].hosts[{j}]", host, m) for m in msgs)
        for i, rule in enumerate(spec.get("rules") or []):
            rp = f"spec.rules[{i}]"
            rule = rule or {}
            host = rule.get("host") or ""
            if host:
                msgs = v.is_wildcard_dns1123_subdomain(host) if host.startswith("*.") else v.is_dns1123_subdomain(host)
                errs.extend(v.invalid_value(f"{rp}.host", host, m) for m in msgs)
            http = rule.get("http")
            if http is None:
                continue
            paths = http.get("paths") or []
            if not paths:
                errs.append(v.required(f"{rp}.http.paths"))
            for j, p in enumerate(paths):
                pp = f"{rp}.http.paths[{j}]"
                p = p or {}
                path_type = p.get("pathType")
                if not path_type:
                    errs.append(v.required(f"{pp}.pathType", "pathType must be specified"))
                elif path_type not in PATH_TYPES:
                    errs.append(v.not_supported(f"{pp}.pathType", path_type, PATH_TYPES))
                path_value = p.get("path") or ""
                if path_type in ("Exact", "Prefix") and not path_value.startswith("/"):
                    errs.append(v.invalid_value(f"{pp}.path", path_value, "must be an absolute path"))
                errs += _validate_backend(p.get("backend") or {}, f"{pp}.backend")
        return errs


class IngressClassStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        controller = (obj.get("spec") or {}).get("controller") or ""
        if not controller:
            return [v.required("spec.controller")]
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + f.check_immutable((new.get("spec") or {}).get("controller"),
                                                      (old.get("spec") or {}).get("controller"),
                                                      "spec.controller")


class NetworkPolicyStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        for direction in ("ingress", "egress"):
            for rule in spec.get(direction) or []:
                for port in (rule or {}).get("ports") or []:
                    if isinstance(port, dict) and port.get("protocol") is None:
                        port["protocol"] = "TCP"
        if not spec.get("policyTypes"):
            spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]

    def validate(self, obj: Obj) -> list[Cause]:
        spec = obj.get("spec") or {}
        errs = validate_label_selector(spec.get("podSelector") or {}, "spec.podSelector")
        types = spec.get("policyTypes") or []
        for i, ptype in enumerate(types):
            if ptype not in POLICY_TYPES:
                errs.append(v.not_supported(f"spec.policyTypes[{i}]", ptype, POLICY_TYPES))
        if len(types) > 2:
            errs.append(v.invalid_value("spec.policyTypes", types, "may not specify more than two policyTypes"))
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for i, rule in enumerate(spec.get(direction) or []):
                for j, port in enumerate((rule or {}).get("ports") or []):
                    proto = (port or {}).get("protocol")
                    if proto not in ("TCP", "UDP", "SCTP"):
                        errs.append(v.not_supported(f"spec.{direction}[{i}].ports[{j}].protocol", proto,
                                                    ["SCTP", "TCP", "UDP"]))
                for j, peer in enumerate((rule or {}).get(peers_key) or []):
                    pp = f"spec.{direction}[{i}].{peers_key}[{j}]"
                    peer = peer or {}
                    chosen = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
                    if not chosen:
                        errs.append(v.required(pp, "must specify a peer"))
                    elif "ipBlock" in chosen and len(chosen) > 1:
                        errs.append(v.forbidden(pp, "may not specify both ipBlock and another peer"))
                    for key in ("podSelector", "namespaceSelector"):
                        errs += validate_label_selector(peer.get(key), f"{pp}.{key}")
                    if peer.get("ipBlock") is not None:
                        cidr = str(peer["ipBlock"].get("cidr") or "")
                        if not cidr:
                            errs.append(v.required(f"{pp}.ipBlock.cidr"))
                        else:
                            errs += v.is_valid_cidr(f"{pp}.ipBlock.cidr", cidr)
        return errs
