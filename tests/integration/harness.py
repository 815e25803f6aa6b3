"""Shared set-up of the integration tests that run components in-process against a real server.

Each such module gets a server of its own with neither controller manager nor scheduler, and runs the
controllers, the scheduler and simulated nodes it exercises in its own event loop, where they can be
configured (short periods, injected clocks) and watched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cluster import Cluster, new_cluster, serving

from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.client.rest import APIError, Client, ClientConfig
from pocketkube.controllers.base import Controller
from pocketkube.controllers.manager import ControllerManager
from pocketkube.kubelet.simulated import SimulatedNodes
from pocketkube.scheduler.scheduler import run_scheduler

Obj = dict[str, Any]
_CATALOG = ResourceCatalog()


def resource(group: str, plural: str, version: str = "v1") -> ResourceInfo:
    info = _CATALOG.resource(group, version, plural)
    assert info is not None, (group, version, plural)
    return info


_NAMESPACES = resource("", "namespaces")


def bare_server(*extra_args: str) -> Iterator[Cluster]:
    """A started server without controller manager and scheduler (for a module-scoped fixture to yield from);
    removed with its data when the module is done."""
    yield from serving(new_cluster(extra_args=["--disable-controller-manager", "--disable-scheduler", *extra_args]))


def connect(cluster: Cluster) -> Client:
    """An admin client from the server's kubeconfig (close it, or use it as `async with`)."""
    return Client(ClientConfig.from_kubeconfig(cluster.kubeconfig))


@asynccontextmanager
async def running(client: Client, *, controllers: tuple[type[Controller], ...] = (), identity: str = "test",
                  scheduler: bool = False, nodes: SimulatedNodes | None = None,
                  local_storage_path: Path | None = None) -> AsyncIterator[None]:
    """Run the given controllers (in a ControllerManager, with the local-path provisioner's root if they need
    one), the default scheduler and simulated nodes until the block ends; the block starts once the nodes have
    registered."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    if nodes is not None:
        tasks.append(asyncio.create_task(nodes.run(stop)))
    if scheduler:
        tasks.append(asyncio.create_task(run_scheduler(client, stop)))
    if controllers:
        manager = ControllerManager(client, controllers=controllers, identity=identity,
                                    local_storage_path=local_storage_path)
        tasks.append(asyncio.create_task(manager.run(stop)))
    try:
        if nodes is not None:
            await asyncio.wait_for(nodes.ready.wait(), 30)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


def found(result: Any) -> bool:
    """For checks that return a value or None: any value, even an empty one, ends the wait."""
    return result is not None and result is not False


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "", *,
                     until: Callable[[Any], bool] = bool) -> Any:
    """Poll check() until its result satisfies `until` (by default: is truthy) and return that result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check} (last: {result!r})")
        await asyncio.sleep(0.05)


async def create_namespace(client: Client, name: str) -> str:
    await client.create(_NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


async def get_or_none(client: Client, info: ResourceInfo, name: str, namespace: str = "") -> Obj | None:
    try:
        return await client.get(info, name, namespace)
    except APIError as err:
        if err.not_found:
            return None
        raise
