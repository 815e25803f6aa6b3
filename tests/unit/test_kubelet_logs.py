"""Container logs: rotation by size (files kept, compression, reopen failures) and serving a log whose file
is rotated while a follower reads it."""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path

import pytest

from pocketkube.kubelet.logrotation import ContainerLogRotator, LogRotationPolicy, remove_rotated
from pocketkube.kubelet.streaming.containerlogs import LogOptions, write_log


def _entry(text: str, stream: str = "stdout") -> bytes:
    return f"2026-11-23T07:00:00.000000000Z {stream} F {text}\n".encode()


class FakeMonitor:
    """Stands in for conmon: reopening creates the file anew at the path."""

    def __init__(self, path: Path, *, fail: bool = False) -> None:
        self.path = path
        self.fail = fail
        self.reopened = 0

    async def reopen(self, container_id: str) -> None:
        if self.fail:
            raise RuntimeError(f"cannot reopen the log of container {container_id}: its monitor is not running")
        self.reopened += 1
        self.path.touch()


def test_policy_checks_its_flags() -> None:
    assert LogRotationPolicy.parse("10Mi", 5) == LogRotationPolicy(10 * 1024 * 1024, 5)
    assert LogRotationPolicy.parse("1k", 2).max_size == 1000
    with pytest.raises(ValueError, match="invalid container log max size '10Q'"):
        LogRotationPolicy.parse("10Q", 5)
    with pytest.raises(ValueError, match="container log max files must be at least 2, not 1"):
        LogRotationPolicy.parse("10Mi", 1)
    with pytest.raises(ValueError, match="must be positive"):
        LogRotationPolicy.parse("0", 3)


async def test_rotation_keeps_max_files_and_compresses_older_ones(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "0.log"
    monitor = FakeMonitor(log)
    rotator = ContainerLogRotator(LogRotationPolicy(max_size=100, max_files=3), monitor.reopen)
    log.write_bytes(_entry("small"))
    assert await rotator.rotate([("c1", log)]) == []  # under the limit
    stamps = iter(f"20261123-0700{n:02d}" for n in range(10))
    monkeypatch.setattr("pocketkube.kubelet.logrotation.time.strftime", lambda _fmt: next(stamps))
    for round_number in range(4):
        log.write_bytes(_entry(f"round {round_number} " + "x" * 100))
        [rotated] = await rotator.rotate([("c1", log)])
        assert rotated == tmp_path / f"0.log.20261123-0700{round_number:02d}"
        assert log.exists() and log.stat().st_size == 0  # the monitor's new file
    assert monitor.reopened == 4
    # max_files 3: the live file, the latest rotated one as written, one older compressed
    assert _names(tmp_path) == ["0.log", "0.log.20261123-070002.gz", "0.log.20261123-070003"]
    assert b"round 2 " in gzip.decompress((tmp_path / "0.log.20261123-070002.gz").read_bytes())
    assert b"round 3 " in (tmp_path / "0.log.20261123-070003").read_bytes()
    remove_rotated(log)
    assert _names(tmp_path) == ["0.log"]


async def test_failed_reopen_renames_back_and_a_missing_log_is_reopened(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    monitor = FakeMonitor(log, fail=True)
    rotator = ContainerLogRotator(LogRotationPolicy(max_size=10, max_files=2), monitor.reopen)
    log.write_bytes(_entry("x" * 50))
    assert await rotator.rotate([("c1", log)]) == []
    assert _names(tmp_path) == ["0.log"] and b"x" * 50 in log.read_bytes()
    monitor.fail = False
    log.unlink()
    assert await rotator.rotate([("c1", log)]) == [] and log.exists() and monitor.reopened == 1


async def test_leftovers_of_an_interrupted_round_are_cleaned(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    for name in ("0.log.20261123-070000", "0.log.20261123-070000.gz", "0.log.20261123-070001.gz.tmp"):
        (tmp_path / name).write_bytes(gzip.compress(b"old") if name.endswith(".gz") else b"old")
    log.write_bytes(_entry("y" * 50))
    rotator = ContainerLogRotator(LogRotationPolicy(max_size=10, max_files=5), FakeMonitor(log).reopen)
    [rotated] = await rotator.rotate([("c1", log)])
    assert _names(tmp_path) == ["0.log", "0.log.20261123-070000.gz", rotated.name]


async def test_follow_moves_on_to_the_new_file_after_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(_entry("one"))
    received: list[bytes] = []
    running = True

    async def write(chunk: bytes) -> None:
        received.append(chunk)

    follower = asyncio.create_task(write_log(log, LogOptions(follow=True), write, lambda: running))
    await _until(lambda: b"".join(received) == b"one\n")
    _rename_then_append(log, tmp_path / "0.log.1", _entry("two"))  # the monitor writes on until it reopens
    await asyncio.sleep(0.3)
    log.write_bytes(_entry("three"))
    await _until(lambda: b"".join(received) == b"one\ntwo\nthree\n")
    running = False
    await asyncio.wait_for(follower, 5)
    assert b"".join(received) == b"one\ntwo\nthree\n"


async def test_tail_and_limit_bytes(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(b"".join(_entry(f"line {n}") for n in range(5)) + b"2026-11-23T07:00:00Z stdout F torn")
    received: list[bytes] = []

    async def write(chunk: bytes) -> None:
        received.append(chunk)

    await write_log(log, LogOptions(tail_lines=2), write, lambda: False)
    assert b"".join(received) == b"line 3\nline 4\n"
    received.clear()
    await write_log(log, LogOptions(limit_bytes=9), write, lambda: False)
    assert b"".join(received) == b"line 0\nli"


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _rename_then_append(path: Path, new_name: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        os.rename(path, new_name)
        f.write(data)


async def _until(condition, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)
