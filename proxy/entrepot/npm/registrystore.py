"""The private registry's metadata on SQL (SQLAlchemy Core): SQLite by default, PostgreSQL for
replicas. Tarballs are not here: they live in blob storage, under the keys this store records.

The schema is revision 0003 (``entrepot/sql/migrations/versions/0003_npm_registry.py``); the
tables below mirror it. What the store guarantees:

* **A version number is never reused.** ``npm_versions`` keeps a row for every version ever
  published; an unpublish only marks it (``unpublished``, the manifest dropped, the tarball
  key kept for the caller to delete the blob). No code path deletes a version row, so the
  table's primary key refuses a second publish of the same number, whoever asks and however
  long after: :class:`ConflictError` says when it was published (and unpublished) and what
  to publish instead.
* **rev** counts the writes to a package's document: every write that changes it adds one, in
  the same transaction. It never goes down, even across a whole unpublish and a new first
  publish, so a stale ``_rev`` never matches again. A write given ``rev=`` checks it against
  the stored one first (optimistic concurrency: ``PUT /<name>/-rev/<rev>``); a mismatch is a
  :class:`ConflictError` and nothing is written.
* **Every write is one transaction** (:func:`entrepot.sql.engine.writing`: ``BEGIN
  IMMEDIATE`` on SQLite, so writers queue for the file lock instead of failing; on
  PostgreSQL the package's row is taken ``FOR UPDATE`` first, so writers of one package run
  one after the other and writers of different packages in parallel). Checks read inside that
  transaction, after the lock: two publishes of the same version cannot both pass, and if
  they ever did, the primary key would refuse the second. A failure leaves nothing
  half-written.
* The **document-level fields** (description, readme, homepage, keywords, repository, author,
  license, bugs, ...) are the ones of the version ``latest`` points at, refreshed in the same
  transaction whenever ``latest`` moves. A live package always has a ``latest`` tag.
* A **publish costs the same at any version count**: it inserts one version row and touches
  a few tag rows and the package row; nothing is rewritten per version.

Reads of a package are one statement (a ``UNION ALL`` of its row, versions, tags and
maintainers), so they see one snapshot and cost one round trip: what a packument is built
from can never mix two writes. Versions keep their manifest as compact JSON text
(:attr:`VersionRecord.manifest_json`), which the packument can splice without parsing.

Authorization beyond ownership is the caller's: :meth:`RegistryStore.publish` refuses a user
who is not a maintainer of an existing package (:class:`~entrepot.errors.ForbiddenError`),
and every other write takes the user's rights as already checked (``maintainers`` is in the
record the caller reads first).

Errors::

    EntrepotError
    ├── ConflictError        a version number taken, a stale rev, an existing user (409)
    ├── ForbiddenError       publishing over someone else's package (403)
    ├── NotFoundError        no such package, version, tag or user (404)
    ├── InvalidRequestError  removing ``latest``, a tag that looks like a version (400)
    └── UnavailableError     the database cannot answer now (503)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy import Column as C
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from entrepot.errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
)
from entrepot.npm import semver
from entrepot.npm.publish import Publish, Update, check_tag_name
from entrepot.sql.engine import create_engine, dialect_of, reading, translated, writing

__all__ = [
    "DOCUMENT_FIELDS",
    "ConflictError",
    "PackageRecord",
    "PackageSummary",
    "RegistryStore",
    "SearchResult",
    "TarballRecord",
    "TokenRecord",
    "UpdateResult",
    "UserRecord",
    "VersionRecord",
    "open_registry_store",
]


DOCUMENT_FIELDS = (
    "description",
    "homepage",
    "keywords",
    "repository",
    "author",
    "license",
    "bugs",
    "contributors",
    "readmeFilename",
)
"""The packument's top-level fields taken from the ``latest`` version's manifest."""

SEARCH_MAX = 250  # npm's registry answers at most 250 results per page
CHUNK = 500  # values per IN list: well under both drivers' limits on bound parameters

_meta = MetaData()
packages = Table(
    "npm_packages",
    _meta,
    C("name", String(214), primary_key=True),
    C("rev", BigInteger, nullable=False),
    C("created", BigInteger, nullable=False),
    C("modified", BigInteger, nullable=False),
    C("deleted", BigInteger, nullable=True),
    C("document", Text, nullable=False),
    C("readme", Text, nullable=True),
    C("description", Text, nullable=False),
    C("keywords", Text, nullable=False),
    C("author", String(256), nullable=False),
)
versions = Table(
    "npm_versions",
    _meta,
    C("package", String(214), primary_key=True),
    C("version", String(256), primary_key=True),
    C("published", BigInteger, nullable=False),
    C("unpublished", BigInteger, nullable=True),
    C("deprecated", Text, nullable=True),
    C("size", BigInteger, nullable=False),
    C("integrity", String(512), nullable=False),
    C("shasum", String(64), nullable=False),
    C("tarball_key", String(1024), nullable=True),
    C("manifest", Text, nullable=True),
    C("readme", Text, nullable=True),
)
tags = Table(
    "npm_tags",
    _meta,
    C("package", String(214), primary_key=True),
    C("tag", String(256), primary_key=True),
    C("version", String(256), nullable=False),
)
maintainers = Table(
    "npm_maintainers",
    _meta,
    C("package", String(214), primary_key=True),
    C("user", String(214), primary_key=True),
    C("email", String(256), nullable=False),
    C("position", Integer, nullable=False),
)
users = Table(
    "npm_users",
    _meta,
    C("name", String(214), primary_key=True),
    C("email", String(256), nullable=False),
    C("password_hash", Text, nullable=False),
    C("created", BigInteger, nullable=False),
    C("updated", BigInteger, nullable=False),
    C("rev", BigInteger, nullable=False),
    C("admin", Boolean, nullable=False),
    C("roles", Text, nullable=False),
    C("profile", Text, nullable=False),
)
tokens = Table(
    "npm_tokens",
    _meta,
    C("key", String(128), primary_key=True),
    C("user", String(214), nullable=False),
    C("prefix", String(32), nullable=False),
    C("readonly", Boolean, nullable=False),
    C("cidrs", Text, nullable=False),
    C("created", BigInteger, nullable=False),
    C("updated", BigInteger, nullable=False),
)

login_failures = Table(
    "npm_login_failures",
    _meta,
    C("id", Integer, primary_key=True, autoincrement=True),
    C("kind", String(8), nullable=False),
    C("subject", String(256), nullable=False),
    C("at", BigInteger, nullable=False),
)


# -- records -----------------------------------------------------------------------------------


def _ms(when: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is refused (it would be local time)."""
    if when.tzinfo is None:
        raise ValueError("the registry store wants timezone-aware datetimes (UTC)")
    return round(when.timestamp() * 1000)


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class VersionRecord(NamedTuple):
    """A published (live) version. ``manifest_json`` is the manifest as served, compact JSON
    without the readme, ``dist`` completed (``integrity``, ``shasum``) and ``deprecated`` kept
    up to date. Where its tarball is: :meth:`RegistryStore.tarball` (not read here, so that
    a package of thousands of versions reads only what its packument needs). A NamedTuple:
    made thousands at a time, three times faster than a frozen dataclass."""

    version: str
    manifest_json: str
    published_ms: int
    deprecated: str | None

    @property
    def published(self) -> datetime:
        return _time(self.published_ms)

    def manifest(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.manifest_json)
        return value


