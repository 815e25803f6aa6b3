"""Node selectors as the scheduler's plugins evaluate them, over NodeInfo (the matching itself, and the
tolerations, are in pocketkube.api.scheduling)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pocketkube.api.scheduling import compile_node_selector_term
from pocketkube.scheduler.types import NodeInfo

Obj = dict[str, Any]
NodeMatcher = Callable[[NodeInfo], bool]


def node_selector_term(term: Obj | None) -> NodeMatcher | None:
    """A NodeSelectorTerm over a NodeInfo; None when empty or invalid: matches nothing."""
    match = compile_node_selector_term(term)
    return None if match is None else (lambda ni: match(ni.labels, ni.name))


def node_selector(selector: Obj | None) -> NodeMatcher:
    """A NodeSelector: its terms ORed; no valid term matches nothing."""
    terms = [m for m in (node_selector_term(t) for t in (selector or {}).get("nodeSelectorTerms") or [])
             if m is not None]
    return lambda ni: any(m(ni) for m in terms)


class RequiredNodeAffinity:
    """pod.spec.nodeSelector plus requiredDuringSchedulingIgnoredDuringExecution node affinity."""

    __slots__ = ("label_selector", "affinity", "empty")

    def __init__(self, spec: Obj) -> None:
        self.label_selector: dict[str, str] = dict(spec.get("nodeSelector") or {})
        required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                    .get("requiredDuringSchedulingIgnoredDuringExecution"))
        self.affinity: NodeMatcher | None = node_selector(required) if required is not None else None
        self.empty = not self.label_selector and self.affinity is None

    def match(self, ni: NodeInfo) -> bool:
        if self.label_selector:
            labels = ni.labels
            for k, v in self.label_selector.items():
                if labels.get(k) != v:
                    return False
        return self.affinity is None or self.affinity(ni)


def preferred_terms(spec: Obj) -> list[tuple[int, NodeMatcher]]:
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
             .get("preferredDuringSchedulingIgnoredDuringExecution")) or []
    out: list[tuple[int, NodeMatcher]] = []
    for t in terms:
        weight = int(t.get("weight") or 0)
        matcher = node_selector_term(t.get("preference"))
        if weight and matcher is not None:
            out.append((weight, matcher))
    return out
