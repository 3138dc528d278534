"""Alembic's environment: migrations always run on a connection handed in by
:func:`entrepot.sql.migrate.upgrade` (inside its transaction), never from a URL here."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only entrepot.sql.migrate runs migrations
    raise RuntimeError("run migrations with entrepot.sql.migrate, which passes a connection")
context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
