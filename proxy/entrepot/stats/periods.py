"""npm's download-count API: request paths, periods and answer shapes. Pure: no clock (today is
a parameter), no I/O, no store.

    downloads/point/<period>[/<package>[,<package>...]]
    downloads/range/<period>[/<package>[,<package>...]]

Periods (public npm API, ``npm/registry`` docs/download-counts.md) are ``last-day``,
``last-week``, ``last-month``, ``last-year`` (1, 7, 30 and 365 days ending on the last day
with counts), ``YYYY-MM-DD`` and ``YYYY-MM-DD:YYYY-MM-DD`` (both days included).

Where this mirror's answers follow npm and where they cannot (docs/stats.md has the table):

* npm's named periods end on "the last available day": npm lands a day's counts after the day
  ends, so that is yesterday. The mirror lands counts every flush interval, so its last
  available day is **today** (UTC, counted so far), as in ``/stats/trends``.
* Spans are limited as npm limits them, by truncating rather than refusing (npm answers
  ``2015-05-01:2017-08-29`` with the 18 months from 2016-02-29): at most 18 calendar months
  ending on the period's end for one package or all packages, at most 365 days in bulk. The
  answer's ``start`` says what was covered. An end after today is moved to today (there are no
  counts yet); a period that starts after today, or whose start is after its end, is a 400.
* Bulk (comma-separated names): at most 128, unscoped only (npm refuses scoped names in bulk);
  an object keyed by name, ``null`` for a package this mirror never served.
* ``range/<start>:<end>/<package>`` also carries the registry API document's per-version map
  (``versions``: each version's days with downloads, as cnpmcore answers it).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict
from urllib.parse import unquote

from entrepot.errors import InvalidRequestError, NotFoundError

Day = dt.date
Kind = Literal["point", "range"]

NAMED_DAYS: dict[str, int] = {"last-day": 1, "last-week": 7, "last-month": 30, "last-year": 365}
"""Days each named period covers, ending on the last day with counts (today)."""
MAX_MONTHS = 18
"""Longest span of a query for one package or all packages, in calendar months."""
MAX_BULK_DAYS = 365
"""Longest span of a bulk query, in days."""
MAX_BULK_PACKAGES = 128
MAX_NAME_LENGTH = 214
"""npm's limit on a package name: longer names are no package (404)."""

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PERIOD_FORMS = (
    "use last-day, last-week, last-month, last-year, YYYY-MM-DD or YYYY-MM-DD:YYYY-MM-DD"
)


@dataclass(frozen=True)
class Period:
    """A period resolved against today: ``start`` .. ``end`` inclusive, limits applied.
    ``explicit``: given as ``<start>:<end>`` (the form that carries per-version counts)."""

    start: Day
    end: Day
    explicit: bool = False

    def days(self) -> list[Day]:
        return [self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)]


@dataclass(frozen=True)
class DownloadsRequest:
    """A parsed ``downloads/...`` path. ``packages``: empty for all packages; one name, or
    (``bulk``) the names of a comma-separated list, in order, without repeats."""

    kind: Kind
    period: str
    packages: tuple[str, ...] = ()
    bulk: bool = False


