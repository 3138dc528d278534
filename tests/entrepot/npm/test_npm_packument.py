"""The documents computed from an upstream packument (entrepot.npm.packument)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrepot.errors import ForbiddenError, NotFoundError
from entrepot.npm.packument import (
    ABBREVIATED_FIELDS,
    BROTLI_QUALITY,
    Documents,
    Index,
    PackumentError,
    PackumentTooLargeError,
    Policy,
    Retag,
    _encoded,
    compute,
    etags_of,
    parse_time,
    policy_for,
    version_manifest,
)
from entrepot.npm.semver import parse, try_parse
from entrepot.web.responses import status_for

BASE = "http://127.0.0.1:8080/npm/"
UPSTREAM = "http://127.0.0.1:9999"
NOW = datetime(2026, 1, 10, tzinfo=UTC).timestamp()
DAY = 86_400.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def manifest(name: str, version: str, **extra: Any) -> dict[str, Any]:
    basename = name.rsplit("/", 1)[-1]
    return {
        "name": name,
        "version": version,
        "description": "déjà vu ✓",
        "dependencies": {"dep": "^1.0.0"},
        "devDependencies": {"tool": "^2.0.0"},
        "scripts": {"test": "node test.js"},
        "repository": {"type": "git", "url": "git+https://example.com/x.git"},
        "_npmUser": {"name": "someone", "email": "someone@example.com"},
        "dist": {
            "integrity": f"sha512-{version}AAAA==",
            "shasum": "0123456789abcdef0123456789abcdef01234567",
            "tarball": f"{UPSTREAM}/{name}/-/{basename}-{version}.tgz",
            "fileCount": 3,
            "unpackedSize": 1234,
            "signatures": [{"keyid": "SHA256:key", "sig": f"MEU{version}sig=="}],
            "attestations": {
                "url": f"{UPSTREAM}/-/npm/v1/attestations/{name}@{version}",
                "provenance": {"predicateType": "https://slsa.dev/provenance/v1"},
            },
        },
        **extra,
    }


def packument(
    name: str = "pkg",
    ages: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A packument whose versions were published ``ages[version]`` seconds before NOW."""
    ages = ages or {
        "1.0.0": 300 * DAY,
        "1.1.0": 200 * DAY,
        "2.0.0-rc.1": 20 * DAY,
        "2.0.0": 10 * DAY,
    }
    versions = {v: manifest(name, v) for v in ages}
    times = {"created": iso(NOW - 400 * DAY), "modified": iso(NOW - min(ages.values()))}
    times.update({v: iso(NOW - age) for v, age in ages.items()})
    return {
        "_id": name,
        "_rev": "12-abc",
        "name": name,
        "description": "a package",
        "dist-tags": tags or {"latest": "2.0.0", "next": "2.0.0-rc.1"},
        "versions": versions,
        "time": times,
        "maintainers": [{"name": "someone", "email": "someone@example.com"}],
        "readme": "# pkg\n\nünïcode stays UTF-8",
        "_attachments": {},
        **extra,
    }


