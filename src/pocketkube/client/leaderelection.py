"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does.

The holder renews the Lease every `retry_period`; a candidate takes it over only once it has not been
renewed for `lease_duration`. Updates carry the Lease's resourceVersion, so two candidates can never
both win the same round.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class LeaderElector:
    def __init__(self, client: Client, name: str, identity: str, *, namespace: str = "kube-system",
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        info = ResourceCatalog().resource("coordination.k8s.io", "v1", "leases")
        assert info is not None
        self.info = info
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = asyncio.Event()
        self.lost = asyncio.Event()

    async def run(self) -> None:
        """Acquire, then keep renewing; sets `lost` and returns if renewal fails for renew_deadline."""
        while not await self._try_acquire_or_renew():
            await asyncio.sleep(self.retry_period)
        log.info("%s: became leader as %s", self.name, self.identity)
        self.is_leader.set()
        loop = asyncio.get_running_loop()
        last_renewed = loop.time()
        while True:
            await asyncio.sleep(self.retry_period)
            if await self._try_acquire_or_renew():
                last_renewed = loop.time()
            elif loop.time() - last_renewed > self.renew_deadline:
                log.error("%s: lost the lease", self.name)
                self.is_leader.clear()
                self.lost.set()
                return

    async def release(self) -> None:
        """Give the Lease up on a clean stop, so a successor need not wait for it to expire (upstream's
        ReleaseOnCancel). Best effort: a failure only means the successor waits."""
        if not self.is_leader.is_set():
            return
        self.is_leader.clear()
        try:
            lease = await self.client.get(self.info, self.name, self.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update({"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _now()})
            lease["spec"] = spec
            await self.client.update(self.info, lease)
        except (APIError, OSError) as err:
            log.debug("%s: could not release the lease: %s", self.name, err)

    async def _try_acquire_or_renew(self) -> bool:
        now = _now()
        try:
            lease = await self.client.get(self.info, self.name, self.namespace)
        except APIError as err:
            if not err.not_found:
                return False
            try:
                await self.client.create(self.info, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0}})
                return True
            except APIError:
                return False
        except OSError:
            return False
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if holder and holder != self.identity:
            renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
            duration = spec.get("leaseDurationSeconds") or self.lease_duration
            if renewed is not None and (datetime.now(UTC) - renewed).total_seconds() < duration:
                return False
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update({"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                     "renewTime": now})
        lease["spec"] = spec
        try:
            await self.client.update(self.info, lease)
            return True
        except (APIError, OSError):
            return False
