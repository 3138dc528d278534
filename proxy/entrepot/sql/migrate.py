"""Schema migrations (Alembic), applied at start-up by one process, idempotently.

The parent process calls :func:`migrate` before it forks its workers, so workers never race
each other. Several replicas (or a replica and ``entrepot`` run by hand) may still start
together: on SQLite a file lock next to the database file, on PostgreSQL a transaction-scoped
advisory lock, makes one of them migrate while the others wait and then find nothing to do.
On both databases the whole upgrade is one transaction (DDL is transactional in SQLite and
PostgreSQL): a failed upgrade leaves the previous schema.

The migrations are plain Python under ``entrepot/sql/migrations/versions``; Alembic's
command-line templates are not needed at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Alembic logs a line per built-in plugin as it is imported, and each step of a migration, at
# INFO: its own chatter, not ours (entrepot.sql logs what was migrated).
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import Connection, func, select  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from entrepot.sql.engine import create_engine, database_url, dialect_of, translated  # noqa: E402

log = logging.getLogger("entrepot.sql")
MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock's key: any constant shared by every Entrepôt process ("ENTREPOT").
ADVISORY_KEY = 0x454E545245504F54


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> str | None:
    """Upgrade to the head; the revision found before (the head itself: nothing done)."""
    if connection.dialect.name == "postgresql":
        # Held until this transaction ends: a second replica waits here, then sees the head.
        connection.execute(select(func.pg_advisory_xact_lock(ADVISORY_KEY)))
    found = current_revision(connection)
    if found != head_revision():
        command.upgrade(alembic_config(connection), "head")
    return found


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema (nothing to do if it is there)."""
    dialect = dialect_of(engine)
    with translated("be migrated"):
        async with engine.begin() as conn:
            found = await conn.run_sync(_upgrade)
    head = head_revision()
    if found != head:
        log.info("%s database: schema %s -> %s", dialect, found or "(new)", head)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def migrate(url: str | None, data_dir: Path, **engine_options: Any) -> None:
    """Migrate the database of ``url`` (None: the SQLite file in ``data_dir``); blocking."""
    target = database_url(url, data_dir)
    lock: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if target.drivername.startswith("sqlite"):
        assert target.database is not None
        db_file = Path(target.database)
        db_file.parent.mkdir(parents=True, exist_ok=True)
        lock = _file_lock(db_file.with_name(db_file.name + ".migrate-lock"))

    async def run() -> None:
        engine = create_engine(url, data_dir, **engine_options)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    with lock:
        asyncio.run(run())
