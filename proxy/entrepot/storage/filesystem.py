"""Filesystem storage: one file per key under a root folder, published with ``os.replace``.

Each process stages its writes in a folder of its own, ``<root>/.staging/<owner>``, where the
owner name is unique per host, process and start (same filesystem, so the rename is atomic).
Several instances may share one data directory (replicas on a ReadWriteMany volume): nobody
ever deletes another instance's folder while it may be in use. A process removes its own
folder at shutdown; folders that nobody has written to for :data:`STALE_STAGING_SECONDS`
(left by a crash) are removed by whoever starts next. Publishing fsyncs the file and its
folder, so a node crash cannot leave an empty or torn artifact to be served forever. Local
paths are exposed so hits are served with sendfile. Cross-process fetch locks are ``flock``s
on files in ``<root>/.locks``.

OS errors that mean "not now" (a full volume, no file descriptors) become UnavailableError
(503), a name too long for the filesystem becomes NotFoundError: never a 500 with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from entrepot.storage.base import BlobInfo, check_key, os_errors

T = TypeVar("T")

STAGING = ".staging"
LOCKS = ".locks"
STALE_STAGING_SECONDS = 6 * 3600.0
"""Longer than any fetch may run (zip_deadline and direct.timeout are minutes)."""
_LOCK_POLL = (0.005, 0.01, 0.02, 0.05, 0.1)


def unique_owner(label: str) -> str:
    """A staging-folder name no other instance on any host sharing the volume can have."""
    host = "".join(c if c.isalnum() or c in "-." else "_" for c in socket.gethostname())[:64]
    return f"{host}-{os.getpid()}-{label}-{uuid.uuid4().hex[:8]}"


OWNER_LOCK = ".owner.lock"


def _folder_in_use(folder: Path) -> bool:
    """Whether a live process holds the folder's owner lock (flock, per open file)."""
    try:
        fd = os.open(folder / OWNER_LOCK, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: keep it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if it was taken
    return False


def remove_stale_staging(root: Path, *, older_than: float = STALE_STAGING_SECONDS) -> int:
    """Remove staging folders of processes that are gone; returns how many.

    A folder is removed only when no live process holds its owner lock *and* nobody wrote to
    it for ``older_than`` seconds: the lock says who is alive (an idle instance's folder is
    not touched for hours), the age guards volumes whose locks are not shared between hosts.
    """
    removed = 0
    cutoff = time.time() - older_than
    with contextlib.suppress(FileNotFoundError):
        for folder in (root / STAGING).iterdir():
            try:
                newest = max(
                    [folder.stat().st_mtime]
                    + [e.stat().st_mtime for e in folder.iterdir() if e.is_file()]
                )
            except OSError:
                continue
            if newest < cutoff and not _folder_in_use(folder):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed


@functools.lru_cache(maxsize=1 << 16)
def _key_path(root: Path, key: str) -> Path:
    check_key(key)
    return root / key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStorage:
    def __init__(self, root: Path, *, owner: str | None = None, fsync: bool = True) -> None:
        self.root = root.resolve()
        self.staging_dir = self.root / STAGING / (owner or unique_owner("main"))
        self.locks_dir = self.root / LOCKS
        self.fsync = fsync
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        self._owner_fd: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._claim_staging()

    def _claim_staging(self) -> None:
        """Create the staging folder (again, if something removed it) and hold its owner
        lock for the life of this process, so other instances know it is in use."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        if self._owner_fd is not None and (self.staging_dir / OWNER_LOCK).exists():
            return
        if self._owner_fd is not None:
            os.close(self._owner_fd)
        fd = os.open(self.staging_dir / OWNER_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._owner_fd = fd

    def close(self) -> None:
        """Remove this process's staging folder (at shutdown)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer can still use on the cache volume."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _path(self, key: str) -> Path:
        """The file of a key (checked, then memoized: pathlib joins cost more than the
        stat they are for)."""
        return _key_path(self.root, key)

    async def stat(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                return None
            raise
        return BlobInfo(key=key, size=st.st_size, mtime_ns=st.st_mtime_ns, path=path)

    async def get(self, key: str) -> bytes | None:
        try:
            with os_errors(key):
                return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    @contextlib.contextmanager
    def stage(self) -> Iterator[Path]:
        if not self.staging_dir.is_dir():  # removed behind our back: heal, never a 500
            with os_errors("staging"):
                self._claim_staging()
        path = self.staging_dir / f"{uuid.uuid4().hex}.part"
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def put(self, key: str, staged: Path) -> BlobInfo:
        path = self._path(key)
        with os_errors(key):
            st = await self._io(self._publish, staged, path, None)
        return BlobInfo(key=key, size=st.st_size, mtime_ns=st.st_mtime_ns, path=path)

    async def put_bytes(self, key: str, data: bytes) -> BlobInfo:
        path = self._path(key)
        with self.stage() as staged, os_errors(key):
            st = await self._io(self._publish, staged, path, data)
        return BlobInfo(key=key, size=st.st_size, mtime_ns=st.st_mtime_ns, path=path)

    def _publish(self, staged: Path, path: Path, data: bytes | None) -> os.stat_result:
        """(Write,) fsync, rename into place, fsync the folder: one trip to a thread, not
        one per step (a cold module is four publishes; each hop hands the GIL over twice)."""
        if data is not None:
            staged.write_bytes(data)
        if self.fsync:
            fd = os.open(staged, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)
        if self.fsync:
            _fsync_dir(path.parent)
        return os.stat(path)

    async def _io(self, fn: Callable[..., T], *args: object) -> T:
        """Run blocking file work (fsync mostly: waiting, not computing) on this store's own
        threads, so a burst of publishes neither queues behind CPU work (zip checks) in the
        loop's default pool nor starves it."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="entrepot-io")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    async def delete_prefix(self, prefix: str) -> None:
        check_key(prefix)
        await asyncio.to_thread(shutil.rmtree, self._path(prefix), ignore_errors=True)

    async def list_prefix(self, prefix: str) -> list[BlobInfo]:
        check_key(prefix)
        return await asyncio.to_thread(self._walk, prefix)

    def _walk(self, prefix: str) -> list[BlobInfo]:
        found: list[BlobInfo] = []
        top = self._path(prefix)
        for folder, _, files in os.walk(top):
            for file in files:
                path = Path(folder) / file
                try:
                    st = path.stat()
                except FileNotFoundError:  # removed while walking
                    continue
                key = path.relative_to(self.root).as_posix()
                found.append(BlobInfo(key=key, size=st.st_size, mtime_ns=st.st_mtime_ns, path=path))
        return found

    @contextlib.asynccontextmanager
    async def exclusive(self, key: str) -> AsyncIterator[None]:
        """An flock per key. Polled, not blocked on in a thread, so a waiter stays cancellable.

        The holder unlinks the lock file before releasing it, so the folder does not fill
        with lock files. A waiter that then gets the lock of the unlinked file does not hold
        the key's lock (a newcomer may have created a fresh file and locked it): it checks
        that the file it locked is still the one at the path, and otherwise starts over.
        """
        path = self.locks_dir / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".lock")
        attempt = 0
        while True:
            with os_errors(key):
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(_LOCK_POLL[min(attempt, len(_LOCK_POLL) - 1)])
                        attempt += 1
                try:
                    current = os.stat(path).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(fd).st_ino:
                    continue  # locked an unlinked file: try again on the one at the path
                try:
                    yield
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                return
            finally:
                os.close(fd)

    def writable(self) -> bool:
        try:
            if not self.staging_dir.is_dir():
                self._claim_staging()
            with tempfile.NamedTemporaryFile(dir=self.staging_dir, prefix="probe-"):
                return True
        except OSError:
            return False
