"""How a file answer is planned (entrepot.web.files): RFC 9110's preconditions in their order
(If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since), then a single byte range
(206 or 416) unless If-Range no longer holds. Pure functions: no server, no files."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from entrepot.web.files import Plan, byte_range, etag_matches, http_date, plan

ETAG = '"v1"'
MTIME = 784111777.0  # the file's modification time: Sun, 06 Nov 1994 08:49:37 GMT
AT_MTIME = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"
LATER = "Sun, 06 Nov 1994 08:49:38 GMT"
SIZE = 100
WHOLE = Plan(200, 0, SIZE)


def planned(
    headers: dict[str, str], *, size: int = SIZE, etag: str = ETAG, mtime: float = MTIME
) -> Plan:
    return plan(headers, size=size, etag=etag, mtime=mtime)


def test_no_conditions_and_no_range_send_the_whole_file() -> None:
    """No condition and no Range: 200 with the whole file."""
    assert planned({}) == WHOLE
    assert WHOLE.has_body


# -- If-Match and If-Unmodified-Since: 412 -------------------------------------------------------


@pytest.mark.parametrize(
    ("if_match", "etag", "status"),
    [
        ('"v1"', ETAG, 200),
        ('"v0"', ETAG, 412),
        ('"v0", "v1"', ETAG, 200),
        ('"v0" ,  "v1" ', ETAG, 200),
        ("*", ETAG, 200),
        # Strong comparison: a weak tag never matches, on either side.
        ('W/"v1"', ETAG, 412),
        ('"v1"', 'W/"v1"', 412),
        ('W/"v1"', 'W/"v1"', 412),
    ],
)
def test_if_match_compares_strongly(if_match: str, etag: str, status: int) -> None:
    """If-Match is a strong comparison (RFC 9110 13.1.1): a mismatch is 412, and weak
    entity tags never match."""
    assert planned({"if-match": if_match}, etag=etag).status == status


def test_if_match_mismatch_wins_over_every_later_condition() -> None:
    """If-Match is evaluated first: its 412 wins over a 304 of If-None-Match and a Range."""
    headers = {"if-match": '"v0"', "if-none-match": ETAG, "range": "bytes=0-9"}
    got = planned(headers)
    assert got == Plan(412)
    assert not got.has_body


@pytest.mark.parametrize(
    ("since", "status"),
    [(EARLIER, 412), (AT_MTIME, 200), (LATER, 200), ("not a date", 200)],
)
def test_if_unmodified_since(since: str, status: int) -> None:
    """A file modified after the given date fails the precondition; an unreadable date is
    ignored."""
    assert planned({"if-unmodified-since": since}).status == status


def test_if_unmodified_since_is_ignored_when_if_match_is_present() -> None:
    """RFC 9110 13.1.4: If-Unmodified-Since is ignored when If-Match is present."""
    headers = {"if-match": ETAG, "if-unmodified-since": EARLIER}
    assert planned(headers) == WHOLE


def test_dates_compare_at_whole_seconds() -> None:
    """HTTP dates have no fractions: a file modified within the given second is not
    modified after it (nor since it)."""
    mtime = MTIME + 0.75
    assert planned({"if-unmodified-since": AT_MTIME}, mtime=mtime) == WHOLE
    assert planned({"if-modified-since": AT_MTIME}, mtime=mtime) == Plan(304)


# -- If-None-Match and If-Modified-Since: 304 ----------------------------------------------------


@pytest.mark.parametrize(
    ("if_none_match", "etag", "status"),
    [
        ('"v1"', ETAG, 304),
        ('"v0"', ETAG, 200),
        # Weak comparison: W/ is ignored on either side.
        ('W/"v1"', ETAG, 304),
        ('"v1"', 'W/"v1"', 304),
        ('W/"v1"', 'W/"v1"', 304),
        ('"a", "v1", "b"', ETAG, 304),
        ('"a",W/"v1"', ETAG, 304),
        ('"a", "b"', ETAG, 200),
        ("*", ETAG, 304),
        ("", ETAG, 200),
    ],
)
def test_if_none_match_compares_weakly(if_none_match: str, etag: str, status: int) -> None:
    """If-None-Match is a weak comparison (RFC 9110 13.1.2): W/ is ignored; '*' and lists."""
    assert planned({"if-none-match": if_none_match}, etag=etag).status == status


def test_not_modified_has_no_body() -> None:
    """304 has no body and no Content-Range."""
    got = planned({"if-none-match": ETAG})
    assert got == Plan(304)
    assert not got.has_body
    assert got.content_range is None


@pytest.mark.parametrize(
    ("since", "status"),
    [(AT_MTIME, 304), (LATER, 304), (EARLIER, 200), ("yesterday", 200)],
)
def test_if_modified_since(since: str, status: int) -> None:
    """304 when the file was not modified after the date (mtime <= date)."""
    assert planned({"if-modified-since": since}).status == status


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ('"v0"', 200),  # no match, and If-Modified-Since (which would say 304) is ignored
        (ETAG, 304),
    ],
)
def test_if_modified_since_is_ignored_when_if_none_match_is_present(
    if_none_match: str, status: int
) -> None:
    """RFC 9110 13.1.3: If-Modified-Since is ignored when If-None-Match is present, whatever
    the date says."""
    headers = {"if-none-match": if_none_match, "if-modified-since": LATER}
    assert planned(headers).status == status
    headers = {"if-none-match": if_none_match, "if-modified-since": EARLIER}
    assert planned(headers).status == status


def test_not_modified_wins_over_a_range() -> None:
    """Preconditions come before Range: a 304 wins over a 206."""
    assert planned({"if-none-match": ETAG, "range": "bytes=0-9"}) == Plan(304)
    assert planned({"if-modified-since": AT_MTIME, "range": "bytes=0-9"}) == Plan(304)


def test_if_match_success_then_if_none_match_applies() -> None:
    """A passing If-Match lets the next precondition decide."""
    assert planned({"if-match": ETAG, "if-none-match": ETAG}) == Plan(304)


# -- Range: 206, 416, or the whole file ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "length", "content_range"),
    [
        ("bytes=0-9", 0, 10, "bytes 0-9/100"),
        ("bytes=0-0", 0, 1, "bytes 0-0/100"),
        ("bytes=99-99", 99, 1, "bytes 99-99/100"),
        ("bytes=10-", 10, 90, "bytes 10-99/100"),
        ("bytes=-10", 90, 10, "bytes 90-99/100"),
        ("bytes=-1", 99, 1, "bytes 99-99/100"),
        ("bytes=-1000", 0, 100, "bytes 0-99/100"),  # a suffix longer than the file: all of it
        ("bytes=90-1000", 90, 10, "bytes 90-99/100"),  # the end is clamped to size - 1
        ("bytes=0-99", 0, 100, "bytes 0-99/100"),
        ("bytes=0-", 0, 100, "bytes 0-99/100"),
        ("BYTES=5-6", 5, 2, "bytes 5-6/100"),  # range units are case-insensitive
        ("bytes = 5 - 6", 5, 2, "bytes 5-6/100"),
    ],
)
def test_a_single_range_is_partial_content(
    header: str, start: int, length: int, content_range: str
) -> None:
    """bytes=a-b, a- and -n: 206 with exactly these bytes and their Content-Range; the end is
    clamped to the last byte."""
    got = planned({"range": header})
    assert got == Plan(206, start, length, content_range)
    assert got.has_body


@pytest.mark.parametrize("header", ["bytes=100-100", "bytes=100-200", "bytes=-0", "bytes=-00"])
def test_an_unsatisfiable_range_is_416(header: str) -> None:
    """A first byte at or past the end, or an empty suffix, cannot be satisfied; the answer
    says how long the file is."""
    got = planned({"range": header})
    assert got == Plan(416, content_range="bytes */100")
    assert not got.has_body


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=1000-", 100), ("bytes=0-", 0)]
)
def test_an_open_range_past_the_end_is_416(header: str, size: int) -> None:
    """RFC 9110 14.1.2: a range whose first-pos is not less than the length is
    unsatisfiable (a client resuming a complete download sends exactly this)."""
    assert planned({"range": header}, size=size) == Plan(416, content_range=f"bytes */{size}")


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,5-6",  # several ranges: the RFC allows sending the whole file
        "bytes=0-1, 5-6",
        "items=0-9",  # another unit
        "bytes 0-9",  # no "="
        "bytes=",
        "bytes=-",
        "bytes=5",
        "bytes=abc-def",
        "bytes=0x1-2",
        "bytes=+1-2",
        "bytes=-+5",
        "bytes=1.5-2",
        "bytes=5-2",  # last < first: syntactically invalid, so ignored
        "",
        "garbage",
    ],
)
def test_a_range_the_server_does_not_serve_gets_the_whole_file(header: str) -> None:
    """Several ranges, other units, bad syntax, last < first: the Range is ignored (200)."""
    assert planned({"range": header}) == WHOLE


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        (ETAG, 206),
        ('"v0"', 200),
        ('W/"v1"', 200),  # If-Range compares strongly
        (AT_MTIME, 206),  # a date must equal the modification time exactly
        (EARLIER, 200),
        (LATER, 200),
        ("not a date", 200),
    ],
)
def test_if_range_decides_between_the_range_and_the_whole_file(if_range: str, status: int) -> None:
    """If-Range: a strongly matching entity tag or the exact modification date keeps the
    range; anything else gets the whole file."""
    got = planned({"range": "bytes=10-19", "if-range": if_range})
    if status == 206:
        assert got == Plan(206, 10, 10, "bytes 10-19/100")
    else:
        assert got == WHOLE


def test_if_range_with_a_weak_etag_never_holds() -> None:
    """A weak entity tag never validates If-Range, even equal to the file's."""
    assert planned({"range": "bytes=0-9", "if-range": 'W/"v1"'}, etag='W/"v1"') == WHOLE


