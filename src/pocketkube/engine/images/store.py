"""The local image store: which images exist and which names point at them.

An image is content — a manifest, a config and layer blobs in the ContentStore — and its ID is its config
digest, as in Docker. The store's own metadata is three small JSON files under ``root``, each replaced
atomically (temp file, fsync, rename) and changed only under an exclusive flock on ``root/lock``, because
the CLI and the server share one store. Readers take no lock: every file is always whole.

- ``repositories.json``: normalised reference (``docker.io/library/busybox:latest`` or
  ``docker.io/library/busybox@sha256:...``) -> manifest digest
- ``images.json``: manifest digest -> ``{"id": config digest, "index": index digest or null}`` for every
  image, tagged or dangling
- ``layers.json``: diff_id -> ``{"blob": digest, "uncompressed": size}``, the uncompressed layer sizes
  that ``history`` and ``disk_usage`` report

Removing an image only forgets it; ``gc`` deletes the blobs nothing references any more.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.content import BlobNotFound, ContentStore, validate_digest
from pocketkube.engine.images.reference import InvalidReference, Reference, parse_reference
from pocketkube.fsutil import write_json_atomic

InUse = Callable[[str], str | bool | None]
"""Given an image ID: the ID of a container using that image (or just True), or a false value. With the
container's ID the refusal names it, as Docker does."""

_REPOSITORIES = "repositories.json"
_IMAGES = "images.json"
_LAYERS = "layers.json"
_HEX_RE = re.compile(r"[a-f0-9]+")
_ATTESTATION_ANNOTATION = "vnd.docker.reference.type"

# platform.machine() -> (GOARCH, variant) as image indexes spell them.
_ARCHITECTURES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i386": ("386", None), "i686": ("386", None),
    "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
}


class ImageNotFound(KeyError):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what

    def __str__(self) -> str:
        return f"No such image: {self.what}"


class ConflictError(RuntimeError):
    """A removal Docker refuses ("conflict: unable to delete ..."); the message is Docker's."""


class ImageInUse(ConflictError):
    """The image is used by a container."""


class InvalidImage(ValueError):
    """A manifest, index or config that is malformed, unsupported or refers to content that is missing."""


@dataclass
class Layer:
    digest: str
    media_type: str
    size: int
    diff_id: str
    uncompressed_size: int | None = None

    @property
    def disk_size(self) -> int:
        """What the layer occupies once unpacked (the blob size when that is unknown)."""
        return self.size if self.uncompressed_size is None else self.uncompressed_size


@dataclass
class Image:
    id: str
    manifest_digest: str
    manifest: dict
    config: dict
    layers: list[Layer]
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    index_digest: str | None = None

    @property
    def created(self) -> str | None:
        return self.config.get("created")

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


def host_platform() -> tuple[str, ...]:
    """This machine as an image platform: ``("linux", "amd64")`` or ``("linux", "arm", "v7")``."""
    machine = platform.machine()
    architecture, variant = _ARCHITECTURES.get(machine, (machine, None))
    return ("linux", architecture) if variant is None else ("linux", architecture, variant)


def select_manifest(index: dict, wanted: Sequence[str] | None = None) -> dict:
    """The descriptor in an image index for ``wanted`` (os, architecture[, variant]; default: this
    machine). Attestation manifests are skipped; a lone entry without a platform is taken as is."""
    os_name, architecture, *variant = wanted or host_platform()
    entries = [d for d in index.get("manifests") or []
               if (d.get("annotations") or {}).get(_ATTESTATION_ANNOTATION) != "attestation-manifest"]
    for entry in entries:
        entry_platform = entry.get("platform") or {}
        if (entry_platform.get("os"), entry_platform.get("architecture")) != (os_name, architecture):
            continue
        if variant and entry_platform.get("variant") not in (None, variant[0]):
            continue
        return entry
    if len(entries) == 1 and "platform" not in entries[0]:
        return entries[0]
    wanted_text = "/".join([os_name, architecture, *variant])
    raise InvalidImage(f"no matching manifest for {wanted_text} in the manifest list entries")


