"""Server-side apply and managedFields against upstream's behaviour (structured-merge-diff, managedfields)."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from pocketkube.api.errors import StatusError
from pocketkube.apiserver.fieldmanager import (
    ApplyConflict,
    FieldManager,
    compare,
    decode_managed_fields,
    default_manager,
    fields_of,
    merge,
    scale_to_parent,
    scale_to_subresource,
    validate_patch_options,
)
from pocketkube.apiserver.fieldpath import VALUE, FieldSet, key_element, make_path, path_string, serialize_pe

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"
POD = "io.k8s.api.core.v1.Pod"
SERVICE = "io.k8s.api.core.v1.Service"
CONFIGMAP = "io.k8s.api.core.v1.ConfigMap"
T0, T1, T2 = "2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z", "2024-01-01T00:02:00Z"

Obj = dict[str, Any]


def deployments() -> FieldManager:
    return FieldManager(DEPLOYMENT, "apps/v1", "Deployment", has_status=True)


def applied_deployment(replicas: int | None = 3, image: str = "nginx:1.25", **extra: Any) -> Obj:
    spec: Obj = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "nginx", "image": image}]}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    spec.update(extra)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}, "spec": spec}


def stored(obj: Obj, uid: str = "u-1") -> Obj:
    """What the registry stores after an operation: identity metadata set."""
    obj = copy.deepcopy(obj)
    obj["metadata"].setdefault("uid", uid)
    return obj


def entries(obj: Obj) -> list[Obj]:
    return obj["metadata"].get("managedFields") or []


def entry(obj: Obj, manager: str, operation: str | None = None) -> Obj:
    found = [e for e in entries(obj) if e["manager"] == manager and operation in (None, e["operation"])]
    assert len(found) == 1, entries(obj)
    return found[0]


def owned(obj: Obj, manager: str, operation: str | None = None) -> list[str]:
    return [path_string(p) for p in FieldSet.from_fields_v1(entry(obj, manager, operation)["fieldsV1"]).paths()]


# --- field sets --------------------------------------------------------------------------------------------

def test_fieldsv1_round_trip_with_self_marker_and_all_element_kinds() -> None:
    data = {
        "f:metadata": {"f:finalizers": {".": {}, 'v:"a.io/x"': {}}, "f:labels": {"f:app": {}}},
        "f:spec": {"f:containers": {'k:{"name":"c"}': {".": {}, "f:image": {}, "f:name": {},
                                                        "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {
                                                            ".": {}, "f:containerPort": {}}}}}},
    }
    s = FieldSet.from_fields_v1(data)
    assert s.to_fields_v1() == data
    assert list(s.to_fields_v1()["f:spec"]["f:containers"]['k:{"name":"c"}']) == [
        ".", "f:image", "f:name", "f:ports"]
    assert s.has(make_path("metadata", "finalizers"))
    assert not s.has(make_path("metadata"))
    assert s.has(make_path("spec", "containers", key_element({"name": "c"}), "image"))
    assert [path_string(p) for p in s.paths()][:3] == [
        ".metadata.finalizers", '.metadata.finalizers[="a.io/x"]', ".metadata.labels.app"]


def test_fieldsv1_sorting_and_unknown_elements() -> None:
    s = FieldSet.from_fields_v1({"f:b": {}, "x:ignored": {}, 'k:{"b":1,"a":"x"}': {}, 'v:2': {}, 'v:"s"': {},
                                 "f:a": {}, "i:3": {}})
    # fields < keys < values (numbers before strings) < indexes; key fields sorted by name
    assert list(s.to_fields_v1()) == ["f:a", "f:b", 'k:{"a":"x","b":1}', "v:2", 'v:"s"', "i:3"]
    with pytest.raises(ValueError):
        FieldSet.from_fields_v1({"f:a": []})
    with pytest.raises(ValueError):
        FieldSet.from_fields_v1({"bad": {}})


def test_set_operations() -> None:
    a = FieldSet.of(make_path("a", "b"), make_path("a", "c"), make_path("d"))
    b = FieldSet.of(make_path("a", "b"), make_path("e"))
    assert a.union(b) == FieldSet.of(make_path("a", "b"), make_path("a", "c"), make_path("d"), make_path("e"))
    assert a.intersection(b) == FieldSet.of(make_path("a", "b"))
    assert a.difference(b) == FieldSet.of(make_path("a", "c"), make_path("d"))
    # a parent member does not remove children in a plain difference, but does recursively
    parent = FieldSet.of(make_path("a"))
    assert a.difference(parent) == a
    assert a.recursive_difference(parent) == FieldSet.of(make_path("d"))
    assert FieldSet().empty() and not a.empty()


def test_path_rendering_like_upstream() -> None:
    p = make_path("spec", "template", "spec", "containers", key_element({"name": "nginx"}), "image")
    assert path_string(p) == '.spec.template.spec.containers[name="nginx"].image'
    ports = make_path("spec", "ports", key_element({"port": 80, "protocol": "TCP"}))
    assert path_string(ports) == '.spec.ports[port=80,protocol="TCP"]'
    assert path_string(make_path("metadata", "finalizers", ("v", "a/b"))) == '.metadata.finalizers[="a/b"]'


def test_fields_of_applied_deployment() -> None:
    s = fields_of(DEPLOYMENT, applied_deployment())
    assert s.to_fields_v1() == {
        "f:apiVersion": {}, "f:kind": {},
        "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}, "f:namespace": {}},
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},  # LabelSelector is an atomic map
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {'k:{"name":"nginx"}': {".": {}, "f:image": {}, "f:name": {}}}},
            },
        },
    }


def test_fields_of_pod_ports_args_env_and_finalizers() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "finalizers": ["a.io/x", "b.io/y"]},
           "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c"], "args": ["sleep 1"],
                                    "env": [{"name": "A", "value": "1"}],
                                    "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                                    "resources": {"limits": {"cpu": "1"}}}]}}
    s = fields_of(POD, pod)
    container = s.to_fields_v1()["f:spec"]["f:containers"]['k:{"name":"c"}']
    assert container == {
        ".": {}, "f:args": {}, "f:command": {},  # atomic lists are leaves
        "f:env": {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}},
        "f:image": {}, "f:name": {},
        # the protocol key defaults to TCP when omitted
        "f:ports": {'k:{"containerPort":53,"protocol":"UDP"}': {".": {}, "f:containerPort": {}, "f:protocol": {}},
                    'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
        "f:resources": {"f:limits": {"f:cpu": {}}},
    }
    assert s.to_fields_v1()["f:metadata"]["f:finalizers"] == {'v:"a.io/x"': {}, 'v:"b.io/y"': {}}


def test_fields_of_service_and_untyped_parts() -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "annotations": {"a": "b"}},
           "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": 8080}], "type": "ClusterIP"}}
    assert fields_of(SERVICE, svc).to_fields_v1()["f:spec"] == {
        "f:ports": {'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:port": {}, "f:targetPort": {}}},
        "f:selector": {},  # atomic map
        "f:type": {},
    }
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    assert fields_of(CONFIGMAP, cm).to_fields_v1()["f:data"] == {"f:k": {}}


def test_fields_of_is_fast() -> None:
    dep = applied_deployment()
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container.update({"env": [{"name": f"E{i}", "value": str(i)} for i in range(10)],
                      "ports": [{"containerPort": 8080, "name": "http"}],
                      "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                      "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 5}})
    fields_of(DEPLOYMENT, dep)
    start = time.perf_counter()
    for _ in range(50):
        fields_of(DEPLOYMENT, dep)
    assert (time.perf_counter() - start) / 50 < 0.002


# --- update -------------------------------------------------------------------------------------------------

def created_by_kubectl_create() -> Obj:
    """``kubectl create deployment nginx --image=nginx`` after decoding and defaulting."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "namespace": "default", "labels": {"app": "nginx"}},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}},
                         "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {},
                                                  "terminationMessagePath": "/dev/termination-log",
                                                  "terminationMessagePolicy": "File",
                                                  "imagePullPolicy": "Always"}],
                                  "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                                  "dnsPolicy": "ClusterFirst", "securityContext": {},
                                  "schedulerName": "default-scheduler"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
        },
        "status": {},
    }