def test_if_range_that_does_not_hold_ignores_even_an_unsatisfiable_range() -> None:
    """When If-Range fails the Range is ignored altogether: 200, not 416."""
    assert planned({"range": "bytes=500-600", "if-range": '"v0"'}) == WHOLE
    assert planned({"range": "bytes=500-600", "if-range": ETAG}).status == 416


# -- a file of zero bytes -----------------------------------------------------------------------


def test_a_zero_size_file() -> None:
    """An empty file: 200 with nothing, 304, and 416 for any first-pos range."""
    assert planned({}, size=0) == Plan(200, 0, 0)
    assert planned({}, size=0).has_body
    assert planned({"if-none-match": ETAG}, size=0) == Plan(304)
    for header in ("bytes=0-0", "bytes=5-9", "bytes=-0"):
        assert planned({"range": header}, size=0) == Plan(416, content_range="bytes */0")
    assert planned({"range": "bytes=0-1,2-3"}, size=0) == Plan(200, 0, 0)


def test_a_suffix_range_on_a_zero_size_file_is_not_a_malformed_206() -> None:
    """An empty file has no last byte: a suffix range cannot be answered 206."""
    got = planned({"range": "bytes=-5"}, size=0)
    assert got.status in (200, 416), got
    assert got.content_range in (None, "bytes */0")


