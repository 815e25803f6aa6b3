"""The built-in local-path provisioner's conventions, shared by the PersistentVolume controller that makes its
volumes and the kubelet that creates and removes their directories on the node.

A volume of it is a hostPath PersistentVolume on one node, in a directory named by directory_name directly
under the controller manager's storage root (`--default-local-storage-path`, by default the server's
DATA_DIR/storage). It carries FINALIZER from its creation: once the controller deletes a released volume
(reclaim policy Delete), the volume's node removes the directory, then the finalizer, and only then does the
object go."""

from __future__ import annotations

import os
from pathlib import Path

PROVISIONER = "pocketkube.io/local-path"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
FINALIZER = "pocketkube.io/local-path-directory"
# Directories of the operating system that are never a storage root: a volume directory directly inside one
# was not made by the provisioner, and the node does not remove it.
SYSTEM_DIRECTORIES = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/proc",
                                "/root", "/run", "/sbin", "/sys", "/usr", "/var", "/var/lib"})


def directory_name(volume_name: str, claim_namespace: str, claim_name: str) -> str:
    """The name of a volume's directory under the storage root: VOLUME_NAMESPACE_CLAIM, as rancher's
    local-path-provisioner names it."""
    return f"{volume_name}_{claim_namespace}_{claim_name}"


def storage_root(path: str | Path) -> Path:
    """The storage root as volumes record it (absolute and normalized, which the node requires of a directory
    it removes); ValueError for a system directory."""
    root = "/" + os.path.abspath(path).lstrip("/")  # abspath keeps a leading "//", which the node refuses
    if root in SYSTEM_DIRECTORIES:
        raise ValueError(f"{root} cannot be the local-path provisioner's storage root: it is a system directory")
    return Path(root)
