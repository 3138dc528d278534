"""Every Prometheus metric of the server, in one place, with ``record_*`` helpers.

Label values are small closed sets: endpoint kinds, status codes, cache results and the
upstream names from the configuration. Never a module path or version.
"""

from __future__ import annotations

import os
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

Endpoint = Literal["list", "info", "mod", "zip", "latest", "sumdb", "health", "metrics", "other"]
CacheResult = Literal["hit", "miss", "stale", "negative", "bypass"]
UpstreamOutcome = Literal["ok", "not_found", "error"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


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
        self.background_refreshes = Counter(
            "entrepot_background_refreshes_total",
            "Stale-while-revalidate refreshes by outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self._children: dict[tuple[str, int], tuple[Counter, Histogram, Counter]] = {}
        self._cache_children: dict[tuple[str, str], Counter] = {}
        self.inflight = Gauge(
            "entrepot_upstream_fetches_in_flight",
            "Upstream fetches running now.",
            registry=r,
            multiprocess_mode="livesum",
        )

    def record_request(self, endpoint: Endpoint, code: int, seconds: float, sent: int) -> None:
        # The hot path: label children are looked up once and kept (labels() costs ~3 µs).
        children = self._children.get((endpoint, code))
        if children is None:
            children = (
                self.requests.labels(endpoint, str(code)),
                self.duration.labels(endpoint),
                self.bytes_served.labels(endpoint),
            )
            self._children[(endpoint, code)] = children
        children[0].inc()
        children[1].observe(seconds)
        if sent:
            children[2].inc(sent)

    def record_cache(self, endpoint: Endpoint, result: CacheResult) -> None:
        child = self._cache_children.get((endpoint, result))
        if child is None:
            child = self._cache_children[(endpoint, result)] = self.cache.labels(endpoint, result)
        child.inc()

    def record_upstream(
        self, upstream: str, operation: str, outcome: UpstreamOutcome, seconds: float
    ) -> None:
        self.upstream.labels(upstream, operation, outcome).inc()
        self.upstream_duration.labels(upstream, operation).observe(seconds)

    def record_coalesced(self, endpoint: Endpoint) -> None:
        self.coalesced.labels(endpoint).inc()

    def record_verification_failure(self, endpoint: Endpoint) -> None:
        self.verification_failures.labels(endpoint).inc()

    def record_refresh(self, endpoint: Endpoint, outcome: Literal["ok", "error"]) -> None:
        self.background_refreshes.labels(endpoint, outcome).inc()

    def exposition(self) -> bytes:
        """This process's metrics, or the sum over all workers when they share a directory."""
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=shared)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
