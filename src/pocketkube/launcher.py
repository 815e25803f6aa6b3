"""What `pocketkube server` runs: the API server and, in the same process, the controller manager and the
scheduler, each with its own client identity."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pocketkube.apiserver.pki import kubeconfig_path
from pocketkube.apiserver.server import APIServer, ServerConfig
from pocketkube.client.rest import Client, ClientConfig
from pocketkube.controllers.manager import ControllerManager
from pocketkube.scheduler.scheduler import run_scheduler

log = logging.getLogger(__name__)


async def run_server(config: ServerConfig, stop: asyncio.Event, *, controller_manager: bool = True,
                     scheduler: bool = True) -> None:
    """Run until `stop` is set; log one line once /readyz answers 200."""
    server = APIServer(config)
    clients: list[Client] = []
    tasks: list[asyncio.Task[None]] = []

    def component(user: str, run: Callable[[Client], Awaitable[None]]) -> None:
        cert, key = server.pki.issue_client_cert(f"system:{user}", [])
        client = Client(ClientConfig(server.url, ca_data=server.pki.ca_cert.read_bytes(), cert_data=cert,
                                     key_data=key), user_agent=f"pocketkube-{user}")
        clients.append(client)
        tasks.append(asyncio.create_task(run(client), name=user))

    try:
        await server.start()
        log.info("pocketkube API server ready at %s (kubeconfig %s, datastore %s)", server.url,
                 kubeconfig_path(config.data_dir), config.endpoint.split("://")[0])
        if controller_manager:
            component("kube-controller-manager", lambda client: ControllerManager(client).run(stop))
        if scheduler:
            component("kube-scheduler", lambda client: run_scheduler(client, stop))
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
        await server.stop()


async def run_controller_manager(client_config: ClientConfig, stop: asyncio.Event) -> None:
    async with Client(client_config, user_agent="pocketkube-controller-manager") as client:
        await ControllerManager(client).run(stop)
