"""An in-memory StatsStore for unit tests: the contract of entrepot.stats.store, no SQL.

``failures``: how many of the next ``add`` calls raise (a store that is down), before or
after writing nothing — the contract says a raising ``add`` wrote nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping

from entrepot.errors import UnavailableError
from entrepot.stats.store import CountKey, Day, Inventory, Ranked


class FakeStore:
    def __init__(self) -> None:
        self.counts: dict[CountKey, int] = {}
        self.sizes: dict[str, dict[tuple[str, str], int]] = {}
        self.failures = 0
        self.add_calls = 0
        self.add_delay = 0.0
        self.queries = 0
        self.closed = False
        self.broken = False  # every read raises

    # -- writes ------------------------------------------------------------------------------

    async def add(self, counts: Mapping[CountKey, int]) -> None:
        self.add_calls += 1
        if self.add_delay:
            await asyncio.sleep(self.add_delay)
        if self.failures:
            self.failures -= 1
            raise UnavailableError("the fake store is down")
        for key, n in counts.items():
            self.counts[key] = self.counts.get(key, 0) + n

    async def cached(self, ecosystem: str, package: str, version: str, size: int) -> None:
        self.sizes.setdefault(ecosystem, {})[package, version] = size

    async def uncached(self, ecosystem: str, package: str, version: str) -> None:
        self.sizes.get(ecosystem, {}).pop((package, version), None)

    async def reconcile(self, ecosystem: str, versions: Mapping[tuple[str, str], int]) -> None:
        self.sizes[ecosystem] = dict(versions)

    # -- reads -------------------------------------------------------------------------------

    def _read(self) -> None:
        self.queries += 1
        if self.broken:
            raise UnavailableError("the fake store is down")

    async def total(self, ecosystem: str, package: str, version: str | None = None) -> int:
        self._read()
        return sum(
            n
            for (e, p, v, _), n in self.counts.items()
            if (e, p) == (ecosystem, package) and version in (None, v)
        )

    async def daily(
        self, ecosystem: str, package: str, version: str | None, *, first: Day, last: Day
    ) -> dict[Day, int]:
        self._read()
        out: dict[Day, int] = {}
        for (e, p, v, d), n in self.counts.items():
            if (e, p) == (ecosystem, package) and version in (None, v) and first <= d <= last:
                out[d] = out.get(d, 0) + n
        return out

    async def top_versions(self, ecosystem: str, package: str, limit: int = 10) -> list[Ranked]:
        self._read()
        by: dict[str, int] = {}
        for (e, p, v, _), n in self.counts.items():
            if (e, p) == (ecosystem, package):
                by[v] = by.get(v, 0) + n
        return _ranked(by, limit)

    async def trending(
        self, ecosystem: str, *, days: int, today: Day, limit: int = 1000
    ) -> list[Ranked]:
        self._read()
        since = today - dt.timedelta(days=days - 1)
        by: dict[str, int] = {}
        for (e, p, _, d), n in self.counts.items():
            if e == ecosystem and d >= since:
                by[p] = by.get(p, 0) + n
        return _ranked(by, limit)

    async def inventory(self, ecosystem: str) -> Inventory:
        self._read()
        sizes = self.sizes.get(ecosystem, {})
        hosts: dict[str, int] = {}
        for package, _ in sizes:
            host = package.split("/", 1)[0]
            hosts[host] = hosts.get(host, 0) + 1
        return Inventory(
            bytes=sum(sizes.values()),
            versions=len(sizes),
            hosts=len(hosts),
            top_hosts=_ranked(hosts, 10),
        )

    async def close(self) -> None:
        self.closed = True


def _ranked(by: Mapping[str, int], limit: int) -> list[Ranked]:
    return [Ranked(name, n) for name, n in sorted(by.items(), key=lambda i: (-i[1], i[0]))][:limit]
