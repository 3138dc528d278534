"""Structured access log: one JSON object per request on stdout, flushed every second.

Written directly (not through ``logging``) because it is on the hot path; lines are batched
and flushed by a timer and at shutdown, so a burst costs a write per 256 lines or per
second, not per request.
Module paths and versions reach here only after Go's path rules accepted them (no quotes, no
backslashes, ASCII), so they are placed without escaping; the raw path is always escaped.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import IO


def _str(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def _json_str(value: str) -> str:
    """A JSON string; the common printable-ASCII path without json.dumps."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


class AccessLog:
    """Lines are kept here and written in batches (every ``BATCH`` lines and on
    :meth:`flush`): the stream's own buffer cannot be relied on, since containers often run
    Python unbuffered (``PYTHONUNBUFFERED=1``, as our image does), which made every line a
    write system call of its own, as costly as sending the answer."""

    BATCH = 256

    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self._lines: list[str] = []

    def write(
        self,
        *,
        method: str,
        path: str,
        endpoint: str,
        module: str | None,
        version: str | None,
        cache: str | None,
        status: int,
        seconds: float,
        sent: int,
        remote: str | None,
        note: str | None = None,
    ) -> None:
        if not self.enabled:
            return
        lines = self._lines
        lines.append(
            f'{{"ts":{time.time():.3f},"method":{_json_str(method)},"path":{_json_str(path)},'
            f'"endpoint":"{endpoint}","module":{_str(module)},"version":{_str(version)},'
            f'"cache":{_str(cache)},"status":{status},"duration_ms":{seconds * 1000:.3f},'
            f'"bytes":{sent},"remote":{_str(remote)}'
            + (f',"sumdb":"{note}"' if note else "")
            + "}\n"
        )
        if len(lines) >= self.BATCH:
            self._write()

    def _write(self) -> None:
        lines, self._lines = self._lines, []
        with contextlib.suppress(OSError, ValueError):  # stdout closed at exit
            self.stream.write("".join(lines))

    def flush(self) -> None:
        self._write()
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()