def test_update_on_create_matches_upstream_kubectl_create_entry() -> None:
    obj = deployments().update(None, created_by_kubectl_create(), "kubectl-create", T0)
    assert obj["metadata"]["managedFields"] == [{
        "manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1", "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {}, "f:selector": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}},
                               "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {
                        "f:containers": {'k:{"name":"nginx"}': {
                            ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:resources": {},
                            "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
                        "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
                        "f:terminationGracePeriodSeconds": {},
                    },
                },
            },
        },
    }]


def test_update_transfers_changed_fields_and_groups_by_manager() -> None:
    fm = deployments()
    live = stored(fm.update(None, created_by_kubectl_create(), "kubectl-create", T0))
    new = copy.deepcopy(live)
    new["spec"]["replicas"] = 5
    new["metadata"]["labels"]["tier"] = "web"
    out = fm.update(live, new, "kubectl-edit", T1)
    assert owned(out, "kubectl-edit") == [".metadata.labels.tier", ".spec.replicas"]
    assert ".spec.replicas" not in owned(out, "kubectl-create")
    assert entry(out, "kubectl-edit")["time"] == T1
    assert entry(out, "kubectl-create")["time"] == T0
    # the same manager again merges into its entry; a no-op leaves everything as it was
    again = copy.deepcopy(stored(out))
    again["spec"]["minReadySeconds"] = 2
    out2 = fm.update(stored(out), again, "kubectl-edit", T2)
    assert owned(out2, "kubectl-edit") == [".metadata.labels.tier", ".spec.minReadySeconds", ".spec.replicas"]
    noop = fm.update(stored(out2), copy.deepcopy(stored(out2)), "someone-else", T2)
    assert noop["metadata"]["managedFields"] == out2["metadata"]["managedFields"]


