"""The real go command through the mirror, against a real HTTP upstream on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from support.gocmd import GoClient
from support.servers import Server, running_server

pytestmark = pytest.mark.integration

MAIN = """package main

import (
	"fmt"

	"example.com/Upper/Case"
	"example.com/hello"
	"example.com/legacy"
	"example.com/multi/v2"
)

func main() { fmt.Println(hello.Hello(), Case.Hello(), multi.Hello(), legacy.Hello()) }
"""


def build_app(client: GoClient) -> str:
    work = client.new_module()
    (work / "main.go").write_text(MAIN)
    client.run(
        "get",
        "example.com/hello@latest",
        "example.com/Upper/Case@v0.1.0",
        "example.com/multi/v2",
        "example.com/legacy@v2.0.0+incompatible",
    )
    return client.run("run", ".").stdout.strip()


def test_go_get_build_and_list_through_the_mirror(go_client: GoClient, mirror: Server) -> None:
    out = build_app(go_client)
    # @latest is the highest release, not the pre-release and not the pseudo-version.
    assert out == (
        "example.com/hello@v1.1.0 example.com/Upper/Case@v0.1.0 example.com/multi/v2@v2.0.1 legacy"
    )
    versions = go_client.run("list", "-m", "-versions", "example.com/hello").stdout.split()
    assert versions == ["example.com/hello", "v1.0.0", "v1.1.0", "v1.2.0-rc.1"]
    # Upper-case paths are stored escaped, as on a case-insensitive disk.
    assert (mirror.data_dir / "go/example.com/!upper/!case/@v/v0.1.0.zip").is_file()


def test_download_sums_match_the_hash_stored_with_the_zip(
    go_client: GoClient, mirror: Server
) -> None:
    [legacy, hello] = go_client.download_json(
        "example.com/legacy@v2.0.0+incompatible", "example.com/hello@v1.0.0"
    )
    for info in (legacy, hello):
        assert "Error" not in info, info
        stored = mirror.data_dir / "go" / info["Path"] / "@v" / f"{info['Version']}.ziphash"
        assert stored.read_text() == info["Sum"]
    # A module without go.mod gets the synthesized one the checksum database expects.
    mod = httpx.get(f"{mirror.url}/example.com/legacy/@v/v2.0.0+incompatible.mod").text
    assert mod == "module example.com/legacy\n"


def test_second_user_is_served_after_the_upstream_went_away(
    tmp_path: Path, go_client: GoClient, mirror: Server, upstream_server: Server
) -> None:
    assert build_app(go_client).startswith("example.com/hello@v1.1.0")
    upstream_server.stop()
    second = GoClient(tmp_path / "user2", mirror.url)
    assert build_app(second).startswith("example.com/hello@v1.1.0")
    assert second.run("list", "-m", "-versions", "example.com/hello").stdout.split()[1:] == [
        "v1.0.0",
        "v1.1.0",
        "v1.2.0-rc.1",
    ]


def test_comma_falls_through_on_not_found(tmp_path: Path, upstream_server: Server) -> None:
    empty = tmp_path / "empty-proxy"
    empty.mkdir()
    with running_server(
        tmp_path, proxy=f"file://{empty},{upstream_server.url}", name="chain-comma"
    ) as mirror:
        client = GoClient(tmp_path / "u-comma", mirror.url)
        [info] = client.download_json("example.com/hello@v1.1.0")
        assert info["Version"] == "v1.1.0"
        assert "Error" not in info


def test_pipe_falls_through_on_a_dead_upstream(tmp_path: Path, upstream_server: Server) -> None:
    with running_server(
        tmp_path, proxy=f"http://127.0.0.1:9|{upstream_server.url}", name="chain-pipe"
    ) as mirror:
        client = GoClient(tmp_path / "u-pipe", mirror.url)
        [info] = client.download_json("example.com/hello@v1.1.0")
        assert "Error" not in info


def test_comma_stops_on_a_dead_upstream_with_a_clear_error(
    tmp_path: Path, upstream_server: Server
) -> None:
    with running_server(
        tmp_path, proxy=f"http://127.0.0.1:9,{upstream_server.url}", name="chain-dead"
    ) as mirror:
        client = GoClient(tmp_path / "u-dead", mirror.url)
        done = client.run("mod", "download", "example.com/hello@v1.1.0", check=False)
        assert done.returncode != 0
        # The go command shows our text/plain body: which upstream failed and how.
        assert "127.0.0.1: cannot fetch example.com/hello@v1.1.0" in done.stderr
        assert "502 Bad Gateway" in done.stderr


def test_unknown_module_is_a_404_the_go_command_reports(go_client: GoClient) -> None:
    done = go_client.run("mod", "download", "example.com/nope@v1.0.0", check=False)
    assert done.returncode != 0
    assert "404 Not Found" in done.stderr
    assert "example.com/nope@v1.0.0: not found at 127.0.0.1" in done.stderr


def test_the_cache_folder_is_itself_a_file_proxy(
    tmp_path: Path, go_client: GoClient, mirror: Server
) -> None:
    """docs/operations.md promises `GOPROXY=file://<data>/go` works for offline copies."""
    build_app(go_client)
    offline = GoClient(tmp_path / "offline", f"file://{mirror.data_dir / 'go'}")
    assert build_app(offline).startswith("example.com/hello@v1.1.0")