def media_type_of(document: dict) -> str:
    """A manifest's or index's media type; OCI allows leaving the field out, so infer it then."""
    if document.get("mediaType"):
        return document["mediaType"]
    if document.get("schemaVersion") == 1:
        return mt.DOCKER_MANIFEST_SCHEMA1
    if "manifests" in document:
        return mt.OCI_INDEX
    if "config" in document and "layers" in document:
        return mt.OCI_MANIFEST
    return ""


def json_bytes(document: Any) -> bytes:
    """Compact JSON, the form Docker and containerd write image documents in."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def build_manifest(config_digest: str, config_size: int, layers: Sequence[Layer], media: str = "oci") -> bytes:
    """A schema 2 manifest, OCI (``media="oci"``) or Docker (``media="docker"``)."""
    if media == "oci":
        manifest_type, config_type = mt.OCI_MANIFEST, mt.OCI_CONFIG
        layer_types = [layer.media_type for layer in layers]
    elif media == "docker":
        manifest_type, config_type = mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG
        layer_types = [layer.media_type if layer.media_type.startswith("application/vnd.docker.")
                       else mt.docker_layer_type(mt.layer_compression(layer.media_type)) for layer in layers]
    else:
        raise ValueError(f"unknown manifest flavour {media!r}: expected 'oci' or 'docker'")
    return json_bytes({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": media_type, "digest": layer.digest, "size": layer.size}
                   for media_type, layer in zip(layer_types, layers, strict=True)],
    })


def _short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _container_text(user: str | bool) -> str:
    return f"container {_short_id(user)}" if isinstance(user, str) else "a container"


def _parse_document(data: bytes, digest: str) -> dict:
    try:
        document = json.loads(data)
    except ValueError as e:
        raise InvalidImage(f"{digest} is not valid JSON: {e}") from None
    if not isinstance(document, dict):
        raise InvalidImage(f"{digest} is not a JSON object")
    return document


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}


def _as_reference(ref: str | Reference) -> Reference:
    return ref if isinstance(ref, Reference) else parse_reference(ref)


def _no_container(image_id: str) -> str | bool | None:
    return None


def _no_containers(image_id: str) -> int:
    return 0


class _StoreLock:
    """Exclusive flock on ``root/lock``, re-entrant within one thread (store methods call each other and
    the archive code holds it around whole loads)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = -1

    def __enter__(self) -> _StoreLock:
        self._thread_lock.acquire()
        if self._depth == 0:
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            except BaseException:
                self._thread_lock.release()
                raise
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
        self._thread_lock.release()


@dataclass
class _State:
    """The metadata as read at one moment. ``by_id`` is derived at read time; methods that change
    ``refs`` or ``images`` afterwards only remove names, so it stays a superset, which is all they need."""

    refs: dict[str, str]  # normalised reference -> manifest digest
    images: dict[str, dict]  # manifest digest -> {"id": ..., "index": ...}
    layers: dict[str, dict]  # diff_id -> {"blob": ..., "uncompressed": ...}
    by_id: dict[str, list[str]] = field(default_factory=dict)  # image ID -> its manifest digests