def test_update_removal_drops_ownership_and_empty_entries() -> None:
    fm = deployments()
    live = stored(fm.update(None, created_by_kubectl_create(), "kubectl-create", T0))
    new = copy.deepcopy(live)
    new["metadata"]["labels"] = {"x": "y"}
    out = fm.update(live, new, "kubectl-label", T1)
    assert owned(out, "kubectl-label") == [".metadata.labels.x"]
    assert ".metadata.labels.app" not in owned(out, "kubectl-create")


def test_update_of_untracked_object_stays_untracked_and_reset() -> None:
    fm = deployments()
    live = stored(created_by_kubectl_create())
    new = copy.deepcopy(live)
    new["spec"]["replicas"] = 2
    assert "managedFields" not in fm.update(live, new, "kubectl-edit", T1)["metadata"]
    tracked = stored(fm.update(None, created_by_kubectl_create(), "kubectl-create", T0))
    reset = copy.deepcopy(tracked)
    reset["metadata"]["managedFields"] = []
    assert "managedFields" not in fm.update(tracked, reset, "x", T1)["metadata"]


def test_user_supplied_managed_fields_accepted_or_replaced() -> None:
    fm = deployments()
    live = stored(fm.update(None, created_by_kubectl_create(), "kubectl-create", T0))
    good = copy.deepcopy(live)
    good["metadata"]["managedFields"] = [{"manager": "mine", "operation": "Apply", "apiVersion": "apps/v1",
                                          "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    out = fm.update(live, good, "kubectl-replace", T1)
    assert [e["manager"] for e in entries(out)] == ["mine"]
    bad = copy.deepcopy(live)
    bad["metadata"]["managedFields"] = [{"manager": "x", "operation": "Delete", "apiVersion": "apps/v1",
                                         "fieldsType": "FieldsV1", "fieldsV1": {}}]
    out = fm.update(live, bad, "kubectl-replace", T1)
    assert entries(out) == entries(live)
    with pytest.raises(ValueError, match="fieldsType"):
        decode_managed_fields([{"manager": "x", "operation": "Update", "apiVersion": "v1"}])


def test_status_and_main_endpoints_split_ownership() -> None:
    fm = deployments()
    live = stored(fm.update(None, created_by_kubectl_create(), "kubectl-create", T0))
    status = copy.deepcopy(live)
    status["status"] = {"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]}
    status["spec"]["replicas"] = 9  # ignored by /status
    out = fm.update(live, status, "kube-controller-manager", T1, subresource="status")
    ctrl = entry(out, "kube-controller-manager")
    assert ctrl["subresource"] == "status"
    assert ctrl["fieldsV1"] == {"f:status": {
        "f:conditions": {".": {}, 'k:{"type":"Available"}': {".": {}, "f:status": {}, "f:type": {}}},
        "f:replicas": {}}}
    # the main endpoint never owns status
    main = copy.deepcopy(stored(out))
    main["status"]["replicas"] = 4
    main["spec"]["paused"] = True
    out2 = fm.update(stored(out), main, "kubectl-edit", T2)
    assert owned(out2, "kubectl-edit") == [".spec.paused"]
    assert entry(out2, "kube-controller-manager")["fieldsV1"] == ctrl["fieldsV1"]


SCALE = "io.k8s.api.autoscaling.v1.Scale"
REPLICAS = {"apps/v1": make_path("spec", "replicas")}


def test_scale_entries_map_to_and_from_the_parent() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(replicas=2), "deployer", T0))
    labels = copy.deepcopy(live)
    labels["metadata"]["labels"]["x"] = "y"
    live = stored(fm.update(live, labels, "labeler", T1))
    parent = live["metadata"]["managedFields"]
    # ToSubresource: only the entries owning the replicas field, as owners of the Scale's spec.replicas
    sub = scale_to_subresource(parent, REPLICAS)
    assert sub == [{"manager": "deployer", "operation": "Apply", "apiVersion": "autoscaling/v1", "time": T0,
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    assert scale_to_subresource(parent, {"apps/v1": None}) is None  # a version without scale
    # an update through /scale takes spec.replicas from the applier; mapped back, the applier loses
    # replicas and the scaler owns it with subresource scale (upstream leaves such an entry without a time)
    scales = FieldManager(SCALE, "autoscaling/v1", "Scale")
    live_scale = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                  "metadata": {"name": "web", "uid": "u-1", "managedFields": sub}, "spec": {"replicas": 2}}
    new_scale = copy.deepcopy(live_scale)
    new_scale["spec"]["replicas"] = 5
    scaled = scales.update(live_scale, new_scale, "kubectl", T2, subresource="scale")
    back = scale_to_parent(parent, scaled["metadata"]["managedFields"], REPLICAS, "apps/v1")
    assert back is not None
    by_manager = {e["manager"]: e for e in back}
    assert by_manager["kubectl"] == {"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
                                     "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}},
                                     "subresource": "scale"}
    assert "f:replicas" not in by_manager["deployer"]["fieldsV1"]["f:spec"]
    assert by_manager["labeler"] == entry(live, "labeler")  # untouched
    # the same value again changes nothing: the applier keeps the field and its entry
    same = scales.update(live_scale, copy.deepcopy(live_scale), "kubectl", T2, subresource="scale")
    assert scale_to_parent(parent, same["metadata"]["managedFields"], REPLICAS, "apps/v1") == parent
    # entries of versions the resource no longer has are dropped, as upstream's ToParent does
    old_version = [{**parent[0], "apiVersion": "apps/v1beta1"}, *parent[1:]]
    assert len(scale_to_parent(old_version, None, REPLICAS, "apps/v1") or []) == len(parent) - 1


def test_scale_apply_conflicts_with_the_parents_owner_of_replicas() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(replicas=2), "deployer", T0))
    sub = scale_to_subresource(live["metadata"]["managedFields"], REPLICAS)
    scales = FieldManager(SCALE, "autoscaling/v1", "Scale")
    live_scale = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                  "metadata": {"name": "web", "uid": "u-1", "managedFields": sub}, "spec": {"replicas": 2}}
    config = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"}, "spec": {"replicas": 4}}
    with pytest.raises(ApplyConflict) as err:
        scales.apply(live_scale, config, "hpa", T1, subresource="scale")
    assert str(err.value) == 'Apply failed with 1 conflict: conflict with "deployer": .spec.replicas'
    forced = scales.apply(live_scale, config, "hpa", T1, force=True, subresource="scale")
    back = scale_to_parent(live["metadata"]["managedFields"], forced["metadata"]["managedFields"], REPLICAS,
                           "apps/v1")
    assert [(e["manager"], e["operation"], e.get("subresource", ""), e["fieldsV1"].get("f:spec", {}).get(
        "f:replicas")) for e in back or []] == [("hpa", "Apply", "scale", {}), ("deployer", "Apply", "", None)]
    # (an entry without a time sorts first, as upstream sorts a missing time as zero)


