"""An async SQLAlchemy engine for a database URL: SQLite (the embedded default) or PostgreSQL.

Only two drivers are supported, both async: ``sqlite+aiosqlite`` and ``postgresql+asyncpg``;
the plain spellings (``sqlite:///file.db``, ``postgresql://...``, ``postgres://...``) are
mapped to them. Without a URL the database is ``<data_dir>/entrepot.db``.

SQLite is opened in WAL mode (readers never block the writer), ``synchronous=NORMAL`` (a
commit is durable once the WAL is synced at checkpoints; a power cut may lose the last
transactions but never corrupts the file: the right trade for counters flushed every few
seconds) and a busy timeout, so pre-forked workers writing the same file wait for each other
instead of failing. Write transactions start with ``BEGIN IMMEDIATE`` (see
:func:`writing`): a transaction that reads and then writes could otherwise fail with
``SQLITE_BUSY`` at once, without waiting, when another process wrote in between. Reads
run without BEGIN (see :func:`reading`).

Errors of the drivers are translated once, here: :func:`translated` turns them into
:class:`entrepot.errors.UnavailableError` (the database cannot answer now: 503 for a reader,
"keep the counts and retry" for the recorder). Messages never carry the password: SQLAlchemy
masks it in URLs and :func:`entrepot.errors.redact` strips any userinfo left.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import URL, event, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from entrepot.errors import ConfigError, UnavailableError

DEFAULT_FILE = "entrepot.db"
SQLITE_CACHE_KIB = 32 << 10  # per connection, used only as pages are read
Dialect = Literal["sqlite", "postgresql"]

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
# A custom execution option: the "begin" hook below opens such a transaction IMMEDIATE.
_WRITE_OPTION = "entrepot_write"


def database_url(url: str | None, data_dir: Path) -> URL:
    """The URL to connect to, with an async driver; raises ConfigError for anything else."""
    if url is None:
        return URL.create("sqlite+aiosqlite", database=str(data_dir / DEFAULT_FILE))
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(f"stats.database: {url!r} is not a database URL") from e
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            f"stats.database: unsupported database {parsed.drivername!r}: use"
            " 'sqlite+aiosqlite:///<file>' or 'postgresql+asyncpg://<user>@<host>/<db>'"
        )
    parsed = parsed.set(drivername=driver)
    if driver.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        # Every pooled connection would see its own empty database.
        raise ConfigError("stats.database: an SQLite database must be a file")
    return parsed


def dialect_of(engine: AsyncEngine) -> Dialect:
    name = engine.dialect.name
    if name not in ("sqlite", "postgresql"):  # pragma: no cover - database_url refuses others
        raise ConfigError(f"unsupported database dialect {name!r}")
    return "sqlite" if name == "sqlite" else "postgresql"


def create_engine(
    url: str | None, data_dir: Path, *, sqlite_busy_timeout: float = 10.0, **kwargs: Any
) -> AsyncEngine:
    """An engine for ``url`` (None: the SQLite file in ``data_dir``); connects lazily.

    ``sqlite_busy_timeout``: how long an SQLite writer waits for another one (seconds)."""
    target = database_url(url, data_dir)
    if target.drivername.startswith("sqlite"):
        assert target.database is not None
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        # One writer at a time anyway; a small pool bounds the page caches below.
        kwargs.setdefault("pool_size", 3)
        kwargs.setdefault("max_overflow", 2)
        engine = create_async_engine(target, **kwargs)
        _sqlite_hooks(engine, busy_timeout_ms=round(sqlite_busy_timeout * 1000))
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 4)
    kwargs.setdefault("max_overflow", 4)
    kwargs.setdefault("pool_recycle", 1800)
    return create_async_engine(target, **kwargs)


def _sqlite_hooks(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is turned off: SQLAlchemy's "begin" event
        # below emits BEGIN itself (the SQLAlchemy documentation's recipe for pysqlite).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Trends group tens of thousands of rows: their temporary b-trees stay in memory, and
        # a 32 MiB page cache (SQLite's default is 2 MiB) holds the indexes they read.
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Reads run in autocommit (each statement its own snapshot): a BEGIN and COMMIT
        # would be two more trips through aiosqlite's thread for every answer.
        if connection.get_execution_options().get(_WRITE_OPTION, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn a driver or connection failure into UnavailableError, once, at this boundary."""
    try:
        yield
    except (SQLAlchemyError, OSError) as e:
        detail = str(getattr(e, "orig", None) or e).splitlines()[0] if str(e) else type(e).__name__
        raise UnavailableError(f"the database cannot {what}: {detail}") from e


@contextlib.asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed when the block ends."""
    async with engine.connect() as plain:
        conn = await plain.execution_options(**{_WRITE_OPTION: True})
        async with conn.begin():
            yield conn


@contextlib.asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads (a transaction on PostgreSQL; autocommit statements on SQLite)."""
    async with engine.connect() as conn, conn.begin():
        yield conn
