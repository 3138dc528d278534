"""The store's queries for npm's download-count API, on SQLite and on a real PostgreSQL (the
databases of test_sqlstore.py): exact days per package, per version and per ecosystem, known
packages told from unknown ones, one statement per answer, and on SQLite index searches only
(the query plans name no full scan)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event

# The same databases as the rest of the SQL store's tests: SQLite and a real PostgreSQL.
from test_sqlstore import db_url, postgres, store  # noqa: F401

from entrepot.stats.sqlstore import SqlStatsStore
from entrepot.stats.store import CountKey

D = [dt.date(2026, 2, 26) + dt.timedelta(days=i) for i in range(6)]  # Feb 26 .. Mar 3
COUNTS: dict[CountKey, int] = {
    ("npm", "express", "4.18.0", D[0]): 3,
    ("npm", "express", "4.18.0", D[2]): 1,
    ("npm", "express", "4.19.0", D[2]): 4,
    ("npm", "express", "4.19.0", D[5]): 2,
    ("npm", "@scope/pkg", "1.0.0", D[3]): 7,
    ("npm", "old", "0.1.0", D[0] - dt.timedelta(days=400)): 9,  # known, long ago
    ("go", "express", "v1.0.0", D[2]): 100,  # another ecosystem, the same name
    ("go", "example.com/m", "v1.0.0", D[3]): 50,
}


async def test_package_daily(store: SqlStatsStore) -> None:  # noqa: F811
    await store.add(COUNTS)
    found = await store.package_daily(
        "npm", ["express", "@scope/pkg", "old", "never", "express"], first=D[1], last=D[4]
    )
    assert found == {
        "express": {D[2]: 5},
        "@scope/pkg": {D[3]: 7},
        "old": {},  # downloaded, not in the period: zeros, not "not found"
    }
    assert await store.package_daily("npm", ["example.com/m"], first=D[0], last=D[5]) == {}
    assert await store.package_daily("go", ["express"], first=D[0], last=D[5]) == {
        "express": {D[2]: 100}
    }
    assert await store.package_daily("npm", [], first=D[0], last=D[5]) == {}
    assert await store.package_daily("npm", ["express"], first=D[5], last=D[5]) == {
        "express": {D[5]: 2}
    }


async def test_version_daily(store: SqlStatsStore) -> None:  # noqa: F811
    await store.add(COUNTS)
    assert await store.version_daily("npm", "express", first=D[0], last=D[5]) == {
        "4.18.0": {D[0]: 3, D[2]: 1},
        "4.19.0": {D[2]: 4, D[5]: 2},
    }
    assert await store.version_daily("npm", "express", first=D[3], last=D[5]) == {
        "4.19.0": {D[5]: 2}
    }
    assert await store.version_daily("npm", "old", first=D[0], last=D[5]) == {}
    assert await store.version_daily("npm", "never", first=D[0], last=D[5]) is None
    assert await store.version_daily("npm", "example.com/m", first=D[0], last=D[5]) is None


async def test_ecosystem_daily(store: SqlStatsStore) -> None:  # noqa: F811
    await store.add(COUNTS)
    assert await store.ecosystem_daily("npm", first=D[0], last=D[5]) == {
        D[0]: 3,
        D[2]: 5,
        D[3]: 7,
        D[5]: 2,
    }
    assert await store.ecosystem_daily("npm", first=D[1], last=D[1]) == {}
    assert await store.ecosystem_daily("go", first=D[3], last=D[3]) == {D[3]: 50}


async def test_flushes_add_up_in_every_query(store: SqlStatsStore) -> None:  # noqa: F811
    await store.add(COUNTS)
    await store.add({("npm", "express", "4.19.0", D[2]): 10})
    assert (await store.package_daily("npm", ["express"], first=D[2], last=D[2])) == {
        "express": {D[2]: 15}
    }
    assert (await store.version_daily("npm", "express", first=D[2], last=D[2])) == {
        "4.18.0": {D[2]: 1},
        "4.19.0": {D[2]: 14},
    }
    assert await store.ecosystem_daily("npm", first=D[2], last=D[2]) == {D[2]: 15}


def _statements(s: SqlStatsStore) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    @event.listens_for(s.engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, params))

    return seen


async def test_one_statement_per_answer_through_indexes(tmp_path: Path) -> None:
    """Each query is one statement, and SQLite plans it as searches of a primary key or
    index: no full scan of a table, whatever the number of packages (128 in bulk)."""
    from entrepot.sql.migrate import migrate
    from entrepot.stats.sqlstore import open_store

    await asyncio.to_thread(migrate, None, tmp_path)
    s = open_store(None, tmp_path)
    await s.add(COUNTS)
    seen = _statements(s)
    bulk = ["express", *(f"p{i}" for i in range(127))]
    await s.package_daily("npm", bulk, first=D[0], last=D[5])
    await s.version_daily("npm", "express", first=D[0], last=D[5])
    await s.ecosystem_daily("npm", first=D[0], last=D[5])
    await s.close()
    assert len(seen) == 3, seen
    db = sqlite3.connect(tmp_path / "entrepot.db")
    for statement, params in seen:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", params)]
        reads = [s for s in plan if s.startswith(("SCAN", "SEARCH")) and s != "SCAN CONSTANT ROW"]
        assert reads, plan
        for step in reads:
            assert step.startswith("SEARCH "), (statement, plan)
            assert " USING " in step, (statement, plan)
    db.close()
