"""The private registry's package writes, in process: the pure parts (write paths, the
packument built from the store, search queries, tarball keys) with tables, and two services
on one data folder (two workers) behind the registry's endpoints: shadowing within a
second, local tarballs without a database read, refused publishes that leave nothing, and
documents a crash left behind the store healed at the next start.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from npm_fake import MIRROR as BASE
from npm_fake import Clock, Registry, document, make_service

from entrepot.config import NpmPolicy, NpmRegistry, NpmSettings, PublishRule
from entrepot.errors import ConflictError, ForbiddenError, InvalidRequestError, NotFoundError
from entrepot.npm.auth import masked, new_token, token_key
from entrepot.npm.packument import compute
from entrepot.npm.publish import parse_publish
from entrepot.npm.registry import (
    RegistryEndpoints,
    WriteTarget,
    packument_bytes,
    parse_search,
    parse_write_path,
    rev_text,
    with_tarball_keys,
)
from entrepot.npm.registry_auth import Authenticator
from entrepot.npm.registrystore import RegistryStore, open_registry_store
from entrepot.npm.service import NpmService, local_tarball_key
from entrepot.sql.migrate import migrate
from entrepot.web.http import Request, Response

OLD = 1_600_000_000.0


# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "target"),
    [
        ("/left", WriteTarget("package", "left")),
        ("/@s%2fp", WriteTarget("package", "@s/p")),
        ("/@s%2Fp", WriteTarget("package", "@s/p")),
        ("/@s/p", WriteTarget("package", "@s/p")),
        ("/left/-rev/3-abc", WriteTarget("rev", "left", rev=3)),
        ("/@s%2fp/-rev/12-x", WriteTarget("rev", "@s/p", rev=12)),
        ("/left/-/left-1.0.0.tgz/-rev/4-y", WriteTarget("tarball", "left", rev=4, version="1.0.0")),
        (
            "/@s/p/-/@s/p-1.0.0-rc.1.tgz/-rev/4-y",
            WriteTarget("tarball", "@s/p", rev=4, version="1.0.0-rc.1"),
        ),
        ("/left/beta", WriteTarget("tag", "left", tag="beta")),
    ],
)
def test_write_paths(rel: str, target: WriteTarget) -> None:
    assert parse_write_path(rel) == target


@pytest.mark.parametrize(
    "rel",
    [
        "/",
        "/left/",
        "/../x",
        "/left/-rev/abc",
        "/left/-/other-1.0.0.tgz/-rev/1-a",
        "/Le ft",
        "/a/b/c",
    ],
)
def test_bad_write_paths(rel: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_write_path(rel)


def test_search_queries() -> None:
    q = parse_search("text=http%20client+author:jane+keywords:a,b+maintainer:bob&size=5&from=10")
    assert (q.text, q.author, q.maintainer, q.keywords) == (
        "http client",
        "jane",
        "bob",
        ("a", "b"),
    )
    assert (q.size, q.offset) == (5, 10)
    assert parse_search("text=x&size=100000").size == 250
    with pytest.raises(InvalidRequestError):
        parse_search("text=x&size=many")


def test_rev_text_is_stable_and_read_back_as_its_number() -> None:
    assert rev_text("left", 3) == rev_text("left", 3)
    assert rev_text("left", 3).startswith("3-")
    assert rev_text("left", 3) != rev_text("right", 3)


def test_local_tarball_keys_are_their_own() -> None:
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(b"x").digest()).decode()
    key = local_tarball_key("@S/Pkg", "1.0.0-RC", integrity, "abcd")
    assert key == f"npm-local/@!s/!pkg/1.0.0-!r!c-{hashlib.sha512(b'x').hexdigest()[:16]}-abcd.tgz"
    assert not key.startswith("npm/")


# -- a registry on two workers ------------------------------------------------------------------


def tgz(version: str, size: int = 64) -> bytes:
    return hashlib.shake_256(version.encode()).digest(size)


def publish_body(
    name: str, version: str, data: bytes, *, tags: dict[str, str] | None = None
) -> bytes:
    filename = f"{name.rsplit('/', maxsplit=1)[-1]}-{version}.tgz"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    manifest = {
        "name": name,
        "version": version,
        "description": f"{name} here",
        "keywords": ["kw"],
        "dist": {"integrity": integrity, "tarball": f"http://elsewhere/{filename}"},
    }
    return json.dumps(
        {
            "_id": name,
            "name": name,
            "dist-tags": tags or {"latest": version},
            "versions": {version: manifest},
            "readme": f"# {name}",
            "_attachments": {
                filename: {"data": base64.b64encode(data).decode(), "length": len(data)}
            },
        }
    ).encode()


class Rig:
    """Two services (workers) on one data folder, the registry's endpoints on the first."""

    def __init__(self, tmp: Path, upstream: Registry, clock: Clock, store: RegistryStore) -> None:
        self.clock = clock
        self.store = store
        self.a = make_service(tmp, upstream, clock)
        self.b = make_service(tmp, upstream, clock)
        self.registry = self.endpoints(self.a)

    def endpoints(
        self, service: NpmService, *, rules: list[PublishRule] | None = None
    ) -> RegistryEndpoints:
        settings = NpmSettings(
            upstream=service.settings.upstream,
            registry=NpmRegistry(publish=rules or [PublishRule(packages=["*"])]),
        )
        auth = Authenticator(self.store, settings.registry)
        return RegistryEndpoints(self.store, auth, service, service.storage, settings)

    async def token(self, user: str) -> str:
        now = datetime.now(UTC)
        if await self.store.user(user) is None:
            await self.store.create_user(user, email=f"{user}@x.test", password_hash="-", now=now)
        token = new_token()
        await self.store.create_token(
            token_key(token), user=user, prefix=masked(token), readonly=False, cidrs=[], now=now
        )
        return token

    async def put(
        self, path: str, body: bytes, token: str, registry: RegistryEndpoints | None = None
    ) -> Response:
        request = Request(
            "PUT",
            "/npm" + path,
            {"authorization": f"Bearer {token}"},
            body=body,
            remote="127.0.0.1",
        )
        answer = await (registry or self.registry).write(request, path)
        assert isinstance(answer, Response)
        return answer


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    migrate(None, tmp_path)
    return tmp_path