@dataclass(frozen=True)
class TarballRecord:
    """Where a version's tarball is and what it holds; ``unpublished`` is set once the
    version is unpublished (the key stays, for the caller to delete the blob)."""

    name: str
    version: str
    key: str | None
    size: int
    integrity: str
    shasum: str
    published: datetime
    unpublished: datetime | None


@dataclass(frozen=True)
class PackageRecord:
    """Everything a packument is built from, read in one snapshot.

    ``versions`` are the live ones in publish order; ``unpublished`` maps every version
    number that was unpublished to when (those numbers can never be published again).
    ``deleted`` is set while the whole package is unpublished: then ``versions``,
    ``dist_tags`` and ``maintainers`` are empty and the name can be published again."""

    name: str
    rev: int
    created: datetime
    modified: datetime
    deleted: datetime | None
    document: dict[str, Any]
    readme: str | None
    versions: dict[str, VersionRecord]
    dist_tags: dict[str, str]
    maintainers: tuple[tuple[str, str], ...]
    unpublished: dict[str, datetime] = field(default_factory=dict)

    @property
    def latest(self) -> str | None:
        return self.dist_tags.get("latest")

    def deprecations(self) -> dict[str, str]:
        """Version → ``deprecated`` text ("" when not): what :func:`parse_update` compares."""
        return {v: r.deprecated or "" for v, r in self.versions.items()}


@dataclass(frozen=True)
class PackageSummary:
    """A live package as listings show it (``/-/all/since``, search)."""

    name: str
    document: dict[str, Any]
    dist_tags: dict[str, str]
    maintainers: tuple[tuple[str, str], ...]
    created: datetime
    modified: datetime


@dataclass(frozen=True)
class SearchResult:
    total: int
    packages: list[PackageSummary]


@dataclass(frozen=True)
class UpdateResult:
    """The package's new rev and the tarball keys whose blobs the caller should now delete."""

    rev: int
    tarball_keys: list[str]


@dataclass(frozen=True)
class UserRecord:
    name: str
    email: str
    password_hash: str
    created: datetime
    updated: datetime
    rev: int
    admin: bool
    roles: tuple[str, ...]
    profile: dict[str, Any]


@dataclass(frozen=True)
class TokenRecord:
    """A token, known by the sha512 hex of its value (``key``); ``prefix`` is what a listing
    shows of the value."""

    key: str
    user: str
    prefix: str
    readonly: bool
    cidrs: tuple[str, ...]
    created: datetime
    updated: datetime


@dataclass(frozen=True)
class _State:
    rev: int
    deleted: int | None
    created: bool  # this transaction inserted the row


# -- document fields ---------------------------------------------------------------------------


def _author_name(value: object) -> str:
    """``{"name": "Jane"}`` or ``"Jane <jane@example.com> (https://...)"`` → ``jane``."""
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str):
        return ""
    return value.split("<", 1)[0].split("(", 1)[0].strip().lower()[:256]


def _keyword_list(value: object) -> list[str]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list):
        return []
    return [k.strip().lower() for k in value if isinstance(k, str) and k.strip()]


def _keyword_text(value: object) -> str:
    """Keywords as ``\\nkw1\\nkw2\\n``: ``LIKE '%\\nkw\\n%'`` matches one exactly."""
    words = _keyword_list(value)
    return "\n" + "\n".join(words) + "\n" if words else ""


def _document_columns(manifest: Mapping[str, Any], readme: str | None) -> dict[str, Any]:
    """The package row's document columns from the ``latest`` version's manifest."""
    document = {k: manifest[k] for k in DOCUMENT_FIELDS if k in manifest}
    description = manifest.get("description")
    return {
        "document": _dumps(document),
        "readme": readme,
        "description": description if isinstance(description, str) else "",
        "keywords": _keyword_text(manifest.get("keywords")),
        "author": _author_name(manifest.get("author")),
    }


def _newest(candidates: Iterable[str]) -> str | None:
    """What ``latest`` moves to: the newest release, else the newest prerelease."""
    pool = list(candidates)
    return semver.newest(pool) or semver.newest(pool, prereleases=True) or max(pool, default=None)


def _next_patch(version: str) -> str:
    parsed = semver.try_parse(version)
    if parsed is None:
        return "a higher version"
    if parsed.is_prerelease:
        return f"e.g. {parsed.major}.{parsed.minor}.{parsed.patch}-{'.'.join(parsed.prerelease)}.1"
    return f"e.g. {parsed.major}.{parsed.minor}.{parsed.patch + 1}"