@pytest.mark.parametrize("header", ["bytes=\u00b2-5", "bytes=1-\u00b9", "bytes=-\u00b3"])
def test_non_ascii_digits_in_a_range_are_ignored(header: str) -> None:
    """Headers are decoded as Latin-1, so a client can send superscript digits."""
    assert planned({"range": header}) == WHOLE


# -- the helpers --------------------------------------------------------------------------------


def test_etag_matches() -> None:
    """Strong and weak comparison of entity tags, '*', and absent headers."""
    assert not etag_matches(None, ETAG)
    assert not etag_matches("", ETAG)
    assert etag_matches(" * ", ETAG)
    assert etag_matches("*", 'W/"v1"', weak=False)  # "*": any current representation
    assert etag_matches('"v1"', ETAG, weak=False)
    assert not etag_matches('W/"v1"', ETAG, weak=False)
    assert etag_matches('W/"v1"', ETAG)
    assert not etag_matches('"v10"', ETAG)
    assert not etag_matches("v1", ETAG)  # quotes are part of the tag


def test_byte_range() -> None:
    """byte_range's three kinds of result."""
    assert byte_range("bytes=0-9", 100) == (0, 10)
    assert byte_range("bytes=-5", 100) == (95, 5)
    assert byte_range("bytes=100-100", 100) == "unsatisfiable"
    assert byte_range("bytes=0-1,3-4", 100) == "ignore"


