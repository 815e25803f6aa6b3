"""ControllerRevision history (pkg/controller/history): the data, hashing, naming, ordering and comparing
of the revisions in which StatefulSets (and DaemonSets, for data and ordering) record their templates."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from pocketkube.controllers.deployment_util import FNV32_OFFSET, FNV32_PRIME, parse_time, safe_encode_string
from pocketkube.controllers.replicaset import new_controller_ref

Obj = dict[str, Any]

HISTORY_HASH_LABEL = "controller.kubernetes.io/hash"  # history.ControllerRevisionHashLabel


def fnv32(data: bytes, start: int = FNV32_OFFSET) -> int:
    """hash/fnv New32 (FNV-1: multiply, then xor), which HashControllerRevision uses."""
    h = start
    for byte in data:
        h = ((h * FNV32_PRIME) & 0xFFFFFFFF) ^ byte
    return h


def raw_data(data: Any) -> bytes:
    """A revision's data as Go's json.Marshal writes a map: compact, keys sorted."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def hash_controller_revision(data: Any, probe: int | None) -> str:
    """HashControllerRevision: FNV-32 of the raw data, then the collision count in decimal."""
    h = fnv32(raw_data(data))
    if probe is not None:
        h = fnv32(str(probe).encode(), h)
    return safe_encode_string(str(h))


def get_patch(parent: Obj) -> Obj:
    """getPatch, the same for StatefulSets and DaemonSets: a revision's data is a strategic merge patch that
    replaces spec.template, as `kubectl rollout undo` applies it."""
    template = copy.deepcopy((parent.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def controller_revision_name(prefix: str, hash_: str) -> str:
    return f"{prefix[:223]}-{hash_}"


def revision_number(rev: Obj) -> int:
    return int(rev.get("revision") or 0)


def sort_revisions(revisions: Iterable[Obj]) -> list[Obj]:
    """SortControllerRevisions: by revision, then creation time, then name."""
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(revisions, key=lambda r: (revision_number(r),
                                            parse_time(r["metadata"].get("creationTimestamp")) or oldest,
                                            r["metadata"]["name"]))


def equal_revision(a: Obj | None, b: Obj | None) -> bool:
    """EqualRevision: the same data (hash labels differing settle it early)."""
    if a is None or b is None:
        return a is b
    ha = (a["metadata"].get("labels") or {}).get(HISTORY_HASH_LABEL)
    hb = (b["metadata"].get("labels") or {}).get(HISTORY_HASH_LABEL)
    if ha is not None and hb is not None and ha.isdigit() and hb.isdigit() and int(ha) != int(hb):
        return False
    return a.get("data") == b.get("data")


def next_revision(sorted_revisions: list[Obj]) -> int:
    return revision_number(sorted_revisions[-1]) + 1 if sorted_revisions else 1


def new_controller_revision(parent: Obj, template_labels: dict[str, str] | None, data: Obj, revision: int,
                            collision_count: int | None) -> Obj:
    """history.NewControllerRevision: named `<parent>-<hash>`, labelled like the pods plus the hash."""
    hash_ = hash_controller_revision(data, collision_count)
    meta = parent["metadata"]
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": controller_revision_name(meta["name"], hash_), "namespace": meta["namespace"],
                         "labels": {**(template_labels or {}), HISTORY_HASH_LABEL: hash_},
                         "ownerReferences": [new_controller_ref(parent)]},
            "data": data, "revision": revision}
