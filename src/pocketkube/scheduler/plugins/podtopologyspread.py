"""PodTopologySpread: maxSkew across topology domains (filter for DoNotSchedule, score for
ScheduleAnyway), with the cluster-level default constraints applied to pods of Services/ReplicaSets/
StatefulSets/ReplicationControllers that declare none."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pocketkube.api.scheduling import find_untolerated_taint
from pocketkube.api.selectors import EQUALS, IN, LabelSelector, Requirement, SelectorError
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
from pocketkube.scheduler.plugins.helpers import RequiredNodeAffinity
from pocketkube.scheduler.plugins.resource_allocation import go_round
from pocketkube.scheduler.types import LABEL_HOSTNAME, LABEL_ZONE, MAX_NODE_SCORE, NodeInfo, PodInfo

if TYPE_CHECKING:
    from pocketkube.scheduler.columns import NodeColumns

ERR_REASON_CONSTRAINTS_NOT_MATCH = "node(s) didn't match pod topology spread constraints"
ERR_REASON_NODE_LABEL_NOT_MATCH = ERR_REASON_CONSTRAINTS_NOT_MATCH + " (missing required label)"
DO_NOT_SCHEDULE, SCHEDULE_ANYWAY = "DoNotSchedule", "ScheduleAnyway"
SYSTEM_DEFAULT_CONSTRAINTS = (
    {"maxSkew": 3, "topologyKey": LABEL_HOSTNAME, "whenUnsatisfiable": SCHEDULE_ANYWAY},
    {"maxSkew": 5, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": SCHEDULE_ANYWAY},
)
_PRE_FILTER_KEY = "PreFilterPodTopologySpread"
_PRE_SCORE_KEY = "PreScorePodTopologySpread"


@dataclass(frozen=True, eq=False)
class Constraint:
    max_skew: int
    topology_key: str
    selector: LabelSelector
    min_domains: int
    honor_node_affinity: bool
    honor_node_taints: bool


def _build(raw: list[Mapping[str, Any]], action: str, pod_labels: Mapping[str, str],
           default_selector: LabelSelector | None = None) -> list[Constraint]:
    out = []
    for c in raw:
        if c.get("whenUnsatisfiable", DO_NOT_SCHEDULE) != action:
            continue
        if default_selector is not None:
            selector = default_selector
        else:
            try:
                selector = LabelSelector.from_dict(c.get("labelSelector"))
            except SelectorError:
                selector = LabelSelector.nothing()
            extra = [Requirement(k, IN, (pod_labels[k],)) for k in c.get("matchLabelKeys") or [] if k in pod_labels]
            if extra and not selector.matches_nothing:
                selector = LabelSelector([*selector.requirements, *extra])
        out.append(Constraint(int(c.get("maxSkew") or 1), c.get("topologyKey", ""), selector,
                              int(c.get("minDomains") or 1),
                              (c.get("nodeAffinityPolicy") or "Honor") == "Honor",
                              (c.get("nodeTaintsPolicy") or "Ignore") == "Honor"))
    return out


def _count_matching(pods: Mapping[str, PodInfo], selector: LabelSelector, namespace: str) -> int:
    if selector.matches_nothing:
        return 0
    n = 0
    for p in pods.values():
        if p.namespace == namespace and not p.terminating and selector.matches(p.labels):
            n += 1
    return n


# Selectors whose per-node counts are remembered (least recently used ones are dropped).
COUNT_CACHE_SELECTORS = 32
CountTable = dict[str, tuple[int, int]]  # node name -> (NodeInfo.generation, matching pods)


class _MatchCounts:
    """countPodsMatchSelector per node, remembered while the node's pods stay the same (NodeInfo.generation
    changes with every pod added or removed there): consecutive pods of one workload recount only the
    nodes whose pods changed, instead of every pod in the cluster twice per pod."""

    def __init__(self) -> None:
        self._tables: OrderedDict[tuple[str, tuple[Requirement, ...]], CountTable] = OrderedDict()

    def table(self, selector: LabelSelector, namespace: str) -> CountTable | None:
        if selector.matches_nothing:
            return None
        key = (namespace, selector.requirements)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
            if len(self._tables) > COUNT_CACHE_SELECTORS:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(key)
        return table


def _count_cached(table: CountTable | None, ni: NodeInfo, selector: LabelSelector, namespace: str) -> int:
    if table is None:
        return _count_matching(ni.pods, selector, namespace)
    hit = table.get(ni.name)
    if hit is not None and hit[0] == ni.generation:
        return hit[1]
    count = _count_matching(ni.pods, selector, namespace)
    table[ni.name] = (ni.generation, count)
    return count


def _has_all_keys(labels: Mapping[str, str], constraints: list[Constraint]) -> bool:
    return _topology_keys(constraints) <= labels.keys()


def _topology_keys(constraints: list[Constraint]) -> frozenset[str]:
    return frozenset(c.topology_key for c in constraints)


def _always_included(c: Constraint, affinity: RequiredNodeAffinity) -> bool:
    """Whether `_included` holds for every node: nothing to honour (the common case, checked once per pod
    instead of once per node)."""
    return not c.honor_node_taints and (not c.honor_node_affinity or affinity.empty)


def _included(c: Constraint, pi: PodInfo, ni: NodeInfo, affinity: RequiredNodeAffinity) -> bool:
    """matchNodeInclusionPolicies: nodeAffinityPolicy / nodeTaintsPolicy."""
    if c.honor_node_affinity and not affinity.match(ni):
        return False
    return not (c.honor_node_taints and ni.taints
                and find_untolerated_taint(ni.taints, pi.spec.get("tolerations") or []) is not None)


class _DomainCounts:
    """Matching pods per topology domain over one snapshot's nodes, for one constraint: nodes lacking one of
    `required` are left out, the others count under their topology value ("" when they have none). Kept
    current by recounting only the rows whose generation changed since the last look, instead of walking
    every node for every pod."""

    def __init__(self, columns: NodeColumns) -> None:
        self.columns = columns
        n = len(columns.node_infos)
        self.generations = np.zeros(n, dtype=np.int64)  # 0: never counted (generations start at 1)
        self.values: list[str | None] = [None] * n
        self.counts = [0] * n
        self.totals: dict[str, int] = {}   # domain -> matching pods
        self.members: dict[str, int] = {}  # domain -> nodes in it

    def refresh(self, required: frozenset[str], c: Constraint, table: CountTable | None,
                namespace: str) -> dict[str, int]:
        columns = self.columns
        changed = np.flatnonzero(columns.generation != self.generations)
        infos, values, counts, totals, members = columns.node_infos, self.values, self.counts, self.totals, \
            self.members
        for row in changed.tolist():
            old = values[row]
            if old is not None:
                totals[old] -= counts[row]
                members[old] -= 1
                if not members[old]:
                    del members[old], totals[old]
            ni = infos[row]
            labels = ni.labels
            if required <= labels.keys():
                value = labels.get(c.topology_key, "")
                count = _count_cached(table, ni, c.selector, namespace)
                totals[value] = totals.get(value, 0) + count
                members[value] = members.get(value, 0) + 1
            else:
                value, count = None, 0
            values[row], counts[row] = value, count
        self.generations[changed] = columns.generation[changed]
        return totals


class _FilterState:
    __slots__ = ("constraints", "self_match", "match_num", "_mins")

    def __init__(self, constraints: list[Constraint], pod_labels: Mapping[str, str]) -> None:
        self.constraints = constraints
        # Whether the pod being scheduled counts in each constraint's domain once placed there.
        self.self_match = [1 if c.selector.matches(pod_labels) else 0 for c in constraints]
        self.match_num: list[dict[str, int]] = [{} for _ in constraints]
        # Each constraint's global minimum, computed once (Filter asks for it on every node) until a
        # count changes.
        self._mins: list[int | None] = [None] * len(constraints)

    def clone(self) -> _FilterState:
        c = _FilterState.__new__(_FilterState)
        c.constraints, c.self_match = self.constraints, self.self_match
        c.match_num = [dict(m) for m in self.match_num]
        c._mins = list(self._mins)
        return c

    def add(self, i: int, value: str, delta: int) -> None:
        self.match_num[i][value] = self.match_num[i].get(value, 0) + delta
        self._mins[i] = None

    def min_match(self, i: int) -> int:
        found = self._mins[i]
        if found is None:
            counts = self.match_num[i]
            # fewer domains than minDomains: the global minimum is taken as 0
            found = 0 if len(counts) < self.constraints[i].min_domains else min(counts.values(), default=0)
            self._mins[i] = found
        return found


class PodTopologySpread(Plugin):
    name = "PodTopologySpread"

    def __init__(self, handle: Handle, args: Mapping[str, Any] | None = None) -> None:
        super().__init__(handle, args)
        defaulting = self.args.get("defaultingType") or "System"
        self.system_defaulted = defaulting == "System"
        self.default_constraints = list(SYSTEM_DEFAULT_CONSTRAINTS) if self.system_defaulted else \
            list(self.args.get("defaultConstraints") or [])
        self._counts = _MatchCounts()
        self._domains: OrderedDict[tuple[Any, ...], _DomainCounts] = OrderedDict()

    def _domain_totals(self, required: frozenset[str], c: Constraint, namespace: str) -> dict[str, int]:
        """Matching pods per domain of `c` over the snapshot (see _DomainCounts); never mutate the result."""
        snapshot = self.handle.snapshot
        assert snapshot is not None
        key = (required, c.topology_key, namespace, c.selector)
        entry = self._domains.get(key)
        if entry is None or entry.columns is not snapshot.columns:
            entry = self._domains[key] = _DomainCounts(snapshot.columns)
            if len(self._domains) > COUNT_CACHE_SELECTORS:
                self._domains.popitem(last=False)
        self._domains.move_to_end(key)
        return entry.refresh(required, c, self._counts.table(c.selector, namespace), namespace)

    def _constraints(self, pi: PodInfo, action: str) -> list[Constraint]:
        own = pi.spec.get("topologySpreadConstraints") or []
        if own:
            return _build(own, action, pi.labels)
        wanted = [c for c in self.default_constraints if c.get("whenUnsatisfiable", DO_NOT_SCHEDULE) == action]
        if not wanted:
            return []
        selector = self._default_selector(pi)
        if selector.empty:
            return []
        return _build(wanted, action, pi.labels, selector)

    def _default_selector(self, pi: PodInfo) -> LabelSelector:
        """helper.DefaultSelector: the selectors of the Services, RC, ReplicaSet or StatefulSet owning the pod."""
        listers = self.handle.listers
        label_set: dict[str, str] = {}
        for svc in listers.list("services", pi.namespace):
            selector = (svc.get("spec") or {}).get("selector") or {}
            if selector and all(pi.labels.get(k) == v for k, v in selector.items()):
                label_set.update(selector)
        requirements = [Requirement(k, EQUALS, (v,)) for k, v in label_set.items()]
        owner = next((r for r in (pi.pod.get("metadata") or {}).get("ownerReferences") or [] if r.get("controller")),
                     None)
        if owner is not None:
            kind, api_version = owner.get("kind"), owner.get("apiVersion")
            if kind == "ReplicationController" and api_version == "v1":
                rc = listers.get("replicationcontrollers", pi.namespace, owner.get("name", ""))
                if rc is not None:
                    label_set.update((rc.get("spec") or {}).get("selector") or {})
                    requirements = [Requirement(k, EQUALS, (v,)) for k, v in label_set.items()]
            elif (kind, api_version) in (("ReplicaSet", "apps/v1"), ("StatefulSet", "apps/v1")):
                plural = "replicasets" if kind == "ReplicaSet" else "statefulsets"
                owner_obj = listers.get(plural, pi.namespace, owner.get("name", ""))
                if owner_obj is not None:
                    try:
                        requirements += list(LabelSelector.from_dict(
                            (owner_obj.get("spec") or {}).get("selector")).requirements)
                    except SelectorError:
                        pass
        return LabelSelector(requirements)

    # -- filter ---------------------------------------------------------------------------------
    def pre_filter(self, state: CycleState, pi: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[PreFilterResult | None, Status | None]:
        constraints = self._constraints(pi, DO_NOT_SCHEDULE)
        if not constraints:
            return None, SKIP
        snapshot = self.handle.snapshot
        assert snapshot is not None
        s = _FilterState(constraints, pi.labels)
        affinity = RequiredNodeAffinity(pi.spec)
        keys = _topology_keys(constraints)
        everywhere = [_always_included(c, affinity) for c in constraints]
        if all(everywhere):
            s.match_num = [dict(self._domain_totals(keys, c, pi.namespace)) for c in constraints]
            state.write(_PRE_FILTER_KEY, s)
            return None, None
        tables = [self._counts.table(c.selector, pi.namespace) for c in constraints]
        for ni in snapshot.node_info_list:
            labels = ni.labels
            if not keys <= labels.keys():
                continue
            for i, c in enumerate(constraints):
                if not everywhere[i] and not _included(c, pi, ni, affinity):
                    continue
                s.add(i, labels[c.topology_key], _count_cached(tables[i], ni, c.selector, pi.namespace))
        state.write(_PRE_FILTER_KEY, s)
        return None, None

    def _update_with_pod(self, state: CycleState, pi: PodInfo, other: PodInfo, ni: NodeInfo, delta: int) -> None:
        s: _FilterState | None = state.read(_PRE_FILTER_KEY)
        if s is None or other.namespace != pi.namespace or not _has_all_keys(ni.labels, s.constraints):
            return
        affinity = RequiredNodeAffinity(pi.spec)
        for i, c in enumerate(s.constraints):
            if not _included(c, pi, ni, affinity) or not c.selector.matches(other.labels):
                continue
            s.add(i, ni.labels[c.topology_key], delta)

    def add_pod(self, state: CycleState, pi: PodInfo, to_add: PodInfo, ni: NodeInfo) -> None:
        self._update_with_pod(state, pi, to_add, ni, 1)

    def remove_pod(self, state: CycleState, pi: PodInfo, to_remove: PodInfo, ni: NodeInfo) -> None:
        self._update_with_pod(state, pi, to_remove, ni, -1)

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        s: _FilterState | None = state.read(_PRE_FILTER_KEY)
        if s is None:
            return None
        labels = ni.labels
        for i, c in enumerate(s.constraints):
            value = labels.get(c.topology_key)
            if value is None:
                return unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH)
            skew = s.match_num[i].get(value, 0) + s.self_match[i] - s.min_match(i)
            if skew > c.max_skew:
                return unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH)
        return None

    # -- score ----------------------------------------------------------------------------------
    def pre_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        if not nodes:
            return SKIP
        constraints = self._constraints(pi, SCHEDULE_ANYWAY)
        if not constraints:
            return SKIP
        require_all = bool(pi.spec.get("topologySpreadConstraints")) or not self.system_defaulted
        ignored: set[str] = set()
        pair_counts: dict[tuple[str, str], int] = {}
        topo_size = [0] * len(constraints)
        keys = _topology_keys(constraints)
        for ni in nodes:
            if require_all and not keys <= ni.labels.keys():
                ignored.add(ni.name)
                continue
            for i, c in enumerate(constraints):
                if c.topology_key == LABEL_HOSTNAME:
                    continue
                pair = (c.topology_key, ni.labels.get(c.topology_key, ""))
                if pair not in pair_counts:
                    pair_counts[pair] = 0
                    topo_size[i] += 1
        weights = []
        for i, c in enumerate(constraints):
            size = len(nodes) - len(ignored) if c.topology_key == LABEL_HOSTNAME else topo_size[i]
            weights.append(math.log(size + 2))
        snapshot = self.handle.snapshot
        assert snapshot is not None
        affinity = RequiredNodeAffinity(pi.spec)
        tables = [self._counts.table(c.selector, pi.namespace) for c in constraints]
        everywhere = [_always_included(c, affinity) for c in constraints]
        if all(everywhere):
            required = keys if require_all else frozenset()
            for c in constraints:
                if c.topology_key == LABEL_HOSTNAME:
                    continue  # counted node by node in score
                totals = self._domain_totals(required, c, pi.namespace)
                for pair in pair_counts:
                    if pair[0] == c.topology_key:
                        pair_counts[pair] += totals.get(pair[1], 0)
            state.write(_PRE_SCORE_KEY, (constraints, ignored, pair_counts, weights, tables))
            return None
        for ni in snapshot.node_info_list:
            if require_all and not keys <= ni.labels.keys():
                continue
            for i, c in enumerate(constraints):
                if not everywhere[i] and not _included(c, pi, ni, affinity):
                    continue
                pair = (c.topology_key, ni.labels.get(c.topology_key, ""))
                if pair in pair_counts:
                    pair_counts[pair] += _count_cached(tables[i], ni, c.selector, pi.namespace)
        state.write(_PRE_SCORE_KEY, (constraints, ignored, pair_counts, weights, tables))
        return None

    def score(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> int:
        constraints, ignored, pair_counts, weights, tables = state.read(_PRE_SCORE_KEY)
        if ni.name in ignored:
            return 0
        total = 0.0
        for i, c in enumerate(constraints):
            value = ni.labels.get(c.topology_key)
            if value is None:
                continue
            if c.topology_key == LABEL_HOSTNAME:
                count = _count_cached(tables[i], ni, c.selector, pi.namespace)
            else:
                count = pair_counts.get((c.topology_key, value), 0)
            total += count * weights[i] + (c.max_skew - 1)
        return go_round(total)

    def normalize_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo], scores: list[int]) -> None:
        data = state.read(_PRE_SCORE_KEY)
        if data is None:
            return
        ignored = data[1]
        considered = [s for ni, s in zip(nodes, scores, strict=True) if ni.name not in ignored]
        lo = min(considered, default=0)
        hi = max(considered, default=0)
        for i, ni in enumerate(nodes):
            if ni.name in ignored:
                scores[i] = 0
            elif hi == 0:
                scores[i] = MAX_NODE_SCORE
            else:
                scores[i] = MAX_NODE_SCORE * (hi + lo - scores[i]) // hi

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(ClusterEvent(ASSIGNED_POD, ActionType.ADD | ActionType.UPDATE_POD_LABEL
                                                  | ActionType.DELETE)),
                ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD | ActionType.DELETE
                                                  | ActionType.UPDATE_NODE_LABEL | ActionType.UPDATE_NODE_TAINT))]
