"""Configuration: sources and precedence, Go defaults, clear errors, and the generated docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from entrepot.config import (
    format_duration,
    load_settings,
    parse_duration,
    reference_markdown,
    split_host_port,
)
from entrepot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
NO_GO = {
    "PATH": "/nonexistent",
    "GOSUMDB": "off",
}  # `go env` cannot answer: only what we pass counts


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("7d", 604800), ("250ms", 0.25), (42, 42)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("bad", ["5", "5x", "-1s", "", True, -3])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_listen_addresses() -> None:
    assert split_host_port("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert split_host_port("[::1]:9") == ("::1", 9)
    for bad in ("8080", "host", "[::1]", "a:99999"):
        with pytest.raises(ValueError, match=r"listen address|port"):
            split_host_port(bad)


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen: 127.0.0.1:1111\ngo:\n  proxy: https://file.example.com\n")
    env = {**NO_GO, "ENTREPOT_LISTEN": "127.0.0.1:2222", "ENTREPOT_GO__CACHE__LIST_TTL": "10m"}
    s = load_settings(config_file=cfg, environ=env, overrides={"data_dir": "/tmp/x"})
    assert s.listen == "127.0.0.1:2222"  # env beats file
    assert s.go.proxy == "https://file.example.com"
    assert s.go.cache.list_ttl == 600
    assert s.data_dir == Path("/tmp/x")  # flags beat everything
    s = load_settings(config_file=cfg, environ=env, overrides={"listen": "127.0.0.1:3333"})
    assert s.listen == "127.0.0.1:3333"


def test_upstreams_come_from_the_users_go_environment() -> None:
    env = {**NO_GO, "GOPROXY": "https://corp.example.com|direct", "GOPRIVATE": "git.example.com/*"}
    s = load_settings(environ=env)
    assert s.go.proxy == "https://corp.example.com|direct"
    assert s.go.routes is not None
    assert [(r.patterns, r.proxy) for r in s.go.routes] == [("git.example.com/*", "direct")]


def test_go_env_is_asked_when_the_environment_is_silent() -> None:
    env = {"PATH": "/usr/local/go/bin:/usr/bin:/bin", "HOME": "/nonexistent", "GOENV": "off"}
    s = load_settings(environ=env)
    assert s.go.proxy  # whatever `go env GOPROXY` says on this machine, never empty


def test_no_upstream_at_all_is_refused_with_advice() -> None:
    with pytest.raises(ConfigError, match=r"no Go upstream configured: set go.proxy"):
        load_settings(environ=NO_GO)


def test_pointing_at_itself_is_refused() -> None:
    env = {**NO_GO, "GOPROXY": "http://127.0.0.1:8080"}
    with pytest.raises(ConfigError, match="points at this server itself"):
        load_settings(environ=env)


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("go: {cache: {list_ttl: 5x}}", 'go.cache.list_ttl = "5x": invalid duration'),
        ("go: {proxy: 'ftp://x.example.com'}", "go.proxy"),
        ("go: {routes: [{patterns: 'a.example.com/['}]}", "go.routes.0.patterns"),
        ("go: {routes: [{patterns: 'a.example.com'}]}", "exactly one of 'proxy'"),
        ("log: {level: loud}", "log.level"),
        ("go: {max_zip_bytes: 999999999999}", "go.max_zip_bytes"),
        ("listen: nowhere", "invalid listen address"),
        ("surprise: 1", "surprise = 1: Extra inputs are not permitted"),
        (
            "npm: {registry: {publish: [{packages: ['@corp/*'], allow: users}]}}",
            "npm.registry.publish.0",
        ),
        (
            "npm: {registry: {publish: [{packages: ['@corp/*'], allow: users}]}}",
            "allow: users needs users",
        ),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=cfg, environ={**NO_GO, "GOPROXY": "off"})
    assert fragment in caught.value.message


def test_cli_exits_2_on_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("go: {cache: {negative_ttl: soon}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "entrepot.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={"PATH": "/nonexistent", "GOPROXY": "off"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "go.cache.negative_ttl" in done.stderr
    assert "Traceback" not in done.stderr


def test_configuration_reference_matches_the_models() -> None:
    """docs/configuration.md embeds the generated table; regenerate with
    `entrepot config-reference` when a model changes."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    begin, end = "<!-- BEGIN GENERATED -->\n", "<!-- END GENERATED -->"
    assert begin in doc
    assert end in doc
    embedded = doc.split(begin, 1)[1].split(end, 1)[0]
    assert embedded == reference_markdown()


def test_credential_paths_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("go:\n  credentials:\n    netrc_file: secrets/netrc\n")
    s = load_settings(config_file=cfg, environ={**NO_GO, "GOPROXY": "off"})
    assert s.go.credentials.netrc_file == tmp_path / "secrets" / "netrc"
