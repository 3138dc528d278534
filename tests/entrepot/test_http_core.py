"""The HTTP/1.1 server core (entrepot.web.server) over real sockets on 127.0.0.1.

Clients speak raw bytes, so what is checked is what goes on the wire: framing, keep-alive and
pipelining, rejections of malformed or oversized requests, deadlines, file answers through
sendfile (whole, ranged, conditional, to slow or vanishing readers), the connection cap and
graceful shutdown. Every read from the server is bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import uvloop

from entrepot.web import server as server_module
from entrepot.web.http import FileResponse, Request, Response
from entrepot.web.server import HttpServer

TIMEOUT = 5.0  # the longest any read from the server may take
BIG = 8 << 20  # more than the socket buffers hold: sendfile meets EAGAIN

Handler = Callable[[Request], Awaitable[Response | FileResponse]]


@pytest.fixture(params=[asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[..., object]:
    """Runs a coroutine on a fresh event loop: the plain asyncio one, then uvloop."""
    return request.param


# -- the application, the server and the client -------------------------------------------------


async def echo(request: Request) -> Response:
    return Response(200, text=f"{request.method} {request.path}\n")


@dataclass
class Finished:
    """One ``done()`` call."""

    path: str
    status: int
    sent: int
    seconds: float


class RecordingApp:
    """Answers with ``handler``; records the requests that reached it and how each ended."""

    def __init__(self, handler: Handler = echo) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.finished: list[Finished] = []

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def handle(self, request: Request) -> Response | FileResponse:
        self.requests.append(request)
        return await self.handler(request)

    def done(self, request: Request, status: int, sent: int, seconds: float) -> None:
        self.finished.append(Finished(request.path, status, sent, seconds))

    async def wait_finished(self, count: int = 1, within: float = TIMEOUT) -> list[Finished]:
        for _ in range(int(within / 0.01)):
            if len(self.finished) >= count:
                return self.finished
            await asyncio.sleep(0.01)
        raise AssertionError(f"done() was called {len(self.finished)} times, not {count}")


@dataclass
class Reply:
    head: bytes
    body: bytes = b""

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    @property
    def fields(self) -> list[tuple[str, str]]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return [(n.lower(), v) for n, _, v in (line.partition(": ") for line in lines if line)]

    def header(self, name: str) -> str | None:
        found = [v for n, v in self.fields if n == name]
        assert len(found) <= 1, f"{name} sent {len(found)} times"
        return found[0] if found else None


def parse(data: bytes) -> Reply:
    """One whole answer (read until the server closed)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    return Reply(head + sep, body)


class Client:
    """A raw HTTP/1.1 client: sends bytes, reads answers framed by Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def reply(self, *, bodiless: bool = False) -> Reply:
        """The next answer; ``bodiless``: it has no body whatever Content-Length says (HEAD)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        reply = Reply(head)
        length = reply.header("content-length")
        if length is not None and not bodiless:
            reply.body = await asyncio.wait_for(self.reader.readexactly(int(length)), TIMEOUT)
        return reply

    async def rest(self, within: float = TIMEOUT) -> bytes:
        """Everything until the server closes the connection (a reset counts as a close);
        TimeoutError if it does not ``within`` seconds."""
        data = b""
        async with asyncio.timeout(within):
            with contextlib.suppress(ConnectionResetError):
                while chunk := await self.reader.read(1 << 16):
                    data += chunk
        return data

    async def closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection, sending nothing more, within
        ``seconds``."""
        try:
            return await self.rest(seconds) == b""
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()


class Site:
    """A running HttpServer and the clients connected to it."""

    def __init__(self, server: HttpServer, port: int) -> None:
        self.server = server
        self.port = port
        self.clients: list[Client] = []

    async def connect(self) -> Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port), TIMEOUT
        )
        client = Client(reader, writer)
        self.clients.append(client)
        return client

    async def raw_socket(self, *, rcvbuf: int | None = None) -> socket.socket:
        """A non-blocking socket connected to the server (for loop.sock_* calls), with a
        small receive buffer if asked (set before connecting, so the window stays small)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", self.port)), TIMEOUT)
        return sock


@contextlib.asynccontextmanager
async def serving(app: RecordingApp, **options: object) -> AsyncIterator[Site]:
    """An HttpServer for ``app`` on 127.0.0.1 (``options``: HttpServer's), shut down after."""
    server = HttpServer(app, **options)
    addresses = await server.listen(host="127.0.0.1", port=0)
    assert addresses[0][0] == "127.0.0.1"
    site = Site(server, addresses[0][1])
    try:
        yield site
    finally:
        for client in site.clients:
            client.close()
        await asyncio.wait_for(server.shutdown(1.0), TIMEOUT)