def compact(doc: object) -> bytes:
    """JSON as the npm registry writes it."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def run(doc: dict[str, Any] | bytes, **kwargs: Any) -> Documents:
    raw = doc if isinstance(doc, bytes) else compact(doc)
    kwargs.setdefault("name", "pkg" if isinstance(doc, bytes) else doc.get("name", "pkg"))
    kwargs.setdefault("base_url", BASE)
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("max_bytes", 1 << 24)
    return compute(raw, **kwargs)


def body(docs: Documents, which: str = "full") -> dict[str, Any]:
    value: dict[str, Any] = json.loads(getattr(docs, which).body)
    return value


# --------------------------------------------------------------------------------------------
# The full document
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pkg", "@scope/pkg"])
def test_full_document_rewrites_only_tarball_urls(name: str) -> None:
    upstream = packument(name)
    docs = run(upstream)
    full = body(docs)
    basename = name.rsplit("/", 1)[-1]
    for version, m in full["versions"].items():
        assert m["dist"]["tarball"] == f"{BASE}{name}/-/{basename}-{version}.tgz"
        m["dist"]["tarball"] = upstream["versions"][version]["dist"]["tarball"]
    assert full == upstream
    assert list(full) == list(upstream)  # key order kept
    assert list(full["versions"]["1.0.0"]["dist"]) == list(upstream["versions"]["1.0.0"]["dist"])


def test_dist_fields_are_byte_identical_after_rewriting() -> None:
    upstream = packument()
    docs = run(upstream)
    for version, m in upstream["versions"].items():
        for field in ("integrity", "shasum", "signatures", "attestations"):
            encoded = json.dumps(m["dist"][field], separators=(",", ":")).encode()
            assert f'"{field}":'.encode() + encoded in docs.full.body, (version, field)
            assert f'"{field}":'.encode() + encoded in docs.abbreviated.body, (version, field)


def test_bodies_are_compact_utf8_json() -> None:
    docs = run(packument())
    for encoded in (docs.full, docs.abbreviated):
        assert encoded.body == compact(json.loads(encoded.body))
    assert "ünïcode".encode() in docs.full.body
    assert "ünïcode".encode() not in docs.abbreviated.body


def test_the_full_document_keeps_the_upstreams_bytes_of_every_value() -> None:
    """Spacing, escapes and number spellings inside values are the upstream's own."""
    upstream = packument()
    pretty = json.dumps(upstream, indent=2).encode()  # \u escapes, spaces, newlines
    quirky = pretty.replace(b'"sha512-1.0.0AAAA=="', b'"sha512-1.0.0AA\\/A=="').replace(
        b'"fileCount": 3', b'"fileCount": 3.0E0'
    )
    docs = run(quirky)
    assert b'"sha512-1.0.0AA\\/A=="' in docs.full.body
    assert b'"fileCount": 3.0E0' in docs.full.body
    assert b'"readme":"# pkg\\n\\n\\u00fcn\\u00efcode stays UTF-8"' in docs.full.body
    manifest = docs.manifest("1.0.0")
    original = pretty[pretty.index(b'"1.0.0": {') + len(b'"1.0.0": ') :]
    original = original[: original.index(b"\n    }") + len(b"\n    }")]
    rewritten = original.replace(
        f"{UPSTREAM}/pkg/-/pkg-1.0.0.tgz".encode(), f"{BASE}pkg/-/pkg-1.0.0.tgz".encode()
    )
    assert manifest == rewritten.replace(
        b'"sha512-1.0.0AAAA=="', b'"sha512-1.0.0AA\\/A=="'
    ).replace(b'"fileCount": 3', b'"fileCount": 3.0E0')
    assert json.loads(docs.full.body)["versions"]["1.0.0"]["dist"]["integrity"] == (
        "sha512-1.0.0AA/A=="
    )
    assert docs.abbreviated.body == compact(json.loads(docs.abbreviated.body))


def test_a_lone_surrogate_is_escaped_not_a_crash() -> None:
    raw = json.dumps(packument(readme="bad \ud800 half")).encode()
    full = run(raw).full.body
    assert b"\\ud800" in full
    assert json.loads(full)["readme"] == "bad \ud800 half"


def test_gzip_and_brotli_forms_and_strong_etags() -> None:
    docs = run(packument())
    for encoded in (docs.full, docs.abbreviated):
        assert gzip.decompress(encoded.gzip) == encoded.body
        assert brotli.decompress(encoded.br) == encoded.body
        etags = (encoded.etag, encoded.gzip_etag, encoded.br_etag)
        for etag in etags:
            assert etag.startswith('"')
            assert etag.endswith('"')
            assert not etag.startswith("W/")
        assert len(set(etags)) == 3  # one per encoding: each names exactly the bytes sent
    assert docs.full.etag != docs.abbreviated.etag
    again = run(packument())
    assert (again.full.etag, again.full.gzip) == (docs.full.etag, docs.full.gzip)
    assert (again.full.br_etag, again.full.br) == (docs.full.br_etag, docs.full.br)
    changed = run(packument(description="another"))
    assert changed.full.etag != docs.full.etag
    assert changed.abbreviated.etag == docs.abbreviated.etag  # not in the abbreviated form


