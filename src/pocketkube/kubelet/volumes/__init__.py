"""Pod volumes on a real node: emptyDir, hostPath, configMap, secret, downwardAPI, projected and
persistentVolumeClaim, laid out under DATA_DIR/kubelet/pods as upstream's kubelet lays them out."""

from pocketkube.kubelet.volumes.manager import VolumeManager
from pocketkube.kubelet.volumes.model import ContainerMountsError, MountedVolume, PodVolumes, VolumeError

__all__ = ["ContainerMountsError", "MountedVolume", "PodVolumes", "VolumeError", "VolumeManager"]