def test_cap_of_ten_update_managers() -> None:
    fm = FieldManager(CONFIGMAP, "v1", "ConfigMap")
    obj = fm.update(None, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}},
                    "creator", T0)
    obj = stored(obj)
    for i in range(12):
        new = copy.deepcopy(obj)
        new.setdefault("data", {})[f"k{i}"] = "v"
        obj = stored(fm.update(obj, new, f"m{i:02d}", f"2024-01-01T00:{i + 1:02d}:00Z"))
    managers = [e["manager"] for e in entries(obj)]
    assert len(managers) == 10 and "ancient-changes" in managers
    # the oldest entries (creator's empty .data, then m00..m02) were folded into one bucket
    assert owned(obj, "ancient-changes") == [".data", ".data.k0", ".data.k1", ".data.k2"]
    assert "creator" not in managers and "m02" not in managers and "m03" in managers


def test_default_manager_from_user_agent() -> None:
    assert default_manager("kubectl/v1.37.0 (linux/amd64) kubernetes/abc") == "kubectl"
    assert default_manager("Go-http-client/1.1") == "Go-http-client"
    assert default_manager("agent\x00x/1") == "agentx"
    assert len(default_manager("a" * 300)) == 128


def test_patch_options_validation_messages() -> None:
    with pytest.raises(StatusError) as err:
        validate_patch_options(True, "", False)
    assert err.value.code == 422
    assert err.value.message == ('PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                 "is required for apply patch")
    with pytest.raises(StatusError) as err:
        validate_patch_options(False, "", True)
    assert err.value.message.endswith("force: Forbidden: may not be specified for non-apply patch")
    validate_patch_options(True, "kubectl", True)


# --- apply ------------------------------------------------------------------------------------------------

def test_apply_creates_with_one_apply_entry() -> None:
    out = deployments().apply(None, applied_deployment(), "kubectl", T0)
    assert out["spec"]["replicas"] == 3
    assert out["metadata"]["managedFields"] == [{
        "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {'k:{"name":"nginx"}': {".": {}, "f:image": {}, "f:name": {}}}}}},
        },
    }]


