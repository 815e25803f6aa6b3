"""Printers for networking, storage, RBAC, coordination, discovery and scheduling kinds."""

from __future__ import annotations

from datetime import datetime

from pocketkube.apiserver.printers.base import (
    AGE,
    NAME,
    NONE,
    Cell,
    Obj,
    Printer,
    age,
    column,
    dig,
    format_label_selector,
    list_with_more,
    meta,
    name,
)
from pocketkube.apiserver.printers.core import load_balancer_ingress
from pocketkube.apiserver.printers.docs import DOCS

# --- Ingress, IngressClass, NetworkPolicy ------------------------------------------------------

_INGRESS_COLUMNS = (
    NAME,
    column("Class", "string",
           "The name of the IngressClass resource that should be used for additional configuration"),
    column("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
    column("Address", "string", "Address is a list containing ingress points for the load-balancer"),
    column("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
)


def _ingress_hosts(rules: list[Obj]) -> str:
    """formatHosts: the first three hosts, "+ N more..." counting rules, "*" when no rule names a host."""
    limit, hosts, more = 3, [], False
    for rule in rules:
        more = more or len(hosts) == limit
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    if not hosts:
        return "*"
    text = ",".join(hosts)
    return f"{text} + {len(rules) - limit} more..." if more else text


def _ingress_cells(ing: Obj, now: datetime) -> list[Cell]:
    spec = ing.get("spec") or {}
    class_name = spec.get("ingressClassName")
    return [name(ing), NONE if class_name is None else class_name, _ingress_hosts(spec.get("rules") or []),
            load_balancer_ingress(dig(ing, "status", "loadBalancer")),
            "80, 443" if spec.get("tls") else "80", age(ing, now)]


_INGRESS_CLASS_COLUMNS = (
    NAME,
    column("Controller", "string", "Controller that is responsible for handling this class"),
    column("Parameters", "string", "A reference to a resource with additional parameters"),
    AGE,
)


def _ingress_class_cells(ic: Obj, now: datetime) -> list[Cell]:
    spec = ic.get("spec") or {}
    params = spec.get("parameters")
    parameters = NONE
    if params is not None:
        parameters = params.get("kind", "")
        if params.get("apiGroup") is not None:
            parameters += "." + params["apiGroup"]
        parameters += "/" + params.get("name", "")
    return [name(ic), spec.get("controller", ""), parameters, age(ic, now)]


_NETWORK_POLICY_COLUMNS = (
    NAME,
    column("Pod-Selector", "string", DOCS["extensions/v1beta1.NetworkPolicySpec.podSelector"]),
    AGE,
)


def _network_policy_cells(np: Obj, now: datetime) -> list[Cell]:
    # podSelector is a struct upstream, never nil: a missing one is the empty selector.
    return [name(np), format_label_selector(dig(np, "spec", "podSelector") or {}), age(np, now)]


# --- StorageClass ------------------------------------------------------------------------------

_STORAGE_CLASS_COLUMNS = (
    NAME,
    column("Provisioner", "string", DOCS["storage/v1.StorageClass.provisioner"]),
    column("ReclaimPolicy", "string", DOCS["storage/v1.StorageClass.reclaimPolicy"]),
    column("VolumeBindingMode", "string", DOCS["storage/v1.StorageClass.volumeBindingMode"]),
    column("AllowVolumeExpansion", "string", DOCS["storage/v1.StorageClass.allowVolumeExpansion"]),
    AGE,
)

_DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                              "storageclass.beta.kubernetes.io/is-default-class")


def _storage_class_cells(sc: Obj, now: datetime) -> list[Cell]:
    annotations = meta(sc).get("annotations") or {}
    is_default = any(annotations.get(a) == "true" for a in _DEFAULT_CLASS_ANNOTATIONS)
    return [name(sc) + (" (default)" if is_default else ""), sc.get("provisioner", ""),
            sc.get("reclaimPolicy") or "Delete", sc.get("volumeBindingMode") or "Immediate",
            bool(sc.get("allowVolumeExpansion")), age(sc, now)]


# --- RoleBinding, ClusterRoleBinding -----------------------------------------------------------

def _binding_columns(doc_key: str, owner: str) -> tuple[Obj, ...]:
    return (
        NAME,
        column("Role", "string", DOCS[doc_key]),
        AGE,
        column("Users", "string", f"Users in the {owner}", priority=1),
        column("Groups", "string", f"Groups in the {owner}", priority=1),
        column("ServiceAccounts", "string", f"ServiceAccounts in the {owner}", priority=1),
    )


def _binding_cells(binding: Obj, now: datetime) -> list[Cell]:
    """RoleRef as Kind/name, then subjects split as rbac.SubjectsStrings does (other kinds are dropped)."""
    ref = binding.get("roleRef") or {}
    users, groups, service_accounts = [], [], []
    for subject in binding.get("subjects") or []:
        match subject.get("kind"):
            case "ServiceAccount":
                service_accounts.append(f"{subject.get('namespace', '')}/{subject.get('name', '')}")
            case "User":
                users.append(subject.get("name", ""))
            case "Group":
                groups.append(subject.get("name", ""))
    return [name(binding), f"{ref.get('kind', '')}/{ref.get('name', '')}", age(binding, now),
            ", ".join(users), ", ".join(groups), ", ".join(service_accounts)]


# --- Lease, EndpointSlice, PriorityClass -------------------------------------------------------

_LEASE_COLUMNS = (NAME, column("Holder", "string", DOCS["coordination/v1.LeaseSpec.holderIdentity"]), AGE)


def _lease_cells(lease: Obj, now: datetime) -> list[Cell]:
    return [name(lease), dig(lease, "spec", "holderIdentity") or "", age(lease, now)]


_ENDPOINT_SLICE_COLUMNS = (
    NAME,
    column("AddressType", "string", DOCS["discovery/v1beta1.EndpointSlice.addressType"]),
    column("Ports", "string", DOCS["discovery/v1beta1.EndpointSlice.ports"]),
    column("Endpoints", "string", DOCS["discovery/v1beta1.EndpointSlice.endpoints"]),
    AGE,
)


def _endpoint_slice_cells(slice_: Obj, now: datetime) -> list[Cell]:
    limit = 3
    ports = slice_.get("ports") or []
    port_texts = []
    for port in ports[:limit]:  # formatDiscoveryPorts: the number, else the name, else "*"
        if port.get("port") is not None:
            port_texts.append(str(port["port"]))
        else:
            port_texts.append(port["name"] if port.get("name") is not None else "*")
    addresses = [a for ep in slice_.get("endpoints") or [] for a in ep.get("addresses") or []]
    return [name(slice_), slice_.get("addressType", ""), list_with_more(port_texts, len(ports), limit),
            list_with_more(addresses[:limit], len(addresses), limit), age(slice_, now)]


_PRIORITY_CLASS_COLUMNS = (
    NAME,
    column("Value", "integer", DOCS["scheduling/v1.PriorityClass.value"]),
    column("Global-Default", "boolean", DOCS["scheduling/v1.PriorityClass.globalDefault"]),
    AGE,
    column("PreemptionPolicy", "string", DOCS["scheduling/v1.PriorityClass.preemptionPolicy"]),
)


def _priority_class_cells(pc: Obj, now: datetime) -> list[Cell]:
    return [name(pc), pc.get("value", 0), bool(pc.get("globalDefault")), age(pc, now),
            pc.get("preemptionPolicy") or ""]


PRINTERS: dict[tuple[str, str, str], Printer] = {
    ("networking.k8s.io", "v1", "Ingress"): Printer(_INGRESS_COLUMNS, _ingress_cells),
    ("networking.k8s.io", "v1", "IngressClass"): Printer(_INGRESS_CLASS_COLUMNS, _ingress_class_cells),
    ("networking.k8s.io", "v1", "NetworkPolicy"): Printer(_NETWORK_POLICY_COLUMNS, _network_policy_cells),
    ("storage.k8s.io", "v1", "StorageClass"): Printer(_STORAGE_CLASS_COLUMNS, _storage_class_cells),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding"): Printer(
        _binding_columns("rbac/v1beta1.RoleBinding.roleRef", "roleBinding"), _binding_cells),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"): Printer(
        _binding_columns("rbac/v1beta1.ClusterRoleBinding.roleRef", "clusterRoleBinding"), _binding_cells),
    ("coordination.k8s.io", "v1", "Lease"): Printer(_LEASE_COLUMNS, _lease_cells),
    ("discovery.k8s.io", "v1", "EndpointSlice"): Printer(_ENDPOINT_SLICE_COLUMNS, _endpoint_slice_cells),
    ("scheduling.k8s.io", "v1", "PriorityClass"): Printer(_PRIORITY_CLASS_COLUMNS, _priority_class_cells),
}