def _day(ms: int) -> str:
    return _time(ms).strftime("%Y-%m-%d %H:%M UTC")


def _taken(name: str, version: str, published: int, unpublished: int | None) -> ConflictError:
    if unpublished is None:
        return ConflictError(
            f"{name}@{version} was already published (on {_day(published)}): a version number"
            f" is published once; bump the version ({_next_patch(version)}) and publish again"
        )
    return ConflictError(
        f"{name}@{version} was published before (on {_day(published)}) and unpublished on"
        f" {_day(unpublished)}: version numbers are never reused; publish"
        f" {_next_patch(version)}"
    )


def _check_rev(name: str, given: int | None, stored: int) -> None:
    if given is not None and given != stored:
        raise ConflictError(
            f"the document of {name} changed since you read it (rev {given}, now {stored}):"
            f" read it again with ?write=true and retry"
        )


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]


# One statement reads a package: its row, versions, tags and maintainers as rows of one
# shape (kind, key, three texts, four numbers), so they come from one snapshot. Only the
# NULLs that fill a shape are cast: PostgreSQL needs their types to unite the branches.
_TEXTS = 3
_NUMBERS = 4


def _shaped(
    kind: str, key: Any, texts: Sequence[Any] = (), numbers: Sequence[Any] = ()
) -> list[Any]:
    columns: list[Any] = [literal(kind, String(1)).label("kind"), key.label("key")]
    for i in range(_TEXTS):
        value = texts[i] if i < len(texts) else cast(null(), Text)
        columns.append(value.label(f"t{i}"))
    for i in range(_NUMBERS):
        value = numbers[i] if i < len(numbers) else cast(null(), BigInteger)
        columns.append(value.label(f"n{i}"))
    return columns


def _package_query(name: str) -> Any:
    p, v, t, m = packages.c, versions.c, tags.c, maintainers.c
    return union_all(
        select(
            *_shaped("p", p.name, (p.document, p.readme), (p.rev, p.created, p.modified, p.deleted))
        ).where(p.name == name),
        select(
            *_shaped("v", v.version, (v.manifest, v.deprecated), (v.published, v.unpublished))
        ).where(v.package == name),
        select(*_shaped("t", t.tag, (t.version,))).where(t.package == name),
        select(*_shaped("m", m.user, (m.email,), (m.position,))).where(m.package == name),
    )


def _record(rows: Sequence[Any]) -> PackageRecord | None:
    """The record from the rows of :func:`_package_query` (tuples unpacked: attribute access
    on thousands of rows costs more than the rest)."""
    head: tuple[Any, ...] | None = None
    live: list[tuple[int, str, VersionRecord]] = []
    unpublished: dict[str, datetime] = {}
    dist_tags: dict[str, str] = {}
    people: list[tuple[int, str, str]] = []
    for kind, key, t0, t1, _t2, n0, n1, n2, n3 in rows:
        if kind == "v":
            if n1 is None:
                live.append((n0, key, VersionRecord(key, t0, n0, t1)))
            else:
                unpublished[key] = _time(n1)
        elif kind == "t":
            dist_tags[key] = t0
        elif kind == "m":
            people.append((n0, key, t0))
        else:
            head = (key, t0, t1, n0, n1, n2, n3)
    if head is None:
        return None
    name, document, readme, rev, created, modified, deleted = head
    live.sort()  # by publish time, then version: never reaches the records (keys are unique)
    return PackageRecord(
        name=name,
        rev=int(rev),
        created=_time(created),
        modified=_time(modified),
        deleted=None if deleted is None else _time(deleted),
        document=json.loads(document),
        readme=readme,
        versions={version: record for _, version, record in live},
        dist_tags=dict(sorted(dist_tags.items())),
        maintainers=tuple((user, email) for _, user, email in sorted(people)),
        unpublished=unpublished,
    )


def _user(row: Any) -> UserRecord:
    return UserRecord(
        name=row.name,
        email=row.email,
        password_hash=row.password_hash,
        created=_time(row.created),
        updated=_time(row.updated),
        rev=int(row.rev),
        admin=bool(row.admin),
        roles=tuple(json.loads(row.roles)),
        profile=json.loads(row.profile),
    )


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        key=row.key,
        user=row.user,
        prefix=row.prefix,
        readonly=bool(row.readonly),
        cidrs=tuple(json.loads(row.cidrs)),
        created=_time(row.created),
        updated=_time(row.updated),
    )


