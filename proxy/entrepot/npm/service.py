"""The npm mirror's service: freshness, coalescing, storage and verification in one place.

    packument ─▶ policy (private → 404, blocked → 403) ─▶ memory / index.json
                 ├─ fresh → serve the stored document (bytes or sendfile)
                 ├─ stale within stale_while_revalidate → serve, refresh in background
                 └─ older / absent → coalesced, conditional upstream fetch ─▶ compute once
                    (full + abbreviated, gzip, brotli, ETags) ─▶ documents, then index.json
                    (an upstream failure then serves the stored copy up to max_stale)

    tarball ─▶ the package's index (policy, dist) ─▶ stored? sendfile
               └─ coalesced fetch, verified against dist.integrity while streaming ─▶ put

Per package the store holds ``upstream.json`` (the upstream's bytes, to compute again when
the policy or the public URL changes or a too-new version comes of age), the documents under
names derived from their ETags, and ``index.json`` (written last) naming them: a reader that
loaded an index always finds the documents it names, whatever another worker publishes
meanwhile (the generation before the current one is kept for such readers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from entrepot.caches import FailureCache, MemoryCache
from entrepot.coalesce import Coalescer
from entrepot.config import Limits, NpmSettings
from entrepot.errors import (
    EntrepotError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
    UpstreamError,
    VerificationError,
)
from entrepot.metrics import CacheResult, Metrics
from entrepot.npm import names
from entrepot.npm.compute import Body, Computed, Computer
from entrepot.npm.integrity import (
    IntegrityError,
    TarballTooLargeError,
    Verifier,
    expected_from_dist,
)
from entrepot.npm.packument import (
    REPRESENTATIONS,
    Documents,
    Index,
    PackumentError,
    PackumentTooLargeError,
    Policy,
    Representation,
    VersionEntry,
    policy_for,
    served_entry,
)
from entrepot.npm.upstream import NpmUpstream
from entrepot.storage.base import BlobInfo, Storage

log = logging.getLogger("entrepot.npm")

BEFORE_BROTLI: frozenset[Representation] = frozenset(
    {"full", "full.gz", "abbreviated", "abbreviated.gz"}
)
"""What an index written before the brotli forms names: still read and served (a ``br``
request gets gzip) until the package is computed again, which the fingerprint's change
makes happen at its next request (:meth:`NpmService._recompute`)."""
RESTAT_SECONDS = 1.0
"""How long a worker trusts the index.json of a mirrored package it holds without a stat: a
first publish here replaces it, and must shadow the upstream in every worker within this.
Local packages are stat'ed at every request (one stat, ~3 µs), so a write through one worker
is read back through any other."""
IN_MEMORY_BYTES = 256 << 10
"""Documents up to this size are answered from memory; larger ones with sendfile (a 20 MB
document written from memory to 64 slow clients would be buffered 64 times)."""


def _file_part(rep: Representation, etag: str) -> str:
    """``full-<hash>.json``, ``full-<hash>.json.gz``, ``full-<hash>.json.br``, ..."""
    tag = hashlib.sha256(etag.encode()).hexdigest()[:32]
    document, dot, coding = rep.partition(".")
    return f"{document}-{tag}.json{dot}{coding}"


def _document_of(rep: Representation) -> Representation:
    """The identity representation of the same document (``full.br`` → ``full``)."""
    return "abbreviated" if rep.startswith("abbreviated") else "full"


def local_tarball_key(name: str, version: str, integrity: str, nonce: str) -> str:
    """Where a version published here keeps its tarball:
    ``npm-local/<escaped name>/<escaped version>-<16 hex of its sha512>-<nonce>.tgz``. No
    mirrored tarball lives under ``npm-local/``, and the nonce makes every attempt's key its
    own, so a refused or failed publish deletes only what it wrote."""
    names.check_version_text(version)
    _, _, b64 = integrity.partition("-")
    try:
        digest = base64.b64decode(b64, validate=True).hex()[:16]
    except (binascii.Error, ValueError):
        digest = "0" * 16
    folder = names.package_prefix(name).removeprefix("npm/")
    return f"npm-local/{folder}/{names.escape(version)}-{digest}-{nonce}.tgz"


@dataclass(frozen=True)
class Package:
    """What a worker knows of one package: its index, and when the upstream was last asked."""

    index: Index
    files: dict[Representation, str]  # storage keys of the documents
    fetched: float  # epoch seconds of the last successful upstream answer (200 or 304)
    upstream_etag: str | None
    fingerprint: str  # the settings the documents were computed with
    too_new: bool  # some version is hidden until it is old enough
    stamp: tuple[int, int]  # index.json's (mtime_ns, size) when read
    previous: dict[Representation, str] = field(default_factory=dict)
    cost: int = 0
    local_rev: int | None = None  # published here (the store's rev it was built at): never upstream
    index_file: str | None = None  # index.json's local path, stat'ed directly (filesystem)
    deleted: bool = False  # a local package wholly unpublished (404, never upstream again)


@dataclass(frozen=True)
class Document:
    """A packument representation to send: bytes in memory, or the stored file."""

    rep: Representation  # the one sent (not always the one asked for: see NpmService.document)
    blob: BlobInfo
    body: bytes | None
    etag: str
    etags: tuple[str, ...]  # every encoding's ETag of the same document (a 304 for any is right)
    modified: float | None
    cache: CacheResult
    stale_reason: str | None = None


@dataclass(frozen=True)
class Tarball:
    blob: BlobInfo
    cache: CacheResult


Freshness = Literal["fresh", "revalidate", "refetch"]


class NpmService:
    def __init__(
        self,
        *,
        storage: Storage,
        upstream: NpmUpstream | None,
        settings: NpmSettings,
        base_url: str,
        metrics: Metrics,
        limits: Limits,
        clock: Callable[[], float] = time.time,
        published: Callable[[str, str, int], None] | None = None,
        missing_upstream: str = "",
    ) -> None:
        self.storage = storage
        self.upstream = upstream
        self.settings = settings
        self.cache = settings.cache
        self.policy = settings.policy
        self.base_url = base_url
        self.metrics = metrics
        self.limits = limits
        self.clock = clock
        self.published = published
        self.missing_upstream = missing_upstream
        self.flights: Coalescer[object] = Coalescer()
        self.computer = Computer()
        self.failures = FailureCache(
            not_found_ttl=self.cache.negative_ttl,
            error_ttl=self.cache.error_ttl,
            max_bytes=8 << 20,
        )
        self.memory = MemoryCache(self.cache.memory_bytes // 2)
        self._packages: OrderedDict[str, Package] = OrderedDict()
        self._packages_cost = 0
        self._packages_budget = max(1 << 20, self.cache.memory_bytes // 2)
        self._checked: dict[str, float] = {}  # name → when index.json was last stat'ed
        self.startup: list[Callable[[], Awaitable[None]]] = []
        """Work to run once before the first package request (the private registry heals
        documents a crash left behind its store); a failure is logged and retried later."""
        self._started: asyncio.Task[None] | None = None
        self._startup_retry = 0.0
        self.set_base_url(base_url)

    def set_base_url(self, base_url: str) -> None:
        """The public registry URL tarball URLs are written under (known once the server
        is bound when ``npm.public_url`` is unset and the port was 0)."""
        self.base_url = base_url
        # The representations are in it too: documents computed before one existed (the
        # brotli forms) are computed again from the stored upstream bytes.
        self.fingerprint = hashlib.sha256(
            json.dumps(
                [
                    base_url,
                    self.policy.model_dump(mode="json"),
                    self.settings.max_packument_bytes,
                    REPRESENTATIONS,
                ]
            ).encode()
        ).hexdigest()[:16]

    # -- policy by name -----------------------------------------------------------------------

    def is_private(self, name: str) -> bool:
        return any(fnmatchcase(name, p) for p in self.policy.private)

    def check_name_policy(self, name: str) -> None:
        """Private names are never looked up upstream (404); blocked packages are 403."""
        if self.is_private(name):
            raise NotFoundError(
                f"{name} is in a private scope of this registry (npm.policy.private) and is not"
                " published here; it is never looked up upstream"
            )
        if any("@" not in p[1:] and fnmatchcase(name, p) for p in self.policy.blocked):
            raise ForbiddenError(f"{name} is blocked by this mirror's policy (npm.policy.blocked)")

    # -- packuments ---------------------------------------------------------------------------

    async def document(
        self,
        name: str,
        rep: Representation,
        *,
        write: bool = False,
        fallback: Sequence[Representation] = (),
    ) -> Document:
        """The package's document as ``rep``; when the stored documents lack it (an index
        written before the brotli forms), the first of ``fallback`` (what the client takes
        next, best first) they have, else the same document unencoded."""
        package, cache, stale = await self.package(name, write=write)
        return await self._document(package, (rep, *fallback), cache, stale)

    async def package(
        self, name: str, *, write: bool = False, force: bool = False
    ) -> tuple[Package, CacheResult, str | None]:
        """The package's current state: ``(package, cache result, stale reason)``.

        ``write`` (``?write=true``) and ``force`` (a tarball of a version the index does not
        know) ask the upstream now whatever the age; ``force`` still honours a remembered
        failure."""
        if self.startup:
            await self._run_startup()
        now = self.clock()
        package = await self._current(name, now, write=write)
        if package is not None and package.local_rev is not None:
            return await self._local(name, package), "hit", None
        self.check_name_policy(name)
        if package is not None and package.fingerprint != self.fingerprint and not write:
            package = await self._recompute(name)
        if package is not None and not write and not force:
            state = self._freshness(self._age(package, now))
            if state == "fresh":
                self.metrics.record_cache("packument", "hit")
                return package, "hit", None
            key = self._index_key(name)
            remembered = self.failures.get(key, now)
            if state == "revalidate":
                if remembered is None:
                    self.flights.start(key, lambda: self._refresh(name, background=True))
                self.metrics.record_cache("packument", "hit")
                return package, "hit", None
            if remembered is not None and self._can_serve_stale(package, now):
                self.metrics.record_cache("packument", "stale")
                return package, "stale", remembered.message
        elif package is not None and force:
            remembered = self.failures.get(self._index_key(name), now)
            if remembered is not None:
                return package, "hit", None
        try:
            fresh = await self._fetch(name, write=write)
        except EntrepotError as e:
            if (
                package is None
                or isinstance(e, ForbiddenError | NotFoundError)
                or not self._can_serve_stale(package, now)
            ):
                raise
            log.warning("serving the stored packument of %s: %s", name, e.message)
            self.metrics.record_cache("packument", "stale")
            return package, "stale", e.message
        result: CacheResult = "miss" if package is None or write else "hit"
        self.metrics.record_cache("packument", "bypass" if write else result)
        return fresh, result, None

    def _age(self, package: Package, now: float) -> float:
        return now - package.fetched

    def _freshness(self, age: float) -> Freshness:
        if age <= self.cache.packument_ttl:
            return "fresh"
        if age <= self.cache.packument_ttl + self.cache.stale_while_revalidate:
            return "revalidate"
        return "refetch"

    def _can_serve_stale(self, package: Package, now: float) -> bool:
        return self._age(package, now) <= self.cache.packument_ttl + self.cache.max_stale

    async def _current(self, name: str, now: float, *, write: bool = False) -> Package | None:
        """The package as this worker knows it, index.json stat'ed again when it may have
        changed: always for a local package (and for ``?write=true``), after
        :data:`RESTAT_SECONDS` for a mirrored one (a first publish here shadows it), after
        the packument's TTL as before."""
        package = self._packages.get(name)
        if (
            package is not None
            and package.local_rev is not None
            and package.index_file is not None
            and not write
            and _unchanged(package.index_file, package.stamp)
        ):
            return package  # one stat: a write through another worker shows at once
        if (
            package is None
            or write
            or package.local_rev is not None
            or now - self._checked.get(name, 0.0) >= RESTAT_SECONDS
            or self._age(package, now) > self.cache.packument_ttl
        ):
            package = await self._load(name, package)
            if package is not None:
                self._checked[name] = now
        return package

    async def _local(self, name: str, package: Package) -> Package:
        """A package published here: always fresh, never asked upstream."""
        if package.fingerprint != self.fingerprint:
            package = await self._recompute(name) or package
        if package.deleted:
            raise NotFoundError(
                f"{name} was unpublished from this registry; its version numbers cannot be"
                " published again, its name can"
            )
        self.metrics.record_cache("packument", "hit")
        return package

    async def _run_startup(self) -> None:
        """The startup work, once per worker (concurrent first requests wait for the same
        run); a failure is logged and tried again 30 s later, never raised to a reader."""
        if self._started is None:
            if self.clock() < self._startup_retry:
                return
            self._started = asyncio.ensure_future(self._startup_work())
        await asyncio.shield(self._started)

    async def _startup_work(self) -> None:
        try:
            for work in self.startup:
                await work()
        except Exception as e:  # reads go on; the next writes heal too
            log.warning("npm start-up work failed (tried again in 30 s): %s", e)
            self._started = None
            self._startup_retry = self.clock() + 30
            return
        self.startup = []

    # -- packages published here ----------------------------------------------------------------

    def local_lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """The package's lock across workers: the one mirrored refreshes take, so a first
        publish and an upstream refresh never write the index one over the other."""
        return self.storage.exclusive(self._index_key(name))

    async def local_rev(self, name: str) -> int | None:
        """The store rev the stored documents of ``name`` were built at (None: not built
        from the store: mirrored, or never published)."""
        package = await self._load(name, self._packages.get(name))
        return None if package is None else package.local_rev

    def local_tarballs(self, name: str) -> dict[str, str]:
        """Version → blob key of the local package as last loaded (by :meth:`local_rev`)."""
        package = self._packages.get(name)
        if package is None or package.local_rev is None:
            return {}
        return {
            v: e.tarball
            for v, e in package.index.versions.items()
            if e.tarball.startswith("npm-local/")
        }

    async def publish_local(
        self,
        name: str,
        raw: bytes,
        *,
        rev: int,
        deleted: bool = False,
        documents: Documents | None = None,
    ) -> Package:
        """The documents of a package published here, computed from ``raw`` (the packument
        the registry built from its store) exactly as a mirrored one's, and published with
        the same layout; the index says ``local``. ``documents``: already made from ``raw``
        (:func:`entrepot.npm.localdocs.assemble`), so not computed again. The caller holds
        :meth:`local_lock`."""
        now = self.clock()
        known = await self._load(name, self._packages.get(name))
        package = await self._build(
            name,
            raw,
            now=now,
            up_etag=None,
            fetched=now,
            known=known,
            local_rev=rev,
            deleted=deleted,
            extra={self._local_key(name): raw},
            documents=documents,
        )
        self._checked[name] = now
        return package

    async def _document(
        self,
        package: Package,
        wanted: Sequence[Representation],
        cache: CacheResult,
        stale: str | None,
    ) -> Document:
        document = _document_of(wanted[0])
        rep = next((r for r in wanted if r in package.files), document)
        key = package.files[rep]
        etags = package.index.etags
        etag = etags[rep]
        same = tuple(e for r, e in etags.items() if _document_of(r) == document)
        modified = package.index.modified
        item = self.memory.get(key)
        if item is not None:
            return Document(rep, item[0], item[1], etag, same, modified, cache, stale)
        blob = await self.storage.stat(key)
        if blob is None:  # purged behind our back: compute again from the upstream
            self._forget(package.index.name)
            raise UpstreamError(f"{package.index.name}: a cached document vanished; retry")
        body: bytes | None = None
        if blob.size <= IN_MEMORY_BYTES:
            body = await self.storage.get(key)
            if body is not None:
                self.memory.put(key, blob, body)
        return Document(rep, blob, body, etag, same, modified, cache, stale)

    async def manifest(self, name: str, ref: str) -> tuple[bytes, Package, CacheResult]:
        """``GET /<name>/<version|tag>``: the version's manifest, a slice of the full document."""
        package, cache, _ = await self.package(name)
        entry = served_entry(package.index, ref)
        key = package.files["full"]
        item = self.memory.get(key)
        if item is not None:
            return item[1][entry.start : entry.end], package, cache
        blob = await self.storage.stat(key)
        if blob is None or blob.path is None:
            self._forget(name)
            raise UpstreamError(f"{name}: a cached document vanished; retry")
        with open(blob.path, "rb") as f:  # noqa: ASYNC230 - one small read, page cache
            return os.pread(f.fileno(), entry.end - entry.start, entry.start), package, cache

    def _index_key(self, name: str) -> str:
        return f"{names.package_prefix(name)}/packument/index.json"

    def _upstream_key(self, name: str) -> str:
        return f"{names.package_prefix(name)}/packument/upstream.json"

    def _local_key(self, name: str) -> str:
        return f"{names.package_prefix(name)}/packument/local.json"

    async def _load(self, name: str, known: Package | None) -> Package | None:
        """The package as index.json says (re-read only when the file changed)."""
        key = self._index_key(name)
        blob = await self.storage.stat(key)
        if blob is None:
            if known is not None:
                self._forget(name)
            return None
        if known is not None and known.stamp == (blob.mtime_ns, blob.size):
            return known
        raw = await self.storage.get(key)
        if raw is None:
            return None
        try:
            package = _parse_index(raw, (blob.mtime_ns, blob.size))
        except ValueError as e:
            log.warning("ignoring an unreadable %s: %s", key, e)
            return None
        if blob.path is not None:
            package = replace(package, index_file=os.fspath(blob.path))
        self._remember(name, package)
        return package

    async def _recompute(self, name: str) -> Package | None:
        """Documents computed with other settings (public URL, policy, limits: a restart
        with a new configuration) computed again from the stored upstream bytes, under the
        store's lock, without asking the upstream: their age stays the upstream answer's, so
        an unreachable upstream does not turn every cached package into an error. Without
        stored bytes the package is due for a fetch (``fetched`` 0)."""
        key = self._index_key(name)
        async with self.storage.exclusive(key):
            known = await self._load(name, self._packages.get(name))
            if known is None or known.fingerprint == self.fingerprint:
                return known  # gone, or another worker computed it meanwhile
            if known.local_rev is not None:
                source = await self._stored(self._local_key(name))
                if source is None:  # nothing to compute from: serve what was built
                    return known
                return await self._build(
                    name,
                    source,
                    now=self.clock(),
                    up_etag=None,
                    fetched=known.fetched,
                    known=known,
                    local_rev=known.local_rev,
                    deleted=known.deleted,
                )
            source = await self._stored(self._upstream_key(name))
            if source is None:
                stale = replace(known, fetched=0.0)
                self._remember(name, stale)
                return stale
            return await self._build(
                name,
                source,
                now=self.clock(),
                up_etag=known.upstream_etag,
                fetched=known.fetched,
                known=known,
            )

    async def _fetch(self, name: str, *, write: bool = False) -> Package:
        """The package refreshed from the upstream, one fetch per key for concurrent askers
        in this worker (the store's lock coalesces the workers). ``write`` (``?write=true``)
        ignores a remembered failure and any copy another asker just fetched."""
        key = self._index_key(name)
        now = self.clock()
        if not write:
            remembered = self.failures.get(key, now)
            if remembered is not None:
                self.metrics.record_cache("packument", "negative")
                raise remembered
        flight = f"{key}?write" if write else key
        if flight not in self.flights:
            self._admit(key)
        try:
            result, led = await self.flights.run(flight, lambda: self._refresh(name, write=write))
        except EntrepotError as e:
            self.failures.put(key, e, self.clock())
            raise
        if not led:
            self.metrics.coalesced.labels("packument").inc()
        assert isinstance(result, Package)
        return result

    def _admit(self, key: str) -> None:
        if len(self.flights) >= self.limits.max_fetches:
            raise UnavailableError(
                f"{key}: the mirror is busy ({len(self.flights)} fetches in flight); retry shortly"
            )

    async def _refresh(
        self, name: str, *, background: bool = False, write: bool = False
    ) -> Package:
        """Ask the upstream (conditionally), compute when it changed, publish. Under the
        store's lock: N workers asking at once make one upstream request (a worker that
        finds the index rewritten while it waited for the lock takes that one)."""
        key = self._index_key(name)
        seen = await self.storage.stat(key)
        before = None if seen is None else (seen.mtime_ns, seen.size)
        try:
            async with self.storage.exclusive(key):
                known = await self._load(name, self._packages.get(name))
                if known is not None and known.local_rev is not None:
                    return known  # published here meanwhile: the upstream is never asked
                if (
                    known is not None
                    and not background
                    and not write
                    and known.fingerprint == self.fingerprint
                    and (known.stamp != before or self._age(known, self.clock()) < 1.0)
                ):
                    return known  # another worker refreshed it meanwhile
                package = await self._ask(name, known)
        except EntrepotError as e:
            if background:
                self.failures.put(key, e, self.clock())
                self.metrics.record_refresh("packument", "error")
                log.warning("background refresh of %s failed, keeping the stored copy: %s", name, e)
            raise
        if background:
            self.metrics.record_refresh("packument", "ok")
        return package

    async def _ask(self, name: str, known: Package | None) -> Package:
        with self.storage.stage() as spill:
            return await self._ask_into(name, known, spill)

    async def _ask_into(self, name: str, known: Package | None, spill: Path) -> Package:
        """:meth:`_ask`, a large answer streamed into ``spill`` (staged: removed unless it
        became the stored upstream copy)."""
        upstream = self.upstream_or_raise()
        now = self.clock()
        same_settings = known is not None and known.fingerprint == self.fingerprint
        etag = known.upstream_etag if known is not None else None
        start = time.perf_counter()
        max_bytes = self.settings.max_packument_bytes
        memory_bytes = self.computer.in_process_bytes
        try:
            got = await upstream.packument(
                name, etag=etag, max_bytes=max_bytes, spill=spill, memory_bytes=memory_bytes
            )
        except PackumentTooLargeError:
            self.metrics.record_npm_refused("too_large")
            self._upstream_outcome("error", start)
            raise
        except NotFoundError:
            self._upstream_outcome("not_found", start)
            raise
        except EntrepotError:
            self._upstream_outcome("error", start)
            raise
        self._upstream_outcome("ok", start)
        if got is None:  # 304: the upstream's packument did not change
            assert known is not None
            if same_settings and not known.too_new:
                return await self._publish_index(name, replace(known, fetched=now))
            stored = await self._stored(self._upstream_key(name))
            if stored is not None:
                return await self._build(
                    name, stored, now=now, up_etag=known.upstream_etag, fetched=now, known=known
                )
            # the stored bytes are gone: ask again, unconditionally
            got = await upstream.packument(
                name, etag=None, max_bytes=max_bytes, spill=spill, memory_bytes=memory_bytes
            )
            assert got is not None
        # Computed before the upstream's bytes are kept: a packument that does not compute
        # (not JSON, another package's) is never stored.
        return await self._build(
            name, got.body, now=now, up_etag=got.etag, fetched=now, known=known, upstream=got.body
        )

    def _upstream_outcome(self, outcome: Literal["ok", "not_found", "error"], start: float) -> None:
        assert self.upstream is not None
        self.metrics.record_upstream(
            self.upstream.name, "packument", outcome, time.perf_counter() - start
        )

    def upstream_or_raise(self) -> NpmUpstream:
        if self.upstream is None:
            raise UnavailableError(self.missing_upstream or "no npm upstream is configured")
        return self.upstream

    async def _stored(self, key: str) -> Body | None:
        """A stored packument to compute from: its file when large (read by the helper
        process, never by this worker), else its bytes; None when absent."""
        blob = await self.storage.stat(key)
        if blob is None:
            return None
        if blob.path is not None and not self.computer.in_process(blob.size):
            return blob.path
        return await self.storage.get(key)

    @contextlib.contextmanager
    def _outputs(self) -> Iterator[dict[Representation, Path]]:
        """Staged files for a large compute's six documents (removed unless published)."""
        with contextlib.ExitStack() as stack:
            yield {rep: stack.enter_context(self.storage.stage()) for rep in REPRESENTATIONS}

    async def _build(
        self,
        name: str,
        source: Body,
        *,
        now: float,
        up_etag: str | None,
        fetched: float,
        known: Package | None,
        local_rev: int | None = None,
        deleted: bool = False,
        extra: dict[str, bytes] | None = None,
        upstream: Body | None = None,
        documents: Documents | None = None,
    ) -> Package:
        """Compute the documents of ``source`` (policy measured at ``now``; ``documents``:
        made already) and publish them; ``upstream`` (the upstream's answer) is stored once it
        computed."""
        with self._outputs() as outs:
            computed = (
                Computed.of(documents)
                if documents is not None
                else await self._compute(name, source, outs, now, local=local_rev is not None)
            )
            if upstream is not None:
                key = self._upstream_key(name)
                if isinstance(upstream, Path):
                    await self.storage.put(key, upstream)
                else:
                    await self.storage.put_bytes(key, upstream)
            return await self._publish(
                name,
                computed,
                up_etag,
                fetched,
                known,
                local_rev=local_rev,
                deleted=deleted,
                extra=extra,
            )

    async def _compute(
        self,
        name: str,
        source: Body,
        outs: dict[Representation, Path],
        now: float,
        *,
        local: bool = False,
    ) -> Computed:
        policy: Policy = policy_for(
            name,
            min_release_age=0.0 if local else self.policy.min_release_age,
            exempt=self.policy.min_release_age_exempt,
            blocked=self.policy.blocked,
        )
        try:
            return await self.computer.documents(
                source,
                outs,
                name=name,
                base_url=self.base_url,
                now=now,
                max_bytes=self.settings.max_packument_bytes,
                policy=policy,
            )
        except PackumentTooLargeError:
            self.metrics.record_npm_refused("too_large")
            raise
        except PackumentError:
            self.metrics.record_npm_refused("packument")
            raise

    async def _publish(
        self,
        name: str,
        docs: Computed,
        up_etag: str | None,
        now: float,
        known: Package | None,
        *,
        local_rev: int | None = None,
        deleted: bool = False,
        extra: dict[str, bytes] | None = None,
    ) -> Package:
        prefix = f"{names.package_prefix(name)}/packument/"
        files: dict[Representation, str] = {}
        writes = [self.storage.put_bytes(key, body) for key, body in (extra or {}).items()]
        for rep, body in docs.bodies.items():
            files[rep] = prefix + _file_part(rep, docs.index.etags[rep])
            if await self.storage.stat(files[rep]) is None:
                if isinstance(body, Path):
                    writes.append(self.storage.put(files[rep], body))
                else:
                    writes.append(self.storage.put_bytes(files[rep], body))
        # At once: each write waits for its fsync, and the disk takes them together. The
        # index names the documents only once they are all in place.
        await asyncio.gather(*writes)
        previous = dict(known.files) if known is not None and known.files != files else {}
        package = Package(
            index=docs.index,
            files=files,
            fetched=now,
            upstream_etag=up_etag,
            fingerprint=self.fingerprint,
            too_new=docs.too_new,
            stamp=(0, 0),
            previous=previous,
            local_rev=local_rev,
            deleted=deleted,
        )
        published = await self._publish_index(name, package)
        if known is not None:  # the generation before the previous one has no reader left
            keep = set(files.values()) | set(previous.values())
            for old in known.previous.values():
                if old not in keep:
                    await self.storage.delete(old)
        return published

    async def _publish_index(self, name: str, package: Package) -> Package:
        raw = _index_bytes(package)
        blob = await self.storage.put_bytes(self._index_key(name), raw)
        package = replace(
            package,
            stamp=(blob.mtime_ns, blob.size),
            index_file=None if blob.path is None else os.fspath(blob.path),
        )
        self._remember(name, package)
        return package

    def _remember(self, name: str, package: Package) -> None:
        cost = 1024 + 256 * (len(package.index.versions) + len(package.index.hidden))
        package = replace(package, cost=cost)
        old = self._packages.pop(name, None)
        if old is not None:
            self._packages_cost -= old.cost
        self._packages[name] = package
        self._packages_cost += cost
        self._checked[name] = self.clock()
        while self._packages_cost > self._packages_budget and len(self._packages) > 1:
            gone, dropped = self._packages.popitem(last=False)
            self._packages_cost -= dropped.cost
            self._checked.pop(gone, None)

    def _forget(self, name: str) -> None:
        old = self._packages.pop(name, None)
        self._checked.pop(name, None)
        if old is not None:
            self._packages_cost -= old.cost

    # -- tarballs -----------------------------------------------------------------------------

    async def tarball(self, name: str, version: str) -> Tarball:
        if self.startup:
            await self._run_startup()
        known = await self._current(name, self.clock())
        if known is not None and known.local_rev is not None:
            return await self._local_tarball(name, version, known)
        self.check_name_policy(name)
        key = names.tarball_key(name, version)
        remembered = self.failures.get(key, self.clock())
        if remembered is not None:  # before _entry: a missing version refreshes only once
            self.metrics.record_cache("tarball", "negative")
            raise remembered
        # Any stored index will do, whatever its age: the tarball is immutable, and with the
        # upstream gone for longer than max_stale a cached tarball must still be served.
        package = known
        if package is None:
            package, _, _ = await self.package(name)
        try:
            entry = await self._entry(name, version, package)
        except NotFoundError as e:
            self.failures.put(key, e, self.clock())
            raise
        blob = await self.storage.stat(key)
        if blob is not None:
            self.metrics.record_cache("tarball", "hit")
            return Tarball(blob, "hit")
        if key not in self.flights:
            self._admit(key)
        try:
            result, led = await self.flights.run(
                key, lambda: self._fetch_tarball(name, version, entry, key)
            )
        except EntrepotError as e:
            self.failures.put(key, e, self.clock())
            raise
        if not led:
            self.metrics.coalesced.labels("tarball").inc()
        assert isinstance(result, BlobInfo)
        self.metrics.record_cache("tarball", "miss")
        return Tarball(result, "miss")

    async def _local_tarball(self, name: str, version: str, package: Package) -> Tarball:
        """A tarball published here: its key is the index entry's (no database read)."""
        entry = package.index.versions.get(version)
        if package.deleted or entry is None:
            raise NotFoundError(f"{name}@{version} is not published on this registry")
        blob = (
            await self.storage.stat(entry.tarball)
            if entry.tarball.startswith("npm-local/")
            else None
        )
        if blob is None:
            raise NotFoundError(f"{name}@{version}: the tarball is missing from this registry")
        self.metrics.record_cache("tarball", "hit")
        return Tarball(blob, "hit")

    async def _entry(self, name: str, version: str, package: Package) -> VersionEntry:
        """The version's dist as the index gives it; a version the index does not know (a
        release newer than the stored packument) makes the packument be asked again once."""
        index = package.index
        if version not in index.versions and version not in index.hidden:
            package, _, _ = await self.package(name, force=True)
            index = package.index
        if version not in index.versions and version not in index.hidden:
            raise NotFoundError(f"{name}@{version}: no such version")
        return served_entry(index, version)

    async def _fetch_tarball(
        self, name: str, version: str, entry: VersionEntry, key: str
    ) -> BlobInfo:
        upstream = self.upstream_or_raise()
        what = f"{name}@{version}"
        expected = expected_from_dist({"integrity": entry.integrity, "shasum": entry.shasum})
        if expected is None:
            raise VerificationError(
                f"{what}: the packument gives no dist.integrity or dist.shasum this mirror can"
                " check; it serves only verified tarballs"
            )
        async with self.storage.exclusive(key):
            blob = await self.storage.stat(key)
            if blob is not None:
                return blob
            free = self.storage.free_bytes()
            if free < self.limits.min_free_bytes:
                raise UnavailableError(
                    f"{what}: the mirror's cache volume is nearly full ({free >> 20} MiB free);"
                    " cached tarballs are still served"
                )
            url = upstream.tarball_source(name, version, entry.tarball)
            verifier = Verifier(
                expected, max_bytes=self.settings.max_tarball_bytes, what=f"tarball of {what}"
            )
            start = time.perf_counter()
            with self.storage.stage() as staged:
                try:
                    await upstream.tarball(
                        url, f"tarball of {what}", staged, verifier, self.settings.max_tarball_bytes
                    )
                except IntegrityError as e:
                    self.metrics.record_npm_refused(
                        "truncated" if e.reason == "truncated" else "integrity"
                    )
                    self.metrics.record_upstream(
                        upstream.name, "tarball", "error", time.perf_counter() - start
                    )
                    log.warning("refused %s: %s", what, e.message)
                    raise
                except TarballTooLargeError:
                    self.metrics.record_npm_refused("too_large")
                    self.metrics.record_upstream(
                        upstream.name, "tarball", "error", time.perf_counter() - start
                    )
                    raise
                except NotFoundError:
                    self.metrics.record_upstream(
                        upstream.name, "tarball", "not_found", time.perf_counter() - start
                    )
                    raise
                except EntrepotError:
                    self.metrics.record_upstream(
                        upstream.name, "tarball", "error", time.perf_counter() - start
                    )
                    raise
                self.metrics.record_upstream(
                    upstream.name, "tarball", "ok", time.perf_counter() - start
                )
                blob = await self.storage.put(key, staged)
        if self.published is not None:
            with contextlib.suppress(Exception):
                self.published(name, version, blob.size)
        return blob

    async def close(self, grace: float) -> None:
        await self.flights.drain(grace)


