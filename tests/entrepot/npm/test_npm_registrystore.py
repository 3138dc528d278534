"""The private registry's metadata store (entrepot.npm.registrystore) on SQLite and on a real
PostgreSQL (tests/support/postgres.py), as the statistics store is tested: the rules (a
version number is never reused, rev, owners, tags, unpublish), users and tokens, listings and
search, concurrent writers (engines and processes, as pre-forked workers are), and the costs
(one statement per package read, index searches only, a publish that does not grow with the
version count)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect

from entrepot.errors import ForbiddenError, InvalidRequestError, NotFoundError
from entrepot.npm.integrity import integrity_of
from entrepot.npm.publish import Publish, Update
from entrepot.npm.registrystore import (
    ConflictError,
    PackageRecord,
    RegistryStore,
    open_registry_store,
    versions,
)
from entrepot.sql.engine import create_engine, writing
from entrepot.sql.migrate import head_revision, migrate
from support.postgres import Postgres, fresh_database, required_postgres

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with required_postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """A migrated, empty database: None (the SQLite default in tmp_path) or a PostgreSQL URL."""
    url = None if request.param == "sqlite" else fresh_database(request.getfixturevalue("postgres"))
    migrate(url, tmp_path)
    return url


@pytest.fixture
async def store(db_url: str | None, tmp_path: Path) -> AsyncIterator[RegistryStore]:
    s = open_registry_store(db_url, tmp_path)
    yield s
    await s.close()


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def pub(
    name: str,
    version: str,
    *,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    readme: str | None = None,
    **fields: Any,
) -> Publish:
    """A publish as parse_publish returns it (the tarball's digests computed)."""
    tarball = f"{name}@{version}".encode() * 10
    manifest: dict[str, Any] = {
        "name": name,
        "version": version,
        "description": description if description is not None else f"{name} at {version}",
        "dist": {
            "integrity": integrity_of(tarball),
            "shasum": hashlib.sha1(tarball).hexdigest(),
            "tarball": f"http://mirror.test/{name}/-/{name}-{version}.tgz",
        },
        **fields,
    }
    if readme is not None:
        manifest["readme"] = readme
    return Publish(
        name=name,
        version=version,
        manifest=manifest,
        tags=tags if tags is not None else {"latest": version},
        tarball=tarball,
        integrity=manifest["dist"]["integrity"],
        shasum=manifest["dist"]["shasum"],
        readme=readme,
    )


def key(name: str, version: str) -> str:
    return f"npm/{name}/-/{version}.tgz"


async def publish(
    s: RegistryStore,
    name: str,
    version: str,
    *,
    user: str = "alice",
    minute: int = 0,
    rev: int | None = None,
    **kw: Any,
) -> int:
    return await s.publish(
        pub(name, version, **kw),
        tarball_key=key(name, version),
        size=100,
        user=user,
        now=at(minute),
        rev=rev,
    )


async def stored(s: RegistryStore, name: str) -> PackageRecord:
    record = await s.package(name)
    assert record is not None
    return record


# -- schema ----------------------------------------------------------------------------------------


async def test_migration_makes_the_tables_and_indexes(db_url: str | None, tmp_path: Path) -> None:
    assert head_revision() >= "0004"
    engine = create_engine(db_url, tmp_path)

    def look(conn: Any) -> dict[str, list[str]]:
        i = inspect(conn)
        return {
            t: sorted(ix["name"] for ix in i.get_indexes(t))
            for t in i.get_table_names()
            if t.startswith("npm_")
        }

    async with engine.connect() as conn:
        found = await conn.run_sync(look)
    await engine.dispose()
    assert found == {
        "npm_packages": ["npm_packages_by_modified"],
        "npm_versions": [],
        "npm_tags": [],
        "npm_maintainers": ["npm_maintainers_by_user"],
        "npm_users": [],
        "npm_tokens": ["npm_tokens_by_user"],
        "npm_login_failures": ["npm_login_failures_by_subject", "npm_login_failures_by_time"],
    }


# -- publish ---------------------------------------------------------------------------------------


async def test_first_publish_creates_the_package(store: RegistryStore) -> None:
    await store.create_user("alice", email="alice@example.com", password_hash="h", now=at(0))
    assert await store.package("@corp/tool") is None
    rev = await publish(
        store,
        "@corp/tool",
        "1.0.0",
        minute=1,
        readme="# tool",
        keywords=["cli", "Build"],
        author={"name": "Alice A", "email": "alice@example.com"},
        homepage="https://example.com/tool",
        license="MIT",
        scripts={"test": "true"},
    )
    assert rev == 1
    record = await stored(store, "@corp/tool")
    assert record.rev == 1
    assert record.created == record.modified == at(1)
    assert record.deleted is None
    assert record.dist_tags == {"latest": "1.0.0"}
    assert record.maintainers == (("alice", "alice@example.com"),)
    assert record.readme == "# tool"
    assert record.document == {
        "description": "@corp/tool at 1.0.0",
        "keywords": ["cli", "Build"],
        "author": {"name": "Alice A", "email": "alice@example.com"},
        "homepage": "https://example.com/tool",
        "license": "MIT",
    }
    (v,) = record.versions.values()
    assert v.version == "1.0.0"
    assert v.published == at(1)
    assert v.deprecated is None
    manifest = v.manifest()
    assert "readme" not in manifest  # kept at the document level and per version row
    assert manifest["scripts"] == {"test": "true"}
    assert record.unpublished == {}
    tarball = await store.tarball("@corp/tool", "1.0.0")
    assert tarball is not None
    assert (tarball.key, tarball.size, tarball.published, tarball.unpublished) == (
        key("@corp/tool", "1.0.0"),
        100,
        at(1),
        None,
    )
    assert tarball.integrity == manifest["dist"]["integrity"]
    assert tarball.shasum == manifest["dist"]["shasum"]
    assert await store.tarball("@corp/tool", "9.9.9") is None


async def test_later_publishes_add_versions_and_follow_tags(store: RegistryStore) -> None:
    await publish(store, "pkg", "1.0.0", description="one", minute=1)
    assert await publish(store, "pkg", "2.0.0-beta.1", tags={"beta": "2.0.0-beta.1"}, minute=2) == 2
    record = await stored(store, "pkg")
    assert record.dist_tags == {"beta": "2.0.0-beta.1", "latest": "1.0.0"}
    assert record.document["description"] == "one"  # latest did not move: nor did the fields
    assert await publish(store, "pkg", "1.1.0", description="one-one", minute=5) == 3
    record = await stored(store, "pkg")
    assert record.dist_tags == {"beta": "2.0.0-beta.1", "latest": "1.1.0"}
    assert record.document["description"] == "one-one"
    assert list(record.versions) == ["1.0.0", "2.0.0-beta.1", "1.1.0"]  # publish order
    assert record.modified == at(5)
    # A first publish under another tag only: latest is set all the same.
    await publish(store, "fresh", "0.1.0-rc.1", tags={"next": "0.1.0-rc.1"})
    assert (await stored(store, "fresh")).dist_tags == {
        "latest": "0.1.0-rc.1",
        "next": "0.1.0-rc.1",
    }
    # No tags at all: latest.
    await publish(store, "fresh", "0.1.0", tags={})
    assert (await store.tags("fresh")) == {"latest": "0.1.0", "next": "0.1.0-rc.1"}


async def test_a_version_number_is_published_once(store: RegistryStore) -> None:
    await publish(store, "pkg", "1.2.0")
    await publish(store, "pkg", "1.3.0")
    with pytest.raises(ConflictError, match=r"pkg@1\.2\.0 was already published .* 1\.2\.1"):
        await publish(store, "pkg", "1.2.0")
    await store.update("pkg", Update(removed=("1.2.0",)), now=at(10))
    with pytest.raises(
        ConflictError,
        match=r"pkg@1\.2\.0 was published before .* unpublished on 2026-03-01 12:10 UTC:"
        r" version numbers are never reused; publish e\.g\. 1\.2\.1",
    ):
        await publish(store, "pkg", "1.2.0")
    record = await stored(store, "pkg")
    assert record.rev == 3  # two publishes and the unpublish; the refusals wrote nothing
    assert list(record.versions) == ["1.3.0"]
    assert record.unpublished == {"1.2.0": at(10)}


async def test_only_maintainers_publish_over_a_package(store: RegistryStore) -> None:
    await publish(store, "pkg", "1.0.0", user="alice")
    with pytest.raises(
        ForbiddenError, match=r"bob is not a maintainer of pkg \(maintainers: alice\)"
    ):
        await publish(store, "pkg", "1.0.1", user="bob")
    await store.update(
        "pkg", Update(maintainers=(("alice", "a@x"), ("bob", "b@x"))), now=at(1), rev=1
    )
    assert await publish(store, "pkg", "1.0.1", user="bob") == 3
    assert (await stored(store, "pkg")).maintainers == (("alice", "a@x"), ("bob", "b@x"))


async def test_a_stale_rev_writes_nothing(store: RegistryStore) -> None:
    await publish(store, "pkg", "1.0.0")
    await publish(store, "pkg", "1.1.0")
    stale = r"the document of pkg changed since you read it \(rev 1, now 2\): read it again"
    with pytest.raises(ConflictError, match=stale):
        await publish(store, "pkg", "1.2.0", rev=1)
    with pytest.raises(ConflictError, match=stale):
        await store.update("pkg", Update(deprecated={"1.0.0": "old"}), now=at(1), rev=1)
    with pytest.raises(ConflictError, match=stale):
        await store.set_tag("pkg", "next", "1.0.0", now=at(1), rev=1)
    with pytest.raises(ConflictError, match=stale):
        await store.unpublish_all("pkg", now=at(1), rev=1)
    record = await stored(store, "pkg")
    assert (record.rev, list(record.versions), record.dist_tags) == (
        2,
        ["1.0.0", "1.1.0"],
        {"latest": "1.1.0"},
    )
    assert record.versions["1.0.0"].deprecated is None
    assert await publish(store, "pkg", "1.2.0", rev=2) == 3
    # Nothing to change: no write, the rev stays.
    assert (await store.update("pkg", Update(), now=at(2), rev=3)).rev == 3


# -- dist-tags -------------------------------------------------------------------------------------


async def test_dist_tags(store: RegistryStore) -> None:
    await publish(store, "pkg", "1.0.0", description="first")
    await publish(store, "pkg", "2.0.0", description="second")
    assert await store.set_tag("pkg", "legacy", "1.0.0", now=at(1)) == 3
    assert await store.tags("pkg") == {"latest": "2.0.0", "legacy": "1.0.0"}
    # latest moved back: the document's fields follow it.
    assert await store.set_tag("pkg", "latest", "1.0.0", now=at(2), rev=3) == 4
    record = await stored(store, "pkg")
    assert record.document["description"] == "first"
    assert record.latest == "1.0.0"
    with pytest.raises(NotFoundError, match=r"pkg@3\.0\.0 is not published here"):
        await store.set_tag("pkg", "next", "3.0.0", now=at(3))
    with pytest.raises(InvalidRequestError, match="cannot be a version"):
        await store.set_tag("pkg", "1.x", "1.0.0", now=at(3))
    with pytest.raises(InvalidRequestError, match="latest tag of pkg cannot be removed"):
        await store.remove_tag("pkg", "latest", now=at(3))
    with pytest.raises(NotFoundError, match="pkg has no dist-tag 'nope'"):
        await store.remove_tag("pkg", "nope", now=at(3))
    assert await store.remove_tag("pkg", "legacy", now=at(4)) == 5
    assert await store.tags("pkg") == {"latest": "1.0.0"}
    assert await store.tags("never") is None
    with pytest.raises(NotFoundError, match="never is not published on this registry"):
        await store.set_tag("never", "next", "1.0.0", now=at(4))


# -- updates: deprecate, unpublish, owners ---------------------------------------------------------


async def test_deprecate_and_undo(store: RegistryStore) -> None:
    await publish(store, "pkg", "1.0.0")
    await publish(store, "pkg", "1.1.0")
    result = await store.update(
        "pkg", Update(deprecated={"1.0.0": "use 1.1", "1.1.0": "all old"}), now=at(1), rev=2
    )
    assert (result.rev, result.tarball_keys) == (3, [])
    record = await stored(store, "pkg")
    assert record.deprecations() == {"1.0.0": "use 1.1", "1.1.0": "all old"}
    assert record.versions["1.0.0"].manifest()["deprecated"] == "use 1.1"
    await store.update("pkg", Update(deprecated={"1.1.0": ""}), now=at(2))
    record = await stored(store, "pkg")
    assert record.deprecations() == {"1.0.0": "use 1.1", "1.1.0": ""}
    assert "deprecated" not in record.versions["1.1.0"].manifest()
    assert record.modified == at(2)
    with pytest.raises(NotFoundError, match=r"pkg@9\.9\.9 is not published here"):
        await store.update("pkg", Update(deprecated={"9.9.9": "x"}), now=at(3))


async def test_unpublish_versions_moves_tags(store: RegistryStore) -> None:
    await publish(store, "pkg", "1.0.0", description="one")
    await publish(store, "pkg", "1.1.0", description="one-one")
    await publish(store, "pkg", "2.0.0-rc.1", tags={"next": "2.0.0-rc.1"})
    await publish(store, "pkg", "1.2.0", description="one-two")
    await store.set_tag("pkg", "stable", "1.2.0", now=at(1))
    result = await store.update("pkg", Update(removed=("1.2.0", "2.0.0-rc.1")), now=at(2))
    assert sorted(result.tarball_keys) == [key("pkg", "1.2.0"), key("pkg", "2.0.0-rc.1")]
    record = await stored(store, "pkg")
    # latest moves to the newest remaining release; the other tags on removed versions go.
    assert record.dist_tags == {"latest": "1.1.0"}
    assert record.document["description"] == "one-one"
    assert list(record.versions) == ["1.0.0", "1.1.0"]
    assert record.unpublished == {"1.2.0": at(2), "2.0.0-rc.1": at(2)}
    # npm then deletes the tarball: its key again, as often as asked, and no write.
    for _ in range(2):
        assert await store.remove_version_tarball("pkg", "1.2.0", now=at(3)) == key("pkg", "1.2.0")
    assert (await stored(store, "pkg")).rev == result.rev
    # The DELETE of a live version's tarball unpublishes it.
    assert await store.remove_version_tarball("pkg", "1.1.0", now=at(4)) == key("pkg", "1.1.0")
    record = await stored(store, "pkg")
    assert record.dist_tags == {"latest": "1.0.0"}
    assert record.document["description"] == "one"
    with pytest.raises(NotFoundError, match=r"pkg@7\.0\.0 was never published here"):
        await store.remove_version_tarball("pkg", "7.0.0", now=at(5))
    with pytest.raises(NotFoundError, match=r"pkg@1\.1\.0 is not published here"):
        await store.update("pkg", Update(removed=("1.1.0",)), now=at(5))


async def test_unpublishing_every_version_deletes_the_package(store: RegistryStore) -> None:
    await publish(store, "pkg", "1.0.0")
    result = await store.update("pkg", Update(removed=("1.0.0",)), now=at(1))
    assert result.tarball_keys == [key("pkg", "1.0.0")]
    record = await stored(store, "pkg")
    assert record.deleted == at(1)
    assert (record.versions, record.dist_tags, record.maintainers) == ({}, {}, ())
    assert await store.counts() == (0, 1)


async def test_unpublish_all_and_publish_again(store: RegistryStore) -> None:
    await publish(store, "pkg", "1.0.0", user="alice")
    await publish(store, "pkg", "1.1.0", user="alice", tags={"beta": "1.1.0"})
    await publish(store, "other", "1.0.0", user="alice")
    assert await store.counts() == (2, 0)
    result = await store.unpublish_all("pkg", now=at(5), rev=2)
    assert result.rev == 3
    assert sorted(result.tarball_keys) == [key("pkg", "1.0.0"), key("pkg", "1.1.0")]
    record = await stored(store, "pkg")
    assert record.deleted == at(5)
    assert (record.versions, record.dist_tags, record.maintainers) == ({}, {}, ())
    assert record.unpublished == {"1.0.0": at(5), "1.1.0": at(5)}
    assert await store.tags("pkg") is None
    assert await store.counts() == (1, 1)
    assert await store.by_users(["alice"]) == {"alice": ["other"]}
    assert [s.name for s in await store.all_since(0)] == ["other"]
    assert (await store.search("pkg")).total == 0
    with pytest.raises(NotFoundError, match="pkg was unpublished on 2026-03-01 12:05 UTC"):
        await store.update("pkg", Update(deprecated={"1.0.0": "x"}), now=at(6))
    with pytest.raises(NotFoundError):
        await store.unpublish_all("pkg", now=at(6))
    # Anyone may publish the name again, never with the old numbers; rev keeps counting.
    with pytest.raises(ConflictError, match="never reused"):
        await publish(store, "pkg", "1.1.0", user="bob", minute=7)
    assert await publish(store, "pkg", "2.0.0", user="bob", minute=8) == 4
    record = await stored(store, "pkg")
    assert record.deleted is None
    assert record.created == at(8)
    assert record.maintainers == (("bob", ""),)
    assert record.dist_tags == {"latest": "2.0.0"}
    assert list(record.versions) == ["2.0.0"]
    assert set(record.unpublished) == {"1.0.0", "1.1.0"}
    assert await store.counts() == (2, 0)


async def test_owners(store: RegistryStore) -> None:
    await publish(store, "a", "1.0.0", user="alice")
    await publish(store, "b", "1.0.0", user="alice")
    await publish(store, "c", "1.0.0", user="bob")
    await store.update("b", Update(maintainers=(("bob", "b@x"), ("alice", "a@x"))), now=at(1))
    assert (await stored(store, "b")).maintainers == (("bob", "b@x"), ("alice", "a@x"))
    assert await store.by_users(["alice", "bob", "carol", "alice"]) == {
        "alice": ["a", "b"],
        "bob": ["b", "c"],
        "carol": [],
    }
    with pytest.raises(InvalidRequestError, match="at least one maintainer"):
        await store.update("a", Update(maintainers=()), now=at(2))


# -- users and tokens ------------------------------------------------------------------------------


async def test_users(store: RegistryStore) -> None:
    created = await store.create_user(
        "alice", email="a@example.com", password_hash="scrypt$1", now=at(0), roles=["x"]
    )
    assert (created.rev, created.admin, created.roles, created.profile) == (1, False, ("x",), {})
    assert await store.user("alice") == created
    assert await store.user("nobody") is None
    with pytest.raises(ConflictError, match="the user alice already exists"):
        await store.create_user("alice", email="b@example.com", password_hash="h", now=at(1))
    changed = await store.update_user(
        "alice", now=at(2), rev=1, email="new@example.com", profile={"fullname": "Alice"}
    )
    assert (changed.rev, changed.email, changed.profile, changed.updated) == (
        2,
        "new@example.com",
        {"fullname": "Alice"},
        at(2),
    )
    assert (changed.password_hash, changed.created) == ("scrypt$1", at(0))
    assert await store.user("alice") == changed
    with pytest.raises(ConflictError, match=r"rev 1, now 2"):
        await store.update_user("alice", now=at(3), rev=1, email="x@example.com")
    assert await store.set_password("alice", "scrypt$2", now=at(4)) == 3
    promoted = await store.update_user("alice", now=at(5), rev=3, admin=True)
    assert (promoted.rev, promoted.admin, promoted.password_hash) == (4, True, "scrypt$2")
    assert await store.user("alice") == promoted
    with pytest.raises(NotFoundError, match="no user bob"):
        await store.set_password("bob", "h", now=at(5))
    # A first publish records the maintainer's email from the user.
    await publish(store, "pkg", "1.0.0", user="alice")
    assert (await stored(store, "pkg")).maintainers == (("alice", "new@example.com"),)


async def test_tokens(store: RegistryStore) -> None:
    keys = [hashlib.sha512(f"token-{i}".encode()).hexdigest() for i in range(5)]
    for i, k in enumerate(keys):
        await store.create_token(
            k,
            user="alice" if i < 4 else "bob",
            prefix=f"tok{i}00",
            readonly=i == 1,
            cidrs=["10.0.0.0/8"] if i == 2 else [],
            now=at(i),
        )
    found = await store.token(keys[2])
    assert found is not None
    assert (found.user, found.prefix, found.readonly, found.cidrs, found.created) == (
        "alice",
        "tok200",
        False,
        ("10.0.0.0/8",),
        at(2),
    )
    assert await store.token("0" * 128) is None
    listed = await store.tokens("alice")
    assert [t.key for t in listed] == [keys[3], keys[2], keys[1], keys[0]]  # newest first
    assert [t.key for t in await store.tokens("alice", page=1, per_page=3)] == [keys[0]]
    assert [t.readonly for t in listed] == [False, False, True, False]
    with pytest.raises(ConflictError):
        await store.create_token(
            keys[0], user="alice", prefix="x", readonly=False, cidrs=[], now=at(9)
        )
    assert not await store.revoke_token("bob", keys[0])  # not bob's
    assert await store.revoke_token("alice", keys[0])
    assert not await store.revoke_token("alice", keys[0])
    assert await store.token(keys[0]) is None
    assert len(await store.tokens("alice")) == 3


# -- listings and search ---------------------------------------------------------------------------


async def test_all_since(store: RegistryStore) -> None:
    await publish(store, "a", "1.0.0", minute=1, homepage="https://a.example.com")
    await publish(store, "b", "1.0.0", minute=2, user="bob")
    await publish(store, "a", "1.1.0", minute=3, tags={"next": "1.1.0"})
    since = round(at(1).timestamp() * 1000)
    found = await store.all_since(since)
    assert [s.name for s in found] == ["b", "a"]
    b, a = found
    assert a.dist_tags == {"latest": "1.0.0", "next": "1.1.0"}
    assert a.document["homepage"] == "https://a.example.com"
    assert a.maintainers == (("alice", ""),)
    assert (a.created, a.modified) == (at(1), at(3))
    assert b.maintainers == (("bob", ""),)
    assert [s.name for s in await store.all_since(0)] == ["b", "a"]
    assert await store.all_since(round(at(3).timestamp() * 1000)) == []


async def test_search(store: RegistryStore) -> None:
    await publish(store, "react-thing", "1.0.0", description="A thing for React")
    await publish(store, "react", "1.0.0", description="UI", keywords=["ui", "Virtual DOM"])
    await publish(store, "preact", "1.0.0", description="Fast 3kB React alternative")
    await publish(store, "@corp/react-tools", "1.0.0", description="tools", user="bob")
    await publish(
        store, "unrelated", "1.0.0", description="100% nothing", author="Jane Doe <j@x> (u)"
    )
    found = await store.search("React")
    assert found.total == 4
    # Exact name, then names starting with it, then names holding it, then the rest.
    assert [p.name for p in found.packages] == [
        "react",
        "react-thing",
        "@corp/react-tools",
        "preact",
    ]
    assert [p.name for p in (await store.search("react", size=2, offset=1)).packages] == [
        "react-thing",
        "@corp/react-tools",
    ]
    assert (await store.search("react", size=2, offset=1)).total == 4
    assert [p.name for p in (await store.search("react alternative")).packages] == ["preact"]
    assert [p.name for p in (await store.search("", keywords=["virtual dom"])).packages] == [
        "react"
    ]
    assert (await store.search("", keywords=["virtual"])).total == 0  # keywords match whole
    assert [p.name for p in (await store.search("dom")).packages] == ["react"]
    assert [p.name for p in (await store.search("react", maintainer="bob")).packages] == [
        "@corp/react-tools"
    ]
    assert [p.name for p in (await store.search("", author="jane doe")).packages] == ["unrelated"]
    # LIKE's wildcards are text like any other.
    assert [p.name for p in (await store.search("100%")).packages] == ["unrelated"]
    assert (await store.search("_")).total == 0
    assert (await store.search("%")).total == 1
    everything = await store.search("")
    assert (everything.total, len(everything.packages)) == (5, 5)
    hit = (await store.search("preact")).packages[0]
    assert hit.document["description"] == "Fast 3kB React alternative"
    assert hit.dist_tags == {"latest": "1.0.0"}


# -- concurrency -----------------------------------------------------------------------------------


async def test_concurrent_publishes_of_one_version_one_wins(
    db_url: str | None, tmp_path: Path
) -> None:
    """Four engines (four pools, as four workers) publish the same new package and version at
    once, ten times over: each time exactly one wins, the others get ConflictError."""
    stores = [open_registry_store(db_url, tmp_path) for _ in range(4)]
    try:
        for round_ in range(10):
            version = f"1.0.{round_}"
            results = await asyncio.gather(
                *(publish(s, "race", version, minute=round_) for s in stores),
                return_exceptions=True,
            )
            wins = [r for r in results if isinstance(r, int)]
            assert len(wins) == 1, results
            assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, int))
        record = await stored(stores[0], "race")
        assert (record.rev, len(record.versions)) == (10, 10)
    finally:
        for s in stores:
            await s.close()


