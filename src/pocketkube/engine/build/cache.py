"""The build cache: for every step a build ran, its cache key → what it produced (a layer blob or
nothing, and when). Records are small JSON files under DATA_DIR/engine/build/cache, written atomically,
so they survive restarts and are shared by concurrent builds.

A step's key chains everything that decides its result: the key of the step before it, the layers it
runs on, its instruction after expansion (with the build args it sees) and, for COPY/ADD, the checksum
of its sources. The layer blobs records name are kept from image garbage collection through
``referenced_blobs``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pocketkube.engine.images.content import ContentStore
from pocketkube.engine.images.store import Layer


@dataclass
class CacheRecord:
    created: str
    layer: Layer | None

    def to_json(self) -> dict:
        layer = None
        if self.layer is not None:
            layer = {"digest": self.layer.digest, "mediaType": self.layer.media_type, "size": self.layer.size,
                     "diffID": self.layer.diff_id, "uncompressedSize": self.layer.uncompressed_size}
        return {"created": self.created, "layer": layer}

    @classmethod
    def from_json(cls, document: dict) -> CacheRecord:
        layer = document.get("layer")
        return cls(created=document["created"], layer=None if layer is None else Layer(
            digest=layer["digest"], media_type=layer["mediaType"], size=layer["size"], diff_id=layer["diffID"],
            uncompressed_size=layer.get("uncompressedSize")))


def cache_key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def cache_dir(data_dir: Path) -> Path:
    return data_dir / "engine" / "build" / "cache"


class BuildCache:
    def __init__(self, root: Path, content: ContentStore) -> None:
        self.root = root
        self.content = content
        self.root.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> CacheRecord | None:
        """The record for ``key`` whose layer is still stored, else None."""
        try:
            record = CacheRecord.from_json(json.loads(self._path(key).read_bytes()))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        if record.layer is not None and not self.content.exists(record.layer.digest):
            return None
        return record

    def put(self, key: str, record: CacheRecord) -> None:
        path = self._path(key)
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=".record-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(record.to_json(), out)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def records(self) -> list[CacheRecord]:
        found = []
        for path in self.root.glob("*.json"):
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
                found.append(CacheRecord.from_json(json.loads(path.read_bytes())))
        return found

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"


def referenced_blobs(data_dir: Path) -> set[str]:
    """The layer blobs the build cache uses: what image garbage collection must keep
    (``ImageStore.gc(keep_blobs=referenced_blobs(data_dir))``, under ``ImageStore.locked()``)."""
    root = cache_dir(data_dir)
    if not root.is_dir():
        return set()
    cache = BuildCache(root, ContentStore(data_dir / "engine" / "content"))
    return {record.layer.digest for record in cache.records() if record.layer is not None}
