"""The checksum database's transparency log: a port of ``golang.org/x/mod/sumdb/tlog``.

The log is an RFC 6962 Merkle tree: a record's hash is SHA-256(0x00 + data), an interior
node's is SHA-256(0x01 + left + right). Every hash the server ever computes is stored once, at
a dense *stored hash index* (Crosby and Wallach's ordering), and served in *tiles*: a tile of
height H at level L holds up to 2**H consecutive hashes of tree level H*L (level L = -1 holds
the records themselves). A client (and this mirror) trusts only a signed tree head
``(N, root hash)``; a tile is trusted once it is proven to hash up to that root, which is what
:class:`TileHashReader` does. Record proofs (inclusion) and tree proofs (consistency between
two sizes) are the usual RFC 6962 audit paths. All of this is pure: no I/O, no clock.

Hashes are plain 32-byte ``bytes``. Errors::

    VerificationError
    └── TlogError                  base of every log failure
        ├── ProofError             a record or tree proof does not check ("invalid
        │                          transparency proof")
        ├── InconsistentTileError  tile data does not hash up to the trusted tree
        ├── MalformedTreeError     a tree head text is not "go.sum database tree\\nN\\nhash\\n"
        └── MalformedRecordError   a lookup record is not "id\\ntext\\n\\n"
    InvalidRequestError
    └── InvalidTilePathError       a tile path is not canonical (tile/H/L/NNN[.p/W])

Invalid arguments (a record index outside the tree, a negative size) raise ValueError: they are
the caller's bug, not the upstream's.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from entrepot.errors import InvalidRequestError, VerificationError
from entrepot.sumdb.note import b64decode_strict

HASH_SIZE = 32
EMPTY_TREE_HASH = bytes(HASH_SIZE)  # the tree of size zero has an all-zero hash, by definition
_INT64_MAX = (1 << 63) - 1

HashReader = Callable[[Sequence[int]], Sequence[bytes]]
"""Returns the hashes at the given stored hash indexes, one per index, in order."""


class TlogError(VerificationError):
    """Log data from an upstream does not agree with a trusted tree head."""


class ProofError(TlogError):
    def __init__(self, message: str = "invalid transparency proof") -> None:
        super().__init__(message)


class InconsistentTileError(TlogError):
    def __init__(self, message: str = "downloaded inconsistent tile") -> None:
        super().__init__(message)


class MalformedTreeError(TlogError):
    def __init__(self, message: str = "malformed tree note") -> None:
        super().__init__(message)


class MalformedRecordError(TlogError):
    def __init__(self, message: str = "malformed record data") -> None:
        super().__init__(message)


class InvalidTilePathError(InvalidRequestError):
    def __init__(self, path: str) -> None:
        super().__init__(f"malformed tile path {path!r}")
        self.path = path


# --- hashes ---------------------------------------------------------------------------------


def record_hash(data: bytes) -> bytes:
    """SHA-256(0x00 + data): the hash of a log record (RFC 6962 section 2.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 + left + right): the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def parse_hash(text: str) -> bytes:
    """A base64 hash as printed in tree heads; raises TlogError if it is not 32 bytes."""
    data = b64decode_strict(text)
    if data is None or len(data) != HASH_SIZE:
        raise TlogError("malformed hash")
    return data


def format_hash(h: bytes) -> str:
    return binascii.b2a_base64(h, newline=False).decode("ascii")


def _maxpow2(n: int) -> tuple[int, int]:
    """(k, log2 k) for the largest power of two k smaller than n (k = 1 when n <= 2)."""
    level = max(0, (n - 1).bit_length() - 1)
    return 1 << level, level


def _trailing_zeros(n: int) -> int:
    return (n & -n).bit_length() - 1


# --- stored hash indexes --------------------------------------------------------------------


