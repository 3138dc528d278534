"""SRI strings and the streaming tarball verifier (entrepot.npm.integrity)."""

from __future__ import annotations

import base64
import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from npm_oracle import run as run_node

from entrepot.errors import TooLargeError, VerificationError
from entrepot.npm.integrity import (
    IntegrityError,
    TarballTooLargeError,
    Verifier,
    expected_from_dist,
    from_shasum,
    integrity_of,
    parse_sri,
)
from entrepot.web.responses import status_for

DATA = b"a tarball's bytes\x00\x01" * 100


def _sri(algorithm: str, data: bytes = DATA) -> str:
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def _verify(expected_sri: str, chunks: list[bytes], **kwargs: int) -> str:
    expected = parse_sri(expected_sri)
    assert expected is not None
    verifier = Verifier(expected, what="pkg@1.0.0", **kwargs)  # type: ignore[arg-type]
    for chunk in chunks:
        verifier.update(chunk)
    return verifier.finish()


def test_integrity_of_is_npms_format() -> None:
    assert integrity_of(DATA) == _sri("sha512")
    assert integrity_of(DATA, "sha1") == _sri("sha1")


def test_parse_picks_the_strongest_supported_algorithm() -> None:
    both = f"{_sri('sha1')} {_sri('sha512')}"
    expected = parse_sri(both)
    assert expected is not None
    assert expected.algorithm == "sha512"
    assert expected.text == (_sri("sha512"),)
    for weaker, stronger in [("sha1", "sha256"), ("sha256", "sha384"), ("sha384", "sha512")]:
        parsed = parse_sri(f"{_sri(stronger)}\n\t{_sri(weaker)}")
        assert parsed is not None
        assert parsed.algorithm == stronger


def test_parse_ignores_options_and_unknown_algorithms() -> None:
    parsed = parse_sri(f"md5-AAAA {_sri('sha256')}?foo=bar")
    assert parsed is not None
    assert parsed.algorithm == "sha256"
    assert parsed.matches(hashlib.sha256(DATA).digest())
    assert parse_sri("md5-AAAA whirlpool-BBBB") is None
    assert parse_sri("") is None
    assert parse_sri("sha512") is None


def test_the_algorithm_choice_agrees_with_ssri() -> None:
    corpus = [
        f"{_sri('sha1')} {_sri('sha512')}",
        f"{_sri('sha256')} {_sri('sha1')}",
        f"{_sri('sha384')} {_sri('sha256')}",
        f"{_sri('sha512')}?opt {_sri('sha384')}",
        _sri("sha1"),
        f"md5-AAAA {_sri('sha256')}",
    ]
    theirs = run_node("output = input.map(s => lib.ssri.parse(s).pickAlgorithm())", corpus, "ssri")
    ours = [parsed.algorithm if (parsed := parse_sri(s)) else None for s in corpus]
    assert ours == theirs


def test_several_digests_of_one_algorithm_any_may_match() -> None:
    assert _verify(f"{_sri('sha512', b'other')} {_sri('sha512')}", [DATA]) == _sri("sha512")


@given(st.lists(st.integers(0, len(DATA)), max_size=8))
def test_any_chunking_verifies_the_same(cuts: list[int]) -> None:
    points = sorted({0, len(DATA), *cuts})
    chunks = [DATA[a:b] for a, b in itertools.pairwise(points)]
    assert _verify(_sri("sha512"), chunks, max_bytes=len(DATA), expected_length=len(DATA)) == (
        _sri("sha512")
    )


def test_one_changed_byte_is_refused_saying_expected_and_got() -> None:
    tampered = bytearray(DATA)
    tampered[100] ^= 1
    with pytest.raises(IntegrityError) as caught:
        _verify(_sri("sha512"), [bytes(tampered)])
    error = caught.value
    assert error.reason == "mismatch"
    assert error.expected == _sri("sha512")
    assert error.got == _sri("sha512", bytes(tampered))
    assert _sri("sha512") in str(error)
    assert error.got in str(error)
    assert "pkg@1.0.0" in str(error)
    assert isinstance(error, VerificationError)
    assert status_for(error) == 502


def test_a_truncated_body_is_refused() -> None:
    with pytest.raises(IntegrityError) as caught:
        _verify(_sri("sha512"), [DATA[:-1]], expected_length=len(DATA))
    assert caught.value.reason == "truncated"
    assert f"{len(DATA) - 1} of {len(DATA)} bytes" in str(caught.value)
    # Without a declared length, a short body is a mismatch.
    with pytest.raises(IntegrityError) as caught:
        _verify(_sri("sha512"), [DATA[:-1]])
    assert caught.value.reason == "mismatch"


def test_a_body_longer_than_announced_is_refused_at_once() -> None:
    expected = parse_sri(_sri("sha512"))
    assert expected is not None
    verifier = Verifier(expected, expected_length=10)
    verifier.update(b"x" * 10)
    with pytest.raises(IntegrityError):
        verifier.update(b"y")


def test_an_oversized_body_is_refused_by_the_chunk_that_crosses_the_limit() -> None:
    expected = parse_sri(_sri("sha512"))
    assert expected is not None
    verifier = Verifier(expected, max_bytes=1000, what="big@1.0.0")
    verifier.update(b"x" * 600)
    verifier.update(b"x" * 400)  # exactly the limit: fine
    with pytest.raises(TarballTooLargeError) as caught:
        verifier.update(b"x")
    assert caught.value.limit == 1000
    assert "big@1.0.0" in str(caught.value)
    assert "1000 bytes" in str(caught.value)
    assert isinstance(caught.value, TooLargeError)
    assert status_for(caught.value) == 502


def test_a_malformed_digest_of_the_chosen_algorithm_never_matches() -> None:
    for garbled in ("sha512-notbase64!!", "sha512-" + base64.b64encode(b"short").decode()):
        with pytest.raises(IntegrityError):
            _verify(f"{garbled} {_sri('sha1')}", [DATA])


def test_shasum_only_versions_are_verified_with_sha1() -> None:
    shasum = hashlib.sha1(DATA).hexdigest()
    expected = expected_from_dist({"shasum": shasum, "tarball": "http://127.0.0.1/x.tgz"})
    assert expected is not None
    assert expected.algorithm == "sha1"
    assert expected.source == "shasum"
    verifier = Verifier(expected)
    verifier.update(DATA)
    assert verifier.finish() == _sri("sha1")
    bad = Verifier(expected, what="old@0.0.1")
    bad.update(DATA + b"!")
    with pytest.raises(IntegrityError, match=f"dist.shasum expects {shasum}"):
        bad.finish()


def test_expected_from_dist_prefers_integrity_and_falls_back_to_shasum() -> None:
    shasum = hashlib.sha1(DATA).hexdigest()
    both = expected_from_dist({"integrity": _sri("sha512"), "shasum": shasum})
    assert both is not None
    assert both.algorithm == "sha512"
    unusable = expected_from_dist({"integrity": "md5-AAAA", "shasum": shasum.upper()})
    assert unusable is not None
    assert unusable.algorithm == "sha1"
    assert expected_from_dist({}) is None
    assert expected_from_dist({"integrity": 5, "shasum": "xyz"}) is None
    assert from_shasum("g" * 40) is None
    assert from_shasum("a" * 39) is None
