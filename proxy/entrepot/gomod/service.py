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
from typing import TypeVar

from entrepot.coalesce import Coalescer
from entrepot.config import GoCache
from entrepot.errors import (
    EntrepotError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UpstreamError,
    VerificationError,
)
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
from entrepot.gomod.ziprules import verify_zip
from entrepot.metrics import CacheResult, Endpoint, Metrics
from entrepot.storage.base import BlobInfo, Storage

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


class MemoryCache:
    """A byte-bounded LRU of small immutable answers (.info, .mod): no disk read on a hit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._items: OrderedDict[str, tuple[BlobInfo, bytes]] = OrderedDict()

    def get(self, key: str) -> tuple[BlobInfo, bytes] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, blob: BlobInfo, body: bytes) -> None:
        if len(body) > self.max_bytes // 16 or key in self._items:
            return
        self._items[key] = (blob, body)
        self.used += len(body)
        while self.used > self.max_bytes:
            _, (_, old) = self._items.popitem(last=False)
            self.used -= len(old)


class NegativeCache:
    """Recent 'not found' answers, so a storm of misses does not become a storm upstream."""

    def __init__(self, ttl: float, *, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, NotFoundError]] = OrderedDict()

    def get(self, key: str, now: float) -> NotFoundError | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self._items[key]
            return None
        return item[1]

    def put(self, key: str, error: NotFoundError, now: float) -> None:
        if self.ttl <= 0:
            return
        self._items[key] = (now + self.ttl, error)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def forget(self, key: str) -> None:
        self._items.pop(key, None)


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


@functools.lru_cache(maxsize=1 << 14)
def _is_canonical(version: str) -> bool:
    return canonical_version(version) == version


def clean_list(raw: bytes) -> bytes:
    """Keep the first field of each line, drop blanks and pseudo-versions (never listed)."""
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if fields and not is_pseudo_version(fields[0]):
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.router = router
        self.cache = cache
        self.metrics = metrics
        self.max_zip_bytes = max_zip_bytes
        self.clock = clock
        self.memory = MemoryCache(cache.memory_bytes)
        self.negative = NegativeCache(cache.negative_ttl)
        self.flights: Coalescer[BlobInfo] = Coalescer()

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

        async def fetch(up: Upstream) -> bytes:
            raw = await self._timed(up, "mod", up.mod(module, version))
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise VerificationError(f"{module}@{version}: upstream go.mod is not UTF-8") from e
            return raw

        key = storage_key(Kind.MOD, module, version)
        return await self._immutable(Kind.MOD, key, chain, fetch)

    async def zip(self, module: str, version: str) -> Answer:
        chain = self.router.chain_for(module)
        self._require_canonical(module, version)
        key = storage_key(Kind.ZIP, module, version)

        async def fetch(up: Upstream) -> BlobInfo:
            with self.storage.stage() as staged:
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
                await self.storage.put_bytes(key + "hash", report.h1.encode())
                return await self.storage.put(key, staged)

        return await self._immutable(Kind.ZIP, key, chain, fetch)

    async def ziphash(self, module: str, version: str) -> str | None:
        """The stored ``h1:`` of a cached zip (for the checksum database, later)."""
        raw = await self.storage.get(storage_key(Kind.ZIP, module, version) + "hash")
        return raw.decode() if raw else None

    # -- the machinery ---------------------------------------------------------------------------

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
        cached_miss = self.negative.get(key, self.clock())
        if cached_miss is not None:
            self.metrics.record_cache(endpoint, "negative")
            raise cached_miss
        try:
            blob, led = await self.flights.run(key, lambda: self._locked(kind, key, chain, fetch))
        except NotFoundError as e:
            self.negative.put(key, e, self.clock())
            raise
        if not led:
            self.metrics.record_coalesced(endpoint)
        return blob

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
    ) -> Answer:
        endpoint = _ENDPOINT[kind]
        in_memory = POLICY[kind].in_memory
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
        self.metrics.record_cache(endpoint, result)
        if not in_memory:
            return Answer(kind, blob, None, result)
        body = await self.storage.get(key)
        if body is None:  # deleted in between; rare: answer from a fresh fetch next time
            raise UpstreamError(f"{key}: cache entry vanished while serving; retry")
        self.memory.put(key, blob, body)
        return Answer(kind, blob, body, result)

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
            age = self.clock() - blob.mtime_ns / 1e9
            state = freshness(kind, age, self.cache)
            if state != "refetch":
                if state == "revalidate":
                    self.flights.start(key, lambda: self._refresh(kind, key, chain, publish))
                return await self._answer_stored(kind, blob, "hit")
            try:
                blob, _ = await self.flights.run(
                    key, lambda: self._locked(kind, key, chain, publish)
                )
            except EntrepotError as e:
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
        body = await self.storage.get(blob.key)
        if body is None:
            raise UpstreamError(f"{blob.key}: cache entry vanished while serving; retry")
        return Answer(kind, blob, body, result, stale_reason)

    async def _refresh(
        self, kind: Kind, key: str, chain: Chain, publish: Callable[[Upstream], Awaitable[BlobInfo]]
    ) -> BlobInfo:
        try:
            blob = await self._locked(kind, key, chain, publish)
        except EntrepotError as e:
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
