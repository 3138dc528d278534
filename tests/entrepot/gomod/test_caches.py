"""The in-memory caches: bounded by what they really cost, and never pinning request frames."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from entrepot.caches import FailureCache, MemoryCache
from entrepot.errors import (
    ForbiddenError,
    GoneError,
    NotFoundError,
    UnavailableError,
    UpstreamTimeoutError,
    VerificationError,
)
from entrepot.gomod.modfile import check_go_mod, module_paths
from entrepot.gomod.service import clean_list
from entrepot.storage.base import BlobInfo


def _raise_and_catch(cache: FailureCache, key: str) -> BaseException:
    error = cache.get(key, now=1.0)
    assert error is not None
    try:
        raise error
    except NotFoundError as e:
        return e


def test_a_remembered_failure_is_a_fresh_exception_each_time() -> None:
    """Guards the leak: one stored exception re-raised per hit grew its traceback forever."""
    cache = FailureCache(not_found_ttl=60, error_ttl=5, max_bytes=1 << 20)
    cache.put("k", GoneError("example.com/x@v1.0.0: gone"), now=0.0)
    first = _raise_and_catch(cache, "k")
    second = _raise_and_catch(cache, "k")
    assert first is not second
    assert type(second) is GoneError
    assert second.message == "example.com/x@v1.0.0: gone"
    depth = 0
    tb = second.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth == 1  # only the frame that raised it


def test_failures_expire_by_kind_and_what_is_not_an_upstream_failure_is_not_kept() -> None:
    cache = FailureCache(not_found_ttl=60, error_ttl=5, max_bytes=1 << 20)
    cache.put("missing", NotFoundError("missing"), now=0.0)
    cache.put("slow", UpstreamTimeoutError("slow"), now=0.0)
    cache.put("junk", VerificationError("junk"), now=0.0)
    cache.put("busy", UnavailableError("busy"), now=0.0)
    cache.put("denied", ForbiddenError("denied"), now=0.0)
    assert isinstance(cache.get("slow", now=4.9), UpstreamTimeoutError)
    assert isinstance(cache.get("junk", now=4.9), VerificationError)
    assert cache.get("slow", now=5.0) is None
    assert isinstance(cache.get("missing", now=59.0), NotFoundError)
    assert cache.get("missing", now=60.0) is None
    assert cache.get("busy", now=0.1) is None
    assert cache.get("denied", now=0.1) is None
    assert len(cache) == 1  # "junk" only; expired entries were dropped when asked


def test_the_failure_cache_is_bounded_by_bytes() -> None:
    cache = FailureCache(not_found_ttl=60, error_ttl=5, max_bytes=64 << 10)
    for i in range(20_000):
        cache.put(f"go/example.com/m{i}/@v/list", NotFoundError("x" * 3800), now=0.0)
    assert cache.used <= 64 << 10
    assert 0 < len(cache) < 20
    assert cache.get("go/example.com/m19999/@v/list", now=1.0) is not None  # newest kept
    assert cache.get("go/example.com/m0/@v/list", now=1.0) is None


def test_the_memory_cache_charges_each_item_its_overhead() -> None:
    """Guards 64 MiB of .info bodies becoming 1.25 million items and 833 MiB of RSS."""
    cache = MemoryCache(1 << 20)
    blob = BlobInfo(key="k", size=50, mtime_ns=1)
    for i in range(100_000):
        cache.put(f"go/example.com/m{i}/@v/v1.0.0.info", blob, b"x" * 50)
    assert cache.used <= 1 << 20
    assert len(cache) <= (1 << 20) // MemoryCache.ITEM_OVERHEAD


def test_the_memory_cache_forgets_a_purged_file_after_its_recheck(tmp_path: Path) -> None:
    now = [0.0]
    cache = MemoryCache(1 << 20, clock=lambda: now[0])
    path = tmp_path / "v1.0.0.mod"
    path.write_bytes(b"module example.com/m\n")
    st = os.stat(path)
    blob = BlobInfo(key="k", size=st.st_size, mtime_ns=st.st_mtime_ns, path=path)
    cache.put("k", blob, path.read_bytes())
    path.unlink()
    now[0] = MemoryCache.RECHECK_SECONDS - 1
    assert cache.get("k") is not None  # not rechecked yet: no syscall on the hot path
    now[0] = MemoryCache.RECHECK_SECONDS + 1
    assert cache.get("k") is None
    assert cache.used == 0


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ("module example.com/m\n", ["example.com/m"]),
        ('module "example.com/m" // quoted\n\ngo 1.21\n', ["example.com/m"]),
        ("// Deprecated: use x\nmodule `example.com/m`\n", ["example.com/m"]),
        ("module (\n\texample.com/m\n)\n", ["example.com/m"]),
        ("module(\n\texample.com/m\n)\n", ["example.com/m"]),
        ("module example.com/m\r\n\r\ngo 1.21\r\n", ["example.com/m"]),
        ("module example.com/m\nrequire (\n\tmodule v1.0.0\n)\n", ["example.com/m"]),
        ("module example.com/m\nretract (\n\tv1.0.0 // module broken\n)\n", ["example.com/m"]),
        ("module example.com/m\ntoolchain go1.22.0\nfuture directive\n", ["example.com/m"]),
        ("go 1.21\nrequire example.com/module v1.0.0\n", []),
        ("module a.example.com\nmodule b.example.com\n", ["a.example.com", "b.example.com"]),
        ("module // nothing\n", [""]),
        ("module example.com/m\x00\n", None),  # control characters do not lex
        ("module example.com/m\rmodule example.com/n\n", ["example.com/m"]),  # CR is a blank
        ("module `example.com/m\n", None),  # unterminated raw string
        ("module example.com/m\nrequire (\n\tx.example.com v1.0.0\n", None),  # open block
    ],
)
def test_module_statements_are_read_as_the_go_command_reads_them(
    text: str, paths: list[str] | None
) -> None:
    assert module_paths(text) == paths


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<!DOCTYPE html><html>login</html>", "instead of a go.mod"),
        (b"go 1.21\n", "has no module statement"),
        (b"module example.com/m\nmodule example.com/m\n", "2 module statements"),
        (b"module example.com/m\xff\n", "not UTF-8"),
        (b"module example.com/m\x00\n", "not a go.mod"),
        (b"module example.com/m/v2\n", "of another major version"),
        (b"module 404 page not found\n", "invalid module path '404'"),
        (b"module example.com/m\xc2\xa0\n", "invalid module path"),  # NBSP is no blank
    ],
)
def test_a_mod_that_is_not_a_go_mod_of_the_requested_major_is_refused(
    data: bytes, message: str
) -> None:
    with pytest.raises(VerificationError, match=message):
        check_go_mod(data, module="example.com/m", version="v1.0.0")


def test_a_mod_of_the_requested_module_or_of_a_fork_passes() -> None:
    check_go_mod(
        b"module example.com/m/v2\n\ngo 1.21\n", module="example.com/m/v2", version="v2.0.0"
    )
    check_go_mod(b"module gopkg.in/yaml.v3\n", module="gopkg.in/yaml.v3", version="v3.0.1")
    # A fork used through `replace` declares the path it was forked from; Go accepts it.
    check_go_mod(b"module example.com/orig/lib\n", module="example.com/fork/lib", version="v1.0.1")
    check_go_mod(b"module example.com/m\n", module="example.com/m", version="v2.0.0+incompatible")


def test_list_lines_that_are_not_versions_are_dropped() -> None:
    pseudo = b"v0.0.0-20240101000000-abcdefabcdef"
    raw = b"v1.0.0\n<html>\n../../etc\nv1.2\nv2.0.0+incompatible\n" + pseudo + b"\n"
    assert clean_list(raw) == b"v1.0.0\nv1.2\nv2.0.0+incompatible\n"
