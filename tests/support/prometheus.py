"""A throwaway Prometheus for tests: Debian's binary, a temporary folder, 127.0.0.1.

    with running_prometheus(["127.0.0.1:PORT"]) as prom:   # scrapes /metrics every second
        prom.query('up')                                   # /api/v1/query, parsed JSON

``python3 tests/support/prometheus.py install`` (run by ``make test``) installs the
``prometheus`` package with apt-get when ``prometheus`` is missing and we are root on Debian
(``apt-get update`` only if the plain install fails); it does nothing otherwise. Tests that need
it skip with the reason (:func:`unavailable_reason`). The server is stopped by its PID.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (make test-postgres / test-prometheus)
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.debian import apt_install


def binary(name: str = "prometheus") -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


def unavailable_reason() -> str | None:
    if binary() is None or binary("promtool") is None:
        return (
            "no prometheus/promtool: run `python3 tests/support/prometheus.py install` as root"
            " on Debian (make test does), or `apt-get install prometheus`"
        )
    return None


def install() -> int:
    """Install Debian's Prometheus when it is missing (idempotent)."""
    if unavailable_reason() is None:
        return 0
    return apt_install(
        "prometheus",
        what="prometheus",
        without=(
            "tests/integration/test_prometheus.py will fail unless ENTREPOT_TEST_NO_PROMETHEUS=1"
        ),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    port: int
    proc: subprocess.Popen[bytes]
    folder: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as e:  # 400 for a query that does not parse
            return json.load(e)

    def query(self, expr: str) -> Any:
        return self.api("/api/v1/query", query=expr)

    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def running_prometheus(
    targets: list[str],
    *,
    job: str = "entrepot",
    namespace: str = "test",
    labels: dict[str, str] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus on 127.0.0.1 scraping ``targets``' /metrics every second, their series
    labelled ``namespace`` and ``labels`` (as a ServiceMonitor's targetLabels); stopped by PID."""
    prom = binary()
    assert prom is not None, unavailable_reason()
    with tempfile.TemporaryDirectory(prefix="entrepot-prom-") as tmp:
        folder = Path(tmp)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {"targets": targets, "labels": {"namespace": namespace, **(labels or {})}}
                    ],
                }
            ],
        }
        (folder / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")
        port = _free_port()
        with (folder / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    prom,
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
            )
        server = Prometheus(port, proc, folder)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, server.log()
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r,
                ):
                    if r.status == 200:
                        break
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)
            yield server
        finally:
            server.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["install"]:
        sys.exit(install())
    print("usage: prometheus.py install", file=sys.stderr)
    sys.exit(2)
