"""A private path routed to ``direct``: the real go command in the mirror fetches from a git
repository served by ``git http-backend`` on 127.0.0.1, and the real go command of a user
fetches from the mirror.

How nothing leaves the machine: the module path ends in ``.git``, so the go command takes
``example.com/private/lib.git`` as the repository root without any ``?go-get=1`` lookup and
asks git for ``https://example.com/private/lib``. The git config given to the mirror
(``go.credentials.git_config_file``) rewrites that URL, and the ``git+ssh``/``ssh`` ones the
go command tries after a failed ``https`` ping, to the local server with ``url.*.insteadOf``.
Tripwires prove it: HTTP(S)_PROXY of the direct go command points at a listener that counts
connections, ``GIT_SSH_COMMAND`` leaves a marker file, and ``GIT_TRACE`` shows every remote
helper git started.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support.githttp import MOD, GitServer, git_http_server, make_repo
from support.gocmd import GoClient
from support.servers import Server, running_server

pytestmark = pytest.mark.integration

ROUTE = "example.com/private"
USER, PASSWORD = "alice", "s3cret-Pa55"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
DENY = "private code is served only by the in-house mirror; see the platform wiki"

MAIN = """package main

import (
	"example.com/hello"
	lib "example.com/private/lib.git"
)

func main() { println(lib.Hello(), hello.Hello()) }
"""


# ---------------------------------------------------------------------------------------------
# Tripwires and the mirror's configuration


@dataclass
class Tripwire:
    """A listener used as HTTP(S)_PROXY: any connection is a request meant for elsewhere."""

    url: str
    connections: list[str] = field(default_factory=list)


@contextlib.contextmanager
def tripwire() -> Iterator[Tripwire]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    wire = Tripwire(f"http://127.0.0.1:{sock.getsockname()[1]}")
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    wire.connections.append(conn.recv(200).decode("latin-1"))

    thread = threading.Thread(target=accept, name="tripwire", daemon=True)
    thread.start()
    try:
        yield wire
    finally:
        stop.set()
        thread.join(5)
        sock.close()


@dataclass
class Setup:
    config: Path
    trace: Path  # GIT_TRACE of the mirror's git
    ssh_marker: Path  # created if git ever ran ssh


def write_config(
    tmp: Path,
    name: str,
    *,
    git: GitServer,
    wire: Tripwire,
    upstream: str = "off",
    credentials: str | None = None,
) -> Setup:
    gitconfig = tmp / f"{name}.gitconfig"
    schemes = ("https", "http", "git+ssh", "ssh", "git")
    gitconfig.write_text(
        f'[url "{git.url}/"]\n' + "".join(f"\tinsteadOf = {s}://example.com/\n" for s in schemes)
    )
    creds: dict[str, str] = {"git_config_file": str(gitconfig)}
    if credentials is not None:
        path = tmp / f"{name}.git-credentials"
        path.write_text(credentials)
        creds["git_credentials_file"] = str(path)
    trace, marker = tmp / f"{name}.git-trace", tmp / f"{name}.ssh-ran"
    settings: dict[str, Any] = {
        "go": {
            "proxy": upstream,
            "routes": [{"patterns": ROUTE, "proxy": "direct"}],
            "credentials": creds,
            "direct": {
                "timeout": "45s",
                "env": {
                    **dict.fromkeys(PROXY_VARIABLES, wire.url),
                    "NO_PROXY": "127.0.0.1",
                    "no_proxy": "127.0.0.1",
                    "GIT_SSH_COMMAND": f"touch {shlex.quote(str(marker))}; false",
                    "GIT_TRACE": str(trace),
                },
            },
        }
    }
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings))
    return Setup(config, trace, marker)


def assert_stayed_local(
    setup: Setup, git: GitServer, wire: Tripwire, *, go_get_lookups: bool = False
) -> None:
    """git talked to the local server only: no proxy connection, no ssh, no other URL.

    With ``go_get_lookups``, the proxy may have seen the go command's own ``?go-get=1`` lookups
    of a path without ``.git`` (``go get`` probes ``example.com/private`` as a module): without
    the proxy they would have gone to DNS and out.
    """
    if go_get_lookups:
        assert wire.connections, "expected the go-get lookup of the path prefix"
        for request in wire.connections:
            assert request.startswith("CONNECT example.com:443 "), request
            assert "User-Agent: Go-http-client/" in request, request
    else:
        assert wire.connections == []
    assert not setup.ssh_marker.exists()
    helpers = [
        line.split()[-1]
        for line in setup.trace.read_text().splitlines()
        if "run_command: git-remote-" in line
    ]
    assert helpers, "git never started a remote helper"
    assert all(url.startswith(f"{git.url}/") for url in helpers), helpers


def accessed(server: Server, path: str, timeout: float = 5) -> list[int]:
    """The statuses the server's access log shows for ``path`` (it is flushed every second)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = [
            entry["status"]
            for line in server.log().splitlines()
            if line.startswith("{") and (entry := json.loads(line)).get("path") == path
        ]
        if statuses or time.monotonic() > deadline:
            return statuses
        time.sleep(0.1)