def stored_hash_index(level: int, n: int) -> int:
    """The position of the n'th hash at a tree level in the dense storage order."""
    # Level L's n'th hash is written right after level L-1's (2n+1)'th hash, so after level
    # 0's ((n+1) * 2**L - 1)'th. Level 0's m'th hash is written at m + m/2 + m/4 + ...,
    # which is 2m - popcount(m).
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of :func:`stored_hash_index`: index → (level, n)."""
    # stored_hash_index(0, n) < 2n, so the record is in [index/2, index/2 + log2(index)].
    n = index // 2
    index_n = stored_hash_index(0, n)
    if index_n > index:
        raise AssertionError("tlog: bad math in split_stored_hash_index")
    while True:
        # Each new record n adds 1 + trailing_zeros(n + 1) hashes.
        x = index_n + 1 + _trailing_zeros(n + 1)
        if x > index:
            break
        n += 1
        index_n = x
    # The hash was committed with record n: it is one of (0, n), (1, n/2), (2, n/4), ...
    level = index - index_n
    return level, n >> level


def stored_hash_count(n: int) -> int:
    """How many hashes a tree of n records stores."""
    if n == 0:
        return 0
    count = stored_hash_index(0, n - 1) + 1
    i = n - 1
    while i & 1:  # plus the subtrees completed by the last leaf
        count += 1
        i >>= 1
    return count


def stored_hashes(n: int, data: bytes, read: HashReader) -> list[bytes]:
    """The hashes to store when appending record n: its record hash, then any node hashes it
    completes (reading the needed earlier hashes through ``read``). Used to build test logs."""
    return stored_hashes_for_record_hash(n, record_hash(data), read)


def stored_hashes_for_record_hash(n: int, h: bytes, read: HashReader) -> list[bytes]:
    hashes = [h]
    m = _trailing_zeros(n + 1)
    indexes = [stored_hash_index(m - 1 - i, (n >> (m - 1 - i)) - 1) for i in range(m)]
    old = _read(read, indexes)
    for i in range(m):
        h = node_hash(old[m - 1 - i], h)
        hashes.append(h)
    return hashes


def _read(read: HashReader, indexes: Sequence[int]) -> Sequence[bytes]:
    if not indexes:
        return []
    hashes = read(indexes)
    if len(hashes) != len(indexes):
        raise TlogError(f"tlog: read {len(hashes)} hashes for {len(indexes)} indexes")
    return hashes


# --- tree hashes and proofs -----------------------------------------------------------------


def tree_hash(n: int, read: HashReader) -> bytes:
    """The root hash of the tree of n records, from at most 1 + log2(n) stored hashes."""
    if n == 0:
        return EMPTY_TREE_HASH
    indexes = _sub_tree_index(0, n, [])
    h, rest = _sub_tree_hash(0, n, _read(read, indexes))
    if rest:
        raise AssertionError("tlog: bad index math in tree_hash")
    return h


def _sub_tree_index(lo: int, hi: int, need: list[int]) -> list[int]:
    """Appends the stored indexes needed for the hash of records [lo, hi)."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        if lo & (k - 1):
            raise AssertionError("tlog: bad math in _sub_tree_index")
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _sub_tree_hash(lo: int, hi: int, hashes: Sequence[bytes]) -> tuple[bytes, Sequence[bytes]]:
    """The hash of records [lo, hi) from the hashes _sub_tree_index asked for; returns the
    unused rest. The left part is the largest complete subtree, the right part recurses."""
    num_tree = 0
    while lo < hi:
        k, _ = _maxpow2(hi - lo + 1)
        if lo & (k - 1):
            raise AssertionError("tlog: bad math in _sub_tree_hash")
        num_tree += 1
        lo += k
    if len(hashes) < num_tree:
        raise AssertionError("tlog: bad index math in _sub_tree_hash")
    h = hashes[num_tree - 1]
    for i in range(num_tree - 2, -1, -1):
        h = node_hash(hashes[i], h)
    return h, hashes[num_tree:]


def prove_record(t: int, n: int, read: HashReader) -> list[bytes]:
    """The proof that the tree of size t contains record n (RFC 6962's audit path)."""
    if t < 0 or n < 0 or n >= t:
        raise ValueError(f"tlog: invalid inputs in prove_record(t={t}, n={n})")
    indexes = _leaf_proof_index(0, t, n, [])
    if not indexes:
        return []
    p, rest = _leaf_proof(0, t, n, _read(read, indexes))
    if rest:
        raise AssertionError("tlog: bad index math in prove_record")
    return p


