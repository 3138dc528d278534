"""Module paths and versions: a pure-Python port of Go's rules.

Ported from ``golang.org/x/mod``:

* ``module/module.go``: :func:`check_path`, :func:`check_import_path`, :func:`check_file_path`,
  :func:`split_path_version`, :func:`canonical_version`, :func:`escape_path`,
  :func:`unescape_path`, :func:`escape_version`, :func:`unescape_version`,
  :func:`match_prefix_patterns` (with a port of Go's ``path.Match``);
* ``module/pseudo.go``: :func:`is_pseudo_version`;
* ``semver/semver.go``: :func:`is_valid`, :func:`canonical`, :func:`compare`, :func:`major`,
  :func:`prerelease`, :func:`build`, :func:`sort_versions`.

Plus :func:`latest_version`, the ``@latest`` choice the go command makes from a version list.

Every validation failure raises :class:`~entrepot.errors.InvalidRequestError` with Go's wording,
e.g. ``malformed module path "x": missing dot in first path element``. Strings inside messages are
quoted the way Go's ``%+q`` quotes them, so a message is always one line of printable ASCII.

Go strings are bytes; Python strings are code points. A ``str`` holding lone surrogates (what
``bytes.decode("utf-8", "surrogateescape")`` makes of invalid UTF-8) counts as invalid UTF-8.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from enum import Enum
from functools import cmp_to_key
from typing import NamedTuple

from entrepot.errors import InvalidRequestError

__all__ = [
    "build",
    "canonical",
    "canonical_version",
    "check_file_path",
    "check_import_path",
    "check_path",
    "compare",
    "escape_path",
    "escape_version",
    "is_pseudo_version",
    "is_valid",
    "latest_version",
    "major",
    "match_prefix_patterns",
    "prerelease",
    "sort_versions",
    "split_path_version",
    "unescape_path",
    "unescape_version",
]


# --------------------------------------------------------------------------------------------
# Quoting for messages (Go's strconv.QuoteToASCII / QuoteRuneToASCII, i.e. fmt's %+q)
# --------------------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _escape_char(c: str, quote: str) -> str:
    if c in (quote, "\\"):
        return "\\" + c
    o = ord(c)
    if 0x20 <= o < 0x7F:
        return c
    simple = _SIMPLE_ESCAPES.get(c)
    if simple is not None:
        return simple
    if o < 0x20 or o == 0x7F:
        return f"\\x{o:02x}"
    if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte smuggled in by surrogateescape
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def _quote(s: str) -> str:
    """Go's ``%+q`` of a string: double-quoted, escaped, ASCII only."""
    return '"' + "".join(_escape_char(c, '"') for c in s) + '"'


def _quote_rune(c: str) -> str:
    """Go's ``%+q`` of a rune: single-quoted, escaped, ASCII only."""
    return "'" + _escape_char(c, "'") + "'"


def _valid_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Path checking (module.go)
# --------------------------------------------------------------------------------------------


class _Kind(Enum):
    """Which rules a path is checked against (Go's pathKind)."""

    MODULE = "module"
    IMPORT = "import"
    FILE = "file"


_DIGITS = frozenset("0123456789")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM = _DIGITS | _LOWER | _UPPER

# firstPathOK: the first element of a module path is a lower-case LDH domain name.
_FIRST_PATH_OK = _DIGITS | _LOWER | frozenset("-.")
# modPathOK: ASCII letters and digits and - . _ ~ (no '+' or '%': they change meaning in URLs).
_MOD_PATH_OK = _ALNUM | frozenset("-._~")
# importPathOK: modPathOK plus '+'.
_IMPORT_PATH_OK = _MOD_PATH_OK | frozenset("+")
# fileNameOK (ASCII part): letters, digits, space and these punctuation characters.
_FILE_NAME_ASCII_OK = _ALNUM | frozenset("!#$%&()+,-.=@[]^_{}~ ")

