"""The npm fixture registry is a registry the real clients accept: no Entrepôt code here.

The mirror's npm tests stand on this: the real npm (install, then ci from its lockfile), pnpm
and yarn Berry install a dependency tree straight from ``support.npmfixture``, each as an
isolated user (``support.npmcli``), and their lockfiles hold exactly the fixture's integrity.
The hostile knobs are checked here too: a tampered tarball makes npm fail with EINTEGRITY.
The clients come from ``python3 tests/support/jsclients.py install`` (make test runs it); a
test whose client is missing fails with the reason.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import jsclients
from support.npmcli import JsClient, Tool, npm_lock, pnpm_lock, yarn_lock
from support.npmfixture import (
    ABBREVIATED,
    NpmFixture,
    Target,
    parse_path,
    running_npm_fixture,
    version_key,
)

pytestmark = pytest.mark.integration

# The project every client installs, and the tree it must resolve (from the fixture's
# index.js: each package's name@version and its dependencies' trees).
DEPENDENCIES = {"fixture-a": "^1.0.0", "fixture-many": "^1.0.0", "fixture-fresh": "^1.0.0"}
A_TREE = [
    "fixture-a@1.1.0",
    [["@fixture/b@1.1.0", [["@fixture/c@2.0.0", []]]], ["fixture-old@0.1.0", []]],
]
RESOLVED = {
    "fixture-a": "1.1.0",
    "@fixture/b": "1.1.0",
    "@fixture/c": "2.0.0",
    "fixture-old": "0.1.0",  # the sha1-only version
    "fixture-many": "1.199.0",
    "fixture-fresh": "1.1.0",  # published a minute ago
}
TREE = "[require('fixture-a').tree(), require('fixture-many').id, require('fixture-fresh').id]"


def need(tool: Tool) -> None:
    """Fail (not skip) with the reason when a client is missing: make test installs them."""
    found = {"npm": jsclients.npm_bin, "pnpm": jsclients.pnpm_bin, "yarn": jsclients.yarn_bin}
    if isinstance(result := found[tool](), jsclients.Missing):
        pytest.fail(f"{tool} is needed for this test: {result.reason}")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[NpmFixture]:
    need("npm")  # the fixture packs its tarballs with npm
    with running_npm_fixture(tmp_path) as fixture:
        yield fixture


def client(tmp_path: Path, upstream: NpmFixture, user: str) -> JsClient:
    return JsClient(tmp_path / user, upstream.url)


# ---------------------------------------------------------------------------------------------
# The documents, read with a plain HTTP client


def test_scoped_names_in_every_spelling_name_the_same_thing() -> None:
    assert parse_path("/@fixture%2fb") == Target("packument", "@fixture/b")
    assert parse_path("/@fixture%2Fb?write=true") == Target("packument", "@fixture/b")
    assert parse_path("/@fixture/b") == Target("packument", "@fixture/b")
    assert parse_path("/@fixture/b/1.1.0") == Target("manifest", "@fixture/b", "1.1.0")
    assert parse_path("/@fixture%2fb/-/b-1.0.0.tgz") == Target(
        "tarball", "@fixture/b", "b-1.0.0.tgz"
    )
    assert parse_path("/fixture-a/-/fixture-a-1.0.0.tgz") == Target(
        "tarball", "fixture-a", "fixture-a-1.0.0.tgz"
    )
    assert parse_path("/-/ping?write=true") == Target("special", "", "ping")
    assert parse_path("/") is None
    assert parse_path("/@fixture") is None
    assert parse_path("/fixture-a/-/x/y") is None
    ordered = ["1.0.0", "1.2.0-rc.1", "1.2.0-rc.2", "1.2.0-rc.10", "1.2.0", "1.10.0", "2.0.0"]
    assert sorted([*ordered[4:], *ordered[:4]], key=version_key) == ordered


def test_packuments_full_and_abbreviated_with_the_real_tarballs_hashes(
    upstream: NpmFixture,
) -> None:
    started = dt.datetime.now(dt.UTC)
    with httpx.Client(base_url=upstream.url, timeout=10) as http:
        full = http.get("/fixture-a", headers={"Accept": "application/json"})
        assert full.status_code == 200
        assert full.headers["content-type"] == "application/json"
        assert full.headers["content-encoding"] == "gzip"  # httpx asked for it
        assert "Accept" in full.headers["vary"]
        doc = full.json()
        assert doc["_id"] == doc["name"] == "fixture-a"
        assert doc["dist-tags"] == {"latest": "1.1.0", "next": "2.0.0-rc.1"}
        assert set(doc["versions"]) == {"1.0.0", "1.1.0", "2.0.0-rc.1"}
        assert {"created", "modified", "1.0.0", "1.1.0", "2.0.0-rc.1"} <= set(doc["time"])
        assert doc["readme"].startswith("# fixture-a")

        corgi = http.get("/fixture-a", headers={"Accept": f"{ABBREVIATED}; q=1.0, */*"})
        assert corgi.headers["content-type"] == ABBREVIATED
        small = corgi.json()
        assert set(small) == {"name", "modified", "dist-tags", "versions"}
        assert small["versions"]["1.1.0"]["dist"] == doc["versions"]["1.1.0"]["dist"]
        assert "readme" not in small["versions"]["1.1.0"]
        assert corgi.headers["etag"] != full.headers["etag"]

        # Every tarball's dist matches the bytes served at dist.tarball.
        for name in upstream.names:
            document = http.get(f"/{name}").json()
            for number, version in document["versions"].items():
                dist = version["dist"]
                assert dist["tarball"] == upstream.tarball_url(name, number)
                body = http.get(dist["tarball"]).content
                assert body == upstream.tarball(name, number)
                with tarfile.open(fileobj=io.BytesIO(body)) as archive:  # npm pack's own layout
                    assert archive.getmember("package/package.json").isfile()
                assert dist["shasum"] == hashlib.sha1(body).hexdigest()
                if name == "fixture-old" and number == "0.1.0":
                    assert "integrity" not in dist  # only the sha1 shasum, as old versions
                else:
                    sha512 = base64.b64encode(hashlib.sha512(body).digest()).decode()
                    assert dist["integrity"] == f"sha512-{sha512}"
                    assert upstream.integrity(name, number) == dist["integrity"]

        many = http.get("/fixture-many").json()
        assert len(many["versions"]) == 200
        assert many["dist-tags"]["latest"] == "1.199.0"
        fresh = http.get("/fixture-fresh").json()
        published = dt.datetime.fromisoformat(fresh["time"]["1.1.0"].replace("Z", "+00:00"))
        assert dt.timedelta(seconds=30) < started - published < dt.timedelta(minutes=5)
        assert fresh["dist-tags"]["latest"] == "1.1.0"

        by_tag = http.get("/fixture-a/next").json()
        assert by_tag["version"] == "2.0.0-rc.1"
        assert http.get("/@fixture%2Fb/1.0.0").json()["_id"] == "@fixture/b@1.0.0"
        missing = http.get("/no-such-package")
        assert missing.status_code == 404
        assert missing.json() == {"error": "Not found"}
        assert http.get("/fixture-a/9.9.9").status_code == 404
        assert http.get("/fixture-a/-/fixture-a-9.9.9.tgz").status_code == 404


def test_scoped_spellings_etags_and_request_counts(upstream: NpmFixture) -> None:
    with httpx.Client(base_url=upstream.url, timeout=10) as http:
        spellings = ["/@fixture%2fb", "/@fixture%2Fb", "/@fixture/b"]
        answers = [http.get(p, headers={"Accept-Encoding": "identity"}) for p in spellings]
        assert {a.status_code for a in answers} == {200}
        assert len({a.content for a in answers}) == 1
        etag = answers[0].headers["etag"]
        assert etag.startswith('"')  # strong for the identity form
        again = http.get(
            "/@fixture%2fb", headers={"If-None-Match": etag, "Accept-Encoding": "identity"}
        )
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        zipped = http.get("/@fixture/b")
        assert zipped.headers["etag"] == f"W/{etag}"
        assert http.get("/@fixture/b", headers={"If-None-Match": f"W/{etag}"}).status_code == 304
        since = answers[0].headers["last-modified"]
        assert http.get("/@fixture/b", headers={"If-Modified-Since": since}).status_code == 304
        tarball = upstream.tarball_path("@fixture/b", "1.0.0")
        head = http.head(tarball)
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) == len(upstream.tarball("@fixture/b", "1.0.0"))
        tag = http.get(tarball).headers["etag"]
        assert http.get(tarball, headers={"If-None-Match": tag}).status_code == 304

        upstream.set_dist_tag("@fixture/b", "legacy", "1.0.0")  # an upstream change
        changed = http.get("/@fixture/b", headers={"Accept-Encoding": "identity"})
        assert changed.headers["etag"] != etag
        assert changed.json()["dist-tags"]["legacy"] == "1.0.0"

    assert upstream.count("@fixture/b") == 11
    assert upstream.count("@fixture/b", kind="tarball") == 3
    assert upstream.count("@fixture/c") == 0
    assert upstream.requests["/@fixture%2fb"] == 2
    assert upstream.requests["/@fixture%2Fb"] == 1
    upstream.reset_counts()
    assert upstream.count() == 0


def test_hostile_upstream_knobs(upstream: NpmFixture) -> None:
    path = upstream.tarball_path("fixture-a", "1.1.0")
    good = upstream.tarball("fixture-a", "1.1.0")
    with httpx.Client(base_url=upstream.url, timeout=10) as http:
        upstream.tamper(path)
        tampered = http.get("/fixture-a/-/fixture-a-1.1.0.tgz").content
        assert len(tampered) == len(good)
        assert sum(a != b for a, b in zip(tampered, good, strict=True)) == 1
        assert gzip.decompress(tampered) == gzip.decompress(good)  # still unpacks

        upstream.truncate(path, full_length=False)
        short = http.get(path)
        assert short.status_code == 200
        assert short.content == good[: len(good) // 2]

        upstream.truncate(path, keep=100)  # the whole length announced, then cut
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(path)

        upstream.fail("/@fixture%2fb", status=503)  # any spelling names the path
        assert http.get("/@fixture/b").status_code == 503
        assert http.get("/@fixture%2Fb").json() == {"error": "the npm fixture was told to fail"}

        upstream.html(path)
        page = http.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")

        upstream.drip(path, chunk=len(good) // 4 + 1, interval=0.2)
        began = time.monotonic()
        assert http.get(path).content == good
        assert time.monotonic() - began >= 0.6

        upstream.heal()
        assert http.get(path).content == good
        assert http.get("/@fixture/b").status_code == 200
        assert http.put("/fixture-a", content=b"{}").status_code == 405


# ---------------------------------------------------------------------------------------------
# The real clients


def assert_tree(user: JsClient, tool: Tool, project: Path, *, fresh: str = "1.1.0") -> None:
    """What node loads in the project is the tree the fixture's versions resolve to."""
    assert user.node(tool, TREE, cwd=project) == [
        A_TREE,
        "fixture-many@1.199.0",
        f"fixture-fresh@{fresh}",
    ]


