"""The download statistics API under ``/stats/`` (spec: go-modules.md section 3).

    /stats/summary                              → what the cache holds
    /stats/trends/{latest,last-7-days,last-30-days} → the top 1000 modules of the period
    /stats/<module>[@<version>]                 → totals, the last 30 days, top versions
    /stats/<module>/badges/download-count.svg   → a README badge

Module paths and versions are in the escaped form of the module proxy (``!a`` for ``A``).
The words ``summary`` and ``trends`` cannot be modules: a module path's first element holds
a dot. Days are UTC days; "latest" counts, at day granularity, yesterday and today so far
(between 24 and 48 hours, always covering the last 24).

Every answer is computed at most once per ``ttl`` seconds per path and kept in memory: a
dashboard polling these does not reach the database per request. JSON answers carry
``Cache-Control: public, max-age=60`` and an ETag (a hash of the body), and a matching
``If-None-Match`` gets a 304.
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
from typing import Literal, TypedDict
from xml.sax.saxutils import escape as xml_escape

from entrepot.coalesce import Coalescer
from entrepot.errors import InvalidRequestError, NotFoundError, UnavailableError
from entrepot.gomod.module import canonical_version, unescape_path, unescape_version
from entrepot.stats.store import Day, StatsStore
from entrepot.web.http import Request, Response, render_fields
from entrepot.web.responses import etag_matches

log = logging.getLogger("entrepot.stats")

PREFIX = "/stats/"
BADGE_SUFFIX = "/badges/download-count.svg"
JSON = "application/json"
SVG = "image/svg+xml"
JSON_CACHE_CONTROL = "public, max-age=60"
BADGE_CACHE_CONTROL = "public, max-age=3600"
TREND_DAYS: dict[str, int] = {"latest": 2, "last-7-days": 7, "last-30-days": 30}
"""Calendar days (today included) each trend sums: "latest" is yesterday and today."""
TOP_TRENDING = 1000
ECOSYSTEM = "go"


class HostCount(TypedDict):
    module_host: str
    module_version_count: int


class Summary(TypedDict):
    cacher_size: int
    module_version_count: int
    module_host_count: int
    top_10_module_hosts: list[HostCount]


class Trending(TypedDict):
    module_path: str
    download_count: int


class DayCount(TypedDict):
    date: str
    download_count: int


class VersionCount(TypedDict):
    module_version: str
    download_count: int


class VersionStats(TypedDict):
    download_count: int
    last_30_days: list[DayCount]


class ModuleStats(VersionStats):
    top_10_module_versions: list[VersionCount]


@dataclass(frozen=True)
class StatsRequest:
    """A parsed ``/stats/...`` path."""

    kind: Literal["summary", "trend", "module", "badge"]
    trend: str = ""
    module: str = ""  # unescaped
    version: str | None = None  # unescaped, canonical


def parse_stats_path(path: str) -> StatsRequest:
    """``/stats/example.com/!azure/go@v1.0.0`` → ``StatsRequest("module", module="example.com/
    Azure/go", version="v1.0.0")``. Raises NotFoundError for anything else (404 text/plain,
    as the module protocol answers an invalid path)."""
    if not path.startswith(PREFIX):
        raise NotFoundError(f"{path!r} is not a stats path")
    rest = path[len(PREFIX) :]
    if rest == "summary":
        return StatsRequest("summary")
    if rest.startswith("trends/"):
        trend = rest[len("trends/") :]
        if trend not in TREND_DAYS:
            raise NotFoundError(
                f"unknown trend {trend[:60]!r}: use latest, last-7-days or last-30-days"
            )
        return StatsRequest("trend", trend=trend)
    if rest.endswith(BADGE_SUFFIX):
        return StatsRequest("badge", module=_module(rest[: -len(BADGE_SUFFIX)]))
    escaped, at, escaped_version = rest.partition("@")
    module = _module(escaped)
    if not at:
        return StatsRequest("module", module=module)
    return StatsRequest("module", module=module, version=_version(escaped_version))


def _module(escaped: str) -> str:
    if not escaped or escaped.endswith("/"):
        raise NotFoundError(f"invalid module path {escaped[:80]!r}")
    try:
        return unescape_path(escaped)
    except InvalidRequestError as e:
        raise NotFoundError(e.message) from e


def _version(escaped: str) -> str:
    try:
        version = unescape_version(escaped)
    except InvalidRequestError as e:
        raise NotFoundError(e.message) from e
    if canonical_version(version) != version:
        raise NotFoundError(
            f"invalid version {version[:60]!r}: give a canonical version such as v1.2.3"
        )
    return version


def human_count(n: int) -> str:
    """999, 1.2k, 3.4M, 1.1B: one decimal, dropped when zero; 999,950 is 1M, not 1000k."""
    if n < 1000:
        return str(n)
    text = ""
    for suffix, scale in (("k", 1e3), ("M", 1e6), ("B", 1e9)):
        text = f"{n / scale:.1f}"
        if float(text) < 1000 or suffix == "B":
            return text.removesuffix(".0") + suffix
    return text  # pragma: no cover - the loop always returns


def _text_width(text: str) -> int:
    """An estimate of the rendered width at 11px Verdana (badges need no exact metrics)."""
    return sum(4 if c in ".,:;!|il1 " else 8 if c in "MWmw" else 7 for c in text) + 10


def badge_svg(label: str, value: str) -> bytes:
    """A flat two-part badge in the usual README style."""
    lw, vw = _text_width(label), _text_width(value)
    width = lw + vw
    label, value = xml_escape(label), xml_escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img"'
        f' aria-label="{label}: {value}"><title>{label}: {value}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb"'
        ' stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{vw}" height="20" fill="#007ec6"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif"'
        ' font-size="11">'
        f'<text x="{lw / 2:g}" y="15" fill="#010101" fill-opacity=".3">{label}</text>'
        f'<text x="{lw / 2:g}" y="14">{label}</text>'
        f'<text x="{lw + vw / 2:g}" y="15" fill="#010101" fill-opacity=".3">{value}</text>'
        f'<text x="{lw + vw / 2:g}" y="14">{value}</text></g></svg>\n'
    ).encode()


@dataclass(frozen=True)
class _Cached:
    expires: float
    etag: str
    fields: bytes
    body: bytes
    module: str | None = None
    version: str | None = None


class StatsHandlers:
    """``/stats/...``: parse, ask the store (at most once per ``ttl`` per path), answer."""

    MAX_CACHED = 4096

    def __init__(
        self,
        store: StatsStore,
        *,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.monotonic = monotonic
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._computing: Coalescer[_Cached] = Coalescer()  # one store query per path at once

    async def handle(self, request: Request) -> Response:
        request.endpoint = "stats"
        path = request.path
        now = self.monotonic()
        cached = self._cache.get(path)
        if cached is None or cached.expires <= now:
            stats = parse_stats_path(path)  # NotFoundError: 404 text/plain
            request.module, request.version = stats.module or None, stats.version
            cached, _ = await self._computing.run(path, lambda: self._compute(stats, now))
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.popitem(last=False)
            self._cache[path] = cached
        else:  # for the access log
            request.module, request.version = cached.module, cached.version
        if etag_matches(request.headers.get("if-none-match"), cached.etag):
            return Response(304, fields=cached.fields)
        return Response(body=cached.body, fields=cached.fields)

    async def _compute(self, stats: StatsRequest, now: float) -> _Cached:
        today = dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()
        body: bytes
        try:
            if stats.kind == "badge":
                total = await self.store.total(ECOSYSTEM, stats.module)
                body = badge_svg("downloads", human_count(total))
                return _answer(body, SVG, BADGE_CACHE_CONTROL, now + self.ttl, stats)
            if stats.kind == "summary":
                body = _json(await self.summary())
            elif stats.kind == "trend":
                body = _json(await self.trend(stats.trend, today))
            elif stats.version is None:
                body = _json(await self.module(stats.module, today))
            else:
                body = _json(await self.version(stats.module, stats.version, today))
        except NotFoundError:
            raise
        except Exception as e:
            log.warning("stats store: could not answer %s: %r", stats, e)
            raise UnavailableError("the statistics store is unavailable; retry shortly") from e
        return _answer(body, JSON, JSON_CACHE_CONTROL, now + self.ttl, stats)

    async def summary(self) -> Summary:
        inv = await self.store.inventory(ECOSYSTEM)
        return {
            "cacher_size": inv.bytes,
            "module_version_count": inv.versions,
            "module_host_count": inv.hosts,
            "top_10_module_hosts": [
                {"module_host": r.name, "module_version_count": r.count} for r in inv.top_hosts
            ],
        }

    async def trend(self, trend: str, today: Day) -> list[Trending]:
        days = TREND_DAYS[trend]
        top = await self.store.trending(ECOSYSTEM, days=days, today=today, limit=TOP_TRENDING)
        return [{"module_path": r.name, "download_count": r.count} for r in top]

    async def version(self, module: str, version: str | None, today: Day) -> VersionStats:
        total = await self.store.total(ECOSYSTEM, module, version)
        first = today - dt.timedelta(days=29)
        daily = await self.store.daily(ECOSYSTEM, module, version, first=first, last=today)
        days = (today - dt.timedelta(days=i) for i in range(30))
        return {
            "download_count": total,
            "last_30_days": [
                {"date": f"{d.isoformat()}T00:00:00Z", "download_count": daily.get(d, 0)}
                for d in days
            ],
        }

    async def module(self, module: str, today: Day) -> ModuleStats:
        stats = await self.version(module, None, today)
        top = await self.store.top_versions(ECOSYSTEM, module, 10)
        return {
            "download_count": stats["download_count"],
            "last_30_days": stats["last_30_days"],
            "top_10_module_versions": [
                {"module_version": r.name, "download_count": r.count} for r in top
            ],
        }


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _answer(
    body: bytes, content_type: str, cache_control: str, expires: float, stats: StatsRequest
) -> _Cached:
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    fields = render_fields(
        {"Content-Type": content_type, "Cache-Control": cache_control, "ETag": etag}
    )
    return _Cached(expires, etag, fields, body, stats.module or None, stats.version)
