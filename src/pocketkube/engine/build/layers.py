"""A step's changes turned into an image layer: the diff of its snapshot as a plain tar (kept for
unpacking the next step's parent), stored gzip-compressed (OCI tar+gzip) in the content store."""

from __future__ import annotations

import tarfile
from pathlib import Path

from pocketkube.engine.build.gzipstream import CHUNK, GzipWriter
from pocketkube.engine.build.workspace import Sandbox
from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.store import Layer
from pocketkube.engine.snapshots.unpack import LayerStats


def diff_to_tar(sandbox: Sandbox, tar: Path, empty_dir: Path) -> LayerStats | None:
    """Write the sandbox's changes (unmounted) to ``tar``: its diff_id and size, None when there are none."""
    with open(tar, "wb") as out:
        stats = sandbox.diff(out, empty_dir)
    with open(tar, "rb") as check:
        return stats if check.read(tarfile.BLOCKSIZE).strip(b"\0") else None


def store_layer(tar: Path, stats: LayerStats, content: ContentStore) -> Layer:
    """Compress the plain layer tar (its diff_id and size known from writing it) into the content store."""
    with open(tar, "rb") as source, content.writer() as blob:
        compressed = GzipWriter(blob)
        while chunk := source.read(CHUNK):
            compressed.write(chunk)
        compressed.close()
    return Layer(digest=blob.digest, media_type=mt.OCI_LAYER_GZIP, size=blob.size, diff_id=stats.diff_id,
                 uncompressed_size=stats.size)
