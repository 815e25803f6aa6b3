"""Content store and image store: real blobs and metadata files on disk, the busybox image from /bin/busybox."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.busybox import ensure_busybox_image
from pocketkube.engine.images.content import BlobNotFound, ContentStore, DigestMismatch
from pocketkube.engine.images.store import (
    ConflictError,
    Image,
    ImageInUse,
    ImageNotFound,
    ImageStore,
    InvalidImage,
    Layer,
    host_platform,
    json_bytes,
)

# --- helpers -------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _layer(store: ImageStore, files: dict[str, bytes]) -> Layer:
    """A gzip layer blob in the content store."""
    plain = _tar(files)
    compressed = gzip.compress(plain, mtime=0)
    digest = store.content.write_bytes(compressed)
    return Layer(digest, mt.OCI_LAYER_GZIP, len(compressed), _sha256(plain), len(plain))


def _config(created: str = "2024-01-01T00:00:00Z", **fields: object) -> dict:
    return {"created": created, "architecture": host_platform()[1], "os": "linux", "config": {"Cmd": ["sh"]},
            **fields}


def _image(store: ImageStore, layers: list[Layer], refs: tuple[str, ...] = (), **config: object) -> Image:
    return store.create(_config(**config), layers, list(refs))


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


@pytest.fixture
def content(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


@pytest.fixture
def store(tmp_path: Path, content: ContentStore) -> ImageStore:
    return ImageStore(tmp_path / "images", content)


@pytest.fixture
def busybox(store: ImageStore) -> Image:
    return ensure_busybox_image(store)


# --- content store -------------------------------------------------------------------------------


def test_content_write_read_and_list(content: ContentStore, tmp_path: Path) -> None:
    digest = content.write_bytes(b"hello")
    assert digest == _sha256(b"hello")
    assert content.exists(digest) and content.size(digest) == 5
    assert content.read_bytes(digest) == b"hello"
    with content.open(digest) as f:
        assert f.read() == b"hello"
    assert content.path(digest) == tmp_path / "content" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    assert content.write_bytes(b"hello", expected=digest) == digest  # storing twice is fine
    assert list(content.digests()) == [digest]
    content.delete(digest)
    assert not content.exists(digest)
    with pytest.raises(BlobNotFound, match="not found in the content store"):
        content.read_bytes(digest)
    with pytest.raises(BlobNotFound):
        content.delete(digest)


def test_content_streaming_writer(content: ContentStore) -> None:
    with content.writer() as w:
        for _ in range(3):
            w.write(b"x" * 1000)
    assert (w.digest, w.size, w.created) == (_sha256(b"x" * 3000), 3000, True)
    with content.writer() as again:
        again.write(b"x" * 3000)
    assert again.created is False


def test_content_mismatch_leaves_nothing(content: ContentStore) -> None:
    wrong = _sha256(b"something else")
    with pytest.raises(DigestMismatch, match=f"expected {wrong}"):
        content.write_bytes(b"hello", expected=wrong)
    assert list(content.digests()) == []
    assert os.listdir(content.root / "ingest") == []


def test_content_batch_publishes_blobs_together(content: ContentStore) -> None:
    content.write_bytes(b"already here")
    batch = content.batch()
    with batch.writer(expected=_sha256(b"one")) as first:
        first.write(b"one")
    with batch.writer() as second:
        second.write(b"already here")
    with pytest.raises(DigestMismatch):
        with batch.writer(expected=_sha256(b"two")) as wrong:
            wrong.write(b"not two")
    # Nothing is visible before publish; afterwards the new blob is, the known one is not created twice.
    assert not content.exists(_sha256(b"one"))
    batch.publish()
    assert content.read_bytes(_sha256(b"one")) == b"one"
    assert (first.created, second.created) == (True, False)
    assert os.listdir(content.root / "ingest") == []
    dropped = content.batch()
    with dropped.writer() as never:
        never.write(b"never published")
    dropped.discard()
    assert not content.exists(_sha256(b"never published")) and os.listdir(content.root / "ingest") == []


def test_content_failed_stream_leaves_no_partial_blob(content: ContentStore) -> None:
    with pytest.raises(RuntimeError, match="source broke"):
        with content.writer() as w:
            w.write(b"partial data")
            raise RuntimeError("source broke")
    assert list(content.digests()) == []
    assert os.listdir(content.root / "ingest") == []
    assert not content.exists(_sha256(b"partial data"))


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ("sha256:../../../etc/passwd", "invalid digest"),
        ("sha256:" + "a" * 63 + "/", "invalid digest"),
        ("../" + "a" * 64, "invalid digest"),
        ("sha256:" + "A" * 64, "invalid digest"),
        ("sha512:" + "a" * 128, "unsupported digest algorithm 'sha512'"),
        ("a" * 64, "invalid digest"),
    ],
)
def test_content_refuses_bad_digests(content: ContentStore, digest: str, message: str) -> None:
    for call in (content.path, content.exists, content.read_bytes, content.delete):
        with pytest.raises(ValueError, match=message):
            call(digest)
    with pytest.raises(ValueError, match=message):
        content.write_bytes(b"x", expected=digest)


def test_content_prunes_stale_ingest_files(content: ContentStore) -> None:
    stale = content.root / "ingest" / "blob-dead"
    stale.write_bytes(b"left by a crashed writer")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = content.root / "ingest" / "blob-live"
    fresh.write_bytes(b"being written")
    assert content.prune_ingest(older_than=3600) == 1
    assert not stale.exists() and fresh.exists()


# --- resolving -----------------------------------------------------------------------------------


def test_busybox_image(store: ImageStore, busybox: Image) -> None:
    assert busybox.repo_tags == ["busybox:latest"]
    assert busybox.repo_digests == [f"busybox@{busybox.manifest_digest}"]
    assert busybox.config["config"]["Cmd"] == ["sh"]
    assert busybox.config["os"] == "linux" and busybox.config["architecture"] == host_platform()[1]
    (layer,) = busybox.layers
    assert layer.media_type == mt.OCI_LAYER_GZIP
    assert layer.diff_id == busybox.config["rootfs"]["diff_ids"][0]
    assert layer.uncompressed_size > layer.size == store.content.size(layer.digest)
    assert busybox.size == layer.size
    assert busybox.created and busybox.id == _sha256(store.content.read_bytes(busybox.id))
    assert ensure_busybox_image(store).id == busybox.id  # already there: nothing imported


def test_resolve_by_name_id_prefix_and_digest(store: ImageStore, busybox: Image) -> None:
    hex_id = busybox.id.removeprefix("sha256:")
    for text in ("busybox", "busybox:latest", "docker.io/library/busybox:latest", "library/busybox",
                 busybox.id, hex_id, hex_id[:12], hex_id[:1], "sha256:" + hex_id[:5],
                 f"busybox@{busybox.manifest_digest}", f"docker.io/library/busybox@{busybox.manifest_digest}"):
        assert store.resolve(text).id == busybox.id, text
    assert store.get(busybox.id).id == store.get(hex_id).id == busybox.id
    for missing in ("nope", "busybox:1", hex_id[:12] + "0", f"other@{busybox.manifest_digest}",
                    "busybox@sha256:" + "0" * 64, "Busybox", "zz"):
        with pytest.raises(ImageNotFound) as raised:
            store.resolve(missing)
        assert str(raised.value) == f"No such image: {missing}"
    with pytest.raises(ImageNotFound):
        store.get(hex_id[:12])


def test_ambiguous_id_prefix_is_not_found(store: ImageStore) -> None:
    layer = _layer(store, {"f": b"x"})
    images = [_image(store, [layer], created=f"2024-01-01T00:00:{i:02d}Z") for i in range(17)]
    by_first: dict[str, list[str]] = {}
    for image in images:
        by_first.setdefault(image.id[7], []).append(image.id)
    shared = next(char for char, ids in by_first.items() if len(ids) > 1)  # 17 IDs, 16 hex digits
    with pytest.raises(ImageNotFound):
        store.resolve(shared)


def test_reference_wins_over_id_prefix(store: ImageStore, busybox: Image) -> None:
    other = _image(store, [_layer(store, {"f": b"x"})])
    prefix = busybox.id[7:10]
    store.tag(other.id, prefix)  # a repository named like busybox's ID prefix
    assert store.resolve(prefix).id == other.id
    assert store.resolve(busybox.id[7:20]).id == busybox.id


def test_tag_and_list(store: ImageStore, busybox: Image) -> None:
    store.tag("busybox", "localhost:5000/bb:1")
    store.tag(busybox.id[7:19], "user/app")
    image = store.resolve("localhost:5000/bb:1")
    assert image.id == busybox.id
    assert image.repo_tags == ["busybox:latest", "localhost:5000/bb:1", "user/app:latest"]
    assert store.resolve("user/app:latest").id == busybox.id
    assert [i.id for i in store.list()] == [busybox.id]
    with pytest.raises(ValueError, match="refusing to create a tag with a digest reference"):
        store.tag("busybox", "x@sha256:" + "0" * 64)
    with pytest.raises(ImageNotFound):
        store.tag("nope", "x")


def test_moving_a_tag_leaves_a_dangling_image(store: ImageStore, busybox: Image) -> None:
    newer = _image(store, [_layer(store, {"f": b"new"})], created="2099-01-01T00:00:00Z")
    store.tag(newer.id, "busybox:latest")
    listed = {image.id: image for image in store.list()}
    assert listed[busybox.id].repo_tags == [] and listed[busybox.id].repo_digests == []
    assert listed[newer.id].repo_tags == ["busybox:latest"]
    assert [image.id for image in store.list()] == [newer.id, busybox.id]  # newest first


def test_store_is_shared_between_instances_and_processes(tmp_path: Path, store: ImageStore, busybox: Image) -> None:
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from pocketkube.engine.images.content import ContentStore
        from pocketkube.engine.images.store import ImageStore
        root = Path({str(tmp_path)!r})
        store = ImageStore(root / "images", ContentStore(root / "content"))
        for i in range(15):
            store.tag("busybox", f"p{{sys.argv[1]}}:{{i}}")
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(4)]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0, 0, 0]
    other = ImageStore(tmp_path / "images", ContentStore(tmp_path / "content"))
    tags = other.resolve("busybox").repo_tags
    assert len(tags) == 61  # no update lost: every write happened under the lock
    assert set(tags) == {"busybox:latest"} | {f"p{n}:{i}" for n in range(4) for i in range(15)}


# --- adding manifests ----------------------------------------------------------------------------


def test_add_picks_this_platform_from_an_index(store: ImageStore, busybox: Image) -> None:
    host = host_platform()
    index = json_bytes({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 100,
         "platform": {"os": "linux", "architecture": "s390x" if host[1] != "s390x" else "riscv64"}},
        {"mediaType": mt.OCI_MANIFEST, "digest": busybox.manifest_digest,
         "size": store.content.size(busybox.manifest_digest), "platform": {"os": host[0], "architecture": host[1]}},
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 100,
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
    ]})
    image = store.add(index, ["multi:1"])
    index_digest = _sha256(index)
    assert (image.id, image.manifest_digest, image.index_digest) == (busybox.id, busybox.manifest_digest, index_digest)
    assert "multi@" + index_digest in image.repo_digests
    assert store.resolve(f"multi@{index_digest}").id == busybox.id
    assert index_digest in store.content.digests()


def test_add_rejects_incomplete_or_foreign_manifests(store: ImageStore, busybox: Image) -> None:
    missing = "sha256:" + "3" * 64
    elsewhere = json_bytes({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": missing, "size": 1, "platform": {"os": "plan9", "architecture": "x"}}]})
    with pytest.raises(InvalidImage, match=r"no matching manifest for linux/\w+ in the manifest list entries"):
        store.add(elsewhere)
    manifest = json.loads(store.content.read_bytes(busybox.manifest_digest))
    manifest["layers"][0]["digest"] = missing
    with pytest.raises(InvalidImage, match=f"references {missing}, which is not in the content store"):
        store.add(json_bytes(manifest))
    manifest = json.loads(store.content.read_bytes(busybox.manifest_digest))
    manifest["layers"][0]["size"] += 1
    with pytest.raises(InvalidImage, match="bytes but the stored blob has"):
        store.add(json_bytes(manifest))
    manifest = json.loads(store.content.read_bytes(busybox.manifest_digest))
    manifest["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    with pytest.raises(InvalidImage, match="is not a container image"):
        store.add(json_bytes(manifest))
    with pytest.raises(InvalidImage, match="schema 1 is not supported"):
        store.add(json_bytes({"schemaVersion": 1, "name": "x", "fsLayers": []}))
    manifest = json.loads(store.content.read_bytes(busybox.manifest_digest))
    with pytest.raises(ValueError, match="does not name this image"):
        store.add(json_bytes(manifest), ["busybox@sha256:" + "4" * 64])
    assert [image.id for image in store.list()] == [busybox.id]


def test_docker_schema2_manifest_and_digest_refs(store: ImageStore) -> None:
    layer = _layer(store, {"a": b"1"})
    image = store.create(_config(), [layer], ["app:1"], media="docker")
    assert image.manifest["mediaType"] == mt.DOCKER_MANIFEST
    assert image.manifest["config"]["mediaType"] == mt.DOCKER_CONFIG
    assert image.manifest["layers"][0]["mediaType"] == mt.DOCKER_LAYER_GZIP
    pinned = store.add(store.content.read_bytes(image.manifest_digest), [f"pinned@{image.manifest_digest}"])
    assert pinned.id == image.id
    assert pinned.repo_digests == [f"app@{image.manifest_digest}", f"pinned@{image.manifest_digest}"]
    assert store.resolve(f"pinned@{image.manifest_digest}").id == image.id


def test_create_rejects_missing_layer_blob(store: ImageStore) -> None:
    ghost = Layer("sha256:" + "5" * 64, mt.OCI_LAYER_GZIP, 10, "sha256:" + "6" * 64)
    with pytest.raises(InvalidImage, match="not in the content store"):
        store.create(_config(), [ghost], ["ghost"])
    with pytest.raises(ImageNotFound):
        store.resolve("ghost")


# --- removing ------------------------------------------------------------------------------------


def test_remove_by_tag_untags_until_the_last_name(store: ImageStore, busybox: Image) -> None:
    store.tag("busybox", "bb:1")
    assert store.remove("bb:1") == [("Untagged", "bb:1")]
    assert store.resolve(busybox.id).repo_tags == ["busybox:latest"]
    assert store.remove("busybox") == [("Untagged", "busybox:latest"), ("Deleted", busybox.id)]
    assert store.list() == []
    with pytest.raises(ImageNotFound):
        store.remove("busybox")


def test_remove_by_id_with_several_repositories_needs_force(store: ImageStore, busybox: Image) -> None:
    store.tag("busybox", "bb:1")
    with pytest.raises(ConflictError) as raised:
        store.remove(busybox.id[7:19])
    assert str(raised.value) == (f"conflict: unable to delete {_short(busybox.id)} (must be forced) - "
                                 "image is referenced in multiple repositories")
    records = store.remove(busybox.id[7:19], force=True)
    assert records == [("Untagged", "bb:1"), ("Untagged", "busybox:latest"), ("Deleted", busybox.id)]


def test_remove_by_id_with_one_name(store: ImageStore, busybox: Image) -> None:
    assert store.remove(busybox.id) == [("Untagged", "busybox:latest"), ("Deleted", busybox.id)]


def test_remove_refuses_images_used_by_containers(store: ImageStore, busybox: Image) -> None:
    container = "c0ffee" * 10 + "abcd"
    used = lambda image_id: container if image_id == busybox.id else None  # noqa: E731
    with pytest.raises(ImageInUse) as raised:
        store.remove("busybox", in_use=used)
    assert str(raised.value) == (f'conflict: unable to remove repository reference "busybox" (must force) - '
                                 f"container {container[:12]} is using its referenced image {_short(busybox.id)}")
    with pytest.raises(ImageInUse) as raised:
        store.remove(busybox.id, in_use=used)
    assert str(raised.value) == (f"conflict: unable to delete {_short(busybox.id)} (must be forced) - "
                                 f"image is being used by stopped container {container[:12]}")
    store.tag("busybox", "bb:1")
    assert store.remove("bb:1", in_use=used) == [("Untagged", "bb:1")]  # other names remain: fine
    assert store.remove("busybox", in_use=used, force=True) == [("Untagged", "busybox:latest"),
                                                               ("Deleted", busybox.id)]


def test_in_use_may_answer_just_yes_or_no(store: ImageStore, busybox: Image) -> None:
    with pytest.raises(ImageInUse, match=f"- a container is using its referenced image {_short(busybox.id)}$"):
        store.remove("busybox", in_use=lambda image_id: True)
    with pytest.raises(ImageInUse, match="image is being used by a stopped container$"):
        store.remove(busybox.id, in_use=lambda image_id: True)
    assert store.prune(all=True, in_use=lambda image_id: image_id == busybox.id) == []
    assert store.remove("busybox", in_use=lambda image_id: "") == [("Untagged", "busybox:latest"),
                                                                  ("Deleted", busybox.id)]


def test_prune_dangling_and_all(store: ImageStore, busybox: Image) -> None:
    dangling = _image(store, [_layer(store, {"a": b"1"})])
    used_dangling = _image(store, [_layer(store, {"b": b"2"})])
    tagged = _image(store, [_layer(store, {"c": b"3"})], ("app:1",))
    used = lambda image_id: "c" * 64 if image_id == used_dangling.id else None  # noqa: E731
    assert store.prune(in_use=used) == [("Deleted", dangling.id)]
    assert {image.id for image in store.list()} == {busybox.id, used_dangling.id, tagged.id}
    records = store.prune(all=True, in_use=used)
    assert sorted(records) == sorted([("Untagged", "busybox:latest"), ("Deleted", busybox.id),
                                      ("Untagged", "app:1"), ("Deleted", tagged.id)])
    assert [image.id for image in store.list()] == [used_dangling.id]


def test_gc_keeps_shared_layers(store: ImageStore) -> None:
    base = _layer(store, {"bin/tool": b"shared" * 100})
    top = _layer(store, {"app": b"only in app"})
    first = _image(store, [base], ("base:1",))
    second = _image(store, [base, top], ("app:1",))
    stray = store.content.write_bytes(b"not referenced by anything")
    kept = store.content.write_bytes(b"kept by the caller")
    assert store.gc(keep_blobs={kept}) == sorted([stray])
    store.remove("base:1")
    deleted = store.gc(keep_blobs={kept})
    assert sorted(deleted) == sorted([first.manifest_digest, first.id])
    image = store.resolve("app:1")
    assert image.id == second.id
    for digest in (image.manifest_digest, image.id, base.digest, top.digest, kept):
        assert store.content.exists(digest)
    assert store.history("app:1")[1]["size"] == base.uncompressed_size  # layer sizes outlive the removal
    store.remove("app:1")
    assert sorted(store.gc()) == sorted([second.manifest_digest, second.id, base.digest, top.digest, kept])
    assert list(store.content.digests()) == []
    assert json.loads((store.root / "layers.json").read_text()) == {}


def test_gc_spares_fresh_blobs_when_asked(store: ImageStore) -> None:
    fresh = store.content.write_bytes(b"written by a build in another process")
    assert store.gc(min_age=600) == []
    assert store.gc() == [fresh]


# --- history and disk usage ----------------------------------------------------------------------


def test_history_newest_first_with_layer_sizes(store: ImageStore, busybox: Image) -> None:
    (entry,) = store.history("busybox")
    assert entry == {"id": busybox.id, "created": busybox.created, "created_by": "", "comment": "",
                     "size": busybox.layers[0].uncompressed_size, "tags": ["busybox:latest"]}
    base, top = _layer(store, {"a": b"1" * 3000}), _layer(store, {"b": b"2"})
    history = [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs /", "comment": "base"},
               {"created": "2024-01-02T00:00:00Z", "created_by": "ENV A=1", "empty_layer": True},
               {"created": "2024-01-03T00:00:00Z", "created_by": "RUN make"}]
    image = _image(store, [base, top], ("built:1",), history=history)
    entries = store.history("built:1")
    assert [(e["id"], e["created_by"], e["size"], e["comment"]) for e in entries] == [
        (image.id, "RUN make", top.uncompressed_size, ""),
        ("<missing>", "ENV A=1", 0, ""),
        ("<missing>", "ADD rootfs /", base.uncompressed_size, "base"),
    ]
    assert [e["tags"] for e in entries] == [["built:1"], [], []]


def test_disk_usage_counts_shared_layers_once(store: ImageStore) -> None:
    base = _layer(store, {"lib": b"b" * 20000})
    top = _layer(store, {"app": b"t" * 5000})
    first = _image(store, [base], ("base:1",))
    second = _image(store, [base, top], ("app:1",))
    usage = store.disk_usage(containers=lambda image_id: 2 if image_id == second.id else 0)
    entries = {entry["id"]: entry for entry in usage["images"]}
    b, t = base.uncompressed_size, top.uncompressed_size
    assert usage["total"] == b + t
    assert (entries[first.id]["size"], entries[first.id]["shared_size"], entries[first.id]["unique_size"]) == (b, b, 0)
    assert (entries[second.id]["size"], entries[second.id]["shared_size"],
            entries[second.id]["unique_size"]) == (b + t, b, t)
    assert (entries[first.id]["containers"], entries[second.id]["containers"]) == (0, 2)
    assert usage["active"] == 1
    assert usage["reclaimable"] == 0  # everything the unused image has is shared with the used one
    assert store.disk_usage()["reclaimable"] == b + t