def test_modified_is_the_upstreams_time() -> None:
    docs = run(packument())
    assert docs.modified == pytest.approx(NOW - 10 * DAY, abs=0.001)
    assert run(packument(time={})).modified is None


# --------------------------------------------------------------------------------------------
# The abbreviated document
# --------------------------------------------------------------------------------------------


def test_abbreviated_document_keeps_exactly_the_install_fields() -> None:
    upstream = packument()
    upstream["versions"]["2.0.0"].update(
        libc=["glibc"], os=["linux"], cpu=["x64"], engines={"node": ">=18"}, deprecated="old"
    )
    docs = run(upstream)
    full, corgi = body(docs), body(docs, "abbreviated")
    assert list(corgi) == ["name", "modified", "dist-tags", "versions", "time"]
    assert corgi["time"] == full["time"]
    assert corgi["modified"] == full["time"]["modified"]
    assert corgi["dist-tags"] == full["dist-tags"]
    for version, short in corgi["versions"].items():
        assert set(short) <= set(ABBREVIATED_FIELDS)
        for key, value in short.items():
            assert value == full["versions"][version][key]  # abbreviated ⊂ full
    assert corgi["versions"]["2.0.0"]["libc"] == ["glibc"]
    assert "scripts" not in corgi["versions"]["2.0.0"]
    assert "readme" not in corgi


def test_has_install_script_is_derived_from_scripts_as_the_registry_does() -> None:
    upstream = packument(ages={"1.0.0": DAY, "1.0.1": DAY, "1.0.2": DAY})
    upstream["versions"]["1.0.0"]["scripts"] = {"postinstall": "node build.js"}
    upstream["versions"]["1.0.2"]["hasInstallScript"] = False
    corgi = body(run(upstream, now=NOW), "abbreviated")["versions"]
    assert corgi["1.0.0"]["hasInstallScript"] is True
    assert "hasInstallScript" not in corgi["1.0.1"]
    assert corgi["1.0.2"]["hasInstallScript"] is False


# --------------------------------------------------------------------------------------------
# One version's manifest
# --------------------------------------------------------------------------------------------


def test_version_manifests_are_slices_of_the_full_document() -> None:
    docs = run(packument())
    full = body(docs)
    for version in full["versions"]:
        assert json.loads(docs.manifest(version)) == full["versions"][version]
    assert json.loads(docs.manifest("latest"))["version"] == "2.0.0"
    assert json.loads(docs.manifest("next"))["version"] == "2.0.0-rc.1"
    with pytest.raises(NotFoundError, match="no such version or dist-tag"):
        docs.manifest("3.0.0")
    with pytest.raises(NotFoundError):
        docs.manifest("beta")


def test_index_round_trips_and_serves_manifests_after_a_restart() -> None:
    docs = run(packument(), policy=Policy(blocked_versions=frozenset({"1.1.0"})))
    index = Index.from_bytes(docs.index.to_bytes())
    assert index.name == docs.index.name
    assert dict(index.dist_tags) == dict(docs.index.dist_tags)
    assert dict(index.versions) == dict(docs.index.versions)
    assert dict(index.hidden) == {"1.1.0": "blocked"}
    assert dict(index.etags) == {
        "full": docs.full.etag,
        "full.gz": docs.full.gzip_etag,
        "full.br": docs.full.br_etag,
        "abbreviated": docs.abbreviated.etag,
        "abbreviated.gz": docs.abbreviated.gzip_etag,
        "abbreviated.br": docs.abbreviated.br_etag,
    }
    assert index.modified == docs.modified == pytest.approx(NOW - 10 * DAY, abs=0.001)
    entry = index.versions["1.0.0"]
    assert entry.tarball == f"{UPSTREAM}/pkg/-/pkg-1.0.0.tgz"  # where to fetch it from
    assert entry.integrity == "sha512-1.0.0AAAA=="
    assert entry.shasum == "0123456789abcdef0123456789abcdef01234567"
    for ref in ("1.0.0", "latest", "next"):
        assert version_manifest(docs.full.body, index, ref) == docs.manifest(ref)
    with pytest.raises(ForbiddenError):
        version_manifest(docs.full.body, index, "1.1.0")


