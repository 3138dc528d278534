"""How a file is answered: conditional requests and byte ranges, as a pure plan.

RFC 9110's order: If-Match / If-Unmodified-Since (412), then If-None-Match /
If-Modified-Since (304), then Range (206 or 416) unless If-Range no longer matches. Only one
range is served; a list of ranges gets the whole file (the RFC allows ignoring Range), as
does a Range the server does not understand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal


@dataclass(frozen=True, slots=True)
class Plan:
    """What to send: a status, and for 200/206 the bytes ``[start, start + length)``."""

    status: int
    start: int = 0
    length: int = 0
    content_range: str | None = None

    @property
    def has_body(self) -> bool:
        return self.status in (200, 206)


def etag_matches(header: str | None, etag: str, *, weak: bool = True) -> bool:
    """If-None-Match compares weakly; If-Match and If-Range strongly (``weak=False``)."""
    if header == etag:  # what a client sends back most of the time
        return not (not weak and etag.startswith("W/"))
    if not header:
        return False
    if header.strip() == "*":
        return True
    if not weak and etag.startswith("W/"):
        return False
    wanted = etag.removeprefix("W/")
    for raw in header.split(","):
        tag = raw.strip()
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        if tag == wanted:
            return True
    return False


def http_date(value: str | None) -> float | None:
    """Seconds since the epoch of an HTTP date, or None when absent or unreadable."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime dates carry no zone: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def byte_range(header: str, size: int) -> tuple[int, int] | Literal["ignore", "unsatisfiable"]:
    """A single ``bytes=`` range → (start, length); "ignore": serve the whole file (a list
    of ranges, another unit, bad syntax); "unsatisfiable": 416."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return "ignore"
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return "ignore"
    first, last = first.strip(), last.strip()
    if not (_digits(first) or first == "") or not (_digits(last) or last == ""):
        return "ignore"
    if first == "":
        if last == "":
            return "ignore"
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        if size == 0:  # no last bytes to send: the whole (empty) file
            return "ignore"
        start = max(0, size - suffix)
        return start, size - start
    start = int(first)
    if last != "" and int(last) < start:
        return "ignore"  # syntactically invalid: ignored, as the RFC says
    if start >= size:
        return "unsatisfiable"
    end = size - 1 if last == "" else min(int(last), size - 1)
    return start, end - start + 1


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # isdigit alone accepts "²", which int() refuses


def plan(headers: Mapping[str, str], *, size: int, etag: str, mtime: float) -> Plan:
    """``headers``: the request's, lower-case names. ``mtime``: the file's, in seconds."""
    if_match = headers.get("if-match")
    if if_match is not None and not etag_matches(if_match, etag, weak=False):
        return Plan(412)
    if if_match is None:
        unmodified_since = http_date(headers.get("if-unmodified-since"))
        if unmodified_since is not None and int(mtime) > unmodified_since:
            return Plan(412)
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if etag_matches(if_none_match, etag):
            return Plan(304)
    else:
        modified_since = http_date(headers.get("if-modified-since"))
        if modified_since is not None and int(mtime) <= modified_since:
            return Plan(304)
    wanted = headers.get("range")
    if wanted is not None and _if_range_holds(headers.get("if-range"), etag, mtime):
        found = byte_range(wanted, size)
        if found == "unsatisfiable":
            return Plan(416, content_range=f"bytes */{size}")
        if found != "ignore":
            start, length = found
            return Plan(206, start, length, f"bytes {start}-{start + length - 1}/{size}")
    return Plan(200, 0, size)


def _if_range_holds(value: str | None, etag: str, mtime: float) -> bool:
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return etag_matches(value, etag, weak=False)
    when = http_date(value)
    return when is not None and int(mtime) == int(when)
