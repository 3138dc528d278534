"""Counting downloads: a dict increment per download, written to the store in the background.

    answer sent ─▶ GoDownloads (the counting rule) ─▶ Recorder.count: counts[key] += 1
                                                       │ every flush_interval, and at close()
                                                       ▼
                                           store.add(counts)  (additive upserts)

The hot path never does I/O and never raises. A flush takes the counts out of memory and
hands them to the store; when the store refuses them they are merged back, so the next flush
writes them together with what came in since: nothing is lost, and nothing is written twice,
because only what ``add()`` accepted is dropped. A store that stays down costs memory in
proportion to the distinct (package, version, day) keys downloaded meanwhile, not to the
number of downloads.

Durability: a graceful shutdown (SIGTERM) ends with a last flush, retried within a short
bound; ``kill -9`` loses what was counted since the last flush, at most ``flush_interval``
seconds of downloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping

from entrepot.metrics import DownloadResult, Ecosystem, Metrics
from entrepot.stats.store import CountKey, Day, StatsStore
from entrepot.web.http import Request

log = logging.getLogger("entrepot.stats")

_DAY = 86400
Counted = tuple[str, str, str, int]
"""(ecosystem, package, version, UTC day as :func:`epoch_day`): the recorder's own key."""


def counts_as_download(method: str, status: int, range_header: str | None) -> bool:
    """Issue 10's rule: a successful GET of the whole artifact, or of a range from byte 0.

    HEAD, 304, errors (and 499: the client went away before the end) never count. A 200
    counts even with a Range header: the server ignored the range and sent the whole file.
    A 206 counts only when its range starts at byte 0 (``bytes=0-`` or ``bytes=0-1023``): a
    client resuming a download asks from where it stopped, and is one download already
    counted. A suffix range (``bytes=-500``) never counts.
    """
    if method != "GET":
        return False
    if status == 200:
        return True
    return status == 206 and _from_zero(range_header)


def _from_zero(range_header: str | None) -> bool:
    """Whether a Range header asks for bytes from 0 on."""
    if range_header is None:
        return False
    unit, _, spec = range_header.partition("=")
    if unit.strip().lower() != "bytes":
        return False
    first = spec.split(",", 1)[0].partition("-")[0].strip()
    # "0", "00": zero without int(), which refuses strings of over 4,300 digits.
    return first.isascii() and first.isdigit() and not first.strip("0")


def epoch_day(timestamp: float) -> int:
    """The UTC day of a time, as days since 1970-01-01: an int keys the hot path's dict
    several times faster than a ``datetime.date`` (whose hash is not cheap)."""
    return int(timestamp // _DAY)


_EPOCH = dt.date(1970, 1, 1)


def day_of(epoch_days: int) -> Day:
    return _EPOCH + dt.timedelta(days=epoch_days)


class Recorder:
    """Download counts per (ecosystem, package, version, UTC day), flushed to a store."""

    def __init__(
        self,
        store: StatsStore,
        metrics: Metrics,
        *,
        flush_interval: float,
        close_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.close_timeout = close_timeout
        self._counts: dict[Counted, int] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def count(self, ecosystem: str, package: str, version: str, day: int) -> None:
        """The hot path: one dict increment, no I/O, never raises. ``day``: the UTC day
        of the download, as :func:`epoch_day` gives it."""
        key = (ecosystem, package, version, day)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    @property
    def pending(self) -> int:
        """Downloads counted and not yet accepted by the store."""
        return sum(self._counts.values())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stats-recorder")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    async def flush(self) -> bool:
        """Write what was counted; True when the store has it all. Never raises (but
        cancellation): on a store error the counts go back into memory for the next try."""
        async with self._lock:
            batch, self._counts = self._counts, {}
            if not batch:
                return True
            start = time.perf_counter()
            failed = True
            try:
                await self.store.add(_dated(batch))
                failed = False
            except Exception as e:
                self._failed(e, batch)
            finally:
                if failed:  # refused, or cancelled mid-write: kept for the next flush
                    self._merge(batch)
                self.metrics.record_stats_flush(
                    time.perf_counter() - start, failed=failed, pending=self.pending
                )
            if failed:
                return False
            if self._failing:
                self._failing = False
                log.info("stats store: flushes work again; the counts kept meanwhile are written")
            return True

    def _failed(self, error: Exception, batch: Mapping[Counted, int]) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "stats store: could not write %d download counts (kept in memory, retried"
                " every %gs; logged once until a flush works again): %r",
                sum(batch.values()),
                self.flush_interval,
                error,
            )
        else:
            log.debug("stats store: flush failed again: %r", error)

    def _merge(self, batch: Mapping[Counted, int]) -> None:
        counts = self._counts
        for key, n in batch.items():
            counts[key] = counts.get(key, 0) + n

    async def close(self) -> None:
        """Stop the background flushes, then a last flush, retried within ``close_timeout``
        seconds. Counts the store still refuses then are logged as lost."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = time.monotonic() + self.close_timeout
        delay = 0.1
        while self._counts:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    if await self.flush():
                        break
            except TimeoutError:
                break
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay *= 2
        if self._counts:
            log.error(
                "stats store: %d download counts could not be written before shutdown; they"
                " are lost",
                self.pending,
            )


def _dated(batch: Mapping[Counted, int]) -> dict[CountKey, int]:
    days: dict[int, Day] = {}
    out: dict[CountKey, int] = {}
    for (ecosystem, package, version, n), count in batch.items():
        day = days.get(n)
        if day is None:
            day = days[n] = day_of(n)
        out[ecosystem, package, version, day] = count
    return out


class GoDownloads:
    """The callback :class:`entrepot.web.observe.Observed` calls for each Go zip and npm
    tarball answered (``request.endpoint`` says which):
    the counting rule, then one count (and one metrics increment)."""

    def __init__(
        self, recorder: Recorder, metrics: Metrics, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.recorder = recorder
        self.metrics = metrics
        self.clock = clock

    def __call__(self, request: Request, status: int, seconds: float) -> None:
        if status != 200 and (status != 206 or not _from_zero(request.headers.get("range"))):
            return
        module, version = request.module, request.version
        if request.method != "GET" or not module or not version:
            return
        ecosystem: Ecosystem = "npm" if request.endpoint == "tarball" else "go"
        # The day the request came in: a download that spans midnight counts for the first.
        self.recorder.count(ecosystem, module, version, int((self.clock() - seconds) // _DAY))
        self.metrics.record_download(ecosystem, _result(request.cache))


def _result(cache: str | None) -> DownloadResult:
    if cache == "miss":
        return "miss"
    if cache == "stale":
        return "stale"
    return "hit"
