"""The Grafana dashboards the chart ships are what entrepot_operator.dashboards generates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("grafanalib")

from entrepot_operator.dashboards import BOARDS, panel_queries, rendered, write

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "helm" / "entrepot" / "dashboards"
METRICS = (REPO / "proxy" / "entrepot" / "metrics.py").read_text(encoding="utf-8")


def test_checked_in_dashboards_match_the_generator() -> None:
    fresh = rendered()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS.glob("*.json")}
    assert on_disk == fresh, (
        "helm/entrepot/dashboards/ drifted: run"
        " `entrepot-operator dashboards --out helm/entrepot/dashboards`"
    )


def test_the_command_writes_the_same_files(tmp_path: Path) -> None:
    from entrepot_operator.cli import main

    assert main(["dashboards", "--out", str(tmp_path)]) == 0
    assert {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.json")} == rendered()
    assert sorted(p.name for p in write(tmp_path / "again")) == sorted(rendered())


def test_boards_have_the_variables_and_only_known_metrics() -> None:
    assert len(BOARDS) >= 2
    for text in rendered().values():
        board = json.loads(text)
        names = [v["name"] for v in board["templating"]["list"]]
        assert names == ["datasource", "namespace", "job"]
        queries = panel_queries(board)
        assert queries
        for expr in queries:
            assert 'namespace=~"$namespace", job=~"$job"' in expr, expr
            for metric in re.findall(r"\b(entrepot_[a-z_]+?)(?:_bucket)?\{", expr):
                assert f'"{metric}"' in METRICS, metric


def _label_values(expr: str, label: str) -> set[str]:
    """The values a query selects for ``label`` (``label="a"`` or ``label=~"a|b"``)."""
    found: set[str] = set()
    for values in re.findall(rf'\b{label}=~?"([^"]*)"', expr):
        found.update(values.split("|"))
    return found


def test_label_values_are_the_closed_sets_of_the_metrics_module() -> None:
    """A typo in a selector (``endpoint="tarbal"``) would be a panel that is always empty."""
    from typing import get_args

    from entrepot import metrics

    closed = {
        "endpoint": set(get_args(metrics.Endpoint)),
        "ecosystem": set(get_args(metrics.Ecosystem)),
        "result": set(get_args(metrics.CacheResult)) | set(get_args(metrics.DownloadResult)),
        "reason": set(get_args(metrics.NpmRefusal)),
        "outcome": set(get_args(metrics.UpstreamOutcome)),
    }
    for text in rendered().values():
        for expr in panel_queries(json.loads(text)):
            for label, allowed in closed.items():
                assert _label_values(expr, label) <= allowed, (label, expr)


def test_the_npm_board() -> None:
    board = json.loads(rendered()["entrepot-npm.json"])
    assert board["title"] == "Entrepôt npm registry"
    queries = panel_queries(board)
    selected = set().union(*(_label_values(q, "endpoint") for q in queries))
    assert selected == {"packument", "manifest", "tarball", "npm_api", "downloads"}
    requests = [q for q in queries if "entrepot_http_requests_total" in q]
    assert requests
    assert _label_values(requests[0], "endpoint") == selected
    cache = [q for q in queries if "entrepot_cache_results_total" in q]
    assert cache
    assert all(_label_values(q, "endpoint") == {"packument", "tarball"} for q in cache)
    downloads = [q for q in queries if "entrepot_downloads_total" in q]
    assert len(downloads) == 1
    assert _label_values(downloads[0], "ecosystem") == {"npm"}
    assert any("entrepot_npm_refused_total" in q and "by (reason)" in q for q in queries)
    upstream = [q for q in queries if "entrepot_upstream_request" in q]
    assert upstream
    assert all(_label_values(q, "operation") == {"packument", "tarball"} for q in upstream)
    # Go's boards are unchanged in kind: npm's panels are on their own board.
    for uid in ("entrepot-overview.json", "entrepot-upstream.json"):
        assert "npm" not in "".join(panel_queries(json.loads(rendered()[uid])))
