"""apiregistration.k8s.io/v1 APIService.

Stored and validated: the server does not aggregate (proxy to) the API servers these objects register, nor
report the availability of those with a service (a later issue). The local ones of built-in and CRD
group/versions are kept by apiserver/apiservices.py.
"""

from __future__ import annotations

import base64
import binascii

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.apiserver.strategy import Obj, Strategy

from ._access import as_dict, as_str, name_of, spec_of

MAX_GROUP_PRIORITY = 20000
MAX_VERSION_PRIORITY = 1000


class APIServiceStrategy(Strategy):
    name_validator = "path segment"

    def default(self, obj: Obj) -> None:
        service = spec_of(obj).get("service")
        if isinstance(service, dict) and service.get("port") is None:
            service["port"] = 443

    def validate(self, obj: Obj) -> list[Cause]:
        spec = spec_of(obj)
        group, version = as_str(spec.get("group")), as_str(spec.get("version"))
        errs: list[Cause] = []
        name, required_name = name_of(obj), f"{version}.{group}"
        if name and not v.is_path_segment_name(name) and name != required_name:
            errs.append(v.invalid_value("metadata.name", name,
                                        f'must be `spec.version+"."+spec.group`: {v.go_quote(required_name)}'))
        if not group and version != "v1":
            errs.append(v.required("spec.group", "only v1 may have an empty group and it better be legacy kube"))
        errs.extend(v.invalid_value("spec.group", group, m) for m in (v.is_dns1123_subdomain(group) if group else []))
        errs.extend(v.invalid_value("spec.version", version, m) for m in v.is_dns1035_label(version))
        group_priority, version_priority = spec.get("groupPriorityMinimum", 0), spec.get("versionPriority", 0)
        if isinstance(group_priority, int) and not 0 < group_priority <= MAX_GROUP_PRIORITY:
            errs.append(v.invalid_value("spec.groupPriorityMinimum", group_priority,
                                        f"must be positive and less than {MAX_GROUP_PRIORITY}"))
        if isinstance(version_priority, int) and not 0 < version_priority <= MAX_VERSION_PRIORITY:
            errs.append(v.invalid_value("spec.versionPriority", version_priority,
                                        f"must be positive and less than {MAX_VERSION_PRIORITY}"))
        return errs + _validate_service(spec)


def _validate_service(spec: Obj) -> list[Cause]:
    ca_bundle, skip_verify = as_str(spec.get("caBundle")), spec.get("insecureSkipTLSVerify") is True
    if spec.get("service") is None:  # served by kube-apiserver itself
        errs: list[Cause] = []
        if ca_bundle:
            errs.append(v.invalid_value("spec.caBundle", f"{len(_decoded(ca_bundle))} bytes",
                                        "local APIServices may not have a caBundle"))
        if skip_verify:
            errs.append(v.invalid_value("spec.insecureSkipTLSVerify", True,
                                        "local APIServices may not have insecureSkipTLSVerify"))
        return errs
    service = as_dict(spec.get("service"))
    errs = []
    if not as_str(service.get("namespace")):
        errs.append(v.required("spec.service.namespace"))
    if not as_str(service.get("name")):
        errs.append(v.required("spec.service.name"))
    port = service.get("port")
    if isinstance(port, int) and v.is_valid_port_num(port):
        errs.append(v.invalid_value("spec.service.port", port,
                                    "port is not valid: " + ", ".join(v.is_valid_port_num(port))))
    if skip_verify and ca_bundle:
        errs.append(v.invalid_value("spec.insecureSkipTLSVerify", True, "may not be true if caBundle is present"))
    return errs


def _decoded(b64: str) -> bytes:
    """A []byte field's bytes (JSON carries them as base64)."""
    try:
        return base64.b64decode(b64)
    except (binascii.Error, ValueError):
        return b64.encode()
