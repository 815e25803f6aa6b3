"""Container lifecycle hooks (postStart, preStop) as the kubelet runs them: an exec, httpGet or sleep handler,
with upstream's messages.

What the core does with a HookFailed, as upstream:
- postStart: record a Warning event err.event_reason ("FailedPostStartHook") with err.event_message
  ("PostStartHook failed" - the detail stays out of events, it may hold secrets), kill the container, and
  show it waiting with reason HookFailed.POST_START_REASON ("PostStartHookError") and message err.detail;
- preStop: record "FailedPreStopHook" / "PreStopHook failed" and go on stopping the container - unless
  err.timed_out: a preStop hook still running when the grace period ends is not an error upstream, the
  container is simply killed.
An HTTP hook succeeds whatever status the server answers; only a failed exchange fails it."""

from __future__ import annotations

import asyncio

from pocketkube.kubelet.probes import (
    EventCallback,
    ProbeTarget,
    TransportError,
    TransportTimeout,
    go_quote,
    http_get,
    http_get_request,
    join_host_port,
    notify,
)

HOOKS = ("postStart", "preStop")


class HookFailed(Exception):
    """A lifecycle hook that failed or did not finish within its time; str() reads "PostStartHookError:
    <detail>" or "PreStopHook failed: <detail>"."""

    POST_START_REASON = "PostStartHookError"

    def __init__(self, hook: str, detail: str, *, timed_out: bool = False) -> None:
        prefix = self.POST_START_REASON if hook == "postStart" else "PreStopHook failed"
        super().__init__(f"{prefix}: {detail}")
        self.hook = hook
        self.detail = detail
        self.timed_out = timed_out

    @property
    def event_reason(self) -> str:
        return "FailedPostStartHook" if self.hook == "postStart" else "FailedPreStopHook"

    @property
    def event_message(self) -> str:
        return "PostStartHook failed" if self.hook == "postStart" else "PreStopHook failed"


async def run_hook(handler: dict, target: ProbeTarget, *, timeout: float, hook: str,
                   ports: list[dict] | None = None, on_event: EventCallback | None = None) -> None:
    """Runs a postStart or preStop handler within `timeout` seconds; raises HookFailed. `ports` are the
    container's ports (for an httpGet naming one); on_event(reason, message) hears "LifecycleHTTPFallback"
    when an HTTPS hook had to be retried over plain HTTP."""
    if hook not in HOOKS:
        raise ValueError(f"unknown lifecycle hook {hook!r}: expected postStart or preStop")
    where = f"for Container {go_quote(target.container)} in Pod {go_quote(target.pod)}"
    if handler.get("exec") is not None:
        await _exec_hook(handler["exec"].get("command") or [], target, timeout, hook, where)
    elif handler.get("httpGet") is not None:
        await _http_hook(handler["httpGet"], target, timeout, hook, where, ports or [], on_event)
    elif handler.get("sleep") is not None:
        await _sleep_hook(int(handler["sleep"].get("seconds") or 0), timeout, hook, where)
    else:
        raise HookFailed(hook, f"Cannot run handler: invalid handler: {handler}")


async def _exec_hook(command: list[str], target: ProbeTarget, timeout: float, hook: str, where: str) -> None:
    described = f"Exec lifecycle hook ([{' '.join(command)}]) {where} failed - error:"
    joined = " ".join(command)
    try:
        async with asyncio.timeout(timeout):
            code, output = await target.exec(list(command), timeout)
    except TimeoutError:
        raise HookFailed(hook, f'{described} command {go_quote(joined)} timed out, message: ""',
                         timed_out=True) from None
    except Exception as err:  # the command could not be run: a failed hook, whatever the reason
        raise HookFailed(hook, f'{described} {err}, message: ""') from None
    if code != 0:
        text = output.decode(errors="replace")
        raise HookFailed(hook, f"{described} command '{joined}' exited with {code}: {text}, "
                               f"message: {go_quote(text)}")


async def _http_hook(action: dict, target: ProbeTarget, timeout: float, hook: str, where: str,
                     ports: list[dict], on_event: EventCallback | None) -> None:
    described = f"HTTP lifecycle hook ({action.get('path') or ''}) {where} failed - error:"
    try:
        request = http_get_request(action, target.pod_ip, ports, "lifecycle")
    except ValueError as err:
        raise HookFailed(hook, f"{described} {err}") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await http_get(request, target.netns, timeout)
    except TransportError as err:
        if request.scheme != "https" or "server gave HTTP response to HTTPS client" not in str(err):
            raise HookFailed(hook, f"{described} {err}", timed_out=isinstance(err, TransportTimeout)) from None
        # An HTTPS hook answered in plain HTTP is tried again over HTTP, without credentials, as upstream.
        request.scheme = "http"
        request.headers = [(name, value) for name, value in request.headers if name != "Authorization"]
        try:
            await http_get(request, target.netns, max(deadline - loop.time(), 0.001))
        except TransportError:
            raise HookFailed(hook, f"{described} {err}") from None
        await notify(on_event, "LifecycleHTTPFallback",
                     f"request to HTTPS lifecycle hook {join_host_port(request.host, request.port)} got HTTP "
                     "response, retry with HTTP succeeded")


async def _sleep_hook(seconds: int, timeout: float, hook: str, where: str) -> None:
    if seconds <= timeout:
        await asyncio.sleep(seconds)
        return
    await asyncio.sleep(timeout)
    raise HookFailed(hook, f"Sleep lifecycle hook ({seconds}) {where} failed - error: container terminated "
                           "before sleep hook finished", timed_out=True)
