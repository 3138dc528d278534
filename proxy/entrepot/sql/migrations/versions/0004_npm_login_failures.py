"""Failed npm logins, shared by every worker and replica (the login limiter's memory).

One row per failed login and per key it counts against: ``kind`` is ``user`` or
``address``, ``subject`` the user name or the client address, ``at`` milliseconds since the
epoch. The limiter counts a key's rows younger than its window and deletes older ones as it
writes; a successful login deletes the user's rows (not the address's).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "npm_login_failures",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="npm_login_failures_pk"),
    )
    op.create_index(
        "npm_login_failures_by_subject", "npm_login_failures", ["kind", "subject", "at"]
    )
    op.create_index("npm_login_failures_by_time", "npm_login_failures", ["at"])


def downgrade() -> None:
    op.drop_index("npm_login_failures_by_time", table_name="npm_login_failures")
    op.drop_index("npm_login_failures_by_subject", table_name="npm_login_failures")
    op.drop_table("npm_login_failures")
