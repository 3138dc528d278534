"""Two small in-process caches the protocols share: answers in memory, failures remembered."""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable

from entrepot.errors import EntrepotError, NotFoundError, UpstreamError, VerificationError
from entrepot.storage.base import BlobInfo


class MemoryCache:
    """A byte-bounded LRU of small answers: no disk read on a hit. Immutable ones (.info,
    .mod) are served from it without a stat; mutable ones (lists, @latest, queries) are
    stat-ed for freshness anyway and used only while the file is the same one.

    Each item is charged its key and body plus :data:`ITEM_OVERHEAD`, the Python objects that
    hold it: counting bodies alone let 64 MiB of tiny ``.info`` answers become 1.25 million
    items and 833 MiB of RSS. An item older than :data:`RECHECK_SECONDS` is checked against
    its file again (one ``stat``), so an entry purged on disk leaves every worker's memory too.
    """

    ITEM_OVERHEAD = 512
    RECHECK_SECONDS = 60.0

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.clock = clock
        self._items: OrderedDict[str, tuple[BlobInfo, bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def _cost(self, key: str, body: bytes) -> int:
        return len(key) + len(body) + self.ITEM_OVERHEAD

    def get(self, key: str) -> tuple[BlobInfo, bytes] | None:
        item = self._items.get(key)
        if item is None:
            return None
        blob, body, checked = item
        now = self.clock()
        if now - checked > self.RECHECK_SECONDS:
            if not _same_file(blob):
                self._drop(key)
                return None
            self._items[key] = (blob, body, now)
        self._items.move_to_end(key)
        return blob, body

    def put(self, key: str, blob: BlobInfo, body: bytes) -> None:
        cost = self._cost(key, body)
        if cost > self.max_bytes // 16 or key in self._items:
            return
        self._items[key] = (blob, body, self.clock())
        self.used += cost
        while self.used > self.max_bytes:
            old_key, (_, old, _) = self._items.popitem(last=False)
            self.used -= self._cost(old_key, old)

    def replace(self, key: str, blob: BlobInfo, body: bytes) -> None:
        """Put, dropping what the key held (a mutable answer that was refreshed)."""
        if key in self._items:
            self._drop(key)
        self.put(key, blob, body)

    def drop_prefix(self, prefix: str) -> None:
        """Forget every item whose key starts with ``prefix`` (rare: a linear walk)."""
        for key in [k for k in self._items if k.startswith(prefix)]:
            self._drop(key)

    def _drop(self, key: str) -> None:
        _, body, _ = self._items.pop(key)
        self.used -= self._cost(key, body)


def _same_file(blob: BlobInfo) -> bool:
    """Whether the blob's file is still the one that was read (not purged or replaced)."""
    if blob.path is None:
        return True
    try:
        st = os.stat(blob.path)
    except OSError:
        return False
    return st.st_mtime_ns == blob.mtime_ns and st.st_size == blob.size


class FailureCache:
    """Recent failed fetches, so a storm of requests for one bad path is one upstream request.

    'Not found' is remembered for ``not_found_ttl``, other upstream failures (timeouts, 5xx,
    refused bytes) for ``error_ttl``. Only the error's class and message are kept and a fresh
    exception is raised on each hit: re-raising one stored exception grew its traceback by a
    frame chain per request and pinned every request's frames (60,000 hits on one 404 path took
    a worker from 62 MB to 472 MB). The cache is bounded by bytes, oldest entries dropped.
    """

    ITEM_OVERHEAD = 256

    def __init__(self, *, not_found_ttl: float, error_ttl: float, max_bytes: int) -> None:
        self.not_found_ttl = not_found_ttl
        self.error_ttl = error_ttl
        self.max_bytes = max_bytes
        self.used = 0
        self._items: OrderedDict[str, tuple[float, type[EntrepotError], str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float) -> EntrepotError | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, kind, message = item
        if expires <= now:
            self._drop(key)
            return None
        return kind(message)

    def put(self, key: str, error: EntrepotError, now: float) -> None:
        ttl = self.not_found_ttl if isinstance(error, NotFoundError) else self.error_ttl
        if ttl <= 0 or not isinstance(error, NotFoundError | UpstreamError | VerificationError):
            return
        if key in self._items:
            self._drop(key)
        message = error.message
        self._items[key] = (now + ttl, _rebuildable(error), message)
        self.used += self._cost(key, message)
        while self.used > self.max_bytes and self._items:
            self._drop(next(iter(self._items)))

    def drop_prefix(self, prefix: str) -> None:
        for key in [k for k in self._items if k.startswith(prefix)]:
            self._drop(key)

    def forget(self, key: str) -> None:
        if key in self._items:
            self._drop(key)

    def _cost(self, key: str, message: str) -> int:
        return len(key) + len(message) + self.ITEM_OVERHEAD

    def _drop(self, key: str) -> None:
        _, _, message = self._items.pop(key)
        self.used -= self._cost(key, message)


def _rebuildable(error: EntrepotError) -> type[EntrepotError]:
    """The nearest class of ``error`` that can be built again from its message alone (the
    cache keeps only class and message): an error with keyword-only details (npm's
    IntegrityError) is given again as its base class, which keeps the status and the text."""
    for kind in type(error).__mro__:
        if not (isinstance(kind, type) and issubclass(kind, EntrepotError)):
            break
        try:
            kind(error.message)
        except TypeError:
            continue
        return kind
    return UpstreamError