def get(path: str = "/", *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    """A request's bytes (with a Host header)."""
    lines = [f"{method} {path} HTTP/{version}", "Host: test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def assert_recent_date(reply: Reply) -> None:
    date = reply.header("date")
    assert date is not None, reply.head
    assert abs(parsedate_to_datetime(date).timestamp() - time.time()) < 5


def slept(seconds: float, then: Handler = echo) -> Handler:
    async def handler(request: Request) -> Response | FileResponse:
        await asyncio.sleep(seconds)
        return await then(request)

    return handler


# -- framing, keep-alive, pipelining ------------------------------------------------------------


async def test_a_simple_answer_is_exactly_these_bytes() -> None:
    """The status line, the handler's headers, Date, Content-Length, and the body; nothing
    else."""
    async with serving(RecordingApp()) as site:
        client = await site.connect()
        client.send(get("/hello", "Connection: close"))
        data = await client.rest()
    date = re.search(rb"\r\nDate: ([^\r\n]*)\r\n", data)
    assert date is not None
    assert data == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Date: " + date[1] + b"\r\n"
        b"Content-Length: 11\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"GET /hello\n"
    )
    assert_recent_date(parse(data))


async def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    """HTTP/1.1 keeps the connection open by default and says nothing about it."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/one"))
        first = await client.reply()
        client.send(get("/two"))
        second = await client.reply()
        assert (first.status, first.body) == (200, b"GET /one\n")
        assert (second.status, second.body) == (200, b"GET /two\n")
        assert first.header("connection") is None
        assert second.header("connection") is None
        assert len(site.server.connections) == 1
    assert app.paths == ["/one", "/two"]
    assert [(f.status, f.sent) for f in app.finished] == [(200, 9), (200, 9)]


def test_pipelined_requests_are_answered_in_order(
    run: Callable[..., object], tmp_path: Path
) -> None:
    """Three requests in one write get three answers in the order asked, even when the first
    handler is the slowest and the second answer is a file sent with sendfile."""
    data = os.urandom(200 << 10)  # above SMALL_FILE: the sendfile path
    path = tmp_path / "blob"
    path.write_bytes(data)

    async def handler(request: Request) -> Response | FileResponse:
        if request.path == "/file":
            return FileResponse(path, size=len(data), etag='"b"', mtime=0, headers={})
        await asyncio.sleep(0.2 if request.path == "/slow" else 0)
        return await echo(request)

    async def main() -> list[Reply]:
        async with serving(RecordingApp(handler)) as site:
            client = await site.connect()
            client.send(get("/slow") + get("/file") + get("/fast"))
            return [await client.reply() for _ in range(3)]

    first, second, third = run(main())
    assert first.body == b"GET /slow\n"
    assert (second.status, second.body) == (200, data)
    assert third.body == b"GET /fast\n"


async def test_many_pipelined_requests_are_all_answered() -> None:
    """More requests than the core reads ahead (it pauses reading, then resumes)."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(b"".join(get(f"/{i}") for i in range(40)))
        bodies = [(await client.reply()).body for _ in range(40)]
    assert bodies == [f"GET /{i}\n".encode() for i in range(40)]


async def test_http10_gets_connection_close_and_is_closed() -> None:
    """An HTTP/1.0 request without keep-alive: the answer says Connection: close and the
    connection is closed after it."""
    async with serving(RecordingApp()) as site:
        client = await site.connect()
        client.send(b"GET /old HTTP/1.0\r\n\r\n")
        reply = parse(await client.rest())
    assert reply.head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.header("connection") == "close"
    assert reply.body == b"GET /old\n"


async def test_http10_keep_alive_is_kept_and_said() -> None:
    """An HTTP/1.0 client asking for keep-alive must be told it got it."""
    async with serving(RecordingApp()) as site:
        client = await site.connect()
        client.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = await client.reply()
        client.send(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        second = await client.reply()
    assert first.header("connection") == "keep-alive"
    assert (second.header("connection"), second.body) == ("keep-alive", b"GET /b\n")


async def test_connection_close_from_the_client_closes_after_the_answer() -> None:
    """Connection: close from an HTTP/1.1 client: echoed, and requests pipelined after it are
    not answered."""
    async with serving(RecordingApp()) as site:
        client = await site.connect()
        client.send(get("/x", "Connection: close") + get("/never"))
        reply = parse(await client.rest())
    assert reply.header("connection") == "close"
    assert reply.body == b"GET /x\n"  # and nothing of /never


async def test_a_client_that_half_closes_still_gets_its_answers() -> None:
    """Requests then EOF (shutdown of the write side): the answers come, then the close."""
    app = RecordingApp(slept(0.05))
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/a") + get("/b"))
        client.writer.write_eof()
        data = await client.rest()
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert data.endswith(b"GET /b\n")


async def test_a_request_body_is_consumed_and_the_next_request_answered() -> None:
    """A GET with a body (Content-Length or chunked): the body is skipped, not taken for the
    next request."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(
            b"GET /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nworld\r\n0\r\n\r\n" + get("/c")
        )
        bodies = [(await client.reply()).body for _ in range(3)]
    assert bodies == [b"GET /a\n", b"GET /b\n", b"GET /c\n"]
    assert app.paths == ["/a", "/b", "/c"]


async def test_a_request_body_reaches_the_handler_whole() -> None:
    """POST with Content-Length and chunked: ``request.body`` holds every byte, in order;
    a bodiless request holds b"" (npm audit posts gzip bodies through the mirror)."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        payload = bytes(range(256)) * 300
        client.send(
            b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
            + b"POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" + get("/c")
        )
        statuses = [(await client.reply()).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert [r.body for r in app.requests] == [payload, b"abcde", b""]


async def test_a_body_over_the_limit_is_413_and_the_connection_closed() -> None:
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        size = server_module.MAX_BODY + 1
        client.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: " + str(size).encode())
        client.send(b"\r\n\r\n")
        chunk = b"x" * (1 << 20)
        with contextlib.suppress(ConnectionError):
            for _ in range(size // len(chunk) + 1):
                client.send(chunk)
                await client.writer.drain()
        reply = parse(await client.rest())
    assert reply.status == 413
    assert app.requests == []


# -- what handlers see --------------------------------------------------------------------------


async def test_the_request_as_the_handler_sees_it() -> None:
    """Lower-case header names, repeated headers joined with ", ", the path percent-decoded
    (invalid UTF-8 replaced), the query separated and left encoded, the fragment dropped."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(
            b"GET /caf%C3%A9/a%20b?x=1&y=%20z#frag HTTP/1.1\r\n"
            b"Host: test\r\nAccept: a\r\nACCEPT: b\r\nX-Mixed-Case: Some Value\r\n\r\n"
            b"GET /%ff%zz HTTP/1.1\r\nHost: test\r\n\r\n"
        )
        await client.reply()
        await client.reply()
    first, second = app.requests
    assert first.method == "GET"
    assert first.path == "/caf\u00e9/a b"
    assert first.query == "x=1&y=%20z"
    assert first.headers == {"host": "test", "accept": "a, b", "x-mixed-case": "Some Value"}
    assert first.host == "test"
    assert first.remote == "127.0.0.1"
    assert (second.path, second.query) == ("/\ufffd%zz", "")


async def test_head_of_a_response_has_the_length_and_no_body() -> None:
    """HEAD: Content-Length of the body GET would get, and not a byte of it (the next answer
    on the connection starts right after the head)."""
    async with serving(RecordingApp()) as site:
        client = await site.connect()
        client.send(get("/thing", method="HEAD") + get("/next"))
        head = await client.reply(bodiless=True)
        following = await client.reply()
    assert head.status == 200
    assert head.header("content-length") == str(len(b"HEAD /thing\n"))
    assert following.head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert following.body == b"GET /next\n"


async def test_a_handler_that_raises_gets_a_500() -> None:
    """An exception escaping the handler becomes a 500 text answer (done() sees 500) and the
    connection stays usable."""

    async def handler(request: Request) -> Response:
        raise RuntimeError("boom")

    app = RecordingApp(handler)
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/a") + get("/b"))
        replies = [await client.reply() for _ in range(2)]  # the connection survives
    for reply in replies:
        assert reply.status == 500
        assert reply.header("content-type") == "text/plain; charset=utf-8"
        assert reply.body == b"internal error in the mirror; see its log\n"
        assert_recent_date(reply)
    assert [(f.path, f.status) for f in app.finished] == [("/a", 500), ("/b", 500)]


@pytest.mark.parametrize("kind", ["bytes", "file"])
@pytest.mark.parametrize(
    "headers",
    [
        {"X-Note": "a\r\nSet-Cookie: injected=1"},
        {"X-Note": "a\nSet-Cookie: injected=1"},
        {"X-Note\r\nSet-Cookie: injected": "1"},
    ],
    ids=["crlf-value", "lf-value", "crlf-name"],
)
async def test_a_header_with_a_line_break_is_never_sent(
    tmp_path: Path, kind: str, headers: dict[str, str]
) -> None:
    """Header injection: the answer is not sent at all (the connection is aborted) and
    done() reports 500."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)

    async def handler(request: Request) -> Response | FileResponse:
        if kind == "file":
            return FileResponse(path, size=10, etag='"e"', mtime=0, headers=dict(headers))
        return Response(200, text="hi\n", headers=dict(headers))

    app = RecordingApp(handler)
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/x"))
        data = await client.rest()
    assert b"injected" not in data
    assert data == b""
    assert [(f.status, f.sent) for f in await app.wait_finished(1)] == [(500, 0)]


async def test_a_header_with_a_bare_carriage_return_is_never_sent() -> None:
    """A bare CR in a header value must not reach the wire either."""

    async def handler(request: Request) -> Response:
        return Response(200, text="hi\n", headers={"X-Note": "a\rSet-Cookie: injected=1"})

    async with serving(RecordingApp(handler)) as site:
        client = await site.connect()
        client.send(get("/x", "Connection: close"))
        data = await client.rest()
    assert b"injected" not in data


# -- file answers -------------------------------------------------------------------------------

FILE = bytes(range(256)) * 4  # 1024 bytes
ETAG = '"file-1"'
MTIME = 784111777.0
LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"


def file_app(path: Path, *, data: bytes = FILE) -> RecordingApp:
    """Answers every path with ``path`` as a FileResponse (headers a fresh dict each time,
    as the mirror's handlers do)."""
    path.write_bytes(data)

    async def handler(request: Request) -> FileResponse:
        headers = {"Content-Type": "application/zip", "ETag": ETAG}
        return FileResponse(path, size=len(data), etag=ETAG, mtime=MTIME, headers=headers)

    return RecordingApp(handler)


async def test_a_file_answer(tmp_path: Path) -> None:
    """A FileResponse: the whole file with its length, Accept-Ranges and the handler's headers."""
    app = file_app(tmp_path / "f")
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/f"))
        reply = await client.reply()
    assert reply.status == 200
    assert reply.body == FILE
    assert reply.header("content-length") == "1024"
    assert reply.header("accept-ranges") == "bytes"
    assert reply.header("etag") == ETAG
    assert reply.header("content-range") is None
    assert_recent_date(reply)
    assert [(f.status, f.sent) for f in app.finished] == [(200, 1024)]


async def test_head_of_a_file_has_the_length_and_no_body(tmp_path: Path) -> None:
    """HEAD of a file: the whole length, no body (the next answer follows the head at once)."""
    app = file_app(tmp_path / "f")
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/f", method="HEAD") + get("/f", "Range: bytes=0-3"))
        head = await client.reply(bodiless=True)
        following = await client.reply()
    assert head.status == 200
    assert head.header("content-length") == "1024"
    assert head.header("accept-ranges") == "bytes"
    assert following.head.startswith(b"HTTP/1.1 206 Partial Content\r\n")
    assert following.body == FILE[:4]
    assert [(f.status, f.sent) for f in app.finished] == [(200, 0), (206, 4)]


async def test_not_modified_has_no_body_and_no_length(tmp_path: Path) -> None:
    """304 on If-None-Match (or If-Modified-Since): no Content-Length, no body; the
    connection goes on."""
    app = file_app(tmp_path / "f")
    async with serving(app) as site:
        client = await site.connect()
        client.send(
            get("/f", f"If-None-Match: {ETAG}")
            + get("/f", f"If-Modified-Since: {LAST_MODIFIED}")
            + get("/f")
        )
        replies = [await client.reply() for _ in range(3)]
    for reply in replies[:2]:
        assert reply.head.startswith(b"HTTP/1.1 304 Not Modified\r\n")
        assert reply.header("content-length") is None
        assert reply.header("etag") == ETAG
        assert_recent_date(reply)
    assert replies[2].body == FILE
    assert [(f.status, f.sent) for f in app.finished] == [(304, 0), (304, 0), (200, 1024)]


async def test_a_range_gets_exactly_its_bytes(tmp_path: Path) -> None:
    """206: exactly the bytes asked, with Content-Range, Content-Length and Accept-Ranges."""
    app = file_app(tmp_path / "f")
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/f", "Range: bytes=10-19") + get("/f", "Range: bytes=-5"))
        middle = await client.reply()
        suffix = await client.reply()
    assert middle.head.startswith(b"HTTP/1.1 206 Partial Content\r\n")
    assert middle.header("content-range") == "bytes 10-19/1024"
    assert middle.header("content-length") == "10"
    assert middle.header("accept-ranges") == "bytes"
    assert middle.body == FILE[10:20]
    assert (suffix.header("content-range"), suffix.body) == ("bytes 1019-1023/1024", FILE[-5:])
    assert_recent_date(middle)


async def test_an_unsatisfiable_range_is_416(tmp_path: Path) -> None:
    """416 with 'bytes */size' and an empty body; the connection goes on."""
    app = file_app(tmp_path / "f")
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/f", "Range: bytes=2000-3000") + get("/f"))
        reply = await client.reply()
        following = await client.reply()
    assert reply.head.startswith(b"HTTP/1.1 416 Range Not Satisfiable\r\n")
    assert reply.header("content-range") == "bytes */1024"
    assert reply.header("content-length") == "0"
    assert reply.header("accept-ranges") == "bytes"
    assert_recent_date(reply)
    assert following.body == FILE
    assert [(f.status, f.sent) for f in app.finished] == [(416, 0), (200, 1024)]


async def test_a_failed_if_match_is_412(tmp_path: Path) -> None:
    """412 with an empty body; the connection goes on."""
    app = file_app(tmp_path / "f")
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/f", 'If-Match: "other"') + get("/f"))
        reply = await client.reply()
        following = await client.reply()
    assert reply.head.startswith(b"HTTP/1.1 412 Precondition Failed\r\n")
    assert reply.header("content-length") == "0"
    assert following.body == FILE


async def test_a_file_deleted_before_it_is_sent_is_503(tmp_path: Path) -> None:
    """Purged between the handler and the send: 503 with Retry-After, not a crash; the
    connection goes on."""
    app = file_app(tmp_path / "f")
    (tmp_path / "f").unlink()
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/f") + get("/f", method="HEAD"))
        reply = await client.reply()
        head = await client.reply(bodiless=True)
    assert reply.status == 503
    assert reply.header("retry-after") == "1"
    assert reply.header("cache-control") == "no-store"
    assert reply.body.startswith(b"the cached file could not be opened")
    assert_recent_date(reply)
    assert head.status == 503
    assert [f.status for f in app.finished] == [503, 503]


@pytest.mark.parametrize("size", [0, 1])
def test_tiny_files(run: Callable[..., object], tmp_path: Path, size: int) -> None:
    """Files of 0 and 1 bytes: exact length, exact body."""
    app = file_app(tmp_path / "tiny", data=b"x" * size)

    async def main() -> bytes:
        async with serving(app) as site:
            client = await site.connect()
            client.send(get("/tiny", "Connection: close"))
            return await client.rest()

    reply = parse(run(main()))
    assert reply.status == 200
    assert reply.header("content-length") == str(size)
    assert reply.body == b"x" * size


async def test_a_range_with_non_ascii_digits_gets_the_whole_file(tmp_path: Path) -> None:
    """A Range the server cannot read is ignored: 200 with the whole file."""
    app = file_app(tmp_path / "f")
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/f", "Range: bytes=\u00b2-5", "Connection: close"))
        data = await client.rest()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert parse(data).body == FILE


# -- big files through sendfile -----------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("big") / "blob.zip"
    data = os.urandom(BIG)
    path.write_bytes(data)
    return path, data


def big_app(path: Path) -> RecordingApp:
    async def handler(request: Request) -> FileResponse:
        headers = {"Content-Type": "application/zip"}
        return FileResponse(path, size=BIG, etag='"big"', mtime=MTIME, headers=headers)

    return RecordingApp(handler)


def test_whole_ranged_and_slow_reads_get_exact_bytes(
    run: Callable[..., object], big_file: tuple[Path, bytes]
) -> None:
    """8 MiB read whole by a slow reader, and in ranges (one spanning several sendfile
    calls, at an odd offset): exactly the file's bytes, and no descriptor left open."""
    path, data = big_file
    app = big_app(path)

    async def fetch(site: Site, *headers: str, slowly: bool = False) -> Reply:
        client = await site.connect()
        client.send(get("/blob", "Connection: close", *headers))
        got = bytearray()
        async with asyncio.timeout(4 * TIMEOUT):
            while chunk := await client.reader.read(1 << 16):
                got += chunk
                if slowly and len(got) < (1 << 20):
                    await asyncio.sleep(0.01)
        client.close()
        return parse(bytes(got))

    async def main() -> tuple[list[Reply], int, int]:
        async with serving(app) as site:
            await fetch(site, "Range: bytes=0-0")  # warm up the loop (resolver threads)
            await asyncio.sleep(0.2)  # the warm-up's sockets are closed
            before = fd_count()
            replies = [
                await fetch(site, slowly=True),
                await fetch(site, "Range: bytes=1000-1999"),
                await fetch(site, "Range: bytes=1-5000001"),
                await fetch(site, "Range: bytes=-3000000"),
            ]
            await asyncio.sleep(0.2)
            return replies, before, fd_count()

    (whole, small, spanning, suffix), before, after = run(main())
    assert whole.status == 200
    assert whole.header("content-length") == str(BIG)
    assert hashlib.sha256(whole.body).digest() == hashlib.sha256(data).digest()
    assert (small.status, small.body) == (206, data[1000:2000])
    assert (spanning.status, spanning.body == data[1:5000002]) == (206, True)
    assert (suffix.status, suffix.body == data[-3000000:]) == (206, True)
    assert [(f.status, f.sent) for f in app.finished[1:]] == [
        (200, BIG),
        (206, 1000),
        (206, 5000001),
        (206, 3000000),
    ]
    assert after == before


def test_a_client_that_goes_away_ends_the_send_without_a_leak(
    run: Callable[..., object], big_file: tuple[Path, bytes]
) -> None:
    """The client resets the connection in the middle of an 8 MiB answer: the send ends,
    done() sees 499, and every descriptor (the file, the socket's duplicate) is closed."""
    path, _ = big_file
    app = big_app(path)

    async def main() -> tuple[list[Finished], int, int]:
        loop = asyncio.get_running_loop()
        async with serving(app) as site:
            before = fd_count()
            sock = await site.raw_socket(rcvbuf=4096)
            await loop.sock_sendall(sock, get("/blob"))
            await asyncio.sleep(0.1)
            assert (await asyncio.wait_for(loop.sock_recv(sock, 1024), TIMEOUT)).startswith(
                b"HTTP/1.1 200 OK\r\n"
            )
            # Close with unread data and no linger: the server's next write gets a reset.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            finished = await app.wait_finished(1)
            await asyncio.sleep(0.2)
            return finished, before, fd_count()

    finished, before, after = run(main())
    assert [(f.status, f.sent) for f in finished] == [(499, 0)]
    assert after == before


def test_a_client_that_never_reads_is_dropped_at_the_minimum_rate(
    run: Callable[..., object], big_file: tuple[Path, bytes]
) -> None:
    """min_send_rate: a file answer must be read within send_grace + size / rate seconds;
    a client that reads nothing is dropped then (done() sees 499), not kept forever.

    The deadline is a budget for the whole answer, not a rate check over time: at
    min_send_rate=1_000_000 an 8 MiB answer gets 0.2 + 8.4 s. 10 MB/s keeps this test near
    one second."""
    path, _ = big_file
    app = big_app(path)
    rate, grace = 10_000_000, 0.2
    budget = grace + BIG / rate

    async def main() -> tuple[list[Finished], float]:
        loop = asyncio.get_running_loop()
        async with serving(app, min_send_rate=rate, send_grace=grace) as site:
            sock = await site.raw_socket(rcvbuf=4096)
            try:
                start = time.monotonic()
                await loop.sock_sendall(sock, get("/blob"))
                finished = await app.wait_finished(1, within=budget + TIMEOUT)
                return finished, time.monotonic() - start
            finally:
                sock.close()

    finished, elapsed = run(main())
    assert [(f.status, f.sent) for f in finished] == [(499, 0)]
    assert budget - 0.1 <= elapsed <= budget + 2.0


# -- rejected requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
    ids=["garbage", "extra", "version", "nul", "header", "asterisk", "absolute-form"],
)
async def test_a_malformed_request_is_400_and_closes(request_bytes: bytes) -> None:
    """The answer is a fixed 400 text, the connection is closed, the handler never sees it."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(request_bytes + get("/after"))
        reply = parse(await client.rest())
    assert reply.head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert reply.header("connection") == "close"
    assert reply.body == b"malformed HTTP request\n"
    assert app.requests == []
    assert app.finished == []


async def test_requests_before_a_malformed_one_are_answered_first() -> None:
    """Pipelined: the good request is answered, then the 400, then the close."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/ok") + b"NONSENSE\r\n\r\n")
        data = await client.rest()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"GET /ok\n" in data
    assert b"\r\n\r\nmalformed HTTP request\n" in data
    assert data.count(b"HTTP/1.1 400 Bad Request\r\n") == 1
    assert app.paths == ["/ok"]


async def test_a_url_over_8190_bytes_is_414() -> None:
    """A request target of 8190 bytes is served; one byte more is 414 and the close."""
    app = RecordingApp()
    async with serving(app) as site:
        ok = await site.connect()
        ok.send(get("/" + "a" * 8189))  # 8190 bytes: the longest accepted
        assert (await ok.reply()).status == 200
        client = await site.connect()
        client.send(get("/" + "a" * 8190))
        reply = parse(await client.rest())
    assert reply.head.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    assert reply.header("connection") == "close"
    assert app.paths == ["/" + "a" * 8189]


@pytest.mark.parametrize(
    "headers",
    [
        [f"X-H{i}: v" for i in range(100)],  # 101 with Host
        [f"X-H{i}: {'v' * 1000}" for i in range(33)],  # over 32 KiB
    ],
    ids=["count", "bytes"],
)
async def test_too_many_or_too_large_headers_are_431(headers: list[str]) -> None:
    """More than 100 header fields, or more than 32 KiB of them: 431 and the close."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/x", *headers))
        reply = parse(await client.rest())
    assert reply.head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert reply.header("connection") == "close"
    assert app.requests == []


async def test_one_hundred_headers_are_accepted() -> None:
    """The header cap's boundary: 100 fields reach the handler."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/x", *[f"X-H{i}: v" for i in range(99)]))  # 100 with Host
        assert (await client.reply()).status == 200
    assert len(app.requests[0].headers) == 100


async def test_over_one_hundred_repeated_headers_are_431() -> None:
    """The cap counts header fields, not distinct names."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/x", "Connection: close", *["X-Same: v"] * 200))
        reply = parse(await client.rest())
    assert reply.status == 431
    assert app.requests == []


async def test_an_endless_header_is_cut_off_at_the_limit() -> None:
    """A header that never ends is refused once it passes the size limit, not buffered until
    the header timeout."""
    app = RecordingApp()
    async with serving(app, header_timeout=2.0) as site:
        client = await site.connect()
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: " + b"a" * (256 << 10))
        data = await client.rest()
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_a_rejection_has_a_date() -> None:
    """Rejections carry a Date like every other answer."""
    async with serving(RecordingApp()) as site:
        client = await site.connect()
        client.send(b"GARBAGE\r\n\r\n")
        reply = parse(await client.rest())
    assert reply.status == 400
    assert_recent_date(reply)


# -- deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sending", ["nothing", "half", "trickle"])
async def test_a_request_not_complete_by_the_header_timeout_is_closed(sending: str) -> None:
    """Nothing, half a request, or a request trickled in a header every 50 ms: closed at
    header_timeout after the first byte, unanswered."""
    app = RecordingApp()
    async with serving(app, header_timeout=0.3) as site:
        start = time.monotonic()
        client = await site.connect()
        trickling: asyncio.Task[None] | None = None
        if sending == "half":
            client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        elif sending == "trickle":
            client.send(b"GET / HTTP/1.1\r\n")

            async def trickle() -> None:
                for i in range(100):
                    if client.reader.at_eof() or client.writer.is_closing():
                        return
                    client.send(f"X-{i}: v\r\n".encode())
                    await asyncio.sleep(0.05)

            trickling = asyncio.create_task(trickle())
        try:
            assert await client.closed_within(3.0)
        finally:
            if trickling is not None:
                trickling.cancel()
        elapsed = time.monotonic() - start
    assert 0.25 <= elapsed <= 1.5
    assert app.requests == []


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    """An idle connection after an answer is closed at keepalive_timeout."""
    async with serving(RecordingApp(), header_timeout=0.3, keepalive_timeout=0.3) as site:
        client = await site.connect()
        client.send(get("/x"))
        await client.reply()
        start = time.monotonic()
        assert await client.closed_within(3.0)
        elapsed = time.monotonic() - start
    assert 0.2 <= elapsed <= 1.5


async def test_an_idle_connection_is_closed_at_keepalive_timeout_below_header_timeout() -> None:
    """keepalive_timeout applies even when it is shorter than header_timeout."""
    async with serving(RecordingApp(), header_timeout=10.0, keepalive_timeout=0.3) as site:
        client = await site.connect()
        client.send(get("/x"))
        await client.reply()
        assert await client.closed_within(1.5)


async def test_a_slow_handler_still_gets_its_answer_out() -> None:
    """A handler slower than both timeouts is not cut off; the idle deadline counts from its
    answer."""
    app = RecordingApp(slept(0.8))
    async with serving(app, header_timeout=0.3, keepalive_timeout=0.3) as site:
        client = await site.connect()
        client.send(get("/slow"))
        reply = await client.reply()
        assert (reply.status, reply.body) == (200, b"GET /slow\n")
        start = time.monotonic()
        assert await client.closed_within(3.0)
        assert time.monotonic() - start >= 0.2
    assert [(f.status, f.sent) for f in app.finished] == [(200, 10)]


# -- the connection cap -------------------------------------------------------------------------


async def test_past_max_connections_a_connection_gets_503_but_healthz_gets_200() -> None:
    """The third connection is answered without parsing: 503 with Retry-After (or 200 for a
    liveness probe), then closed; on_refused counts it; the handler never sees it."""
    refused: list[None] = []
    app = RecordingApp()
    async with serving(app, max_connections=2, on_refused=lambda: refused.append(None)) as site:
        held = [await site.connect(), await site.connect()]
        for client in held:
            client.send(get("/held"))
            await client.reply()
        assert len(site.server.connections) == 2

        busy = await site.connect()
        busy.send(get("/x"))
        reply = parse(await busy.rest())
        assert reply.head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert reply.header("retry-after") == "1"
        assert reply.header("connection") == "close"
        assert reply.body == b"the mirror has too many open connections; retry shortly\n"

        probe = await site.connect()
        probe.send(get("/healthz"))
        alive = parse(await probe.rest())
        assert alive.head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert alive.body == b"ok (at the connection limit)\n"
        assert len(refused) == 2

        held[0].close()
        for _ in range(300):
            if len(site.server.connections) < 2:
                break
            await asyncio.sleep(0.01)
        again = await site.connect()
        again.send(get("/again"))
        assert (await again.reply()).body == b"GET /again\n"
    assert app.paths == ["/held", "/held", "/again"]


async def test_past_the_cap_of_refusals_a_connection_is_hung_up_at_once() -> None:
    """While as many connections as the cap are being refused (each holds a descriptor
    until its request is read), a further one is closed at once, unanswered."""
    refused: list[None] = []
    async with serving(
        RecordingApp(), max_connections=1, on_refused=lambda: refused.append(None)
    ) as site:
        held = await site.connect()
        held.send(get("/held"))
        await held.reply()
        waiting = await site.connect()  # refused, and not sending its request yet
        for _ in range(300):
            if site.server.refusing == 1:
                break
            await asyncio.sleep(0.01)
        assert site.server.refusing == 1
        hung_up = await site.connect()
        assert await hung_up.closed_within(1.0)
        waiting.send(get("/x"))
        assert parse(await waiting.rest()).status == 503
        assert len(refused) == 2


# -- graceful shutdown --------------------------------------------------------------------------


async def test_shutdown_closes_idle_connections_and_lets_answers_in_flight_finish() -> None:
    """shutdown(grace): the listener stops, an idle keep-alive connection is closed at once,
    an answer in flight is sent whole and its connection closed, and shutdown returns then."""
    started = asyncio.Event()

    async def handler(request: Request) -> Response:
        if request.path == "/slow":
            started.set()
            await asyncio.sleep(1.0)
        return await echo(request)

    app = RecordingApp(handler)
    async with serving(app) as site:
        idle = await site.connect()
        idle.send(get("/fast"))
        await idle.reply()
        busy = await site.connect()
        busy.send(get("/slow"))
        await asyncio.wait_for(started.wait(), TIMEOUT)

        start = time.monotonic()
        shutting = asyncio.create_task(site.server.shutdown(5.0))
        assert await idle.closed_within(0.6)  # at once, while /slow still runs
        reply = await busy.reply()
        assert (reply.status, reply.body) == (200, b"GET /slow\n")
        assert await busy.closed_within(1.0)
        await asyncio.wait_for(shutting, TIMEOUT)
        assert time.monotonic() - start < 2.5
        assert not site.server.connections
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", site.port)
    assert [(f.path, f.status) for f in app.finished] == [("/fast", 200), ("/slow", 200)]


async def test_an_answer_in_flight_at_shutdown_says_connection_close() -> None:
    """The answer of a request in flight when shutdown starts tells the client the connection
    closes."""
    started = asyncio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        await asyncio.sleep(0.3)
        return await echo(request)

    async with serving(RecordingApp(handler)) as site:
        client = await site.connect()
        client.send(get("/slow"))
        await asyncio.wait_for(started.wait(), TIMEOUT)
        shutting = asyncio.create_task(site.server.shutdown(5.0))
        reply = await client.reply()
        await asyncio.wait_for(shutting, TIMEOUT)
    assert reply.header("connection") == "close"


async def test_shutdown_aborts_what_outlives_the_grace() -> None:
    """A handler slower than the grace is cancelled and its connection aborted: shutdown
    returns after the grace, the client gets nothing, done() reports 499."""
    started = asyncio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        await asyncio.sleep(30)
        return await echo(request)

    app = RecordingApp(handler)
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/stuck"))
        await asyncio.wait_for(started.wait(), TIMEOUT)
        start = time.monotonic()
        await asyncio.wait_for(site.server.shutdown(0.3), TIMEOUT)
        elapsed = time.monotonic() - start
        assert await client.rest() == b""
        finished = await app.wait_finished(1)
    assert 0.25 <= elapsed <= 1.3
    assert [(f.path, f.status, f.sent) for f in finished] == [("/stuck", 499, 0)]


# -- hostile clients (tests/integration/test_http_hostile.py has the same through the mirror) ---

TCP_ESTABLISHED = 1


def tcp_state(sock: socket.socket) -> int:
    """The kernel's state of a TCP socket (the first byte of TCP_INFO)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def test_ten_thousand_pipelined_requests_in_one_write_are_all_answered(
    run: Callable[..., object],
) -> None:
    """10,000 requests of 18 bytes in one write: 10,000 answers, in order.

    Finding: the guard against a header field that never ends counted every byte of a read
    that began inside a request head, so a read holding the end of one head and thousands
    of whole requests after it was taken for one oversized field: answer 7,110 was a 431
    and the connection was closed. Fixed in _Connection._feed: the guard counts the bytes
    after the read's last line feed (the line the read ends in), and whole reads only while
    no line ends."""
    count = 10_000

    async def main() -> list[bytes]:
        async with serving(RecordingApp()) as site:
            client = await site.connect()
            client.send(b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(count)))
            return [(await client.reply()).body for _ in range(count)]

    assert run(main()) == [b"GET /%d\n" % i for i in range(count)]


