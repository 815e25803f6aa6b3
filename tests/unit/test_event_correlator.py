"""EventRecorder correlates events as client-go's EventCorrelator: repeats counted, similar events
combined from the tenth message on, at most 25 events per object in a burst."""

from __future__ import annotations

import asyncio
from typing import Any

from pocketkube.client.events import COMBINED_PREFIX, SPAM_BURST, EventRecorder
from pocketkube.client.rest import APIError

RS = {"kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": {"name": "web", "namespace": "ns", "uid": "u1"}}


class FakeEvents:
    """Just enough of Client: records creates and patches, with a little latency so calls overlap."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str]] = []
        self.missing: set[str] = set()

    async def create(self, info: Any, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.001)
        name = f"web.{len(self.calls)}"
        self.calls.append(("create", name, body["count"], body["message"]))
        return {"metadata": {"name": name}}

    async def patch(self, info: Any, name: str, body: dict[str, Any], namespace: str) -> dict[str, Any]:
        await asyncio.sleep(0.001)
        if name in self.missing:
            raise APIError(404, {"reason": "NotFound"}, "PATCH", name)
        self.calls.append(("patch", name, body["count"], body["message"]))
        return {}


def recorder() -> tuple[EventRecorder, FakeEvents]:
    fake = FakeEvents()
    return EventRecorder(fake, "controller-manager"), fake  # type: ignore[arg-type]


async def test_repeats_bump_the_count_of_one_event() -> None:
    rec, fake = recorder()
    for _ in range(3):
        await rec.event(RS, "Warning", "FailedCreate", "boom")
    assert fake.calls == [("create", "web.0", 1, "boom"), ("patch", "web.0", 2, "boom"), ("patch", "web.0", 3, "boom")]


async def test_similar_events_are_combined_from_the_tenth_message() -> None:
    rec, fake = recorder()
    for i in range(12):
        await rec.event(RS, "Normal", "SuccessfulCreate", f"Created pod: web-{i}")
    assert [c[3] for c in fake.calls[:9]] == [f"Created pod: web-{i}" for i in range(9)]
    combined = fake.calls[9:]
    assert combined[0] == ("create", "web.9", 1, COMBINED_PREFIX + "Created pod: web-9")
    assert combined[1:] == [("patch", "web.9", 2, COMBINED_PREFIX + "Created pod: web-10"),
                            ("patch", "web.9", 3, COMBINED_PREFIX + "Created pod: web-11")]


async def test_spam_filter_lets_a_burst_through_per_object() -> None:
    rec, fake = recorder()
    for i in range(100):
        await rec.event(RS, "Normal", "SuccessfulCreate", f"Created pod: web-{i}")
    assert len(fake.calls) == SPAM_BURST
    other = {**RS, "metadata": {**RS["metadata"], "name": "api", "uid": "u2"}}
    await rec.event(other, "Normal", "SuccessfulCreate", "Created pod: api-0")
    assert len(fake.calls) == SPAM_BURST + 1


async def test_concurrent_repeats_make_one_event_with_the_full_count() -> None:
    rec, fake = recorder()
    await asyncio.gather(*(rec.event(RS, "Warning", "FailedCreate", "boom") for _ in range(5)))
    assert [c[0] for c in fake.calls] == ["create", "patch"]
    assert fake.calls[-1][2] == 5


async def test_a_deleted_event_is_created_again_with_its_count() -> None:
    rec, fake = recorder()
    await rec.event(RS, "Warning", "FailedCreate", "boom")
    fake.missing.add("web.0")
    await rec.event(RS, "Warning", "FailedCreate", "boom")
    assert fake.calls[-1] == ("create", "web.1", 2, "boom")
