"""API discovery documents: legacy (/api, /apis, /apis/G/V) and aggregated (apidiscovery.k8s.io/v2)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from pocketkube.api.kinds import SUBRESOURCE_VERBS, ResourceCatalog, ResourceInfo

Obj = dict[str, Any]

# The kind each subresource answers with, as (group, version, kind); None = the parent's kind.
_SUBRESOURCE_KINDS: dict[str, tuple[str, str, str] | None] = {
    "status": None,
    "scale": ("autoscaling", "v1", "Scale"),
    "binding": ("", "v1", "Binding"),
    "eviction": ("policy", "v1", "Eviction"),
    "finalize": None,
    "token": ("authentication.k8s.io", "v1", "TokenRequest"),
    "approval": None,
    "ephemeralcontainers": None,
}
_SUBRESOURCE_VERBS = {**SUBRESOURCE_VERBS, "finalize": ("update",)}
# Subresources a kubelet serves (apiserver/kubeletproxy.py): (name, verbs, kind).
_KUBELET_SUBRESOURCES = {
    ("", "pods"): (("attach", ("create", "get"), "PodAttachOptions"),
                   ("exec", ("create", "get"), "PodExecOptions"),
                   ("log", ("get",), "Pod"),
                   ("portforward", ("create", "get"), "PodPortForwardOptions")),
    ("", "nodes"): (("proxy", ("create", "delete", "get", "patch", "update"), "NodeProxyOptions"),),
}


def _subresources(info: ResourceInfo) -> list[tuple[str, tuple[str, ...], tuple[str, str, str], bool]]:
    """(name, verbs, response group/version/kind, whether legacy discovery names that group/version) of each
    subresource of a resource."""
    entries = [(sub, _SUBRESOURCE_VERBS[sub], _SUBRESOURCE_KINDS[sub] or (info.group, info.version, info.kind),
                _SUBRESOURCE_KINDS[sub] is not None) for sub in info.subresources]
    for sub, verbs, kind in _KUBELET_SUBRESOURCES.get((info.group, info.plural), ()):
        entries.append((sub, verbs, (info.group, info.version, kind), False))
    return entries


def _storage_version_hash(info: ResourceInfo) -> str:
    digest = hashlib.sha256(f"{info.stored_version}/{info.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_entry(group: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(catalog: ResourceCatalog) -> Obj:
    groups = [_group_entry(g, vs) for g, vs in catalog.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(catalog: ResourceCatalog, group: str) -> Obj | None:
    versions = catalog.group_versions().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def api_resource_list(catalog: ResourceCatalog, group: str, version: str) -> Obj | None:
    infos = catalog.in_group_version(group, version)
    if not infos:
        return None
    resources: list[Obj] = []
    for info in infos:
        entry: Obj = {
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": list(info.verbs),
        }
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        entry["storageVersionHash"] = _storage_version_hash(info)
        resources.append(entry)
        for sub, verbs, gvk, names_version in _subresources(info):
            sub_entry: Obj = {"name": f"{info.plural}/{sub}", "singularName": "", "namespaced": info.namespaced,
                              "kind": gvk[2], "verbs": list(verbs)}
            if names_version:
                if gvk[0]:
                    sub_entry["group"] = gvk[0]
                sub_entry["version"] = gvk[1]
            resources.append(sub_entry)
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": infos[0].group_version, "resources": resources}


def _aggregated_resource(info: ResourceInfo) -> Obj:
    entry: Obj = {
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    subresources = []
    for sub, verbs, gvk, _ in _subresources(info):
        subresources.append({"subresource": sub,
                             "responseKind": {"group": gvk[0], "version": gvk[1], "kind": gvk[2]},
                             "verbs": list(verbs)})
    if subresources:
        entry["subresources"] = subresources
    return entry


def aggregated_discovery(catalog: ResourceCatalog, legacy: bool, api_version: str) -> Obj:
    """APIGroupDiscoveryList for /api (legacy=True: the core group) or /apis (every named group)."""
    items = []
    for group, versions in catalog.group_versions().items():
        if bool(group) == legacy:
            continue
        items.append({
            "metadata": {"name": group, "creationTimestamp": None},
            "versions": [{"version": v,
                          "resources": [_aggregated_resource(i) for i in catalog.in_group_version(group, v)],
                          "freshness": "Current"} for v in versions],
        })
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}