def test_a_long_pipeline_in_one_read_is_not_all_queued(run: Callable[..., object]) -> None:
    """5,000 requests in one write to a client that reads nothing: the core reads ahead about
    MAX_QUEUED requests, not all that one read of the socket holds.

    Finding: pause_reading() stops the reads that follow, not the parsing of the read in
    hand, so all the requests of a read (up to 256 KiB: 14,000 of 18 bytes) were parsed
    and queued; a client pipelining on many connections made the worker hold hundreds of
    thousands of requests. Fixed in _Connection.data_received: a read is parsed in slices
    of FEED_BYTES (2 KiB), and what follows once MAX_QUEUED requests are queued is kept
    unparsed until the queue drains. The queue may pass MAX_QUEUED by what one slice holds
    (113 requests of 18 bytes), so the bound checked is 16 + 113."""
    depths: list[int] = []
    site_of: list[Site] = []

    async def handler(request: Request) -> Response:
        depths.append(max(len(c._queue) for c in site_of[0].server.connections))
        return Response(200, body=b"x" * (64 << 10))  # the client reads none: writes stall

    async def main() -> int:
        loop = asyncio.get_running_loop()
        app = RecordingApp(handler)
        async with serving(app) as site:
            site_of.append(site)
            sock = await site.raw_socket(rcvbuf=4096)
            try:
                await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\n\r\n" * 5000)
                await asyncio.sleep(0.5)
            finally:
                sock.close()
        return max(depths)

    assert run(main()) <= 16 + 113


