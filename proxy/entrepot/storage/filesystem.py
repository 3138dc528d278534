"""Filesystem storage: one file per key under a root folder, published with ``os.replace``.

Each process stages its writes in its own folder, ``<root>/.staging/<owner>`` (same
filesystem, so the rename is atomic); whatever a crash or a cancelled fetch left there is
removed at start-up (:func:`reset_staging`, before any worker starts) and at shutdown. Local
paths are exposed so hits are served with sendfile. Cross-process fetch locks are ``flock``s
on files in ``<root>/.locks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from entrepot.storage.base import BlobInfo, check_key

STAGING = ".staging"
LOCKS = ".locks"
_LOCK_POLL = (0.005, 0.01, 0.02, 0.05, 0.1)


def reset_staging(root: Path) -> None:
    """Remove every staged (partial) write; call once before any server process starts."""
    shutil.rmtree(root / STAGING, ignore_errors=True)


class FilesystemStorage:
    def __init__(self, root: Path, *, owner: str = "main") -> None:
        self.root = root.resolve()
        self.staging_dir = self.root / STAGING / owner
        self.locks_dir = self.root / LOCKS
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        self.discard_staged()

    def discard_staged(self) -> int:
        """Remove this process's partial writes; returns how many."""
        removed = 0
        for entry in self.staging_dir.iterdir():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
        return removed

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.root / key

    async def stat(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return BlobInfo(key=key, size=st.st_size, mtime_ns=st.st_mtime_ns, path=path)

    async def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    @contextlib.contextmanager
    def stage(self) -> Iterator[Path]:
        path = self.staging_dir / f"{uuid.uuid4().hex}.part"
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def put(self, key: str, staged: Path) -> BlobInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)
        st = os.stat(path)
        return BlobInfo(key=key, size=st.st_size, mtime_ns=st.st_mtime_ns, path=path)

    async def put_bytes(self, key: str, data: bytes) -> BlobInfo:
        with self.stage() as staged:
            staged.write_bytes(data)
            return await self.put(key, staged)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    @contextlib.asynccontextmanager
    async def exclusive(self, key: str) -> AsyncIterator[None]:
        """An flock per key. Polled, not blocked on in a thread, so a waiter stays cancellable.

        The holder unlinks the lock file before releasing it: a waiter that then gets the
        orphaned file and a newcomer that creates a fresh one may both run, but both re-check
        the store first and find what the holder published.
        """
        path = self.locks_dir / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".lock")
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            attempt = 0
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(_LOCK_POLL[min(attempt, len(_LOCK_POLL) - 1)])
                    attempt += 1
            try:
                yield
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            os.close(fd)

    def writable(self) -> bool:
        try:
            with tempfile.NamedTemporaryFile(dir=self.staging_dir, prefix="probe-"):
                return True
        except OSError:
            return False