class RegistryStore:
    """The registry's metadata on an AsyncEngine whose schema
    :func:`entrepot.sql.migrate.upgrade` made (revision 0003 or later)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = dialect_of(engine)
        self._insert = sqlite.insert if self._dialect == "sqlite" else postgresql.insert

    # -- reads ---------------------------------------------------------------------------------

    async def package(self, name: str) -> PackageRecord | None:
        """The package as stored (None: never published here), in one statement."""
        with translated("read a package"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(_package_query(name))).all()
        return _record(rows)

    async def tags(self, name: str) -> dict[str, str] | None:
        """The dist-tags of a live package; None when there is no such package."""
        p, t = packages, tags
        query = (
            select(p.c.deleted, t.c.tag, t.c.version)
            .select_from(p.outerjoin(t, t.c.package == p.c.name))
            .where(p.c.name == name)
        )
        with translated("read dist-tags"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(query)).all()
        if not rows or rows[0].deleted is not None:
            return None
        return dict(sorted((r.tag, r.version) for r in rows if r.tag is not None))

    async def tarball(self, name: str, version: str) -> TarballRecord | None:
        """A version's tarball: one primary-key lookup (None: never published here)."""
        v = versions.c
        query = select(
            v.tarball_key, v.size, v.integrity, v.shasum, v.published, v.unpublished
        ).where(v.package == name, v.version == version)
        with translated("read a tarball's record"):
            async with reading(self.engine) as conn:
                row = (await conn.execute(query)).first()
        if row is None:
            return None
        return TarballRecord(
            name=name,
            version=version,
            key=row.tarball_key,
            size=int(row.size),
            integrity=row.integrity,
            shasum=row.shasum,
            published=_time(row.published),
            unpublished=None if row.unpublished is None else _time(row.unpublished),
        )

    async def tarball_keys(self, name: str) -> dict[str, str]:
        """The blob keys of a package's live versions, in one statement (what the documents of
        a package published here point the tarball endpoint at)."""
        v = versions.c
        query = select(v.version, v.tarball_key).where(
            v.package == name, v.unpublished.is_(None), v.tarball_key.is_not(None)
        )
        with translated("read tarball keys"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(query)).all()
        return {str(version): str(key) for version, key in rows}

    async def referenced_tarball_keys(self) -> set[str]:
        """Every blob key a version row names (live or unpublished): a blob under
        ``npm-local/`` named by none is a leftover of a publish that did not commit."""
        v = versions.c
        query = select(v.tarball_key).where(v.tarball_key.is_not(None))
        with translated("read tarball keys"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(query)).scalars().all()
        return {str(key) for key in rows}

    # -- package writes ------------------------------------------------------------------------

    async def _lock(self, conn: AsyncConnection, name: str, *, live: bool = True) -> _State:
        """The package's row, locked for this transaction (PostgreSQL ``FOR UPDATE``; on
        SQLite the transaction already holds the write lock). NotFoundError when there is no
        such package (or, with ``live``, it is wholly unpublished)."""
        p = packages.c
        query = select(p.rev, p.deleted).where(p.name == name).with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFoundError(f"{name} is not published on this registry")
        if live and row.deleted is not None:
            raise NotFoundError(
                f"{name} was unpublished on {_day(row.deleted)}: publish it again to bring the"
                " name back"
            )
        return _State(rev=int(row.rev), deleted=row.deleted, created=False)

    async def _lock_or_create(self, conn: AsyncConnection, name: str, when: int) -> _State:
        """The package's row, locked; inserted (rev 0, no versions) when there is none. Two
        first publishes at once: one inserts, the other waits for it, then finds the row."""
        blank = {"document": "{}", "readme": None, "description": "", "keywords": "", "author": ""}
        new = (
            self._insert(packages)
            .values(name=name, rev=0, created=when, modified=when, deleted=None, **blank)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(packages.c.name)
        )
        if (await conn.execute(new)).first() is not None:
            return _State(rev=0, deleted=None, created=True)
        return await self._lock(conn, name, live=False)

    async def _owners(self, conn: AsyncConnection, name: str) -> list[str]:
        m = maintainers.c
        query = select(m.user).where(m.package == name).order_by(m.position)
        return list((await conn.execute(query)).scalars())

    async def _bump(
        self, conn: AsyncConnection, name: str, state: _State, when: int, **values: Any
    ) -> int:
        rev = state.rev + 1
        await conn.execute(
            update(packages).where(packages.c.name == name).values(rev=rev, modified=when, **values)
        )
        return rev

    async def _latest_document(self, conn: AsyncConnection, name: str) -> dict[str, Any]:
        """The document columns from the version ``latest`` points at now ({} if none)."""
        v, t = versions.c, tags.c
        query = (
            select(v.manifest, v.readme)
            .select_from(versions.join(tags, (t.package == v.package) & (t.version == v.version)))
            .where(t.package == name, t.tag == "latest", v.unpublished.is_(None))
        )
        row = (await conn.execute(query)).first()
        if row is None or row.manifest is None:
            return {}
        return _document_columns(json.loads(row.manifest), row.readme)

    async def publish(
        self,
        p: Publish,
        *,
        tarball_key: str,
        size: int,
        user: str,
        now: datetime,
        rev: int | None = None,
    ) -> int:
        """Add one version (its tarball already written under ``tarball_key``); the new rev.

        The first publish of a name (or the first after a whole unpublish) creates the
        package with ``user`` as its one maintainer; a later one needs ``user`` among the
        maintainers (ForbiddenError). A version number that is or was published is refused
        (ConflictError). The publish's tags point at the version (``latest`` when it has
        none), and a package without ``latest`` gets it. All of it, or nothing.

        The caller must not have written the tarball over an existing version's blob: write
        it under a key no other version uses, or check :meth:`package` first (the version
        check here is the authoritative one)."""
        when = _ms(now)
        manifest = {k: v for k, v in p.manifest.items() if k != "readme"}
        deprecated = manifest.get("deprecated")
        row = {
            "package": p.name,
            "version": p.version,
            "manifest": _dumps(manifest),
            "readme": p.readme,
            "published": when,
            "unpublished": None,
            "tarball_key": tarball_key,
            "size": size,
            "integrity": p.integrity,
            "shasum": p.shasum,
            "deprecated": deprecated if isinstance(deprecated, str) and deprecated else None,
        }
        v, t = versions.c, tags.c
        with translated("publish"):
            async with writing(self.engine) as conn:
                state = await self._lock_or_create(conn, p.name, when)
                fresh = state.created or state.deleted is not None
                if not fresh:
                    owners = await self._owners(conn, p.name)
                    if user not in owners:
                        raise ForbiddenError(
                            f"{user} is not a maintainer of {p.name} (maintainers:"
                            f" {', '.join(owners) or 'none'}): ask one of them to run"
                            f" `npm owner add {user} {p.name}`"
                        )
                _check_rev(p.name, rev, state.rev)
                known = (
                    await conn.execute(
                        select(v.published, v.unpublished).where(
                            v.package == p.name, v.version == p.version
                        )
                    )
                ).first()
                if known is not None:
                    raise _taken(p.name, p.version, known.published, known.unpublished)
                try:
                    await conn.execute(versions.insert(), [row])
                except IntegrityError as e:  # pragma: no cover - the lock above prevents it
                    raise ConflictError(
                        f"{p.name}@{p.version} was published at the same time"
                    ) from e
                wanted = dict(p.tags) or {"latest": p.version}
                tag_rows = [
                    {"package": p.name, "tag": tag, "version": target}
                    for tag, target in sorted(wanted.items())
                ]
                upsert = self._insert(tags)
                await conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["package", "tag"],
                        set_={"version": upsert.excluded.version},
                    ),
                    tag_rows,
                )
                latest = wanted.get("latest")
                if latest is None:
                    query = select(t.version).where(t.package == p.name, t.tag == "latest")
                    latest = (await conn.execute(query)).scalar_one_or_none()
                    if latest is None:
                        latest = p.version
                        await conn.execute(
                            tags.insert(), [{"package": p.name, "tag": "latest", "version": latest}]
                        )
                values: dict[str, Any] = {}
                if latest == p.version:
                    values.update(_document_columns(manifest, p.readme))
                if fresh:
                    email = (
                        await conn.execute(select(users.c.email).where(users.c.name == user))
                    ).scalar_one_or_none()
                    await conn.execute(delete(maintainers).where(maintainers.c.package == p.name))
                    await conn.execute(
                        maintainers.insert(),
                        [{"package": p.name, "user": user, "email": email or "", "position": 0}],
                    )
                    if state.deleted is not None:
                        values.update(deleted=None, created=when)
                return await self._bump(conn, p.name, state, when, **values)

    async def set_tag(
        self, name: str, tag: str, version: str, *, now: datetime, rev: int | None = None
    ) -> int:
        """Point ``tag`` at a live version (``npm dist-tag add``); the new rev."""
        check_tag_name(tag)
        v = versions.c
        with translated("set a dist-tag"):
            async with writing(self.engine) as conn:
                state = await self._lock(conn, name)
                _check_rev(name, rev, state.rev)
                found = (
                    await conn.execute(
                        select(v.unpublished).where(v.package == name, v.version == version)
                    )
                ).first()
                if found is None or found.unpublished is not None:
                    gone = "" if found is None else f" (unpublished on {_day(found.unpublished)})"
                    raise NotFoundError(f"{name}@{version} is not published here{gone}")
                upsert = self._insert(tags)
                await conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["package", "tag"],
                        set_={"version": upsert.excluded.version},
                    ),
                    [{"package": name, "tag": tag, "version": version}],
                )
                values = await self._latest_document(conn, name) if tag == "latest" else {}
                return await self._bump(conn, name, state, _ms(now), **values)

    async def remove_tag(
        self, name: str, tag: str, *, now: datetime, rev: int | None = None
    ) -> int:
        """Remove a dist-tag (``npm dist-tag rm``); ``latest`` stays. The new rev."""
        if tag == "latest":
            raise InvalidRequestError(
                f"the latest tag of {name} cannot be removed: point it at another version"
                f" (npm dist-tag add {name}@<version> latest)"
            )
        t = tags.c
        with translated("remove a dist-tag"):
            async with writing(self.engine) as conn:
                state = await self._lock(conn, name)
                _check_rev(name, rev, state.rev)
                gone = await conn.execute(delete(tags).where(t.package == name, t.tag == tag))
                if not gone.rowcount:
                    raise NotFoundError(f"{name} has no dist-tag {tag!r}")
                return await self._bump(conn, name, state, _ms(now))

    async def _unpublish(
        self, conn: AsyncConnection, name: str, removed: Sequence[str], when: int
    ) -> tuple[list[str], bool, bool]:
        """Mark versions unpublished, re-point or drop the tags on them. Returns their
        tarball keys, whether ``latest`` moved, and whether no version is left."""
        v, t = versions.c, tags.c
        query = select(v.version, v.tarball_key).where(v.package == name, v.unpublished.is_(None))
        live = {r.version: r.tarball_key for r in (await conn.execute(query)).all()}
        missing = sorted(set(removed) - set(live))
        if missing:
            raise NotFoundError(f"{name}@{missing[0]} is not published here")
        gone = sorted(set(removed))
        for chunk in _chunks(gone):
            await conn.execute(
                update(versions)
                .where(v.package == name, v.version.in_(chunk))
                .values(unpublished=when, manifest=None, readme=None, deprecated=None)
            )
        remaining = set(live) - set(gone)
        pointing = (await conn.execute(select(t.tag, t.version).where(t.package == name))).all()
        moved = False
        for tag, target in pointing:
            if target not in gone:
                continue
            newest = _newest(remaining) if tag == "latest" else None
            where = (t.package == name, t.tag == tag)
            if newest is None:
                await conn.execute(delete(tags).where(*where))
            else:
                await conn.execute(update(tags).where(*where).values(version=newest))
                moved = True
        return [live[x] for x in gone if live[x]], moved, not remaining

    async def _wholly_unpublished(self, conn: AsyncConnection, name: str) -> None:
        """No version left: the tags and maintainers go (the next publish starts anew)."""
        await conn.execute(delete(tags).where(tags.c.package == name))
        await conn.execute(delete(maintainers).where(maintainers.c.package == name))

    async def update(
        self, name: str, change: Update, *, now: datetime, rev: int | None = None
    ) -> UpdateResult:
        """A whole-document write as its difference (:func:`entrepot.npm.publish.parse_update`):
        deprecations, removed versions (unpublished: their numbers never come back; a tag on
        one moves to the newest remaining version for ``latest`` and is dropped otherwise),
        the maintainers. With no version left the package is wholly unpublished. Returns the
        new rev (unchanged when nothing changes) and the tarball keys to delete."""
        when = _ms(now)
        v = versions.c
        with translated("update a package"):
            async with writing(self.engine) as conn:
                state = await self._lock(conn, name)
                _check_rev(name, rev, state.rev)
                if change.empty:
                    return UpdateResult(rev=state.rev, tarball_keys=[])
                values: dict[str, Any] = {}
                if change.deprecated:
                    wanted = sorted(change.deprecated)
                    found: dict[str, str] = {}
                    for chunk in _chunks(wanted):
                        query = select(v.version, v.manifest).where(
                            v.package == name, v.version.in_(chunk), v.unpublished.is_(None)
                        )
                        found.update((r.version, r.manifest) for r in await conn.execute(query))
                    missing = [x for x in wanted if x not in found]
                    if missing:
                        raise NotFoundError(f"{name}@{missing[0]} is not published here")
                    rows = []
                    for version in wanted:
                        message = change.deprecated[version]
                        manifest = json.loads(found[version])
                        if message:
                            manifest["deprecated"] = message
                        else:
                            manifest.pop("deprecated", None)
                        rows.append(
                            {
                                "b_version": version,
                                "b_manifest": _dumps(manifest),
                                "b_deprecated": message or None,
                            }
                        )
                    await conn.execute(
                        update(versions)
                        .where(v.package == name, v.version == bindparam("b_version"))
                        .values(
                            manifest=bindparam("b_manifest"),
                            deprecated=bindparam("b_deprecated"),
                        ),
                        rows,
                    )
                keys: list[str] = []
                if change.removed:
                    keys, moved, empty = await self._unpublish(conn, name, change.removed, when)
                    if empty:
                        await self._wholly_unpublished(conn, name)
                        return UpdateResult(
                            rev=await self._bump(conn, name, state, when, deleted=when),
                            tarball_keys=keys,
                        )
                    if moved:
                        values.update(await self._latest_document(conn, name))
                if change.maintainers is not None:
                    await self._set_maintainers(conn, name, change.maintainers)
                return UpdateResult(
                    rev=await self._bump(conn, name, state, when, **values), tarball_keys=keys
                )

    async def _set_maintainers(
        self, conn: AsyncConnection, name: str, people: Sequence[tuple[str, str]]
    ) -> None:
        if not people:
            raise InvalidRequestError(f"{name} keeps at least one maintainer")
        seen: dict[str, str] = {}
        for user, email in people:
            seen.setdefault(user, email)
        await conn.execute(delete(maintainers).where(maintainers.c.package == name))
        await conn.execute(
            maintainers.insert(),
            [
                {"package": name, "user": user, "email": email, "position": i}
                for i, (user, email) in enumerate(seen.items())
            ],
        )

    async def unpublish_all(
        self, name: str, *, now: datetime, rev: int | None = None
    ) -> UpdateResult:
        """``DELETE /<name>/-rev/<rev>``: every version unpublished (their numbers are never
        reused), tags and maintainers dropped, the package marked deleted; the name can be
        published again, by anyone, as a new package. Returns the tarball keys to delete."""
        when = _ms(now)
        v = versions.c
        with translated("unpublish a package"):
            async with writing(self.engine) as conn:
                state = await self._lock(conn, name)
                _check_rev(name, rev, state.rev)
                query = select(v.tarball_key).where(v.package == name, v.unpublished.is_(None))
                keys = [k for k in (await conn.execute(query)).scalars() if k]
                await conn.execute(
                    update(versions)
                    .where(v.package == name, v.unpublished.is_(None))
                    .values(unpublished=when, manifest=None, readme=None, deprecated=None)
                )
                await self._wholly_unpublished(conn, name)
                new_rev = await self._bump(conn, name, state, when, deleted=when)
                return UpdateResult(rev=new_rev, tarball_keys=keys)

    async def remove_version_tarball(
        self, name: str, version: str, *, now: datetime, rev: int | None = None
    ) -> str | None:
        """``DELETE /<name>/-/<file>.tgz/-rev/<rev>``: the tarball key to delete.

        npm sends it after the ``PUT`` that removed the version: then the version is already
        unpublished and its key is answered again (idempotent: no write, no rev check). Sent
        for a live version, it unpublishes that version first (as ``update`` would). A version
        never published here is NotFoundError."""
        when = _ms(now)
        v = versions.c
        with translated("remove a tarball"):
            async with writing(self.engine) as conn:
                state = await self._lock(conn, name, live=False)
                query = select(v.unpublished, v.tarball_key).where(
                    v.package == name, v.version == version
                )
                found = (await conn.execute(query)).first()
                if found is None:
                    raise NotFoundError(f"{name}@{version} was never published here")
                if found.unpublished is not None:
                    key: str | None = found.tarball_key
                    return key
                _check_rev(name, rev, state.rev)
                keys, moved, empty = await self._unpublish(conn, name, [version], when)
                values: dict[str, Any] = {}
                if empty:
                    await self._wholly_unpublished(conn, name)
                    values["deleted"] = when
                elif moved:
                    values.update(await self._latest_document(conn, name))
                await self._bump(conn, name, state, when, **values)
                return keys[0] if keys else None

    # -- users -----------------------------------------------------------------------------------

    async def create_user(
        self,
        name: str,
        *,
        email: str,
        password_hash: str,
        now: datetime,
        admin: bool = False,
        roles: Sequence[str] = (),
        profile: Mapping[str, Any] | None = None,
    ) -> UserRecord:
        """A new user (rev 1); ConflictError when the name is taken."""
        when = _ms(now)
        row = {
            "name": name,
            "email": email,
            "password_hash": password_hash,
            "created": when,
            "updated": when,
            "rev": 1,
            "admin": admin,
            "roles": _dumps(list(roles)),
            "profile": _dumps(dict(profile or {})),
        }
        new = (
            self._insert(users)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(users.c.name)
        )
        with translated("create a user"):
            async with writing(self.engine) as conn:
                if (await conn.execute(new)).first() is None:
                    raise ConflictError(f"the user {name} already exists: log in as {name}")
        return _user(_Row(row))

    async def user(self, name: str) -> UserRecord | None:
        with translated("read a user"):
            async with reading(self.engine) as conn:
                row = (await conn.execute(select(users).where(users.c.name == name))).first()
        return None if row is None else _user(row)

    async def update_user(
        self,
        name: str,
        *,
        now: datetime,
        rev: int | None = None,
        email: str | None = None,
        password_hash: str | None = None,
        admin: bool | None = None,
        roles: Sequence[str] | None = None,
        profile: Mapping[str, Any] | None = None,
    ) -> UserRecord:
        """Change the fields given (None: kept); the rev goes up by one. A ``rev`` that is
        not the stored one is a ConflictError; an unknown user NotFoundError."""
        changes: dict[str, Any] = {}
        if email is not None:
            changes["email"] = email
        if password_hash is not None:
            changes["password_hash"] = password_hash
        if admin is not None:
            changes["admin"] = admin
        if roles is not None:
            changes["roles"] = _dumps(list(roles))
        if profile is not None:
            changes["profile"] = _dumps(dict(profile))
        u = users.c
        with translated("update a user"):
            async with writing(self.engine) as conn:
                query = select(users).where(u.name == name).with_for_update()
                row = (await conn.execute(query)).first()
                if row is None:
                    raise NotFoundError(f"no user {name} on this registry")
                if rev is not None and rev != row.rev:
                    raise ConflictError(
                        f"the user document of {name} changed since you read it (rev {rev},"
                        f" now {row.rev}): read it again and retry"
                    )
                changes.update(rev=row.rev + 1, updated=_ms(now))
                await conn.execute(update(users).where(u.name == name).values(**changes))
        return _user(_Row({**row._asdict(), **changes}))

    async def set_password(self, name: str, password_hash: str, *, now: datetime) -> int:
        """Replace the password hash; the user's new rev."""
        return (await self.update_user(name, now=now, password_hash=password_hash)).rev

    # -- tokens ----------------------------------------------------------------------------------

    async def create_token(
        self,
        key: str,
        *,
        user: str,
        prefix: str,
        readonly: bool,
        cidrs: Sequence[str],
        now: datetime,
    ) -> TokenRecord:
        """Store a token by the sha512 hex of its value (the value itself is never stored)."""
        when = _ms(now)
        row = {
            "key": key,
            "user": user,
            "prefix": prefix,
            "readonly": readonly,
            "cidrs": _dumps(list(cidrs)),
            "created": when,
            "updated": when,
        }
        new = (
            self._insert(tokens)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(tokens.c.key)
        )
        with translated("create a token"):
            async with writing(self.engine) as conn:
                if (await conn.execute(new)).first() is None:
                    raise ConflictError("this token exists already: create another")
        return _token(_Row(row))

    async def token(self, key: str) -> TokenRecord | None:
        """The token whose value hashes to ``key``: every authenticated request asks, so it
        is one primary-key lookup."""
        with translated("read a token"):
            async with reading(self.engine) as conn:
                row = (await conn.execute(select(tokens).where(tokens.c.key == key))).first()
        return None if row is None else _token(row)

    async def token_owner(self, key: str) -> tuple[TokenRecord, bool | None] | None:
        """:meth:`token` with whether its user is an administrator (None: the user is gone),
        in one query: what every authenticated request asks."""
        query = (
            select(tokens, users.c.admin.label("owner_admin"), users.c.name.label("owner"))
            .join_from(tokens, users, users.c.name == tokens.c.user, isouter=True)
            .where(tokens.c.key == key)
        )
        with translated("read a token"):
            async with reading(self.engine) as conn:
                row = (await conn.execute(query)).first()
        if row is None:
            return None
        return _token(row), None if row.owner is None else bool(row.owner_admin)

    # -- failed logins (the limiter every worker and replica shares) ---------------------------

    async def recent_login_failures(
        self, keys: Sequence[tuple[str, str]], *, since: datetime, limit: int
    ) -> dict[tuple[str, str], list[datetime]]:
        """The newest ``limit`` failures after ``since`` of each (kind, subject), newest first."""
        f = login_failures.c
        found: dict[tuple[str, str], list[datetime]] = {}
        with translated("read failed logins"):
            async with reading(self.engine) as conn:
                for kind, subject in keys:
                    query = (
                        select(f.at)
                        .where(f.kind == kind, f.subject == subject[:256], f.at > _ms(since))
                        .order_by(f.at.desc())
                        .limit(limit)
                    )
                    rows = (await conn.execute(query)).scalars().all()
                    found[kind, subject] = [_time(at) for at in rows]
        return found

    async def login_failed(
        self, keys: Sequence[tuple[str, str]], *, now: datetime, forget_before: datetime
    ) -> None:
        """Count one failure against each (kind, subject); failures older than
        ``forget_before`` (of anyone) are deleted on the way, so the table stays small."""
        f = login_failures.c
        rows = [{"kind": k, "subject": s[:256], "at": _ms(now)} for k, s in keys]
        with translated("count a failed login"):
            async with writing(self.engine) as conn:
                await conn.execute(delete(login_failures).where(f.at < _ms(forget_before)))
                await conn.execute(login_failures.insert(), rows)

    async def login_succeeded(self, kind: str, subject: str) -> None:
        """Forget the failures counted against (kind, subject)."""
        f = login_failures.c
        with translated("clear failed logins"):
            async with writing(self.engine) as conn:
                await conn.execute(
                    delete(login_failures).where(f.kind == kind, f.subject == subject[:256])
                )

    async def tokens(self, user: str, *, page: int = 0, per_page: int = 10) -> list[TokenRecord]:
        """A user's tokens, newest first (``npm token list``)."""
        t = tokens.c
        query = (
            select(tokens)
            .where(t.user == user)
            .order_by(t.created.desc(), t.key)
            .limit(per_page)
            .offset(page * per_page)
        )
        with translated("list tokens"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(query)).all()
        return [_token(r) for r in rows]

    async def revoke_token(self, user: str, key: str) -> bool:
        """Delete one of ``user``'s tokens by key; False when the user has no such token."""
        t = tokens.c
        with translated("revoke a token"):
            async with writing(self.engine) as conn:
                gone = await conn.execute(delete(tokens).where(t.key == key, t.user == user))
        return bool(gone.rowcount)

    # -- listings --------------------------------------------------------------------------------

    async def _summaries(self, conn: AsyncConnection, chosen: Any) -> dict[str, PackageSummary]:
        """Summaries of the live packages named in ``chosen`` (a list of names or a select of
        them), read in one statement."""
        p, t, m = packages.c, tags.c, maintainers.c
        query = union_all(
            select(*_shaped("p", p.name, (p.document,), (p.created, p.modified))).where(
                p.name.in_(chosen), p.deleted.is_(None)
            ),
            select(*_shaped("t", t.package, (t.tag, t.version))).where(t.package.in_(chosen)),
            select(*_shaped("m", m.package, (m.user, m.email), (m.position,))).where(
                m.package.in_(chosen)
            ),
        )
        rows = (await conn.execute(query)).all()
        heads = {r.key: r for r in rows if r.kind == "p"}
        dist_tags: dict[str, dict[str, str]] = {n: {} for n in heads}
        people: dict[str, list[tuple[int, str, str]]] = {n: [] for n in heads}
        for r in rows:
            if r.key not in heads:
                continue
            if r.kind == "t":
                dist_tags[r.key][r.t0] = r.t1
            elif r.kind == "m":
                people[r.key].append((int(r.n0), r.t0, r.t1))
        return {
            name: PackageSummary(
                name=name,
                document=json.loads(head.t0),
                dist_tags=dict(sorted(dist_tags[name].items())),
                maintainers=tuple((u, e) for _, u, e in sorted(people[name])),
                created=_time(head.n0),
                modified=_time(head.n1),
            )
            for name, head in heads.items()
        }

    async def all_since(self, since_ms: int) -> list[PackageSummary]:
        """Live packages modified after ``since_ms`` (``/-/all/since?startkey=``), oldest
        change first."""
        p = packages.c
        chosen = select(p.name).where(p.modified > since_ms, p.deleted.is_(None))
        with translated("list packages"):
            async with reading(self.engine) as conn:
                found = await self._summaries(conn, chosen)
        return sorted(found.values(), key=lambda s: (s.modified, s.name))

    async def by_users(self, names: Sequence[str]) -> dict[str, list[str]]:
        """``/-/by-user/a|b``: each user's packages by name (a user with none: [])."""
        m = maintainers.c
        wanted = list(dict.fromkeys(names))
        found: dict[str, list[str]] = {n: [] for n in wanted}
        with translated("list packages"):
            async with reading(self.engine) as conn:
                for chunk in _chunks(wanted):
                    query = (
                        select(m.user, m.package)
                        .where(m.user.in_(chunk))
                        .order_by(m.user, m.package)
                    )
                    for user, package in (await conn.execute(query)).all():
                        found[user].append(package)
        return found

    async def search(
        self,
        text: str,
        *,
        author: str | None = None,
        maintainer: str | None = None,
        keywords: Sequence[str] = (),
        size: int = 20,
        offset: int = 0,
    ) -> SearchResult:
        """Live packages matching every word of ``text`` (in the name, description or
        keywords, case-insensitively) and the qualifiers (``author:`` the author's name,
        ``maintainer:`` a maintainer, ``keywords:`` each keyword exactly), the name equal to
        the text first, then names starting with it, then names holding it, then the rest,
        each by name. ``size`` is at most 250."""
        p = packages.c
        name = func.lower(p.name)
        where: list[ColumnElement[bool]] = [p.deleted.is_(None)]
        phrase = " ".join(text.lower().split())
        for word in phrase.split():
            where.append(
                or_(
                    name.contains(word, autoescape=True),
                    func.lower(p.description).contains(word, autoescape=True),
                    p.keywords.contains(word, autoescape=True),
                )
            )
        if author:
            where.append(p.author == author.strip().lower())
        if maintainer:
            m = maintainers.c
            where.append(exists().where(m.package == p.name, m.user == maintainer))
        for keyword in keywords:
            for word in _keyword_list([keyword]):
                where.append(p.keywords.contains(f"\n{word}\n", autoescape=True))
        rank: Any = literal(0)
        if phrase:
            rank = case(
                (name == phrase, 0),
                (name.startswith(phrase, autoescape=True), 1),
                (name.contains(phrase, autoescape=True), 2),
                else_=3,
            )
        size = max(0, min(size, SEARCH_MAX))
        page: Select[Any] = (
            select(p.name).where(*where).order_by(rank, p.name).limit(size).offset(max(0, offset))
        )
        counted = select(func.count()).select_from(packages).where(*where)
        with translated("search"):
            async with reading(self.engine) as conn:
                total = int((await conn.execute(counted)).scalar_one())
                names = list((await conn.execute(page)).scalars()) if size else []
                found = await self._summaries(conn, names) if names else {}
        return SearchResult(total=total, packages=[found[n] for n in names if n in found])

    async def revs(self) -> dict[str, int]:
        """Every package's rev, the wholly unpublished ones too: what the registry compares
        its stored documents with at start (a crash between a write's transaction and its
        documents leaves them behind)."""
        p = packages.c
        with translated("list packages"):
            async with reading(self.engine) as conn:
                rows = (await conn.execute(select(p.name, p.rev))).all()
        return {name: int(rev) for name, rev in rows}

    async def counts(self) -> tuple[int, int]:
        """(live packages, wholly unpublished packages): ``doc_count``, ``doc_del_count``."""
        p = packages.c
        query = select(
            func.coalesce(func.sum(case((p.deleted.is_(None), 1), else_=0)), 0),
            func.coalesce(func.sum(case((p.deleted.is_(None), 0), else_=1)), 0),
        )
        with translated("count packages"):
            async with reading(self.engine) as conn:
                live, deleted = (await conn.execute(query)).one()
        return int(live), int(deleted)

    async def close(self) -> None:
        await self.engine.dispose()


class _Row:
    """Attribute access over a dict, to build a record from values just written."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)


def open_registry_store(url: str | None, data_dir: Path, **engine_options: Any) -> RegistryStore:
    """The store for a database URL (None: ``<data_dir>/entrepot.db``); connects lazily. The
    schema must exist: :func:`entrepot.sql.migrate.migrate` ran before (it applies every
    revision, this one's 0003 included)."""
    return RegistryStore(create_engine(url, data_dir, **engine_options))
