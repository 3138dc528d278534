"""The statistics store on SQL (SQLAlchemy Core): SQLite by default, PostgreSQL for replicas.

Implements :class:`entrepot.stats.store.StatsStore`. Every statement is built with Core and
bound parameters; no SQL text ever holds request data. Writes are additive upserts
(``INSERT ... ON CONFLICT DO UPDATE SET count = count + excluded.count``), one transaction per
call, rows sorted by key so concurrent writers on PostgreSQL lock rows in the same order and
never deadlock. Errors raise :class:`entrepot.errors.UnavailableError` (see
:func:`entrepot.sql.engine.translated`); a failed transaction leaves nothing half-written.

The schema is in ``entrepot/sql/migrations/versions``; the tables below mirror it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Insert,
    MetaData,
    String,
    Table,
    case,
    cast,
    delete,
    desc,
    exists,
    func,
    literal,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from entrepot.config import Settings
from entrepot.sql.engine import create_engine, dialect_of, reading, translated, writing
from entrepot.sql.migrate import migrate
from entrepot.stats.store import CountKey, Day, Inventory, Ranked

log = logging.getLogger("entrepot.stats")

_meta = MetaData()
downloads = Table(
    "downloads",
    _meta,
    Column("ecosystem", String(16), primary_key=True),
    Column("package", String(512), primary_key=True),
    Column("version", String(256), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("count", BigInteger, nullable=False),
)
package_days = Table(
    "package_days",
    _meta,
    Column("ecosystem", String(16), primary_key=True),
    Column("package", String(512), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("count", BigInteger, nullable=False),
)
version_totals = Table(
    "version_totals",
    _meta,
    Column("ecosystem", String(16), primary_key=True),
    Column("package", String(512), primary_key=True),
    Column("version", String(256), primary_key=True),
    Column("count", BigInteger, nullable=False),
)
cached_versions = Table(
    "cached_versions",
    _meta,
    Column("ecosystem", String(16), primary_key=True),
    Column("package", String(512), primary_key=True),
    Column("version", String(256), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("host", String(512), nullable=False),
)
package_windows = Table(
    "package_windows",
    _meta,
    Column("ecosystem", String(16), primary_key=True),
    Column("package", String(512), primary_key=True),
    Column("d2", BigInteger, nullable=False),
    Column("d7", BigInteger, nullable=False),
    Column("d30", BigInteger, nullable=False),
)
stats_marks = Table(
    "stats_marks",
    _meta,
    Column("name", String(32), primary_key=True),
    Column("day", Date, nullable=False),
)
cache_hosts = Table(
    "cache_hosts",
    _meta,
    Column("ecosystem", String(16), primary_key=True),
    Column("host", String(512), primary_key=True),
    Column("versions", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)

# The trend windows kept in package_windows: days -> column. A window of N days ending on the
# mark day covers mark - N + 1 .. mark (and any later day, as the sums over package_days do).
WINDOWS: dict[int, str] = {2: "d2", 7: "d7", 30: "d30"}
WINDOWS_MARK = "windows"

# Rows per INSERT: well under both drivers' limit on bound parameters (32,767 for asyncpg).
CHUNK = 1000


def host_of(package: str) -> str:
    """The first path element: ``example.com`` for Go modules, ``@scope`` or the name for npm."""
    return package.split("/", 1)[0]


def _chunks(rows: Sequence[dict[str, Any]]) -> Iterable[Sequence[dict[str, Any]]]:
    for i in range(0, len(rows), CHUNK):
        yield rows[i : i + CHUNK]


_ADDED = dict.fromkeys(WINDOWS.values(), 1)


def _window_rows(per_day: Mapping[tuple[str, str, Day], int], mark: Day) -> list[dict[str, Any]]:
    """What a flush adds to each package's windows ending on ``mark`` (sorted by key)."""
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for (e, p, d), n in per_day.items():
        for days, column in WINDOWS.items():
            if d > mark - dt.timedelta(days=days):
                row = sums.setdefault((e, p), dict.fromkeys(WINDOWS.values(), 0))
                row[column] += n
    return [{"ecosystem": e, "package": p, **cols} for (e, p), cols in sorted(sums.items())]


