"""The etcd v3 backend, over gRPC with aetcd's generated etcd protocol stubs, on one channel over every member.

aetcd's high-level helpers lack revisions, limits and compare-and-swap deletes, so this module
speaks the etcd protocol with aetcd's generated messages and stubs, the way kube-apiserver's etcd3
store uses clientv3:
- create: Txn(If create_revision == 0, Then put)
- update: Txn(If mod_revision == expected, Then put, Else get)
- delete: Txn(If mod_revision == expected, Then delete, Else get)
- watch: one gRPC Watch stream per watch, with prev_kv (a DELETE event carries only the key).
"""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from aetcd import rpc
from grpc import aio

from pocketkube.storage.interface import (
    CompactedError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionMismatchError,
    Storage,
    StorageError,
)

_CONNECT_TIMEOUT = 5.0


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix" (b"\\0" = no upper bound)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


def _kv(kv: Any) -> KeyValue:
    return KeyValue(kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision)


def _event(e: Any) -> Event:
    kv = _kv(e.kv)
    if e.type == rpc.Event.PUT and kv.create_revision == kv.mod_revision:
        return Event("ADDED", kv)
    if not e.HasField("prev_kv"):
        # etcd omits prev_kv when the previous version is already compacted; like kube-apiserver,
        # fail the watch rather than hand out an event without its old state.
        raise StorageError(f"etcd event without prev_kv (key={kv.key!r}, revision={kv.mod_revision})")
    prev = _kv(e.prev_kv)
    if e.type == rpc.Event.PUT:
        return Event("MODIFIED", kv, prev)
    # A DELETE event's kv holds only the key and the deletion revision: the last value is prev_kv's.
    return Event("DELETED", KeyValue(kv.key, prev.value, prev.create_revision, kv.mod_revision), prev)


def _compare(key: bytes, target: str, value: int, result: int = rpc.Compare.EQUAL) -> Any:
    compare = rpc.Compare(key=key, result=result, target=getattr(rpc.Compare, target.upper()))
    setattr(compare, f"{target}_revision", value)
    return compare


