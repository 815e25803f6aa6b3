"""The scheduling framework: statuses, cycle state, the plugin contract and one Framework per profile.

Extension points, in upstream order: QueueSort, PreEnqueue, PreFilter (+ AddPod/RemovePod extensions),
Filter, PostFilter, PreScore, Score (+ NormalizeScore), Reserve/Unreserve, Permit, PreBind, Bind, PostBind.
A plugin joins an extension point by defining the method of that name. `filter_rows` / `score_rows`
are optional vectorised forms of `filter` / `score` over rows of the snapshot's NodeColumns:
- filter_rows(state, pod, columns, rows) -> bool mask: True where the node certainly passes; the
  scheduler asks `filter` about every other node (for its status). None: ask `filter` about them all.
- score_rows(state, pod, columns, rows) -> int64 scores, exactly what `score` gives each node
  (before normalising). None: `score` is asked node by node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from pocketkube.scheduler.columns import Mask, NodeColumns, Rows
from pocketkube.scheduler.types import MAX_NODE_SCORE, NodeInfo, PodInfo

if TYPE_CHECKING:
    from pocketkube.scheduler.cache import Snapshot
    from pocketkube.scheduler.config import Profile
    from pocketkube.scheduler.queue import Nominator

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Code(IntEnum):
    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    WAIT = 4
    SKIP = 5
    PENDING = 6


class Status:
    """A plugin's verdict. Filters return None for success to keep the hot path allocation-free."""

    __slots__ = ("code", "reasons", "plugin")

    def __init__(self, code: Code = Code.SUCCESS, *reasons: str, plugin: str = "") -> None:
        self.code = code
        self.reasons = list(reasons)
        self.plugin = plugin

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    def is_success(self) -> bool:
        return self.code == Code.SUCCESS

    def is_skip(self) -> bool:
        return self.code == Code.SKIP

    def is_rejected(self) -> bool:
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE, Code.PENDING)

    def with_plugin(self, plugin: str) -> Status:
        self.plugin = plugin
        return self

    def __repr__(self) -> str:
        return f"Status({self.code.name}, {self.reasons!r}, plugin={self.plugin!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Status):
            return NotImplemented
        return (self.code, self.reasons) == (other.code, other.reasons)


def unschedulable(*reasons: str) -> Status:
    return Status(Code.UNSCHEDULABLE, *reasons)


def unresolvable(*reasons: str) -> Status:
    return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, *reasons)


def error(message: str) -> Status:
    return Status(Code.ERROR, message)


SKIP = Status(Code.SKIP)


def is_success(status: Status | None) -> bool:
    return status is None or status.code == Code.SUCCESS


class CycleState:
    """Per-pod scratch space shared by the plugins of one scheduling cycle."""

    __slots__ = ("_data", "skip_filter_plugins", "skip_score_plugins")

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self.skip_filter_plugins: set[str] = set()
        self.skip_score_plugins: set[str] = set()

    def write(self, key: str, value: Any) -> None:
        self._data[key] = value

    def read(self, key: str) -> Any:
        return self._data.get(key)

    def clone(self) -> CycleState:
        c = CycleState()
        c._data = {k: (v.clone() if hasattr(v, "clone") else v) for k, v in self._data.items()}
        c.skip_filter_plugins = set(self.skip_filter_plugins)
        c.skip_score_plugins = set(self.skip_score_plugins)
        return c


@dataclass
class PreFilterResult:
    """The nodes a PreFilter plugin already knows are the only candidates (None: all nodes)."""

    node_names: set[str] | None = None

    def merge(self, other: PreFilterResult | None) -> PreFilterResult:
        if other is None or other.node_names is None:
            return self
        if self.node_names is None:
            return PreFilterResult(set(other.node_names))
        return PreFilterResult(self.node_names & other.node_names)


@dataclass
class PostFilterResult:
    nominated_node_name: str | None = None  # "" clears a previous nomination


class NodeToStatus:
    """Statuses of rejected nodes, and the status every node not listed implicitly has."""

    def __init__(self, absent: Status | None = None) -> None:
        self.statuses: dict[str, Status] = {}
        self.absent = absent or unresolvable()

    def set(self, node: str, status: Status) -> None:
        self.statuses[node] = status

    def get(self, node: str) -> Status:
        return self.statuses.get(node, self.absent)

    def __len__(self) -> int:
        return len(self.statuses)

    def nodes_for_status_code(self, nodes: Iterable[NodeInfo], code: Code) -> list[NodeInfo]:
        return [n for n in nodes if self.get(n.name).code == code]