@pytest.mark.parametrize("kind", ["HEAD", "304"])
def test_answers_without_a_body_to_a_client_that_never_reads_stay_bounded(
    run: Callable[..., object], tmp_path: Path, kind: str
) -> None:
    """A client sends HEAD (or If-None-Match) requests for a file without pause and reads
    nothing: once the write buffer is over its high-water mark the core must stop reading,
    not buffer the heads without end.

    Finding: answers of a FileResponse without a body (HEAD, 304, 412, 416, the 503 of a
    file gone) were written without waiting for the drain; the queue never filled, so
    reading never paused: megabytes buffered a second. Fixed in _Connection._serve: every answer
    waits for the drain, not only those with an in-memory body."""
    path = tmp_path / "f"
    path.write_bytes(FILE)

    async def handler(request: Request) -> FileResponse:
        headers = {"ETag": ETAG, "X-Pad": "p" * 1000}  # the kernel's buffers fill sooner
        return FileResponse(path, size=len(FILE), etag=ETAG, mtime=MTIME, headers=headers)

    app = RecordingApp(handler)
    one = get("/f", method="HEAD") if kind == "HEAD" else get("/f", f"If-None-Match: {ETAG}")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        async with serving(app) as site:
            sock = await site.raw_socket(rcvbuf=4096)
            peak = 0
            try:
                start = loop.time()
                while loop.time() - start < 1.5:
                    with contextlib.suppress(BlockingIOError):
                        sock.send(one * 100)  # whole requests: reads end between two
                    await asyncio.sleep(0.002)
                    for conn in site.server.connections:
                        peak = max(peak, conn.transport.get_write_buffer_size())
            finally:
                sock.close()
            return peak

    assert run(main()) < 256 << 10  # the high-water mark (64 KiB) and an answer, at most


