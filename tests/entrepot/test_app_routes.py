"""What the app routes where, as ``serve`` builds it, on the real server core: Go at the root,
npm under its prefix, an npm-only mirror at the root, and npm without an upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from entrepot.accesslog import AccessLog
from entrepot.app import build_mirror
from entrepot.config import Settings
from entrepot.stats.sqlstore import prepare_stats
from entrepot.web.server import HttpServer


@asynccontextmanager
async def serving(tmp_path: Path, config: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.model_validate(
        {"data_dir": str(tmp_path / "data"), "stats": {"enabled": False}, **config}
    )
    # the registry's tables, as `entrepot serve` makes them first (it runs its own loop)
    await asyncio.to_thread(prepare_stats, settings)
    mirror = build_mirror(settings, access_log=AccessLog(enabled=False))
    server = HttpServer(mirror.app)
    mirror.start()
    [(host, port)] = (await server.listen(host="127.0.0.1", port=0))[:1]
    mirror.bound(settings, host, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
            yield client
    finally:
        await server.shutdown(5)
        await mirror.close()


async def test_an_npm_only_mirror_serves_npm_at_the_root_without_a_go_upstream(
    tmp_path: Path,
) -> None:
    """go.enabled false and no go.proxy at all (an NpmMirror's config): the server starts,
    and with no npm upstream either, npm answers 503 saying what to set."""
    config = {"go": {"enabled": False}, "npm": {"prefix": "/"}}
    async with serving(tmp_path, config) as client:
        answer = await client.get("/left-pad")
        assert answer.status_code == 503
        assert "npm.upstream" in answer.json()["error"]
        assert (await client.get("/")).json()["db_name"] == "registry"
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/downloads/point/last-day")).status_code == 404  # no stats
        sumdb = await client.get("/sumdb/sum.example.com/latest")
        assert sumdb.status_code == 400  # not a Go mirror: an npm path, and a bad one
        assert "error" in sumdb.json()


async def test_go_at_the_root_and_npm_under_its_prefix(tmp_path: Path) -> None:
    config = {"go": {"proxy": "off"}, "npm": {"upstream": "http://127.0.0.1:9/"}}
    async with serving(tmp_path, config) as client:
        index = await client.get("/")
        assert "GOPROXY=" in index.text
        assert "npm config set registry" in index.text
        assert "/npm/" in index.text
        root = (await client.get("/npm/")).json()
        assert (root["db_name"], root["doc_count"], root["doc_del_count"]) == ("registry", 0, 0)
        ping = await client.get("/npm/-/ping?write=true")  # answered here, not upstream
        assert (ping.status_code, ping.json()) == (200, {})
        go = await client.get("/example.com/m/@v/list")
        assert go.status_code == 404  # GOPROXY=off: not found, in Go's text form
        assert go.headers["content-type"].startswith("text/plain")
        refused = await client.post("/example.com/m/@v/list")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
        npm_write = await client.put("/npm/left-pad", content=b"{}")
        assert npm_write.status_code == 401  # the private registry: who is publishing?
        assert "error" in npm_write.json()
        assert npm_write.headers["www-authenticate"].startswith("Basic")