def test_an_index_written_before_the_brotli_forms_still_reads() -> None:
    """Indexes stored before this mirror had brotli forms name four representations; they
    are read as they are (the service computes them again)."""
    docs = run(packument())
    raw = json.loads(docs.index.to_bytes())
    raw["etags"] = {r: e for r, e in raw["etags"].items() if not r.endswith(".br")}
    index = Index.from_bytes(json.dumps(raw).encode())
    assert set(index.etags) == {"full", "full.gz", "abbreviated", "abbreviated.gz"}
    assert dict(index.versions) == dict(docs.index.versions)


def test_encoded_keeps_its_signature_and_takes_a_brotli_quality() -> None:
    body = json.dumps(packument()).encode() * 4
    default = _encoded(body, 6)
    assert (default.body, default.gzip) == (body, gzip.compress(body, 6, mtime=0))
    fast = _encoded(body, 1, brotli_quality=1)
    assert brotli.decompress(fast.br) == body
    assert fast.br_etag != default.br_etag
    assert 0 <= BROTLI_QUALITY <= 11
    assert etags_of(default, fast)["abbreviated.br"] == fast.br_etag


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"name": "x"}',
        b'{"name":"x","dist-tags":{},"versions":{"1.0.0":[1,2]},"hidden":{},"etags":{},'
        b'"modified":null}',
        b'{"name":"x","dist-tags":{},"versions":{},"hidden":{"1.0.0":"bored"},"etags":{},'
        b'"modified":null}',
        b'{"name":"x","dist-tags":{},"versions":{},"hidden":{},"etags":{"brotli":"x"},'
        b'"modified":null}',
    ],
)
def test_what_is_not_an_index_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # the caller treats it as a cache miss
        Index.from_bytes(data)


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------


def test_min_release_age_hides_fresh_versions_and_repoints_latest() -> None:
    ages = {"1.0.0": 300 * DAY, "1.1.0": 200 * DAY, "1.2.0": 60.0}
    docs = run(packument(ages=ages, tags={"latest": "1.2.0"}), policy=Policy(min_release_age=DAY))
    full = body(docs)
    assert list(full["versions"]) == ["1.0.0", "1.1.0"]
    assert "1.2.0" not in full["time"]
    assert full["dist-tags"] == {"latest": "1.1.0"}
    assert body(docs, "abbreviated")["dist-tags"] == {"latest": "1.1.0"}
    assert [(h.version, h.reason) for h in docs.hidden] == [("1.2.0", "too-new")]
    assert docs.retagged == (Retag("latest", "1.2.0", "1.1.0"),)
    with pytest.raises(NotFoundError, match="minimum release age"):
        docs.manifest("1.2.0")
    assert json.loads(docs.manifest("latest"))["version"] == "1.1.0"


