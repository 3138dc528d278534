"""NpmService's freshness, policy and coalescing, with an httpx.MockTransport upstream.

The cases real clients cannot reach in a bounded time: a clock moved past TTLs (SWR, max
stale, the negative cache, a version coming of age), a 304 from the upstream, a restart with
another policy, and concurrent cold fetches. Each runs twice: documents computed in a thread
(small packuments) and by the helper process from spilled files (large ones).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import json
import time
from pathlib import Path

import brotli
import pytest
from npm_fake import MIRROR, Clock, Registry, document, make_service

from entrepot.config import NpmCache, NpmPolicy
from entrepot.errors import (
    ForbiddenError,
    NotFoundError,
    UpstreamError,
    VerificationError,
)
from entrepot.npm import service as service_module
from entrepot.npm.compute import Computer
from entrepot.npm.handlers import NpmHandlers
from entrepot.npm.service import REPRESENTATIONS, NpmService
from entrepot.web.http import Request, Response
from entrepot.web.responses import status_for

OLD = time.time() - 86400 * 400


@pytest.fixture(autouse=True, params=["thread", "helper"])
def computed_by(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every packument small enough for a thread, or every one computed by the helper."""
    if request.param == "helper":
        monkeypatch.setattr(
            service_module, "Computer", functools.partial(Computer, in_process_bytes=0)
        )
    return str(request.param)


def staged(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "data").glob(".staging/*/*") if p.suffix == ".part"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry() -> Registry:
    return Registry({"left": {"1.0.0": OLD, "1.1.0": OLD + 10}, "@s/p": {"2.0.0": OLD}})


