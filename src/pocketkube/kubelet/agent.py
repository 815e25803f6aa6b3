"""The kubelet: registers the node, heartbeats it, and runs the pods bound to it through one worker per pod.

Start-up, as upstream's: register (or take over) the Node and learn its podCIDR; look at what the runtime
already runs (containers carry their pod's labels, sandboxes have records); list and watch the pods of
this node; adopt the containers of pods that still exist — running ones keep running, with their restart
counts — and tear down whatever belongs to pods deleted meanwhile. Stopping the kubelet leaves the
containers running, as upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver.pki import KUBELET_CLIENT_USER, NODE_CERT_PATH, NODE_NAME_HEADER
from pocketkube.client.events import EventRecorder
from pocketkube.client.informer import Informer
from pocketkube.client.rest import APIError, Client, ClientConfig
from pocketkube.engine.containers import Container
from pocketkube.engine.engine import Engine
from pocketkube.fsutil import spread_subdirectories
from pocketkube.kubelet.backoff import Backoff
from pocketkube.kubelet.cgroups import PodCgroups
from pocketkube.kubelet.eventqueue import EventQueue
from pocketkube.kubelet.imagegc import ImageGC, ImageGCPolicy
from pocketkube.kubelet.join import join_config
from pocketkube.kubelet.logrotation import MONITOR_INTERVAL as LOG_MONITOR_INTERVAL
from pocketkube.kubelet.logrotation import ContainerLogRotator, LogRotationPolicy
from pocketkube.kubelet.node import KUBELET_VERSION, NodeConfig, NodeStatus, allocatable
from pocketkube.kubelet.podnetwork import DEFAULT_BRIDGE, DEFAULT_CLUSTER_DOMAIN, DNSSettings, PodNetwork
from pocketkube.kubelet.podworker import NodeContext, PodWorker
from pocketkube.kubelet.runtime import (
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    RUNTIME_VERSION,
    Runtime,
    Sandbox,
)
from pocketkube.kubelet.server import KubeletServer
from pocketkube.kubelet.staticpods import is_mirror, mirror_pod, read_manifests, static_uid_of
from pocketkube.kubelet.streaming_backend import NodeStreaming, serving_context
from pocketkube.kubelet.volumes import VolumeManager
from pocketkube.kubelet.volumes.localpath import HOSTNAME_LABEL, PVS, LocalPathReclaimer

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_CATALOG = ResourceCatalog()
PODS = _CATALOG.resource("", "v1", "pods")
SERVICES = _CATALOG.resource("", "v1", "services")
assert PODS is not None and SERVICES is not None

DEFAULT_PORT = 10250
NODE_CREDENTIALS = "client-kubelet.pem"
STATIC_POD_PERIOD = 5.0  # how often the manifest directory is read (upstream: 20 s)
HOUSEKEEPING_PERIOD = 60.0
IO_THREADS = 32  # worker threads for blocking file, mount and cgroup work (see _tune_event_loop)


@dataclass
class KubeletConfig:
    data_dir: Path
    node_name: str
    node_ip: str
    port: int = DEFAULT_PORT
    bind_address: str = ""                 # the node IP when empty
    cluster_cidr: str = "10.42.0.0/16"
    node_cidr_mask: int = 24
    cluster_dns: list[str] = field(default_factory=lambda: ["10.43.0.10"])
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    cni_bridge: str = DEFAULT_BRIDGE
    control_plane: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    lease_interval: float = 10.0
    status_interval: float = 60.0
    static_pod_period: float = STATIC_POD_PERIOD
    image_gc: ImageGCPolicy = field(default_factory=ImageGCPolicy)
    log_rotation: LogRotationPolicy = field(default_factory=LogRotationPolicy)

    @property
    def root(self) -> Path:
        return self.data_dir / "kubelet"

    @property
    def manifests(self) -> Path:
        return self.data_dir / "manifests"


class Kubelet:
    def __init__(self, client: Client, config: KubeletConfig, engine: Engine | None = None) -> None:
        self.client = client
        self.config = config
        self.engine = engine or Engine(config.data_dir)
        root = config.root
        (root / "pods").mkdir(parents=True, exist_ok=True)
        spread_subdirectories(root / "pods")  # a directory per pod
        self.runtime = Runtime(self.engine, root)
        self.network = PodNetwork(root, bridge=config.cni_bridge,
                                  dns=DNSSettings(list(config.cluster_dns), config.cluster_domain))
        self.cgroups = PodCgroups(self.engine.cgroup_parent)
        self.node = NodeStatus(client, NodeConfig(
            name=config.node_name, ip=config.node_ip, data_dir=config.data_dir, kubelet_port=config.port,
            runtime_version=RUNTIME_VERSION, cluster_cidr=config.cluster_cidr,
            node_cidr_mask=config.node_cidr_mask, labels=config.labels, control_plane=config.control_plane,
            lease_interval=config.lease_interval, status_interval=config.status_interval))
        self.pod_informer = Informer(client, PODS, field_selector=f"spec.nodeName={config.node_name}")
        self.service_informer = Informer(client, SERVICES)
        # deleted local-path volumes of this node wait for their directory to be removed here
        self.volume_informer = Informer(client, PVS)
        self.local_path = LocalPathReclaimer(client, config.labels.get(HOSTNAME_LABEL, config.node_name))
        self.workers: dict[str, PodWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.ctx = NodeContext(
            node_name=config.node_name, node_ip=config.node_ip, client=client, runtime=self.runtime,
            network=self.network, cgroups=self.cgroups,
            volumes=VolumeManager(root / "pods", client, node_name=config.node_name),
            events=EventQueue(EventRecorder(client, "kubelet", config.node_name)), pods_dir=root / "pods",
            restart_backoff=Backoff(), pull_backoff=Backoff(), list_services=self._services)
        self.image_gc = ImageGC(self.engine, config.image_gc)
        self.log_rotator = ContainerLogRotator(config.log_rotation, self.runtime.reopen_log)
        self.ready = asyncio.Event()
        self.server: KubeletServer | None = None
        self._adoptable: dict[str, tuple[list[Container], list[Sandbox]]] = {}
        self.static_pods: dict[str, Obj] = {}             # static pod UID -> pod, from DATA_DIR/manifests
        self._manifests_seen: dict[Path, float] = {}
        self._mirrors_changed = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        background: list[asyncio.Task[Any]] = []
        try:
            await self.node.register()
            self.network.configure(self.node.pod_cidr)
            await self.network.ensure_masquerade()
            self.ctx.node_allocatable = allocatable(self.node.readings, self.node.config.max_pods)
            await asyncio.to_thread(self.cgroups.ensure_qos_tree)
            await self.engine.recover()
            await self._scan_runtime()
            background.append(asyncio.create_task(self.node.run(stop), name="node-heartbeat"))
            background.append(asyncio.create_task(self.ctx.events.run(), name="kubelet-events"))
            background.append(asyncio.create_task(self.service_informer.run(), name="kubelet-services"))
            self.volume_informer.add_handler(on_add=self.local_path.on_volume,
                                             on_update=lambda _old, new: self.local_path.on_volume(new))
            background.append(asyncio.create_task(self.volume_informer.run(), name="kubelet-volumes"))
            self.pod_informer.add_handler(on_add=self._on_pod, on_update=lambda _old, new: self._on_pod(new),
                                          on_delete=self._on_pod_deleted)
            background.append(asyncio.create_task(self.pod_informer.run(), name="kubelet-pods"))
            await asyncio.gather(self.pod_informer.synced.wait(), self.service_informer.synced.wait())
            await self._sync_static_pods()
            await self._clean_orphans()
            background.append(asyncio.create_task(self._static_pod_loop(stop), name="kubelet-static-pods"))
            background.append(asyncio.create_task(self._housekeeping(stop), name="kubelet-housekeeping"))
            background.append(asyncio.create_task(self._rotate_logs(stop), name="kubelet-log-rotation"))
            await self._start_server()
            log.info("kubelet on node %s ready (podCIDR %s, %d pods adopted)", self.config.node_name,
                     self.node.pod_cidr, len(self.workers))
            self.ready.set()
            await stop.wait()
        finally:
            if self.server is not None:
                await self.server.stop()
            # The containers keep running: a kubelet that comes back adopts them.
            tasks = [*background, *self._tasks.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _start_server(self) -> None:
        """The kubelet's HTTPS API (logs, exec, attach, port-forward), for the API server only."""
        config = self.config
        context = await asyncio.to_thread(serving_context, config.root / "pki", config.node_name, config.node_ip)
        ca = self.client.config.ca_data
        if not ca:
            raise ValueError("the kubeconfig carries no cluster CA: the kubelet cannot check its callers")
        self.server = KubeletServer(NodeStreaming(self), bind=config.bind_address or config.node_ip,
                                    port=config.port, ssl_context=context, client_ca_pem=ca,
                                    allowed_client_cns=[KUBELET_CLIENT_USER])
        await self.server.start()

    def _services(self, namespace: str) -> list[Obj]:
        return self.service_informer.store.by_index("namespace", namespace)

    # --- recovery ------------------------------------------------------------------------------------

    async def _scan_runtime(self) -> None:
        """What runs from an earlier life of the kubelet, by pod UID (adopted when their pods show up)."""
        containers: dict[str, list[Container]] = defaultdict(list)
        for container in await self.runtime.list_containers():
            containers[container.config.labels[LABEL_POD_UID]].append(container)
        sandboxes: dict[str, list[Sandbox]] = defaultdict(list)
        records = self.runtime.list_sandboxes()
        for sandbox in records:
            sandboxes[sandbox.pod_uid].append(sandbox)
        await self.runtime.remove_stray_infra_containers(records)
        for uid in set(containers) | set(sandboxes):
            self._adoptable[uid] = (containers.get(uid, []), sandboxes.get(uid, []))

    async def _clean_orphans(self) -> None:
        """Pods deleted while the kubelet was away: their containers, sandboxes and cgroups go now."""
        for uid, (containers, sandboxes) in list(self._adoptable.items()):
            self._adoptable.pop(uid)
            labels = containers[0].config.labels if containers else {}
            name = labels.get(LABEL_POD_NAME) or (sandboxes[0].pod_name if sandboxes else uid)
            namespace = labels.get(LABEL_POD_NAMESPACE) or (sandboxes[0].pod_namespace if sandboxes else "")
            pod = {"metadata": {"uid": uid, "name": name, "namespace": namespace, "deletionGracePeriodSeconds": 0},
                   "spec": {}}
            worker = PodWorker(self.ctx, pod, adopted=containers, sandboxes=sandboxes)
            worker.removed(pod)
            self._start_worker(uid, worker)
        known = {uid for uid in self.workers}
        for uid in await asyncio.to_thread(self.cgroups.pod_uids):
            if uid not in known:
                await asyncio.to_thread(self.cgroups.remove_pod, uid)

    # --- pods ----------------------------------------------------------------------------------------

    def _on_pod(self, pod: Obj) -> None:
        if is_mirror(pod):
            self._mirrors_changed.set()
            return
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        containers, sandboxes = self._adoptable.pop(uid, ([], []))
        self._start_worker(uid, PodWorker(self.ctx, pod, adopted=containers, sandboxes=sandboxes))

    def _on_pod_deleted(self, pod: Obj) -> None:
        if is_mirror(pod):
            self._mirrors_changed.set()  # a deleted mirror pod is made again; the static pod runs on
            return
        worker = self.workers.get(pod["metadata"]["uid"])
        if worker is not None:
            worker.removed(pod)

    def _start_worker(self, uid: str, worker: PodWorker) -> None:
        self.workers[uid] = worker
        worker.wake()
        task = asyncio.create_task(worker.run(), name=f"pod-{uid}")
        self._tasks[uid] = task

        def finished(_: asyncio.Task[None]) -> None:
            if self.workers.get(uid) is worker:
                del self.workers[uid]
                self._tasks.pop(uid, None)

        task.add_done_callback(finished)

    def pod(self, namespace: str, name: str) -> Obj | None:
        return self.pod_informer.store.get(f"{namespace}/{name}")

    def worker_of(self, pod: Obj) -> PodWorker | None:
        """The worker running an API pod (a mirror pod's static pod's, for a mirror)."""
        return self.workers.get(static_uid_of(pod) or pod["metadata"]["uid"])

    # --- static pods ---------------------------------------------------------------------------------

    async def _static_pod_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mirrors_changed.wait(), self.config.static_pod_period)
            self._mirrors_changed.clear()
            try:
                await self._sync_static_pods()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the API may be away: the next round tries again
                log.warning("static pods: %s", err)

    async def _sync_static_pods(self) -> None:
        """Start pods whose manifest appeared, stop those whose manifest went or changed, keep mirrors current."""
        wanted = await asyncio.to_thread(read_manifests, self.config.manifests, self.config.node_name,
                                         self._manifests_seen)
        for uid, pod in wanted.items():
            if uid not in self.static_pods:
                containers, sandboxes = self._adoptable.pop(uid, ([], []))
                self._start_worker(uid, PodWorker(self.ctx, pod, adopted=containers, sandboxes=sandboxes,
                                                  static=True))
        for uid, pod in self.static_pods.items():
            if uid not in wanted and (worker := self.workers.get(uid)) is not None:
                worker.removed(pod)
        self.static_pods = wanted
        await self._sync_mirrors()

    async def _sync_mirrors(self) -> None:
        by_name = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in self.static_pods.values()}
        for pod in self.pod_informer.store.list():
            if is_mirror(pod) and static_uid_of(pod) not in self.static_pods:
                # a mirror of a static pod that is gone, or of an older version of it
                await self._delete_mirror(pod)
        for key, static in by_name.items():
            mirror = self.pod(*key)
            worker = self.workers.get(static["metadata"]["uid"])
            if mirror is not None and static_uid_of(mirror) == static["metadata"]["uid"] and \
                    not mirror["metadata"].get("deletionTimestamp"):
                if worker is not None:
                    worker.mirrored(mirror["metadata"]["uid"])
                continue
            if worker is not None:
                worker.mirrored(None)
            if mirror is not None:
                if not is_mirror(mirror):
                    continue  # a pod of that name that is not ours: the static pod runs without a mirror
                await self._delete_mirror(mirror)  # being deleted, or of an older manifest: replaced now
            try:
                created = await self.client.create(PODS, mirror_pod(static, self.config.node_name, self.node.uid))
            except APIError as err:
                if err.already_exists:
                    continue
                raise
            if worker is not None:
                worker.mirrored(created["metadata"]["uid"])

    async def _delete_mirror(self, pod: Obj) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete(PODS, meta["name"], meta["namespace"], grace_period_seconds=0,
                                     preconditions={"uid": meta["uid"]})
        except APIError as err:
            if not (err.not_found or err.status == 409):
                raise

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HOUSEKEEPING_PERIOD)
            now = time.time()
            self.ctx.restart_backoff.gc(now)
            self.ctx.pull_backoff.gc(now)
            try:
                await asyncio.to_thread(self.image_gc.collect, now)
            except OSError as err:
                log.warning("image garbage collection failed: %s", err)

    async def _rotate_logs(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LOG_MONITOR_INTERVAL)
            try:
                await self.log_rotator.rotate(await asyncio.to_thread(self.runtime.running_logs))
            except OSError as err:
                log.warning("container log rotation failed: %s", err)