# Reserved file names on Windows, compared case-insensitively with an element's prefix up to
# its first dot. They are pure ASCII and none of their letters has a non-ASCII case-fold
# partner, so an ASCII upper-case comparison is exactly Go's strings.EqualFold.
_BAD_WINDOWS_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def _char_ok(c: str, kind: _Kind) -> bool:
    if kind is _Kind.MODULE:
        return c in _MOD_PATH_OK
    if kind is _Kind.IMPORT:
        return c in _IMPORT_PATH_OK
    if c.isascii():
        return c in _FILE_NAME_ASCII_OK
    # unicode.IsLetter: categories Lu, Ll, Lt, Lm, Lo.
    return unicodedata.category(c).startswith("L")


def _check_elem(elem: str, kind: _Kind) -> str | None:
    """Go's checkElem: why one path element is invalid, or None if it is fine."""
    if elem == "":
        return "empty path element"
    if elem.count(".") == len(elem):
        return f"invalid path element {_quote(elem)}"
    if elem[0] == "." and kind is _Kind.MODULE:
        return "leading dot in path element"
    if elem[-1] == ".":
        return "trailing dot in path element"
    for c in elem:
        if not _char_ok(c, kind):
            return f"invalid char {_quote_rune(c)}"

    # Windows disallows a bunch of path elements, sadly.
    short = elem.split(".", 1)[0]
    if short.isascii() and short.upper() in _BAD_WINDOWS_NAMES:
        return f"{_quote(short)} disallowed as path element component on Windows"

    if kind is _Kind.FILE:
        # Windows short names (GOPROX~1) only matter for import paths.
        return None

    # Reject path components that look like Windows short names: a tilde then ASCII digits.
    tilde = short.rfind("~")
    if 0 <= tilde < len(short) - 1 and all(c in _DIGITS for c in short[tilde + 1 :]):
        return "trailing tilde and digits in path element"
    return None


def _check_path(path: str, kind: _Kind) -> str | None:
    """Go's checkPath: why a slash-separated path is invalid, or None if it is fine."""
    if not _valid_utf8(path):
        return "invalid UTF-8"
    if path == "":
        return "empty string"
    if path[0] == "-" and kind is not _Kind.FILE:
        return "leading dash"
    if "//" in path:
        return "double slash"
    if path[-1] == "/":
        return "trailing slash"
    for elem in path.split("/"):
        err = _check_elem(elem, kind)
        if err is not None:
            return err
    return None


def _module_path_error(path: str) -> str | None:
    """Go's CheckPath without the ``malformed module path %q:`` prefix."""
    err = _check_path(path, _Kind.MODULE)
    if err is not None:
        return err
    i = path.find("/")
    if i < 0:
        i = len(path)
    if i == 0:
        return "leading slash"
    first = path[:i]
    if "." not in first:
        return "missing dot in first path element"
    if path[0] == "-":
        return "leading dash in first path element"
    for c in first:
        if c not in _FIRST_PATH_OK:
            return f"invalid char {_quote_rune(c)} in first path element"
    if not split_path_version(path)[2]:
        return "invalid version"
    return None


def check_path(path: str) -> None:
    """Check that ``path`` is a valid module path (Go's ``module.CheckPath``).

    A valid module path is a valid import path (see :func:`check_import_path`) with three
    additional constraints. The first element, by convention a domain name, holds only lower-case
    ASCII letters, digits, dots and dashes, contains at least one dot and does not start with a
    dash. A final ``/vN`` element must not have a leading zero, must not be ``/v1`` and must not
    contain dots; for ``gopkg.in/`` paths it must instead follow gopkg.in's ``.vN`` convention.
    No element may begin with a dot.

    Raises:
        InvalidRequestError: ``malformed module path "<path>": <reason>``.
    """
    err = _module_path_error(path)
    if err is not None:
        raise InvalidRequestError(f"malformed module path {_quote(path)}: {err}")


