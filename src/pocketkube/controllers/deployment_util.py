"""Deployment helpers with upstream's arithmetic (pkg/controller/deployment/util, controller_utils.go).

Pure functions over plain API dicts, so the rounding, revision and condition rules can be unit tested.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cmp_to_key
from typing import Any

import orjson

from pocketkube.api.names import SAFE_ALPHABET

Obj = dict[str, Any]

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO_ANNOTATION = "deprecated.deployment.rollback.to"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
# Annotations the controller owns on ReplicaSets: never copied from the Deployment.
ANNOTATIONS_TO_SKIP = frozenset({LAST_APPLIED_ANNOTATION, REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION,
                                 DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, ROLLBACK_TO_ANNOTATION})
MAX_REV_HISTORY_LENGTH_IN_CHARS = 2000
MAX_INT32 = 2**31 - 1

# Condition reasons, as kubectl and users read them.
NEW_RS_REASON = "NewReplicaSetCreated"
FOUND_NEW_RS_REASON = "FoundNewReplicaSet"
NEW_RS_AVAILABLE_REASON = "NewReplicaSetAvailable"
RS_UPDATED_REASON = "ReplicaSetUpdated"
FAILED_RS_CREATE_REASON = "ReplicaSetCreateError"
TIMED_OUT_REASON = "ProgressDeadlineExceeded"
PAUSED_REASON = "DeploymentPaused"
RESUMED_REASON = "DeploymentResumed"
MIN_AVAILABLE_REASON = "MinimumReplicasAvailable"
MIN_UNAVAILABLE_REASON = "MinimumReplicasUnavailable"

FNV32_OFFSET = 0x811C9DC5
FNV32_PRIME = 0x01000193


# --- time --------------------------------------------------------------------------------
def now() -> datetime:
    return datetime.now(UTC)


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- hashing -----------------------------------------------------------------------------
def fnv32a(data: bytes, start: int = FNV32_OFFSET) -> int:
    h = start
    for byte in data:
        h = ((h ^ byte) * FNV32_PRIME) & 0xFFFFFFFF
    return h


def safe_encode_string(s: str) -> str:
    """rand.SafeEncodeString: map every byte onto the vowel-free alphabet."""
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in s.encode())


def compute_hash(template: Obj, collision_count: int | None) -> str:
    """controller.ComputeHash: FNV-32a of the template, then the collision count as 8 little-endian bytes
    (upstream writes a uint32 into an 8-byte buffer), rendered as the decimal Sum32 through SafeEncodeString.

    Upstream feeds the hasher spew's dump of the Go struct; we feed it the canonical (sorted-key) JSON
    of the template, so names are stable and collision-resistant but not byte-identical to upstream's.
    """
    h = fnv32a(orjson.dumps(template, option=orjson.OPT_SORT_KEYS))
    if collision_count is not None:
        h = fnv32a((collision_count & 0xFFFFFFFF).to_bytes(4, "little") + b"\0\0\0\0", h)
    return safe_encode_string(str(h))


# --- intstr and fenceposts ---------------------------------------------------------------
def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: ints as they are, "N%" of total rounded up or down."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if not value.endswith("%"):
        raise ValueError("invalid value for IntOrString: invalid type: string is not a percentage")
    try:
        percent = int(value[:-1])
    except ValueError as err:
        raise ValueError(f"invalid value {value!r}: {err}") from err
    scaled = float(percent) * float(total) / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def resolve_fenceposts(max_surge: int | str | None, max_unavailable: int | str | None,
                       desired: int) -> tuple[int, int]:
    """Surge rounds up, unavailable rounds down; both zero means unavailable 1 (surge may hit quota)."""
    surge = scaled_value(max_surge if max_surge is not None else 0, desired, True)
    unavailable = scaled_value(max_unavailable if max_unavailable is not None else 0, desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def replicas(obj: Obj | None) -> int:
    """spec.replicas (defaulted to 1 by the server, so absent only in hand-made objects)."""
    if obj is None:
        return 0
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def is_rolling_update(d: Obj) -> bool:
    return ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def _rolling(d: Obj) -> Obj:
    return ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}


def max_surge(d: Obj) -> int:
    if not is_rolling_update(d):
        return 0
    rolling = _rolling(d)
    return resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"), replicas(d))[0]


def max_unavailable(d: Obj) -> int:
    desired = replicas(d)
    if not is_rolling_update(d) or desired == 0:
        return 0
    rolling = _rolling(d)
    unavailable = resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"), desired)[1]
    return min(unavailable, desired)


def has_progress_deadline(d: Obj) -> bool:
    deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return deadline is not None and deadline != MAX_INT32


def has_revision_history_limit(d: Obj) -> bool:
    limit = (d.get("spec") or {}).get("revisionHistoryLimit")
    return limit is not None and limit != MAX_INT32


def round_to_int32(value: float) -> int:
    """integer.RoundToInt32: half away from zero."""
    return int(value - 0.5) if value < 0 else int(value + 0.5)


# --- templates ---------------------------------------------------------------------------
def _prune_empty(value: Any) -> Any:
    """Semantic.DeepEqual treats nil and empty maps/slices alike: drop them before comparing."""
    if isinstance(value, dict):
        pruned = {k: _prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_prune_empty(v) for v in value]
    return value


def template_without_hash(template: Obj | None) -> Obj:
    t = copy.deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return t


def equal_ignore_hash(t1: Obj | None, t2: Obj | None) -> bool:
    return _prune_empty(template_without_hash(t1)) == _prune_empty(template_without_hash(t2))


# --- ReplicaSet lists --------------------------------------------------------------------
def _created(obj: Obj) -> datetime:
    return parse_time(obj["metadata"].get("creationTimestamp")) or datetime.min.replace(tzinfo=UTC)


def _cmp(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def by_creation(rss: Iterable[Obj]) -> list[Obj]:
    """ReplicaSetsByCreationTimestamp: oldest first, then by name."""
    return sorted(rss, key=lambda rs: (_created(rs), rs["metadata"]["name"]))


def by_revision(rss: Iterable[Obj]) -> list[Obj]:
    """ReplicaSetsByRevision: lowest revision first, then by creation."""
    return sorted(rss, key=lambda rs: (revision(rs), _created(rs), rs["metadata"]["name"]))


def by_size(rss: Iterable[Obj], newer_first: bool) -> list[Obj]:
    """ReplicaSetsBySizeNewer / BySizeOlder: largest first; equal sizes by age in the given direction."""
    def compare(a: Obj, b: Obj) -> int:
        if replicas(a) != replicas(b):
            return _cmp(replicas(b), replicas(a))
        age = _cmp((_created(a), a["metadata"]["name"]), (_created(b), b["metadata"]["name"]))
        return -age if newer_first else age
    return sorted(rss, key=cmp_to_key(compare))


def filter_active(rss: Iterable[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def _status_sum(rss: Iterable[Obj | None], field: str) -> int:
    return sum(int((rs.get("status") or {}).get(field) or 0) for rs in rss if rs is not None)


def replica_count(rss: Iterable[Obj | None]) -> int:
    """GetReplicaCountForReplicaSets: the sum of spec.replicas."""
    return sum(replicas(rs) for rs in rss if rs is not None)


def actual_replica_count(rss: Iterable[Obj | None]) -> int:
    return _status_sum(rss, "replicas")


def ready_replica_count(rss: Iterable[Obj | None]) -> int:
    return _status_sum(rss, "readyReplicas")


def available_replica_count(rss: Iterable[Obj | None]) -> int:
    return _status_sum(rss, "availableReplicas")


def terminating_replica_count(rss: Iterable[Obj | None]) -> int | None:
    """GetTerminatingReplicaCountForReplicaSets: unknown (None) as soon as one ReplicaSet does not say."""
    total = 0
    for rs in rss:
        if rs is None:
            continue
        value = (rs.get("status") or {}).get("terminatingReplicas")
        if value is None:
            return None
        total += int(value)
    return total


def find_new_replica_set(d: Obj, rss: list[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template equals the Deployment's (ignoring the hash label)."""
    template = (d.get("spec") or {}).get("template")
    for rs in by_creation(rss):
        if equal_ignore_hash((rs.get("spec") or {}).get("template"), template):
            return rs
    return None


