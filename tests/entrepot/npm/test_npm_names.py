"""npm names, request paths, storage keys and tarball URLs (entrepot.npm.names).

The name tables come from validate-npm-package-name's own tests; the differential test runs
the copy npm bundles on thousands of generated names and demands the same errors and warnings.
"""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from npm_oracle import run as run_node

from entrepot.errors import InvalidRequestError, NotFoundError
from entrepot.npm.names import (
    MAX_KEY_ELEMENT_BYTES,
    NpmRequest,
    check_name,
    check_tag,
    check_version_text,
    document_key,
    escape,
    name_problems,
    package_prefix,
    parse_path,
    tarball_filename,
    tarball_key,
    tarball_url,
    unescape,
    url_path,
)
from entrepot.storage.base import check_key

# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

LONG = "ifyouwanttogetthesumoftwonumberswherethosetwonumbersarechosenbyfindingthelargestoftwooutofthreenumbersandsquaringthemwhichismultiplyingthembyitselfthenyoushouldinputthreenumbersintothisfunctionanditwilldothatforyou-"  # noqa: E501


@pytest.mark.parametrize(
    ("name", "errors", "warnings"),
    [
        ("some-package", [], []),
        ("example.com", [], []),
        ("under_score", [], []),
        ("period.js", [], []),
        ("123numeric", [], []),
        ("@npm/thingy", [], []),
        (
            "@npm-zors/money!time.js",
            [],
            ['name can no longer contain special characters ("~\'!()*")'],
        ),
        ("crazy!", [], ['name can no longer contain special characters ("~\'!()*")']),
        ("CAPITAL-LETTERS", [], ["name can no longer contain capital letters"]),
        ("JSONStream", [], ["name can no longer contain capital letters"]),
        ("http", [], ["http is a core module name"]),
        ("events", [], ["events is a core module name"]),
        ("process", [], ["process is a core module name"]),
        (LONG, [], ["name can no longer contain more than 214 characters"]),
        ("", ["name length must be greater than zero"], []),
        (".start-with-period", ["name cannot start with a period"], []),
        ("-start-with-hyphen", ["name cannot start with a hyphen"], []),
        ("_start-with-underscore", ["name cannot start with an underscore"], []),
        ("contain:colons", ["name can only contain URL-friendly characters"], []),
        (
            " leading-space",
            [
                "name cannot contain leading or trailing spaces",
                "name can only contain URL-friendly characters",
            ],
            [],
        ),
        ("s/l/a/s/h/e/s", ["name can only contain URL-friendly characters"], []),
        ("node_modules", ["node_modules is not a valid package name"], []),
        ("favicon.ico", ["favicon.ico is not a valid package name"], []),
        ("@scope/.dot", ["name cannot start with a period"], []),
        ("@/nameless", ["name can only contain URL-friendly characters"], []),
        ("@scope-only", ["name can only contain URL-friendly characters"], []),
        ("@scope/", ["name can only contain URL-friendly characters"], []),
        ("ünicode", ["name can only contain URL-friendly characters"], []),
    ],
)
def test_name_problems_match_npms_validator(
    name: str, errors: list[str], warnings: list[str]
) -> None:
    assert name_problems(name) == (errors, warnings)


def test_legacy_names_are_served_but_not_valid_for_new_packages() -> None:
    for legacy in ("JSONStream", "events", "crazy!", "@npm-zors/money!time.js"):
        check_name(legacy)
        with pytest.raises(InvalidRequestError, match=r"no longer|core module"):
            check_name(legacy, new=True)
    check_name("@scope/fine-name", new=True)


