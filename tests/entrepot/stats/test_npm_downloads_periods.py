"""npm download-count periods and paths (entrepot.stats.periods): tables of periods against a
fixed today (month ends, leap years, reversed, future, malformed), the 18-month and 365-day
truncation, bulk lists, scoped names in every spelling, and the answer shapes' key order."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from entrepot.errors import InvalidRequestError, NotFoundError
from entrepot.stats.periods import (
    DownloadsRequest,
    Period,
    months_before,
    parse_downloads_path,
    parse_period,
    point_answer,
    range_answer,
    summed,
    version_order,
    versions_map,
)

TODAY = dt.date(2026, 3, 10)
d = dt.date.fromisoformat


@pytest.mark.parametrize(
    ("text", "start", "end", "explicit"),
    [
        ("last-day", "2026-03-10", "2026-03-10", False),
        ("last-week", "2026-03-04", "2026-03-10", False),
        ("last-month", "2026-02-09", "2026-03-10", False),
        ("last-year", "2025-03-11", "2026-03-10", False),
        ("2026-03-01", "2026-03-01", "2026-03-01", False),
        ("2026-03-10", "2026-03-10", "2026-03-10", False),  # today: counted so far
        ("2026-01-01:2026-01-31", "2026-01-01", "2026-01-31", True),
        ("2026-03-10:2026-03-10", "2026-03-10", "2026-03-10", True),
        ("2024-02-29", "2024-02-29", "2024-02-29", False),  # a leap day
        ("2024-02-28:2024-03-01", "2024-02-28", "2024-03-01", True),
        # An end after today is moved to today (no counts exist yet).
        ("2026-03-01:2026-12-31", "2026-03-01", "2026-03-10", True),
        # 18 months ending on the end (npm truncates rather than refuses).
        ("2020-01-01:2026-03-10", "2024-09-10", "2026-03-10", True),
        ("2024-09-10:2026-03-10", "2024-09-10", "2026-03-10", True),  # exactly 18 months
        ("2024-09-09:2026-03-10", "2024-09-10", "2026-03-10", True),  # one day over
        ("2015-01-01:2025-08-31", "2024-02-29", "2025-08-31", True),  # month end, leap year
        ("2015-01-01:2025-08-30", "2024-02-29", "2025-08-30", True),
        ("2015-01-01:2023-08-31", "2022-02-28", "2023-08-31", True),  # no leap day
        ("2010-01-01:2030-01-01", "2024-09-10", "2026-03-10", True),  # both ends clamped
    ],
)
def test_periods(text: str, start: str, end: str, explicit: bool) -> None:
    assert parse_period(text, today=TODAY) == Period(d(start), d(end), explicit)


def test_last_periods_across_a_leap_february() -> None:
    leap = dt.date(2024, 3, 1)
    assert parse_period("last-week", today=leap) == Period(d("2024-02-24"), leap)
    assert parse_period("last-month", today=leap) == Period(d("2024-02-01"), leap)
    assert parse_period("last-year", today=leap) == Period(d("2023-03-03"), leap)
    assert len(parse_period("last-year", today=leap).days()) == 365


def test_bulk_spans_are_365_days() -> None:
    assert parse_period("last-year", today=TODAY, bulk=True) == Period(d("2025-03-11"), TODAY)
    assert parse_period("2024-01-01:2026-03-10", today=TODAY, bulk=True) == Period(
        d("2025-03-11"), TODAY, explicit=True
    )
    assert parse_period("2025-03-11:2026-03-10", today=TODAY, bulk=True).start == d("2025-03-11")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("last-decade", "use last-day"),
        ("all-time", "use last-day"),  # npm never had it in the public API either
        ("", "use last-day"),
        ("2026-3-1", "use last-day"),
        ("20260301", "use last-day"),  # date.fromisoformat would take it; npm does not
        ("2026-W10-1", "use last-day"),
        ("2026-02-30", "invalid date '2026-02-30'"),
        ("2025-02-29", "invalid date '2025-02-29'"),  # not a leap year
        ("2026-13-01", "invalid date"),
        ("2026-00-10", "invalid date"),
        ("2026-01-01:", "use last-day"),
        (":2026-01-01", "use last-day"),
        ("2026-01-01:2026-01-02:2026-01-03", "use last-day"),
        ("2026-01-31:2026-01-01", "the start 2026-01-31 is after the end 2026-01-01"),
        ("2026-03-11", "starts after today (2026-03-10, UTC)"),
        ("2026-04-01:2026-05-01", "starts after today"),
        # Full-width digits: what r"\d" would take (and date.fromisoformat refuse).
        ("\uff12\uff10\uff12\uff16-01-01", "use last-day"),
    ],
)
def test_invalid_periods(text: str, words: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        parse_period(text, today=TODAY)
    assert words in e.value.message


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        ("2026-03-10", 18, "2024-09-10"),
        ("2025-08-31", 18, "2024-02-29"),
        ("2023-08-31", 18, "2022-02-28"),
        ("2026-01-31", 1, "2025-12-31"),
        ("2026-03-31", 1, "2026-02-28"),
        ("2026-12-15", 12, "2025-12-15"),
        ("2026-06-30", 18, "2024-12-30"),
        ("2026-01-01", 0, "2026-01-01"),
    ],
)
def test_months_before(day: str, months: int, expected: str) -> None:
    assert months_before(d(day), months) == d(expected)


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("point/last-week", DownloadsRequest("point", "last-week")),
        ("range/2026-01-01:2026-01-31", DownloadsRequest("range", "2026-01-01:2026-01-31")),
        ("point/last-week/express", DownloadsRequest("point", "last-week", ("express",))),
        ("point/last-day/@scope/pkg", DownloadsRequest("point", "last-day", ("@scope/pkg",))),
        ("point/last-day/@scope%2fpkg", DownloadsRequest("point", "last-day", ("@scope/pkg",))),
        ("point/last-day/@scope%2Fpkg", DownloadsRequest("point", "last-day", ("@scope/pkg",))),
        ("point/last-day/%40scope%2Fpkg", DownloadsRequest("point", "last-day", ("@scope/pkg",))),
        ("range/last-week/JSONStream", DownloadsRequest("range", "last-week", ("JSONStream",))),
        (
            "point/last-day/npm,express",
            DownloadsRequest("point", "last-day", ("npm", "express"), bulk=True),
        ),
        (
            "range/last-day/b,a,b",  # repeats asked once, the order kept
            DownloadsRequest("range", "last-day", ("b", "a"), bulk=True),
        ),
        ("point/last-day/a%2Cb", DownloadsRequest("point", "last-day", ("a", "b"), bulk=True)),
    ],
)
def test_paths(rest: str, expected: DownloadsRequest) -> None:
    assert parse_downloads_path(rest) == expected


@pytest.mark.parametrize(
    ("rest", "error", "words"),
    [
        ("versions/express/last-week", NotFoundError, "no such endpoint"),
        ("", NotFoundError, "no such endpoint"),
        ("points/last-day", NotFoundError, "no such endpoint"),
        ("point", InvalidRequestError, "no period"),
        ("point/", InvalidRequestError, "no period"),
        ("point//express", InvalidRequestError, "no period"),
        ("point/last-day/", NotFoundError, "package  not found"),
        ("point/last-day/a/b", NotFoundError, "package a/b not found"),
        ("point/last-day/@scope", NotFoundError, "package @scope not found"),
        ("point/last-day/@scope/", NotFoundError, "not found"),
        ("point/last-day/@/pkg", NotFoundError, "not found"),
        ("point/last-day/@scope/pkg/extra", NotFoundError, "not found"),
        ("point/last-day/../etc", NotFoundError, "not found"),
        ("point/last-day/" + "a" * 215, NotFoundError, "not found"),
        ("point/last-day/a,,b", InvalidRequestError, "empty package name"),
        ("point/last-day/a,", InvalidRequestError, "empty package name"),
        ("point/last-day/a,@scope/pkg", InvalidRequestError, "scoped packages are not supported"),
        ("point/last-day/@slack/client,@iterables/map", InvalidRequestError, "scoped"),
        (
            "point/last-day/" + ",".join(f"p{i}" for i in range(129)),
            InvalidRequestError,
            "at most 128, got 129",
        ),
    ],
)
def test_invalid_paths(rest: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as e:
        parse_downloads_path(rest)
    assert words in str(e.value)


def test_128_packages_is_the_limit() -> None:
    names = tuple(f"p{i}" for i in range(128))
    assert parse_downloads_path("point/last-day/" + ",".join(names)).packages == names


def test_point_answer_keys_and_order() -> None:
    period = Period(d("2026-03-01"), d("2026-03-03"))
    daily = {d("2026-02-28"): 100, d("2026-03-01"): 2, d("2026-03-03"): 5}
    with_package = point_answer(period, daily, "@scope/pkg")
    assert json.dumps(with_package) == (
        '{"downloads": 7, "start": "2026-03-01", "end": "2026-03-03", "package": "@scope/pkg"}'
    )
    assert list(point_answer(period, {}, None)) == ["downloads", "start", "end"]


def test_range_answer_has_every_day_with_zeros() -> None:
    period = Period(d("2026-02-27"), d("2026-03-02"))
    answer = range_answer(period, {d("2026-02-28"): 3, d("2026-03-02"): 1}, "express")
    assert list(answer) == ["start", "end", "package", "downloads"]
    assert answer["downloads"] == [
        {"downloads": 0, "day": "2026-02-27"},
        {"downloads": 3, "day": "2026-02-28"},
        {"downloads": 0, "day": "2026-03-01"},
        {"downloads": 1, "day": "2026-03-02"},
    ]
    assert list(answer["downloads"][0]) == ["downloads", "day"]
    assert list(range_answer(period, {}, None)) == ["start", "end", "downloads"]


def test_versions_map_and_sums() -> None:
    by_version = {
        "1.10.0": {d("2026-03-02"): 1},
        "1.9.0": {d("2026-03-02"): 4, d("2026-03-01"): 2},
        "1.0.0-rc.1": {d("2026-03-01"): 1},
        "2.0.0": {},
    }
    assert versions_map(by_version) == {
        "1.0.0-rc.1": [{"day": "2026-03-01", "downloads": 1}],
        "1.9.0": [
            {"day": "2026-03-01", "downloads": 2},
            {"day": "2026-03-02", "downloads": 4},
        ],
        "1.10.0": [{"day": "2026-03-02", "downloads": 1}],
    }
    assert list(versions_map(by_version)) == ["1.0.0-rc.1", "1.9.0", "1.10.0"]
    assert summed(by_version) == {d("2026-03-01"): 3, d("2026-03-02"): 5}


def test_version_order_compares_numbers_as_numbers() -> None:
    versions = ["10.0.0", "2.0.0", "1.10.1", "1.9.12", "1.9.2", "0.0.1-alpha"]
    assert sorted(versions, key=version_order) == [
        "0.0.1-alpha",
        "1.9.2",
        "1.9.12",
        "1.10.1",
        "2.0.0",
        "10.0.0",
    ]
