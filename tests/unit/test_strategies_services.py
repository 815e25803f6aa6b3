"""Service defaults, validation, cluster IP / node port allocation and release; the allocators themselves."""

from __future__ import annotations

import copy
import random

import pytest

from pocketkube.api.errors import Cause, StatusError
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver.strategies import StrategySet, build_strategies
from pocketkube.apiserver.strategies.allocators import AllocationError, ClusterIPAllocator, NodePortAllocator
from pocketkube.apiserver.strategies.core_services import ServiceStrategy


@pytest.fixture
def strategies() -> StrategySet:
    return build_strategies(ResourceCatalog(), service_cidr="10.43.0.0/24", node_port_range=(30000, 30009))


@pytest.fixture
def services(strategies: StrategySet) -> ServiceStrategy:
    strategy = strategies.strategy_for(("", "v1", "services"))
    assert isinstance(strategy, ServiceStrategy)
    return strategy


def _svc(name: str = "web", **spec) -> dict:
    base = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": base}


async def _create(strategy: ServiceStrategy, svc: dict) -> dict:
    strategy.default(svc)
    strategy.prepare_for_create(svc)
    assert strategy.validate(svc) == []
    await strategy.before_create(svc)
    return svc


def _texts(causes: list[Cause]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


async def test_defaults_and_allocation(services: ServiceStrategy) -> None:
    svc = await _create(services, _svc())
    spec = svc["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in spec
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["clusterIP"] == spec["clusterIPs"][0]
    assert spec["clusterIP"].startswith("10.43.0.")
    assert spec["clusterIP"] != "10.43.0.1"  # reserved for the kubernetes Service


async def test_nodeport_and_loadbalancer_defaults(services: ServiceStrategy) -> None:
    svc = await _create(services, _svc(type="NodePort"))
    assert svc["spec"]["externalTrafficPolicy"] == "Cluster"
    assert 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 30009
    lb = await _create(services, _svc("lb", type="LoadBalancer"))
    assert lb["spec"]["allocateLoadBalancerNodePorts"] is True
    assert lb["spec"]["ports"][0]["nodePort"] != svc["spec"]["ports"][0]["nodePort"]


async def test_kubernetes_service_gets_first_address(services: ServiceStrategy) -> None:
    svc = await _create(services, _svc("kubernetes", clusterIP="10.43.0.1"))
    assert svc["spec"]["clusterIPs"] == ["10.43.0.1"]


async def test_requested_ip_conflict(services: ServiceStrategy) -> None:
    await _create(services, _svc("a", clusterIP="10.43.0.50"))
    with pytest.raises(StatusError) as err:
        await _create(services, _svc("b", clusterIP="10.43.0.50"))
    assert err.value.code == 422
    assert err.value.message == ('Service "b" is invalid: spec.clusterIPs: Invalid value: ["10.43.0.50"]: '
                                 "failed to allocate IP 10.43.0.50: provided IP is already allocated")


async def test_requested_node_port_conflict_releases_ip(services: ServiceStrategy) -> None:
    await _create(services, _svc("a", type="NodePort", ports=[{"port": 80, "nodePort": 30005}]))
    used = services.ips.used()
    with pytest.raises(StatusError) as err:
        await _create(services, _svc("b", type="NodePort", ports=[{"port": 80, "nodePort": 30005}]))
    assert err.value.message == ('Service "b" is invalid: spec.ports[0].nodePort: Invalid value: 30005: '
                                 "provided port is already allocated")
    assert services.ips.used() == used


async def test_headless_and_external_name(services: ServiceStrategy) -> None:
    headless = await _create(services, _svc("h", clusterIP="None", ports=[]))
    assert headless["spec"]["clusterIPs"] == ["None"]
    selectorless = await _create(services, _svc("h2", clusterIP="None", selector=None))
    assert selectorless["spec"]["ipFamilyPolicy"] == "RequireDualStack"
    ext = await _create(services, _svc("e", type="ExternalName", externalName="example.com", ports=[],
                                       selector=None))
    assert "clusterIP" not in ext["spec"] and "ipFamilies" not in ext["spec"]
    assert services.ips.used() == 0


async def test_release_on_delete_and_exhaustion(services: ServiceStrategy) -> None:
    created = []
    for i in range(10):
        created.append(await _create(services, _svc(f"np{i}", type="NodePort")))
    ports = {s["spec"]["ports"][0]["nodePort"] for s in created}
    assert ports == set(range(30000, 30010))
    with pytest.raises(StatusError) as err:
        await _create(services, _svc("full", type="NodePort"))
    assert err.value.code == 500
    assert err.value.message == "Internal error occurred: failed to allocate a nodePort: range is full"
    await services.after_delete(created[0])
    again = await _create(services, _svc("again", type="NodePort"))
    assert again["spec"]["ports"][0]["nodePort"] == created[0]["spec"]["ports"][0]["nodePort"]


async def test_type_change_allocates_and_releases(services: ServiceStrategy) -> None:
    old = await _create(services, _svc())
    new = copy.deepcopy(old)
    new["spec"]["type"] = "NodePort"
    services.default(new)
    services.prepare_for_update(new, old)
    assert services.validate_update(new, old) == []
    await services.before_update(new, old)
    port = new["spec"]["ports"][0]["nodePort"]
    assert services.node_ports.has(port)
    back = copy.deepcopy(new)
    back["spec"]["type"] = "ClusterIP"
    services.default(back)
    services.prepare_for_update(back, new)
    assert "nodePort" not in back["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in back["spec"]
    assert services.validate_update(back, new) == []
    await services.before_update(back, new)
    await services.after_update(back, new)
    assert not services.node_ports.has(port)


async def test_update_keeps_cluster_ip_when_omitted(services: ServiceStrategy) -> None:
    old = await _create(services, _svc())
    new = _svc()
    services.default(new)
    services.prepare_for_update(new, old)
    assert new["spec"]["clusterIP"] == old["spec"]["clusterIP"]
    assert services.validate_update(new, old) == []


async def test_cluster_ip_immutable(services: ServiceStrategy) -> None:
    old = await _create(services, _svc())
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = new["spec"]["clusterIPs"][0] = "10.43.0.77"
    assert ('spec.clusterIPs[0]: Invalid value: ["10.43.0.77"]: may not change once set'
            in _texts(services.validate_update(new, old)))


def test_validation_messages(services: ServiceStrategy) -> None:
    svc = _svc(ports=[{"port": 80}, {"port": 0, "name": "b"}, {"port": 81, "name": "b"}], type="Bogus")
    services.default(svc)
    texts = _texts(services.validate(svc))
    assert "spec.ports[0].name: Required value" in texts
    assert "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive" in texts
    assert 'spec.ports[2].name: Duplicate value: "b"' in texts
    assert ('spec.type: Unsupported value: "Bogus": supported values: "ClusterIP", "ExternalName", '
            '"LoadBalancer", "NodePort"') in texts
    missing = _svc(ports=[])
    services.default(missing)
    assert "spec.ports: Required value" in _texts(services.validate(missing))
    cluster_np = _svc(ports=[{"port": 80, "nodePort": 30001}])
    services.default(cluster_np)
    assert ("spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
            in _texts(services.validate(cluster_np)))
    assert services.name_validator == "dns1035label"


async def test_load_existing(strategies: StrategySet, services: ServiceStrategy) -> None:
    stored = _svc("x", clusterIP="10.43.0.9", clusterIPs=["10.43.0.9"], type="NodePort",
                  ports=[{"port": 80, "nodePort": 30003}])
    await strategies.load_existing({"Service": [stored]})
    assert services.ips.has("10.43.0.9")
    assert services.node_ports.has(30003)


def test_ip_allocator_unique_and_release() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/28", rng=random.Random(1))
    got = {alloc.allocate_next() for _ in range(13)}  # 14 usable, first reserved
    assert len(got) == 13
    assert "10.0.0.1" not in got and "10.0.0.0" not in got and "10.0.0.15" not in got
    with pytest.raises(AllocationError) as err:
        alloc.allocate_next()
    assert err.value.full and str(err.value) == "range is full"
    alloc.allocate("10.0.0.1")
    with pytest.raises(AllocationError, match="provided IP is already allocated"):
        alloc.allocate("10.0.0.1")
    with pytest.raises(AllocationError, match="is not in the valid range"):
        alloc.allocate("10.1.0.1")
    alloc.release("10.0.0.5")
    assert alloc.allocate_next() == "10.0.0.5"


def test_ip_allocator_prefers_upper_band() -> None:
    alloc = ClusterIPAllocator("10.43.0.0/16", rng=random.Random(7))
    ips = [alloc.allocate_next() for _ in range(200)]
    assert len(set(ips)) == 200
    # The static lower band (first 256 addresses) is left for explicit requests.
    assert all(not ip.startswith("10.43.0.") for ip in ips)


def test_node_port_allocator() -> None:
    alloc = NodePortAllocator((30000, 30099), rng=random.Random(3))
    ports = {alloc.allocate_next() for _ in range(100)}
    assert ports == set(range(30000, 30100))
    with pytest.raises(AllocationError, match="range is full"):
        alloc.allocate_next()
    alloc.release(30050)
    with pytest.raises(AllocationError, match="provided port is already allocated"):
        alloc.allocate(30051)
    with pytest.raises(AllocationError, match="The range of valid ports is 30000-30099"):
        alloc.allocate(80)
    alloc.allocate(30050)
