"""Zero-copy file answers on any event loop.

uvloop has no ``loop.sendfile``; aiohttp, our first server core, fell back to reading 256 KiB
chunks in a thread and writing them (two copies through user space and a thread hop per
chunk): zips went out at 0.6-0.8x of the Go peers' rate. This is the kernel's sendfile,
straight from the page cache to the connection's socket.

The transport is left alone while it runs: it must hold nothing (the caller waits for that),
the socket is used through a duplicate descriptor (uvloop refuses ``add_writer`` on a
descriptor a transport owns), and nothing else writes to the connection until the body is
sent. The head goes first with ``MSG_MORE``, so the kernel sends it in the same segment as
the start of the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

# Bytes per sendfile call: bounds how long one call keeps the event loop (from the page cache
# or, worse, from disk), so the other connections of the worker get their turn. With wrk -t2,
# c=64 and a 5.4 MB zip, 1 MiB gave about the throughput of 4 MiB or better and a lower p99
# (docs/benchmarks.md).
MAX_CALL_BYTES = 1 << 20
# The send buffer of a connection that sends files (the kernel doubles it, and caps it at
# net.core.wmem_max): more bytes queued per wake-up. Measured with wrk -t2 on a 5.4 MB zip:
# a fifth less server CPU per zip than the kernel's autotuned size, the same throughput.
SEND_BUFFER = 4 << 20


def duplicate(transport: Any) -> socket.socket:
    """A socket object over a duplicate of the connection's descriptor, for :func:`send`
    (non-blocking, like the original; the caller closes it; one per connection is enough).
    The connection's send buffer is raised to SEND_BUFFER."""
    sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    return sock


async def send(
    transport: Any, sock: socket.socket, head: bytes, source: int, *, offset: int, count: int
) -> None:
    """Send ``head``, then ``count`` bytes of the file ``source`` from ``offset``, on ``sock``
    (a duplicate of the transport's socket, whose buffer must be empty); raises
    ConnectionResetError when the client goes away or the file ends early."""
    loop = asyncio.get_running_loop()
    out = sock.fileno()
    waiter: list[asyncio.Future[None] | None] = [None]

    def wake() -> None:
        ready = waiter[0]
        if ready is not None and not ready.done():
            ready.set_result(None)

    registered = False
    try:
        while head or count > 0:
            if transport.is_closing():
                raise ConnectionResetError("connection closed")
            try:
                if head:
                    head = head[sock.send(head, socket.MSG_MORE) :]
                    continue
                sent = os.sendfile(out, source, offset, min(count, MAX_CALL_BYTES))
            except BlockingIOError:
                if not registered:
                    loop.add_writer(out, wake)
                    registered = True
                ready: asyncio.Future[None] = loop.create_future()
                waiter[0] = ready
                await ready
                continue
            except (BrokenPipeError, ConnectionError) as e:
                raise ConnectionResetError(str(e)) from e
            if sent == 0:  # the file is shorter than its stat said: it changed under us
                raise ConnectionResetError("file ended early")
            offset += sent
            count -= sent
    finally:
        if registered:
            loop.remove_writer(out)
