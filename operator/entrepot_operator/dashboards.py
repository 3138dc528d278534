"""Grafana dashboards for the mirror, generated with grafanalib (a build-time dependency).

``entrepot-operator dashboards --out helm/entrepot/dashboards`` writes the JSON the chart ships
(``dashboards.enabled``); tests/packaging/test_dashboards.py fails when the checked-in files
drift from this module. Every query selects ``namespace`` and ``job`` through the board's
variables, and reads only the metric names of proxy/entrepot/metrics.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEL = 'namespace=~"$namespace", job=~"$job"'
DATASOURCE = "${datasource}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"


def _q(expr: str, legend: str) -> Query:
    return Query(expr.replace("SEL", SEL), legend)


OVERVIEW: tuple[Panel, ...] = (
    Panel(
        "Requests by endpoint and code",
        (
            _q(
                "sum by (endpoint, code) (rate(entrepot_http_requests_total{SEL}[5m]))",
                "{{endpoint}} {{code}}",
            ),
        ),
        "reqps",
    ),
    Panel(
        "Cache hit ratio",
        (
            _q(
                'sum(rate(entrepot_cache_results_total{SEL, result="hit"}[5m]))'
                " / clamp_min(sum(rate(entrepot_cache_results_total{SEL}[5m])), 1e-9)",
                "hit ratio",
            ),
        ),
        "percentunit",
    ),
    Panel(
        "Request latency p95 by endpoint",
        (
            _q(
                "histogram_quantile(0.95, sum by (endpoint, le)"
                " (rate(entrepot_http_request_duration_seconds_bucket{SEL}[5m])))",
                "{{endpoint}}",
            ),
        ),
        "s",
    ),
    Panel(
        "Upstream latency p95 and errors",
        (
            _q(
                "histogram_quantile(0.95, sum by (upstream, le)"
                " (rate(entrepot_upstream_request_duration_seconds_bucket{SEL}[5m])))",
                "p95 {{upstream}}",
            ),
            _q(
                'sum by (upstream) (rate(entrepot_upstream_requests_total{SEL, outcome="error"}'
                "[5m]))"
                " or on() vector(0)",
                "errors {{upstream}}",
            ),
        ),
        "s",
    ),
    Panel(
        "Bytes served by endpoint",
        (
            _q(
                "sum by (endpoint) (rate(entrepot_http_response_bytes_total{SEL}[5m]))",
                "{{endpoint}}",
            ),
        ),
        "Bps",
    ),
    Panel(
        "Downloads by ecosystem and result",
        (
            _q(
                "sum by (ecosystem, result) (rate(entrepot_downloads_total{SEL}[5m]))",
                "{{ecosystem}} {{result}}",
            ),
        ),
        "ops",
    ),
    Panel(
        "Memory cache",
        (
            _q("sum(entrepot_memory_cache_bytes{SEL})", "bytes"),
            _q("sum(entrepot_memory_cache_items{SEL})", "items"),
        ),
    ),
    Panel(
        "Cache volume free bytes",
        (_q("min by (job) (entrepot_cache_volume_free_bytes{SEL})", "{{job}}"),),
        "bytes",
    ),
    Panel(
        "Coalesced requests",
        (
            _q(
                "sum by (endpoint) (rate(entrepot_coalesced_requests_total{SEL}[5m]))"
                " or on() vector(0)",
                "{{endpoint}}",
            ),
        ),
        "reqps",
    ),
    Panel(
        "Targets up",
        (_q("sum by (job) (up{SEL})", "{{job}}"),),
    ),
)

UPSTREAM: tuple[Panel, ...] = (
    Panel(
        "Upstream requests by outcome",
        (
            _q(
                "sum by (upstream, operation, outcome)"
                " (rate(entrepot_upstream_requests_total{SEL}[5m]))",
                "{{upstream}} {{operation}} {{outcome}}",
            ),
        ),
        "reqps",
    ),
    Panel(
        "Upstream latency p50 / p95",
        (
            _q(
                "histogram_quantile(0.5, sum by (operation, le)"
                " (rate(entrepot_upstream_request_duration_seconds_bucket{SEL}[5m])))",
                "p50 {{operation}}",
            ),
            _q(
                "histogram_quantile(0.95, sum by (operation, le)"
                " (rate(entrepot_upstream_request_duration_seconds_bucket{SEL}[5m])))",
                "p95 {{operation}}",
            ),
        ),
        "s",
    ),
    Panel(
        "Upstream fetches in flight",
        (_q("sum(entrepot_upstream_fetches_in_flight{SEL})", "in flight"),),
    ),
    Panel(
        "Stale serving and refreshes",
        (
            _q(
                'sum(rate(entrepot_cache_results_total{SEL, result="stale"}[5m]))'
                " or on() vector(0)",
                "stale answers",
            ),
            _q(
                "sum by (outcome) (rate(entrepot_background_refreshes_total{SEL}[5m]))"
                " or on() vector(0)",
                "refresh {{outcome}}",
            ),
        ),
        "ops",
    ),
    Panel(
        "Checksum database",
        (
            _q(
                "sum by (db, reason) (rate(entrepot_sumdb_verification_failures_total{SEL}[5m]))"
                " or on() vector(0)",
                "failures {{db}} {{reason}}",
            ),
            _q(
                "sum by (db) (rate(entrepot_sumdb_unverified_total{SEL}[5m])) or on() vector(0)",
                "unverified {{db}}",
            ),
        ),
        "ops",
    ),
    Panel(
        "Checksum database tree size",
        (_q("max by (db) (entrepot_sumdb_tree_size{SEL}) or on() vector(0)", "{{db}}"),),
    ),
    Panel(
        "Refused connections",
        (_q("sum(rate(entrepot_http_connections_refused_total{SEL}[5m]))", "refused"),),
        "ops",
    ),
    Panel(
        "Stats flush",
        (
            _q(
                "histogram_quantile(0.95, sum by (le)"
                " (rate(entrepot_stats_flush_seconds_bucket{SEL}[5m])))",
                "p95 flush",
            ),
            _q("sum(rate(entrepot_stats_flush_failures_total{SEL}[5m]))", "failures"),
            _q("sum(entrepot_stats_pending_counts{SEL})", "pending counts"),
        ),
    ),
)

# The npm registry's endpoints and upstream operations (closed label values of metrics.py).
NPM_ENDPOINTS = 'endpoint=~"packument|manifest|tarball|npm_api|downloads"'
NPM_CACHED = 'endpoint=~"packument|tarball"'
NPM_OPERATIONS = 'operation=~"packument|tarball"'

NPM: tuple[Panel, ...] = (
    Panel(
        "npm requests by endpoint and code",
        (
            _q(
                "sum by (endpoint, code)"
                f" (rate(entrepot_http_requests_total{{SEL, {NPM_ENDPOINTS}}}[5m]))",
                "{{endpoint}} {{code}}",
            ),
        ),
        "reqps",
    ),
    Panel(
        "npm request latency p95 by endpoint",
        (
            _q(
                "histogram_quantile(0.95, sum by (endpoint, le)"
                f" (rate(entrepot_http_request_duration_seconds_bucket{{SEL, {NPM_ENDPOINTS}}}"
                "[5m])))",
                "{{endpoint}}",
            ),
        ),
        "s",
    ),
    Panel(
        "npm cache results (packuments, tarballs)",
        (
            _q(
                "sum by (endpoint, result)"
                f" (rate(entrepot_cache_results_total{{SEL, {NPM_CACHED}}}[5m]))",
                "{{endpoint}} {{result}}",
            ),
        ),
        "reqps",
    ),
    Panel(
        "npm cache hit ratio",
        (
            _q(
                "sum by (endpoint)"
                f' (rate(entrepot_cache_results_total{{SEL, {NPM_CACHED}, result="hit"}}[5m]))'
                " / clamp_min(sum by (endpoint)"
                f" (rate(entrepot_cache_results_total{{SEL, {NPM_CACHED}}}[5m])), 1e-9)",
                "{{endpoint}}",
            ),
        ),
        "percentunit",
    ),
    Panel(
        "npm tarball downloads by cache result",
        (
            _q(
                'sum by (result) (rate(entrepot_downloads_total{SEL, ecosystem="npm"}[5m]))',
                "{{result}}",
            ),
        ),
        "ops",
    ),
    Panel(
        "npm bytes served by endpoint",
        (
            _q(
                "sum by (endpoint)"
                f" (rate(entrepot_http_response_bytes_total{{SEL, {NPM_ENDPOINTS}}}[5m]))",
                "{{endpoint}}",
            ),
        ),
        "Bps",
    ),
    Panel(
        "npm upstream requests by outcome",
        (
            _q(
                "sum by (upstream, operation, outcome)"
                f" (rate(entrepot_upstream_requests_total{{SEL, {NPM_OPERATIONS}}}[5m]))",
                "{{upstream}} {{operation}} {{outcome}}",
            ),
        ),
        "reqps",
    ),
    Panel(
        "npm upstream latency p95",
        (
            _q(
                "histogram_quantile(0.95, sum by (operation, le)"
                " (rate(entrepot_upstream_request_duration_seconds_bucket"
                f"{{SEL, {NPM_OPERATIONS}}}[5m])))",
                "p95 {{operation}}",
            ),
        ),
        "s",
    ),
    Panel(
        "npm upstream bytes refused",
        (
            # Only on a refusal: a tarball whose digest is not its dist.integrity, one that
            # ended early or is over npm.max_tarball_bytes, or a packument that is not one.
            _q(
                "sum by (reason) (rate(entrepot_npm_refused_total{SEL}[5m])) or on() vector(0)",
                "{{reason}}",
            ),
        ),
        "ops",
    ),
    Panel(
        "npm coalesced requests",
        (
            _q(
                f"sum by (endpoint) (rate(entrepot_coalesced_requests_total{{SEL, {NPM_CACHED}}}"
                "[5m])) or on() vector(0)",
                "{{endpoint}}",
            ),
        ),
        "reqps",
    ),
)

BOARDS: dict[str, tuple[str, tuple[Panel, ...]]] = {
    "entrepot-overview": ("Entrepôt overview", OVERVIEW),
    "entrepot-upstream": ("Entrepôt upstream and health", UPSTREAM),
    "entrepot-npm": ("Entrepôt npm registry", NPM),
}


def _templating() -> Any:
    from grafanalib.core import Template, Templating

    query = "label_values(entrepot_http_requests_total, namespace)"
    return Templating(
        list=[
            Template(name="datasource", label="Data source", query="prometheus", type="datasource"),
            Template(
                name="namespace",
                label="Namespace",
                query=query,
                dataSource=DATASOURCE,
                includeAll=True,
                multi=True,
                default="$__all",
            ),
            Template(
                name="job",
                label="Job",
                dataSource=DATASOURCE,
                includeAll=True,
                multi=True,
                default="$__all",
                query='label_values(entrepot_http_requests_total{namespace=~"$namespace"}, job)',
            ),
        ]
    )


def board(uid: str) -> dict[str, Any]:
    """One dashboard as Grafana's JSON model."""
    from grafanalib._gen import DashboardEncoder
    from grafanalib.core import Dashboard, GridPos, Target, TimeSeries

    title, panels = BOARDS[uid]
    built = [
        TimeSeries(
            title=panel.title,
            dataSource=DATASOURCE,
            unit=panel.unit,
            gridPos=GridPos(h=8, w=12, x=12 * (i % 2), y=8 * (i // 2)),
            targets=[
                Target(
                    expr=q.expr,
                    legendFormat=q.legend,
                    refId=chr(ord("A") + j),
                    datasource=DATASOURCE,
                )
                for j, q in enumerate(panel.queries)
            ],
        )
        for i, panel in enumerate(panels)
    ]
    dash = Dashboard(
        title=title,
        uid=uid,
        tags=["entrepot"],
        panels=built,
        templating=_templating(),
        refresh="30s",
    ).auto_panel_ids()
    data: dict[str, Any] = json.loads(json.dumps(dash.to_json_data(), cls=DashboardEncoder))
    return data


def rendered() -> dict[str, str]:
    """File name -> JSON text, for every board."""
    return {
        f"{uid}.json": json.dumps(board(uid), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for uid in BOARDS
    }


def panel_queries(data: dict[str, Any]) -> list[str]:
    """Every query expression of a board's JSON."""
    return [t["expr"] for p in data.get("panels", []) for t in p.get("targets", [])]


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
