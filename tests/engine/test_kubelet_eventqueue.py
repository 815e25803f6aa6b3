"""The kubelet's event queue: recording never waits, events leave one at a time in order, and a full queue
drops (and logs) what does not fit, as upstream's broadcaster does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import pytest

from pocketkube.kubelet.eventqueue import EventQueue

Obj = dict[str, Any]


class SlowRecorder:
    """Stands in for the API: each write takes a while; remembers what was written and the most writes that
    were ever under way at once."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()

    async def event(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self.release.wait()
        await asyncio.sleep(0.001)
        self.written.append(f"{obj['metadata']['name']}:{reason}")
        self.in_flight -= 1


def pod(name: str) -> Obj:
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": "default", "uid": name}}


async def wait_for(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


async def test_events_leave_one_at_a_time_in_order() -> None:
    recorder = SlowRecorder()
    queue = EventQueue(recorder)  # type: ignore[arg-type]
    sender = asyncio.create_task(queue.run())
    try:
        expected = []
        for i in range(20):
            for reason in ("Pulled", "Created", "Started"):
                queue.record(pod(f"p{i}"), "Normal", reason, "")  # returns at once: nothing is sent yet
                expected.append(f"p{i}:{reason}")
        assert recorder.written == []
        recorder.release.set()
        await wait_for(lambda: len(recorder.written) == len(expected))
        assert recorder.written == expected
        assert recorder.most_in_flight == 1
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


async def test_a_full_queue_drops_events_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    recorder = SlowRecorder()
    queue = EventQueue(recorder, max_queued=3)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="pocketkube.kubelet.eventqueue"):
        for reason in ("A", "B", "C", "D", "E"):
            queue.record(pod("busy"), "Normal", reason, "")
    assert [r.getMessage() for r in caplog.records] == [
        "dropping event D for default/busy: 3 events are already waiting to be sent",
        "dropping event E for default/busy: 3 events are already waiting to be sent"]
    recorder.release.set()
    sender = asyncio.create_task(queue.run())
    try:
        await wait_for(lambda: len(recorder.written) == 3)
        assert recorder.written == ["busy:A", "busy:B", "busy:C"]
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


class FlakyRecorder:
    """Fails on the first write the way a dropped connection does; the writes after it still go out."""

    def __init__(self) -> None:
        self.written: list[str] = []

    async def event(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        if not self.written and reason == "First":
            self.written.append("failed")
            raise aiohttp.ServerDisconnectedError()  # not an OSError: the recorder lets it through
        self.written.append(reason)


async def test_a_failed_send_does_not_stop_the_queue(caplog: pytest.LogCaptureFixture) -> None:
    recorder = FlakyRecorder()
    queue = EventQueue(recorder)  # type: ignore[arg-type]
    sender = asyncio.create_task(queue.run())
    try:
        with caplog.at_level(logging.WARNING, logger="pocketkube.kubelet.eventqueue"):
            for reason in ("First", "Second", "Third"):
                queue.record(pod("p"), "Normal", reason, "")
            await wait_for(lambda: len(recorder.written) == 3)
        assert recorder.written == ["failed", "Second", "Third"]
        assert "could not send event First for p: Server disconnected" in caplog.text
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
