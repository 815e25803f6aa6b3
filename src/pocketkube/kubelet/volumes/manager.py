"""The kubelet's volume manager: makes every volume of a pod ready under
pods/<uid>/volumes/<plugin>/<name> (upstream's layout), turns a container's volumeMounts into bind mounts,
keeps configMap/secret/downwardAPI/projected contents current, and tears it all down again.

Blocking file and mount work runs in worker threads; API reads run on the event loop. Calls for one pod
are serialised (a refresh never races a setup of the same pod)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from pocketkube.api.quantity import parse_quantity
from pocketkube.client.rest import Client
from pocketkube.engine.runtime.spec import Mount
from pocketkube.kubelet.volumes import configmap_secret, downward, emptydir, hostpath, mounts, pvc, subpath
from pocketkube.kubelet.volumes.allocatable import machine_allocatable
from pocketkube.kubelet.volumes.atomic_writer import AtomicWriter, FileProjection
from pocketkube.kubelet.volumes.model import (
    CONFIGMAP,
    DOWNWARD_API,
    EMPTY_DIR,
    HOST_PATH,
    LOCAL_VOLUME,
    PROJECTED,
    SECRET,
    ContainerMountsError,
    MountedVolume,
    Obj,
    PodVolumes,
    SourceError,
    VolumeError,
)
from pocketkube.kubelet.volumes.ownership import (
    fs_group_change_policy,
    fs_user_from,
    pod_fs_group,
    set_volume_ownership,
)
from pocketkube.kubelet.volumes.projected import projected_payload
from pocketkube.kubelet.volumes.tokens import ServiceAccountTokens
from pocketkube.mountpoint import is_mount_point

log = logging.getLogger(__name__)

VOLUMES_DIR = "volumes"
PLUGINS_DIR = "plugins"  # per-volume bookkeeping, as upstream's pods/<uid>/plugins/<plugin>/<volume>
READY_FILE = "ready"
# volumeMount.mountPropagation -> the bind mount's propagation (the CRI's PRIVATE, HOST_TO_CONTAINER,
# BIDIRECTIONAL as containerd sets them)
PROPAGATION = {None: "rprivate", "None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}
# sources whose files the AtomicWriter keeps: plugin directory, and whether a tmpfs backs them
_ATOMIC_SOURCES = {"configMap": (CONFIGMAP, False), "secret": (SECRET, True),
                   "downwardAPI": (DOWNWARD_API, True), "projected": (PROJECTED, True)}


class VolumeManager:
    def __init__(self, pods_dir: Path, client: Client, *, node_name: str,
                 node_allocatable: Mapping[str, str] | None = None) -> None:
        """`node_allocatable` (cpu, memory, ephemeral-storage as quantities) is what downward API limits of
        containers without limits read, and what bounds memory-backed volumes; the machine's capacity
        when not given. `node_name` names this node for callers; no volume source depends on it."""
        self.pods_dir = pods_dir
        self.client = client
        self.node_name = node_name
        self.tokens = ServiceAccountTokens(client)
        self._allocatable = dict(node_allocatable) if node_allocatable is not None else None
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def allocatable(self) -> dict[str, str]:
        if self._allocatable is None:
            self._allocatable = machine_allocatable(self.pods_dir)
        return self._allocatable

    def _node_memory(self) -> int:
        return parse_quantity(self.allocatable["memory"]).value()

    def _lock(self, pod_uid: str) -> asyncio.Lock:
        return self._locks.setdefault(pod_uid, asyncio.Lock())

    def pod_dir(self, pod_uid: str) -> Path:
        return self.pods_dir / pod_uid

    def volume_dir(self, pod_uid: str, plugin: str, name: str) -> Path:
        return self.pods_dir / pod_uid / VOLUMES_DIR / plugin / name

    # --- setup -------------------------------------------------------------------------------------
    async def setup(self, pod: Obj) -> PodVolumes:
        """Make every volume of the pod ready. Raises VolumeError (one FailedMount event) for the first
        volume that cannot be; the ones before it stay ready, and a retry starts over idempotently."""
        uid = pod["metadata"]["uid"]
        async with self._lock(uid):
            ready = PodVolumes(uid)
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                ready.volumes[volume["name"]] = await self._setup_volume(pod, volume)
            return ready

    async def _setup_volume(self, pod: Obj, volume: Obj) -> MountedVolume:
        name = volume["name"]
        uid = pod["metadata"]["uid"]
        try:
            for key, (plugin, tmpfs) in _ATOMIC_SOURCES.items():
                if volume.get(key) is not None:
                    await self._write_atomic_volume(pod, volume, plugin, tmpfs)
                    return MountedVolume(name, plugin, self.volume_dir(uid, plugin, name), read_only=True,
                                         tmpfs=tmpfs)
            if volume.get("emptyDir") is not None:
                return await asyncio.to_thread(self._setup_empty_dir, pod, volume)
            if volume.get("hostPath") is not None:
                source = volume["hostPath"]
                path = source.get("path") or ""
                hostpath.validate_no_backsteps(path)
                await asyncio.to_thread(hostpath.check_type, path, source.get("type"))
                return MountedVolume(name, HOST_PATH, Path(path))
            if volume.get("persistentVolumeClaim") is not None:
                return await self._setup_claim(pod, volume)
        except pvc.ClaimError as err:
            claim = volume["persistentVolumeClaim"].get("claimName")
            raise VolumeError(name, str(err), (
                f"Unable to attach or mount volumes: unmounted volumes=[{name}], failed to process "
                f"volumes=[{name}]: error processing PVC {pod['metadata'].get('namespace')}/{claim}: {err}")) from err
        except (SourceError, OSError) as err:
            raise VolumeError(name, str(err)) from err
        kinds = ", ".join(sorted(k for k in volume if k != "name")) or "no source"
        raise VolumeError(name, f"volume type {kinds} is not supported on this node")

    def _ready_marker(self, pod_uid: str, plugin: str, name: str) -> Path:
        return self.pods_dir / pod_uid / PLUGINS_DIR / plugin / name / READY_FILE

    def _setup_empty_dir(self, pod: Obj, volume: Obj) -> MountedVolume:
        uid, name = pod["metadata"]["uid"], volume["name"]
        directory = self.volume_dir(uid, EMPTY_DIR, name)
        marker = self._ready_marker(uid, EMPTY_DIR, name)
        memory = (volume["emptyDir"].get("medium") or "") == emptydir.MEDIUM_MEMORY
        # Set up once: a retry or a restarted kubelet must not reset what containers did to the files.
        if marker.exists() and (is_mount_point(directory) if memory else directory.is_dir()):
            return MountedVolume(name, EMPTY_DIR, directory, tmpfs=memory)
        tmpfs = emptydir.setup_empty_dir(directory, volume["emptyDir"], pod, self._node_memory())
        set_volume_ownership(directory, pod_fs_group(pod), read_only=False)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return MountedVolume(name, EMPTY_DIR, directory, tmpfs=tmpfs)

    async def _setup_claim(self, pod: Obj, volume: Obj) -> MountedVolume:
        source = volume["persistentVolumeClaim"]
        namespace = pod["metadata"].get("namespace") or "default"
        pv = await pvc.bound_volume(self.client, namespace, source.get("claimName") or "")
        pv_name = pv["metadata"]["name"]
        try:
            local_path = await pvc.is_local_path_volume(self.client, pv)
            claim = await asyncio.to_thread(pvc.prepare_volume, pv, bool(source.get("readOnly")), local_path)
            if claim.plugin == LOCAL_VOLUME and not claim.read_only:
                await asyncio.to_thread(self._own_local_volume, pod, volume["name"], claim.path)
        except (SourceError, OSError) as err:
            # past the claim, upstream names the volume by its PersistentVolume
            raise VolumeError(pv_name, str(err)) from err
        return MountedVolume(volume["name"], claim.plugin, claim.path, read_only=claim.read_only,
                             gid=pvc.volume_gid(pv))

    def _own_local_volume(self, pod: Obj, name: str, path: Path) -> None:
        """The local volume plugin applies fsGroup ownership (with the pod's change policy) once per pod."""
        uid = pod["metadata"]["uid"]
        marker = self._ready_marker(uid, LOCAL_VOLUME, name)
        if marker.exists():
            return
        set_volume_ownership(path, pod_fs_group(pod), read_only=False, change_policy=fs_group_change_policy(pod))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    # --- configMap, secret, downwardAPI, projected ------------------------------------------------
    async def _payload(self, pod: Obj, volume: Obj) -> dict[str, FileProjection]:
        namespace = pod["metadata"].get("namespace") or "default"
        if volume.get("configMap") is not None:
            source = volume["configMap"]
            optional = bool(source.get("optional"))
            configmap = await configmap_secret.get_configmap(self.client, namespace, source.get("name") or "",
                                                             optional)
            return configmap_secret.configmap_payload(configmap, source.get("items"), source.get("defaultMode"),
                                                      optional)
        if volume.get("secret") is not None:
            source = volume["secret"]
            optional = bool(source.get("optional"))
            secret = await configmap_secret.get_secret(self.client, namespace, source.get("secretName") or "",
                                                       optional)
            return configmap_secret.secret_payload(secret, source.get("items"), source.get("defaultMode"), optional)
        if volume.get("downwardAPI") is not None:
            source = volume["downwardAPI"]
            return downward.collect_data(source.get("items") or [], pod, self.allocatable, source.get("defaultMode"))
        return await projected_payload(volume["projected"], pod, self.client, self.tokens, self.allocatable,
                                       pod_fs_group(pod), fs_user_from(pod))

    async def _write_atomic_volume(self, pod: Obj, volume: Obj, plugin: str, tmpfs: bool) -> bool:
        # the source is read first: a missing configMap leaves no directory behind
        payload = await self._payload(pod, volume)
        directory = self.volume_dir(pod["metadata"]["uid"], plugin, volume["name"])
        size = emptydir.memory_volume_size(pod, None, self._node_memory()) if tmpfs else None
        return await asyncio.to_thread(self._write_files, directory, payload, tmpfs, size, pod_fs_group(pod))

    @staticmethod
    def _write_files(directory: Path, payload: dict[str, FileProjection], tmpfs: bool, size: int | None,
                     fs_group: int | None) -> bool:
        # the directory is made once: fsGroup ownership gave it bits that making it again would take away
        if tmpfs:
            emptydir.setup_tmpfs(directory, size)
        elif not directory.is_dir():
            emptydir.setup_dir(directory)
        # ownership covers the whole volume: the first write also creates files outside the new version
        return AtomicWriter(directory).write(
            payload, lambda _ts_dir: set_volume_ownership(directory, fs_group, read_only=True))

    async def refresh(self, pod: Obj, volumes: PodVolumes) -> bool:
        """Bring configMap, secret, downwardAPI and projected volumes up to date with their sources (and the
        pod's current labels and annotations); returns whether any file changed. Volumes already mounted
        through subPath keep the version they were mounted with, as upstream. Every volume is tried; the
        first failure is raised afterwards."""
        changed = False
        failure: VolumeError | None = None
        async with self._lock(volumes.pod_uid):
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                mounted = volumes.volumes.get(volume["name"])
                if mounted is None or not mounted.updatable:
                    continue
                try:
                    changed |= await self._write_atomic_volume(pod, volume, mounted.plugin, mounted.tmpfs)
                except (SourceError, OSError) as err:
                    log.warning("refreshing volume %s of pod %s: %s", volume["name"], volumes.pod_uid, err)
                    failure = failure or VolumeError(volume["name"], str(err))
        if failure is not None:
            raise failure
        return changed

    # --- container mounts -------------------------------------------------------------------------
    def mounts_for(self, pod: Obj, container: Obj, volumes: PodVolumes, *,
                   env: Mapping[str, str] | None = None) -> list[Mount]:
        """The container's volumeMounts as bind mounts. `env` is the container's resolved environment for
        subPathExpr; without it the variables the pod object defines are used (literal values, fieldRef,
        resourceFieldRef). Blocking (subPath bind mounts). Raises ContainerMountsError."""
        result = []
        container_name = container.get("name") or ""
        expand_env = dict(env) if env is not None else None
        for index, volume_mount in enumerate(container.get("volumeMounts") or []):
            name = volume_mount.get("name") or ""
            mounted = volumes.volumes.get(name)
            if mounted is None:
                raise ContainerMountsError(f'cannot find volume "{name}" to mount into container "{container_name}"')
            source = mounted.path
            relative = volume_mount.get("subPath") or ""
            if volume_mount.get("subPathExpr"):
                if expand_env is None:
                    expand_env = subpath.container_env(pod, container, self.allocatable)
                try:
                    relative = subpath.expand_subpath_expr(volume_mount["subPathExpr"], expand_env)
                except SourceError as err:
                    raise ContainerMountsError(str(err)) from err
            if relative:
                source = self._subpath_source(pod, container_name, index, mounted, relative, volume_mount)
            elif mounted.plugin == HOST_PATH:
                hostpath.ensure_source_exists(source)
            propagation = volume_mount.get("mountPropagation")
            if propagation not in PROPAGATION:
                raise ContainerMountsError(f'invalid MountPropagation mode: "{propagation}"')
            _check_recursive_read_only(volume_mount)
            read_only = bool(volume_mount.get("readOnly")) or mounted.read_only
            result.append(Mount(destination=volume_mount.get("mountPath") or "", source=str(source), type="bind",
                                options=["rbind", "ro" if read_only else "rw", PROPAGATION[propagation]]))
        return result

    def _subpath_source(self, pod: Obj, container_name: str, index: int, mounted: MountedVolume, relative: str,
                        volume_mount: Obj) -> Path:
        mount_name = volume_mount.get("name")
        try:
            subpath.validate_subpath(relative)
        except SourceError as err:
            raise ContainerMountsError(str(err)) from err
        try:
            base = os.path.realpath(mounted.path, strict=True)
        except OSError as err:
            raise ContainerMountsError(f"volume {mounted.name} is gone: {err}") from err
        full = os.path.join(base, relative)
        if not os.path.exists(full):
            # created now with the volume's permissions, so that an fsGroup volume stays group-writable
            try:
                subpath.safe_make_dir(full, base, os.stat(base).st_mode)
            except (SourceError, OSError) as err:
                log.warning("subPath %s of volume %s: %s", relative, mounted.name, err)
                raise ContainerMountsError(f'failed to create subPath directory for volumeMount "{mount_name}" '
                                           f'of container "{container_name}"') from err
        target = self.pod_dir(pod["metadata"]["uid"]) / subpath.SUBPATHS_DIR / mounted.name / container_name / str(index)
        try:
            return subpath.bind_subpath(mounted.path, relative, target)
        except (SourceError, OSError) as err:
            # upstream keeps the details (paths of the host) out of what the user sees
            log.warning("subPath %s of volume %s: %s", relative, mounted.name, err)
            raise ContainerMountsError(f'failed to prepare subPath for volumeMount "{mount_name}" of container '
                                       f'"{container_name}"') from err

    # --- teardown ---------------------------------------------------------------------------------
    async def teardown(self, pod_uid: str) -> None:
        """Unmount and remove the pod's volume directories (subPath binds, tmpfs, files), and the pod's
        directory when nothing else is left in it. hostPath and PersistentVolume data live elsewhere and
        are left alone. Works from what is on disk (after a
        restart too) and again after it succeeded."""
        async with self._lock(pod_uid):
            try:
                await asyncio.to_thread(self._teardown, pod_uid)
            except OSError as err:
                raise VolumeError("", str(err), f"UnmountVolume.TearDown failed for pod {pod_uid}: {err}") from err
            self.tokens.forget_pod(pod_uid)
        self._locks.pop(pod_uid, None)

    def _teardown(self, pod_uid: str) -> None:
        pod_dir = self.pod_dir(pod_uid)
        # subPath binds first: they may hold files of a tmpfs volume
        roots = [pod_dir / subpath.SUBPATHS_DIR, pod_dir / VOLUMES_DIR, pod_dir / PLUGINS_DIR]
        table = mounts.mount_points()
        for root in roots:
            for point in mounts.mount_points_under(root, table):
                try:
                    mounts.unmount(point)
                except OSError as err:
                    if err.errno not in (errno.EINVAL, errno.ENOENT):  # already gone
                        raise
        table = mounts.mount_points()
        for root in roots:
            if not root.exists():
                continue
            remaining = mounts.mount_points_under(root, table)
            if remaining:  # never delete through a mount: it may be the node's own data
                raise OSError(errno.EBUSY, f"{remaining[0]} is still mounted")
            shutil.rmtree(root)
        try:
            pod_dir.rmdir()  # the pod's directory goes too once nothing else (the kubelet's own files) is left
        except FileNotFoundError:
            pass
        except OSError as err:
            if err.errno != errno.ENOTEMPTY:
                raise


def _check_recursive_read_only(volume_mount: Obj) -> None:
    """recursiveReadOnly as the kubelet checks it, for a runtime without recursive read-only binds (runc
    1.1): IfPossible falls back to a plain read-only bind, Enabled cannot be honoured."""
    mode = volume_mount.get("recursiveReadOnly") or "Disabled"
    if mode == "Disabled":
        return
    name = volume_mount.get("name")
    if not volume_mount.get("readOnly"):
        raise ContainerMountsError(f'volume "{name}" requested recursive read-only mode, but it is not read-only')
    propagation = volume_mount.get("mountPropagation")
    if propagation not in (None, "None"):
        raise ContainerMountsError(f'volume "{name}" requested recursive read-only mode, but it is not compatible '
                                   f'with propagation "{propagation}"')
    if mode == "Enabled":
        raise ContainerMountsError(f'volume "{name}" requested recursive read-only mode, but it is not supported by '
                                   "the container runtime")
    if mode != "IfPossible":
        raise ContainerMountsError(f'unknown recursive read-only mode "{mode}"')
