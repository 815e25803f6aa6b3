"""The local APIServices: one per built-in group/version and one per served CRD version, as kube-apiserver's
aggregator keeps them (its autoregister and crdregistration controllers), each with the Available condition its
availability controller gives local APIServices.

Built-in ones carry the label kube-aggregator.kubernetes.io/automanaged=onstart and upstream's group and
version priorities; CRD ones automanaged=true and priorities 1000/100. An APIService without that label is the
user's and is left alone (stored only: requests are not proxied to its service). Managed ones no longer wanted
are deleted, and their specs are put back when changed. Runs inside the API server, writing through the
registry; the CRD controller says when CRDs change.

    task = await APIServiceRegistration(catalog, registry).start()   # synced once, then on crds_changed()
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pocketkube.api import errors
from pocketkube.api.kinds import BUILTIN_RESOURCES, ResourceCatalog
from pocketkube.apiserver.crd import resources as crd_resources
from pocketkube.apiserver.registry import DeleteOptions, Registry, WriteOptions, now_rfc3339
from pocketkube.apiserver.strategies.conversion import from_storage

log = logging.getLogger(__name__)
Obj = dict[str, Any]

AUTOMANAGED = "kube-aggregator.kubernetes.io/automanaged"
ON_START, ALWAYS = "onstart", "true"  # built-in group/versions; CRDs'
# (group, version) -> (groupPriorityMinimum, versionPriority): kube-apiserver's apiVersionPriorities (its own
# table merged over the generic one) for the group/versions pocketkube serves. apiregistration.k8s.io has none:
# the aggregator serves it itself, without an APIService.
PRIORITIES: dict[tuple[str, str], tuple[int, int]] = {
    ("", "v1"): (18000, 1),
    ("apps", "v1"): (17800, 15),
    ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15),
    ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v1"): (17500, 15),
    ("autoscaling", "v2"): (17500, 30),
    ("batch", "v1"): (17400, 15),
    ("certificates.k8s.io", "v1"): (17300, 15),
    ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15),
    ("admissionregistration.k8s.io", "v1"): (16700, 15),
    ("apiextensions.k8s.io", "v1"): (16700, 15),
    ("scheduling.k8s.io", "v1"): (16600, 15),
    ("coordination.k8s.io", "v1"): (16500, 15),
    ("node.k8s.io", "v1"): (16300, 15),
    ("discovery.k8s.io", "v1"): (16200, 15),
    ("resource.k8s.io", "v1"): (16200, 21),
    ("flowcontrol.apiserver.k8s.io", "v1"): (16100, 21),
}
CRD_PRIORITIES = (1000, 100)  # CRDs rank below every built-in group
_RETRY_SECONDS = 1.0


def apiservice_name(group: str, version: str) -> str:
    return f"{version}.{group}"


def _apiservice(group: str, version: str, priorities: tuple[int, int], managed: str) -> Obj:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": apiservice_name(group, version), "labels": {AUTOMANAGED: managed}},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": priorities[0],
                     "versionPriority": priorities[1]}}


def builtin_apiservices() -> dict[str, Obj]:
    """The built-in group/versions that have a priority (upstream skips any other)."""
    wanted = {(info.group, info.version) for info in BUILTIN_RESOURCES} & PRIORITIES.keys()
    return {apiservice_name(g, v): _apiservice(g, v, PRIORITIES[(g, v)], ON_START) for g, v in sorted(wanted)}


def crd_apiservices(crds: list[Obj]) -> dict[str, Obj]:
    """One per served version of every CRD (crdregistration)."""
    out = {}
    for crd in crds:
        group = str(crd_resources.spec(crd).get("group") or "")
        for version in crd_resources.versions(crd):
            if version.get("served") is True and group and version.get("name"):
                name = apiservice_name(group, str(version["name"]))
                out[name] = _apiservice(group, str(version["name"]), CRD_PRIORITIES, ALWAYS)
    return out


def _managed(obj: Obj) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(AUTOMANAGED, "")


def _available(obj: Obj) -> bool:
    return any(c.get("type") == "Available" and c.get("status") == "True" and c.get("reason") == "Local"
               for c in (obj.get("status") or {}).get("conditions") or [])


class APIServiceRegistration:
    def __init__(self, catalog: ResourceCatalog, registry: Registry) -> None:
        apiservices = catalog.resource("apiregistration.k8s.io", "v1", "apiservices")
        crds = catalog.resource(crd_resources.GROUP, "v1", crd_resources.PLURAL)
        assert apiservices is not None and crds is not None
        self.info, self.crd_info = apiservices, crds
        self.registry = registry
        self._changed = asyncio.Event()

    def crds_changed(self) -> None:
        self._changed.set()

    async def start(self) -> asyncio.Task[None]:
        """Sync once (before the server reports ready, as upstream's autoregister-completion check), then run
        until cancelled."""
        await self.sync(at_start=True)
        return asyncio.create_task(self._run(), name="apiservice-registration")

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("syncing APIServices failed (%s); retrying", err)
                await asyncio.sleep(_RETRY_SECONDS)
                self._changed.set()

    def _objects(self, info: Any) -> dict[str, Obj]:
        cache = self.registry.cache.resource(info.storage_prefix)
        return {obj["metadata"]["name"]: from_storage(info, obj) for obj in cache.objects.values()}

    async def sync(self, *, at_start: bool = False) -> None:
        """Create the wanted APIServices that are missing, put back managed ones that changed, delete managed
        ones no longer wanted (those made at start-up only at start-up), and mark local ones available."""
        await self.registry.fresh()
        wanted = {**builtin_apiservices(), **crd_apiservices(list(self._objects(self.crd_info).values()))}
        current = self._objects(self.info)
        writes = []
        for name, obj in current.items():
            managed = _managed(obj)
            if name not in wanted and (managed == ALWAYS or (managed == ON_START and at_start)):
                writes.append(self._delete(name))
        for name, obj in wanted.items():
            existing = current.get(name)
            if existing is None or (_managed(existing) and existing.get("spec") != obj["spec"]) \
                    or (_managed(existing) and not _available(existing)):
                writes.append(self._ensure(obj, existing))
        # Independent objects: written together, so a first start does not wait for each in turn.
        await asyncio.gather(*writes)

    async def _delete(self, name: str) -> None:
        try:
            await self.registry.delete(self.info, "", name, DeleteOptions())
        except errors.StatusError as err:
            if err.code != 404:
                raise

    async def _ensure(self, obj: Obj, existing: Obj | None) -> None:
        name = obj["metadata"]["name"]
        if existing is None:
            try:
                await self.registry.create(self.info, "", obj, WriteOptions())
            except errors.StatusError as err:
                if err.code != 409:  # another API server made it first
                    raise
        elif existing.get("spec") != obj["spec"]:
            def put_back(current: Obj) -> Obj:
                current["spec"] = obj["spec"]
                current["metadata"].setdefault("labels", {})[AUTOMANAGED] = obj["metadata"]["labels"][AUTOMANAGED]
                return current

            await self.registry.patch(self.info, "", name, put_back, WriteOptions())

        def available(current: Obj) -> Obj:
            if current.get("spec", {}).get("service") is None and not _available(current):
                conditions = [c for c in (current.get("status") or {}).get("conditions") or []
                              if c.get("type") != "Available"]
                conditions.append({"type": "Available", "status": "True", "lastTransitionTime": now_rfc3339(),
                                   "reason": "Local", "message": "Local APIServices are always available"})
                current["status"] = {**(current.get("status") or {}), "conditions": conditions}
            return current

        await self.registry.patch(self.info, "", name, available, WriteOptions(), "status")
