"""Download statistics end to end: the real go command through a mirror with two workers,
every /stats/ endpoint with the exact counts, and durability across SIGTERM and kill -9.

The store is the real one (SQLite in the data directory). Durability budget (issue 10): a
graceful stop (SIGTERM) loses nothing; ``kill -9`` loses at most what was counted in the last
flush window (``stats.flush_interval``): every download older than one window is in the
store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.gocmd import GoClient
from support.servers import Server, metrics_eventually, running_server

pytestmark = pytest.mark.integration

HELLO_ZIP = "/example.com/hello/@v/v1.0.0.zip"
DEADLINE = 30.0  # flush (1 s) + the answers' in-memory cache (5 s), with room to spare


def config(tmp_path: Path, name: str, flush: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"stats:\n  flush_interval: {flush}\n")
    return path


def get_json(server: Server, path: str) -> Any:
    resp = httpx.get(server.url + path, timeout=10)
    assert resp.status_code == 200, (path, resp.status_code, resp.text)
    assert resp.headers["Content-Type"] == "application/json"
    return resp.json()


def eventually(server: Server, path: str, ok: Callable[[Any], bool]) -> Any:
    """The answer once ``ok`` holds for it (workers flush every second; answers are cached
    for a few seconds)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        body = get_json(server, path)
        if ok(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.25)


def total(server: Server, path: str) -> int:
    return int(get_json(server, path)["download_count"])


def download(tmp_path: Path, mirror: Server, user: str, *targets: str) -> None:
    """One user with an empty module cache: the go command fetches each zip once."""
    client = GoClient(tmp_path / user, mirror.url)
    for info in client.download_json(*targets):
        assert "Error" not in info, info


def last_30_days(counts: dict[dt.date, int]) -> list[dict[str, object]]:
    today = dt.datetime.now(dt.UTC).date()
    return [
        {
            "date": f"{(today - dt.timedelta(days=i)).isoformat()}T00:00:00Z",
            "download_count": counts.get(today - dt.timedelta(days=i), 0),
        }
        for i in range(30)
    ]


def test_go_downloads_through_two_workers_are_counted_exactly(
    tmp_path: Path, upstream_server: Server
) -> None:
    cfg = config(tmp_path, "mirror", "1s")
    with running_server(
        tmp_path, proxy=upstream_server.url, config=cfg, args=["--workers", "2"], name="mirror"
    ) as mirror:
        # Three users: hello v1.0.0 3 times, hello v1.1.0 twice, Upper/Case 3 times, multi/v2 once.
        for i in range(3):
            targets = ["example.com/hello@v1.0.0", "example.com/Upper/Case@v0.1.0"]
            if i < 2:
                targets.append("example.com/hello@v1.1.0")
            if i == 0:
                targets.append("example.com/multi/v2@v2.0.1")
            download(tmp_path, mirror, f"user{i}", *targets)
        # The same user again: its module cache has the zips, the mirror is not asked.
        download(tmp_path, mirror, "user0", "example.com/hello@v1.0.0")
        # What never counts: HEAD, a 304, a range not from byte 0, .info/.mod, a 404.
        zip_url = mirror.url + HELLO_ZIP
        etag = httpx.head(zip_url).headers["ETag"]
        assert httpx.get(zip_url, headers={"If-None-Match": etag}).status_code == 304
        assert httpx.get(zip_url, headers={"Range": "bytes=5-"}).status_code == 206
        assert httpx.get(mirror.url + "/example.com/hello/@v/v1.0.0.info").status_code == 200
        assert httpx.get(mirror.url + "/example.com/hello/@v/v9.0.0.zip").status_code == 404

        hello = eventually(mirror, "/stats/example.com/hello", lambda b: b["download_count"] >= 5)
        today = dt.datetime.now(dt.UTC).date()
        assert hello == {
            "download_count": 5,
            "last_30_days": last_30_days({today: 5}),
            "top_10_module_versions": [
                {"module_version": "v1.0.0", "download_count": 3},
                {"module_version": "v1.1.0", "download_count": 2},
            ],
        }
        assert get_json(mirror, "/stats/example.com/hello@v1.1.0") == {
            "download_count": 2,
            "last_30_days": last_30_days({today: 2}),
        }
        assert get_json(mirror, "/stats/example.com/!upper/!case@v0.1.0") == {
            "download_count": 3,
            "last_30_days": last_30_days({today: 3}),
        }
        assert total(mirror, "/stats/example.com/multi/v2") == 1
        assert total(mirror, "/stats/example.com/never") == 0
        expected_trend = [
            {"module_path": "example.com/hello", "download_count": 5},
            {"module_path": "example.com/Upper/Case", "download_count": 3},
            {"module_path": "example.com/multi/v2", "download_count": 1},
        ]
        for trend in ("latest", "last-7-days", "last-30-days"):
            assert get_json(mirror, f"/stats/trends/{trend}") == expected_trend, trend
        zips = sorted((mirror.data_dir / "go").rglob("*.zip"))
        assert len(zips) == 4
        summary = eventually(mirror, "/stats/summary", lambda b: b["module_version_count"] >= 4)
        assert summary == {
            "cacher_size": sum(z.stat().st_size for z in zips),
            "module_version_count": 4,
            "module_host_count": 1,
            "top_10_module_hosts": [{"module_host": "example.com", "module_version_count": 4}],
        }
        badge = httpx.get(mirror.url + "/stats/example.com/hello/badges/download-count.svg")
        assert badge.status_code == 200
        assert badge.headers["Content-Type"] == "image/svg+xml"
        assert ">5</text>" in badge.text
        assert httpx.get(mirror.url + "/stats/trends/yesterday").status_code == 404
        assert httpx.get(mirror.url + "/stats/example.com/Hello").status_code == 404
        expected = (
            'entrepot_downloads_total{ecosystem="go",result="miss"} 4.0',
            'entrepot_downloads_total{ecosystem="go",result="hit"} 5.0',
        )
        metrics = metrics_eventually(mirror, *expected)
        assert all(line in metrics for line in expected), metrics


