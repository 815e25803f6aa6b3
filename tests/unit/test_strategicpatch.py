"""Strategic merge patch: realistic kubectl-shaped patches against built-in kinds, upstream's semantics."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketkube.api.errors import StatusError
from pocketkube.apiserver.strategicpatch import PatchError, strategic_merge_patch

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"
POD = "io.k8s.api.core.v1.Pod"
SERVICE = "io.k8s.api.core.v1.Service"

Obj = dict[str, Any]


def deployment(containers: list[Obj], **spec: Any) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}},
            **spec,
        },
    }


def containers_of(obj: Obj) -> list[Obj]:
    return obj["spec"]["template"]["spec"]["containers"]


def template_patch(pod_spec: Obj) -> Obj:
    return {"spec": {"template": {"spec": pod_spec}}}


def names(items: list[Obj], key: str = "name") -> list[Any]:
    return [item[key] for item in items]


def patch_error(definition: str, original: Obj, patch: Any) -> PatchError:
    with pytest.raises(PatchError) as info:
        strategic_merge_patch(definition, original, patch)
    return info.value


# ---------------------------------------------------------------------------------------------------
# Maps


def test_maps_merge_recursively_and_null_deletes() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    original["metadata"]["annotations"] = {"keep": "1", "drop": "2"}
    patch = {"metadata": {"labels": {"tier": None, "track": "stable"}, "annotations": {"drop": None}},
             "spec": {"replicas": 5, "paused": None, "minReadySeconds": 10}}
    result = strategic_merge_patch(DEPLOYMENT, original, patch)
    assert result["metadata"]["labels"] == {"app": "web", "track": "stable"}
    assert result["metadata"]["annotations"] == {"keep": "1"}
    assert result["spec"]["replicas"] == 5
    assert result["spec"]["minReadySeconds"] == 10
    assert "paused" not in result["spec"]
    assert containers_of(result) == [{"name": "app", "image": "app:1"}]


def test_null_for_a_whole_struct_removes_it() -> None:
    original = deployment([{"name": "app", "image": "app:1"}],
                          strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}})
    result = strategic_merge_patch(DEPLOYMENT, original, {"spec": {"strategy": None}})
    assert "strategy" not in result["spec"]


def test_map_replace_directive_takes_the_patch_verbatim() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    patch = {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    result = strategic_merge_patch(DEPLOYMENT, original, patch)
    assert result["metadata"]["labels"] == {"only": "this"}


def test_map_delete_directive_empties_the_map() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    result = strategic_merge_patch(DEPLOYMENT, original, {"metadata": {"labels": {"$patch": "delete"}}})
    assert result["metadata"]["labels"] == {}


def test_merge_directive_on_a_map_is_refused_like_upstream() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    err = patch_error(DEPLOYMENT, original, {"metadata": {"labels": {"$patch": "merge", "a": "b"}}})
    assert err.code == 400
    assert err.message == "unknown patch type: merge in map: map[$patch:merge a:b]"


def test_replace_strategy_field_is_not_merged() -> None:
    # PodDisruptionBudget.spec.selector carries patchStrategy "replace".
    original = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pdb"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web", "tier": "front"}}}}
    patch = {"spec": {"selector": {"matchLabels": {"app": "api"}}}}
    result = strategic_merge_patch("io.k8s.api.policy.v1.PodDisruptionBudget", original, patch)
    assert result["spec"]["selector"] == {"matchLabels": {"app": "api"}}
    assert result["spec"]["minAvailable"] == 1


def test_int_or_string_and_scalars_are_replaced() -> None:
    original = deployment([{"name": "app", "image": "app:1"}],
                          strategy={"type": "RollingUpdate",
                                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    patch = {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}}
    result = strategic_merge_patch(DEPLOYMENT, original, patch)
    assert result["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": "25%"}


def test_value_changing_type_is_replaced() -> None:
    original = deployment([{"name": "app", "image": "app:1", "args": ["a"]}])
    result = strategic_merge_patch(DEPLOYMENT, original, template_patch(
        {"containers": [{"name": "app", "args": {"not": "a list"}}]}))
    assert containers_of(result)[0]["args"] == {"not": "a list"}


def test_added_subtree_drops_nulls_and_directive_maps_but_keeps_other_keys() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    patch = template_patch({
        "affinity": {"nodeAffinity": None, "podAffinity": {"$patch": "delete"},
                     "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                         {"weight": 1, "podAffinityTerm": {"topologyKey": "zone", "labelSelector": None}}]}},
    })
    result = strategic_merge_patch(DEPLOYMENT, original, patch)
    assert result["spec"]["template"]["spec"]["affinity"] == {
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "zone"}}]}}


def test_unknown_fields_are_added_as_is_for_the_decoder_to_judge() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    result = strategic_merge_patch(DEPLOYMENT, original, {"spec": {"bogus": {"x": 1}}})
    assert result["spec"]["bogus"] == {"x": 1}


# ---------------------------------------------------------------------------------------------------
# Lists of maps


def test_containers_merge_by_name() -> None:
    original = deployment([
        {"name": "app", "image": "app:1", "imagePullPolicy": "IfNotPresent", "resources": {}},
        {"name": "sidecar", "image": "proxy:1"},
    ])
    result = strategic_merge_patch(DEPLOYMENT, original,
                                   template_patch({"containers": [{"name": "app", "image": "app:2"}]}))
    assert containers_of(result) == [
        {"name": "app", "image": "app:2", "imagePullPolicy": "IfNotPresent", "resources": {}},
        {"name": "sidecar", "image": "proxy:1"},
    ]


def test_env_merges_by_name_and_ports_by_container_port() -> None:
    original = deployment([{
        "name": "app", "image": "app:1",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 9090, "protocol": "TCP"}],
    }])
    patch = template_patch({"containers": [{
        "name": "app",
        "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
        "ports": [{"containerPort": 9090, "name": "metrics"}],
    }]})
    container = containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))[0]
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "two"},
                                {"name": "C", "value": "3"}]
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"},
                                  {"containerPort": 9090, "protocol": "TCP", "name": "metrics"}]


def test_new_items_follow_the_patch_order_and_precede_unmentioned_live_items() -> None:
    # Upstream normalizes order: items the patch names keep the patch order; a live item not named in
    # the patch stays before them only when the live order says so for both.
    original = deployment([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}])
    patch = template_patch({"containers": [{"name": "d", "image": "d"}, {"name": "c", "image": "c"}]})
    assert names(containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))) == ["d", "c", "a", "b"]
    patch = template_patch({"containers": [{"name": "b", "image": "b2"}, {"name": "c", "image": "c"}]})
    assert names(containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))) == ["a", "b", "c"]


def test_delete_directive_removes_list_items() -> None:
    original = deployment([
        {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
        {"name": "sidecar", "image": "proxy:1"},
    ])
    patch = template_patch({"containers": [
        {"name": "sidecar", "$patch": "delete"},
        {"name": "app", "env": [{"name": "A", "$patch": "delete"}, {"name": "missing", "$patch": "delete"}]},
    ]})
    result = strategic_merge_patch(DEPLOYMENT, original, patch)
    assert containers_of(result) == [{"name": "app", "image": "app:1", "env": [{"name": "B", "value": "2"}]}]


def test_replace_directive_inside_a_list_replaces_the_whole_list() -> None:
    original = deployment([{"name": "app", "image": "app:1"}, {"name": "sidecar", "image": "proxy:1"}])
    patch = template_patch({"containers": [{"$patch": "replace"}, {"name": "solo", "image": "solo:1"}]})
    assert containers_of(strategic_merge_patch(DEPLOYMENT, original, patch)) == [
        {"name": "solo", "image": "solo:1"}]


def test_merge_directive_inside_a_list_is_refused() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    err = patch_error(DEPLOYMENT, original, template_patch({"containers": [{"$patch": "merge"}]}))
    assert err.message == "merging lists cannot yet be specified in the patch"


def test_lists_without_merge_strategy_are_replaced() -> None:
    original = deployment([{"name": "app", "image": "app:1", "args": ["--a", "--b"]}])
    original["spec"]["template"]["spec"]["tolerations"] = [{"key": "k", "operator": "Exists"}]
    patch = template_patch({"tolerations": [{"key": "other", "operator": "Exists"}],
                            "containers": [{"name": "app", "args": ["--c"]}]})
    result = strategic_merge_patch(DEPLOYMENT, original, patch)
    assert result["spec"]["template"]["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]
    assert containers_of(result)[0]["args"] == ["--c"]


def test_volume_mounts_merge_by_mount_path() -> None:
    original = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{
        "name": "app", "image": "app:1",
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/etc/cfg"}]}]}}
    patch = {"spec": {"containers": [{"name": "app", "volumeMounts": [
        {"mountPath": "/data", "readOnly": True}, {"mountPath": "/etc/cfg", "$patch": "delete"}]}]}}
    result = strategic_merge_patch(POD, original, patch)
    assert result["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/data", "readOnly": True}]


def test_service_ports_merge_by_port() -> None:
    original = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    patch = {"spec": {"ports": [{"port": 80, "targetPort": "http"}, {"name": "https", "port": 443}]}}
    result = strategic_merge_patch(SERVICE, original, patch)
    assert result["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "https", "port": 443},
    ]


def test_owner_references_merge_by_uid() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    original["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": "u1", "controller": True}]
    patch = {"metadata": {"ownerReferences": [
        {"uid": "u1", "controller": False},
        {"apiVersion": "v1", "kind": "Secret", "name": "b", "uid": "u2"}]}}
    refs = strategic_merge_patch(DEPLOYMENT, original, patch)["metadata"]["ownerReferences"]
    assert [(r["uid"], r.get("controller")) for r in refs] == [("u1", False), ("u2", None)]


def test_nested_pod_templates_merge_all_the_way_down() -> None:
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"}, "spec": {
        "schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "job", "image": "job:1", "env": [{"name": "A", "value": "1"}]}]}}}}}}
    patch = {"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "job", "env": [{"name": "B", "value": "2"}]}]}}}}}}
    result = strategic_merge_patch("io.k8s.api.batch.v1.CronJob", cronjob, patch)
    pod_spec = result["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["containers"] == [{"name": "job", "image": "job:1", "env": [
        {"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}]


def test_missing_merge_key_is_a_bad_request() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    err = patch_error(DEPLOYMENT, original, template_patch({"containers": [{"image": "nginx:1.25"}]}))
    assert isinstance(err, StatusError)
    assert (err.code, err.reason) == (400, "BadRequest")
    assert err.message == "map: map[image:nginx:1.25] does not contain declared merge key: name"


def test_error_messages_print_values_like_go() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    patch = template_patch({"containers": [{"image": "x", "env": [{"name": "A"}], "n": None, "big": 2.5e6,
                                            "small": 0.5, "ok": True}]})
    assert patch_error(DEPLOYMENT, original, patch).message == (
        "map: map[big:2.5e+06 env:[map[name:A]] image:x n:<nil> ok:true small:0.5] "
        "does not contain declared merge key: name")


# ---------------------------------------------------------------------------------------------------
# Lists of primitives and the parallel-list directives


def with_finalizers(finalizers: list[str]) -> Obj:
    obj = deployment([{"name": "app", "image": "app:1"}])
    obj["metadata"]["finalizers"] = finalizers
    return obj


def finalizers_after(original: list[str], patch: Obj) -> list[str]:
    result = strategic_merge_patch(DEPLOYMENT, with_finalizers(original), {"metadata": patch})
    return result["metadata"]["finalizers"]


def test_finalizers_merge_as_a_set() -> None:
    assert finalizers_after(["a", "b"], {"finalizers": ["b", "c"]}) == ["a", "b", "c"]
    # Values the patch adds are placed by the patch's order, ahead of live values it does not mention.
    assert finalizers_after(["a", "b"], {"finalizers": ["c"]}) == ["c", "a", "b"]
    assert finalizers_after(["a", "a", "b"], {"finalizers": ["a"]}) == ["a", "b"]


def test_delete_from_primitive_list() -> None:
    patch = {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}
    assert finalizers_after(["a", "b", "c"], patch) == ["a", "c"]
    # A deletion list for an absent field adds nothing.
    result = strategic_merge_patch(DEPLOYMENT, deployment([{"name": "app", "image": "app:1"}]),
                                   {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert "finalizers" not in result["metadata"]


def test_delete_from_primitive_list_also_applies_to_non_merging_lists() -> None:
    original = deployment([{"name": "app", "image": "app:1", "args": ["--a", "--b", "--c"]}])
    patch = template_patch({"containers": [{"name": "app", "$deleteFromPrimitiveList/args": ["--b"]}]})
    assert containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))[0]["args"] == ["--a", "--c"]


def test_finalizers_with_set_element_order_and_deletions() -> None:
    patch = {"$setElementOrder/finalizers": ["c", "a"], "finalizers": ["c"],
             "$deleteFromPrimitiveList/finalizers": ["b"]}
    assert finalizers_after(["a", "b", "x"], patch) == ["c", "a", "x"]


# ---------------------------------------------------------------------------------------------------
# $setElementOrder


def test_set_element_order_reorders_a_merged_list() -> None:
    original = deployment([{"name": "a", "image": "a"}, {"name": "b", "image": "b"},
                           {"name": "c", "image": "c"}])
    patch = template_patch({"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
                            "containers": [{"name": "a", "image": "a2"}]})
    result = containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))
    assert result == [{"name": "c", "image": "c"}, {"name": "a", "image": "a2"}, {"name": "b", "image": "b"}]


def test_set_element_order_without_a_patch_list() -> None:
    original = deployment([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}])
    patch = template_patch({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]})
    assert names(containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))) == ["b", "a"]


def test_set_element_order_keeps_server_only_items_in_place() -> None:
    # "x" was added on the server (e.g. an injected sidecar): it stays between its live neighbours.
    original = deployment([{"name": "a", "image": "a"}, {"name": "x", "image": "x"},
                           {"name": "b", "image": "b"}])
    patch = template_patch({"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                            "containers": [{"name": "c", "image": "c"}]})
    assert names(containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))) == ["a", "x", "b", "c"]
    # Best effort only: x goes before the first patch item that the live order puts after it.
    patch = template_patch({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
                            "containers": [{"name": "c", "image": "c"}]})
    assert names(containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))) == ["x", "b", "a", "c"]


def test_set_element_order_with_deletion_and_addition_around_a_server_only_item() -> None:
    # Upstream deletes in place and appends into the freed slot of the live slice it later orders by,
    # so the added item sorts after the server-only one; with no deletion it sorts before it.
    original = deployment([{"name": "a", "image": "a"}, {"name": "b", "image": "b"},
                           {"name": "x", "image": "x"}])
    patch = template_patch({"$setElementOrder/containers": [{"name": "a"}, {"name": "d"}],
                            "containers": [{"name": "d", "image": "d"}, {"name": "b", "$patch": "delete"}]})
    assert names(containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))) == ["a", "x", "d"]
    original = deployment([{"name": "a", "image": "a"}, {"name": "x", "image": "x"}])
    patch = template_patch({"$setElementOrder/containers": [{"name": "a"}, {"name": "d"}],
                            "containers": [{"name": "d", "image": "d"}]})
    assert names(containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))) == ["a", "d", "x"]


def test_set_element_order_for_a_list_the_original_lacks() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    patch = template_patch({"containers": [{
        "name": "app",
        "$setElementOrder/env": [{"name": "B"}, {"name": "A"}],
        "env": [{"name": "B", "value": "2", "valueFrom": None}, {"name": "A", "value": "1"}],
    }]})
    env = containers_of(strategic_merge_patch(DEPLOYMENT, original, patch))[0]["env"]
    # A list added through $setElementOrder loses directive maps but, as upstream, keeps its nulls.
    assert env == [{"name": "B", "value": "2", "valueFrom": None}, {"name": "A", "value": "1"}]


def test_set_element_order_must_agree_with_the_patch_list() -> None:
    original = deployment([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}])
    patch = template_patch({"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                            "containers": [{"name": "b", "image": "b2"}, {"name": "a", "image": "a2"}]})
    err = patch_error(DEPLOYMENT, original, patch)
    assert err.code == 400
    assert "doesn't match $setElementOrder list" in err.message


def test_set_element_order_on_an_unknown_field_fails_the_lookup() -> None:
    original = deployment([{"name": "a", "image": "a"}])
    err = patch_error(DEPLOYMENT, original, template_patch({"$setElementOrder/sidecars": [{"name": "a"}]}))
    assert err.message == 'unable to find api field in struct PodSpec for the json field "sidecars"'


# ---------------------------------------------------------------------------------------------------
# $retainKeys


def test_retain_keys_switches_the_deployment_strategy() -> None:
    # What `kubectl apply` sends when a manifest changes RollingUpdate to Recreate.
    original = deployment([{"name": "app", "image": "app:1"}],
                          strategy={"type": "RollingUpdate",
                                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}}}
    assert strategic_merge_patch(DEPLOYMENT, original, patch)["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_switches_a_volume_source() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    original["spec"]["template"]["spec"]["volumes"] = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "cfg", "emptyDir": {"medium": "Memory"}},
    ]
    patch = template_patch({"volumes": [
        {"name": "cfg", "$retainKeys": ["configMap", "name"], "configMap": {"name": "app-config"}}]})
    volumes = strategic_merge_patch(DEPLOYMENT, original, patch)["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "scratch", "emptyDir": {}},
                       {"name": "cfg", "configMap": {"name": "app-config"}}]


def test_retain_keys_must_list_every_patched_key() -> None:
    original = deployment([{"name": "app", "image": "app:1"}], strategy={"type": "RollingUpdate"})
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate",
                                   "rollingUpdate": {"maxSurge": 1}}}}
    err = patch_error(DEPLOYMENT, original, patch)
    assert (err.code, err.reason, err.message) == (400, "BadRequest", "invalid patch format of retainKeys")
    err = patch_error(DEPLOYMENT, original, {"spec": {"strategy": {"$retainKeys": "type"}}})
    assert err.code == 400


# ---------------------------------------------------------------------------------------------------
# What kubectl sends


def test_kubectl_apply_three_way_patch() -> None:
    # Live object: defaulted fields, a label added by someone else, an env var from the old manifest.
    live = deployment([{
        "name": "nginx", "image": "nginx:1.24", "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log", "resources": {},
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
    }], strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    live["metadata"]["labels"]["owner"] = "ops"
    live["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{old}"}
    # The manifest drops label tier and env B, adds env C and port 443, bumps the image.
    patch = {
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{new}"},
                     "labels": {"tier": None}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                "$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 443}],
                "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                "image": "nginx:1.25",
                "name": "nginx",
                "ports": [{"containerPort": 443}],
            }],
        }}},
    }
    result = strategic_merge_patch(DEPLOYMENT, live, patch)
    assert result["metadata"]["labels"] == {"app": "web", "owner": "ops"}
    assert result["metadata"]["annotations"] == {"kubectl.kubernetes.io/last-applied-configuration": "{new}"}
    assert result["spec"]["strategy"] == live["spec"]["strategy"]
    assert containers_of(result) == [{
        "name": "nginx", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log", "resources": {},
        "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}],
        "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
    }]


def test_kubectl_rollout_restart_and_cordon_patches() -> None:
    original = deployment([{"name": "app", "image": "app:1"}])
    restart = {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}}
    result = strategic_merge_patch(DEPLOYMENT, original, restart)
    assert result["spec"]["template"]["metadata"] == {
        "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.0.0.0/24"}}
    cordoned = strategic_merge_patch("io.k8s.api.core.v1.Node", node, {"spec": {"unschedulable": True}})
    assert cordoned["spec"] == {"podCIDR": "10.0.0.0/24", "unschedulable": True}


def test_inputs_are_not_mutated_so_a_patch_can_be_retried() -> None:
    original = deployment([{"name": "a", "image": "a", "env": [{"name": "X", "value": "1"}]}])
    patch = template_patch({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                            "containers": [{"name": "b", "image": "b", "resources": None},
                                           {"name": "a", "env": [{"name": "X", "$patch": "delete"}]}]})
    original_before, patch_before = copy.deepcopy(original), copy.deepcopy(patch)
    first = strategic_merge_patch(DEPLOYMENT, original, patch)
    assert (original, patch) == (original_before, patch_before)
    assert strategic_merge_patch(DEPLOYMENT, original, patch) == first
    assert containers_of(first) == [{"name": "b", "image": "b", "resources": None},
                                    {"name": "a", "image": "a", "env": []}]


# ---------------------------------------------------------------------------------------------------
# Malformed patches and upstream's type lookups


@pytest.mark.parametrize(("patch", "message"), [
    ({"metadata": {"$deleteFromPrimitiveList": ["a"]}}, "invalid patch format of primitive list"),
    ({"metadata": {"$setElementOrderX/finalizers": ["a"]}}, "invalid patch format of setElementOrder list"),
    ([{"op": "add"}], "json: cannot unmarshal array into Go value of type map[string]interface {}"),
    ("text", "json: cannot unmarshal string into Go value of type map[string]interface {}"),
])
def test_malformed_patches_are_bad_requests(patch: Any, message: str) -> None:
    err = patch_error(DEPLOYMENT, with_finalizers(["a"]), patch)
    assert (err.code, err.reason, err.message) == (400, "BadRequest", message)


def test_null_patch_changes_nothing() -> None:
    original = with_finalizers(["a"])
    assert strategic_merge_patch(DEPLOYMENT, original, None) == original


def test_set_element_order_must_be_a_list() -> None:
    err = patch_error(DEPLOYMENT, with_finalizers(["a"]), {"metadata": {"$setElementOrder/finalizers": "a"}})
    assert err.message == "expected a []interface {}, but received a string"


def test_list_of_lists_is_invalid() -> None:
    err = patch_error(DEPLOYMENT, with_finalizers([]), {"metadata": {"finalizers": [["a"]]}})
    assert (err.code, err.reason) == (422, "Invalid")
    err = patch_error(DEPLOYMENT, with_finalizers(["a"]), {"metadata": {"finalizers": [1]}})
    assert err.message == "list element types are not identical: [[a] [1]]"


def test_maps_in_a_primitive_merge_list_need_a_merge_key() -> None:
    err = patch_error(DEPLOYMENT, with_finalizers([]), {"metadata": {"finalizers": [{"a": 1}]}})
    assert err.message == "cannot merge lists without merge key for string"


def test_nested_objects_inside_a_raw_extension_cannot_merge() -> None:
    revision = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"},
                "revision": 1, "data": {"spec": {"template": {}}}}
    patched = strategic_merge_patch("io.k8s.api.apps.v1.ControllerRevision", revision,
                                    {"data": {"note": "scalars merge"}})
    assert patched["data"] == {"spec": {"template": {}}, "note": "scalars merge"}
    err = patch_error("io.k8s.api.apps.v1.ControllerRevision", revision, {"data": {"spec": {"x": 1}}})
    assert err.message == 'unable to find api field in struct RawExtension for the json field "spec"'


def test_nested_containers_inside_a_map_field_cannot_merge() -> None:
    csr = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": "c"},
           "spec": {"request": "", "signerName": "s", "extra": {"groups": ["a"]}}}
    err = patch_error("io.k8s.api.certificates.v1.CertificateSigningRequest", csr,
                      {"spec": {"extra": {"groups": ["b"]}}})
    assert err.message == "merging an object in json but data type is not struct, instead is: map"


def test_unknown_definition_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        strategic_merge_patch("io.k8s.api.apps.v1.Nope", {}, {})