def check_import_path(path: str) -> None:
    """Check that ``path`` is a valid package import path (Go's ``module.CheckImportPath``).

    One or more non-empty elements separated by single slashes, no leading or trailing slash,
    no leading dash. Elements use ASCII letters, digits and ``+ - . _ ~``; they must not end with
    a dot or be all dots, must not be a reserved Windows name (``CON``, ``com1``, ...) up to their
    first dot, and must not end in a tilde followed by digits (Windows short names).

    Raises:
        InvalidRequestError: ``malformed import path "<path>": <reason>``.
    """
    err = _check_path(path, _Kind.IMPORT)
    if err is not None:
        raise InvalidRequestError(f"malformed import path {_quote(path)}: {err}")


def check_file_path(path: str) -> None:
    """Check that ``path`` is a valid slash-separated file path (Go's ``module.CheckFilePath``).

    Like an import path, except that elements may also use all Unicode letters, the space and
    ``! # $ % & ( ) + , - . = @ [ ] ^ _ { } ~``; elements may begin with a dot or a dash, and
    tilde-digit suffixes are allowed. ``..``, ``.``, empty elements and a leading or trailing
    slash are rejected.

    Raises:
        InvalidRequestError: ``malformed file path "<path>": <reason>``.
    """
    err = _check_path(path, _Kind.FILE)
    if err is not None:
        raise InvalidRequestError(f"malformed file path {_quote(path)}: {err}")


def split_path_version(path: str) -> tuple[str, str, bool]:
    """Split a module path into ``(prefix, path_major, ok)`` (Go's ``SplitPathVersion``).

    ``prefix + path_major == path``; ``path_major`` is ``""`` or ``"/vN"`` with N >= 2, or for
    ``gopkg.in/`` paths ``".vN"`` (any N, optionally with ``-unstable``). ``ok`` is False when the
    last element breaks the rules :func:`check_path` applies, e.g. ``example.com/pkg/v1``.
    """
    if path.startswith("gopkg.in/"):
        return _split_gopkg_in(path)

    i = len(path)
    dot = False
    while i > 0 and (path[i - 1] in _DIGITS or path[i - 1] == "."):
        if path[i - 1] == ".":
            dot = True
        i -= 1
    if i <= 1 or i == len(path) or path[i - 1] != "v" or path[i - 2] != "/":
        return path, "", True
    prefix, path_major = path[: i - 2], path[i - 2 :]
    if dot or len(path_major) <= 2 or path_major[2] == "0" or path_major == "/v1":
        return path, "", False
    return prefix, path_major, True


def _split_gopkg_in(path: str) -> tuple[str, str, bool]:
    if not path.startswith("gopkg.in/"):
        return path, "", False
    i = len(path)
    if path.endswith("-unstable"):
        i -= len("-unstable")
    while i > 0 and path[i - 1] in _DIGITS:
        i -= 1
    if i <= 1 or path[i - 1] != "v" or path[i - 2] != ".":
        # All gopkg.in paths must end in vN for some N.
        return path, "", False
    prefix, path_major = path[: i - 2], path[i - 2 :]
    if len(path_major) <= 2 or (path_major[2] == "0" and path_major != ".v0"):
        return path, "", False
    return prefix, path_major, True


# --------------------------------------------------------------------------------------------
# Escaping (module.go)
# --------------------------------------------------------------------------------------------


def _escape_string(s: str) -> str:
    if any(c == "!" or not c.isascii() for c in s):
        # Ruled out by the callers' checks; the escaping below depends on it.
        raise InvalidRequestError("internal error: inconsistency in EscapePath")
    return "".join("!" + c.lower() if c in _UPPER else c for c in s)


def _unescape_string(escaped: str) -> str | None:
    out: list[str] = []
    bang = False
    for c in escaped:
        if not c.isascii():
            return None
        if bang:
            bang = False
            if c not in _LOWER:
                return None
            out.append(c.upper())
            continue
        if c == "!":
            bang = True
            continue
        if c in _UPPER:
            return None
        out.append(c)
    if bang:
        return None
    return "".join(out)