def test_a_client_that_never_reads_an_in_memory_answer_is_dropped(
    run: Callable[..., object],
) -> None:
    """min_send_rate applies to answers from memory too: a client that pipelines requests
    for 1 MiB answers and reads none is dropped within send_grace + what is buffered at the
    rate (done() sees 499), and with a reset, not a close its kernel would still deliver.

    Finding: only sendfile had a deadline; an in-memory answer waited for the drain without
    one, so a client that stopped reading held its connection, its answer and its task
    forever (the keep-alive timer does not apply while answering). Fixed in
    _Connection._drained: the wait has the deadline of a file answer, and the client is
    dropped with a reset (_Connection._drop)."""
    rate, grace = 10_000_000, 0.3

    async def handler(request: Request) -> Response:
        return Response(200, body=b"x" * (1 << 20))

    async def main() -> tuple[list[Finished], int, int]:
        loop = asyncio.get_running_loop()
        app = RecordingApp(handler)
        async with serving(app, min_send_rate=rate, send_grace=grace) as site:
            sock = await site.raw_socket(rcvbuf=4096)
            try:
                await loop.sock_sendall(sock, get("/big") * 12)
                for _ in range(300):
                    if any(f.status == 499 for f in app.finished):
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)
                return app.finished, len(site.server.connections), tcp_state(sock)
            finally:
                sock.close()

    finished, connections, state = run(main())
    assert finished[-1].status == 499
    assert connections == 0
    assert state != TCP_ESTABLISHED


