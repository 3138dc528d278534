"""The storage role: stat / get / put / delete of immutable-once-written blobs.

Blobs become visible atomically: a writer fills a *staged* file and ``put`` publishes it in one
step, so a reader sees the old blob, the new one, or nothing, never a half-written file. A
backend that can hand out a local path (the filesystem) lets the server use sendfile.
"""

from __future__ import annotations

import contextlib
import errno
import functools
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from entrepot.errors import EntrepotError, NotFoundError, UnavailableError


@dataclass(frozen=True)
class BlobInfo:
    """What the server needs to answer for a blob without reading it."""

    key: str
    size: int
    mtime_ns: int
    path: Path | None = None  # a local file, when the backend has one (sendfile)

    @functools.cached_property
    def etag(self) -> str:
        """A strong validator; the same formula aiohttp's FileResponse uses for files."""
        return f'"{self.mtime_ns:x}-{self.size:x}"'


class Storage(Protocol):
    """A key → bytes store. Keys are '/'-separated, already validated, never '..'."""

    async def stat(self, key: str) -> BlobInfo | None:
        """The blob's metadata, or None when absent."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The whole blob (only for small blobs: lists, .info, .mod), or None when absent."""
        ...

    def stage(self) -> AbstractContextManager[Path]:
        """A temporary local file to fill before :meth:`put`; removed on exit if not put."""
        ...

    async def put(self, key: str, staged: Path) -> BlobInfo:
        """Publish a staged file under ``key`` atomically (replacing any previous blob)."""
        ...

    async def put_bytes(self, key: str, data: bytes) -> BlobInfo:
        """Publish small bytes under ``key`` atomically."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob if present."""
        ...

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every blob whose key starts with ``prefix + "/"`` (a folder of blobs)."""
        ...

    async def list_prefix(self, prefix: str) -> list[BlobInfo]:
        """Every blob whose key starts with ``prefix + "/"``, in no order (maintenance scans,
        not request paths)."""
        ...

    def exclusive(self, key: str) -> AbstractAsyncContextManager[None]:
        """Hold the fetch lock of ``key`` across processes (and replicas, where supported).

        The holder re-checks the store before fetching, so N workers make one upstream fetch.
        """
        ...

    def free_bytes(self) -> int:
        """Bytes that can still be written (for /readyz and refusing fetches on a full volume)."""
        ...

    def writable(self) -> bool:
        """True when a blob can be written now (for /readyz)."""
        ...


def check_key(key: str) -> None:
    """Refuse keys that could escape the store; callers build keys from validated paths."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid storage key {key!r}")


def iter_chunks(data: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def translate_os_error(e: OSError, what: str) -> EntrepotError | None:
    """The error to answer for an OSError of the cache volume, or None for a real bug."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return UnavailableError(
            f"{what}: the mirror's cache volume is full; cached modules are still served,"
            " new ones cannot be stored until space is freed"
        )
    if e.errno in (errno.EMFILE, errno.ENFILE):
        return UnavailableError(f"{what}: the mirror is out of file descriptors; retry shortly")
    if e.errno == errno.ENAMETOOLONG:
        return NotFoundError(f"{what}: a path element is too long for the mirror's cache")
    if e.errno == errno.EROFS:
        return UnavailableError(f"{what}: the mirror's cache volume is read-only")
    return None


@contextlib.contextmanager
def os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        translated = translate_os_error(e, what)
        if translated is None:
            raise
        raise translated from e