class SqlStatsStore:
    """StatsStore on an AsyncEngine whose schema :func:`entrepot.sql.migrate.upgrade` made."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = dialect_of(engine)
        self._insert = sqlite.insert if self._dialect == "sqlite" else postgresql.insert

    def _adding(self, table: Table, keys: Sequence[str], **added: Any) -> Insert:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE SET col = table.col + excluded.col``."""
        stmt = self._insert(table)
        return stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={col: table.c[col] + stmt.excluded[col] for col in added},
        )

    # -- downloads ---------------------------------------------------------------------------

    async def add(self, counts: Mapping[CountKey, int]) -> None:
        rows = [
            {"ecosystem": e, "package": p, "version": v, "day": d, "count": n}
            for (e, p, v, d), n in sorted(counts.items())
            if n
        ]
        if not rows:
            return
        per_day: dict[tuple[str, str, Day], int] = defaultdict(int)
        per_version: dict[tuple[str, str, str], int] = defaultdict(int)
        for (e, p, v, d), n in counts.items():
            if n:
                per_day[e, p, d] += n
                per_version[e, p, v] += n
        day_rows = [
            {"ecosystem": e, "package": p, "day": d, "count": n}
            for (e, p, d), n in sorted(per_day.items())
        ]
        version_rows = [
            {"ecosystem": e, "package": p, "version": v, "count": n}
            for (e, p, v), n in sorted(per_version.items())
        ]
        writes = [
            (self._adding(downloads, ["ecosystem", "package", "version", "day"], count=1), rows),
            (self._adding(package_days, ["ecosystem", "package", "day"], count=1), day_rows),
            (
                self._adding(version_totals, ["ecosystem", "package", "version"], count=1),
                version_rows,
            ),
        ]
        with translated("record downloads"):
            async with writing(self.engine) as conn:
                # First, so that a rebuild of the windows (which takes it for update) waits for
                # this flush, or this flush for it: never both at once.
                mark = await self._mark(conn, lock="share")
                window_rows = _window_rows(per_day, mark)
                if window_rows:
                    windows = self._adding(package_windows, ["ecosystem", "package"], **_ADDED)
                    writes.append((windows, window_rows))
                for stmt, table_rows in writes:
                    for chunk in _chunks(table_rows):
                        await conn.execute(stmt, chunk)

    async def total(self, ecosystem: str, package: str, version: str | None = None) -> int:
        if version is None:
            t = package_days
            query = select(func.coalesce(func.sum(t.c.count), 0)).where(
                t.c.ecosystem == ecosystem, t.c.package == package
            )
        else:
            v = version_totals
            query = select(func.coalesce(func.sum(v.c.count), 0)).where(
                v.c.ecosystem == ecosystem, v.c.package == package, v.c.version == version
            )
        with translated("answer"):
            async with reading(self.engine) as conn:
                return int((await conn.execute(query)).scalar_one())

    async def daily(
        self, ecosystem: str, package: str, version: str | None, *, first: Day, last: Day
    ) -> dict[Day, int]:
        t = package_days if version is None else downloads
        query = select(t.c.day, t.c.count).where(
            t.c.ecosystem == ecosystem,
            t.c.package == package,
            t.c.day >= first,
            t.c.day <= last,
        )
        if version is not None:
            query = query.where(t.c.version == version)
        with translated("answer"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(query)).all()
        return {day: int(count) for day, count in rows if count}

    async def package_daily(
        self, ecosystem: str, packages: Sequence[str], *, first: Day, last: Day
    ) -> dict[str, dict[Day, int]]:
        names = list(dict.fromkeys(packages))
        if not names:
            return {}
        t, v = package_days, version_totals
        # One statement: the days in the period (primary key seeks per name), and one row per
        # name ever downloaded (version_totals' primary key), so that a package without
        # downloads in the period is told from one never downloaded.
        days = select(t.c.package, t.c.day, t.c.count).where(
            t.c.ecosystem == ecosystem, t.c.package.in_(names), t.c.day >= first, t.c.day <= last
        )
        known = (
            select(v.c.package, cast(null(), Date), literal(0, BigInteger))
            .where(v.c.ecosystem == ecosystem, v.c.package.in_(names))
            .group_by(v.c.package)
        )
        with translated("answer"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(union_all(days, known))).all()
        found: dict[str, dict[Day, int]] = {}
        for package, day, count in rows:
            counts = found.setdefault(package, {})
            if day is not None and count:
                counts[day] = int(count)
        return found

    async def version_daily(
        self, ecosystem: str, package: str, *, first: Day, last: Day
    ) -> dict[str, dict[Day, int]] | None:
        d, v = downloads, version_totals
        days = select(d.c.version, d.c.day, d.c.count).where(
            d.c.ecosystem == ecosystem,
            d.c.package == package,
            d.c.day >= first,
            d.c.day <= last,
        )
        ever = exists().where(v.c.ecosystem == ecosystem, v.c.package == package)
        known = select(null(), cast(null(), Date), literal(0, BigInteger)).where(ever)
        with translated("answer"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(union_all(days, known))).all()
        if not rows:
            return None
        found: dict[str, dict[Day, int]] = {}
        for version, day, count in rows:
            if day is not None and count:
                found.setdefault(version, {})[day] = int(count)
        return found

    async def ecosystem_daily(self, ecosystem: str, *, first: Day, last: Day) -> dict[Day, int]:
        t = package_days
        # Read through package_days_by_day (ecosystem, day, package, count), which covers it.
        query = (
            select(t.c.day, func.sum(t.c.count))
            .where(t.c.ecosystem == ecosystem, t.c.day >= first, t.c.day <= last)
            .group_by(t.c.day)
        )
        with translated("answer"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(query)).all()
        return {day: int(count) for day, count in rows if count}

    async def top_versions(self, ecosystem: str, package: str, limit: int = 10) -> list[Ranked]:
        t = version_totals
        query = (
            select(t.c.version, t.c.count)
            .where(t.c.ecosystem == ecosystem, t.c.package == package, t.c.count > 0)
            .order_by(desc(t.c.count), t.c.version)
            .limit(limit)
        )
        return await self._ranked(query)

    async def trending(
        self, ecosystem: str, *, days: int, today: Day, limit: int = 1000
    ) -> list[Ranked]:
        column = WINDOWS.get(days)
        if column is not None:
            with translated("answer"):
                async with reading(self.engine) as conn:
                    mark = await self._mark(conn)
            if mark < today:
                await self._roll(today)
                mark = today
            if mark == today:
                w = package_windows.c[column]
                query = (
                    select(package_windows.c.package, w)
                    .where(package_windows.c.ecosystem == ecosystem, w > 0)
                    .order_by(desc(w), package_windows.c.package)
                    .limit(limit)
                )
                return await self._ranked(query)
        # A window not kept, or a day before the mark (a clock behind the one that rolled it).
        return await self._summed(ecosystem, since=today - dt.timedelta(days=days - 1), limit=limit)

    async def _summed(self, ecosystem: str, *, since: Day, limit: int) -> list[Ranked]:
        t = package_days
        total = func.sum(t.c.count).label("total")
        recent: Any = t.c.day >= since
        if self._dialect == "sqlite":
            # Without the hint SQLite walks the whole primary key to group without sorting
            # (3x slower for 30 of 365 days in bench/stats_store.py); likelihood() tells it
            # the range is narrow, so it reads the covering index package_days_by_day.
            recent = func.likelihood(recent, literal_column("0.05"))
        query = (
            select(t.c.package, total)
            .where(t.c.ecosystem == ecosystem, recent)
            .group_by(t.c.package)
            .order_by(desc(total), t.c.package)
            .limit(limit)
        )
        return await self._ranked(query)

    async def _mark(self, conn: AsyncConnection, *, lock: str | None = None) -> Day:
        """The day the windows end on. ``lock`` (PostgreSQL): "share" for a flush, which adds
        relative to it, "update" for the rebuild, which moves it: they exclude each other."""
        query = select(stats_marks.c.day).where(stats_marks.c.name == WINDOWS_MARK)
        if lock is not None and self._dialect == "postgresql":
            query = query.with_for_update(read=lock == "share")
        day: Day = (await conn.execute(query)).scalar_one()
        return day

    async def _roll(self, today: Day) -> None:
        """Rebuild the windows to end on ``today`` from package_days: once per UTC day, by the
        first process that needs them (the others find the mark moved and skip)."""
        t = package_days
        sums = [
            func.sum(case((t.c.day >= today - dt.timedelta(days=n - 1), t.c.count), else_=0))
            for n in WINDOWS
        ]
        rebuilt = package_windows.insert().from_select(
            ["ecosystem", "package", *WINDOWS.values()],
            select(t.c.ecosystem, t.c.package, *sums)
            .where(t.c.day >= today - dt.timedelta(days=max(WINDOWS) - 1))
            .group_by(t.c.ecosystem, t.c.package),
        )
        moved = update(stats_marks).where(stats_marks.c.name == WINDOWS_MARK).values(day=today)
        with translated("rebuild the trend windows"):
            async with writing(self.engine) as conn:
                if await self._mark(conn, lock="update") >= today:
                    return
                await conn.execute(delete(package_windows))
                await conn.execute(rebuilt)
                await conn.execute(moved)
        log.info("trend windows rebuilt to end on %s", today.isoformat())

    async def _ranked(self, query: Any) -> list[Ranked]:
        with translated("answer"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(query)).all()
        return [Ranked(name=name, count=int(count)) for name, count in rows]

    # -- the cache inventory -----------------------------------------------------------------

    async def _move_host(
        self, conn: AsyncConnection, ecosystem: str, host: str, versions: int, size: int
    ) -> None:
        """Add to a host's counters (negative to remove); a host left with none is dropped."""
        if not versions and not size:
            return
        t = cache_hosts
        row = {"ecosystem": ecosystem, "host": host, "versions": versions, "bytes": size}
        await conn.execute(self._adding(t, ["ecosystem", "host"], versions=1, bytes=1), [row])
        if versions < 0:
            await conn.execute(
                delete(t).where(t.c.ecosystem == ecosystem, t.c.host == host, t.c.versions <= 0)
            )

    async def cached(self, ecosystem: str, package: str, version: str, size: int) -> None:
        t = cached_versions
        host = host_of(package)
        key = (t.c.ecosystem == ecosystem, t.c.package == package, t.c.version == version)
        new = self._insert(t).on_conflict_do_nothing(
            index_elements=["ecosystem", "package", "version"]
        )
        row = {"ecosystem": ecosystem, "package": package, "version": version}
        with translated("record the cache"):
            async with writing(self.engine) as conn:
                inserted = await conn.execute(
                    new.returning(t.c.size), [{**row, "size": size, "host": host}]
                )
                if inserted.first() is not None:
                    await self._move_host(conn, ecosystem, host, 1, size)
                    return
                old = (
                    await conn.execute(select(t.c.size).where(*key).with_for_update())
                ).scalar_one()
                if old != size:
                    await conn.execute(update(t).where(*key).values(size=size))
                    await self._move_host(conn, ecosystem, host, 0, size - old)

    async def uncached(self, ecosystem: str, package: str, version: str) -> None:
        t = cached_versions
        gone = (
            delete(t)
            .where(t.c.ecosystem == ecosystem, t.c.package == package, t.c.version == version)
            .returning(t.c.host, t.c.size)
        )
        with translated("record the cache"):
            async with writing(self.engine) as conn:
                row = (await conn.execute(gone)).first()
                if row is not None:
                    await self._move_host(conn, ecosystem, row.host, -1, -row.size)

    async def reconcile(self, ecosystem: str, versions: Mapping[tuple[str, str], int]) -> None:
        rows = [
            {"ecosystem": ecosystem, "package": p, "version": v, "size": s, "host": host_of(p)}
            for (p, v), s in sorted(versions.items())
        ]
        hosts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for (package, _version), size in versions.items():
            hosts[host_of(package)][0] += 1
            hosts[host_of(package)][1] += size
        host_rows = [
            {"ecosystem": ecosystem, "host": h, "versions": n, "bytes": b}
            for h, (n, b) in sorted(hosts.items())
        ]
        with translated("record the cache"):
            async with writing(self.engine) as conn:
                await conn.execute(
                    delete(cached_versions).where(cached_versions.c.ecosystem == ecosystem)
                )
                await conn.execute(delete(cache_hosts).where(cache_hosts.c.ecosystem == ecosystem))
                for chunk in _chunks(rows):
                    await conn.execute(cached_versions.insert(), chunk)
                for chunk in _chunks(host_rows):
                    await conn.execute(cache_hosts.insert(), chunk)

    async def inventory(self, ecosystem: str) -> Inventory:
        t = cache_hosts
        mine = (t.c.ecosystem == ecosystem, t.c.versions > 0)
        totals = select(
            func.coalesce(func.sum(t.c.bytes), 0),
            func.coalesce(func.sum(t.c.versions), 0),
            func.count(),
        ).where(*mine)
        top = (
            select(t.c.host, t.c.versions)
            .where(*mine)
            .order_by(desc(t.c.versions), t.c.host)
            .limit(10)
        )
        with translated("answer"):
            async with reading(self.engine) as conn:
                size, count, hosts = (await conn.execute(totals)).one()
                ranked = (await conn.execute(top)).all()
        return Inventory(
            bytes=int(size),
            versions=int(count),
            hosts=int(hosts),
            top_hosts=[Ranked(name=h, count=int(n)) for h, n in ranked],
        )

    async def close(self) -> None:
        await self.engine.dispose()


def open_store(url: str | None, data_dir: Path, **engine_options: Any) -> SqlStatsStore:
    """The store for ``stats.database`` (None: ``<data_dir>/entrepot.db``); connects lazily.

    The schema must exist: :func:`prepare_stats` ran it in the parent at start-up."""
    return SqlStatsStore(create_engine(url, data_dir, **engine_options))


def prepare_stats(settings: Settings) -> None:
    """Apply the migrations once, before workers start (a no-op when neither the statistics
    nor the npm registry use the database, ``stats.database``).

    Raises UnavailableError when the database cannot be reached or migrated."""
    npm = settings.npm
    if not settings.stats.enabled and not (npm.enabled and npm.registry.enabled):
        return
    migrate(settings.stats.database, settings.data_dir)
    log.debug("statistics database ready")
