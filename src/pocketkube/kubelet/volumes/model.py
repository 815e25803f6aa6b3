"""What the volume manager hands to the pod worker: the volumes of a pod made ready on this node, and the
error that becomes a FailedMount event."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

# Plugin directories under pods/<uid>/volumes/, named as upstream escapes its plugin names for disk
# ("kubernetes.io/empty-dir" -> "kubernetes.io~empty-dir").
EMPTY_DIR = "kubernetes.io~empty-dir"
CONFIGMAP = "kubernetes.io~configmap"
SECRET = "kubernetes.io~secret"
DOWNWARD_API = "kubernetes.io~downward-api"
PROJECTED = "kubernetes.io~projected"
# Volumes that live where the user says (no directory of their own under the pod).
HOST_PATH = "kubernetes.io~host-path"
LOCAL_VOLUME = "kubernetes.io~local-volume"


class VolumeError(Exception):
    """A volume of a pod could not be made ready. str() is the message of upstream's FailedMount event,
    e.g. `MountVolume.SetUp failed for volume "config" : configmap "app" not found`; `cause` is the part
    after the colon."""

    reason = "FailedMount"

    def __init__(self, volume: str, cause: str, message: str | None = None) -> None:
        self.volume = volume
        self.cause = cause
        super().__init__(message or f'MountVolume.SetUp failed for volume "{volume}" : {cause}')


class ContainerMountsError(Exception):
    """A container's volumeMounts cannot be made (missing volume, bad subPath): upstream fails the
    container's start with this message and the waiting reason CreateContainerConfigError."""

    reason = "CreateContainerConfigError"


class SourceError(Exception):
    """A volume source's own failure, before it is attributed to a volume (see VolumeError)."""


@dataclass
class MountedVolume:
    """One ready volume. `path` is what containers bind-mount; `read_only` is set for the sources upstream
    always mounts read-only (configMap, secret, downwardAPI, projected) and for read-only claims."""

    name: str
    plugin: str
    path: Path
    read_only: bool = False
    tmpfs: bool = False
    gid: int | None = None    # a PersistentVolume's pv.beta.kubernetes.io/gid: every container joins the group

    @property
    def updatable(self) -> bool:
        """Rewritten in place by refresh() (AtomicWriter volumes)."""
        return self.plugin in (CONFIGMAP, SECRET, DOWNWARD_API, PROJECTED)


@dataclass
class PodVolumes:
    pod_uid: str
    volumes: dict[str, MountedVolume] = field(default_factory=dict)

    def __getitem__(self, name: str) -> MountedVolume:
        return self.volumes[name]

    def __contains__(self, name: object) -> bool:
        return name in self.volumes

    def extra_groups(self) -> list[int]:
        """upstream's GetExtraSupplementalGroupsForPod: the groups the pod's volumes ask for."""
        return list(dict.fromkeys(v.gid for v in self.volumes.values() if v.gid is not None))


def aggregate(messages: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message as is, several deduplicated in brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"
