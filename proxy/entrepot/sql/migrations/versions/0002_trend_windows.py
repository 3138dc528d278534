"""Trend windows: each package's downloads over the last 2, 7 and 30 days, kept as they happen.

``/stats/trends/last-30-days`` summed about a month of ``package_days`` per call (120 ms with a
million rows on SQLite). ``package_windows`` holds the three sums per package, added to in the
same transaction as ``package_days``, and read through an index per window in the order the
answer needs, so a trend reads its top rows and stops.

The windows are relative to the day in ``stats_marks`` (``name = 'windows'``). When the UTC day
changes, the first reader rebuilds them from ``package_days`` once (``SqlStatsStore._roll``);
the row starts at 1970-01-01 so that first rebuild happens and fills them from the counts of
revision 0001. On PostgreSQL the row is the lock that orders rebuilds against flushes.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WINDOWS = ("d2", "d7", "d30")


def upgrade() -> None:
    op.create_table(
        "package_windows",
        sa.Column("ecosystem", sa.String(16), nullable=False),
        sa.Column("package", sa.String(512), nullable=False),
        *(sa.Column(w, sa.BigInteger, nullable=False) for w in WINDOWS),
        sa.PrimaryKeyConstraint("ecosystem", "package", name="package_windows_pk"),
        sqlite_with_rowid=False,
    )
    for w in WINDOWS:
        op.create_index(
            f"package_windows_by_{w}",
            "package_windows",
            ["ecosystem", sa.text(f"{w} DESC"), "package"],
        )
    marks = op.create_table(
        "stats_marks",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.PrimaryKeyConstraint("name", name="stats_marks_pk"),
    )
    op.bulk_insert(marks, [{"name": "windows", "day": dt.date(1970, 1, 1)}])


def downgrade() -> None:
    op.drop_table("stats_marks")
    for w in WINDOWS:
        op.drop_index(f"package_windows_by_{w}", table_name="package_windows")
    op.drop_table("package_windows")