@pytest.mark.parametrize("name", ["", ".x", "_x", "a b", "node_modules", "a/b", "@a/", LONG])
def test_invalid_names_are_refused_with_a_clear_message(name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_name(name)
    message = str(caught.value)
    assert message.startswith("invalid package name ")
    assert message.isprintable()
    assert len(message) < 300


def _generated_names(count: int, seed: int = 12) -> list[str]:
    """Names near every rule's edge: scopes, special characters, capitals, leading marks,
    spaces, slashes, non-ASCII, core module names, lengths around 214."""
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase * 3 + string.ascii_uppercase + string.digits
    marks = "-_.~'!()*@/: %é\t"
    out = ["http", "HTTP", "Buffer", "node_modules", "Favicon.ico", "node:test", "fs/promises"]
    for _ in range(count):
        length = rng.choice([1, 2, 5, 12, 40, 213, 214, 215])
        chars = [
            rng.choice(marks) if rng.random() < 0.08 else rng.choice(alphabet)
            for _ in range(length)
        ]
        name = "".join(chars)
        if rng.random() < 0.3:
            name = "@" + name[: length // 2] + "/" + name[length // 2 :]
        out.append(name)
    return out


def test_name_problems_agree_with_npms_validator_on_generated_names() -> None:
    names = _generated_names(3000)
    results = run_node(
        "output = input.map(n => lib['validate-npm-package-name'](n))",
        names,
        "validate-npm-package-name",
    )
    mismatches = []
    for name, result in zip(names, results, strict=True):
        ours = name_problems(name)
        theirs = (result.get("errors", []), result.get("warnings", []))
        if ours != theirs:
            mismatches.append((name, ours, theirs))
    assert mismatches == []
    # The corpus does reach every verdict.
    assert any(r["validForNewPackages"] for r in results)
    assert any(r["validForOldPackages"] and not r["validForNewPackages"] for r in results)
    assert any(not r["validForOldPackages"] for r in results)


# --------------------------------------------------------------------------------------------
# Request paths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/lodash", NpmRequest("packument", "lodash")),
        ("/@types/node", NpmRequest("packument", "@types/node")),
        ("/@types%2fnode", NpmRequest("packument", "@types/node")),
        ("/@types%2Fnode", NpmRequest("packument", "@types/node")),
        ("/%40types%2fnode", NpmRequest("packument", "@types/node")),
        ("/JSONStream", NpmRequest("packument", "JSONStream")),
        ("/lodash/4.17.21", NpmRequest("version", "lodash", version="4.17.21")),
        ("/lodash/1.0.0-RC.1+b.2", NpmRequest("version", "lodash", version="1.0.0-RC.1+b.2")),
        ("/lodash/latest", NpmRequest("version", "lodash", tag="latest")),
        ("/lodash/1.x", NpmRequest("version", "lodash", tag="1.x")),
        ("/@types%2fnode/next", NpmRequest("version", "@types/node", tag="next")),
        ("/@types/node/20.1.0", NpmRequest("version", "@types/node", version="20.1.0")),
        (
            "/lodash/-/lodash-4.17.21.tgz",
            NpmRequest("tarball", "lodash", version="4.17.21", filename="lodash-4.17.21.tgz"),
        ),
        (
            "/@types/node/-/node-20.1.0.tgz",
            NpmRequest("tarball", "@types/node", version="20.1.0", filename="node-20.1.0.tgz"),
        ),
        (
            "/@types%2fnode/-/node-20.1.0.tgz",
            NpmRequest("tarball", "@types/node", version="20.1.0", filename="node-20.1.0.tgz"),
        ),
        (
            "/@types/node/-/@types/node-20.1.0.tgz",
            NpmRequest("tarball", "@types/node", version="20.1.0", filename="node-20.1.0.tgz"),
        ),
        (
            "/@types%2fnode/-/@types%2fnode-20.1.0.tgz",
            NpmRequest("tarball", "@types/node", version="20.1.0", filename="node-20.1.0.tgz"),
        ),
        (
            "/a-b/-/a-b-1.0.0-beta-2.tgz",
            NpmRequest("tarball", "a-b", version="1.0.0-beta-2", filename="a-b-1.0.0-beta-2.tgz"),
        ),
        (
            "/JSONStream/-/JSONStream-1.3.5.tgz",
            NpmRequest("tarball", "JSONStream", version="1.3.5", filename="JSONStream-1.3.5.tgz"),
        ),
    ],
)
def test_valid_paths(path: str, expected: NpmRequest) -> None:
    assert parse_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "lodash",
        "/",
        "//lodash",
        "/lodash/",
        "/lodash//1.0.0",
        "/../lodash",
        "/lodash/..",
        "/lodash/../x",
        "/%2e%2e/x",
        "/lodash/%2e%2e",
        "/lodash/%2F..%2F..%2Fetc",
        "/./lodash",
        "/-/ping",
        "/-/v1/search",
        "/.hidden",
        "/_private",
        "/node_modules",
        "/Lo Dash",
        "/lo%20dash",
        "/%C3%28",  # not UTF-8
        "/lodash%00",
        "/@scope",
        "/@scope/",
        "/@scope%2f",
        "/@/name",
        "/@scope/.name",
        "/lodash/a/b",
        "/lodash/.tag",
        "/lodash/a%20tag",
        "/lodash/-",
        "/lodash/-/lodash-1.0.0.tar",
        "/lodash/-/lodash-.tgz",
        "/lodash/-/lodash.tgz",
        "/lodash/-/other-1.0.0.tgz",
        "/lodash/-/lodash-v1.0.0.tgz",
        "/lodash/-/lodash-1.0.0/x.tgz",
        "/lodash/-/@x/lodash-1.0.0.tgz",
        "/@types/node/-/@other/node-1.0.0.tgz",
        "/@types/node/-/types-node-1.0.0.tgz",
        "/lodash/-/lodash-1.0.0.tgz/-rev/1-abc",
        "/lodash/" + "1" * 300,
    ],
)
def test_malformed_paths_are_refused_with_a_400(path: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_path(path)
    message = str(caught.value)
    assert message.isprintable()
    assert "\n" not in message


# Names as the registry holds them: optional scope, URL-safe, not starting with . _ -
_FIRST = string.ascii_lowercase + string.digits
_REST = string.ascii_lowercase + string.digits + "-._"
_part = st.builds(lambda a, b: a + b, st.sampled_from(_FIRST), st.text(_REST, max_size=20))
names_st = st.one_of(_part, st.builds(lambda s, n: f"@{s}/{n}", _part, _part)).filter(
    lambda n: name_problems(n) == ([], [])
)
_ident = st.from_regex(r"(0|[1-9][0-9]{0,3}|[0-9]*[A-Za-z-][0-9A-Za-z-]{0,5})", fullmatch=True)
versions_st = st.builds(
    lambda a, b, c, pre, build: (
        f"{a}.{b}.{c}"
        + (("-" + ".".join(pre)) if pre else "")
        + (("+" + ".".join(build)) if build else "")
    ),
    st.integers(0, 10**6),
    st.integers(0, 999),
    st.integers(0, 999),
    st.lists(_ident, max_size=3),
    st.lists(st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True), max_size=2),
)


