"""What handlers see: a parsed request, and a response of bytes or of a file.

The server core (entrepot.web.server) produces requests and sends responses; handlers depend
on these types only, never on the core, so the core can change without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

TEXT = "text/plain; charset=utf-8"

REASONS: dict[int, str] = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Request:
    """One HTTP request. ``headers`` has lower-case names (repeated fields joined by ", ").

    Handlers note what the request was about (``endpoint``, ``module``, ``version``,
    ``cache``, ``note``) for the access log and the metrics.
    """

    __slots__ = (
        "body",
        "cache",
        "endpoint",
        "headers",
        "method",
        "module",
        "note",
        "path",
        "query",
        "remote",
        "version",
    )

    def __init__(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        *,
        query: str = "",
        remote: str | None = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.body = body
        self.path = path
        self.query = query
        self.headers = headers
        self.remote = remote
        self.endpoint: str | None = None
        self.module: str | None = None
        self.version: str | None = None
        self.cache: str | None = None
        self.note: str | None = None

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


def render_fields(headers: Mapping[str, str]) -> bytes:
    """Header lines ready for the wire. A name or value holding a CR or LF (a response
    splitting attempt, or a bug) raises ValueError: such a header is never sent."""
    text = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError("a response header holds a line break")
    return text.encode("latin-1")  # UnicodeEncodeError is a ValueError too


class Response:
    """A response whose body is in memory. ``fields``: the headers already rendered by
    :func:`render_fields` (a handler may keep them for answers it gives again and again);
    when given, ``headers`` is not looked at."""

    __slots__ = ("body", "fields", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        *,
        body: bytes = b"",
        text: str | None = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
        fields: bytes | None = None,
    ) -> None:
        self.status = status
        self.body = text.encode() if text is not None else body
        self.fields = fields
        self.headers = headers if headers is not None else {}
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        elif text is not None and "Content-Type" not in self.headers:
            self.headers["Content-Type"] = TEXT


class FileResponse:
    """A file sent with the kernel's sendfile: HEAD, Range, If-None-Match and
    If-Modified-Since are answered by the core (entrepot.web.files plans them)."""

    __slots__ = ("etag", "headers", "mtime", "path", "size")

    def __init__(
        self, path: Path, *, size: int, etag: str, mtime: float, headers: dict[str, str]
    ) -> None:
        self.path = path
        self.size = size  # as stored; the core sends what the open file holds
        self.etag = etag
        self.mtime = mtime  # seconds, for If-Modified-Since and If-Range dates
        self.headers = headers


AnyResponse = Response | FileResponse