def test_tags_move_as_npm_picks_with_before() -> None:
    ages = {
        "1.0.0": 300 * DAY,
        "1.5.0": 250 * DAY,
        "2.0.0-beta.1": 100 * DAY,
        "2.0.0-beta.2": 60.0,
        "3.0.0": 90 * DAY,  # newer than the old target of latest: npm would not pick it
        "1.6.0": 60.0,
        "junk-version": 60.0,
    }
    tags = {"latest": "1.6.0", "next": "2.0.0-beta.2", "legacy": "junk-version", "v3": "3.0.0"}
    upstream = packument(ages=ages, tags=tags)
    docs = run(upstream, policy=Policy(min_release_age=DAY))
    assert dict(body(docs)["dist-tags"]) == {
        "latest": "1.5.0",  # <= 1.6.0, not 3.0.0
        "next": "2.0.0-beta.1",  # a prerelease of the same 2.0.0
        "legacy": "3.0.0",  # no SemVer target: the newest release
        "v3": "3.0.0",
    }


def test_a_tag_with_nothing_left_is_removed() -> None:
    ages = {"1.0.0": 60.0, "1.0.1": 30.0}
    docs = run(packument(ages=ages, tags={"latest": "1.0.1"}), policy=Policy(min_release_age=DAY))
    assert body(docs)["dist-tags"] == {}
    assert body(docs)["versions"] == {}
    assert docs.retagged == (Retag("latest", "1.0.1", None),)
    with pytest.raises(NotFoundError):
        docs.manifest("latest")


def test_blocked_versions_are_hidden_and_answered_403() -> None:
    docs = run(packument(), policy=policy_for("pkg", blocked=["pkg@2.0.0", "other@1.0.0"]))
    assert "2.0.0" not in body(docs)["versions"]
    assert body(docs)["dist-tags"]["latest"] == "1.1.0"
    with pytest.raises(ForbiddenError, match="blocked") as caught:
        docs.manifest("2.0.0")
    assert status_for(caught.value) == 403


def test_policy_for_exemptions_and_scoped_blocks() -> None:
    assert policy_for("@corp/lib", min_release_age=DAY, exempt=["@corp/*"]).min_release_age == 0
    assert policy_for("@corp/lib", min_release_age=DAY, exempt=["left-pad"]).min_release_age == DAY
    blocked = policy_for("@a/b", blocked=["@a/b@1.0.0", "@a/bc@2.0.0", "b@3.0.0"])
    assert blocked.blocked_versions == frozenset({"1.0.0"})


def test_versions_without_time_are_kept_and_unservable_ones_hidden() -> None:
    upstream = packument()
    del upstream["time"]["1.1.0"]
    upstream["versions"]["../../x"] = manifest("pkg", "../../x")
    upstream["versions"]["9.9.9"] = "not an object"
    upstream["versions"]["0.0.1"] = {"name": "pkg", "version": "0.0.1"}  # no dist at all
    upstream["versions"]["created"] = manifest("pkg", "created")  # not the time entry
    docs = run(upstream, policy=Policy(min_release_age=1_000 * DAY))
    assert body(docs)["time"]["created"] == upstream["time"]["created"]
    assert sorted(body(docs)["versions"]) == ["0.0.1", "1.1.0"]
    reasons = {h.version: h.reason for h in docs.hidden}
    assert reasons["../../x"] == "unservable"
    assert reasons["9.9.9"] == "unservable"
    assert reasons["2.0.0"] == "too-new"
    assert docs.index.versions["0.0.1"].tarball == ""


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from(["", "-rc.1", "-rc.2"])),
        st.integers(0, 10 * 86_400),  # whole seconds: the packument's times are in ms
        min_size=1,
        max_size=10,
    ),
    st.integers(0, 10 * 86_400),
    st.data(),
)
def test_min_release_age_never_leaves_a_tag_on_a_hidden_version(
    raw_ages: dict[tuple[int, int, str], int], min_age: int, data: st.DataObject
) -> None:
    ages = {f"{a}.{b}.0{pre}": float(age) for (a, b, pre), age in raw_ages.items()}
    versions = sorted(ages)
    tags = data.draw(
        st.dictionaries(st.sampled_from(["latest", "next", "beta", "x"]), st.sampled_from(versions))
    )
    docs = run(
        packument(ages=ages, tags=tags or {"latest": versions[0]}),
        policy=Policy(min_release_age=min_age),
    )
    full = body(docs)
    served = set(full["versions"])
    assert served == {v for v, age in ages.items() if age >= min_age}
    for tag, version in full["dist-tags"].items():
        assert version in served, tag
    for retag in docs.retagged:
        assert retag.old not in served
        if retag.new is not None:
            old, new = parse(retag.old), parse(retag.new)
            assert new.key <= old.key
            assert not new.is_prerelease or new.release == old.release
    assert set(full["time"]) - {"created", "modified"} == served