def test_a_reader_dropped_at_the_minimum_rate_is_reset(
    run: Callable[..., object], big_file: tuple[Path, bytes]
) -> None:
    """A file answer to a client that reads nothing: at the deadline the client's connection
    is reset, so the kernel drops what it holds for it.

    Finding: abort() closes the socket like close() does: the kernel went on delivering the
    megabytes already in the socket's send buffer at the client's pace (an orphan in
    FIN-WAIT-1, 5.9 MB for a client reading a zip at 1 byte/s), and the client stayed
    connected. Fixed in _Connection._drop: SO_LINGER 0 before closing, so the close is a
    reset (nginx's reset_timedout_connection)."""
    path, _ = big_file
    app = big_app(path)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        async with serving(app, min_send_rate=10_000_000, send_grace=0.2) as site:
            sock = await site.raw_socket(rcvbuf=4096)
            try:
                await loop.sock_sendall(sock, get("/blob"))
                await app.wait_finished(1, within=TIMEOUT)
                await asyncio.sleep(0.2)
                return tcp_state(sock)
            finally:
                sock.close()

    assert run(main()) != TCP_ESTABLISHED
    assert [(f.status, f.sent) for f in app.finished] == [(499, 0)]


async def test_expect_100_continue_gets_continue_before_the_body() -> None:
    """A request announcing a body with Expect: 100-continue gets "100 Continue" at once,
    then its answer once the body is in.

    Finding: the core never sent 100 (Continue): a client waiting for it before sending its
    body waited its own timeout (curl: 1 s), or the header timeout and the close (RFC 9110
    10.1.1: the server sends 100 or a final status at once). Fixed in
    _Connection.on_headers_complete."""
    app = RecordingApp()
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/x", "Expect: 100-continue", "Content-Length: 5"))
        interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 1.0)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello")
        reply = await client.reply()
        assert (reply.status, reply.body) == (200, b"GET /x\n")
        # HTTP/1.0 ignores the expectation; a request without a body needs no 100.
        client.send(
            b"GET /y HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"
            b"Content-Length: 2\r\n\r\nhi" + get("/z", "Expect: 100-continue")
        )
        assert (await client.reply()).body == b"GET /y\n"
        assert (await client.reply()).body == b"GET /z\n"
    assert app.paths == ["/x", "/y", "/z"]


