"""The mirror as ``serve`` builds it (a fake store instead of SQL), on the real server core
over 127.0.0.1: what counts as a download end to end, the inventory hook of a published zip,
the start-up walk, the /stats/ routes, and close() flushing every count."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fakestore import FakeStore

from entrepot.accesslog import AccessLog
from entrepot.app import Mirror, build_mirror
from entrepot.config import Settings
from entrepot.web.server import HttpServer
from support.modules import universe

ZIP = "/example.com/hello/@v/v1.0.0.zip"
KEY = ("go", "example.com/hello", "v1.0.0")


@dataclass
class Running:
    mirror: Mirror
    store: FakeStore
    client: httpx.AsyncClient
    server: HttpServer


def settings(tmp_path: Path, *, enabled: bool = True) -> Settings:
    upstream = tmp_path / "upstream"
    universe(upstream)
    return Settings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "go": {"proxy": f"file://{upstream}"},
            "stats": {"enabled": enabled, "flush_interval": 60},
        }
    )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    store = FakeStore()
    mirror = build_mirror(
        settings(tmp_path), access_log=AccessLog(enabled=False), stats_store=store
    )
    server = HttpServer(mirror.app)
    mirror.start()
    [(host, port)] = (await server.listen(host="127.0.0.1", port=0))[:1]
    mirror.start_stats(reconcile=True)
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
        yield Running(mirror, store, client, server)
    await server.shutdown(5)
    await mirror.close()


async def stop(r: Running) -> None:
    await r.server.shutdown(5)
    await r.mirror.close()


def downloads(store: FakeStore, key: tuple[str, str, str] = KEY) -> int:
    return sum(n for k, n in store.counts.items() if k[:3] == key)


async def test_only_whole_gets_of_zips_count(running: Running) -> None:
    c = running.client
    miss = await c.get(ZIP)
    assert miss.status_code == 200
    assert miss.headers["X-Entrepot-Cache"] == "miss"
    assert (await c.get(ZIP)).status_code == 200  # a hit
    assert (await c.get(ZIP, headers={"Range": "bytes=0-9"})).status_code == 206
    assert (await c.get(ZIP, headers={"Range": "bytes=10-"})).status_code == 206
    assert (await c.head(ZIP)).status_code == 200
    etag = miss.headers["ETag"]
    assert (await c.get(ZIP, headers={"If-None-Match": etag})).status_code == 304
    assert (await c.get("/example.com/hello/@v/v9.9.9.zip")).status_code == 404
    assert (await c.get("/example.com/hello/@v/v1.0.0.info")).status_code == 200
    assert (await c.get("/example.com/hello/@v/v1.0.0.mod")).status_code == 200
    assert running.store.counts == {}  # nothing written before a flush
    await stop(running)  # SIGTERM's path: the listener stops, then close() flushes
    today = dt.datetime.now(dt.UTC).date()
    assert running.store.counts in ({(*KEY, today): 3}, {(*KEY, today - dt.timedelta(1)): 3})
    assert running.store.closed


async def test_download_metrics_by_result(running: Running) -> None:
    c = running.client
    await c.get(ZIP)
    await c.get(ZIP)
    await c.get(ZIP)
    text = (await c.get("/metrics")).text
    assert 'entrepot_downloads_total{ecosystem="go",result="miss"} 1.0' in text
    assert 'entrepot_downloads_total{ecosystem="go",result="hit"} 2.0' in text


async def test_a_published_zip_enters_the_inventory(running: Running) -> None:
    await running.client.get(ZIP)
    await running.client.get("/example.com/!upper/!case/@v/v0.1.0.zip")
    await stop(running)  # waits for the background inventory updates
    sizes = running.store.sizes["go"]
    assert set(sizes) == {("example.com/hello", "v1.0.0"), ("example.com/Upper/Case", "v0.1.0")}
    assert sizes["example.com/hello", "v1.0.0"] == len(
        (running.mirror.storage.root / "go/example.com/hello/@v/v1.0.0.zip").read_bytes()
    )


async def test_stats_routes_answer_through_the_app(running: Running) -> None:
    await running.client.get(ZIP)
    assert running.mirror.stats is not None
    assert await running.mirror.stats.recorder.flush()
    resp = await running.client.get("/stats/example.com/hello@v1.0.0")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    assert resp.json()["download_count"] == 1
    again = await running.client.get(
        "/stats/example.com/hello@v1.0.0", headers={"If-None-Match": resp.headers["ETag"]}
    )
    assert again.status_code == 304
    head = await running.client.head("/stats/summary")
    assert head.status_code == 200
    assert head.content == b""
    bad = await running.client.get("/stats/example.com/Hello")
    assert bad.status_code == 404
    assert bad.headers["Content-Type"].startswith("text/plain")
    text = (await running.client.get("/metrics")).text
    assert 'entrepot_http_requests_total{code="200",endpoint="stats"} 2.0' in text


async def test_the_start_up_walk_reconciles_the_inventory(tmp_path: Path) -> None:
    s = settings(tmp_path)
    zip_path = s.data_dir / "go/example.com/!a/@v/v1.0.0.zip"
    zip_path.parent.mkdir(parents=True)
    zip_path.write_bytes(b"z" * 42)
    store = FakeStore()
    store.sizes = {"go": {("example.com/gone", "v1.0.0"): 7}}
    mirror = build_mirror(s, access_log=AccessLog(enabled=False), stats_store=store)
    mirror.start()
    mirror.start_stats(reconcile=True)
    await mirror.close()
    assert store.sizes == {"go": {("example.com/A", "v1.0.0"): 42}}


async def test_stats_disabled(tmp_path: Path) -> None:
    mirror = build_mirror(settings(tmp_path, enabled=False), access_log=AccessLog(enabled=False))
    assert mirror.stats is None
    server = HttpServer(mirror.app)
    mirror.start()
    [(host, port)] = (await server.listen(host="127.0.0.1", port=0))[:1]
    mirror.start_stats(reconcile=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            assert (await client.get(ZIP)).status_code == 200
            resp = await client.get("/stats/summary")
            assert resp.status_code == 404
            assert "disabled" in resp.text
    finally:
        await server.shutdown(5)
        await mirror.close()