def test_http_date_reads_the_three_formats() -> None:
    """RFC 9110 5.6.7: recipients accept IMF-fixdate and the obsolete RFC 850 and asctime
    formats."""
    assert http_date(AT_MTIME) == MTIME
    assert http_date("Sunday, 06-Nov-94 08:49:37 GMT") == MTIME
    assert http_date(None) is None
    assert http_date("") is None
    assert http_date("Sun, 06 Nov 1994 25:99:99 GMT") is None


@pytest.fixture
def new_york_time() -> Iterator[None]:
    """The process's local time zone set to one that is not UTC, for the test's duration."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.usefixtures("new_york_time")
def test_an_asctime_date_is_gmt_whatever_the_local_time_zone() -> None:
    """HTTP dates are GMT, the asctime format (which names no zone) included."""
    assert http_date("Sun Nov  6 08:49:37 1994") == MTIME


# -- the property -------------------------------------------------------------------------------

positions = st.integers(min_value=0, max_value=3000)


@st.composite
def range_specs(draw: st.DrawFn) -> tuple[str, slice | None]:
    """A valid single ``bytes=`` range and the Python slice that means the same bytes, or
    None for a range the server ignores (last < first)."""
    kind = draw(st.sampled_from(["first-last", "first-", "-suffix"]))
    if kind == "first-":
        first = draw(positions)
        return f"bytes={first}-", slice(first, None)
    if kind == "-suffix":
        suffix = draw(st.integers(min_value=1, max_value=3000))
        return f"bytes=-{suffix}", slice(-suffix, None)
    first, last = draw(positions), draw(positions)
    return f"bytes={first}-{last}", slice(first, last + 1) if last >= first else None


@given(size=st.integers(min_value=0, max_value=2000), spec=range_specs())
def test_a_planned_range_is_python_slicing_of_the_file(
    size: int, spec: tuple[str, slice | None]
) -> None:
    """For any size and valid single range, the planned bytes lie within the file and are
    exactly what slicing the file's bytes would give; an empty slice is 416."""
    header, wanted = spec
    # A suffix of an empty file is answered with the whole (empty) file, not 416 (RFC 9110
    # calls a non-zero suffix satisfiable): test_a_suffix_range_on_a_zero_size_file_...
    assume(not (size == 0 and header.startswith("bytes=-")))
    got = plan({"range": header}, size=size, etag=ETAG, mtime=MTIME)
    if wanted is None:
        assert got == Plan(200, 0, size)
        return
    expected = range(size)[wanted]
    if len(expected) == 0:
        assert got == Plan(416, content_range=f"bytes */{size}")
        return
    assert got.status == 206
    assert 0 <= got.start < size
    assert 1 <= got.length <= size - got.start
    assert (got.start, got.length) == (expected.start, len(expected))
    assert got.content_range == f"bytes {got.start}-{got.start + got.length - 1}/{size}"
