"""A step's changes turned into an image layer: the diff of its snapshot as a plain tar (kept for
unpacking the next step's parent), stored gzip-compressed (OCI tar+gzip) in the content store."""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from pathlib import Path

from pocketkube.engine.build.workspace import Sandbox
from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.store import Layer
from pocketkube.engine.snapshots.unpack import LayerStats

_CHUNK = 1 << 20
# gzip framing (wbits 31); zlib writes mtime 0 into the header, so equal tars give equal blobs
_GZIP_WBITS = 31
_GZIP_LEVEL = 6


def diff_to_tar(sandbox: Sandbox, tar: Path, empty_dir: Path) -> LayerStats | None:
    """Write the sandbox's changes (unmounted) to ``tar``: its diff_id and size, None when there are none."""
    with open(tar, "wb") as out:
        stats = sandbox.diff(out, empty_dir)
    with open(tar, "rb") as check:
        return stats if check.read(tarfile.BLOCKSIZE).strip(b"\0") else None


def store_layer(tar: Path, content: ContentStore) -> Layer:
    """Compress the plain layer tar into the content store."""
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    diff_id = hashlib.sha256()
    size = 0
    with open(tar, "rb") as source, content.writer() as blob:
        while chunk := source.read(_CHUNK):
            diff_id.update(chunk)
            size += len(chunk)
            blob.write(compressor.compress(chunk))
        blob.write(compressor.flush())
    return Layer(digest=blob.digest, media_type=mt.OCI_LAYER_GZIP, size=blob.size,
                 diff_id="sha256:" + diff_id.hexdigest(), uncompressed_size=size)
