"""Image garbage collection by disk thresholds, as upstream's image GC manager: once the filesystem holding
the images is more than `high_threshold` percent full, images no container uses are removed, least
recently used first, until it is below `low_threshold`; an image first seen less than `minimum_age`
seconds ago is spared (it may be about to be used)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pocketkube.engine.build.cache import referenced_blobs
from pocketkube.engine.engine import Engine
from pocketkube.engine.images.store import ImageNotFound

log = logging.getLogger(__name__)


@dataclass
class ImageGCPolicy:
    """upstream's defaults: --image-gc-high-threshold 85, --image-gc-low-threshold 80, 2 minutes minimum age."""

    high_threshold: int = 85
    low_threshold: int = 80
    minimum_age: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_threshold <= self.high_threshold <= 100:
            raise ValueError(f"image GC thresholds must satisfy 0 <= low ({self.low_threshold}) <= high "
                             f"({self.high_threshold}) <= 100")


class ImageGC:
    def __init__(self, engine: Engine, policy: ImageGCPolicy | None = None) -> None:
        self.engine = engine
        self.policy = policy or ImageGCPolicy()
        self._first_seen: dict[str, float] = {}
        self._last_used: dict[str, float] = {}

    def disk_usage(self) -> tuple[int, int]:
        """(bytes used, bytes in all) of the filesystem holding the engine's images."""
        fs = os.statvfs(self.engine.root)
        capacity = fs.f_blocks * fs.f_frsize
        return capacity - fs.f_bavail * fs.f_frsize, capacity

    def collect(self, now: float) -> list[str]:
        """One pass (blocking: run it in a thread); returns the IDs of the images removed."""
        images = self.engine.images.list()
        in_use = {container.image_id for container in self.engine.containers.list()}
        for image in images:
            self._first_seen.setdefault(image.id, now)
            if image.id in in_use:
                self._last_used[image.id] = now
        known = {image.id for image in images}
        for table in (self._first_seen, self._last_used):
            for image_id in [i for i in table if i not in known]:
                del table[image_id]
        used, capacity = self.disk_usage()
        if capacity <= 0 or used * 100 < self.policy.high_threshold * capacity:
            return []
        to_free = used - capacity * self.policy.low_threshold // 100
        candidates = [image for image in images if image.id not in in_use
                      and now - self._first_seen[image.id] >= self.policy.minimum_age]
        candidates.sort(key=lambda image: (self._last_used.get(image.id, 0.0), self._first_seen[image.id]))
        removed: list[str] = []
        freed = 0
        for image in candidates:
            if freed >= to_free:
                break
            try:
                self.engine.images.remove(image.id, force=True, in_use=self.engine.image_in_use)
            except ImageNotFound:
                continue
            freed += sum(layer.disk_size for layer in image.layers) + image.size
            removed.append(image.id)
        if removed:
            with self.engine.images.locked():
                self.engine.images.gc(keep_blobs=referenced_blobs(self.engine.data_dir))
            self.engine.collect_snapshots()
            log.info("image garbage collection removed %d images (disk %d%% full, high threshold %d%%)",
                     len(removed), used * 100 // capacity, self.policy.high_threshold)
        if freed < to_free:
            log.warning("image garbage collection could free only %d of the %d bytes wanted", freed, to_free)
        return removed
