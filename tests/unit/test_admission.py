"""The admission chain and its plugins, run through the real registry on an SQLite store."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pocketkube.api.errors import StatusError
from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.apiserver.admission import (
    CREATE,
    UPDATE,
    AdmissionAttributes,
    AdmissionChain,
    ClusterState,
    build_chain,
)
from pocketkube.apiserver.bootstrap import bootstrap_cluster
from pocketkube.apiserver.registry import DeleteOptions, Registry, WriteOptions
from pocketkube.apiserver.strategies import build_strategies
from pocketkube.apiserver.watchcache import WatchCache
from pocketkube.storage.interface import open_storage

Obj = dict[str, Any]
CATALOG = ResourceCatalog()


def _info(group: str, plural: str) -> ResourceInfo:
    info = CATALOG.resource(group, "v1", plural)
    assert info is not None
    return info


PODS, NAMESPACES, SAS = _info("", "pods"), _info("", "namespaces"), _info("", "serviceaccounts")
QUOTAS, LIMITS, PCS = _info("", "resourcequotas"), _info("", "limitranges"), _info("scheduling.k8s.io",
                                                                                     "priorityclasses")
CONFIGMAPS, PVCS = _info("", "configmaps"), _info("", "persistentvolumeclaims")


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    storage = open_storage(f"sqlite://{tmp_path / 'state.db'}")
    await storage.start()
    cache = WatchCache(storage)
    await cache.start()
    reg = Registry(storage, cache, build_strategies(CATALOG))
    reg.admission = build_chain(ClusterState(reg))
    await bootstrap_cluster(reg, CATALOG, service_cidr="10.43.0.0/16", advertise_address="127.0.0.1", port=6443)
    await reg.create(SAS, "default", _meta("ServiceAccount", "default", "default"), WriteOptions())
    try:
        yield reg
    finally:
        await cache.close()
        await storage.close()


def _meta(kind: str, name: str, namespace: str = "", api_version: str = "v1", **body: Any) -> Obj:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}


def _pod(name: str, namespace: str = "default", containers: list[Obj] | None = None, **spec: Any) -> Obj:
    return _meta("Pod", name, namespace, spec={"containers": containers or [{"name": "c", "image": "nginx"}],
                                               **spec})


async def _create_pod(registry: Registry, pod: Obj, dry_run: bool = False) -> Obj:
    return await registry.create(PODS, pod["metadata"]["namespace"], pod, WriteOptions(dry_run=dry_run))


async def _refused(coro: Any, code: int) -> StatusError:
    with pytest.raises(StatusError) as caught:
        await coro
    assert caught.value.code == code, caught.value.message
    return caught.value


# --- the chain -------------------------------------------------------------------------------

class _Recorder:
    def __init__(self, name: str, log: list[str], operations: tuple[str, ...] = (CREATE, UPDATE)) -> None:
        self.name, self.log, self.operations = name, log, operations

    def handles(self, operation: str) -> bool:
        return operation in self.operations

    async def admit(self, attrs: AdmissionAttributes) -> None:
        self.log.append(f"admit {self.name} {attrs.operation} dry={attrs.dry_run}")
        assert attrs.object is not None
        attrs.object.setdefault("metadata", {}).setdefault("labels", {})[self.name] = "x"

    async def validate(self, attrs: AdmissionAttributes) -> None:
        self.log.append(f"validate {self.name} {attrs.operation} uid={bool(attrs.object['metadata'].get('uid'))}")


async def test_chain_runs_mutating_then_validating_for_every_write(registry: Registry) -> None:
    log: list[str] = []
    first, second = _Recorder("a", log), _Recorder("b", log, (CREATE,))
    registry.admission = AdmissionChain(mutating=[first, second], validating=[second, first])
    cm = _meta("ConfigMap", "cm", "default", data={"k": "v"})
    await registry.create(CONFIGMAPS, "default", dict(cm), WriteOptions(dry_run=True))
    assert log == ["admit a CREATE dry=True", "admit b CREATE dry=True", "validate b CREATE uid=True",
                   "validate a CREATE uid=True"]
    log.clear()
    created = await registry.create(CONFIGMAPS, "default", cm, WriteOptions())
    assert created["metadata"]["labels"] == {"a": "x", "b": "x"}  # mutations are stored
    log.clear()
    created["data"] = {"k": "w"}
    await registry.update(CONFIGMAPS, "default", "cm", created, WriteOptions())
    assert log == ["admit a UPDATE dry=False", "validate a UPDATE uid=True"]  # b handles CREATE only


async def test_refusal_in_validation_stores_nothing(registry: Registry) -> None:
    class Refuse:
        name = "Refuse"

        def handles(self, operation: str) -> bool:
            return True

        async def validate(self, attrs: AdmissionAttributes) -> None:
            raise StatusError(403, "Forbidden", "no")

    registry.admission = AdmissionChain(validating=[Refuse()])
    await _refused(registry.create(CONFIGMAPS, "default", _meta("ConfigMap", "x", "default"), WriteOptions()), 403)
    assert registry.cached(CONFIGMAPS, "default", "x") is None
    await _refused(registry.delete(SAS, "default", "default", DeleteOptions()), 403)


def test_unknown_plugin_name_is_refused(registry: Registry) -> None:
    with pytest.raises(ValueError, match="unknown admission plugins: Nope"):
        build_chain(ClusterState(registry), ["Nope"])


# --- NamespaceLifecycle ----------------------------------------------------------------------

async def test_namespace_lifecycle(registry: Registry) -> None:
    err = await _refused(registry.create(CONFIGMAPS, "nowhere", _meta("ConfigMap", "c", "nowhere"),
                                         WriteOptions()), 404)
    assert err.message == 'namespaces "nowhere" not found'
    for name in ("default", "kube-system", "kube-public"):
        err = await _refused(registry.delete(NAMESPACES, "", name, DeleteOptions(dry_run=True)), 403)
        assert err.message == f'namespaces "{name}" is forbidden: this namespace may not be deleted'
    await registry.create(NAMESPACES, "", _meta("Namespace", "doomed"), WriteOptions())
    await registry.delete(NAMESPACES, "", "doomed", DeleteOptions())
    err = await _refused(registry.create(CONFIGMAPS, "doomed", _meta("ConfigMap", "c", "doomed"), WriteOptions()),
                         403)
    assert err.message == ('configmaps "c" is forbidden: unable to create new content in namespace doomed because '
                           'it is being terminated')
    assert err.details is not None and err.details["causes"] == [{
        "reason": "NamespaceTerminating", "field": "metadata.namespace",
        "message": "namespace doomed is being terminated"}]


# --- ServiceAccount --------------------------------------------------------------------------

async def test_service_account_defaulted_and_checked(registry: Registry) -> None:
    pod = await _create_pod(registry, _pod("p"))
    assert pod["spec"]["serviceAccountName"] == pod["spec"]["serviceAccount"] == "default"
    err = await _refused(_create_pod(registry, _pod("q", serviceAccountName="robot")), 403)
    assert err.message == ('pods "q" is forbidden: error looking up service account default/robot: '
                           'serviceaccount "robot" not found')
    await registry.create(SAS, "default", _meta("ServiceAccount", "robot", "default",
                                                imagePullSecrets=[{"name": "pull"}]), WriteOptions())
    pod = await _create_pod(registry, _pod("q", serviceAccount="robot"))  # the deprecated alias counts
    assert pod["spec"]["serviceAccountName"] == "robot"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "pull"}]


async def test_default_service_account_is_awaited(registry: Registry) -> None:
    await registry.create(NAMESPACES, "", _meta("Namespace", "fresh"), WriteOptions())

    async def controller() -> None:
        await asyncio.sleep(0.3)
        await registry.create(SAS, "fresh", _meta("ServiceAccount", "default", "fresh"), WriteOptions())

    task = asyncio.create_task(controller())
    pod = await _create_pod(registry, _pod("p", "fresh"))
    await task
    assert pod["spec"]["serviceAccountName"] == "default"


async def test_mirror_pods_may_not_name_service_accounts(registry: Registry) -> None:
    mirror = _pod("m", serviceAccountName="default")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "hash"}
    err = await _refused(_create_pod(registry, mirror), 403)
    assert err.message == 'pods "m" is forbidden: a mirror pod may not reference service accounts'


# --- DefaultTolerationSeconds ------------------------------------------------------------------

async def test_default_tolerations(registry: Registry) -> None:
    pod = await _create_pod(registry, _pod("p"))
    assert pod["spec"]["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300}]
    own = {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}
    pod = await _create_pod(registry, _pod("q", tolerations=[own]))
    assert [t["key"] for t in pod["spec"]["tolerations"]] == ["node.kubernetes.io/not-ready",
                                                              "node.kubernetes.io/unreachable"]
    assert pod["spec"]["tolerations"][0]["tolerationSeconds"] == 10
    pod = await _create_pod(registry, _pod("r", tolerations=[{"operator": "Exists"}]))  # tolerates everything
    assert pod["spec"]["tolerations"] == [{"operator": "Exists"}]


# --- Priority --------------------------------------------------------------------------------

async def test_priority(registry: Registry) -> None:
    pod = await _create_pod(registry, _pod("p"))
    assert (pod["spec"]["priority"], pod["spec"]["preemptionPolicy"]) == (0, "PreemptLowerPriority")
    assert "priorityClassName" not in pod["spec"]
    pod = await _create_pod(registry, _pod("crit", priorityClassName="system-node-critical"))
    assert pod["spec"]["priority"] == 2000001000
    err = await _refused(_create_pod(registry, _pod("x", priorityClassName="gold")), 403)
    assert err.message == 'pods "x" is forbidden: no PriorityClass with name gold was found'
    err = await _refused(_create_pod(registry, _pod("y", priority=7)), 403)
    assert err.message == ('pods "y" is forbidden: the integer value of priority (7) must not be provided in pod '
                           'spec; priority admission controller computed 0 from the given PriorityClass name')
    await registry.create(PCS, "", _meta("PriorityClass", "low", api_version="scheduling.k8s.io/v1", value=-5,
                                         globalDefault=True, preemptionPolicy="Never"), WriteOptions())
    pod = await _create_pod(registry, _pod("z"))
    assert (pod["spec"]["priorityClassName"], pod["spec"]["priority"], pod["spec"]["preemptionPolicy"]) == \
        ("low", -5, "Never")
    err = await _refused(registry.create(PCS, "", _meta("PriorityClass", "other", api_version="scheduling.k8s.io/v1",
                                                        value=1, globalDefault=True), WriteOptions()), 403)
    assert err.message == ('priorityclasses.scheduling.k8s.io "other" is forbidden: PriorityClass low is already '
                           'marked as default. Only one default can exist')
    # An update that leaves priority out keeps what admission set.
    stored = copy.deepcopy(await registry.get(PODS, "default", "crit"))  # get() shares the cache's objects
    del stored["spec"]["priority"]
    updated, _ = await registry.update(PODS, "default", "crit", stored, WriteOptions())
    assert updated["spec"]["priority"] == 2000001000


# --- LimitRanger -----------------------------------------------------------------------------

async def test_limit_ranger_defaults_and_limits(registry: Registry) -> None:
    await registry.create(LIMITS, "default", _meta("LimitRange", "lr", "default", spec={"limits": [{
        "type": "Container", "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m"},
        "max": {"cpu": "1"}, "maxLimitRequestRatio": {"cpu": "10"}}]}), WriteOptions())
    pod = await _create_pod(registry, _pod("p", containers=[
        {"name": "web", "image": "nginx", "resources": {"limits": {"memory": "128Mi"}}}]))
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"memory": "128Mi", "cpu": "500m"},
                         "requests": {"memory": "128Mi", "cpu": "100m"}}
    assert pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == \
        "LimitRanger plugin set: cpu request for container web; cpu limit for container web"
    assert pod["status"]["qosClass"] == "Burstable"  # computed after the defaults
    err = await _refused(_create_pod(registry, _pod("big", containers=[
        {"name": "c", "image": "x", "resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "100m"}}}])), 403)
    assert err.message == ('pods "big" is forbidden: [maximum cpu usage per Container is 1, but limit is 2, '
                           'cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000]')


async def test_limit_ranger_claims(registry: Registry) -> None:
    await registry.create(LIMITS, "default", _meta("LimitRange", "storage", "default", spec={"limits": [{
        "type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]}), WriteOptions())
    claim = _meta("PersistentVolumeClaim", "data", "default", spec={
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}})
    err = await _refused(registry.create(PVCS, "default", claim, WriteOptions()), 403)
    assert err.message == ('persistentvolumeclaims "data" is forbidden: maximum storage usage per '
                           'PersistentVolumeClaim is 2Gi, but request is 5Gi')


# --- ResourceQuota ---------------------------------------------------------------------------

async def _used(registry: Registry, name: str = "q") -> Obj:
    await registry.fresh()
    quota = await registry.get(QUOTAS, "default", name)
    return quota["status"]["used"]


async def test_resource_quota_counts_and_refuses(registry: Registry) -> None:
    await registry.create(QUOTAS, "default", _meta("ResourceQuota", "q", "default", spec={
        "hard": {"pods": "2", "count/configmaps": "5"}}), WriteOptions())
    assert await _used(registry) == {"pods": "0", "count/configmaps": "0"}
    await _create_pod(registry, _pod("a"))
    await _create_pod(registry, _pod("b"), dry_run=True)  # a dry run is checked but not charged
    assert (await _used(registry))["pods"] == "1"
    await _create_pod(registry, _pod("b"))
    err = await _refused(_create_pod(registry, _pod("c")), 403)
    assert err.message == 'pods "c" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2'
    await _refused(_create_pod(registry, _pod("c"), dry_run=True), 403)
    await registry.delete(PODS, "default", "a", DeleteOptions())
    assert (await _used(registry))["pods"] == "1"
    await _create_pod(registry, _pod("c"))
    # A write refused after the charge (the name is taken) is refunded.
    await registry.create(CONFIGMAPS, "default", _meta("ConfigMap", "one", "default"), WriteOptions())
    await _refused(registry.create(CONFIGMAPS, "default", _meta("ConfigMap", "one", "default"), WriteOptions()), 409)
    assert (await _used(registry))["count/configmaps"] == "1"


async def test_resource_quota_compute_resources(registry: Registry) -> None:
    await registry.create(QUOTAS, "default", _meta("ResourceQuota", "q", "default", spec={
        "hard": {"requests.cpu": "1", "limits.memory": "1Gi"}}), WriteOptions())
    err = await _refused(_create_pod(registry, _pod("bare")), 403)
    assert err.message == ('pods "bare" is forbidden: failed quota: q: must specify limits.memory for: c; '
                           'requests.cpu for: c')

    def sized(name: str, cpu: str) -> Obj:
        return _pod(name, containers=[{"name": "c", "image": "x", "resources": {
            "requests": {"cpu": cpu}, "limits": {"memory": "256Mi"}}}])

    await _create_pod(registry, sized("a", "600m"))
    assert await _used(registry) == {"requests.cpu": "600m", "limits.memory": "256Mi"}
    err = await _refused(_create_pod(registry, sized("b", "500m")), 403)
    assert err.message == ('pods "b" is forbidden: exceeded quota: q, requested: requests.cpu=500m, '
                           'used: requests.cpu=600m, limited: requests.cpu=1')
    # A finished pod gives its resources back.
    pod = copy.deepcopy(await registry.get(PODS, "default", "a"))
    pod["status"]["phase"] = "Succeeded"
    await registry.update(PODS, "default", "a", pod, WriteOptions(), "status")
    assert await _used(registry) == {"requests.cpu": "0", "limits.memory": "0"}
    await _create_pod(registry, sized("b", "500m"))


async def test_resource_quota_scopes(registry: Registry) -> None:
    await registry.create(QUOTAS, "default", _meta("ResourceQuota", "be", "default", spec={
        "hard": {"pods": "1"}, "scopes": ["BestEffort"]}), WriteOptions())
    await _create_pod(registry, _pod("a"))
    await _refused(_create_pod(registry, _pod("b")), 403)
    guaranteed = [{"name": "c", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]
    await _create_pod(registry, _pod("c", containers=guaranteed))  # not best effort: not counted
    assert (await _used(registry, "be"))["pods"] == "1"


async def test_default_storage_class_fills_only_unset_class() -> None:
    from pocketkube.apiserver.admission.storageclass import DefaultStorageClass

    classes = [
        {"metadata": {"name": "slow", "creationTimestamp": "2026-01-01T00:00:00Z",
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}},
        {"metadata": {"name": "b-fast", "creationTimestamp": "2026-02-01T00:00:00Z",
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}},
        {"metadata": {"name": "a-fast", "creationTimestamp": "2026-02-01T00:00:00Z",
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}},
        {"metadata": {"name": "plain", "creationTimestamp": "2026-03-01T00:00:00Z"}},
    ]

    class State:
        def info(self, group: str, version: str, plural: str) -> str:
            return plural

        def list(self, info: str, namespace: str = "") -> list[dict]:
            return classes

    plugin = DefaultStorageClass(State())  # type: ignore[arg-type]
    claims = {"unset": {"spec": {}}, "empty": {"spec": {"storageClassName": ""}},
              "named": {"spec": {"storageClassName": "plain"}}}
    for claim in claims.values():
        attrs = AdmissionAttributes(CREATE, CATALOG.resource("", "v1", "persistentvolumeclaims"), "ns", "c",
                                    claim, None)
        await plugin.admit(attrs)
    assert claims["unset"]["spec"]["storageClassName"] == "a-fast"  # newest; ties by name
    assert claims["empty"]["spec"]["storageClassName"] == ""
    assert claims["named"]["spec"]["storageClassName"] == "plain"