def _leaf_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo <= n < hi:
        raise AssertionError("tlog: bad math in _leaf_proof_index")
    if lo + 1 == hi:
        return need
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        _leaf_proof_index(lo, lo + k, n, need)
        _sub_tree_index(lo + k, hi, need)
    else:
        _sub_tree_index(lo, lo + k, need)
        _leaf_proof_index(lo + k, hi, n, need)
    return need


def _leaf_proof(
    lo: int, hi: int, n: int, hashes: Sequence[bytes]
) -> tuple[list[bytes], Sequence[bytes]]:
    if not lo <= n < hi:
        raise AssertionError("tlog: bad math in _leaf_proof")
    if lo + 1 == hi:  # the leaf itself: the verifier knows its hash
        return [], hashes
    # Walk down toward n, recording the hash of the path not taken.
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        p, hashes = _leaf_proof(lo, lo + k, n, hashes)
        th, hashes = _sub_tree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _sub_tree_hash(lo, lo + k, hashes)
        p, hashes = _leaf_proof(lo + k, hi, n, hashes)
    p.append(th)
    return p, hashes


def check_record(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """Raises ProofError unless ``proof`` shows that the tree of size t with hash th has
    record hash h at index n."""
    if t < 0 or n < 0 or n >= t:
        raise ValueError(f"tlog: invalid inputs in check_record(t={t}, n={n})")
    if _run_record_proof(proof, 0, t, n, h) != th:
        raise ProofError()


def _run_record_proof(p: Sequence[bytes], lo: int, hi: int, n: int, leaf: bytes) -> bytes:
    """The subtree hash of [lo, hi) that proof p implies for leaf n."""
    if not lo <= n < hi:
        raise AssertionError("tlog: bad math in _run_record_proof")
    if lo + 1 == hi:
        if p:  # the proof must not carry unneeded hashes
            raise ProofError()
        return leaf
    if not p:
        raise ProofError()
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        return node_hash(_run_record_proof(p[:-1], lo, lo + k, n, leaf), p[-1])
    return node_hash(p[-1], _run_record_proof(p[:-1], lo + k, hi, n, leaf))


def prove_tree(t: int, n: int, read: HashReader) -> list[bytes]:
    """The proof that the tree of size t has the tree of size n <= t as a prefix (RFC 6962's
    consistency proof)."""
    if t < 1 or n < 1 or n > t:
        raise ValueError(f"tlog: invalid inputs in prove_tree(t={t}, n={n})")
    indexes = _tree_proof_index(0, t, n, [])
    if not indexes:
        return []
    p, rest = _tree_proof(0, t, n, _read(read, indexes))
    if rest:
        raise AssertionError("tlog: bad index math in prove_tree")
    return p


def _tree_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo < n <= hi:
        raise AssertionError("tlog: bad math in _tree_proof_index")
    if n == hi:
        if lo == 0:
            return need
        return _sub_tree_index(lo, hi, need)
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        _tree_proof_index(lo, lo + k, n, need)
        _sub_tree_index(lo + k, hi, need)
    else:
        _sub_tree_index(lo, lo + k, need)
        _tree_proof_index(lo + k, hi, n, need)
    return need


def _tree_proof(
    lo: int, hi: int, n: int, hashes: Sequence[bytes]
) -> tuple[list[bytes], Sequence[bytes]]:
    if not lo < n <= hi:
        raise AssertionError("tlog: bad math in _tree_proof")
    if n == hi:  # common ground
        if lo == 0:  # exactly the old tree, whose hash the verifier knows
            return [], hashes
        th, hashes = _sub_tree_hash(lo, hi, hashes)
        return [th], hashes
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        p, hashes = _tree_proof(lo, lo + k, n, hashes)
        th, hashes = _sub_tree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _sub_tree_hash(lo, lo + k, hashes)
        p, hashes = _tree_proof(lo + k, hi, n, hashes)
    p.append(th)
    return p, hashes


def check_tree(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """Raises ProofError unless ``proof`` shows that the tree of size t with hash th contains
    as a prefix the tree of size n with hash h."""
    if t < 1 or n < 1 or n > t:
        raise ValueError(f"tlog: invalid inputs in check_tree(t={t}, n={n})")
    h2, th2 = _run_tree_proof(proof, 0, t, n, h)
    if th2 != th or h2 != h:
        raise ProofError()


def _run_tree_proof(
    p: Sequence[bytes], lo: int, hi: int, n: int, old: bytes
) -> tuple[bytes, bytes]:
    """The (old tree, new tree) hashes of the subtree [lo, hi) that proof p implies."""
    if not lo < n <= hi:
        raise AssertionError("tlog: bad math in _run_tree_proof")
    if n == hi:
        if lo == 0:
            if p:
                raise ProofError()
            return old, old
        if len(p) != 1:
            raise ProofError()
        return p[0], p[0]
    if not p:
        raise ProofError()
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        oh, th = _run_tree_proof(p[:-1], lo, lo + k, n, old)
        return oh, node_hash(th, p[-1])
    oh, th = _run_tree_proof(p[:-1], lo + k, hi, n, old)
    return node_hash(p[-1], oh), node_hash(p[-1], th)


# --- tree heads and records -----------------------------------------------------------------

_TREE_PREFIX = b"go.sum database tree\n"


@dataclass(frozen=True)
class Tree:
    """A tree head: the log's size and root hash (the text a database signs)."""

    n: int
    hash: bytes


def format_tree(tree: Tree) -> bytes:
    return b"go.sum database tree\n%d\n%s\n" % (tree.n, format_hash(tree.hash).encode())


def parse_tree(text: bytes) -> Tree:
    """``go.sum database tree\\nN\\nhash\\n`` → Tree; later lines are ignored (Go's rule for
    forward compatibility)."""
    if not text.startswith(_TREE_PREFIX) or text.count(b"\n") < 3 or len(text) > 1_000_000:
        raise MalformedTreeError()
    lines = text.split(b"\n", 3)
    n = _parse_int64(lines[1], signed=False)
    if n is None:
        raise MalformedTreeError()
    h = b64decode_strict(lines[2].decode("ascii", errors="replace"))
    if h is None or len(h) != HASH_SIZE:
        raise MalformedTreeError()
    return Tree(n, h)


def _parse_int64(text: bytes, *, signed: bool) -> int | None:
    """Go's strconv.ParseInt(s, 10, 64) (optional sign, ASCII digits, in range); with
    ``signed=False``, also canonical and non-negative, as ParseTree demands."""
    digits = text[1:] if signed and text[:1] in (b"+", b"-") else text
    if not digits or not digits.isdigit() or not digits.isascii():
        return None
    n = int(text)
    if not -_INT64_MAX - 1 <= n <= _INT64_MAX:
        return None
    if not signed and text != b"%d" % n:
        return None
    return n


def _is_valid_record_text(text: bytes) -> bool:
    """UTF-8, no control character but newline, no blank line, ends in a newline."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if any(c < " " and c != "\n" for c in decoded):
        return False
    return decoded.endswith("\n") and "\n\n" not in decoded


def format_record(record_id: int, text: bytes) -> bytes:
    """A lookup record: the id, the text and a blank line."""
    if not _is_valid_record_text(text):
        raise MalformedRecordError()
    return b"%d\n%s\n" % (record_id, text)


def parse_record(msg: bytes) -> tuple[int, bytes, bytes]:
    """(id, text, rest) from a lookup answer, which holds the record then the signed tree."""
    i = msg.find(b"\n")
    if i < 0:
        raise MalformedRecordError()
    record_id = _parse_int64(msg[:i], signed=True)
    if record_id is None:
        raise MalformedRecordError()
    msg = msg[i + 1 :]
    i = msg.find(b"\n\n")
    if i < 0:
        raise MalformedRecordError()
    text, rest = msg[: i + 1], msg[i + 2 :]
    if not _is_valid_record_text(text):
        raise MalformedRecordError()
    return record_id, text, rest


# --- tiles ----------------------------------------------------------------------------------

_PATH_BASE = 1000  # N is written three digits per path element: x123/x456/789


@dataclass(frozen=True)
class Tile:
    """``width`` consecutive hashes of tree level ``height * level``, starting at hash
    ``n * 2**height``; complete when ``width == 2**height``. Level -1 holds record data."""

    height: int  # 1..30
    level: int  # -1..63
    n: int
    width: int  # 1..2**height

    @property
    def path(self) -> str:
        """``tile/H/L/NNN[.p/W]``, e.g. ``tile/3/4/x001/x234/067.p/1``."""
        n = self.n
        n_str = f"{n % _PATH_BASE:03d}"
        while n >= _PATH_BASE:
            n //= _PATH_BASE
            n_str = f"x{n % _PATH_BASE:03d}/{n_str}"
        p_str = f".p/{self.width}" if self.width != 1 << self.height else ""
        level = "data" if self.level == -1 else str(self.level)
        return f"tile/{self.height}/{level}/{n_str}{p_str}"


def tile_path(tile: Tile) -> str:
    return tile.path


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi on 64-bit: optional sign, ASCII digits."""
    return _parse_int64(text.encode(), signed=True) if text.isascii() else None


def parse_tile_path(path: str) -> Tile:
    """``tile/H/L/NNN[.p/W]`` (or ``tile/H/data/...``) → Tile; only the canonical spelling of
    a tile is accepted, so one tile has one cache key."""
    f = path.split("/")
    if len(f) < 4 or f[0] != "tile":
        raise InvalidTilePathError(path)
    h = _atoi(f[1])
    is_data = f[2] == "data"
    level = 0 if is_data else _atoi(f[2])
    if h is None or level is None or h < 1 or level < 0 or h > 30:
        raise InvalidTilePathError(path)
    w = 1 << h
    if f[-2].endswith(".p"):
        ww = _atoi(f[-1])
        if ww is None or ww <= 0 or ww >= w:
            raise InvalidTilePathError(path)
        w = ww
        f = [*f[:-2], f[-2][: -len(".p")]]
    n = 0
    for s in f[3:]:
        nn = _atoi(s.removeprefix("x"))
        if nn is None or nn < 0 or nn >= _PATH_BASE:
            raise InvalidTilePathError(path)
        n = n * _PATH_BASE + nn
    if n > _INT64_MAX:
        raise InvalidTilePathError(path)
    tile = Tile(height=h, level=-1 if is_data else level, n=n, width=w)
    if tile.path != path:
        raise InvalidTilePathError(path)
    return tile


def tile_for_index(height: int, index: int) -> Tile:
    """The narrowest tile of the given height that holds the hash at a stored index."""
    if height <= 0:
        raise ValueError(f"tile_for_index: invalid height {height}")
    return _tile_for_index(height, index)[0]


def _tile_for_index(height: int, index: int) -> tuple[Tile, int, int]:
    """The tile, and the byte range of its data whose tile hash is the wanted hash."""
    level, n = split_stored_hash_index(index)
    tile_level = level // height
    level -= tile_level * height  # the level within the tile
    tile_n = n << level >> height
    n -= tile_n << height >> level  # n within the tile, at that level
    tile = Tile(height=height, level=tile_level, n=tile_n, width=(n + 1) << level)
    return tile, (n << level) * HASH_SIZE, ((n + 1) << level) * HASH_SIZE


def hash_from_tile(tile: Tile, data: bytes, index: int) -> bytes:
    """The hash at a stored index, from the data of its tile (``tile_for_index`` or wider)."""
    h = tile.height
    if not (1 <= h <= 30 and 0 <= tile.level < 64 and 1 <= tile.width <= 1 << h):
        raise TlogError(f"invalid tile {tile.path}")
    if len(data) < tile.width * HASH_SIZE:
        raise TlogError(f"data len {len(data)} too short for tile {tile.path}")
    t1, start, end = _tile_for_index(tile.height, index)
    if tile.level != t1.level or tile.n != t1.n or tile.width < t1.width:
        raise TlogError(f"index {index} is in {t1.path} not {tile.path}")
    return _tile_hash(data[start:end])


def _tile_hash(data: bytes) -> bytes:
    """The subtree hash over the 2**k hashes in data."""
    if not data:
        raise AssertionError("tlog: bad math in _tile_hash")
    if len(data) == HASH_SIZE:
        return data
    half = len(data) // 2
    return node_hash(_tile_hash(data[:half]), _tile_hash(data[half:]))


def new_tiles(height: int, old_tree_size: int, new_tree_size: int) -> list[Tile]:
    """The tiles published when a tree grows from old to new size (none for size zero)."""
    if height <= 0:
        raise ValueError(f"new_tiles: invalid height {height}")
    tiles: list[Tile] = []
    level = 0
    while new_tree_size >> (height * level) > 0:
        old_n = old_tree_size >> (height * level)
        new_n = new_tree_size >> (height * level)
        if old_n != new_n:
            for n in range(old_n >> height, new_n >> height):
                tiles.append(Tile(height=height, level=level, n=n, width=1 << height))
            n = new_n >> height
            w = new_n - (n << height)
            if w > 0:
                tiles.append(Tile(height=height, level=level, n=n, width=w))
        level += 1
    return tiles


def read_tile_data(tile: Tile, read: HashReader) -> bytes:
    """A tile's data (its hashes, concatenated), read from stored hashes."""
    size = tile.width or 1 << tile.height
    start = tile.n << tile.height
    level = tile.height * tile.level
    return b"".join(_read(read, [stored_hash_index(level, start + i) for i in range(size)]))


def _tile_parent(tile: Tile, k: int, n: int) -> Tile | None:
    """The k'th parent of a tile in the tiles of a tree of size n (k = 0: the tile itself,
    as wide as that tree makes it), or None if the tree has no such tile."""
    level = tile.level + k
    tile_n = tile.n >> (k * tile.height)
    width = 1 << tile.height
    limit = n >> (level * tile.height)
    if (tile_n << tile.height) + width >= limit:
        if tile_n << tile.height >= limit:
            return None
        width = limit - (tile_n << tile.height)
    return Tile(height=tile.height, level=level, n=tile_n, width=width)


@dataclass(frozen=True)
class TilePlan:
    """Which tiles to fetch to read some hashes of a tree, and where each hash lies.

    ``tiles`` lists parents before children: first those holding the hashes the root is made
    of (``root_indexes``), then the chains down to each wanted hash."""

    tree: Tree
    tiles: list[Tile]
    root_indexes: list[int]
    root_tile_order: list[int]  # root_indexes[i] is in tiles[root_tile_order[i]]
    indexes: list[int]
    index_tile_order: list[int]  # indexes[i] is in tiles[index_tile_order[i]]
    tile_order: dict[Tile, int]


def _planned(tile_order: dict[Tile, int], tile: Tile | None) -> int | None:
    return None if tile is None else tile_order.get(tile)


def plan_tiles(tree: Tree, height: int, indexes: Sequence[int]) -> TilePlan:
    """The tiles needed to read and authenticate the hashes at ``indexes`` against ``tree``.

    Pure, so a caller can fetch the tiles concurrently, then call :func:`verify_tiles`.
    Raises TlogError for an index the tree does not hold."""
    tile_order: dict[Tile, int] = {}
    tiles: list[Tile] = []

    # The tiles holding the hashes the root hash is computed from: if it matches, they are
    # authentic.
    stx = _sub_tree_index(0, tree.n, [])
    stx_tile_order: list[int] = []
    for x in stx:
        tile = _tile_parent(_tile_for_index(height, x)[0], 0, tree.n)
        if tile is None:
            raise AssertionError("tlog: bad math in plan_tiles: lost root tile")
        if tile not in tile_order:
            tile_order[tile] = len(tiles)
            tiles.append(tile)
        stx_tile_order.append(tile_order[tile])

    # The tiles holding the wanted hashes, with the parents that authenticate them (for most
    # calls those parents are among the root tiles already).
    limit = stored_hash_index(0, tree.n)
    index_tile_order: list[int] = []
    for x in indexes:
        if not 0 <= x < limit:
            raise TlogError(f"hash index {x} is not in the tree of size {tree.n}")
        tile = _tile_for_index(height, x)[0]
        # Walk up to the first tile already planned: it will be authenticated.
        k = 0
        while (j := _planned(tile_order, _tile_parent(tile, k, tree.n))) is None:
            k += 1
        if k == 0:
            index_tile_order.append(j)
            continue
        # Walk back down, planning children after their parents.
        for kk in range(k - 1, -1, -1):
            p = _tile_parent(tile, kk, tree.n)
            if p is None or p.width != 1 << p.height:
                # Only full tiles have parents, and this one has one.
                raise AssertionError(f"tlog: bad math in plan_tiles: {tree.n} {x} {p}")
            tile_order[p] = len(tiles)
            tiles.append(p)
        index_tile_order.append(len(tiles) - 1)

    return TilePlan(
        tree=tree,
        tiles=tiles,
        root_indexes=stx,
        root_tile_order=stx_tile_order,
        indexes=list(indexes),
        index_tile_order=index_tile_order,
        tile_order=tile_order,
    )


def verify_tiles(plan: TilePlan, data: Sequence[bytes]) -> list[bytes]:
    """Check fetched tile data (``data[i]`` for ``plan.tiles[i]``) against the plan's tree and
    return the wanted hashes. Raises InconsistentTileError if any tile does not hash up to
    the tree: only then may the tiles be cached."""
    tiles, tree = plan.tiles, plan.tree
    if len(data) != len(tiles):
        raise InconsistentTileError(f"got {len(data)} tiles, want {len(tiles)}")
    for tile, d in zip(tiles, data, strict=True):
        if len(d) != tile.width * HASH_SIZE:
            raise InconsistentTileError(
                f"tile {tile.path} has {len(d)} bytes, want {tile.width * HASH_SIZE}"
            )

    # The root tiles against the tree hash.
    if plan.root_indexes:
        th = b""
        for i in range(len(plan.root_indexes) - 1, -1, -1):
            j = plan.root_tile_order[i]
            h = hash_from_tile(tiles[j], data[j], plan.root_indexes[i])
            th = h if i == len(plan.root_indexes) - 1 else node_hash(h, th)
        if th != tree.hash:
            # At least one of the tiles is wrong; which one cannot be told.
            raise InconsistentTileError()
        first_child = plan.root_tile_order[-1] + 1
    else:
        first_child = 0  # an empty tree: nothing to read, so no tiles either

    # Every other tile against its (already authenticated) parent.
    for i in range(first_child, len(tiles)):
        tile = tiles[i]
        p = _tile_parent(tile, 1, tree.n)
        pj = _planned(plan.tile_order, p)
        if p is None or pj is None:
            raise AssertionError(f"tlog: bad math in verify_tiles: lost parent of {tile}")
        h = hash_from_tile(p, data[pj], stored_hash_index(p.level * p.height, tile.n))
        if h != _tile_hash(data[i]):
            raise InconsistentTileError()

    return planned_hashes(plan, data)


def planned_hashes(plan: TilePlan, data: Sequence[bytes]) -> list[bytes]:
    """The wanted hashes from the data of a plan's tiles: proven only if :func:`verify_tiles`
    accepted that data for that tree (now, or earlier for the same bytes)."""
    return [
        hash_from_tile(plan.tiles[j], data[j], x)
        for x, j in zip(plan.indexes, plan.index_tile_order, strict=True)
    ]


TileReader = Callable[[Sequence[Tile]], Sequence[bytes]]
"""Returns the data of the given tiles, one per tile, in order (typically fetched from an
upstream: suspect until :func:`verify_tiles` accepts it)."""


class TileHashReader:
    """A HashReader over the tiles of a trusted tree (Go's tlog.TileHashReader): every hash
    it returns is proven to be in the tree. ``save`` is told about tiles once they are proven,
    which is when they may be cached."""

    def __init__(
        self,
        tree: Tree,
        height: int,
        read_tiles: TileReader,
        save: Callable[[Sequence[Tile], Sequence[bytes]], None] | None = None,
    ) -> None:
        if height <= 0:
            raise ValueError(f"TileHashReader: invalid height {height}")
        self.tree = tree
        self.height = height
        self._read_tiles = read_tiles
        self._save = save

    def __call__(self, indexes: Sequence[int]) -> list[bytes]:
        plan = plan_tiles(self.tree, self.height, indexes)
        data = self._read_tiles(plan.tiles) if plan.tiles else []
        hashes = verify_tiles(plan, data)
        if self._save is not None and plan.tiles:
            self._save(plan.tiles, data)
        return hashes


def check_record_in_tiles(
    tree: Tree, height: int, read_tiles: TileReader, record_id: int, text: bytes
) -> None:
    """Raises unless record ``text`` is the tree's record ``record_id``, proven from tiles.

    This is how a lookup answer is checked: its record's hash must be the level-0 hash the
    tiles of a verified tree hold at that index."""
    if not 0 <= record_id < tree.n:
        raise TlogError(f"record {record_id} is not in the tree of size {tree.n}")
    reader = TileHashReader(tree, height, read_tiles)
    (h,) = reader([stored_hash_index(0, record_id)])
    if h != record_hash(text):
        raise ProofError(f"record {record_id} does not match the tree of size {tree.n}")


def check_tile(tree: Tree, tile: Tile, data: bytes, read_tiles: TileReader) -> None:
    """Raises unless ``data`` is the hash tile ``tile`` of the trusted tree (level >= 0).

    Every hash in the tile is read through a :class:`TileHashReader` (which proves it from
    ``read_tiles``, a reader that may serve ``data`` itself for this tile) and compared with
    ``data``: a partial tile must be a prefix of what the tree holds there."""
    if tile.level < 0:
        raise ValueError(f"check_tile: {tile.path} is a data tile, not a hash tile")
    if len(data) != tile.width * HASH_SIZE:
        raise InconsistentTileError(
            f"tile {tile.path} has {len(data)} bytes, want {tile.width * HASH_SIZE}"
        )
    level, start = tile.level * tile.height, tile.n << tile.height
    indexes = [stored_hash_index(level, start + i) for i in range(tile.width)]
    if b"".join(TileHashReader(tree, tile.height, read_tiles)(indexes)) != data:
        raise InconsistentTileError()


def record_proof_indexes(t: int, n: int) -> list[int]:
    """The stored hashes :func:`prove_record` reads (so they can be fetched first, async)."""
    if t < 0 or n < 0 or n >= t:
        raise ValueError(f"tlog: invalid inputs in record_proof_indexes(t={t}, n={n})")
    return _leaf_proof_index(0, t, n, [])


def tree_proof_indexes(t: int, n: int) -> list[int]:
    """The stored hashes :func:`prove_tree` reads (so they can be fetched first, async)."""
    if t < 1 or n < 1 or n > t:
        raise ValueError(f"tlog: invalid inputs in tree_proof_indexes(t={t}, n={n})")
    return _tree_proof_index(0, t, n, [])


def parse_data_tile(tile: Tile, data: bytes) -> list[bytes]:
    """The record texts of a data tile (``tile/H/data/N``): each record's text then a blank
    line. Some servers put each record's id line first (``FormatRecord``); both are read, and
    ids, when present, must run on from the tile's first leaf."""
    if tile.level != -1:
        raise ValueError(f"parse_data_tile: {tile.path} is a hash tile")
    texts: list[bytes] = []
    first = tile.n << tile.height
    pos = 0
    while pos < len(data):
        if len(texts) >= tile.width:
            raise MalformedRecordError(
                f"data tile {tile.path} holds more than {tile.width} records"
            )
        end = data.find(b"\n\n", pos)
        if end < 0:
            raise MalformedRecordError(f"data tile {tile.path}: a record does not end")
        chunk, pos = data[pos : end + 1], end + 2
        head, _, rest = chunk.partition(b"\n")
        if head.isdigit():
            if int(head) != first + len(texts):
                raise MalformedRecordError(
                    f"data tile {tile.path}: record {int(head)} where {first + len(texts)} belongs"
                )
            chunk = rest
        if not _is_valid_record_text(chunk):
            raise MalformedRecordError(f"data tile {tile.path}: malformed record")
        texts.append(chunk)
    if len(texts) != tile.width:
        raise MalformedRecordError(
            f"data tile {tile.path} holds {len(texts)} records, want {tile.width}"
        )
    return texts