def test_npm_install_then_ci_from_its_lockfile(
    tmp_path: Path, upstream: NpmFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("npm")
    # Settings of the person running the tests must not reach the clients.
    leak = tmp_path / "leak"
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_cache", str(leak))
    monkeypatch.setenv("CI", "true")
    first = client(tmp_path, upstream, "first")
    project = first.new_project(DEPENDENCIES)
    first.run("npm", "install", cwd=project)
    assert_tree(first, "npm", project)
    locked = npm_lock(project)
    assert {entry.name: entry.version for entry in locked.values()} == RESOLVED
    for entry in locked.values():
        assert entry.integrity == upstream.integrity(entry.name, entry.version), entry
        assert entry.resolved == upstream.tarball_url(entry.name, entry.version)
    assert (locked["node_modules/fixture-old"].integrity or "").startswith("sha1-")
    assert upstream.count(kind="tarball") == len(RESOLVED)
    # npm asks for the full document (npm >= 10.4), scoped names as %2f.
    assert upstream.requests["/@fixture%2fb"] == 1

    # A second user, nothing cached: `npm ci` installs exactly the lockfile.
    second = client(tmp_path, upstream, "second")
    copy = second.new_project(DEPENDENCIES)
    (copy / "package-lock.json").write_bytes((project / "package-lock.json").read_bytes())
    second.run("npm", "ci", cwd=copy)
    assert_tree(second, "npm", copy)
    assert npm_lock(copy) == locked
    assert upstream.count(kind="tarball") == 2 * len(RESOLVED)
    # Nothing of either user left their own home.
    assert (first.home / ".npm" / "_cacache").is_dir()
    assert not (first.home / ".npm-global").exists()
    assert not leak.exists()


def test_pnpm_install(tmp_path: Path, upstream: NpmFixture) -> None:
    need("pnpm")
    user = client(tmp_path, upstream, "pnpm-user")
    project = user.new_project(DEPENDENCIES)
    user.run("pnpm", "install", cwd=project)
    assert_tree(user, "pnpm", project)
    locked = pnpm_lock(project)
    assert {entry.name: entry.version for entry in locked.values()} == RESOLVED
    for entry in locked.values():
        assert entry.integrity == upstream.integrity(entry.name, entry.version), entry
    # pnpm asks for the abbreviated documents, scoped names as %2F.
    assert any(
        seen.path == "/@fixture%2Fb" and ABBREVIATED in seen.headers.get("accept", "")
        for seen in upstream.log
    )
    assert (user.home / "pnpm-store").is_dir()


def test_yarn_berry_install(
    tmp_path: Path, upstream: NpmFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("yarn")
    # CI=true would make yarn's installs immutable, and YARN_* would override .yarnrc.yml.
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("YARN_NPM_REGISTRY_SERVER", "http://127.0.0.1:9")
    user = client(tmp_path, upstream, "yarn-user")
    project = user.new_project(DEPENDENCIES)
    user.run("yarn", "install", cwd=project)
    # Yarn 4's default npmMinimalAgeGate (1 day) reads the fixture's `time`: the version
    # published a minute ago is passed over for the older one.
    assert_tree(user, "yarn", project, fresh="1.0.0")
    locked = yarn_lock(project)
    assert {entry.name: entry.version for entry in locked.values()} == {
        **RESOLVED,
        "fixture-fresh": "1.0.0",
    }
    lock_text = (project / "yarn.lock").read_text()
    assert lock_text.count("checksum: ") == len(RESOLVED)
    assert list((user.home / "yarn-cache").glob("*.zip"))
    # Yarn builds the scoped tarball URL itself, escaped as %2f.
    assert upstream.requests["/@fixture%2fb/-/b-1.1.0.tgz"] == 1


@pytest.mark.parametrize("fault", ["tamper", "short-body"])
def test_a_tarball_that_is_not_what_the_packument_says_fails_npm_install(
    tmp_path: Path, upstream: NpmFixture, fault: str
) -> None:
    need("npm")
    path = upstream.tarball_path("@fixture/b", "1.1.0")
    if fault == "tamper":
        upstream.tamper(path)
    else:
        upstream.truncate(path, full_length=False)
    user = client(tmp_path, upstream, "victim")
    project = user.new_project({"fixture-a": "1.1.0"})
    done = user.run("npm", "install", cwd=project, check=False)
    assert done.returncode != 0
    assert "EINTEGRITY" in done.stderr, done.stderr
    assert upstream.integrity("@fixture/b", "1.1.0") in done.stderr
    assert not (project / "node_modules" / "@fixture" / "b" / "package.json").exists()
