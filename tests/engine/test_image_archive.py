"""load / save / import with real archives, and interoperability with umoci and skopeo."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.archive import InvalidArchive, import_rootfs, load, save, save_oci_layout
from pocketkube.engine.images.busybox import busybox_rootfs_tar, ensure_busybox_image
from pocketkube.engine.images.content import ContentStore, DigestMismatch
from pocketkube.engine.images.pause import ensure_pause_image, pause_ref
from pocketkube.engine.images.staticbinary import StaticBinaryUnavailable
from pocketkube.engine.images.store import Image, ImageStore, host_platform

REPO = Path(__file__).resolve().parents[2]

# --- helpers -------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    """A tar of regular files, in the given order; a value ``b"->target"`` makes a symlink instead."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data.startswith(b"->"):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:].decode()
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _config(diff_ids: list[str] | None, created: str = "2024-01-01T00:00:00Z") -> bytes:
    config: dict = {"created": created, "architecture": host_platform()[1], "os": "linux",
                    "config": {"Cmd": ["sh"]}}
    if diff_ids is not None:
        config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    return json.dumps(config).encode()


def _snapshot(content: ContentStore) -> set[str]:
    return set(content.digests())


def _run(*command: str | Path) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{command} failed: {result.stderr}"
    return result.stdout


def _oci_archive(store: ImageStore, names: list[str]) -> dict[str, bytes]:
    buffer = io.BytesIO()
    save(store, names, buffer, format="oci-archive")
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isreg()}


def _stores(tmp_path: Path, name: str) -> ImageStore:
    return ImageStore(tmp_path / name / "images", ContentStore(tmp_path / name / "content"))


