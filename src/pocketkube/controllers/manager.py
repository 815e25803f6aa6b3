"""The controller manager: leader election, shared informers, and every controller's workers."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from pathlib import Path

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.events import EventRecorder
from pocketkube.client.informer import InformerFactory
from pocketkube.client.leaderelection import ElectionTiming, LeaderElector
from pocketkube.client.rest import Client
from pocketkube.controllers.base import ClusterSigning, Controller, ControllerContext, ControllerSettings
from pocketkube.controllers.cronjob import CronJobController
from pocketkube.controllers.csrsigning import CSRSigningController
from pocketkube.controllers.daemonset import DaemonSetController
from pocketkube.controllers.deployment import DeploymentController
from pocketkube.controllers.disruption import DisruptionController
from pocketkube.controllers.endpoints import EndpointsController
from pocketkube.controllers.endpointslice import EndpointSliceController
from pocketkube.controllers.garbagecollector import GarbageCollector
from pocketkube.controllers.job import JobController
from pocketkube.controllers.namespace import NamespaceController
from pocketkube.controllers.nodelifecycle import NodeLifecycleController, TaintEvictionController
from pocketkube.controllers.persistentvolume import PersistentVolumeController
from pocketkube.controllers.podgc import PodGCController
from pocketkube.controllers.replicaset import ReplicaSetController, ReplicationControllerController
from pocketkube.controllers.serviceaccount import RootCACertPublisher, ServiceAccountsController
from pocketkube.controllers.statefulset import StatefulSetController
from pocketkube.controllers.ttlafterfinished import TTLAfterFinishedController

log = logging.getLogger(__name__)

CONTROLLERS: tuple[type[Controller], ...] = (
    NamespaceController,
    GarbageCollector,
    ServiceAccountsController,
    RootCACertPublisher,
    PodGCController,
    TTLAfterFinishedController,
    DeploymentController,
    ReplicaSetController,
    ReplicationControllerController,
    StatefulSetController,
    DaemonSetController,
    JobController,
    CronJobController,
    NodeLifecycleController,
    TaintEvictionController,
    EndpointsController,
    EndpointSliceController,
    PersistentVolumeController,
    DisruptionController,
    CSRSigningController,
)
LEASE_NAME = "kube-controller-manager"


class ControllerManager:
    def __init__(self, client: Client, *, controllers: tuple[type[Controller], ...] = CONTROLLERS,
                 identity: str | None = None, local_storage_path: Path | None = None,
                 signing: ClusterSigning | None = None, settings: ControllerSettings | None = None,
                 election: ElectionTiming | None = None) -> None:
        election = election or ElectionTiming()
        election.validate()
        self.client = client
        self.controller_types = controllers
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4()}"
        self.local_storage_path = local_storage_path
        self.signing = signing
        self.settings = settings or ControllerSettings()
        self.election = election

    async def run(self, stop: asyncio.Event) -> None:
        """Run the controllers while this manager holds the kube-system/kube-controller-manager Lease, until
        `stop` is set (then the Lease is released). Raises LeaderElectionLost once leadership is lost: the
        controllers have been stopped by then, and the process is to exit, as kube-controller-manager does, for
        its supervisor to restart it."""
        # Leader election gets a client (and connection pool) of its own, as upstream's: renewals must not
        # queue behind the controllers' requests.
        async with Client(self.client.config, user_agent="pocketkube-controller-manager/leader-election") as lec:
            elector = LeaderElector(lec, LEASE_NAME, self.identity, lease_duration=self.election.lease_duration,
                                    renew_deadline=self.election.renew_deadline,
                                    retry_period=self.election.retry_period)
            await elector.lead(stop, self._run_controllers)

    async def _run_controllers(self) -> None:
        """Informers and controllers, until cancelled (or until a controller ends)."""
        informers = InformerFactory(self.client)
        ctx = ControllerContext(self.client, informers, EventRecorder(self.client, "controller-manager"),
                                ResourceCatalog(), local_storage_path=self.local_storage_path, signing=self.signing,
                                settings=self.settings)
        controllers = [cls(ctx) for cls in self.controller_types if cls.wanted(ctx)]
        running: list[asyncio.Task[None]] = []
        try:
            informers.start()
            await informers.wait_synced()
            log.info("controller manager running: %s", ", ".join(c.name for c in controllers))
            running = [asyncio.create_task(c.run(), name=f"controller-{c.name}") for c in controllers]
            if running:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.get_running_loop().create_future()  # nothing to run: hold on until cancelled
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await informers.stop()
