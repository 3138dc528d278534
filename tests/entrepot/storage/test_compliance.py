"""The storage compliance suite: every backend must pass it (only the filesystem exists yet;
object storage joins the parametrization when it lands)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from entrepot.storage.base import Storage
from entrepot.storage.filesystem import FilesystemStorage

BACKENDS: dict[str, Callable[[Path], Storage]] = {
    "filesystem": FilesystemStorage,
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return BACKENDS[request.param](tmp_path / "store")


async def test_absent_keys(store: Storage) -> None:
    assert await store.stat("go/example.com/m/@v/list") is None
    assert await store.get("go/example.com/m/@v/list") is None
    await store.delete("go/example.com/m/@v/list")  # deleting nothing is fine


async def test_put_then_stat_get_delete(store: Storage) -> None:
    info = await store.put_bytes("a/b/c.mod", b"module x\n")
    assert info.size == 9
    stat = await store.stat("a/b/c.mod")
    assert stat is not None
    assert stat.etag == info.etag
    assert await store.get("a/b/c.mod") == b"module x\n"
    await store.delete("a/b/c.mod")
    assert await store.stat("a/b/c.mod") is None


async def test_staged_files_publish_atomically_and_vanish_when_abandoned(store: Storage) -> None:
    with store.stage() as staged:
        staged.write_bytes(b"partial")
        assert await store.stat("k/zip") is None  # not visible before put
    assert not staged.exists()  # abandoned: removed
    with store.stage() as staged:
        staged.write_bytes(b"whole")
        await store.put("k/zip", staged)
    assert await store.get("k/zip") == b"whole"


async def test_replacing_changes_the_etag(store: Storage) -> None:
    first = await store.put_bytes("k/list", b"v1.0.0\n")
    await asyncio.sleep(0.01)
    second = await store.put_bytes("k/list", b"v1.0.0\nv1.1.0\n")
    assert first.etag != second.etag
    assert await store.get("k/list") == b"v1.0.0\nv1.1.0\n"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/."])
async def test_keys_that_could_escape_are_refused(store: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        await store.stat(key)


async def test_exclusive_serializes_holders_of_one_key(store: Storage) -> None:
    order: list[str] = []

    async def hold(name: str) -> None:
        async with store.exclusive("k/zip"):
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    await asyncio.gather(hold("a"), hold("b"))
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


async def test_exclusive_never_has_two_holders_when_many_contend(store: Storage) -> None:
    # The holder unlinks the lock file on release: a waiter then locks the unlinked file
    # while a newcomer locks a fresh one. Both used to think they held the key.
    holders, most = 0, 0

    async def hold(i: int) -> None:
        nonlocal holders, most
        for j in range(15):
            await asyncio.sleep(((i * 7 + j * 3) % 5) / 1000)  # newcomers arrive all along
            async with store.exclusive("k/head"):
                holders += 1
                most = max(most, holders)
                await asyncio.sleep(0.001)
                holders -= 1

    await asyncio.gather(*(hold(i) for i in range(6)))
    assert most == 1


async def test_exclusive_does_not_block_other_keys(store: Storage) -> None:
    async with store.exclusive("k/one"):
        await asyncio.wait_for(_enter(store, "k/two"), timeout=1)


async def _enter(store: Storage, key: str) -> None:
    async with store.exclusive(key):
        pass


def test_writable(store: Storage) -> None:
    assert store.writable()
