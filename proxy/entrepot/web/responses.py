"""Shared response helpers and the one place that maps errors to HTTP statuses.

The go command shows an error body to its user only when it is ``text/plain``, at most 8
lines, and entirely printable, so every error body here is shaped that way.
"""

from __future__ import annotations

import asyncio
import functools
import textwrap
from email.utils import formatdate
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from entrepot.errors import (
    EntrepotError,
    ForbiddenError,
    GoneError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    UpstreamTimeoutError,
)
from entrepot.storage.base import BlobInfo
from entrepot.web.sendfile import can_sendfile, sendfile

TEXT = "text/plain; charset=utf-8"
MAX_LINES = 8
LINE_WIDTH = 80


def status_for(error: Exception) -> int:
    """The HTTP status for any exception (ours mapped, anything else a 500)."""
    if isinstance(error, GoneError):
        return 410
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, InvalidRequestError):
        return 400
    if isinstance(error, ForbiddenError):
        return 403
    if isinstance(error, UnavailableError):
        return 503
    if isinstance(error, UpstreamTimeoutError):
        return 504
    if isinstance(error, EntrepotError):
        return 502
    return 500


def error_body(message: str) -> str:
    """At most 8 printable lines of at most 80 characters, no blank line inside."""
    flat = " ".join(message.split())
    clean = "".join(c if c.isprintable() and ord(c) < 127 else "?" for c in flat)
    lines = textwrap.wrap(clean, LINE_WIDTH, break_long_words=True) or ["error"]
    if len(lines) > MAX_LINES:
        lines = [*lines[: MAX_LINES - 1], lines[MAX_LINES - 1][: LINE_WIDTH - 3] + "..."]
    return "\n".join(lines) + "\n"


def error_response(error: Exception) -> web.Response:
    if isinstance(error, EntrepotError):
        message = error.message
    else:
        message = "internal error in the mirror; see its log"
    headers = {"Content-Type": TEXT, "Cache-Control": "no-store"}
    if isinstance(error, UnavailableError):
        headers["Retry-After"] = str(error.retry_after)
    return web.Response(status=status_for(error), text=error_body(message), headers=headers)


def header_safe(text: str, limit: int = 200) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:limit]


def blob_headers(blob: BlobInfo, *, content_type: str, cache_control: str) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "Cache-Control": cache_control,
        "ETag": blob.etag,
        "Last-Modified": _http_date(blob.mtime_ns),
    }


@functools.lru_cache(maxsize=1 << 14)
def _http_date(mtime_ns: int) -> str:
    return formatdate(mtime_ns / 1e9, usegmt=True)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison, as If-None-Match requires."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == wanted for t in if_none_match.split(","))


class BlobFileResponse(web.FileResponse):
    """sendfile of a stored blob (Range, HEAD and conditional requests included).

    The observing middleware sends the response itself to time it; aiohttp's FileResponse,
    unlike Response, would start over when the server calls ``prepare`` a second time.
    """

    def __init__(self, path: Path, *, size: int, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers)
        self.size = size  # for the send deadline (observe)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is not None:
            return self._payload_writer
        return await super().prepare(request)

    async def _sendfile(
        self, request: web.BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        """The kernel's sendfile on every loop (aiohttp only has it where the loop does)."""
        transport = request.transport
        if isinstance(request._loop, asyncio.BaseEventLoop) or (  # asyncio's: native already
            transport is None or not can_sendfile(transport)
        ):
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        await sendfile(transport, fobj, offset, count)
        await web.StreamResponse.write_eof(self)
        return writer
