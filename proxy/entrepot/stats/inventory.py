"""The cache inventory behind ``/stats/summary``: kept as the cache changes, corrected at start.

* A zip published into the cache → ``store.cached("go", module, version, size)``, in the
  background (:class:`InventoryUpdates`): a store error never fails or slows the download;
  it is logged and counted (``entrepot_stats_inventory_failures_total``).
* ``entrepot purge`` and ``entrepot verify --remove`` → ``store.uncached``
  (entrepot.maintenance); a zip the server removes on a checksum mismatch → the same.
* At start-up one process walks ``data_dir/go/**/@v/*.zip`` (:func:`walk_go_zips`, in a
  thread, off the request path) and replaces the inventory with what it found
  (``store.reconcile``): whatever was missed (a crash, a file removed by hand) is corrected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from entrepot.errors import InvalidRequestError
from entrepot.gomod.module import check_path, unescape_path, unescape_version
from entrepot.metrics import Metrics
from entrepot.stats.store import StatsStore

log = logging.getLogger("entrepot.stats")


def walk_go_zips(data_dir: Path) -> dict[tuple[str, str], int]:
    """(module, version) → size of every cached module zip; blocking (run it in a thread).

    Paths that are not escaped module paths and versions (staging folders, junk) are skipped.
    ``os.walk`` keeps memory to one folder's listing at a time besides the result.
    """
    root = data_dir / "go"
    found: dict[tuple[str, str], int] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if os.path.basename(folder) != "@v":
            continue
        dirs[:] = []  # nothing below @v is a module version
        escaped = os.path.relpath(os.path.dirname(folder), root).replace(os.sep, "/")
        try:
            module = unescape_path(escaped)
            check_path(module)
        except InvalidRequestError:
            continue
        for name in files:
            if not name.endswith(".zip"):
                continue
            try:
                version = unescape_version(name[: -len(".zip")])
                size = os.stat(os.path.join(folder, name)).st_size
            except (InvalidRequestError, OSError):
                continue
            found[module, version] = size
    return found


async def reconcile_go(store: StatsStore, data_dir: Path) -> int:
    """Walk the cache and replace the Go inventory with it; the number of zips found."""
    start = time.monotonic()
    found = await asyncio.to_thread(walk_go_zips, data_dir)
    await store.reconcile("go", found)
    log.info(
        "stats: cache inventory reconciled: %d module zips (%.1fs)",
        len(found),
        time.monotonic() - start,
    )
    return len(found)


class InventoryUpdates:
    """Inventory writes in the background: never awaited by a request, bounded in number."""

    MAX_PENDING = 1024

    def __init__(self, store: StatsStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def published(self, module: str, version: str, size: int) -> None:
        """A Go module zip was published into the cache (called by the Go service)."""
        self._spawn(self.store.cached("go", module, version, size), f"{module}@{version}")

    def npm_published(self, name: str, version: str, size: int) -> None:
        """An npm tarball was published into the cache (called by the npm service)."""
        self._spawn(self.store.cached("npm", name, version, size), f"{name}@{version}")

    def removed(self, module: str, version: str) -> None:
        """A Go module zip was removed from the cache (a checksum mismatch)."""
        self._spawn(self.store.uncached("go", module, version), f"{module}@{version}")

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        if len(self._tasks) >= self.MAX_PENDING:
            work.close()
            self.metrics.record_stats_inventory_failure()
            log.warning("stats: inventory update for %s dropped: too many pending", what)
            return
        task = asyncio.ensure_future(self._guarded(work, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await work
        except Exception as e:
            self.metrics.record_stats_inventory_failure()
            log.warning(
                "stats: inventory update for %s failed (corrected at the next start): %r", what, e
            )

    def reconcile_soon(self, data_dir: Path) -> None:
        """The start-up walk, in the background (one process of an instance runs it)."""

        async def run() -> None:
            await reconcile_go(self.store, data_dir)

        self._spawn(run(), "the start-up walk")

    async def close(self, grace: float = 5.0) -> None:
        """Let pending updates finish within ``grace`` seconds; cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
