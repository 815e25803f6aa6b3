"""DefaultBinder: binds the pod with a pods/binding subresource POST."""

from __future__ import annotations

import aiohttp

from pocketkube.client.rest import APIError
from pocketkube.scheduler.framework import CycleState, Plugin, Status, error
from pocketkube.scheduler.types import PodInfo


class DefaultBinder(Plugin):
    name = "DefaultBinder"

    async def bind(self, state: CycleState, pi: PodInfo, node: str) -> Status | None:
        client = self.handle.client
        if client is None:
            return error("no API client to bind with")
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": pi.name, "namespace": pi.namespace, "uid": pi.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            await client.request("POST", f"/api/v1/namespaces/{pi.namespace}/pods/{pi.name}/binding", body=body)
        except (APIError, aiohttp.ClientError, OSError, TimeoutError) as err:
            return error(str(err))
        return None
