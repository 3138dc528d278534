"""Every Prometheus metric of the server, in one place, with ``record_*`` helpers.

Label values are small closed sets: endpoint kinds, status codes, cache results and the
upstream names from the configuration. Never a module path or version.
"""

from __future__ import annotations

import bisect
import os
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

Endpoint = Literal[
    "list",
    "info",
    "mod",
    "zip",
    "latest",
    "sumdb",
    "stats",
    "health",
    "metrics",
    "other",
    "packument",
    "manifest",
    "tarball",
    "npm_api",
    "downloads",
]
NpmRefusal = Literal["integrity", "truncated", "too_large", "packument"]
CacheResult = Literal["hit", "miss", "stale", "negative", "bypass"]
Ecosystem = Literal["go", "npm"]
DownloadResult = Literal["hit", "miss", "stale"]
UpstreamOutcome = Literal["ok", "not_found", "error"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
_LATENCY_BOUNDS = (*_LATENCY_BUCKETS, float("inf"))
_UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """One registry per server instance (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "entrepot_http_requests_total",
            "HTTP requests answered.",
            ["endpoint", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "entrepot_http_request_duration_seconds",
            "Time to answer a request.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_served = Counter(
            "entrepot_http_response_bytes_total", "Body bytes sent.", ["endpoint"], registry=r
        )
        self.cache = Counter(
            "entrepot_cache_results_total",
            "Cache outcome per request.",
            ["endpoint", "result"],
            registry=r,
        )
        self.upstream = Counter(
            "entrepot_upstream_requests_total",
            "Upstream fetches by outcome.",
            ["upstream", "operation", "outcome"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "entrepot_upstream_request_duration_seconds",
            "Upstream fetch latency.",
            ["upstream", "operation"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.coalesced = Counter(
            "entrepot_coalesced_requests_total",
            "Requests that waited for a fetch another request had started.",
            ["endpoint"],
            registry=r,
        )
        self.verification_failures = Counter(
            "entrepot_verification_failures_total",
            "Upstream artifacts refused because they broke the module rules.",
            ["endpoint"],
            registry=r,
        )
        self.npm_refused = Counter(
            "entrepot_npm_refused_total",
            "Upstream npm bytes refused (never stored, never served), by reason: a tarball"
            " whose digest is not its dist.integrity/shasum, one that ended early, one over"
            " npm.max_tarball_bytes, or a packument that is not one.",
            ["reason"],
            registry=r,
        )
        self.background_refreshes = Counter(
            "entrepot_background_refreshes_total",
            "Stale-while-revalidate refreshes by outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.sumdb_failures = Counter(
            "entrepot_sumdb_verification_failures_total",
            "Checksum-database answers or module bytes refused, by database and reason.",
            ["db", "reason"],
            registry=r,
        )
        self.sumdb_unverified = Counter(
            "entrepot_sumdb_unverified_total",
            "Module files served without a checksum-database check (database unreachable and"
            " go.sumdb.unreachable is serve_unverified).",
            ["db"],
            registry=r,
        )
        self.sumdb_tree_size = Gauge(
            "entrepot_sumdb_tree_size",
            "Records in the latest verified tree head of each checksum database.",
            ["db"],
            registry=r,
            multiprocess_mode="max",
        )
        self.refused_connections = Counter(
            "entrepot_http_connections_refused_total",
            "Connections answered 503 and closed because the worker held limits.max_connections.",
            registry=r,
        )
        self.downloads = Counter(
            "entrepot_downloads_total",
            "Downloads counted for the stats API (a whole GET of a module zip or package"
            " tarball), by ecosystem and cache result.",
            ["ecosystem", "result"],
            registry=r,
        )
        self.stats_flush_duration = Histogram(
            "entrepot_stats_flush_seconds",
            "Time to write the download counts counted in memory to the stats store.",
            buckets=_FLUSH_BUCKETS,
            registry=r,
        )
        self.stats_flush_failures = Counter(
            "entrepot_stats_flush_failures_total",
            "Flushes of download counts the stats store refused (the counts are kept and"
            " written by the next flush).",
            registry=r,
        )
        self.stats_pending_counts = Gauge(
            "entrepot_stats_pending_counts",
            "Downloads counted in memory and not yet in the stats store.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.stats_inventory_failures = Counter(
            "entrepot_stats_inventory_failures_total",
            "Updates of the cache inventory (/stats/summary) the stats store refused; the"
            " walk at the next start corrects them.",
            registry=r,
        )
        self._pending_downloads: dict[tuple[str, str], int] = {}
        self._pending_requests: dict[tuple[str, int], int] = {}
        self._pending_bytes: dict[str, int] = {}
        self._pending_cache: dict[tuple[str, str], int] = {}
        self._pending_durations: dict[str, list[float]] = {}  # [sum, count per bucket...]
        self.memory_cache_items = Gauge(
            "entrepot_memory_cache_items",
            "Small answers (.info, .mod) held in memory.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.memory_cache_bytes = Gauge(
            "entrepot_memory_cache_bytes",
            "What the memory cache charges for its items (bodies, keys and per-item overhead).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_volume_free_bytes = Gauge(
            "entrepot_cache_volume_free_bytes",
            "Bytes still writable on the cache volume (updated every second; /readyz fails"
            " below limits.min_free_bytes).",
            registry=r,
            multiprocess_mode="min",
        )
        self.inflight = Gauge(
            "entrepot_upstream_fetches_in_flight",
            "Upstream fetches running now.",
            registry=r,
            multiprocess_mode="livesum",
        )

    def record_request(self, endpoint: Endpoint, code: int, seconds: float, sent: int) -> None:
        """The hot path: plain dict arithmetic, applied to the Prometheus metrics by
        :meth:`flush` (every second and before each scrape). With workers, prometheus-client
        writes every increment to a shared file under a lock: per request that cost a third
        of the whole server's throughput (docs/benchmarks.md)."""
        key = (endpoint, code)
        self._pending_requests[key] = self._pending_requests.get(key, 0) + 1
        hist = self._pending_durations.get(endpoint)
        if hist is None:
            hist = self._pending_durations[endpoint] = [0.0] + [0] * len(_LATENCY_BOUNDS)
        hist[0] += seconds
        hist[1 + bisect.bisect_left(_LATENCY_BOUNDS, seconds)] += 1
        if sent:
            self._pending_bytes[endpoint] = self._pending_bytes.get(endpoint, 0) + sent

    def record_cache(self, endpoint: Endpoint, result: CacheResult) -> None:
        key = (endpoint, result)
        self._pending_cache[key] = self._pending_cache.get(key, 0) + 1

    def record_download(self, ecosystem: Ecosystem, result: DownloadResult) -> None:
        """The hot path, like :meth:`record_request`: applied by :meth:`flush`."""
        key = (ecosystem, result)
        self._pending_downloads[key] = self._pending_downloads.get(key, 0) + 1

    def record_stats_flush(self, seconds: float, *, failed: bool, pending: int) -> None:
        """One flush of the download counts: its duration, whether the store refused it,
        and what is left in memory after it."""
        self.stats_flush_duration.observe(seconds)
        if failed:
            self.stats_flush_failures.inc()
        self.stats_pending_counts.set(pending)

    def record_stats_inventory_failure(self) -> None:
        self.stats_inventory_failures.inc()

    def flush(self) -> None:
        """Apply what the hot path counted to the Prometheus metrics."""
        downloads, self._pending_downloads = self._pending_downloads, {}
        for (ecosystem, result), n in downloads.items():
            self.downloads.labels(ecosystem, result).inc(n)
        pending, self._pending_requests = self._pending_requests, {}
        for (endpoint, code), n in pending.items():
            self.requests.labels(endpoint, str(code)).inc(n)
        sent, self._pending_bytes = self._pending_bytes, {}
        for endpoint, n in sent.items():
            self.bytes_served.labels(endpoint).inc(n)
        cache, self._pending_cache = self._pending_cache, {}
        for (endpoint, result), n in cache.items():
            self.cache.labels(endpoint, result).inc(n)
        durations, self._pending_durations = self._pending_durations, {}
        for endpoint, hist in durations.items():
            _add_observations(self.duration.labels(endpoint), hist)

    def record_upstream(
        self, upstream: str, operation: str, outcome: UpstreamOutcome, seconds: float
    ) -> None:
        self.upstream.labels(upstream, operation, outcome).inc()
        self.upstream_duration.labels(upstream, operation).observe(seconds)

    def record_memory_cache(self, items: int, charged: int) -> None:
        self.memory_cache_items.set(items)
        self.memory_cache_bytes.set(charged)

    def record_refused_connection(self) -> None:
        self.refused_connections.inc()

    def record_coalesced(self, endpoint: Endpoint) -> None:
        self.coalesced.labels(endpoint).inc()

    def record_verification_failure(self, endpoint: Endpoint) -> None:
        self.verification_failures.labels(endpoint).inc()

    def record_npm_refused(self, reason: NpmRefusal) -> None:
        self.npm_refused.labels(reason).inc()

    def record_sumdb_failure(self, db: str, reason: str) -> None:
        self.sumdb_failures.labels(db, reason).inc()

    def record_sumdb_unverified(self, db: str) -> None:
        self.sumdb_unverified.labels(db).inc()

    def record_sumdb_tree(self, db: str, size: int) -> None:
        self.sumdb_tree_size.labels(db).set(size)

    def record_free_bytes(self, free: int) -> None:
        self.cache_volume_free_bytes.set(free)

    def record_refresh(self, endpoint: Endpoint, outcome: Literal["ok", "error"]) -> None:
        self.background_refreshes.labels(endpoint, outcome).inc()

    def exposition(self) -> bytes:
        """This process's metrics, or the sum over all workers when they share a directory
        (other workers' counts are at most a second old)."""
        self.flush()
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=shared)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def _add_observations(child: Histogram, hist: list[float]) -> None:
    """Add pre-bucketed observations to a histogram child in one step per bucket.

    prometheus-client has no public call for this; ``_sum`` and ``_buckets`` (one
    non-cumulative value per upper bound) are what its own ``observe`` updates. A test
    checks the exposition, so a change there fails loudly.
    """
    child._sum.inc(hist[0])
    for bucket, n in zip(child._buckets, hist[1:], strict=True):
        if n:
            bucket.inc(n)
