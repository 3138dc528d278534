"""The statistics store's read paths with one million (module, version, day) rows in SQLite.

Issue 10's targets: ``/stats/<module>`` and ``/stats/summary`` p99 < 20 ms, and
``/stats/trends/last-30-days`` < 100 ms, with 1,000,000 rows. This times the store calls
behind each endpoint (the HTTP layer adds little and caches answers for a few seconds):

* ``module``: total + daily (30 days) + top_versions, for the busiest module (50 versions
  downloaded every day for a year: 18,250 rows) and for a random module;
* ``version``: total + daily (30 days) of one version of the busiest module;
* ``summary``: inventory() over 100,000 cached versions on 2,000 hosts;
* ``trends``: trending(), top 1000, over the 2, 7 and 30 days kept in ``package_windows``;
  the first call of the day, which rebuilds those windows from ``package_days``, is reported
  on its own, and a 31-day trend shows the summing path (no window kept for it).

The million rows are bulk-loaded with sqlite3 into the migrated schema (through
``SqlStatsStore.add`` they take minutes on a busy 2-core machine); then the flush latency of
``add`` on top of them is timed: 20 flushes of 2,000 counts, a busy mirror's 5 seconds.
Not a test: ``.venv/bin/python bench/stats_store.py [--rows N] [--calls N]``; it runs in a
temporary folder, removed at the end, in about a minute and a half.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

from entrepot.sql.migrate import migrate
from entrepot.stats.sqlstore import SqlStatsStore, open_store
from entrepot.stats.store import CountKey

HOT = "example.com/hot/module"
FLUSH = 2_000


def generate(rows: int, today: dt.date, rng: random.Random) -> dict[CountKey, int]:
    """``rows`` distinct keys: one hot module, then modules with 1-9 versions, each
    downloaded on 1-19 days of the last year."""
    keys: list[CountKey] = [
        ("go", HOT, f"v1.{v}.0", today - dt.timedelta(days=d))
        for v in range(50)
        for d in range(365)
    ]
    m = 0
    while len(keys) < rows:
        module = f"host{m % 2000}.example.com/group{m % 37}/module{m}"
        for v in range(rng.randint(1, 9)):
            for d in rng.sample(range(365), rng.randint(1, 19)):
                keys.append(("go", module, f"v0.{v}.{m % 5}", today - dt.timedelta(days=d)))
        m += 1
    return {k: rng.randint(1, 100) for k in keys[:rows]}


def bulk_load(db: Path, counts: dict[CountKey, int]) -> None:
    per_day: dict[tuple[str, str, str], int] = defaultdict(int)
    per_version: dict[tuple[str, str, str], int] = defaultdict(int)
    for (e, p, v, d), n in counts.items():
        per_day[e, p, d.isoformat()] += n
        per_version[e, p, v] += n
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.executemany(
            "INSERT INTO downloads VALUES (?, ?, ?, ?, ?)",
            sorted((e, p, v, d.isoformat(), n) for (e, p, v, d), n in counts.items()),
        )
        conn.executemany(
            "INSERT INTO package_days VALUES (?, ?, ?, ?)",
            sorted((*k, n) for k, n in per_day.items()),
        )
        conn.executemany(
            "INSERT INTO version_totals VALUES (?, ?, ?, ?)",
            sorted((*k, n) for k, n in per_version.items()),
        )


async def timed(name: str, calls: int, call: Callable[[], Awaitable[object]]) -> None:
    await call()  # warm: the first call opens the connection
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, round(0.99 * len(samples)) - 1)]
    print(f"{name:<34} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   max {samples[-1]:7.2f} ms")


async def bench(store: SqlStatsStore, counts: dict[CountKey, int], calls: int) -> None:
    rng = random.Random(11)
    today = dt.datetime.now(dt.UTC).date()
    keys = list(counts)
    samples = []
    # The first trend call of a UTC day rebuilds the windows (package_windows) from the
    # million rows bulk-loaded under them; flushes then add to them as they go.
    start = time.perf_counter()
    await store.trending("go", days=30, today=today, limit=1000)
    took = (time.perf_counter() - start) * 1000
    print(f"first trend call of the day (rebuilds the 2/7/30-day windows): {took:.0f} ms")
    for _ in range(20):
        flush = {(*k[:3], today): 1 for k in rng.sample(keys, FLUSH)}
        start = time.perf_counter()
        await store.add(flush)
        samples.append((time.perf_counter() - start) * 1000)
    print(
        f"add() of {FLUSH:,} counts onto {len(counts):,} rows:"
        f" p50 {statistics.median(samples):.0f} ms, max {max(samples):.0f} ms"
    )
    inventory = {
        (f"host{i % 2000}.example.com/m{i}", f"v1.0.{i % 7}"): 1000 + i for i in range(100_000)
    }
    start = time.perf_counter()
    await store.reconcile("go", inventory)
    print(f"reconcile of {len(inventory):,} versions: {time.perf_counter() - start:.2f} s")
    some = keys[len(keys) // 2][1]
    first = today - dt.timedelta(days=29)

    async def module(name: str) -> None:
        await store.total("go", name)
        await store.daily("go", name, None, first=first, last=today)
        await store.top_versions("go", name, limit=10)

    async def version() -> None:
        await store.total("go", HOT, "v1.7.0")
        await store.daily("go", HOT, "v1.7.0", first=first, last=today)

    print(f"{calls} calls each:")
    await timed("/stats/<module> (busiest)", calls, lambda: module(HOT))
    await timed("/stats/<module> (random one)", calls, lambda: module(some))
    await timed("/stats/<module>@<version>", calls, version)
    await timed("  total (busiest)", calls, lambda: store.total("go", HOT))
    await timed(
        "  daily 30 days (busiest)",
        calls,
        lambda: store.daily("go", HOT, None, first=first, last=today),
    )
    await timed("  top_versions (busiest)", calls, lambda: store.top_versions("go", HOT))
    await timed("/stats/summary (inventory)", calls, lambda: store.inventory("go"))
    for label, days in (("latest", 2), ("last-7-days", 7), ("last-30-days", 30)):
        await timed(
            f"/stats/trends/{label}",
            max(20, calls // 4),
            lambda days=days: store.trending("go", days=days, today=today, limit=1000),  # type: ignore[misc]
        )
    # A window not kept (or a reader whose clock is behind the mark) sums package_days.
    await timed(
        "  trends summed over 30 days",
        20,
        lambda: store.trending("go", days=31, today=today, limit=1000),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="entrepot-bench-stats-"))
    try:
        migrate(None, folder)
        counts = generate(args.rows, dt.datetime.now(dt.UTC).date(), random.Random(10))
        # The million keys stay in this process (a server holds nothing like them): out of the
        # collector's sight, so that its full passes over them do not land in the timings.
        gc.freeze()
        start = time.perf_counter()
        bulk_load(folder / "entrepot.db", counts)
        took = time.perf_counter() - start
        print(f"bulk-loaded {len(counts):,} (module, version, day) rows in {took:.0f} s")
        store = open_store(None, folder)

        async def run() -> None:
            try:
                await bench(store, counts, args.calls)
            finally:
                await store.close()

        asyncio.run(run())
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"database files: {size / 2**20:.0f} MiB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