def test_apply_checks_type_and_managed_fields() -> None:
    fm = deployments()
    wrong = applied_deployment()
    wrong["apiVersion"] = "apps/v1beta1"
    with pytest.raises(StatusError, match=r"invalid object type: apps/v1beta1, Kind=Deployment"):
        fm.apply(None, wrong, "kubectl", T0)
    pod = FieldManager(POD, "v1", "Pod", has_status=True)
    with pytest.raises(StatusError, match=r"invalid object type: /v1, Kind=Service"):
        pod.apply(None, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}, "m", T0)
    with_mf = applied_deployment()
    with_mf["metadata"]["managedFields"] = []
    with pytest.raises(StatusError, match="metadata.managedFields must be nil"):
        fm.apply(None, with_mf, "kubectl", T0)


def test_apply_refuses_fields_the_schema_does_not_declare() -> None:
    """typed validation of the configuration: a 400 BadRequest (upstream: a reason-less 500) naming the first
    undeclared field of each object, by its structured-merge-diff path (list items by key, atomic lists by
    index)."""
    fm = deployments()
    config = applied_deployment()
    config["metadata"]["namespace"] = "prod"
    config["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    with pytest.raises(StatusError) as err:
        fm.apply(None, config, "kubectl", T0)
    assert (err.value.code, err.value.reason) == (400, "BadRequest")
    assert err.value.message == (
        'failed to create typed patch object (prod/web; apps/v1, Kind=Deployment): '
        '.spec.template.spec.containers[name="nginx"].bogus: field not declared in schema')
    config["metadata"]["extra"] = {"x": 1}
    config["spec"]["other"] = True
    config["spec"]["later"] = 1  # not reported: the walk of spec stops at its first undeclared field
    with pytest.raises(StatusError) as err:
        fm.check_applied(config)
    assert err.value.message.endswith("(prod/web; apps/v1, Kind=Deployment): errors:\n"
                                      "  .metadata.extra: field not declared in schema\n"
                                      '  .spec.template.spec.containers[name="nginx"].bogus: field not declared in '
                                      "schema\n"
                                      "  .spec.other: field not declared in schema")
    policy = FieldManager("io.k8s.api.networking.v1.NetworkPolicy", "networking.k8s.io/v1", "NetworkPolicy")
    with pytest.raises(StatusError, match=r"\(/np; networking.k8s.io/v1, Kind=NetworkPolicy\): "
                                          r"\.spec\.ingress\[0\]\._from: field not declared"):
        policy.check_applied({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                              "metadata": {"name": "np"}, "spec": {"ingress": [{"_from": []}]}})
    # maps, untyped parts (RawExtension, IntOrString) and null values of declared fields are fine
    fm.check_applied(applied_deployment(strategy={"rollingUpdate": {"maxSurge": "25%"}}))


def test_apply_to_custom_resources_allows_only_preserved_unknown_fields() -> None:
    schema = {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                   "properties": {"phase": {"type": "string"}}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                     "properties": {"spec": {"type": "object"}}}}}
    fm = FieldManager("", "example.com/v1", "Gizmo", has_status=True, schema=schema)

    def gizmo(**fields: Any) -> Obj:
        return {"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g", "namespace": "d"},
                **fields}
    fm.check_applied(gizmo(spec={"size": 1}, status={"phase": "x", "more": {"a": 1}}, free={"any": [1]},
                           template={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}))
    with pytest.raises(StatusError, match=r"\.template\.metadata\.nickname: field not declared"):
        fm.check_applied(gizmo(template={"metadata": {"nickname": "p"}}))
    with pytest.raises(StatusError) as err:
        fm.check_applied(gizmo(spec={"size": 1, "colour": "red"}))
    assert err.value.message == ("failed to create typed patch object (d/g; example.com/v1, Kind=Gizmo): "
                                 ".spec.colour: field not declared in schema")
    with pytest.raises(StatusError, match=r"\.extra: field not declared"):
        fm.check_applied(gizmo(extra=1))
    open_root = FieldManager("", "example.com/v1", "Gizmo", schema={**schema,
                                                                   "x-kubernetes-preserve-unknown-fields": True})
    open_root.check_applied(gizmo(extra=1))


