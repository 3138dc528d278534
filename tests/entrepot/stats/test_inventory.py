"""The cache inventory: the start-up walk, background updates that never fail a request, and
``entrepot purge`` telling the store what it removed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakestore import FakeStore

from entrepot.cli import main
from entrepot.errors import UnavailableError
from entrepot.metrics import Metrics
from entrepot.stats.inventory import InventoryUpdates, reconcile_go, walk_go_zips


def put(root: Path, rel: str, size: int) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_walk_finds_zips_and_unescapes_paths(tmp_path: Path) -> None:
    put(tmp_path, "go/example.com/a/@v/v1.0.0.zip", 10)
    put(tmp_path, "go/example.com/a/@v/v1.0.0.mod", 3)  # not a zip
    put(tmp_path, "go/example.com/a/@v/v1.0.0.ziphash", 3)
    put(tmp_path, "go/example.com/a/@v/list", 3)
    put(tmp_path, "go/example.com/!upper/!case/@v/v0.1.0-!r!c.zip", 7)
    put(tmp_path, "go/example.com/a/v2/@v/v2.0.0.zip", 5)  # nested module
    put(tmp_path, "go/example.com/Bad/@v/v1.0.0.zip", 1)  # raw upper case: not ours
    put(tmp_path, "go/nodot/@v/v1.0.0.zip", 1)  # not a module path
    put(tmp_path, "go/example.com/a/@v/sub/v9.0.0.zip", 1)  # nothing below @v
    put(tmp_path, ".staging/w0/abc.part", 1)
    assert walk_go_zips(tmp_path) == {
        ("example.com/a", "v1.0.0"): 10,
        ("example.com/Upper/Case", "v0.1.0-RC"): 7,
        ("example.com/a/v2", "v2.0.0"): 5,
    }


def test_walk_of_an_empty_data_dir(tmp_path: Path) -> None:
    assert walk_go_zips(tmp_path) == {}


async def test_reconcile_replaces_the_inventory(tmp_path: Path) -> None:
    store = FakeStore()
    store.sizes = {"go": {("example.com/gone", "v1.0.0"): 99}, "npm": {("x", "1.0.0"): 1}}
    put(tmp_path, "go/example.com/a/@v/v1.0.0.zip", 10)
    assert await reconcile_go(store, tmp_path) == 1
    assert store.sizes == {"go": {("example.com/a", "v1.0.0"): 10}, "npm": {("x", "1.0.0"): 1}}


class FailingStore(FakeStore):
    async def cached(self, ecosystem: str, package: str, version: str, size: int) -> None:
        raise UnavailableError("down")


async def test_published_zips_reach_the_store_in_the_background() -> None:
    store = FakeStore()
    updates = InventoryUpdates(store, Metrics())
    updates.published("example.com/a", "v1.0.0", 10)  # returns at once: no await
    assert store.sizes == {}
    await updates.close()
    assert store.sizes == {"go": {("example.com/a", "v1.0.0"): 10}}


async def test_a_failing_inventory_update_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    updates = InventoryUpdates(FailingStore(), metrics)
    updates.published("example.com/a", "v1.0.0", 10)
    await updates.close()
    assert "inventory update for example.com/a@v1.0.0 failed" in caplog.text
    assert "entrepot_stats_inventory_failures_total 1.0" in metrics.exposition().decode()


async def test_close_does_not_wait_for_a_hung_store_beyond_its_grace() -> None:
    class Hung(FakeStore):
        async def cached(self, ecosystem: str, package: str, version: str, size: int) -> None:
            await asyncio.sleep(30)

    updates = InventoryUpdates(Hung(), Metrics())
    updates.published("example.com/a", "v1.0.0", 10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await updates.close(grace=0.1)
    assert loop.time() - start < 1


def test_purge_removes_the_version_from_the_stats_inventory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the real SQL store (SQLite in the data directory)."""
    from entrepot.stats.sqlstore import open_store

    data = tmp_path / "data"
    put(data, "go/example.com/a/@v/v1.0.0.zip", 10)
    put(data, "go/example.com/a/@v/v1.0.0.info", 2)
    put(data, "go/example.com/a/@v/v1.1.0.zip", 20)
    assert main(["purge", "--data", str(data), "example.com/a@v1.0.0"]) == 0  # creates the schema

    async def reconcile() -> None:
        store = open_store(None, data)
        try:
            await store.reconcile(
                "go", {("example.com/a", "v1.1.0"): 20, ("example.com/a", "v1.2.0"): 5}
            )
        finally:
            await store.close()

    async def inventory() -> tuple[int, int]:
        store = open_store(None, data)
        try:
            inv = await store.inventory("go")
        finally:
            await store.close()
        return inv.versions, inv.bytes

    asyncio.run(reconcile())
    assert asyncio.run(inventory()) == (2, 25)
    put(data, "go/example.com/a/@v/v1.2.0.zip", 5)
    assert main(["purge", "--data", str(data), "example.com/a@v1.2.0"]) == 0
    assert asyncio.run(inventory()) == (1, 20)
    assert "removed" in capsys.readouterr().out
