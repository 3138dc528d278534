"""The statistics store's contract: what the recorder writes and the stats API reads.

Counts are ecosystem-neutral, keyed by (ecosystem, package, version, UTC day): the Go mirror
records ``("go", module, version, day)``, the npm registry ``("npm", name, version, day)``.
Writes are additive (``count = count + n``), so workers never overwrite each other and a
flush retried after an error cannot count twice what it already wrote (the recorder keeps
what failed and adds it again, once). The inventory of the cache (what ``/stats/summary``
reports) is kept in the same store, updated as files are published and removed.

The implementation is ``entrepot.stats.sqlstore.SqlStatsStore`` (SQLite by default,
PostgreSQL for many replicas).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

Day = dt.date
CountKey = tuple[str, str, str, Day]  # (ecosystem, package, version, UTC day)


@dataclass(frozen=True)
class Ranked:
    """A name (package, version or host) and its count, for the top-N lists."""

    name: str
    count: int


@dataclass(frozen=True)
class Inventory:
    """What the cache holds, for one ecosystem (``/stats/summary``)."""

    bytes: int
    versions: int
    hosts: int
    top_hosts: list[Ranked]  # by versions cached, at most 10


class StatsStore(Protocol):
    async def add(self, counts: Mapping[CountKey, int]) -> None:
        """Add the counts (additive upserts, one transaction). Raises on a store error: the
        caller keeps the counts for the next try."""
        ...

    async def total(self, ecosystem: str, package: str, version: str | None = None) -> int:
        """All-time downloads of a package (or of one version)."""
        ...

    async def daily(
        self, ecosystem: str, package: str, version: str | None, *, first: Day, last: Day
    ) -> dict[Day, int]:
        """Downloads per day from ``first`` to ``last`` inclusive (days without any absent)."""
        ...

    async def package_daily(
        self, ecosystem: str, packages: Sequence[str], *, first: Day, last: Day
    ) -> dict[str, dict[Day, int]]:
        """Downloads per day from ``first`` to ``last`` of each package, in one query: every
        package that was ever downloaded is a key (its days in the period, maybe none), one
        never downloaded is absent (npm's "not found" and bulk ``null``)."""
        ...

    async def version_daily(
        self, ecosystem: str, package: str, *, first: Day, last: Day
    ) -> dict[str, dict[Day, int]] | None:
        """A package's downloads per version and day from ``first`` to ``last``, in one query
        (versions without downloads in the period absent); None if it was never downloaded."""
        ...

    async def ecosystem_daily(self, ecosystem: str, *, first: Day, last: Day) -> dict[Day, int]:
        """All packages' downloads per day from ``first`` to ``last`` (days without any
        absent), in one query."""
        ...

    async def top_versions(self, ecosystem: str, package: str, limit: int = 10) -> list[Ranked]:
        """The most downloaded versions of a package, all time, most first (ties by name)."""
        ...

    async def trending(
        self, ecosystem: str, *, days: int, today: Day, limit: int = 1000
    ) -> list[Ranked]:
        """The most downloaded packages over the ``days`` days ending ``today`` (and any later
        day), most first, ties by name."""
        ...

    async def cached(self, ecosystem: str, package: str, version: str, size: int) -> None:
        """A version's artifact was published into the cache (idempotent: republishing the
        same version replaces its size)."""
        ...

    async def uncached(self, ecosystem: str, package: str, version: str) -> None:
        """A version's artifact was removed from the cache (purge)."""
        ...

    async def reconcile(self, ecosystem: str, versions: Mapping[tuple[str, str], int]) -> None:
        """Replace the inventory of an ecosystem with what a walk of the cache found:
        (package, version) → size."""
        ...

    async def inventory(self, ecosystem: str) -> Inventory:
        """What the cache holds (fast: maintained counters, not a scan per call)."""
        ...

    async def close(self) -> None: ...
