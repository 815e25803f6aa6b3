"""The shared informer's list + watch against a real API server, as client-go's reflector behaves: a watch
that ends resumes from the last resourceVersion (bookmarks included) without listing; 410 Gone, and only
that, lists again and reports what changed meanwhile, deletions included; other failures back off and resume.

The informer's client is wrapped (Recording) to count LISTs, see every watch it opens, hold the next watch
back while the test changes things, and inject failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import aiohttp
import pytest
from cluster import Cluster
from harness import bare_server, connect, create_namespace, eventually, resource

from pocketkube.client.informer import Backoff, Informer
from pocketkube.client.rest import APIError, Client

Obj = dict[str, Any]
CONFIGMAPS, SECRETS = resource("", "configmaps"), resource("", "secrets")
_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    yield from bare_server()


@pytest.fixture(scope="module")
def compacting() -> Iterator[Cluster]:
    """A server that compacts every half second: history older than a second is soon Gone."""
    yield from bare_server("--compaction-interval", "0.5")


@pytest.fixture
async def api(server: Cluster) -> AsyncIterator[Client]:
    async with connect(server) as client:
        yield client


class Recording:
    """The informer's client: counts LISTs, records each watch's resourceVersion and events, holds the next
    watch while `gate` is clear (setting `held`), and raises what `fail_open` / `fail_after_event` hold."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.lists = 0
        self.watch_rvs: list[str] = []
        self.events: list[tuple[str, str]] = []  # (type, resourceVersion) as the server sent them
        self.failures: list[BaseException] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = asyncio.Event()
        self.fail_open: list[BaseException] = []
        self.fail_after_event: list[BaseException] = []

    async def list(self, *args: Any, **kwargs: Any) -> Obj:
        self.lists += 1
        return await self.client.list(*args, **kwargs)

    async def watch(self, *args: Any, resource_version: str = "", **kwargs: Any) -> AsyncIterator[tuple[str, Obj]]:
        if not self.gate.is_set():
            self.held.set()
            await self.gate.wait()
            self.held.clear()
        self.watch_rvs.append(resource_version)
        try:
            if self.fail_open:
                raise self.fail_open.pop(0)
            async for event_type, obj in self.client.watch(*args, resource_version=resource_version, **kwargs):
                self.events.append((event_type, obj["metadata"].get("resourceVersion", "")))
                yield event_type, obj
                if self.fail_after_event:
                    raise self.fail_after_event.pop(0)
        except Exception as err:
            self.failures.append(err)
            raise


class Seen:
    """The handler calls: ("add", name, rv), ("update", name, old rv, new rv), ("delete", name, rv)."""

    def __init__(self, informer: Informer) -> None:
        self.calls: list[tuple[str, ...]] = []
        informer.add_handler(self._add, self._update, self._delete)

    @staticmethod
    def _ident(obj: Obj) -> tuple[str, str]:
        return obj["metadata"]["name"], obj["metadata"]["resourceVersion"]

    def _add(self, obj: Obj) -> None:
        self.calls.append(("add", *self._ident(obj)))

    def _update(self, old: Obj, new: Obj) -> None:
        name, rv = self._ident(new)
        self.calls.append(("update", name, old["metadata"]["resourceVersion"], rv))

    def _delete(self, obj: Obj) -> None:
        self.calls.append(("delete", *self._ident(obj)))

    def changes(self) -> list[tuple[str, ...]]:
        """The calls without client-go's relist updates of unchanged objects (same resourceVersion)."""
        return [c for c in self.calls if not (c[0] == "update" and c[2] == c[3])]


@contextlib.asynccontextmanager
async def informing(client: Client, namespace: str, *,
                    watch_timeout: int | None = None) -> AsyncIterator[tuple[Informer, Recording, Seen]]:
    recording = Recording(client)
    informer = Informer(cast(Client, recording), CONFIGMAPS, namespace=namespace, watch_timeout=watch_timeout)
    informer.backoff = Backoff(initial=0.05, cap=0.2, jitter=0)
    seen = Seen(informer)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        yield informer, recording, seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def held(recording: Recording) -> None:
    """Close the gate and wait until the informer's next watch waits at it."""
    recording.gate.clear()
    await asyncio.wait_for(recording.held.wait(), 10)


def configmap(name: str, value: str = "1") -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}


