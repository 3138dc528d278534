"""Counting downloads: the rule (what is a download), the recorder (flush, merge after a
failure, no double count, the last flush at close) and the metrics it feeds."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

import pytest
from fakestore import FakeStore

from entrepot.accesslog import AccessLog
from entrepot.metrics import Metrics
from entrepot.stats.recorder import (
    GoDownloads,
    Recorder,
    counts_as_download,
    day_of,
    epoch_day,
)
from entrepot.web.http import Request, Response
from entrepot.web.observe import Observed

DAY = dt.date(2026, 11, 30)
N = epoch_day(dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp())
KEY = ("go", "example.com/a", "v1.0.0", DAY)  # as the store gets it
COUNT = ("go", "example.com/a", "v1.0.0", N)  # as the recorder counts it


@pytest.mark.parametrize(
    ("method", "status", "range_header", "counts"),
    [
        ("GET", 200, None, True),
        ("GET", 200, "bytes=10-", True),  # range ignored by the server: the whole zip went out
        ("GET", 206, "bytes=0-", True),
        ("GET", 206, "bytes=0-1023", True),
        ("GET", 206, "bytes=00-99", True),
        ("GET", 206, "BYTES = 0-5", True),
        ("GET", 206, "bytes=10-", False),  # a resumed download: counted when it started
        ("GET", 206, "bytes=10-20", False),
        ("GET", 206, "bytes=-500", False),  # a suffix: never from byte 0 as far as we know
        ("GET", 206, "items=0-5", False),
        ("GET", 206, None, False),
        ("GET", 206, "bytes=" + "0" * 5000 + "1-", False),  # no int() of 5,000 digits
        ("GET", 206, "bytes=" + "0" * 5000 + "-", True),
        ("HEAD", 200, None, False),
        ("GET", 304, None, False),
        ("GET", 404, None, False),
        ("GET", 410, None, False),
        ("GET", 416, "bytes=999999-", False),
        ("GET", 499, None, False),  # the client went away before the end
        ("GET", 500, None, False),
        ("GET", 503, None, False),
    ],
)
def test_what_counts_as_a_download(
    method: str, status: int, range_header: str | None, counts: bool
) -> None:
    assert counts_as_download(method, status, range_header) is counts


def request(path: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Request:
    return Request(method, path, headers or {})


def observed(recorder: Recorder, metrics: Metrics, clock: Callable[[], float]) -> Observed:
    async def handler(req: Request) -> Response:  # pragma: no cover - done() only
        return Response()

    return Observed(
        handler,
        metrics=metrics,
        accesslog=AccessLog(enabled=False),
        classify=lambda path: "other",
        downloads=GoDownloads(recorder, metrics, clock=clock),
    )


def zip_request(**kw: object) -> Request:
    req = request("/example.com/a/@v/v1.0.0.zip", **kw)  # type: ignore[arg-type]
    req.endpoint, req.module, req.version, req.cache = "zip", "example.com/a", "v1.0.0", "hit"
    return req


def test_observed_counts_zips_only_by_the_rule() -> None:
    metrics = Metrics()
    recorder = Recorder(FakeStore(), metrics, flush_interval=5)
    noon = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC).timestamp()
    app = observed(recorder, metrics, lambda: noon)
    app.done(zip_request(), 200, 1000, 0.01)
    app.done(zip_request(headers={"range": "bytes=0-99"}), 206, 100, 0.01)
    app.done(zip_request(headers={"range": "bytes=10-99"}), 206, 90, 0.01)
    app.done(zip_request(method="HEAD"), 200, 0, 0.01)
    app.done(zip_request(), 304, 0, 0.01)
    app.done(zip_request(), 404, 50, 0.01)
    info = request("/example.com/a/@v/v1.0.0.info")
    info.endpoint, info.module, info.version = "info", "example.com/a", "v1.0.0"
    app.done(info, 200, 50, 0.01)
    missed = zip_request()
    missed.cache = "miss"
    app.done(missed, 200, 1000, 0.01)
    assert recorder._counts == {COUNT: 3}
    text = metrics.exposition().decode()
    assert 'entrepot_downloads_total{ecosystem="go",result="hit"} 2.0' in text
    assert 'entrepot_downloads_total{ecosystem="go",result="miss"} 1.0' in text


def test_a_download_counts_for_the_utc_day_it_started() -> None:
    metrics = Metrics()
    recorder = Recorder(FakeStore(), metrics, flush_interval=5)
    just_after_midnight = dt.datetime(2026, 12, 1, 0, 0, 5, tzinfo=dt.UTC).timestamp()
    app = observed(recorder, metrics, lambda: just_after_midnight)
    app.done(zip_request(), 200, 1000, 10.0)  # sent for 10 s: it began on the 30th
    app.done(zip_request(), 200, 1000, 1.0)
    assert recorder._counts == {COUNT: 1, (*COUNT[:3], N + 1): 1}


def test_epoch_days() -> None:
    assert epoch_day(0) == 0
    assert epoch_day(86399.9) == 0
    assert epoch_day(86400) == 1
    assert day_of(N) == DAY
    last_second = dt.datetime(2026, 11, 30, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    assert day_of(epoch_day(last_second)) == DAY


async def test_flush_writes_the_counts_once() -> None:
    store = FakeStore()
    recorder = Recorder(store, Metrics(), flush_interval=5)
    for _ in range(3):
        recorder.count(*COUNT)
    assert await recorder.flush()
    assert await recorder.flush()  # nothing new: nothing written again
    assert store.counts == {KEY: 3}
    assert store.add_calls == 1


async def test_a_failed_flush_keeps_the_counts_and_the_next_adds_them_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    metrics = Metrics()
    recorder = Recorder(store, metrics, flush_interval=5)
    other = ("go", "example.com/b", "v2.0.0", DAY)
    other_count = ("go", "example.com/b", "v2.0.0", N)
    recorder.count(*COUNT)
    recorder.count(*COUNT)
    store.failures = 3
    with caplog.at_level(logging.DEBUG, logger="entrepot.stats"):
        assert not await recorder.flush()
        recorder.count(*COUNT)  # counted while the store is down
        recorder.count(*other_count)
        assert not await recorder.flush()
        assert not await recorder.flush()
        assert recorder.pending == 4
        text = metrics.exposition().decode()
        assert "entrepot_stats_flush_failures_total 3.0" in text
        assert "entrepot_stats_pending_counts 4.0" in text
        assert await recorder.flush()
    assert store.counts == {KEY: 3, other: 1}
    assert recorder.pending == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, "one warning per failure streak"
    assert "could not write 2 download counts" in warnings[0].getMessage()
    assert any("work again" in r.getMessage() for r in caplog.records)
    text = metrics.exposition().decode()
    assert "entrepot_stats_pending_counts 0.0" in text
    assert "entrepot_stats_flush_seconds_count 4.0" in text


async def test_counts_made_during_a_flush_go_to_the_next_one() -> None:
    store = FakeStore()
    store.add_delay = 0.05
    recorder = Recorder(store, Metrics(), flush_interval=5)
    recorder.count(*COUNT)
    flushing = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0.01)
    recorder.count(*COUNT)  # while add() runs
    assert await flushing
    assert store.counts == {KEY: 1}
    assert recorder.pending == 1
    assert await recorder.flush()
    assert store.counts == {KEY: 2}


async def test_a_cancelled_flush_keeps_its_counts() -> None:
    store = FakeStore()
    store.add_delay = 10
    recorder = Recorder(store, Metrics(), flush_interval=5)
    recorder.count(*COUNT)
    flushing = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0.01)
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert recorder.pending == 1
    assert store.counts == {}


async def test_the_background_task_flushes_every_interval() -> None:
    store = FakeStore()
    recorder = Recorder(store, Metrics(), flush_interval=0.05)
    recorder.start()
    recorder.count(*COUNT)
    for _ in range(100):
        if store.counts:
            break
        await asyncio.sleep(0.01)
    assert store.counts == {KEY: 1}
    await recorder.close()


async def test_close_flushes_what_is_left_and_retries_a_failing_store() -> None:
    store = FakeStore()
    recorder = Recorder(store, Metrics(), flush_interval=60, close_timeout=5)
    recorder.start()
    recorder.count(*COUNT)
    store.failures = 2  # down for the first two tries of the last flush
    await recorder.close()
    assert store.counts == {KEY: 1}
    assert store.add_calls == 3


async def test_close_gives_up_within_its_bound(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    store.failures = 1000
    recorder = Recorder(store, Metrics(), flush_interval=60, close_timeout=0.3)
    recorder.count(*COUNT)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await recorder.close()
    assert loop.time() - start < 1.5
    assert recorder.pending == 1
    assert "1 download counts could not be written before shutdown" in caplog.text


async def test_close_bounds_a_store_that_hangs() -> None:
    store = FakeStore()
    store.add_delay = 30
    recorder = Recorder(store, Metrics(), flush_interval=60, close_timeout=0.2)
    recorder.count(*COUNT)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await recorder.close()
    assert loop.time() - start < 1.5
    assert recorder.pending == 1  # not dropped: add() never accepted it


def test_counting_is_cheap() -> None:
    """The hot path is one dict increment: well under a microsecond-scale budget per call
    (measured here loosely so a slow CI machine does not fail it)."""
    import time

    recorder = Recorder(FakeStore(), Metrics(), flush_interval=5)
    start = time.perf_counter()
    for _ in range(100_000):
        recorder.count(*COUNT)
    assert time.perf_counter() - start < 0.5
    assert recorder.pending == 100_000
