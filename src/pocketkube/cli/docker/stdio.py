"""Connecting the user's terminal (or pipes) to a container's stdio: attach for `run -i/-t`, and exec."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Awaitable, Callable, Iterator


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Puts our terminal in raw mode so keys (Ctrl-C included) go to the container's TTY."""
    if not enabled or not os.isatty(0):
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def terminal_size() -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return None
    return size.lines, size.columns


async def _forward_stdin(write: Callable[[bytes], Awaitable[None]], close: Callable[[], Awaitable[None]]) -> None:
    """Copies our stdin to the container until EOF, then closes the container's stdin. Terminals and pipes
    are read without blocking when the event loop says they are ready (epoll may say so spuriously), so
    nothing stays stuck in read() once the container ends; a regular file, which epoll cannot watch, is
    read in a thread: it never blocks."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    was_blocking = os.get_blocking(0)
    try:
        loop.add_reader(0, ready.set)
    except PermissionError:
        watched = False
    else:
        watched = True
        os.set_blocking(0, False)
    try:
        while True:
            if watched:
                await ready.wait()
                ready.clear()
                try:
                    data = os.read(0, 65536)
                except BlockingIOError:
                    continue
            else:
                data = await loop.run_in_executor(None, os.read, 0, 65536)
            if not data:
                break
            await write(data)
    finally:
        if watched:
            loop.remove_reader(0)
            os.set_blocking(0, was_blocking)
    await close()


def _watch_resize(resize: Callable[[int, int], None]) -> None:
    size = terminal_size()
    if size is None:
        return
    resize(*size)
    loop = asyncio.get_running_loop()

    def on_winch() -> None:
        current = terminal_size()
        if current:
            resize(*current)

    loop.add_signal_handler(signal.SIGWINCH, on_winch)


async def pump(session, *, tty: bool, stdin: bool) -> None:
    """Streams a session (a container attach or an exec) until the container side closes its output.
    The session reads ("stdout"|"stderr", bytes) items and takes stdin writes."""
    with raw_terminal(tty):
        if tty:
            _watch_resize(session.resize)
        feeder = asyncio.ensure_future(_forward_stdin(session.write_stdin, session.close_stdin)) if stdin else None
        try:
            while True:
                item = await session.read()
                if item is None:
                    break
                stream, data = item
                out = sys.stderr.buffer if stream == "stderr" else sys.stdout.buffer
                out.write(data)
                out.flush()
        finally:
            if feeder is not None:
                feeder.cancel()