class _Pipe(io.RawIOBase):
    """A stream that can only be read forward, like stdin."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        chunk = self._data.read(min(len(buffer), 7000))
        buffer[:len(chunk)] = chunk
        return len(chunk)

    def seekable(self) -> bool:
        return False


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return _stores(tmp_path, "first")


@pytest.fixture
def other(tmp_path: Path) -> ImageStore:
    return _stores(tmp_path, "second")


@pytest.fixture
def busybox(store: ImageStore) -> Image:
    return ensure_busybox_image(store)


@pytest.fixture
def umoci_layout(tmp_path: Path) -> Path:
    """An OCI layout made by umoci: an empty image, unpacked, a file added, repacked as tag ``t``."""
    layout, bundle = tmp_path / "umoci-layout", tmp_path / "umoci-bundle"
    _run("umoci", "init", "--layout", layout)
    _run("umoci", "new", "--image", f"{layout}:t")
    _run("umoci", "unpack", "--image", f"{layout}:t", bundle)
    (bundle / "rootfs" / "hello.txt").write_text("hello from umoci\n")
    _run("umoci", "repack", "--image", f"{layout}:t", bundle)
    return layout


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["docker-archive", "oci-archive"])
def test_save_load_round_trip(tmp_path: Path, store: ImageStore, other: ImageStore, busybox: Image,
                              format: str) -> None:
    store.tag("busybox", "localhost:5000/tools/bb:2")
    path = tmp_path / "out.tar"
    save(store, ["busybox:latest", "localhost:5000/tools/bb:2"], path, format=format)
    assert load(other, path) == ["Loaded image: busybox:latest", "Loaded image: localhost:5000/tools/bb:2"]
    loaded = other.resolve("busybox")
    assert loaded.id == busybox.id
    assert loaded.repo_tags == ["busybox:latest", "localhost:5000/tools/bb:2"]
    assert [layer.diff_id for layer in loaded.layers] == [layer.diff_id for layer in busybox.layers]
    assert loaded.layers[0].uncompressed_size == busybox.layers[0].uncompressed_size
    assert loaded.config == busybox.config
    if format == "oci-archive":  # OCI keeps the manifest (and the compressed layer) as it was
        assert loaded.manifest_digest == busybox.manifest_digest
    else:  # docker-archive carries plain layer tars
        assert loaded.layers[0].media_type == mt.OCI_LAYER
        assert loaded.layers[0].digest == loaded.layers[0].diff_id
    assert load(other, path)[0] == "Loaded image: busybox:latest"  # loading again changes nothing
    assert [image.id for image in other.list()] == [busybox.id]


def test_docker_archive_layout(tmp_path: Path, store: ImageStore, busybox: Image) -> None:
    path = tmp_path / "busybox.tar"
    save(store, ["busybox"], path)
    diff_hex = busybox.layers[0].diff_id.removeprefix("sha256:")
    id_hex = busybox.id.removeprefix("sha256:")
    with tarfile.open(path) as archive:
        assert archive.getnames() == [diff_hex, f"{diff_hex}/layer.tar", f"{id_hex}.json", "manifest.json",
                                      "repositories"]
        assert {(m.mtime, m.uid, m.gid) for m in archive.getmembers()} == {(0, 0, 0)}
        manifest = json.loads(archive.extractfile("manifest.json").read())
        assert manifest == [{"Config": f"{id_hex}.json", "RepoTags": ["busybox:latest"],
                             "Layers": [f"{diff_hex}/layer.tar"]}]
        assert json.loads(archive.extractfile("repositories").read()) == {"busybox": {"latest": diff_hex}}
        layer = archive.extractfile(f"{diff_hex}/layer.tar").read()
        assert _sha256(layer) == busybox.layers[0].diff_id  # an uncompressed tar
        assert archive.extractfile(f"{id_hex}.json").read() == store.content.read_bytes(busybox.id)


@pytest.mark.parametrize("format", ["docker-archive", "oci-archive"])
def test_saves_are_byte_identical(tmp_path: Path, store: ImageStore, other: ImageStore, busybox: Image,
                                  format: str) -> None:
    store.tag("busybox", "second:1")
    first, again, elsewhere = io.BytesIO(), io.BytesIO(), tmp_path / "elsewhere.tar"
    save(store, ["busybox", "second:1"], first, format=format)
    save(store, ["busybox", "second:1"], again, format=format)
    assert first.getvalue() == again.getvalue()
    load(other, io.BytesIO(first.getvalue()))
    save(other, ["busybox", "second:1"], elsewhere, format=format)
    assert elsewhere.read_bytes() == first.getvalue()  # another store, same images: same bytes


def test_save_by_repository_id_and_untagged(tmp_path: Path, store: ImageStore, other: ImageStore,
                                            busybox: Image) -> None:
    store.tag("busybox", "busybox:stable")
    store.tag("busybox", "unrelated:1")
    everything = tmp_path / "repo.tar"
    save(store, ["busybox"], everything)  # a bare repository name saves all its tags
    assert load(other, everything) == ["Loaded image: busybox:latest", "Loaded image: busybox:stable"]
    by_id = tmp_path / "id.tar"
    save(store, [busybox.id[7:19]], by_id)
    with tarfile.open(by_id) as archive:
        assert json.loads(archive.extractfile("manifest.json").read())[0]["RepoTags"] is None
        assert "repositories" not in archive.getnames()
    third = _stores(tmp_path, "third")
    assert load(third, by_id) == [f"Loaded image ID: {busybox.id}"]
    assert third.resolve(busybox.id).repo_tags == []


def test_save_survives_a_concurrent_removal(store: ImageStore, other: ImageStore, busybox: Image) -> None:
    """Blobs are opened under the lock, then written without it: a gc meanwhile does not break the archive."""

    class RemovingSink(io.BytesIO):
        def write(self, data) -> int:  # type: ignore[no-untyped-def]
            if store.list():
                store.remove("busybox")
                assert busybox.layers[0].digest in store.gc()
            return super().write(data)

    sink = RemovingSink()
    save(store, ["busybox"], sink, format="oci-archive")
    assert store.list() == []
    assert load(other, io.BytesIO(sink.getvalue())) == ["Loaded image: busybox:latest"]
    assert other.resolve("busybox").id == busybox.id


def test_unknown_format_and_image(tmp_path: Path, store: ImageStore, busybox: Image) -> None:
    with pytest.raises(ValueError, match="unknown archive format 'zip'"):
        save(store, ["busybox"], tmp_path / "x", format="zip")
    with pytest.raises(KeyError, match="No such image: nope"):
        save(store, ["nope"], tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


# --- other producers -----------------------------------------------------------------------------


def test_load_umoci_layout(tmp_path: Path, store: ImageStore, umoci_layout: Path) -> None:
    (line,) = load(store, umoci_layout)
    assert line.startswith("Loaded image ID: sha256:")  # umoci's ref name is a bare tag: no image name
    image = store.resolve(line.removeprefix("Loaded image ID: "))
    (layer,) = image.layers
    assert layer.media_type == mt.OCI_LAYER_GZIP
    with store.content.open(layer.digest) as blob, tarfile.open(fileobj=blob, mode="r|gz") as archive:
        files = {m.name.lstrip("./"): archive.extractfile(m).read() for m in archive if m.isreg()}
    assert files == {"hello.txt": b"hello from umoci\n"}
    # the same layout as a gzip-compressed OCI archive
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as archive:
        archive.add(umoci_layout, arcname=".")
    again = _stores(tmp_path, "again")
    assert load(again, io.BytesIO(packed.getvalue())) == [line]


def test_umoci_unpacks_a_saved_layout(tmp_path: Path, store: ImageStore, busybox: Image) -> None:
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    save_oci_layout(store, ["busybox"], layout)
    _run("umoci", "unpack", "--image", f"{layout}:latest", bundle)  # umoci verifies digests and diff_ids
    rootfs = bundle / "rootfs"
    assert (rootfs / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert os.stat(rootfs / "bin" / "sh").st_ino == os.stat(rootfs / "bin" / "busybox").st_ino
    assert "www-data:x:33:33" in (rootfs / "etc" / "passwd").read_text()
    assert json.loads((bundle / "config.json").read_text())["process"]["args"] == ["sh"]
    # adding a second image to the layout keeps the first
    store.tag("busybox", "extra:v2")
    save_oci_layout(store, ["extra:v2"], layout)
    refs = [m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads((layout / "index.json").read_text())["manifests"]]
    assert refs == ["latest", "v2"]
    _run("umoci", "unpack", "--image", f"{layout}:v2", tmp_path / "bundle2")


def test_skopeo_both_ways(tmp_path: Path, store: ImageStore, other: ImageStore, busybox: Image,
                          umoci_layout: Path) -> None:
    ours, copied = tmp_path / "ours", tmp_path / "copied"
    save_oci_layout(store, ["busybox"], ours)
    _run("skopeo", "copy", "--quiet", f"oci:{ours}:latest", f"oci:{copied}:latest")
    (line,) = load(other, copied)
    assert other.resolve(line.removeprefix("Loaded image ID: ")).id == busybox.id
    # an image from elsewhere (umoci) through pocketkube, then skopeo
    (umoci_line,) = load(store, umoci_layout)
    umoci_id = umoci_line.removeprefix("Loaded image ID: ")
    store.tag(umoci_id, "hello:t")
    save_oci_layout(store, ["hello:t"], tmp_path / "hello")
    _run("skopeo", "copy", "--quiet", f"oci:{tmp_path / 'hello'}:t", f"oci:{tmp_path / 'hello2'}:t")
    assert load(other, tmp_path / "hello2") == [f"Loaded image ID: {umoci_id}"]
    # docker-archives: skopeo reads ours, we read skopeo's
    save(store, ["busybox"], tmp_path / "ours.tar")
    _run("skopeo", "copy", "--quiet", f"docker-archive:{tmp_path / 'ours.tar'}", f"oci:{tmp_path / 'from-docker'}:x")
    _run("umoci", "unpack", "--image", f"{tmp_path / 'from-docker'}:x", tmp_path / "from-docker-bundle")
    assert (tmp_path / "from-docker-bundle" / "rootfs" / "bin" / "busybox").exists()
    _run("skopeo", "copy", "--quiet", f"oci:{ours}:latest", f"docker-archive:{tmp_path / 'skopeo.tar'}:sk/bb:1")
    third = _stores(tmp_path, "third")
    assert load(third, tmp_path / "skopeo.tar") == ["Loaded image: sk/bb:1"]
    assert [layer.diff_id for layer in third.resolve("sk/bb:1").layers] == [busybox.layers[0].diff_id]


def test_oci_archive_with_a_nested_multi_platform_index(store: ImageStore, other: ImageStore,
                                                        busybox: Image) -> None:
    """Docker 25+ and BuildKit export index.json -> image index -> one manifest per platform (+ attestations);
    only this machine's manifest needs to be in the archive."""
    files = _oci_archive(store, ["busybox"])
    host = host_platform()
    manifest_size = store.content.size(busybox.manifest_digest)
    image_index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "e" * 64, "size": 500,
         "platform": {"os": "linux", "architecture": "riscv64" if host[1] != "riscv64" else "s390x"}},
        {"mediaType": mt.OCI_MANIFEST, "digest": busybox.manifest_digest, "size": manifest_size,
         "platform": {"os": "linux", "architecture": host[1]}},
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "f" * 64, "size": 500,
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
    ]}).encode()
    index_digest = _sha256(image_index)
    files[f"blobs/sha256/{index_digest[7:]}"] = image_index
    files["index.json"] = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_INDEX, "digest": index_digest, "size": len(image_index),
         "annotations": {"io.containerd.image.name": "docker.io/library/multi:1",
                         "org.opencontainers.image.ref.name": "1"}}]}).encode()
    assert load(other, io.BytesIO(_tar(files))) == ["Loaded image: multi:1"]
    image = other.resolve("multi:1")
    assert (image.id, image.manifest_digest, image.index_digest) == (busybox.id, busybox.manifest_digest,
                                                                     index_digest)
    assert image.repo_digests == [f"multi@{index_digest}"]
    assert other.resolve(f"multi@{index_digest}").id == busybox.id