def test_reapply_without_a_field_removes_it() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "kubectl", T0))
    config = applied_deployment(replicas=None)
    config["metadata"]["labels"] = {}
    del config["metadata"]["labels"]
    out = fm.apply(live, config, "kubectl", T1)
    assert "replicas" not in out["spec"]
    assert "labels" not in out["metadata"]
    assert owned(out, "kubectl") == [
        ".spec.selector", ".spec.template.metadata.labels.app",
        '.spec.template.spec.containers[name="nginx"]', '.spec.template.spec.containers[name="nginx"].image',
        '.spec.template.spec.containers[name="nginx"].name']
    assert entry(out, "kubectl")["time"] == T1


def test_reapply_of_only_name_and_namespace_removes_every_owned_field_but_keeps_metadata() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "kubectl", T0))
    config = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"}}
    out = fm.apply(live, config, "kubectl", T1)
    # The configuration's name and namespace count as owned while pruning, as upstream strips them after.
    assert out["metadata"] == {"name": "web", "namespace": "default", "uid": "u-1"}
    assert "spec" not in out


def test_reapply_removes_map_list_item_but_keeps_fields_of_other_managers() -> None:
    fm = deployments()
    config = applied_deployment()
    config["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    live = stored(fm.apply(None, config, "kubectl", T0))
    # another manager sets a field the applier never set
    edited = copy.deepcopy(live)
    edited["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    live = stored(fm.update(live, edited, "kubectl-edit", T1))
    out = fm.apply(live, applied_deployment(), "kubectl", T2)
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["nginx"]
    assert containers[0]["imagePullPolicy"] == "Always"


def test_two_appliers_share_a_field() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "alpha", T0))
    shared = applied_deployment()  # the same values: no conflict, both own them
    shared["metadata"]["labels"]["team"] = "b"
    live = stored(fm.apply(live, shared, "beta", T1))
    assert ".spec.replicas" in owned(live, "alpha") and ".spec.replicas" in owned(live, "beta")
    # alpha stops applying replicas: beta still owns it, so the value stays
    out = fm.apply(live, applied_deployment(replicas=None), "alpha", T2)
    assert out["spec"]["replicas"] == 3
    assert ".spec.replicas" not in owned(out, "alpha")
    assert out["metadata"]["labels"] == {"app": "web", "team": "b"}


def test_conflict_with_an_update_manager_one_conflict() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "kubectl", T0))
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    live = stored(fm.update(live, scaled, "kubectl-client-side-apply", T1))
    with pytest.raises(ApplyConflict) as err:
        fm.apply(live, applied_deployment(replicas=3), "kubectl", T2)
    assert str(err.value) == ('Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" '
                              "using apps/v1: .spec.replicas")
    status = err.value.to_status_error()
    assert (status.code, status.reason) == (409, "Conflict")
    assert status.details == {"causes": [{"reason": "FieldManagerConflict",
                                          "message": 'conflict with "kubectl-client-side-apply" using apps/v1',
                                          "field": ".spec.replicas"}]}


