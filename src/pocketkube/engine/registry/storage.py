"""What a registry keeps on disk, under ``DATA_DIR/registry``.

- ``blobs/sha256/<hex>``: every blob once, whichever repositories hold it; a blob appears only after its
  upload finished and its digest was verified (upload file fsynced, then renamed into place).
- ``uploads/<uuid>/``: an upload session, ``data`` (the bytes so far) and ``info.json`` (repository, start).
- ``repositories/<name>/``: what one repository may serve, as links to global content, like Docker's
  distribution: ``_layers/sha256/<hex>`` (blobs pushed or mounted here), ``_manifests/revisions/sha256/<hex>``
  (manifests, with their media type), ``_manifests/tags/<tag>`` (a manifest digest) and
  ``_referrers/sha256/<subject hex>/<hex>`` (the descriptor of a manifest whose ``subject`` is that digest).
  Repository path components cannot start with ``_``, so these names never collide with a repository.

Every file is written whole (temp file, fsync, rename), so a crash never leaves a torn record.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid as uuids
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.content import validate_digest
from pocketkube.engine.images.store import media_type_of
from pocketkube.engine.registry.errors import DistributionError
from pocketkube.fsutil import fsync_dir, write_atomic

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_UPLOAD_SESSIONS = 1000
# A blob younger than this survives garbage collection: a pusher uploads blobs before the manifest that
# references them, and that manifest may still be on its way.
GC_GRACE_SECONDS = 3600.0
STALE_UPLOAD_SECONDS = 24 * 3600.0

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_NAME_MAX = 255
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_UUID_RE = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}")
_HEX_RE = re.compile(r"[a-f0-9]{64}")
_READ_SIZE = 1024 * 1024
_MANIFEST_TYPES = frozenset({mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST})


def validate_name(name: str) -> str:
    """A repository name as the spec's grammar allows (lower-case components joined by ``/``)."""
    if len(name) > _NAME_MAX or not _NAME_RE.fullmatch(name):
        raise DistributionError("NAME_INVALID", f"invalid repository name {name!r}", detail={"name": name})
    return name


def is_tag(reference: str) -> bool:
    return bool(_TAG_RE.fullmatch(reference))


def parse_digest(text: str) -> str:
    """``sha256:<hex>`` or DIGEST_INVALID (only sha256 is stored)."""
    try:
        return validate_digest(text)
    except ValueError as err:
        raise DistributionError("DIGEST_INVALID", str(err), detail={"digest": text}) from None


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


@dataclass
class Upload:
    """An upload session: ``size`` bytes received so far for repository ``name``."""
    uuid: str
    name: str
    started: float
    size: int


@dataclass
class Manifest:
    digest: str
    media_type: str
    data: bytes


@dataclass
class GarbageReport:
    """What a collection found: blobs kept because referenced, blobs removed (or, dry run, removable) with
    their sizes, unreferenced blobs spared because they are recent, and abandoned upload sessions removed."""
    marked: int = 0
    deleted: list[tuple[str, int]] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)
    stale_uploads: list[str] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(size for _, size in self.deleted)


class _RunningHash:
    """sha256 of an upload's data so far; rebuilt from the file when it is not current (e.g. after a
    restart), so an upload can be resumed without the server holding anything but this state."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.offset = 0


class UploadWriter:
    """Appends one request's bytes to an upload session, hashing as it writes."""

    def __init__(self, file: BinaryIO, running: _RunningHash) -> None:
        self._file = file
        self._running = running
        self.written = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._running.hasher.update(data)
        self._running.offset += len(data)
        self.written += len(data)


class RegistryStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._uploads = self.root / "uploads"
        self._repositories = self.root / "repositories"
        for directory in (self._blobs, self._uploads, self._repositories):
            directory.mkdir(parents=True, exist_ok=True)
        self._hashes: dict[str, _RunningHash] = {}

    # --- blobs ---------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self._blobs / _hex(parse_digest(digest))

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def _repo(self, name: str) -> Path:
        return self._repositories / validate_name(name)

    def _layer_link(self, name: str, digest: str) -> Path:
        return self._repo(name) / "_layers" / "sha256" / _hex(parse_digest(digest))

    def repository_blob(self, name: str, digest: str) -> Path:
        """The file of a blob this repository may serve; BLOB_UNKNOWN when it may not (or it is gone)."""
        path = self.blob_path(digest)
        if not self._layer_link(name, digest).is_file() or not path.is_file():
            raise DistributionError("BLOB_UNKNOWN", detail={"digest": digest})
        return path

    def link_blob(self, name: str, digest: str) -> None:
        link = self._layer_link(name, digest)
        if not link.is_file():
            write_atomic(link, digest.encode())

    def unlink_blob(self, name: str, digest: str) -> None:
        """Forget a blob in one repository (the content stays for others until garbage collection)."""
        try:
            self._layer_link(name, digest).unlink()
        except FileNotFoundError:
            raise DistributionError("BLOB_UNKNOWN", detail={"digest": digest}) from None

    def touch_blob(self, digest: str) -> None:
        """Mark a blob as just used, so garbage collection's grace period covers a push that relies on it."""
        os.utime(self.blob_path(digest))

    def mount_blob(self, name: str, digest: str, source: str) -> bool:
        """Link a blob that ``source`` holds into ``name``; False when ``source`` does not hold it."""
        try:
            self.repository_blob(source, digest)
        except DistributionError:
            return False
        self.link_blob(name, digest)
        self.touch_blob(digest)
        return True

    # --- uploads -------------------------------------------------------------------------------------

    def start_upload(self, name: str) -> Upload:
        validate_name(name)
        if sum(1 for _ in os.scandir(self._uploads)) >= MAX_UPLOAD_SESSIONS:
            raise DistributionError("TOOMANYREQUESTS", f"more than {MAX_UPLOAD_SESSIONS} uploads in progress")
        upload_id = str(uuids.uuid4())
        directory = self._uploads / upload_id
        directory.mkdir()
        started = time.time()
        (directory / "data").touch()
        write_atomic(directory / "info.json", json.dumps({"name": name, "started": started}).encode())
        self._hashes[upload_id] = _RunningHash()
        return Upload(upload_id, name, started, 0)

    def get_upload(self, name: str, upload_id: str) -> Upload:
        unknown = DistributionError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id})
        if not _UUID_RE.fullmatch(upload_id):
            raise unknown
        directory = self._uploads / upload_id
        try:
            info = json.loads((directory / "info.json").read_bytes())
            size = (directory / "data").stat().st_size
        except (FileNotFoundError, ValueError):
            raise unknown from None
        if info.get("name") != name:
            raise unknown
        return Upload(upload_id, name, info["started"], size)

    def _running_hash(self, upload: Upload) -> _RunningHash:
        running = self._hashes.get(upload.uuid)
        if running is None or running.offset != upload.size:
            running = _RunningHash()
            with (self._uploads / upload.uuid / "data").open("rb") as f:
                while chunk := f.read(_READ_SIZE):
                    running.hasher.update(chunk)
                    running.offset += len(chunk)
            self._hashes[upload.uuid] = running
        return running

    @contextmanager
    def append(self, upload: Upload, start: int | None = None) -> Iterator[UploadWriter]:
        """Write the next bytes of an upload. ``start`` (from Content-Range) must be where the data so far
        ends, else RANGE (416): chunks arrive in order. Whatever was written stays, even when the client
        goes away mid-chunk, so the upload can resume from the size ``get_upload`` reports."""
        if start is not None and start != upload.size:
            raise DistributionError("RANGE", f"chunk starts at {start} but the upload has {upload.size} bytes",
                                    detail={"uuid": upload.uuid, "size": upload.size})
        running = self._running_hash(upload)
        # Unbuffered: the upload status (the file size) must count every byte this request has written.
        with (self._uploads / upload.uuid / "data").open("ab", buffering=0) as f:
            writer = UploadWriter(f, running)
            try:
                yield writer
            finally:
                upload.size += writer.written

    def commit_upload(self, upload: Upload, digest: str) -> None:
        """Finish an upload as blob ``digest`` in its repository; DIGEST_INVALID (and the session is
        dropped) when the content has another digest."""
        digest = parse_digest(digest)
        actual = "sha256:" + self._running_hash(upload).hasher.hexdigest()
        data = self._uploads / upload.uuid / "data"
        if actual != digest:
            self.cancel_upload(upload)
            raise DistributionError("DIGEST_INVALID", f"content has digest {actual}, not {digest}",
                                    detail={"digest": digest})
        with data.open("rb") as f:
            os.fsync(f.fileno())
        target = self.blob_path(digest)
        if target.exists():
            self.touch_blob(digest)  # pushed before (maybe to another repository): keep the stored copy
        else:
            os.rename(data, target)
            fsync_dir(self._blobs)
        self.link_blob(upload.name, digest)
        self.cancel_upload(upload)

    def cancel_upload(self, upload: Upload) -> None:
        self._hashes.pop(upload.uuid, None)
        shutil.rmtree(self._uploads / upload.uuid, ignore_errors=True)

    def store_blob(self, data: bytes) -> str:
        """Store small content (a manifest) directly; returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.blob_path(digest)
        if not target.exists():
            write_atomic(target, data)
        return digest

    # --- manifests -----------------------------------------------------------------------------------

    def _revision(self, name: str, digest: str) -> Path:
        return self._repo(name) / "_manifests" / "revisions" / "sha256" / _hex(parse_digest(digest))

    def _tag_file(self, name: str, tag: str) -> Path:
        if not is_tag(tag):
            raise DistributionError("MANIFEST_INVALID", f"invalid tag {tag!r}", detail={"tag": tag})
        return self._repo(name) / "_manifests" / "tags" / tag

    def _referrer_dir(self, name: str, subject: str) -> Path:
        return self._repo(name) / "_referrers" / "sha256" / _hex(parse_digest(subject))

    def resolve(self, name: str, reference: str) -> str:
        """The manifest digest a tag or digest names in a repository; MANIFEST_UNKNOWN otherwise."""
        if ":" in reference:  # tags cannot hold a colon
            digest = parse_digest(reference)
        else:
            try:
                digest = self._tag_file(name, reference).read_text().strip()
            except FileNotFoundError:
                raise DistributionError("MANIFEST_UNKNOWN", f"manifest unknown: tag {reference!r} not found",
                                        detail={"tag": reference}) from None
        if not self._revision(name, digest).is_file() or not self.has_blob(digest):
            raise DistributionError("MANIFEST_UNKNOWN", detail={"digest": digest})
        return digest

    def get_manifest(self, name: str, reference: str) -> Manifest:
        digest = self.resolve(name, reference)
        media_type = json.loads(self._revision(name, digest).read_bytes())["mediaType"]
        return Manifest(digest, media_type, self.blob_path(digest).read_bytes())

    def put_manifest(self, name: str, reference: str, data: bytes, content_type: str | None) -> tuple[str, str | None]:
        """Store a manifest under a tag or its digest after checking it. Returns (digest, subject digest or
        None). MANIFEST_INVALID for malformed documents, MANIFEST_BLOB_UNKNOWN when a blob or child
        manifest it references is not in this repository, DIGEST_INVALID when pushed by another digest."""
        validate_name(name)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        tag = None
        if ":" not in reference:
            tag = reference
            self._tag_file(name, tag)  # refuses an invalid tag before anything is stored
        elif parse_digest(reference) != digest:
            raise DistributionError("DIGEST_INVALID", f"manifest has digest {digest}, not {reference}",
                                    detail={"digest": reference})
        document, media_type = _parse_manifest(data, content_type)
        self._check_references(name, document, media_type)
        subject = document.get("subject")
        self.store_blob(data)
        write_atomic(self._revision(name, digest), json.dumps({"mediaType": media_type}).encode())
        if subject is not None:
            descriptor = {"mediaType": media_type, "digest": digest, "size": len(data)}
            artifact_type = document.get("artifactType") or (document.get("config") or {}).get("mediaType")
            if artifact_type:
                descriptor["artifactType"] = artifact_type
            if document.get("annotations"):
                descriptor["annotations"] = document["annotations"]
            write_atomic(self._referrer_dir(name, subject["digest"]) / _hex(digest),
                          json.dumps(descriptor).encode())
        if tag is not None:
            write_atomic(self._tag_file(name, tag), digest.encode())
        return digest, subject["digest"] if subject is not None else None

    def _check_references(self, name: str, document: dict, media_type: str) -> None:
        if mt.is_index(media_type):
            for child in _descriptors(document, "manifests"):
                if not self._revision(name, child["digest"]).is_file():
                    raise DistributionError("MANIFEST_BLOB_UNKNOWN", f"manifest {child['digest']} is not in {name}",
                                            detail={"digest": child["digest"]})
            return
        config = _descriptor(document.get("config"), "config")
        for descriptor in [config, *_descriptors(document, "layers")]:
            if descriptor.get("urls"):
                continue  # a foreign layer: fetched from its URLs, never pushed here
            try:
                path = self.repository_blob(name, descriptor["digest"])
            except DistributionError:
                raise DistributionError("MANIFEST_BLOB_UNKNOWN", f"blob {descriptor['digest']} is not in {name}",
                                        detail={"digest": descriptor["digest"]}) from None
            if path.stat().st_size != descriptor["size"]:
                raise DistributionError("MANIFEST_INVALID", f"blob {descriptor['digest']} has "
                                        f"{path.stat().st_size} bytes, the manifest says {descriptor['size']}")

    def delete_manifest(self, name: str, reference: str) -> None:
        """By tag: remove the tag only. By digest: remove the manifest from the repository with every tag
        pointing at it and its entry in the referrers of its subject."""
        digest = self.resolve(name, reference)
        if ":" not in reference:
            self._tag_file(name, reference).unlink()
            return
        for tag in self.tags(name):
            tag_file = self._tag_file(name, tag)
            if tag_file.read_text().strip() == digest:
                tag_file.unlink()
        try:
            subject = json.loads(self.blob_path(digest).read_bytes()).get("subject")
        except ValueError:
            subject = None
        if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
            (self._referrer_dir(name, subject["digest"]) / _hex(digest)).unlink(missing_ok=True)
        self._revision(name, digest).unlink()

    # --- listing -------------------------------------------------------------------------------------

    def repository_exists(self, name: str) -> bool:
        return (self._repo(name) / "_manifests").is_dir()

    def tags(self, name: str) -> list[str]:
        if not self.repository_exists(name):
            raise DistributionError("NAME_UNKNOWN", f"repository {name} not known to registry", detail={"name": name})
        tags_dir = self._repo(name) / "_manifests" / "tags"
        return sorted(entry.name for entry in os.scandir(tags_dir) if is_tag(entry.name)) if tags_dir.is_dir() else []

    def repositories(self) -> list[str]:
        """Every repository that has held a manifest, sorted."""
        names = []
        for directory, subdirs, _ in os.walk(self._repositories):
            if "_manifests" in subdirs:
                names.append(os.path.relpath(directory, self._repositories))
            subdirs[:] = [d for d in subdirs if not d.startswith("_")]
        return sorted(names)

    def referrers(self, name: str, subject: str) -> list[dict]:
        """Descriptors of the manifests in ``name`` whose subject is ``subject``."""
        if not self.repository_exists(name):
            raise DistributionError("NAME_UNKNOWN", f"repository {name} not known to registry", detail={"name": name})
        directory = self._referrer_dir(name, subject)
        if not directory.is_dir():
            return []
        return [json.loads(entry.read_bytes()) for entry in sorted(directory.iterdir()) if _HEX_RE.fullmatch(entry.name)]

    # --- garbage collection --------------------------------------------------------------------------

    def garbage_collect(self, *, dry_run: bool = False, grace: float = GC_GRACE_SECONDS,
                        stale_uploads: float = STALE_UPLOAD_SECONDS) -> GarbageReport:
        """Delete blobs no manifest of any repository references (their links go too), except blobs written
        in the last ``grace`` seconds, and upload sessions idle for ``stale_uploads`` seconds. Meant to run
        with the registry stopped; the grace period keeps uploads of a running one safe."""
        report = GarbageReport()
        live = self._mark()
        report.marked = len(live)
        now = time.time()
        for entry in os.scandir(self._blobs):
            digest = "sha256:" + entry.name
            if not _HEX_RE.fullmatch(entry.name) or digest in live:
                continue
            stat = entry.stat()
            if stat.st_mtime > now - grace:
                report.recent.append(digest)
                continue
            report.deleted.append((digest, stat.st_size))
            if not dry_run:
                Path(entry.path).unlink(missing_ok=True)
        if not dry_run:
            self._drop_dangling_links()
        for entry in os.scandir(self._uploads):
            data = Path(entry.path) / "data"
            last_write = data.stat().st_mtime if data.exists() else entry.stat().st_mtime
            if last_write < now - stale_uploads:
                report.stale_uploads.append(entry.name)
                if not dry_run:
                    self._hashes.pop(entry.name, None)
                    shutil.rmtree(entry.path, ignore_errors=True)
        report.deleted.sort()
        return report

    def _mark(self) -> set[str]:
        live: set[str] = set()
        for name in self.repositories():
            revisions = self._repo(name) / "_manifests" / "revisions" / "sha256"
            if not revisions.is_dir():
                continue
            for entry in os.scandir(revisions):
                if _HEX_RE.fullmatch(entry.name):
                    self._mark_manifest("sha256:" + entry.name, live)
        return live

    def _mark_manifest(self, digest: str, live: set[str]) -> None:
        if digest in live or not self.has_blob(digest):
            return
        live.add(digest)
        try:
            document = json.loads(self.blob_path(digest).read_bytes())
        except ValueError:
            return
        for child in document.get("manifests") or []:
            self._mark_manifest(child.get("digest", ""), live)
        for descriptor in [document.get("config") or {}, *(document.get("layers") or [])]:
            if isinstance(descriptor.get("digest"), str):
                live.add(descriptor["digest"])

    def _drop_dangling_links(self) -> None:
        """Blob links whose content was collected: the repository no longer holds those blobs."""
        for directory, subdirs, files in os.walk(self._repositories):
            if Path(directory).parent.name == "_layers":
                for file in files:
                    if not (self._blobs / file).exists():
                        (Path(directory) / file).unlink(missing_ok=True)
            subdirs[:] = [d for d in subdirs if d == "_layers" or not d.startswith("_")]


def _parse_manifest(data: bytes, content_type: str | None) -> tuple[dict, str]:
    """The manifest document and its media type, or MANIFEST_INVALID."""
    try:
        document = json.loads(data)
    except ValueError as err:
        raise DistributionError("MANIFEST_INVALID", f"manifest is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise DistributionError("MANIFEST_INVALID", "manifest is not a JSON object")
    if document.get("schemaVersion") != 2:
        raise DistributionError("MANIFEST_INVALID", f"unsupported manifest schemaVersion {document.get('schemaVersion')!r}"
                                " (only schema 2 manifests are accepted)")
    declared = document.get("mediaType")
    header = (content_type or "").split(";")[0].strip()
    if declared and header in _MANIFEST_TYPES and declared != header:
        raise DistributionError("MANIFEST_INVALID", f"manifest mediaType {declared} does not match Content-Type {header}")
    media_type = declared or (header if header in _MANIFEST_TYPES else media_type_of(document))
    if media_type not in _MANIFEST_TYPES:
        raise DistributionError("MANIFEST_INVALID", f"unsupported manifest media type {media_type!r}")
    if mt.is_index(media_type):
        _descriptors(document, "manifests")
    else:
        _descriptor(document.get("config"), "config")
        _descriptors(document, "layers")
    if "subject" in document:
        _descriptor(document["subject"], "subject")
    return document, media_type


def _descriptor(value: Any, where: str) -> dict:
    if (not isinstance(value, dict) or not isinstance(value.get("mediaType"), str)
            or not isinstance(value.get("size"), int) or value["size"] < 0 or not isinstance(value.get("digest"), str)):
        raise DistributionError("MANIFEST_INVALID", f"{where}: a descriptor needs mediaType, digest and size")
    try:
        validate_digest(value["digest"])
    except ValueError as err:
        raise DistributionError("MANIFEST_INVALID", f"{where}: {err}") from None
    return value


def _descriptors(document: dict, key: str) -> list[dict]:
    values = document.get(key)
    if not isinstance(values, list):
        raise DistributionError("MANIFEST_INVALID", f"manifest needs a {key!r} list")
    return [_descriptor(value, f"{key}[{i}]") for i, value in enumerate(values)]
