"""Which deleted local-path volumes a node reclaims, and which directories it agrees to remove."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pocketkube.api import localpath
from pocketkube.controllers.persistentvolume import default_storage_class, local_path_volume
from pocketkube.kubelet.volumes.localpath import reclaims_here, removable_directory

STORAGE = "/srv/cluster-a/storage"  # the controller manager's root, which the node does not know
VOLUME = {
    "metadata": {"name": "pvc-1", "deletionTimestamp": "2026-11-23T08:00:00Z", "finalizers": [localpath.FINALIZER],
                 "annotations": {localpath.ANN_PROVISIONED_BY: localpath.PROVISIONER}, "resourceVersion": "7"},
    "spec": {"hostPath": {"path": f"{STORAGE}/pvc-1_default_data"},
             "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "data", "uid": "1"},
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


def test_only_the_directory_the_provisioner_names_for_the_volume() -> None:
    assert removable_directory(VOLUME) == Path(f"{STORAGE}/pvc-1_default_data")
    assert removable_directory(_changed("spec.hostPath", {"path": "/anywhere/else/pvc-1_default_data"})) == \
        Path("/anywhere/else/pvc-1_default_data")  # the root is the server's choice
    for path in ("/etc", STORAGE, f"{STORAGE}/pvc-2_default_data", f"{STORAGE}/pvc-1_other_data",
                 f"{STORAGE}/pvc-1_default_data/sub", f"{STORAGE}/pvc-1_default_data/", f"{STORAGE}/./pvc-1_default_data",
                 f"{STORAGE}/pvc-1_default_data/../pvc-1_default_data", f"/x/../{STORAGE}/pvc-1_default_data",
                 "pvc-1_default_data", "storage/pvc-1_default_data", "//pvc-1_default_data", "/pvc-1_default_data",
                 "/etc/pvc-1_default_data", "/var/lib/pvc-1_default_data", ""):
        assert removable_directory(_changed("spec.hostPath", {"path": path})) is None, path
    assert removable_directory(_changed("spec.claimRef", None)) is None  # no claim to name the directory after
    assert removable_directory(_changed("spec.claimRef", {"namespace": "default", "name": "other"})) is None


def test_not_a_symlink_nor_a_mount_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    directory = tmp_path / "pvc-1_default_data"
    directory.symlink_to(target)
    at_directory = _changed("spec.hostPath", {"path": str(directory)})
    assert removable_directory(at_directory) is None
    directory.unlink()
    directory.mkdir()
    assert removable_directory(at_directory) == directory
    monkeypatch.setattr("os.path.ismount", lambda path: path == str(directory))
    assert removable_directory(at_directory) is None  # a whole filesystem would go with it


def test_the_node_removes_what_the_controller_provisions() -> None:
    claim = {"metadata": {"name": "data", "namespace": "default", "uid": "1"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                      "storageClassName": "local-path"}}
    node = {"metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"}}}
    volume = local_path_volume(claim, default_storage_class(), node, localpath.storage_root(STORAGE))
    volume["metadata"]["deletionTimestamp"] = "2026-11-23T08:00:00Z"
    assert reclaims_here(volume, "node-a")
    assert removable_directory(volume) == Path(f"{STORAGE}/pvc-1_default_data")


def test_storage_root_is_absolute_and_normalized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert localpath.storage_root("data/storage") == tmp_path / "data" / "storage"
    assert localpath.storage_root(f"{STORAGE}/../other/") == Path("/srv/cluster-a/other")
    assert str(localpath.storage_root(f"/{STORAGE}")) == STORAGE
    for system in ("/", "/etc", "/var/lib/", "/usr/../var"):
        with pytest.raises(ValueError, match="system directory"):
            localpath.storage_root(system)
