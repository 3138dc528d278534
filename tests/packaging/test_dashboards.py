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