# --------------------------------------------------------------------------------------------
# Bad upstream answers
# --------------------------------------------------------------------------------------------


def test_an_oversized_packument_is_refused() -> None:
    raw = json.dumps(packument()).encode()
    run(raw, max_bytes=len(raw))
    with pytest.raises(PackumentTooLargeError, match="over this mirror's limit") as caught:
        run(raw, max_bytes=len(raw) - 1)
    assert status_for(caught.value) == 502


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "not valid JSON"),
        (b"<html>oops</html>", "not valid JSON"),
        (b'{"name": "pkg", "versions": {}', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b'{"name": "pkg", "x": NaN}', "not valid JSON"),
        (b'{"name": "pkg", "x": Infinity}', "not valid JSON"),
        (b'{"name": "pkg", "x": 1e400}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'"pkg"', "not a JSON object"),
        (b'{"name": "pkg", "versions": []}', "versions that is not an object"),
        (b'{"name": "pkg", "dist-tags": "latest"}', "dist-tags that is not an object"),
        (b'{"name": "pkg", "time": 5}', "time that is not an object"),
        (b'{"name": "other", "versions": {}}', "packument of 'other'"),
    ],
)
def test_malformed_packuments_are_refused_with_a_clear_error(raw: bytes, match: str) -> None:
    with pytest.raises(PackumentError, match=match) as caught:
        run(raw, name="pkg")
    assert status_for(caught.value) == 502
    assert str(caught.value).startswith("pkg: ")


def test_numbers_keep_their_value() -> None:
    raw = b'{"name":"pkg","n":12345678901234567890,"f":0.1,"e":1e2,"versions":{}}'
    full = body(run(raw))
    assert full["n"] == 12345678901234567890
    assert full["f"] == 0.1
    assert full["e"] == 100.0


def test_parse_time() -> None:
    assert parse_time("1970-01-01T00:00:01.000Z") == 1.0
    assert parse_time("1970-01-01T00:00:01") == 1.0
    assert parse_time("1970-01-01T01:00:01+01:00") == 1.0
    assert parse_time("yesterday") is None
    assert parse_time(5) is None


def test_a_big_packument_round_trips() -> None:
    ages = {f"{i // 100}.{i % 100}.0": float(600 - i) * DAY for i in range(600)}
    upstream = packument(ages=ages, tags={"latest": "5.99.0"})
    docs = run(upstream, policy=Policy(min_release_age=100 * DAY))
    full = body(docs)
    assert len(full["versions"]) == 501
    assert full["dist-tags"]["latest"] == "5.0.0"
    assert try_parse(full["dist-tags"]["latest"]) is not None
    assert gzip.decompress(docs.full.gzip) == docs.full.body  # compressed in a second thread
    assert brotli.decompress(docs.full.br) == docs.full.body
    for version in ("0.0.0", "5.0.0"):
        assert json.loads(docs.manifest(version)) == full["versions"][version]


