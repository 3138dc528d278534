"""The one wrapper around every request: errors become responses (one mapping), and how each
request ended goes to the metrics and the access log.

The core (entrepot.web.server) calls :meth:`Observed.done` after the whole body was sent, so
the duration and byte count cover sendfile too, and a client that went away is logged as 499.
That is also where a zip download is counted for the stats API: only then is it known to
have been sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import cast

from entrepot.accesslog import AccessLog
from entrepot.errors import EntrepotError
from entrepot.metrics import Endpoint, Metrics
from entrepot.web.http import AnyResponse, Request
from entrepot.web.responses import error_response

log = logging.getLogger("entrepot.web")
Handler = Callable[[Request], Awaitable[AnyResponse]]
Downloads = Callable[[Request, int, float], None]
"""Told of every zip answered (request, status, seconds): decides whether it was a download
and counts it (entrepot.stats.recorder.GoDownloads). Must be cheap and never raise."""


class Observed:
    """The application the core serves: a handler, with errors mapped and requests counted."""

    def __init__(
        self,
        handler: Handler,
        *,
        metrics: Metrics,
        accesslog: AccessLog,
        classify: Callable[[str], Endpoint],
        downloads: Downloads | None = None,
    ) -> None:
        self.handler = handler
        self.metrics = metrics
        self.accesslog = accesslog
        self.classify = classify
        self.downloads = downloads

    async def handle(self, request: Request) -> AnyResponse:
        try:
            return await self.handler(request)
        except EntrepotError as e:
            return error_response(e)
        except Exception as e:
            log.exception("unexpected error serving %s", request.path)
            return error_response(e)

    def done(self, request: Request, status: int, sent: int, seconds: float) -> None:
        endpoint = cast(Endpoint, request.endpoint) or self.classify(request.path)
        self.metrics.record_request(endpoint, status, seconds, sent)
        if endpoint in ("zip", "tarball") and self.downloads is not None:
            # only now is the artifact sent
            self.downloads(request, status, seconds)
        self.accesslog.write(
            method=request.method,
            path=request.path,
            endpoint=endpoint,
            module=request.module,
            version=request.version or None,
            cache=request.cache,
            status=status,
            seconds=seconds,
            sent=sent,
            remote=request.remote,
            note=request.note,
        )
