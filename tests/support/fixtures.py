"""pytest fixtures built on the support modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.gocmd import GoClient
from support.modules import universe
from support.servers import Server, running_server


@pytest.fixture
def upstream_dir(tmp_path: Path) -> Path:
    """A directory of fixture modules in GOPROXY layout."""
    root = tmp_path / "upstream"
    universe(root)
    return root


@pytest.fixture
def upstream_server(tmp_path: Path, upstream_dir: Path) -> Iterator[Server]:
    """A second entrepot serving the fixture directory over HTTP (the 'public' upstream)."""
    with running_server(tmp_path, proxy=f"file://{upstream_dir}", name="upstream") as server:
        yield server


@pytest.fixture
def mirror(tmp_path: Path, upstream_server: Server) -> Iterator[Server]:
    """The mirror under test, chained to the HTTP upstream."""
    with running_server(tmp_path, proxy=upstream_server.url, name="mirror") as server:
        yield server


@pytest.fixture
def go_client(tmp_path: Path, mirror: Server) -> GoClient:
    return GoClient(tmp_path / "user1", mirror.url)
