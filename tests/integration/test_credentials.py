"""Upstream credentials come from configured files, reach only their host, and never show."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from support.gocmd import GoClient
from support.modules import simple
from support.servers import running_server
from support.slow import Script, scripted_upstream, serve

pytestmark = pytest.mark.integration

MOD = simple("example.com/private-proxy/lib", "v1.0.0")


def _files() -> dict[str, bytes]:
    base = f"/{MOD.path}/@v/"
    return {
        base + "list": b"v1.0.0\n",
        base + "v1.0.0.info": b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}',
        base + "v1.0.0.mod": MOD.mod_bytes(),
        base + "v1.0.0.zip": MOD.zip_bytes(),
    }


def _config(tmp_path: Path, upstream: str, *, netrc: str | None, log_level: str = "info") -> Path:
    cfg = tmp_path / "mirror.yaml"
    lines = ["log:", f"  level: {log_level}", "go:", f"  proxy: {upstream}"]
    if netrc is not None:
        (tmp_path / "netrc").write_text(netrc)
        lines += ["  credentials:", f"    netrc_file: {tmp_path / 'netrc'}"]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def test_netrc_credentials_open_an_authenticated_upstream(tmp_path: Path) -> None:
    script = Script(_files(), basic_auth="builder:s3cret-pass")
    with scripted_upstream(script) as up:
        cfg = _config(tmp_path, up, netrc="machine 127.0.0.1 login builder password s3cret-pass\n")
        with running_server(tmp_path, config=cfg) as mirror:
            client = GoClient(tmp_path / "user", mirror.url)
            [info] = client.download_json(f"{MOD.path}@v1.0.0")
            assert "Error" not in info, info
            assert "s3cret-pass" not in mirror.log()


def test_wrong_password_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    script = Script(_files(), basic_auth="builder:s3cret-pass")
    with scripted_upstream(script) as up:
        cfg = _config(tmp_path, up, netrc="machine 127.0.0.1 login builder password wrong-pass\n")
        with running_server(tmp_path, config=cfg) as mirror:
            client = GoClient(tmp_path / "user", mirror.url)
            done = client.run("mod", "download", f"{MOD.path}@v1.0.0", check=False)
            assert done.returncode != 0
            assert "answered 401" in done.stderr
            assert "wrong-pass" not in done.stderr
            assert "wrong-pass" not in mirror.log()
            # Nothing unverified or partial was cached.
            assert not list((mirror.data_dir / "go").rglob("*.zip"))


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("level", ["info", "debug"])
def test_userinfo_in_the_upstream_url_authenticates_and_never_reaches_the_log(
    tmp_path: Path, level: str
) -> None:
    """Guards the password printed in the start-up line and in httpx's request log lines."""
    script = Script(_files(), basic_auth="alice:s3cretpw")
    with scripted_upstream(script) as up:
        chain = up.replace("http://", "http://alice:s3cretpw@")
        cfg = _config(tmp_path, chain, netrc=None, log_level=level)
        with running_server(tmp_path, config=cfg) as mirror:
            answer = httpx.get(f"{mirror.url}/{MOD.path}/@v/v1.0.0.info", timeout=30)
            assert answer.status_code == 200, answer.text
            missing = httpx.get(f"{mirror.url}/example.com/nope/@v/list", timeout=30)
            assert missing.status_code == 404
            log = mirror.log()
    assert "serving Go modules on" in log
    assert "s3cretpw" not in log
    assert _basic("alice", "s3cretpw") not in log


@contextlib.contextmanager
def _recording_upstream(
    host: str, seen: list[str | None], *, redirect_to: str | None = None
) -> Iterator[str]:
    """Records each request's Authorization header; redirects everything, or serves _files()."""
    files = _files()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            if redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            body = body if body is not None else b"not found\n"
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serve(Handler, host) as url:
        yield url


@pytest.mark.parametrize(
    ("netrc", "first_hop"),
    [
        (
            "machine 127.0.0.1 login builder password MACHINEPW\n"
            "default login deploy password DEFAULTPW\n",
            "Basic " + _basic("builder", "MACHINEPW"),
        ),
        ("default login deploy password DEFAULTPW\n", None),
    ],
    ids=["machine-and-default", "default-only"],
)
def test_netrc_default_goes_nowhere_and_credentials_stay_off_redirects(
    tmp_path: Path, netrc: str, first_hop: str | None
) -> None:
    """Guards a 302 to another address arriving with ``deploy:DEFAULTPW`` (netrc default).

    127.0.0.2 is loopback too, but another host than 127.0.0.1.
    """
    at_a: list[str | None] = []
    at_b: list[str | None] = []
    with (
        _recording_upstream("127.0.0.2", at_b) as b,
        _recording_upstream("127.0.0.1", at_a, redirect_to=b) as a,
    ):
        cfg = _config(tmp_path, a, netrc=netrc)
        with running_server(tmp_path, config=cfg) as mirror:
            answer = httpx.get(f"{mirror.url}/{MOD.path}/@v/v1.0.0.info", timeout=30)
            assert answer.status_code == 200, answer.text
            log = mirror.log()
    assert at_a == [first_hop]
    assert at_b == [None]
    assert "DEFAULTPW" not in log
    assert "MACHINEPW" not in log
