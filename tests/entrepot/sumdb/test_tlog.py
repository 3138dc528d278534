"""The transparency log: Go's vectors from golang.org/x/mod/sumdb/tlog (tlog_test.go,
tile_test.go, note_test.go), ported, plus exhaustive proof checks for small trees."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrepot.errors import InvalidRequestError, VerificationError
from entrepot.sumdb.note import (
    VerifierList,
    generate_key,
    open_note,
    parse_signer_key,
    parse_verifier_key,
    sign,
)
from entrepot.sumdb.tlog import (
    HASH_SIZE,
    InconsistentTileError,
    InvalidTilePathError,
    MalformedRecordError,
    MalformedTreeError,
    ProofError,
    Tile,
    TileHashReader,
    TileReader,
    TlogError,
    Tree,
    check_record,
    check_record_in_tiles,
    check_tile,
    check_tree,
    format_record,
    format_tree,
    hash_from_tile,
    new_tiles,
    node_hash,
    parse_record,
    parse_tile_path,
    parse_tree,
    plan_tiles,
    prove_record,
    prove_tree,
    read_tile_data,
    record_hash,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    stored_hashes,
    tile_for_index,
    tile_path,
    tree_hash,
    verify_tiles,
)


class HashStorage(list[bytes]):
    """Go's testHashStorage: every stored hash, in stored-hash-index order."""

    def __call__(self, indexes: Sequence[int]) -> list[bytes]:
        # Not required of a HashReader, but the functions under test only ever ask in order.
        assert all(a < b for a, b in itertools.pairwise(indexes))
        return [self[i] for i in indexes]


def build(records: Sequence[bytes]) -> HashStorage:
    storage = HashStorage()
    for i, data in enumerate(records):
        storage.extend(stored_hashes(i, data, storage))
    return storage


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


class TileStore:
    """Go's testTilesStorage: tiles by coordinate; counts tiles read but not yet saved."""

    def __init__(self, tiles: dict[Tile, bytes]) -> None:
        self.tiles = tiles
        self.unsaved = 0

    def read(self, tiles: Sequence[Tile]) -> list[bytes]:
        self.unsaved += len(tiles)
        return [self.tiles.get(t, b"") for t in tiles]

    def save(self, tiles: Sequence[Tile], data: Sequence[bytes]) -> None:
        self.unsaved -= len(tiles)