async def test_expect_100_continue_is_not_sent_into_an_answer_in_progress() -> None:
    """Pipelined behind a request being answered, an Expect: 100-continue gets no 100 (it
    would land before or inside that answer); its answer comes once its body is in."""
    app = RecordingApp(slept(0.3))
    async with serving(app) as site:
        client = await site.connect()
        client.send(get("/slow") + get("/x", "Expect: 100-continue", "Content-Length: 2"))
        first = await client.reply()
        assert first.body == b"GET /slow\n"
        client.send(b"hi")
        second = await client.reply()
        assert (second.status, second.body) == (200, b"GET /x\n")


# -- answers begun in the read callback (_answer_now) --------------------------------------------


def test_a_handler_that_waits_runs_as_the_connections_task(run: Callable[..., object]) -> None:
    """A request on an idle connection is begun in the read callback; a handler that then
    waits carries on in the connection's task: it is the current task from its first line,
    asyncio.timeout works in it, and requests sent meanwhile are answered after it, in order."""
    seen: list[bool] = []

    async def handler(request: Request) -> Response:
        task = asyncio.current_task()
        seen.append(task is not None)
        if request.path == "/wait":
            async with asyncio.timeout(5):
                await asyncio.sleep(0.1)
            assert asyncio.current_task() is task
        return await echo(request)

    async def main() -> list[Reply]:
        async with serving(RecordingApp(handler)) as site:
            client = await site.connect()
            client.send(get("/first"))
            first = await client.reply()
            client.send(get("/wait"))
            await asyncio.sleep(0.02)  # /wait is waiting in its sleep now
            client.send(get("/after"))
            return [first, await client.reply(), await client.reply()]

    replies = run(main())
    assert [r.body for r in replies] == [b"GET /first\n", b"GET /wait\n", b"GET /after\n"]
    assert seen == [True, True, True]


