"""The HTTP server with its connection bounds: a header deadline and a connection cap.

aiohttp's low-level server gives every connection a keep-alive timer, but by default the
first request may take an hour to arrive and connections are unbounded: 1,008 half-sent
requests once held every file descriptor of a worker and silenced it, ``/healthz`` included,
for minutes. Here a new connection must deliver its request line and headers within
``header_timeout``; an idle keep-alive connection is closed after ``keepalive_timeout``;
past ``max_connections`` a new connection is answered 503 at once and closed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("entrepot.web")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def _plain(status: bytes, body: bytes, *extra: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        + b"".join(h + b"\r\n" for h in extra)
        + b"Connection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


BUSY_RESPONSE = _plain(
    b"503 Service Unavailable",
    b"the mirror has too many open connections; retry shortly\n",
    b"Retry-After: 1",
)
ALIVE_RESPONSE = _plain(b"200 OK", b"ok (at the connection limit)\n")


def fd_limit() -> int:
    """This process's file-descriptor limit (the soft one, which is what counts)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit(ceiling: int = 1 << 20) -> int:
    """Raise the soft file-descriptor limit to the hard one (capped); returns the new limit.

    The common default soft limit is 1024, which a few hundred slow clients exhaust."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard if hard != resource.RLIM_INFINITY else ceiling, ceiling)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def connection_budget(configured: int, *, fds: int) -> int:
    """Connections one worker may hold: the configured number, at most a quarter of the fds.
    A connection serving a cached zip holds two (its socket and the file), and the rest is
    for fetches' locks, staged files and upstream sockets: at half, 127 readers of a zip
    took all 256 fds and the worker went silent below its own cap."""
    return max(8, min(configured, fds // 4))


def fetch_budget(configured: int, *, fds: int) -> int:
    """Distinct fetches one worker may run: each holds a lock file, a staged file and an
    upstream socket; together they may use at most a quarter of the fds."""
    return max(4, min(configured, fds // 12))


class _QuietBadRequests(logging.Filter):
    """aiohttp logs each malformed request (``GET *``, an 8 KiB URL) with a traceback at
    ERROR: 1,000 of them wrote 690 KB of log. They are the client's fault and already get a
    400: keep them out of the log unless it is at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            return logging.getLogger("entrepot").isEnabledFor(logging.DEBUG)
        return True


def quiet_bad_request_logs() -> None:
    logging.getLogger("aiohttp.server").addFilter(_QuietBadRequests())


class _Refuse(asyncio.Protocol):
    """Answers a connection over the cap without parsing HTTP, and closes it once the
    request has been read (closing with unread bytes would reset the connection before the
    client reads the answer), or after a second at most.

    The answer is 503, except for ``GET /healthz``: the process is alive, only busy, and a
    liveness probe that failed here would have the kubelet restart a pod for being popular
    (``/readyz`` does get 503, which takes the pod out of the Service while it is full).
    """

    GRACE = 1.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._seen = b""
        self._answered = False
        self._timer = asyncio.get_running_loop().call_later(self.GRACE, self._give_up)

    def data_received(self, data: bytes) -> None:
        self._seen = (self._seen + data)[-512:]
        if not self._answered and b"\r\n" in self._seen:
            alive = self._seen.startswith((b"GET /healthz ", b"HEAD /healthz "))
            self.transport.write(ALIVE_RESPONSE if alive else BUSY_RESPONSE)
            self._answered = True
        if b"\r\n\r\n" in self._seen:
            self.transport.close()

    def _give_up(self) -> None:
        if not self._answered:
            self.transport.write(BUSY_RESPONSE)
        self.transport.close()

    def eof_received(self) -> bool:
        self._give_up()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


class _Handler(RequestHandler):
    """aiohttp's handler with a separate, shorter deadline for the first request's headers."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # aiohttp arms its keep-alive timer at connection start (a connection that sends
        # nothing is closed when it fires); the first request gets the header deadline.
        handle = self._keepalive_handle
        if handle is not None and self.header_timeout > 0:
            handle.cancel()
            close_time = self._loop.time() + self.header_timeout
            self._next_keepalive_close_time = close_time
            self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)


class GuardedServer(web.Server):
    def __init__(
        self,
        handler: Handler,
        *,
        header_timeout: float,
        keepalive_timeout: float,
        max_connections: int,
        on_refused: Callable[[], None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, keepalive_timeout=keepalive_timeout, **kwargs)
        self.max_connections = max_connections
        self.on_refused = on_refused
        self._handler_class = type("_BoundHandler", (_Handler,), {"header_timeout": header_timeout})

    def __call__(self) -> RequestHandler:  # the protocol factory of the listening socket
        if len(self.connections) >= self.max_connections:
            self.on_refused()
            return _Refuse()  # type: ignore[return-value]
        return self._handler_class(self, loop=self._loop, **self._kwargs)  # type: ignore[no-any-return]
