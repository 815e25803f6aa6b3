"""NodeAffinity: nodeSelector and required node affinity (filter), preferred node affinity (score)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pocketkube.scheduler.framework import (
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
    default_normalize_score,
    unresolvable,
)
from pocketkube.scheduler.plugins.helpers import (
    NodeMatcher,
    RequiredNodeAffinity,
    node_selector,
    preferred_terms,
)
from pocketkube.scheduler.types import MAX_NODE_SCORE, NodeInfo, PodInfo

ERR_REASON_POD = "node(s) didn't match Pod's node affinity/selector"
ERR_REASON_ENFORCED = "node(s) didn't match scheduler-enforced node affinity"
ERR_REASON_CONFLICT = "pod affinity terms conflict"
_PRE_FILTER_KEY = "PreFilterNodeAffinity"
_PRE_SCORE_KEY = "PreScoreNodeAffinity"


class NodeAffinity(Plugin):
    name = "NodeAffinity"

    def __init__(self, handle: Handle, args: Mapping[str, Any] | None = None) -> None:
        super().__init__(handle, args)
        added = self.args.get("addedAffinity") or {}
        required = added.get("requiredDuringSchedulingIgnoredDuringExecution")
        self.added_required: NodeMatcher | None = node_selector(required) if required else None
        self.added_preferred = preferred_terms({"affinity": {"nodeAffinity": added}})

    def pre_filter(self, state: CycleState, pi: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[PreFilterResult | None, Status | None]:
        required = RequiredNodeAffinity(pi.spec)
        if required.empty and self.added_required is None:
            return None, SKIP
        state.write(_PRE_FILTER_KEY, required)
        terms = ((((pi.spec.get("affinity") or {}).get("nodeAffinity") or {})
                  .get("requiredDuringSchedulingIgnoredDuringExecution")) or {}).get("nodeSelectorTerms")
        if not terms:
            return None, None
        # When every term pins metadata.name, only those nodes can ever match.
        names: set[str] = set()
        for term in terms:
            pinned: set[str] | None = None
            for f in term.get("matchFields") or []:
                if f.get("key") == "metadata.name" and f.get("operator") == "In" and len(f.get("values") or []) == 1:
                    values = set(f["values"])
                    pinned = values if pinned is None else pinned & values
            if pinned is None:
                return None, None
            if not pinned:
                continue
            names |= pinned
        if not names:
            return None, unresolvable(ERR_REASON_CONFLICT)
        return PreFilterResult(names), None

    def filter(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        if self.added_required is not None and not self.added_required(ni):
            return unresolvable(ERR_REASON_ENFORCED)
        required: RequiredNodeAffinity | None = state.read(_PRE_FILTER_KEY)
        if required is None:
            required = RequiredNodeAffinity(pi.spec)
        if not required.match(ni):
            return unresolvable(ERR_REASON_POD)
        return None

    def pre_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        terms = preferred_terms(pi.spec) + self.added_preferred
        if not terms:
            return SKIP
        state.write(_PRE_SCORE_KEY, terms)
        return None

    def score(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> int:
        terms = state.read(_PRE_SCORE_KEY)
        if terms is None:
            terms = preferred_terms(pi.spec) + self.added_preferred
        return sum(weight for weight, match in terms if match(ni))

    def normalize_score(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo], scores: list[int]) -> None:
        default_normalize_score(MAX_NODE_SCORE, False, scores)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        def node_matches(pi: PodInfo, old: Any, new: Any) -> bool:
            return RequiredNodeAffinity(pi.spec).match(NodeInfo(new))
        return [ClusterEventWithHint(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL), node_matches)]
