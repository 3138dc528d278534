"""Graceful shutdown: in-flight responses finish; partial cache writes are discarded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from support.modules import simple
from support.servers import running_server
from support.slow import Script, scripted_upstream

pytestmark = pytest.mark.integration

MOD = simple("example.com/slow", "v1.0.0")
ZIP_PATH = "/example.com/slow/@v/v1.0.0.zip"


def _files() -> dict[str, bytes]:
    return {ZIP_PATH: MOD.zip_bytes()}


def test_sigterm_lets_an_in_flight_download_finish(tmp_path: Path) -> None:
    script = Script(_files(), delay_after_half=1.5)
    with scripted_upstream(script) as up, running_server(tmp_path, proxy=up) as mirror:
        result: dict[str, httpx.Response] = {}
        t = threading.Thread(
            target=lambda: result.setdefault("r", httpx.get(mirror.url + ZIP_PATH, timeout=30))
        )
        t.start()
        while not script.requests:
            time.sleep(0.02)
        assert mirror.stop() == 0
        t.join(30)
        assert result["r"].status_code == 200
        assert result["r"].content == MOD.zip_bytes()
        assert (mirror.data_dir / "go/example.com/slow/@v/v1.0.0.zip").is_file()


def test_sigterm_discards_a_partial_write(tmp_path: Path) -> None:
    script = Script(_files(), stall_paths={ZIP_PATH})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("shutdown_timeout: 1s\n")
    with scripted_upstream(script) as up, running_server(tmp_path, proxy=up, config=cfg) as mirror:
        outcome: list[object] = []

        def fetch() -> None:
            try:
                outcome.append(httpx.get(mirror.url + ZIP_PATH, timeout=30))
            except httpx.HTTPError as e:
                outcome.append(e)

        t = threading.Thread(target=fetch, daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        staging = mirror.data_dir / ".staging"
        while time.monotonic() < deadline and not any(staging.rglob("*.part")):
            time.sleep(0.02)
        assert any(staging.rglob("*.part")), "the fetch should be writing a staged file"
        started = time.monotonic()
        assert mirror.stop() == 0
        assert time.monotonic() - started < 10
        assert not list(staging.rglob("*.part"))
        assert not (mirror.data_dir / "go/example.com/slow/@v/v1.0.0.zip").exists()
        t.join(10)
        # The client got no bytes it could mistake for the module: an error, never a 200.
        assert outcome
        assert not (isinstance(outcome[0], httpx.Response) and outcome[0].status_code == 200)
