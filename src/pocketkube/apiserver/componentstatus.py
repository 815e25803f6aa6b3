"""v1 ComponentStatus (`kubectl get cs`), deprecated upstream since 1.19 but still served: get and list only,
computed on each request, never stored (upstream's pkg/registry/core/componentstatus).

Upstream probes each component's health endpoint (the scheduler's and the controller manager's /healthz,
each etcd server). Here each component reports what the server can actually check: etcd-0 is a read from the
server's storage (SQLite or etcd), and the scheduler and the controller manager are the child processes the
server supervises (running or not); one the server does not run is reported unhealthy, with that as its error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pocketkube.api import errors
from pocketkube.storage.interface import Storage

Obj = dict[str, Any]
PROBE_TIMEOUT = 20.0  # upstream's probeTimeOut
# A key read to see that storage answers (whether it exists does not matter).
_PROBE_KEY = "/registry/health"


@dataclass(frozen=True)
class Health:
    """One probe's outcome: the Healthy condition's status ("True", "False", "Unknown"), message and error."""

    status: str
    message: str = ""
    error: str = ""


HealthCheck = Callable[[], Awaitable[Health]]
HEALTHY = Health("True", "ok")


def storage_check(storage: Storage) -> HealthCheck:
    async def check() -> Health:
        try:
            await asyncio.wait_for(storage.get(_PROBE_KEY), PROBE_TIMEOUT)
        except Exception as err:  # any failure to answer is the component's ill health, reported as such
            return Health("False", error=str(err) or type(err).__name__)
        return HEALTHY
    return check


def not_run(name: str) -> HealthCheck:
    async def check() -> Health:
        return Health("False", error=f"the {name} is not run by this server")
    return check


class ComponentStatuses:
    """The components upstream lists, in its order; the server replaces a component's check when it starts
    that component."""

    def __init__(self, storage: Storage) -> None:
        self.checks: dict[str, HealthCheck] = {
            "scheduler": not_run("scheduler"),
            "controller-manager": not_run("controller manager"),
            "etcd-0": storage_check(storage),
        }

    async def list(self) -> list[Obj]:
        results = await asyncio.gather(*(check() for check in self.checks.values()))
        return [_component_status(name, health) for name, health in zip(self.checks, results, strict=True)]

    async def get(self, name: str) -> Obj:
        check = self.checks.get(name)
        if check is None:
            # Upstream answers with a plain Go error, which becomes a 500 with reason Unknown.
            raise errors.StatusError(500, "Unknown", f"Component not found: {name}")
        return _component_status(name, await check())


def _component_status(name: str, health: Health) -> Obj:
    condition = {"type": "Healthy", "status": health.status}
    if health.message:
        condition["message"] = health.message
    if health.error:
        condition["error"] = health.error
    return {"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name}, "conditions": [condition]}