def test_tree() -> None:
    """Go's TestTree: grow a log to 100 records; at every size, every record proof and every
    consistency proof checks (directly and through tiles), and a corrupted hash fails."""
    height = 2
    trees: list[bytes] = []
    leaf_hashes: list[bytes] = []
    storage = HashStorage()
    tiles: dict[Tile, bytes] = {}
    for i in range(100):
        data = b"leaf %d" % i
        hashes = stored_hashes(i, data, storage)
        leaf_hashes.append(record_hash(data))
        old_storage = len(storage)
        storage.extend(hashes)
        assert stored_hash_count(i + 1) == len(storage)
        th = tree_hash(i + 1, storage)

        for tile in new_tiles(height, i, i + 1):
            data = read_tile_data(tile, storage)
            old = Tile(tile.height, tile.level, tile.n, tile.width - 1)
            old_data = tiles.get(old, b"")
            assert len(old_data) == len(data) - HASH_SIZE
            assert data.startswith(old_data), f"tile {tile.path} not extending {old.path}"
            tiles[tile] = data
        for tile in new_tiles(height, 0, i + 1) + new_tiles(height, i // 2, i + 1):
            assert tiles[tile] == read_tile_data(tile, storage), tile

        # All the new hashes are readable from their tiles.
        for j in range(old_storage, len(storage)):
            tile = tile_for_index(height, j)
            assert tile in tiles, (tile.path, i, len(storage))
            assert hash_from_tile(tile, tiles[tile], j) == storage[j]

        trees.append(th)

        # Record proofs, for all records so far.
        for j in range(i + 1):
            p = prove_record(i + 1, j, storage)
            check_record(p, i + 1, th, j, leaf_hashes[j])
            for k in range(len(p)):
                with pytest.raises(ProofError):
                    check_record([*p[:k], flip(p[k]), *p[k + 1 :]], i + 1, th, j, leaf_hashes[j])

        # Record proofs through tiles: reading the hash is the proof.
        store = TileStore(tiles)
        thr = TileHashReader(Tree(i + 1, th), height, store.read, store.save)
        for j in range(i + 1):
            assert thr([stored_hash_index(0, j)]) == [leaf_hashes[j]]
            p = prove_record(i + 1, j, thr)
            check_record(p, i + 1, th, j, leaf_hashes[j])
        assert store.unsaved == 0

        # An index not in the tree is refused.
        with pytest.raises(TlogError):
            thr([(i + 1) * 2])
        assert store.unsaved == 0

        # Tree proofs through tiles, for all trees so far.
        for j in range(i + 1):
            assert tree_hash(j + 1, thr) == trees[j]
            p = prove_tree(i + 1, j + 1, thr)
            check_tree(p, i + 1, th, j + 1, trees[j])
            for k in range(len(p)):
                with pytest.raises(ProofError):
                    check_tree([*p[:k], flip(p[k]), *p[k + 1 :]], i + 1, th, j + 1, trees[j])
        assert store.unsaved == 0


def test_split_stored_hash_index() -> None:
    for level in range(10):
        for n in range(100):
            x = stored_hash_index(level, n)
            assert split_stored_hash_index(x) == (level, n)


TILE_PATHS = [
    ("tile/4/0/001", Tile(4, 0, 1, 16)),
    ("tile/4/0/001.p/5", Tile(4, 0, 1, 5)),
    ("tile/3/5/x123/x456/078", Tile(3, 5, 123456078, 8)),
    ("tile/3/5/x123/x456/078.p/2", Tile(3, 5, 123456078, 2)),
    ("tile/1/0/x003/x057/500", Tile(1, 0, 3057500, 2)),
    ("tile/3/5/123/456/078", None),
    ("tile/3/-1/123/456/078", None),
    ("tile/1/data/x003/x057/500", Tile(1, -1, 3057500, 2)),
    # Ours: the forms a request path could take that are not canonical.
    ("tile/8/0/000.p/256", None),  # a "partial" tile as wide as a full one
    ("tile/8/0/000.p/0", None),
    ("tile/8/0/000.p/", None),
    ("tile/8/0/0", None),
    ("tile/8/0/x000/001", None),
    ("tile/8/0/+01", None),
    ("tile/8/0/001/", None),
    ("tile/08/0/001", None),
    ("tile/0/0/001", None),
    ("tile/31/0/001", None),
    ("tile/8/00/001", None),
    ("tile/8/0/../001", None),
    ("tile/8/0/\uff10\uff10\uff11", None),  # fullwidth digits
    ("tile/8/0/0_01", None),
    ("tile/8/data/001.p/3", Tile(8, -1, 1, 3)),
    ("tile/8/0/001.p/3/", None),
    ("tiles/8/0/001", None),
    ("tile/8/0", None),
    ("", None),
]


@pytest.mark.parametrize(("path", "tile"), TILE_PATHS)
def test_tile_path(path: str, tile: Tile | None) -> None:
    if tile is None:
        with pytest.raises(InvalidTilePathError):
            parse_tile_path(path)
        return
    assert tile_path(tile) == path
    assert tile.path == path
    assert parse_tile_path(path) == tile


def test_tile_path_docs_example() -> None:
    assert Tile(3, 4, 1234067, 1).path == "tile/3/4/x001/x234/067.p/1"
    assert Tile(3, 4, 1234067, 8).path == "tile/3/4/x001/x234/067"


def test_bad_tile_path_is_a_bad_request() -> None:
    assert issubclass(InvalidTilePathError, InvalidRequestError)


@given(st.text(alphabet="tile/0123456789x.pda-+", max_size=40))
def test_parse_tile_path_only_raises_invalid_path(path: str) -> None:
    """Go's FuzzParseTilePath: never a crash; and what parses, prints back the same."""
    try:
        tile = parse_tile_path(path)
    except InvalidTilePathError:
        return
    assert tile.path == path


@given(
    height=st.integers(1, 30),
    level=st.integers(-1, 63),
    n=st.integers(0, (1 << 63) - 1),
    data=st.data(),
)
def test_tile_path_round_trip(height: int, level: int, n: int, data: st.DataObject) -> None:
    width = data.draw(st.integers(1, 1 << height))
    tile = Tile(height, level, n, width)
    assert parse_tile_path(tile.path) == tile


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        (1, 1, 0),
        (100, 101, 1),
        (1023, 1025, 3),
        (1024, 1030, 1),
        (1030, 2000, 1),
        (1030, 10000, 10),
        (49516517, 49516586, 3),
    ],
)
def test_new_tiles_for_size(old: int, new: int, want: int) -> None:
    assert len(new_tiles(10, old, new)) == want


