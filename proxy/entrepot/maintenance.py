"""Offline commands on a data directory: check the cache against the checksum databases,
clear a database's stored tree head after a fork was investigated, and tell the statistics
inventory what ``entrepot purge`` removed.

Both are safe while servers run on the same directory: ``verify`` only reads (and, with
``--remove``, deletes a refused file the way ``purge`` does); ``sumdb reset`` removes files that
every server re-reads (a running server notices within a second).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from entrepot.app import build_sumdb, upstream_client
from entrepot.config import Settings
from entrepot.errors import EntrepotError, InvalidRequestError, UnavailableError
from entrepot.gomod.module import check_path, unescape_path, unescape_version
from entrepot.gomod.ziprules import h1_mod, verify_zip
from entrepot.metrics import Metrics
from entrepot.storage.filesystem import FilesystemStorage, unique_owner
from entrepot.sumdb.note import is_valid_name
from entrepot.sumdb.service import NotInDatabaseError

Outcome = Literal["verified", "mismatch", "unchecked", "unverifiable"]


@dataclass
class Report:
    counts: dict[Outcome, int] = field(
        default_factory=lambda: {"verified": 0, "mismatch": 0, "unchecked": 0, "unverifiable": 0}
    )
    lines: list[str] = field(default_factory=list)
    removed_zips: list[tuple[str, str]] = field(default_factory=list)  # (module, version)


def cached_files(data_dir: Path) -> Iterator[tuple[str, str, Literal["mod", "zip"], Path]]:
    """(module, version, kind, path) of every cached .mod and .zip."""
    root = data_dir / "go"
    for path in sorted(root.glob("**/@v/*")):
        if path.suffix not in (".mod", ".zip") or not path.is_file():
            continue
        try:
            module = unescape_path(str(path.parent.parent.relative_to(root)))
            check_path(module)
            version = unescape_version(path.name[: -len(path.suffix)])
        except InvalidRequestError:
            continue
        yield module, version, "mod" if path.suffix == ".mod" else "zip", path


async def verify_cache(settings: Settings, *, remove: bool = False) -> Report:
    """Compare every cached module file with its checksum database."""
    report = Report()
    storage = FilesystemStorage(settings.data_dir, owner=unique_owner("verify"))
    async with upstream_client(settings, connections=16) as client:
        sumdb = build_sumdb(settings, client=client, storage=storage, metrics=Metrics())
        try:
            for module, version, kind, path in cached_files(settings.data_dir):
                what = f"{module}@{version} {kind}"
                if not sumdb.covers(module):
                    report.counts["unchecked"] += 1
                    continue
                try:
                    found = await sumdb.expected(module, version)
                except NotInDatabaseError as e:
                    # The server refuses (and removes) these too: a mismatch for the report.
                    report.counts["mismatch"] += 1
                    report.lines.append(
                        f"NOT IN DATABASE {what}: {e.message}"
                        + (f"; removed {path}" if remove else "")
                    )
                    if remove:
                        _remove(path, kind)
                        if kind == "zip":
                            report.removed_zips.append((module, version))
                    continue
                except EntrepotError as e:
                    report.counts["unverifiable"] += 1
                    report.lines.append(f"UNVERIFIABLE {what}: {e.message}")
                    continue
                assert found is not None
                db, lines = found
                h1 = await _h1(path, module, version, kind)
                if lines.get(kind) == h1:
                    report.counts["verified"] += 1
                    continue
                report.counts["mismatch"] += 1
                report.lines.append(
                    f"MISMATCH {what}: cached {h1}, checksum database {db.name} has"
                    f" {lines.get(kind)}" + (f"; removed {path}" if remove else "")
                )
                if remove:
                    _remove(path, kind)
                    if kind == "zip":
                        report.removed_zips.append((module, version))
        finally:
            storage.close()
    return report


def _remove(path: Path, kind: str) -> None:
    path.unlink(missing_ok=True)
    if kind == "zip":
        path.with_name(path.name + "hash").unlink(missing_ok=True)


async def _h1(path: Path, module: str, version: str, kind: Literal["mod", "zip"]) -> str:
    if kind == "mod":
        return h1_mod(await asyncio.to_thread(path.read_bytes))
    # Hashed again, not read from .ziphash: the check is of the bytes that would be served.
    report = await asyncio.to_thread(verify_zip, path, module=module, version=version)
    return report.h1


def reset_sumdb(data_dir: Path, name: str) -> list[Path]:
    """Forget a database's stored tree head, fork evidence, lookups and tiles, then write a
    new reset generation that every running worker notices within a second.

    The head goes first: a server reading in between sees no head and no longer compares
    with the old one; only then the fork evidence. Other databases (``name/sub``) are kept."""
    first = name.split("/", 1)[0]
    if not is_valid_name(first) or any(p in ("", ".", "..") for p in name.split("/")):
        raise InvalidRequestError(f"{name!r} is not a checksum database name")
    folder = data_dir / "sumdb" / name
    removed = []
    for entry in ("head", "fork"):
        path = folder / entry
        if path.exists():
            path.unlink()
            removed.append(path)
    for entry in ("lookup", "tile"):
        path = folder / entry
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
    if folder.is_dir():
        staged = folder / f".generation.{uuid.uuid4().hex}"
        staged.write_text(uuid.uuid4().hex + "\n")
        os.replace(staged, folder / "generation")
    return removed


def forget_removed(settings: Settings, versions: Collection[tuple[str, str]]) -> str | None:
    """Remove module zips (module, version) that ``entrepot purge`` or ``entrepot verify
    --remove`` deleted from the statistics inventory
    (``/stats/summary``). Returns an error message when the store could not be told; the walk
    of the cache at the next start of the mirror corrects the inventory then."""
    if not settings.stats.enabled or not versions:
        return None
    from entrepot.stats.sqlstore import open_store, prepare_stats

    async def forget() -> None:
        store = open_store(settings.stats.database, settings.data_dir)
        try:
            for module, version in versions:
                await store.uncached("go", module, version)
        finally:
            await store.close()

    try:
        prepare_stats(settings)  # a data directory no server has run on yet has no schema
        asyncio.run(forget())
    except UnavailableError as e:
        return e.message
    return None
