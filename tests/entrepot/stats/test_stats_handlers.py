"""The /stats/ API: exact JSON shapes (spec go-modules.md section 3), 30 days newest first
with zeros, escaped module paths, 404 text/plain for invalid paths and unknown trends, ETag and
304, the in-memory answer cache, and the badge."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fakestore import FakeStore

from entrepot.errors import NotFoundError, UnavailableError
from entrepot.stats.handlers import (
    StatsHandlers,
    StatsRequest,
    badge_svg,
    human_count,
    parse_stats_path,
)
from entrepot.web.http import Request, Response
from entrepot.web.responses import error_response

TODAY = dt.date(2026, 11, 30)
NOW = dt.datetime(2026, 11, 30, 15, 30, tzinfo=dt.UTC).timestamp()


UPPER = "example.com/Upper/Case"


def ago(days: int) -> dt.date:
    return TODAY - dt.timedelta(days=days)


@pytest.fixture
def store() -> FakeStore:
    s = FakeStore()
    s.counts = {
        ("go", "example.com/a", "v1.0.0", TODAY): 5,
        ("go", "example.com/a", "v1.0.0", ago(1)): 2,
        ("go", "example.com/a", "v1.1.0", ago(2)): 7,
        ("go", "example.com/a", "v1.1.0", ago(40)): 100,  # outside 30 days, in the total
        ("go", "example.com/Upper/Case", "v0.1.0", ago(6)): 3,
        ("go", "example.com/Upper/Case", "v0.1.0", ago(7)): 1,
        ("go", "other.example.org/b", "v2.0.0", ago(1)): 9,
        ("npm", "example.com/a", "1.0.0", TODAY): 1000,  # another ecosystem: never counted
    }
    s.sizes = {
        "go": {
            ("example.com/a", "v1.0.0"): 100,
            ("example.com/a", "v1.1.0"): 200,
            ("example.com/Upper/Case", "v0.1.0"): 50,
            ("other.example.org/b", "v2.0.0"): 1,
        }
    }
    return s


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mono() -> Clock:
    return Clock()


@pytest.fixture
def handlers(store: FakeStore, mono: Clock) -> StatsHandlers:
    return StatsHandlers(store, clock=lambda: NOW, monotonic=mono)


async def get(handlers: StatsHandlers, path: str, **headers: str) -> tuple[Response, Request]:
    req = Request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})
    try:
        resp = await handlers.handle(req)
    except (NotFoundError, UnavailableError) as e:  # what Observed does with it
        resp = error_response(e)
    return resp, req


def fields(resp: Response) -> dict[str, str]:
    assert resp.fields is not None
    lines = resp.fields.decode("latin-1").split("\r\n")
    return dict(line.split(": ", 1) for line in lines if line)


async def get_json(handlers: StatsHandlers, path: str) -> object:
    resp, req = await get(handlers, path)
    assert resp.status == 200, resp.body
    assert fields(resp)["Content-Type"] == "application/json"
    assert fields(resp)["Cache-Control"] == "public, max-age=60"
    assert req.endpoint == "stats"
    return json.loads(resp.body)


def days(counts: dict[int, int]) -> list[dict[str, object]]:
    return [
        {"date": f"{ago(i).isoformat()}T00:00:00Z", "download_count": counts.get(i, 0)}
        for i in range(30)
    ]


async def test_summary(handlers: StatsHandlers) -> None:
    assert await get_json(handlers, "/stats/summary") == {
        "cacher_size": 351,
        "module_version_count": 4,
        "module_host_count": 2,
        "top_10_module_hosts": [
            {"module_host": "example.com", "module_version_count": 3},
            {"module_host": "other.example.org", "module_version_count": 1},
        ],
    }


async def test_module(handlers: StatsHandlers) -> None:
    body = await get_json(handlers, "/stats/example.com/a")
    assert body == {
        "download_count": 114,
        "last_30_days": days({0: 5, 1: 2, 2: 7}),
        "top_10_module_versions": [
            {"module_version": "v1.1.0", "download_count": 107},
            {"module_version": "v1.0.0", "download_count": 7},
        ],
    }
    assert isinstance(body, dict)
    assert len(body["last_30_days"]) == 30
    assert body["last_30_days"][0]["date"] == "2026-11-30T00:00:00Z"  # newest first
    assert body["last_30_days"][-1]["date"] == "2026-11-01T00:00:00Z"


async def test_version(handlers: StatsHandlers) -> None:
    assert await get_json(handlers, "/stats/example.com/a@v1.1.0") == {
        "download_count": 107,
        "last_30_days": days({2: 7}),
    }


async def test_escaped_module_path(handlers: StatsHandlers) -> None:
    body = await get_json(handlers, "/stats/example.com/!upper/!case@v0.1.0")
    assert body == {"download_count": 4, "last_30_days": days({6: 3, 7: 1})}
    _, req = await get(handlers, "/stats/example.com/!upper/!case")
    assert req.module == "example.com/Upper/Case"


async def test_valid_module_never_downloaded_answers_zeros(handlers: StatsHandlers) -> None:
    assert await get_json(handlers, "/stats/example.com/never") == {
        "download_count": 0,
        "last_30_days": days({}),
        "top_10_module_versions": [],
    }
    assert await get_json(handlers, "/stats/example.com/never@v1.0.0") == {
        "download_count": 0,
        "last_30_days": days({}),
    }


@pytest.mark.parametrize(
    ("trend", "expected"),
    [
        # latest: yesterday and today (at day granularity, always covering the last 24 hours)
        ("latest", [("other.example.org/b", 9), ("example.com/a", 7)]),
        ("last-7-days", [("example.com/a", 14), ("other.example.org/b", 9), (UPPER, 3)]),
        ("last-30-days", [("example.com/a", 14), ("other.example.org/b", 9), (UPPER, 4)]),
    ],
)
async def test_trends(handlers: StatsHandlers, trend: str, expected: list[tuple[str, int]]) -> None:
    assert await get_json(handlers, f"/stats/trends/{trend}") == [
        {"module_path": p, "download_count": n} for p, n in expected
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/stats/trends/last-week",
        "/stats/trends/",
        "/stats/trends",  # a module path needs a dot in its first element
        "/stats/",
        "/stats/summary/",
        "/stats/example.com/Upper",  # raw upper case: not the escaped form
        "/stats/example.com/!",  # a trailing !
        "/stats/example.com/a/",
        "/stats/example.com//a",
        "/stats/example.com/../a",
        "/stats/nodot/a",
        "/stats/example.com/a@",
        "/stats/example.com/a@latest",
        "/stats/example.com/a@v1",  # not canonical
        "/stats/example.com/a@V1.0.0",
        "/stats/example.com/a@v1.0.0@v1.0.0",
        "/stats//badges/download-count.svg",
        "/stats/example.com/Upper/badges/download-count.svg",
    ],
)
async def test_invalid_paths_are_404_text_plain(handlers: StatsHandlers, path: str) -> None:
    resp, _ = await get(handlers, path)
    assert resp.status == 404, (path, resp.body)
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.body.endswith(b"\n")


def test_parse_stats_path() -> None:
    assert parse_stats_path("/stats/summary") == StatsRequest("summary")
    assert parse_stats_path("/stats/trends/latest") == StatsRequest("trend", trend="latest")
    assert parse_stats_path("/stats/example.com/!azure/go@v1.0.0") == StatsRequest(
        "module", module="example.com/Azure/go", version="v1.0.0"
    )
    assert parse_stats_path("/stats/example.com/a@v1.0.0-!r!c.1") == StatsRequest(
        "module", module="example.com/a", version="v1.0.0-RC.1"
    )
    assert parse_stats_path("/stats/example.com/!a/badges/download-count.svg") == StatsRequest(
        "badge", module="example.com/A"
    )


async def test_etag_and_304(handlers: StatsHandlers) -> None:
    first, _ = await get(handlers, "/stats/example.com/a")
    etag = fields(first)["ETag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    again, _ = await get(handlers, "/stats/example.com/a", if_none_match=etag)
    assert again.status == 304
    assert fields(again)["ETag"] == etag
    other, _ = await get(handlers, "/stats/example.com/a", if_none_match='"nope"')
    assert other.status == 200
    assert other.body == first.body


async def test_answers_are_cached_for_a_few_seconds(
    handlers: StatsHandlers, store: FakeStore, mono: Clock
) -> None:
    await get(handlers, "/stats/example.com/a")
    queries = store.queries
    store.counts[("go", "example.com/a", "v1.0.0", TODAY)] += 1
    cached = await get_json(handlers, "/stats/example.com/a")
    assert store.queries == queries
    assert isinstance(cached, dict)
    assert cached["download_count"] == 114
    mono.now += 5.0
    fresh = await get_json(handlers, "/stats/example.com/a")
    assert isinstance(fresh, dict)
    assert fresh["download_count"] == 115
    assert store.queries > queries


async def test_a_store_error_is_a_503_and_not_cached(
    handlers: StatsHandlers, store: FakeStore
) -> None:
    store.broken = True
    resp, _ = await get(handlers, "/stats/summary")
    assert resp.status == 503
    assert "Retry-After" in resp.headers
    store.broken = False
    assert (await get(handlers, "/stats/summary"))[0].status == 200


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (7, "7"),
        (999, "999"),
        (1000, "1k"),
        (1234, "1.2k"),
        (1250, "1.2k"),
        (10_500, "10.5k"),
        (999_949, "999.9k"),
        (999_950, "1M"),
        (3_400_000, "3.4M"),
        (999_999_999, "1B"),
        (1_100_000_000, "1.1B"),
        (12_345_000_000_000, "12345B"),
    ],
)
def test_human_count(n: int, text: str) -> None:
    assert human_count(n) == text


async def test_badge(handlers: StatsHandlers) -> None:
    resp, req = await get(handlers, "/stats/example.com/a/badges/download-count.svg")
    assert resp.status == 200
    headers = fields(resp)
    assert headers["Content-Type"] == "image/svg+xml"
    assert headers["Cache-Control"] == "public, max-age=3600"
    assert "ETag" in headers
    svg = resp.body.decode()
    assert svg.startswith("<svg ")
    assert svg.rstrip().endswith("</svg>")
    assert ">downloads</text>" in svg
    assert ">114</text>" in svg
    assert req.module == "example.com/a"
    etag = headers["ETag"]
    assert (await get(handlers, req.path, if_none_match=etag))[0].status == 304


def test_badge_escapes_its_text() -> None:
    assert b"&lt;b&gt;" in badge_svg("<b>", "1k")