def test_load_over_an_existing_tag(tmp_path: Path, store: ImageStore, other: ImageStore, busybox: Image) -> None:
    save(store, ["busybox"], tmp_path / "busybox.tar")
    older = import_rootfs(other, io.BytesIO(_tar({"old": b"1"})), "busybox:latest")
    assert load(other, tmp_path / "busybox.tar") == [
        f"The image busybox:latest already exists, renaming the old one with ID {older.id} to empty string",
        "Loaded image: busybox:latest"]
    assert other.resolve(older.id).repo_tags == []


# --- hand-made docker-archives -------------------------------------------------------------------


def test_docker_archive_with_gzip_layers_and_links(store: ImageStore) -> None:
    base = _tar({"etc/os-release": b"ID=test\n"})
    top = _tar({"app/run": b"#!/bin/sh\n"})
    base_gz, top_gz = gzip.compress(base, mtime=0), gzip.compress(top, mtime=0)
    first = _config([_sha256(base)])
    second = _config([_sha256(base), _sha256(top)], created="2024-02-01T00:00:00Z")
    manifest = [
        {"Config": f"{_sha256(first)[7:]}.json", "RepoTags": ["first:1"], "Layers": ["l1/layer.tar.gz"]},
        {"Config": f"{_sha256(second)[7:]}.json", "RepoTags": ["second:1"],
         "Layers": ["l1b/layer.tar", "l2/layer.tar.gz"]},
    ]
    archive = _tar({
        f"{_sha256(first)[7:]}.json": first, f"{_sha256(second)[7:]}.json": second,
        "l1/layer.tar.gz": base_gz, "l1b/layer.tar": b"->../l1/layer.tar.gz",  # Docker links shared layers
        "l2/layer.tar.gz": top_gz, "manifest.json": json.dumps(manifest).encode(),
    })
    assert load(store, io.BytesIO(archive)) == ["Loaded image: first:1", "Loaded image: second:1"]
    image = store.resolve("second:1")
    assert image.id == _sha256(second)
    assert [(layer.digest, layer.media_type, layer.diff_id, layer.uncompressed_size) for layer in image.layers] == [
        (_sha256(base_gz), mt.OCI_LAYER_GZIP, _sha256(base), len(base)),
        (_sha256(top_gz), mt.OCI_LAYER_GZIP, _sha256(top), len(top)),
    ]
    assert store.resolve("first:1").layers[0].digest == _sha256(base_gz)


