"""Shared response helpers and the one place that maps errors to HTTP statuses.

The go command shows an error body to its user only when it is ``text/plain``, at most 8
lines, and entirely printable, so every error body here is shaped that way.
"""

from __future__ import annotations

import functools
import textwrap
from email.utils import formatdate

from entrepot.errors import (
    ConflictError,
    EntrepotError,
    ForbiddenError,
    GoneError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    UnavailableError,
    UpstreamTimeoutError,
)
from entrepot.storage.base import BlobInfo
from entrepot.web.files import etag_matches
from entrepot.web.http import TEXT, FileResponse, Response

__all__ = ["TEXT", "etag_matches"]
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
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, UnauthorizedError):
        return 401
    if isinstance(error, RateLimitedError):
        return 429
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


def error_response(error: Exception) -> Response:
    if isinstance(error, EntrepotError):
        message = error.message
    else:
        message = "internal error in the mirror; see its log"
    headers = {"Content-Type": TEXT, "Cache-Control": "no-store"}
    if isinstance(error, UnavailableError):
        headers["Retry-After"] = str(error.retry_after)
    return Response(status_for(error), text=error_body(message), headers=headers)


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
def http_date(mtime_ns: int) -> str:
    return formatdate(mtime_ns / 1e9, usegmt=True)


_http_date = http_date


def file_response(blob: BlobInfo, headers: dict[str, str]) -> FileResponse:
    """A stored blob sent from its file (sendfile; Range and conditionals by the core)."""
    if blob.path is None:  # pragma: no cover - only object storage lacks paths
        raise RuntimeError("streaming from non-file storage is not implemented")
    return FileResponse(
        blob.path, size=blob.size, etag=blob.etag, mtime=blob.mtime_ns / 1e9, headers=headers
    )
