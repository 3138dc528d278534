"""The checksum-database mirror: verify, then cache, and never go back in time.

    lookup/tile request ─▶ memory / storage ─▶ hit: serve (verified when it was stored)
                                          └─ miss ─▶ coalesced fetch through the hops
                                                     ─▶ signed tree head checked (key, then
                                                        consistency with the stored head)
                                                     ─▶ record / tile proven in that tree
                                                     ─▶ atomic put, serve

The latest verified tree head of each database is kept in storage (``sumdb/<name>/head``);
every newer head must be proven to extend it. A head that does not (a fork: the database
showed two histories) is written to ``sumdb/<name>/fork`` and the database fails closed until
an operator clears it (``entrepot sumdb reset``). Modules are checked here too: ``check``
compares an artifact's ``h1:`` with the database's go.sum lines, from a verified lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from entrepot.caches import FailureCache, MemoryCache
from entrepot.coalesce import Coalescer
from entrepot.config import GoCache
from entrepot.errors import (
    EntrepotError,
    NotFoundError,
    UnavailableError,
    VerificationError,
)
from entrepot.gomod.module import escape_path, escape_version, match_prefix_patterns
from entrepot.metrics import Metrics
from entrepot.storage.base import BlobInfo, Storage
from entrepot.sumdb import tlog
from entrepot.sumdb.note import NoteError, Verifiers, open_note

log = logging.getLogger("entrepot.sumdb")
security_log = logging.getLogger("entrepot.security")

TILE_HEIGHT = 8  # what every Go client asks for, and what Go's sumdb server serves
HASH_TILE = "application/octet-stream"
TEXT = "text/plain; charset=UTF-8"

Reason = Literal[
    "signature", "fork", "tile", "lookup", "zip_mismatch", "mod_mismatch", "not_found", "head"
]


class Fetcher(Protocol):
    """One way to reach a database: its own URL or a proxy's ``/sumdb/<name>/``."""

    name: str

    async def get(self, rel: str, what: str) -> bytes: ...


@dataclass(frozen=True)
class Hop:
    """A step of a database's chain: a proxy (asked ``supported`` first), the database
    itself (``direct``), or ``off`` (fetcher None: nothing beyond the cache)."""

    fetcher: Fetcher | None
    via_proxy: bool
    fall_back_on_error: bool


@dataclass(frozen=True)
class DatabaseConfig:
    name: str
    verifiers: Verifiers
    hops: list[Hop]
    patterns: str | None = None


class ForkedError(UnavailableError):
    """The database showed two histories; it is failed closed until an operator resets it."""


class DatabaseUnreachableError(UnavailableError):
    pass


class NotInDatabaseError(VerificationError):
    """The database does not know the version (a private module, or a made-up one)."""


@dataclass
class _Head:
    tree: tlog.Tree
    note: bytes


@dataclass
class Database:
    config: DatabaseConfig
    head: _Head | None = None
    loaded: bool = False
    checked_at: float = 0.0  # when the upstream's latest was last compared (monotonic)
    base: Fetcher | None = None
    base_until: float = 0.0
    proven: set[tuple[int, bytes]] = field(default_factory=set)  # older trees known consistent
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one head update at a time
    opened: dict[bytes, tlog.Tree] = field(default_factory=dict)  # signed heads, verified
    verified_tiles: set[tuple[int, bytes, tlog.Tile]] = field(default_factory=set)
    head_mtime: int = 0
    head_error: str | None = None
    refresh_tried: float = -1e9
    latest_failed_at: float = -1e9
    latest_error: str | None = None
    fork_checked: float = -1e9
    generation: bytes | None = None
    generation_seen: bool = False
    fork_reason: str | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def key(self, rel: str) -> str:
        return f"sumdb/{self.name}/{rel}"


@dataclass(frozen=True)
class Served:
    body: bytes
    content_type: str
    blob: BlobInfo | None
    cache: Literal["hit", "miss", "stale"]
    immutable: bool


Verdict = Literal["verified", "unverified", "unchecked"]


def go_sum_lines(module: str, version: str, text: bytes) -> dict[str, str]:
    """The hashes a lookup record gives for one version: ``{"zip": h1, "mod": h1}``."""
    out: dict[str, str] = {}
    for line in text.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) != 3 or fields[0] != module:
            continue
        if fields[1] == version:
            out.setdefault("zip", fields[2])
        elif fields[1] == f"{version}/go.mod":
            out.setdefault("mod", fields[2])
    return out


