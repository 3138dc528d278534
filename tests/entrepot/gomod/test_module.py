"""Tests for entrepot.gomod.module, ported from golang.org/x/mod and Go's path package.

Tables come from x/mod's module/module_test.go (checkPathTests, escapeTests, badUnescape,
TestMatchPrefixPatterns), semver/semver_test.go (tests), cmd/go's modfetch/pseudo_test.go
(pseudoTests) and src/path/match_test.go (matchTests). Go's "x.y/\\xFFz" (an invalid UTF-8 byte)
becomes "x.y/\\udcffz", which is what surrogateescape decoding makes of that byte.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from entrepot.errors import InvalidRequestError
from entrepot.gomod.module import (
    _path_match,
    build,
    canonical,
    canonical_version,
    check_file_path,
    check_import_path,
    check_path,
    compare,
    escape_path,
    escape_version,
    is_pseudo_version,
    is_valid,
    latest_version,
    major,
    match_prefix_patterns,
    prerelease,
    sort_versions,
    split_path_version,
    unescape_path,
    unescape_version,
)

# (path, ok as module path, ok as import path, ok as file path) -- module_test.go checkPathTests
CHECK_PATH_TESTS: list[tuple[str, bool, bool, bool]] = [
    ("x.y/z", True, True, True),
    ("x.y", True, True, True),
    ("", False, False, False),
    ("x.y/\udcffz", False, False, False),
    ("/x.y/z", False, False, False),
    ("x./z", False, False, False),
    (".x/z", False, True, True),
    ("-x/z", False, False, True),
    ("x..y/z", True, True, True),
    ("x.y/z/../../w", False, False, False),
    ("x.y//z", False, False, False),
    ("x.y/z//w", False, False, False),
    ("x.y/z/", False, False, False),
    ("x.y/z/v0", False, True, True),
    ("x.y/z/v1", False, True, True),
    ("x.y/z/v2", True, True, True),
    ("x.y/z/v2.0", False, True, True),
    ("X.y/z", False, True, True),
    ("!x.y/z", False, False, True),
    ("_x.y/z", False, True, True),
    ("x.y!/z", False, False, True),
    ('x.y"/z', False, False, False),
    ("x.y#/z", False, False, True),
    ("x.y$/z", False, False, True),
    ("x.y%/z", False, False, True),
    ("x.y&/z", False, False, True),
    ("x.y'/z", False, False, False),
    ("x.y(/z", False, False, True),
    ("x.y)/z", False, False, True),
    ("x.y*/z", False, False, False),
    ("x.y+/z", False, True, True),
    ("x.y,/z", False, False, True),
    ("x.y-/z", True, True, True),
    ("x.y./zt", False, False, False),
    ("x.y:/z", False, False, False),
    ("x.y;/z", False, False, False),
    ("x.y</z", False, False, False),
    ("x.y=/z", False, False, True),
    ("x.y>/z", False, False, False),
    ("x.y?/z", False, False, False),
    ("x.y@/z", False, False, True),
    ("x.y[/z", False, False, True),
    ("x.y\\/z", False, False, False),
    ("x.y]/z", False, False, True),
    ("x.y^/z", False, False, True),
    ("x.y_/z", False, True, True),
    ("x.y`/z", False, False, False),
    ("x.y{/z", False, False, True),
    ("x.y}/z", False, False, True),
    ("x.y~/z", False, True, True),
    ("x.y/z!", False, False, True),
    ('x.y/z"', False, False, False),
    ("x.y/z#", False, False, True),
    ("x.y/z$", False, False, True),
    ("x.y/z%", False, False, True),
    ("x.y/z&", False, False, True),
    ("x.y/z'", False, False, False),
    ("x.y/z(", False, False, True),
    ("x.y/z)", False, False, True),
    ("x.y/z*", False, False, False),
    ("x.y/z++", False, True, True),
    ("x.y/z,", False, False, True),
    ("x.y/z-", True, True, True),
    ("x.y/z.t", True, True, True),
    ("x.y/z/t", True, True, True),
    ("x.y/z:", False, False, False),
    ("x.y/z;", False, False, False),
    ("x.y/z<", False, False, False),
    ("x.y/z=", False, False, True),
    ("x.y/z>", False, False, False),
    ("x.y/z?", False, False, False),
    ("x.y/z@", False, False, True),
    ("x.y/z[", False, False, True),
    ("x.y/z\\", False, False, False),
    ("x.y/z]", False, False, True),
    ("x.y/z^", False, False, True),
    ("x.y/z_", True, True, True),
    ("x.y/z`", False, False, False),
    ("x.y/z{", False, False, True),
    ("x.y/z}", False, False, True),
    ("x.y/z~", True, True, True),
    ("x.y/x.foo", True, True, True),
    ("x.y/aux.foo", False, False, False),
    ("x.y/prn", False, False, False),
    ("x.y/prn2", True, True, True),
    ("x.y/com", True, True, True),
    ("x.y/com1", False, False, False),
    ("x.y/com1.txt", False, False, False),
    ("x.y/calm1", True, True, True),
    ("x.y/z~0", False, False, True),
    ("x.y/z~09", False, False, True),
    ("x.y/z09", True, True, True),
    ("x.y/z09~", True, True, True),
    ("x.y/z09~09z", True, True, True),
    ("x.y/z09~09z~09", False, False, True),
    ("github.com/!123/logrus", False, False, True),
    ("github.com/user/unicode/испытание", False, False, True),
    ("../x", False, False, False),
    ("./y", False, False, False),
    ("x:y", False, False, False),
    ("\\temp\\foo", False, False, False),
    (".gitignore", False, True, True),
    (".github/ISSUE_TEMPLATE", False, True, True),
    ("x☺y", False, False, False),
    # Cases added for Entrepôt.
    ("gopkg.in/yaml.v2", True, True, True),
    ("gopkg.in/yaml", False, True, True),
    ("gopkg.in/yaml.v02", False, True, True),
    ("example.com/foo/v2", True, True, True),
    ("example.com/foo/v1", False, True, True),
    ("example.com/foo/v02", False, True, True),
    ("example.com/../foo", False, False, False),
    ("example.com/foo/", False, False, False),
    ("example.com/Foo/Bar", True, True, True),
    ("example.com/foo/NUL", False, False, False),
    ("example.com/foo\x00bar", False, False, False),
]

PATH_IDS = [repr(t[0]) for t in CHECK_PATH_TESTS]


@pytest.mark.parametrize(("path", "ok", "import_ok", "file_ok"), CHECK_PATH_TESTS, ids=PATH_IDS)
def test_check_path_table(path: str, ok: bool, import_ok: bool, file_ok: bool) -> None:
    for check, want in (
        (check_path, ok),
        (check_import_path, import_ok),
        (check_file_path, file_ok),
    ):
        if want:
            check(path)
        else:
            with pytest.raises(InvalidRequestError):
                check(path)


@pytest.mark.parametrize(
    ("check", "path", "message"),
    [
        (check_path, "x", 'malformed module path "x": missing dot in first path element'),
        (check_path, "", 'malformed module path "": empty string'),
        (check_path, "/x.y/z", 'malformed module path "/x.y/z": empty path element'),
        (check_path, "-x.y/z", 'malformed module path "-x.y/z": leading dash'),
        (check_path, "x.y/z/", 'malformed module path "x.y/z/": trailing slash'),
        (check_path, "x.y//z", 'malformed module path "x.y//z": double slash'),
        (check_path, "x.y/.z", 'malformed module path "x.y/.z": leading dot in path element'),
        (check_path, "x./z", 'malformed module path "x./z": trailing dot in path element'),
        (
            check_path,
            "x.y/z/../../w",
            'malformed module path "x.y/z/../../w": invalid path element ".."',
        ),
        (
            check_path,
            "X.y/z",
            "malformed module path \"X.y/z\": invalid char 'X' in first path element",
        ),
        (check_path, "x.y/z+", "malformed module path \"x.y/z+\": invalid char '+'"),
        (
            check_path,
            "x☺y",
            "malformed module path \"x\\u263ay\": invalid char '\\u263a'",
        ),
        (check_path, "x.y/\udcffz", 'malformed module path "x.y/\\xffz": invalid UTF-8'),
        (
            check_path,
            "example.com/foo/v1",
            'malformed module path "example.com/foo/v1": invalid version',
        ),
        (
            check_path,
            "gopkg.in/yaml",
            'malformed module path "gopkg.in/yaml": invalid version',
        ),
        (
            check_path,
            "x.y/z~1",
            'malformed module path "x.y/z~1": trailing tilde and digits in path element',
        ),
        (
            check_import_path,
            "x.y/Aux",
            'malformed import path "x.y/Aux": "Aux" disallowed as path element component '
            "on Windows",
        ),
        (
            check_file_path,
            "x.y/com1.txt",
            'malformed file path "x.y/com1.txt": "com1" disallowed as path element component '
            "on Windows",
        ),
        (check_file_path, "a/b*", "malformed file path \"a/b*\": invalid char '*'"),
        (check_file_path, "a\nb", "malformed file path \"a\\nb\": invalid char '\\n'"),
        (check_file_path, "a/b'", "malformed file path \"a/b'\": invalid char '\\''"),
        (check_file_path, 'a/b"', 'malformed file path "a/b\\"": invalid char \'"\''),
    ],
)
def test_check_messages(check: Callable[[str], None], path: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        check(path)
    assert exc.value.message == message
    assert exc.value.message.isprintable()
    assert exc.value.message.isascii()


# module_test.go splitPathVersionTests: (prefix, path major)
SPLIT_PATH_VERSION_TESTS = [
    ("x.y/z", ""),
    ("x.y/z", "/v2"),
    ("x.y/z", "/v3"),
    ("x.y/v", ""),
    ("gopkg.in/yaml", ".v0"),
    ("gopkg.in/yaml", ".v1"),
    ("gopkg.in/yaml", ".v2"),
    ("gopkg.in/yaml", ".v3"),
    ("gopkg.in/yaml", ".v1-unstable"),
    ("example.com/foo", "/v10"),
]


@pytest.mark.parametrize(("prefix", "path_major"), SPLIT_PATH_VERSION_TESTS)
def test_split_path_version(prefix: str, path_major: str) -> None:
    assert split_path_version(prefix + path_major) == (prefix, path_major, True)


@pytest.mark.parametrize(
    "path",
    [
        "example.com/foo/v1",
        "example.com/foo/v0",
        "example.com/foo/v02",
        "example.com/foo/v2.0",
        "gopkg.in/yaml",
        "gopkg.in/yaml.v01",
    ],
)
def test_split_path_version_not_ok(path: str) -> None:
    assert split_path_version(path) == (path, "", False)


def test_split_path_version_adds_up() -> None:
    for path, *_ in CHECK_PATH_TESTS:
        prefix, path_major, _ok = split_path_version(path)
        assert prefix + path_major == path


# module_test.go escapeTests: (path, escaped)
ESCAPE_TESTS = [
    (
        "ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789",
        "ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789",
    ),
    ("github.com/GoogleCloudPlatform/omega", "github.com/!google!cloud!platform/omega"),
    ("github.com/Azure/azure-sdk-for-go", "github.com/!azure/azure-sdk-for-go"),
    ("github.com/Sirupsen/logrus", "github.com/!sirupsen/logrus"),
    ("example.com/A", "example.com/!a"),
    ("gopkg.in/Yaml.v2", "gopkg.in/!yaml.v2"),
]

# module_test.go badUnescape, plus Entrepôt's cases.
BAD_UNESCAPE = [
    "github.com/GoogleCloudPlatform/omega",
    "github.com/!google!cloud!platform!/omega",
    "github.com/!0google!cloud!platform/omega",
    "github.com/!_google!cloud!platform/omega",
    "github.com/!!google!cloud!platform/omega",
    "",
    "example.com/a!",
    "example.com/!A",
    "example.com/caf\u00e9",
    "example.com/!\u00e9",
]


@pytest.mark.parametrize(("path", "escaped"), ESCAPE_TESTS)
def test_escape_path(path: str, escaped: str) -> None:
    assert escape_path(path) == escaped
    assert unescape_path(escaped) == path


INVALID_MODULE_PATHS = [t[0] for t in CHECK_PATH_TESTS if not t[1]]


@pytest.mark.parametrize("path", INVALID_MODULE_PATHS, ids=[repr(p) for p in INVALID_MODULE_PATHS])
def test_escape_and_unescape_reject_invalid_paths(path: str) -> None:
    with pytest.raises(InvalidRequestError):
        escape_path(path)
    with pytest.raises(InvalidRequestError):
        unescape_path(path)


@pytest.mark.parametrize("bad", BAD_UNESCAPE)
def test_unescape_path_rejects_bad_escaping(bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        unescape_path(bad)


def test_unescape_path_messages() -> None:
    with pytest.raises(InvalidRequestError) as exc:
        unescape_path("github.com/!!google")
    assert exc.value.message == 'invalid escaped module path "github.com/!!google"'
    with pytest.raises(InvalidRequestError) as exc:
        unescape_path("!example.com/x")
    assert exc.value.message == (
        'invalid escaped module path "!example.com/x": '
        "malformed module path \"Example.com/x\": invalid char 'E' in first path element"
    )


@pytest.mark.parametrize(
    ("version", "escaped"),
    [
        ("v1.0.0", "v1.0.0"),
        ("v1.0.0-RC1", "v1.0.0-!r!c1"),
        ("v2.0.0+incompatible", "v2.0.0+incompatible"),
        ("master", "master"),
        ("Branch_X", "!branch_!x"),
        ("v0.0.0-20060102150405-abcdefABCDEF", "v0.0.0-20060102150405-abcdef!a!b!c!d!e!f"),
    ],
)
def test_escape_version(version: str, escaped: str) -> None:
    assert escape_version(version) == escaped
    assert unescape_version(escaped) == version


@pytest.mark.parametrize("version", ["", "v1!", "v1.0.0/x", "..", "v1.", "a*b", "a\u263ab"])
def test_escape_version_rejects(version: str) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        escape_version(version)
    assert exc.value.message.endswith("invalid: disallowed version string")


@pytest.mark.parametrize(
    ("escaped", "message"),
    [
        ("v1.0.0-RC1", 'invalid escaped version "v1.0.0-RC1"'),
        ("v1!", 'invalid escaped version "v1!"'),
        ("v1!0", 'invalid escaped version "v1!0"'),
        ("v1!!a", 'invalid escaped version "v1!!a"'),
        ("v\u00e9", 'invalid escaped version "v\\u00e9"'),
        ("v1.0.0/x", "invalid escaped version \"v1.0.0/x\": invalid char '/'"),
        ("", 'invalid escaped version "": empty path element'),
        ("..", 'invalid escaped version "..": invalid path element ".."'),
        (
            "nul.!x",
            'invalid escaped version "nul.X": '
            '"nul" disallowed as path element component on Windows',
        ),
    ],
)
def test_unescape_version_rejects(escaped: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        unescape_version(escaped)
    assert exc.value.message == message


# semver_test.go tests: (input, canonical form or "" if invalid), in increasing precedence.
SEMVER_TESTS = [
    ("bad", ""),
    ("v1-alpha.beta.gamma", ""),
    ("v1-pre", ""),
    ("v1+meta", ""),
    ("v1-pre+meta", ""),
    ("v1.2-pre", ""),
    ("v1.2+meta", ""),
    ("v1.2-pre+meta", ""),
    ("v1.0.0-alpha", "v1.0.0-alpha"),
    ("v1.0.0-alpha.1", "v1.0.0-alpha.1"),
    ("v1.0.0-alpha.beta", "v1.0.0-alpha.beta"),
    ("v1.0.0-beta", "v1.0.0-beta"),
    ("v1.0.0-beta.2", "v1.0.0-beta.2"),
    ("v1.0.0-beta.11", "v1.0.0-beta.11"),
    ("v1.0.0-rc.1", "v1.0.0-rc.1"),
    ("v1", "v1.0.0"),
    ("v1.0", "v1.0.0"),
    ("v1.0.0", "v1.0.0"),
    ("v1.2", "v1.2.0"),
    ("v1.2.0", "v1.2.0"),
    ("v1.2.3-456", "v1.2.3-456"),
    ("v1.2.3-456.789", "v1.2.3-456.789"),
    ("v1.2.3-456-789", "v1.2.3-456-789"),
    ("v1.2.3-456a", "v1.2.3-456a"),
    ("v1.2.3-pre", "v1.2.3-pre"),
    ("v1.2.3-pre+meta", "v1.2.3-pre"),
    ("v1.2.3-pre.1", "v1.2.3-pre.1"),
    ("v1.2.3-zzz", "v1.2.3-zzz"),
    ("v1.2.3", "v1.2.3"),
    ("v1.2.3+meta", "v1.2.3"),
    ("v1.2.3+meta-pre", "v1.2.3"),
    ("v1.2.3+meta-pre.sha.256a", "v1.2.3"),
]


@pytest.mark.parametrize(("v", "want"), SEMVER_TESTS)
def test_semver_accessors(v: str, want: str) -> None:
    assert is_valid(v) == (want != "")
    assert canonical(v) == want
    assert major(v) == (want.split(".", 1)[0] if want else "")
    assert prerelease(v) == (want[want.index("-") :] if "-" in want else "")
    assert build(v) == (v[v.index("+") :] if want and "+" in v else "")


def test_semver_compare_table() -> None:
    for i, (vi, ci) in enumerate(SEMVER_TESTS):
        for j, (vj, cj) in enumerate(SEMVER_TESTS):
            want = 0 if ci == cj else (-1 if i < j else 1)
            assert compare(vi, vj) == want, (vi, vj)


@pytest.mark.parametrize(
    ("v", "w", "want"),
    [
        ("v1", "v1", 0),
        ("v2", "v1", 1),
        ("v1", "v2", -1),
        ("v1.19", "v1.2", 1),
        ("v1.2.10", "v1.2.9", 1),
        ("v10.0.0", "v9.9.9", 1),
        ("v1.0.0-beta.11", "v1.0.0-beta.2", 1),
        ("v1.0.0-1", "v1.0.0-a", -1),
        ("v1.0.0-a.b", "v1.0.0-a", 1),
        ("v1.0.0+a", "v1.0.0+b", 0),
        ("v2.0.0+incompatible", "v2.0.0", 0),
        ("bad", "worse", 0),
        ("bad", "v0.0.0", -1),
    ],
)
def test_compare_cases(v: str, w: str, want: int) -> None:
    assert compare(v, w) == want
    assert compare(w, v) == -want


def test_sort_versions_matches_go_order() -> None:
    versions = [v for v, _ in SEMVER_TESTS]
    shuffled = versions[:]
    random.Random(1).shuffle(shuffled)
    got = sort_versions(shuffled)
    # Sorted by precedence, ties broken by string order; invalid ones (all equal) come first.
    for a, b in itertools.pairwise(got):
        c = compare(a, b)
        assert c < 0 or (c == 0 and a <= b), (a, b)
    assert got[:8] == sorted(v for v, c in SEMVER_TESTS if not c)
    assert got[-4:] == ["v1.2.3", "v1.2.3+meta", "v1.2.3+meta-pre", "v1.2.3+meta-pre.sha.256a"]


def test_sort_versions_accepts_any_iterable() -> None:
    assert sort_versions(iter(["v1.10.0", "v1.9.0", "v1.9.0-rc.1", "x"])) == [
        "x",
        "v1.9.0-rc.1",
        "v1.9.0",
        "v1.10.0",
    ]


@pytest.mark.parametrize(
    ("v", "want"),
    [
        ("v17.0.0+incompatible", "v17.0.0+incompatible"),
        ("v2.0+incompatible", ""),
        ("v1.2.3+meta", "v1.2.3"),
        ("v1.2", "v1.2.0"),
        ("v1.2.3-pre+incompatible", "v1.2.3-pre+incompatible"),
        ("1.2.3", ""),
    ],
)
def test_canonical_version(v: str, want: str) -> None:
    assert canonical_version(v) == want


# cmd/go modfetch/pseudo_test.go pseudoTests: (older tag, pseudo-version).
PSEUDO_TESTS = [
    ("", "v0.0.0-20060102150405-hash"),
    ("", "v1.0.0-20060102150405-hash"),
    ("", "v2.0.0-20060102150405-hash"),
    ("v0.0.0", "v0.0.1-0.20060102150405-hash"),
    ("v1.2.3", "v1.2.4-0.20060102150405-hash"),
    ("v1.2.99999999999999999", "v1.2.100000000000000000-0.20060102150405-hash"),
    ("v1.2.3-pre", "v1.2.3-pre.0.20060102150405-hash"),
    ("v1.3.0-pre", "v1.3.0-pre.0.20060102150405-hash"),
    ("v0.0.0--", "v0.0.0--.0.20060102150405-hash"),
    ("v1.0.0+metadata", "v1.0.1-0.20060102150405-hash+metadata"),
    ("v2.0.0+incompatible", "v2.0.1-0.20060102150405-hash+incompatible"),
    ("v2.3.0-pre+incompatible", "v2.3.0-pre.0.20060102150405-hash+incompatible"),
]


@pytest.mark.parametrize(("older", "pseudo"), PSEUDO_TESTS)
def test_is_pseudo_version_table(older: str, pseudo: str) -> None:
    assert is_pseudo_version(pseudo)
    assert not is_pseudo_version(older)


@pytest.mark.parametrize(
    ("v", "want"),
    [
        # The three forms, with a real 12-digit revision.
        ("v0.0.0-20191109021931-daa7c04131f5", True),
        ("v1.2.4-0.20191109021931-daa7c04131f5", True),
        ("v1.2.3-rc.1.0.20191109021931-daa7c04131f5", True),
        ("v0.0.0-20191109021931-daa7c04131f5+incompatible", True),
        ("v1.2.3", False),
        ("v1.2.3-rc.1", False),
        ("v2.0.0+incompatible", False),
        ("v0.0.0-20191109021931", False),
        ("v0.0.0-2019110902193-daa7c04131f5", False),
        ("v1.2.3-pre.20191109021931-daa7c04131f5", False),
        ("v1.2.4-0.2019110902193x-daa7c04131f5", False),
        ("v0.0.0-20191109021931-daa7c04131f5\n", False),
        ("0.0.0-20191109021931-daa7c04131f5", False),
        ("", False),
    ],
)
def test_is_pseudo_version_cases(v: str, want: bool) -> None:
    assert is_pseudo_version(v) is want


@pytest.mark.parametrize(
    ("versions", "want"),
    [
        ([], None),
        (["bad", "v1", "latest"], "v1"),
        (["v1.0.0", "v1.1.0-rc.1", "v1.0.1", "bad"], "v1.0.1"),
        (["v1.9.0", "v1.10.0", "v1.2.0"], "v1.10.0"),
        (["v1.1.0-rc.1", "v1.1.0-beta.2", "v1.1.0-rc.2"], "v1.1.0-rc.2"),
        (["v0.0.0-20191109021931-daa7c04131f5"], None),
        (["v0.1.0-alpha", "v0.1.1-0.20191109021931-daa7c04131f5"], "v0.1.0-alpha"),
        (["v1.0.0", "v1.0.0+meta"], "v1.0.0+meta"),
        (["v1.5.0", "v2.0.0+incompatible"], "v2.0.0+incompatible"),
        (iter(["v0.3.0", "v0.2.0"]), "v0.3.0"),
    ],
)
def test_latest_version(versions: Iterable[str], want: str | None) -> None:
    assert latest_version(versions) == want


# module_test.go TestMatchPrefixPatterns
@pytest.mark.parametrize(
    ("globs", "target", "want"),
    [
        ("", "rsc.io/quote", False),
        ("/", "rsc.io/quote", False),
        ("*/quote", "rsc.io/quote", True),
        ("*/quo", "rsc.io/quote", False),
        ("*/quo??", "rsc.io/quote", True),
        ("*/quo*", "rsc.io/quote", True),
        ("*quo*", "rsc.io/quote", False),
        ("rsc.io", "rsc.io/quote", True),
        ("*.io", "rsc.io/quote", True),
        ("rsc.io/", "rsc.io/quote", True),
        ("rsc", "rsc.io/quote", False),
        ("rsc*", "rsc.io/quote", True),
        ("rsc.io", "rsc.io/quote/v3", True),
        ("*/quote", "rsc.io/quote/v3", True),
        ("*/quote/", "rsc.io/quote/v3", True),
        ("*/quote/*", "rsc.io/quote/v3", True),
        ("*/quote/*/", "rsc.io/quote/v3", True),
        ("*/v3", "rsc.io/quote/v3", False),
        ("*/*/v3", "rsc.io/quote/v3", True),
        ("*/*/*", "rsc.io/quote/v3", True),
        ("*/*/*/", "rsc.io/quote/v3", True),
        ("*/*/*", "rsc.io/quote", False),
        ("*/*/*/", "rsc.io/quote", False),
        ("*/*/*,,", "rsc.io/quote", False),
        ("*/*/*,,*/quote", "rsc.io/quote", True),
        (",,*/quote", "rsc.io/quote", True),
        # Entrepôt's cases: classes, and '*' not crossing '/' (unlike fnmatch).
        ("*", "rsc.io/quote", True),
        ("rsc.io/q[a-z]ote", "rsc.io/quote", True),
        ("rsc.io/q[^u]ote", "rsc.io/quote", False),
        ("rsc.io/q[!u]ote", "rsc.io/quote", True),  # '!' is a member, not a negation
        ("rsc.io/q[!u]ote", "rsc.io/q!ote", True),
        ("rsc.io/q[!u]ote", "rsc.io/qxote", False),
        ("rsc*quote", "rsc.io/quote", False),
        ("corp.example.com,*.internal", "git.internal/team/repo", True),
        ("corp.example.com,*.internal", "github.com/corp.example.com", False),
    ],
)
def test_match_prefix_patterns(globs: str, target: str, want: bool) -> None:
    assert match_prefix_patterns(globs, target) is want


@pytest.mark.parametrize(
    "globs", ["[", "a[", "\\", "[a-b-c]", "[]a]", "[-]", "[x-]", "rsc.io,[^", "rsc.io/a\\"]
)
def test_match_prefix_patterns_rejects_bad_patterns(globs: str) -> None:
    # Checked for every pattern, even when an earlier one matches or the target is too short.
    with pytest.raises(ValueError, match=r"^syntax error in pattern "):
        match_prefix_patterns("rsc.io," + globs, "rsc.io/quote")


# src/path/match_test.go matchTests: (pattern, name, matched); None means ErrBadPattern.
PATH_MATCH_TESTS: list[tuple[str, str, bool | None]] = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-\u03b6]*", "\u03b1", True),  # zeta, alpha
    ("*[a-\u03b6]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("[]a]", "]", None),
    ("[-]", "-", None),
    ("[x-]", "x", None),
    ("[x-]", "-", None),
    ("[x-]", "z", None),
    ("[-x]", "x", None),
    ("[-x]", "-", None),
    ("[-x]", "a", None),
    ("\\", "a", None),
    ("[a-b-c]", "a", None),
    ("[", "a", None),
    ("[^", "a", None),
    ("[^bc", "a", None),
    ("a[", "a", None),
    ("a[", "ab", None),
    ("a[", "x", None),
    ("a/b[", "x", None),
    ("*x", "xxx", True),
]


@pytest.mark.parametrize(("pattern", "name", "want"), PATH_MATCH_TESTS)
def test_path_match_port(pattern: str, name: str, want: bool | None) -> None:
    if want is None:
        with pytest.raises(ValueError, match=r"^syntax error in pattern$"):
            _path_match(pattern, name)
    else:
        assert _path_match(pattern, name) is want


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

_first_elem = st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}\.[a-z]{2,6}", fullmatch=True)
_elem = st.from_regex(r"[A-Za-z0-9_~-]{1,10}(\.[A-Za-z0-9_~-]{1,10})?", fullmatch=True)
_module_paths = st.builds(
    lambda first, rest: "/".join([first, *rest]), _first_elem, st.lists(_elem, max_size=4)
)


def _is_module_path(p: str) -> bool:
    try:
        check_path(p)
    except InvalidRequestError:
        return False
    return True


@given(_module_paths)
def test_escape_unescape_round_trip(path: str) -> None:
    assume(_is_module_path(path))
    escaped = escape_path(path)
    assert not re.search(r"[A-Z]", escaped)
    assert escaped.lower() == escaped
    assert escaped.replace("!", "") == path.lower()
    assert unescape_path(escaped) == path


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20))
def test_escape_version_round_trip(v: str) -> None:
    try:
        escaped = escape_version(v)
    except InvalidRequestError:
        return
    assert escaped.lower() == escaped
    assert unescape_version(escaped) == v


@given(st.text(max_size=15), st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), st.text(max_size=15))
def test_unescape_never_accepts_raw_upper_case(before: str, upper: str, after: str) -> None:
    escaped = before + upper + after
    with pytest.raises(InvalidRequestError):
        unescape_path(escaped)
    with pytest.raises(InvalidRequestError):
        unescape_version(escaped)


_versions = st.one_of(
    st.from_regex(
        r"v(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})"
        r"(-[0-9A-Za-z-]{1,4}(\.[0-9A-Za-z-]{1,4}){0,2})?(\+[0-9A-Za-z-]{1,4})?)?)?",
        fullmatch=True,
    ),
    st.text(max_size=12),
)


@given(_versions, _versions)
def test_compare_is_antisymmetric(a: str, b: str) -> None:
    assert compare(a, b) == -compare(b, a)
    assert compare(a, a) == 0


@given(_versions)
def test_canonical_compares_equal(v: str) -> None:
    c = canonical(v)
    if is_valid(v):
        assert is_valid(c)
        assert compare(v, c) == 0
        assert canonical(c) == c
        assert build(c) == ""
    else:
        assert c == ""


@given(st.lists(_versions, max_size=8))
def test_sort_versions_is_sorted_permutation(vs: list[str]) -> None:
    got = sort_versions(vs)
    assert sorted(got) == sorted(vs)
    for a, b in itertools.pairwise(got):
        assert compare(a, b) <= 0
