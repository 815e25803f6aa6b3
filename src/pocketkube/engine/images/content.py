"""Content-addressed blob store: ``root/blobs/sha256/<hex>``, written through ``root/ingest``.

A blob appears under its digest only after it has been written completely, made durable (an fsync each, or
one filesystem sync for a batch) and verified, so readers (other processes included) never see a partial
blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pocketkube.fsutil import fsync_dir, syncfs

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_HEX_RE = re.compile(r"[a-f0-9]{64}")


class DigestMismatch(ValueError):
    """Content does not hash to the digest it was announced with."""


class BlobNotFound(KeyError):
    def __str__(self) -> str:
        return f"blob {self.args[0]} not found in the content store"


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 lowercase hex>``; raise ValueError otherwise."""
    if isinstance(digest, str) and _DIGEST_RE.fullmatch(digest):
        return digest
    algorithm, colon, _ = str(digest).partition(":")
    if colon and algorithm != "sha256" and re.fullmatch(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*", algorithm):
        raise ValueError(f"unsupported digest algorithm {algorithm!r} in {digest!r}: only sha256 is supported")
    raise ValueError(f"invalid digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex digits")


class BlobWriter:
    """Streams one blob into the ingest area; ``digest``, ``size`` and ``created`` are set once the
    ``ContentStore.writer`` block has finished."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._hash = hashlib.sha256()
        self._size = 0
        self.digest = ""
        self.size = 0
        self.created = False  # False when an identical blob was already stored

    def write(self, data: bytes | bytearray) -> int:
        self._file.write(data)
        self._hash.update(data)
        self._size += len(data)
        return len(data)

    def _finish(self, sync: bool) -> None:
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self._file.close()
        self.digest = "sha256:" + self._hash.hexdigest()
        self.size = self._size


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._ingest = self.root / "ingest"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._ingest.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self._blobs / validate_digest(digest).removeprefix("sha256:")

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def read_bytes(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def write_bytes(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data``; returns its digest. Raises DigestMismatch when ``expected`` differs."""
        with self.writer(expected) as w:
            w.write(data)
        return w.digest

    @contextlib.contextmanager
    def writer(self, expected: str | None = None) -> Iterator[BlobWriter]:
        """Stream a blob in; on leaving the block it is verified and moved into place atomically.
        An exception inside the block (or a digest mismatch) leaves nothing behind."""
        with self._ingesting(expected, sync=True) as (blob, temp):
            yield blob
        blob.created = self._publish(temp, blob.digest)
        if blob.created:
            fsync_dir(self._blobs)

    def batch(self) -> BlobBatch:
        """Blobs written together and made durable with one filesystem sync (a pull's layers)."""
        return BlobBatch(self)

    @contextlib.contextmanager
    def _ingesting(self, expected: str | None, *, sync: bool) -> Iterator[tuple[BlobWriter, Path]]:
        """A blob written into the ingest area and verified; removed again if anything fails."""
        if expected is not None:
            validate_digest(expected)
        fd, temp_name = tempfile.mkstemp(dir=self._ingest, prefix="blob-")
        temp = Path(temp_name)
        blob = BlobWriter(os.fdopen(fd, "wb"))
        try:
            yield blob, temp
            blob._finish(sync)
            if expected is not None and blob.digest != expected:
                raise DigestMismatch(f"content has digest {blob.digest}, expected {expected}")
        except BaseException:
            blob._file.close()
            temp.unlink(missing_ok=True)
            raise

    def _publish(self, temp: Path, digest: str) -> bool:
        """Move an ingested blob under its digest; False when it was there already."""
        target = self.path(digest)
        if target.exists():
            temp.unlink()
            return False
        os.rename(temp, target)
        return True

    def delete(self, digest: str) -> None:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def digests(self) -> Iterator[str]:
        for entry in os.scandir(self._blobs):
            if _HEX_RE.fullmatch(entry.name) and entry.is_file():
                yield "sha256:" + entry.name

    def prune_ingest(self, older_than: float = 3600.0) -> int:
        """Remove ingest files left by writers that died more than ``older_than`` seconds ago."""
        limit = time.time() - older_than
        removed = 0
        for entry in os.scandir(self._ingest):
            if entry.stat().st_mtime < limit:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed


class BlobBatch:
    """Blobs written without an fsync each and published together: `publish` syncs the filesystem once, and
    only then do the blobs appear under their digests, so a crash never leaves a name over lost data (the
    ingest files it leaves are pruned)."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self._written: list[tuple[Path, BlobWriter]] = []

    @contextlib.contextmanager
    def writer(self, expected: str | None = None) -> Iterator[BlobWriter]:
        """As ContentStore.writer, but the blob is stored only by `publish`."""
        with self._store._ingesting(expected, sync=False) as (blob, temp):
            yield blob
        self._written.append((temp, blob))

    def publish(self) -> None:
        """Make every blob written durable and visible (blocking: call it off the event loop)."""
        if not self._written:
            return
        store = self._store
        syncfs(store.root)
        for temp, blob in self._written:
            blob.created = store._publish(temp, blob.digest)
        fsync_dir(store._blobs)
        self._written.clear()

    def discard(self) -> None:
        """Drop the blobs written and not published."""
        for temp, _ in self._written:
            temp.unlink(missing_ok=True)
        self._written.clear()
