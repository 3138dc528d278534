"""Filesystem storage: one file per key under a root folder, published with ``os.replace``.

Staged files live in ``<root>/.staging`` (same filesystem, so the rename is atomic); anything
left there by a crash or a cancelled fetch is removed at start-up. Local paths are exposed so
hits are served with sendfile.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from entrepot.storage.base import BlobInfo, check_key

STAGING = ".staging"


class FilesystemStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.staging_dir = self.root / STAGING
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.discard_staged()

    def discard_staged(self) -> int:
        """Remove partial writes (after a crash or at shutdown); returns how many."""
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

    def writable(self) -> bool:
        try:
            with tempfile.NamedTemporaryFile(dir=self.staging_dir, prefix="probe-"):
                return True
        except OSError:
            return False
