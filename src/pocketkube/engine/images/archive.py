"""Moving images without a registry: ``docker load``, ``docker save`` and ``docker import``.

``load`` reads docker-archive tars (``manifest.json``; layers as plain or gzip tars, or as
``blobs/sha256`` files like Docker 25+ writes), OCI archives and OCI layout directories, any of them
compressed (gzip, zstd, xz, bzip2 — recognised by magic bytes, not by name). Every blob is checked
against its digest and every layer against the diff_id its image config declares. ``save`` writes
docker-archive or OCI archives (or an OCI layout directory) deterministically: sorted entries, fixed
mtimes and owners, so saving the same images twice gives identical bytes.
"""

from __future__ import annotations

import abc
import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO

import zstandard

from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.content import ContentStore, DigestMismatch, validate_digest
from pocketkube.engine.images.reference import InvalidReference, Reference, parse_reference
from pocketkube.engine.images.store import (
    Image,
    ImageNotFound,
    ImageStore,
    Layer,
    build_manifest,
    host_platform,
    json_bytes,
    media_type_of,
    select_manifest,
)
from pocketkube.fsutil import write_atomic

_CHUNK = 1 << 20
_SMALL_FILE = 1 << 20  # archive members up to this size are held in memory until we know what they are
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"))
_BLOB_PATH_RE = re.compile(r"blobs/sha256/([a-f0-9]{64})")
_CONFIG_PATH_RE = re.compile(r"([a-f0-9]{64})\.json")
_REF_NAME = "org.opencontainers.image.ref.name"
_CONTAINERD_NAME = "io.containerd.image.name"
_CHANGEABLE = {"Env": list, "Cmd": list, "Entrypoint": list, "WorkingDir": str, "User": str, "StopSignal": str,
               "ExposedPorts": dict, "Volumes": dict, "Labels": dict}
_FORMATS = ("docker-archive", "oci-archive")

Source = BinaryIO | IO[bytes] | Path | str


class InvalidArchive(ValueError):
    """An archive that is not a docker-archive, an OCI layout or a tar as expected."""


# --- compression ---------------------------------------------------------------------------------


class _Prefixed(io.RawIOBase):
    """Bytes already read from a stream, followed by the rest of that stream."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class _Decompressing(io.RawIOBase):
    """A decompressor's output; its complaints about bad input become InvalidArchive."""

    def __init__(self, reader: IO[bytes], compression: str) -> None:
        self._reader = reader
        self._compression = compression

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        try:
            data = self._reader.read(len(buffer))
        except (EOFError, OSError, lzma.LZMAError, zstandard.ZstdError, zlib.error) as e:
            raise InvalidArchive(f"corrupt {self._compression} data: {e}") from None
        buffer[:len(data)] = data
        return len(data)


def _read_up_to(stream: IO[bytes], size: int) -> bytes:
    parts, missing = [], size
    while missing:
        part = stream.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def open_decompressed(stream: IO[bytes]) -> tuple[IO[bytes], str | None]:
    """A reader of ``stream``'s content, decompressed when it starts with gzip, zstd, xz or bzip2 magic;
    and that compression's name (None for none). Works on pipes: nothing is seeked."""
    head = _read_up_to(stream, 6)
    buffered = io.BufferedReader(_Prefixed(head, stream), _CHUNK)
    compression = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    if compression is None:
        return buffered, None
    decompressor: IO[bytes]
    if compression == "gzip":
        decompressor = gzip.GzipFile(fileobj=buffered, mode="rb")
    elif compression == "zstd":
        decompressor = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    elif compression == "xz":
        decompressor = lzma.LZMAFile(buffered)
    else:
        decompressor = bz2.BZ2File(buffered)
    return io.BufferedReader(_Decompressing(decompressor, compression), _CHUNK), compression


