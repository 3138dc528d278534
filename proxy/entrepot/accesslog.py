"""Structured access log: one JSON object per request on stdout, flushed every second.

Written directly (not through ``logging``) because it is on the hot path; the buffer is
flushed by a timer and at shutdown, so a burst costs one write per second, not per request.
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


class AccessLog:
    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled

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
        self.stream.write(
            f'{{"ts":{time.time():.3f},"method":{json.dumps(method)},"path":{json.dumps(path)},'
            f'"endpoint":"{endpoint}","module":{_str(module)},"version":{_str(version)},'
            f'"cache":{_str(cache)},"status":{status},"duration_ms":{seconds * 1000:.3f},'
            f'"bytes":{sent},"remote":{_str(remote)}'
            + (f',"sumdb":"{note}"' if note else "")
            + "}\n"
        )

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # stdout closed at exit
            self.stream.flush()
