"""Every dashboard query and every alert, evaluated by a real Prometheus scraping a real mirror.

A mirror with two workers serves real go command traffic from the fixture upstream, and npm
requests from the npm fixture registry; Prometheus (Debian's package, ``make test-prometheus``)
scrapes its /metrics every second. Each panel query
of the generated dashboards (variables substituted) must parse and return data; each alert
expression of the chart's PrometheusRule must parse, and ``promtool check rules`` must accept
the rendered rules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from entrepot_operator.render.meta import Owner
from entrepot_operator.render.optional import target_labels
from support import prometheus
from support.gocmd import GoClient
from support.npmfixture import running_npm_fixture
from support.servers import Server, running_server

pytestmark = pytest.mark.integration
SKIP_VARIABLE = "ENTREPOT_TEST_NO_PROMETHEUS"


@pytest.fixture(autouse=True)
def _prometheus_is_here() -> None:
    """A test that needs Prometheus and cannot get it fails with the reason (make test
    installs it), unless it was turned off on purpose."""
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1: the real-Prometheus tests are off")
    reason = prometheus.unavailable_reason()
    if reason is not None:
        pytest.fail(f"Prometheus is needed for this test: {reason}")


REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "entrepot"
JOB, NAMESPACE = "entrepot", "test"
# Queries that cannot return data here, with the reason. Empty: every panel query has data
# (the ones on series that appear only on rare events fall back to `or on() vector(0)`).
NO_DATA_EXPECTED: dict[str, str] = {}


def panel_queries() -> list[tuple[str, str]]:
    """(board/panel title, query with the variables substituted) for every panel target."""
    found = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$namespace", NAMESPACE).replace("$job", JOB)
                found.append((f"{path.stem}/{panel['title']}", expr))
    return found


def rules() -> dict[str, Any]:
    """The chart's PrometheusRule spec (``helm template``), as a Prometheus rules file."""
    sys.path.insert(0, str(REPO / "tests" / "packaging"))  # the chart tests' helm helpers
    from helmchart import render, tool

    if not tool("helm").exists():
        pytest.skip(f"helm is not built at {tool('helm')}: run `make cluster-tools`")
    with tempfile.TemporaryDirectory() as home:
        # As in a cluster that serves the kind (the chart renders the rule only there).
        served = ("monitoring.coreos.com/v1/PrometheusRule",)
        docs = render(Path(home), {"prometheusRule.enabled": "true"}, api_versions=served)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}


def drive_traffic(tmp_path: Path, mirror: Server) -> None:
    targets = ["example.com/hello@v1.0.0", "example.com/Upper/Case@v0.1.0"]
    for user in ("first", "second"):  # the second user's downloads are cache hits
        for info in GoClient(tmp_path / user, mirror.url).download_json(*targets):
            assert "Error" not in info, info
    for path in ("/stats/example.com/hello", "/stats/trends/latest", "/stats/summary"):
        httpx.get(mirror.url + path, timeout=10)
    # npm, under /npm/ beside Go: a packument, a manifest, a tarball twice (a miss, then a
    # hit), a passthrough and the download counts, for the npm board's panels.
    npm = mirror.url + "/npm"
    tarball = httpx.get(f"{npm}/fixture-a", timeout=10).json()["versions"]["1.1.0"]["dist"]
    assert httpx.get(f"{npm}/fixture-a/1.1.0", timeout=10).status_code == 200
    for _ in range(2):
        assert httpx.get(tarball["tarball"], timeout=10).status_code == 200
    for path in ("/-/ping", "/downloads/point/last-day/fixture-a"):
        httpx.get(npm + path, timeout=10)


def test_dashboards_and_alerts_evaluate_against_a_real_prometheus(
    tmp_path: Path, upstream_server: Server
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules()), encoding="utf-8")
    promtool = prometheus.binary("promtool")
    assert promtool is not None
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alerts = [r for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"]]
    assert len(alerts) == 5

    with (
        running_npm_fixture(tmp_path) as npm_upstream,
        running_server(
            tmp_path,
            proxy=upstream_server.url,
            env={"ENTREPOT_NPM__UPSTREAM": npm_upstream.url},
            args=["--workers", "2"],
            name="mirror",
        ) as mirror,
    ):
        drive_traffic(tmp_path, mirror)
        target = mirror.url.removeprefix("http://").rstrip("/")
        # The labels the operator's ServiceMonitor copies onto the series of a mirror.
        labels = target_labels(Owner(name=JOB, namespace=NAMESPACE, uid="uid-1"))
        with prometheus.running_prometheus(
            [target], job=JOB, namespace=NAMESPACE, labels=labels
        ) as prom:
            queries = panel_queries()
            assert len(queries) >= 20
            pending = {q for q in queries if q[0] not in NO_DATA_EXPECTED}
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline:
                time.sleep(1)
                for title, expr in sorted(pending):
                    answer = prom.query(expr)
                    assert answer["status"] == "success", (title, expr, answer)
                    if answer["data"]["result"]:
                        pending.discard((title, expr))
            assert not pending, f"panel queries without data: {sorted(pending)}"
            for alert in alerts:
                answer = prom.query(alert["expr"])
                assert answer["status"] == "success", (alert["alert"], answer)
            # The alerts' default selector picks the series of a mirror the operator monitors.
            (no_replica,) = [a for a in alerts if a["alert"] == "EntrepotNoReadyReplica"]
            up = no_replica["expr"].split("==")[0].strip()
            assert prom.query(up)["data"]["result"], up
            assert prom.query(f"{up} == 1")["data"]["result"], up
            assert prom.query("not a query(")["status"] == "error"