@pytest.fixture
async def store(migrated: Path) -> AsyncIterator[RegistryStore]:
    store = open_registry_store(None, migrated)
    yield store
    await store.close()


@pytest.fixture
def upstream() -> Registry:
    return Registry({"left": {"1.0.0": OLD, "1.1.0": OLD + 10}})


async def test_a_first_publish_shadows_the_mirrored_package_in_every_worker(
    tmp_path: Path, upstream: Registry, store: RegistryStore
) -> None:
    clock = Clock()
    rig = Rig(tmp_path, upstream, clock, store)
    mirrored = await rig.b.document("left", "full")
    assert set(document(mirrored.body)["versions"]) == {"1.0.0", "1.1.0"}
    token = await rig.token("alice")
    answer = await rig.put("/left", publish_body("left", "9.0.0", tgz("9.0.0")), token)
    assert answer.status == 201
    assert json.loads(answer.body)["rev"] == rev_text("left", 1)
    clock.now += 1.1  # the other worker re-stats a mirrored index within a second
    hits = upstream.packument_hits("left")
    served = document((await rig.b.document("left", "full")).body)
    assert set(served["versions"]) == {"9.0.0"}
    assert served["versions"]["9.0.0"]["dist"]["tarball"] == f"{BASE}left/-/left-9.0.0.tgz"
    assert served["_rev"] == rev_text("left", 1)
    clock.now += 10_000  # far past every TTL: a local package is never refreshed upstream
    await rig.b.document("left", "abbreviated")
    await rig.b.document("left", "full", write=True)
    assert upstream.packument_hits("left") == hits
    blob = (await rig.b.tarball("left", "9.0.0")).blob
    assert blob.key.startswith("npm-local/left/9.0.0-")
    assert blob.path is not None
    assert blob.path.read_bytes() == tgz("9.0.0")
    with pytest.raises(NotFoundError):
        await rig.b.tarball("left", "1.0.0")  # the mirrored versions are gone with the name