def find_old_replica_sets(d: Obj, rss: list[Obj]) -> tuple[list[Obj], list[Obj]]:
    """(old ones with replicas, all old ones)."""
    new = find_new_replica_set(d, rss)
    old = [rs for rs in rss if new is None or rs["metadata"]["uid"] != new["metadata"]["uid"]]
    return [rs for rs in old if replicas(rs) != 0], old


def find_active_or_latest(new_rs: Obj | None, old_rss: list[Obj]) -> Obj | None:
    """The only active ReplicaSet, else the newest one when none is active, else None."""
    if new_rs is None and not old_rss:
        return None
    old_sorted = list(reversed(by_creation(old_rss)))
    active = filter_active([*old_sorted, new_rs])
    if not active:
        return new_rs if new_rs is not None else old_sorted[0]
    return active[0] if len(active) == 1 else None


def int_annotation(obj: Obj, key: str) -> int | None:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {})[key])
    except (KeyError, ValueError, TypeError):
        return None


def revision(rs: Obj) -> int:
    return int_annotation(rs, REVISION_ANNOTATION) or 0


def max_revision(rss: Iterable[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    desired = int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
    want = replicas(d)
    return (desired is not None and replicas(rs) == want and desired == want
            and int((rs.get("status") or {}).get("availableReplicas") or 0) == want)


def new_rs_new_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """NewRSNewReplicas: how far the new ReplicaSet may grow now."""
    if not is_rolling_update(d):
        return replicas(d)
    surge = scaled_value(_rolling(d).get("maxSurge"), replicas(d), True)
    current = replica_count(all_rss)
    max_total = replicas(d) + surge
    if current >= max_total:
        return replicas(new_rs)
    scale_up = min(max_total - current, replicas(d) - replicas(new_rs))
    return replicas(new_rs) + scale_up


def replica_set_proportion(rs: Obj | None, d: Obj, to_add: int, added: int) -> int:
    """GetReplicaSetProportion: this ReplicaSet's share of a proportional scale."""
    if rs is None or replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _replica_set_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def _replica_set_fraction(rs: Obj, d: Obj) -> int:
    if replicas(d) == 0:
        return -replicas(rs)
    deployment_max = replicas(d) + max_surge(d)
    before = int_annotation(rs, MAX_REPLICAS_ANNOTATION)
    if not before:
        before = int((d.get("status") or {}).get("replicas") or 0)
    if before == 0:
        return 0
    return round_to_int32(replicas(rs) * deployment_max / before) - replicas(rs)


# --- annotations -------------------------------------------------------------------------
def _annotations(obj: Obj) -> dict[str, str]:
    meta = obj.setdefault("metadata", {})
    if meta.get("annotations") is None:
        meta["annotations"] = {}
    return meta["annotations"]


def set_replicas_annotations(rs: Obj, desired: int, maximum: int) -> bool:
    annotations = _annotations(rs)
    updated = False
    for key, value in ((DESIRED_REPLICAS_ANNOTATION, str(desired)), (MAX_REPLICAS_ANNOTATION, str(maximum))):
        if annotations.get(key) != value:
            annotations[key] = value
            updated = True
    return updated


def replicas_annotations_need_update(rs: Obj, desired: int, maximum: int) -> bool:
    annotations = (rs.get("metadata") or {}).get("annotations") or {}
    return (annotations.get(DESIRED_REPLICAS_ANNOTATION) != str(desired)
            or annotations.get(MAX_REPLICAS_ANNOTATION) != str(maximum))


def set_new_replica_set_annotations(d: Obj, rs: Obj, new_revision: str, exists: bool,
                                    history_limit_chars: int = MAX_REV_HISTORY_LENGTH_IN_CHARS) -> bool:
    """Copy the Deployment's annotations, raise the revision (keeping the old ones in revision-history when
    an old ReplicaSet comes back through a rollback) and, for a new ReplicaSet, the replicas annotations."""
    annotations = _annotations(rs)
    changed = False
    for key, value in ((d.get("metadata") or {}).get("annotations") or {}).items():
        if key in ANNOTATIONS_TO_SKIP or annotations.get(key) == value:
            continue
        annotations[key] = value
        changed = True
    had_revision = REVISION_ANNOTATION in annotations
    old_revision = annotations.get(REVISION_ANNOTATION, "")
    try:
        old_int = int(old_revision) if old_revision else 0
        new_int = int(new_revision)
    except ValueError:
        return False
    if old_int < new_int:
        annotations[REVISION_ANNOTATION] = new_revision
        changed = True
        if had_revision:
            history = annotations.get(REVISION_HISTORY_ANNOTATION, "")
            old_revisions = history.split(",")
            if not old_revisions[0]:
                annotations[REVISION_HISTORY_ANNOTATION] = old_revision
            else:
                total = len(history) + len(old_revision) + 1
                start = 0
                while total > history_limit_chars and start < len(old_revisions):
                    total -= len(old_revisions[start]) + 1
                    start += 1
                if total <= history_limit_chars:
                    annotations[REVISION_HISTORY_ANNOTATION] = ",".join([*old_revisions[start:], old_revision])
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


# --- conditions --------------------------------------------------------------------------
def new_condition(ctype: str, status: str, reason: str, message: str) -> Obj:
    stamp = format_time(now())
    return {"type": ctype, "status": status, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def get_condition(status: Obj, ctype: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def set_condition(status: Obj, condition: Obj) -> None:
    """SetDeploymentCondition: same status and reason is a no-op; same status keeps the transition time."""
    current = get_condition(status, condition["type"])
    if current is not None and current.get("status") == condition["status"] \
            and current.get("reason") == condition["reason"]:
        return
    if current is not None and current.get("status") == condition["status"]:
        condition["lastTransitionTime"] = current.get("lastTransitionTime")
    remove_condition(status, condition["type"])
    status.setdefault("conditions", []).append(condition)


def remove_condition(status: Obj, ctype: str) -> None:
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != ctype]


def deployment_complete(d: Obj, status: Obj) -> bool:
    want = replicas(d)
    return (status.get("updatedReplicas", 0) == want and status.get("replicas", 0) == want
            and status.get("availableReplicas", 0) == want
            and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 0))


def deployment_progressing(d: Obj, status: Obj) -> bool:
    old = d.get("status") or {}
    old_old = old.get("replicas", 0) - old.get("updatedReplicas", 0)
    new_old = status.get("replicas", 0) - status.get("updatedReplicas", 0)
    return (status.get("updatedReplicas", 0) > old.get("updatedReplicas", 0) or new_old < old_old
            or status.get("readyReplicas", 0) > old.get("readyReplicas", 0)
            or status.get("availableReplicas", 0) > old.get("availableReplicas", 0))


def deployment_timed_out(d: Obj, status: Obj, at: datetime | None = None) -> bool:
    if not has_progress_deadline(d):
        return False
    condition = get_condition(status, "Progressing")
    if condition is None or condition.get("reason") == NEW_RS_AVAILABLE_REASON:
        return False
    if condition.get("reason") == TIMED_OUT_REASON:
        return True
    since = parse_time(condition.get("lastUpdateTime"))
    if since is None:
        return False
    deadline = since.timestamp() + d["spec"]["progressDeadlineSeconds"]
    return deadline < (at or now()).timestamp()


STATUS_COUNTS = ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
                 "unavailableReplicas")


def normalized_status(status: Obj | None) -> Obj:
    """A DeploymentStatus as Go sees it: every count present (0 when omitted)."""
    status = status or {}
    out: Obj = {k: int(status.get(k) or 0) for k in STATUS_COUNTS}
    out["conditions"] = list(status.get("conditions") or [])
    for key in ("terminatingReplicas", "collisionCount"):  # pointers: absent and 0 differ
        if status.get(key) is not None:
            out[key] = status[key]
    return out


def wire_status(status: Obj) -> Obj:
    """The JSON upstream sends: zero counts and empty conditions omitted (omitempty), pointers when set."""
    out = {k: v for k, v in status.items() if k in STATUS_COUNTS and v}
    if status.get("conditions"):
        out["conditions"] = status["conditions"]
    for key in ("terminatingReplicas", "collisionCount"):
        if status.get(key) is not None:
            out[key] = status[key]
    return out


def calculate_status(all_rss: list[Obj | None], new_rs: Obj | None, d: Obj) -> Obj:
    available = available_replica_count(all_rss)
    total = replica_count(all_rss)
    current = normalized_status(d.get("status"))
    status: Obj = {
        "observedGeneration": d["metadata"].get("generation", 0),
        "replicas": actual_replica_count(all_rss),
        "updatedReplicas": actual_replica_count([new_rs]),
        "readyReplicas": ready_replica_count(all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(total - available, 0),
        "conditions": [dict(c) for c in current["conditions"]],
    }
    terminating = terminating_replica_count(all_rss)
    if terminating is not None:
        status["terminatingReplicas"] = terminating
    if "collisionCount" in current:
        status["collisionCount"] = current["collisionCount"]
    if available >= replicas(d) - max_unavailable(d):
        set_condition(status, new_condition("Available", "True", MIN_AVAILABLE_REASON,
                                            "Deployment has minimum availability."))
    else:
        set_condition(status, new_condition("Available", "False", MIN_UNAVAILABLE_REASON,
                                            "Deployment does not have minimum availability."))
    return status
