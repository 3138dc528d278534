"""The Go mirror's service: cache policy, coalescing, routing and verification in one place.

    request ─▶ route (deny → 403) ─▶ memory / storage ─▶ fresh? serve
                                                    ├─ stale → serve, refresh in background
                                                    └─ miss → negative cache? → coalesced fetch
                                                               ─▶ chain ─▶ verify ─▶ atomic put

Nothing reaches storage before it is verified: zips against the module zip rules (with their
``h1:`` hash stored beside them as ``.ziphash``, ready for the checksum database), ``.info``
against the requested version, lists stripped of pseudo-versions.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from entrepot.caches import FailureCache, MemoryCache
from entrepot.coalesce import Coalescer
from entrepot.config import GoCache, Limits
from entrepot.errors import (
    EntrepotError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    UpstreamError,
    VerificationError,
)
from entrepot.gomod.modfile import check_go_mod
from entrepot.gomod.module import (
    canonical_version,
    escape_path,
    escape_version,
    is_pseudo_version,
    is_valid,
    match_prefix_patterns,
)
from entrepot.gomod.policy import POLICY, Kind, can_serve_stale, freshness
from entrepot.gomod.upstream import Chain, Upstream
from entrepot.gomod.ziprules import h1_mod, verify_zip
from entrepot.metrics import CacheResult, Endpoint, Metrics
from entrepot.storage.base import BlobInfo, Storage, os_errors

log = logging.getLogger("entrepot.gomod")
T = TypeVar("T")

_ENDPOINT: dict[Kind, Endpoint] = {
    Kind.LIST: "list",
    Kind.INFO: "info",
    Kind.QUERY: "info",
    Kind.LATEST: "latest",
    Kind.MOD: "mod",
    Kind.ZIP: "zip",
}


@dataclass(frozen=True)
class Answer:
    """What to send: a blob (served from ``body`` when small, else from the blob's file)."""

    kind: Kind
    blob: BlobInfo
    body: bytes | None
    cache: CacheResult
    stale_reason: str | None = None
    unverified: bool = False


Verdict = Literal["verified", "unverified", "unchecked"]


class SumChecker(Protocol):
    """A checksum database check (entrepot.sumdb.service.SumdbService), injected by the app."""

    generation: int  # changes when a database is reset: every check starts over

    def covers(self, module: str) -> bool: ...

    async def expected(self, module: str, version: str) -> Any: ...

    async def check(
        self,
        module: str,
        version: str,
        what: Literal["zip", "mod"],
        h1: str,
        *,
        expected: Awaitable[Any] | None = None,
    ) -> Verdict: ...


@dataclass(frozen=True)
class Rule:
    patterns: str
    chain: Chain | None = None
    deny: str | None = None


class Router:
    """First matching rule wins; everything else uses the default chain."""

    def __init__(self, rules: list[Rule], default: Chain) -> None:
        self.rules = rules
        self.default = default

    def chain_for(self, module: str) -> Chain:
        for rule in self.rules:
            if match_prefix_patterns(rule.patterns, module):
                if rule.chain is None:
                    raise ForbiddenError(
                        f"{module}: refused by this mirror: {rule.deny}"
                        if rule.deny
                        else f"{module}: refused by this mirror"
                    )
                return rule.chain
        return self.default


@functools.lru_cache(maxsize=1 << 16)
def storage_key(kind: Kind, module: str, version: str = "") -> str:
    """Keys use the escaped forms, so they are safe on case-insensitive filesystems."""
    base = f"go/{escape_path(module)}"
    if kind is Kind.LIST:
        return f"{base}/@v/list"
    if kind is Kind.LATEST:
        return f"{base}/@latest"
    if kind is Kind.QUERY:
        return f"{base}/@q/{escape_version(version)}.info"
    return f"{base}/@v/{escape_version(version)}.{kind.value}"


def purge_keys(module: str, version: str = "") -> list[str]:
    """The cache entries ``entrepot purge`` removes: a version's files, or without a version
    the module's mutable answers (list, @latest), which are fetched again on the next ask."""
    if version:
        return [storage_key(k, module, version) for k in (Kind.INFO, Kind.MOD, Kind.ZIP)] + [
            storage_key(Kind.ZIP, module, version) + "hash"
        ]
    return [storage_key(Kind.LIST, module), storage_key(Kind.LATEST, module)]


@functools.lru_cache(maxsize=1 << 14)
def _is_canonical(version: str) -> bool:
    return canonical_version(version) == version


def clean_list(raw: bytes) -> bytes:
    """Keep the first field of each line when it is a valid, non-pseudo version, as the go
    command's own proxy client does; junk lines (``<html>``, ``../../etc``) never get stored."""
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if fields and is_valid(fields[0]) and not is_pseudo_version(fields[0]):
            out.append(fields[0])
    return "".join(f"{v}\n" for v in out).encode()


def parse_info(raw: bytes, what: str) -> dict[str, object]:
    """Check an .info/@latest answer: a JSON object with a valid semantic ``Version``."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VerificationError(f"{what}: upstream .info is not valid JSON") from e
    if not isinstance(data, dict) or not isinstance(data.get("Version"), str):
        raise VerificationError(f"{what}: upstream .info has no Version")
    if not is_valid(data["Version"]):
        raise VerificationError(f"{what}: upstream .info has invalid Version {data['Version']!r}")
    return data


class GoService:
    def __init__(
        self,
        *,
        storage: Storage,
        router: Router,
        cache: GoCache,
        metrics: Metrics,
        max_zip_bytes: int,
        limits: Limits | None = None,
        sums: SumChecker | None = None,
        clock: Callable[[], float] = time.time,
        published: Callable[[str, str, int], None] | None = None,
        removed: Callable[[str, str], None] | None = None,
    ) -> None:
        """``published(module, version, size)``: told of each zip this process publishes
        into the cache (the stats inventory); ``removed(module, version)``: of each it removes
        (a checksum mismatch). Neither may block or raise."""
        self.storage = storage
        self.published = published
        self.removed = removed
        self.router = router
        self.cache = cache
        self.metrics = metrics
        self.max_zip_bytes = max_zip_bytes
        self.limits = limits or Limits()
        self.clock = clock
        self.memory = MemoryCache(cache.memory_bytes)
        self.failures = FailureCache(
            not_found_ttl=cache.negative_ttl,
            error_ttl=cache.error_ttl,
            max_bytes=cache.negative_memory_bytes,
        )
        self.flights: Coalescer[BlobInfo] = Coalescer()
        self.sums = sums
        # Keys whose bytes this process has checked against the database (or that need no
        # check): a hit on them costs one dict lookup. Bounded; evicted keys are re-checked.
        self._checked: OrderedDict[str, None] = OrderedDict()
        self._fetched_unverified: set[str] = set()
        self._generation = sums.generation if sums is not None else 0

    # -- the five endpoints ------------------------------------------------------------------

    async def list(self, module: str) -> Answer:
        chain = self.router.chain_for(module)

        async def fetch(up: Upstream) -> bytes:
            return clean_list(await self._timed(up, "list", up.list(module)))

        return await self._mutable(Kind.LIST, storage_key(Kind.LIST, module), chain, fetch)

    async def latest(self, module: str) -> Answer:
        chain = self.router.chain_for(module)

        async def fetch(up: Upstream) -> bytes:
            raw = await self._timed(up, "latest", up.latest(module))
            await self._remember_info(module, parse_info(raw, f"{module}@latest"), raw)
            return raw

        return await self._mutable(Kind.LATEST, storage_key(Kind.LATEST, module), chain, fetch)

    async def info(self, module: str, version: str) -> Answer:
        chain = self.router.chain_for(module)
        if not _is_canonical(version):
            return await self._query(module, version, chain)

        async def fetch(up: Upstream) -> bytes:
            raw = await self._timed(up, "info", up.info(module, version))
            data = parse_info(raw, f"{module}@{version}")
            if data["Version"] != version:
                raise VerificationError(
                    f"{module}@{version}: upstream .info names version {data['Version']}"
                )
            return raw

        key = storage_key(Kind.INFO, module, version)
        return await self._immutable(Kind.INFO, key, chain, fetch)

    async def mod(self, module: str, version: str) -> Answer:
        chain = self.router.chain_for(module)
        self._require_canonical(module, version)

        key = storage_key(Kind.MOD, module, version)

        async def fetch(up: Upstream) -> bytes:
            pending = self._prefetch_sums(module, version)
            raw = await self._timed(up, "mod", up.mod(module, version))
            try:
                check_go_mod(raw, module=module, version=version)
            except VerificationError:
                self.metrics.record_verification_failure("mod")
                raise
            await self._check_fetched(key, module, version, "mod", h1_mod(raw), pending=pending)
            return raw

        async def check_hit(blob: BlobInfo, body: bytes | None) -> bool:
            return await self._check_stored(
                key, module, version, "mod", lambda: h1_mod(body or b"")
            )

        return await self._immutable(Kind.MOD, key, chain, fetch, check_hit)

    async def zip(self, module: str, version: str) -> Answer:
        chain = self.router.chain_for(module)
        self._require_canonical(module, version)
        key = storage_key(Kind.ZIP, module, version)

        async def fetch(up: Upstream) -> BlobInfo:
            pending = self._prefetch_sums(module, version)
            with self.storage.stage() as staged, os_errors(f"{module}@{version}"):
                await self._timed(
                    up, "zip", up.zip(module, version, staged, max_bytes=self.max_zip_bytes)
                )
                try:
                    report = await asyncio.to_thread(
                        verify_zip,
                        staged,
                        module=module,
                        version=version,
                        max_zip_bytes=self.max_zip_bytes,
                    )
                except VerificationError:
                    self.metrics.record_verification_failure("zip")
                    raise
                except Exception as e:  # a zip our checks did not foresee: refuse, never a 500
                    log.warning("zip of %s@%s could not be checked: %r", module, version, e)
                    self.metrics.record_verification_failure("zip")
                    raise VerificationError(
                        f"{module}@{version}: the zip could not be checked ({type(e).__name__});"
                        " it was refused"
                    ) from e
                await self._check_fetched(key, module, version, "zip", report.h1, pending=pending)
                await self.storage.put_bytes(key + "hash", report.h1.encode())
                blob = await self.storage.put(key, staged)
            self._published(module, version, blob.size)
            return blob

        async def check_hit(blob: BlobInfo, body: bytes | None) -> bool:
            stored = await self.storage.get(key + "hash")
            h1 = stored.decode() if stored else await self._zip_h1(blob, module, version)
            return await self._check_stored(key, module, version, "zip", lambda: h1)

        return await self._immutable(Kind.ZIP, key, chain, fetch, check_hit)

    def _published(self, module: str, version: str, size: int) -> None:
        if self.published is None:
            return
        try:
            self.published(module, version, size)
        except Exception:  # the zip is stored and served whatever the inventory says
            log.exception("could not note %s@%s in the cache inventory", module, version)

    def _removed(self, module: str, version: str) -> None:
        if self.removed is None:
            return
        try:
            self.removed(module, version)
        except Exception:  # the zip is gone whatever the inventory says
            log.exception("could not remove %s@%s from the cache inventory", module, version)

    async def ziphash(self, module: str, version: str) -> str | None:
        """The stored ``h1:`` of a cached zip (for the checksum database, later)."""
        raw = await self.storage.get(storage_key(Kind.ZIP, module, version) + "hash")
        return raw.decode() if raw else None

    # -- the machinery ---------------------------------------------------------------------------

    # -- checksum database ---------------------------------------------------------------

    def _sum_checked(self, module: str) -> bool:
        return self.sums is not None and self.sums.covers(module)

    def _prefetch_sums(self, module: str, version: str) -> asyncio.Future[Any] | None:
        """Start the database lookup while the upstream fetch runs: the check then costs
        no extra round trip on a cold fetch."""
        if self.sums is None or not self._sum_checked(module):
            return None
        task = asyncio.ensure_future(self.sums.expected(module, version))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _check_fetched(
        self,
        key: str,
        module: str,
        version: str,
        what: Literal["zip", "mod"],
        h1: str,
        *,
        pending: Awaitable[Any] | None,
    ) -> None:
        """Before storing: the bytes must match the database (VerificationError if not)."""
        if self.sums is None or pending is None:
            self._mark_checked(key)
            return
        verdict = await self.sums.check(module, version, what, h1, expected=pending)
        if verdict == "unverified":
            self._fetched_unverified.add(key)
        else:
            self._mark_checked(key)

    async def _check_stored(
        self,
        key: str,
        module: str,
        version: str,
        what: Literal["zip", "mod"],
        h1: Callable[[], str],
    ) -> bool:
        """A cached file not checked by this process yet (stored before verification was
        on, or served unverified while the database was unreachable): check it now; a
        mismatch removes it from the cache. Returns False when it stays unverified."""
        if key in self._checked:
            self._checked.move_to_end(key)
            return True
        if self.sums is None or not self._sum_checked(module):
            self._mark_checked(key)
            return True
        try:
            verdict = await self.sums.check(module, version, what, h1())
        except VerificationError:
            log.error("removing %s from the cache: it failed the checksum database check", key)
            await self.storage.delete(key)
            if what == "zip":
                await self.storage.delete(key + "hash")
                self._removed(module, version)
            raise
        if verdict == "unverified":
            return False
        self._mark_checked(key)
        return True

    def _start_over(self) -> None:
        """A checksum database was reset: what was checked against it is checked again."""
        assert self.sums is not None
        self._generation = self.sums.generation
        self._checked.clear()
        self.memory.drop_prefix("go/")

    def _mark_checked(self, key: str) -> None:
        self._fetched_unverified.discard(key)
        self._checked[key] = None
        if len(self._checked) > 1 << 16:
            self._checked.popitem(last=False)

    async def _zip_h1(self, blob: BlobInfo, module: str, version: str) -> str:
        """The h1 of a cached zip stored without its ``.ziphash`` (before issue 7)."""
        if blob.path is None:  # pragma: no cover - only object storage lacks paths
            raise UpstreamError(f"{module}@{version}: cannot hash a zip without a path")
        report = await asyncio.to_thread(
            verify_zip, blob.path, module=module, version=version, max_zip_bytes=self.max_zip_bytes
        )
        await self.storage.put_bytes(
            storage_key(Kind.ZIP, module, version) + "hash", report.h1.encode()
        )
        return report.h1

    def _require_canonical(self, module: str, version: str) -> None:
        if not _is_canonical(version):
            raise InvalidRequestError(
                f"{module}@{version}: invalid version: .mod and .zip need a canonical version"
                " such as v1.2.3 (resolve queries with .info first)"
            )

    async def _timed(self, up: Upstream, operation: str, work: Awaitable[T]) -> T:
        start = time.perf_counter()
        self.metrics.inflight.inc()
        try:
            result = await work
        except NotFoundError:
            self.metrics.record_upstream(
                up.name, operation, "not_found", time.perf_counter() - start
            )
            raise
        except EntrepotError:
            self.metrics.record_upstream(up.name, operation, "error", time.perf_counter() - start)
            raise
        finally:
            self.metrics.inflight.dec()
        self.metrics.record_upstream(up.name, operation, "ok", time.perf_counter() - start)
        return result

    async def _fetch(
        self, kind: Kind, key: str, chain: Chain, fetch: Callable[[Upstream], Awaitable[BlobInfo]]
    ) -> BlobInfo:
        """One coalesced, negative-cached fetch through the chain."""
        endpoint = _ENDPOINT[kind]
        remembered = self.failures.get(key, self.clock())
        if remembered is not None:
            self.metrics.record_cache(endpoint, "negative")
            raise remembered
        if key not in self.flights:
            self._admit(key)
        try:
            blob, led = await self.flights.run(key, lambda: self._locked(kind, key, chain, fetch))
        except EntrepotError as e:
            self.failures.put(key, e, self.clock())
            raise
        if not led:
            self.metrics.record_coalesced(endpoint)
        return blob

    def _admit(self, key: str) -> None:
        """Refuse a new fetch fast (503) when the worker is at its fetch limit or the cache
        volume is nearly full: better than a queue without bound or a 500 from ENOSPC."""
        if len(self.flights) >= self.limits.max_fetches:
            raise UnavailableError(
                f"{key}: the mirror is busy ({len(self.flights)} fetches in flight); retry shortly"
            )
        free = self.storage.free_bytes()
        if free < self.limits.min_free_bytes:
            raise UnavailableError(
                f"{key}: the mirror's cache volume is nearly full ({free >> 20} MiB free, it"
                f" keeps {self.limits.min_free_bytes >> 20} MiB); cached modules are still"
                " served, new ones are not fetched until space is freed"
            )

    async def _locked(
        self, kind: Kind, key: str, chain: Chain, publish: Callable[[Upstream], Awaitable[BlobInfo]]
    ) -> BlobInfo:
        """Fetch under the store's cross-process lock, unless another worker just stored it."""
        async with self.storage.exclusive(key):
            blob = await self.storage.stat(key)
            if blob is not None and (
                POLICY[kind].immutable
                or freshness(kind, self.clock() - blob.mtime_ns / 1e9, self.cache) == "fresh"
            ):
                self.metrics.record_coalesced(_ENDPOINT[kind])
                return blob
            return await chain.call(publish)

    async def _immutable(
        self,
        kind: Kind,
        key: str,
        chain: Chain,
        fetch: Callable[[Upstream], Awaitable[bytes]] | Callable[[Upstream], Awaitable[BlobInfo]],
        check: Callable[[BlobInfo, bytes | None], Awaitable[bool]] | None = None,
    ) -> Answer:
        """``check``: the checksum-database check of a stored file, run on a hit the first
        time this process serves it (True: verified or exempt; False: still unverified)."""
        endpoint = _ENDPOINT[kind]
        in_memory = POLICY[kind].in_memory
        if check is not None and self.sums is not None and self.sums.generation != self._generation:
            self._start_over()
        if in_memory:
            item = self.memory.get(key)
            if item is not None:
                self.metrics.record_cache(endpoint, "hit")
                return Answer(kind, item[0], item[1], "hit")
        blob = await self.storage.stat(key)
        result: CacheResult = "hit"
        if blob is None:
            blob = await self._fetch(kind, key, chain, self._publishing(key, fetch))
            result = "miss"
            verified = key not in self._fetched_unverified
        else:
            verified = True
        body: bytes | None = None
        if in_memory:
            body = await self.storage.get(key)
            if body is None:  # deleted in between; rare: answer from a fresh fetch next time
                raise UpstreamError(f"{key}: cache entry vanished while serving; retry")
        # A hit, or a miss another worker (or instance) answered: this process has not
        # checked those bytes yet.
        if check is not None and verified and key not in self._checked:
            verified = await check(blob, body)
        self.metrics.record_cache(endpoint, result)
        if body is None:
            return Answer(kind, blob, None, result, unverified=not verified)
        if verified and (check is None or key in self._checked):
            self.memory.put(key, blob, body)
        return Answer(kind, blob, body, result, unverified=not verified)

    def _publishing(
        self,
        key: str,
        fetch: Callable[[Upstream], Awaitable[bytes]] | Callable[[Upstream], Awaitable[BlobInfo]],
    ) -> Callable[[Upstream], Awaitable[BlobInfo]]:
        """Wrap a fetch of bytes so that it publishes them; a fetch of a blob is already put."""

        async def run(up: Upstream) -> BlobInfo:
            got = await fetch(up)
            if isinstance(got, BlobInfo):
                return got
            return await self.storage.put_bytes(key, got)

        return run

    async def _mutable(
        self, kind: Kind, key: str, chain: Chain, fetch: Callable[[Upstream], Awaitable[bytes]]
    ) -> Answer:
        publish = self._publishing(key, fetch)
        blob = await self.storage.stat(key)
        if blob is not None:
            now = self.clock()
            age = now - blob.mtime_ns / 1e9
            state = freshness(kind, age, self.cache)
            # A refresh that failed a moment ago is not tried again until error_ttl (or
            # negative_ttl) has passed: an outage must not turn every request into an
            # upstream request, nor make every client wait for the upstream's timeout.
            remembered = self.failures.get(key, now)
            if state != "refetch":
                if state == "revalidate" and remembered is None:
                    self.flights.start(key, lambda: self._refresh(kind, key, chain, publish))
                return await self._answer_stored(kind, blob, "hit")
            if remembered is not None and can_serve_stale(age, self.cache):
                return await self._answer_stored(
                    kind, blob, "stale", stale_reason=remembered.message
                )
            try:
                if key not in self.flights:
                    self._admit(key)
                blob, _ = await self.flights.run(
                    key, lambda: self._locked(kind, key, chain, publish)
                )
            except EntrepotError as e:
                self.failures.put(key, e, self.clock())
                if isinstance(e, ForbiddenError) or not can_serve_stale(age, self.cache):
                    raise
                log.warning("serving stale %s: %s", key, e.message)
                return await self._answer_stored(kind, blob, "stale", stale_reason=e.message)
            return await self._answer_stored(kind, blob, "miss")
        blob = await self._fetch(kind, key, chain, publish)
        return await self._answer_stored(kind, blob, "miss")

    async def _answer_stored(
        self, kind: Kind, blob: BlobInfo, result: CacheResult, *, stale_reason: str | None = None
    ) -> Answer:
        self.metrics.record_cache(_ENDPOINT[kind], result)
        item = self.memory.get(blob.key)
        if item is not None and item[0] == blob:  # the same file: its bytes are in memory
            return Answer(kind, blob, item[1], result, stale_reason)
        body = await self.storage.get(blob.key)
        if body is None:
            raise UpstreamError(f"{blob.key}: cache entry vanished while serving; retry")
        self.memory.replace(blob.key, blob, body)
        return Answer(kind, blob, body, result, stale_reason)

    async def _refresh(
        self, kind: Kind, key: str, chain: Chain, publish: Callable[[Upstream], Awaitable[BlobInfo]]
    ) -> BlobInfo:
        try:
            blob = await self._locked(kind, key, chain, publish)
        except EntrepotError as e:
            self.failures.put(key, e, self.clock())
            self.metrics.record_refresh(_ENDPOINT[kind], "error")
            log.warning("background refresh of %s failed, keeping the cached copy: %s", key, e)
            raise
        self.metrics.record_refresh(_ENDPOINT[kind], "ok")
        return blob

    async def _query(self, module: str, query: str, chain: Chain) -> Answer:
        async def fetch(up: Upstream) -> bytes:
            raw = await self._timed(up, "info", up.info(module, query))
            await self._remember_info(module, parse_info(raw, f"{module}@{query}"), raw)
            return raw

        return await self._mutable(Kind.QUERY, storage_key(Kind.QUERY, module, query), chain, fetch)

    async def _remember_info(self, module: str, data: dict[str, object], raw: bytes) -> None:
        """A query resolved to a canonical version: its .info is now known for good."""
        version = data["Version"]
        if not isinstance(version, str) or canonical_version(version) != version:
            return
        if "Time" not in data:
            return
        key = storage_key(Kind.INFO, module, version)
        if await self.storage.stat(key) is None:
            await self.storage.put_bytes(key, raw)
