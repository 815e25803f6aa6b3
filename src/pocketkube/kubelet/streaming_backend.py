"""The kubelet server's view of this node's pods (the StreamingBackend of kubelet/server.py): which engine
container a (namespace, pod, container) names, its log files, exec and attach through the runtime, the
pod's network namespace for port-forward, and what the usage statistics are read from."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pocketkube.engine.containers import Container, ContainerNotFound
from pocketkube.engine.runtime import conmon
from pocketkube.engine.runtime.attach import AttachSession
from pocketkube.engine.snapshots.snapshotter import SnapshotNotFound
from pocketkube.engine.streams import ExecStream
from pocketkube.kubelet.runtime import Sandbox, host_namespace
from pocketkube.kubelet.stats import ContainerSource, NodeSource, PodSource, StatsCollector, VolumeSource
from pocketkube.kubelet.volumes.model import CONFIGMAP, DOWNWARD_API, EMPTY_DIR, PROJECTED, SECRET

if TYPE_CHECKING:
    from pocketkube.kubelet.agent import Kubelet

Obj = dict[str, Any]
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
SERVING_CERT_VALIDITY = dt.timedelta(days=365)
# Volume sources with a directory of their own under the pod's (whose usage is reported), by plugin.
_VOLUME_PLUGINS = {"emptyDir": EMPTY_DIR, "configMap": CONFIGMAP, "secret": SECRET, "downwardAPI": DOWNWARD_API,
                   "projected": PROJECTED}


class NodeStreaming:
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.stats = StatsCollector()
        self._upper_dirs: dict[str, Path] = {}   # container id -> its writable layer (fixed for its life)

    def _pod(self, namespace: str, pod: str) -> Obj:
        found = self.kubelet.pod(namespace, pod)
        if found is None:
            raise LookupError(f'pod "{pod}" not found in namespace "{namespace}" on this node')
        return found

    def _container_name(self, pod: Obj, container: str | None) -> str:
        spec = pod.get("spec") or {}
        names = [c["name"] for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or []),
                                     *(spec.get("ephemeralContainers") or [])]]
        if container is None:
            annotations = pod["metadata"].get("annotations") or {}
            container = annotations.get(DEFAULT_CONTAINER_ANNOTATION) or (names[0] if names else "")
        if container not in names:
            raise LookupError(f'container "{container}" not found in pod "{pod["metadata"]["name"]}"')
        return container

    def _instances(self, namespace: str, pod: str, container: str | None) -> tuple[str, list[Container]]:
        obj = self._pod(namespace, pod)
        name = self._container_name(obj, container)
        worker = self.kubelet.worker_of(obj)
        return name, worker.container_instances(name) if worker is not None else []

    def container_id(self, namespace: str, pod: str, container: str | None) -> str:
        name, instances = self._instances(namespace, pod, container)
        if not instances:
            raise LookupError(f'container "{name}" in pod "{pod}" is waiting to start: ContainerCreating')
        return instances[0].id

    def log_path(self, namespace: str, pod: str, container: str | None, previous: bool) -> Path:
        name, instances = self._instances(namespace, pod, container)
        if previous:
            if len(instances) < 2:
                raise LookupError(f'previous terminated container "{name}" in pod "{pod}" not found')
            return Path(instances[1].config.log_path)
        if not instances:
            raise LookupError(f'container "{name}" in pod "{pod}" is waiting to start: ContainerCreating')
        return Path(instances[0].config.log_path)

    def container_running(self, container_id: str) -> bool:
        engine = self.kubelet.engine
        try:
            container = engine.containers.load(container_id)
        except ContainerNotFound:
            return False
        return container.running and conmon.exit_status(engine.monitor_paths, container_id) is None

    async def exec(self, container_id: str, command: list[str], *, tty: bool, stdin: bool) -> ExecStream:
        return await self.kubelet.runtime.exec(container_id, command, tty=tty, stdin=stdin)

    async def attach(self, container_id: str) -> AttachSession:
        return await self.kubelet.runtime.attach(container_id)

    def pod_netns(self, namespace: str, pod: str) -> str:
        obj = self._pod(namespace, pod)
        if (obj.get("spec") or {}).get("hostNetwork"):
            return host_namespace("net")
        worker = self.kubelet.worker_of(obj)
        netns = worker.sandbox.netns if worker is not None and worker.sandbox is not None else None
        if not netns:
            raise LookupError(f'pod "{pod}" has no network namespace on this node')
        return netns

    async def stats_summary(self, only_cpu_and_memory: bool) -> Obj:
        # What runs is taken here, on the loop the workers change it on; the files are read in a thread.
        pods = []
        for worker in list(self.kubelet.workers.values()):
            if worker.sandbox is None:
                continue   # not started yet, or finished: upstream lists the pods that have a sandbox
            spec = worker.pod.get("spec") or {}
            names = [c["name"] for kind in ("initContainers", "containers", "ephemeralContainers")
                     for c in spec.get(kind) or []]
            running = [(name, instances[0]) for name in names
                       if (instances := worker.container_instances(name)) and instances[0].running]
            pods.append((worker.pod, worker.sandbox, running))
        return await asyncio.to_thread(self._collect, pods, only_cpu_and_memory)

    def _collect(self, pods: list[tuple[Obj, Sandbox, list[tuple[str, Container]]]], only_cpu_and_memory: bool
                 ) -> Obj:
        kubelet = self.kubelet
        engine = kubelet.engine
        node = NodeSource(
            name=kubelet.config.node_name, pods_cgroup=kubelet.cgroups.kubepods, root_dir=kubelet.config.root,
            image_dir=engine.root, image_bytes=None if only_cpu_and_memory else engine.images.disk_usage()["total"],
            pods=[self._pod_source(pod, sandbox, running, full=not only_cpu_and_memory)
                  for pod, sandbox, running in pods])
        running_ids = {c.id for _, _, running in pods for _, c in running}
        self._upper_dirs = {cid: path for cid, path in self._upper_dirs.items() if cid in running_ids}
        return self.stats.collect(node, only_cpu_and_memory=only_cpu_and_memory)

    def _pod_source(self, pod: Obj, sandbox: Sandbox, running: list[tuple[str, Container]], *, full: bool
                    ) -> PodSource:
        meta = pod["metadata"]
        containers = [ContainerSource(name, c.cgroups_path, c.state.started_at or c.created,
                                      rootfs=self._upper_dir(c.id) if full else None,
                                      logs=Path(c.config.log_path).parent if c.config.log_path else None)
                      for name, c in running]
        volumes = []
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            plugin = next((p for source, p in _VOLUME_PLUGINS.items() if volume.get(source) is not None), None)
            if plugin is not None:
                on_disk = plugin == EMPTY_DIR and (volume["emptyDir"] or {}).get("medium") != "Memory"
                volumes.append(VolumeSource(volume["name"], self.kubelet.ctx.volumes.volume_dir(
                    meta["uid"], plugin, volume["name"]), ephemeral=on_disk))
        return PodSource(meta["name"], meta.get("namespace", ""), meta["uid"], sandbox.created,
                         self.kubelet.cgroups.path(pod), containers, volumes,
                         network_pid=running[0][1].state.pid if running else None)

    def _upper_dir(self, container_id: str) -> Path | None:
        if container_id not in self._upper_dirs:
            try:
                self._upper_dirs[container_id] = self.kubelet.engine.snapshots.upper_dir(container_id)
            except SnapshotNotFound:
                return None
        return self._upper_dirs[container_id]


def serving_context(directory: Path, node_name: str, node_ip: str) -> ssl.SSLContext:
    """TLS for the kubelet's API with its self-signed serving certificate (directory/kubelet.crt, made on first
    start as upstream's kubelet makes one when given none); the API server does not verify it by default."""
    cert, key = directory / "kubelet.crt", directory / "kubelet.key"
    if not (cert.exists() and key.exists()):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_pem, key_pem = _self_signed(node_name, node_ip)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        cert.write_bytes(cert_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _self_signed(node_name: str, node_ip: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node_name}@{int(now.timestamp())}")])
    sans: list[x509.GeneralName] = [x509.DNSName(node_name)]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(node_ip)))
    except ValueError:
        pass
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + SERVING_CERT_VALIDITY)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
