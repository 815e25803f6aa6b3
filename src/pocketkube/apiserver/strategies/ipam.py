"""networking.k8s.io/v1 IPAddress and ServiceCIDR.

Stored and validated only: Service cluster IPs come from this server's own allocator (allocators.py), which
neither reads ServiceCIDRs nor records its allocations as IPAddress objects (a later issue).
"""

from __future__ import annotations

import ipaddress

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.apiserver.strategy import Obj, Strategy

from . import _fields as f
from ._access import as_dict, as_list, as_str, name_of, spec_of


def ip_address_name_problems(name: str) -> list[str]:
    """ValidateIPAddressName: the object is named by its address, in canonical form."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return [f"ParseAddr({v.go_quote(name)}): unable to parse IP"]
    return [] if str(address) == name else ["must be a canonical format IP address"]


class IPAddressStrategy(Strategy):
    name_validator = "any"  # the address rule below is the name rule

    def validate(self, obj: Obj) -> list[Cause]:
        name = name_of(obj)
        errs = [v.invalid_value("metadata.name", name, m) for m in ip_address_name_problems(name)] if name else []
        ref = spec_of(obj).get("parentRef")
        if ref is None:
            return errs + [v.required("spec.parentRef")]
        ref, path = as_dict(ref), "spec.parentRef"
        group = as_str(ref.get("group"))
        if group:  # the core group is the empty string
            errs.extend(v.invalid_value(f"{path}.group", group, m) for m in v.is_dns1123_subdomain(group))
        for key in ("resource", "name"):
            value = as_str(ref.get(key))
            if not value:
                errs.append(v.required(f"{path}.{key}"))
            errs.extend(v.invalid_value(f"{path}.{key}", value, m) for m in (v.is_path_segment_name(value)
                                                                             if value else []))
        namespace = as_str(ref.get("namespace"))
        errs.extend(v.invalid_value(f"{path}.namespace", namespace, m)
                    for m in (v.is_path_segment_name(namespace) if namespace else []))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return f.check_immutable(spec_of(new).get("parentRef"), spec_of(old).get("parentRef"), "spec.parentRef")


def _validate_cidrs(spec: Obj) -> list[Cause]:
    cidrs, path = as_list(spec.get("cidrs")), "spec.cidrs"
    if not cidrs:
        return [v.required(path, "at least one CIDR required")]
    if len(cidrs) > 2:
        return [v.invalid_value(path, spec, "may only hold up to 2 values")]
    errs: list[Cause] = []
    for i, cidr in enumerate(cidrs):
        errs += v.is_valid_cidr(f"{path}[{i}]", as_str(cidr))
    if len(cidrs) == 2 and not errs and (":" in cidrs[0]) == (":" in cidrs[1]):
        errs.append(v.invalid_value(path, cidrs, "may specify no more than one IP for each IP family, i.e "
                                                 "192.168.0.0/24 and 2001:db8::/64"))
    return errs


class ServiceCIDRStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        return _validate_cidrs(spec_of(obj))

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        """The ranges never change, but a single-stack range may gain a second family."""
        errs = self.validate(new)
        before, after = as_list(spec_of(old).get("cidrs")), as_list(spec_of(new).get("cidrs"))
        if len(before) == len(after) or (len(before) == 1 and len(after) == 2):
            return errs + [v.invalid_value(f"spec.cidrs[{i}]", after[i], v.FIELD_IMMUTABLE_ERROR_MSG)
                           for i in range(len(before)) if before[i] != after[i]]
        return errs + [v.invalid_value("spec.cidrs", after, v.FIELD_IMMUTABLE_ERROR_MSG)]
