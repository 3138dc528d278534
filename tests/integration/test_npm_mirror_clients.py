"""The npm mirror through the real clients: npm, pnpm and yarn (Berry) install through it.

One fixture registry (``support.npmfixture``) is the upstream, a real ``entrepot serve`` the
mirror at ``/npm/``; each client is an isolated user (``support.npmcli``). What a user must
see: the same tree and the same ``integrity`` in every lockfile as a direct install, tarball
URLs under the mirror, and installs that still work with the upstream gone. Servers are shared
per concern (installs, cold caches, hostile upstream, policy) to keep the file fast.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support import jsclients
from support.npmcli import JsClient, Tool, npm_lock, pnpm_lock, yarn_lock
from support.npmfixture import (
    ABBREVIATED,
    NpmFixture,
    PackageVersion,
    running_npm_fixture,
    standard_packages,
)
from support.servers import Server, metrics_eventually, running_server

pytestmark = pytest.mark.integration

DEPENDENCIES = {"fixture-a": "^1.0.0", "fixture-many": "^1.0.0", "fixture-fresh": "^1.0.0"}
A_TREE = [
    "fixture-a@1.1.0",
    [["@fixture/b@1.1.0", [["@fixture/c@2.0.0", []]]], ["fixture-old@0.1.0", []]],
]
RESOLVED = {
    "fixture-a": "1.1.0",
    "@fixture/b": "1.1.0",
    "@fixture/c": "2.0.0",
    "fixture-old": "0.1.0",
    "fixture-many": "1.199.0",
    "fixture-fresh": "1.1.0",
}
TREE = "[require('fixture-a').tree(), require('fixture-many').id, require('fixture-fresh').id]"
JSON_ACCEPT = {"Accept": "application/json", "Accept-Encoding": "identity"}
CORGI_ACCEPT = {
    "Accept": f"{ABBREVIATED}; q=1.0, application/json; q=0.8, */*",
    "Accept-Encoding": "identity",
}


def need(tool: Tool) -> None:
    """Fail (not skip) with the reason when a client is missing: make test installs them."""
    found = {"npm": jsclients.npm_bin, "pnpm": jsclients.pnpm_bin, "yarn": jsclients.yarn_bin}
    if isinstance(result := found[tool](), jsclients.Missing):
        pytest.fail(f"{tool} is needed for this test: {result.reason}")


def mirror_env(upstream: NpmFixture, **npm: str) -> dict[str, str]:
    """``entrepot serve`` in front of ``upstream``; ``npm`` adds ENTREPOT_NPM__* settings
    (``CACHE__PACKUMENT_TTL="1s"``)."""
    env = {"ENTREPOT_NPM__UPSTREAM": upstream.url + "/"}
    env.update({f"ENTREPOT_NPM__{key}": value for key, value in npm.items()})
    return env


def registry(server: Server) -> str:
    return server.url + "/npm/"


def tarballs_stored(server: Server) -> set[str]:
    """The tarballs in the mirror's data folder, as ``name@version``."""
    found = set()
    for path in (server.data_dir / "npm").rglob("*.tgz"):
        rel = path.relative_to(server.data_dir / "npm").parts
        name = "/".join(rel[: rel.index("-")])
        found.add(f"{name}@{path.name.removesuffix('.tgz')}")
    return found


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NpmFixture]:
    need("npm")  # the fixture packs its tarballs with npm
    with running_npm_fixture(tmp_path_factory.mktemp("upstream")) as fixture:
        yield fixture


