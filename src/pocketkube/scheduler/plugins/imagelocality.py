"""ImageLocality: prefer nodes that already hold the pod's images, scaled by how widely they spread."""

from __future__ import annotations

import numpy as np

from pocketkube.scheduler.columns import HAS_IMAGES, NodeColumns, Rows
from pocketkube.scheduler.framework import CycleState, Plugin
from pocketkube.scheduler.types import MAX_NODE_SCORE, NodeInfo, PodInfo, normalized_image_name

MB = 1024 * 1024
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB


def calculate_priority(sum_scores: int, num_containers: int) -> int:
    max_threshold = MAX_CONTAINER_THRESHOLD * num_containers
    sum_scores = min(max(sum_scores, MIN_THRESHOLD), max_threshold)
    return MAX_NODE_SCORE * (sum_scores - MIN_THRESHOLD) // (max_threshold - MIN_THRESHOLD)


class ImageLocality(Plugin):
    name = "ImageLocality"

    def score(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> int:
        return self._score(ni, _pod_images(pi), self._total_nodes())

    def score_rows(self, state: CycleState, pi: PodInfo, columns: NodeColumns, rows: Rows) -> np.ndarray:
        scores = np.zeros(len(rows), dtype=np.int64)
        holding = np.flatnonzero(columns.flags[HAS_IMAGES, rows])
        if len(holding):
            images, total = _pod_images(pi), self._total_nodes()
            scores[holding] = [self._score(ni, images, total) for ni in columns.node_list(rows[holding])]
        return scores

    def _total_nodes(self) -> int:
        snapshot = self.handle.snapshot
        return len(snapshot.node_info_list) if snapshot is not None else 1

    @staticmethod
    def _score(ni: NodeInfo, images: list[str], total: int) -> int:
        states = ni.image_states
        if not states:
            return 0  # calculate_priority(0, n) is always 0
        s = 0
        for image in images:
            st = states.get(image)
            if st is not None:
                s += int(st.size * (st.num_nodes / total))
        return calculate_priority(s, len(images))


def _pod_images(pi: PodInfo) -> list[str]:
    return [normalized_image_name(c.get("image") or "")
            for c in (pi.spec.get("initContainers") or []) + (pi.spec.get("containers") or [])]