@dataclass
class Diagnosis:
    node_to_status: NodeToStatus = field(default_factory=NodeToStatus)
    unschedulable_plugins: set[str] = field(default_factory=set)
    pending_plugins: set[str] = field(default_factory=set)
    pre_filter_msg: str = ""
    post_filter_msg: str = ""

    def add_plugin_status(self, status: Status) -> None:
        if not status.plugin:
            return
        if status.is_rejected():
            self.unschedulable_plugins.add(status.plugin)
        if status.code == Code.PENDING:
            self.pending_plugins.add(status.plugin)


NO_NODE_AVAILABLE = "0/{} nodes are available"


class FitError(Exception):
    """No node fits; str() is upstream's FailedScheduling message."""

    def __init__(self, pod: PodInfo, num_all_nodes: int, diagnosis: Diagnosis) -> None:
        super().__init__()
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.diagnosis = diagnosis

    def __str__(self) -> str:
        d = self.diagnosis
        msg = NO_NODE_AVAILABLE.format(self.num_all_nodes) + ":"
        if d.pre_filter_msg:
            # A PreFilter rejection applies to every node: do not repeat it per node.
            msg += f" {d.pre_filter_msg}."
        else:
            reasons: dict[str, int] = {}
            for status in d.node_to_status.statuses.values():
                for reason in status.reasons:
                    reasons[reason] = reasons.get(reason, 0) + 1
            absent = self.num_all_nodes - len(d.node_to_status)
            if absent > 0:
                for reason in d.node_to_status.absent.reasons:
                    reasons[reason] = reasons.get(reason, 0) + absent
            histogram = sorted(f"{count} {reason}" for reason, count in reasons.items())
            if histogram:
                msg += f" {', '.join(histogram)}."
        if d.post_filter_msg:
            msg += f" {d.post_filter_msg}"
        return msg


# --- cluster events (what may make an unschedulable pod schedulable) ------------------------------
class ActionType(IntFlag):
    ADD = 1
    DELETE = 2
    UPDATE_NODE_ALLOCATABLE = 4
    UPDATE_NODE_LABEL = 8
    UPDATE_NODE_TAINT = 16
    UPDATE_NODE_CONDITION = 32
    UPDATE_NODE_ANNOTATION = 64
    UPDATE_POD_LABEL = 128
    UPDATE_POD_SCALE_DOWN = 256
    UPDATE_POD_TOLERATION = 512
    UPDATE_POD_SCHEDULING_GATES_ELIMINATED = 1024
    UPDATE_OTHER = 2048
    UPDATE = 4 | 8 | 16 | 32 | 64 | 128 | 256 | 512 | 1024 | 2048
    ALL = 4095


# Event resources.
NODE = "Node"
ASSIGNED_POD = "AssignedPod"
UNSCHEDULED_POD = "UnscheduledPod"
PVC = "PersistentVolumeClaim"
PV = "PersistentVolume"
STORAGE_CLASS = "StorageClass"
NAMESPACE = "Namespace"
WILDCARD = "*"


@dataclass(frozen=True)
class ClusterEvent:
    resource: str
    action: ActionType
    label: str = ""

    def matches(self, incoming: ClusterEvent) -> bool:
        """Does this registered event cover `incoming`?"""
        if self.resource == WILDCARD:
            return True
        return self.resource == incoming.resource and bool(self.action & incoming.action)


# A queueing hint: (pod, old object, new object) -> True when the event may make the pod schedulable.
QueueingHint = Callable[[PodInfo, Any, Any], bool]


@dataclass(frozen=True)
class ClusterEventWithHint:
    event: ClusterEvent
    hint: QueueingHint | None = None


EVENT_UNSCHEDULABLE_TIMEOUT = ClusterEvent(WILDCARD, ActionType.ALL, "UnschedulableTimeout")
EVENT_FORCE_ACTIVATE = ClusterEvent(WILDCARD, ActionType.ALL, "ForceActivate")
EVENT_ASSIGNED_POD_DELETE = ClusterEvent(ASSIGNED_POD, ActionType.DELETE, "AssignedPodDelete")


# --- what plugins can read ------------------------------------------------------------------------
class Store(Protocol):
    def get(self, key: str) -> Obj | None: ...

    def list(self) -> list[Obj]: ...