def channel_target(endpoints: list[str]) -> str:
    """A gRPC target naming every endpoint's address ("ipv4:10.0.0.1:2379,10.0.0.2:2379"), host names
    resolved now; one address family (that of the first endpoint). ValueError for an endpoint that is not
    plain http or does not resolve."""
    family, addresses = None, []
    for endpoint in endpoints:
        url = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if url.scheme != "http":
            raise ValueError(f"etcd endpoint {endpoint}: only plain http endpoints are supported")
        host, port = url.hostname or "127.0.0.1", url.port or 2379
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            raise ValueError(f"etcd endpoint {endpoint}: {err}") from None
        family = family or infos[0][0]
        for info_family, *_, sockaddr in infos:
            if info_family == family:
                ip = sockaddr[0]
                addresses.append(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
                break
    scheme = "ipv6" if family == socket.AF_INET6 else "ipv4"
    return f"{scheme}:{','.join(dict.fromkeys(addresses))}"


class EtcdStorage(Storage):
    """Storage on an etcd v3 cluster; `endpoints` like ["http://127.0.0.1:2379"]."""

    def __init__(self, endpoints: list[str], *, timeout: float = 30.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = list(endpoints)
        self._timeout = timeout
        self._channel: aio.Channel | None = None
        self._kv_stub: Any = None
        self._watch_stub: Any = None
        self._calls: set[Any] = set()
        self._compacted = 0
        self._closed = False

    # lifecycle

    async def start(self) -> None:
        """Open one gRPC channel over every endpoint (members of one cluster): it talks to the first that
        answers and, when that member goes away, reconnects to the next by itself (pick-first over the
        address list). Requests in flight then fail; later ones go to the member that answers."""
        try:
            target = await asyncio.to_thread(channel_target, self.endpoints)
        except ValueError as err:
            raise StorageError(str(err)) from None
        self._channel = rpc.insecure_channel(target)
        self._kv_stub = rpc.KVStub(self._channel)
        self._watch_stub = rpc.WatchStub(self._channel)
        try:
            await self._kv_stub.Range(rpc.RangeRequest(key=b"\x00", count_only=True), timeout=_CONNECT_TIMEOUT)
        except aio.AioRpcError as exc:
            await self._channel.close()
            self._channel = None
            raise StorageError(f"no etcd endpoint answered ({', '.join(self.endpoints)}): "
                               f"{exc.code().name}: {exc.details()}") from None
        self._compacted = await self._find_compacted()

    async def close(self) -> None:
        if self._closed or self._channel is None:
            return
        self._closed = True
        for call in list(self._calls):
            call.cancel()  # their watch generators see the cancellation and end
        await self._channel.close()

    # plumbing

    async def _rpc(self, method: str, request: Any, revision: int = 0) -> Any:
        """One unary KV call, with etcd's revision errors translated."""
        if self._kv_stub is None or self._closed:
            raise StorageError("etcd storage is not open")
        try:
            return await getattr(self._kv_stub, method)(request, timeout=self._timeout)
        except aio.AioRpcError as exc:
            details = exc.details() or ""
            if "required revision has been compacted" in details:
                # etcd refused because revision < its compact revision, so that is at least revision+1.
                self._compacted = max(self._compacted, await self._find_compacted(), revision + 1)
                raise CompactedError(revision, self._compacted) from exc
            if "future revision" in details:
                raise FutureRevisionError(revision, await self.current_revision()) from exc
            raise StorageError(f"etcd {method}: {exc.code().name}: {details}") from exc

    async def _readable(self, revision: int) -> bool:
        """Whether etcd can still serve reads at `revision` (a range fails iff revision < compact rev)."""
        try:
            await self._kv_stub.Range(rpc.RangeRequest(key=b"\x00", revision=revision, count_only=True),
                                      timeout=self._timeout)
        except aio.AioRpcError as exc:
            details = exc.details() or ""
            if "required revision has been compacted" in details:
                return False
            if "future revision" in details:
                return True  # not compacted, merely ahead of the store (a watch may wait for it)
            raise StorageError(f"etcd Range: {exc.code().name}: {details}") from exc
        return True

    async def _find_compacted(self) -> int:
        """etcd's compact revision, which it does not report directly: binary search over readability."""
        if await self._readable(max(self._compacted, 1)):
            return self._compacted
        low, high = max(self._compacted, 1), await self.current_revision()  # low unreadable, high readable
        while high - low > 1:
            middle = (low + high) // 2
            if await self._readable(middle):
                high = middle
            else:
                low = middle
        return high

    # writes

    async def create(self, key: str, value: bytes) -> KeyValue:
        key_b = key.encode()
        resp = await self._rpc("Txn", rpc.TxnRequest(
            compare=[_compare(key_b, "create", 0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key_b, value=value))],
        ))
        if not resp.succeeded:
            raise KeyExistsError(key)
        revision = resp.header.revision
        return KeyValue(key, bytes(value), revision, revision)

    async def update(self, key: str, value: bytes, expected_mod_revision: int) -> KeyValue:
        key_b = key.encode()
        resp = await self._rpc("Txn", rpc.TxnRequest(
            # create_revision > 0 keeps an expected revision of 0 from creating the key.
            compare=[_compare(key_b, "mod", expected_mod_revision),
                     _compare(key_b, "create", 0, rpc.Compare.GREATER)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key_b, value=value, prev_kv=True))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key_b))],
        ))
        if not resp.succeeded:
            self._raise_mismatch(key, resp)
        prev = resp.responses[0].response_put.prev_kv
        return KeyValue(key, bytes(value), prev.create_revision, resp.header.revision)

    async def delete(self, key: str, expected_mod_revision: int | None = None) -> KeyValue:
        key_b = key.encode()
        compare = [] if expected_mod_revision is None else [_compare(key_b, "mod", expected_mod_revision)]
        resp = await self._rpc("Txn", rpc.TxnRequest(
            compare=compare,
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key_b, prev_kv=True))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key_b))],
        ))
        if not resp.succeeded:
            self._raise_mismatch(key, resp)
        deleted = resp.responses[0].response_delete_range
        if not deleted.prev_kvs:
            raise KeyNotFoundError(key)
        prev = deleted.prev_kvs[0]
        return KeyValue(key, prev.value, prev.create_revision, resp.header.revision)

    @staticmethod
    def _raise_mismatch(key: str, resp: Any) -> None:
        current = resp.responses[0].response_range.kvs
        if not current:
            raise KeyNotFoundError(key)
        raise RevisionMismatchError(key, _kv(current[0]))

    async def compact(self, revision: int) -> None:
        try:
            # physical: return only once the old revisions are gone from the backend, so the
            # space is reusable (etcd's file shrinks only on defragment, which kube never runs).
            await self._rpc("Compact", rpc.CompactionRequest(revision=revision, physical=True), revision)
        except CompactedError:
            return  # already compacted at or past `revision`
        self._compacted = max(self._compacted, revision)

    # reads

    async def get(self, key: str, revision: int = 0) -> KeyValue | None:
        resp = await self._rpc("Range", rpc.RangeRequest(key=key.encode(), revision=revision), revision)
        return _kv(resp.kvs[0]) if resp.kvs else None

    @staticmethod
    def _range(prefix: str, start_after: str, revision: int, **options: Any) -> Any:
        """A Range over the keys under `prefix` that sort after `start_after`."""
        prefix_b = prefix.encode()
        low = max(prefix_b, start_after.encode() + b"\x00") if start_after else prefix_b
        return rpc.RangeRequest(key=low or b"\x00", range_end=_prefix_end(prefix_b), revision=revision, **options)

    async def list(self, prefix: str, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        resp = await self._rpc("Range", self._range(prefix, start_after, revision, limit=limit), revision)
        return ListResult([_kv(kv) for kv in resp.kvs], revision or resp.header.revision, bool(resp.more))

    async def count(self, prefix: str, revision: int = 0, start_after: str = "") -> int:
        resp = await self._rpc("Range", self._range(prefix, start_after, revision, count_only=True), revision)
        return int(resp.count)

    async def current_revision(self) -> int:
        resp = await self._rpc("Range", rpc.RangeRequest(key=b"\x00", count_only=True))
        return int(resp.header.revision)

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    # watch

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """start_revision <= 0 means "from now on" (etcd's default)."""
        if self._watch_stub is None or self._closed:
            raise StorageError("etcd storage is not open")
        if start_revision > 1 and not await self._readable(start_revision - 1):
            # etcd itself accepts start == compact revision, though a delete at exactly that
            # revision is already gone; the contract requires start > compacted revision.
            self._compacted = max(self._compacted, await self._find_compacted())
            raise CompactedError(start_revision, self._compacted)
        prefix_b = prefix.encode()
        call = self._watch_stub.Watch()
        self._calls.add(call)
        try:
            await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=prefix_b or b"\x00", range_end=_prefix_end(prefix_b),
                start_revision=max(start_revision, 0), prev_kv=True,
            )))
            while True:
                resp = await call.read()
                if resp is aio.EOF:
                    raise StorageError("etcd ended the watch stream")
                if resp.compact_revision:
                    self._compacted = max(self._compacted, resp.compact_revision)
                    raise CompactedError(start_revision, resp.compact_revision)
                if resp.canceled:
                    raise StorageError(f"etcd canceled the watch: {resp.cancel_reason}")
                for e in resp.events:
                    yield _event(e)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and call.cancelled() and current is not None and not current.cancelling():
                return  # close() cancelled the stream: the watch simply ends
            raise
        except aio.AioRpcError as exc:
            raise StorageError(f"etcd watch: {exc.code().name}: {exc.details()}") from exc
        finally:
            self._calls.discard(call)
            call.cancel()