def tile_reader(storage: HashStorage, *, zero: int | None = None, height: int = 2) -> TileReader:
    """Tiles served from storage; with ``zero``, the bytes that hash to that stored index are
    zeroed wherever they appear (Go's zeroIndex)."""

    def read(tiles: Sequence[Tile]) -> list[bytes]:
        out = [read_tile_data(t, storage) for t in tiles]
        if zero is not None:
            z = tile_for_index(height, zero)
            start, end = _byte_range(height, zero)
            for i, t in enumerate(tiles):
                if (t.level, t.n) == (z.level, z.n) and end <= len(out[i]):
                    out[i] = out[i][:start] + bytes(end - start) + out[i][end:]
        return out

    return read


def _byte_range(height: int, index: int) -> tuple[int, int]:
    t = tile_for_index(height, index)
    level, n = split_stored_hash_index(index)
    level -= t.level * height
    n -= t.n << height >> level
    return (n << level) * HASH_SIZE, ((n + 1) << level) * HASH_SIZE


@pytest.mark.parametrize("size", [*range(1, 41), 63, 64, 65, 100])
def test_tile_hash_reader(size: int) -> None:
    """Go's TestTileHashReader: every stored hash reads back through tiles, one at a time and
    all at once; with any one hash tampered, reading it (or everything) fails."""
    storage = build([b"leaf %d" % i for i in range(size)])
    tree = Tree(size, tree_hash(size, storage))
    reader = tile_reader(storage)
    th = TileHashReader(tree, 2, reader)
    indexes = list(range(stored_hash_index(0, size)))
    for i in indexes:
        assert th([i]) == [storage[i]]
    assert th(indexes) == storage[: len(indexes)]
    for i in indexes:
        thz = TileHashReader(tree, 2, tile_reader(storage, zero=i))
        with pytest.raises(InconsistentTileError):
            thz([i])
        with pytest.raises(InconsistentTileError):
            thz(indexes)


def test_tile_hash_reader_checks_tile_lengths() -> None:
    storage = build([b"leaf %d" % i for i in range(10)])
    tree = Tree(10, tree_hash(10, storage))
    good = tile_reader(storage)
    short = TileHashReader(tree, 2, lambda tiles: [d[:-1] for d in good(tiles)])
    with pytest.raises(InconsistentTileError):
        short([0])
    missing = TileHashReader(tree, 2, lambda tiles: good(tiles)[:-1])
    with pytest.raises(InconsistentTileError):
        missing([0])


def test_tile_hash_reader_against_another_tree() -> None:
    """Tiles of one log never verify against the head of a log with another history."""
    a = build([b"leaf %d" % i for i in range(20)])
    b = build([b"leaf %d" % i for i in range(19)] + [b"forked"])
    tree_b = Tree(20, tree_hash(20, b))
    with pytest.raises(InconsistentTileError):
        TileHashReader(tree_b, 2, tile_reader(a))([0])


def test_plan_then_verify() -> None:
    """The two halves of TileHashReader, for a caller that fetches tiles itself (async)."""
    storage = build([b"leaf %d" % i for i in range(37)])
    tree = Tree(37, tree_hash(37, storage))
    plan = plan_tiles(tree, 3, [stored_hash_index(0, 5)])
    data = [read_tile_data(t, storage) for t in plan.tiles]
    assert verify_tiles(plan, data) == [storage[stored_hash_index(0, 5)]]
    data[-1] = bytes(len(data[-1]))
    with pytest.raises(InconsistentTileError):
        verify_tiles(plan, data)


def test_empty_tree() -> None:
    assert tree_hash(0, HashStorage()) == bytes(32)
    th = TileHashReader(Tree(0, bytes(32)), 2, lambda tiles: [])
    assert th([]) == []
    with pytest.raises(TlogError):
        th([0])


# Small trees, exhaustively, with the tamperings a lying server could try.
MAX_N = 64


@pytest.fixture(scope="module")
def small_log() -> tuple[HashStorage, list[bytes], list[bytes]]:
    records = [b"record %d\n" % i for i in range(MAX_N)]
    storage = build(records)
    heads = [tree_hash(n, storage) for n in range(MAX_N + 1)]
    return storage, [record_hash(r) for r in records], heads


