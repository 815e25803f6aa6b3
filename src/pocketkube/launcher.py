"""What `pocketkube server` runs: the API server and, in the same process, the controller manager."""

from __future__ import annotations

import asyncio
import logging

from pocketkube.apiserver.pki import kubeconfig_path
from pocketkube.apiserver.server import APIServer, ServerConfig
from pocketkube.client.rest import Client, ClientConfig
from pocketkube.controllers.manager import ControllerManager

log = logging.getLogger(__name__)


async def run_server(config: ServerConfig, stop: asyncio.Event, *, controller_manager: bool = True) -> None:
    """Run until `stop` is set; log one line once /readyz answers 200."""
    server = APIServer(config)
    client: Client | None = None
    manager_task: asyncio.Task[None] | None = None
    try:
        await server.start()
        log.info("pocketkube API server ready at %s (kubeconfig %s, datastore %s)", server.url,
                 kubeconfig_path(config.data_dir), config.endpoint.split("://")[0])
        if controller_manager:
            cert, key = server.pki.issue_client_cert("system:kube-controller-manager", [])
            client = Client(ClientConfig(server.url, ca_data=server.pki.ca_cert.read_bytes(), cert_data=cert,
                                         key_data=key), user_agent="pocketkube-controller-manager")
            manager_task = asyncio.create_task(ControllerManager(client).run(stop), name="controller-manager")
        await stop.wait()
    finally:
        if manager_task is not None:
            manager_task.cancel()
            await asyncio.gather(manager_task, return_exceptions=True)
        if client is not None:
            await client.close()
        await server.stop()


async def run_controller_manager(client_config: ClientConfig, stop: asyncio.Event) -> None:
    async with Client(client_config, user_agent="pocketkube-controller-manager") as client:
        await ControllerManager(client).run(stop)
