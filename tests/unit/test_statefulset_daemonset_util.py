"""Pure helpers of the StatefulSet and DaemonSet controllers: identity, revisions, claim retention,
node eligibility, tolerations and rolling-update arithmetic."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.controllers import daemonset as dsu
from pocketkube.controllers import history
from pocketkube.controllers import statefulset as ssu

Obj = dict[str, Any]


def sts(replicas: int = 3, **spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "ns", "uid": "set-uid"},
            "spec": {"replicas": replicas, "serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx:1"}],
                                           "volumes": [{"name": "tmp", "emptyDir": {}}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                                               "spec": {"accessModes": ["ReadWriteOnce"],
                                                        "resources": {"requests": {"storage": "1Gi"}}}}],
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                     **spec}}


# --- StatefulSet ---------------------------------------------------------------------------------
def test_names_and_ordinals() -> None:
    assert ssu.parent_and_ordinal("web-12") == ("web", 12)
    assert ssu.parent_and_ordinal("my-app-0") == ("my-app", 0)
    assert ssu.parent_and_ordinal("web") == ("", -1)
    assert ssu.parent_and_ordinal("web-99999999999") == ("web", -1)  # not an int32
    s = sts()
    assert ssu.claim_name(s, s["spec"]["volumeClaimTemplates"][0], 2) == "data-web-2"
    assert (ssu.start_ordinal(s), ssu.end_ordinal(s)) == (0, 2)
    shifted = sts(ordinals={"start": 5})
    assert (ssu.start_ordinal(shifted), ssu.end_ordinal(shifted)) == (5, 7)
    assert ssu.in_ordinal_range({"metadata": {"name": "web-5"}}, shifted)
    assert not ssu.in_ordinal_range({"metadata": {"name": "web-8"}}, shifted)


def test_new_pod_identity_storage_and_claims() -> None:
    s = sts()
    pod = ssu.new_stateful_pod(s, 1)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "web-1" and meta["generateName"] == "web-" and meta["namespace"] == "ns"
    assert meta["labels"] == {"app": "web", "statefulset.kubernetes.io/pod-name": "web-1",
                              "apps.kubernetes.io/pod-index": "1"}
    assert meta["ownerReferences"][0]["uid"] == "set-uid" and meta["ownerReferences"][0]["controller"]
    assert (spec["hostname"], spec["subdomain"]) == ("web-1", "nginx")
    assert spec["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1"}},
                               {"name": "tmp", "emptyDir": {}}]
    assert ssu.identity_matches(s, pod) and ssu.storage_matches(s, pod)
    del meta["labels"]["statefulset.kubernetes.io/pod-name"]
    assert not ssu.identity_matches(s, pod)
    spec["volumes"][0]["persistentVolumeClaim"]["claimName"] = "other"
    assert not ssu.storage_matches(s, pod)
    claim = ssu.claims_for(s, 1)["data"]
    assert claim["metadata"] == {"name": "data-web-1", "namespace": "ns", "labels": {"tier": "db", "app": "web"}}
    assert claim["spec"]["resources"] == {"requests": {"storage": "1Gi"}}


def test_versioned_pods_follow_the_partition() -> None:
    current = sts(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}})
    update = ssu.apply_revision(current, {"data": {"spec": {"template": {
        "$patch": "replace", "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}}})
    below = ssu.new_versioned_pod(current, update, "web-old", "web-new", 1)
    above = ssu.new_versioned_pod(current, update, "web-old", "web-new", 2)
    assert below["metadata"]["labels"]["controller-revision-hash"] == "web-old"
    assert below["spec"]["containers"][0]["image"] == "nginx:1"
    assert above["metadata"]["labels"]["controller-revision-hash"] == "web-new"
    assert above["spec"]["containers"][0]["image"] == "nginx:2"


def test_revision_hashing_naming_and_ordering() -> None:
    assert history.fnv32(b"") == 0x811C9DC5 and history.fnv32(b"a") == 0x050C5D7E  # FNV-1 test vectors
    s = sts()
    rev = ssu.new_revision(s, 3, 0)
    hash_ = rev["metadata"]["labels"]["controller.kubernetes.io/hash"]
    assert rev["metadata"]["name"] == f"web-{hash_}" and rev["revision"] == 3
    assert rev["metadata"]["labels"]["app"] == "web"
    assert rev["data"]["spec"]["template"]["$patch"] == "replace"
    assert history.hash_controller_revision(rev["data"], 1) != hash_
    assert history.hash_controller_revision(rev["data"], 0) == hash_
    assert set(hash_) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert history.controller_revision_name("x" * 300, "h") == "x" * 223 + "-h"
    assert ssu.apply_revision(sts(), rev)["spec"]["template"] == s["spec"]["template"]
    other = ssu.new_revision(sts(template={"metadata": {"labels": {"app": "web"}}, "spec": {}}), 1, 0)
    assert history.equal_revision(rev, ssu.new_revision(s, 9, 0)) and not history.equal_revision(rev, other)
    revs = [{"metadata": {"name": n, "creationTimestamp": "2024-01-01T00:00:00Z"}, "revision": r}
            for n, r in (("c", 2), ("a", 1), ("b", 2))]
    assert [r["metadata"]["name"] for r in history.sort_revisions(revs)] == ["a", "b", "c"]
    assert history.next_revision(history.sort_revisions(revs)) == 3 and history.next_revision([]) == 1


def _claim(*refs: Obj) -> Obj:
    return {"metadata": {"name": "data-web-1", "ownerReferences": list(refs)}}


SET_REF = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "set-uid", "controller": True,
           "blockOwnerDeletion": True}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "uid": "pod-uid"}}
POD_REF = {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": "pod-uid", "controller": True,
           "blockOwnerDeletion": True}


@pytest.mark.parametrize(("when_scaled", "when_deleted", "replicas", "expected"), [
    ("Retain", "Retain", 3, []),
    ("Retain", "Delete", 3, [SET_REF]),
    ("Retain", "Delete", 1, [SET_REF]),
    ("Delete", "Retain", 3, []),
    ("Delete", "Retain", 1, [POD_REF]),
    ("Delete", "Delete", 3, [SET_REF]),
    ("Delete", "Delete", 1, [POD_REF]),
])
def test_claim_retention_owner_references(when_scaled: str, when_deleted: str, replicas: int,
                                          expected: list[Obj]) -> None:
    s = sts(replicas, persistentVolumeClaimRetentionPolicy={"whenScaled": when_scaled,
                                                            "whenDeleted": when_deleted})
    for start in ([], [SET_REF], [POD_REF], [SET_REF, POD_REF], [{**SET_REF, "controller": False}]):
        claim = _claim(*start)
        changed = ssu.update_claim_owner_refs(claim, s, POD)
        assert claim["metadata"]["ownerReferences"] == expected
        assert changed == (start != expected)
        assert ssu.claim_owner_up_to_date(claim, s, POD)
        assert ssu.claim_owner_up_to_date(_claim(*start), s, POD) == (start == expected)


def test_claims_with_a_foreign_controller_are_left_alone() -> None:
    foreign = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "other", "controller": True}
    s = sts(1, persistentVolumeClaimRetentionPolicy={"whenScaled": "Delete", "whenDeleted": "Delete"})
    claim = _claim(foreign, SET_REF)
    assert not ssu.claim_owner_up_to_date(claim, s, POD)
    assert ssu.update_claim_owner_refs(claim, s, POD)
    assert claim["metadata"]["ownerReferences"] == [foreign]
    assert ssu.claim_owner_up_to_date(claim, s, POD)
    assert ssu.has_stale_owner_ref(_claim({**POD_REF, "uid": "old"}), POD)
    assert not ssu.has_stale_owner_ref(_claim(POD_REF), POD)


def test_max_unavailable_and_status_rules() -> None:
    assert ssu.max_unavailable(sts(), 10) == 1
    for value, want in ((2, 2), ("50%", 5), ("5%", 1), ("0%", 1)):
        s = sts(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 0, "maxUnavailable": value}})
        assert ssu.max_unavailable(s, 10) == want
    status = {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
              "currentReplicas": 1, "updatedReplicas": 3, "currentRevision": "a", "updateRevision": "b"}
    ssu.complete_rolling_update(sts(), status)
    assert (status["currentReplicas"], status["currentRevision"]) == (3, "b")
    s = sts()
    s["status"] = {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                   "currentReplicas": 3, "updatedReplicas": 3, "currentRevision": "b", "updateRevision": "b"}
    assert not ssu.inconsistent_status(s, status)
    assert ssu.inconsistent_status(s, {**status, "readyReplicas": 2})
    wire = ssu.wire_status({**status, "readyReplicas": 0, "availableReplicas": 0, "collisionCount": 0}, {})
    assert wire["availableReplicas"] == 0 and wire["collisionCount"] == 0 and "readyReplicas" not in wire


def _pod(name: str, phase: str = "Running", ready: bool = True, revision: str = "a", **meta: Any) -> Obj:
    return {"metadata": {"name": name, "labels": {"controller-revision-hash": revision}, **meta},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_replica_status_counts() -> None:
    pods = [_pod("web-0"), _pod("web-1", revision="b"), _pod("web-2", ready=False, revision="b"),
            _pod("web-3", deletionTimestamp="2024-01-01T00:00:00Z"), None,
            {"metadata": {"name": "web-4", "labels": {}}}]
    counts = ssu.compute_replica_status([pods], 0, "a", "b")
    assert counts == {"replicas": 4, "readyReplicas": 3, "availableReplicas": 3, "currentReplicas": 1,
                      "updatedReplicas": 2}
    assert ssu.is_unavailable(pods[3], 0) and ssu.is_unavailable(pods[2], 0) and not ssu.is_unavailable(pods[0], 0)


# --- DaemonSet -------------------------------------------------------------------------------------
def ds(**pod_spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "ns",
                                                                       "uid": "ds-uid"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                     "template": {"metadata": {"labels": {"app": "a"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}], **pod_spec}}}}


def node(name: str = "n1", labels: dict[str, str] | None = None, taints: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []}}


def test_default_tolerations() -> None:
    spec: Obj = {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                  "effect": "NoExecute", "tolerationSeconds": 30}]}
    dsu.add_daemon_tolerations(spec)
    keys = [(t["key"], t["effect"]) for t in spec["tolerations"]]
    assert keys == [("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
                    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                    ("node.kubernetes.io/unschedulable", "NoSchedule")]
    assert "tolerationSeconds" not in spec["tolerations"][0]  # replaced by the infinite one
    host: Obj = {"hostNetwork": True}
    dsu.add_daemon_tolerations(host)
    assert host["tolerations"][-1]["key"] == "node.kubernetes.io/network-unavailable"
    before = list(host["tolerations"])
    dsu.add_daemon_tolerations(host)
    assert host["tolerations"] == before


def test_node_eligibility() -> None:
    assert dsu.node_should_run_daemon_pod(node(), ds()) == (True, True)
    assert dsu.node_should_run_daemon_pod(node(), ds(nodeSelector={"disk": "ssd"})) == (False, False)
    assert dsu.node_should_run_daemon_pod(node(labels={"disk": "ssd"}), ds(nodeSelector={"disk": "ssd"})) == (
        True, True)
    assert dsu.node_should_run_daemon_pod(node("n1"), ds(nodeName="n2")) == (False, False)
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]}]}}}
    assert dsu.node_should_run_daemon_pod(node(labels={"zone": "a"}), ds(affinity=affinity))[0]
    assert dsu.node_should_run_daemon_pod(node("n9"), ds(affinity=affinity))[0]
    assert not dsu.node_should_run_daemon_pod(node("n1", {"zone": "b"}), ds(affinity=affinity))[0]
    no_schedule = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]
    no_execute = [{"key": "dedicated", "value": "db", "effect": "NoExecute"}]
    assert dsu.node_should_run_daemon_pod(node(taints=no_schedule), ds()) == (False, True)
    assert dsu.node_should_run_daemon_pod(node(taints=no_execute), ds()) == (False, False)
    tolerant = ds(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db"}])
    assert dsu.node_should_run_daemon_pod(node(taints=no_execute), tolerant) == (True, True)
    prefer = [{"key": "x", "effect": "PreferNoSchedule"}]
    assert dsu.node_should_run_daemon_pod(node(taints=prefer), ds()) == (True, True)
    for key, effect in (("node.kubernetes.io/unschedulable", "NoSchedule"),
                        ("node.kubernetes.io/not-ready", "NoExecute")):
        assert dsu.node_should_run_daemon_pod(node(taints=[{"key": key, "effect": effect}]), ds())[0]
    network = [{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]
    assert not dsu.node_should_run_daemon_pod(node(taints=network), ds())[0]
    assert dsu.node_should_run_daemon_pod(node(taints=network), ds(hostNetwork=True))[0]


def test_node_name_affinity_and_target_node() -> None:
    preferred = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}]}
    affinity = dsu.replace_node_name_affinity({"nodeAffinity": {
        **preferred, "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]}},
        "podAntiAffinity": {}}, "n1")
    assert affinity == {"podAntiAffinity": {}, "nodeAffinity": {**preferred,
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}
    assert dsu.target_node_name({"spec": {"affinity": affinity}}) == "n1"
    assert dsu.target_node_name({"spec": {"nodeName": "n2", "affinity": affinity}}) == "n2"
    assert dsu.target_node_name({"spec": {}}) is None


def test_templates_revisions_and_counts() -> None:
    d = ds()
    d["metadata"]["annotations"] = {"deprecated.daemonset.template.generation": "4"}
    template = dsu.create_pod_template(d["spec"]["template"], dsu.template_generation(d), "h1")
    assert template["metadata"]["labels"] == {"app": "a", "pod-template-generation": "4",
                                              "controller-revision-hash": "h1"}
    assert len(template["spec"]["tolerations"]) == 6
    pod = {"metadata": {"labels": {"controller-revision-hash": "h0", "pod-template-generation": "4"}}}
    assert dsu.is_pod_updated(pod, "h1", 4) and not dsu.is_pod_updated(pod, "h1", None)
    assert dsu.history_matches(d, {"data": dsu.get_patch(d)})
    rolling = ds()
    rolling["spec"]["updateStrategy"] = {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": "25%"}}
    assert dsu.unavailable_count(rolling, 15) == 2 and dsu.surge_count(rolling, 15) == 4  # rounded up
    assert dsu.allows_surge(rolling)
    rolling["spec"]["updateStrategy"] = {"type": "OnDelete"}
    assert dsu.unavailable_count(rolling, 15) == 0 and not dsu.allows_surge(rolling)


def test_pods_on_a_node() -> None:
    def pod(name: str, created: str, hash_: str, node: str = "n1", **meta: Any) -> Obj:
        return {"metadata": {"name": name, "creationTimestamp": created,
                             "labels": {"controller-revision-hash": hash_}, **meta}, "spec": {"nodeName": node}}
    old = pod("a", "2024-01-01T00:00:02Z", "h0")
    new = pod("b", "2024-01-01T00:00:01Z", "h1")
    pending = pod("c", "2024-01-01T00:00:00Z", "h1", node="")
    assert [p["metadata"]["name"] for p in dsu.by_creation_and_phase([old, pending, new])] == ["b", "a", "c"]
    assert dsu.find_updated_pods_on_node([old, new], "h1", None) == (new, old, True)
    assert dsu.find_updated_pods_on_node([new, pending], "h1", None) == (None, None, False)
    gone = pod("d", "2024-01-01T00:00:00Z", "h1", deletionTimestamp="2024-01-01T00:00:03Z")
    assert dsu.find_updated_pods_on_node([gone, old], "h1", None) == (None, old, True)
