"""The mirror as a checksum-database mirror, through the real go command.

A test database (golang.org/x/mod/sumdb's reference server, built from tests/support/
sumdbserver) vouches for the fixture modules. The mirror reaches it directly (its URL in the
mirror's GOSUMDB); the go command knows only the database's key and the mirror, so every
lookup and tile it needs must come through ``<mirror>/sumdb/<name>/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.gocmd import GoClient
from support.modules import FixtureModule, simple, write_module
from support.servers import Server, log_eventually, metrics_eventually, running_server, server_env
from support.sumdb import SumDB, generate_key, running_sumdb

pytestmark = pytest.mark.integration

DB = "sum.test.example"


@dataclass
class World:
    tmp: Path
    upstream_dir: Path
    upstream: Server
    skey: str
    vkey: str
    sumdb: SumDB

    def client(self, mirror: Server, name: str = "user") -> GoClient:
        return GoClient(self.tmp / name, mirror.url, extra_env={"GOSUMDB": self.vkey})

    @contextlib.contextmanager
    def restarted(self, db_name: str, *, seed: int = 0, **env: str) -> Iterator[Server]:
        """The mirror again on its data (``mirror-data``), now in front of a new database
        with the same key: a restarted one (seed 0) or one with another history (a fork)."""
        with (
            running_sumdb(
                self.tmp, source=self.upstream_dir, skey=self.skey, seed=seed, name=db_name
            ) as db,
            running_server(
                self.tmp,
                proxy=self.upstream.url,
                name="mirror",
                data_dir=self.tmp / "mirror-data",
                env={"GOSUMDB": db.gosumdb, **env},
            ) as mirror,
        ):
            yield mirror

    def get_two(self, mirror: Server, name: str = "user") -> GoClient:
        """A user who went through the mirror for two modules (verified, so the mirror holds
        their lookups, the tiles that prove them, and a tree head of 2 records)."""
        go = self.client(mirror, name)
        go.new_module()
        go.run("get", "example.com/hello@v1.1.0", "example.com/multi/v2@v2.0.1")
        return go

    @contextlib.contextmanager
    def mirror(self, name: str = "mirror", **env: str) -> Iterator[Server]:
        with running_server(
            self.tmp,
            proxy=self.upstream.url,
            name=name,
            env={"GOSUMDB": self.sumdb.gosumdb, **env},
        ) as server:
            yield server


TOOL = FixtureModule(
    "example.com/tool",
    "v1.0.0",
    {
        "go.mod": "module example.com/tool\n\ngo 1.21\n",
        "cmd/hi/main.go": 'package main\n\nfunc main() { println("hi") }\n',
    },
)


@pytest.fixture
def world(tmp_path: Path, upstream_dir: Path, upstream_server: Server) -> Iterator[World]:
    write_module(upstream_dir, TOOL)
    skey, vkey = generate_key(DB)
    with running_sumdb(tmp_path, source=upstream_dir, skey=skey, name="sumdb") as db:
        yield World(tmp_path, upstream_dir, upstream_server, skey, vkey, db)


def _sumdb_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "sumdb" in line]


def test_go_verifies_through_the_mirror_with_no_other_route(world: World) -> None:
    with world.mirror() as mirror:
        base = f"{mirror.url}/sumdb/{DB}"
        assert httpx.get(f"{base}/supported").status_code == 200
        assert httpx.get(f"{mirror.url}/sumdb/sum.other.example/supported").status_code == 404

        go = world.client(mirror)
        go.new_module()
        go.run("get", "example.com/hello@v1.1.0")
        go.run("get", "example.com/Upper/Case@v0.1.0", "example.com/multi/v2@v2.0.1")
        sums = (go.home / "work" / "go.sum").read_text()
        assert "example.com/hello v1.1.0 h1:" in sums
        assert "example.com/multi/v2 v2.0.1/go.mod h1:" in sums
        (go.home / "work" / "main.go").write_text(
            'package main\n\nimport _ "example.com/hello"\n\nfunc main() {}\n'
        )
        go.run("mod", "tidy")
        assert "example.com/hello v1.1.0 h1:" in (go.home / "work" / "go.sum").read_text()
        # The go command asked the mirror for lookups and tiles, and the mirror asked the
        # database once per lookup.
        lookup, tile = f"/sumdb/{DB}/lookup/example.com/hello@v1.1.0", f"/sumdb/{DB}/tile/8/0/"
        log = log_eventually(mirror, lookup, tile)
        assert lookup in log
        assert tile in log
        lookups = [p for p in world.sumdb.requests() if p.startswith("/lookup/")]
        assert len(lookups) == len(set(lookups)) == 3

        # Latest: the database's own signed note, byte for byte.
        latest = httpx.get(f"{base}/latest")
        assert latest.status_code == 200
        assert latest.content == httpx.get(f"{world.sumdb.url}/latest").content, (
            latest.text,
            world.sumdb.requests(),
        )

        # go install of a command, in a fresh module cache, verified the same way.
        other = world.client(mirror, "user2")
        other.run("install", "example.com/tool/cmd/hi@v1.0.0", cwd=other.home)
        assert (other.home / "gopath" / "bin" / "hi").exists()
        lookup = "/sumdb/sum.test.example/lookup/example.com/tool@v1.0.0"
        assert lookup in log_eventually(mirror, lookup)


def test_tiles_and_lookups_served_byte_for_byte_and_with_the_database_stopped(
    world: World,
) -> None:
    with world.mirror() as mirror:
        world.get_two(mirror)
        base = f"{mirror.url}/sumdb/{DB}"
        paths = [
            "lookup/example.com/hello@v1.1.0",
            "tile/8/0/000.p/2",
            "tile/8/0/000.p/1",
            "tile/8/data/000.p/2",
        ]
        direct = {p: httpx.get(f"{world.sumdb.url}/{p}") for p in paths}

        def same(p: str, mine: httpx.Response) -> None:
            assert mine.status_code == 200, (p, mine.text)
            assert mine.headers["content-type"] == direct[p].headers["content-type"], p
            if p.startswith("lookup/"):
                # The record byte for byte; the signed tree after it is the one the lookup
                # was first answered with (maybe an older head of the same log, which the
                # go command proves against its own), so it is only checked to verify.
                record, _, tree = mine.content.partition(b"\n\n")
                assert record == direct[p].content.partition(b"\n\n")[0]
                assert tree.startswith(b"go.sum database tree\n")
            else:
                assert mine.content == direct[p].content, p

        for p in paths:
            same(p, httpx.get(f"{base}/{p}"))

        world.sumdb.stop()
        world.upstream.stop()
        for p in paths:
            same(p, httpx.get(f"{base}/{p}"))
        # A fresh client still downloads and verifies what the mirror has seen.
        again = world.client(mirror, "offline")
        again.new_module()
        again.run("get", "example.com/hello@v1.1.0", "example.com/multi/v2@v2.0.1")
        assert httpx.get(f"{base}/latest").status_code == 200  # stale, but served


def test_bad_sumdb_paths_are_clear_errors(world: World) -> None:
    with world.mirror() as mirror:
        base = f"{mirror.url}/sumdb/{DB}"
        for path, status in [
            ("lookup/example.com/hello", 400),
            ("lookup/example.com/hello@latest", 400),
            ("lookup/Example.com/x@v1.0.0", 400),
            ("tile/8/0/0001", 400),
            ("tile/8/0/000.p/0", 400),
            ("tile/3/0/000", 404),
            ("nothing", 404),
            ("lookup/example.com/missing@v1.0.0", 404),
        ]:
            r = httpx.get(f"{base}/{path}")
            assert r.status_code == status, (path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("text/plain")
            assert r.text.strip()
        # A tile beyond every tree the database has signed.
        assert httpx.get(f"{base}/tile/8/0/005").status_code == 404
        assert mirror.proc.poll() is None


def _tamper(world: World, module: str, version: str, *, what: str) -> None:
    """The upstream now serves other bytes than those the database vouches for."""
    bad = world.tmp / "tampered"
    write_module(bad, simple(module, version, body="// tampered\n"))
    escaped = module.lower() if module.islower() else module
    src = bad / escaped / "@v" / f"{version}.{what}"
    dst = world.upstream_dir / escaped / "@v" / f"{version}.{what}"
    if what == "mod":
        dst.write_bytes(dst.read_bytes() + b"// tampered\n")
    else:
        shutil.copy(src, dst)


@pytest.mark.parametrize("what", ["zip", "mod"])
def test_tampered_module_is_refused_and_never_stored(world: World, what: str) -> None:
    # The database learns the true hashes first.
    assert httpx.get(f"{world.sumdb.url}/lookup/example.com/hello@v1.0.0").status_code == 200
    _tamper(world, "example.com/hello", "v1.0.0", what=what)
    with world.mirror() as mirror:
        go = world.client(mirror)
        go.new_module()
        done = go.run("mod", "download", "-json", "example.com/hello@v1.0.0", check=False)
        assert done.returncode != 0
        out = done.stdout + done.stderr
        assert "checksum mismatch" in out, out
        assert "refused" in out, out
        assert "stored" in out, out
        stored = mirror.data_dir / "go" / "example.com" / "hello" / "@v" / f"v1.0.0.{what}"
        assert not stored.exists()
        text = metrics_eventually(
            mirror,
            f'entrepot_sumdb_verification_failures_total{{db="{DB}",reason="{what}_mismatch"}}',
        )
        assert (
            f'reason="{what}_mismatch"}} 1.0' in text or f'reason="{what}_mismatch"}} 2.0' in text
        )
        assert "SECURITY" in mirror.log()
        # The other versions still verify.
        go.run("mod", "download", "example.com/hello@v1.1.0")


def test_fork_fails_closed_survives_restart_and_older_heads_are_refused(
    world: World, tmp_path: Path
) -> None:
    with world.mirror() as mirror:
        world.get_two(mirror)
        base = f"{mirror.url}/sumdb/{DB}"
        assert httpx.get(f"{base}/latest").status_code == 200
        head = (mirror.data_dir / "sumdb" / DB / "head").read_bytes()
        assert head.startswith(b"go.sum database tree\n2\n")

    # The same key, another history: a database that has forked.
    world.sumdb.stop()
    with world.restarted("forked", seed=5, ENTREPOT_GO__SUMDB__LATEST_TTL="0s") as mirror:
        base = f"{mirror.url}/sumdb/{DB}"
        # The stored head is served while the database's new one is checked in the
        # background (stale-while-revalidate); the check finds the fork.
        for _ in range(50):
            r = httpx.get(f"{base}/latest")
            if r.status_code != 200:
                break
            time.sleep(0.1)
        assert r.status_code == 503, r.text
        assert "fork" in r.text
        ready = httpx.get(f"{mirror.url}/readyz")
        assert ready.status_code == 503
        assert "failed closed" in ready.text
        assert "SECURITY" in mirror.log()
        assert (mirror.data_dir / "sumdb" / DB / "fork").exists()
        metrics_eventually(
            mirror, f'entrepot_sumdb_verification_failures_total{{db="{DB}",reason="fork"}}'
        )
        # A module that needs a new lookup is refused; what was verified before still serves.
        fresh = world.client(mirror, "after-fork")
        fresh.new_module()
        done = fresh.run("mod", "download", "example.com/hello@v1.0.0", check=False)
        assert done.returncode != 0
        assert (
            httpx.get(f"{base}/lookup/example.com/hello@v1.1.0").status_code == 200
        )  # cached before the fork

    # Restarted: the fork is remembered, not healed.
    with running_server(
        tmp_path,
        proxy=world.upstream.url,
        name="mirror",
        data_dir=tmp_path / "mirror-data",
        env={"GOSUMDB": world.sumdb.gosumdb},
    ) as mirror:
        assert httpx.get(f"{mirror.url}/sumdb/{DB}/latest").status_code == 503
        assert httpx.get(f"{mirror.url}/readyz").status_code == 503

    # The documented reset clears it: the next head is trusted anew.
    done = _cli("sumdb", "reset", DB, "--data", str(tmp_path / "mirror-data"))
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout
    state = tmp_path / "mirror-data" / "sumdb" / DB
    assert not (state / "head").exists()
    assert not (state / "fork").exists()
    assert not (state / "lookup").exists()
    assert (state / "generation").exists()
    with world.restarted("forked2", seed=5) as mirror:
        assert httpx.get(f"{mirror.url}/sumdb/{DB}/latest").status_code == 200
        assert httpx.get(f"{mirror.url}/readyz").status_code == 200
        fresh = world.client(mirror, "after-reset")
        fresh.new_module()
        fresh.run("mod", "download", "example.com/hello@v1.0.0")


def test_an_older_tree_head_is_never_served(world: World, tmp_path: Path) -> None:
    with world.mirror() as mirror:
        world.get_two(mirror)
        stored = (mirror.data_dir / "sumdb" / DB / "head").read_bytes()
    world.sumdb.stop()
    # The same key and history, restarted empty: its tree (0 records) is older than ours.
    with world.restarted("empty", ENTREPOT_GO__SUMDB__LATEST_TTL="0s") as mirror:
        r = httpx.get(f"{mirror.url}/sumdb/{DB}/latest")
        assert r.status_code == 200
        assert r.content == stored  # ours, never the database's older one
        assert (mirror.data_dir / "sumdb" / DB / "head").read_bytes() == stored


def test_unreachable_database_refuses_by_default_and_can_serve_unverified(world: World) -> None:
    world.sumdb.stop()
    with world.mirror() as mirror:
        go = world.client(mirror)
        go.new_module()
        r = httpx.get(f"{mirror.url}/example.com/hello/@v/v1.0.0.mod")
        assert r.status_code == 503, r.text
        assert "cannot verify" in r.text
        assert not (mirror.data_dir / "go" / "example.com" / "hello" / "@v" / "v1.0.0.mod").exists()
    with world.mirror(name="lenient", ENTREPOT_GO__SUMDB__UNREACHABLE="serve_unverified") as mirror:
        r = httpx.get(f"{mirror.url}/example.com/hello/@v/v1.0.0.mod")
        assert r.status_code == 200
        assert r.headers["x-entrepot-sumdb"] == "unverified"
        for _ in range(30):  # the access log is flushed every second
            lines = [json.loads(x) for x in mirror.log().splitlines() if x.startswith("{")]
            if any(x.get("sumdb") == "unverified" for x in lines):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no access-log line marked unverified:\n{mirror.log()}")
        metrics_eventually(mirror, f'entrepot_sumdb_unverified_total{{db="{DB}"}}')


def test_no_sum_patterns_are_never_sent_to_the_database(world: World) -> None:
    with world.mirror(GONOSUMDB="example.com/hello") as mirror:
        r = httpx.get(f"{mirror.url}/example.com/hello/@v/v1.0.0.zip")
        assert r.status_code == 200
        assert not any("hello" in p for p in world.sumdb.requests())
        r = httpx.get(f"{mirror.url}/example.com/multi/v2/@v/v2.0.1.zip")
        assert r.status_code == 200
        assert any("multi" in p for p in world.sumdb.requests())


def test_cache_from_before_verification_is_checked_by_verify_and_on_its_next_serve(
    world: World, tmp_path: Path
) -> None:
    # The database knows the true bytes; the upstream then served other ones to a mirror
    # that did not verify (before this feature, or with GOSUMDB=off).
    assert httpx.get(f"{world.sumdb.url}/lookup/example.com/hello@v1.0.0").status_code == 200
    _tamper(world, "example.com/hello", "v1.0.0", what="zip")
    data = tmp_path / "legacy-data"
    cached = data / "go" / "example.com" / "hello" / "@v"
    with running_server(
        tmp_path, proxy=world.upstream.url, name="legacy", data_dir=data, env={"GOSUMDB": "off"}
    ) as old:
        for v in ("v1.0.0", "v1.1.0"):
            assert httpx.get(f"{old.url}/example.com/hello/@v/{v}.zip").status_code == 200
            assert httpx.get(f"{old.url}/example.com/hello/@v/{v}.mod").status_code == 200
    (cached / "v1.0.0.ziphash").unlink()  # as a cache from before .ziphash existed

    env = {"GOSUMDB": world.sumdb.gosumdb}
    done = _cli("verify", "--data", str(data), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISMATCH example.com/hello@v1.0.0 zip" in done.stdout
    assert "3 verified, 1 mismatch" in done.stdout
    assert (cached / "v1.0.0.zip").exists()  # reported, not removed, without --remove

    with running_server(
        tmp_path, proxy=world.upstream.url, name="verifying", data_dir=data, env=env
    ) as mirror:
        assert _cached_versions(mirror) == 2  # the start-up walk is done
        r = httpx.get(f"{mirror.url}/example.com/hello/@v/v1.0.0.zip")
        assert r.status_code == 502, r.text
        assert "checksum mismatch" in r.text
        assert not (cached / "v1.0.0.zip").exists()
        assert _cached_versions(mirror, until=1) == 1  # the removal reached /stats/summary
        assert httpx.get(f"{mirror.url}/example.com/hello/@v/v1.1.0.zip").status_code == 200

    done = _cli("verify", "--data", str(data), env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def _cached_versions(mirror: Server, *, until: int | None = None) -> int:
    """/stats/summary's module_version_count, once the start-up walk has written it (and,
    with ``until``, once it says that): answers are kept 5 s per worker."""
    deadline = time.monotonic() + 15
    while True:
        count = httpx.get(f"{mirror.url}/stats/summary").json()["module_version_count"]
        if (count if until is None else count == until) or time.monotonic() > deadline:
            return int(count)
        time.sleep(0.25)


def _inventory(data: Path) -> int:
    """The versions in the statistics inventory of a stopped mirror's data directory."""
    from entrepot.stats.sqlstore import open_store

    async def versions() -> int:
        store = open_store(None, data)
        try:
            return (await store.inventory("go")).versions
        finally:
            await store.close()

    return asyncio.run(versions())


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrepot.cli", *args],
        env=server_env({"GOPROXY": "off", **(env or {})}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_database_name_with_a_path(
    tmp_path: Path, upstream_dir: Path, upstream_server: Server
) -> None:
    name = "sum.test.example/tenant"
    skey, vkey = generate_key(name)
    with (
        running_sumdb(tmp_path, source=upstream_dir, skey=skey, name="sumdb") as db,
        running_server(
            tmp_path, proxy=upstream_server.url, name="mirror", env={"GOSUMDB": db.gosumdb}
        ) as mirror,
    ):
        assert httpx.get(f"{mirror.url}/sumdb/{name}/supported").status_code == 200
        assert httpx.get(f"{mirror.url}/sumdb/sum.test.example/supported").status_code == 404
        go = GoClient(tmp_path / "user", mirror.url, extra_env={"GOSUMDB": vkey})
        go.new_module()
        go.run("get", "example.com/hello@v1.1.0")
        lookup = f"/sumdb/{name}/lookup/example.com/hello@v1.1.0"
        assert lookup in log_eventually(mirror, lookup)
        assert (mirror.data_dir / "sumdb" / "sum.test.example" / "tenant" / "head").exists()


def test_verify_reports_and_removes_versions_the_database_does_not_know(
    world: World, tmp_path: Path
) -> None:
    data = tmp_path / "legacy-data"
    cached = data / "go" / "example.com" / "hello" / "@v"
    with running_server(
        tmp_path, proxy=world.upstream.url, name="legacy", data_dir=data, env={"GOSUMDB": "off"}
    ) as old:
        assert httpx.get(f"{old.url}/example.com/hello/@v/v1.0.0.zip").status_code == 200
    # A database that never heard of example.com/hello (its source holds another module).
    other_source = tmp_path / "other-source"
    write_module(other_source, simple("example.com/unrelated", "v1.0.0"))
    skey, _ = generate_key(DB)
    with running_sumdb(tmp_path, source=other_source, skey=skey, name="other-db") as db:
        env = {"GOSUMDB": db.gosumdb}
        done = _cli("verify", "--data", str(data), env=env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "NOT IN DATABASE example.com/hello@v1.0.0 zip" in done.stdout
        assert (cached / "v1.0.0.zip").exists()
        assert _inventory(data) == 1
        done = _cli("verify", "--data", str(data), "--remove", env=env)
        assert done.returncode == 1
        assert not (cached / "v1.0.0.zip").exists()
        assert not (cached / "v1.0.0.ziphash").exists()
        assert _inventory(data) == 0  # and out of /stats/summary
        assert "warning" not in done.stderr, done.stderr
