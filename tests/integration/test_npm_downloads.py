"""npm's download-count API through a real ``entrepot serve`` (two workers) after a scripted
mix of downloads: two users' real ``npm install`` through the mirror, plus requests that must
not count (HEAD, 304, a resumed range). Every endpoint answers exact counts: point and range,
one package (scoped in every spelling) or all, bulk with null, the per-version map, and npm's
JSON errors.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import jsclients
from support.npmcli import JsClient
from support.npmfixture import NpmFixture, running_npm_fixture
from support.servers import Server, running_server

pytestmark = pytest.mark.integration

# What one `npm install fixture-a@1.1.0` downloads: the package and its tree.
TREE = {"fixture-a": "1.1.0", "@fixture/b": "1.1.0", "@fixture/c": "2.0.0", "fixture-old": "0.1.0"}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NpmFixture]:
    if isinstance(found := jsclients.npm_bin(), jsclients.Missing):
        pytest.fail(f"npm is needed for this test: {found.reason}")
    with running_npm_fixture(tmp_path_factory.mktemp("upstream")) as fixture:
        yield fixture


@pytest.fixture(scope="module")
def mirror(upstream: NpmFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"ENTREPOT_NPM__UPSTREAM": upstream.url + "/", "ENTREPOT_STATS__FLUSH_INTERVAL": "1s"}
    tmp = tmp_path_factory.mktemp("mirror")
    with running_server(tmp, env=env, args=["--workers", "2"]) as server:
        yield server


def get(server: Server, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}/npm/downloads/{path}", timeout=10)


def eventually(server: Server, path: str, key: str, want: int) -> dict[str, Any]:
    """The answer once the workers' counts have been flushed (every second) and the answer
    cache (5 s) has expired: bounded, then the last answer is asserted on."""
    deadline = time.monotonic() + 30
    while True:
        answer: dict[str, Any] = get(server, path).json()
        if answer.get(key) == want or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def tarball_url(server: Server, name: str, version: str) -> str:
    return f"{server.url}/npm/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


def test_counts_after_a_scripted_mix_are_exact_everywhere(tmp_path: Path, mirror: Server) -> None:
    for name in ("first", "second"):  # the first fills the cache, the second hits it
        client = JsClient(tmp_path / name, mirror.url + "/npm/")
        project = client.new_project({"fixture-a": "1.1.0"})
        done = client.run("npm", "install", "--no-audit", "--no-fund", cwd=project)
        assert done.returncode == 0, done.stderr
    one_oh = tarball_url(mirror, "fixture-a", "1.0.0")
    assert httpx.get(one_oh, timeout=10).status_code == 200  # counted
    first = httpx.get(one_oh, headers={"Range": "bytes=0-9"}, timeout=10)
    assert first.status_code == 206  # a download that starts at byte 0: counted
    # Not downloads: HEAD, a resumed download, a 304 (tarballs carry no validator yet).
    url = tarball_url(mirror, "fixture-a", "1.1.0")
    head = httpx.head(url, timeout=10)
    assert head.status_code == 200
    assert httpx.get(url, headers={"Range": "bytes=10-"}, timeout=10).status_code == 206
    if "etag" in head.headers:
        revalidated = httpx.get(url, headers={"If-None-Match": head.headers["etag"]}, timeout=10)
        assert revalidated.status_code == 304

    today = dt.datetime.now(dt.UTC).date().isoformat()  # a test across midnight UTC: rare
    total = 2 * len(TREE) + 2
    point = eventually(mirror, "point/last-day", "downloads", total)
    assert point == {"downloads": total, "start": today, "end": today}

    assert get(mirror, "point/last-week/fixture-a").json() == {
        "downloads": 4,
        "start": (dt.date.fromisoformat(today) - dt.timedelta(days=6)).isoformat(),
        "end": today,
        "package": "fixture-a",
    }
    for spelling in ("@fixture/b", "@fixture%2fb", "%40fixture%2Fb"):
        answer = get(mirror, f"point/last-day/{spelling}").json()
        assert answer == {"downloads": 2, "start": today, "end": today, "package": "@fixture/b"}

    week = get(mirror, "range/last-week/@fixture/c").json()
    assert list(week) == ["start", "end", "package", "downloads"]
    assert [d["downloads"] for d in week["downloads"]] == [0, 0, 0, 0, 0, 0, 2]
    assert week["downloads"][-1] == {"downloads": 2, "day": today}

    trend = get(mirror, f"range/{today}:{today}/fixture-a").json()
    assert trend == {
        "start": today,
        "end": today,
        "package": "fixture-a",
        "downloads": [{"downloads": 4, "day": today}],
        "versions": {
            "1.0.0": [{"day": today, "downloads": 2}],
            "1.1.0": [{"day": today, "downloads": 2}],
        },
    }

    bulk = get(mirror, "point/last-day/fixture-old,fixture-many,fixture-a").json()
    assert bulk == {
        "fixture-old": {
            "downloads": 2,
            "start": today,
            "end": today,
            "package": "fixture-old",
        },
        "fixture-many": None,  # served as a packument, never as a tarball
        "fixture-a": {"downloads": 4, "start": today, "end": today, "package": "fixture-a"},
    }


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("point/last-week/never-served", 404, "package never-served not found"),
        ("point/last-week/fixture-a,@fixture/b", 400, "scoped packages are not supported"),
        ("range/last-decade/fixture-a", 400, "invalid period 'last-decade'"),
        ("point/2999-01-01/fixture-a", 400, "starts after today"),
    ],
)
def test_errors_are_npm_json(mirror: Server, path: str, status: int, error: str) -> None:
    resp = get(mirror, path)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    assert error in resp.json()["error"]


def test_a_package_named_downloads_is_still_a_package(mirror: Server) -> None:
    """Only ``downloads/point/`` and ``downloads/range/`` are the API: ``/npm/downloads`` is
    the packument of a package of that name (here: none upstream)."""
    resp = httpx.get(f"{mirror.url}/npm/downloads", timeout=10)
    assert resp.status_code == 404
    assert "not found" in resp.text.lower()
