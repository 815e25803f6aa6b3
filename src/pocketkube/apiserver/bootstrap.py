"""What every cluster has from its first start: the system namespaces, the system priority classes and
the `kubernetes` Service."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from pocketkube.api import errors
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver.registry import Registry, WriteOptions

log = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# schedulingapiv1.SystemPriorityClasses: made at start-up when absent (an existing one is left alone).
SYSTEM_PRIORITY_CLASSES = (
    ("system-node-critical", 2000001000,
     "Used for system critical pods that must not be moved from their current node."),
    ("system-cluster-critical", 2000000000,
     "Used for system critical pods that must run in the cluster, but can be moved to another node if "
     "necessary."),
)
Obj = dict[str, Any]


async def _ensure(registry: Registry, catalog: ResourceCatalog, group: str, plural: str, namespace: str,
                  obj: Obj, *, reconcile: bool = False) -> None:
    """Create the object if absent; with `reconcile`, also bring an existing one back to `obj`'s content."""
    info = catalog.resource(group, "v1", plural)
    assert info is not None
    name = obj["metadata"]["name"]
    try:
        current = await registry.get(info, namespace, name)
    except errors.StatusError as err:
        if err.code != 404:
            raise
        try:
            await registry.create(info, namespace, obj, WriteOptions())
        except errors.StatusError as create_err:
            if create_err.code != 409:  # another API server made it first
                raise
        return
    if reconcile and any(current.get(k) != v for k, v in obj.items() if k not in ("metadata", "apiVersion",
                                                                                 "kind")):
        updated = {**current, **{k: v for k, v in obj.items() if k != "metadata"}}
        await registry.update(info, namespace, name, updated, WriteOptions())


async def bootstrap_cluster(registry: Registry, catalog: ResourceCatalog, *, service_cidr: str,
                            advertise_address: str, port: int) -> None:
    for name in SYSTEM_NAMESPACES:
        await _ensure(registry, catalog, "", "namespaces", "",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    for name, value, description in SYSTEM_PRIORITY_CLASSES:
        await _ensure(registry, catalog, "scheduling.k8s.io", "priorityclasses", "", {
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value, "description": description})
    cluster_ip = str(next(ipaddress.ip_network(service_cidr).hosts()))
    await _ensure(registry, catalog, "", "services", "default", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    })
    await _ensure(registry, catalog, "", "endpoints", "default", {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise_address}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    }, reconcile=True)
    await _ensure(registry, catalog, "discovery.k8s.io", "endpointslices", "default", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv6" if ":" in advertise_address else "IPv4",
        "endpoints": [{"addresses": [advertise_address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }, reconcile=True)
