"""InterPodAffinity: required pod affinity / anti-affinity (filter) and preferred terms (score)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pocketkube.scheduler.framework import (
    ASSIGNED_POD,
    NODE,
    SKIP,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    Plugin,
    PreFilterResult,
    Status,
    unresolvable,
    unschedulable,
)
from pocketkube.scheduler.types import MAX_NODE_SCORE, AffinityTerm, NodeInfo, PodInfo, WeightedAffinityTerm

ERR_REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
ERR_REASON_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
_PRE_FILTER_KEY = "PreFilterInterPodAffinity"
_PRE_SCORE_KEY = "PreScoreInterPodAffinity"

Counts = dict[tuple[str, str], int]


def _bump(counts: Counts, labels: Mapping[str, str], key: str, value: int) -> None:
    if key in labels:
        pair = (key, labels[key])
        n = counts.get(pair, 0) + value
        if n:
            counts[pair] = n
        else:
            counts.pop(pair, None)


def _matches_all(terms: Iterable[AffinityTerm], pod: PodInfo, ns_labels: Mapping[str, str] | None) -> bool:
    terms = list(terms)
    return bool(terms) and all(t.matches(pod, ns_labels) for t in terms)


class _FilterState:
    __slots__ = ("pod", "ns_labels", "existing_anti", "affinity", "anti")

    def __init__(self, pod: PodInfo, ns_labels: dict[str, str]) -> None:
        self.pod = pod
        self.ns_labels = ns_labels
        self.existing_anti: Counts = {}
        self.affinity: Counts = {}
        self.anti: Counts = {}

    def clone(self) -> _FilterState:
        c = _FilterState(self.pod, self.ns_labels)
        c.existing_anti, c.affinity, c.anti = dict(self.existing_anti), dict(self.affinity), dict(self.anti)
        return c


class InterPodAffinity(Plugin):
    name = "InterPodAffinity"

    def __init__(self, handle: Handle, args: Mapping[str, Any] | None = None) -> None:
        super().__init__(handle, args)
        self.hard_pod_affinity_weight = int(self.args.get("hardPodAffinityWeight", 1))
        self.ignore_preferred_of_existing = bool(self.args.get("ignorePreferredTermsOfExistingPods", False))

    def _ns_labels(self) -> Any:
        cache: dict[str, dict[str, str]] = {}
        listers = self.handle.listers

        def lookup(ns: str) -> dict[str, str]:
            if ns not in cache:
                cache[ns] = listers.namespace_labels(ns)
            return cache[ns]
        return lookup

    # -- filter ---------------------------------------------------------------------------------
    def pre_filter(self, state: CycleState, pi: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[PreFilterResult | None, Status | None]:
        snapshot = self.handle.snapshot
        assert snapshot is not None
        with_anti = snapshot.have_pods_with_required_anti_affinity()
        if not pi.required_affinity_terms and not pi.required_anti_affinity_terms and not with_anti:
            return None, SKIP
        ns_of = self._ns_labels()
        s = _FilterState(pi, ns_of(pi.namespace))
        for ni in with_anti:
            labels = ni.labels
            for existing in ni.pods_with_required_anti_affinity.values():
                for term in existing.required_anti_affinity_terms:
                    if term.matches(pi, s.ns_labels):
                        _bump(s.existing_anti, labels, term.topology_key, 1)
        if pi.required_affinity_terms or pi.required_anti_affinity_terms:
            for ni in snapshot.node_info_list:
                for existing in ni.pods.values():
                    self._count_incoming_terms(s, existing, ni.labels, 1, ns_of(existing.namespace))
        state.write(_PRE_FILTER_KEY, s)
        return None, None

    @staticmethod
    def _count_incoming_terms(s: _FilterState, other: PodInfo, labels: Mapping[str, str], value: int,
                              other_ns_labels: Mapping[str, str]) -> None:
        terms = s.pod.required_affinity_terms
        if terms and _matches_all(terms, other, other_ns_labels):
            for t in terms:
                _bump(s.affinity, labels, t.topology_key, value)
        for t in s.pod.required_anti_affinity_terms:
            if t.matches(other, other_ns_labels):
                _bump(s.anti, labels, t.topology_key, value)

    def _update_with_pod(self, state: CycleState, other: PodInfo, ni: NodeInfo, value: int) -> None:
        s: _FilterState | None = state.read(_PRE_FILTER_KEY)
        if s is None:
            return
        for term in other.required_anti_affinity_terms:
            if term.matches(s.pod, s.ns_labels):
                _bump(s.existing_anti, ni.labels, term.topology_key, value)
        self._count_incoming_terms(s, other, ni.labels, value, self.handle.listers.namespace_labels(other.namespace))

    def add_pod(self, state: CycleState, pi: PodInfo, to_add: PodInfo, ni: NodeInfo) -> None:
        self._update_with_pod(state, to_add, ni, 1)

    def remove_pod(self, state: CycleState, pi: PodInfo, to_remove: PodInfo, ni: NodeInfo) -> None:
        self._update_with_pod(state, to_remove, ni, -1)

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        s: _FilterState | None = state.read(_PRE_FILTER_KEY)
        if s is None:
            return None
        labels = ni.labels
        if s.existing_anti:
            for pair in labels.items():
                if s.existing_anti.get(pair, 0) > 0:
                    return unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY)
        terms = pi.required_affinity_terms
        if terms:
            pods_exist = True
            for t in terms:
                if t.topology_key not in labels:
                    return unresolvable(ERR_REASON_AFFINITY)
                if s.affinity.get((t.topology_key, labels[t.topology_key]), 0) <= 0:
                    pods_exist = False
            # The first pod of a group with affinity to itself may go anywhere with the topology labels.
            if not pods_exist and not (not s.affinity and _matches_all(terms, pi, s.ns_labels)):
                return unresolvable(ERR_REASON_AFFINITY)
        for t in pi.required_anti_affinity_terms:
            if t.topology_key in labels and s.anti.get((t.topology_key, labels[t.topology_key]), 0) > 0:
                return unschedulable(ERR_REASON_ANTI_AFFINITY)
        return None

    # -- score ----------------------------------------------------------------------------------
    def pre_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        if not nodes:
            return SKIP
        has_constraints = bool(pi.preferred_affinity_terms or pi.preferred_anti_affinity_terms)
        if self.ignore_preferred_of_existing and not has_constraints:
            return SKIP
        snapshot = self.handle.snapshot
        assert snapshot is not None
        candidates = snapshot.node_info_list if has_constraints else snapshot.have_pods_with_affinity()
        ns_labels = self.handle.listers.namespace_labels(pi.namespace)
        ns_of = self._ns_labels()
        scores: dict[str, dict[str, int]] = {}

        def process(terms: Iterable[WeightedAffinityTerm], pod: PodInfo, pod_ns_labels: Mapping[str, str] | None,
                    labels: Mapping[str, str], sign: int) -> None:
            for wt in terms:
                t = wt.term
                if t.matches(pod, pod_ns_labels) and t.topology_key in labels:
                    by_value = scores.setdefault(t.topology_key, {})
                    value = labels[t.topology_key]
                    by_value[value] = by_value.get(value, 0) + wt.weight * sign

        for ni in candidates:
            labels = ni.labels
            if not labels:
                continue
            existing_pods = ni.pods.values() if has_constraints else ni.pods_with_affinity.values()
            for existing in existing_pods:
                ens = ns_of(existing.namespace)
                process(pi.preferred_affinity_terms, existing, ens, labels, 1)
                process(pi.preferred_anti_affinity_terms, existing, ens, labels, -1)
                if self.hard_pod_affinity_weight > 0:
                    process((WeightedAffinityTerm(t, self.hard_pod_affinity_weight)
                             for t in existing.required_affinity_terms), pi, ns_labels, labels, 1)
                if not self.ignore_preferred_of_existing:
                    process(existing.preferred_affinity_terms, pi, ns_labels, labels, 1)
                    process(existing.preferred_anti_affinity_terms, pi, ns_labels, labels, -1)
        if not scores:
            return SKIP
        state.write(_PRE_SCORE_KEY, scores)
        return None

    def score(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> int:
        scores: dict[str, dict[str, int]] = state.read(_PRE_SCORE_KEY) or {}
        labels = ni.labels
        return sum(by_value.get(labels[key], 0) for key, by_value in scores.items() if key in labels)

    def normalize_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo], scores: list[int]) -> None:
        if not state.read(_PRE_SCORE_KEY) or not scores:
            return
        lo, hi = min(scores), max(scores)
        diff = hi - lo
        for i, s in enumerate(scores):
            scores[i] = int(MAX_NODE_SCORE * ((s - lo) / diff)) if diff > 0 else 0

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(ClusterEvent(ASSIGNED_POD, ActionType.ADD | ActionType.UPDATE_POD_LABEL
                                                  | ActionType.DELETE)),
                ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL))]
