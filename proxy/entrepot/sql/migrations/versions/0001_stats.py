"""Download statistics and the cache inventory.

- ``downloads``: one row per (ecosystem, package, version, UTC day) with downloads; the
  primary key is the table (WITHOUT ROWID on SQLite), so a version's rows are one contiguous
  range: its total and its days read only them.
- ``version_totals``: all-time downloads per version, written in the same transaction: a
  package's top versions read one row per version instead of one per version and day
  (18,250 rows for a module with 50 versions downloaded daily for a year).
- ``package_days``: the same counts summed over versions, written in the same transaction.
  It serves a package's days, its total and the trends with about a tenth of the rows (a
  package has many versions); trends read it through ``(ecosystem, day, package, count)``,
  which covers the query.
- ``cached_versions``: what the cache holds, with sizes; ``cache_hosts``: per first path
  element (``example.com``), versions and bytes, kept in step with ``cached_versions`` in
  the same transactions, so ``/stats/summary`` sums a few rows instead of scanning.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "downloads",
        sa.Column("ecosystem", sa.String(16), nullable=False),
        sa.Column("package", sa.String(512), nullable=False),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("ecosystem", "package", "version", "day", name="downloads_pk"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "package_days",
        sa.Column("ecosystem", sa.String(16), nullable=False),
        sa.Column("package", sa.String(512), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("ecosystem", "package", "day", name="package_days_pk"),
        sqlite_with_rowid=False,
    )
    op.create_index("package_days_by_day", "package_days", ["ecosystem", "day", "package", "count"])
    op.create_table(
        "version_totals",
        sa.Column("ecosystem", sa.String(16), nullable=False),
        sa.Column("package", sa.String(512), nullable=False),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("ecosystem", "package", "version", name="version_totals_pk"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "cached_versions",
        sa.Column("ecosystem", sa.String(16), nullable=False),
        sa.Column("package", sa.String(512), nullable=False),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("host", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("ecosystem", "package", "version", name="cached_versions_pk"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "cache_hosts",
        sa.Column("ecosystem", sa.String(16), nullable=False),
        sa.Column("host", sa.String(512), nullable=False),
        sa.Column("versions", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("ecosystem", "host", name="cache_hosts_pk"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    for table in ("cache_hosts", "cached_versions", "version_totals", "package_days", "downloads"):
        op.drop_table(table)
