"""Structured access log: one JSON object per request on stdout, flushed every second.

Written directly (not through ``logging``) because it is on the hot path; the buffer is
flushed by a timer and at shutdown, so a burst costs one write per second, not per request.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import IO, Any


class AccessLog:
    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled

    def write(self, **fields: Any) -> None:
        if self.enabled:
            fields["ts"] = round(time.time(), 3)
            self.stream.write(json.dumps(fields, separators=(",", ":"), default=str) + "\n")

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # stdout closed at exit
            self.stream.flush()
