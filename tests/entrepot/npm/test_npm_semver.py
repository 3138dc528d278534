"""SemVer 2.0 parsing and precedence (entrepot.npm.semver): semver.org's examples, properties,
and node-semver (the copy npm bundles) as the oracle on generated versions."""

from __future__ import annotations

import itertools
import random
from functools import cmp_to_key

import pytest
from hypothesis import given
from hypothesis import strategies as st
from npm_oracle import run as run_node

from entrepot.errors import InvalidRequestError
from entrepot.npm.semver import MAX_SAFE_INTEGER, Version, compare, is_valid, newest, parse

# semver.org §11: each lower than the next.
SPEC_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "1.10.0",
    "2.0.0",
]


def test_precedence_of_the_specs_examples() -> None:
    for low, high in itertools.pairwise(SPEC_ORDER):
        assert compare(low, high) == -1
        assert compare(high, low) == 1
    shuffled = SPEC_ORDER[:]
    random.Random(1).shuffle(shuffled)
    assert sorted(shuffled, key=lambda v: parse(v).key) == SPEC_ORDER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0", Version(0, 0, 0)),
        ("1.2.3", Version(1, 2, 3)),
        ("1.2.3-0", Version(1, 2, 3, ("0",))),
        ("1.2.3-alpha.1", Version(1, 2, 3, ("alpha", "1"))),
        ("1.2.3-0a.-.--", Version(1, 2, 3, ("0a", "-", "--"))),
        ("1.2.3+build.007", Version(1, 2, 3, (), ("build", "007"))),
        ("1.2.3-rc.1+b", Version(1, 2, 3, ("rc", "1"), ("b",))),
        (f"{MAX_SAFE_INTEGER}.0.0", Version(MAX_SAFE_INTEGER, 0, 0)),
    ],
)
def test_parse(text: str, expected: Version) -> None:
    assert parse(text) == expected
    assert str(parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "v1.2.3",
        "=1.2.3",
        " 1.2.3",
        "1.2.3 ",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-01",
        "1.2.3-a..b",
        "1.2.3-a.",
        "1.2.3+a..b",
        "1.2.3-é",
        "1.2.3-a_b",
        "-1.2.3",
        "1.2.3\n",
        f"{MAX_SAFE_INTEGER + 1}.0.0",
        "1.2.3-" + "a" * 251,
    ],
)
def test_invalid_versions(text: str) -> None:
    assert not is_valid(text)
    with pytest.raises(InvalidRequestError, match="invalid version"):
        parse(text)


def test_build_metadata_is_ignored_by_precedence() -> None:
    assert compare("1.0.0+a", "1.0.0+b") == 0
    assert compare("1.0.0-rc.1+x", "1.0.0-rc.1") == 0
    assert parse("1.0.0+a") != parse("1.0.0+b")  # equality stays structural


def test_newest() -> None:
    assert newest(["1.0.0", "2.0.0-rc.1", "1.10.0", "junk", "1.9.9"]) == "1.10.0"
    assert newest(["1.0.0", "2.0.0-rc.1"], prereleases=True) == "2.0.0-rc.1"
    assert newest(["2.0.0-rc.1", "junk"]) is None
    assert newest([]) is None


_ident = st.from_regex(r"(0|[1-9][0-9]{0,17}|[0-9]*[A-Za-z-][0-9A-Za-z-]{0,4})", fullmatch=True)
versions_st = st.builds(
    lambda a, b, c, pre, build: (
        f"{a}.{b}.{c}"
        + (("-" + ".".join(pre)) if pre else "")
        + (("+" + ".".join(build)) if build else "")
    ),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, MAX_SAFE_INTEGER),
    st.lists(_ident, max_size=4),
    st.lists(st.from_regex(r"[0-9A-Za-z-]{1,4}", fullmatch=True), max_size=2),
)


@given(versions_st)
def test_valid_versions_round_trip(text: str) -> None:
    assert str(parse(text)) == text


@given(versions_st, versions_st, versions_st)
def test_precedence_is_a_total_preorder(a: str, b: str, c: str) -> None:
    assert compare(a, a) == 0
    assert compare(a, b) == -compare(b, a)
    if compare(a, b) <= 0 and compare(b, c) <= 0:
        assert compare(a, c) <= 0


@given(versions_st)
def test_a_prerelease_ranks_below_its_release(text: str) -> None:
    v = parse(text)
    release = Version(v.major, v.minor, v.patch)
    assert compare(v, release) == (-1 if v.is_prerelease else 0)


def _generated(count: int, seed: int = 7) -> list[str]:
    """Versions and near-versions: valid ones of every shape, and one-character mutations."""
    rng = random.Random(seed)
    parts = ["0", "1", "2", "10", "01", "9007199254740991", "9007199254740992", ""]
    idents = ["alpha", "beta", "rc", "0", "1", "2", "11", "01", "-", "a-1", "0a", "", "x_y"]
    out = []
    for _ in range(count):
        text = ".".join(rng.choice(parts) for _ in range(rng.choice([3, 3, 3, 2, 4])))
        if rng.random() < 0.6:
            text += "-" + ".".join(rng.choice(idents) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.3:
            text += "+" + ".".join(rng.choice(["b", "007", "x-y", ""]) for _ in range(2))
        out.append(text)
    return out


def test_validity_agrees_with_node_semver() -> None:
    corpus = _generated(4000)
    theirs = run_node(
        "output = input.map(v => { try { new lib.semver.SemVer(v); return true }"
        " catch { return false } })",
        corpus,
        "semver",
    )
    assert [is_valid(v) for v in corpus] == theirs
    assert 0 < sum(theirs) < len(corpus)


def test_precedence_agrees_with_node_semver() -> None:
    # Numbers within 2^53 in prereleases too: node-semver turns larger ones into floats.
    corpus = sorted(
        {v for v in _generated(4000, seed=8) if is_valid(v) and "9007199254740992" not in v}
    )
    theirs = run_node("output = [...input].sort(lib.semver.compare)", corpus, "semver")
    ours = sorted(corpus, key=cmp_to_key(compare))
    # Equal precedence (builds) may order differently; compare the precedence sequences.
    assert [parse(v).key for v in ours] == [parse(v).key for v in theirs]
    assert len(corpus) > 300
