"""The test checksum database itself, checked with the real go command and no Entrepôt code.

The fixture modules are served by Python's http.server; the go command verifies them against
``support.sumdb`` (golang.org/x/mod/sumdb's reference server) reached directly through
``GOSUMDB="<verifier key> <url>"``.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.gocmd import GoClient
from support.modules import simple, universe, write_module
from support.slow import serve
from support.sumdb import generate_key, running_sumdb

pytestmark = pytest.mark.integration

DB_NAME = "sum.test.example"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """A GOPROXY serving ``root`` over HTTP on loopback."""
    with serve(functools.partial(_QuietHandler, directory=str(root))) as url:
        yield url


def tree(url: str) -> tuple[int, str]:
    """The size and root hash of a database's latest signed tree."""
    response = httpx.get(url + "/latest", timeout=5)
    response.raise_for_status()
    lines = response.text.split("\n")
    assert lines[0] == "go.sum database tree"
    return int(lines[1]), lines[2]


def test_go_command_verifies_modules_against_the_database(tmp_path: Path) -> None:
    source = tmp_path / "upstream"
    universe(source)
    skey, vkey = generate_key(DB_NAME)
    with serve_directory(source) as proxy, running_sumdb(tmp_path, source=source, skey=skey) as db:
        assert db.vkey == vkey
        client = GoClient(tmp_path / "user", proxy, extra_env={"GOSUMDB": db.gosumdb})
        targets = [
            "example.com/hello@v1.0.0",
            "example.com/Upper/Case@v0.1.0",
            "example.com/legacy@v2.0.0+incompatible",
        ]
        infos = client.download_json(*targets)
        assert all("Error" not in info for info in infos), infos

        paths = db.requests()
        for target in ["example.com/hello@v1.0.0", "example.com/!upper/!case@v0.1.0"]:
            assert paths.count(f"/lookup/{target}") == 1, paths
        assert "/lookup/example.com/legacy@v2.0.0+incompatible" in paths
        assert all(status == 200 for _, _, status in db.entries()), db.entries()
        # The go command checks the lookups against the tree through hash tiles.
        assert any(p.startswith("/tile/8/0/") for p in paths), paths
        size, _ = tree(db.url)
        assert size == 3

        # The database signs exactly what the go command computed.
        hello = next(i for i in infos if i["Path"] == "example.com/hello")
        lookup = httpx.get(db.url + "/lookup/example.com/hello@v1.0.0", timeout=5).text
        assert f"example.com/hello v1.0.0 {hello['Sum']}\n" in lookup
        assert f"example.com/hello v1.0.0/go.mod {hello['GoModSum']}\n" in lookup

        # Unknown modules and tiles past the end of the tree: 404, never 500.
        missing = httpx.get(db.url + "/lookup/example.com/nope@v1.0.0", timeout=5)
        assert missing.status_code == 404
        for tile in ["/tile/8/0/000", "/tile/8/0/000.p/9", "/tile/8/data/000.p/9"]:
            assert httpx.get(db.url + tile, timeout=5).status_code == 404, tile
        data = httpx.get(db.url + "/tile/8/data/000.p/3", timeout=5)
        assert data.status_code == 200
        assert data.text.startswith("example.com/hello v1.0.0 h1:")


def test_go_command_rejects_a_tampered_zip(tmp_path: Path) -> None:
    source = tmp_path / "upstream"
    universe(source)
    tampered = tmp_path / "tampered"
    shutil.copytree(source, tampered)
    evil = simple("example.com/hello", "v1.0.0", body="package hello\n\nvar Evil = 1\n")
    write_module(tampered, evil, listed=False)

    skey, _ = generate_key(DB_NAME)
    with (
        serve_directory(tampered) as proxy,
        running_sumdb(tmp_path, source=source, skey=skey) as db,
    ):
        client = GoClient(tmp_path / "user", proxy, extra_env={"GOSUMDB": db.gosumdb})
        done = client.run("mod", "download", "-json", "example.com/hello@v1.0.0", check=False)
        assert done.returncode != 0
        output = done.stdout + done.stderr
        assert "SECURITY ERROR" in output, output
        assert "checksum mismatch" in output, output
        assert "/lookup/example.com/hello@v1.0.0" in db.requests()


def test_seed_changes_the_history(tmp_path: Path) -> None:
    source = tmp_path / "upstream"
    universe(source)
    skey, _ = generate_key(DB_NAME)
    with (
        running_sumdb(tmp_path, source=source, skey=skey, name="seed0") as plain,
        running_sumdb(tmp_path, source=source, skey=skey, seed=5, name="seed5") as big,
        running_sumdb(tmp_path, source=source, skey=skey, seed=3, name="seed3") as other,
    ):
        (size0, hash0), (size5, hash5) = tree(plain.url), tree(big.url)
        assert (size0, size5) == (0, 5)
        assert hash0 != hash5
        # Another seed is another history from its first record on, not a prefix of it.
        first = [httpx.get(db.url + "/tile/8/data/000.p/1", timeout=5) for db in (big, other)]
        assert all(r.status_code == 200 for r in first)
        assert first[0].text.startswith("fork.test.example/m000 v1.0.0 h1:")
        assert first[0].text != first[1].text


def test_go_command_detects_a_forked_database(tmp_path: Path) -> None:
    """A restart with another seed is a fork: a client that saw the first tree refuses it."""
    source = tmp_path / "upstream"
    universe(source)
    skey, _ = generate_key(DB_NAME)
    with serve_directory(source) as proxy:
        with running_sumdb(tmp_path, source=source, skey=skey, name="before") as db:
            client = GoClient(tmp_path / "user", proxy, extra_env={"GOSUMDB": db.gosumdb})
            client.download_json("example.com/hello@v1.0.0")
        with running_sumdb(tmp_path, source=source, skey=skey, seed=5, name="after") as db:
            client.extra_env = {"GOSUMDB": db.gosumdb}
            done = client.run("mod", "download", "-json", "example.com/hello@v1.1.0", check=False)
        assert done.returncode != 0
        output = done.stdout + done.stderr
        assert "SECURITY ERROR" in output, output
