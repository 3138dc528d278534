"""The npm peer benchmark's own parts (bench/npm_peers.py, bench/verdaccio.py), without
Verdaccio, Entrepôt or wrk: the fixture's documents and tarballs, the fixture registry's
answers, the wrk scripts, the summary and the targets."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import npm_peers as bench  # noqa: E402
import verdaccio  # noqa: E402


def test_tarball_is_a_package_of_about_the_size_asked_and_the_same_every_time() -> None:
    data = bench.make_tarball("bench-small", "2.0.0", 20_000)
    assert data == bench.make_tarball("bench-small", "2.0.0", 20_000)
    assert 19_000 < len(data) < 21_000
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        manifest = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
    assert (manifest["name"], manifest["version"]) == ("bench-small", "2.0.0")


def test_small_packument_says_what_its_tarballs_hold() -> None:
    tarballs = {v: bench.make_tarball(bench.SMALL, v, 2_000) for v in bench.SMALL_VERSIONS}
    doc = bench.small_packument("http://127.0.0.1:1", tarballs)
    assert doc["dist-tags"]["latest"] == bench.TARBALL_VERSION
    for version, data in tarballs.items():
        dist = doc["versions"][version]["dist"]
        assert dist["integrity"] == bench.integrity(data)
        assert dist["shasum"] == hashlib.sha1(data).hexdigest()
        assert dist["tarball"] == f"http://127.0.0.1:1/bench-small/-/bench-small-{version}.tgz"
    assert 2_000 < len(json.dumps(doc)) < 10_000  # "a few kB"


def test_huge_packument_is_a_package_of_its_own() -> None:
    doc = json.loads(bench.huge_packument(5))
    assert doc["name"] == bench.HUGE
    assert len(doc["versions"]) == 5
    assert bench.BIG not in json.dumps(doc)
    assert all("/-/huge-" in m["dist"]["tarball"] for m in doc["versions"].values())


@pytest.fixture(scope="module")
def fixture() -> Iterator[bench.Fixture]:
    fx = bench.build_fixture(bench.parse_args(["--big-versions", "4", "--huge-versions", "3"]))
    with bench.running_fixture(fx):
        yield fx


def test_fixture_serves_documents_gzipped_when_asked_and_tarballs_never(
    fixture: bench.Fixture,
) -> None:
    fx = fixture
    for spelling in ("/@bench%2fbig", "/@bench%2Fbig", "/@bench/big"):
        r = httpx.get(fx.url + spelling, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200
        assert r.headers["content-encoding"] == "gzip"
        assert r.json()["name"] == bench.BIG
    path = bench.tarball_path(bench.SMALL, bench.TARBALL_VERSION)
    r = httpx.get(fx.url + path, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers
    assert r.content == fx.tarballs[path]
    assert fx.count() == 4


def test_fixture_abbreviates_by_accept_and_revalidates(fixture: bench.Fixture) -> None:
    fx = fixture
    url = fx.url + "/" + bench.SMALL
    short = httpx.get(url, headers={"Accept": bench.ABBREVIATED_ACCEPT})
    assert short.headers["content-type"] == bench.ABBREVIATED_TYPE
    assert "readme" not in short.json()
    full = httpx.get(url, headers={"Accept": bench.FULL_ACCEPT})
    assert "readme" in full.json()
    assert short.headers["etag"] != full.headers["etag"]
    again = httpx.get(
        url, headers={"Accept": bench.ABBREVIATED_ACCEPT, "If-None-Match": short.headers["etag"]}
    )
    assert again.status_code == 304
    assert bench.check_document(fx, bench.SMALL, full.json()) == []
    tampered = full.json()
    tampered["versions"]["1.0.0"]["dist"]["shasum"] = "0" * 40
    assert bench.check_document(fx, bench.SMALL, tampered) != []


def test_wrk_script_sends_the_headers_and_reports_json(tmp_path: Path) -> None:
    script = bench.wrk_script(tmp_path / "s.lua", {"Accept": 'a "quoted" type'})
    text = script.read_text()
    assert 'wrk.headers["Accept"] = "a \\"quoted\\" type"' in text
    assert "function done(" in text
    assert "BENCHJSON" in text


def _run(server: str, rps: float, p99: float = 5.0) -> bench.Run:
    return bench.Run(
        server=server,
        rps=rps,
        p99_ms=p99,
        p50_ms=1.0,
        bytes_per_s=rps * 1000,
        errors=0,
        server_cores=1.0,
        wrk_cores=0.2,
        other_cores=0.0,
        upstream_requests=0,
        settle_s=0.5,
        quiet_wait_s=1.0,
        busy_before=0.0,
        command=["wrk"],
        wrk={},
    )


def test_summary_ratios_and_targets() -> None:
    runs = {
        "small_full": {
            bench.VERDACCIO: [_run(bench.VERDACCIO, 800), _run(bench.VERDACCIO, 1000)],
            bench.ENTREPOT: [_run(bench.ENTREPOT, 16_000), _run(bench.ENTREPOT, 20_000)],
        },
        "small_304": {bench.ENTREPOT: [_run(bench.ENTREPOT, 9_000)]},
    }
    summary = bench.summarize(runs)
    rps = summary["small_full"]["rps"]
    assert rps[bench.VERDACCIO]["median"] == 900
    assert rps["ratio"] == pytest.approx(18_000 / 900)
    verdicts = {v["bench"]: v for v in bench.target_verdicts(summary)}
    assert verdicts["small_full"]["met"] is True
    assert verdicts["small_304"]["met"] is False  # 9,000 < 10,000 req/s
    assert verdicts["tarball"]["value"] is None
    assert verdicts["tarball"]["met"] is False
    assert "| yes |" in bench.verdict_table(bench.target_verdicts(summary))


def test_verdaccio_config_listens_on_loopback_with_one_caching_uplink(tmp_path: Path) -> None:
    path = verdaccio.write_config(tmp_path, 4873, "http://127.0.0.1:9/", maxage="5m")
    doc = json.loads(path.read_text())  # JSON, which is YAML too
    assert doc["listen"] == "127.0.0.1:4873"
    assert doc["uplinks"]["fixture"] == {
        "url": "http://127.0.0.1:9/",
        "cache": True,
        "maxage": "5m",
        "timeout": "120s",
    }
    assert all(p["proxy"] == "fixture" for p in doc["packages"].values())
    manifest = verdaccio.package_json()
    assert manifest["dependencies"] == {"verdaccio": "5.33.0"}
    assert manifest["overrides"] == {"node-fetch": "2.7.0"}
    assert "registry" not in json.dumps(manifest)