def test_conflicts_several_fields_and_managers() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "kubectl", T0))
    a = copy.deepcopy(live)
    a["spec"]["replicas"] = 5
    a["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    live = stored(fm.update(live, a, "kubectl-edit", T1))
    b = copy.deepcopy(live)
    b["metadata"]["labels"]["app"] = "other"
    live = stored(fm.apply(live, {"apiVersion": "apps/v1", "kind": "Deployment",
                                  "metadata": {"name": "web", "labels": {"app": "other"}}},
                           "helm", T1, force=True))
    with pytest.raises(ApplyConflict) as err:
        fm.apply(live, applied_deployment(), "kubectl", T2)
    assert str(err.value) == (
        "Apply failed with 3 conflicts: "
        'conflicts with "helm":\n'
        "- .metadata.labels.app\n"
        'conflicts with "kubectl-edit" using apps/v1:\n'
        "- .spec.replicas\n"
        '- .spec.template.spec.containers[name="nginx"].image')


def test_force_takes_ownership() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "kubectl", T0))
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    live = stored(fm.update(live, scaled, "hpa", T1))
    assert owned(live, "hpa") == [".spec.replicas"]
    out = fm.apply(live, applied_deployment(replicas=3), "kubectl", T2, force=True)
    assert out["spec"]["replicas"] == 3
    assert [e["manager"] for e in entries(out)] == ["kubectl"]
    assert ".spec.replicas" in owned(out, "kubectl")


def test_update_after_apply_takes_the_field_from_the_applier() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "kubectl", T0))
    new = copy.deepcopy(live)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    out = fm.update(live, new, "kubectl-set", T1)
    assert owned(out, "kubectl-set") == ['.spec.template.spec.containers[name="nginx"].image']
    assert '.spec.template.spec.containers[name="nginx"].image' not in owned(out, "kubectl")


def test_noop_apply_keeps_time_and_object() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "kubectl", T0))
    out = fm.apply(live, applied_deployment(), "kubectl", T1)
    assert entry(out, "kubectl")["time"] == T0
    assert out == live


def test_apply_to_object_created_by_update_creates_before_first_apply() -> None:
    fm = deployments()
    live = stored(created_by_kubectl_create())  # stored without managedFields
    out = fm.apply(live, {"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": "nginx", "labels": {"extra": "1"}}}, "kubectl", T1)
    assert sorted(e["manager"] for e in entries(out)) == ["before-first-apply", "kubectl"]
    assert owned(out, "kubectl") == [".metadata.labels.extra"]
    assert ".spec.replicas" in owned(out, "before-first-apply", "Update")
    assert out["metadata"]["labels"] == {"app": "nginx", "extra": "1"}


def test_status_apply_only_owns_status() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "kubectl", T0))
    out = fm.apply(live, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                          "status": {"replicas": 3}}, "ctrl", T1, subresource="status")
    e = entry(out, "ctrl")
    assert (e["operation"], e["subresource"], e["fieldsV1"]) == ("Apply", "status", {"f:status": {"f:replicas": {}}})
    main = fm.apply(stored(out), {**applied_deployment(), "status": {"replicas": 7}}, "kubectl", T2)
    assert "f:status" not in entry(main, "kubectl")["fieldsV1"]


def test_set_list_union_and_atomic_list_replacement() -> None:
    fm = deployments()
    config = applied_deployment()
    config["metadata"]["finalizers"] = ["a.io/one"]
    config["spec"]["template"]["spec"]["containers"][0]["args"] = ["--a", "--b"]
    live = stored(fm.apply(None, config, "one", T0))
    other = applied_deployment()
    other["metadata"]["finalizers"] = ["b.io/two"]
    other["spec"]["template"]["spec"]["containers"][0]["args"] = ["--c"]
    with pytest.raises(ApplyConflict) as err:
        fm.apply(live, other, "two", T1)
    # the atomic list conflicts as a whole; set items never conflict
    assert err.value.conflicts == [('"one"', '.spec.template.spec.containers[name="nginx"].args')]
    out = fm.apply(live, other, "two", T1, force=True)
    assert out["metadata"]["finalizers"] == ["a.io/one", "b.io/two"]
    assert out["spec"]["template"]["spec"]["containers"][0]["args"] == ["--c"]
    assert owned(out, "two", "Apply").count('.metadata.finalizers[="b.io/two"]') == 1


