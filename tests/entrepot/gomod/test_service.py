"""The service's cache policy, coalescing and verification, with an httpx.MockTransport upstream."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from entrepot.config import GoCache
from entrepot.errors import (
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UpstreamError,
    VerificationError,
)
from entrepot.gomod.service import GoService, Router, Rule, clean_list
from entrepot.gomod.upstream import Chain, Link, ProxyUpstream
from entrepot.metrics import Metrics
from entrepot.storage.filesystem import FilesystemStorage
from support.modules import FixtureModule, simple

HELLO = simple("example.com/hello", "v1.0.0")


class FakeUpstream:
    """Answers from a dict of path → (status, body); counts every request; can be slowed."""

    def __init__(self, files: dict[str, tuple[int, bytes]]) -> None:
        self.files = files
        self.hits: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.hits[path] += 1
        if self.gate is not None:
            await self.gate.wait()
        status, body = self.files.get(path, (404, b"not found: " + path.encode()))
        return httpx.Response(status, content=body)


def module_files(mod: FixtureModule) -> dict[str, tuple[int, bytes]]:
    base = f"/{mod.path}/@v/{mod.version}"
    return {
        f"/{mod.path}/@v/list": (
            200,
            f"{mod.version}\nv0.0.0-20200101000000-abcdefabcdef\n".encode(),
        ),
        f"{base}.info": (200, json.dumps({"Version": mod.version, "Time": mod.time}).encode()),
        f"{base}.mod": (200, mod.mod_bytes()),
        f"{base}.zip": (200, mod.zip_bytes()),
        f"/{mod.path}/@latest": (200, json.dumps({"Version": mod.version}).encode()),
    }


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make_service(
    tmp_path: Path,
    upstream: FakeUpstream,
    *,
    cache: GoCache | None = None,
    rules: Callable[[Chain], list[Rule]] | None = None,
    clock: Clock | None = None,
) -> GoService:
    client = httpx.AsyncClient(transport=httpx.MockTransport(upstream.handler))
    chain = Chain([Link(ProxyUpstream("https://up.example.com", client=client), False)])
    return GoService(
        storage=FilesystemStorage(tmp_path / "data"),
        router=Router(rules(chain) if rules else [], chain),
        cache=cache or GoCache(),
        metrics=Metrics(),
        max_zip_bytes=500 << 20,
        clock=clock or Clock(),
    )


async def test_zip_is_verified_stored_with_its_hash_and_then_served_from_cache(
    tmp_path: Path,
) -> None:
    up = FakeUpstream(module_files(HELLO))
    svc = make_service(tmp_path, up)
    first = await svc.zip(HELLO.path, HELLO.version)
    second = await svc.zip(HELLO.path, HELLO.version)
    assert (first.cache, second.cache) == ("miss", "hit")
    assert first.blob.path is not None
    assert first.blob.path.read_bytes() == HELLO.zip_bytes()
    assert up.hits["/example.com/hello/@v/v1.0.0.zip"] == 1
    h1 = await svc.ziphash(HELLO.path, HELLO.version)
    assert h1 is not None
    assert h1.startswith("h1:")


async def test_mod_miss_fetches_only_the_mod(tmp_path: Path) -> None:
    up = FakeUpstream(module_files(HELLO))
    svc = make_service(tmp_path, up)
    answer = await svc.mod(HELLO.path, HELLO.version)
    assert answer.body == HELLO.mod_bytes()
    assert set(up.hits) == {"/example.com/hello/@v/v1.0.0.mod"}


async def test_two_hundred_cold_requests_make_one_upstream_fetch(tmp_path: Path) -> None:
    up = FakeUpstream(module_files(HELLO))
    up.gate = asyncio.Event()
    svc = make_service(tmp_path, up)
    tasks = [asyncio.create_task(svc.zip(HELLO.path, HELLO.version)) for _ in range(200)]
    await asyncio.sleep(0.05)
    up.gate.set()
    answers = await asyncio.gather(*tasks)
    assert up.hits["/example.com/hello/@v/v1.0.0.zip"] == 1
    assert {a.blob.path for a in answers} == {answers[0].blob.path}
    followers = svc.metrics.coalesced.labels("zip")._value.get()
    assert followers == 199


async def test_a_cancelled_asker_does_not_cancel_the_fetch_for_others(tmp_path: Path) -> None:
    up = FakeUpstream(module_files(HELLO))
    up.gate = asyncio.Event()
    svc = make_service(tmp_path, up)
    leader = asyncio.create_task(svc.zip(HELLO.path, HELLO.version))
    follower = asyncio.create_task(svc.zip(HELLO.path, HELLO.version))
    await asyncio.sleep(0.05)
    leader.cancel()  # the first client disconnects
    up.gate.set()
    answer = await follower
    assert answer.blob.size == len(HELLO.zip_bytes())
    assert up.hits["/example.com/hello/@v/v1.0.0.zip"] == 1


async def test_a_zip_that_breaks_the_rules_is_refused_and_never_stored(tmp_path: Path) -> None:
    evil = FixtureModule("example.com/other", "v1.0.0", {"go.mod": "module example.com/other\n"})
    files = module_files(HELLO)
    files["/example.com/hello/@v/v1.0.0.zip"] = (200, evil.zip_bytes())  # wrong prefix
    svc = make_service(tmp_path, FakeUpstream(files))
    with pytest.raises(VerificationError, match=r"example\.com/hello@v1\.0\.0"):
        await svc.zip(HELLO.path, HELLO.version)
    assert not list((tmp_path / "data").rglob("*.zip"))
    assert not list((tmp_path / "data" / ".staging").rglob("*.part"))
    assert svc.metrics.verification_failures.labels("zip")._value.get() == 1


async def test_corrupt_zip_is_refused(tmp_path: Path) -> None:
    files = module_files(HELLO)
    good = HELLO.zip_bytes()
    files["/example.com/hello/@v/v1.0.0.zip"] = (200, good[: len(good) // 2])
    svc = make_service(tmp_path, FakeUpstream(files))
    with pytest.raises(VerificationError):
        await svc.zip(HELLO.path, HELLO.version)
    assert await svc.storage.stat("go/example.com/hello/@v/v1.0.0.zip") is None


async def test_info_for_a_canonical_version_must_name_that_version(tmp_path: Path) -> None:
    files = module_files(HELLO)
    files["/example.com/hello/@v/v1.0.0.info"] = (200, b'{"Version":"v1.0.1"}')
    svc = make_service(tmp_path, FakeUpstream(files))
    with pytest.raises(VerificationError, match=r"names version v1\.0\.1"):
        await svc.info(HELLO.path, "v1.0.0")


async def test_list_drops_pseudo_versions_and_an_empty_list_stays_a_200(tmp_path: Path) -> None:
    assert clean_list(b"v1.0.0\nv0.0.0-20200101000000-abcdefabcdef\n\nv1.1.0 extra\n") == (
        b"v1.0.0\nv1.1.0\n"
    )
    files = {"/example.com/empty/@v/list": (200, b"")}
    svc = make_service(tmp_path, FakeUpstream(files))
    answer = await svc.list("example.com/empty")
    assert answer.body == b""
    with pytest.raises(NotFoundError):
        await svc.list("example.com/absent")


async def test_not_found_is_remembered_for_the_negative_ttl(tmp_path: Path) -> None:
    clock = Clock()
    up = FakeUpstream({})
    svc = make_service(tmp_path, up, cache=GoCache(negative_ttl=60), clock=clock)
    for _ in range(3):
        with pytest.raises(NotFoundError):
            await svc.mod("example.com/nope", "v1.0.0")
    assert up.hits["/example.com/nope/@v/v1.0.0.mod"] == 1
    clock.now += 61
    up.files.update(module_files(simple("example.com/nope", "v1.0.0")))
    answer = await svc.mod("example.com/nope", "v1.0.0")
    assert answer.cache == "miss"


async def test_list_is_revalidated_in_the_background_after_its_ttl(tmp_path: Path) -> None:
    clock = Clock()
    up = FakeUpstream(module_files(HELLO))
    cache = GoCache(list_ttl=300, stale_while_revalidate=3600)
    svc = make_service(tmp_path, up, cache=cache, clock=clock)
    assert (await svc.list(HELLO.path)).body == b"v1.0.0\n"
    up.files["/example.com/hello/@v/list"] = (200, b"v1.0.0\nv1.1.0\n")
    clock.now += 100
    assert (await svc.list(HELLO.path)).cache == "hit"  # fresh: no upstream call
    assert up.hits["/example.com/hello/@v/list"] == 1
    clock.now += 300  # past the TTL: served at once, refreshed behind
    old = await svc.list(HELLO.path)
    assert old.body == b"v1.0.0\n"
    await asyncio.sleep(0.05)
    assert up.hits["/example.com/hello/@v/list"] == 2
    assert (await svc.list(HELLO.path)).body == b"v1.0.0\nv1.1.0\n"


async def test_stale_list_is_served_when_the_upstream_fails(tmp_path: Path) -> None:
    clock = Clock()
    up = FakeUpstream(module_files(HELLO))
    cache = GoCache(list_ttl=60, stale_while_revalidate=60, max_stale=86400)
    svc = make_service(tmp_path, up, cache=cache, clock=clock)
    await svc.list(HELLO.path)
    up.files["/example.com/hello/@v/list"] = (503, b"down for maintenance")
    clock.now += 3600  # past TTL + revalidate window: a synchronous refetch, which fails
    answer = await svc.list(HELLO.path)
    assert answer.cache == "stale"
    assert answer.body == b"v1.0.0\n"
    assert answer.stale_reason is not None
    assert "503" in answer.stale_reason
    clock.now += 86400  # beyond max_stale the error wins
    with pytest.raises(UpstreamError, match="503"):
        await svc.list(HELLO.path)


async def test_query_info_is_mutable_and_teaches_the_canonical_info(tmp_path: Path) -> None:
    files = module_files(HELLO)
    files["/example.com/hello/@v/main.info"] = (
        200,
        json.dumps({"Version": "v1.0.0", "Time": HELLO.time}).encode(),
    )
    up = FakeUpstream(files)
    svc = make_service(tmp_path, up)
    answer = await svc.info(HELLO.path, "main")
    assert json.loads(answer.body or b"")["Version"] == "v1.0.0"
    assert answer.kind.value == "query"
    canonical = await svc.info(HELLO.path, "v1.0.0")
    assert canonical.cache == "hit"  # learned from the query answer
    assert up.hits["/example.com/hello/@v/v1.0.0.info"] == 0


async def test_mod_and_zip_need_a_canonical_version(tmp_path: Path) -> None:
    svc = make_service(tmp_path, FakeUpstream({}))
    with pytest.raises(InvalidRequestError, match="canonical"):
        await svc.zip(HELLO.path, "main")


async def test_denied_paths_get_403_and_are_never_fetched(tmp_path: Path) -> None:
    up = FakeUpstream(module_files(HELLO))
    svc = make_service(
        tmp_path,
        up,
        rules=lambda chain: [Rule("example.com/hello", deny="internal code, ask #platform")],
    )
    with pytest.raises(ForbiddenError, match="ask #platform"):
        await svc.zip(HELLO.path, HELLO.version)
    assert not up.hits


async def test_small_immutable_answers_are_served_from_memory(tmp_path: Path) -> None:
    svc = make_service(tmp_path, FakeUpstream(module_files(HELLO)))
    await svc.mod(HELLO.path, HELLO.version)
    (tmp_path / "data/go/example.com/hello/@v/v1.0.0.mod").unlink()
    answer = await svc.mod(HELLO.path, HELLO.version)
    assert answer.cache == "hit"
    assert answer.body == HELLO.mod_bytes()


class FakeSums:
    """A SumChecker: the database's h1 per (module, version, kind), counting its checks."""

    generation = 0

    def __init__(self, sums: dict[tuple[str, str, str], str], *, reachable: bool = True) -> None:
        self.sums = sums
        self.reachable = reachable
        self.checks: list[tuple[str, str, str]] = []

    def covers(self, module: str) -> bool:
        return True

    async def expected(self, module: str, version: str) -> object:
        return None

    async def check(self, module, version, what, h1, *, expected=None):  # type: ignore[no-untyped-def]
        self.checks.append((module, version, what))
        if not self.reachable:
            return "unverified"
        if self.sums[(module, version, what)] != h1:
            raise VerificationError(f"{module}@{version}: checksum mismatch")
        return "verified"


