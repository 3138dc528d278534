"""HTTP behaviour of a running mirror: caching headers, conditional and range requests,
error bodies the go command can show, health, metrics and the access log."""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest

from support.servers import Server, metrics_eventually

pytestmark = pytest.mark.integration

ZIP = "/example.com/hello/@v/v1.0.0.zip"
MOD = "/example.com/hello/@v/v1.0.0.mod"


def test_immutable_artifacts_carry_long_lived_validators(mirror: Server) -> None:
    for path in (ZIP, MOD, "/example.com/hello/@v/v1.0.0.info"):
        first = httpx.get(mirror.url + path)
        assert first.status_code == 200
        assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert first.headers["etag"].startswith('"')
        assert first.headers["x-entrepot-cache"] == "miss"
        again = httpx.get(mirror.url + path, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""


def test_head_and_range_on_a_zip(mirror: Server) -> None:
    full = httpx.get(mirror.url + ZIP).content
    head = httpx.head(mirror.url + ZIP)
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(full)
    assert head.headers["content-type"] == "application/zip"
    assert head.content == b""
    part = httpx.get(mirror.url + ZIP, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == full[10:20]


def test_mutable_answers_say_how_long_they_are_fresh(mirror: Server) -> None:
    r = httpx.get(mirror.url + "/example.com/hello/@v/list")
    assert r.headers["cache-control"] == "public, max-age=300"
    assert r.headers["content-type"].startswith("text/plain")
    latest = httpx.get(mirror.url + "/example.com/hello/@latest")
    assert latest.status_code == 404  # the fixture upstream has no @latest: go uses the list


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/example.com/Hello/@v/list", 400, 'invalid escaped module path "example.com/Hello"'),
        ("/example.com/hello/@v/v1.0.0.tar", 400, "expected 'list' or <version>"),
        ("/example.com/hello/@v/main.zip", 400, "need a canonical version"),
        ("/example.com/nope/@v/v1.0.0.info", 404, "example.com/nope@v1.0.0: not found"),
        ("/nothing-here", 404, "not a module proxy path"),
    ],
)
def test_errors_are_short_printable_text(mirror: Server, path: str, status: int, text: str) -> None:
    r = httpx.get(mirror.url + path)
    assert r.status_code == status
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert text in " ".join(r.text.split())
    lines = r.text.rstrip("\n").split("\n")
    assert len(lines) <= 8
    assert all(line and line.isprintable() and len(line) <= 80 for line in lines)


def test_health_readiness_and_metrics(mirror: Server) -> None:
    assert httpx.get(mirror.url + "/healthz").text == "ok\n"
    assert httpx.get(mirror.url + "/readyz").status_code == 200
    httpx.get(mirror.url + ZIP)
    httpx.get(mirror.url + ZIP)
    metrics = metrics_eventually(
        mirror,
        'entrepot_cache_results_total{endpoint="zip",result="hit"} 1.0',
        'entrepot_http_requests_total{code="200",endpoint="zip"} 2.0',
    )
    assert 'entrepot_cache_results_total{endpoint="zip",result="miss"} 1.0' in metrics
    assert 'entrepot_cache_results_total{endpoint="zip",result="hit"} 1.0' in metrics
    assert 'entrepot_http_requests_total{code="200",endpoint="zip"} 2.0' in metrics
    assert (
        'entrepot_upstream_requests_total{operation="zip",outcome="ok",upstream="127.0.0.1"}'
        in (metrics)
    )
    assert "example.com/hello" not in metrics  # never a module path as a label


def test_access_log_is_one_json_object_per_request(mirror: Server) -> None:
    httpx.get(mirror.url + ZIP)
    deadline = time.monotonic() + 5
    entries: list[dict[str, object]] = []
    while time.monotonic() < deadline and not entries:
        time.sleep(0.2)
        entries = [
            json.loads(line)
            for line in mirror.log().splitlines()
            if line.startswith("{") and '"endpoint":"zip"' in line
        ]
    assert entries, mirror.log()
    entry = entries[0]
    assert entry["module"] == "example.com/hello"
    assert entry["version"] == "v1.0.0"
    assert entry["cache"] == "miss"
    assert entry["status"] == 200
    assert isinstance(entry["bytes"], int)
    assert entry["bytes"] > 0
    assert isinstance(entry["duration_ms"], float)


def test_readiness_fails_when_the_cache_cannot_be_written(mirror: Server) -> None:
    assert httpx.get(mirror.url + "/readyz").status_code == 200
    # What a lost volume looks like to a worker: its staging folder cannot be made again (a
    # folder that is merely removed is made again, see test_filesystem_safety).
    shutil.rmtree(mirror.data_dir / ".staging")
    (mirror.data_dir / ".staging").write_text("not a folder")
    for _ in range(4):  # whichever worker answers
        r = httpx.get(mirror.url + "/readyz")
        assert r.status_code == 503
        assert "storage not writable" in r.text