def test_map_list_merge_by_keys_and_ports_default_protocol() -> None:
    pods = FieldManager(POD, "v1", "Pod", has_status=True)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80}]},
                                   {"name": "b", "image": "y"}]}}
    live = stored(pods.apply(None, pod, "one", T0))
    second = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
              "spec": {"containers": [{"name": "c", "image": "z"},
                                      {"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP",
                                                               "name": "http"}]}]}}
    out = pods.apply(live, second, "two", T1)
    containers = out["spec"]["containers"]
    assert [c["name"] for c in containers] == ["c", "a", "b"]
    assert containers[1] == {"name": "a", "image": "x",
                             "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]}
    assert '.spec.containers[name="a"].ports[containerPort=80,protocol="TCP"].name' in owned(out, "two")


def test_kubectl_server_side_upgrade_from_client_side_apply() -> None:
    fm = deployments()
    config = applied_deployment()
    last_applied = '{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":3}}'
    created = copy.deepcopy(config)
    created["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": last_applied}
    live = stored(fm.update(None, created, "kubectl-client-side-apply", T0))
    with pytest.raises(ApplyConflict):
        fm.apply(live, applied_deployment(replicas=4), "other", T1)  # only kubectl gets the upgrade path
    # replicas was client-side applied with the live value: kubectl may take it over without force
    out = fm.apply(live, applied_deployment(replicas=4), "kubectl", T1)
    assert out["spec"]["replicas"] == 4
    assert ".spec.replicas" in owned(out, "kubectl")
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].startswith(
        '{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"labels":{"app":"web"}')
    # the image was never in the last-applied configuration: still a conflict
    with pytest.raises(ApplyConflict) as err:
        fm.apply(live, applied_deployment(replicas=4, image="nginx:2"), "kubectl", T1)
    assert err.value.conflicts == [('"kubectl-client-side-apply" using apps/v1',
                                    '.spec.template.spec.containers[name="nginx"].image')]


def test_merge_and_compare_helpers() -> None:
    live = applied_deployment()
    merged = merge(DEPLOYMENT, live, {"spec": {"replicas": None, "paused": True}})
    assert "replicas" not in merged["spec"] and merged["spec"]["paused"] is True
    cmp = compare(DEPLOYMENT, live, merged)
    assert [path_string(p) for p in cmp.removed.paths()] == [".spec.replicas"]
    assert [path_string(p) for p in cmp.added.paths()] == [".spec.paused"]
    assert cmp.modified.empty()


def test_compare_skips_equal_subtrees_but_not_a_boolean_become_a_number() -> None:
    live = {"spec": {"replicas": 1, "template": {"spec": {"hostNetwork": True}}}}
    same = compare(DEPLOYMENT, live, copy.deepcopy(live))
    assert same.added.empty() and same.removed.empty() and same.modified.empty()
    # equal to Python (True == 1), yet a change of type
    changed = compare(DEPLOYMENT, live, {"spec": {"replicas": True, "template": {"spec": {"hostNetwork": 1}}}})
    assert sorted(path_string(p) for p in changed.modified.paths()) == [
        ".spec.replicas", ".spec.template.spec.hostNetwork"]
    # an integral float is the same number
    assert compare(DEPLOYMENT, live, {"spec": {"replicas": 1.0, "template": {"spec": {"hostNetwork": True}}}}) \
        .modified.empty()


def test_remembered_serializations_keep_booleans_and_numbers_apart() -> None:
    assert [serialize_pe((VALUE, v)) for v in (True, 1, 1.0, True)] == ["v:true", "v:1", "v:1", "v:true"]
    assert serialize_pe(key_element({"port": 1})) == 'k:{"port":1}'
    assert serialize_pe(key_element({"port": True})) == 'k:{"port":true}'


def test_apply_and_update_are_quick_and_apply_leaves_inputs_alone() -> None:
    fm = deployments()
    live = stored(fm.apply(None, applied_deployment(), "kubectl", T0))
    snapshot = copy.deepcopy(live)
    config = applied_deployment(replicas=4)
    config_snapshot = copy.deepcopy(config)
    start = time.perf_counter()
    for _ in range(20):
        fm.apply(live, config, "kubectl", T1)
    assert (time.perf_counter() - start) / 20 < 0.01
    assert live == snapshot and config == config_snapshot
