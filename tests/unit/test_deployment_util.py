"""Deployment arithmetic (hash, fenceposts, proportions, revisions, conditions) and ReplicaSet helpers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pocketkube.controllers import deployment_util as du
from pocketkube.controllers.replicaset import (
    ControllerExpectations,
    is_pod_available,
    pod_from_template,
    rank_pods_for_deletion,
    slow_start_batch,
)

Obj = dict[str, Any]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def stamp(t: datetime) -> str:
    return du.format_time(t)


def deploy(replicas: int = 10, surge: Any = "25%", unavailable: Any = "25%", kind: str = "RollingUpdate",
           **spec: Any) -> Obj:
    strategy: Obj = {"type": kind}
    if kind == "RollingUpdate":
        strategy["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"metadata": {"name": "web", "generation": 1, "uid": "d1"},
            "spec": {"replicas": replicas, "strategy": strategy, "progressDeadlineSeconds": 600, **spec,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {}}


def rs(name: str, replicas: int, created: int = 0, available: int = 0, annotations: Obj | None = None,
       image: str = "nginx") -> Obj:
    return {"metadata": {"name": name, "uid": name, "creationTimestamp": stamp(T0 + timedelta(seconds=created)),
                         "annotations": dict(annotations or {})},
            "spec": {"replicas": replicas,
                     "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}},
            "status": {"replicas": replicas, "availableReplicas": available, "readyReplicas": available}}


# --- hash ----------------------------------------------------------------------------------
def test_fnv32a_reference_vectors() -> None:
    assert du.fnv32a(b"") == 0x811C9DC5
    assert du.fnv32a(b"a") == 0xE40C292C
    assert du.fnv32a(b"foobar") == 0xBF9CF968
    assert du.fnv32a(b"bar", du.fnv32a(b"foo")) == du.fnv32a(b"foobar")  # streaming, as hash.Hash.Write


def test_safe_encode_string_uses_the_vowel_free_alphabet() -> None:
    assert du.safe_encode_string("0123456789") == "456789bcdf"
    assert du.safe_encode_string("abc") == "vwx"
    assert all(c in "bcdfghjklmnpqrstvwxz2456789" for c in du.safe_encode_string("anything at all"))


def test_compute_hash_is_stable_and_sensitive() -> None:
    template = deploy()["spec"]["template"]
    h = du.compute_hash(template, None)
    assert h == du.compute_hash({"spec": template["spec"], "metadata": template["metadata"]}, None)
    assert 1 <= len(h) <= 10 and all(c in "456789bcdf" for c in h)  # a uint32 in decimal, encoded
    other = {**template, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}
    assert du.compute_hash(other, None) != h
    # A collision count changes the name, as upstream's collision avoidance needs.
    assert len({h, du.compute_hash(template, 0), du.compute_hash(template, 1)}) == 3
    expected = du.fnv32a(b"\x01\0\0\0\0\0\0\0", du.fnv32a(
        b'{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"image":"nginx","name":"c"}]}}'))
    assert du.compute_hash(template, 1) == du.safe_encode_string(str(expected))


# --- fenceposts ----------------------------------------------------------------------------
@pytest.mark.parametrize(("surge", "unavailable", "desired", "expected"), [
    ("25%", "25%", 10, (3, 2)),      # surge rounds up, unavailable rounds down
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 1, (1, 0)),
    ("0%", "25%", 3, (0, 1)),        # both resolve to zero: unavailable becomes 1
    (0, "10%", 5, (0, 1)),
    ("50%", "50%", 3, (2, 1)),
    (2, 1, 10, (2, 1)),
    (None, None, 4, (0, 1)),
    ("100%", "0%", 7, (7, 0)),
])
def test_resolve_fenceposts(surge: Any, unavailable: Any, desired: int, expected: tuple[int, int]) -> None:
    assert du.resolve_fenceposts(surge, unavailable, desired) == expected


def test_scaled_value_rejects_non_percent_strings() -> None:
    with pytest.raises(ValueError):
        du.scaled_value("5", 10, True)
    assert du.scaled_value("33%", 3, True) == 1 and du.scaled_value("33%", 3, False) == 0


def test_max_surge_and_max_unavailable() -> None:
    assert (du.max_surge(deploy(10)), du.max_unavailable(deploy(10))) == (3, 2)
    assert du.max_unavailable(deploy(0)) == 0                       # nothing desired: nothing may go
    assert du.max_unavailable(deploy(2, surge=0, unavailable=5)) == 2  # capped at replicas
    assert (du.max_surge(deploy(kind="Recreate")), du.max_unavailable(deploy(kind="Recreate"))) == (0, 0)


def test_round_to_int32_rounds_half_away_from_zero() -> None:
    assert [du.round_to_int32(x) for x in (2.5, 2.4, -2.5, -2.4, 0.5)] == [3, 2, -3, -2, 1]


# --- replica set arithmetic --------------------------------------------------------------------
def test_new_rs_new_replicas_respects_surge() -> None:
    d = deploy(10)  # surge 3
    new = rs("new", 0)
    assert du.new_rs_new_replicas(d, [rs("old", 10), new], new) == 3
    assert du.new_rs_new_replicas(d, [rs("old", 13), new], new) == 0
    new = rs("new", 8)
    assert du.new_rs_new_replicas(d, [rs("old", 3), new], new) == 10  # never past desired
    assert du.new_rs_new_replicas(deploy(10, kind="Recreate"), [new], new) == 10


def test_proportional_shares() -> None:
    d = deploy(8, surge=2, unavailable=0)
    annotations = {du.MAX_REPLICAS_ANNOTATION: "6"}
    old, new = rs("old", 4, annotations=annotations), rs("new", 2, annotations=annotations)
    first = du.replica_set_proportion(old, d, 4, 0)
    second = du.replica_set_proportion(new, d, 4, first)
    assert (first, second) == (3, 1)  # 4*10/6 = 6.67 -> 7; 2*10/6 = 3.33 -> 3
    assert du.replica_set_proportion(old, deploy(0), -4, 0) == -4
    assert du.replica_set_proportion(rs("empty", 0), d, 4, 0) == 0


def test_find_new_old_and_active_or_latest() -> None:
    d = deploy()
    old, new = rs("old", 3, created=0, image="nginx:0"), rs("new", 0, created=5)
    assert du.find_new_replica_set(d, [old, new]) is new  # equal templates, ignoring pod-template-hash
    assert du.find_old_replica_sets(d, [old, new]) == ([old], [old])
    assert du.find_active_or_latest(new, [old]) is old
    assert du.find_active_or_latest(None, [rs("a", 0, 0), rs("b", 0, 9)])["metadata"]["name"] == "b"
    assert du.find_active_or_latest(rs("n", 1), [old]) is None


def test_sorting_helpers() -> None:
    a, b, c = rs("a", 3, created=0), rs("b", 3, created=5), rs("c", 5, created=9)
    assert [x["metadata"]["name"] for x in du.by_size([a, b, c], newer_first=True)] == ["c", "b", "a"]
    assert [x["metadata"]["name"] for x in du.by_size([a, b, c], newer_first=False)] == ["c", "a", "b"]
    r1 = rs("r1", 0, created=9, annotations={du.REVISION_ANNOTATION: "1"})
    r2 = rs("r2", 0, created=0, annotations={du.REVISION_ANNOTATION: "2"})
    assert du.by_revision([r2, r1]) == [r1, r2] and du.max_revision([r1, r2]) == 2


def test_is_saturated() -> None:
    d = deploy(3)
    full = rs("n", 3, available=3, annotations={du.DESIRED_REPLICAS_ANNOTATION: "3"})
    assert du.is_saturated(d, full)
    assert not du.is_saturated(d, rs("n", 3, available=2, annotations={du.DESIRED_REPLICAS_ANNOTATION: "3"}))
    assert not du.is_saturated(d, rs("n", 3, available=3))


# --- annotations ---------------------------------------------------------------------------------
def test_new_replica_set_annotations_for_a_new_one() -> None:
    d = deploy(10)
    d["metadata"]["annotations"] = {"kubernetes.io/change-cause": "v2", du.REVISION_ANNOTATION: "7",
                                    du.LAST_APPLIED_ANNOTATION: "{}"}
    new = {"metadata": {}}
    assert du.set_new_replica_set_annotations(d, new, "3", exists=False)
    assert new["metadata"]["annotations"] == {"kubernetes.io/change-cause": "v2", du.REVISION_ANNOTATION: "3",
                                              du.DESIRED_REPLICAS_ANNOTATION: "10", du.MAX_REPLICAS_ANNOTATION: "13"}
    assert not du.set_new_replica_set_annotations(d, new, "3", exists=True)


def test_rollback_keeps_revision_history() -> None:
    old = {"metadata": {"annotations": {du.REVISION_ANNOTATION: "2"}}}
    du.set_new_replica_set_annotations(deploy(), old, "4", exists=True)
    assert old["metadata"]["annotations"][du.REVISION_HISTORY_ANNOTATION] == "2"
    du.set_new_replica_set_annotations(deploy(), old, "6", exists=True)
    assert old["metadata"]["annotations"][du.REVISION_ANNOTATION] == "6"
    assert old["metadata"]["annotations"][du.REVISION_HISTORY_ANNOTATION] == "2,4"
    # A lower revision never replaces a higher one.
    assert not du.set_new_replica_set_annotations(deploy(), old, "5", exists=True)
    # The history is trimmed from the oldest end to fit the character limit.
    du.set_new_replica_set_annotations(deploy(), old, "7", exists=True, history_limit_chars=3)
    assert old["metadata"]["annotations"][du.REVISION_HISTORY_ANNOTATION] == "4,6"


# --- conditions and status -----------------------------------------------------------------------
def test_set_condition_keeps_transition_time_for_same_status() -> None:
    status: Obj = {}
    first = du.new_condition("Progressing", "True", du.NEW_RS_REASON, "a")
    first["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    du.set_condition(status, first)
    du.set_condition(status, du.new_condition("Progressing", "True", du.NEW_RS_REASON, "ignored"))
    assert status["conditions"][0]["message"] == "a"  # same status and reason: no change
    du.set_condition(status, du.new_condition("Progressing", "True", du.NEW_RS_AVAILABLE_REASON, "b"))
    assert status["conditions"][0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    du.set_condition(status, du.new_condition("Progressing", "False", du.TIMED_OUT_REASON, "c"))
    assert status["conditions"][0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def test_deployment_timed_out() -> None:
    d = deploy(2, progressDeadlineSeconds=10)
    status: Obj = {"conditions": [{"type": "Progressing", "status": "True", "reason": du.RS_UPDATED_REASON,
                                   "lastUpdateTime": stamp(T0)}]}
    assert not du.deployment_timed_out(d, status, T0 + timedelta(seconds=10))
    assert du.deployment_timed_out(d, status, T0 + timedelta(seconds=11))
    status["conditions"][0]["reason"] = du.NEW_RS_AVAILABLE_REASON
    assert not du.deployment_timed_out(d, status, T0 + timedelta(days=1))
    d["spec"]["progressDeadlineSeconds"] = du.MAX_INT32
    assert not du.has_progress_deadline(d)


def test_calculate_status_counts_and_availability() -> None:
    d = deploy(4, surge=1, unavailable=1)
    old, new = rs("old", 3, available=3), rs("new", 2, available=0)
    status = du.calculate_status([old, new], new, d)
    assert {k: status[k] for k in du.STATUS_COUNTS} == {
        "observedGeneration": 1, "replicas": 5, "updatedReplicas": 2, "readyReplicas": 3,
        "availableReplicas": 3, "unavailableReplicas": 2}
    assert du.get_condition(status, "Available")["reason"] == du.MIN_AVAILABLE_REASON  # 3 >= 4 - 1
    status = du.calculate_status([rs("old", 4, available=2)], None, d)
    assert du.get_condition(status, "Available")["reason"] == du.MIN_UNAVAILABLE_REASON
    assert du.wire_status({**status, "updatedReplicas": 0}).get("updatedReplicas") is None


def test_terminating_replicas_are_summed_only_when_every_replica_set_reports_them() -> None:
    a, b = rs("a", 1), rs("b", 1)
    assert du.terminating_replica_count([a, None, b]) is None
    a["status"]["terminatingReplicas"], b["status"]["terminatingReplicas"] = 2, 0
    assert du.terminating_replica_count([a, None, b]) == 2
    status = du.calculate_status([a, b], b, deploy(2))
    assert status["terminatingReplicas"] == 2 and du.wire_status(status)["terminatingReplicas"] == 2
    b["status"]["terminatingReplicas"] = a["status"]["terminatingReplicas"] = 0
    assert du.wire_status(du.calculate_status([a, b], b, deploy(2)))["terminatingReplicas"] == 0


def test_deployment_complete_and_progressing() -> None:
    d = deploy(2)
    d["status"] = {"replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}
    assert du.deployment_progressing(d, {"replicas": 3, "updatedReplicas": 2, "availableReplicas": 2})
    assert not du.deployment_progressing(d, dict(d["status"]))
    assert du.deployment_complete(d, {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                                      "observedGeneration": 1})


# --- ReplicaSet helpers ----------------------------------------------------------------------------
def pod(name: str, node: str = "", phase: str = "Pending", ready_since: datetime | None = None,
        restarts: int = 0, created: datetime = T0, cost: int | None = None) -> Obj:
    status: Obj = {"phase": phase, "containerStatuses": [{"name": "c", "restartCount": restarts}]}
    if ready_since is not None:
        status["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": stamp(ready_since)}]
    meta: Obj = {"name": name, "uid": name, "creationTimestamp": stamp(created)}
    if cost is not None:
        meta["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": str(cost)}
    return {"metadata": meta, "spec": {"nodeName": node}, "status": status}


def test_deletion_ranking_follows_active_pods_order() -> None:
    now = T0 + timedelta(hours=10)
    ready_old = pod("ready-old", "n1", "Running", ready_since=T0)
    ready_new = pod("ready-new", "n2", "Running", ready_since=now - timedelta(seconds=5))
    restarted = pod("restarted", "n3", "Running", ready_since=T0, restarts=4)
    costly = pod("costly", "n4", "Running", ready_since=now - timedelta(seconds=5), cost=100)
    not_ready = pod("not-ready", "n5", "Running")
    unknown = pod("unknown", "n6", "Unknown")
    pending = pod("pending", "n7")
    unassigned = pod("unassigned")
    pods = [ready_old, costly, restarted, ready_new, not_ready, unknown, pending, unassigned]
    ranked = [p["metadata"]["name"] for p in rank_pods_for_deletion(pods, pods, now)]
    assert ranked == ["unassigned", "pending", "unknown", "not-ready", "ready-new", "restarted", "ready-old",
                      "costly"]


def test_deletion_ranking_prefers_doubled_up_nodes_and_newer_pods() -> None:
    now = T0 + timedelta(hours=10)
    lonely = pod("lonely", "n1", "Running", ready_since=T0)
    crowded = pod("crowded", "n2", "Running", ready_since=T0)
    sibling = pod("sibling", "n2", "Running", ready_since=T0)
    assert rank_pods_for_deletion([lonely, crowded], [lonely, crowded, sibling], now)[0] is crowded
    older = pod("older", "n1", created=T0)
    newer = pod("newer", "n2", created=T0 + timedelta(hours=9))
    assert rank_pods_for_deletion([older, newer], [], now)[0] is newer


def test_pod_availability_uses_min_ready_seconds() -> None:
    p = pod("p", "n", "Running", ready_since=T0)
    assert is_pod_available(p, 0, T0)
    assert not is_pod_available(p, 5, T0 + timedelta(seconds=5))
    assert is_pod_available(p, 5, T0 + timedelta(seconds=6))
    assert not is_pod_available(pod("q"), 0, T0)


def test_pod_from_template() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "ns",
                                                                        "uid": "u"}}
    template = {"metadata": {"labels": {"a": "b"}, "annotations": {"x": "y"}, "name": "ignored"},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}
    p = pod_from_template(template, owner)
    assert p["metadata"] == {"generateName": "web-", "namespace": "ns", "labels": {"a": "b"},
                             "annotations": {"x": "y"}, "ownerReferences": [
                                 {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u",
                                  "controller": True, "blockOwnerDeletion": True}]}
    p["spec"]["containers"][0]["image"] = "changed"
    assert template["spec"]["containers"][0]["image"] == "i"  # a copy, never the cached template


def test_expectations() -> None:
    exp = ControllerExpectations(ttl=0.05)
    assert exp.satisfied("ns/rs")
    exp.expect_creations("ns/rs", 2)
    exp.creation_observed("ns/rs")
    assert not exp.satisfied("ns/rs")
    exp.creation_observed("ns/rs")
    assert exp.satisfied("ns/rs")
    exp.expect_deletions("ns/rs", ["ns/a", "ns/b"])
    exp.deletion_observed("ns/rs", "ns/a")
    exp.deletion_observed("ns/rs", "ns/a")  # the same pod twice counts once
    assert not exp.satisfied("ns/rs")
    time.sleep(0.06)
    assert exp.satisfied("ns/rs")  # expired expectations never wedge a controller


async def test_slow_start_batches_double_and_stop_at_failure() -> None:
    calls: list[int] = []

    async def ok(i: int) -> None:
        calls.append(i)

    assert await slow_start_batch(10, 1, ok) == (10, None)
    assert calls == list(range(10))  # each index once, batch after batch
    attempts = 0

    async def fails_from_fourth(_: int) -> None:
        nonlocal attempts
        attempts += 1
        if attempts >= 4:
            raise RuntimeError("quota")

    successes, error = await slow_start_batch(20, 1, fails_from_fourth)
    # Batches 1, 2 succeed; the batch of 4 has failures, so nothing after it runs.
    assert successes == 3 and isinstance(error, RuntimeError) and attempts == 7
    steps: list[str] = []

    async def one_step(_: int) -> None:
        steps.append("start")
        await asyncio.sleep(0)  # a batch's calls all start before any of them ends
        steps.append("end")

    assert await slow_start_batch(12, 1, one_step, max_batch=3) == (12, None)
    batch_sizes = [len(run) for run in "".join(step[0] for step in steps).split("e") if run]
    assert batch_sizes == [1, 2, 3, 3, 3]  # doubling, capped (StatefulSet's MaxBatchSize)
