"""A hostile or broken upstream proxy cannot hold a fetch for long, nor get a page cached.

Every test runs the real server against small fixture upstreams on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from support.modules import simple
from support.servers import running_server
from support.slow import Script, scripted_upstream, serve

pytestmark = pytest.mark.integration

MOD = simple("example.com/hardening/lib", "v1.0.0")
INFO = b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}'


@contextlib.contextmanager
def _upstream(answer: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                answer(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serve(Handler) as url:
        yield url


def _drip(handler: BaseHTTPRequestHandler) -> None:
    """A 200 with a 1000-byte body sent one byte a second: the read timeout never fires."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(1)


def _html(handler: BaseHTTPRequestHandler) -> None:
    body = b"<html><body><form>Sign in to continue</form></body></html>"
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html; charset=UTF-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _config(tmp_path: Path, proxy: str, **go: str) -> Path:
    cfg = tmp_path / "mirror.yaml"
    lines = ["go:", f'  proxy: "{proxy}"'] + [f"  {k}: {v}" for k, v in go.items()]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _get(url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = httpx.get(url, timeout=60)
    return answer, time.monotonic() - started


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_a_dripping_upstream_is_cut_off_at_the_minimum_rate(tmp_path: Path) -> None:
    """Guards a 1 byte/s upstream that held one fetch (and its lock) for 200 s and more."""
    with _upstream(_drip) as drip:
        cfg = _config(tmp_path, drip, min_rate_window="3s", min_transfer_rate="1024")
        with running_server(tmp_path, config=cfg) as mirror:
            answer, took = _get(f"{mirror.url}/{MOD.path}/@v/v1.0.0.info")
    assert answer.status_code == 504, answer.text
    assert "below the minimum 1024 B/s (go.min_transfer_rate)" in _flat(answer.text)
    assert took < 10


def test_after_a_pipe_a_dripping_upstream_falls_through_to_the_next(tmp_path: Path) -> None:
    good_files = {f"/{MOD.path}/@v/v1.0.0.info": INFO}
    with _upstream(_drip) as drip, scripted_upstream(Script(good_files)) as good:
        cfg = _config(tmp_path, f"{drip}|{good}", min_rate_window="3s")
        with running_server(tmp_path, config=cfg) as mirror:
            answer, took = _get(f"{mirror.url}/{MOD.path}/@v/v1.0.0.info")
    assert answer.status_code == 200, answer.text
    assert answer.content == INFO
    assert took < 10


@pytest.mark.parametrize(
    ("path", "setting"),
    [("v1.0.0.mod", "upstream_timeout"), ("v1.0.0.zip", "zip_deadline")],
)
def test_a_fetch_ends_at_its_total_deadline(tmp_path: Path, path: str, setting: str) -> None:
    """With the rate check off, the deadline alone still bounds a drip."""
    with _upstream(_drip) as drip:
        cfg = _config(tmp_path, drip, min_transfer_rate="0", **{setting: "2s"})
        with running_server(tmp_path, config=cfg) as mirror:
            answer, took = _get(f"{mirror.url}/{MOD.path}/@v/{path}")
            stored = [p for p in (mirror.data_dir / "go").rglob("*") if p.is_file()]
    assert answer.status_code == 504, answer.text
    assert f"did not finish within 2s (go.{setting})" in _flat(answer.text)
    assert took < 8
    assert stored == []


def test_an_html_page_from_the_upstream_is_refused_and_never_stored(tmp_path: Path) -> None:
    """Guards a portal's 200 login page cached as a go.mod forever."""
    with _upstream(_html) as portal:
        cfg = _config(tmp_path, portal)
        with running_server(tmp_path, config=cfg) as mirror:
            answers = {
                tail: httpx.get(f"{mirror.url}/{MOD.path}/{tail}", timeout=30)
                for tail in (
                    "@v/list",
                    "@v/v1.0.0.info",
                    "@v/v1.0.0.mod",
                    "@v/v1.0.0.zip",
                    "@latest",
                )
            }
            stored = [p for p in (mirror.data_dir / "go").rglob("*") if p.is_file()]
    for tail, answer in answers.items():
        assert answer.status_code == 502, (tail, answer.text)
        text = _flat(answer.text)
        assert "answered an HTML page (a login page or portal?)" in text, text
        assert "check the upstream URL and its credentials" in text, text
    assert stored == []