def months_before(day: Day, months: int) -> Day:
    """The same day of the month ``months`` earlier, or that month's last day when it is
    shorter (2025-08-31 minus 18 months is 2024-02-29)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    first_of_next = dt.date(year + month // 12, month % 12 + 1, 1)
    last = (first_of_next - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last))


def _date(text: str, period: str) -> Day:
    # date.fromisoformat also takes 20240101 and 2024-W01-1: npm takes YYYY-MM-DD only.
    if not _DATE.fullmatch(text):
        raise InvalidRequestError(f"invalid period {period[:60]!r}: {_PERIOD_FORMS}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"invalid date {text!r} in period {period[:60]!r}") from None


def parse_period(text: str, *, today: Day, bulk: bool = False) -> Period:
    """``last-week`` on 2026-03-10 → 2026-03-04 .. 2026-03-10; ``2026-01-01:2026-01-31`` → as
    given. Limits (module docstring): the start is moved up to fit 18 months (bulk: 365 days),
    an end after today is moved to today.

    Raises:
        InvalidRequestError: an unknown word, a malformed or impossible date, a start after
            the end, or a period that starts after today (400).
    """
    named = NAMED_DAYS.get(text)
    if named is not None:
        return Period(today - dt.timedelta(days=named - 1), today)
    first, colon, last = text.partition(":")
    start = _date(first, text)
    end = _date(last, text) if colon else start
    if start > end:
        raise InvalidRequestError(
            f"invalid period {text!r}: the start {start.isoformat()} is after the end"
            f" {end.isoformat()}"
        )
    if start > today:
        raise InvalidRequestError(
            f"invalid period {text!r}: it starts after today ({today.isoformat()}, UTC),"
            " and no downloads are counted yet"
        )
    end = min(end, today)
    if bulk:
        earliest = end - dt.timedelta(days=MAX_BULK_DAYS - 1)
    else:
        earliest = months_before(end, MAX_MONTHS)
    return Period(max(start, earliest), end, explicit=bool(colon))


def parse_downloads_path(rest: str) -> DownloadsRequest:
    """``point/last-week/@scope%2fpkg`` (what follows ``<prefix>downloads/``) →
    ``DownloadsRequest("point", "last-week", ("@scope/pkg",))``. Percent-escapes are decoded
    once (the server core already decoded them; a raw path works too). The period is checked
    later, against today (:func:`parse_period`).

    Raises:
        NotFoundError: neither ``point/`` nor ``range/``, or a single name that cannot be a
            package (no such package: 404, as npm answers).
        InvalidRequestError: no period, an empty name in a list, a scoped name in a bulk
            query, more than 128 names (400).
    """
    if "%" in rest:
        rest = unquote(rest, errors="replace")
    word, _, tail = rest.partition("/")
    if word not in ("point", "range"):
        raise NotFoundError(f"no such endpoint: downloads/{word[:40]}; use point or range")
    kind: Kind = "point" if word == "point" else "range"
    period, _, names = tail.partition("/")
    if not period:
        raise InvalidRequestError(f"no period: {_PERIOD_FORMS}")
    if not names and not tail.endswith("/"):
        return DownloadsRequest(kind, period)
    if "," not in names:
        return DownloadsRequest(kind, period, (_single(names),))
    listed = names.split(",")
    if len(listed) > MAX_BULK_PACKAGES:
        raise InvalidRequestError(
            f"too many packages: a bulk query takes at most {MAX_BULK_PACKAGES}, got {len(listed)}"
        )
    packages: dict[str, None] = {}
    for name in listed:
        if not name:
            raise InvalidRequestError("empty package name in a bulk query")
        if name.startswith("@"):
            raise InvalidRequestError(
                f"scoped packages are not supported in bulk queries: {name[:80]!r};"
                " ask for each scoped package on its own"
            )
        packages[name] = None
    return DownloadsRequest(kind, period, tuple(packages), bulk=True)


def _single(name: str) -> str:
    """One package's name, as it must be to have been downloaded: ``name`` or ``@scope/name``.
    Anything else is no package (404), as npm answers."""
    scope, slash, base = name.partition("/")
    ok = 0 < len(name) <= MAX_NAME_LENGTH and (
        (not slash and not name.startswith("@"))
        or (slash and scope.startswith("@") and len(scope) > 1 and base and "/" not in base)
    )
    if not ok:
        raise NotFoundError(not_found_message(name))
    return name


def not_found_message(name: str) -> str:
    """npm's words for a package without counts."""
    return f"package {name[:MAX_NAME_LENGTH]} not found"


# -- answers: field names and order as npm's (and, for ``versions``, the registry API document)


class DayCount(TypedDict):
    downloads: int
    day: str


class VersionDay(TypedDict):
    day: str
    downloads: int


class PointAnswer(TypedDict):
    downloads: int
    start: str
    end: str
    package: NotRequired[str]


class RangeAnswer(TypedDict):
    start: str
    end: str
    package: NotRequired[str]
    downloads: list[DayCount]
    versions: NotRequired[dict[str, list[VersionDay]]]


def point_answer(period: Period, daily: Mapping[Day, int], package: str | None) -> PointAnswer:
    answer: PointAnswer = {
        "downloads": sum(n for d, n in daily.items() if period.start <= d <= period.end),
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
    }
    if package is not None:
        answer["package"] = package
    return answer


def range_answer(period: Period, daily: Mapping[Day, int], package: str | None) -> RangeAnswer:
    """Every day of the period, oldest first, days without downloads as 0 (as npm)."""
    start, end = period.start.isoformat(), period.end.isoformat()
    days: list[DayCount] = [
        {"downloads": daily.get(d, 0), "day": d.isoformat()} for d in period.days()
    ]
    if package is None:
        return {"start": start, "end": end, "downloads": days}
    return {"start": start, "end": end, "package": package, "downloads": days}


def versions_map(by_version: Mapping[str, Mapping[Day, int]]) -> dict[str, list[VersionDay]]:
    """Each version's days with downloads (oldest first; days without any left out, as the
    registry API document shows), versions in version order."""
    return {
        version: [
            {"day": d.isoformat(), "downloads": n} for d, n in sorted(by_version[version].items())
        ]
        for version in sorted(by_version, key=version_order)
        if any(by_version[version].values())
    }


def summed(by_version: Mapping[str, Mapping[Day, int]]) -> dict[Day, int]:
    """A package's downloads per day from its versions' days."""
    total: dict[Day, int] = {}
    for days in by_version.values():
        for d, n in days.items():
            total[d] = total.get(d, 0) + n
    return total


_PART = re.compile(r"(\d+)|(\D+)")


def version_order(version: str) -> tuple[tuple[int, int, str], ...]:
    """A sort key that puts 1.10.0 after 1.9.0 (numbers compared as numbers); enough for
    listing, with no SemVer parsing (the stats layer does not depend on the npm package)."""
    return tuple(
        (0, int(digits), "") if digits else (1, 0, text) for digits, text in _PART.findall(version)
    )