def go_json(client: GoClient, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(client.run(*args).stdout)
    return data


# ---------------------------------------------------------------------------------------------


def test_private_route_fetches_from_git_and_never_asks_the_public_upstream(
    tmp_path: Path, upstream_server: Server
) -> None:
    repo = make_repo(tmp_path)
    with git_http_server(repo.root) as git, tripwire() as wire:
        setup = write_config(tmp_path, "private", git=git, wire=wire, upstream=upstream_server.url)
        with running_server(tmp_path, config=setup.config, name="mirror") as mirror:
            go = GoClient(tmp_path / "user", mirror.url)

            # Pseudo-versions (main's head) are never listed.
            versions = go.run("list", "-m", "-versions", MOD).stdout.split()
            assert versions == [MOD, "v1.0.0", "v1.1.0"]

            [download] = go.download_json(f"{MOD}@v1.1.0")
            assert download["Version"] == "v1.1.0"
            stored = mirror.data_dir / "go" / MOD / "@v" / "v1.1.0.ziphash"
            assert download["Sum"] == stored.read_text()

            # Queries resolve through .info: a branch to a pseudo-version, a hash to its tag.
            branch = go_json(go, "list", "-m", "-json", f"{MOD}@main")
            assert branch["Version"].startswith("v1.1.1-0.20240303100000-")
            assert branch["Version"].endswith(repo.head[:12])
            by_hash = go_json(go, "list", "-m", "-json", f"{MOD}@{repo.tags['v1.0.0'][:10]}")
            assert by_hash["Version"] == "v1.0.0"
            assert accessed(mirror, f"/{MOD}/@v/main.info") == [200]
            assert accessed(mirror, f"/{MOD}/@v/{repo.tags['v1.0.0'][:10]}.info") == [200]

            # A fresh module gets @latest (the highest tag, not main) and builds with it.
            app = go.new_module("example.com/app")
            (app / "main.go").write_text(MAIN)
            go.run("get", f"{MOD}@latest", "example.com/hello@v1.1.0", cwd=app)
            assert f"{MOD} v1.1.0" in (app / "go.mod").read_text()
            binary = tmp_path / "app-bin"
            go.run("build", "-o", str(binary), ".", cwd=app)
            out = subprocess.run([binary], capture_output=True, text=True, timeout=30, check=True)
            assert out.stderr.strip() == "lib v1.1.0 example.com/hello@v1.1.0"
            # `go get` also probed the shorter paths as modules; example.com/private is on the
            # private route, so the mirror's go command looked it up (see assert_stayed_local).
            assert accessed(mirror, f"/{ROUTE}/@v/list") == [404]

    assert_stayed_local(setup, git, wire, go_get_lookups=True)
    assert all(r.path.startswith("/private/lib/") for r in git.requests)
    # Routing is the point: the public upstream served example.com/hello but never saw the
    # private path.
    assert accessed(upstream_server, "/example.com/hello/@v/v1.1.0.zip") == [200]
    assert ROUTE not in upstream_server.log()


def test_denied_route_answers_403_with_the_configured_message(tmp_path: Path) -> None:
    config = tmp_path / "deny.yaml"
    config.write_text(
        yaml.safe_dump({"go": {"proxy": "off", "routes": [{"patterns": ROUTE, "deny": DENY}]}})
    )
    with running_server(tmp_path, config=config, name="deny") as mirror:
        go = GoClient(tmp_path / "user", mirror.url)
        for args in (("mod", "download", f"{MOD}@v1.1.0"), ("list", "-m", "-versions", MOD)):
            done = go.run(*args, check=False)
            assert done.returncode != 0
            said = " ".join(done.stderr.split())
            assert "403 Forbidden" in said
            assert f"{MOD}: refused by this mirror: {DENY}" in said


def test_git_credentials_file_reaches_git_and_is_left_untouched(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    with git_http_server(repo.root, auth=(USER, PASSWORD)) as git, tripwire() as wire:
        entry = git.url.replace("http://", f"http://{USER}:{PASSWORD}@")
        credentials = f"http://someone:else@127.0.0.1:1\n{entry}\n"
        setup = write_config(tmp_path, "auth", git=git, wire=wire, credentials=credentials)
        with running_server(tmp_path, config=setup.config, name="mirror") as mirror:
            go = GoClient(tmp_path / "user", mirror.url)
            versions = go.run("list", "-m", "-versions", MOD).stdout.split()
            assert versions == [MOD, "v1.0.0", "v1.1.0"]
            [download] = go.download_json(f"{MOD}@v1.0.0")
            assert download["Sum"].startswith("h1:")
            assert PASSWORD not in mirror.log()
    assert_stayed_local(setup, git, wire)
    assert any(r.user == USER and r.status == 200 for r in git.requests)
    # git's "store" helper would have rewritten the file (approve) or pruned it (reject).
    assert (tmp_path / "auth.git-credentials").read_text() == credentials


@pytest.mark.parametrize("password", [None, "wrong-Pa55word"], ids=["no-credentials", "wrong"])
def test_without_valid_credentials_the_mirror_fails_fast_without_leaking(
    tmp_path: Path, password: str | None
) -> None:
    repo = make_repo(tmp_path)
    with git_http_server(repo.root, auth=(USER, PASSWORD)) as git, tripwire() as wire:
        credentials = None
        if password is not None:
            credentials = git.url.replace("http://", f"http://{USER}:{password}@") + "\n"
        setup = write_config(tmp_path, "auth", git=git, wire=wire, credentials=credentials)
        with running_server(tmp_path, config=setup.config, name="mirror") as mirror:
            start = time.monotonic()
            response = httpx.get(f"{mirror.url}/{MOD}/@v/list", timeout=60)
            assert time.monotonic() - start < 60
            assert response.status_code == 502
            assert "direct fetch failed" in response.text

            go = GoClient(tmp_path / "user", mirror.url)
            done = go.run("mod", "download", f"{MOD}@v1.1.0", check=False)
            assert done.returncode != 0
            assert "502 Bad Gateway" in done.stderr
            seen = response.text + done.stderr + mirror.log() + setup.trace.read_text()
            for secret in (PASSWORD, password):
                if secret:
                    assert secret not in seen
    assert_stayed_local(setup, git, wire)
    assert git.requests
    assert {r.status for r in git.requests} == {401}
    if credentials is not None:
        assert (tmp_path / "auth.git-credentials").read_text() == credentials
