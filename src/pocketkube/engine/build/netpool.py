"""Network namespaces on the engine's default network for RUN steps, attached once and reused by the
build's steps one at a time (BuildKit pools them the same way): attaching costs a CNI ADD."""

from __future__ import annotations

import asyncio

from pocketkube.engine.network import Attachment, DefaultNetwork


class NetworkPool:
    def __init__(self, network: DefaultNetwork, prefix: str) -> None:
        self.network = network
        self.prefix = prefix
        self._free: list[tuple[str, Attachment]] = []
        self._all: list[tuple[str, Attachment]] = []
        self._lock = asyncio.Lock()

    async def acquire(self) -> tuple[str, Attachment]:
        async with self._lock:
            if self._free:
                return self._free.pop()
            name = f"{self.prefix}-net{len(self._all) + 1}"
            attachment = await self.network.attach(name, [])
            self._all.append((name, attachment))
            return name, attachment

    async def warm(self) -> None:
        """Have one namespace attached before the first step asks."""
        self.release(await self.acquire())

    def release(self, entry: tuple[str, Attachment]) -> None:
        self._free.append(entry)

    async def close(self) -> None:
        """Detach every namespace (also after a failure); the first error is raised once all are tried."""
        failure: BaseException | None = None
        while self._all:
            name, attachment = self._all.pop()
            try:
                await self.network.detach(name, attachment.netns, connected=True)
            except Exception as err:  # keep detaching the others
                failure = failure or err
        self._free.clear()
        if failure is not None:
            raise failure
