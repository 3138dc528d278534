"""SemVer 2.0: exact parsing and precedence, enough to choose "the newest allowed version".

Strict SemVer 2.0.0 (semver.org): ``MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]``, numbers without
leading zeros, non-empty dot-separated identifiers of ``[0-9A-Za-z-]``. Two limits come from
node-semver, so that nothing is valid here that npm itself refuses: at most 256 characters,
and major, minor and patch at most ``Number.MAX_SAFE_INTEGER``. npm's *loose* forms
(``v1.2.3``, ``=1.2.3``, surrounding spaces) are not versions here: the registry stores
cleaned versions, and paths and packuments are matched exactly.

Precedence (semver.org §11): major, minor, patch numerically; a prerelease ranks below its
release; prerelease identifiers compare numerically when both are numbers, numbers below
words, words in ASCII order, and a longer list above its prefix. Build metadata is ignored.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from entrepot.errors import InvalidRequestError

__all__ = [
    "MAX_LENGTH",
    "MAX_SAFE_INTEGER",
    "Version",
    "compare",
    "is_valid",
    "newest",
    "parse",
    "try_parse",
]

MAX_LENGTH = 256
MAX_SAFE_INTEGER = 2**53 - 1

_NUMBER = r"0|[1-9][0-9]*"
_PRE_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_IDENT = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<pre>{_PRE_IDENT}(?:\.{_PRE_IDENT})*))?"
    rf"(?:\+(?P<build>{_BUILD_IDENT}(?:\.{_BUILD_IDENT})*))?",
    re.ASCII,
)

# One prerelease identifier's sort key: numbers (0, n, "") below words (1, 0, w).
_PreKey = tuple[int, int, str]


@dataclass(frozen=True)
class Version:
    """A parsed version. Equality is structural (build included); use :meth:`key` or
    :func:`compare` for precedence, where builds are equal."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @functools.cached_property
    def key(self) -> tuple[int, int, int, int, tuple[_PreKey, ...]]:
        """A sort key in precedence order: ``sorted(vs, key=lambda v: v.key)``.

        The fourth element puts a release (1) above its prereleases (0)."""
        pre = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if pre else 1, pre)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


def _parse(text: str) -> Version | str:
    """The version, or why ``text`` is not one."""
    if len(text) > MAX_LENGTH:
        return f"longer than {MAX_LENGTH} characters"
    m = _SEMVER.fullmatch(text)
    if m is None:
        return "not a SemVer 2.0 version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD])"
    major, minor, patch = int(m["major"]), int(m["minor"]), int(m["patch"])
    if max(major, minor, patch) > MAX_SAFE_INTEGER:
        return "a number above 2^53-1"
    pre = tuple(m["pre"].split(".")) if m["pre"] else ()
    build = tuple(m["build"].split(".")) if m["build"] else ()
    return Version(major, minor, patch, pre, build)


@functools.lru_cache(maxsize=1 << 14)
def try_parse(text: str) -> Version | None:
    """The version, or None when ``text`` is not a valid SemVer 2.0 version."""
    parsed = _parse(text)
    return parsed if isinstance(parsed, Version) else None


def parse(text: str) -> Version:
    """The version.

    Raises:
        InvalidRequestError: ``invalid version "<text>": <reason>``.
    """
    parsed = _parse(text)
    if isinstance(parsed, str):
        shown = text if len(text) <= 80 else text[:80] + "..."
        raise InvalidRequestError(f"invalid version {shown!r}: {parsed}")
    return parsed


def is_valid(text: str) -> bool:
    return try_parse(text) is not None


def compare(a: str | Version, b: str | Version) -> int:
    """-1, 0 or 1 as ``a`` has lower, equal or higher precedence than ``b``.

    Raises:
        InvalidRequestError: either is not a valid version.
    """
    ka = (a if isinstance(a, Version) else parse(a)).key
    kb = (b if isinstance(b, Version) else parse(b)).key
    return (ka > kb) - (ka < kb)


def newest(versions: Iterable[str], *, prereleases: bool = False) -> str | None:
    """The highest-precedence valid version of ``versions`` (text that is not a version is
    skipped), without prereleases unless asked; None when there is none."""
    best: str | None = None
    best_key: tuple[int, int, int, int, tuple[_PreKey, ...]] | None = None
    for text in versions:
        v = try_parse(text)
        if v is None or (v.is_prerelease and not prereleases):
            continue
        if best_key is None or v.key > best_key:
            best, best_key = text, v.key
    return best