@pytest.fixture(scope="module")
def mirror(upstream: NpmFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared mirror the clients install through (default settings)."""
    with running_server(tmp_path_factory.mktemp("mirror"), env=mirror_env(upstream)) as server:
        yield server


@pytest.fixture
def cold_mirror(upstream: NpmFixture, tmp_path: Path) -> Iterator[Server]:
    """A mirror with nothing cached, for request counts."""
    with running_server(tmp_path, env=mirror_env(upstream), name="cold") as server:
        upstream.reset_counts()
        yield server


def user(tmp_path: Path, server: Server, name: str) -> JsClient:
    return JsClient(tmp_path / name, registry(server))


def assert_tree(client: JsClient, tool: Tool, project: Path, *, fresh: str = "1.1.0") -> None:
    assert client.node(tool, TREE, cwd=project) == [
        A_TREE,
        "fixture-many@1.199.0",
        f"fixture-fresh@{fresh}",
    ]


def assert_mirror_url(server: Server, name: str, version: str, url: str | None) -> None:
    basename = name.rsplit("/", 1)[-1]
    assert url == f"{registry(server)}{name}/-/{basename}-{version}.tgz"


# ---------------------------------------------------------------------------------------------
# 1. The real clients install through the mirror


def test_npm_install_then_ci_through_the_mirror(
    tmp_path: Path, upstream: NpmFixture, mirror: Server
) -> None:
    need("npm")
    first = user(tmp_path, mirror, "first")
    project = first.new_project(DEPENDENCIES)
    first.run("npm", "install", cwd=project)
    assert_tree(first, "npm", project)
    locked = npm_lock(project)
    assert {entry.name: entry.version for entry in locked.values()} == RESOLVED
    for entry in locked.values():
        assert entry.integrity == upstream.integrity(entry.name, entry.version), entry
        assert_mirror_url(mirror, entry.name, entry.version, entry.resolved)
    assert (locked["node_modules/fixture-old"].integrity or "").startswith("sha1-")

    second = user(tmp_path, mirror, "second")
    copy = second.new_project(DEPENDENCIES)
    (copy / "package-lock.json").write_bytes((project / "package-lock.json").read_bytes())
    second.run("npm", "ci", cwd=copy)
    assert_tree(second, "npm", copy)
    assert npm_lock(copy) == locked
    assert tarballs_stored(mirror) >= {f"{n}@{v}" for n, v in RESOLVED.items()}


def test_pnpm_install_through_the_mirror(
    tmp_path: Path, upstream: NpmFixture, mirror: Server
) -> None:
    need("pnpm")
    client = user(tmp_path, mirror, "pnpm-user")
    project = client.new_project(DEPENDENCIES)
    client.run("pnpm", "install", cwd=project)
    assert_tree(client, "pnpm", project)
    locked = pnpm_lock(project)
    assert {entry.name: entry.version for entry in locked.values()} == RESOLVED
    for entry in locked.values():
        assert entry.integrity == upstream.integrity(entry.name, entry.version), entry
        # pnpm keeps no URL when it is the conventional one under the registry
        assert entry.resolved is None, entry


def test_yarn_berry_install_through_the_mirror(
    tmp_path: Path, upstream: NpmFixture, mirror: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("yarn")
    monkeypatch.setenv("YARN_NPM_REGISTRY_SERVER", "http://127.0.0.1:9")
    client = user(tmp_path, mirror, "yarn-user")
    project = client.new_project(DEPENDENCIES)
    client.run("yarn", "install", cwd=project)
    # Yarn 4's one-day age gate reads `time` from the mirror's documents, as from the upstream.
    assert_tree(client, "yarn", project, fresh="1.0.0")
    locked = yarn_lock(project)
    assert {entry.name: entry.version for entry in locked.values()} == {
        **RESOLVED,
        "fixture-fresh": "1.0.0",
    }
    assert (project / "yarn.lock").read_text().count("checksum: ") == len(RESOLVED)
    # The same checksums as a direct install: yarn's zips are built from the same bytes.
    direct_home = tmp_path / "yarn-direct"
    direct = JsClient(direct_home, upstream.url)
    direct_project = direct.new_project(DEPENDENCIES)
    direct.run("yarn", "install", cwd=direct_project)
    assert _checksums(project) == _checksums(direct_project)


def _checksums(project: Path) -> dict[str, str]:
    import yaml

    lock = yaml.safe_load((project / "yarn.lock").read_text())
    return {k: v["checksum"] for k, v in lock.items() if k != "__metadata" and "checksum" in v}


# ---------------------------------------------------------------------------------------------
# 2. The upstream gone


def test_installs_work_with_the_upstream_stopped(tmp_path: Path) -> None:
    need("npm")
    need("pnpm")
    fixture = running_npm_fixture(tmp_path)
    upstream = fixture.__enter__()
    try:
        env = mirror_env(upstream, CACHE__PACKUMENT_TTL="1s", CACHE__STALE_WHILE_REVALIDATE="0s")
        with running_server(tmp_path, env=env, name="alone") as server:
            first = user(tmp_path, server, "first")
            project = first.new_project(DEPENDENCIES)
            first.run("npm", "install", cwd=project)
            pnpm_user = user(tmp_path, server, "pnpm-first")
            pnpm_user.run("pnpm", "install", cwd=pnpm_user.new_project(DEPENDENCIES))

            fixture.__exit__(None, None, None)  # the upstream is gone
            with pytest.raises(httpx.TransportError):
                httpx.get(upstream.url + "/fixture-a", timeout=2)

            # npm ci from the lockfile, nothing cached by the user: all from the mirror.
            second = user(tmp_path, server, "second")
            copy = second.new_project(DEPENDENCIES)
            (copy / "package-lock.json").write_bytes((project / "package-lock.json").read_bytes())
            second.run("npm", "ci", cwd=copy)
            assert_tree(second, "npm", copy)

            # Past the TTL, npm install and pnpm resolve from the stored (stale) packuments.
            time.sleep(1.2)
            third = user(tmp_path, server, "third")
            again = third.new_project(DEPENDENCIES)
            third.run("npm", "install", cwd=again)
            assert_tree(third, "npm", again)
            assert npm_lock(again) == npm_lock(project)
            pnpm_again = user(tmp_path, server, "pnpm-second")
            pnpm_project = pnpm_again.new_project(DEPENDENCIES)
            pnpm_again.run("pnpm", "install", cwd=pnpm_project)
            assert_tree(pnpm_again, "pnpm", pnpm_project)

            stale = httpx.get(registry(server) + "fixture-a", headers=JSON_ACCEPT, timeout=10)
            assert stale.status_code == 200
            assert stale.headers["x-entrepot-cache"] == "stale"
            assert stale.headers["warning"].startswith("110")
            assert "127.0.0.1" in stale.headers["x-entrepot-stale-reason"]
            # Never seen: a clear error, not a hang.
            unseen = httpx.get(registry(server) + "left-pad", timeout=30)
            assert unseen.status_code in (502, 503, 504), unseen.text
            assert "left-pad" in unseen.json()["error"]
    finally:
        fixture.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------
# 3. Packuments as served


def test_packuments_full_abbreviated_spellings_and_dist(
    upstream: NpmFixture, mirror: Server
) -> None:
    base = registry(mirror)
    with httpx.Client(base_url=base, timeout=10) as http:
        full = http.get("fixture-a", headers=JSON_ACCEPT)
        assert full.status_code == 200, full.text
        assert full.headers["content-type"] == "application/json"
        assert full.headers["vary"] == "Accept, Accept-Encoding"
        doc = full.json()
        source = upstream.packument("fixture-a")
        assert doc["dist-tags"] == source["dist-tags"]
        assert doc["time"] == source["time"]
        assert doc["readme"] == source["readme"]
        assert set(doc["versions"]) == set(source["versions"])
        for number, version in doc["versions"].items():
            want = source["versions"][number]
            assert version["dist"]["tarball"] == f"{base}fixture-a/-/fixture-a-{number}.tgz"
            assert {k: v for k, v in version["dist"].items() if k != "tarball"} == {
                k: v for k, v in want["dist"].items() if k != "tarball"
            }
            assert {k: v for k, v in version.items() if k != "dist"} == {
                k: v for k, v in want.items() if k != "dist"
            }

        corgi = http.get("fixture-a", headers=CORGI_ACCEPT)
        assert corgi.headers["content-type"] == ABBREVIATED
        assert corgi.headers["vary"] == "Accept, Accept-Encoding"
        short = corgi.json()
        assert short["time"] == source["time"]  # kept for pnpm and yarn's age gates
        assert short["dist-tags"] == source["dist-tags"]
        assert "readme" not in short
        assert short["versions"]["1.1.0"]["dist"]["integrity"] == upstream.integrity(
            "fixture-a", "1.1.0"
        )
        assert corgi.headers["etag"] != full.headers["etag"]

        # Scoped names: three spellings, one document (and one ETag), full and abbreviated.
        for headers in (JSON_ACCEPT, CORGI_ACCEPT):
            answers = [
                http.get(p, headers=headers) for p in ("@fixture/b", "@fixture%2fb", "@fixture%2Fb")
            ]
            assert {a.status_code for a in answers} == {200}
            assert len({a.content for a in answers}) == 1
            assert len({a.headers["etag"] for a in answers}) == 1
        scoped = answers[0].json()
        assert scoped["versions"]["1.0.0"]["dist"]["tarball"] == f"{base}@fixture/b/-/b-1.0.0.tgz"

        # The sha1-only version keeps exactly its shasum, and gets no invented integrity.
        old = http.get("fixture-old", headers=JSON_ACCEPT).json()["versions"]["0.1.0"]["dist"]
        assert "integrity" not in old
        assert old["shasum"] == upstream.shasum("fixture-old", "0.1.0")

        # gzip when asked, with its own ETag; the body is the same document.
        zipped = http.get(
            "fixture-a", headers={"Accept": "application/json", "Accept-Encoding": "gzip"}
        )
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == full.content  # httpx decoded it
        assert zipped.headers["etag"] != full.headers["etag"]
        gz_headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        with http.stream("GET", "fixture-a", headers=gz_headers) as answer:
            wire = b"".join(answer.iter_raw())
        assert gzip.decompress(wire) == full.content


def test_conditional_requests_and_versions(mirror: Server) -> None:
    base = registry(mirror)
    with httpx.Client(base_url=base, timeout=10) as http:
        plain = http.get("@fixture%2fb", headers=JSON_ACCEPT)
        zipped = http.get(
            "@fixture%2fb", headers={"Accept": "application/json", "Accept-Encoding": "gzip"}
        )
        for etag in (plain.headers["etag"], zipped.headers["etag"]):
            for encoding in ("identity", "gzip"):
                again = http.get(
                    "@fixture/b",
                    headers={
                        "If-None-Match": etag,
                        "Accept-Encoding": encoding,
                        "Accept": "application/json",
                    },
                )
                assert again.status_code == 304, (etag, encoding)
                assert again.content == b""
                assert again.headers["vary"] == "Accept, Accept-Encoding"
        since = plain.headers["last-modified"]
        assert (
            http.get("@fixture/b", headers={**JSON_ACCEPT, "If-Modified-Since": since}).status_code
            == 304
        )
        assert (
            http.get(
                "@fixture/b",
                headers={**JSON_ACCEPT, "If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
            ).status_code
            == 200
        )
        other = http.get("@fixture/b", headers={**JSON_ACCEPT, "If-None-Match": '"nope"'})
        assert other.status_code == 200

        one = http.get("@fixture%2fb/1.0.0")
        assert one.status_code == 200
        assert one.json()["_id"] == "@fixture/b@1.0.0"
        assert one.json()["dist"]["tarball"] == f"{base}@fixture/b/-/b-1.0.0.tgz"
        assert http.get("fixture-a/next").json()["version"] == "2.0.0-rc.1"
        assert http.get("fixture-a/latest").json()["version"] == "1.1.0"
        missing = http.get("fixture-a/9.9.9")
        assert missing.status_code == 404
        assert "error" in missing.json()
        assert http.get("no-such-package").status_code == 404

        tarball = http.get("fixture-a/-/fixture-a-1.0.0.tgz")
        assert tarball.status_code == 200
        head = http.head("fixture-a/-/fixture-a-1.0.0.tgz")
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(tarball.content)
        assert "immutable" in head.headers["cache-control"]
        assert http.get("fixture-a/-/fixture-a-9.9.9.tgz").status_code == 404


def test_a_packument_is_fetched_once_within_its_ttl(
    upstream: NpmFixture, cold_mirror: Server
) -> None:
    base = registry(cold_mirror)
    with httpx.Client(base_url=base, timeout=10) as http:
        spellings = ["@fixture/b", "@fixture%2fb", "@fixture%2Fb"]
        for i in range(12):
            headers = [JSON_ACCEPT, CORGI_ACCEPT, {"Accept-Encoding": "gzip"}][i % 3]
            assert http.get(spellings[i % 3], headers=headers).status_code == 200
        assert http.get("@fixture/b/1.1.0").status_code == 200
    assert upstream.count("@fixture/b") == 1

    # ?write=true reaches the upstream every time.
    with httpx.Client(base_url=base, timeout=10) as http:
        for _ in range(3):
            written = http.get("@fixture%2fb?write=true", headers=JSON_ACCEPT)
            assert written.status_code == 200
            assert written.headers["cache-control"] == "no-store"
    assert upstream.count("@fixture/b") == 4


def test_concurrent_cold_requests_make_one_upstream_request(
    upstream: NpmFixture, cold_mirror: Server
) -> None:
    base = registry(cold_mirror)
    upstream.drip("/fixture-many", chunk=4096, interval=0.05)  # a slow upstream: they overlap
    try:

        def get(i: int) -> int:
            headers = JSON_ACCEPT if i % 2 else CORGI_ACCEPT
            return httpx.get(base + "fixture-many", headers=headers, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(get, range(32)))
    finally:
        upstream.heal()
    assert statuses == [200] * 32
    assert upstream.count("fixture-many", kind="packument") == 1
    text = metrics_eventually(
        cold_mirror, 'entrepot_coalesced_requests_total{endpoint="packument"}'
    )
    assert 'entrepot_coalesced_requests_total{endpoint="packument"}' in text


# ---------------------------------------------------------------------------------------------
# 4. A hostile upstream: nothing it breaks is stored or served

BIG = PackageVersion("fixture-big", "1.0.0", dt.datetime(2022, 2, 2, tzinfo=dt.UTC), padding=12000)


@pytest.fixture(scope="module")
def hostile_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NpmFixture]:
    need("npm")
    versions = [*standard_packages(dt.datetime.now(dt.UTC)), BIG]
    with running_npm_fixture(tmp_path_factory.mktemp("hostile"), versions=versions) as fixture:
        yield fixture


@pytest.fixture(scope="module")
def guarded(
    hostile_upstream: NpmFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A mirror with small limits in front of the hostile upstream."""
    env = mirror_env(
        hostile_upstream,
        MAX_TARBALL_BYTES="4096",
        TARBALL_DEADLINE="2s",
        UPSTREAM_TIMEOUT="2s",
        CACHE__ERROR_TTL="100ms",
        CACHE__NEGATIVE_TTL="100ms",
    )
    with running_server(tmp_path_factory.mktemp("guarded"), env=env, name="guarded") as server:
        yield server
    hostile_upstream.heal()


def refused(server: Server, reason: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'entrepot_npm_refused_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_refused(server: Server, reason: str, at_least: float) -> float:
    deadline = time.monotonic() + 5
    while (value := refused(server, reason)) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def test_a_tampered_tarball_is_refused_and_npm_shows_why(
    tmp_path: Path, hostile_upstream: NpmFixture, guarded: Server
) -> None:
    need("npm")
    path = hostile_upstream.tarball_path("@fixture/b", "1.1.0")
    hostile_upstream.tamper(path)
    before = refused(guarded, "integrity")
    try:
        answer = httpx.get(registry(guarded) + "@fixture/b/-/b-1.1.0.tgz", timeout=10)
        assert answer.status_code == 502
        assert answer.headers["content-type"] == "application/json"
        message = answer.json()["error"]
        assert "@fixture/b@1.1.0" in message
        assert "@fixture/b@1.1.0" not in tarballs_stored(guarded)
        assert wait_refused(guarded, "integrity", before + 1) == before + 1

        time.sleep(0.2)  # past the remembered failure
        client = user(tmp_path, guarded, "victim")
        project = client.new_project({"fixture-a": "1.1.0"})
        done = client.run("npm", "install", cwd=project, check=False)
        assert done.returncode != 0
        # npm prints the mirror's JSON error: "npm error 502 Bad Gateway - GET <url> - tarball
        # of @fixture/b@1.1.0: integrity check failed: ... refused and not stored"
        assert "E502" in done.stderr, done.stderr
        assert "@fixture/b@1.1.0: integrity check failed" in done.stderr, done.stderr
        assert "refused and not stored" in done.stderr
        assert not (project / "node_modules/@fixture/b/package.json").exists()
        assert "@fixture/b@1.1.0" not in tarballs_stored(guarded)
    finally:
        hostile_upstream.heal()
    time.sleep(0.2)
    # Healed upstream: the same install now works, nothing bad was kept.
    client = user(tmp_path, guarded, "healed")
    project = client.new_project({"fixture-a": "1.1.0"})
    client.run("npm", "install", cwd=project)
    lock = npm_lock(project)["node_modules/@fixture/b"]
    assert lock.integrity == hostile_upstream.integrity("@fixture/b", "1.1.0")


@pytest.mark.parametrize("full_length", [True, False], ids=["cut", "short"])
def test_a_truncated_tarball_is_refused(
    hostile_upstream: NpmFixture, guarded: Server, full_length: bool
) -> None:
    version = "1.1.0" if full_length else "1.2.0"  # versions no other test fetches
    path = hostile_upstream.tarball_path("fixture-many", version)
    hostile_upstream.truncate(path, full_length=full_length)
    before = refused(guarded, "truncated") + refused(guarded, "integrity")
    try:
        url = registry(guarded) + f"fixture-many/-/fixture-many-{version}.tgz"
        answer = httpx.get(url, timeout=10)
    finally:
        hostile_upstream.heal()
    assert answer.status_code == 502, answer.text
    assert f"fixture-many@{version}" in answer.json()["error"]
    assert f"fixture-many@{version}" not in tarballs_stored(guarded)
    if full_length:
        assert wait_refused(guarded, "truncated", 1) >= 1
    else:  # a consistent short body: only the digest tells
        after = wait_refused(guarded, "integrity", 1) + refused(guarded, "truncated")
        assert after == before + 1
    time.sleep(0.2)  # past the remembered failure: the healed upstream's bytes are served
    assert httpx.get(url, timeout=10).content == hostile_upstream.tarball("fixture-many", version)


def test_an_oversized_tarball_is_refused(hostile_upstream: NpmFixture, guarded: Server) -> None:
    assert len(hostile_upstream.tarball("fixture-big", "1.0.0")) > 4096
    answer = httpx.get(registry(guarded) + "fixture-big/-/fixture-big-1.0.0.tgz", timeout=10)
    assert answer.status_code == 502, answer.text
    assert "4096" in answer.json()["error"]
    assert "fixture-big@1.0.0" not in tarballs_stored(guarded)
    assert wait_refused(guarded, "too_large", 1) >= 1


def test_an_html_page_for_a_packument_is_refused(
    hostile_upstream: NpmFixture, guarded: Server
) -> None:
    hostile_upstream.html("/fixture-fresh")  # a package no other test here asks for
    try:
        answer = httpx.get(registry(guarded) + "fixture-fresh", timeout=10)
    finally:
        hostile_upstream.heal()
    assert answer.status_code == 502
    assert "HTML" in answer.json()["error"]
    assert not (guarded.data_dir / "npm" / "fixture-fresh").exists()


def test_upstream_errors_are_clear_json(hostile_upstream: NpmFixture, guarded: Server) -> None:
    hostile_upstream.fail("/@fixture/ghost", status=500)
    try:
        answer = httpx.get(registry(guarded) + "@fixture%2fghost", timeout=10)
    finally:
        hostile_upstream.heal()
    assert answer.status_code in (502, 503)
    body = answer.json()
    assert "500" in body["error"]
    assert "@fixture/ghost" in body["error"]
    assert body["reason"]


def test_a_dripping_upstream_costs_a_bounded_time(
    hostile_upstream: NpmFixture, guarded: Server
) -> None:
    hostile_upstream.drip(
        hostile_upstream.tarball_path("fixture-many", "1.3.0"), chunk=16, interval=0.5
    )
    began = time.monotonic()
    try:
        answer = httpx.get(registry(guarded) + "fixture-many/-/fixture-many-1.3.0.tgz", timeout=30)
    finally:
        hostile_upstream.heal()
    assert time.monotonic() - began < 6
    assert answer.status_code == 504, answer.text
    assert "npm.tarball_deadline" in answer.json()["error"]
    assert "fixture-many@1.3.0" not in tarballs_stored(guarded)


# ---------------------------------------------------------------------------------------------
# 5. Policy

PRIVATE = '["@corp/*", "@fixture/c"]'
BLOCKED = '["fixture-old", "fixture-many@1.199.0"]'


@pytest.fixture(scope="module")
def strict(upstream: NpmFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = mirror_env(
        upstream, POLICY__PRIVATE=PRIVATE, POLICY__BLOCKED=BLOCKED, POLICY__MIN_RELEASE_AGE="1h"
    )
    with running_server(tmp_path_factory.mktemp("strict"), env=env, name="strict") as server:
        yield server


def test_private_names_are_never_asked_upstream(
    tmp_path: Path, upstream: NpmFixture, strict: Server
) -> None:
    upstream.reset_counts()
    base = registry(strict)
    paths = [
        "@corp/secret",
        "@corp%2fsecret",
        "@corp%2Fsecret",
        "@corp/secret/1.0.0",
        "@corp/secret/latest",
        "@corp/secret/-/secret-1.0.0.tgz",
        "@corp%2fsecret/-/secret-1.0.0.tgz",
        "@fixture/c",  # the upstream has it: still never asked
        "@fixture%2fc/2.0.0",
        "@fixture/c/-/c-2.0.0.tgz",
    ]
    with httpx.Client(base_url=base, timeout=10) as http:
        for path in paths:
            for headers in (JSON_ACCEPT, CORGI_ACCEPT):
                answer = http.get(path, headers=headers)
                assert answer.status_code == 404, (path, answer.text)
                assert "private" in answer.json()["error"], path
    need("npm")
    client = user(tmp_path, strict, "private")
    done = client.run("npm", "install", "@corp/secret", cwd=client.new_project({}), check=False)
    assert done.returncode != 0
    assert "E404" in done.stderr, done.stderr
    assert upstream.count("@corp/secret") == 0
    assert upstream.count("@fixture/c") == 0
    assert upstream.count() == 0


def test_blocked_packages_and_versions(upstream: NpmFixture, strict: Server) -> None:
    upstream.reset_counts()
    with httpx.Client(base_url=registry(strict), timeout=10) as http:
        for path in ("fixture-old", "fixture-old/0.1.0", "fixture-old/-/fixture-old-1.0.0.tgz"):
            answer = http.get(path)
            assert answer.status_code == 403, (path, answer.text)
            assert "blocked" in answer.json()["error"]
        assert upstream.count("fixture-old") == 0

        for headers in (JSON_ACCEPT, CORGI_ACCEPT):
            many = http.get("fixture-many", headers=headers).json()
            assert "1.199.0" not in many["versions"]
            assert len(many["versions"]) == 199
            assert many["dist-tags"]["latest"] == "1.198.0"
        assert http.get("fixture-many/latest").json()["version"] == "1.198.0"
        assert http.get("fixture-many/1.199.0").status_code == 403
        tarball = http.get("fixture-many/-/fixture-many-1.199.0.tgz")
        assert tarball.status_code == 403, tarball.text
        assert "fixture-many@1.199.0" in tarball.json()["error"]
        assert http.get("fixture-many/-/fixture-many-1.198.0.tgz").status_code == 200
    assert upstream.count("fixture-many", kind="tarball") == 1


def test_min_release_age_hides_a_fresh_version(
    tmp_path: Path, upstream: NpmFixture, strict: Server
) -> None:
    with httpx.Client(base_url=registry(strict), timeout=10) as http:
        for headers in (JSON_ACCEPT, CORGI_ACCEPT):
            fresh = http.get("fixture-fresh", headers=headers).json()
            assert set(fresh["versions"]) == {"1.0.0"}
            assert fresh["dist-tags"]["latest"] == "1.0.0"
            assert "1.1.0" not in fresh.get("time", {})
        too_new = http.get("fixture-fresh/-/fixture-fresh-1.1.0.tgz")
        assert too_new.status_code == 404
        assert "minimum release age" in too_new.json()["error"]
        assert http.get("fixture-fresh/latest").json()["version"] == "1.0.0"
    need("npm")
    client = user(tmp_path, strict, "cautious")
    project = client.new_project({})
    client.run("npm", "install", "fixture-fresh", cwd=project)
    assert npm_lock(project)["node_modules/fixture-fresh"].version == "1.0.0"
    assert client.node("npm", "require('fixture-fresh').id", cwd=project) == "fixture-fresh@1.0.0"


def test_min_release_age_exemption(upstream: NpmFixture, tmp_path: Path) -> None:
    env = mirror_env(
        upstream,
        POLICY__MIN_RELEASE_AGE="1h",
        POLICY__MIN_RELEASE_AGE_EXEMPT='["fixture-fr*"]',
    )
    with (
        running_server(tmp_path, env=env, name="exempt") as server,
        httpx.Client(base_url=registry(server), timeout=10) as http,
    ):
        fresh = http.get("fixture-fresh", headers=JSON_ACCEPT).json()
        assert fresh["dist-tags"]["latest"] == "1.1.0"
        assert set(fresh["versions"]) == {"1.0.0", "1.1.0"}
        tarball = http.get("fixture-fresh/-/fixture-fresh-1.1.0.tgz")
        assert tarball.content == upstream.tarball("fixture-fresh", "1.1.0")


# ---------------------------------------------------------------------------------------------
# 6. Passed through to the upstream, never cached


def test_ping_search_and_audit_pass_through(
    tmp_path: Path, upstream: NpmFixture, mirror: Server
) -> None:
    need("npm")
    upstream.reset_counts()
    ping = httpx.get(registry(mirror) + "-/ping?write=true", timeout=10)
    assert ping.status_code == 200
    assert ping.headers.get_list("content-type") == ["application/json"]
    assert ping.headers["cache-control"] == "no-store"

    client = user(tmp_path, mirror, "auditor")
    project = client.new_project({"fixture-a": "1.1.0"})
    client.run("npm", "ping", cwd=project)
    for _ in range(2):
        found = client.run("npm", "search", "--json", "fixture", cwd=project)
        names = {entry["name"] for entry in json.loads(found.stdout)}
        assert {"fixture-a", "@fixture/b", "fixture-many"} <= names
    searches = [seen for seen in upstream.log if seen.path.startswith("/-/v1/search")]
    assert len(searches) == 2  # not cached

    client.run("npm", "install", "--package-lock-only", cwd=project)
    audit = client.run("npm", "audit", "--json", cwd=project, check=False)
    report = json.loads(audit.stdout)
    assert audit.returncode == 1, audit.stderr
    assert report["vulnerabilities"]["fixture-old"]["severity"] == "high"
    assert upstream.audits
    assert upstream.audits[-1]["fixture-old"] == ["0.1.0"]
    assert upstream.count() >= 3
    # the registry answers npm ping itself (it is up even when its upstream is not)
    assert not [seen for seen in upstream.log if seen.path.startswith("/-/ping")]


def test_signing_keys_pass_through_and_signatures_still_verify(
    upstream: NpmFixture, mirror: Server
) -> None:
    """What ``npm audit signatures`` checks, done here: it cannot run on this machine (npm
    first refreshes sigstore's TUF root from the network, before the registry's keys)."""
    upstream.reset_counts()
    with httpx.Client(base_url=registry(mirror), timeout=10) as http:
        answer = http.get("-/npm/v1/keys")
        assert answer.status_code == 200
        assert answer.json() == upstream.keys()
        assert http.get("-/npm/v1/keys").json() == upstream.keys()
        (key,) = answer.json()["keys"]
        public = serialization.load_der_public_key(base64.b64decode(key["key"]))
        assert isinstance(public, ec.EllipticCurvePublicKey)
        checked = 0
        for name in ("fixture-a", "@fixture/b", "fixture-many"):
            for headers in (JSON_ACCEPT, CORGI_ACCEPT):
                document = http.get(names_path(name), headers=headers).json()
                for number, version in document["versions"].items():
                    dist = version["dist"]
                    (signature,) = dist["signatures"]
                    assert signature["keyid"] == key["keyid"]
                    message = f"{name}@{number}:{dist['integrity']}".encode()
                    public.verify(
                        base64.b64decode(signature["sig"]), message, ec.ECDSA(hashes.SHA256())
                    )
                    checked += 1
        assert checked == 2 * (3 + 2 + 200)
    assert upstream.requests["/-/npm/v1/keys"] == 2  # passed through, not cached


def names_path(name: str) -> str:
    return name.replace("/", "%2f")
