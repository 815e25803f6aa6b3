"""/healthz, /livez and /readyz, answered as k8s.io/apiserver's healthz handlers answer them.

Each endpoint runs its named checks. All passing: 200 "ok", or with ?verbose one "[+]name ok" line per
check and "<endpoint> check passed". Any failing: 500 with every check listed ("[-]name failed: reason
withheld") and "<endpoint> check failed". ?exclude=name skips a check. The checks run at once, so a
datastore that does not answer costs one time-out, not one per check. /<endpoint>/<name> runs one check:
"ok", or 500 "internal server error: <reason>"; a name the endpoint does not have is 404.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

# A check returns when healthy and raises (with the reason) when not.
Check = Callable[[], Awaitable[None]]


class HealthEndpoint:
    def __init__(self, name: str, checks: list[tuple[str, Check]]) -> None:
        self.name = name  # healthz, livez or readyz
        self.checks = dict(checks)

    async def _failure(self, check: Check) -> str:
        try:
            await check()
        except Exception as err:  # any failure is the check's answer
            return str(err) or type(err).__name__
        return ""

    async def handle(self, request: web.Request) -> web.Response:
        single = request.match_info.get("check")
        if single is not None:
            return await self._one(single)
        excluded = set(request.query.getall("exclude", []))
        run = [name for name in self.checks if name not in excluded]
        reasons = dict(zip(run, await asyncio.gather(*(self._failure(self.checks[name]) for name in run)),
                           strict=True))
        lines: list[str] = []
        failed = False
        for name in self.checks:
            if name in excluded:
                lines.append(f"[+]{name} excluded: ok")
                continue
            reason = reasons[name]
            if reason:
                failed = True
                lines.append(f"[-]{name} failed: reason withheld")
                log.warning("%s check %s failed: %s", self.name, name, reason)
            else:
                lines.append(f"[+]{name} ok")
        if failed:
            return web.Response(status=500, text="\n".join(lines) + f"\n{self.name} check failed\n",
                                content_type="text/plain")
        if "verbose" in request.query:
            return web.Response(text="\n".join(lines) + f"\n{self.name} check passed\n", content_type="text/plain")
        return web.Response(text="ok", content_type="text/plain")

    async def _one(self, name: str) -> web.Response:
        check = self.checks.get(name)
        if check is None:
            return web.Response(status=404, text="404 page not found\n", content_type="text/plain")
        reason = await self._failure(check)
        if reason:
            return web.Response(status=500, text=f"internal server error: {reason}\n", content_type="text/plain")
        return web.Response(text="ok", content_type="text/plain")
