"""The numbers of a snapshot's nodes as numpy columns (row i is node_info_list[i]).

Filter and Score plugins read them to treat a few hundred nodes in one vectorised step instead of a
Python loop per node, the scheduler's hot path on a large cluster. The cache keeps the rows current:
a node's row is rewritten when the node changes, its pod columns whenever a pod is added or removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pocketkube.scheduler.types import NodeInfo

# Integers below 2**52 (and sums of two of them) are exact in float64 and leave int64 room for the
# scores' "* 100": larger ones (never seen in practice: 4 PB of memory) make the plugins fall back to
# their exact per-node Python code.
EXACT_LIMIT = 2**52

# Rows of NodeColumns.ints.
ALLOC_CPU, ALLOC_MEMORY, ALLOC_EPHEMERAL, ALLOC_PODS = 0, 1, 2, 3
REQ_CPU, REQ_MEMORY, REQ_EPHEMERAL = 4, 5, 6
NONZERO_CPU, NONZERO_MEMORY = 7, 8
NUM_PODS = 9
_INT_FIELDS = 10
# Rows of NodeColumns.flags.
UNSCHEDULABLE = 0
HARD_TAINTS = 1  # has a NoSchedule or NoExecute taint
PREFER_TAINTS = 2  # has a PreferNoSchedule taint
HAS_IMAGES = 3
_FLAG_FIELDS = 4

Rows = np.ndarray  # int64 row numbers
Mask = np.ndarray  # bool, one per row asked about


def _exact(values: tuple[int, ...]) -> bool:
    return all(-EXACT_LIMIT < v < EXACT_LIMIT for v in values)


def requests_exact(*amounts: int) -> bool:
    """A pod's requests are small enough for the vectorised arithmetic too."""
    return _exact(amounts)


class NodeColumns:
    """Per-node integers and flags of one node list, kept current by the NodeInfos attached to it."""

    def __init__(self, node_infos: list[NodeInfo]) -> None:
        n = len(node_infos)
        self.node_infos = node_infos
        self.ints = np.zeros((_INT_FIELDS, n), dtype=np.int64)
        self.flags = np.zeros((_FLAG_FIELDS, n), dtype=bool)
        # Each row's NodeInfo.generation as last written: rows whose node or pods changed since a plugin
        # last looked are the ones whose generation differs from what it remembers.
        self.generation = np.zeros(n, dtype=np.int64)
        self.all_rows: Rows = np.arange(n, dtype=np.int64)
        self._inexact_rows: set[int] = set()
        for row, ni in enumerate(node_infos):
            ni.columns, ni.row = self, row
            self.write_node(row, ni)

    @property
    def exact(self) -> bool:
        """Every value fits the vectorised arithmetic (else plugins take their per-node path)."""
        return not self._inexact_rows

    def detach(self) -> None:
        """The node list was replaced: its NodeInfos stop writing here."""
        for ni in self.node_infos:
            if ni.columns is self:
                ni.columns = None

    def write_node(self, row: int, ni: NodeInfo) -> None:
        a = ni.allocatable
        hard = prefer = False
        for taint in ni.taints:
            effect = taint.get("effect")
            hard = hard or effect in ("NoSchedule", "NoExecute")
            prefer = prefer or effect == "PreferNoSchedule"
        self.flags[:, row] = (ni.unschedulable, hard, prefer, bool(ni.image_states))
        self._store(row, slice(ALLOC_CPU, ALLOC_PODS + 1),
                    (a.milli_cpu, a.memory, a.ephemeral_storage, a.allowed_pod_number))
        self.write_pods(row, ni)

    def write_pods(self, row: int, ni: NodeInfo) -> None:
        self.generation[row] = ni.generation
        r, nz = ni.requested, ni.non_zero_requested
        self._store(row, slice(REQ_CPU, NUM_PODS + 1),
                    (r.milli_cpu, r.memory, r.ephemeral_storage, nz.milli_cpu, nz.memory, len(ni.pods)))

    def _store(self, row: int, fields: slice, values: tuple[int, ...]) -> None:
        # A row is exact again only once every one of its values is; its inexact values are stored as 0
        # (nobody reads them while the columns are inexact).
        if _exact(values):
            self.ints[fields, row] = values
            if row in self._inexact_rows and _exact(self._row_values(row)):
                self._inexact_rows.discard(row)
            return
        self._inexact_rows.add(row)
        self.ints[fields, row] = tuple(v if -EXACT_LIMIT < v < EXACT_LIMIT else 0 for v in values)

    def _row_values(self, row: int) -> tuple[int, ...]:
        ni = self.node_infos[row]
        a, r, nz = ni.allocatable, ni.requested, ni.non_zero_requested
        return (a.milli_cpu, a.memory, a.ephemeral_storage, a.allowed_pod_number, r.milli_cpu, r.memory,
                r.ephemeral_storage, nz.milli_cpu, nz.memory, len(ni.pods))

    def node_list(self, rows: Rows) -> list[NodeInfo]:
        infos = self.node_infos
        return [infos[r] for r in rows.tolist()]