def escape_path(path: str) -> str:
    """Return the escaped form of a module path: each upper-case letter becomes ``!`` + lower.

    ``github.com/Azure/go`` becomes ``github.com/!azure/go`` (Go's ``EscapePath``).

    Raises:
        InvalidRequestError: the module path is invalid (see :func:`check_path`).
    """
    check_path(path)
    return _escape_string(path)


def unescape_path(escaped: str) -> str:
    """Return the module path for an escaped path (Go's ``UnescapePath``).

    Raises:
        InvalidRequestError: the escaping is invalid (raw upper case, ``!`` not followed by a
            lower-case letter, trailing ``!``, non-ASCII), or the result is not a valid module
            path.
    """
    path = _unescape_string(escaped)
    if path is None:
        raise InvalidRequestError(f"invalid escaped module path {_quote(escaped)}")
    err = _module_path_error(path)
    if err is not None:
        raise InvalidRequestError(
            f"invalid escaped module path {_quote(escaped)}: "
            f"malformed module path {_quote(path)}: {err}"
        )
    return path


def escape_version(v: str) -> str:
    """Return the escaped form of a version (Go's ``EscapeVersion``).

    Versions need not be semantic versions, but must be valid file names (one element, see
    :func:`check_file_path`) and must not contain ``!``.

    Raises:
        InvalidRequestError: ``version "<v>" invalid: disallowed version string``.
    """
    # Go lets non-ASCII letters through here and then fails with "internal error: inconsistency
    # in EscapePath"; reject them up front with the ordinary message instead.
    if _check_elem(v, _Kind.FILE) is not None or "!" in v or not v.isascii():
        raise InvalidRequestError(f"version {_quote(v)} invalid: disallowed version string")
    return _escape_string(v)


def unescape_version(escaped: str) -> str:
    """Return the version for an escaped version (Go's ``UnescapeVersion``).

    Raises:
        InvalidRequestError: the escaping is invalid, or the result is not a valid file name.
    """
    v = _unescape_string(escaped)
    if v is None:
        raise InvalidRequestError(f"invalid escaped version {_quote(escaped)}")
    err = _check_elem(v, _Kind.FILE)
    if err is not None:
        raise InvalidRequestError(f"invalid escaped version {_quote(v)}: {err}")
    return v


# --------------------------------------------------------------------------------------------
# Semantic versions (semver.go)
# --------------------------------------------------------------------------------------------


class _Semver(NamedTuple):
    major: str
    minor: str
    patch: str
    short: str
    prerelease: str
    build: str


_IDENT_CHARS = _ALNUM | frozenset("-")


def _parse_int(v: str) -> tuple[str, str] | None:
    if v == "" or v[0] not in _DIGITS:
        return None
    i = 1
    while i < len(v) and v[i] in _DIGITS:
        i += 1
    if v[0] == "0" and i != 1:
        return None
    return v[:i], v[i:]


def _is_bad_num(v: str) -> bool:
    """An all-digit identifier with a leading zero."""
    return len(v) > 1 and v[0] == "0" and all(c in _DIGITS for c in v)


def _is_num(v: str) -> bool:
    return all(c in _DIGITS for c in v)


def _parse_prerelease(v: str) -> tuple[str, str] | None:
    # Dot-separated, non-empty identifiers of [0-9A-Za-z-]; numeric ones without leading zeros.
    if v == "" or v[0] != "-":
        return None
    i = 1
    start = 1
    while i < len(v) and v[i] != "+":
        if v[i] not in _IDENT_CHARS and v[i] != ".":
            return None
        if v[i] == ".":
            if start == i or _is_bad_num(v[start:i]):
                return None
            start = i + 1
        i += 1
    if start == i or _is_bad_num(v[start:i]):
        return None
    return v[:i], v[i:]


