"""The HTTP/1.1 server core: an asyncio protocol over the llhttp parser (httptools).

Why not aiohttp's server: on the 2-core benchmark machine a constant answer cost 85 µs of CPU
through aiohttp and 29 µs through a bare protocol like this one, while goproxy spent 91 µs on a
whole ``.info`` hit (docs/architecture.md). The core does only what a mirror's GET/HEAD
traffic needs, and handlers never see it (entrepot.web.http is their whole interface):

* keep-alive and pipelining, answered in order, about ``MAX_QUEUED`` requests read ahead
  (a read is parsed in slices of ``FEED_BYTES``, the rest held until the queue drains);
* a request must be complete ``header_timeout`` after its first byte (and the first one
  after the connection opens); an idle connection is closed after ``keepalive_timeout``;
* past ``max_connections`` a new connection is answered 503 at once and closed (``_Refuse``),
  and past as many again, closed without an answer (``_HangUp``), which frees the descriptor
  at once;
* malformed requests get 400, over-long URLs 414, oversized headers 431, then the
  connection is closed; none of them is logged above debug level (a flood must not fill
  the log);
* files go out with the kernel's sendfile (entrepot.web.sendfile), with HEAD, Range and
  conditional requests planned by entrepot.web.files, within ``send_grace`` plus the size
  at ``min_send_rate``; answers from memory drain within ``send_grace`` plus what is
  buffered at that rate; a client too slow for either is dropped with a reset;
* graceful shutdown: stop listening, close idle connections, let requests in flight finish
  (their answers say ``Connection: close``), abort what is left after the timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import resource
import socket
import struct
import time
import types
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import unquote

import httptools

from entrepot.web import sendfile
from entrepot.web.files import plan
from entrepot.web.http import (
    REASONS,
    TEXT,
    AnyResponse,
    FileResponse,
    Request,
    Response,
    render_fields,
)

log = logging.getLogger("entrepot.web")
T = TypeVar("T")

MAX_URL = 8190  # bytes of request target, as aiohttp and most servers allow
MAX_HEADER_BYTES = 32 << 10
MAX_HEADERS = 100
MAX_BODY = 16 << 20
"""Bytes of request body kept (npm audit and, later, publish); a larger body gets 413."""
MAX_QUEUED = 16  # pipelined requests read ahead of the one being answered
FEED_BYTES = 2048  # a read is parsed in slices of this size (see data_received)
SMALL_FILE = 64 << 10  # files up to this size are read and sent with their head in one write


class App(Protocol):
    """What the core serves: ``handle`` answers (it maps its own errors to responses);
    ``done`` is told how each request ended (metrics, access log)."""

    async def handle(self, request: Request) -> AnyResponse: ...

    def done(self, request: Request, status: int, sent: int, seconds: float) -> None: ...


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
REJECTIONS = {
    400: _plain(b"400 Bad Request", b"malformed HTTP request\n"),
    414: _plain(b"414 URI Too Long", b"request target longer than 8190 bytes\n"),
    431: _plain(b"431 Request Header Fields Too Large", b"request headers too large\n"),
    413: _plain(b"413 Content Too Large", f"request body larger than {MAX_BODY} bytes\n".encode()),
}


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
    A connection serving a cached zip holds three (its socket, the socket's duplicate for
    sendfile, and the file); as many again may be held by connections being refused; the
    rest is for fetches' locks, staged files and upstream sockets: at half, 127 readers of a
    zip took all 256 fds and the worker went silent."""
    return max(8, min(configured, fds // 4))


def fetch_budget(configured: int, *, fds: int) -> int:
    """Distinct fetches one worker may run: each holds a lock file, a staged file and an
    upstream socket; together they may use at most a quarter of the fds."""
    return max(4, min(configured, fds // 12))


class _Clock:
    """The Date header line, formatted once a second."""

    second = -1
    line = b""

    @classmethod
    def date_line(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            text = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            cls.line = f"Date: {text}\r\n".encode()
            cls.second = now
        return cls.line


_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in REASONS.items()}
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_CONNECTION = {
    (True, False): b"",
    (True, True): b"Connection: keep-alive\r\n",
    (False, False): b"Connection: close\r\n",
    (False, True): b"Connection: close\r\n",
}


def with_date(prepared: bytes) -> bytes:
    """A prepared answer with the Date header every 2xx-4xx answer needs (RFC 9110 6.6.1)."""
    line, _, rest = prepared.partition(b"\r\n")
    return b"%s\r\n%s%s" % (line, _Clock.date_line(), rest)


def render_head(
    status: int, fields: bytes, length: int | None, *, keep_alive: bool, http10: bool
) -> bytes:
    """The status line and header block around ``fields`` (see render_fields). ``length``
    None: no Content-Length (204, 304)."""
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()
    return b"".join(
        (
            line,
            fields,
            _Clock.date_line(),
            b"" if length is None else b"Content-Length: %d\r\n" % length,
            _CONNECTION[keep_alive, http10],
            b"\r\n",
        )
    )


# Header names and methods clients send on every request, decoded once.
_NAMES = {
    n.encode(): n.lower()
    for n in (
        "Host",
        "User-Agent",
        "Accept",
        "Accept-Encoding",
        "Connection",
        "If-None-Match",
        "If-Modified-Since",
        "Range",
        "If-Range",
        "Content-Length",
        "Authorization",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "Cache-Control",
        "Pragma",
    )
}
_NAMES |= {name.lower(): value for name, value in _NAMES.items()}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")}


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], waiting: Any) -> Generator[Any, Any, T]:
    """Go on with a coroutine that already yielded ``waiting`` (what it awaits) to the task
    now awaiting this: the task gets it as if the coroutine had yielded it to the task."""
    while True:
        try:
            sent = yield waiting
        except BaseException as error:  # thrown in by the task: cancellation
            try:
                waiting = coro.throw(error)
            except StopIteration as done:
                return cast(T, done.value)
        else:
            try:
                waiting = coro.send(sent)
            except StopIteration as done:
                return cast(T, done.value)


async def _ready(response: AnyResponse) -> AnyResponse:
    return response


class _Reject(Exception):
    """Raised from a parser callback to stop parsing with this status."""

    def __init__(self, status: int) -> None:
        self.status = status


class HttpServer:
    """The protocol factory of the listening sockets, and what shutdown needs."""

    def __init__(
        self,
        app: App,
        *,
        header_timeout: float = 10.0,
        keepalive_timeout: float = 75.0,
        max_connections: int = 1 << 20,
        min_send_rate: int = 0,
        send_grace: float = 30.0,
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections
        self.min_send_rate = min_send_rate
        self.send_grace = send_grace
        self.on_refused = on_refused
        self.connections: set[_Connection] = set()
        self.refusing = 0  # connections over the cap being answered 503
        self.closing = False
        self._listeners: list[asyncio.AbstractServer] = []
        self._idle = asyncio.Event()

    def __call__(self) -> asyncio.Protocol:
        if len(self.connections) >= self.max_connections:
            self.on_refused()
            if self.refusing >= self.max_connections:
                # Answering holds a descriptor until the request is read; in a burst that
                # starved fetches of descriptors. Past this many, hang up at once.
                return _HangUp()
            return _Refuse(self)
        return _Connection(self)

    async def listen(
        self, *, sock: socket.socket | None = None, host: str | None = None, port: int = 0
    ) -> list[tuple[str, int]]:
        """Serve ``sock``, or bind ``host:port`` (all interfaces when host is empty);
        returns the bound addresses."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            listener = await loop.create_server(self, sock=sock)
        else:
            listener = await loop.create_server(
                self, host or None, port, backlog=1024, reuse_address=True
            )
        self._listeners.append(listener)
        return [s.getsockname()[:2] for s in listener.sockets]

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, close idle connections, wait up to ``grace`` seconds for requests
        in flight, then abort what is left."""
        self.closing = True
        for listener in self._listeners:
            listener.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
        for conn in list(self.connections):
            conn.abort()

    def _forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if self.closing:
            self._idle.set()


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue, answer in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.remote: str | None = None
        self._url = b""
        self._body: bytearray | None = None
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._header_count = 0
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0  # bytes received while in a head (a field that never ends)
        self._receiving = False  # between a request's first byte and its end
        self._queue: collections.deque[tuple[Request, bool, bool] | int] = collections.deque()
        # One task per connection answers its requests in order, and waits for the next one
        # (a task per request cost a sixth of a cached answer's CPU).
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._busy = False  # answering a request now
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._stopped = False  # no more requests are read (a rejection, an upgrade, lost)
        self._lost = False
        self._paused_reading = False
        self._write_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._send_sock: socket.socket | None = None  # for sendfile, made on first use
        # A request _answer_now began and the task finishes (request, keep-alive, HTTP/1.0,
        # start time, the rest of its handler).
        self._handoff: tuple[Request, bool, bool, float, Awaitable[AnyResponse]] | None = None
        self._held = b""  # the rest of a read, parsed once the queue drains (data_received)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        self.server.connections.add(self)
        self._deadline = self.loop.time() + self.server.header_timeout
        self._arm(self._deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
        if self._send_sock is not None and not self._busy:
            self._send_sock.close()
            self._send_sock = None
        self._kick()
        self.server._forget(self)

    def data_received(self, data: bytes) -> None:
        # pause_reading() stops the reads that follow, not the parsing of the read in hand,
        # which may hold thousands of pipelined requests (256 KiB of 18-byte ones): a long
        # read is parsed in slices, and once MAX_QUEUED requests are queued the rest is held
        # unparsed (reading is paused then) until the queue drains (_run). The read-ahead
        # stays within MAX_QUEUED and what one slice holds.
        if self._held:  # reading is paused, so not expected: keep the bytes in order
            self._held += data
            return
        if len(data) <= FEED_BYTES:
            self._feed(data)
            return
        for start in range(0, len(data), FEED_BYTES):
            if self._stopped:
                return
            if len(self._queue) >= MAX_QUEUED:
                self._held = data[start:]
                return
            self._feed(data[start : start + FEED_BYTES])

    def _feed(self, data: bytes) -> None:
        if self._stopped:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Not HTTP after this request (``Upgrade: h2c``, websocket): answer it, then close.
            self._stop(None)
        except _Reject as e:
            self._stop(e.status)
        except httptools.HttpParserError as e:
            cause = e.__context__
            self._stop(cause.status if isinstance(cause, _Reject) else 400)
        if self._in_head and not self._stopped:
            # A head is incomplete: bound the line it ends in, which the parser keeps whole
            # (a field that never ends). Its bytes are those after this read's last line
            # feed, or all of them while no line ends (not the whole read: it may hold
            # thousands of complete requests before the head it ends in).
            end = data.rfind(b"\n")
            self._head_bytes = self._head_bytes + len(data) if end < 0 else len(data) - end - 1
            if self._head_bytes > MAX_URL + MAX_HEADER_BYTES:
                self._stop(431)
                return
        if self._receiving and self._timer_at > self._deadline:
            self._arm(self._deadline)  # a request came in part: its deadline is nearer

    def eof_received(self) -> bool:
        # The client sent everything; answer what it asked, then close.
        self._stopped = True
        return self._busy or bool(self._queue)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._receiving = True
        self._url = b""
        self._body = None
        self._headers = {}
        self._header_bytes = 0
        self._header_count = 0
        self._in_head = True
        self._deadline = self.loop.time() + self.server.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL:
            raise _Reject(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if self._header_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADERS:
            raise _Reject(431)
        key = _NAMES.get(name) or name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        if key in headers:
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text

    def on_body(self, body: bytes) -> None:
        if self._body is None:
            self._body = bytearray()
        self._body += body
        if len(self._body) > MAX_BODY:
            raise _Reject(413)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if "expect" in self._headers:
            self._continue()

    def _continue(self) -> None:
        """Expect: 100-continue on an HTTP/1.1 request with a body: the client waits for
        "100 Continue" before sending it (RFC 9110 10.1.1). Said only when nothing is being
        answered on the connection: in a pipeline it would land before an earlier request's
        answer (and a client that pipelines does not wait for it)."""
        headers = self._headers
        if (
            headers["expect"].strip().lower() == "100-continue"
            and (headers.get("content-length", "0") != "0" or "transfer-encoding" in headers)
            and self.parser.get_http_version() == "1.1"
            and not self._busy
            and not self._queue
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_message_complete(self) -> None:
        self._receiving = False
        url = self._url
        if not url.startswith(b"/"):  # "*", absolute-form: not for a mirror
            raise _Reject(400)
        path_bytes, _, query = url.partition(b"?")
        path = path_bytes.decode("utf-8", "replace")
        if "%" in path:
            path = unquote(path, errors="replace")
        parser = self.parser
        method = parser.get_method()
        request = Request(
            _METHODS.get(method) or method.decode("latin-1"),
            path,
            self._headers,
            query=query.partition(b"#")[0].decode("latin-1"),
            remote=self.remote,
            body=b"" if self._body is None else bytes(self._body),
        )
        self._body = None
        http10 = parser.get_http_version() == "1.0"
        wake = self._wake
        if (
            wake is not None
            and not wake.done()
            and not self._queue
            and not self._busy
            and not self._write_paused
        ):
            self._answer_now(request, parser.should_keep_alive(), http10)
            return
        self._queue.append((request, parser.should_keep_alive(), http10))
        self._kick()
        if len(self._queue) >= MAX_QUEUED and not self._paused_reading:
            self.transport.pause_reading()
            self._paused_reading = True

    # -- answering ----------------------------------------------------------------------------

    def _answer_now(self, request: Request, keep_alive: bool, http10: bool) -> None:
        """Answer in this callback, the connection's task being idle: most answers (cached
        ones) need no waiting, and waking the task for them cost a tenth of their CPU.

        The handler runs as the connection's task (entered for the step, so
        ``asyncio.current_task()`` and ``asyncio.timeout`` work as they would there). If it
        must wait, the task carries on with the same coroutine (``_resume``); an answer from
        a file is handed to the task too."""
        task = self._task
        assert task is not None
        loop = self.loop
        app = self.server.app
        start = time.perf_counter()
        coro = app.handle(request)
        _enter_task(loop, task)
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            response = done.value
        except Exception:
            log.exception("unexpected error serving %s", request.path)
            response = Response(500, text="internal error in the mirror; see its log\n")
        else:
            self._handoff = (request, keep_alive, http10, start, _resume(coro, waiting))
            self._busy = True
            self._kick()
            return
        finally:
            _leave_task(loop, task)
        if not isinstance(response, Response):
            self._handoff = (request, keep_alive, http10, start, _ready(response))
            self._busy = True
            self._kick()
            return
        keep_alive = keep_alive and not self.server.closing
        try:
            status, sent = self._send_bytes(request, response, keep_alive, http10)
        except Exception:  # a response the core cannot send (a header with a line break)
            log.exception("could not send the answer to %s", request.path)
            status, sent, keep_alive = 500, 0, False
            self.transport.abort()
        app.done(request, status, sent, time.perf_counter() - start)
        if not keep_alive:
            self._stopped = True
            self._kick()  # the task closes the connection
        elif not self._receiving:
            self._deadline = loop.time() + self.server.keepalive_timeout

    def _stop(self, status: int | None) -> None:
        """Read no more requests; answer those queued, then ``status`` (if any), then close."""
        self._stopped = True
        self._receiving = False
        if status is not None:
            self._queue.append(status)
        self._kick()

    def _kick(self) -> None:
        """Start the connection's task, or wake it: there is work, or it must end."""
        if self._task is None:
            if not self._lost:
                self._task = self.loop.create_task(self._run())
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _run(self) -> None:
        queue = self._queue
        try:
            while not self._lost:
                if not queue:
                    if self._stopped or self.server.closing:
                        self.transport.close()
                        return
                    if not self._receiving:
                        # Idle: the keep-alive deadline (the timer looks at it lazily).
                        self._deadline = self.loop.time() + self.server.keepalive_timeout
                        if self._timer is None or self._timer_at > self._deadline:
                            self._arm(self._deadline)
                    self._wake = self.loop.create_future()
                    try:
                        await self._wake
                    finally:
                        self._wake = None
                    if self._handoff is not None and not await self._finish_handoff():
                        self.transport.close()
                        return
                    continue
                item = queue.popleft()
                if self._paused_reading and len(queue) < MAX_QUEUED // 2:
                    held, self._held = self._held, b""
                    if held:  # what was read but not parsed (data_received)
                        self.data_received(held)
                    if not self._held:
                        self._paused_reading = False
                        self.transport.resume_reading()
                if isinstance(item, int):
                    log.debug("rejected a request with %d", item)
                    self.transport.write(with_date(REJECTIONS[item]))
                    self.transport.close()
                    return
                request, keep_alive, http10 = item
                keep_alive = keep_alive and not self.server.closing
                self._busy = True
                try:
                    if not await self._serve(request, keep_alive, http10):
                        self.transport.close()
                        return
                finally:
                    self._busy = False
        finally:
            if self._handoff is not None:  # lost before the task woke: let the handler end
                await self._finish_handoff()
            self._task = None
            if self._lost and self._send_sock is not None:
                self._send_sock.close()
                self._send_sock = None

    async def _finish_handoff(self) -> bool:
        """Finish the request _answer_now began (``_busy`` is already set)."""
        handoff, self._handoff = self._handoff, None
        assert handoff is not None
        request, keep_alive, http10, start, rest = handoff
        try:
            return await self._serve(request, keep_alive, http10, start=start, answer=rest)
        finally:
            self._busy = False

    async def _serve(
        self,
        request: Request,
        keep_alive: bool,
        http10: bool,
        *,
        start: float | None = None,
        answer: Awaitable[AnyResponse] | None = None,
    ) -> bool:
        """Answer one request (``answer``: the handler begun by _answer_now); False when the
        connection must close after it."""
        app = self.server.app
        start = time.perf_counter() if start is None else start
        status, sent = 499, 0
        try:
            try:
                response = await (app.handle(request) if answer is None else answer)
            except Exception:
                log.exception("unexpected error serving %s", request.path)
                response = Response(500, text="internal error in the mirror; see its log\n")
            if self._lost:
                return False
            keep_alive = keep_alive and not self.server.closing
            if isinstance(response, Response):
                status, sent = self._send_bytes(request, response, keep_alive, http10)
            else:
                status, sent = await self._send_file(request, response, keep_alive, http10)
            # Every answer waits for the drain, those without a body (HEAD, 304) too: else a
            # client pipelining them and reading nothing is buffered for without end.
            if self._write_paused:
                await self._drained()
        except ConnectionError:
            status, sent, keep_alive = 499, 0, False
        except Exception:  # a response the core cannot send (a header with a line break)
            log.exception("could not send the answer to %s", request.path)
            status, sent, keep_alive = 500, 0, False
            self.transport.abort()
        finally:
            app.done(request, status, sent, time.perf_counter() - start)
        return keep_alive and not self._lost

    def _send_bytes(
        self, request: Request, response: Response, keep_alive: bool, http10: bool
    ) -> tuple[int, int]:
        status = response.status
        body = response.body
        bodiless = status in (204, 304)
        fields = response.fields
        if fields is None:
            fields = render_fields(response.headers)
        head = render_head(
            status, fields, None if bodiless else len(body), keep_alive=keep_alive, http10=http10
        )
        if bodiless or request.method == "HEAD":
            self.transport.write(head)
            return status, 0
        self.transport.write(head + body)
        return status, len(body)

    async def _send_file(
        self, request: Request, response: FileResponse, keep_alive: bool, http10: bool
    ) -> tuple[int, int]:
        try:
            fd = os.open(response.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            # Removed (a purge) or out of descriptors between the handler and here.
            log.warning("could not open %s to send it: %s", response.path, e)
            gone = Response(
                503,
                text="the cached file could not be opened; retry shortly\n",
                headers={"Retry-After": "1", "Cache-Control": "no-store"},
            )
            return self._send_bytes(request, gone, keep_alive, http10)
        try:
            size = os.fstat(fd).st_size
            todo = plan(request.headers, size=size, etag=response.etag, mtime=response.mtime)
            headers = {**response.headers, "Accept-Ranges": "bytes"}
            if todo.content_range is not None:
                headers["Content-Range"] = todo.content_range
            length = None if todo.status == 304 else todo.length
            head = render_head(
                todo.status,
                render_fields(headers),
                length,
                keep_alive=keep_alive,
                http10=http10,
            )
            if not todo.has_body or request.method == "HEAD":
                self.transport.write(head)
                return todo.status, 0
            if todo.length <= SMALL_FILE:
                data = os.pread(fd, todo.length, todo.start)
                if len(data) != todo.length:  # the file shrank under us: cut the connection
                    self.transport.abort()
                    return 499, 0
                self.transport.write(head + data)
                if self._write_paused:
                    await self._drained()
                return todo.status, todo.length
            if self._send_sock is None:
                self._send_sock = sendfile.duplicate(self.transport)
            limit = self.server.min_send_rate
            try:
                async with asyncio.timeout(
                    self.server.send_grace + todo.length / limit if limit else None
                ):
                    await self._drained_fully()
                    await sendfile.send(
                        self.transport,
                        self._send_sock,
                        head,
                        fd,
                        offset=todo.start,
                        count=todo.length,
                    )
            except TimeoutError:
                self._drop()  # the client reads too slowly
                return 499, 0
            return todo.status, todo.length
        finally:
            os.close(fd)

    async def _drained(self) -> None:
        """Wait until the transport's buffer is below its low-water mark, within the deadline
        of a file answer: send_grace plus what it holds at min_send_rate. A client that
        stops reading is dropped, not waited for with its answer forever."""
        if not self._write_paused:
            return
        limit = self.server.min_send_rate
        held = self.transport.get_write_buffer_size()
        self._write_waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(self.server.send_grace + held / limit if limit else None):
                await self._write_waiter
        except TimeoutError:
            self._drop()
            raise ConnectionResetError("the client reads too slowly") from None
        finally:
            self._write_waiter = None

    def _drop(self) -> None:
        """Close with a reset (SO_LINGER 0), so the kernel discards what it still holds for
        the client: a plain close (abort() is one) leaves an orphan in FIN-WAIT-1 that goes
        on sending the socket's buffer, megabytes, at the pace of the slow client."""
        sock = self._send_sock or self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.transport.abort()

    async def _drained_fully(self) -> None:
        """Wait until the transport has written everything it holds (before sendfile writes
        to the socket behind its back)."""
        transport = self.transport
        await self._drained()
        while transport.get_write_buffer_size():
            if self._lost or transport.is_closing():
                raise ConnectionResetError("connection closed")
            await asyncio.sleep(0.0005)

    # -- deadlines and shutdown ---------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        if self._busy and not self._receiving:
            # Answering: the handler's own deadlines apply. Look again later.
            self._arm(now + self.server.keepalive_timeout)
            return
        if now < self._deadline:
            self._arm(self._deadline)
            return
        self._stopped = True
        if not self._busy:
            self.transport.close()

    def close_if_idle(self) -> None:
        if not self._busy and not self._queue:
            self._stopped = True
            self.transport.close()

    def abort(self) -> None:
        self._stopped = True
        if self._busy and self._task is not None:
            self._task.cancel()
        self.transport.abort()


class _Refuse(asyncio.Protocol):
    """Answers a connection over the cap without parsing HTTP, and closes it once the
    request has been read (closing with unread bytes would reset the connection before the
    client reads the answer), or after a second at most.

    The answer is 503, except for ``GET /healthz``: the process is alive, only busy, and a
    liveness probe that failed here would have the kubelet restart a pod for being popular
    (``/readyz`` does get 503, which takes the pod out of the Service while it is full).
    """

    GRACE = 1.0

    def __init__(self, server: HttpServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.refusing += 1
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._seen = b""
        self._start = b""
        self._answered = False
        self._timer = asyncio.get_running_loop().call_later(self.GRACE, self._give_up)

    def data_received(self, data: bytes) -> None:
        first = not self._seen
        self._seen = (self._seen + data)[-512:]
        if first:
            self._start = data[:16]
        if not self._answered and b"\r\n" in self._seen:
            alive = self._start.startswith((b"GET /healthz ", b"HEAD /healthz "))
            self.transport.write(with_date(ALIVE_RESPONSE if alive else BUSY_RESPONSE))
            self._answered = True
        if b"\r\n\r\n" in self._seen:
            self.transport.close()

    def _give_up(self) -> None:
        if not self._answered:
            self.transport.write(with_date(BUSY_RESPONSE))
        self.transport.close()

    def eof_received(self) -> bool:
        self._give_up()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.refusing -= 1
        self._timer.cancel()


class _HangUp(asyncio.Protocol):
    """Closes a connection at once: the server is over its cap of connections and of
    connections being refused."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


__all__ = ["TEXT", "App", "HttpServer", "connection_budget", "fd_limit", "fetch_budget"]