def test_docker_25_archive_and_missing_diff_ids(store: ImageStore) -> None:
    layer = _tar({"hello": b"docker 25 layout\n"}) + b"\0" * 2 * 1024 * 1024  # large: streamed into the store
    config = _config(None)  # no rootfs.diff_ids: computed on load
    manifest = [{"Config": f"blobs/sha256/{_sha256(config)[7:]}", "RepoTags": ["modern:1"],
                 "Layers": [f"blobs/sha256/{_sha256(layer)[7:]}"]}]
    archive = _tar({"blobs/sha256/" + _sha256(config)[7:]: config, "blobs/sha256/" + _sha256(layer)[7:]: layer,
                    "manifest.json": json.dumps(manifest).encode(), "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                    "index.json": b'{"schemaVersion":2,"manifests":[]}'})
    assert load(store, io.BytesIO(archive)) == ["Loaded image: modern:1"]
    image = store.resolve("modern:1")
    assert image.config["rootfs"] == {"type": "layers", "diff_ids": [_sha256(layer)]}
    assert image.id != _sha256(config)  # the config gained its diff_ids
    assert image.layers[0].media_type == mt.OCI_LAYER


def test_xz_layer_is_stored_plain(store: ImageStore) -> None:
    layer = _tar({"x": b"xz compressed layer\n"})
    config = _config([_sha256(layer)])
    manifest = [{"Config": "c.json", "RepoTags": ["xz:1"], "Layers": ["l/layer.tar"]}]
    load(store, io.BytesIO(_tar({"c.json": config, "l/layer.tar": lzma.compress(layer),
                                 "manifest.json": json.dumps(manifest).encode()})))
    (stored,) = store.resolve("xz:1").layers
    assert (stored.digest, stored.media_type) == (_sha256(layer), mt.OCI_LAYER)
    assert len(list(store.content.digests())) == 3  # the xz blob itself was not kept


@pytest.mark.parametrize("compress", [gzip.compress, zstandard.ZstdCompressor().compress, lzma.compress])
def test_compressed_archives_and_pipes(tmp_path: Path, store: ImageStore, other: ImageStore, busybox: Image,
                                       compress) -> None:  # type: ignore[no-untyped-def]
    plain = io.BytesIO()
    save(store, ["busybox"], plain)
    data = compress(plain.getvalue())
    assert load(other, io.BufferedReader(_Pipe(data))) == ["Loaded image: busybox:latest"]
    assert other.resolve("busybox").id == busybox.id


# --- rejected archives ---------------------------------------------------------------------------


def test_oci_archive_with_a_corrupted_blob_is_rejected(store: ImageStore, other: ImageStore,
                                                        busybox: Image) -> None:
    files = _oci_archive(store, ["busybox"])
    layer_path = f"blobs/sha256/{busybox.layers[0].digest[7:]}"
    files[layer_path] = files[layer_path][:-1] + bytes([files[layer_path][-1] ^ 1])
    with pytest.raises(DigestMismatch, match=f"{layer_path}: content has digest"):
        load(other, io.BytesIO(_tar(files)))
    assert _snapshot(other.content) == set() and other.list() == []  # nothing of the failed load remains


def test_oci_archive_with_a_wrong_diff_id_is_rejected(store: ImageStore, other: ImageStore, busybox: Image) -> None:
    files = _oci_archive(store, ["busybox"])
    config = json.loads(files[f"blobs/sha256/{busybox.id[7:]}"])
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    config_bytes = json.dumps(config).encode()
    manifest = json.loads(files[f"blobs/sha256/{busybox.manifest_digest[7:]}"])
    manifest["config"].update(digest=_sha256(config_bytes), size=len(config_bytes))
    manifest_bytes = json.dumps(manifest).encode()
    index = json.loads(files["index.json"])
    index["manifests"][0].update(digest=_sha256(manifest_bytes), size=len(manifest_bytes))
    files.update({f"blobs/sha256/{_sha256(config_bytes)[7:]}": config_bytes, "index.json": json.dumps(index).encode(),
                  f"blobs/sha256/{_sha256(manifest_bytes)[7:]}": manifest_bytes})
    with pytest.raises(DigestMismatch, match="content has diff_id .* the image config says sha256:0000"):
        load(other, io.BytesIO(_tar(files)))
    assert _snapshot(other.content) == set()


def test_docker_archive_mismatches_are_rejected(store: ImageStore) -> None:
    layer = _tar({"f": b"data"})
    config = _config([_sha256(layer)])
    wrong_name = "0" * 64 + ".json"
    manifest = [{"Config": wrong_name, "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]
    archive = _tar({wrong_name: config, "l/layer.tar": layer, "manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(DigestMismatch, match="its name says sha256:0000"):
        load(store, io.BytesIO(archive))
    manifest = [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]
    archive = _tar({"c.json": config, "l/layer.tar": _tar({"f": b"tampered"}),
                    "manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(DigestMismatch, match="layer l/layer.tar: content has diff_id"):
        load(store, io.BytesIO(archive))
    assert _snapshot(store.content) == set()
    with pytest.raises(InvalidArchive, match="neither a docker-archive"):
        load(store, io.BytesIO(_tar({"hello": b"x"})))
    with pytest.raises(InvalidArchive, match="not a valid tar archive"):
        load(store, io.BytesIO(b"this is not a tar file at all" * 40))
    with pytest.raises(InvalidArchive, match="the archive has no file l/layer.tar"):
        load(store, io.BytesIO(_tar({"c.json": config, "manifest.json": json.dumps(manifest).encode()})))


def test_truncated_or_corrupt_archives_leave_nothing_behind(store: ImageStore) -> None:
    big = [_tar({f"f{i}": os.urandom(1536 * 1024)}) for i in range(2)]  # larger than what is held in memory
    config = _config([_sha256(layer) for layer in big])
    manifest = [{"Config": "c.json", "RepoTags": ["big:1"], "Layers": ["a/layer.tar", "b/layer.tar"]}]
    archive = _tar({"a/layer.tar": big[0], "b/layer.tar": big[1], "c.json": config,
                    "manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(InvalidArchive, match="not a valid tar archive: unexpected end of data"):
        load(store, io.BytesIO(archive[:len(archive) * 3 // 4]))  # the first layer was complete
    compressed = gzip.compress(archive)
    with pytest.raises(InvalidArchive, match="corrupt gzip data"):
        load(store, io.BytesIO(compressed[:len(compressed) * 3 // 4]))
    assert _snapshot(store.content) == set()
    assert os.listdir(store.content.root / "ingest") == []
    assert load(store, io.BytesIO(compressed)) == ["Loaded image: big:1"]


# --- import ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [None, gzip.compress, zstandard.ZstdCompressor().compress, lzma.compress])
def test_import_rootfs(tmp_path: Path, store: ImageStore, compress) -> None:  # type: ignore[no-untyped-def]
    rootfs = _tar({"bin/app": b"\x7fELF...", "etc/motd": b"hi\n"})
    source = tmp_path / "rootfs.tar"
    source.write_bytes(compress(rootfs) if compress else rootfs)
    changes = {"Env": ["A=1"], "Cmd": ["/bin/app"], "Entrypoint": ["/bin/sh", "-c"], "WorkingDir": "/srv",
               "User": "33", "ExposedPorts": ["80", "53/udp"], "Volumes": ["/data"], "Labels": {"k": "v"},
               "StopSignal": "SIGQUIT"}
    image = import_rootfs(store, source, "imported:1", changes=changes, message="Imported from -",
                          created="2024-05-01T10:00:00Z")
    (layer,) = image.layers
    assert (layer.media_type, layer.diff_id, layer.uncompressed_size) == (mt.OCI_LAYER_GZIP, _sha256(rootfs),
                                                                          len(rootfs))
    assert gzip.decompress(store.content.read_bytes(layer.digest)) == rootfs
    assert image.config["config"] == {**changes, "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                                      "Volumes": {"/data": {}}}
    assert image.config["history"] == [{"created": "2024-05-01T10:00:00Z", "created_by": "",
                                        "comment": "Imported from -"}]
    assert (image.config["os"], image.config["architecture"]) == host_platform()[:2]
    assert image.repo_tags == ["imported:1"]
    again = import_rootfs(store, io.BytesIO(rootfs), created="2024-05-01T10:00:00Z",
                          changes=changes, message="Imported from -")
    assert again.id == image.id  # same input, same image


def test_import_rejects_bad_input(store: ImageStore) -> None:
    with pytest.raises(InvalidArchive, match="not a tar archive"):
        import_rootfs(store, io.BytesIO(b"definitely not a tar archive" * 40))
    with pytest.raises(InvalidArchive, match="shorter than one tar block"):
        import_rootfs(store, io.BytesIO(b""))
    with pytest.raises(ValueError, match="unsupported change 'Healthcheck'"):
        import_rootfs(store, io.BytesIO(_tar({"a": b"1"})), changes={"Healthcheck": {}})
    with pytest.raises(ValueError, match="change Cmd must be a list"):
        import_rootfs(store, io.BytesIO(_tar({"a": b"1"})), changes={"Cmd": "sh"})
    assert _snapshot(store.content) == set()
    image = import_rootfs(store, io.BytesIO(bytes(1024)), platform=("linux", "arm", "v7"))  # an empty tar is fine
    assert (image.config["architecture"], image.config["variant"]) == ("arm", "v7")


# --- busybox -------------------------------------------------------------------------------------


def test_busybox_rootfs() -> None:
    first, second = io.BytesIO(), io.BytesIO()
    busybox_rootfs_tar(first)
    busybox_rootfs_tar(second)
    assert first.getvalue() == second.getvalue()
    first.seek(0)
    with tarfile.open(fileobj=first) as archive:
        members = {m.name: m for m in archive.getmembers()}
        passwd = archive.extractfile("etc/passwd").read().decode()
    applets = _run("/bin/busybox", "--list-full").split()
    assert members["bin/busybox"].isreg() and members["bin/busybox"].size == os.path.getsize("/bin/busybox")
    for applet in applets:
        if applet != "bin/busybox":
            assert members[applet].islnk() and members[applet].linkname == "bin/busybox", applet
    assert members["tmp"].mode == 0o1777 and members["root"].mode == 0o700
    for directory in ("proc", "sys", "dev", "home", "var", "etc"):
        assert members[directory].isdir()
    assert {line.split(":")[0]: line.split(":")[2] for line in passwd.splitlines()} == {
        "root": "0", "www-data": "33", "nobody": "65534"}
    assert len({m.mtime for m in members.values()}) == 1


def test_busybox_must_be_static(tmp_path: Path, store: ImageStore) -> None:
    with pytest.raises(StaticBinaryUnavailable, match="/nonexistent/busybox not found: install the Debian package "
                                                 "busybox-static"):
        ensure_busybox_image(store, busybox=Path("/nonexistent/busybox"))
    with pytest.raises(StaticBinaryUnavailable, match="/bin/ls is dynamically linked: install the Debian package"):
        busybox_rootfs_tar(io.BytesIO(), busybox=Path("/bin/ls"))
    assert store.list() == []


def test_pause_image_from_catatonit(tmp_path: Path, store: ImageStore) -> None:
    image = ensure_pause_image(store)
    assert image.repo_tags == [pause_ref()] and pause_ref().startswith("localhost/pocketkube-pause:")
    assert ensure_pause_image(store).id == image.id  # found, not built again
    other = ImageStore(tmp_path / "other" / "images", ContentStore(tmp_path / "other" / "content"))
    assert ensure_pause_image(other).id == image.id  # the same binary makes the same image
    config = image.config["config"]
    assert config["Entrypoint"] == ["/catatonit", "-P"] and config["User"] == "65535:65535"
    with tarfile.open(fileobj=store.content.open(image.layers[0].digest)) as layer:
        assert sorted(layer.getnames()) == ["catatonit", "dev", "proc", "sys"]
    with pytest.raises(StaticBinaryUnavailable, match="/bin/ls is dynamically linked: install the Debian package "
                                                      "catatonit"):
        ensure_pause_image(store, catatonit=Path("/bin/ls"))


def test_make_busybox_image_script(tmp_path: Path, store: ImageStore) -> None:
    out = tmp_path / "busybox.tar"
    printed = _run(REPO / "scripts" / "make-busybox-image", out, "--ref", "localhost/busybox:offline")
    assert load(store, out) == ["Loaded image: localhost/busybox:offline"]
    image = store.resolve("localhost/busybox:offline")
    assert image.id in printed
    assert image.id == ensure_busybox_image(_stores(tmp_path, "fresh")).id  # deterministic build
