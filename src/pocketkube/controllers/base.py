"""The shape every controller shares: informers feed keys into a work queue; workers reconcile keys."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.api.selectors import LabelSelector, SelectorError
from pocketkube.client.events import EventRecorder
from pocketkube.client.informer import Informer, InformerFactory, object_key
from pocketkube.client.rest import APIError, Client
from pocketkube.client.workqueue import ShutDown, WorkQueue

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass(frozen=True)
class ClusterSigning:
    """The CA the CSR signing controller signs with (`--cluster-signing-cert-file/--cluster-signing-key-file`)
    and the longest certificate it issues (upstream's --cluster-signing-duration, one year by default)."""

    cert_file: Path
    key_file: Path
    duration: dt.timedelta = dt.timedelta(days=365)


@dataclass(frozen=True)
class ControllerSettings:
    """kube-controller-manager's per-controller flags that pocketkube takes; None leaves a controller its own
    default (what the in-process tests rely on when they shrink a controller's periods in a subclass)."""

    node_monitor_grace_period: float | None = None  # --node-monitor-grace-period, seconds
    node_startup_grace_period: float | None = None  # --node-startup-grace-period, seconds
    terminated_pod_gc_threshold: int | None = None  # --terminated-pod-gc-threshold; <= 0 turns that part off


@dataclass
class ControllerContext:
    """What a controller may use: the API (client), shared informers, an event recorder, the kinds, and the
    controller manager's settings."""

    client: Client
    informers: InformerFactory
    recorder: EventRecorder
    catalog: ResourceCatalog
    # Where the local-path provisioner makes volume directories (`--default-local-storage-path`); only the
    # PersistentVolume controller needs it.
    local_storage_path: Path | None = None
    signing: ClusterSigning | None = None  # only the CSR signing controller needs it
    settings: ControllerSettings = field(default_factory=ControllerSettings)

    def resource(self, group: str, version: str, plural: str) -> ResourceInfo:
        info = self.catalog.resource(group, version, plural)
        if info is None:
            raise KeyError(f"unknown resource {plural}.{group}/{version}")
        return info

    def informer(self, group: str, version: str, plural: str) -> Informer:
        return self.informers.informer(self.resource(group, version, plural))


class Controller:
    """Subclasses set `name`, wire informers to `enqueue` in `setup`, and implement `reconcile`."""

    name = "controller"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.queue = WorkQueue()
        self._event_tasks: set[asyncio.Task[None]] = set()
        self.setup()

    @classmethod
    def wanted(cls, ctx: ControllerContext) -> bool:
        """Whether the controller manager runs this controller with these settings."""
        return True

    def setup(self) -> None:
        """Register informer handlers (called once, before informers start)."""

    def enqueue(self, obj: Obj) -> None:
        self.queue.add(object_key(obj))

    def record_event(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        """Events are fire-and-forget, as client-go's broadcaster: neither a sync nor a (synchronous)
        informer handler waits for them."""
        event = self.ctx.recorder.event(obj, event_type, reason, message)
        task = asyncio.get_running_loop().create_task(event)
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def reconcile(self, key: str) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        workers = [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
                   for i in range(self.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            self.queue.shutdown()
            for task in workers:
                task.cancel()

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.reconcile(str(key))
                self.queue.forget(key)
            except asyncio.CancelledError:
                raise
            except APIError as err:
                # Conflicts are expected races: retry soon; anything else backs off per key.
                log.log(logging.DEBUG if err.conflict else logging.WARNING, "%s: %s: %s", self.name, key, err)
                self.queue.add_rate_limited(key)
            except Exception:
                log.exception("%s: reconciling %s failed", self.name, key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)


def resolve_controller_ref(informer: Informer, kind: str, namespace: str, ref: Obj | None) -> Obj | None:
    """The object a controller ownerReference names, if the informer holds that very one (same UID)."""
    if ref is None or ref.get("kind") != kind:
        return None
    owner = informer.store.get(f"{namespace}/{ref.get('name')}")
    return owner if owner is not None and owner["metadata"].get("uid") == ref.get("uid") else None


def selecting(informer: Informer, obj: Obj) -> list[Obj]:
    """The informer's objects in obj's namespace whose spec.selector (a LabelSelector) selects obj."""
    found = []
    for candidate in informer.store.by_index("namespace", obj["metadata"].get("namespace", "")):
        try:
            selector = LabelSelector.from_dict((candidate.get("spec") or {}).get("selector"))
        except SelectorError:
            continue
        if not selector.empty and selector.matches(obj["metadata"].get("labels")):
            found.append(candidate)
    return found


def split_key(key: str) -> tuple[str, str]:
    """'namespace/name' -> (namespace, name); 'name' -> ('', name)."""
    namespace, _, name = key.rpartition("/")
    return namespace, name