def _parse_build(v: str) -> tuple[str, str] | None:
    if v == "" or v[0] != "+":
        return None
    i = 1
    start = 1
    while i < len(v):
        if v[i] not in _IDENT_CHARS and v[i] != ".":
            return None
        if v[i] == ".":
            if start == i:
                return None
            start = i + 1
        i += 1
    if start == i:
        return None
    return v[:i], v[i:]


def _parse(v: str) -> _Semver | None:
    if v == "" or v[0] != "v":
        return None
    r = _parse_int(v[1:])
    if r is None:
        return None
    major_, v = r
    if v == "":
        return _Semver(major_, "0", "0", ".0.0", "", "")
    if v[0] != ".":
        return None
    r = _parse_int(v[1:])
    if r is None:
        return None
    minor, v = r
    if v == "":
        return _Semver(major_, minor, "0", ".0", "", "")
    if v[0] != ".":
        return None
    r = _parse_int(v[1:])
    if r is None:
        return None
    patch, v = r
    pre = ""
    if v.startswith("-"):
        r = _parse_prerelease(v)
        if r is None:
            return None
        pre, v = r
    bld = ""
    if v.startswith("+"):
        r = _parse_build(v)
        if r is None:
            return None
        bld, v = r
    if v != "":
        return None
    return _Semver(major_, minor, patch, "", pre, bld)


def is_valid(v: str) -> bool:
    """Whether ``v`` is a valid semantic version: ``vMAJOR[.MINOR[.PATCH[-PRE][+BUILD]]]``."""
    return _parse(v) is not None


def canonical(v: str) -> str:
    """The canonical form of ``v``: missing ``.MINOR``/``.PATCH`` filled in, build dropped.

    ``canonical("v1.2") == "v1.2.0"``; ``""`` if ``v`` is not a valid semantic version.
    """
    p = _parse(v)
    if p is None:
        return ""
    if p.build:
        return v[: len(v) - len(p.build)]
    return v + p.short


def major(v: str) -> str:
    """The major version prefix: ``major("v2.1.0") == "v2"``; ``""`` if invalid."""
    p = _parse(v)
    if p is None:
        return ""
    return v[: 1 + len(p.major)]


def prerelease(v: str) -> str:
    """The pre-release suffix: ``prerelease("v2.1.0-pre+meta") == "-pre"``; ``""`` if none."""
    p = _parse(v)
    return "" if p is None else p.prerelease


def build(v: str) -> str:
    """The build suffix: ``build("v2.1.0+meta") == "+meta"``; ``""`` if none or invalid."""
    p = _parse(v)
    return "" if p is None else p.build


def _compare_int(x: str, y: str) -> int:
    # Both are digit strings without leading zeros: longer is larger, then lexical order.
    if x == y:
        return 0
    if len(x) != len(y):
        return -1 if len(x) < len(y) else 1
    return -1 if x < y else 1


def _compare_prerelease(x: str, y: str) -> int:
    # A pre-release has lower precedence than the release; identifiers are compared left to
    # right, numeric ones numerically and below alphanumeric ones, which compare in ASCII order;
    # a longer list of otherwise equal identifiers is larger.
    if x == y:
        return 0
    if x == "":
        return 1
    if y == "":
        return -1
    xs = x[1:].split(".")
    ys = y[1:].split(".")
    for dx, dy in zip(xs, ys, strict=False):
        if dx == dy:
            continue
        ix, iy = _is_num(dx), _is_num(dy)
        if ix != iy:
            return -1 if ix else 1
        if ix and len(dx) != len(dy):
            return -1 if len(dx) < len(dy) else 1
        return -1 if dx < dy else 1
    # All shared identifiers are equal (and x != y): the longer list is the larger.
    return -1 if len(xs) < len(ys) else 1


