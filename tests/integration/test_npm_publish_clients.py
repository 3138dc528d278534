"""The private registry's package writes through the real clients: npm publish (scoped,
unscoped, --tag), install of what was published mixed with mirrored packages, view,
dist-tag, deprecate, unpublish, owner, pnpm publish and yarn npm publish; publish rules;
concurrent publishes through two workers; kill -9 during a publish; and shadowing: a name
the upstream has, once published here, never reaches the upstream again.

Users and tokens are made directly in the server's store (``data_dir/entrepot.db``), and
each client finds its token in its global ``.npmrc`` (``//host:port/npm/:_authToken=``), as
``npm login`` would leave it. One server serves the whole module but the crash test's.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import io
import json
import signal
import sqlite3
import tarfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrepot.npm.auth import hash_password, masked, new_token, token_key
from entrepot.npm.registrystore import open_registry_store
from entrepot.sql.migrate import migrate
from support import jsclients
from support.npmcli import JsClient, Tool, npm_lock
from support.npmfixture import NpmFixture, running_npm_fixture
from support.servers import Server, running_server

pytestmark = pytest.mark.integration

RULES = json.dumps(
    [
        {"packages": ["@locked/*"], "allow": "nobody"},
        {"packages": ["@team/*"], "allow": "users", "users": ["alice"]},
        {"packages": ["*"]},
    ]
)
JSON_ACCEPT = {"Accept": "application/json", "Accept-Encoding": "identity"}


def need(tool: Tool) -> None:
    found = {"npm": jsclients.npm_bin, "pnpm": jsclients.pnpm_bin, "yarn": jsclients.yarn_bin}
    if isinstance(result := found[tool](), jsclients.Missing):
        pytest.fail(f"{tool} is needed for this test: {result.reason}")


def add_user(data_dir: Path, name: str) -> str:
    """A user with a token, written in the server's store; the token."""

    async def create() -> str:
        store = open_registry_store(None, data_dir)
        now = datetime.now(UTC)
        try:
            await store.create_user(
                name,
                email=f"{name}@example.test",
                password_hash=hash_password(f"pw-{name}", n=1 << 10),
                now=now,
            )
            token = new_token()
            await store.create_token(
                token_key(token), user=name, prefix=masked(token), readonly=False, cidrs=[], now=now
            )
            return token
        finally:
            await store.close()

    migrate(None, data_dir)
    return asyncio.run(create())


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NpmFixture]:
    need("npm")
    with running_npm_fixture(tmp_path_factory.mktemp("upstream")) as fixture:
        yield fixture


