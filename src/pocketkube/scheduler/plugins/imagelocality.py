"""ImageLocality: prefer nodes that already hold the pod's images, scaled by how widely they spread."""

from __future__ import annotations

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

    def score_many(self, state: CycleState, pi: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        snapshot = self.handle.snapshot
        total = len(snapshot.node_info_list) if snapshot is not None else len(nodes)
        images = [normalized_image_name(c.get("image") or "")
                  for c in (pi.spec.get("initContainers") or []) + (pi.spec.get("containers") or [])]
        count = len(images)
        out = []
        for ni in nodes:
            states = ni.image_states
            if not states:
                out.append(0)  # calculate_priority(0, n) is always 0
                continue
            s = 0
            for image in images:
                st = states.get(image)
                if st is not None:
                    s += int(st.size * (st.num_nodes / total))
            out.append(calculate_priority(s, count))
        return out

    def score(self, state: CycleState, pi: PodInfo, ni: NodeInfo) -> int:
        return self.score_many(state, pi, [ni])[0]