async def test_fifty_concurrent_publishes_all_land(db_url: str | None, tmp_path: Path) -> None:
    """50 distinct versions of one new package published at once through five engines: all
    present, rev counts 50 writes, and the record is consistent (latest on one of them)."""
    stores = [open_registry_store(db_url, tmp_path) for _ in range(5)]
    try:
        results = await asyncio.gather(
            *(publish(stores[i % 5], "many", f"1.0.{i}", minute=i) for i in range(50))
        )
        assert sorted(results) == list(range(1, 51))
        record = await stored(stores[0], "many")
        assert record.rev == 50
        assert sorted(record.versions) == sorted(f"1.0.{i}" for i in range(50))
        assert record.latest in record.versions
        assert record.maintainers == (("alice", ""),)
    finally:
        for s in stores:
            await s.close()


WORKER = """
import asyncio, sys
from datetime import UTC, datetime
from pathlib import Path
from entrepot.npm.publish import Publish
from entrepot.npm.registrystore import ConflictError, open_registry_store

async def main(url, data, worker):
    s = open_registry_store(url, Path(data))
    outcomes = []
    for i in range(10):
        for version in (f"2.{worker}.{i}", f"3.0.{i}"):  # its own, then one all race for
            manifest = {"name": "proc", "version": version, "dist": {}}
            p = Publish("proc", version, manifest, {"latest": version}, b"t", "sha512-x", "0")
            try:
                await s.publish(p, tarball_key=version, size=1, user="alice",
                                now=datetime.now(UTC))
                outcomes.append("won" if version.startswith("3.") else "own")
            except ConflictError:
                outcomes.append("lost")
    await s.close()
    print(" ".join(outcomes))

url = None if sys.argv[1] == "-" else sys.argv[1]
asyncio.run(main(url, sys.argv[2], int(sys.argv[3])))
"""


