"""Subresource Integrity strings and the streaming tarball verifier. Pure: bytes in, verdict out.

Every tarball is checked against the upstream packument's ``dist.integrity`` while it streams,
before anything is stored: lockfiles pin that value, so one changed byte served once breaks
every install that trusts the lockfile. (cnpmcore recomputed ``integrity`` from the bytes it
happened to download and so served truncated tarballs with matching, wrong, hashes; Verdaccio
compares byte counts only.)

The rules are npm's (its ``ssri``): ``dist.integrity`` holds whitespace-separated
``<algorithm>-<base64 digest>[?options]`` entries; only the strongest algorithm present is
checked (sha512 > sha384 > sha256 > sha1), and a match with any of its digests passes. An entry
of that algorithm whose digest is not valid base64 of the right length can never match: the
tarball is refused, as npm would refuse it. Versions published before ``integrity`` existed
have only ``dist.shasum`` (sha1, hex), checked the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from entrepot.errors import TooLargeError, VerificationError

__all__ = [
    "Algorithm",
    "Expected",
    "IntegrityError",
    "TarballTooLargeError",
    "Verifier",
    "expected_from_dist",
    "from_shasum",
    "integrity_of",
    "parse_sri",
    "sri",
]

Algorithm = Literal["sha512", "sha384", "sha256", "sha1"]
_STRENGTH: dict[str, int] = {"sha1": 1, "sha256": 2, "sha384": 3, "sha512": 4}
_DIGEST_SIZE: dict[str, int] = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
_HEX = frozenset("0123456789abcdefABCDEF")


class IntegrityError(VerificationError):
    """The bytes are not the ones the packument promises; nothing is stored or served.

    ``reason`` is ``mismatch`` (other bytes, or a body cut short without a declared length)
    or ``truncated`` (fewer bytes than the declared length), a closed set for metrics."""

    def __init__(
        self,
        message: str,
        *,
        reason: Literal["mismatch", "truncated"],
        expected: str,
        got: str,
        size: int,
    ) -> None:
        super().__init__(message)
        self.reason: Literal["mismatch", "truncated"] = reason
        self.expected = expected
        self.got = got
        self.size = size


class TarballTooLargeError(TooLargeError):
    """A tarball grew past the size limit; raised by the chunk that crossed it."""

    reason: Literal["oversized"] = "oversized"

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class Expected:
    """What a tarball must hash to: one algorithm and the digests that pass (``None`` for an
    entry that can never match). ``text`` is the SRI entries as the packument gave them."""

    algorithm: Algorithm
    digests: tuple[bytes | None, ...]
    text: tuple[str, ...]
    source: Literal["integrity", "shasum"]

    def __str__(self) -> str:
        return " ".join(self.text)

    def matches(self, digest: bytes) -> bool:
        return digest in self.digests

    def hex(self) -> str:
        """The digests in hex (how ``dist.shasum`` is written)."""
        return " ".join(d.hex() if d is not None else "?" for d in self.digests)


def sri(algorithm: Algorithm, digest: bytes) -> str:
    """``sha512-<base64>``."""
    return f"{algorithm}-{base64.b64encode(digest).decode('ascii')}"


def integrity_of(data: bytes, algorithm: Algorithm = "sha512") -> str:
    """The SRI string of ``data`` (what npm writes into ``dist.integrity``)."""
    return sri(algorithm, hashlib.new(algorithm, data).digest())


def _decode(algorithm: str, digest: str) -> bytes | None:
    try:
        raw = base64.b64decode(digest, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _DIGEST_SIZE[algorithm] else None


def parse_sri(text: str) -> Expected | None:
    """The strongest supported algorithm's entries of an SRI string; None when it holds no
    entry of a supported algorithm (then ``dist.shasum`` is what is left to check)."""
    entries: list[tuple[str, str]] = []
    for token in text.split():
        algorithm, dash, rest = token.partition("-")
        if dash and algorithm in _STRENGTH:
            entries.append((algorithm, rest.split("?", 1)[0]))
    if not entries:
        return None
    best = max((a for a, _ in entries), key=_STRENGTH.__getitem__)
    kept = [(a, d) for a, d in entries if a == best]
    return Expected(
        algorithm=best,  # type: ignore[arg-type]  # a key of _STRENGTH
        digests=tuple(_decode(best, d) for _, d in kept),
        text=tuple(f"{a}-{d}" for a, d in kept),
        source="integrity",
    )


def from_shasum(shasum: str) -> Expected | None:
    """``dist.shasum`` (40 hex digits of sha1) as an expectation; None when it is not one."""
    if len(shasum) != 40 or not all(c in _HEX for c in shasum):
        return None
    digest = bytes.fromhex(shasum)
    return Expected("sha1", (digest,), (sri("sha1", digest),), "shasum")


def expected_from_dist(dist: Mapping[str, object]) -> Expected | None:
    """What a version's ``dist`` promises: ``integrity`` when it names a supported algorithm,
    else ``shasum``; None when neither does (the caller decides: the mirror refuses)."""
    integrity = dist.get("integrity")
    if isinstance(integrity, str):
        expected = parse_sri(integrity)
        if expected is not None:
            return expected
    shasum = dist.get("shasum")
    if isinstance(shasum, str):
        return from_shasum(shasum)
    return None


class Verifier:
    """Hash a body chunk by chunk and check it at the end.

    ``update`` raises :class:`TarballTooLargeError` with the first chunk past ``max_bytes``
    (so an endless body is cut off at once, before it fills a disk), and
    :class:`IntegrityError` when the body runs past ``expected_length`` (the upstream's
    Content-Length). ``finish`` raises :class:`IntegrityError` when the body is shorter than
    ``expected_length`` (``truncated``) or hashes to something else (``mismatch``); it returns
    the body's SRI string in the expected algorithm. ``what`` names the artifact in messages
    (``lodash@4.17.21``).
    """

    __slots__ = ("_hash", "_max", "_what", "expected", "expected_length", "size")

    def __init__(
        self,
        expected: Expected,
        *,
        max_bytes: int | None = None,
        expected_length: int | None = None,
        what: str = "tarball",
    ) -> None:
        self.expected = expected
        self.expected_length = expected_length
        self.size = 0
        self._max = max_bytes
        self._what = what
        self._hash = hashlib.new(expected.algorithm)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._max is not None and self.size > self._max:
            raise TarballTooLargeError(
                f"{self._what}: the upstream's tarball is larger than this mirror's limit of"
                f" {self._max} bytes; refused and not stored",
                limit=self._max,
            )
        if self.expected_length is not None and self.size > self.expected_length:
            raise IntegrityError(
                f"{self._what}: the upstream sent more than the {self.expected_length} bytes"
                " it announced; refused and not stored",
                reason="mismatch",
                expected=str(self.expected),
                got="",
                size=self.size,
            )
        self._hash.update(chunk)

    def finish(self) -> str:
        if self.expected_length is not None and self.size < self.expected_length:
            raise IntegrityError(
                f"{self._what}: truncated tarball from the upstream: {self.size} of"
                f" {self.expected_length} bytes; refused and not stored",
                reason="truncated",
                expected=str(self.expected),
                got="",
                size=self.size,
            )
        digest = self._hash.digest()
        got = sri(self.expected.algorithm, digest)
        if not self.expected.matches(digest):
            if self.expected.source == "shasum":  # shown as the packument shows it: hex
                field, want, have = "dist.shasum", self.expected.hex(), digest.hex()
            else:
                field, want, have = "dist.integrity", str(self.expected), got
            raise IntegrityError(
                f"{self._what}: integrity check failed: the packument's {field} expects"
                f" {want}, the upstream's {self.size} bytes are {have}; refused and"
                " not stored",
                reason="mismatch",
                expected=str(self.expected),
                got=got,
                size=self.size,
            )
        return got
