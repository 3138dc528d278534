"""The verifying checksum-database mirror, against an in-memory fake database.

The fake serves what Go's reference server (x/mod sumdb/server.go) serves: ``latest``,
``lookup/``, ``tile/8/L/K[.p/W]`` and ``tile/8/data/...`` (record texts, each followed by a
blank line). It can misbehave: another key, a tampered tile, a record of another module or at
another id, a different history signed by the same key, an older tree head, no answer at all.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from entrepot.config import GoCache
from entrepot.errors import NotFoundError, UnavailableError, UpstreamError, VerificationError
from entrepot.gomod.module import escape_path, escape_version
from entrepot.maintenance import reset_sumdb
from entrepot.metrics import Metrics
from entrepot.storage.filesystem import FilesystemStorage
from entrepot.sumdb import note, tlog
from entrepot.sumdb.service import (
    DatabaseConfig,
    DatabaseUnreachableError,
    ForkedError,
    Hop,
    SumdbService,
)

NAME = "sum.test.example"
CORP = "corp.sum.test.example"
SKEY, VKEY = note.generate_key(NAME)
SIGNER = note.parse_signer_key(SKEY)
OTHER_SIGNER = note.parse_signer_key(note.generate_key(NAME)[0])
VERIFIERS = note.VerifierList(note.parse_verifier_key(VKEY))
CACHE = GoCache(stale_while_revalidate=0.0, error_ttl=0.0, negative_ttl=0.0)
TTL = 60.0
V = "v1.0.0"


def module(i: int) -> str:
    return f"example.com/m{i}"


def h1(seed: str, kind: str, i: int) -> str:
    return "h1:" + base64.b64encode(hashlib.sha256(f"{seed}/{kind}/{i}".encode()).digest()).decode()


def record_text(seed: str, i: int) -> bytes:
    return (
        f"{module(i)} {V} {h1(seed, 'zip', i)}\n{module(i)} {V}/go.mod {h1(seed, 'mod', i)}\n"
    ).encode()


def lookup_rel(mod: str, version: str = V) -> str:
    return f"lookup/{escape_path(mod)}@{escape_version(version)}"


class FakeDB:
    """One history of a checksum database: record i is ``module(i)`` at v1.0.0."""

    def __init__(self, count: int, *, seed: str = "a", signer: note.Signer = SIGNER) -> None:
        self.seed = seed
        self.signer = signer
        self.records: list[bytes] = []
        self.hashes: list[bytes] = []
        self.ids: dict[str, int] = {}
        # Misbehaviour switches.
        self.size: int | None = None  # sign (and answer lookups with) an older tree
        self.wrong_key = False  # sign tree heads with another key
        self.tamper: set[str] = set()  # tile paths served with one byte flipped
        self.lookup_other = False  # answer a lookup with the next module's record
        self.wrong_id = False  # answer a lookup with the right text under the next id
        self.grow(count)

    def grow(self, count: int) -> None:
        for _ in range(count):
            i = len(self.records)
            text = record_text(self.seed, i)
            self.hashes.extend(tlog.stored_hashes(i, text, self.read))
            self.records.append(text)
            self.ids[lookup_rel(module(i))] = i

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        return [self.hashes[i] for i in indexes]

    @property
    def n(self) -> int:
        return len(self.records) if self.size is None else self.size

    def signed(self) -> bytes:
        tree = tlog.Tree(self.n, tlog.tree_hash(self.n, self.read))
        return note.sign(
            tlog.format_tree(tree).decode(), OTHER_SIGNER if self.wrong_key else self.signer
        )

    def answer(self, rel: str) -> bytes:
        if rel == "latest":
            return self.signed()
        if rel.startswith("lookup/"):
            if rel not in self.ids:
                raise NotFoundError(f"{rel}: not found")
            i = self.ids[rel]
            record_id, text = i, self.records[i]
            if self.lookup_other:
                record_id, text = i + 1, self.records[i + 1]
            elif self.wrong_id:
                record_id = i + 1
            return tlog.format_record(record_id, text) + self.signed()
        if rel.startswith("tile/"):
            tile = tlog.parse_tile_path(rel)
            end = (tile.n << tile.height) + tile.width
            if (end if tile.level < 0 else end << (tile.height * tile.level)) > len(self.records):
                raise NotFoundError(f"{rel}: not found")
            if tile.level < 0:
                first = tile.n << tile.height
                body = b"".join(t + b"\n" for t in self.records[first : first + tile.width])
            else:
                body = tlog.read_tile_data(tile, self.read)
            if rel in self.tamper:
                body = bytes([body[0] ^ 1]) + body[1:]
            return body
        raise NotFoundError(f"{rel}: not found")


class Upstream:
    """A Fetcher in front of a FakeDB (swappable: a fork), counting requests per path."""

    def __init__(self, db: FakeDB | None, *, supported: str = "ok", name: str = "fake") -> None:
        self.name = name
        self.db = db
        self.supported = supported  # "ok", "missing" (404) or "error"
        self.unreachable = False
        self.requests: Counter[str] = Counter()

    async def get(self, rel: str, what: str) -> bytes:
        self.requests[rel] += 1
        if self.unreachable:
            raise UpstreamError(f"{what}: connection refused")
        if rel == "supported":
            if self.supported == "missing":
                raise NotFoundError(f"{what}: 404 Not Found")
            if self.supported == "error":
                raise UpstreamError(f"{what}: 502 Bad Gateway")
            return b""
        assert self.db is not None
        return self.db.answer(rel)

    def fetches(self) -> int:
        return sum(self.requests.values())

    def tile_fetches(self) -> int:
        return sum(v for k, v in self.requests.items() if k.startswith("tile/"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = TTL + 1) -> None:
        self.now += seconds


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[FilesystemStorage]:
    s = FilesystemStorage(tmp_path / "data", owner="test", fsync=False)
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(
    storage: FilesystemStorage,
    clock: Clock,
    hops: Upstream | list[Hop],
    *,
    configs: list[DatabaseConfig] | None = None,
    **kw: Any,
) -> SumdbService:
    chain = hops if isinstance(hops, list) else [Hop(hops, False, False)]  # direct
    configs = configs or [DatabaseConfig(NAME, VERIFIERS, chain)]
    return SumdbService(
        configs, storage=storage, metrics=Metrics(), cache=CACHE, latest_ttl=TTL, clock=clock, **kw
    )


def failures(svc: SumdbService, reason: str, db: str = NAME) -> float:
    value = svc.metrics.registry.get_sample_value(
        "entrepot_sumdb_verification_failures_total", {"db": db, "reason": reason}
    )
    return value or 0.0


def key(rel: str, name: str = NAME) -> str:
    return f"sumdb/{name}/{rel}"


def tile(path: str) -> tlog.Tile:
    return tlog.parse_tile_path(path)


# -- 1. verified, cached, byte-equal --------------------------------------------------------

TILES = [
    "tile/8/0/000",
    "tile/8/0/001.p/44",
    "tile/8/1/000.p/1",
    "tile/8/data/000",
    "tile/8/data/001.p/44",
]


async def test_lookup_and_tiles_are_verified_cached_and_byte_equal(storage, clock) -> None:
    db = FakeDB(300)
    up = Upstream(db)
    svc = make(storage, clock, up)
    want = db.answer(lookup_rel(module(5)))

    served = await svc.lookup(NAME, module(5), V)
    assert (served.body, served.cache, served.immutable) == (want, "miss", True)
    assert await storage.get(key(lookup_rel(module(5)))) == want
    before = up.fetches()
    again = await svc.lookup(NAME, module(5), V)
    assert (again.body, again.cache) == (want, "hit")
    assert up.fetches() == before

    for path in TILES:
        got = await svc.tile(NAME, tile(path))
        assert got.body == db.answer(path), path
        assert got.content_type.startswith("text/plain" if "data" in path else "application/")
        assert await storage.get(key(path)) == got.body, path
    before = up.fetches()
    for path in TILES:
        got = await svc.tile(NAME, tile(path))
        assert (got.body, got.cache) == (db.answer(path), "hit")
    assert up.fetches() == before

    # A fresh service on the same storage serves everything without asking upstream.
    other = make(storage, clock, up)
    assert (await other.lookup(NAME, module(5), V)).body == want
    assert up.fetches() == before


# -- 2. partial tiles and the full tile ------------------------------------------------------


async def test_partial_tile_cut_from_full_and_partials_removed(storage, clock) -> None:
    db = FakeDB(200)
    up = Upstream(db)
    svc = make(storage, clock, up)
    partial = "tile/8/0/000.p/200"
    assert (await svc.tile(NAME, tile(partial))).body == db.answer(partial)
    assert await storage.stat(key(partial)) is not None

    db.grow(100)
    clock.advance(2)  # tiles past the tree refresh the head at most once a second
    full = await svc.tile(NAME, tile("tile/8/0/000"))
    assert full.body == db.answer("tile/8/0/000")
    assert await storage.stat(key("tile/8/0/000")) is not None
    assert not (storage.root / key("tile/8/0/000.p")).exists()

    before = up.fetches()
    for width in (200, 100, 1):
        path = f"tile/8/0/000.p/{width}"
        got = await svc.tile(NAME, tile(path))
        assert (got.body, got.cache) == (db.answer(path), "hit")
    data = await svc.tile(NAME, tile("tile/8/data/000"))
    cut = await svc.tile(NAME, tile("tile/8/data/000.p/7"))
    assert cut.body == db.answer("tile/8/data/000.p/7")
    assert cut.cache == "hit"
    assert data.body.startswith(cut.body)
    assert up.fetches() == before + 1  # the full data tile only
    assert not (storage.root / key("tile/8/0/000.p")).exists()


async def test_no_partial_stored_once_the_full_tile_is(storage, clock) -> None:
    db = FakeDB(300)
    svc = make(storage, clock, Upstream(db))
    got = await svc.tile(NAME, tile("tile/8/0/000.p/200"))
    assert got.body == db.answer("tile/8/0/000.p/200")
    assert await storage.stat(key("tile/8/0/000")) is not None
    assert not (storage.root / key("tile/8/0/000.p")).exists()


# -- 3-5. refused answers --------------------------------------------------------------------


async def test_note_signed_by_another_key_is_refused(storage, clock) -> None:
    db = FakeDB(20)
    db.wrong_key = True
    svc = make(storage, clock, Upstream(db))
    with pytest.raises(VerificationError, match="not a tree head signed by its key"):
        await svc.latest(NAME)
    assert failures(svc, "signature") == 1
    with pytest.raises(VerificationError):
        await svc.lookup(NAME, module(3), V)
    assert failures(svc, "signature") == 2
    assert await storage.stat(key("head")) is None
    assert await storage.stat(key(lookup_rel(module(3)))) is None

    db.wrong_key = False
    assert (await svc.latest(NAME)).body == db.signed()
    assert await storage.get(key("head")) == db.signed()


@pytest.mark.parametrize("path", ["tile/8/0/000", "tile/8/1/000.p/1", "tile/8/data/001.p/44"])
async def test_tampered_tile_is_refused_and_not_cached(storage, clock, path) -> None:
    db = FakeDB(300)
    db.tamper.add(path)
    svc = make(storage, clock, Upstream(db))
    with pytest.raises(VerificationError):
        await svc.tile(NAME, tile(path))
    assert failures(svc, "tile") == 1
    assert await storage.stat(key(path)) is None

    db.tamper.clear()
    got = await svc.tile(NAME, tile(path))
    assert (got.body, got.cache) == (db.answer(path), "miss")
    assert await storage.get(key(path)) == got.body


async def test_tampered_proof_tile_refuses_a_lookup(storage, clock) -> None:
    db = FakeDB(300)
    db.tamper.add("tile/8/0/001.p/44")
    svc = make(storage, clock, Upstream(db))
    with pytest.raises(VerificationError):
        await svc.lookup(NAME, module(260), V)
    assert failures(svc, "tile") == 1
    assert await storage.stat(key(lookup_rel(module(260)))) is None
    assert await storage.stat(key("tile/8/0/001.p/44")) is None


@pytest.mark.parametrize(
    ("switch", "message"),
    [("lookup_other", "another module"), ("wrong_id", "is not record")],
)
async def test_bad_lookup_record_is_refused_and_not_cached(storage, clock, switch, message) -> None:
    db = FakeDB(20)
    setattr(db, switch, True)
    svc = make(storage, clock, Upstream(db))
    with pytest.raises(VerificationError, match=message):
        await svc.lookup(NAME, module(5), V)
    assert failures(svc, "lookup") == 1
    assert await storage.stat(key(lookup_rel(module(5)))) is None

    setattr(db, switch, False)
    assert (await svc.lookup(NAME, module(5), V)).body == db.answer(lookup_rel(module(5)))


# -- 6-7. history: forks and older heads -----------------------------------------------------


async def test_fork_fails_closed_across_restart_until_reset(storage, clock, tmp_path) -> None:
    a, b = FakeDB(20, seed="a"), FakeDB(30, seed="b")
    up = Upstream(a)
    svc = make(storage, clock, up)
    head_a = (await svc.latest(NAME)).body
    cached = (await svc.lookup(NAME, module(3), V)).body
    cached_tile = (await svc.tile(NAME, tile("tile/8/data/000.p/20"))).body

    up.db = b
    clock.advance()
    with pytest.raises(ForkedError):
        await svc.latest(NAME)
    assert failures(svc, "fork") == 1
    evidence = await storage.get(key("fork"))
    assert evidence is not None
    assert head_a in evidence
    assert b.signed() in evidence
    assert await storage.get(key("head")) == head_a
    with pytest.raises(ForkedError):
        await svc.latest(NAME)
    with pytest.raises(ForkedError):
        await svc.lookup(NAME, module(4), V)

    # A restart: a new service (and storage handle) on the same files.
    restarted = FilesystemStorage(tmp_path / "data", owner="restart", fsync=False)
    try:
        svc2 = make(restarted, clock, up)
        before = up.fetches()
        with pytest.raises(ForkedError):
            await svc2.latest(NAME)
        with pytest.raises(ForkedError):
            await svc2.lookup(NAME, module(4), V)
        with pytest.raises(ForkedError):
            await svc2.tile(NAME, tile("tile/8/data/000.p/25"))
        assert (await svc2.lookup(NAME, module(3), V)).body == cached
        assert (await svc2.tile(NAME, tile("tile/8/data/000.p/20"))).body == cached_tile
        assert up.fetches() == before  # failed closed: nothing asked upstream

        # `entrepot sumdb reset`: the running servers notice within a second.
        reset_sumdb(storage.root, NAME)
        clock.advance(2)
        assert (await svc2.latest(NAME)).body == b.signed()
        assert await restarted.get(key("head")) == b.signed()
        assert (await svc.latest(NAME)).body == b.signed()
        fresh = await svc2.lookup(NAME, module(25), V)
        assert fresh.body == b.answer(lookup_rel(module(25)))
    finally:
        restarted.close()


async def test_reset_forgets_lookups_cached_in_memory(storage, clock) -> None:
    a, b = FakeDB(20, seed="a"), FakeDB(30, seed="b")
    up = Upstream(a)
    svc = make(storage, clock, up)
    await svc.lookup(NAME, module(3), V)
    up.db = b
    clock.advance()
    with pytest.raises(ForkedError):
        await svc.latest(NAME)
    reset_sumdb(storage.root, NAME)
    clock.advance(2)
    assert (await svc.latest(NAME)).body == b.signed()
    assert (await svc.lookup(NAME, module(3), V)).body == b.answer(lookup_rel(module(3)))


async def test_same_size_different_hash_is_a_fork(storage, clock) -> None:
    up = Upstream(FakeDB(20, seed="a"))
    svc = make(storage, clock, up)
    await svc.latest(NAME)
    up.db = FakeDB(20, seed="b")
    clock.advance()
    with pytest.raises(ForkedError):
        await svc.latest(NAME)
    assert failures(svc, "fork") == 1
    assert await storage.stat(key("fork")) is not None


async def test_older_head_never_replaces_the_stored_head(storage, clock) -> None:
    db = FakeDB(300)
    up = Upstream(db)
    svc = make(storage, clock, up)
    newest = (await svc.latest(NAME)).body
    db.size = 200
    older = db.signed()
    assert older != newest
    clock.advance()
    served = await svc.latest(NAME)
    assert (served.body, served.cache) == (newest, "miss")  # refreshed, proven a prefix
    assert up.requests["latest"] == 2
    assert await storage.get(key("head")) == newest
    assert await storage.stat(key("fork")) is None
    assert failures(svc, "fork") == 0
    # A lookup signed with the older head is proven against the stored one.
    got = await svc.lookup(NAME, module(150), V)
    assert got.body.endswith(older)
    assert (await svc.latest(NAME)).body == newest
    gauge = svc.metrics.registry.get_sample_value("entrepot_sumdb_tree_size", {"db": NAME})
    assert gauge == 300

    restarted = make(storage, clock, up)  # the stored head is reloaded, still the newest
    assert (await restarted.latest(NAME)).body == newest


# -- 8. which hop answers --------------------------------------------------------------------


async def _resolve(storage, clock, hops: list[Hop]) -> object:
    svc = make(storage, clock, hops)
    return await svc._resolve(svc.get(NAME))


async def test_resolve_follows_go_supported_rules(storage, clock) -> None:
    db = FakeDB(5)
    missing = Upstream(db, supported="missing", name="missing")
    broken = Upstream(db, supported="error", name="broken")
    good = Upstream(db, name="good")
    direct = Upstream(db, name="direct")

    assert (
        await _resolve(storage, clock, [Hop(missing, True, False), Hop(good, True, False)]) is good
    )
    assert missing.requests["supported"] == 1
    assert good.requests["supported"] == 1

    good.requests.clear()
    with pytest.raises(DatabaseUnreachableError):
        await _resolve(storage, clock, [Hop(broken, True, False), Hop(good, True, False)])
    assert good.requests["supported"] == 0
    assert await _resolve(storage, clock, [Hop(broken, True, True), Hop(good, True, False)]) is good

    with pytest.raises(DatabaseUnreachableError):
        await _resolve(storage, clock, [Hop(missing, True, False), Hop(None, False, False)])
    with pytest.raises(DatabaseUnreachableError):
        await _resolve(storage, clock, [Hop(None, False, False), Hop(good, True, False)])
    with pytest.raises(DatabaseUnreachableError):
        await _resolve(storage, clock, [Hop(missing, True, True)])

    assert (
        await _resolve(storage, clock, [Hop(missing, True, False), Hop(direct, False, False)])
        is direct
    )
    assert direct.requests["supported"] == 0

    # End to end: the lookup goes to the hop that was chosen, and the choice is remembered.
    missing.requests.clear()
    svc = make(storage, clock, [Hop(missing, True, False), Hop(direct, False, False)])
    await svc.lookup(NAME, module(1), V)
    await svc.lookup(NAME, module(2), V)
    assert missing.requests == Counter({"supported": 1})
    assert direct.requests[lookup_rel(module(1))] == 1


# -- 9. module checks ------------------------------------------------------------------------


async def test_check_verifies_and_refuses_mismatches(storage, clock) -> None:
    db = FakeDB(20)
    svc = make(storage, clock, Upstream(db))
    assert await svc.check(module(3), V, "zip", h1("a", "zip", 3)) == "verified"
    assert await svc.check(module(3), V, "mod", h1("a", "mod", 3)) == "verified"
    bad = h1("evil", "zip", 3)
    with pytest.raises(VerificationError) as e:
        await svc.check(module(3), V, "zip", bad)
    assert bad in e.value.message
    assert h1("a", "zip", 3) in e.value.message
    assert failures(svc, "zip_mismatch") == 1
    with pytest.raises(VerificationError):
        await svc.check(module(3), V, "mod", bad)
    assert failures(svc, "mod_mismatch") == 1
    with pytest.raises(VerificationError, match="not in checksum database"):
        await svc.check("example.com/unknown", V, "zip", bad)
    assert failures(svc, "not_found") == 1


async def test_check_when_database_unreachable(storage, clock) -> None:
    up = Upstream(FakeDB(20))
    up.unreachable = True
    refusing = make(storage, clock, up)
    with pytest.raises(DatabaseUnreachableError) as e:
        await refusing.check(module(3), V, "zip", h1("a", "zip", 3))
    assert isinstance(e.value, UnavailableError)

    lenient = make(storage, clock, up, unreachable="serve_unverified")
    assert await lenient.check(module(3), V, "zip", h1("a", "zip", 3)) == "unverified"
    count = lenient.metrics.registry.get_sample_value(
        "entrepot_sumdb_unverified_total", {"db": NAME}
    )
    assert count == 1
    assert await storage.stat(key(lookup_rel(module(3)))) is None


async def test_no_sum_and_patterns_choose_the_database(storage, clock) -> None:
    public, corp = Upstream(FakeDB(20)), Upstream(FakeDB(20, seed="corp"), name="corp")
    configs = [
        DatabaseConfig(NAME, VERIFIERS, [Hop(public, False, False)]),
        DatabaseConfig(CORP, VERIFIERS, [Hop(corp, False, False)], patterns="example.com/m1*"),
    ]
    svc = make(storage, clock, public, configs=configs, no_sum="example.com/m2,example.com/m3")
    assert await svc.check(module(3), V, "zip", "h1:anything") == "unchecked"
    assert await svc.check(module(2), V, "mod", "h1:anything") == "unchecked"
    assert public.fetches() == 0
    assert corp.fetches() == 0
    assert not svc.covers(module(2))

    assert svc.database_for(module(12)).name == CORP
    assert svc.database_for(module(5)).name == NAME
    assert await svc.check(module(12), V, "zip", h1("corp", "zip", 12)) == "verified"
    assert public.fetches() == 0
    assert corp.requests[lookup_rel(module(12))] == 1
    assert await svc.check(module(5), V, "zip", h1("a", "zip", 5)) == "verified"
    with pytest.raises(VerificationError):
        await svc.check(module(12), V, "zip", h1("a", "zip", 12))  # the public db's hash
    assert failures(svc, "zip_mismatch", db=CORP) == 1


# -- 10. beyond the signed tree --------------------------------------------------------------


async def test_tile_beyond_signed_tree_is_not_found_after_one_refresh(storage, clock) -> None:
    db = FakeDB(20)
    up = Upstream(db)
    svc = make(storage, clock, up)
    await svc.latest(NAME)
    assert up.requests["latest"] == 1
    for path, latest in [
        ("tile/8/0/000.p/30", 2),
        ("tile/8/data/000.p/21", 3),
        ("tile/8/1/000.p/1", 4),
    ]:
        clock.advance(2)
        with pytest.raises(NotFoundError):
            await svc.tile(NAME, tile(path))
        assert up.requests["latest"] == latest, path
        with pytest.raises(NotFoundError):  # within the second: no second refresh
            await svc.tile(NAME, tile(path))
        assert up.requests["latest"] == latest, path
    assert up.tile_fetches() == 0
    assert await storage.stat(key("tile/8/0/000.p/30")) is None

    db.grow(10)
    clock.advance(2)
    got = await svc.tile(NAME, tile("tile/8/0/000.p/30"))
    assert got.body == db.answer("tile/8/0/000.p/30")
    assert up.requests["latest"] == 5


async def test_height_other_than_8_is_not_found(storage, clock) -> None:
    up = Upstream(FakeDB(20))
    svc = make(storage, clock, up)
    with pytest.raises(NotFoundError):
        await svc.tile(NAME, tile("tile/4/0/000.p/5"))
    with pytest.raises(NotFoundError):
        await svc.latest("other.test.example")
    assert up.fetches() == 0


async def test_a_failing_latest_is_not_retried_on_every_request(storage, clock) -> None:
    up = Upstream(FakeDB(20))
    svc = make(storage, clock, up)
    svc.cache = GoCache(stale_while_revalidate=0.0, error_ttl=5.0)
    head = (await svc.latest(NAME)).body
    up.unreachable = True
    clock.advance()
    before = up.fetches()
    served = [await svc.latest(NAME) for _ in range(100)]
    assert {s.body for s in served} == {head}  # stale, from the stored head
    assert up.fetches() - before == 1
    clock.advance(6)  # error_ttl later: tried again
    await svc.latest(NAME)
    assert up.fetches() - before == 2


async def test_a_key_change_fails_closed_and_readyz_says_why(storage, clock) -> None:
    svc = make(storage, clock, Upstream(FakeDB(20)))
    await svc.latest(NAME)
    other = note.VerifierList(note.parse_verifier_key(note.generate_key(NAME)[1]))
    changed = make(storage, clock, Upstream(FakeDB(20)), configs=[DatabaseConfig(NAME, other, [])])
    status = await changed.status()
    assert len(status) == 1
    assert "does not verify with the configured key" in status[0]
    assert "entrepot sumdb reset" in status[0]
    with pytest.raises(ForkedError):
        await changed.lookup(NAME, module(3), V)
    await changed.status()
    assert failures(changed, "head") == 1  # counted once, not per request


async def test_not_found_is_counted_only_when_a_module_check_uses_it(storage, clock) -> None:
    svc = make(storage, clock, Upstream(FakeDB(5)))
    # A lookup started next to an upstream fetch that then 404s: never consumed.
    with pytest.raises(VerificationError):
        await svc.expected("example.com/typo", V)
    assert failures(svc, "not_found") == 0
    with pytest.raises(VerificationError, match="not in checksum database"):
        await svc.check("example.com/typo", V, "zip", "h1:x")
    assert failures(svc, "not_found") == 1


async def test_private_paths_are_never_looked_up(storage, clock) -> None:
    up = Upstream(FakeDB(5))
    svc = make(storage, clock, up, no_sum="example.com/m1", exempt=lambda m: m == module(2))
    for private in (module(1), module(2)):
        with pytest.raises(NotFoundError, match="never sent to a checksum database"):
            await svc.lookup(NAME, private, V)
        assert await svc.check(private, V, "zip", "h1:x") == "unchecked"
    assert up.fetches() == 0
    await svc.lookup(NAME, module(3), V)
    assert up.fetches() > 0