class ImageStore:
    def __init__(self, root: Path, content: ContentStore) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.content = content
        self._lock = _StoreLock(self.root / "lock")
        # manifest digest -> (manifest, config); content-addressed, so never stale
        self._documents: dict[str, tuple[dict, dict]] = {}

    def locked(self) -> _StoreLock:
        """Hold the store's exclusive lock (re-entrant), e.g. around writing blobs and adding an image so
        that a concurrent ``gc`` cannot collect the blobs in between."""
        return self._lock

    # --- adding images -----------------------------------------------------------------------------

    def add(self, manifest: bytes, refs: Iterable[str | Reference] = ()) -> Image:
        """Register an image whose config and layers are already in the content store. ``manifest`` is
        an OCI or Docker schema 2 manifest, or an index / manifest list from which this machine's
        platform is picked (that manifest must be stored too). ``refs`` are tags, or digest references
        naming the manifest or index."""
        references = [_as_reference(ref) for ref in refs]
        with self._lock:
            top_digest = self.content.write_bytes(manifest)
            manifest_digest, index_digest = self._resolve_index(top_digest)
            image_id = self._validate(manifest_digest)
            for ref in references:
                if ref.digest is not None and ref.digest not in (manifest_digest, index_digest):
                    raise ValueError(f"reference {ref.familiar()} does not name this image ({manifest_digest})")
            state = self._read_state()
            state.images[manifest_digest] = {"id": image_id, "index": index_digest}
            write_json_atomic(self.root / _IMAGES, state.images)
            if references:
                for ref in references:
                    state.refs[self._ref_key(ref)] = manifest_digest
                write_json_atomic(self.root / _REPOSITORIES, state.refs)
            return self._build(image_id, self._read_state(), prefer=manifest_digest)

    def create(self, config: dict, layers: Sequence[Layer | tuple[str, str, int, str]], refs: Iterable[str] = (),
               media: str = "oci") -> Image:
        """Write a config (its ``rootfs`` set from ``layers``) and a manifest for layer blobs already in the
        content store, and register the image. A layer is a Layer or (digest, media_type, size, diff_id)."""
        layer_list = [layer if isinstance(layer, Layer) else Layer(*layer) for layer in layers]
        config = {**config, "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layer_list]}}
        config_bytes = json_bytes(config)
        with self._lock:
            self.record_layers(layer_list)
            config_digest = self.content.write_bytes(config_bytes)
            return self.add(build_manifest(config_digest, len(config_bytes), layer_list, media), refs)

    def record_layers(self, layers: Iterable[Layer]) -> None:
        """Remember the uncompressed size of layers (those whose ``uncompressed_size`` is known)."""
        known = [layer for layer in layers if layer.uncompressed_size is not None]
        if not known:
            return
        with self._lock:
            sizes = _read_json(self.root / _LAYERS)
            for layer in known:
                sizes[layer.diff_id] = {"blob": layer.digest, "uncompressed": layer.uncompressed_size}
            write_json_atomic(self.root / _LAYERS, sizes)

    def tag(self, source: str, target: str) -> None:
        """Point ``target`` at the image ``source`` names, like ``docker tag``; the image the tag
        pointed at before stays (untagged if that was its last name)."""
        ref = parse_reference(target)
        if ref.digest is not None:
            raise ValueError("refusing to create a tag with a digest reference")
        with self._lock:
            state = self._read_state()
            image_id, manifest_digest, _ = self._lookup(source, state)
            state.refs[str(ref)] = manifest_digest
            write_json_atomic(self.root / _REPOSITORIES, state.refs)

    # --- finding images ----------------------------------------------------------------------------

    def resolve(self, name_or_id: str) -> Image:
        """The image a reference (``busybox``, ``busybox@sha256:...``), an ID or a unique ID prefix
        (with or without ``sha256:``) names; references win over ID prefixes, as in Docker."""
        return self.lookup(name_or_id)[0]

    def lookup(self, name_or_id: str) -> tuple[Image, Reference | None]:
        """Like ``resolve`` and also the normalised reference that matched (None when matched by ID)."""
        state = self._read_state()
        image_id, manifest_digest, ref = self._lookup(name_or_id, state)
        try:
            return self._build(image_id, state, prefer=manifest_digest), ref
        except BlobNotFound:  # removed and collected by another process since we read the state
            raise ImageNotFound(name_or_id) from None

    def get(self, image_id: str) -> Image:
        """The image with exactly this ID (``sha256:`` optional)."""
        full_id = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
        state = self._read_state()
        if full_id not in state.by_id:
            raise ImageNotFound(image_id)
        return self._build(full_id, state)

    def list(self) -> list[Image]:
        """Every image once, with all its names; untagged (dangling) images too. Newest first."""
        state = self._read_state()
        images = []
        for image_id in state.by_id:
            try:
                images.append(self._build(image_id, state))
            except BlobNotFound:  # removed and collected by another process since we read the state
                continue
        images.sort(key=lambda image: (image.created or "", image.id), reverse=True)
        return images

    def history(self, name_or_id: str) -> list[dict]:
        """The image's history, newest first, like ``docker history``: only the newest entry carries
        the image ID, the others say ``<missing>``; sizes are uncompressed layer sizes when known."""
        image = self.resolve(name_or_id)
        layers = iter(image.layers)
        entries = []
        for step in image.config.get("history") or []:
            layer = None if step.get("empty_layer") else next(layers, None)
            entries.append(self._history_entry(step, layer))
        entries += [self._history_entry({"created": image.created}, layer) for layer in layers]
        if not entries:
            entries.append(self._history_entry({"created": image.created}, None))
        entries.reverse()
        entries[0].update(id=image.id, tags=list(image.repo_tags))
        return entries

    @staticmethod
    def _history_entry(step: dict, layer: Layer | None) -> dict:
        return {"id": "<missing>", "created": step.get("created"), "created_by": step.get("created_by", ""),
                "size": 0 if layer is None else layer.disk_size, "comment": step.get("comment", ""), "tags": []}

    # --- removing images ---------------------------------------------------------------------------

    def remove(self, name_or_id: str, *, force: bool = False, in_use: InUse = _no_container) -> list[tuple[str, str]]:
        """``docker rmi``: by reference, untag, and delete the image when that was its last name; by ID,
        untag everything and delete (several names need ``force``). A container using the image
        (``in_use`` returns its ID) blocks removal unless ``force``. Returns Docker's records:
        ``[("Untagged", "busybox:latest"), ("Deleted", "sha256:...")]``. Blobs stay until ``gc``."""
        with self._lock:
            state = self._read_state()
            image_id, _, ref = self._lookup(name_or_id, state)
            records: list[tuple[str, str]] = []
            refs = self._refs_of(image_id, state)
            if ref is not None:
                if not force and len(refs) == 1 and (user := in_use(image_id)):
                    raise ImageInUse(
                        f'conflict: unable to remove repository reference "{name_or_id}" (must force) - '
                        f"{_container_text(user)} is using its referenced image {_short_id(image_id)}")
                records += self._untag(ref, image_id, state)
                records += self._drop_orphaned_digest_refs(ref, image_id, state)
                write_json_atomic(self.root / _REPOSITORIES, state.refs)
                if self._refs_of(image_id, state) or (not force and in_use(image_id)):
                    return records
            elif not force:
                if not _single_repository(refs):
                    raise ConflictError(f"conflict: unable to delete {_short_id(image_id)} (must be forced) - "
                                        "image is referenced in multiple repositories")
                if user := in_use(image_id):
                    stopped = f"stopped container {_short_id(user)}" if isinstance(user, str) else "a stopped container"
                    raise ImageInUse(f"conflict: unable to delete {_short_id(image_id)} (must be forced) - "
                                     f"image is being used by {stopped}")
            for key in self._refs_of(image_id, state):
                del state.refs[key]
                records.append(("Untagged", parse_reference(key).familiar()))
            write_json_atomic(self.root / _REPOSITORIES, state.refs)
            for manifest_digest in state.by_id.get(image_id, []):
                state.images.pop(manifest_digest, None)
            write_json_atomic(self.root / _IMAGES, state.images)
            records.append(("Deleted", image_id))
            return records

    def prune(self, *, all: bool = False, in_use: InUse = _no_container) -> list[tuple[str, str]]:
        """``docker image prune``: remove images without any name (``all``: every image) that no
        container uses. Returns the removal records."""
        records: list[tuple[str, str]] = []
        with self._lock:
            state = self._read_state()
            for image_id in sorted(state.by_id):
                if in_use(image_id) or (not all and self._refs_of(image_id, state)):
                    continue
                records += self.remove(image_id, force=True, in_use=in_use)
        return records

    def gc(self, keep_blobs: Iterable[str] = frozenset(), *, min_age: float = 0.0) -> list[str]:
        """Delete blobs that no image (its index, manifest, config or layers) references and that are not
        in ``keep_blobs``. ``min_age`` spares blobs written in the last seconds, for writers in other
        processes that store blobs before registering the image. Returns the deleted digests."""
        with self._lock:
            state = self._read_state()
            reachable: set[str] = set()
            for manifest_digest, entry in state.images.items():
                self._mark(manifest_digest, reachable)
                if entry.get("index"):
                    self._mark(entry["index"], reachable)
            for manifest_digest in state.refs.values():
                self._mark(manifest_digest, reachable)
            live_diff_ids = {diff_id for manifest_digest in {*state.images, *state.refs.values()}
                             if manifest_digest in reachable
                             for diff_id in _diff_ids(self._documents_of(manifest_digest)[1])}
            keep = reachable | set(keep_blobs)
            deadline = time.time() - min_age
            deleted = []
            for digest in sorted(self.content.digests()):
                if digest in keep:
                    continue
                try:
                    if min_age and self.content.path(digest).stat().st_mtime > deadline:
                        continue
                    self.content.delete(digest)
                except (FileNotFoundError, BlobNotFound):
                    continue
                deleted.append(digest)
            kept_layers = {diff_id: size for diff_id, size in state.layers.items() if diff_id in live_diff_ids}
            if kept_layers != state.layers:
                write_json_atomic(self.root / _LAYERS, kept_layers)
            self.content.prune_ingest()
            return deleted

    def _mark(self, digest: str, reachable: set[str]) -> None:
        """Add ``digest`` and everything it references (present in the content store) to ``reachable``."""
        if digest in reachable or not self.content.exists(digest):
            return
        reachable.add(digest)
        document = _parse_document(self.content.read_bytes(digest), digest)
        media_type = media_type_of(document)
        if mt.is_index(media_type):
            for child in document.get("manifests") or []:
                self._mark(child["digest"], reachable)
        elif mt.is_manifest(media_type):
            reachable.add(document["config"]["digest"])
            reachable.update(layer["digest"] for layer in document.get("layers") or [])

    # --- accounting --------------------------------------------------------------------------------

    def disk_usage(self, containers: Callable[[str], int] = _no_containers) -> dict:
        """``docker system df`` for images: per image its size, the part shared with other images and
        the rest, and how many containers use it (``containers(image_id)``); ``total`` counts each
        layer once and ``reclaimable`` is what removing every unused image would free."""
        images = self.list()
        layer_sizes: dict[str, int] = {}
        users: dict[str, int] = {}
        for image in images:
            for layer in {layer.digest: layer for layer in image.layers}.values():
                layer_sizes[layer.digest] = layer.disk_size
                users[layer.digest] = users.get(layer.digest, 0) + 1
        entries = []
        active_layers: set[str] = set()
        for image in images:
            digests = {layer.digest for layer in image.layers}
            size = sum(layer_sizes[d] for d in digests)
            shared = sum(layer_sizes[d] for d in digests if users[d] > 1)
            count = containers(image.id)
            if count:
                active_layers |= digests
            entries.append({"id": image.id, "repo_tags": list(image.repo_tags), "created": image.created,
                            "size": size, "shared_size": shared, "unique_size": size - shared,
                            "containers": count})
        total = sum(layer_sizes.values())
        return {"images": entries, "total": total, "active": sum(1 for e in entries if e["containers"]),
                "reclaimable": total - sum(layer_sizes[d] for d in active_layers)}

    # --- internals ---------------------------------------------------------------------------------

    def _read_state(self) -> _State:
        state = _State(refs=_read_json(self.root / _REPOSITORIES), images=_read_json(self.root / _IMAGES),
                       layers=_read_json(self.root / _LAYERS))
        for manifest_digest in sorted({*state.images, *state.refs.values()}):
            try:
                state.by_id.setdefault(self._image_id(manifest_digest, state), []).append(manifest_digest)
            except BlobNotFound:  # a name left over from a removal in progress elsewhere
                continue
        return state

    @staticmethod
    def _ref_key(ref: Reference) -> str:
        # A digest names the content exactly; a tag next to it adds nothing (Docker drops it too).
        return f"{ref.name}@{ref.digest}" if ref.digest else str(ref)

    def _documents_of(self, manifest_digest: str) -> tuple[dict, dict]:
        documents = self._documents.get(manifest_digest)
        if documents is None:
            manifest = _parse_document(self.content.read_bytes(manifest_digest), manifest_digest)
            config_digest = manifest["config"]["digest"]
            config = _parse_document(self.content.read_bytes(config_digest), config_digest)
            documents = self._documents[manifest_digest] = (manifest, config)
        return documents

    def _resolve_index(self, digest: str) -> tuple[str, str | None]:
        """(manifest digest, index digest or None) for a stored manifest or index."""
        index_digest = None
        for _ in range(8):  # indexes may nest (Docker 25+ archives); a few levels at most
            document = _parse_document(self.content.read_bytes(digest), digest)
            media_type = media_type_of(document)
            if mt.is_manifest(media_type):
                return digest, index_digest
            if media_type in (mt.DOCKER_MANIFEST_SCHEMA1, mt.DOCKER_MANIFEST_SCHEMA1_SIGNED):
                raise InvalidImage(f"{digest}: Docker image manifest schema 1 is not supported")
            if not mt.is_index(media_type):
                raise InvalidImage(f"{digest} is not an image manifest or index (media type {media_type!r})")
            index_digest = index_digest or digest
            child = select_manifest(document)
            digest = validate_digest(child["digest"])
            if not self.content.exists(digest):
                raise InvalidImage(f"index {index_digest} selects manifest {digest}, which is not in the content store")
        raise InvalidImage(f"index {index_digest} nests too deeply")

    def _validate(self, manifest_digest: str) -> str:
        """Check a manifest's config and layers are stored and consistent; returns the image ID."""
        manifest = _parse_document(self.content.read_bytes(manifest_digest), manifest_digest)
        config_descriptor = manifest.get("config") or {}
        if not mt.is_config(config_descriptor.get("mediaType")):
            raise InvalidImage(f"manifest {manifest_digest} is not a container image "
                               f"(config media type {config_descriptor.get('mediaType')!r})")
        layer_descriptors = manifest.get("layers") or []
        for descriptor in [config_descriptor, *layer_descriptors]:
            digest = validate_digest(descriptor.get("digest", ""))
            if not self.content.exists(digest):
                raise InvalidImage(f"manifest {manifest_digest} references {digest}, which is not in the content store")
            if self.content.size(digest) != descriptor.get("size"):
                raise InvalidImage(f"manifest {manifest_digest} says {digest} has {descriptor.get('size')} bytes "
                                   f"but the stored blob has {self.content.size(digest)}")
        for descriptor in layer_descriptors:
            if not mt.is_layer(descriptor.get("mediaType")):
                raise InvalidImage(f"manifest {manifest_digest} has a layer of unsupported media type "
                                   f"{descriptor.get('mediaType')!r}")
        config = _parse_document(self.content.read_bytes(config_descriptor["digest"]), config_descriptor["digest"])
        diff_ids = _diff_ids(config)
        if len(diff_ids) != len(layer_descriptors):
            raise InvalidImage(f"image config {config_descriptor['digest']} lists {len(diff_ids)} diff_ids for "
                               f"{len(layer_descriptors)} layers")
        self._documents[manifest_digest] = (manifest, config)
        return config_descriptor["digest"]

    def _image_id(self, manifest_digest: str, state: _State) -> str:
        entry = state.images.get(manifest_digest)
        return entry["id"] if entry else self._documents_of(manifest_digest)[0]["config"]["digest"]

    def _refs_of(self, image_id: str, state: _State) -> list[str]:
        manifests = set(state.by_id.get(image_id, []))
        return sorted(key for key, digest in state.refs.items() if digest in manifests)

    def _primary_manifest(self, image_id: str, state: _State) -> str:
        """The manifest that stands for an image (one with a name if several share its config)."""
        manifests = state.by_id.get(image_id)
        if not manifests:
            raise ImageNotFound(image_id)
        named = set(state.refs.values())
        return next((m for m in manifests if m in named), manifests[0])

    def _build(self, image_id: str, state: _State, prefer: str | None = None) -> Image:
        primary = prefer or self._primary_manifest(image_id, state)
        keys = self._refs_of(image_id, state)
        manifest, config = self._documents_of(primary)
        tags, digests = [], set()
        for key in keys:
            ref = parse_reference(key)
            if ref.digest:
                digests.add(ref.familiar())
            else:
                tags.append(ref.familiar())
                target = state.refs[key]
                digests.add(f"{ref.familiar_name()}@{(state.images.get(target) or {}).get('index') or target}")
        sizes = state.layers
        layers = [Layer(digest=d["digest"], media_type=d["mediaType"], size=d["size"], diff_id=diff_id,
                        uncompressed_size=(sizes.get(diff_id) or {}).get("uncompressed"))
                  for d, diff_id in zip(manifest.get("layers") or [], _diff_ids(config), strict=True)]
        return Image(id=image_id, manifest_digest=primary, manifest=manifest, config=config, layers=layers,
                     repo_tags=sorted(tags), repo_digests=sorted(digests),  # Docker sorts the familiar forms
                     index_digest=(state.images.get(primary) or {}).get("index"))

    def _lookup(self, text: str, state: _State) -> tuple[str, str, Reference | None]:
        """(image ID, its manifest digest (the one a reference points at), matched reference or None)."""
        if not text.startswith("sha256:"):
            try:
                ref = parse_reference(text)
            except InvalidReference:
                ref = None
            if ref is not None:
                found = self._find_reference(ref, state)
                if found is not None:
                    return self._image_id(found, state), found, ref
        prefix = text.removeprefix("sha256:")
        if _HEX_RE.fullmatch(prefix):
            matches = [image_id for image_id in state.by_id
                       if image_id.removeprefix("sha256:").startswith(prefix)]
            if len(matches) == 1:
                return matches[0], self._primary_manifest(matches[0], state), None
        raise ImageNotFound(text)

    def _find_reference(self, ref: Reference, state: _State) -> str | None:
        if ref.digest is None:
            return state.refs.get(str(ref))
        if (found := state.refs.get(self._ref_key(ref))) is not None:
            return found
        # A tagged image is also reachable as name@<its manifest or index digest>, like containerd's store.
        for key, manifest_digest in state.refs.items():
            index_digest = (state.images.get(manifest_digest) or {}).get("index")
            if ref.digest in (manifest_digest, index_digest) and parse_reference(key).name == ref.name:
                return manifest_digest
        return None

    def _untag(self, ref: Reference, image_id: str, state: _State) -> list[tuple[str, str]]:
        key = self._ref_key(ref)
        if key in state.refs:
            del state.refs[key]
            return [("Untagged", parse_reference(key).familiar())]
        # name@digest reached through tags: those tags are what names the image in that repository
        keys = [k for k in self._refs_of(image_id, state) if parse_reference(k).name == ref.name]
        for k in keys:
            del state.refs[k]
        return [("Untagged", parse_reference(k).familiar()) for k in keys]

    def _drop_orphaned_digest_refs(self, ref: Reference, image_id: str, state: _State) -> list[tuple[str, str]]:
        """After untagging a tag, digest references of the same repository go too when no tag of it is left."""
        if ref.digest is not None:
            return []
        same_repository = [parse_reference(k) for k in self._refs_of(image_id, state)]
        same_repository = [r for r in same_repository if r.name == ref.name]
        if any(r.digest is None for r in same_repository):
            return []
        for r in same_repository:
            del state.refs[self._ref_key(r)]
        return [("Untagged", r.familiar()) for r in same_repository]


def _diff_ids(config: dict) -> list[str]:
    return (config.get("rootfs") or {}).get("diff_ids") or []


def _single_repository(keys: list[str]) -> bool:
    """Docker's rule for ``rmi <id>`` without force: fine when the image has at most one tag and all its
    names are in one repository."""
    refs = [parse_reference(key) for key in keys]
    return sum(1 for r in refs if r.digest is None) <= 1 and len({r.name for r in refs}) <= 1
