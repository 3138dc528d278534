"""The one wrapper around every request: errors become responses (one mapping), then
metrics and an access log.

The response is sent here (``prepare`` + ``write_eof``), so the duration and byte count cover
the whole body, sendfile included, and a client that goes away is logged as 499.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from entrepot.accesslog import AccessLog
from entrepot.errors import EntrepotError
from entrepot.metrics import Endpoint, Metrics
from entrepot.web.responses import BlobFileResponse, error_response

log = logging.getLogger("entrepot.web")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def observer(
    handler: Handler,
    *,
    metrics: Metrics,
    accesslog: AccessLog,
    classify: Callable[[str], Endpoint],
    min_send_rate: int = 0,
    send_grace: float = 30.0,
) -> Handler:
    """Wrap the route table: errors → responses (one mapping), then metrics and the log.

    A file answer must be sent within ``send_grace`` seconds plus its size at ``min_send_rate``
    bytes/s (0: no limit): a client reading a zip at 1 byte/s once held its connection and
    an open file for weeks. Small bodies go to the socket buffer at once and need no limit.
    """

    async def observe(request: web.BaseRequest) -> web.StreamResponse:
        start = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as e:
            response = e
        except EntrepotError as e:
            response = error_response(e)
        except Exception as e:
            log.exception("unexpected error serving %s", request.path)
            response = error_response(e)
        status = response.status
        try:
            if min_send_rate and isinstance(response, BlobFileResponse):
                try:
                    async with asyncio.timeout(send_grace + response.size / min_send_rate):
                        await response.prepare(request)
                        await response.write_eof()
                except TimeoutError:
                    status = 499  # the client read too slowly: drop it
                    if request.transport is not None:
                        request.transport.abort()
            else:
                await response.prepare(request)
                await response.write_eof()
        except ConnectionError:
            status = 499  # the client went away; aiohttp closes the connection quietly
        except asyncio.CancelledError:
            status = 499
            raise
        finally:
            seconds = time.perf_counter() - start
            endpoint: Endpoint = request.get("endpoint") or classify(request.path)
            sent = response.content_length or 0 if status != 499 else 0
            metrics.record_request(endpoint, status, seconds, sent)
            accesslog.write(
                method=request.method,
                path=request.path,
                endpoint=endpoint,
                module=request.get("module"),
                version=request.get("version") or None,
                cache=request.get("cache"),
                status=status,
                seconds=seconds,
                sent=sent,
                remote=request.remote,
                note=request.get("sumdb"),
            )
        return response

    return observe