class StaticStore:
    """A Store over a fixed list of objects (tests and tools)."""

    def __init__(self, objects: Iterable[Obj] = ()) -> None:
        self._items: dict[str, Obj] = {}
        for obj in objects:
            self.put(obj)

    def put(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta.get("name", "")
        self._items[key] = obj

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def list(self) -> list[Obj]:
        return list(self._items.values())


class Listers:
    """Read-only access to the cluster objects plugins consult, by plural resource name."""

    def __init__(self, stores: Mapping[str, Store] | None = None) -> None:
        self.stores: dict[str, Store] = dict(stores or {})

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        store = self.stores.get(resource)
        if store is None:
            return None
        return store.get(f"{namespace}/{name}" if namespace else name)

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        store = self.stores.get(resource)
        if store is None:
            return []
        items = store.list()
        if namespace is None:
            return items
        return [o for o in items if (o.get("metadata") or {}).get("namespace") == namespace]

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = self.get("namespaces", "", namespace)
        return ((ns or {}).get("metadata") or {}).get("labels") or {}


class Handle:
    """What a plugin may use: the snapshot of this cycle, listers, the API client and the nominator."""

    def __init__(self, *, listers: Listers | None = None, client: Any = None, recorder: Any = None,
                 nominator: Nominator | None = None, snapshot: Snapshot | None = None,
                 scheduler_name: str = "default-scheduler") -> None:
        self.listers = listers or Listers()
        self.client = client
        self.recorder = recorder
        self.nominator = nominator
        self.snapshot: Snapshot | None = snapshot
        self.scheduler_name = scheduler_name
        self.framework: Framework | None = None


class Plugin:
    """Base class: `name` identifies the plugin in configuration and in statuses."""

    name: ClassVar[str] = ""

    def __init__(self, handle: Handle, args: Mapping[str, Any] | None = None) -> None:
        self.handle = handle
        self.args = dict(args or {})


# --- the framework --------------------------------------------------------------------------------
EXTENSION_POINTS = ("queueSort", "preEnqueue", "preFilter", "filter", "postFilter", "preScore", "score",
                    "reserve", "permit", "preBind", "bind", "postBind")
# Extension point -> the method a plugin must define to implement it.
EXTENSION_METHODS = {"queueSort": "less", "preEnqueue": "pre_enqueue", "preFilter": "pre_filter",
                     "filter": "filter", "postFilter": "post_filter", "preScore": "pre_score", "score": "score",
                     "reserve": "reserve", "permit": "permit", "preBind": "pre_bind", "bind": "bind",
                     "postBind": "post_bind"}
MAX_PERMIT_WAIT = 15 * 60.0


@dataclass
class WaitingPod:
    pod: PodInfo
    pending: dict[str, float]
    future: asyncio.Future[Status | None]

    def allow(self, plugin: str) -> None:
        self.pending.pop(plugin, None)
        if not self.pending and not self.future.done():
            self.future.set_result(None)

    def reject(self, plugin: str, message: str) -> None:
        if not self.future.done():
            self.future.set_result(unschedulable(message).with_plugin(plugin))


class Framework:
    """The plugins of one profile, instantiated and ordered per extension point."""

    def __init__(self, profile: Profile, registry: Mapping[str, type[Plugin]], handle: Handle) -> None:
        self.profile_name = profile.scheduler_name
        self.percentage_of_nodes_to_score = profile.percentage_of_nodes_to_score
        self.handle = handle
        handle.framework = self
        handle.scheduler_name = profile.scheduler_name
        self.plugins: dict[str, Plugin] = {}
        points: dict[str, list[Plugin]] = {p: [] for p in EXTENSION_POINTS}
        self.score_weights: dict[str, int] = {}
        for point, entries in profile.plugins.items():
            for name, weight in entries:
                plugin = self.plugins.get(name)
                if plugin is None:
                    cls = registry.get(name)
                    if cls is None:
                        raise ValueError(f"{name} does not exist")
                    plugin = self.plugins[name] = cls(handle, profile.plugin_args.get(name))
                if not hasattr(plugin, EXTENSION_METHODS[point]):
                    raise ValueError(f"plugin {name!r} does not extend {point} plugin")
                if plugin in points[point]:
                    raise ValueError(f"plugin {name!r} already registered as {point!r}")
                points[point].append(plugin)
                if point == "score":
                    self.score_weights[name] = weight or 1
        self.queue_sort = points["queueSort"]
        self.pre_enqueue_plugins = points["preEnqueue"]
        self.pre_filter_plugins = points["preFilter"]
        self.filter_plugins = points["filter"]
        self.post_filter_plugins = points["postFilter"]
        self.pre_score_plugins = points["preScore"]
        self.score_plugins = points["score"]
        self.reserve_plugins = points["reserve"]
        self.permit_plugins = points["permit"]
        self.pre_bind_plugins = points["preBind"]
        self.bind_plugins = points["bind"]
        self.post_bind_plugins = points["postBind"]
        self.waiting_pods: dict[str, WaitingPod] = {}

    # -- queue ----------------------------------------------------------------------------------
    def queue_sort_func(self) -> Any:
        return self.queue_sort[0] if self.queue_sort else None

    def run_pre_enqueue_plugins(self, pi: PodInfo) -> Status | None:
        for pl in self.pre_enqueue_plugins:
            status = pl.pre_enqueue(pi)  # type: ignore[attr-defined]
            if not is_success(status):
                return status.with_plugin(pl.name)
        return None

    def events_to_register(self) -> dict[str, list[ClusterEventWithHint]]:
        events: dict[str, list[ClusterEventWithHint]] = {}
        for name, pl in self.plugins.items():
            register = getattr(pl, "events_to_register", None)
            if register is not None:
                events[name] = list(register())
        return events

    # -- filtering ------------------------------------------------------------------------------
    def run_pre_filter_plugins(self, state: CycleState, pi: PodInfo,
                               nodes: list[NodeInfo]) -> tuple[PreFilterResult, Status | None, set[str]]:
        """Returns (merged result, rejection or None, plugins that narrowed the node set)."""
        result = PreFilterResult()
        narrowing: list[str] = []
        for pl in self.pre_filter_plugins:
            r, status = pl.pre_filter(state, pi, nodes)  # type: ignore[attr-defined]
            if status is not None and status.code == Code.SKIP:
                state.skip_filter_plugins.add(pl.name)
                continue
            if not is_success(status):
                assert status is not None
                status.plugin = pl.name
                return result, status, set(narrowing)
            if r is not None and r.node_names is not None:
                narrowing.append(pl.name)
            result = result.merge(r)
            if result.node_names is not None and not result.node_names:
                msg = (f"node(s) didn't satisfy plugin {narrowing[0]}" if len(narrowing) == 1 else
                       f"node(s) didn't satisfy plugin(s) [{' '.join(narrowing)}] simultaneously")
                return result, unresolvable(msg), set(narrowing)
        return result, None, set(narrowing)

    def run_pre_filter_extension_add_pod(self, state: CycleState, pi: PodInfo, to_add: PodInfo,
                                         ni: NodeInfo) -> None:
        for pl in self.pre_filter_plugins:
            if pl.name in state.skip_filter_plugins:
                continue
            add = getattr(pl, "add_pod", None)
            if add is not None:
                add(state, pi, to_add, ni)

    def run_pre_filter_extension_remove_pod(self, state: CycleState, pi: PodInfo, to_remove: PodInfo,
                                            ni: NodeInfo) -> None:
        for pl in self.pre_filter_plugins:
            if pl.name in state.skip_filter_plugins:
                continue
            remove = getattr(pl, "remove_pod", None)
            if remove is not None:
                remove(state, pi, to_remove, ni)

    def run_filter_plugins(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> Status | None:
        skip = state.skip_filter_plugins
        for pl in self.filter_plugins:
            if pl.name in skip:
                continue
            status = pl.filter(state, pi, ni)  # type: ignore[attr-defined]
            if status is not None and status.code != Code.SUCCESS:
                if status.code == Code.ERROR:
                    return error(f"running {pl.name!r} filter plugin: {status.message}").with_plugin(pl.name)
                status.plugin = pl.name
                return status
        return None

    def filter_rows(self, state: CycleState, pi: PodInfo, columns: NodeColumns, rows: Rows,
                    statuses: NodeToStatus) -> Mask:
        """Which of the nodes at `rows` pass every filter. Plugin by plugin, as upstream's node-by-node
        loop would: a node that fails keeps the status of the first plugin that rejected it."""
        passing = np.ones(len(rows), dtype=bool)
        remaining = rows
        skip = state.skip_filter_plugins
        for pl in self.filter_plugins:
            if pl.name in skip or not len(remaining):
                continue
            vectorised = getattr(pl, "filter_rows", None)
            sure = vectorised(state, pi, columns, remaining) if vectorised is not None else None
            if sure is not None and sure.all():
                continue
            if sure is None:
                positions: Iterable[int] = range(len(remaining))
                unsure_rows = remaining.tolist()
            else:
                unsure = np.flatnonzero(~sure)
                positions, unsure_rows = unsure.tolist(), remaining[unsure].tolist()
            rejected: list[int] = []
            infos = columns.node_infos
            for i, row in zip(positions, unsure_rows, strict=True):
                ni = infos[row]
                status = pl.filter(state, pi, ni)  # type: ignore[attr-defined]
                if status is None or status.code == Code.SUCCESS:
                    continue
                if status.code == Code.ERROR:
                    status = error(f"running {pl.name!r} filter plugin: {status.message}")
                status.plugin = pl.name
                statuses.set(ni.name, status)
                rejected.append(i)
            if rejected:
                keep = np.ones(len(remaining), dtype=bool)
                keep[rejected] = False
                passing[np.flatnonzero(passing)[rejected]] = False
                remaining = remaining[keep]
        return passing

    def run_filter_plugins_with_nominated_pods(self, state: CycleState, pi: PodInfo,
                                               ni: NodeInfo) -> Status | None:
        """Filters with equal-or-higher-priority pods nominated to this node counted as if running there
        (so that a preemptor's room is not taken), then without them (for anti-affinity between them)."""
        nominator = self.handle.nominator
        nominated = [p for p in (nominator.nominated_pods_for_node(ni.name) if nominator else [])
                     if p.uid != pi.uid and p.priority >= pi.priority]
        if nominated:
            state_out = state.clone()
            node_out = ni.clone()
            for p in nominated:
                node_out.add_pod(p)
                self.run_pre_filter_extension_add_pod(state_out, pi, p, node_out)
            status = self.run_filter_plugins(state_out, pi, node_out)
            if not is_success(status):
                return status
        return self.run_filter_plugins(state, pi, ni)

    async def run_post_filter_plugins(self, state: CycleState, pi: PodInfo,
                                      statuses: NodeToStatus) -> tuple[PostFilterResult | None, Status]:
        reasons: list[str] = []
        result: PostFilterResult | None = None
        rejector = ""
        for pl in self.post_filter_plugins:
            r, status = await pl.post_filter(state, pi, statuses)  # type: ignore[attr-defined]
            if is_success(status):
                return r, Status(Code.SUCCESS, *(status.reasons if status else []), plugin=pl.name)
            assert status is not None
            if status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
                return r, status.with_plugin(pl.name)
            if not status.is_rejected():
                return None, error(status.message).with_plugin(pl.name)
            if r is not None and result is None:
                result = r
            reasons.extend(status.reasons)
            rejector = rejector or pl.name
        return result, Status(Code.UNSCHEDULABLE, *reasons, plugin=rejector)

    # -- scoring --------------------------------------------------------------------------------
    def run_pre_score_plugins(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        for pl in self.pre_score_plugins:
            status = pl.pre_score(state, pi, nodes)  # type: ignore[attr-defined]
            if status is not None:
                if status.code == Code.SKIP:
                    state.skip_score_plugins.add(pl.name)
                elif status.code != Code.SUCCESS:
                    return error(f"running PreScore plugin {pl.name!r}: {status.message}").with_plugin(pl.name)
        return None

    def run_score_plugins(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo], columns: NodeColumns,
                          rows: Rows) -> np.ndarray:
        """The weighted total score of each node (`nodes` are the NodeInfos at `rows`)."""
        totals = np.zeros(len(nodes), dtype=np.int64)
        skip = state.skip_score_plugins
        for pl in self.score_plugins:
            if pl.name in skip:
                continue
            vectorised = getattr(pl, "score_rows", None)
            scores = vectorised(state, pi, columns, rows) if vectorised is not None else None
            if scores is None:
                scores = [pl.score(state, pi, ni) for ni in nodes]  # type: ignore[attr-defined]
            normalize = getattr(pl, "normalize_score", None)
            if normalize is not None:
                # In place, on what the plugin gave: its score_rows array, or the list of its scores.
                normalize(state, pi, nodes, scores)
            if len(scores) and not _in_score_range(scores):
                bad = next(s for s in scores if s > MAX_NODE_SCORE or s < 0)
                raise ValueError(f"plugin {pl.name!r} returns an invalid score {bad}, it should in the "
                                 f"range of [0, {MAX_NODE_SCORE}] after normalizing")
            totals += np.asarray(scores, dtype=np.int64) * self.score_weights[pl.name]
        return totals

    # -- reserve / permit / bind ----------------------------------------------------------------
    def run_reserve_plugins_reserve(self, state: CycleState, pi: PodInfo, node: str) -> Status | None:
        for pl in self.reserve_plugins:
            status = pl.reserve(state, pi, node)  # type: ignore[attr-defined]
            if not is_success(status):
                assert status is not None
                if status.is_rejected():
                    return status.with_plugin(pl.name)
                return error(f"running Reserve plugin {pl.name!r}: {status.message}").with_plugin(pl.name)
        return None

    def run_reserve_plugins_unreserve(self, state: CycleState, pi: PodInfo, node: str) -> None:
        for pl in reversed(self.reserve_plugins):
            unreserve = getattr(pl, "unreserve", None)
            if unreserve is not None:
                unreserve(state, pi, node)

    def run_permit_plugins(self, state: CycleState, pi: PodInfo, node: str) -> Status | None:
        waits: dict[str, float] = {}
        for pl in self.permit_plugins:
            status, timeout = pl.permit(state, pi, node)  # type: ignore[attr-defined]
            if status is None or status.code == Code.SUCCESS:
                continue
            if status.is_rejected():
                return status.with_plugin(pl.name)
            if status.code == Code.WAIT:
                waits[pl.name] = min(timeout, MAX_PERMIT_WAIT)
                continue
            return error(f"running Permit plugin {pl.name!r}: {status.message}").with_plugin(pl.name)
        if waits:
            future: asyncio.Future[Status | None] = asyncio.get_running_loop().create_future()
            self.waiting_pods[pi.uid] = WaitingPod(pi, waits, future)
            return Status(Code.WAIT)
        return None

    async def wait_on_permit(self, pi: PodInfo) -> Status | None:
        waiting = self.waiting_pods.get(pi.uid)
        if waiting is None:
            return None
        try:
            timeout = max(waiting.pending.values()) if waiting.pending else 0
            return await asyncio.wait_for(asyncio.shield(waiting.future), timeout)
        except TimeoutError:
            plugin = next(iter(waiting.pending), "")
            return unschedulable(f"rejected due to timeout after waiting {timeout:.0f}s at plugin "
                                 f"{plugin}").with_plugin(plugin)
        finally:
            self.waiting_pods.pop(pi.uid, None)

    async def run_pre_bind_plugins(self, state: CycleState, pi: PodInfo, node: str) -> Status | None:
        for pl in self.pre_bind_plugins:
            status = await pl.pre_bind(state, pi, node)  # type: ignore[attr-defined]
            if not is_success(status):
                assert status is not None
                if status.is_rejected():
                    return status.with_plugin(pl.name)
                return error(f"running PreBind plugin {pl.name!r}: {status.message}").with_plugin(pl.name)
        return None

    async def run_bind_plugins(self, state: CycleState, pi: PodInfo, node: str) -> Status | None:
        for pl in self.bind_plugins:
            status = await pl.bind(state, pi, node)  # type: ignore[attr-defined]
            if status is not None and status.code == Code.SKIP:
                continue
            if not is_success(status):
                assert status is not None
                if status.is_rejected():
                    return status.with_plugin(pl.name)
                return error(f"running Bind plugin {pl.name!r}: {status.message}").with_plugin(pl.name)
            return None
        return Status(Code.SKIP)

    def run_post_bind_plugins(self, state: CycleState, pi: PodInfo, node: str) -> None:
        for pl in self.post_bind_plugins:
            pl.post_bind(state, pi, node)  # type: ignore[attr-defined]


def _in_score_range(scores: list[int] | np.ndarray) -> bool:
    if isinstance(scores, np.ndarray):
        return bool(scores.min() >= 0 and scores.max() <= MAX_NODE_SCORE)
    return min(scores) >= 0 and max(scores) <= MAX_NODE_SCORE


def default_normalize_score(max_priority: int, reverse: bool, scores: list[int] | np.ndarray) -> None:
    """helper.DefaultNormalizeScore, in place: scale to [0, max_priority] by the highest score (reversed
    if asked)."""
    if isinstance(scores, np.ndarray):
        highest = int(scores.max()) if len(scores) else 0
        if highest == 0:
            if reverse:
                scores[:] = max_priority
            return
        scaled = max_priority * scores // highest
        scores[:] = max_priority - scaled if reverse else scaled
        return
    highest = max(scores, default=0)
    if highest == 0:
        if reverse:
            scores[:] = [max_priority] * len(scores)
        return
    for i, s in enumerate(scores):
        s = max_priority * s // highest
        scores[i] = max_priority - s if reverse else s