async def test_local_writes_are_read_back_through_the_other_worker_at_once(
    tmp_path: Path, upstream: Registry, store: RegistryStore
) -> None:
    clock = Clock()
    rig = Rig(tmp_path, upstream, clock, store)
    token = await rig.token("alice")
    await rig.put("/@s%2fp", publish_body("@s/p", "1.0.0", tgz("1")), token)
    assert set(document((await rig.b.document("@s/p", "full")).body)["versions"]) == {"1.0.0"}
    await rig.put("/@s%2fp", publish_body("@s/p", "1.1.0", tgz("2")), token)
    # no clock move: a local index is stat'ed at every request
    full = document((await rig.b.document("@s/p", "full")).body)
    assert set(full["versions"]) == {"1.0.0", "1.1.0"}
    assert full["dist-tags"] == {"latest": "1.1.0"}
    assert full["description"] == "@s/p here"
    assert full["readme"] == "# @s/p"
    assert [m["name"] for m in full["maintainers"]] == ["alice"]


async def test_publishes_join_each_versions_bytes_and_serve_what_compute_would(
    tmp_path: Path, upstream: Registry, store: RegistryStore
) -> None:
    """Each publish assembles the documents from the versions' bytes made once (the memo
    holds every version), and what is served is what compute makes of the whole packument;
    a version the policy blocks sends the package through compute, which hides it."""
    clock = Clock()
    rig = Rig(tmp_path, upstream, clock, store)
    token = await rig.token("alice")
    for i in range(4):
        await rig.put("/@s%2fp", publish_body("@s/p", f"1.{i}.0", tgz(str(i))), token)
    assert sorted(v for (_, v) in rig.registry.pieces._pieces) == [f"1.{i}.0" for i in range(4)]
    record = await store.package("@s/p")
    assert record is not None
    keys = await store.tarball_keys("@s/p")
    expected = compute(
        packument_bytes(with_tarball_keys(record, keys)),
        name="@s/p",
        base_url=BASE,
        now=0,
        max_bytes=1 << 30,
    )
    for rep, body in (("full", expected.full.body), ("abbreviated", expected.abbreviated.body)):
        served = await rig.b.document("@s/p", rep)  # type: ignore[arg-type]
        assert served.body == body, rep

    blocking = make_service(tmp_path, upstream, clock, policy=NpmPolicy(blocked=["@s/p@1.1.0"]))
    strict = rig.endpoints(blocking)
    await rig.put("/@s%2fp", publish_body("@s/p", "1.4.0", tgz("4")), token, strict)
    assert strict.pieces._pieces == {}  # computed, not assembled
    full = document((await blocking.document("@s/p", "full")).body)
    assert set(full["versions"]) == {"1.0.0", "1.2.0", "1.3.0", "1.4.0"}


async def test_refused_publishes_leave_nothing_behind(
    tmp_path: Path, upstream: Registry, store: RegistryStore
) -> None:
    clock = Clock()
    rig = Rig(tmp_path, upstream, clock, store)
    alice, bob = await rig.token("alice"), await rig.token("bob")
    await rig.put("/pkg", publish_body("pkg", "1.0.0", tgz("1")), alice)
    with pytest.raises(ConflictError, match="already published"):
        await rig.put("/pkg", publish_body("pkg", "1.0.0", tgz("1")), alice)
    with pytest.raises(ForbiddenError, match="bob is not a maintainer of pkg"):
        await rig.put("/pkg", publish_body("pkg", "1.0.1", tgz("2")), bob)
    blobs = sorted(p.name for p in (tmp_path / "data/npm-local/pkg").iterdir())
    assert len(blobs) == 1
    assert blobs[0].startswith("1.0.0-")
    locked = rig.endpoints(
        rig.a, rules=[PublishRule(packages=["@corp/*"], allow="users", users=["bob"])]
    )
    with pytest.raises(ForbiddenError, match="alice may not publish @corp/x"):
        await rig.put("/@corp%2fx", publish_body("@corp/x", "1.0.0", tgz("3")), alice, locked)
    with pytest.raises(ForbiddenError, match="no rule of this registry lets anyone publish"):
        await rig.put("/other", publish_body("other", "1.0.0", tgz("3")), alice, locked)
    assert not (tmp_path / "data/npm-local/@corp").exists()


