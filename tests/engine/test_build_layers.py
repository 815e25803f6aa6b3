"""Layers a build stores: the gzip writer (any gzip reader reads it, equal input gives equal bytes however
it is fed, incompressible chunks are stored instead of deflated) and a built layer of random and of
compressible data that `gzip -d` turns back into exactly the tar its diff_id names."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

from engine_harness import EngineEnv

from pocketkube.engine.build.gzipstream import CHUNK, GzipWriter
from pocketkube.engine.images import mediatypes as mt

BUILD = [sys.executable, "-m", "pocketkube.cli.main", "build", "--progress", "plain"]

RANDOM = os.urandom(CHUNK + 300_000)
TEXT = b"".join(f"line {number} of a file that compresses well\n".encode() for number in range(60_000))
MIXED = TEXT[:500_000] + RANDOM + TEXT + b"\0" * 50_000


def gzip_of(data: bytes, pieces: list[int]) -> bytes:
    """``data`` through a GzipWriter, written in pieces of the given sizes (then the rest)."""
    out = io.BytesIO()
    writer = GzipWriter(out)
    offset = 0
    for size in pieces:
        writer.write(data[offset:offset + size])
        offset += size
    writer.write(data[offset:])
    writer.close()
    return out.getvalue()


def gunzip(blob: bytes) -> bytes:
    """The gzip tool's reading of ``blob``; it fails on a bad CRC, length or deflate stream."""
    return subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True).stdout


def test_any_gzip_reader_reads_it_whole() -> None:
    for data in (b"", b"hello\n", TEXT, RANDOM, MIXED):
        blob = gzip_of(data, [])
        assert gunzip(blob) == data
        reader = zlib.decompressobj(31)  # a single gzip member, nothing after it
        assert reader.decompress(blob) == data and reader.eof and reader.unused_data == b""


def test_equal_input_gives_equal_bytes_however_it_is_written() -> None:
    whole = gzip_of(MIXED, [])
    assert gzip_of(MIXED, [1, 7, CHUNK - 8, 3 * CHUNK]) == whole
    assert gzip_of(MIXED, [100_000] * 40) == whole


def test_incompressible_chunks_are_stored_and_the_rest_compressed() -> None:
    stored = gzip_of(RANDOM, [])
    assert len(RANDOM) < len(stored) < len(RANDOM) * 1.001  # stored blocks: a few bytes per 64 KiB
    assert len(gzip_of(TEXT, [])) < len(TEXT) / 4
    mixed = gzip_of(MIXED, [])
    assert len(mixed) < len(RANDOM) + len(TEXT[:500_000] + TEXT) / 4


def test_a_built_layer_unzips_to_the_tar_its_diff_id_names(engine_env: EngineEnv, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\nRUN head -c 3000000 /dev/urandom > /random && seq 1 200000 > /numbers\n")
    result = subprocess.run([*BUILD, "-t", "layers:1", str(context)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, POCKETKUBE_DATA_DIR=str(engine_env.data_dir)))
    assert result.returncode == 0, result.stderr
    engine = engine_env.engine()
    layer = engine.images.resolve("layers:1").layers[-1]
    assert layer.media_type == mt.OCI_LAYER_GZIP
    blob = engine.content.read_bytes(layer.digest)
    tar = gunzip(blob)
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == layer.diff_id
    assert len(tar) == layer.uncompressed_size
    numbers = len(b"".join(f"{n}\n".encode() for n in range(1, 200001)))
    assert 3_000_000 < len(blob) < 3_000_000 + numbers / 2  # random bytes stored as they are, numbers compressed
