"""Pure scheduling predicates shared by the scheduler and the controllers (k8s.io/component-helpers:
scheduling/corev1 and v1helper): node selector terms against a node's labels and name, and tolerations
against taints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Obj = dict[str, Any]
TermMatcher = Callable[[Mapping[str, str], str], bool]  # (node labels, node name) -> matches
_INT64 = (-(2**63), 2**63 - 1)


def _parse_int(text: str) -> int | None:
    try:
        value = int(text, 10)
    except (TypeError, ValueError):
        return None
    return value if _INT64[0] <= value <= _INT64[1] and text.strip() == text and "_" not in text else None


def _requirement(expr: Obj) -> Callable[[Mapping[str, str]], bool] | None:
    """One NodeSelectorRequirement over a label map; None when invalid (it then matches nothing)."""
    key = expr.get("key") or ""
    op = expr.get("operator")
    values = list(expr.get("values") or [])
    if op == "In":
        if not values:
            return None
        allowed = frozenset(values)
        return lambda labels: key in labels and labels[key] in allowed
    if op == "NotIn":
        if not values:
            return None
        denied = frozenset(values)
        return lambda labels: key not in labels or labels[key] not in denied
    if op == "Exists":
        return None if values else (lambda labels: key in labels)
    if op == "DoesNotExist":
        return None if values else (lambda labels: key not in labels)
    if op in ("Gt", "Lt"):
        if len(values) != 1:
            return None
        bound = _parse_int(values[0])
        if bound is None:
            return None
        greater = op == "Gt"

        def compare(labels: Mapping[str, str]) -> bool:
            if key not in labels:
                return False
            have = _parse_int(labels[key])
            if have is None:
                return False
            return have > bound if greater else have < bound
        return compare
    return None


def _field_requirement(expr: Obj) -> Callable[[str], bool] | None:
    """matchFields supports metadata.name with In / NotIn only."""
    if expr.get("key") != "metadata.name":
        return None
    values = frozenset(expr.get("values") or [])
    op = expr.get("operator")
    if op == "In" and len(values) == 1:
        return lambda name: name in values
    if op == "NotIn" and values:
        return lambda name: name not in values
    return None


def compile_node_selector_term(term: Obj | None) -> TermMatcher | None:
    """A NodeSelectorTerm (ANDed expressions and fields) as a test of a node's labels and name; None when
    empty or invalid: it matches nothing."""
    term = term or {}
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return None
    label_reqs = [_requirement(e) for e in exprs]
    field_reqs = [_field_requirement(f) for f in fields]
    if any(r is None for r in label_reqs) or any(r is None for r in field_reqs):
        return None
    lreqs = [r for r in label_reqs if r is not None]
    freqs = [r for r in field_reqs if r is not None]
    return lambda labels, name: all(r(labels) for r in lreqs) and all(r(name) for r in freqs)


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def find_untolerated_taint(taints: list[Obj], tolerations: list[Obj],
                           effects: frozenset[str] = frozenset(("NoSchedule", "NoExecute"))) -> Obj | None:
    """The first taint with one of `effects` that no toleration tolerates."""
    for taint in taints:
        if taint.get("effect") not in effects:
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None