def test_record_proofs_exhaustive(small_log: tuple[HashStorage, list[bytes], list[bytes]]) -> None:
    storage, leaves, heads = small_log
    for t in range(1, MAX_N + 1):
        for n in range(t):
            p = prove_record(t, n, storage)
            check_record(p, t, heads[t], n, leaves[n])
            other = (n + 1) % t
            if other != n:
                with pytest.raises(ProofError):  # the proof for n does not prove another leaf
                    check_record(p, t, heads[t], other, leaves[other])
            with pytest.raises(ProofError):  # nor the record with another hash
                check_record(p, t, heads[t], n, flip(leaves[n]))
            with pytest.raises(ProofError):  # nor against another tree head
                check_record(p, t, flip(heads[t]), n, leaves[n])
            with pytest.raises(ProofError):  # an extra hash is refused
                check_record([*p, leaves[n]], t, heads[t], n, leaves[n])
            if p:
                with pytest.raises(ProofError):  # so is a missing one
                    check_record(p[:-1], t, heads[t], n, leaves[n])


def test_tree_proofs_exhaustive(small_log: tuple[HashStorage, list[bytes], list[bytes]]) -> None:
    storage, _, heads = small_log
    for t in range(1, MAX_N + 1):
        for n in range(1, t + 1):
            p = prove_tree(t, n, storage)
            check_tree(p, t, heads[t], n, heads[n])
            with pytest.raises(ProofError):  # a forked old head
                check_tree(p, t, heads[t], n, flip(heads[n]))
            with pytest.raises(ProofError):  # a forked new head
                check_tree(p, t, flip(heads[t]), n, heads[n])
            with pytest.raises(ProofError):
                check_tree([*p, heads[n]], t, heads[t], n, heads[n])
            if p:
                with pytest.raises(ProofError):
                    check_tree(p[:-1], t, heads[t], n, heads[n])
            if n < t and n > 1:
                with pytest.raises(ProofError):  # claims about another old size
                    check_tree(p, t, heads[t], n - 1, heads[n - 1])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=150), st.data())
def test_proofs_for_any_records(records: list[bytes], data: st.DataObject) -> None:
    """Go's FuzzProveTreeSatisfiesCheckTree and FuzzProveRecordSatisfiesCheckRecord."""
    storage = build(records)
    size = len(records)
    head = tree_hash(size, storage)
    index = data.draw(st.integers(0, size - 1))
    check_record(prove_record(size, index, storage), size, head, index, record_hash(records[index]))
    prefix = data.draw(st.integers(1, size))
    check_tree(prove_tree(size, prefix, storage), size, head, prefix, tree_hash(prefix, storage))


def test_node_and_record_hash() -> None:
    """RFC 6962 section 2.1: leaves are hashed with 0x00, nodes with 0x01."""
    # The hash of the empty record, as published in RFC 6962's test vectors.
    assert record_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    a, b = record_hash(b"a"), record_hash(b"b")
    storage = build([b"a", b"b"])
    assert tree_hash(2, storage) == node_hash(a, b)


def test_invalid_inputs_are_value_errors() -> None:
    storage = build([b"x"])
    with pytest.raises(ValueError, match="invalid inputs"):
        prove_record(1, 1, storage)
    with pytest.raises(ValueError, match="invalid inputs"):
        prove_tree(1, 0, storage)
    with pytest.raises(ValueError, match="invalid inputs"):
        check_record([], 0, bytes(32), 0, bytes(32))
    with pytest.raises(ValueError, match="invalid inputs"):
        check_tree([], 1, bytes(32), 2, bytes(32))


# --- tree heads and records (tlog/note_test.go) ---------------------------------------------

TREE = b"go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"


def test_format_tree() -> None:
    assert format_tree(Tree(123456789012, record_hash(b"hello world"))) == TREE


def test_parse_tree() -> None:
    assert parse_tree(TREE) == Tree(123456789012, record_hash(b"hello world"))
    for good in [TREE + b"JOE", TREE + b"JOE\n", TREE + b"JOE\n" * 1000]:
        assert parse_tree(good) == Tree(123456789012, record_hash(b"hello world"))


