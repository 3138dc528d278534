"""The documents of a package published here, assembled version by version
(entrepot.npm.localdocs): byte for byte what compute makes of the whole packument, for any
record; None where compute must decide."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from entrepot.npm.localdocs import LocalPackage, LocalVersion, Pieces, assemble
from entrepot.npm.packument import compute
from entrepot.npm.registry import local_package
from entrepot.npm.registrystore import PackageRecord, VersionRecord

BASE = "http://127.0.0.1:8080/npm/"
T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)


def manifest(name: str, version: str, extra: dict[str, Any]) -> str:
    value = {
        "name": name,
        "version": version,
        **extra,
        "dist": {
            "integrity": "sha512-" + "A" * 86 + "==",
            "shasum": "0" * 40,
            "tarball": f"npm-local/{name}/{version}-0123456789abcdef-00aa.tgz",
        },
    }
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@st.composite
def records(draw: st.DrawFn) -> PackageRecord:
    name = draw(st.sampled_from(["tool", "@corp/lib", "x.y_z-1"]))
    count = draw(st.integers(min_value=1, max_value=6))
    numbers = [f"1.{i}.{draw(st.integers(0, 3))}" for i in range(count)]
    if draw(st.booleans()):
        numbers[-1] += "-beta.1"
    versions = {}
    for i, number in enumerate(numbers):
        extra: dict[str, Any] = {}
        if draw(st.booleans()):
            extra["description"] = draw(texts)
        if draw(st.booleans()):
            extra["scripts"] = {"postinstall": "node x.js"}
        if draw(st.booleans()):
            extra["dependencies"] = {"left-pad": "^1.0.0", "@corp/other": draw(texts)}
        if draw(st.booleans()):
            extra["deprecated"] = draw(texts) or "old"
        extra["engines"] = {"node": ">=18"}
        versions[number] = VersionRecord(
            number,
            manifest(name, number, extra),
            int((T0 + timedelta(minutes=i)).timestamp() * 1000),
            None,
        )
    tags = {"latest": numbers[0]}
    if draw(st.booleans()):
        tags["next"] = numbers[-1]
    document: dict[str, Any] = {"description": draw(texts)}
    if draw(st.booleans()):
        document["keywords"] = [draw(texts)]
    if draw(st.booleans()):
        document["license"] = "MIT"
    return PackageRecord(
        name=name,
        rev=draw(st.integers(1, 99)),
        created=T0,
        modified=T0 + timedelta(hours=1),
        deleted=None,
        document=document,
        readme=draw(st.none() | texts),
        versions=versions,
        dist_tags=tags,
        maintainers=(("alice", "a@example.com"),),
    )


@settings(max_examples=150, deadline=None)
@given(records())
def test_assembled_documents_are_what_compute_makes(record: PackageRecord) -> None:
    package = local_package(record)
    made = assemble(package, base_url=BASE, blocked=frozenset(), pieces=Pieces())
    assert made is not None
    computed = compute(
        package.to_bytes(), name=record.name, base_url=BASE, now=0, max_bytes=1 << 30
    )
    assert made.full.body == computed.full.body
    assert made.abbreviated.body == computed.abbreviated.body
    assert made.index.to_bytes() == computed.index.to_bytes()
    assert made.full.gzip == computed.full.gzip
    for version, entry in made.index.versions.items():
        served = json.loads(made.full.body[entry.start : entry.end])
        assert served["version"] == version
        assert served["dist"]["tarball"].startswith(BASE)
        assert entry.tarball.startswith("npm-local/")


def test_pieces_are_reused_and_made_again_when_the_text_or_url_changes() -> None:
    pieces = Pieces()
    v1 = LocalVersion("1.0.0", manifest("tool", "1.0.0", {}), "2026-01-02T03:04:05.678Z")
    first = pieces.get("tool", v1, BASE + "tool/-/tool-")
    assert first is not None
    assert pieces.get("tool", v1, BASE + "tool/-/tool-") is first
    deprecated = LocalVersion("1.0.0", manifest("tool", "1.0.0", {"deprecated": "no"}), "t")
    again = pieces.get("tool", deprecated, BASE + "tool/-/tool-")
    assert again is not None
    assert again is not first
    assert b'"deprecated":"no"' in again.abbreviated
    moved = pieces.get("tool", deprecated, "https://npm.example.com/tool/-/tool-")
    assert moved is not None
    assert b"https://npm.example.com/tool/-/tool-1.0.0.tgz" in moved.full


def test_the_memo_is_bounded() -> None:
    pieces = Pieces(max_bytes=4096)
    for i in range(50):
        v = LocalVersion(f"1.0.{i}", manifest("tool", f"1.0.{i}", {}), "t")
        assert pieces.get("tool", v, BASE) is not None
    assert len(pieces._pieces) < 50
    assert pieces._bytes <= 4096


def package_of(versions: dict[str, str], tags: dict[str, str]) -> LocalPackage:
    return LocalPackage(
        name="tool",
        head={"_id": "tool", "_rev": "1-x", "name": "tool", "description": "", "dist-tags": tags},
        versions=[
            LocalVersion(v, text, "2026-01-02T03:04:05.678Z") for v, text in versions.items()
        ],
        created="2026-01-02T03:04:05.678Z",
        modified="2026-01-02T03:04:05.678Z",
        tail={"readme": "", "maintainers": [], "_attachments": {}},
    )


def test_compute_decides_where_this_path_would_guess() -> None:
    good = manifest("tool", "1.0.0", {})
    ok = package_of({"1.0.0": good}, {"latest": "1.0.0"})
    assert assemble(ok, base_url=BASE, blocked=frozenset(), pieces=Pieces()) is not None
    cases = [
        (ok, frozenset({"1.0.0"})),  # a version the policy blocks
        (package_of({"1.0.0": good}, {"latest": "2.0.0"}), frozenset()),  # a tag to nowhere
        (
            package_of(  # a second "tarball" property: which one is the URL?
                {"1.0.0": manifest("tool", "1.0.0", {"x": {"tarball": "y"}})}, {"latest": "1.0.0"}
            ),
            frozenset(),
        ),
        (
            package_of(  # no tarball key at all
                {"1.0.0": json.dumps({"name": "tool", "version": "1.0.0"})}, {"latest": "1.0.0"}
            ),
            frozenset(),
        ),
    ]
    for package, blocked in cases:
        assert assemble(package, base_url=BASE, blocked=blocked, pieces=Pieces()) is None
