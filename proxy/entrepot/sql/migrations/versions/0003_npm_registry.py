"""The private npm registry's metadata: packages, versions, dist-tags, maintainers, users, tokens.

Tarballs live in blob storage; these tables hold everything else, and the store
(:mod:`entrepot.npm.registrystore`) keeps their invariants:

- ``npm_packages``: one row per name ever published. ``rev`` counts the writes to the package
  and never goes down (not even when the package is unpublished and published again), so a
  stale ``_rev`` never matches again. ``deleted`` is set while the whole package is
  unpublished. The document-level fields (description, homepage, keywords, repository, ...)
  and the readme are those of the version ``latest`` points at; ``description``, ``keywords``
  and ``author`` are repeated in plain columns for search. Times are milliseconds since the
  epoch (UTC), as npm's ``/-/all/since?startkey=`` counts them. ``npm_packages_by_modified``
  serves ``/-/all/since``.
- ``npm_versions``: one row per version number ever published, kept after it is unpublished
  (``unpublished`` set, manifest and readme dropped, the tarball key kept until the blob is
  deleted). The primary key is therefore the rule that a version number is never reused: no
  code path deletes a row, so a second INSERT of the same (package, version) fails. The small
  columns come first: reading ``published`` never walks a long manifest's or readme's
  overflow pages. (WITHOUT ROWID, which clusters a package's versions, measured no faster
  with real-sized manifests and readmes: rows that large spill to overflow pages anyway.)
- ``npm_tags``: dist-tags; ``npm_maintainers``: owners in their order, with
  ``npm_maintainers_by_user`` for ``/-/by-user/`` and ``maintainer:`` searches.
- ``npm_users``: the password hash is the caller's opaque string (argon2id or scrypt);
  ``rev`` counts the user document's writes.
- ``npm_tokens``: keyed by the sha512 hex of the token (the token itself is never stored);
  ``npm_tokens_by_user`` lists a user's tokens newest first.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NAME = 214  # npm's longest package or user name


def upgrade() -> None:
    op.create_table(
        "npm_packages",
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("rev", sa.BigInteger, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("modified", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.BigInteger, nullable=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("readme", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("keywords", sa.Text, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("name", name="npm_packages_pk"),
    )
    op.create_index("npm_packages_by_modified", "npm_packages", ["modified"])
    op.create_table(
        "npm_versions",
        sa.Column("package", sa.String(NAME), nullable=False),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("published", sa.BigInteger, nullable=False),
        sa.Column("unpublished", sa.BigInteger, nullable=True),
        sa.Column("deprecated", sa.Text, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("integrity", sa.String(512), nullable=False),
        sa.Column("shasum", sa.String(64), nullable=False),
        sa.Column("tarball_key", sa.String(1024), nullable=True),
        sa.Column("manifest", sa.Text, nullable=True),
        sa.Column("readme", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("package", "version", name="npm_versions_pk"),
    )
    op.create_table(
        "npm_tags",
        sa.Column("package", sa.String(NAME), nullable=False),
        sa.Column("tag", sa.String(256), nullable=False),
        sa.Column("version", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("package", "tag", name="npm_tags_pk"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "npm_maintainers",
        sa.Column("package", sa.String(NAME), nullable=False),
        sa.Column("user", sa.String(NAME), nullable=False),
        sa.Column("email", sa.String(256), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("package", "user", name="npm_maintainers_pk"),
        sqlite_with_rowid=False,
    )
    op.create_index("npm_maintainers_by_user", "npm_maintainers", ["user", "package"])
    op.create_table(
        "npm_users",
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("email", sa.String(256), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.Column("rev", sa.BigInteger, nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("roles", sa.Text, nullable=False),
        sa.Column("profile", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("name", name="npm_users_pk"),
    )
    op.create_table(
        "npm_tokens",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("user", sa.String(NAME), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("readonly", sa.Boolean, nullable=False),
        sa.Column("cidrs", sa.Text, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("key", name="npm_tokens_pk"),
        sqlite_with_rowid=False,
    )
    op.create_index("npm_tokens_by_user", "npm_tokens", ["user", "created"])


def downgrade() -> None:
    op.drop_index("npm_tokens_by_user", table_name="npm_tokens")
    op.drop_table("npm_tokens")
    op.drop_table("npm_users")
    op.drop_index("npm_maintainers_by_user", table_name="npm_maintainers")
    op.drop_table("npm_maintainers")
    op.drop_table("npm_tags")
    op.drop_table("npm_versions")
    op.drop_index("npm_packages_by_modified", table_name="npm_packages")
    op.drop_table("npm_packages")
