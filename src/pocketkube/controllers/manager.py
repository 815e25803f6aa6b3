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
from pocketkube.client.leaderelection import LeaderElector
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
                 signing: ClusterSigning | None = None, settings: ControllerSettings | None = None) -> None:
        self.client = client
        self.controller_types = controllers
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4()}"
        self.local_storage_path = local_storage_path
        self.signing = signing
        self.settings = settings or ControllerSettings()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, or until leadership is lost."""
        elector = LeaderElector(self.client, LEASE_NAME, self.identity)
        election = asyncio.create_task(elector.run(), name="leader-election")
        stopping = asyncio.create_task(stop.wait())
        leading = asyncio.create_task(elector.is_leader.wait())
        await asyncio.wait({stopping, leading}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            for task in (election, leading):
                task.cancel()
            return
        informers = InformerFactory(self.client)
        ctx = ControllerContext(self.client, informers, EventRecorder(self.client, "controller-manager"),
                                ResourceCatalog(), local_storage_path=self.local_storage_path, signing=self.signing,
                                settings=self.settings)
        controllers = [cls(ctx) for cls in self.controller_types if cls.wanted(ctx)]
        informers.start()
        await informers.wait_synced()
        log.info("controller manager running: %s", ", ".join(c.name for c in controllers))
        running = [asyncio.create_task(c.run(), name=f"controller-{c.name}") for c in controllers]
        lost = asyncio.create_task(elector.lost.wait())
        try:
            await asyncio.wait({stopping, lost, *running}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*running, election, stopping, lost):
                task.cancel()
            await asyncio.gather(*running, election, return_exceptions=True)
            await informers.stop()
            await asyncio.wait_for(elector.release(), 5)
