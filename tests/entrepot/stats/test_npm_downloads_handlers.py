"""npm's download-count API answered by NpmDownloadsHandlers over a real SQLite store: exact
JSON bodies (npm's keys in npm's order), zeros for quiet days, bulk with null, the per-version
map, npm's errors as JSON, ETag/304, the answer cache and a store that is down."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from entrepot.errors import UnavailableError
from entrepot.sql.migrate import migrate
from entrepot.stats.npm_downloads import NpmDownloadsHandlers
from entrepot.stats.sqlstore import SqlStatsStore, open_store
from entrepot.stats.store import CountKey
from entrepot.web.http import Request, Response

NOW = dt.datetime(2026, 3, 3, 15, 30, tzinfo=dt.UTC).timestamp()  # today is 2026-03-03
TODAY = dt.date(2026, 3, 3)


def ago(days: int) -> dt.date:
    return TODAY - dt.timedelta(days=days)


COUNTS: dict[CountKey, int] = {
    ("npm", "express", "4.18.0", TODAY): 2,
    ("npm", "express", "4.19.0", TODAY): 3,
    ("npm", "express", "4.18.0", ago(1)): 1,
    ("npm", "express", "4.10.0", ago(6)): 4,
    ("npm", "express", "4.18.0", ago(7)): 100,  # just outside last-week
    ("npm", "express", "4.18.0", ago(400)): 1000,  # outside last-year, inside 18 months
    ("npm", "express", "4.18.0", ago(600)): 10_000,  # more than 18 months ago
    ("npm", "@scope/pkg", "1.0.0", ago(2)): 7,
    ("npm", "quiet", "0.1.0", ago(200)): 9,
    ("go", "express", "v1.0.0", TODAY): 10_000,  # another ecosystem: never counted here
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStatsStore]:
    await asyncio.to_thread(migrate, None, tmp_path)
    s = open_store(None, tmp_path)
    await s.add(COUNTS)
    yield s
    await s.close()


@pytest.fixture
def mono() -> Clock:
    return Clock()


@pytest.fixture
def handlers(store: SqlStatsStore, mono: Clock) -> NpmDownloadsHandlers:
    return NpmDownloadsHandlers(store, prefix="/npm/", clock=lambda: NOW, monotonic=mono)


async def get(h: NpmDownloadsHandlers, path: str, **headers: str) -> tuple[Response, Request]:
    req = Request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})
    return await h.handle(req), req


def fields(resp: Response) -> dict[str, str]:
    assert resp.fields is not None
    lines = resp.fields.decode().split("\r\n")
    return {k.lower(): v for k, _, v in (line.partition(": ") for line in lines if line)}


async def body(h: NpmDownloadsHandlers, path: str, status: int = 200) -> Any:
    resp, req = await get(h, path)
    assert resp.status == status, resp.body
    assert req.endpoint == "downloads"
    assert fields(resp)["content-type"] == "application/json"
    return json.loads(resp.body)


async def test_point_exact_bodies(handlers: NpmDownloadsHandlers) -> None:
    resp, _ = await get(handlers, "/npm/downloads/point/last-week/express")
    assert resp.body == (
        b'{"downloads":10,"start":"2026-02-25","end":"2026-03-03","package":"express"}'
    )
    assert await body(handlers, "/npm/downloads/point/last-day/express") == {
        "downloads": 5,
        "start": "2026-03-03",
        "end": "2026-03-03",
        "package": "express",
    }
    assert (await body(handlers, "/npm/downloads/point/last-month/express"))["downloads"] == 110
    assert (await body(handlers, "/npm/downloads/point/last-year/express"))["downloads"] == 110
    assert (await body(handlers, "/npm/downloads/point/2026-03-02/express"))["downloads"] == 1
    answer = await body(handlers, "/npm/downloads/point/2024-01-01:2026-03-03/express")
    assert answer == {
        "downloads": 1110,  # truncated to 18 months: the day 600 days ago is left out
        "start": "2024-09-03",
        "end": "2026-03-03",
        "package": "express",
    }


async def test_point_for_all_packages_has_no_package_key(handlers: NpmDownloadsHandlers) -> None:
    resp, _ = await get(handlers, "/npm/downloads/point/last-week")
    assert resp.body == b'{"downloads":17,"start":"2026-02-25","end":"2026-03-03"}'


async def test_scoped_names_in_every_spelling(handlers: NpmDownloadsHandlers) -> None:
    want = {"downloads": 7, "start": "2026-02-25", "end": "2026-03-03", "package": "@scope/pkg"}
    for spelling in ("@scope/pkg", "@scope%2fpkg", "@scope%2Fpkg", "%40scope%2Fpkg"):
        assert await body(handlers, f"/npm/downloads/point/last-week/{spelling}") == want


async def test_range_has_every_day(handlers: NpmDownloadsHandlers) -> None:
    resp, _ = await get(handlers, "/npm/downloads/range/last-week/express")
    assert json.loads(resp.body) == {
        "start": "2026-02-25",
        "end": "2026-03-03",
        "package": "express",
        "downloads": [
            {"downloads": 4, "day": "2026-02-25"},
            {"downloads": 0, "day": "2026-02-26"},
            {"downloads": 0, "day": "2026-02-27"},
            {"downloads": 0, "day": "2026-02-28"},
            {"downloads": 0, "day": "2026-03-01"},
            {"downloads": 1, "day": "2026-03-02"},
            {"downloads": 5, "day": "2026-03-03"},
        ],
    }
    assert resp.body.startswith(b'{"start":"2026-02-25","end":"2026-03-03","package":"express",')
    assert b'{"downloads":4,"day":"2026-02-25"}' in resp.body
    everything = await body(handlers, "/npm/downloads/range/last-day")
    assert everything == {
        "start": "2026-03-03",
        "end": "2026-03-03",
        "downloads": [{"downloads": 5, "day": "2026-03-03"}],
    }
    year = await body(handlers, "/npm/downloads/range/last-year/quiet")
    assert len(year["downloads"]) == 365
    assert sum(d["downloads"] for d in year["downloads"]) == 9


async def test_range_with_dates_carries_the_versions(handlers: NpmDownloadsHandlers) -> None:
    answer = await body(handlers, "/npm/downloads/range/2026-02-24:2026-03-03/express")
    assert list(answer) == ["start", "end", "package", "downloads", "versions"]
    assert answer["start"] == "2026-02-24"
    assert [d["downloads"] for d in answer["downloads"]] == [100, 4, 0, 0, 0, 0, 1, 5]
    assert answer["versions"] == {
        "4.10.0": [{"day": "2026-02-25", "downloads": 4}],
        "4.18.0": [
            {"day": "2026-02-24", "downloads": 100},
            {"day": "2026-03-02", "downloads": 1},
            {"day": "2026-03-03", "downloads": 2},
        ],
        "4.19.0": [{"day": "2026-03-03", "downloads": 3}],
    }
    quiet = await body(handlers, "/npm/downloads/range/2026-03-01:2026-03-03/quiet")
    assert quiet["versions"] == {}
    assert [d["downloads"] for d in quiet["downloads"]] == [0, 0, 0]
    # Named periods and single days keep npm's shape, without the map.
    assert "versions" not in await body(handlers, "/npm/downloads/range/last-week/express")
    assert "versions" not in await body(handlers, "/npm/downloads/range/2026-03-03/express")


async def test_bulk(handlers: NpmDownloadsHandlers) -> None:
    resp, _ = await get(handlers, "/npm/downloads/point/last-week/express,never,quiet")
    assert resp.body == (
        b'{"express":{"downloads":10,"start":"2026-02-25","end":"2026-03-03",'
        b'"package":"express"},"never":null,'
        b'"quiet":{"downloads":0,"start":"2026-02-25","end":"2026-03-03","package":"quiet"}}'
    )
    ranged = await body(handlers, "/npm/downloads/range/last-day/quiet,express")
    assert list(ranged) == ["quiet", "express"]
    assert ranged["express"] == {
        "start": "2026-03-03",
        "end": "2026-03-03",
        "package": "express",
        "downloads": [{"downloads": 5, "day": "2026-03-03"}],
    }
    # Bulk spans at most 365 days; no per-version map in bulk.
    long = await body(handlers, "/npm/downloads/range/2024-01-01:2026-03-03/express,quiet")
    assert long["express"]["start"] == "2025-03-04"
    assert len(long["express"]["downloads"]) == 365
    assert "versions" not in long["express"]


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/npm/downloads/point/last-week/never", 404, "package never not found"),
        ("/npm/downloads/range/last-week/@scope/never", 404, "package @scope/never not found"),
        ("/npm/downloads/range/2026-01-01:2026-01-31/never", 404, "package never not found"),
        ("/npm/downloads/point/last-week/a/b", 404, "package a/b not found"),
        ("/npm/downloads/point/last-week/express", 200, None),
        ("/npm/downloads/point/last-decade/express", 400, "invalid period 'last-decade'"),
        ("/npm/downloads/point/2026-02-30/express", 400, "invalid date '2026-02-30'"),
        ("/npm/downloads/point/2026-03-02:2026-03-01", 400, "is after the end"),
        ("/npm/downloads/point/2026-03-04", 400, "starts after today (2026-03-03, UTC)"),
        ("/npm/downloads/point/last-day/express,@scope/pkg", 400, "scoped packages"),
        ("/npm/downloads/point", 400, "no period"),
        ("/npm/downloads/points/last-day", 404, "no such endpoint"),
        ("/npm/downloads/point/", 400, "no period"),
        ("/other/downloads/point/last-day", 404, "not a download-count path"),
    ],
)
async def test_errors_are_npm_json(
    handlers: NpmDownloadsHandlers, path: str, status: int, error: str | None
) -> None:
    resp, _ = await get(handlers, path)
    assert resp.status == status, resp.body
    if error is None:
        return
    answer = json.loads(resp.body)
    assert list(answer) == ["error"]
    assert error in answer["error"]
    assert fields(resp)["cache-control"] == "no-store"


async def test_more_than_128_packages(handlers: NpmDownloadsHandlers) -> None:
    names = ",".join(f"p{i}" for i in range(129))
    answer = await body(handlers, f"/npm/downloads/point/last-day/{names}", 400)
    assert answer == {"error": "too many packages: a bulk query takes at most 128, got 129"}
    ok = await body(handlers, f"/npm/downloads/point/last-day/{names.rsplit(',', 1)[0]}")
    assert len(ok) == 128
    assert set(ok.values()) == {None}


async def test_an_npm_only_mirror_serves_at_its_root(store: SqlStatsStore) -> None:
    h = NpmDownloadsHandlers(store, prefix="/", clock=lambda: NOW)
    assert (await body(h, "/downloads/point/last-day/express"))["downloads"] == 5


async def test_etag_and_304(handlers: NpmDownloadsHandlers) -> None:
    resp, _ = await get(handlers, "/npm/downloads/point/last-week/express")
    head = fields(resp)
    assert head["cache-control"] == "public, max-age=60"
    etag = head["etag"]
    again, _ = await get(handlers, "/npm/downloads/point/last-week/express", if_none_match=etag)
    assert again.status == 304
    assert again.body == b""
    other, _ = await get(handlers, "/npm/downloads/point/last-week/express", if_none_match='"x"')
    assert other.status == 200


async def test_answers_are_kept_for_the_ttl(
    handlers: NpmDownloadsHandlers, store: SqlStatsStore, mono: Clock
) -> None:
    path = "/npm/downloads/point/last-day/express"
    assert (await body(handlers, path))["downloads"] == 5
    await store.add({("npm", "express", "4.19.0", TODAY): 1})
    assert (await body(handlers, path))["downloads"] == 5  # within the ttl: the kept answer
    mono.now += 5.0
    assert (await body(handlers, path))["downloads"] == 6


async def test_concurrent_askers_share_one_query(handlers: NpmDownloadsHandlers) -> None:
    calls = 0
    real = handlers.store.package_daily

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return await real(*args, **kwargs)

    handlers.store.package_daily = counted  # type: ignore[method-assign]
    answers = await asyncio.gather(
        *(body(handlers, "/npm/downloads/point/last-week/express") for _ in range(10))
    )
    assert calls == 1
    assert {a["downloads"] for a in answers} == {10}


class DownStore(SqlStatsStore):
    def __init__(self) -> None:
        pass

    async def package_daily(self, *args: Any, **kwargs: Any) -> Any:
        raise UnavailableError("the statistics database cannot answer: down")


async def test_a_store_that_is_down_answers_503_and_nothing_is_kept(mono: Clock) -> None:
    h = NpmDownloadsHandlers(DownStore(), prefix="/npm/", clock=lambda: NOW, monotonic=mono)
    resp, _ = await get(h, "/npm/downloads/point/last-day/express")
    assert resp.status == 503
    assert json.loads(resp.body) == {"error": "the statistics store is unavailable; retry shortly"}
    assert fields(resp)["retry-after"] == "5"
    assert not h._cache
