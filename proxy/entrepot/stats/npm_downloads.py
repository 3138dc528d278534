"""npm's download-count API, answered from the mirror's own counts of the tarballs it served:

    <prefix>downloads/point/<period>[/<package>[,<package>...]]
    <prefix>downloads/range/<period>[/<package>[,<package>...]]

``<prefix>`` is the npm registry's path prefix (``/npm/`` beside Go, ``/`` for an npm-only
mirror). Paths, periods, limits and answer shapes are in :mod:`entrepot.stats.periods`; this
module asks the store (one query per answer) and answers.

Answers are JSON: 200 with npm's shapes; 400 ``{"error": ...}`` for a malformed period or bulk
query, 404 ``{"error": "package <name> not found"}`` for a package the mirror never served
(npm's words), 503 with ``Retry-After`` when the store cannot answer. As on ``/stats/``, each
answer is computed at most once per ``ttl`` seconds per path (coalesced, kept in memory), and
200s carry ``Cache-Control: public, max-age=60`` and an ETag honoured by ``If-None-Match``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from entrepot.coalesce import Coalescer
from entrepot.errors import InvalidRequestError, NotFoundError
from entrepot.stats.periods import (
    DownloadsRequest,
    Period,
    PointAnswer,
    RangeAnswer,
    not_found_message,
    parse_downloads_path,
    parse_period,
    point_answer,
    range_answer,
    summed,
    versions_map,
)
from entrepot.stats.store import Day, StatsStore
from entrepot.web.http import Request, Response, render_fields
from entrepot.web.responses import etag_matches

log = logging.getLogger("entrepot.stats")

ECOSYSTEM = "npm"
JSON = "application/json"
CACHE_CONTROL = "public, max-age=60"
RETRY_AFTER = 5

Answer = PointAnswer | RangeAnswer | dict[str, PointAnswer | RangeAnswer | None]


@dataclass(frozen=True)
class _Cached:
    expires: float
    status: int
    etag: str
    fields: bytes
    body: bytes
    package: str | None = None


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class NpmDownloadsHandlers:
    """``<prefix>downloads/{point,range}/...``: parse, ask the store (at most once per ``ttl``
    per path), answer."""

    MAX_CACHED = 4096

    def __init__(
        self,
        store: StatsStore,
        *,
        prefix: str,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.base = prefix + "downloads/"
        self.ttl = ttl
        self.clock = clock
        self.monotonic = monotonic
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._computing: Coalescer[_Cached] = Coalescer()  # one store query per path at once

    async def handle(self, request: Request) -> Response:
        request.endpoint = "downloads"
        path = request.path
        now = self.monotonic()
        cached = self._cache.get(path)
        if cached is None or cached.expires <= now:
            cached, _ = await self._computing.run(path, lambda: self._compute(path, now))
            if cached.status != 503:
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.popitem(last=False)
                self._cache[path] = cached
        request.module = cached.package  # for the access log
        if cached.status == 200 and etag_matches(request.headers.get("if-none-match"), cached.etag):
            return Response(304, fields=cached.fields)
        return Response(cached.status, body=cached.body, fields=cached.fields)

    async def _compute(self, path: str, now: float) -> _Cached:
        expires = now + self.ttl
        package = None
        try:
            if not path.startswith(self.base):
                raise NotFoundError(f"{path[:80]!r} is not a download-count path")
            wanted = parse_downloads_path(path[len(self.base) :])
            package = ",".join(wanted.packages)[:200] or None
            today = dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()
            period = parse_period(wanted.period, today=today, bulk=wanted.bulk)
            body = _json(await self.answer(wanted, period))
        except InvalidRequestError as e:
            return _error(400, e.message, expires, package)
        except NotFoundError as e:
            return _error(404, e.message, expires, package)
        except Exception as e:
            log.warning("stats store: could not answer %s: %r", path[:200], e)
            return _error(503, "the statistics store is unavailable; retry shortly", 0, package)
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        fields = render_fields({"Content-Type": JSON, "Cache-Control": CACHE_CONTROL, "ETag": etag})
        return _Cached(expires, 200, etag, fields, body, package)

    async def answer(self, wanted: DownloadsRequest, period: Period) -> Answer:
        """The answer's JSON value (one store query). Raises NotFoundError for a single
        package never downloaded."""
        first, last = period.start, period.end
        shape = point_answer if wanted.kind == "point" else range_answer
        if not wanted.packages:
            daily = await self.store.ecosystem_daily(ECOSYSTEM, first=first, last=last)
            return shape(period, daily, None)
        if wanted.bulk:
            found = await self.store.package_daily(
                ECOSYSTEM, wanted.packages, first=first, last=last
            )
            return {
                name: shape(period, found[name], name) if name in found else None
                for name in wanted.packages
            }
        (name,) = wanted.packages
        if wanted.kind == "range" and period.explicit:
            # The registry API document's form: the days, and each version's days.
            by_version = await self.store.version_daily(ECOSYSTEM, name, first=first, last=last)
            if by_version is None:
                raise NotFoundError(not_found_message(name))
            answer = range_answer(period, summed(by_version), name)
            answer["versions"] = versions_map(by_version)
            return answer
        found = await self.store.package_daily(ECOSYSTEM, [name], first=first, last=last)
        days: dict[Day, int] | None = found.get(name)
        if days is None:
            raise NotFoundError(not_found_message(name))
        return shape(period, days, name)


def _error(status: int, message: str, expires: float, package: str | None) -> _Cached:
    headers = {"Content-Type": JSON, "Cache-Control": "no-store"}
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER)
    return _Cached(expires, status, "", render_fields(headers), _json({"error": message}), package)