def test_a_timeout_in_a_handler_begun_at_once_cancels_only_the_handler(
    run: Callable[..., object],
) -> None:
    """asyncio.timeout entered in the first step of a handler begun in the read callback
    cancels that handler when it expires, and the connection goes on answering."""

    async def handler(request: Request) -> Response:
        if request.path == "/slow":
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(5)
            except TimeoutError:
                return Response(504, text="timed out\n")
        return await echo(request)

    async def main() -> list[Reply]:
        async with serving(RecordingApp(handler)) as site:
            client = await site.connect()
            client.send(get("/slow"))
            slow = await client.reply()
            client.send(get("/next"))
            return [slow, await client.reply()]

    slow, following = run(main())
    assert (slow.status, slow.body) == (504, b"timed out\n")
    assert following.body == b"GET /next\n"


def test_a_client_gone_while_its_handler_waits_is_logged_as_499(
    run: Callable[..., object],
) -> None:
    """The connection is reset while a handler begun in the read callback waits: the
    handler still runs to its end, and done() reports 499 with nothing sent."""
    ended: list[str] = []

    async def handler(request: Request) -> Response:
        await asyncio.sleep(0.2)
        ended.append(request.path)
        return await echo(request)

    async def main() -> list[Finished]:
        app = RecordingApp(handler)
        async with serving(app) as site:
            sock = await site.raw_socket()
            sock.sendall(get("/gone"))
            await asyncio.sleep(0.05)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset
            return await app.wait_finished(1)

    finished = run(main())
    assert ended == ["/gone"]
    assert [(f.path, f.status, f.sent) for f in finished] == [("/gone", 499, 0)]