def tree_needed(tile: tlog.Tile) -> int:
    """The smallest tree that holds every hash (or record) of a tile."""
    end = (tile.n << tile.height) + tile.width
    return end if tile.level < 0 else end << (tile.height * tile.level)


class SumdbService:
    """All configured databases: the /sumdb/ endpoints and the module check."""

    RESOLVE_SECONDS = 300.0
    FORK_RECHECK_SECONDS = 1.0
    REFRESH_SECONDS = 1.0

    def __init__(
        self,
        databases: list[DatabaseConfig],
        *,
        storage: Storage,
        metrics: Metrics,
        cache: GoCache,
        latest_ttl: float,
        no_sum: str = "",
        exempt: Callable[[str], bool] | None = None,
        unreachable: Literal["refuse", "serve_unverified"] = "refuse",
        max_fetches: int = 128,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.databases = {c.name: Database(c) for c in databases}
        self.storage = storage
        self.metrics = metrics
        self.cache = cache
        self.latest_ttl = latest_ttl
        self.no_sum = no_sum
        self.exempt = exempt
        self.unreachable = unreachable
        self.max_fetches = max_fetches
        self.clock = clock
        self.memory = MemoryCache(max(cache.memory_bytes // 4, 1 << 20))
        self.failures = FailureCache(
            not_found_ttl=cache.negative_ttl,
            error_ttl=cache.error_ttl,
            max_bytes=cache.negative_memory_bytes,
        )
        self.flights: Coalescer[object] = Coalescer()
        self.generation = 0  # bumped when a database is reset: module checks start over

    # -- which database vouches for a module ---------------------------------------------------

    def private(self, module: str) -> bool:
        """Never sent to a database: go.sumdb.no_sum, or a route with ``sumdb: false``."""
        return bool(self.no_sum and match_prefix_patterns(self.no_sum, module)) or bool(
            self.exempt and self.exempt(module)
        )

    def database_for(self, module: str) -> Database | None:
        if self.private(module):
            return None
        fallback = None
        for db in self.databases.values():
            patterns = db.config.patterns
            if patterns is None:
                fallback = fallback or db
            elif match_prefix_patterns(patterns, module):
                return db
        return fallback

    def covers(self, module: str) -> bool:
        return self.database_for(module) is not None

    def get(self, name: str) -> Database:
        db = self.databases.get(name)
        if db is None:
            raise NotFoundError(
                f"checksum database {name!r} is not mirrored here; the go command will ask the"
                " next GOPROXY entry or the database itself"
            )
        return db

    # -- the endpoints ---------------------------------------------------------------------

    async def latest(self, name: str) -> Served:
        db = self.get(name)
        await self._refuse_if_forked(db)
        stored = await self.storage.stat(db.key("head"))
        if stored is not None and stored.mtime_ns != db.head_mtime:
            db.loaded = False  # another worker (or instance) stored a newer head
        await self._load_head(db)
        now = self.clock()
        age = now - db.checked_at
        if db.head is None or age > self.latest_ttl + self.cache.stale_while_revalidate:
            try:
                if now - db.latest_failed_at < self.cache.error_ttl:
                    # Failed a moment ago: an outage is not retried on every request.
                    raise DatabaseUnreachableError(db.latest_error or "unreachable")
                await self.flights.run(("latest", db.name), lambda: self._refresh_latest(db))
            except ForkedError:
                raise
            except EntrepotError as e:
                if db.head is None or age > self.latest_ttl + self.cache.max_stale:
                    raise
                log.warning("serving the stored tree head of %s: %s", db.name, e.message)
                return Served(db.head.note, TEXT, None, "stale", False)
            assert db.head is not None
            return Served(db.head.note, TEXT, None, "miss", False)
        if age > self.latest_ttl and now - db.latest_failed_at >= self.cache.error_ttl:
            self.flights.start(("latest", db.name), lambda: self._refresh_quietly(db))
        return Served(db.head.note, TEXT, None, "hit", False)

    async def lookup(self, name: str, module: str, version: str) -> Served:
        db = self.get(name)
        key = _lookup_key(db.name, module, version)
        found = await self._cached(key)
        if found is not None:
            blob, body = found
            return Served(body, TEXT, blob, "hit", True)
        if self.private(module):
            raise NotFoundError(
                f"{module}: a private path on this mirror (go.sumdb.no_sum): never sent to a"
                " checksum database; set GONOSUMDB/GOPRIVATE for it"
            )
        blob, body = await self._fetch_once(key, lambda: self._fetch_lookup(db, module, version))
        return Served(body, TEXT, blob, "miss", True)

    async def tile(self, name: str, tile: tlog.Tile) -> Served:
        db = self.get(name)
        if tile.height != TILE_HEIGHT:
            raise NotFoundError(f"{tile.path}: this database serves tiles of height {TILE_HEIGHT}")
        content_type = TEXT if tile.level < 0 else HASH_TILE
        found = await self._cached_tile(db, tile)
        if found is not None:
            return Served(found[1], content_type, found[0], "hit", True)
        key = db.key(tile.path)
        blob, body = await self._fetch_once(
            key, lambda: self._fetch_tile(db, tile), reread=lambda: self._cached_tile(db, tile)
        )
        return Served(body, content_type, blob, "miss", True)

    # -- module verification ---------------------------------------------------------------

    async def expected(self, module: str, version: str) -> tuple[Database, dict[str, str]] | None:
        """The database's hashes for a version, or None when no database covers the module.

        Raises VerificationError when the database does not know the version, and
        UnavailableError when it cannot be reached (the caller applies the policy)."""
        db = self.database_for(module)
        if db is None:
            return None
        key = _lookup_key(db.name, module, version)
        found = await self._cached(key)
        try:
            # A module check needs the proven lines, not the stored file: storing the lookup
            # runs on in the background, off the cold fetch's path.
            body = (
                found[1]
                if found is not None
                else await self._verified_lookup(db, key, module, version)
            )
        except ForkedError:
            raise
        except NotFoundError as e:
            raise NotInDatabaseError(
                f"{module}@{version}: not in checksum database {db.name} ({e.message}); a"
                " private module? list it in go.sumdb.no_sum (GONOSUMDB/GOPRIVATE)"
            ) from e
        if found is None:
            self.flights.start(("store", key), lambda: self._store_lookup(key, body))
        _, text, _ = tlog.parse_record(body)
        return db, go_sum_lines(module, version, text)

    async def check(
        self,
        module: str,
        version: str,
        what: Literal["zip", "mod"],
        h1: str,
        *,
        expected: Awaitable[tuple[Database, dict[str, str]] | None] | None = None,
    ) -> Verdict:
        """Compare an artifact's ``h1:`` with the database before it is stored or served."""
        try:
            found = await (expected if expected is not None else self.expected(module, version))
        except ForkedError:
            raise
        except NotInDatabaseError:
            db = self.database_for(module)
            if db is not None:  # counted only when an upstream had the version
                self.record_failure(db, "not_found")
            raise
        except (UnavailableError, NotFoundError) as e:
            return self._unreachable(module, version, e)
        except VerificationError:
            raise
        except EntrepotError as e:  # upstream errors, timeouts: the database is unreachable
            return self._unreachable(module, version, e)
        if found is None:
            return "unchecked"
        db, lines = found
        want = lines.get(what)
        if want is None:
            raise self._refused(
                db,
                "lookup",
                f"{module}@{version}: checksum database {db.name} has no"
                f" {'go.mod ' if what == 'mod' else ''}hash for this version",
            )
        if want != h1:
            self.record_failure(db, "mod_mismatch" if what == "mod" else "zip_mismatch")
            security_log.error(
                "SECURITY: %s of %s@%s from the upstream has %s, checksum database %s says %s;"
                " refused, not stored",
                what,
                module,
                version,
                h1,
                db.name,
                want,
            )
            raise VerificationError(
                f"{module}@{version}: checksum mismatch: the upstream's"
                f" {'go.mod' if what == 'mod' else 'zip'} has {h1}, checksum database"
                f" {db.name} has {want}; refused, nothing stored"
            )
        return "verified"

    def _unreachable(self, module: str, version: str, e: EntrepotError) -> Verdict:
        db = self.database_for(module)
        name = db.name if db else "?"
        if self.unreachable == "serve_unverified":
            log.warning("serving %s@%s unverified: %s", module, version, e.message)
            self.metrics.record_sumdb_unverified(name)
            return "unverified"
        raise DatabaseUnreachableError(
            f"{module}@{version}: cannot verify with checksum database {name}: {e.message};"
            " refused (go.sumdb.unreachable is 'refuse')"
        )

    def record_failure(self, db: Database, reason: Reason) -> None:
        self.metrics.record_sumdb_failure(db.name, reason)

    def _refused(self, db: Database, reason: Reason, message: str) -> VerificationError:
        """Count a refused answer of the database; the error to raise."""
        self.record_failure(db, reason)
        return VerificationError(message)

    # -- fork state ------------------------------------------------------------------------

    async def forked(self, db: Database) -> str | None:
        """The fork evidence, re-read from storage at most once a second, with the reset
        generation: ``entrepot sumdb reset`` (maybe run while servers run) rewrites it, and
        every worker then forgets what it held of that database."""
        now = self.clock()
        if now - db.fork_checked >= self.FORK_RECHECK_SECONDS:
            db.fork_checked = now
            generation = await self.storage.get(db.key("generation"))
            if db.generation_seen and generation != db.generation:
                self._forget(db)
            db.generation, db.generation_seen = generation, True
            raw = await self.storage.get(db.key("fork"))
            db.fork_reason = raw.decode("utf-8", "replace") if raw is not None else None
        return db.fork_reason

    def _forget(self, db: Database) -> None:
        """Drop everything held in memory of a database that was reset."""
        log.warning("checksum database %s was reset: forgetting its cached state", db.name)
        db.head, db.loaded, db.proven, db.checked_at = None, False, set(), 0.0
        db.head_error, db.base, db.base_until = None, None, 0.0
        db.opened, db.verified_tiles = {}, set()
        self.memory.drop_prefix(db.key(""))
        self.failures.drop_prefix(db.key(""))
        self.generation += 1

    async def _refuse_if_forked(self, db: Database) -> None:
        """Raise ForkedError while the database is failed closed: fork evidence stored, or a
        stored head the configured key does not verify."""
        reason = await self.forked(db)
        if reason is None:
            await self._load_head(db)
        else:
            raise ForkedError(
                f"checksum database {db.name} is failed closed: {reason.splitlines()[0]};"
                f" see docs/sumdb.md (entrepot sumdb reset {db.name})"
            )

    async def _declare_fork(self, db: Database, old: _Head, new: tlog.Tree, note: bytes) -> None:
        reason = (
            f"fork detected: the database signed tree {new.n} ({tlog.format_hash(new.hash)})"
            f" that does not extend the stored tree {old.tree.n}"
            f" ({tlog.format_hash(old.tree.hash)})"
        )
        evidence = (
            f"{reason}\n\n--- stored head ---\n".encode()
            + old.note
            + b"\n--- new head ---\n"
            + note
        )
        await self.storage.put_bytes(db.key("fork"), evidence)
        db.fork_reason, db.fork_checked = reason, self.clock()
        security_log.error(
            "SECURITY: checksum database %s: %s; stored head %r, new head %r; failing closed"
            " until `entrepot sumdb reset %s`",
            db.name,
            reason,
            old.note.decode("utf-8", "replace"),
            note.decode("utf-8", "replace"),
            db.name,
        )
        self.record_failure(db, "fork")
        raise ForkedError(f"checksum database {db.name}: {reason}; failed closed")

    # -- tree heads ------------------------------------------------------------------------

    def _open(self, db: Database, signed: bytes, what: str, *, count: bool = True) -> tlog.Tree:
        tree = db.opened.get(signed)
        if tree is not None:  # the same signed head as the last lookups: checked already
            return tree
        tree = self._open_note(db, signed, what, count=count)
        if len(db.opened) >= 64:
            db.opened.clear()
        db.opened[signed] = tree
        return tree

    def _open_note(self, db: Database, signed: bytes, what: str, *, count: bool) -> tlog.Tree:
        try:
            note = open_note(signed, db.config.verifiers)
            return tlog.parse_tree(note.text.encode())
        except (NoteError, tlog.TlogError) as e:
            if count:
                self.record_failure(db, "signature")
            raise VerificationError(
                f"checksum database {db.name}: {what} is not a tree head signed by its key"
                f" ({e.message}); refused"
            ) from e

    def _verified_head(self, db: Database, raw: bytes) -> _Head:
        """The stored head, checked again with the configured key (a changed key, or a
        damaged file, fails closed: it cannot be told from an attack)."""
        try:
            tree = self._open(db, raw, "the stored tree head", count=False)
        except VerificationError as e:
            reason = (
                f"the stored tree head does not verify with the configured key ({e.message});"
                f" if the key changed on purpose, run `entrepot sumdb reset {db.name}`"
            )
            if db.head_error != reason:
                db.head_error = reason
                self.record_failure(db, "head")
                security_log.error("SECURITY: checksum database %s: %s", db.name, reason)
            raise ForkedError(f"checksum database {db.name}: {reason}") from e
        db.head_error = None
        return _Head(tree, raw)

    async def _load_head(self, db: Database) -> None:
        if db.loaded:
            return
        stored = await self.storage.stat(db.key("head"))
        raw = await self.storage.get(db.key("head"))
        if raw is not None and stored is not None:
            db.head_mtime = stored.mtime_ns
            head = self._verified_head(db, raw)
            if db.head is None or head.tree.n >= db.head.tree.n:
                db.head = head
            if db.checked_at == 0.0:
                db.checked_at = self.clock() - self.latest_ttl - 1  # compare with upstream soon
        db.loaded = True

    async def _refresh_quietly(self, db: Database) -> None:
        try:
            await self._refresh_latest(db)
        except EntrepotError as e:
            log.warning("refreshing the tree head of %s failed: %s", db.name, e.message)

    async def _refresh_latest(self, db: Database) -> tlog.Tree:
        try:
            signed = await self._get(db, "latest", f"{db.name} latest")
            tree = await self.adopt(db, signed)
        except ForkedError:
            raise
        except EntrepotError as e:
            db.latest_failed_at, db.latest_error = self.clock(), e.message
            raise
        db.checked_at = self.clock()
        return tree

    async def adopt(self, db: Database, signed: bytes) -> tlog.Tree:
        """Check a signed tree head and make it the stored head if it is newer.

        Newer: proven to extend the stored head, then written atomically. Older or equal:
        proven to be a prefix of the stored head. Anything else is a fork."""
        await self._refuse_if_forked(db)
        tree = self._open(db, signed, "the tree head")
        await self._load_head(db)
        head = db.head
        if head is not None and tree.n <= head.tree.n:
            await self._check_prefix(db, tree, head, signed)
            return tree
        async with db.lock, self.storage.exclusive(db.key("head")):
            while True:
                # The stored head is the truth (another worker or instance may have moved it).
                raw = await self.storage.get(db.key("head"))
                head = self._verified_head(db, raw) if raw is not None else None
                db.head, db.loaded = head, True
                if head is not None and tree.n <= head.tree.n:
                    await self._check_prefix(db, tree, head, signed)
                    return tree
                if head is not None:
                    await self._check_extends(db, head, tree, signed)
                # Written only if the stored head is still the one just proven against.
                if await self.storage.get(db.key("head")) == raw:
                    break
            blob = await self.storage.put_bytes(db.key("head"), signed)
            db.head, db.head_mtime = _Head(tree, signed), blob.mtime_ns
            self.metrics.record_sumdb_tree(db.name, tree.n)
            log.info("checksum database %s: tree head now %d", db.name, tree.n)
        return tree

    async def _check_prefix(
        self, db: Database, tree: tlog.Tree, head: _Head, signed: bytes
    ) -> None:
        if tree == head.tree or (tree.n, tree.hash) in db.proven or tree.n == 0:
            return
        if tree.n == head.tree.n:
            await self._declare_fork(db, head, tree, signed)
        indexes = tlog.tree_proof_indexes(head.tree.n, tree.n)
        hashes = await self.read_hashes(db, head.tree, indexes)
        proof = tlog.prove_tree(head.tree.n, tree.n, _reader(indexes, hashes))
        try:
            tlog.check_tree(proof, head.tree.n, head.tree.hash, tree.n, tree.hash)
        except tlog.ProofError:
            await self._declare_fork(db, head, tree, signed)
        if len(db.proven) > 4096:
            db.proven.clear()
        db.proven.add((tree.n, tree.hash))

    async def _check_extends(
        self, db: Database, head: _Head, tree: tlog.Tree, signed: bytes
    ) -> None:
        if head.tree.n == 0:
            return
        indexes = tlog.tree_proof_indexes(tree.n, head.tree.n)
        hashes = await self.read_hashes(db, tree, indexes)
        proof = tlog.prove_tree(tree.n, head.tree.n, _reader(indexes, hashes))
        try:
            tlog.check_tree(proof, tree.n, tree.hash, head.tree.n, head.tree.hash)
        except tlog.ProofError:
            await self._declare_fork(db, head, tree, signed)

    async def _head_covering(self, db: Database, size: int) -> tlog.Tree:
        """A verified tree of at least ``size`` records: the stored head, else a fresh one."""
        await self._load_head(db)
        if db.head is not None and db.head.tree.n >= size:
            return db.head.tree
        # At most one refresh a second for this: 60,000 requests for tiles past the tree
        # must not become 60,000 requests for the database's latest head.
        now = self.clock()
        if now - db.refresh_tried >= self.REFRESH_SECONDS:
            db.refresh_tried = now
            await self.flights.run(("latest", db.name), lambda: self._refresh_latest(db))
        if db.head is None or db.head.tree.n < size:
            have = db.head.tree.n if db.head else 0
            raise NotFoundError(
                f"checksum database {db.name} has signed a tree of {have} records; nothing"
                f" beyond it is served"
            )
        return db.head.tree

    # -- tiles and proofs ------------------------------------------------------------------

    async def read_hashes(
        self, db: Database, tree: tlog.Tree, indexes: Sequence[int]
    ) -> list[bytes]:
        """Stored hashes of a verified tree, from tiles (cached, else fetched), all proven
        against the tree's hash before any fetched tile is cached."""
        plan = tlog.plan_tiles(tree, TILE_HEIGHT, indexes)
        got = await asyncio.gather(*(self._hash_tile(db, t) for t in plan.tiles))
        data = [d for d, _ in got]
        proven = db.verified_tiles
        if all(
            not fetched and (tree.n, tree.hash, t) in proven
            for t, (_, fetched) in zip(plan.tiles, got, strict=True)
        ):
            # Every tile is a cached one already proven against this very tree.
            return tlog.planned_hashes(plan, data)
        try:
            hashes = tlog.verify_tiles(plan, data)
        except tlog.TlogError as e:
            raise self._refused(
                db,
                "tile",
                f"checksum database {db.name}: tiles do not hash to the signed tree"
                f" {tree.n} ({e.message}); refused, nothing stored",
            ) from e
        if len(proven) > 4096:
            proven.clear()
        for tile, (body, fetched) in zip(plan.tiles, got, strict=True):
            proven.add((tree.n, tree.hash, tile))
            if fetched:
                await self._store_tile(db, tile, body)
        return hashes

    async def _hash_tile(self, db: Database, tile: tlog.Tile) -> tuple[bytes, bool]:
        """A tile's bytes and whether they were fetched (unproven) rather than cached."""
        found = await self._cached_tile(db, tile)
        if found is not None:
            return found[1], False
        body = await self._download_tile(db, tile)
        return body, True

    async def _download_tile(self, db: Database, tile: tlog.Tile) -> bytes:
        """Fetch a tile (coalesced); a missing partial tile is cut from the full one, as Go's
        client does."""

        async def fetch() -> bytes:
            try:
                body = await self._get(db, tile.path, f"{db.name} {tile.path}")
            except NotFoundError:
                if tile.width == 1 << tile.height:
                    raise
                full = tlog.Tile(tile.height, tile.level, tile.n, 1 << tile.height)
                body = await self._get(db, full.path, f"{db.name} {full.path}")
                with contextlib.suppress(ValueError):
                    body = (
                        body[: _tile_size(tile)]
                        if tile.level >= 0
                        else _data_prefix(body, tile.width)
                    )
            if tile.level >= 0 and len(body) != _tile_size(tile):
                raise self._refused(
                    db,
                    "tile",
                    f"checksum database {db.name}: {tile.path} has {len(body)} bytes, want"
                    f" {_tile_size(tile)}; refused",
                )
            return body

        result, _ = await self.flights.run(("download", db.name, tile.path), fetch)
        assert isinstance(result, bytes)
        return result

    async def _fetch_tile(self, db: Database, tile: tlog.Tile) -> BlobInfo:
        await self._refuse_if_forked(db)
        tree = await self._head_covering(db, tree_needed(tile))
        first = tile.n << tile.height
        if tile.level >= 0:
            level = tile.height * tile.level
            indexes = [tlog.stored_hash_index(level, first + i) for i in range(tile.width)]
            body = b"".join(await self.read_hashes(db, tree, indexes))
        else:
            body = await self._download_tile(db, tile)
            try:
                texts = tlog.parse_data_tile(tile, body)
            except tlog.TlogError as e:
                raise self._refused(
                    db,
                    "tile",
                    f"checksum database {db.name}: {tile.path} is malformed ({e.message}); refused",
                ) from e
            indexes = [tlog.stored_hash_index(0, first + i) for i in range(tile.width)]
            leaves = await self.read_hashes(db, tree, indexes)
            if [tlog.record_hash(t) for t in texts] != leaves:
                raise self._refused(
                    db,
                    "tile",
                    f"checksum database {db.name}: the records of {tile.path} are not those of"
                    f" the signed tree {tree.n}; refused",
                )
        if tile.width != 1 << tile.height:
            full = tlog.Tile(tile.height, tile.level, tile.n, 1 << tile.height)
            stored_full = await self.storage.stat(db.key(full.path))
            if stored_full is not None:  # proving it stored the full tile: cut from that
                return stored_full
        return await self._store_tile(db, tile, body)

    async def _store_tile(self, db: Database, tile: tlog.Tile, body: bytes) -> BlobInfo:
        key = db.key(tile.path)
        blob = await self.storage.stat(key)
        if blob is None:
            blob = await self.storage.put_bytes(key, body)
            if tile.width == 1 << tile.height:
                # Partial tiles are prefixes of this one: kept only until it exists.
                await self.storage.delete_prefix(key + ".p")
        return blob

    async def _cached_tile(self, db: Database, tile: tlog.Tile) -> tuple[BlobInfo, bytes] | None:
        found = await self._cached(db.key(tile.path))
        if found is not None or tile.width == 1 << tile.height:
            return found
        # A partial tile is a prefix of the full one, once that exists.
        full = tlog.Tile(tile.height, tile.level, tile.n, 1 << tile.height)
        found = await self._cached(db.key(full.path))
        if found is None:
            return None
        blob, body = found
        if tile.level >= 0:
            return blob, body[: _tile_size(tile)]
        return blob, _data_prefix(body, tile.width)

    # -- lookups ---------------------------------------------------------------------------

    async def _fetch_lookup(self, db: Database, module: str, version: str) -> BlobInfo:
        key = _lookup_key(db.name, module, version)
        raw = await self._verified_lookup(db, key, module, version)
        return await self.storage.put_bytes(key, raw)

    async def _store_lookup(self, key: str, raw: bytes) -> BlobInfo | None:
        try:
            blob = await self.storage.stat(key)
            if blob is None:
                blob = await self.storage.put_bytes(key, raw)
            self.memory.put(key, blob, raw)  # the zip's check, next, reads it from here
            return blob
        except EntrepotError as e:  # it is fetched (and proven) again on the next ask
            log.warning("could not store the checksum-database lookup %s: %s", key, e.message)
            return None

    async def _verified_lookup(self, db: Database, key: str, module: str, version: str) -> bytes:
        """A lookup fetched and proven (one fetch for all askers; failures remembered)."""
        remembered = self.failures.get(key, time.time())
        if remembered is not None:
            raise remembered
        try:
            raw, _ = await self.flights.run(
                ("verify", key), lambda: self._prove_lookup(db, module, version)
            )
        except EntrepotError as e:
            if not isinstance(e, UnavailableError):
                self.failures.put(key, e, time.time())
            raise
        assert isinstance(raw, bytes)
        return raw

    async def _prove_lookup(self, db: Database, module: str, version: str) -> bytes:
        await self._refuse_if_forked(db)
        what = f"{module}@{version}"
        raw = await self._get(db, f"lookup/{escape_path(module)}@{escape_version(version)}", what)
        try:
            record_id, text, signed = tlog.parse_record(raw)
        except tlog.TlogError as e:
            raise self._refused(
                db,
                "lookup",
                f"{what}: checksum database {db.name} answered a malformed lookup; refused",
            ) from e
        if not go_sum_lines(module, version, text):
            raise self._refused(
                db,
                "lookup",
                f"{what}: checksum database {db.name} answered a record for another module;"
                " refused",
            )
        tree = await self.adopt(db, signed)
        if not 0 <= record_id < tree.n:
            raise self._refused(
                db,
                "lookup",
                f"{what}: checksum database {db.name} named record {record_id}, outside its"
                f" signed tree of {tree.n}; refused",
            )
        assert db.head is not None
        head = db.head.tree
        (leaf,) = await self.read_hashes(db, head, [tlog.stored_hash_index(0, record_id)])
        if leaf != tlog.record_hash(text):
            raise self._refused(
                db,
                "lookup",
                f"{what}: the record checksum database {db.name} answered is not record"
                f" {record_id} of its signed tree; refused",
            )
        return raw

    # -- upstream --------------------------------------------------------------------------

    async def _resolve(self, db: Database) -> Fetcher:
        """Go's rule: the first proxy that answers ``/supported`` 200 is used for good; 404 or
        410 (or any error after ``|``) moves on; ``direct`` is the database itself."""
        now = self.clock()
        if db.base is not None and now < db.base_until:
            return db.base
        last: EntrepotError | None = None
        for hop in db.config.hops:
            if hop.fetcher is None:
                raise DatabaseUnreachableError(
                    f"checksum database {db.name} is not fetched ('off' in its chain)"
                    + (f": {last.message}" if last else "")
                )
            if hop.via_proxy:
                try:
                    await hop.fetcher.get("supported", f"{db.name} supported")
                except NotFoundError as e:
                    last = e
                    continue
                except EntrepotError as e:
                    if hop.fall_back_on_error:
                        last = e
                        continue
                    raise DatabaseUnreachableError(
                        f"checksum database {db.name}: {e.message}"
                    ) from e
            db.base, db.base_until = hop.fetcher, now + self.RESOLVE_SECONDS
            return hop.fetcher
        raise DatabaseUnreachableError(
            f"checksum database {db.name}: no upstream serves it"
            + (f" ({last.message})" if last else "")
        )

    async def _get(self, db: Database, rel: str, what: str) -> bytes:
        fetcher = await self._resolve(db)
        start = time.perf_counter()
        try:
            body = await fetcher.get(rel, what)
        except NotFoundError:
            self.metrics.record_upstream(fetcher.name, "sumdb", "not_found", _since(start))
            raise
        except EntrepotError:
            self.metrics.record_upstream(fetcher.name, "sumdb", "error", _since(start))
            db.base_until = 0.0  # ask the chain again next time
            raise
        self.metrics.record_upstream(fetcher.name, "sumdb", "ok", _since(start))
        return body

    # -- cache plumbing --------------------------------------------------------------------

    async def _cached(self, key: str) -> tuple[BlobInfo, bytes] | None:
        item = self.memory.get(key)
        if item is not None:
            return item
        blob = await self.storage.stat(key)
        if blob is None:
            return None
        body = await self.storage.get(key)
        if body is None:
            return None
        self.memory.put(key, blob, body)
        return blob, body

    async def _fetch_once(
        self,
        key: str,
        fetch: Callable[[], Awaitable[BlobInfo]],
        *,
        reread: Callable[[], Awaitable[tuple[BlobInfo, bytes] | None]] | None = None,
    ) -> tuple[BlobInfo, bytes]:
        remembered = self.failures.get(key, time.time())
        if remembered is not None:
            raise remembered
        if key not in self.flights and len(self.flights) >= self.max_fetches:
            raise UnavailableError(
                f"{key}: the mirror is busy ({len(self.flights)} checksum-database fetches in"
                " flight); retry shortly"
            )
        try:
            result, _ = await self.flights.run(key, fetch)
        except EntrepotError as e:
            if not isinstance(e, UnavailableError):
                self.failures.put(key, e, time.time())
            raise
        assert isinstance(result, BlobInfo)
        found = await (reread() if reread is not None else self._cached(key))
        if found is None:
            raise UnavailableError(f"{key}: cache entry vanished while serving; retry")
        return found

    async def status(self) -> list[str]:
        """Why the mirror is not ready, one line per failed-closed database."""
        out = []
        for db in self.databases.values():
            with contextlib.suppress(EntrepotError):
                reason = await self.forked(db)
                if reason is not None:
                    out.append(f"checksum database {db.name} failed closed: {reason}")
                    continue
                db.loaded = False
                await self._load_head(db)
            if db.head_error is not None:
                out.append(f"checksum database {db.name} failed closed: {db.head_error}")
        return out


@functools.lru_cache(maxsize=1 << 16)
def _lookup_key(name: str, module: str, version: str) -> str:
    return f"sumdb/{name}/lookup/{escape_path(module)}@{escape_version(version)}"


def _tile_size(tile: tlog.Tile) -> int:
    return tile.width * tlog.HASH_SIZE


def _data_prefix(body: bytes, width: int) -> bytes:
    """The first ``width`` records of a data tile (each ends in a blank line)."""
    end = 0
    for _ in range(width):
        end = body.index(b"\n\n", end) + 2
    return body[:end]


def _reader(indexes: Sequence[int], hashes: Sequence[bytes]) -> tlog.HashReader:
    table = dict(zip(indexes, hashes, strict=True))

    def read(wanted: Sequence[int]) -> list[bytes]:
        return [table[i] for i in wanted]

    return read


def _since(start: float) -> float:
    return time.perf_counter() - start
