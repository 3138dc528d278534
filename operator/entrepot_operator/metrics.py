"""The operator's own Prometheus metrics (served on :9090 by the runner)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "entrepot_operator_reconciles_total",
            "Reconciles by result (ok, failed, invalid, error).",
            ["result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "entrepot_operator_reconcile_duration_seconds",
            "Time of one reconcile.",
            registry=self.registry,
        )

        self.api_requests = Counter(
            "entrepot_operator_api_requests_total",
            "Requests the operator's reconciles made to the Kubernetes API (kopf's watches and"
            " its own patches not included).",
            registry=self.registry,
        )

    def count_requests(self, api: Any) -> None:
        """Count every request of this kubernetes ApiClient (its one call_api entry point)."""
        call = api.call_api

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.api_requests.inc()
            return call(*args, **kwargs)

        api.call_api = counted

    def record(self, result: str, seconds: float) -> None:
        self.reconciles.labels(result).inc()
        self.duration.observe(seconds)