@given(names_st)
def test_every_spelling_of_a_name_parses_to_it(name: str) -> None:
    spellings = {url_path(name), "/" + name, "/" + name.replace("/", "%2F")}
    for path in spellings:
        assert parse_path(path) == NpmRequest("packument", name)


@given(names_st, versions_st)
def test_tarball_urls_round_trip(name: str, version: str) -> None:
    base = "http://127.0.0.1:8080/npm"
    url = tarball_url(base + "/", name, version)
    assert url == tarball_url(base, name, version)
    path = url[len(base) :]
    expected = NpmRequest(
        "tarball", name, version=version, filename=tarball_filename(name, version)
    )
    assert parse_path(path) == expected
    assert parse_path(path.replace(name, url_path(name)[1:], 1)) == expected
    assert parse_path(f"{url_path(name)}/{version}") == NpmRequest("version", name, version=version)


def test_tarball_url_is_yarns_conventional_url() -> None:
    base = "http://127.0.0.1:8080/npm/"
    assert tarball_url(base, "foo", "1.0.0") == "http://127.0.0.1:8080/npm/foo/-/foo-1.0.0.tgz"
    assert (
        tarball_url(base, "@scope/foo", "1.0.0")
        == "http://127.0.0.1:8080/npm/@scope/foo/-/foo-1.0.0.tgz"
    )