@pytest.fixture(scope="module")
def server(upstream: NpmFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "ENTREPOT_NPM__UPSTREAM": upstream.url + "/",
        "ENTREPOT_NPM__REGISTRY__PUBLISH": RULES,
        "ENTREPOT_STATS__FLUSH_INTERVAL": "1s",
    }
    with running_server(tmp_path_factory.mktemp("registry"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def tokens(server: Server) -> dict[str, str]:
    return {name: add_user(server.data_dir, name) for name in ("alice", "bob")}


def registry(server: Server) -> str:
    return server.url + "/npm/"


def client(tmp: Path, server: Server, token: str, name: str) -> JsClient:
    """An npm user holding ``token`` for the registry, as ``npm login`` leaves it."""
    user = JsClient(tmp / name, registry(server))
    user.home.mkdir(parents=True, exist_ok=True)
    nerf = registry(server).removeprefix("http:")
    (user.home / ".npmrc-global").write_text(f"{nerf}:_authToken={token}\n")
    return user


def package(
    root: Path, name: str, version: str, *, deps: dict[str, str] | None = None, extra: str = ""
) -> Path:
    """A package folder to publish: index.js says who it is and requires its dependencies."""
    folder = root / f"{name.replace('/', '+')}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": name,
        "version": version,
        "description": f"{name} for tests",
        "main": "index.js",
        "keywords": ["entrepot-test"],
        "license": "MIT",
        "dependencies": deps or {},
    }
    (folder / "package.json").write_text(json.dumps(manifest, indent=2))
    (folder / "index.js").write_text(
        f"exports.id = {json.dumps(f'{name}@{version}')};\n"
        + "".join(f"exports[{json.dumps(d)}] = require({json.dumps(d)}).id;\n" for d in deps or {})
        + extra
    )
    (folder / "README.md").write_text(f"# {name}\n")
    return folder


def doc(server: Server, name: str, *, write: bool = False) -> httpx.Response:
    query = "?write=true" if write else ""
    return httpx.get(f"{registry(server)}{name}{query}", headers=JSON_ACCEPT, timeout=10)


def npm_json(user: JsClient, cwd: Path, *args: str) -> Any:
    done = user.run("npm", *args, "--json", cwd=cwd)
    return json.loads(done.stdout) if done.stdout.strip() else None


# -- publish, install, view ---------------------------------------------------------------------


def test_publish_then_install_beside_mirrored_packages(
    server: Server, tokens: dict[str, str], tmp_path: Path
) -> None:
    alice = client(tmp_path, server, tokens["alice"], "alice")
    lib = package(tmp_path, "@corp/lib", "1.0.0", deps={"fixture-a": "^1.0.0"})
    alice.run("npm", "publish", cwd=lib)
    tool = package(tmp_path, "entrepot-tool", "1.0.0", deps={"@corp/lib": "^1.0.0"})
    alice.run("npm", "publish", cwd=tool)
    beta = package(tmp_path, "@corp/lib", "2.0.0-beta.1")
    alice.run("npm", "publish", "--tag", "beta", cwd=beta)

    view = npm_json(alice, tmp_path, "view", "@corp/lib")
    assert view["dist-tags"] == {"latest": "1.0.0", "beta": "2.0.0-beta.1"}
    assert view["versions"] == ["1.0.0", "2.0.0-beta.1"]
    assert view["maintainers"][0].startswith("alice")
    assert view["dist"]["tarball"] == f"{registry(server)}@corp/lib/-/lib-1.0.0.tgz"
    full = doc(server, "@corp%2flib").json()
    assert full["_rev"].startswith("2-")
    assert set(full["time"]) == {"created", "modified", "1.0.0", "2.0.0-beta.1"}
    assert full["readme"].startswith("# @corp/lib")

    project = alice.new_project({"entrepot-tool": "^1.0.0", "fixture-many": "^1.0.0"})
    alice.run("npm", "install", cwd=project)
    tree = alice.node("npm", "require('entrepot-tool')", cwd=project)
    assert tree == {"id": "entrepot-tool@1.0.0", "@corp/lib": "@corp/lib@1.0.0"}
    lock = npm_lock(project)
    assert lock["node_modules/@corp/lib"].version == "1.0.0"
    assert lock["node_modules/fixture-a"].version == "1.1.0"  # mirrored, through the local one
    assert lock["node_modules/@corp/lib"].resolved.startswith(registry(server))
    # npm checked the integrity the registry computed for the tarball it serves
    tgz = httpx.get(lock["node_modules/@corp/lib"].resolved).content
    digest = base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    assert lock["node_modules/@corp/lib"].integrity == f"sha512-{digest}"

    # The downloads API counts the private packages' tarballs like mirrored ones. Alice's
    # install took them from her npm cache (npm publish put them there); bob's, with a
    # cache of his own, fetches both, and the check above fetched @corp/lib once.
    bob = client(tmp_path, server, tokens["bob"], "bob")
    bob.run("npm", "install", cwd=bob.new_project({"entrepot-tool": "1.0.0"}))

    def point(name: str) -> Any:
        url = f"{registry(server)}downloads/point/last-day/{name}"
        return httpx.get(url, timeout=10).json()

    # Flushed every second; each worker caches an answer for 5 s: asked until both answer.
    deadline = time.monotonic() + 30
    while True:
        counts = [point("entrepot-tool").get("downloads"), point("@corp/lib").get("downloads")]
        if counts == [1, 2] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert counts == [1, 2]


def test_version_numbers_are_never_reused_and_others_cannot_publish_over(
    server: Server, tokens: dict[str, str], tmp_path: Path
) -> None:
    alice = client(tmp_path, server, tokens["alice"], "alice")
    bob = client(tmp_path, server, tokens["bob"], "bob")
    alice.run("npm", "publish", cwd=package(tmp_path, "reuse-me", "1.0.0"))
    again = alice.run(
        "npm", "publish", cwd=package(tmp_path / "b", "reuse-me", "1.0.0"), check=False
    )
    assert again.returncode != 0
    assert "409" in again.stderr or "previously published" in again.stderr, again.stderr
    over = bob.run("npm", "publish", cwd=package(tmp_path, "reuse-me", "1.0.1"), check=False)
    assert over.returncode != 0
    assert "403" in over.stderr, over.stderr
    assert "bob is not a maintainer of reuse-me" in over.stderr
    anonymous = JsClient(tmp_path / "anonymous", registry(server))
    refused = anonymous.run(
        "npm", "publish", cwd=package(tmp_path, "anon-pkg", "1.0.0"), check=False
    )
    assert refused.returncode != 0
    assert "401" in refused.stderr or "ENEEDAUTH" in refused.stderr
    assert doc(server, "anon-pkg").status_code == 404


def test_publish_rules(server: Server, tokens: dict[str, str], tmp_path: Path) -> None:
    alice = client(tmp_path, server, tokens["alice"], "alice")
    bob = client(tmp_path, server, tokens["bob"], "bob")
    locked = alice.run("npm", "publish", cwd=package(tmp_path, "@locked/x", "1.0.0"), check=False)
    assert locked.returncode != 0
    assert "nobody may publish @locked/x" in locked.stderr
    team = bob.run("npm", "publish", cwd=package(tmp_path, "@team/x", "1.0.0"), check=False)
    assert team.returncode != 0
    assert "bob may not publish @team/x" in team.stderr
    alice.run("npm", "publish", cwd=package(tmp_path / "a", "@team/x", "1.0.0"))
    assert doc(server, "@team/x").json()["versions"].keys() == {"1.0.0"}


# -- dist-tags, deprecate, unpublish, owners ----------------------------------------------------


def test_dist_tags_and_deprecate(server: Server, tokens: dict[str, str], tmp_path: Path) -> None:
    alice = client(tmp_path, server, tokens["alice"], "alice")
    for version in ("1.0.0", "1.1.0"):
        alice.run("npm", "publish", cwd=package(tmp_path, "tagged", version))
    alice.run("npm", "dist-tag", "add", "tagged@1.0.0", "stable", cwd=tmp_path)
    listed = alice.run("npm", "dist-tag", "ls", "tagged", cwd=tmp_path).stdout
    assert "stable: 1.0.0" in listed
    assert "latest: 1.1.0" in listed
    assert doc(server, "tagged").json()["dist-tags"] == {"latest": "1.1.0", "stable": "1.0.0"}
    alice.run("npm", "dist-tag", "rm", "tagged", "stable", cwd=tmp_path)
    assert doc(server, "tagged").json()["dist-tags"] == {"latest": "1.1.0"}
    bad = alice.run("npm", "dist-tag", "add", "tagged@9.9.9", "nope", cwd=tmp_path, check=False)
    assert bad.returncode != 0

    alice.run("npm", "deprecate", "tagged@1.0.0", "use 1.1.0", cwd=tmp_path)
    versions = doc(server, "tagged").json()["versions"]
    assert versions["1.0.0"]["deprecated"] == "use 1.1.0"
    assert "deprecated" not in versions["1.1.0"]
    corgi = httpx.get(
        registry(server) + "tagged", headers={"Accept": "application/vnd.npm.install-v1+json"}
    ).json()
    assert corgi["versions"]["1.0.0"]["deprecated"] == "use 1.1.0"
    alice.run("npm", "deprecate", "tagged@1.0.0", "", cwd=tmp_path)
    assert "deprecated" not in doc(server, "tagged").json()["versions"]["1.0.0"]


def test_unpublish_a_version_then_the_package(
    server: Server, tokens: dict[str, str], tmp_path: Path
) -> None:
    alice = client(tmp_path, server, tokens["alice"], "alice")
    for version in ("1.0.0", "1.0.1"):
        alice.run("npm", "publish", cwd=package(tmp_path, "gone-soon", version))
    url = doc(server, "gone-soon").json()["versions"]["1.0.1"]["dist"]["tarball"]
    assert httpx.get(url).status_code == 200
    alice.run("npm", "unpublish", "gone-soon@1.0.1", cwd=tmp_path)
    after = doc(server, "gone-soon").json()
    assert list(after["versions"]) == ["1.0.0"]
    assert after["dist-tags"] == {"latest": "1.0.0"}
    assert httpx.get(url).status_code == 404
    back = alice.run(
        "npm", "publish", cwd=package(tmp_path / "b", "gone-soon", "1.0.1"), check=False
    )
    assert back.returncode != 0
    assert "never reused" in back.stderr, back.stderr

    alice.run("npm", "unpublish", "gone-soon", "--force", cwd=tmp_path)
    assert doc(server, "gone-soon").status_code == 404
    assert doc(server, "gone-soon", write=True).status_code == 404
    assert not list((server.data_dir / "npm-local/gone-soon").glob("*.tgz"))
    # The name can come back, its numbers cannot.
    alice.run("npm", "publish", cwd=package(tmp_path, "gone-soon", "2.0.0"))
    assert list(doc(server, "gone-soon").json()["versions"]) == ["2.0.0"]


def test_owners(server: Server, tokens: dict[str, str], tmp_path: Path) -> None:
    alice = client(tmp_path, server, tokens["alice"], "alice")
    bob = client(tmp_path, server, tokens["bob"], "bob")
    alice.run("npm", "publish", cwd=package(tmp_path, "shared-pkg", "1.0.0"))
    assert "alice" in alice.run("npm", "owner", "ls", "shared-pkg", cwd=tmp_path).stdout
    refused = bob.run("npm", "publish", cwd=package(tmp_path, "shared-pkg", "1.1.0"), check=False)
    assert refused.returncode != 0
    alice.run("npm", "owner", "add", "bob", "shared-pkg", cwd=tmp_path)
    owners = [m["name"] for m in doc(server, "shared-pkg").json()["maintainers"]]
    assert owners == ["alice", "bob"]
    bob.run("npm", "publish", cwd=package(tmp_path / "b", "shared-pkg", "1.1.0"))
    bob.run("npm", "owner", "rm", "alice", "shared-pkg", cwd=tmp_path)
    assert [m["name"] for m in doc(server, "shared-pkg").json()["maintainers"]] == ["bob"]
    denied = alice.run(
        "npm", "dist-tag", "add", "shared-pkg@1.0.0", "old", cwd=tmp_path, check=False
    )
    assert denied.returncode != 0
    assert "403" in denied.stderr


# -- listings and search -----------------------------------------------------------------------


def test_search_and_listings(server: Server, tokens: dict[str, str], tmp_path: Path) -> None:
    alice = client(tmp_path, server, tokens["alice"], "alice")
    bob = client(tmp_path, server, tokens["bob"], "bob")
    alice.run("npm", "publish", cwd=package(tmp_path, "fixture-searchable", "1.0.0"))
    bob.run("npm", "publish", cwd=package(tmp_path, "@corp/bobs", "1.0.0"))
    since = int(time.time() * 1000) - 60_000
    # local packages first, then the upstream's (the fixture matches names holding the text)
    found = npm_json(alice, tmp_path, "search", "fixture")
    names = [f["name"] for f in found]
    assert names[0] == "fixture-searchable"
    assert {"fixture-a", "fixture-many"} <= set(names)
    mine = {f["name"] for f in npm_json(alice, tmp_path, "search", "maintainer:bob")}
    assert "@corp/bobs" in mine
    assert "fixture-searchable" not in mine
    listed = httpx.get(f"{registry(server)}-/all/since?stale=update_after&startkey={since}").json()
    assert {"fixture-searchable", "@corp/bobs"} <= set(listed) - {"_updated"}
    assert listed["@corp/bobs"]["versions"] == {"1.0.0": "latest"}
    assert listed["@corp/bobs"]["maintainers"] == [{"name": "bob", "email": "bob@example.test"}]
    by_user = httpx.get(f"{registry(server)}-/by-user/alice|nobody-here").json()
    assert "fixture-searchable" in by_user["alice"]
    assert "@corp/bobs" not in by_user["alice"]
    assert by_user["nobody-here"] == []


# -- pnpm and yarn ------------------------------------------------------------------------------


def test_pnpm_and_yarn_publish(server: Server, tokens: dict[str, str], tmp_path: Path) -> None:
    need("pnpm")
    need("yarn")
    alice = client(tmp_path, server, tokens["alice"], "alice")
    folder = package(tmp_path, "by-pnpm", "1.0.0")
    alice.run("pnpm", "publish", "--no-git-checks", cwd=folder)
    assert list(doc(server, "by-pnpm").json()["versions"]) == ["1.0.0"]

    folder = package(tmp_path, "@corp/by-yarn", "1.0.0")
    yarn = JsClient(tmp_path / "yarn-user", registry(server))
    yarn.new_project(
        {}, folder=folder, name="@corp/by-yarn", yarn={"npmAuthToken": tokens["alice"]}
    )
    manifest = json.loads((folder / "package.json").read_text())
    manifest.pop("private")
    manifest["version"] = "1.0.0"
    (folder / "package.json").write_text(json.dumps(manifest))
    yarn.run("yarn", "install", cwd=folder)
    yarn.run("yarn", "npm", "publish", cwd=folder)
    assert list(doc(server, "@corp/by-yarn").json()["versions"]) == ["1.0.0"]
    # what yarn published installs through npm
    project = alice.new_project(
        {"@corp/by-yarn": "1.0.0", "by-pnpm": "1.0.0"}, folder=tmp_path / "p"
    )
    alice.run("npm", "install", cwd=project)


# -- shadowing ----------------------------------------------------------------------------------


def test_a_published_name_shadows_the_upstream(
    server: Server, upstream: NpmFixture, tokens: dict[str, str], tmp_path: Path
) -> None:
    assert doc(server, "fixture-old").json()["dist-tags"]["latest"] == "1.0.0"  # mirrored
    alice = client(tmp_path, server, tokens["alice"], "alice")
    alice.run("npm", "publish", cwd=package(tmp_path, "fixture-old", "7.0.0"))
    upstream.reset_counts()
    time.sleep(1.2)  # every worker re-stats a mirrored index within a second
    for _ in range(4):  # both workers
        body = doc(server, "fixture-old").json()
        assert list(body["versions"]) == ["7.0.0"]
        assert doc(server, "fixture-old", write=True).json()["versions"].keys() == {"7.0.0"}
        assert (
            httpx.get(registry(server) + "fixture-old/-/fixture-old-0.1.0.tgz").status_code == 404
        )
    project = alice.new_project({"fixture-old": "^7.0.0"}, folder=tmp_path / "p")
    alice.run("npm", "install", cwd=project)
    assert alice.node("npm", "require('fixture-old').id", cwd=project) == "fixture-old@7.0.0"
    assert upstream.count("fixture-old") == 0


# -- concurrency and crashes --------------------------------------------------------------------


def tarball(name: str, version: str, size: int = 0) -> bytes:
    """A package tarball as npm packs one (package/package.json, and ``size`` bytes of
    incompressible filler)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        files = {
            "package/package.json": json.dumps({"name": name, "version": version}).encode(),
            "package/filler.bin": hashlib.shake_256(version.encode()).digest(size) if size else b"",
        }
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def publish_body(name: str, version: str, data: bytes, base: str) -> bytes:
    """What ``npm publish`` sends."""
    filename = f"{name.rsplit('/', maxsplit=1)[-1]}-{version}.tgz"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    manifest = {
        "name": name,
        "version": version,
        "_id": f"{name}@{version}",
        "dist": {
            "integrity": integrity,
            "shasum": hashlib.sha1(data).hexdigest(),
            "tarball": f"{base}{name}/-/{filename}",
        },
    }
    return json.dumps(
        {
            "_id": name,
            "name": name,
            "dist-tags": {"latest": version},
            "versions": {version: manifest},
            "_attachments": {
                filename: {
                    "content_type": "application/octet-stream",
                    "data": base64.b64encode(data).decode(),
                    "length": len(data),
                }
            },
        }
    ).encode()


def put(base: str, name: str, body: bytes, token: str) -> httpx.Response:
    return httpx.put(
        base + name.replace("/", "%2f"),
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=60,
    )


def test_fifty_concurrent_publishes_and_one_winner(server: Server, tokens: dict[str, str]) -> None:
    base = registry(server)
    name = "@corp/busy"
    bodies = [publish_body(name, f"1.0.{i}", tarball(name, f"1.0.{i}"), base) for i in range(50)]
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda b: put(base, name, b, tokens["alice"]).status_code, bodies))
    assert statuses == [201] * 50
    full = doc(server, "@corp%2fbusy").json()
    assert set(full["versions"]) == {f"1.0.{i}" for i in range(50)}
    assert full["_rev"].startswith("50-")
    assert full["dist-tags"]["latest"] in full["versions"]
    assert set(full["time"]) - {"created", "modified"} == set(full["versions"])
    for version, manifest in full["versions"].items():
        got = httpx.get(manifest["dist"]["tarball"])
        assert got.status_code == 200, version
        digest = base64.b64encode(hashlib.sha512(got.content).digest()).decode()
        assert manifest["dist"]["integrity"] == f"sha512-{digest}"

    same = publish_body(name, "2.0.0", tarball(name, "2.0.0"), base)
    barrier = threading.Barrier(2)

    def racer(_: int) -> int:
        barrier.wait()
        return put(base, name, same, tokens["alice"]).status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(racer, range(2))) == [201, 409]
    assert (
        httpx.get(
            doc(server, "@corp%2fbusy").json()["versions"]["2.0.0"]["dist"]["tarball"]
        ).status_code
        == 200
    )
    keys = list((server.data_dir / "npm-local/@corp/busy").glob("2.0.0-*.tgz"))
    assert len(keys) == 1  # the loser deleted what it wrote


def _version_row(data: Path, name: str, version: str) -> bool:
    try:
        with sqlite3.connect(f"file:{data / 'entrepot.db'}?mode=ro", uri=True, timeout=0.01) as db:
            query = "SELECT 1 FROM npm_versions WHERE package = ? AND version = ?"
            return db.execute(query, (name, version)).fetchone() is not None
    except sqlite3.Error:
        return False


def test_kill_9_during_a_large_publish(upstream: NpmFixture, tmp_path: Path) -> None:
    """The server killed while it takes a 10 MB publish, at three moments: while the body
    arrives, once the tarball blob is written, once the version's row is committed (before
    or while the documents are written). After a restart the version is fully there
    (documents, tarball, the same bytes) or wholly absent; the last one must be there (the
    documents a crash left behind the store are rebuilt at start)."""
    data = tmp_path / "data"
    token = add_user(data, "carol")
    env = {"ENTREPOT_NPM__UPSTREAM": upstream.url + "/"}
    name = "crashy"
    folder = data / "npm-local" / name
    moments = {
        "arriving": lambda version: True,
        "tarball": lambda version: any(folder.glob(f"{version}-*.tgz")),
        "committed": lambda version: _version_row(data, name, version),
    }
    outcomes: dict[str, str] = {}
    for attempt, (moment, reached) in enumerate(moments.items()):
        version = f"1.0.{attempt}"
        blob = tarball(name, version, size=10 << 20)
        with running_server(
            tmp_path, env=env, data_dir=data, args=["--workers", "1"], name=f"k{attempt}"
        ) as killed:
            body = publish_body(name, version, blob, registry(killed))
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                future = pool.submit(put, registry(killed), name, body, token)
                deadline = time.monotonic() + 30
                while not reached(version) and time.monotonic() < deadline:
                    time.sleep(0.001)
                killed.stop(signal.SIGKILL)
                with contextlib.suppress(httpx.HTTPError):
                    future.result()
        with running_server(tmp_path, env=env, data_dir=data, name=f"after{attempt}") as after:
            got = doc(after, name)
            versions = got.json().get("versions", {}) if got.status_code == 200 else {}
            if version in versions:
                tgz = httpx.get(versions[version]["dist"]["tarball"], timeout=30)
                assert tgz.status_code == 200
                assert tgz.content == blob
                outcomes[moment] = "there"
            else:
                outcomes[moment] = "absent"
                tgz_url = f"{registry(after)}{name}/-/{name}-{version}.tgz"
                assert httpx.get(tgz_url).status_code == 404
                assert not _version_row(data, name, version)
    print("kill -9 outcomes:", outcomes)
    assert outcomes["committed"] == "there", outcomes