def _tune_event_loop() -> None:
    """Python 3.11 waits for every subprocess (CNI plugins, the OCI runtime, conmon) in a thread of its own,
    and starting that thread stalls the event loop until the thread gets the GIL: in a burst of pod starts,
    several stalls per pod. A pidfd watched by the event loop needs no thread (3.12 chooses it itself); the
    kubelet spawns from this one event loop only, which this watcher of 3.11 requires.

    Blocking file, mount and cgroup work goes to worker threads, several times per pod start; Python's
    default of cores + 4 threads queues a burst of pods behind a few slow file creations."""
    loop = asyncio.get_running_loop()
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)
    loop.set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="kubelet-io"))


async def run_kubelet(client_config: ClientConfig, config: KubeletConfig, stop: asyncio.Event) -> None:
    _tune_event_loop()
    async with Client(client_config, user_agent=f"kubelet/{KUBELET_VERSION} (linux) pocketkube") as client:
        await Kubelet(client, config).run(stop)


async def node_credentials(server: str, token: str, config: KubeletConfig) -> ClientConfig:
    """The node's own client certificate, obtained with the join token (as a k3s agent gets
    client-kubelet.crt) and kept in DATA_DIR/kubelet/client-kubelet.pem for later starts."""
    joined = await join_config(server, token, config.root)
    stored = config.root / NODE_CREDENTIALS
    pem = await asyncio.to_thread(_read_if_exists, stored)
    if not pem:
        async with aiohttp.ClientSession() as session, session.get(
                server.rstrip("/") + NODE_CERT_PATH, ssl=joined.ssl_context(),
                headers={"Authorization": f"Bearer {joined.token}", NODE_NAME_HEADER: config.node_name},
                timeout=aiohttp.ClientTimeout(total=30)) as resp:
            pem = await resp.read()
            if resp.status != 200:
                raise ValueError(f"{server} refused a client certificate for node {config.node_name}: HTTP "
                                 f"{resp.status} {pem.decode(errors='replace')[:200]}")
        await asyncio.to_thread(_write_private, stored, pem)
    cert, key = _split_pem(pem)
    return ClientConfig(server=server, ca_data=joined.ca_data, cert_data=cert, key_data=key)


def _split_pem(pem: bytes) -> tuple[bytes, bytes]:
    marker = pem.find(b"-----BEGIN EC PRIVATE KEY-----")
    if marker < 0:
        marker = pem.find(b"-----BEGIN PRIVATE KEY-----")
    if marker <= 0:
        raise ValueError("the node credentials hold no certificate and key")
    return pem[:marker], pem[marker:]


def _read_if_exists(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.touch(mode=0o600)
    scratch.write_bytes(data)
    os.replace(scratch, path)


async def run_joined_kubelet(server: str, token: str, config: KubeletConfig, stop: asyncio.Event) -> None:
    """`pocketkube agent --server URL --token TOKEN`: a real node joining a cluster."""
    await run_kubelet(await node_credentials(server, token, config), config, stop)
