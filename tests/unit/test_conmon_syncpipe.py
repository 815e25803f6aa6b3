"""conmon's sync pipe is read to the first line and its fd closed exactly once, on uvloop too (whose read-pipe
transports close a pipe's fd twice: the number may belong to another file by then)."""

from __future__ import annotations

import asyncio
import os

import uvloop

from pocketkube.engine.runtime.conmon import _read_line


def test_reads_one_line_and_closes_the_fd_once() -> None:
    async def scenario() -> None:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, b'{"data": ')
        asyncio.get_running_loop().call_later(0.05, os.write, write_fd, b'42}\n{"more": 1}\n')
        assert await _read_line(read_fd) == b'{"data": 42}\n'
        reused = os.open(os.devnull, os.O_RDONLY)  # the lowest free number: the one just closed
        try:
            assert reused == read_fd
            await asyncio.sleep(0.05)  # a second close would land meanwhile
            os.fstat(reused)
        finally:
            os.close(reused)
            os.close(write_fd)

    uvloop.run(scenario())
    asyncio.run(scenario())


def test_end_of_file_without_a_line() -> None:
    async def scenario() -> None:
        read_fd, write_fd = os.pipe()
        os.close(write_fd)
        assert await _read_line(read_fd) == b""

    uvloop.run(scenario())