async def test_bytes_another_worker_stored_are_checked_before_this_one_serves_them(
    tmp_path: Path,
) -> None:
    from entrepot.gomod.ziprules import h1_mod

    up = FakeUpstream(module_files(HELLO))
    svc = make_service(tmp_path, up)
    tampered = HELLO.mod_bytes() + b"// another worker stored this unverified\n"
    sums = FakeSums({(HELLO.path, HELLO.version, "mod"): h1_mod(HELLO.mod_bytes())})
    svc.sums = sums
    key = f"go/{HELLO.path}/@v/{HELLO.version}.mod"
    stat = svc.storage.stat
    calls = 0

    async def late_stat(k: str):  # type: ignore[no-untyped-def]
        # The first look finds nothing; the other worker stores while this one waits for
        # the lock, so the locked re-check finds its bytes.
        nonlocal calls
        if k == key:
            calls += 1
            if calls == 1:
                await svc.storage.put_bytes(key, tampered)
                return None
        return await stat(k)

    svc.storage.stat = late_stat  # type: ignore[method-assign]
    with pytest.raises(VerificationError, match="checksum mismatch"):
        await svc.mod(HELLO.path, HELLO.version)
    assert sums.checks == [(HELLO.path, HELLO.version, "mod")]
    assert svc.memory.get(key) is None
    # Removed from the cache; the next ask fetches the upstream's (good) bytes.
    answer = await svc.mod(HELLO.path, HELLO.version)
    assert answer.body == HELLO.mod_bytes()


async def test_unverified_answers_are_not_kept_in_memory(tmp_path: Path) -> None:
    up = FakeUpstream(module_files(HELLO))
    svc = make_service(tmp_path, up)
    sums = FakeSums({}, reachable=False)
    svc.sums = sums
    first = await svc.mod(HELLO.path, HELLO.version)
    assert first.unverified
    second = await svc.mod(HELLO.path, HELLO.version)
    assert second.unverified  # checked again, not served from memory as if verified
    assert len(sums.checks) >= 2