async def put(client: Client, ns: str, name: str, value: str) -> str:
    """Change a ConfigMap's data; its new resourceVersion."""
    obj = await client.patch(CONFIGMAPS, name, {"data": {"v": value}}, ns)
    return str(obj["metadata"]["resourceVersion"])


async def create(client: Client, ns: str, name: str) -> str:
    return str((await client.create(CONFIGMAPS, configmap(name), ns))["metadata"]["resourceVersion"])


async def current_revision(client: Client, ns: str) -> str:
    return str((await client.list(CONFIGMAPS, ns))["metadata"]["resourceVersion"])


async def test_ended_watch_resumes_from_last_resource_version_without_listing(api: Client) -> None:
    ns = await create_namespace(api, f"inf-resume-{next(_names)}")
    a, b = await create(api, ns, "a"), await create(api, ns, "b")
    async with informing(api, ns, watch_timeout=1) as (informer, rec, seen):
        assert sorted(seen.calls) == [("add", "a", a), ("add", "b", b)]
        seen.calls.clear()
        await held(rec)  # the first watch ended (the server's 1 s timeout); the next one waits
        last = informer.resource_version
        opened = len(rec.watch_rvs)

        a2 = await put(api, ns, "a", "2")
        await api.delete(CONFIGMAPS, "b", ns)
        c = await create(api, ns, "c")
        c2 = await put(api, ns, "c", "2")
        rec.gate.set()

        expected = [("update", "a", a, a2), ("delete", "b"), ("add", "c", c), ("update", "c", c, c2)]
        await eventually(lambda: _async(len(seen.calls) >= 4), timeout=5, what="the changes")
        assert [call[:2] if call[0] == "delete" else call for call in seen.calls] == expected
        assert rec.watch_rvs[opened] == last  # resumed where it was
        # One more watch ends and resumes: nothing is delivered twice, and nothing was listed again.
        await eventually(lambda: _async(len(rec.watch_rvs) >= opened + 2), timeout=5, what="another watch")
        assert len(seen.calls) == 4
        assert rec.lists == 1
        assert sorted(informer.store.keys()) == [f"{ns}/a", f"{ns}/c"]
        assert informer.store.get(f"{ns}/c")["metadata"]["resourceVersion"] == c2  # type: ignore[index]


