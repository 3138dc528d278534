"""Filesystem storage on a shared or failing volume: fsync on publish, staging that other
instances leave alone, and OS errors that become clear answers instead of 500s."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from entrepot.errors import NotFoundError, UnavailableError
from entrepot.storage.base import translate_os_error
from entrepot.storage.filesystem import STAGING, FilesystemStorage, remove_stale_staging


def test_publishing_fsyncs_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards a node crash leaving a zero-length artifact to be served forever."""
    store = FilesystemStorage(tmp_path)
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        synced.append("dir" if os.path.isdir(target) else "file")
        synced.append("published" if (tmp_path / "go/a.info").exists() else "not yet")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    asyncio.run(store.put_bytes("go/a.info", b"{}"))
    assert synced == ["file", "not yet", "dir", "published"]


def test_two_instances_on_one_volume_keep_out_of_each_others_staging(tmp_path: Path) -> None:
    """Guards instance B deleting A's in-flight staged files at start-up."""
    a = FilesystemStorage(tmp_path)
    with a.stage() as staged:
        staged.write_bytes(b"partial")
        b = FilesystemStorage(tmp_path)
        remove_stale_staging(tmp_path)
        assert a.staging_dir != b.staging_dir
        assert staged.read_bytes() == b"partial"
        b.close()
        assert staged.exists()
        assert not b.staging_dir.exists()


def test_only_staging_nobody_wrote_to_for_hours_is_removed(tmp_path: Path) -> None:
    old = tmp_path / STAGING / "host-1-w0-dead"
    old.mkdir(parents=True)
    (old / "x.part").write_bytes(b"left by a crash")
    long_ago = time.time() - 7 * 3600
    os.utime(old / "x.part", (long_ago, long_ago))
    os.utime(old, (long_ago, long_ago))
    live = FilesystemStorage(tmp_path)
    assert remove_stale_staging(tmp_path) == 1
    assert not old.exists()
    assert live.staging_dir.exists()


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        (errno.ENOSPC, UnavailableError, "cache volume is full"),
        (errno.EMFILE, UnavailableError, "out of file descriptors"),
        (errno.ENFILE, UnavailableError, "out of file descriptors"),
        (errno.ENAMETOOLONG, NotFoundError, "too long"),
        (errno.EROFS, UnavailableError, "read-only"),
    ],
)
def test_os_errors_of_the_volume_become_clear_answers(
    code: int, kind: type[Exception], text: str
) -> None:
    error = translate_os_error(OSError(code, os.strerror(code)), "example.com/m@v1.0.0")
    assert isinstance(error, kind)
    assert text in str(error)


def test_other_os_errors_stay_bugs() -> None:
    assert translate_os_error(OSError(errno.EINVAL, "invalid"), "x") is None


def test_a_key_too_long_for_the_filesystem_is_absent_not_an_error(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    key = "go/example.com/" + "a" * 300
    assert asyncio.run(store.stat(key)) is None
    with pytest.raises(NotFoundError, match="too long"):
        asyncio.run(store.put_bytes(key, b"x"))


def test_an_idle_live_instance_keeps_its_staging_however_old(tmp_path: Path) -> None:
    """Guards a starting instance deleting the folders of one that was idle for hours (found
    by the hostile review): the owner lock, not the age, says who is alive."""
    idle = FilesystemStorage(tmp_path)
    long_ago = time.time() - 7 * 3600
    for entry in [*idle.staging_dir.iterdir(), idle.staging_dir]:
        os.utime(entry, (long_ago, long_ago))
    assert remove_stale_staging(tmp_path) == 0
    assert idle.staging_dir.is_dir()
    idle.close()


def test_a_staging_folder_removed_behind_its_back_is_made_again(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    shutil.rmtree(store.staging_dir)
    assert store.writable()
    shutil.rmtree(store.staging_dir)
    blob = asyncio.run(store.put_bytes("go/a.info", b"{}"))
    assert blob.size == 2
    assert store.staging_dir.is_dir()
