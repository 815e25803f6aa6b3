"""Image garbage collection by disk thresholds on a real engine: unused images go, least recently used
first, images in use and images seen too recently stay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from engine_harness import EngineEnv

from pocketkube.engine.containers import ContainerConfig
from pocketkube.engine.images.store import ImageNotFound
from pocketkube.kubelet.imagegc import ImageGC, ImageGCPolicy


async def test_unused_images_are_collected_above_the_threshold(engine_env: EngineEnv, busybox_tarball: Path
                                                                ) -> None:
    engine = engine_env.engine()
    engine_env.out("import", "--change", 'CMD ["true"]', str(busybox_tarball), "spare:1")
    spare = engine.images.resolve("spare:1")
    used = engine.images.resolve("busybox:latest")
    container = await engine.create(ContainerConfig(image="busybox:latest", network="none"))
    try:
        now = time.time()
        # below the high threshold nothing is touched, whatever is unused
        assert ImageGC(engine, ImageGCPolicy(high_threshold=100, low_threshold=100, minimum_age=0)).collect(now) == []
        # an image first seen moments ago is spared
        assert ImageGC(engine, ImageGCPolicy(high_threshold=0, low_threshold=0, minimum_age=60)).collect(now) == []
        removed = ImageGC(engine, ImageGCPolicy(high_threshold=0, low_threshold=0, minimum_age=0)).collect(now)
        assert removed == [spare.id]
        with pytest.raises(ImageNotFound):
            engine.images.resolve("spare:1")
        assert engine.images.resolve("busybox:latest").id == used.id  # in use by a container
    finally:
        await engine.remove(container.id, force=True)


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="low"):
        ImageGCPolicy(high_threshold=70, low_threshold=80)
