"""Upstream credentials come from configured files, reach only their host, and never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.gocmd import GoClient
from support.modules import simple
from support.servers import running_server
from support.slow import Script, scripted_upstream

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


def _config(tmp_path: Path, upstream: str, *, netrc: str | None) -> Path:
    cfg = tmp_path / "mirror.yaml"
    lines = ["go:", f"  proxy: {upstream}"]
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