async def test_documents_a_crash_left_behind_are_rebuilt_at_the_first_request(
    tmp_path: Path, upstream: Registry, store: RegistryStore
) -> None:
    """A crash between the store's transaction and the documents: the version is in the
    store, the documents are the mirrored ones (a first publish) or an older rev."""
    clock = Clock()
    rig = Rig(tmp_path, upstream, clock, store)
    await rig.b.document("left", "full")  # mirrored documents on disk
    data = tgz("9")
    p = parse_publish(publish_body("left", "9.0.0", data), name="left", max_tarball_bytes=1 << 20)
    key = local_tarball_key("left", "9.0.0", p.integrity, "dead")
    await rig.a.storage.put_bytes(key, data)
    await store.publish(p, tarball_key=key, size=len(data), user="alice", now=datetime.now(UTC))
    # the process died here; a new one starts on the same folder
    fresh = make_service(tmp_path, upstream, clock)
    rig.endpoints(fresh)
    hits = upstream.packument_hits("left")
    served = document((await fresh.document("left", "full")).body)
    assert set(served["versions"]) == {"9.0.0"}
    assert (await fresh.tarball("left", "9.0.0")).blob.key == key
    assert upstream.packument_hits("left") == hits


async def test_tarballs_no_version_names_are_collected_once_old(
    tmp_path: Path, upstream: Registry, store: RegistryStore
) -> None:
    """A crash between a publish's tarball and its transaction leaves a blob no version names:
    collected at start once older than the grace; named and young blobs stay."""
    clock = Clock()
    rig = Rig(tmp_path, upstream, clock, store)
    data = tgz("7")
    p = parse_publish(publish_body("left", "7.0.0", data), name="left", max_tarball_bytes=1 << 20)
    named = local_tarball_key("left", "7.0.0", p.integrity, "0001")
    await rig.a.storage.put_bytes(named, data)
    await store.publish(p, tarball_key=named, size=len(data), user="alice", now=datetime.now(UTC))
    orphan = local_tarball_key("left", "7.0.1", p.integrity, "0002")  # the crashed publish
    young = local_tarball_key("left", "7.0.2", p.integrity, "0003")  # one in flight elsewhere
    for key in (orphan, young):
        await rig.a.storage.put_bytes(key, data)
    hour_ago = time.time() - 3700
    for key in (named, orphan):
        os.utime(tmp_path / "data" / key, (hour_ago, hour_ago))
    endpoints = rig.endpoints(rig.a)
    assert await endpoints.collect_leftovers() == 1
    assert await rig.a.storage.stat(orphan) is None
    assert await rig.a.storage.stat(named) is not None
    assert await rig.a.storage.stat(young) is not None
    assert await endpoints.collect_leftovers(older_than=0) == 1  # the young one, once old
    assert await rig.a.storage.stat(named) is not None


def test_the_packument_built_from_the_store_computes_like_a_mirrored_one() -> None:
    from entrepot.npm.registrystore import PackageRecord, VersionRecord

    now = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    manifest: dict[str, Any] = {
        "name": "x",
        "version": "1.0.0",
        "dist": {"integrity": "sha512-AAAA", "shasum": "00", "tarball": "npm-local/x/k.tgz"},
    }
    record = PackageRecord(
        name="x",
        rev=4,
        created=now,
        modified=now,
        deleted=None,
        document={"description": "d", "license": "MIT"},
        readme="r",
        versions={"1.0.0": VersionRecord("1.0.0", json.dumps(manifest), 1704164645678, None)},
        dist_tags={"latest": "1.0.0"},
        maintainers=(("alice", "a@x.test"),),
    )
    raw = packument_bytes(record)
    doc = json.loads(raw)
    assert doc["_rev"] == rev_text("x", 4)
    assert doc["time"]["1.0.0"] == "2024-01-02T03:04:05.678Z"
    assert doc["license"] == "MIT"
    assert doc["maintainers"] == [{"name": "alice", "email": "a@x.test"}]
    docs = compute(raw, name="x", base_url=BASE, now=0, max_bytes=1 << 20)
    assert docs.index.versions["1.0.0"].tarball == "npm-local/x/k.tgz"
    served = json.loads(docs.full.body)
    assert served["versions"]["1.0.0"]["dist"]["tarball"] == f"{BASE}x/-/x-1.0.0.tgz"
