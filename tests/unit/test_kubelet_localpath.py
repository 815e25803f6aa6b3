"""Which deleted local-path volumes a node reclaims, and which directories it agrees to remove."""

from __future__ import annotations

import copy
from pathlib import Path

from pocketkube.api import localpath
from pocketkube.kubelet.volumes.localpath import reclaims_here, removable_directory

VOLUME = {
    "metadata": {"name": "pvc-1", "deletionTimestamp": "2026-11-23T08:00:00Z", "finalizers": [localpath.FINALIZER],
                 "annotations": {localpath.ANN_PROVISIONED_BY: localpath.PROVISIONER}, "resourceVersion": "7"},
    "spec": {"hostPath": {"path": f"{localpath.STORAGE_ROOT}/pvc-1_default_data"},
             "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                 {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}]}]}}}}


def _changed(path: str, value: object) -> dict:
    volume = copy.deepcopy(VOLUME)
    *parents, last = path.split(".")
    target = volume
    for key in parents:
        target = target[key]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return volume


def test_only_deleted_local_path_volumes_of_this_node() -> None:
    assert reclaims_here(VOLUME, "node-a")
    assert not reclaims_here(VOLUME, "node-b")
    assert not reclaims_here(_changed("metadata.deletionTimestamp", None), "node-a")  # not deleted yet
    assert not reclaims_here(_changed("metadata.finalizers", ["other"]), "node-a")  # done already
    assert not reclaims_here(_changed("metadata.annotations", {}), "node-a")  # not the provisioner's
    assert not reclaims_here(_changed("spec.nodeAffinity", None), "node-a")


def test_only_directories_directly_under_the_storage_root(tmp_path: Path) -> None:
    assert removable_directory(VOLUME) == Path(f"{localpath.STORAGE_ROOT}/pvc-1_default_data")
    for path in ("/etc", localpath.STORAGE_ROOT, f"{localpath.STORAGE_ROOT}/a/b", f"{localpath.STORAGE_ROOT}/../x",
                 f"{localpath.STORAGE_ROOT}/a/..", ""):
        assert removable_directory(_changed("spec.hostPath", {"path": path})) is None, path
