"""Running a short-lived helper program to its end from asyncio: OCI runtime calls, CNI plugins, iptables.

uvloop, which the long-running components run on, starts child processes with fork(): copying the page
tables grows with the heap, and blocks the event loop for 3-9 ms per process in a kubelet or server (measured
here; the standard event loop's vfork() takes ~0.4 ms whatever the heap). These helpers are started by the
standard library's subprocess (vfork) from a worker thread that also waits for them, so the event loop only
awaits the outcome, on either loop."""

from __future__ import annotations

import asyncio
import functools
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# Threads mostly sleep in waitpid; enough that a burst of pod starts does not queue behind itself.
_WORKERS = 32
_executor = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="childprocess")


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


async def in_thread(call: Callable[[], T]) -> T:
    """Runs a blocking call that starts or waits for a child process (subprocess.Popen or a wrapper of it,
    communicate) in this module's workers: vfork, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_executor, call)


async def run(argv: Sequence[str], *, input: bytes | None = None, env: Mapping[str, str] | None = None,
              timeout: float | None = None) -> Completed:
    """Runs argv with `input` (or nothing) on stdin and its stdout and stderr captured. A missing executable
    raises FileNotFoundError; a process still running after `timeout` seconds is killed and TimeoutError
    raised. A cancelled caller leaves the process to run to its end (or its timeout) in its thread."""
    return await in_thread(functools.partial(_run, list(argv), input, None if env is None else dict(env), timeout))


def _run(argv: list[str], input: bytes | None, env: dict[str, str] | None, timeout: float | None) -> Completed:
    try:
        done = subprocess.run(argv, input=input, stdin=subprocess.DEVNULL if input is None else None,
                              capture_output=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{argv[0]} did not finish within {timeout:.0f} s") from None
    return Completed(done.returncode, done.stdout, done.stderr)