async def test_bookmarks_advance_the_resource_version(api: Client) -> None:
    ns = await create_namespace(api, f"inf-bookmark-{next(_names)}")
    await create(api, ns, "only")
    async with informing(api, ns, watch_timeout=3) as (informer, rec, seen):
        seen.calls.clear()
        # Writes elsewhere move the revision on; the informer's ConfigMaps do not change.
        for i in range(3):
            await api.create(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{i}"}}, ns)
        revision = await current_revision(api, ns)
        # The server sends a bookmark 2 s before the watch's 3 s timeout: the informer takes its revision,
        await eventually(lambda: _async(informer.resource_version == revision), timeout=5, what="a bookmark")
        assert ("BOOKMARK", revision) in rec.events
        # and its next watch starts from there.
        await eventually(lambda: _async(revision in rec.watch_rvs), timeout=5, what="a watch from the bookmark")
        assert seen.calls == []
        assert rec.lists == 1


async def test_watch_gone_relists_and_reports_what_changed_and_vanished(compacting: Cluster) -> None:
    async with connect(compacting) as api:
        ns = await create_namespace(api, f"inf-gone-{next(_names)}")
        keep, drop, change = [await create(api, ns, n) for n in ("keep", "drop", "change")]
        async with informing(api, ns, watch_timeout=1) as (informer, rec, seen):
            seen.calls.clear()
            await held(rec)
            last = informer.resource_version

            await api.delete(CONFIGMAPS, "drop", ns)
            changed = await put(api, ns, "change", "2")
            new = await create(api, ns, "new")
            # Compaction passes the informer's resourceVersion: a watch from there is Gone (an ERROR event).
            await eventually(lambda: _gone(api, ns, last), timeout=10, what="compaction past the informer")
            rec.gate.set()

            await eventually(lambda: _async(len(seen.changes()) >= 3), timeout=5, what="the relist's calls")
            assert isinstance(rec.failures[0], APIError) and rec.failures[0].status == 410
            assert rec.lists == 2
            changes = seen.changes()
            assert sorted(c[:2] for c in changes) == [("add", "new"), ("delete", "drop"), ("update", "change")]
            assert ("update", "change", change, changed) in changes and ("add", "new", new) in changes
            assert ("delete", "drop", drop) in changes  # the last state the informer knew
            # client-go's Replace: the unchanged object gets an update with its resourceVersion unchanged.
            assert ("update", "keep", keep, keep) in seen.calls
            assert sorted(informer.store.keys()) == [f"{ns}/change", f"{ns}/keep", f"{ns}/new"]
            assert rec.watch_rvs[-1] == informer.resource_version != last


async def test_http_410_on_opening_a_watch_relists(api: Client) -> None:
    ns = await create_namespace(api, f"inf-410-{next(_names)}")
    drop = await create(api, ns, "drop")
    async with informing(api, ns, watch_timeout=1) as (informer, rec, seen):
        seen.calls.clear()
        await held(rec)
        await api.delete(CONFIGMAPS, "drop", ns)
        rec.fail_open.append(APIError(410, {"kind": "Status", "status": "Failure", "reason": "Expired",
                                            "code": 410, "message": "too old resource version"}, "GET", "watch"))
        rec.gate.set()
        await eventually(lambda: _async(("delete", "drop", drop) in seen.calls), timeout=5, what="the deletion")
        assert rec.lists == 2
        assert informer.store.get(f"{ns}/drop") is None


async def test_transient_errors_back_off_and_resume_without_listing(api: Client) -> None:
    ns = await create_namespace(api, f"inf-transient-{next(_names)}")
    async with informing(api, ns) as (informer, rec, seen):
        # The stream breaks right after delivering x's creation; the next watch is held while x changes and y
        # comes and goes; then opening the watch fails three ways before it works.
        rec.fail_after_event.append(aiohttp.ClientPayloadError("injected: stream broken"))
        rec.gate.clear()
        x = await create(api, ns, "x")
        await asyncio.wait_for(rec.held.wait(), 10)
        last = informer.resource_version
        assert last == x
        x2 = await put(api, ns, "x", "2")
        y = await create(api, ns, "y")
        await api.delete(CONFIGMAPS, "y", ns)
        rec.fail_open += [APIError(503, {"reason": "ServiceUnavailable", "code": 503}, "GET", "watch"),
                          aiohttp.ClientConnectionError("injected: connection refused"),
                          ConnectionRefusedError(111, "injected")]
        rec.gate.set()

        await eventually(lambda: _async(len(seen.calls) >= 4), timeout=5, what="the changes")
        assert [call[:2] if call[0] == "delete" else call for call in seen.calls] == [
            ("add", "x", x), ("update", "x", x, x2), ("add", "y", y), ("delete", "y")]
        assert len(rec.failures) == 4
        assert rec.watch_rvs[-4:] == [last] * 4  # every retry resumed from the same place
        assert rec.lists == 1
        await asyncio.sleep(0.3)
        assert len(seen.calls) == 4


async def test_server_restart_resumes_the_watch(server: Cluster) -> None:
    async with connect(server) as api:
        ns = await create_namespace(api, f"inf-restart-{next(_names)}")
        async with informing(api, ns) as (informer, rec, seen):
            before = await create(api, ns, "before")
            await eventually(lambda: _async(informer.resource_version == before), timeout=5, what="the event")
            # Nothing else has written since: the restarted server's watch cache starts at this revision, so
            # the informer can resume (an older revision would be Gone, and relisting would be right).
            assert await current_revision(api, ns) == before
            seen.calls.clear()

            await asyncio.to_thread(server.stop)
            await eventually(lambda: _async(rec.failures), timeout=10, what="a failed watch")  # refused
            rec.gate.clear()
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(rec.held.wait(), 10)
            async with connect(server) as fresh:  # the old client's pooled connections are dead
                during = await create(fresh, ns, "during")
                before2 = await put(fresh, ns, "before", "2")
            rec.gate.set()

            await eventually(lambda: _async(len(seen.calls) >= 2), timeout=5, what="the changes")
            assert seen.calls == [("add", "during", during), ("update", "before", before, before2)]
            assert rec.watch_rvs[-1] == before
            assert rec.lists == 1


async def _async(value: Any) -> Any:
    return value


async def _gone(api: Client, ns: str, resource_version: str) -> bool:
    """Whether a watch from resource_version is answered 410 Gone."""
    try:
        async with contextlib.aclosing(api.watch(CONFIGMAPS, ns, resource_version=resource_version,
                                                 timeout_seconds=1)) as events:
            async for _ in events:
                return False
    except APIError as err:
        return err.status == 410
    return False
