"""Zero-copy file answers on any event loop.

uvloop has no ``loop.sendfile``; aiohttp, our first server core, fell back to reading 256 KiB
chunks in a thread and writing them (two copies through user space and a thread hop per
chunk): zips went out at 0.6-0.8x of the Go peers' rate. This is the kernel's sendfile,
straight from the page cache to the connection's socket.

The transport is left alone while it runs: what it holds (the headers) is flushed first (by
the caller), the socket is used through a duplicate descriptor (uvloop refuses
``add_writer`` on a descriptor a transport owns), and nothing else writes to the connection
until the body is sent.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

# Bytes per sendfile call: bounds how long one call may keep the event loop when the file is
# not in the page cache.
MAX_CALL_BYTES = 4 << 20


def duplicate(transport: Any) -> int:
    """A duplicate of the connection's socket descriptor, for :func:`send` (the caller
    closes it; one per connection is enough)."""
    return os.dup(transport.get_extra_info("socket").fileno())


async def send(transport: Any, out: int, source: int, offset: int, count: int) -> None:
    """Send ``count`` bytes of the file ``source`` from ``offset`` on ``out`` (a duplicate
    of the transport's socket, whose buffer must be empty); raises ConnectionResetError when
    the client goes away or the file ends early."""
    loop = asyncio.get_running_loop()
    while count > 0:
        if transport.is_closing():
            raise ConnectionResetError("connection closed")
        try:
            sent = os.sendfile(out, source, offset, min(count, MAX_CALL_BYTES))
        except BlockingIOError:
            await _writable(loop, out)
            continue
        except (BrokenPipeError, ConnectionError) as e:
            raise ConnectionResetError(str(e)) from e
        if sent == 0:  # the file is shorter than its stat said: it changed under us
            raise ConnectionResetError("file ended early")
        offset += sent
        count -= sent


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
