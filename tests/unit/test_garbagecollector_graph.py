"""The garbage collector's ownership graph: virtual owners, transitions, and what gets queued when."""

from __future__ import annotations

from typing import Any

from pocketkube.controllers.garbagecollector import (
    AbsentOwnerCache,
    Graph,
    Identity,
    Node,
    alternate_owner_identity,
    deletion_starts_with,
    partition_dependents,
)

Obj = dict[str, Any]


class Recorder:
    def __init__(self) -> None:
        self.graph = Graph(lambda n: self.deletes.append(n.identity.uid),
                           lambda n: self.orphans.append(n.identity.uid),
                           lambda n, uid: self.invalid.append((n.identity.uid, uid)))
        self.deletes: list[str] = []
        self.orphans: list[str] = []
        self.invalid: list[tuple[str, str]] = []


def cm(name: str, uid: str, namespace: str = "ns") -> Identity:
    return Identity("v1", "ConfigMap", name, uid, namespace)


def ref(ident: Identity, block: bool = False) -> Obj:
    out: Obj = {"apiVersion": ident.api_version, "kind": ident.kind, "name": ident.name, "uid": ident.uid}
    if block:
        out["blockOwnerDeletion"] = True
    return out


def meta(*owners: Obj, deleting: bool = False, finalizers: tuple[str, ...] = ()) -> Obj:
    out: Obj = {"ownerReferences": list(owners), "finalizers": list(finalizers)}
    if deleting:
        out["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return out


def test_unseen_owner_becomes_a_virtual_node_queued_for_verification() -> None:
    r = Recorder()
    owner, dep = cm("owner", "u-owner"), cm("dep", "u-dep")
    r.graph.observe(dep, meta(ref(owner)))
    node = r.graph.nodes["u-owner"]
    assert node.virtual and not node.observed
    assert node.dependents == {r.graph.nodes["u-dep"]}
    assert r.deletes == ["u-owner"]

    # The owner shows up in its informer: the same node, now observed, with the dependent kept.
    r.graph.observe(owner, meta())
    assert r.graph.nodes["u-owner"] is node and node.observed and not node.virtual
    assert len(node.dependents) == 1


def test_deleting_an_owner_queues_its_dependents_and_remembers_it_absent() -> None:
    r = Recorder()
    owner = cm("owner", "u-owner")
    r.graph.observe(owner, meta())
    r.graph.observe(cm("a", "u-a"), meta(ref(owner)))
    r.graph.observe(cm("b", "u-b"), meta(ref(owner)))
    r.deletes.clear()
    r.graph.observe_deleted(owner)
    assert "u-owner" not in r.graph.nodes
    assert sorted(r.deletes) == ["u-a", "u-b"]
    assert owner in r.graph.absent


def test_virtual_delete_removes_an_unverified_owner() -> None:
    r = Recorder()
    owner = cm("owner", "u-owner")
    r.graph.observe(cm("a", "u-a"), meta(ref(owner)))
    r.deletes.clear()
    r.graph.virtual_delete(owner)
    assert "u-owner" not in r.graph.nodes
    assert r.deletes == ["u-a"]


def test_virtual_delete_under_other_coordinates_keeps_an_observed_node() -> None:
    r = Recorder()
    owner = cm("owner", "u-owner")
    r.graph.observe(owner, meta())
    wrong = Identity("v1", "Secret", "owner", "u-owner", "ns")
    r.graph.observe(cm("a", "u-a"), meta(ref(wrong)))
    r.deletes.clear()
    r.graph.virtual_delete(wrong)
    assert "u-owner" in r.graph.nodes
    assert r.deletes == ["u-a"]  # the dependent naming the absent coordinates is looked at
    assert wrong in r.graph.absent


def test_foreground_deletion_marks_the_owner_and_queues_dependents_then_owner() -> None:
    r = Recorder()
    owner = cm("owner", "u-owner")
    r.graph.observe(owner, meta())
    r.graph.observe(cm("a", "u-a"), meta(ref(owner, block=True)))
    r.deletes.clear()
    r.graph.observe(owner, meta(deleting=True, finalizers=("foregroundDeletion",)), meta())
    node = r.graph.nodes["u-owner"]
    assert node.deleting_dependents and node.being_deleted
    assert r.deletes == ["u-a", "u-owner"]
    assert [d.identity.uid for d in node.blocking_dependents()] == ["u-a"]

    # The dependent drops its blocking reference: the owner is looked at again.
    r.deletes.clear()
    r.graph.observe(cm("a", "u-a"), meta(), meta(ref(owner, block=True)))
    assert r.deletes == ["u-owner"]
    assert node.dependents == set()


def test_dependent_deletion_requeues_an_owner_deleting_dependents() -> None:
    r = Recorder()
    owner, dep = cm("owner", "u-owner"), cm("a", "u-a")
    r.graph.observe(owner, meta(deleting=True, finalizers=("foregroundDeletion",)))
    r.graph.observe(dep, meta(ref(owner, block=True)))
    r.deletes.clear()
    r.graph.observe_deleted(dep)
    assert r.deletes == ["u-owner"]


def test_orphan_finalizer_queues_the_owner_for_orphaning_once() -> None:
    r = Recorder()
    owner = cm("owner", "u-owner")
    r.graph.observe(owner, meta())
    deleting = meta(deleting=True, finalizers=("orphan",))
    r.graph.observe(owner, deleting, meta())
    r.graph.observe(owner, deleting, deleting)  # no new transition
    assert r.orphans == ["u-owner"]


def test_owner_in_another_namespace_is_reported_and_the_dependent_checked() -> None:
    r = Recorder()
    owner = cm("owner", "u-owner", namespace="other")
    r.graph.observe(owner, meta())
    r.graph.observe(cm("a", "u-a", namespace="ns"), meta(ref(owner)))
    assert r.invalid == [("u-a", "u-owner")]
    assert r.deletes == ["u-a"]


def test_deletion_starts_with() -> None:
    new = meta(deleting=True, finalizers=("foregroundDeletion",))
    assert deletion_starts_with(None, new, "foregroundDeletion")
    assert deletion_starts_with(meta(), new, "foregroundDeletion")
    assert not deletion_starts_with(new, new, "foregroundDeletion")
    assert not deletion_starts_with(None, new, "orphan")
    assert not deletion_starts_with(None, meta(finalizers=("foregroundDeletion",)), "foregroundDeletion")


def test_partition_and_alternate_identity() -> None:
    absent = Identity("v1", "Node", "n1", "u-n", "ns1")
    a = Node(cm("a", "u-a", "ns1"), [ref(absent)])
    b = Node(cm("b", "u-b", "ns2"), [ref(absent)])
    matching, nonmatching = partition_dependents([a, b], absent)
    assert matching == [a] and nonmatching == [b]
    assert alternate_owner_identity([b], absent) == absent.with_namespace("ns2")


def test_absent_owner_cache_is_bounded_lru() -> None:
    cache = AbsentOwnerCache(size=2)
    x, y, z = cm("x", "1"), cm("y", "2"), cm("z", "3")
    cache.add(x)
    cache.add(y)
    assert x in cache  # touching x makes y the oldest
    cache.add(z)
    assert x in cache and z in cache and y not in cache
