"""Static pods: pods defined by manifest files in a directory (DATA_DIR/manifests), which the kubelet runs by
itself and shows in the API as mirror pods, as upstream's file source and mirror client do.

A static pod is named <name>-<node>, its UID is a hash of its manifest, the node and the file (so a
restarted kubelet finds its containers again, and an edited file makes a new pod), and it tolerates every
NoExecute taint. Its mirror pod carries the kubernetes.io/config.mirror annotation and is owned by the Node.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from pocketkube.kubelet.status import rfc3339

log = logging.getLogger(__name__)
Obj = dict[str, Any]

CONFIG_SOURCE = "kubernetes.io/config.source"
CONFIG_HASH = "kubernetes.io/config.hash"
CONFIG_MIRROR = "kubernetes.io/config.mirror"
CONFIG_SEEN = "kubernetes.io/config.seen"
FILE_SOURCE = "file"


def is_mirror(pod: Obj) -> bool:
    return CONFIG_MIRROR in (pod["metadata"].get("annotations") or {})


def static_uid_of(pod: Obj) -> str:
    """The static pod a mirror pod stands for ("" for other pods)."""
    return (pod["metadata"].get("annotations") or {}).get(CONFIG_MIRROR, "")


def static_pod(document: Obj, path: Path, node_name: str, seen: float) -> Obj:
    """The pod a manifest describes, as the kubelet runs it."""
    if not isinstance(document, dict) or document.get("kind") != "Pod" or document.get("apiVersion") != "v1":
        raise ValueError("the manifest must hold one v1 Pod")
    meta = dict(document.get("metadata") or {})
    if not meta.get("name"):
        raise ValueError("the pod has no metadata.name")
    digest = hashlib.md5(usedforsecurity=False)
    digest.update(json.dumps(document, sort_keys=True).encode())
    digest.update(f"host:{node_name}".encode())
    digest.update(f"file:{path}".encode())
    uid = digest.hexdigest()
    spec = dict(document.get("spec") or {})
    spec["nodeName"] = node_name
    spec["tolerations"] = [*(spec.get("tolerations") or []), {"operator": "Exists", "effect": "NoExecute"}]
    annotations = {**(meta.get("annotations") or {}), CONFIG_HASH: uid, CONFIG_SOURCE: FILE_SOURCE,
                   CONFIG_SEEN: rfc3339(seen)}
    metadata = {**meta, "name": f"{meta['name']}-{node_name}", "namespace": meta.get("namespace") or "default",
                "uid": uid, "annotations": annotations}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": {}}


def read_manifests(directory: Path, node_name: str, seen: dict[Path, float]) -> dict[str, Obj]:
    """Static pods by UID from every file of the directory (dotfiles skipped); a file that does not hold a
    pod is reported and skipped. `seen` remembers when each file was first read."""
    pods: dict[str, Obj] = {}
    if not directory.is_dir():
        return pods
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            document = yaml.safe_load(path.read_text())
            pod = static_pod(document, path, node_name, seen.setdefault(path, path.stat().st_mtime))
        except (OSError, ValueError, yaml.YAMLError) as err:
            log.warning("static pod manifest %s: %s", path, err)
            continue
        pods[pod["metadata"]["uid"]] = pod
    return pods


def mirror_pod(pod: Obj, node_name: str, node_uid: str) -> Obj:
    meta = pod["metadata"]
    annotations = {**meta["annotations"], CONFIG_MIRROR: meta["uid"]}
    metadata = {k: v for k, v in meta.items() if k not in ("uid", "resourceVersion", "creationTimestamp")}
    metadata["annotations"] = annotations
    metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid,
                                    "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod["spec"]}