# --------------------------------------------------------------------------------------------
# Splicing the upstream's text, against re-encoding it
# --------------------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_nasty = st.sampled_from(
    [
        '"tarball":"http://evil.example/x.tgz"',
        '\\"tarball\\": \\"x\\"',
        "tarball",
        "\\",
        '"',
        "é",
        "\U0001f600",
        "\u2028",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    extras=st.dictionaries(
        st.sampled_from(["custom", "x-y", "_meta", "é"]), _json_values, max_size=3
    ),
    description=st.lists(_nasty, max_size=4).map("".join),
    nested_tarball=st.booleans(),
    indent=st.sampled_from([None, 0, 1, 2, "\t"]),
    ensure_ascii=st.booleans(),
    min_age=st.sampled_from([0.0, 15 * DAY]),
)
def test_splicing_means_what_re_encoding_means(
    *,
    extras: dict[str, Any],
    description: str,
    nested_tarball: bool,
    indent: int | str | None,
    ensure_ascii: bool,
    min_age: float,
) -> None:
    upstream = packument(**extras)
    for m in upstream["versions"].values():
        m["description"] = description
        if nested_tarball:  # a second "tarball" property: that manifest is re-encoded
            m["publishConfig"] = {"tarball": description}
    raw = json.dumps(upstream, indent=indent, ensure_ascii=ensure_ascii).encode()
    # A repeated key (same value) makes the document take the plain parse and re-encoding.
    raw_repeated = b'{"name":"pkg",' + raw.lstrip()[1:]
    policy = Policy(min_release_age=min_age)
    spliced, encoded = run(raw, policy=policy), run(raw_repeated, policy=policy)
    assert json.loads(spliced.full.body) == json.loads(encoded.full.body)
    assert spliced.abbreviated.body == encoded.abbreviated.body
    assert spliced.index.dist_tags == encoded.index.dist_tags
    full = json.loads(spliced.full.body)
    for version, m in full["versions"].items():
        assert m["dist"]["tarball"] == f"{BASE}pkg/-/pkg-{version}.tgz"
        assert m["description"] == description
        assert json.loads(spliced.manifest(version)) == m
        assert json.loads(encoded.manifest(version)) == m
    assert encoded.full.body == compact(json.loads(encoded.full.body))
    if indent is not None:  # the upstream's own spacing inside the spliced values
        assert b"\n" in spliced.full.body
        assert b"\n" not in spliced.abbreviated.body


def test_only_the_dist_tarball_property_is_rewritten() -> None:
    upstream = packument(ages={"1.0.0": DAY})
    m = upstream["versions"]["1.0.0"]
    m["description"] = 'see "tarball":"http://evil.example/x.tgz"'
    m["_resolved"] = m["dist"]["tarball"]  # old packuments repeat the URL here
    # The same URL under another "tarball" property, before dist: not the one to rewrite.
    upstream["versions"]["1.0.0"] = {"publishConfig": {"tarball": m["dist"]["tarball"]}, **m}
    docs = run(upstream)
    full = body(docs)
    assert full["versions"]["1.0.0"]["description"] == m["description"]
    assert full["versions"]["1.0.0"]["_resolved"] == f"{UPSTREAM}/pkg/-/pkg-1.0.0.tgz"
    assert full["versions"]["1.0.0"]["publishConfig"]["tarball"] == m["_resolved"]
    assert full["versions"]["1.0.0"]["dist"]["tarball"] == f"{BASE}pkg/-/pkg-1.0.0.tgz"
    assert docs.full.body.count(b"http://evil.example/x.tgz") == 1


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name":"pkg" "versions":{}}',
        b'{"name":"pkg",}',
        b'{"name":"pkg","versions":{"1.0.0":{}},}',
        b'{"name":"pkg","versions":{"1.0.0" {}}}',
        b'{"name":"pkg","versions":{"1.0.0":}}',
        b'{"name":"pkg"} trailing',
        b'{"name":"pkg"',
        b'{name:"pkg"}',
        b'\xef\xbb\xbf{"name":"pkg",]',
    ],
)
def test_broken_json_is_refused_on_the_splicing_path_too(raw: bytes) -> None:
    with pytest.raises(PackumentError, match="not valid JSON"):
        run(raw, name="pkg")


def test_a_byte_order_mark_and_surrounding_space_are_accepted() -> None:
    raw = b"\xef\xbb\xbf \n" + compact(packument()) + b"\n"
    assert body(run(raw))["name"] == "pkg"