def compare(v: str, w: str) -> int:
    """Compare two versions by semantic-version precedence: -1, 0 or +1.

    Build metadata is ignored. An invalid version is less than any valid one, and all invalid
    versions compare equal to each other.
    """
    pv, pw = _parse(v), _parse(w)
    if pv is None and pw is None:
        return 0
    if pv is None:
        return -1
    if pw is None:
        return 1
    for a, b in ((pv.major, pw.major), (pv.minor, pw.minor), (pv.patch, pw.patch)):
        c = _compare_int(a, b)
        if c != 0:
            return c
    return _compare_prerelease(pv.prerelease, pw.prerelease)


def _by_version(a: str, b: str) -> int:
    # Go's semver.ByVersion: precedence, then plain string order to break ties.
    c = compare(a, b)
    if c != 0:
        return c
    return -1 if a < b else (1 if a > b else 0)


def sort_versions(vs: Iterable[str]) -> list[str]:
    """Return the versions sorted as Go's ``semver.Sort`` does.

    Ascending precedence, ties (``v1`` / ``v1.0.0`` / ``v1.0.0+meta``) broken by string order.
    Invalid versions compare lower than every valid one, so they come first, in string order.
    """
    return sorted(vs, key=cmp_to_key(_by_version))


def canonical_version(v: str) -> str:
    """Like :func:`canonical`, but keeps the special build suffix ``+incompatible``."""
    cv = canonical(v)
    if build(v) == "+incompatible":
        cv += "+incompatible"
    return cv


# --------------------------------------------------------------------------------------------
# Pseudo-versions (pseudo.go)
# --------------------------------------------------------------------------------------------

# The three forms: vX.0.0-yyyymmddhhmmss-abcdefabcdef (no earlier tag),
# vX.Y.(Z+1)-0.yyyymmddhhmmss-abcdef (after release vX.Y.Z) and
# vX.Y.Z-pre.0.yyyymmddhhmmss-abcdef (after pre-release vX.Y.Z-pre); any may carry +build.
_PSEUDO_VERSION_RE = re.compile(
    r"v[0-9]+\.(0\.0-|[0-9]+\.[0-9]+-([^+]*\.)?0\.)[0-9]{14}-[A-Za-z0-9]+"
    r"(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?",
    re.ASCII,
)


def is_pseudo_version(v: str) -> bool:
    """Whether ``v`` is a pseudo-version (Go's ``module.IsPseudoVersion``)."""
    return v.count("-") >= 2 and is_valid(v) and _PSEUDO_VERSION_RE.fullmatch(v) is not None


def latest_version(versions: Iterable[str]) -> str | None:
    """The version the go command picks for ``@latest`` from a ``/@v/list`` answer.

    The highest release version; if there is none, the highest pre-release; ``None`` if there
    is neither. Invalid versions are ignored, and so are pseudo-versions, as the go command
    ignores them in a proxy's list. Of versions with equal precedence (``v1.0.0`` and
    ``v1.0.0+meta``) the one Go's sort puts last wins. Retractions and the go command's
    ``+incompatible`` preference (which needs the go.mod of the latest compatible version)
    are not considered.
    """
    best_release: str | None = None
    best_pre: str | None = None
    for v in versions:
        if not is_valid(v) or is_pseudo_version(v):
            continue
        if prerelease(v) == "":
            if best_release is None or _by_version(v, best_release) > 0:
                best_release = v
        elif best_pre is None or _by_version(v, best_pre) > 0:
            best_pre = v
    return best_release if best_release is not None else best_pre


# --------------------------------------------------------------------------------------------
# GOPRIVATE-style prefix patterns (module.go MatchPrefixPatterns, path/match.go Match)
# --------------------------------------------------------------------------------------------


