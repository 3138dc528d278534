"""The operator's own Prometheus metrics (served on :9090 by the runner)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "entrepot_operator_reconciles_total",
            "Reconciles by result (ok, invalid, error).",
            ["result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "entrepot_operator_reconcile_duration_seconds",
            "Time of one reconcile.",
            registry=self.registry,
        )

    def record(self, result: str, seconds: float) -> None:
        self.reconciles.labels(result).inc()
        self.duration.observe(seconds)