def _unchanged(path: str, stamp: tuple[int, int]) -> bool:
    """index.json at ``path`` is still the one read (``stat`` directly: no key checks, no
    path objects, on the hot path of every read of a local package)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_mtime_ns, st.st_size) == stamp


def _index_bytes(package: Package) -> bytes:
    meta = {
        "fetched": package.fetched,
        "upstream_etag": package.upstream_etag,
        "fingerprint": package.fingerprint,
        "too_new": package.too_new,
        "files": package.files,
        "previous": package.previous,
    }
    if package.local_rev is not None:
        meta["local"] = package.local_rev
        meta["deleted"] = package.deleted
    return b'{"meta":' + json.dumps(meta).encode() + b',"index":' + package.index.to_bytes() + b"}"


def _parse_index(raw: bytes, stamp: tuple[int, int]) -> Package:
    try:
        data = json.loads(raw)
        meta, index = data["meta"], data["index"]
        files = {_rep(r): str(k) for r, k in meta["files"].items()}
        previous = {_rep(r): str(k) for r, k in meta.get("previous", {}).items()}
        parsed = Index.from_bytes(json.dumps(index).encode())
        reps = set(files)
        if reps not in (set(REPRESENTATIONS), BEFORE_BROTLI) or set(parsed.etags) != reps:
            raise ValueError("documents missing")
        return Package(
            index=parsed,
            files=files,
            fetched=float(meta["fetched"]),
            upstream_etag=meta.get("upstream_etag"),
            fingerprint=str(meta["fingerprint"]),
            too_new=bool(meta.get("too_new")),
            stamp=stamp,
            previous=previous,
            local_rev=None if meta.get("local") is None else int(meta["local"]),
            deleted=bool(meta.get("deleted")),
        )
    except (ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise ValueError(f"not an index: {e!r}") from e


def _rep(value: str) -> Representation:
    if value not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {value!r}")
    return value
