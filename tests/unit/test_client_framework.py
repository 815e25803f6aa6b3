"""The controller framework's building blocks: work queue semantics and the informer's indexer."""

from __future__ import annotations

import asyncio

import pytest

from pocketkube.client.informer import Indexer, object_key
from pocketkube.client.workqueue import ShutDown, WorkQueue


async def test_queue_deduplicates_and_keeps_order() -> None:
    q = WorkQueue()
    for key in ("a", "b", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]


async def test_key_added_while_processing_is_requeued_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # changed again while a worker holds it
    assert len(q) == 0  # never handed to a second worker at the same time
    q.done(key)
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_rate_limited_backoff_grows_and_forget_resets() -> None:
    q = WorkQueue(base_delay=0.01)
    loop = asyncio.get_running_loop()
    delays = []
    for _ in range(3):
        start = loop.time()
        q.add_rate_limited("k")
        await asyncio.wait_for(q.get(), 2)
        q.done("k")
        delays.append(loop.time() - start)
    assert delays[0] < delays[1] < delays[2] and delays[2] >= 0.04
    assert q.failures("k") == 3
    q.forget("k")
    assert q.failures("k") == 0


async def test_add_after_and_shutdown() -> None:
    q = WorkQueue()
    q.add_after("later", 0.05)
    assert len(q) == 0
    assert await asyncio.wait_for(q.get(), 1) == "later"
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(waiter, 1)


def test_indexer_indexes_and_reindexes() -> None:
    store = Indexer()
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"},
                        "ownerReferences": [{"uid": "rs-1"}]}, "spec": {"nodeName": "n1"}}
    store.put(pod)
    assert object_key(pod) == "ns/p"
    assert store.by_index("owner", "rs-1") == [pod]
    assert store.by_index("node", "n1") == [pod]
    assert store.by_index("label", "app=web") == [pod]
    moved = {**pod, "spec": {"nodeName": "n2"}}
    store.put(moved)
    assert store.by_index("node", "n1") == [] and store.by_index("node", "n2") == [moved]
    store.remove("ns/p")
    assert len(store) == 0 and store.by_index("namespace", "ns") == []