@pytest.mark.parametrize(
    "bad",
    [
        b"not-" + TREE,
        b"go.sum database tree\n0xabcdef\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        b"go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n",
        # Ours: non-canonical sizes, a short hash, a missing newline, too long.
        b"go.sum database tree\n+5\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        b"go.sum database tree\n05\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        b"go.sum database tree\n-1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        b"go.sum database tree\n9223372036854775808\n"
        b"TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        b"go.sum database tree\n5\nAAAA\n",
        b"go.sum database tree\n5\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=",
        TREE + b"x" * 1_000_000,
    ],
)
def test_parse_tree_bad(bad: bytes) -> None:
    with pytest.raises(MalformedTreeError):
        parse_tree(bad)


def test_format_record() -> None:
    assert format_record(123456789012, b"hello, world\n") == b"123456789012\nhello, world\n\n"
    for bad in [b"", b"hello\nworld", b"hello\n\nworld\n", b"hello\x01world\n"]:
        with pytest.raises(MalformedRecordError):
            format_record(123456789012, bad)


def test_parse_record() -> None:
    msg = b"123456789012\nhello, world\n\njunk on end\x01\xff"
    assert parse_record(msg) == (123456789012, b"hello, world\n", b"junk on end\x01\xff")
    msg = b"123456789012\nhello, world\n\n"
    assert parse_record(msg) == (123456789012, b"hello, world\n", b"")
    for bad in [
        b"not-" + msg,
        b"123\nhello\x01world\n\n",
        b"123\nhello\xffworld\n\n",
        b"123\nhello world\n",
        b"0x123\nhello world\n\n",
    ]:
        with pytest.raises(MalformedRecordError):
            parse_record(bad)


def test_tlog_errors_are_verification_errors() -> None:
    for cls in (ProofError, InconsistentTileError, MalformedTreeError, MalformedRecordError):
        assert issubclass(cls, VerificationError)


# --- a lookup, end to end: signed head, record, tiles ---------------------------------------


def test_lookup_verifies_from_signed_head_and_tiles() -> None:
    """What the mirror does for ``/lookup``: open the signed head with the configured key,
    then prove the record is in that tree from tiles alone."""
    lines = [
        b"example.com/mod%d v1.0.%d h1:%s=\nexample.com/mod%d v1.0.%d/go.mod h1:%s=\n"
        % (i, i, b"A" * 43, i, i, b"B" * 43)
        for i in range(300)
    ]
    storage = build(lines)
    tree = Tree(300, tree_hash(300, storage))
    skey, vkey = generate_key("sum.example.com")
    signed = sign(format_tree(tree).decode(), parse_signer_key(skey))

    answer = format_record(123, lines[123]) + signed
    record_id, text, rest = parse_record(answer)
    head = parse_tree(open_note(rest, VerifierList(parse_verifier_key(vkey))).text.encode())
    assert head == tree

    height = 8

    def read(tiles: Sequence[Tile]) -> list[bytes]:
        return [read_tile_data(t, storage) for t in tiles]

    check_record_in_tiles(head, height, read, record_id, text)
    with pytest.raises(ProofError):
        check_record_in_tiles(head, height, read, record_id, lines[124])
    with pytest.raises(TlogError):
        check_record_in_tiles(head, height, read, 300, text)

    def tampered(tiles: Sequence[Tile]) -> list[bytes]:
        out = read(tiles)
        out[-1] = flip(out[-1])
        return out

    with pytest.raises(InconsistentTileError):
        check_record_in_tiles(head, height, tampered, record_id, text)


def test_check_tile() -> None:
    """What the mirror does before caching a tile: prove every hash in it from the tree."""
    storage = build([b"leaf %d" % i for i in range(70)])
    tree = Tree(70, tree_hash(70, storage))
    read = tile_reader(storage, height=2)
    for tile in [*new_tiles(2, 0, 70), Tile(2, 0, 3, 1), Tile(2, 1, 1, 2)]:
        data = read_tile_data(tile, storage)
        check_tile(tree, tile, data, read)
        for i in range(0, len(data), HASH_SIZE):
            bad = data[:i] + flip(data[i : i + HASH_SIZE]) + data[i + HASH_SIZE :]
            with pytest.raises(InconsistentTileError):
                check_tile(tree, tile, bad, read)
        with pytest.raises(InconsistentTileError):
            check_tile(tree, tile, data[:-1], read)
    # A tile beyond the tree cannot be proven from it.
    with pytest.raises(TlogError):
        check_tile(tree, Tile(2, 0, 17, 4), bytes(4 * HASH_SIZE), read)