class _BadPatternError(ValueError):
    """Go's path.ErrBadPattern."""

    def __init__(self) -> None:
        super().__init__("syntax error in pattern")


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Split off the next chunk: optional leading stars, then a star-free segment."""
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            # A trailing backslash is reported by _match_chunk.
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            return star, pattern[:i], pattern[i:]
        i += 1
    return star, pattern, ""


def _get_esc(chunk: str) -> tuple[int, str]:
    """A possibly escaped character of a character class, and the rest of the chunk."""
    if chunk == "" or chunk[0] in "-]":
        raise _BadPatternError
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if chunk == "":
            raise _BadPatternError
    c = chunk[0]
    if not _valid_utf8(c):
        raise _BadPatternError
    rest = chunk[1:]
    if rest == "":
        raise _BadPatternError
    return ord(c), rest


def _match_chunk(chunk: str, s: str) -> str | None:
    """Match ``chunk`` against the start of ``s``; the rest of ``s``, or None if no match.

    After a mismatch the whole chunk is still parsed so that a malformed one always raises.
    """
    failed = False
    while chunk:
        if not failed and s == "":
            failed = True
        c = chunk[0]
        if c == "[":
            r = -1
            if not failed:
                r = ord(s[0])
                s = s[1:]
            chunk = chunk[1:]
            negated = False
            if chunk.startswith("^"):
                negated = True
                chunk = chunk[1:]
            matched = False
            n_range = 0
            while True:
                if chunk.startswith("]") and n_range > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:])
                if lo <= r <= hi:
                    matched = True
                n_range += 1
            if matched == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if chunk == "":
                    raise _BadPatternError
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    return None if failed else s


def _check_pattern(pattern: str) -> None:
    while pattern:
        _, chunk, pattern = _scan_chunk(pattern)
        _match_chunk(chunk, "")


def _path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` never match ``/``; classes are ``[^a-z]``."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and chunk == "":
            # A trailing star matches the rest of the name unless it has a slash.
            return "/" not in name
        t = _match_chunk(chunk, name)
        if t is not None and (t == "" or pattern != ""):
            name = t
            continue
        if star:
            # Let the star swallow 1, 2, ... characters, but never a slash.
            found = False
            i = 0
            while i < len(name) and name[i] != "/":
                t = _match_chunk(chunk, name[i + 1 :])
                if t is not None and (pattern != "" or t == ""):
                    name = t
                    found = True
                    break
                i += 1
            if found:
                continue
        _check_pattern(pattern)
        return False
    return name == ""


def match_prefix_patterns(globs: str, target: str) -> bool:
    """Whether a leading path-element prefix of ``target`` matches one of ``globs``.

    ``globs`` is a comma-separated list of ``path.Match`` patterns, as in ``GOPRIVATE``; a
    pattern with N slashes is matched against the first N+1 elements of ``target``. Empty
    patterns are skipped; white space around a pattern and a trailing slash are ignored (Go
    keeps the blanks, so there ``"a, b"`` never matches ``b``). ``*`` never matches ``/``;
    ``?`` is one non-slash character; ``[abc]``, ``[a-z]`` and ``[^a-z]`` are classes
    (``^`` negates, ``!`` does not); ``\\`` escapes.

    Unlike Go, which silently skips malformed patterns, every pattern in the list is checked
    first, so a bad configuration is caught whatever the target.

    Raises:
        ValueError: a pattern is malformed (Go's ``path.ErrBadPattern``), e.g. ``[a-``.
    """
    patterns = [g.strip().removesuffix("/") for g in globs.split(",")]
    patterns = [g for g in patterns if g]
    for glob in patterns:
        try:
            _check_pattern(glob)
        except _BadPatternError:
            raise ValueError(f"syntax error in pattern {_quote(glob)}") from None

    for glob in patterns:
        # A glob with N slashes is matched against the first N+1 elements of the target.
        n = glob.count("/")
        elems = target.split("/")
        if len(elems) < n + 1:
            continue  # not enough prefix elements
        if _path_match(glob, "/".join(elems[: n + 1])):
            return True
    return False