def _hash_stream(reader: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := reader.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[IO[bytes]]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield f
    else:
        yield source


# --- reading archives ----------------------------------------------------------------------------


def _clean(name: str) -> str:
    """An archive member name relative to the archive root, without ``./``, ``..`` or a leading ``/``."""
    return posixpath.normpath("/" + name).lstrip("/")


class _Files(abc.ABC):
    """The files of an archive or layout, and the blobs this load added to the content store."""

    def __init__(self, content: ContentStore) -> None:
        self.content = content
        self.created: set[str] = set()

    @abc.abstractmethod
    def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def read(self, path: str) -> bytes: ...

    @abc.abstractmethod
    def ingest(self, path: str, expected: str | None = None) -> str:
        """Put the file into the content store (verified against ``expected``); returns its digest."""

    def write_bytes(self, data: bytes) -> str:
        with self.content.writer() as w:
            w.write(data)
        self._note(w.created, w.digest)
        return w.digest

    def store_decompressed(self, digest: str) -> str:
        """Store the decompressed form of a blob (for layers compressed in ways OCI has no type for)."""
        with self.content.open(digest) as raw, self.content.writer() as w:
            reader, _ = open_decompressed(raw)
            shutil.copyfileobj(reader, w, _CHUNK)
        self._note(w.created, w.digest)
        return w.digest

    def discard_unused(self, used: set[str]) -> None:
        """Delete the blobs this load stored that no loaded image references."""
        for digest in self.created - used:
            if self.content.exists(digest):
                self.content.delete(digest)

    def _note(self, created: bool, digest: str) -> None:
        if created:
            self.created.add(digest)


class _TarFiles(_Files):
    """A tar read in one pass (so pipes work): small members in memory, the others straight into the
    content store; symlinks and hard links (Docker links shared layer.tar files) are followed."""

    def __init__(self, content: ContentStore, stream: IO[bytes]) -> None:
        super().__init__(content)
        self._small: dict[str, bytes] = {}
        self._stored: dict[str, str] = {}
        self._links: dict[str, str] = {}
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    self._take(archive, member)
        except tarfile.TarError as e:
            self.discard_unused(set())
            raise InvalidArchive(f"not a valid tar archive: {e}") from None
        except BaseException:
            self.discard_unused(set())
            raise

    def _take(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _clean(member.name)
        if member.issym():
            self._links[name] = _clean(posixpath.join(posixpath.dirname(name), member.linkname))
        elif member.islnk():
            self._links[name] = _clean(member.linkname)
        elif member.isreg():
            data = archive.extractfile(member)
            assert data is not None  # regular members always have data
            if member.size <= _SMALL_FILE:
                self._small[name] = data.read()
                return
            with self.content.writer() as w:
                shutil.copyfileobj(data, w, _CHUNK)
            self._note(w.created, w.digest)
            self._stored[name] = w.digest

    def _target(self, path: str) -> str:
        path = _clean(path)
        for _ in range(32):
            if path in self._small or path in self._stored:
                return path
            if path not in self._links:
                raise InvalidArchive(f"the archive has no file {path}")
            path = self._links[path]
        raise InvalidArchive(f"too many levels of links at {path}")

    def exists(self, path: str) -> bool:
        try:
            self._target(path)
        except InvalidArchive:
            return False
        return True

    def read(self, path: str) -> bytes:
        target = self._target(path)
        if target in self._small:
            return self._small[target]
        return self.content.read_bytes(self._stored[target])

    def ingest(self, path: str, expected: str | None = None) -> str:
        target = self._target(path)
        if target in self._small:
            digest = self.write_bytes(self._small[target])
        else:
            digest = self._stored[target]
        if expected is not None and digest != expected:
            raise DigestMismatch(f"{path}: content has digest {digest}, expected {expected}")
        return digest


class _DirFiles(_Files):
    """An OCI layout directory."""

    def __init__(self, content: ContentStore, root: Path) -> None:
        super().__init__(content)
        self._root = root.resolve()

    def _path(self, path: str) -> Path:
        full = (self._root / _clean(path)).resolve()
        if not full.is_relative_to(self._root) or not full.is_file():
            raise InvalidArchive(f"the layout {self._root} has no file {path}")
        return full

    def exists(self, path: str) -> bool:
        try:
            self._path(path)
        except InvalidArchive:
            return False
        return True

    def read(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def ingest(self, path: str, expected: str | None = None) -> str:
        with self._path(path).open("rb") as f, self.content.writer() as w:
            shutil.copyfileobj(f, w, _CHUNK)
        self._note(w.created, w.digest)
        if expected is not None and w.digest != expected:
            raise DigestMismatch(f"{path}: content has digest {w.digest}, expected {expected}")
        return w.digest


def _json(data: bytes, what: str) -> dict | list:
    try:
        return json.loads(data)
    except ValueError as e:
        raise InvalidArchive(f"{what} is not valid JSON: {e}") from None


def _json_object(data: bytes, what: str) -> dict:
    document = _json(data, what)
    if not isinstance(document, dict):
        raise InvalidArchive(f"{what} is not a JSON object")
    return document


def _blobs_of(image: Image) -> set[str]:
    blobs = {image.manifest_digest, image.id, *(layer.digest for layer in image.layers)}
    if image.index_digest:
        blobs.add(image.index_digest)
    return blobs


def _describe_layer(content: ContentStore, digest: str) -> tuple[str | None, str, int]:
    """(compression, diff_id, uncompressed size) of a stored layer blob."""
    with content.open(digest) as raw:
        reader, compression = open_decompressed(raw)
        if compression is None:
            return None, digest, content.size(digest)
        diff_id, size = _hash_stream(reader)
    return compression, diff_id, size


def load(store: ImageStore, source: Source) -> list[str]:
    """``docker load``: add the images of an archive (or OCI layout directory) to ``store``. Returns
    Docker's lines: ``Loaded image: busybox:latest`` per name, ``Loaded image ID: sha256:...`` for an
    image without one. Nothing of a failed load stays in the content store."""
    with store.locked():
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            return _load_files(store, _DirFiles(store.content, Path(source)))
        with _opened(source) as raw:
            stream, _ = open_decompressed(raw)
            return _load_files(store, _TarFiles(store.content, stream))


def _load_files(store: ImageStore, files: _Files) -> list[str]:
    used: set[str] = set()
    try:
        if files.exists("manifest.json"):
            return _load_docker_archive(store, files, used)
        if files.exists("index.json"):
            return _load_oci(store, files, used)
        raise InvalidArchive("neither a docker-archive (no manifest.json) nor an OCI layout (no index.json)")
    finally:
        files.discard_unused(used)


def _load_docker_archive(store: ImageStore, files: _Files, used: set[str]) -> list[str]:
    entries = _json(files.read("manifest.json"), "manifest.json")
    if not isinstance(entries, list):
        raise InvalidArchive("manifest.json is not a list of images")
    lines = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidArchive("manifest.json has an entry that is not an object")
        config_path = entry.get("Config") or ""
        config_bytes = files.read(config_path)
        named = _BLOB_PATH_RE.fullmatch(_clean(config_path)) or _CONFIG_PATH_RE.fullmatch(_clean(config_path))
        actual = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        if named and actual != f"sha256:{named.group(1)}":
            raise DigestMismatch(f"{config_path}: content has digest {actual}, its name says sha256:{named.group(1)}")
        config = _json_object(config_bytes, config_path)
        layer_paths = entry.get("Layers") or []
        layers = [_docker_archive_layer(files, path) for path in layer_paths]
        declared = (config.get("rootfs") or {}).get("diff_ids") or []
        if not declared and layers:  # hand-made archives: compute what the config lacks
            config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
            config_bytes = json_bytes(config)
        elif len(declared) != len(layers):
            raise InvalidArchive(f"{config_path} lists {len(declared)} diff_ids for {len(layers)} layers")
        for path, layer, diff_id in zip(layer_paths, layers, declared, strict=False):  # none when computed
            if layer.diff_id != diff_id:
                raise DigestMismatch(f"layer {path}: content has diff_id {layer.diff_id}, "
                                     f"the image config says {diff_id}")
        config_digest = files.write_bytes(config_bytes)
        store.record_layers(layers)
        tags = [parse_reference(tag) for tag in entry.get("RepoTags") or []]
        lines += _register(store, build_manifest(config_digest, len(config_bytes), layers), tags, used)
    return lines


def _register(store: ImageStore, manifest: bytes, names: list[Reference], used: set[str]) -> list[str]:
    """Add a loaded image under ``names``; returns Docker's lines about it."""
    previous = {}
    for name in names:
        with contextlib.suppress(ImageNotFound):
            previous[name] = store.resolve(str(name)).id
    image = store.add(manifest, names)
    used |= _blobs_of(image)
    lines = [f"The image {name.familiar()} already exists, renaming the old one with ID {old_id} to empty string"
             for name, old_id in previous.items() if old_id != image.id]
    return lines + ([f"Loaded image: {name.familiar()}" for name in names] or [f"Loaded image ID: {image.id}"])


def _docker_archive_layer(files: _Files, path: str) -> Layer:
    named = _BLOB_PATH_RE.fullmatch(_clean(path))
    digest = files.ingest(path, f"sha256:{named.group(1)}" if named else None)
    compression, diff_id, size = _describe_layer(files.content, digest)
    if compression not in (None, "gzip", "zstd"):  # OCI has no media type for these: keep the plain tar
        digest = files.store_decompressed(digest)
        compression = None
    return Layer(digest=digest, media_type=mt.oci_layer_type(compression), size=files.content.size(digest),
                 diff_id=diff_id, uncompressed_size=size)


def _load_oci(store: ImageStore, files: _Files, used: set[str]) -> list[str]:
    layout = _json_object(files.read("oci-layout"), "oci-layout") if files.exists("oci-layout") else {}
    if layout.get("imageLayoutVersion") != mt.OCI_LAYOUT_VERSION:
        raise InvalidArchive(f"not an OCI image layout {mt.OCI_LAYOUT_VERSION} "
                             f"(oci-layout says {layout.get('imageLayoutVersion')!r})")
    index = _json_object(files.read("index.json"), "index.json")
    lines = []
    for descriptor in index.get("manifests") or []:
        if not (mt.is_index(descriptor.get("mediaType")) or mt.is_manifest(descriptor.get("mediaType"))):
            continue  # artifacts and other content that is not an image
        digest = _ingest_tree(store, files, descriptor)
        name = _image_name(descriptor.get("annotations") or {})
        lines += _register(store, store.content.read_bytes(digest), [name] if name else [], used)
    return lines


def _image_name(annotations: dict) -> Reference | None:
    """The name an OCI index entry gives its image. ``org.opencontainers.image.ref.name`` is often just a
    tag (``latest``, what skopeo and umoci write); only a full reference there names an image."""
    if name := annotations.get(_CONTAINERD_NAME):
        return parse_reference(name)
    ref_name = annotations.get(_REF_NAME) or ""
    if "/" in ref_name or ":" in ref_name:
        return parse_reference(ref_name)
    return None


def _ingest_descriptor(files: _Files, descriptor: dict) -> str:
    digest = validate_digest(descriptor.get("digest", ""))
    files.ingest(f"blobs/sha256/{digest.removeprefix('sha256:')}", digest)
    if files.content.size(digest) != descriptor.get("size"):
        raise InvalidArchive(f"blob {digest} has {files.content.size(digest)} bytes, "
                             f"its descriptor says {descriptor.get('size')}")
    return digest


def _ingest_tree(store: ImageStore, files: _Files, descriptor: dict) -> str:
    """Store a manifest or index with what it needs (for an index: this machine's manifest), verified."""
    digest = _ingest_descriptor(files, descriptor)
    document = _json_object(store.content.read_bytes(digest), digest)
    media_type = media_type_of(document)
    if mt.is_index(media_type):
        _ingest_tree(store, files, select_manifest(document))
        return digest
    if not mt.is_manifest(media_type):
        raise InvalidArchive(f"{digest} is not an image manifest or index (media type {media_type!r})")
    config_digest = _ingest_descriptor(files, document.get("config") or {})
    config = _json_object(store.content.read_bytes(config_digest), config_digest)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    descriptors = document.get("layers") or []
    if len(diff_ids) != len(descriptors):
        raise InvalidArchive(f"image config {config_digest} lists {len(diff_ids)} diff_ids for "
                             f"{len(descriptors)} layers")
    layers = []
    for layer_descriptor, diff_id in zip(descriptors, diff_ids, strict=True):
        layer_digest = _ingest_descriptor(files, layer_descriptor)
        media_type = layer_descriptor.get("mediaType")
        if not mt.is_layer(media_type):
            raise InvalidArchive(f"layer {layer_digest} has unsupported media type {media_type!r}")
        compression, actual_diff_id, size = _describe_layer(store.content, layer_digest)
        if compression != mt.layer_compression(media_type):
            raise InvalidArchive(f"layer {layer_digest} is {compression or 'uncompressed'} but its media type "
                                 f"is {media_type}")
        if actual_diff_id != diff_id:
            raise DigestMismatch(f"layer {layer_digest}: content has diff_id {actual_diff_id}, "
                                 f"the image config says {diff_id}")
        layers.append(Layer(layer_digest, media_type, layer_descriptor["size"], diff_id, size))
    store.record_layers(layers)
    return digest


# --- writing archives ----------------------------------------------------------------------------


@dataclass
class _Entry:
    path: str
    size: int = 0
    open: Callable[[], contextlib.AbstractContextManager[IO[bytes]]] | None = None  # None: a directory


def _bytes_entry(path: str, data: bytes) -> _Entry:
    return _Entry(path, len(data), lambda: contextlib.nullcontext(io.BytesIO(data)))


class _PinnedBlobs:
    """Blobs opened while the store is locked. An open file stays readable even if a concurrent ``gc``
    unlinks it, so writing a long archive does not need to hold the lock."""

    def __init__(self, content: ContentStore, stack: contextlib.ExitStack) -> None:
        self._content = content
        self._stack = stack
        self._files: dict[str, IO[bytes]] = {}

    def pin(self, digest: str) -> int:
        """Open the blob now; returns its size."""
        if digest not in self._files:
            self._files[digest] = self._stack.enter_context(self._content.open(digest))
        return os.fstat(self._files[digest].fileno()).st_size

    @contextlib.contextmanager
    def open(self, digest: str) -> Iterator[IO[bytes]]:
        blob = self._files[digest]
        blob.seek(0)
        yield blob


def _blob_entry(blobs: _PinnedBlobs, path: str, digest: str) -> _Entry:
    return _Entry(path, blobs.pin(digest), lambda: blobs.open(digest))


def _layer_tar_entry(blobs: _PinnedBlobs, path: str, layer: Layer) -> _Entry:
    """The layer as a plain tar (docker-archive has no compressed layers)."""

    @contextlib.contextmanager
    def open_plain() -> Iterator[IO[bytes]]:
        with blobs.open(layer.digest) as raw:
            yield open_decompressed(raw)[0]

    blob_size = blobs.pin(layer.digest)
    if mt.layer_compression(layer.media_type) is None:
        size = blob_size
    elif layer.uncompressed_size is not None:
        size = layer.uncompressed_size
    else:
        with open_plain() as plain:
            size = _hash_stream(plain)[1]
    return _Entry(path, size, open_plain)


def _write_tar(fileobj: IO[bytes], entries: Sequence[_Entry]) -> None:
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for entry in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(entry.path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.open is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
                continue
            info.mode, info.size = 0o644, entry.size
            with entry.open() as data:
                archive.addfile(info, data)


def _select(store: ImageStore, names: Sequence[str]) -> list[tuple[Image, list[Reference]]]:
    """The images ``names`` designate, each once with the tags to record for it. As in ``docker save``, a
    repository name without tag means every tag of that repository, and an ID records no tag."""
    chosen: dict[str, tuple[Image, list[Reference]]] = {}
    for name in names:
        for image, tag in _images_named(store, name):
            _, tags = chosen.setdefault(image.id, (image, []))
            if tag is not None and tag not in tags:
                tags.append(tag)
    return list(chosen.values())


def _images_named(store: ImageStore, name: str) -> list[tuple[Image, Reference | None]]:
    try:
        bare = parse_reference(name, default_tag=None)
    except InvalidReference:
        bare = None
    if bare is not None and bare.tag is None and bare.digest is None:
        tagged = [(image, ref) for image in store.list() for ref in map(parse_reference, image.repo_tags)
                  if ref.name == bare.name]
        if tagged:
            return tagged
    image, ref = store.lookup(name)
    return [(image, ref if ref is not None and ref.digest is None else None)]


def _docker_archive_entries(selection: list[tuple[Image, list[Reference]]], blobs: _PinnedBlobs) -> list[_Entry]:
    entries: dict[str, _Entry] = {}
    manifest = []
    repositories: dict[str, dict[str, str]] = {}
    for image, tags in selection:
        config_path = image.id.removeprefix("sha256:") + ".json"
        entries[config_path] = _blob_entry(blobs, config_path, image.id)
        layer_paths = []
        for layer in image.layers:
            directory = layer.diff_id.removeprefix("sha256:")
            path = f"{directory}/layer.tar"
            if path not in entries:
                entries[directory] = _Entry(directory)
                entries[path] = _layer_tar_entry(blobs, path, layer)
            layer_paths.append(path)
        manifest.append({"Config": config_path, "RepoTags": [tag.familiar() for tag in tags] or None,
                         "Layers": layer_paths})
        for tag in tags:
            if layer_paths and tag.tag:
                repositories.setdefault(tag.familiar_name(), {})[tag.tag] = posixpath.dirname(layer_paths[-1])
    entries["manifest.json"] = _bytes_entry("manifest.json", json_bytes(manifest))
    if repositories:
        entries["repositories"] = _bytes_entry("repositories", json_bytes(repositories))
    return list(entries.values())


def _descriptor_platform(config: dict) -> dict:
    """``{"platform": ...}`` for an index entry, or nothing when the config does not say."""
    if not (config.get("architecture") and config.get("os")):
        return {}
    platform = {"architecture": config["architecture"], "os": config["os"]}
    if config.get("variant"):
        platform["variant"] = config["variant"]
    return {"platform": platform}


def _oci_plan(selection: list[tuple[Image, list[Reference]]], blobs: _PinnedBlobs) -> tuple[list[str], list[dict]]:
    """(blob digests, index.json descriptors) of an OCI layout holding the selected images; pins the blobs."""
    digests: dict[str, None] = {}
    descriptors = []
    for image, tags in selection:
        for digest in (image.manifest_digest, image.id, *(layer.digest for layer in image.layers)):
            digests[digest] = None
            blobs.pin(digest)
        base = {"mediaType": media_type_of(image.manifest), "digest": image.manifest_digest,
                "size": blobs.pin(image.manifest_digest), **_descriptor_platform(image.config)}
        descriptors += [{**base, "annotations": {_CONTAINERD_NAME: str(tag), _REF_NAME: tag.tag}}
                        for tag in tags if tag.tag] or [base]
    return sorted(digests), descriptors


def _oci_index(descriptors: list[dict]) -> bytes:
    return json_bytes({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors})


def _oci_layout_file() -> bytes:
    return json_bytes({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION})


def _oci_archive_entries(selection: list[tuple[Image, list[Reference]]], blobs: _PinnedBlobs) -> list[_Entry]:
    digests, descriptors = _oci_plan(selection, blobs)
    entries = [_Entry("blobs"), _Entry("blobs/sha256"), _bytes_entry("oci-layout", _oci_layout_file()),
               _bytes_entry("index.json", _oci_index(descriptors))]
    entries += [_blob_entry(blobs, f"blobs/sha256/{d.removeprefix('sha256:')}", d) for d in digests]
    return entries


def save(store: ImageStore, names: Sequence[str], dest: BinaryIO | Path | str, *,
         format: str = "docker-archive") -> None:
    """``docker save``: write the named images as a ``docker-archive`` (manifest.json, repositories,
    <id>.json, <diff_id>/layer.tar with plain tars) or an ``oci-archive`` (oci-layout, index.json with
    ref-name annotations, blobs/sha256). Same images, same bytes."""
    if format not in _FORMATS:
        raise ValueError(f"unknown archive format {format!r}: expected one of {', '.join(_FORMATS)}")
    builder = _docker_archive_entries if format == "docker-archive" else _oci_archive_entries
    with contextlib.ExitStack() as stack:
        blobs = _PinnedBlobs(store.content, stack)
        with store.locked():
            entries = builder(_select(store, names), blobs)
        if not isinstance(dest, (str, os.PathLike)):
            _write_tar(dest, entries)
            return
        dest = Path(dest)
        fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                _write_tar(f, entries)
            os.chmod(temp, 0o644)  # mkstemp makes it private; an image archive is not secret
            os.replace(temp, dest)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def save_oci_layout(store: ImageStore, names: Sequence[str], directory: Path) -> None:
    """Write the named images into an OCI layout directory (for umoci, skopeo ``oci:``). An existing
    layout is added to; an entry with the same ref name is replaced."""
    directory = Path(directory)
    existing: list[dict] = []
    if (directory / "index.json").exists():
        layout = _json_object((directory / "oci-layout").read_bytes(), "oci-layout")
        if layout.get("imageLayoutVersion") != mt.OCI_LAYOUT_VERSION:
            raise InvalidArchive(f"{directory} is not an OCI image layout {mt.OCI_LAYOUT_VERSION}")
        existing = _json_object((directory / "index.json").read_bytes(), "index.json").get("manifests") or []
    blob_dir = directory / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        blobs = _PinnedBlobs(store.content, stack)
        with store.locked():
            digests, descriptors = _oci_plan(_select(store, names), blobs)
        for digest in digests:
            target = blob_dir / digest.removeprefix("sha256:")
            if not target.exists():
                with blobs.open(digest) as source:
                    write_atomic(target, lambda f, source=source: shutil.copyfileobj(source, f, _CHUNK))
    replaced = {(d.get("annotations") or {}).get(_REF_NAME) for d in descriptors} - {None}
    kept = [d for d in existing if (d.get("annotations") or {}).get(_REF_NAME) not in replaced]
    write_atomic(directory / "oci-layout", lambda f: f.write(_oci_layout_file()))
    write_atomic(directory / "index.json", lambda f: f.write(_oci_index(kept + descriptors)))


# --- importing a root filesystem -----------------------------------------------------------------


def import_rootfs(store: ImageStore, source: Source, ref: str | None = None, *, changes: dict | None = None,
                  message: str = "", platform: Sequence[str] | None = None, created: str | None = None) -> Image:
    """``docker import``: a one-layer image from a root filesystem tar (plain, gzip, zstd, xz or bzip2).
    The layer is stored gzip-compressed; ``changes`` sets config fields (Env, Cmd, Entrypoint,
    WorkingDir, User, ExposedPorts, Volumes, Labels, StopSignal); ``platform`` is (os, arch[, variant]),
    this machine by default; ``created`` (RFC 3339) defaults to now."""
    image_config = _config_from_changes(changes or {})
    os_name, architecture, *variant = platform or host_platform()
    created = created or datetime.now(UTC).isoformat().replace("+00:00", "Z")
    with store.locked(), _opened(source) as raw:
        stream, _ = open_decompressed(raw)
        layer = _store_gzip_layer(store.content, stream)
        config = {"created": created, "architecture": architecture, **({"variant": variant[0]} if variant else {}),
                  "os": os_name, "config": image_config,
                  "history": [{"created": created, "created_by": "", "comment": message}]}
        return store.create(config, [layer], [ref] if ref else [])


def _store_gzip_layer(content: ContentStore, stream: IO[bytes]) -> Layer:
    """Store a tar stream gzip-compressed; the diff_id is the digest of the tar itself."""
    head = _read_up_to(stream, tarfile.BLOCKSIZE)
    _check_tar_block(head)
    diff_id, size = hashlib.sha256(), 0
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip framing; zlib writes mtime 0, so output is stable
    with content.writer() as w:
        chunk = head
        while chunk:
            diff_id.update(chunk)
            size += len(chunk)
            w.write(compressor.compress(chunk))
            chunk = stream.read(_CHUNK)
        w.write(compressor.flush())
    return Layer(w.digest, mt.OCI_LAYER_GZIP, w.size, "sha256:" + diff_id.hexdigest(), size)


def _check_tar_block(block: bytes) -> None:
    if len(block) < tarfile.BLOCKSIZE:
        raise InvalidArchive("not a tar archive: shorter than one tar block")
    if block == bytes(tarfile.BLOCKSIZE):
        return  # an empty archive starts with its end marker
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        raise InvalidArchive("not a tar archive: the first block is not a tar header") from None


def _config_from_changes(changes: dict) -> dict:
    config = {}
    for key, value in changes.items():
        if key not in _CHANGEABLE:
            raise ValueError(f"unsupported change {key!r}: expected one of {', '.join(_CHANGEABLE)}")
        if key in ("ExposedPorts", "Volumes") and isinstance(value, (list, tuple, set)):
            value = {item: {} for item in value}
        if not isinstance(value, _CHANGEABLE[key]):
            raise ValueError(f"change {key} must be a {_CHANGEABLE[key].__name__}, not {type(value).__name__}")
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ValueError(f"change {key} must be a list of strings")
        if key == "ExposedPorts":
            value = {port if "/" in port else f"{port}/tcp": {} for port in value}
        config[key] = value
    return config
