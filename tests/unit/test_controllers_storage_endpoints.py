"""Pure logic of the PersistentVolume, Endpoints/EndpointSlice and disruption controllers: volume
selection as upstream's binder does it, port resolution and subset repacking, slice packing, and
PodDisruptionBudget arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pocketkube.controllers.deployment_util import format_time
from pocketkube.controllers.disruption import count_healthy, desired_healthy, disrupted_pod_map
from pocketkube.controllers.endpoints import endpoint_subsets, find_port, repack_subsets, truncate_subsets
from pocketkube.controllers.endpointslice import endpoint_hash, new_slice, reconcile_port_mapping
from pocketkube.controllers.persistentvolume import (
    ANN_BETA_DEFAULT_CLASS,
    ANN_DEFAULT_CLASS,
    ANN_SELECTED_NODE,
    check_volume_satisfies_claim,
    default_class,
    find_best_match,
    local_path_refusal,
    local_path_volume,
)

Obj = dict[str, Any]


# --- persistent volumes -----------------------------------------------------------------------
def pv(name: str, size: str, modes: tuple[str, ...] = ("ReadWriteOnce",), cls: str = "fast", phase: str = "Available",
       labels: Obj | None = None, claim_ref: Obj | None = None, **spec: Any) -> Obj:
    obj: Obj = {"metadata": {"name": name, "labels": labels or {}},
                "spec": {"capacity": {"storage": size}, "accessModes": list(modes), "storageClassName": cls, **spec},
                "status": {"phase": phase}}
    if claim_ref is not None:
        obj["spec"]["claimRef"] = claim_ref
    return obj


def pvc(size: str, modes: tuple[str, ...] = ("ReadWriteOnce",), cls: str = "fast", **spec: Any) -> Obj:
    return {"metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": {"resources": {"requests": {"storage": size}}, "accessModes": list(modes),
                     "storageClassName": cls, **spec}}


def test_smallest_fitting_volume_of_the_class() -> None:
    volumes = [pv("a", "1Gi"), pv("b", "10Gi"), pv("c", "3000Mi"), pv("d", "2Gi", cls="slow"),
               pv("e", "2Gi", phase="Released")]
    assert find_best_match(pvc("2Gi"), volumes, False)["metadata"]["name"] == "c"
    assert find_best_match(pvc("20Gi"), volumes, False) is None


def test_access_mode_groups_with_fewest_modes_come_first() -> None:
    # Upstream's index tries volumes offering exactly the wanted modes before larger mode sets.
    volumes = [pv("wide", "2Gi", ("ReadWriteOnce", "ReadWriteMany")), pv("exact", "10Gi")]
    assert find_best_match(pvc("1Gi"), volumes, False)["metadata"]["name"] == "exact"
    assert find_best_match(pvc("1Gi", ("ReadWriteMany",)), volumes, False)["metadata"]["name"] == "wide"
    assert find_best_match(pvc("1Gi", ("ReadWriteOncePod",)), volumes, False) is None


def test_selector_volume_mode_and_deleting_volumes() -> None:
    volumes = [pv("plain", "1Gi"), pv("gold", "5Gi", labels={"tier": "gold"}), pv("raw", "1Gi", volumeMode="Block")]
    assert find_best_match(pvc("1Gi", selector={"matchLabels": {"tier": "gold"}}), volumes,
                           False)["metadata"]["name"] == "gold"
    assert find_best_match(pvc("1Gi", volumeMode="Block"), volumes, False)["metadata"]["name"] == "raw"
    volumes[0]["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert find_best_match(pvc("1Gi"), volumes[:1], False) is None


def test_pre_bound_volume_wins_and_delayed_binding_only_takes_pre_bound() -> None:
    ref = {"namespace": "ns", "name": "c"}
    volumes = [pv("small", "1Gi"), pv("reserved", "50Gi", phase="Pending", claim_ref=ref),
               pv("other", "1Gi", claim_ref={"namespace": "ns", "name": "x"})]
    assert find_best_match(pvc("1Gi"), volumes, False)["metadata"]["name"] == "reserved"
    assert find_best_match(pvc("1Gi"), [volumes[0], volumes[2]], True) is None
    # A claimRef naming another uid (an older claim of the same name) does not count.
    volumes[1]["spec"]["claimRef"]["uid"] = "old"
    assert find_best_match(pvc("1Gi"), volumes, False)["metadata"]["name"] == "small"


def test_named_volume_checks() -> None:
    assert check_volume_satisfies_claim(pv("v", "1Gi"), pvc("2Gi")) == "requested PV is too small"
    assert check_volume_satisfies_claim(pv("v", "2Gi", cls="x"), pvc("2Gi")) == "storageClassName does not match"
    assert check_volume_satisfies_claim(pv("v", "2Gi", volumeMode="Block"), pvc("2Gi")) == "incompatible volumeMode"
    assert check_volume_satisfies_claim(pv("v", "2Gi"), pvc("2Gi", ("ReadOnlyMany",))) == "incompatible accessMode"
    assert check_volume_satisfies_claim(pv("v", "2Gi"), pvc("2Gi")) is None


def test_default_class_is_the_newest_marked_one() -> None:
    def sc(name: str, created: str, ann: str | None = ANN_DEFAULT_CLASS) -> Obj:
        return {"metadata": {"name": name, "creationTimestamp": created, "annotations": {ann: "true"} if ann else {}}}
    classes = [sc("old", "2024-01-01T00:00:00Z"), sc("new", "2024-06-01T00:00:00Z", ANN_BETA_DEFAULT_CLASS),
               sc("plain", "2025-01-01T00:00:00Z", None)]
    assert default_class(classes)["metadata"]["name"] == "new"
    assert default_class(classes[2:]) is None


def test_local_path_provisioner_shape_and_refusals() -> None:
    claim = pvc("3Gi", cls="local-path")
    storage_class = {"metadata": {"name": "local-path"}, "provisioner": "pocketkube.io/local-path",
                     "reclaimPolicy": "Retain"}
    assert local_path_refusal(claim, storage_class) == "configuration error, no node was specified"
    claim["metadata"]["annotations"] = {ANN_SELECTED_NODE: "n1"}
    assert local_path_refusal(claim, storage_class) is None
    assert "access modes" in local_path_refusal(pvc("1Gi", ("ReadWriteMany",)) | {"metadata": claim["metadata"]},
                                                storage_class)
    volume = local_path_volume(claim, storage_class,
                               {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "host-1"}}},
                               Path("/srv/cluster-a/storage"))
    assert volume["metadata"]["name"] == "pvc-u1"
    assert volume["spec"]["hostPath"] == {"path": "/srv/cluster-a/storage/pvc-u1_ns_c", "type": "DirectoryOrCreate"}
    assert volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [
        "host-1"]
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert volume["spec"]["claimRef"]["uid"] == "u1"


# --- endpoints ---------------------------------------------------------------------------------
def pod(name: str, ip: str, ports: list[Obj], ready: bool = True, **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}], **spec},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_find_port_resolves_names_per_pod_and_protocol() -> None:
    p = pod("a", "10.0.0.1", [{"name": "web", "containerPort": 8080}, {"name": "dns", "containerPort": 53,
                                                                        "protocol": "UDP"}],
            initContainers=[{"name": "side", "restartPolicy": "Always", "ports": [{"name": "m", "containerPort": 9}]}])
    assert find_port(p, {"port": 80, "targetPort": "web", "protocol": "TCP"}) == 8080
    assert find_port(p, {"port": 53, "targetPort": "dns", "protocol": "TCP"}) is None
    assert find_port(p, {"port": 53, "targetPort": "dns", "protocol": "UDP"}) == 53
    assert find_port(p, {"port": 1, "targetPort": "m"}) == 9
    assert find_port(p, {"port": 80, "targetPort": 8081}) == 8081
    assert find_port(p, {"port": 80}) == 80


def test_subsets_group_pods_by_resolved_ports() -> None:
    service = {"metadata": {"name": "s", "namespace": "ns"},
               "spec": {"clusterIP": "10.43.0.9", "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}
    pods = [pod("a", "10.0.0.2", [{"name": "web", "containerPort": 8080}]),
            pod("b", "10.0.0.1", [{"name": "web", "containerPort": 8080}], ready=False),
            pod("c", "10.0.0.3", [{"name": "web", "containerPort": 9090}]),
            pod("d", "10.0.0.4", [])]  # no such port: left out
    subsets = endpoint_subsets(service, pods)
    assert len(subsets) == 2
    by_port = {s["ports"][0]["port"]: s for s in subsets}
    assert [a["ip"] for a in by_port[8080]["addresses"]] == ["10.0.0.2"]
    assert [a["ip"] for a in by_port[8080]["notReadyAddresses"]] == ["10.0.0.1"]
    assert by_port[9090]["addresses"][0]["targetRef"]["name"] == "c"


def test_repack_merges_ports_of_the_same_addresses_and_not_ready_wins() -> None:
    a = {"ip": "10.0.0.1", "targetRef": {"uid": "a"}}
    b = {"ip": "10.0.0.2", "targetRef": {"uid": "b"}}
    subsets = [{"addresses": [a], "ports": [{"name": "x", "port": 1}]},
               {"addresses": [a], "ports": [{"name": "y", "port": 2}]},
               {"addresses": [b], "ports": [{"name": "x", "port": 1}]},
               {"notReadyAddresses": [b], "ports": [{"name": "x", "port": 1}]}]
    packed = repack_subsets(subsets)
    by_ports = {tuple(p["port"] for p in s["ports"]): s for s in packed}
    assert by_ports[(1,)] == {"addresses": [a], "notReadyAddresses": [b], "ports": [{"name": "x", "port": 1}]}
    assert by_ports[(2,)] == {"addresses": [a], "ports": [{"name": "y", "port": 2}]}


def test_headless_service_without_ports_and_truncation() -> None:
    service = {"metadata": {"name": "h", "namespace": "ns"}, "spec": {"clusterIP": "None"}}
    p = pod("a", "10.0.0.1", [], hostname="a", subdomain="h")
    assert endpoint_subsets(service, [p]) == [{"addresses": [{"ip": "10.0.0.1", "nodeName": "n1", "hostname": "a",
                                                              "targetRef": {"kind": "Pod", "namespace": "ns",
                                                                            "name": "a", "uid": "uid-a"}}]}]
    big = [{"addresses": [{"ip": f"10.1.{i // 250}.{i % 250}"} for i in range(900)],
            "notReadyAddresses": [{"ip": f"10.2.{i // 250}.{i % 250}"} for i in range(300)]}]
    assert truncate_subsets(big)
    assert (len(big[0]["addresses"]), len(big[0]["notReadyAddresses"])) == (900, 100)


# --- endpoint slices ---------------------------------------------------------------------------
SERVICE = {"metadata": {"name": "s", "namespace": "ns", "uid": "svc"}, "spec": {"clusterIP": "10.43.0.1"}}


def ep(i: int) -> Obj:
    return {"addresses": [f"10.0.0.{i}"], "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {"kind": "Pod", "namespace": "ns", "name": f"p{i}", "uid": f"u{i}"}}


def existing(name: str, endpoints: list[Obj]) -> Obj:
    obj = new_slice(SERVICE, [], "IPv4")
    obj["metadata"]["name"] = name
    obj["endpoints"] = endpoints
    return obj


def test_slice_packing_keeps_endpoints_in_place_and_fills_up() -> None:
    desired = {endpoint_hash(ep(i)): ep(i) for i in range(1, 8)}
    create, update, delete = reconcile_port_mapping(SERVICE, [], dict(desired), [], "IPv4", 3)
    assert sorted(len(s["endpoints"]) for s in create) == [1, 3, 3] and not update and not delete
    # p1 gone, p2 changed, p8 new: the changed slice gets the new endpoint; untouched slices stay.
    first, second = existing("s-a", [ep(1), ep(2), ep(3)]), existing("s-b", [ep(4), ep(5)])
    wanted = {endpoint_hash(ep(i)): ep(i) for i in (2, 3, 4, 5, 8)}
    wanted[endpoint_hash(ep(2))] = {**ep(2), "conditions": {"ready": False, "serving": False, "terminating": True}}
    create, update, delete = reconcile_port_mapping(SERVICE, [first, second], wanted, [], "IPv4", 3)
    assert not create and not delete
    assert [s["metadata"]["name"] for s in update] == ["s-a"]
    assert [e["targetRef"]["name"] for e in update[0]["endpoints"]] == ["p2", "p3", "p8"]
    # Everything gone from a slice: it is deleted.
    create, update, delete = reconcile_port_mapping(SERVICE, [first], {}, [], "IPv4", 3)
    assert [s["metadata"]["name"] for s in delete] == ["s-a"]


def test_leftovers_go_to_the_closest_fitting_unchanged_slice() -> None:
    roomy, tight = existing("roomy", [ep(1)]), existing("tight", [ep(2), ep(3)])
    wanted = {endpoint_hash(ep(i)): ep(i) for i in (1, 2, 3, 4)}
    create, update, _ = reconcile_port_mapping(SERVICE, [roomy, tight], wanted, [], "IPv4", 3)
    assert not create
    assert [s["metadata"]["name"] for s in update] == ["tight"]


# --- disruption budgets ------------------------------------------------------------------------
def test_desired_healthy_for_each_kind_of_budget() -> None:
    assert desired_healthy({"minAvailable": 2}, 5, None) == (5, 2)
    assert desired_healthy({"minAvailable": "50%"}, 3, 5) == (5, 3)
    assert desired_healthy({"maxUnavailable": 1}, 3, 4) == (4, 3)
    assert desired_healthy({"maxUnavailable": "50%"}, 3, 3) == (3, 1)
    assert desired_healthy({"maxUnavailable": 10}, 3, 3) == (3, 0)


def test_evicted_pods_do_not_count_until_they_expire() -> None:
    at = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    pods = [pod(f"p{i}", f"10.0.0.{i}", []) for i in range(4)]
    pods[3]["metadata"]["deletionTimestamp"] = format_time(at)
    recorded = {"p0": format_time(at - timedelta(seconds=30)), "p1": format_time(at - timedelta(minutes=5))}
    disrupted, recheck, overdue = disrupted_pod_map(pods, recorded, at)
    assert disrupted == {"p0": recorded["p0"]}
    assert recheck == at + timedelta(seconds=90)
    assert [p["metadata"]["name"] for p in overdue] == ["p1"]
    assert count_healthy(pods, disrupted, at) == 2  # p1 and p2; p0 is being evicted, p3 deleted