@pytest.mark.parametrize("tag", ["latest", "next", "v1-lts", "beta.2", "a_b~c"])
def test_valid_tags(tag: str) -> None:
    check_tag(tag)


@pytest.mark.parametrize("tag", ["", ".", "..", ".x", "a/b", "a b", "ä", "t" * 300])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(InvalidRequestError, match="invalid dist-tag"):
        check_tag(tag)


@pytest.mark.parametrize("version", ["", "v1.0.0", ".1", "-1", "1.0.0/x", "1.0.0 ", "1" * 300])
def test_invalid_version_text(version: str) -> None:
    with pytest.raises(InvalidRequestError, match="invalid version"):
        check_version_text(version)


# --------------------------------------------------------------------------------------------
# Storage keys
# --------------------------------------------------------------------------------------------


def test_storage_keys() -> None:
    assert package_prefix("lodash") == "npm/lodash"
    assert package_prefix("@types/node") == "npm/@types/node"
    assert tarball_key("lodash", "4.17.21") == "npm/lodash/-/4.17.21.tgz"
    assert tarball_key("@types/node", "20.1.0") == "npm/@types/node/-/20.1.0.tgz"
    assert document_key("@types/node", "full.json.gz") == "npm/@types/node/packument/full.json.gz"
    assert tarball_key("JSONStream", "1.0.0-RC1") == "npm/!j!s!o!n!stream/-/1.0.0-!r!c1.tgz"
    assert package_prefix("crazy!") == "npm/crazy!!"


def test_keys_of_names_differing_in_case_differ_on_a_case_insensitive_filesystem() -> None:
    pairs = [("JSONStream", "jsonstream"), ("Crazy", "crazy"), ("a!b", "A")]
    for a, b in pairs:
        assert package_prefix(a).lower() != package_prefix(b).lower()
    assert tarball_key("x", "1.0.0-RC1").lower() != tarball_key("x", "1.0.0-rc1").lower()


@given(names_st, versions_st)
def test_keys_are_valid_storage_keys(name: str, version: str) -> None:
    for key in (tarball_key(name, version), document_key(name, "index.json")):
        check_key(key)
        assert key.startswith(package_prefix(name) + "/")
        assert key == key.lower() or "!" in key


@given(st.text(string.ascii_letters + string.digits + "-._~'!()*@", max_size=30))
def test_escape_is_one_to_one_and_lower_case(text: str) -> None:
    escaped = escape(text)
    assert not any("A" <= c <= "Z" for c in escaped)
    assert unescape(escaped) == text


@given(
    st.text(string.ascii_letters + "!", max_size=12),
    st.text(string.ascii_letters + "!", max_size=12),
)
def test_escape_never_merges_two_texts(a: str, b: str) -> None:
    assume(a != b)
    assert escape(a) != escape(b)


@pytest.mark.parametrize("bad", ["A", "!", "x!", "!1", "!A"])
def test_unescape_refuses_what_escape_never_writes(bad: str) -> None:
    with pytest.raises(ValueError, match=r"escape|capital"):
        unescape(bad)


def test_keys_too_long_for_the_cache_are_a_404_not_a_500() -> None:
    long_legacy = "A" * 200  # a legal legacy name, 400 bytes once escaped
    with pytest.raises(NotFoundError, match="cannot be cached"):
        package_prefix(long_legacy)
    with pytest.raises(NotFoundError, match="cannot be cached"):
        tarball_key("x", "1.0.0-" + "A" * (MAX_KEY_ELEMENT_BYTES // 2))


def test_keys_refuse_invalid_names_and_versions() -> None:
    with pytest.raises(InvalidRequestError):
        package_prefix("../etc")
    with pytest.raises(InvalidRequestError):
        tarball_key("x", "../../etc/passwd")