async def test_worker_processes_publish_at_once(db_url: str | None, tmp_path: Path) -> None:
    """Four processes (pre-forked workers) each publish ten versions of their own and race
    for ten shared ones on one package: their own all land, each shared one once."""
    await publish(open_store := open_registry_store(db_url, tmp_path), "proc", "0.0.1")
    await open_store.close()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            db_url or "-",
            str(tmp_path),
            str(w),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for w in range(4)
    ]
    outputs = [await p.communicate() for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    outcomes = [word for out, _ in outputs for word in out.decode().split()]
    assert outcomes.count("own") == 40
    assert outcomes.count("won") == 10
    assert outcomes.count("lost") == 30
    s = open_registry_store(db_url, tmp_path)
    record = await stored(s, "proc")
    await s.close()
    assert len(record.versions) == 51
    assert record.rev == 51


# -- costs -----------------------------------------------------------------------------------------


async def _bulk_versions(db_url: str | None, tmp_path: Path, name: str, count: int) -> None:
    """``count`` versions of an existing package written directly (publishing them one by
    one would take the test's time, not show the store's)."""
    # About the size of a real manifest (1 KB: dependencies, scripts, dist) and readme.
    manifest = pub(
        name,
        "0.0.0",
        dependencies={f"dependency-{i}": f"^{i}.0.0" for i in range(30)},
        scripts={"test": "node --test", "build": "tsc -p ."},
    ).manifest
    readme = "# A readme\n\n" + "Some words about the package. " * 150
    rows = [
        {
            "package": name,
            "version": f"0.{i // 100}.{i % 100}",
            "manifest": json.dumps({**manifest, "version": f"0.{i // 100}.{i % 100}"}),
            "readme": readme,
            "published": i,
            "unpublished": None,
            "tarball_key": f"k{i}",
            "size": 1,
            "integrity": "sha512-x",
            "shasum": "0" * 40,
            "deprecated": None,
        }
        for i in range(count)
    ]
    engine = create_engine(db_url, tmp_path)
    async with writing(engine) as conn:
        await conn.execute(versions.insert(), rows)
    await engine.dispose()


def _statements(s: RegistryStore) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    @event.listens_for(s.engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")):
            seen.append((statement, params))

    return seen


async def test_costs_do_not_grow_with_versions(
    store: RegistryStore, db_url: str | None, tmp_path: Path
) -> None:
    """A package of 3,000 versions (1 KB manifests, 4.5 KB readmes) reads in one statement
    (about 30 ms on SQLite and PostgreSQL here: 3 MB of manifests), and a publish to it runs
    the same statements, in about the time, as a publish to a package of one version."""
    await publish(store, "small", "1.0.0")
    await publish(store, "big", "1.0.0")
    await _bulk_versions(db_url, tmp_path, "big", 3000)
    seen = _statements(store)
    record = await stored(store, "big")
    assert len(record.versions) == 3001
    assert len(seen) == 1
    reads = []
    for _ in range(10):
        start = time.perf_counter()
        await store.package("big")
        reads.append(time.perf_counter() - start)

    async def publishes(name: str) -> tuple[float, int]:
        times = []
        seen.clear()
        for i in range(10):
            start = time.perf_counter()
            await publish(store, name, f"2.0.{i}")
            times.append(time.perf_counter() - start)
        return statistics.median(times), len(seen)

    small, small_statements = await publishes("small")
    big, big_statements = await publishes("big")
    read = statistics.median(reads)
    print(
        f"\n{store._dialect}: package() of 3,001 versions {read * 1000:.1f} ms;"
        f" publish median {small * 1000:.1f} ms (1 version) vs {big * 1000:.1f} ms (3,001)"
    )
    assert small_statements == big_statements
    assert big < small * 3 + 0.005
    assert read < 0.5  # ~30 ms; bounded generously for a loaded CI machine


async def test_sqlite_reads_search_indexes(tmp_path: Path) -> None:
    """On SQLite, every lookup (package, tags, token, a user's tokens, by-user, all-since)
    is planned as searches of a primary key or index, never a table scan."""
    await asyncio.to_thread(migrate, None, tmp_path)
    s = open_registry_store(None, tmp_path)
    for i in range(20):
        await publish(s, f"p{i}", "1.0.0", minute=i)
    await s.create_token("k" * 128, user="alice", prefix="p", readonly=False, cidrs=[], now=at(0))
    seen = _statements(s)
    await s.package("p1")
    await s.tags("p1")
    await s.token("k" * 128)
    await s.tokens("alice")
    await s.by_users(["alice"])
    await s.all_since(round(at(18).timestamp() * 1000))
    await s.user("alice")
    await s.close()
    assert len(seen) == 7
    db = sqlite3.connect(tmp_path / "entrepot.db")
    for statement, params in seen:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", params)]
        reads = [p for p in plan if p.startswith(("SCAN", "SEARCH")) and p != "SCAN CONSTANT ROW"]
        assert reads, plan
        for step in reads:
            assert step.startswith("SEARCH "), (statement, plan)
            assert " USING " in step, (statement, plan)
    db.close()


async def test_a_token_is_read_with_its_owner_in_one_query(store: RegistryStore) -> None:
    await store.create_user("carol", email="c@example.com", password_hash="h", now=at(0))
    keys = {u: hashlib.sha512(u.encode()).hexdigest() for u in ("carol", "ghost")}
    for user, key in keys.items():
        await store.create_token(key, user=user, prefix="p", readonly=True, cidrs=[], now=at(1))
    found = await store.token_owner(keys["carol"])
    assert found == (await store.token(keys["carol"]), False)
    await store.update_user("carol", now=at(2), admin=True)
    assert (await store.token_owner(keys["carol"]) or (None, None))[1] is True
    # a token whose user is gone: the token, and None for the owner
    ghost = await store.token_owner(keys["ghost"])
    assert ghost is not None
    assert (ghost[0].user, ghost[1]) == ("ghost", None)
    assert await store.token_owner("0" * 128) is None


async def test_failed_logins_are_kept_per_key_and_forgotten_after_their_window(
    store: RegistryStore,
) -> None:
    def sec(n: int) -> datetime:
        return T0 + timedelta(seconds=n)

    ann, here = ("user", "ann"), ("address", "10.0.0.1")
    for second in (1, 2, 3):
        await store.login_failed([ann, here], now=sec(second), forget_before=sec(0))
    await store.login_failed([("user", "bob"), here], now=sec(4), forget_before=sec(0))
    recent = await store.recent_login_failures([ann, here], since=sec(1), limit=3)
    assert recent == {ann: [sec(3), sec(2)], here: [sec(4), sec(3), sec(2)]}
    await store.login_succeeded("user", "ann")
    recent = await store.recent_login_failures([ann, here], since=sec(0), limit=9)
    assert (len(recent[ann]), len(recent[here])) == (0, 4)  # the address keeps its count
    # a write forgets everyone's failures older than its window
    await store.login_failed([("user", "cy")], now=sec(540), forget_before=sec(4))
    recent = await store.recent_login_failures([here], since=sec(0), limit=9)
    assert recent[here] == [sec(4)]