async def test_stale_while_revalidate_serves_at_once_and_refreshes_behind(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    svc = make_service(
        tmp_path, registry, clock, cache=NpmCache(packument_ttl=10, stale_while_revalidate=100)
    )
    first = await svc.document("left", "full")
    assert first.cache == "miss"
    registry.releases["left"]["1.2.0"] = OLD + 20  # an upstream change
    clock.now += 50  # past the TTL, within SWR
    registry.gate = asyncio.Event()
    served = await svc.document("left", "full")  # does not wait for the (held) upstream
    assert served.cache == "hit"
    assert "1.2.0" not in document(served.body)["versions"]
    registry.gate.set()
    await svc.flights.drain(5)
    assert registry.packument_hits("left") == 2
    assert registry.conditional["/left"] == 1
    after = await svc.document("left", "full")
    assert "1.2.0" in document(after.body)["versions"]
    assert after.etag != first.etag
    assert registry.packument_hits("left") == 2


async def test_stale_if_error_until_max_stale_then_the_error(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    cache = NpmCache(packument_ttl=10, stale_while_revalidate=0, max_stale=100, error_ttl=0)
    svc = make_service(tmp_path, registry, clock, cache=cache)
    await svc.document("left", "full")
    registry.failing = 503
    clock.now += 50
    stale = await svc.document("left", "abbreviated")
    assert stale.cache == "stale"
    assert stale.stale_reason is not None
    assert "503" in stale.stale_reason
    clock.now += 100  # 150 s old: past TTL + max_stale
    with pytest.raises(UpstreamError, match="503"):
        await svc.document("left", "full")
    registry.failing = None
    clock.now += 1
    assert (await svc.document("left", "full")).cache == "hit"


async def test_a_remembered_failure_serves_stale_without_asking_again(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    cache = NpmCache(packument_ttl=10, stale_while_revalidate=0, error_ttl=30)
    svc = make_service(tmp_path, registry, clock, cache=cache)
    await svc.document("left", "full")
    registry.failing = 500
    clock.now += 20
    for _ in range(3):
        assert (await svc.document("left", "full")).cache == "stale"
    assert registry.packument_hits("left") == 2  # the failure is remembered for error_ttl


async def test_not_found_is_remembered_for_the_negative_ttl(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    svc = make_service(tmp_path, registry, clock, cache=NpmCache(negative_ttl=60))
    for _ in range(3):
        with pytest.raises(NotFoundError):
            await svc.document("ghost", "full")
    assert registry.packument_hits("ghost") == 1
    registry.releases["ghost"] = {"1.0.0": OLD}  # published upstream meanwhile
    clock.now += 30
    with pytest.raises(NotFoundError):
        await svc.document("ghost", "full")
    clock.now += 31
    assert (await svc.document("ghost", "full")).cache == "miss"
    assert registry.packument_hits("ghost") == 2


async def test_an_upstream_304_keeps_the_documents_and_refreshes_fetched(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    cache = NpmCache(packument_ttl=10, stale_while_revalidate=0)
    svc = make_service(tmp_path, registry, clock, cache=cache)
    first, _, _ = await svc.package("left")
    clock.now += 20
    second, _, _ = await svc.package("left")
    assert registry.conditional["/left"] == 1  # asked with the upstream's ETag: 304
    assert second.files == first.files
    assert second.index.etags == first.index.etags
    assert second.fetched == clock.now
    clock.now += 5  # fresh again: not asked
    await svc.package("left")
    assert registry.packument_hits("left") == 2


async def test_a_policy_change_recomputes_from_the_stored_upstream_bytes(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    svc = make_service(tmp_path, registry, clock)
    assert set(document((await svc.document("left", "full")).body)["versions"]) == {
        "1.0.0",
        "1.1.0",
    }
    # A restart with another policy (a new fingerprint), the upstream unreachable: the
    # stored upstream bytes are computed again with it, without an upstream request.
    registry.failing = 503
    policy = NpmPolicy(blocked=["left@1.1.0"])
    again = make_service(tmp_path, registry, clock, policy=policy)
    doc = await again.document("left", "full")
    assert doc.stale_reason is None
    parsed = document(doc.body)
    assert set(parsed["versions"]) == {"1.0.0"}
    assert parsed["dist-tags"]["latest"] == "1.0.0"
    assert registry.packument_hits("left") == 1
    with pytest.raises(ForbiddenError):
        await again.tarball("left", "1.1.0")


async def test_a_too_new_version_comes_of_age_on_refresh(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    registry.releases["young"] = {"1.0.0": OLD, "1.1.0": clock.now - 1800}
    cache = NpmCache(packument_ttl=60, stale_while_revalidate=0)
    svc = make_service(
        tmp_path, registry, clock, cache=cache, policy=NpmPolicy(min_release_age=3600)
    )
    parsed = document((await svc.document("young", "full")).body)
    assert set(parsed["versions"]) == {"1.0.0"}
    assert parsed["dist-tags"]["latest"] == "1.0.0"
    with pytest.raises(NotFoundError, match="minimum release age"):
        await svc.tarball("young", "1.1.0")
    clock.now += 1801  # old enough now; the upstream answers 304
    parsed = document((await svc.document("young", "abbreviated")).body)
    assert set(parsed["versions"]) == {"1.0.0", "1.1.0"}
    assert parsed["dist-tags"]["latest"] == "1.1.0"
    assert registry.conditional["/young"] >= 1
    tarball = await svc.tarball("young", "1.1.0")
    assert tarball.blob.path is not None
    assert tarball.blob.path.read_bytes() == registry.tarball("young", "1.1.0")


async def test_exempt_names_skip_the_minimum_release_age(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    registry.releases["@corp/young"] = {"1.0.0": OLD, "1.1.0": clock.now - 60}
    policy = NpmPolicy(min_release_age=3600, min_release_age_exempt=["@corp/*"])
    svc = make_service(tmp_path, registry, clock, policy=policy)
    parsed = document((await svc.document("@corp/young", "full")).body)
    assert parsed["dist-tags"]["latest"] == "1.1.0"


async def test_an_unknown_version_refreshes_the_packument_once(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    svc = make_service(tmp_path, registry, clock, cache=NpmCache(negative_ttl=60))
    await svc.document("left", "full")
    registry.releases["left"]["1.2.0"] = OLD + 30  # published after the packument was stored
    clock.now += 2
    tarball = await svc.tarball("left", "1.2.0")
    assert tarball.cache == "miss"
    assert registry.packument_hits("left") == 2
    # A version that does not exist: one forced refresh, then the answer is remembered.
    clock.now += 2
    for _ in range(3):
        with pytest.raises(NotFoundError):
            await svc.tarball("left", "9.9.9")
    assert registry.packument_hits("left") == 3


async def test_hidden_versions_have_no_tarball(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    policy = NpmPolicy(blocked=["left@1.1.0", "@s/*"], private=["@corp/*"])
    svc = make_service(tmp_path, registry, clock, policy=policy)
    with pytest.raises(ForbiddenError, match=r"left@1\.1\.0"):
        await svc.tarball("left", "1.1.0")
    with pytest.raises(ForbiddenError):
        await svc.tarball("@s/p", "2.0.0")
    with pytest.raises(NotFoundError, match="private"):
        await svc.tarball("@corp/x", "1.0.0")
    assert (await svc.tarball("left", "1.0.0")).cache == "miss"
    assert sum(v for k, v in registry.hits.items() if k.endswith(".tgz")) == 1
    assert registry.packument_hits("@s/p") == 0
    assert registry.packument_hits("@corp/x") == 0


async def test_concurrent_tarball_and_packument_fetches_are_coalesced(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    svc = make_service(tmp_path, registry, clock)
    registry.gate = asyncio.Event()
    packuments = [asyncio.create_task(svc.document("@s/p", "full")) for _ in range(20)]
    await asyncio.sleep(0.05)
    registry.gate.set()
    assert len({(await t).etag for t in packuments}) == 1
    assert registry.packument_hits("@s/p") == 1

    registry.gate = asyncio.Event()
    tarballs = [asyncio.create_task(svc.tarball("@s/p", "2.0.0")) for _ in range(20)]
    await asyncio.sleep(0.05)
    registry.gate.set()
    results = [await t for t in tarballs]
    assert {r.blob.key for r in results} == {results[0].blob.key}
    assert registry.hits["/@s/p/-/p-2.0.0.tgz"] == 1
    assert svc.metrics.coalesced.labels("tarball")._value.get() == 19


async def test_a_tampered_tarball_is_refused_not_stored_and_counted(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    svc = make_service(tmp_path, registry, clock, cache=NpmCache(error_ttl=5))
    registry.tampered = True
    with pytest.raises(VerificationError, match=r"left@1\.0\.0"):
        await svc.tarball("left", "1.0.0")
    assert not list((tmp_path / "data").rglob("*.tgz"))
    assert svc.metrics.npm_refused.labels("integrity")._value.get() == 1
    registry.tampered = False
    with pytest.raises(VerificationError):  # remembered for error_ttl
        await svc.tarball("left", "1.0.0")
    clock.now += 6
    assert (await svc.tarball("left", "1.0.0")).cache == "miss"


async def test_write_true_always_asks_the_upstream(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    """Guards a bug: ?write=true within a second of another fetch was served from the cache
    (the shortcut meant for workers that waited on the store's lock)."""
    svc = make_service(tmp_path, registry, clock)
    await svc.document("left", "full")
    for _ in range(3):
        await svc.document("left", "full", write=True)
    assert registry.packument_hits("left") == 4


async def test_a_cached_tarball_is_served_with_the_upstream_gone_past_max_stale(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    """A tarball is immutable: a new worker (nothing in memory) serves it from any stored
    index, however old, without asking the upstream."""
    cache = NpmCache(packument_ttl=10, stale_while_revalidate=0, max_stale=100, error_ttl=0)
    svc = make_service(tmp_path, registry, clock, cache=cache)
    await svc.tarball("left", "1.0.0")
    registry.failing = 503
    clock.now += 10_000  # far past TTL + max_stale
    later = make_service(tmp_path, registry, clock, cache=cache)  # another worker
    hits = sum(registry.hits.values())
    served = await later.tarball("left", "1.0.0")
    assert served.cache == "hit"
    assert sum(registry.hits.values()) == hits
    with pytest.raises(UpstreamError):  # the packument itself is too old to be served
        await later.document("left", "full")


async def test_a_refused_tarball_is_remembered_as_a_refusal(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    """The failure cache gives back an integrity failure (an error with keyword-only
    details) as a 502 with the same message, not a TypeError."""
    svc = make_service(tmp_path, registry, clock, cache=NpmCache(error_ttl=60))
    registry.tampered = True
    with pytest.raises(VerificationError) as first:
        await svc.tarball("left", "1.1.0")
    with pytest.raises(VerificationError) as again:
        await svc.tarball("left", "1.1.0")
    assert again.value.message == first.value.message
    assert status_for(again.value) == 502


async def test_a_large_packument_is_spilled_stored_and_computed_from_files(
    tmp_path: Path, registry: Registry, clock: Clock, computed_by: str
) -> None:
    svc = make_service(tmp_path, registry, clock)
    doc = await svc.document("left", "full")
    assert set(document(await svc.storage.get(doc.blob.key))["versions"]) == {"1.0.0", "1.1.0"}
    stored = await svc.storage.get("npm/left/packument/upstream.json")
    assert stored == registry.document("left")  # the upstream's bytes as they came
    assert staged(tmp_path) == []  # the spill became upstream.json; the outputs, documents
    assert (computed_by == "helper") == (svc.computer.in_process_bytes == 0)


async def test_a_packument_that_does_not_compute_is_never_stored(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    registry.bodies["left"] = b'{"name": "right", "versions": {}}' + b" " * 4096
    svc = make_service(tmp_path, registry, clock)
    with pytest.raises(VerificationError, match="right"):
        await svc.document("left", "full")
    assert await svc.storage.stat("npm/left/packument/upstream.json") is None
    assert await svc.storage.stat("npm/left/packument/index.json") is None
    assert staged(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Documents stored before the brotli forms existed


async def to_the_index_before_brotli(svc: NpmService, name: str) -> None:
    """The stored package as the mirror wrote it before it had brotli forms: four documents,
    four ETags, and the fingerprint of the settings alone."""
    key = f"npm/{name}/packument/index.json"
    raw = await svc.storage.get(key)
    assert raw is not None
    data = json.loads(raw)
    meta, index = data["meta"], data["index"]
    for rep in ("full.br", "abbreviated.br"):
        await svc.storage.delete(meta["files"].pop(rep))
        meta["previous"].pop(rep, None)
        index["etags"].pop(rep)
    settings = [MIRROR, svc.policy.model_dump(mode="json"), svc.settings.max_packument_bytes]
    meta["fingerprint"] = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    await svc.storage.put_bytes(key, json.dumps(data).encode())


async def test_documents_stored_before_brotli_are_computed_again_without_the_upstream(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    """An upgrade: every stored package is read (not refused as unreadable, which would
    need the upstream) and computed again from its stored upstream bytes at its first
    request, brotli forms included, with the upstream down."""
    svc = make_service(tmp_path, registry, clock)
    zipped = await svc.document("left", "full.gz")
    await to_the_index_before_brotli(svc, "left")
    registry.failing = 503
    upgraded = make_service(tmp_path, registry, clock)  # the new version, restarted
    served = await upgraded.document("left", "full.br", fallback=("full.gz", "full"))
    assert served.rep == "full.br"
    assert served.cache == "hit"
    assert served.stale_reason is None
    plain = await upgraded.document("left", "full")
    assert served.body is not None
    assert brotli.decompress(served.body) == plain.body
    assert registry.packument_hits("left") == 1  # only the first fetch, before the upgrade
    again = await upgraded.document("left", "full.gz")
    assert again.etag == zipped.etag  # the same bytes: what clients hold stays valid
    assert set(served.etags) == {plain.etag, zipped.etag, served.etag}
    package, _, _ = await upgraded.package("left")
    assert set(package.files) == set(REPRESENTATIONS)
    assert package.fingerprint == upgraded.fingerprint


async def test_a_br_request_gets_gzip_while_the_documents_lack_brotli_forms(
    tmp_path: Path, registry: Registry, clock: Clock
) -> None:
    """Until it is computed again (here: ``?write=true`` skips that, and the upstream it
    asks instead is down), a package stored before the brotli forms is served as stored:
    a client that prefers br gets what it takes next."""
    cache = NpmCache(packument_ttl=10, stale_while_revalidate=0, max_stale=100, error_ttl=0)
    svc = make_service(tmp_path, registry, clock, cache=cache)
    plain = await svc.document("left", "full")
    await to_the_index_before_brotli(svc, "left")
    registry.failing = 503
    handlers = NpmHandlers(make_service(tmp_path, registry, clock, cache=cache), prefix="/npm/")

    async def get(accept_encoding: str) -> Response:
        request = Request("GET", "/npm/left", {"accept-encoding": accept_encoding})
        request.query = "write=true"
        answer = await handlers.handle(request)
        assert isinstance(answer, Response)
        assert answer.status == 200
        return answer

    def sent(answer: Response) -> dict[str, str]:
        assert answer.fields is not None
        lines = answer.fields.decode("latin-1").splitlines()
        return dict(line.split(": ", 1) for line in lines if line)

    zipped = await get("gzip, deflate, br")
    assert gzip.decompress(zipped.body) == plain.body
    assert sent(zipped)["Content-Encoding"] == "gzip"
    assert "503" in sent(zipped)["X-Entrepot-Stale-Reason"]
    identity = await get("br, gzip;q=0")
    assert identity.body == plain.body
    assert "Content-Encoding" not in sent(identity)
    assert registry.packument_hits("left") == 3  # asked (write=true), never needed