async def _burst(url: str, n: int, *, concurrency: int = 16) -> list[int]:
    """``n`` whole GETs, each on a new connection (spread over the workers by the kernel)."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> int:
        async with sem, httpx.AsyncClient(timeout=30) as client:
            return (await client.get(url, headers={"Connection": "close"})).status_code

    return await asyncio.gather(*(one() for _ in range(n)))


def test_sigterm_right_after_a_burst_loses_no_download(
    tmp_path: Path, upstream_server: Server
) -> None:
    data = tmp_path / "shared-data"
    # A flush window longer than the test: only the last flush at shutdown can write them.
    cfg = config(tmp_path, "slow-flush", "60s")
    with running_server(
        tmp_path,
        proxy=upstream_server.url,
        config=cfg,
        args=["--workers", "2"],
        data_dir=data,
        name="first",
    ) as first:
        assert asyncio.run(_burst(first.url + HELLO_ZIP, 200)) == [200] * 200
        assert first.stop(signal.SIGTERM) == 0
    with running_server(
        tmp_path, proxy=upstream_server.url, config=cfg, data_dir=data, name="second"
    ) as second:
        assert total(second, "/stats/example.com/hello@v1.0.0") == 200


def test_kill_9_loses_at_most_one_flush_window(tmp_path: Path, upstream_server: Server) -> None:
    """One worker (serve runs in the process killed). Downloads made before the last flush
    window are in the store after the kill; those of the last window may be lost."""
    data = tmp_path / "shared-data"
    cfg = config(tmp_path, "fast-flush", "1s")
    window = 1.0
    with running_server(
        tmp_path,
        proxy=upstream_server.url,
        config=cfg,
        args=["--workers", "1"],
        data_dir=data,
        name="killed",
    ) as killed:
        assert asyncio.run(_burst(killed.url + HELLO_ZIP, 100)) == [200] * 100
        time.sleep(window * 2.5)  # more than one window: these 100 are flushed
        assert asyncio.run(_burst(killed.url + HELLO_ZIP, 50)) == [200] * 50
        killed.stop(signal.SIGKILL)
    with running_server(
        tmp_path, proxy=upstream_server.url, config=cfg, data_dir=data, name="after"
    ) as after:
        count = total(after, "/stats/example.com/hello@v1.0.0")
        assert 100 <= count <= 150, count
