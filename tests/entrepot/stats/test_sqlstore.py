"""The SQL statistics store on SQLite and on a real PostgreSQL (tests/support/postgres.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect, select, text, update
from sqlalchemy.engine import make_url

from entrepot.config import Settings, load_settings
from entrepot.errors import ConfigError, UnavailableError, redact
from entrepot.sql.engine import create_engine, database_url, reading, writing
from entrepot.sql.migrate import current_revision, head_revision, migrate
from entrepot.stats.sqlstore import (
    SqlStatsStore,
    cache_hosts,
    cached_versions,
    downloads,
    open_store,
    package_days,
    package_windows,
    prepare_stats,
    stats_marks,
    version_totals,
)
from entrepot.stats.store import CountKey, Inventory, Ranked
from support.postgres import SKIP_VARIABLE, Postgres, fresh_database, required_postgres

TABLES = {
    t.name: t
    for t in (
        downloads,
        package_days,
        version_totals,
        cached_versions,
        cache_hosts,
        package_windows,
        stats_marks,
    )
}
D1, D2, D3, D4 = (dt.date(2026, 3, d) for d in (1, 2, 3, 4))


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
async def store(db_url: str | None, tmp_path: Path) -> AsyncIterator[SqlStatsStore]:
    s = open_store(db_url, tmp_path)
    yield s
    await s.close()


async def test_default_is_sqlite_file_in_data_dir(tmp_path: Path) -> None:
    url = database_url(None, tmp_path)
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str(tmp_path / "entrepot.db")
    assert database_url("postgres://u:secret@db.example.com/x", tmp_path).drivername == (
        "postgresql+asyncpg"
    )


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    await asyncio.to_thread(migrate, None, tmp_path)
    engine = create_engine(None, tmp_path)
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 1  # NORMAL
    await engine.dispose()


async def test_two_writers_add_up(db_url: str | None, tmp_path: Path) -> None:
    """Two engines (two pools, as two workers) flush overlapping keys at once, many times:
    every count is added, none overwritten."""
    keys: list[CountKey] = [
        ("go", f"example.com/m{i % 7}", f"v1.0.{i % 3}", D1 + dt.timedelta(days=i % 4))
        for i in range(60)
    ]
    stores = [open_store(db_url, tmp_path), open_store(db_url, tmp_path)]

    async def writer(s: SqlStatsStore, n: int) -> None:
        for round_ in range(15):
            await s.add(dict.fromkeys(keys, n + round_ % 2))

    await asyncio.gather(writer(stores[0], 1), writer(stores[1], 2))
    # Each key got 15 flushes of (1 or 2) and 15 of (2 or 3): 8*1+7*2 + 8*2+7*3 = 59.
    expected_per_key = 59
    distinct = set(keys)
    per_module: dict[str, int] = {}
    for _, module, _, _ in distinct:
        per_module[module] = per_module.get(module, 0) + expected_per_key
    for module, want in per_module.items():
        assert await stores[0].total("go", module) == want
    assert sum(r.count for r in await stores[1].trending("go", days=4, today=D4)) == 59 * len(
        distinct
    )
    for s in stores:
        await s.close()


async def test_counts_answer_exactly(store: SqlStatsStore) -> None:
    await store.add(
        {
            ("go", "example.com/a", "v1.0.0", D1): 5,
            ("go", "example.com/a", "v1.1.0", D1): 3,
            ("go", "example.com/a", "v1.1.0", D3): 2,  # v1.0.0 and v1.1.0 tie at 5
            ("go", "example.com/a", "v0.9.0", D4): 1,
            ("go", "example.com/b", "v2.0.0", D2): 11,
            ("go", "example.com/c", "v1.0.0", D4): 11,  # ties with b
            ("npm", "example.com/a", "1.0.0", D1): 100,  # another ecosystem: never mixed in
            ("go", "example.com/zero", "v1.0.0", D1): 0,  # zero adds nothing
        }
    )
    await store.add({("go", "example.com/a", "v0.9.0", D4): 1})  # additive: now 2

    assert await store.total("go", "example.com/a") == 12
    assert await store.total("go", "example.com/a", "v1.1.0") == 5
    assert await store.total("go", "example.com/a", "v9.9.9") == 0
    assert await store.total("go", "example.com/never") == 0
    assert await store.total("npm", "example.com/a") == 100

    # Inclusive at both ends; days without downloads are absent.
    assert await store.daily("go", "example.com/a", None, first=D1, last=D4) == {
        D1: 8,
        D3: 2,
        D4: 2,
    }
    assert await store.daily("go", "example.com/a", None, first=D2, last=D3) == {D3: 2}
    assert await store.daily("go", "example.com/a", "v1.1.0", first=D1, last=D3) == {D1: 3, D3: 2}
    assert await store.daily("go", "example.com/a", "v1.1.0", first=D2, last=D2) == {}
    assert await store.daily("go", "example.com/zero", None, first=D1, last=D4) == {}

    # Most first, ties by name; limits respected.
    assert await store.top_versions("go", "example.com/a") == [
        Ranked("v1.0.0", 5),
        Ranked("v1.1.0", 5),
        Ranked("v0.9.0", 2),
    ]
    assert await store.top_versions("go", "example.com/a", limit=1) == [Ranked("v1.0.0", 5)]
    assert await store.top_versions("go", "example.com/never") == []

    assert await store.trending("go", days=4, today=D4) == [
        Ranked("example.com/a", 12),
        Ranked("example.com/b", 11),
        Ranked("example.com/c", 11),
    ]
    assert await store.trending("go", days=3, today=D4, limit=2) == [
        Ranked("example.com/b", 11),
        Ranked("example.com/c", 11),
    ]
    assert await store.trending("go", days=1, today=D4) == [
        Ranked("example.com/c", 11),
        Ranked("example.com/a", 2),
    ]
    assert await store.trending("go", days=1, today=D4 + dt.timedelta(days=1)) == []
    assert await store.trending("npm", days=4, today=D4) == [Ranked("example.com/a", 100)]


async def test_large_flush_in_chunks(store: SqlStatsStore) -> None:
    """More rows than one INSERT carries (and than asyncpg's bound-parameter limit)."""
    counts: dict[CountKey, int] = {
        ("go", f"example.com/m{i}", "v1.0.0", D1): 1 for i in range(7001)
    }
    await store.add(counts)
    ranked = await store.trending("go", days=1, today=D1, limit=10_000)
    assert len(ranked) == 7001
    assert {r.count for r in ranked} == {1}


async def test_inventory_follows_the_cache(store: SqlStatsStore) -> None:
    empty = Inventory(bytes=0, versions=0, hosts=0, top_hosts=[])
    assert await store.inventory("go") == empty
    await store.cached("go", "a.example.com/x", "v1.0.0", 100)
    await store.cached("go", "a.example.com/y", "v1.0.0", 50)
    await store.cached("go", "b.example.com/x", "v1.0.0", 7)
    await store.cached("go", "b.example.com/x", "v1.0.0", 7)  # republished: idempotent
    await store.cached("npm", "@scope/pkg", "1.0.0", 1000)
    assert await store.inventory("go") == Inventory(
        bytes=157,
        versions=3,
        hosts=2,
        top_hosts=[Ranked("a.example.com", 2), Ranked("b.example.com", 1)],
    )
    await store.cached("go", "a.example.com/x", "v1.0.0", 120)  # replaced: size changes
    assert (await store.inventory("go")).bytes == 177
    await store.uncached("go", "b.example.com/x", "v1.0.0")
    await store.uncached("go", "b.example.com/x", "v1.0.0")  # already gone: nothing happens
    await store.uncached("go", "never.example.com/x", "v1.0.0")
    assert await store.inventory("go") == Inventory(
        bytes=170, versions=2, hosts=1, top_hosts=[Ranked("a.example.com", 2)]
    )
    assert await store.inventory("npm") == Inventory(
        bytes=1000, versions=1, hosts=1, top_hosts=[Ranked("@scope", 1)]
    )

    # A walk replaces everything of the ecosystem (and nothing of the others).
    walked: dict[tuple[str, str], int] = {}
    for h in range(12):  # host h caches h+1 versions; h0 and h1 tie after the reversal below
        for v in range(12 - h if h > 1 else 11):
            walked[f"h{h:02}.example.com/mod", f"v1.0.{v}"] = 10
    await store.reconcile("go", walked)
    inv = await store.inventory("go")
    assert inv.versions == len(walked)
    assert inv.bytes == 10 * len(walked)
    assert inv.hosts == 12
    assert inv.top_hosts == [
        Ranked("h00.example.com", 11),
        Ranked("h01.example.com", 11),
        Ranked("h02.example.com", 10),
        *(Ranked(f"h{h:02}.example.com", 12 - h) for h in range(3, 10)),
    ]
    # After the walk, the counters keep following the cache.
    await store.uncached("go", "h11.example.com/mod", "v1.0.0")
    await store.cached("go", "new.example.com/mod", "v1.0.0", 5)
    inv = await store.inventory("go")
    assert (inv.versions, inv.bytes, inv.hosts) == (len(walked), 10 * len(walked) - 5, 12)
    assert (await store.inventory("npm")).versions == 1
    await store.reconcile("go", {})
    assert await store.inventory("go") == empty


async def test_migrations_are_idempotent(db_url: str | None, tmp_path: Path) -> None:
    await asyncio.to_thread(migrate, db_url, tmp_path)  # the fixture migrated once already
    engine = create_engine(db_url, tmp_path)
    async with engine.connect() as conn:
        assert await conn.run_sync(current_revision) == head_revision()
        columns = await conn.run_sync(
            lambda c: {t: [col["name"] for col in inspect(c).get_columns(t)] for t in TABLES}
        )
    await engine.dispose()
    # The store's Core tables match what the migrations made.
    assert columns == {t: [col.name for col in TABLES[t].columns] for t in TABLES}


def test_two_processes_migrate_at_once(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Two replicas start together on a new database: one migrates, the other waits and finds
    nothing to do; neither fails."""
    pg: Postgres | None = None
    if os.environ.get(SKIP_VARIABLE) != "1":
        pg = request.getfixturevalue("postgres")
    urls = [None] + ([fresh_database(pg)] if pg else [])
    code = (
        "import sys; from pathlib import Path; from entrepot.sql.migrate import migrate;"
        " migrate(None if sys.argv[1] == '-' else sys.argv[1], Path(sys.argv[2]))"
    )
    for url in urls:
        data = tmp_path / ("pg" if url else "sqlite")
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, url or "-", str(data)], stderr=subprocess.PIPE
            )
            for _ in range(3)
        ]
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()

        async def revision(url: str | None = url, data: Path = data) -> str | None:
            engine = create_engine(url, data)
            async with engine.connect() as conn:
                rev = await conn.run_sync(current_revision)
            await engine.dispose()
            return rev

        assert asyncio.run(revision()) == head_revision()


async def test_sqlite_error_raises_and_keeps_what_was_written(tmp_path: Path) -> None:
    """Another process holds the write lock past the busy timeout: add() raises
    UnavailableError, the database keeps what it had, and the retried flush counts once."""
    await asyncio.to_thread(migrate, None, tmp_path)
    s = open_store(None, tmp_path, sqlite_busy_timeout=0.2)
    key: CountKey = ("go", "example.com/a", "v1.0.0", D1)
    await s.add({key: 2})
    blocker = sqlite3.connect(tmp_path / "entrepot.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(UnavailableError, match="the database cannot"):
            await s.add({key: 3})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await s.total("go", "example.com/a") == 2
    await s.add({key: 3})  # the recorder's retry
    assert await s.total("go", "example.com/a") == 5
    await s.close()


async def test_postgres_error_raises_and_keeps_what_was_written(
    postgres: Postgres, tmp_path: Path
) -> None:
    """The database refuses connections (as when it is down): add() raises UnavailableError;
    once it is back, what was written is there and the retried flush counts once."""
    url = fresh_database(postgres)
    name = url.rsplit("/", 1)[1]
    await asyncio.to_thread(migrate, url, tmp_path)
    s = open_store(url, tmp_path)
    key: CountKey = ("go", "example.com/a", "v1.0.0", D1)
    await s.add({key: 2})
    admin = create_engine(postgres.url(), tmp_path, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        await conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
    try:
        with pytest.raises(UnavailableError, match="the database cannot") as caught:
            await s.add({key: 3})
        assert "secret" not in caught.value.message
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        await admin.dispose()
    assert await s.total("go", "example.com/a") == 2
    await s.add({key: 3})
    assert await s.total("go", "example.com/a") == 5
    await s.close()


def test_prepare_stats_migrates_only_when_enabled(tmp_path: Path) -> None:
    """The database is migrated when statistics or the npm registry use it."""
    off = Settings.model_validate(
        {
            "data_dir": str(tmp_path / "off"),
            "stats": {"enabled": False},
            "npm": {"registry": {"enabled": False}},
        }
    )
    prepare_stats(off)
    assert not (tmp_path / "off").exists()
    registry = Settings.model_validate(
        {"data_dir": str(tmp_path / "registry"), "stats": {"enabled": False}}
    )
    prepare_stats(registry)
    assert (tmp_path / "registry" / "entrepot.db").is_file()
    on = Settings.model_validate({"data_dir": str(tmp_path / "on")})
    prepare_stats(on)
    prepare_stats(on)  # a restart: nothing to do
    assert (tmp_path / "on" / "entrepot.db").is_file()


def test_database_password_is_never_printed() -> None:
    url = "postgresql://entrepot:s3cret@db.example.com:5432/stats"
    settings = Settings.model_validate({"stats": {"database": url}})
    shown = redact(settings.model_dump_json())  # what `entrepot check-config` prints
    assert "s3cret" not in shown
    assert "db.example.com:5432/stats" in shown
    with pytest.raises(ValidationError):
        Settings.model_validate({"stats": {"database": "mysql://db.example.com/x"}})
    with pytest.raises(ValidationError):
        Settings.model_validate({"stats": {"flush_interval": "90s"}})


def test_database_password_from_a_file(tmp_path: Path) -> None:
    """stats.database_password_file (a mounted Secret) sets the password of stats.database,
    read at start; it is never printed, and error messages do not hold it."""
    secret = tmp_path / "password"
    secret.write_text("s3:cr/et@%\n")
    url = "postgresql://entrepot@db.example.com:5432/stats"
    env = {
        "GOPROXY": "http://127.0.0.1:9",
        "GOSUMDB": "off",
        "ENTREPOT_STATS__DATABASE": url,
        "ENTREPOT_STATS__DATABASE_PASSWORD_FILE": str(secret),
    }
    settings = load_settings(environ=env)
    assert settings.stats.database is not None
    parsed = make_url(settings.stats.database)
    assert parsed.username == "entrepot"
    assert parsed.password == "s3:cr/et@%"
    assert parsed.host == "db.example.com"
    assert parsed.database == "stats"
    assert database_url(settings.stats.database, tmp_path).password == "s3:cr/et@%"
    shown = redact(settings.model_dump_json())
    assert "s3" not in shown.replace("stats", "")
    assert "db.example.com:5432/stats" in shown
    # Validating a dump again (as load_settings does) reads the file again: same URL.
    again = Settings.model_validate(settings.model_dump(mode="json"))
    assert again.stats.database == settings.stats.database
    # A password in the URL is replaced by the file's.
    other = Settings.model_validate(
        {
            "stats": {
                "database": "postgresql://u:old@db.example.com/x",
                "databasePasswordFile": secret,
            }
        }
    )
    assert make_url(other.stats.database or "").password == "s3:cr/et@%"

    empty = tmp_path / "empty"
    empty.write_text(" \n")
    bad: list[dict[str, object]] = [
        {"database": url, "database_password_file": str(tmp_path / "missing")},
        {"database": url, "database_password_file": str(empty)},
        {"database_password_file": str(secret)},  # SQLite: no password
        {"database": "sqlite:////tmp/x.db", "database_password_file": str(secret)},
    ]
    for stats in bad:
        with pytest.raises(ConfigError) as caught:
            load_settings(
                overrides={"stats": stats},
                environ={"GOPROXY": "http://127.0.0.1:9", "GOSUMDB": "off"},
            )
        assert "database_password_file" in str(caught.value)
        assert "s3:cr" not in str(caught.value)


async def test_password_file_connects(postgres: Postgres, tmp_path: Path) -> None:
    """The combined URL reaches the real PostgreSQL (whatever its authentication)."""
    secret = tmp_path / "password"
    secret.write_text("unused-by-trust\n")
    url = fresh_database(postgres)
    settings = Settings.model_validate(
        {"data_dir": str(tmp_path), "stats": {"database": url, "database_password_file": secret}}
    )
    await asyncio.to_thread(prepare_stats, settings)
    store = open_store(settings.stats.database, tmp_path)
    await store.add({("go", "example.com/a", "v1.0.0", D1): 2})
    assert await store.total("go", "example.com/a") == 2
    await store.close()


async def test_trending_is_exact_across_windows_days_and_rebuilds(
    db_url: str | None, tmp_path: Path
) -> None:
    """The trends kept in package_windows (2, 7 and 30 days) and those summed from package_days
    (any other length, or a day before the windows' mark) equal a brute-force sum: after
    flushes of today and of earlier days from two workers, after the day changes (the first
    reader rebuilds the windows), with a flush racing that rebuild, and for a reader whose
    clock is a day behind."""
    today = dt.datetime.now(dt.UTC).date()
    store = open_store(db_url, tmp_path)
    other = open_store(db_url, tmp_path)  # another worker
    truth: dict[CountKey, int] = {}

    async def add(s: SqlStatsStore, counts: dict[CountKey, int]) -> None:
        await s.add(counts)
        for key, n in counts.items():
            truth[key] = truth.get(key, 0) + n

    def brute(since: dt.date, limit: int, ecosystem: str = "go") -> list[Ranked]:
        sums: dict[str, int] = {}
        for (e, p, _v, d), n in truth.items():
            if e == ecosystem and d >= since:
                sums[p] = sums.get(p, 0) + n
        ranked = sorted(sums.items(), key=lambda item: (-item[1], item[0]))
        return [Ranked(p, n) for p, n in ranked[:limit]]

    async def check(day: dt.date = today) -> None:
        for days in (1, 2, 7, 30, 41):
            since = day - dt.timedelta(days=days - 1)
            for limit in (1, 3, 1000):
                got = await store.trending("go", days=days, today=day, limit=limit)
                assert got == brute(since, limit), (day, days, limit)
        got = await other.trending("npm", days=7, today=day)
        assert got == brute(day - dt.timedelta(days=6), 1000, "npm")

    async def mark() -> dt.date:
        async with reading(store.engine) as conn:
            day: dt.date = (
                await conn.execute(select(stats_marks.c.day).where(stats_marks.c.name == "windows"))
            ).scalar_one()
        return day

    async def set_mark(day: dt.date) -> None:
        async with writing(store.engine) as conn:
            await conn.execute(update(stats_marks).values(day=day))

    # Counts before the first trend call: the first reader rebuilds the windows from them.
    await add(
        store,
        {
            ("go", f"example.com/m{i}", f"v1.0.{i % 2}", today - dt.timedelta(days=i % 35)): i
            for i in range(1, 70)
        },
    )
    assert await mark() == dt.date(1970, 1, 1)
    await check()
    assert await mark() == today
    # Flushes after it are added to the windows as they happen.
    await add(store, {("go", "example.com/m1", "v1.0.1", today): 500})
    await add(other, {("go", "example.com/m2", "v1.0.0", today): 400})
    await add(store, {("go", "example.com/m3", "v1.0.1", today - dt.timedelta(days=1)): 900})
    await add(store, {("go", "example.com/m4", "v1.0.1", today - dt.timedelta(days=6)): 950})
    await add(store, {("go", "example.com/m5", "v1.0.1", today - dt.timedelta(days=7)): 990})
    await add(store, {("npm", "example.com/m3", "v1.0.1", today - dt.timedelta(days=2)): 9})
    await check()
    # A reader whose clock is a day behind the mark gets its own (summed) answer.
    await check(today - dt.timedelta(days=1))
    assert await mark() == today
    # The day changed (seen as a mark three days old, with windows that only a rebuild fixes):
    # a flush races the rebuild the first reader does; neither loses the other's counts.
    async with writing(store.engine) as conn:
        await conn.execute(update(package_windows).values(d2=7, d7=7, d30=7))
    await set_mark(today - dt.timedelta(days=3))
    late = {("go", f"example.com/r{i}", "v1.0.0", today): 1000 + i for i in range(50)}
    await asyncio.gather(add(other, late), store.trending("go", days=30, today=today))
    assert await mark() == today
    await check()
    await store.close()
    await other.close()
