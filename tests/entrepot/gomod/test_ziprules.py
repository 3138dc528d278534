"""Tests for entrepot.gomod.ziprules: Go's module-zip rules and the h1: hashes.

Every zip here is crafted with Python's zipfile (and patched bytes for the lies a hostile
upstream could tell). The integration tests hand the very same zips to the real go command
through a file:// GOPROXY and check that it reaches the same verdict and the same hashes.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from entrepot.errors import TooLargeError, VerificationError
from entrepot.gomod.ziprules import ZipReport, h1_files, h1_mod, str_to_fold, verify_zip

MODULE = "example.com/fixture"
VERSION = "v1.0.0"
PREFIX = f"{MODULE}@{VERSION}/"
GO_MOD = b"module example.com/fixture\n\ngo 1.21\n"
GO = Path("/usr/local/go/bin/go")

# Computed by the real go command (`go mod download -json`, see test_go_agrees) for the
# "basic" zip below and for GO_MOD; not by this module.
BASIC_H1 = "h1:AGrc54dQ0x653vxdkKMnqm0MD3meY3GHxAFIHmrCVdU="
GO_MOD_H1 = "h1:rk/vd3JEiKmA4uy8Lvt9VI9PjK0ppxqNYXaCnm78Jlc="

MiB = 1 << 20


# --------------------------------------------------------------------------------------------
# Building and patching zips


def write_zip(
    path: Path,
    files: list[tuple[str, bytes]],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
    prefix: str = PREFIX,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name" is what we want
        with zipfile.ZipFile(path, "w", compression) as z:
            for name, data in files:
                z.writestr(prefix + name, data)


BASIC = [
    ("go.mod", GO_MOD),
    ("fixture.go", b"package fixture\n\nconst Answer = 42\n"),
    ("LICENSE", b"Public domain.\n"),
    ("internal/sub/sub.go", b"package sub\n"),
]


def _cd_entries(data: bytes) -> list[tuple[int, int, str]]:
    """(central directory record offset, local header offset, raw name) of each entry."""
    eocd = data.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", data, eocd + 12)
    out = []
    pos = cd_offset
    while pos < cd_offset + cd_size:
        assert data[pos : pos + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        (local,) = struct.unpack_from("<I", data, pos + 42)
        name = data[pos + 46 : pos + 46 + name_len].decode("utf-8", "surrogateescape")
        out.append((pos, local, name))
        pos += 46 + name_len + extra_len + comment_len
    return out


def patch_entry(
    path: Path,
    name: str,
    *,
    crc: int | None = None,
    compress_size: int | None = None,
    file_size: int | None = None,
) -> None:
    """Rewrite header fields of one entry, in both the local header and the central directory."""
    data = bytearray(path.read_bytes())
    for cd, local, entry_name in _cd_entries(bytes(data)):
        if entry_name != PREFIX + name:
            continue
        for value, cd_field, local_field in (
            (crc, 16, 14),
            (compress_size, 20, 18),
            (file_size, 24, 22),
        ):
            if value is not None:
                struct.pack_into("<I", data, cd + cd_field, value)
                struct.pack_into("<I", data, local + local_field, value)
        path.write_bytes(bytes(data))
        return
    raise AssertionError(f"no entry {name}")


def data_offset(path: Path, name: str) -> int:
    data = path.read_bytes()
    for _, local, entry_name in _cd_entries(data):
        if entry_name == PREFIX + name:
            name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
            return int(local + 30 + name_len + extra_len)
    raise AssertionError(f"no entry {name}")


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors (flag bit 3)."""

    def __init__(self, sink: io.BufferedWriter) -> None:
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        return int(self.sink.write(b))


def write_zip_with_descriptors(path: Path, files: list[tuple[str, bytes]]) -> None:
    with (
        path.open("wb") as sink,
        zipfile.ZipFile(_Unseekable(sink), "w", zipfile.ZIP_DEFLATED) as z,
    ):
        for name, data in files:
            z.writestr(PREFIX + name, data)


# --------------------------------------------------------------------------------------------
# The cases: (id, builder, None if valid else a regex the message must match, too large?)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], None]
    error: str | None = None
    too_large: bool = False


def _files(
    files: list[tuple[str, bytes]],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
    prefix: str = PREFIX,
) -> Callable[[Path], None]:
    return lambda p: write_zip(p, files, compression=compression, prefix=prefix)


def _bytes(make: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """A patch that replaces the whole file by ``make(old bytes)``."""

    def run(p: Path) -> None:
        p.write_bytes(make(p.read_bytes() if p.exists() else b""))

    return run


def _then(
    build: Callable[[Path], None], *patches: Callable[[Path], None]
) -> Callable[[Path], None]:
    def run(p: Path) -> None:
        build(p)
        for patch in patches:
            patch(p)

    return run


def _dirs_and_unicode(p: Path) -> None:
    with zipfile.ZipFile(p, "w") as z:
        z.writestr(PREFIX, b"")  # the module root itself, as some zippers write it
        z.writestr(PREFIX + "go.mod", GO_MOD, zipfile.ZIP_STORED)
        z.writestr(PREFIX + "données/", b"")
        z.writestr(PREFIX + "données/é.go", b"package donn\xc3\xa9es\n", zipfile.ZIP_DEFLATED)
        z.writestr(PREFIX + "empty.txt", b"", zipfile.ZIP_DEFLATED)


def _bomb(p: Path) -> None:
    """32 MiB of zeros whose headers claim 1000 bytes (and carry the CRC of those 1000)."""
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(PREFIX + "go.mod", GO_MOD)
        with z.open(PREFIX + "bomb.bin", "w") as w:
            for _ in range(32):
                w.write(bytes(MiB))
    patch_entry(p, "bomb.bin", file_size=1000, crc=zlib.crc32(bytes(1000)))


def _non_utf8_name(p: Path) -> None:
    write_zip(p, [("go.mod", GO_MOD), ("xQ.go", b"package x\n")])
    p.write_bytes(p.read_bytes().replace(b"xQ.go", b"x\xff.go"))


def _non_utf8_name_flagged_utf8(p: Path) -> None:
    _non_utf8_name(p)
    data = bytearray(p.read_bytes())
    for cd, local, _ in _cd_entries(bytes(data)):
        data[cd + 9] |= 0x08
        data[local + 7] |= 0x08
    p.write_bytes(bytes(data))


def _bad_local_signature(p: Path) -> None:
    write_zip(p, BASIC)
    data = bytearray(p.read_bytes())
    local = next(loc for _, loc, n in _cd_entries(bytes(data)) if n == PREFIX + "fixture.go")
    data[local + 3] = 0x05
    p.write_bytes(bytes(data))


def _descriptor_crc_lie(p: Path) -> None:
    write_zip_with_descriptors(p, BASIC)
    info = zipfile.ZipFile(p).getinfo(PREFIX + "fixture.go")
    offset = data_offset(p, "fixture.go") + info.compress_size
    data = bytearray(p.read_bytes())
    assert data[offset : offset + 4] == b"PK\x07\x08"
    data[offset + 4] ^= 0xFF
    p.write_bytes(bytes(data))


def _add_comment(p: Path) -> None:
    with zipfile.ZipFile(p, "a") as z:
        z.comment = b"made by hand"


def _zip64(p: Path) -> None:
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in BASIC:
            with z.open(PREFIX + name, "w", force_zip64=True) as w:
                w.write(data)


def _utf8_names_without_flag(p: Path) -> None:
    """Go reads names as raw bytes and ignores the UTF-8 flag; Python would decode as cp437."""
    _dirs_and_unicode(p)
    data = bytearray(p.read_bytes())
    for cd, local, _ in _cd_entries(bytes(data)):
        data[cd + 9] &= ~0x08 & 0xFF  # bit 11 of the flags is bit 3 of their second byte
        data[local + 7] &= ~0x08 & 0xFF
    p.write_bytes(bytes(data))
    assert not any(i.flag_bits & 0x800 for i in zipfile.ZipFile(p).infolist())


def _set_encrypted_flag(p: Path) -> None:
    """archive/zip ignores flag bit 0, and so must we: Go accepts such a zip."""
    data = bytearray(p.read_bytes())
    for cd, local, _ in _cd_entries(bytes(data)):
        data[cd + 8] |= 1
        data[local + 6] |= 1
    p.write_bytes(bytes(data))


BIG = b" " * (16 * MiB + 1)  # compresses to ~16 KiB

CASES = [
    # Valid zips.
    Case("basic", _files(BASIC)),
    Case("stored", _files(BASIC, compression=zipfile.ZIP_STORED)),
    Case("dirs_and_unicode", _dirs_and_unicode),
    Case("data_descriptors", lambda p: write_zip_with_descriptors(p, BASIC)),
    Case("no_go_mod", _files([("a.go", b"package a\n")])),
    Case("no_files", _files([])),
    Case("sharp_s_is_not_ss", _files([("ß.go", b"package a\n"), ("ss.go", b"package a\n")])),
    Case("vendor_kept", _files([("go.mod", GO_MOD), ("vendor/x/y/y.go", b"package y\n")])),
    # Go reads deflate data up to the end of the stream, whatever the compressed size says.
    Case(
        "compressed_size_past_end",
        _then(_files(BASIC), lambda p: patch_entry(p, "fixture.go", compress_size=1 << 30)),
    ),
    Case(
        "prepended_data",
        _then(_files(BASIC), _bytes(lambda b: b"#!/bin/sh\n" + b)),
    ),
    Case("trailing_garbage", _then(_files(BASIC), _bytes(lambda b: b + b"junk"))),
    Case("zip_comment", _then(_files(BASIC), _add_comment)),
    Case("zip64", _zip64),
    Case("utf8_names_without_flag", _utf8_names_without_flag),
    Case("duplicate_root_dir", _files([("", b""), ("", b""), ("go.mod", GO_MOD)])),
    Case("encryption_flag_on_plain_data", _then(_files(BASIC), _set_encrypted_flag)),
    Case("go_mod_at_limit", _files([("go.mod", GO_MOD + b" " * (16 * MiB - len(GO_MOD)))])),
    # Names.
    Case("wrong_module", _files(BASIC, prefix="example.com/other@v1.0.0/"), "does not have prefix"),
    Case("wrong_version", _files(BASIC, prefix=f"{MODULE}@v1.0.1/"), "does not have prefix"),
    Case("no_slash", _files([("", b"x")], prefix=f"{MODULE}@{VERSION}"), "does not have prefix"),
    Case("dotdot", _files([("go.mod", GO_MOD), ("../evil.go", b"x")]), 'invalid path element ".."'),
    Case("inner_dotdot", _files([("go.mod", GO_MOD), ("a/../b.go", b"x")]), "not clean"),
    Case("dot", _files([("go.mod", GO_MOD), ("a/./b.go", b"x")]), "not clean"),
    Case("double_slash", _files([("go.mod", GO_MOD), ("a//b.go", b"x")]), "not clean"),
    Case("absolute", _files([("/etc/passwd", b"x")]), "empty path element"),
    Case("trailing_slash_dir", _files([("a//", b"")]), "not clean"),
    Case("backslash", _files([("a\\b.go", b"x")]), r"malformed file path .*invalid char"),
    Case("colon", _files([("a:b.go", b"x")]), "malformed file path"),
    Case("windows_name", _files([("con.go", b"x")]), "malformed file path"),
    Case("non_utf8", _non_utf8_name, "not valid UTF-8"),
    Case("non_utf8_flagged_utf8", _non_utf8_name_flagged_utf8, "not valid UTF-8"),
    Case("case_fold", _files([("A.go", b"x"), ("a.go", b"y")]), "case-insensitive"),
    Case("kelvin_sign", _files([("k.go", b"x"), ("\u212a.go", b"y")]), "case-insensitive"),
    Case("dir_case_fold", _files([("Sub/a.go", b"x"), ("sub/b.go", b"y")]), "case-insensitive"),
    Case("duplicate", _files([("a.go", b"x"), ("a.go", b"x")]), "multiple entries for file"),
    Case("file_and_dir", _files([("a", b"x"), ("a/b.go", b"y")]), "both a file and a directory"),
    Case("nested_go_mod", _files([("go.mod", GO_MOD), ("a/go.mod", GO_MOD)]), "not in module root"),
    Case("nested_go_mod_case", _files([("a/Go.Mod", GO_MOD)]), "not in module root"),
    Case("root_go_mod_case", _files([("GO.MOD", GO_MOD)]), "must have lowercase names"),
    Case("dir_with_content", _files([("go.mod", GO_MOD), ("sub/", b"x")]), "directory entry"),
    # Sizes.
    Case("go_mod_too_large", _files([("go.mod", BIG)]), "go.mod file too large", too_large=True),
    Case("license_too_large", _files([("LICENSE", BIG)]), "LICENSE file too large", True),
    Case(
        "total_too_large",
        _then(
            _files([("go.mod", GO_MOD), ("a.bin", b"x")], compression=zipfile.ZIP_STORED),
            lambda p: patch_entry(p, "a.bin", file_size=501 * MiB),
        ),
        "total uncompressed size",
        too_large=True,
    ),
    # Lies about content.
    Case(
        "size_lie_smaller",
        _then(_files(BASIC), lambda p: patch_entry(p, "fixture.go", file_size=10)),
        "does not match header",
    ),
    Case(
        "size_lie_smaller_matching_crc",
        _then(
            _files(BASIC),
            lambda p: patch_entry(p, "fixture.go", file_size=7, crc=zlib.crc32(b"package")),
        ),
        "does not match header",
    ),
    Case(
        "size_lie_larger",
        _then(_files(BASIC), lambda p: patch_entry(p, "fixture.go", file_size=1000)),
        "does not match header",
    ),
    Case(
        "size_lie_stored",
        _then(
            _files(BASIC, compression=zipfile.ZIP_STORED),
            lambda p: patch_entry(p, "fixture.go", file_size=7, crc=zlib.crc32(b"package")),
        ),
        "does not match header",
    ),
    Case("bomb", _bomb, "does not match header"),
    Case(
        "crc_stored",
        _then(
            _files(BASIC, compression=zipfile.ZIP_STORED),
            lambda p: flip_byte(p, data_offset(p, "fixture.go") + 3),
        ),
        "CRC-32 mismatch",
    ),
    Case(
        "corrupt_deflate",
        _then(_files(BASIC), lambda p: flip_byte(p, data_offset(p, "fixture.go") + 2)),
        "CRC-32 mismatch|corrupt deflate|does not match header",
    ),
    Case("descriptor_crc", _descriptor_crc_lie, "data descriptor"),
    Case("bad_local_header", _bad_local_signature, "local file header"),
    Case(
        "bzip2",
        _files([("go.mod", GO_MOD)], compression=zipfile.ZIP_BZIP2),
        "unsupported compression method 12",
    ),
    # Broken zips.
    Case(
        "truncated",
        _then(_files(BASIC), _bytes(lambda b: b[: len(b) // 2])),
        "not a valid zip file",
    ),
    Case(
        "compressed_size_too_small",
        _then(_files(BASIC), lambda p: patch_entry(p, "fixture.go", compress_size=5)),
        "truncated",
    ),
    Case(
        "compressed_size_too_small_stored",
        _then(
            _files(BASIC, compression=zipfile.ZIP_STORED),
            lambda p: patch_entry(p, "fixture.go", compress_size=5),
        ),
        "does not match header",
    ),
    Case("not_a_zip", _bytes(lambda _: b"<html>502 Bad Gateway</html>"), "not a valid zip"),
    Case("empty_file", _bytes(lambda _: b""), "not a valid zip"),
]


# --------------------------------------------------------------------------------------------
# Unit tests


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cases(tmp_path: Path, case: Case) -> None:
    zip_path = tmp_path / "m.zip"
    case.build(zip_path)
    if case.error is None:
        report = verify_zip(zip_path, module=MODULE, version=VERSION)
        assert report.h1.startswith("h1:")
        return
    with pytest.raises(VerificationError) as info:
        verify_zip(zip_path, module=MODULE, version=VERSION)
    message = info.value.message
    assert re.search(case.error, message), message
    assert message.startswith(f"zip for {MODULE}@{VERSION} rejected: ")
    assert "\n" not in message
    assert isinstance(info.value, TooLargeError) == case.too_large
    # Library errors never escape untranslated, but stay attached for debugging.
    cause = info.value.__cause__
    assert cause is None or isinstance(cause, Exception)


def test_basic_report_and_go_vector(tmp_path: Path) -> None:
    zip_path = tmp_path / "m.zip"
    write_zip(zip_path, BASIC)
    assert verify_zip(zip_path, module=MODULE, version=VERSION) == ZipReport(
        h1=BASIC_H1,
        files=4,
        uncompressed_bytes=sum(len(d) for _, d in BASIC),
        has_go_mod=True,
    )
    # Compression, entry order and data descriptors do not change the hash.
    write_zip(zip_path, BASIC[::-1], compression=zipfile.ZIP_STORED)
    assert verify_zip(zip_path, module=MODULE, version=VERSION).h1 == BASIC_H1
    write_zip_with_descriptors(zip_path, BASIC)
    assert verify_zip(zip_path, module=MODULE, version=VERSION).h1 == BASIC_H1


def test_dirs_are_hashed_but_not_counted(tmp_path: Path) -> None:
    zip_path = tmp_path / "m.zip"
    _dirs_and_unicode(zip_path)
    report = verify_zip(zip_path, module=MODULE, version=VERSION)
    assert report.files == 3
    assert report.has_go_mod
    # Names are bytes to Go: without the UTF-8 flag they hash the same.
    _utf8_names_without_flag(zip_path)
    assert verify_zip(zip_path, module=MODULE, version=VERSION) == report
    # dirhash.HashZip hashes every entry, directories included (as empty files).
    assert report.h1 == h1_files(
        [
            (PREFIX, b""),
            (PREFIX + "go.mod", GO_MOD),
            (PREFIX + "données/", b""),
            (PREFIX + "données/é.go", "package données\n".encode()),
            (PREFIX + "empty.txt", b""),
        ]
    )


def test_h1_mod_go_vector() -> None:
    assert h1_mod(GO_MOD) == GO_MOD_H1
    assert h1_files([("go.mod", GO_MOD)]) == GO_MOD_H1


def test_h1_files() -> None:
    # No files: the SHA-256 of an empty summary.
    assert h1_files([]) == "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    files = [(PREFIX + n, d) for n, d in BASIC]
    assert h1_files(files) == BASIC_H1
    assert h1_files(reversed(files)) == BASIC_H1  # order does not matter
    assert h1_files(iter(files)) == BASIC_H1  # any iterable
    with pytest.raises(ValueError, match="newlines"):
        h1_files([("a\nb", b"")])


def test_zip_larger_than_max_zip_bytes(tmp_path: Path) -> None:
    zip_path = tmp_path / "m.zip"
    write_zip(zip_path, BASIC)
    size = zip_path.stat().st_size
    assert verify_zip(zip_path, module=MODULE, version=VERSION, max_zip_bytes=size).files == 4
    with pytest.raises(TooLargeError, match=rf"module zip file is too large \({size} bytes"):
        verify_zip(zip_path, module=MODULE, version=VERSION, max_zip_bytes=size - 1)


def test_a_zip_with_too_many_entries_is_refused_before_its_directory_is_parsed(
    tmp_path: Path,
) -> None:
    """Guards memory: millions of empty entries would be parsed into Python objects."""
    zip_path = tmp_path / "m.zip"
    files = [(f"f{i}.txt", b"") for i in range(300)]
    write_zip(zip_path, files)
    assert verify_zip(zip_path, module=MODULE, version=VERSION, max_entries=300).files == 300
    with pytest.raises(TooLargeError, match="module zip has more than 299 entries; this mirror"):
        verify_zip(zip_path, module=MODULE, version=VERSION, max_entries=299)


def test_a_zip_that_declares_fewer_entries_than_it_holds_is_still_refused(
    tmp_path: Path,
) -> None:
    """Guards the review finding: 3,000,000 entries declaring 1 took a worker to 1.17 GB,
    because zipfile parses the central directory by its byte size, not the declared count."""
    zip_path = tmp_path / "m.zip"
    write_zip(zip_path, [(f"f{i}.txt", b"") for i in range(2000)])
    data = bytearray(zip_path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 1, 1)  # entries on this disk, entries in total
    zip_path.write_bytes(bytes(data))
    with pytest.raises(TooLargeError, match="more than 1000 entries"):
        verify_zip(zip_path, module=MODULE, version=VERSION, max_entries=1000)


def test_a_central_directory_over_its_byte_cap_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    zip_path = tmp_path / "m.zip"
    write_zip(zip_path, [(f"f{i}.txt", b"") for i in range(100)])
    with pytest.raises(TooLargeError, match=r"central directory is .* bytes; this mirror accepts"):
        verify_zip(zip_path, module=MODULE, version=VERSION, max_directory_bytes=1000)


def test_missing_file_is_a_verification_error(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="cannot read zip file") as info:
        verify_zip(tmp_path / "nope.zip", module=MODULE, version=VERSION)
    assert isinstance(info.value.__cause__, OSError)


def test_message_names_file_and_rule(tmp_path: Path) -> None:
    zip_path = tmp_path / "m.zip"
    write_zip(zip_path, [("go.mod", GO_MOD), ("a/go.mod", GO_MOD)])
    with pytest.raises(VerificationError) as info:
        verify_zip(zip_path, module=MODULE, version=VERSION)
    assert info.value.message == (
        'zip for example.com/fixture@v1.0.0 rejected: file "example.com/fixture@v1.0.0/a/go.mod": '
        "go.mod file not in module root directory"
    )


@pytest.mark.parametrize(
    ("module", "version", "error"),
    [
        (MODULE, "v1.0", r'version "v1.0" is not canonical \(should be "v1.0.0"\)'),
        (MODULE, "latest", "not canonical"),
        (MODULE, "v2.0.0", "should be v0 or v1, not v2"),
        (MODULE + "/v2", "v1.0.0", "should be v2, not v1"),
        ("Example.com/x", "v1.0.0", "malformed module path"),
    ],
)
def test_module_and_version_are_checked(
    tmp_path: Path, module: str, version: str, error: str
) -> None:
    with pytest.raises(VerificationError, match=error):
        verify_zip(tmp_path / "m.zip", module=module, version=version)


@pytest.mark.parametrize(
    ("module", "version"),
    [(MODULE + "/v2", "v2.0.0"), (MODULE, "v2.0.0+incompatible"), ("gopkg.in/yaml.v3", "v3.0.1")],
)
def test_major_versions_accepted(tmp_path: Path, module: str, version: str) -> None:
    zip_path = tmp_path / "m.zip"
    write_zip(zip_path, [("a.go", b"package a\n")], prefix=f"{module}@{version}/")
    assert verify_zip(zip_path, module=module, version=version).files == 1


def test_bomb_is_not_inflated(tmp_path: Path) -> None:
    """The lie is caught right after the declared size: memory stays flat."""
    zip_path = tmp_path / "m.zip"
    _bomb(zip_path)
    tracemalloc.start()
    try:
        with pytest.raises(VerificationError, match="larger than the declared 1000 bytes"):
            verify_zip(zip_path, module=MODULE, version=VERSION)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB


def test_large_zip_uses_constant_memory(tmp_path: Path) -> None:
    zip_path = tmp_path / "m.zip"
    chunk = os.urandom(MiB)  # incompressible: the zip really is ~48 MiB on disk
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr(PREFIX + "go.mod", GO_MOD)
        for i in range(3):
            with z.open(f"{PREFIX}data/{i}.bin", "w") as w:
                for _ in range(16):
                    w.write(chunk)
    tracemalloc.start()
    try:
        report = verify_zip(zip_path, module=MODULE, version=VERSION)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.uncompressed_bytes == 48 * MiB + len(GO_MOD)
    assert peak < 4 * MiB


def test_str_to_fold() -> None:
    assert str_to_fold("go.mod") == "go.mod"
    assert str_to_fold("Go.MOD") == str_to_fold("go.mod")
    assert str_to_fold("\u212a") == str_to_fold("k") == str_to_fold("K")  # Kelvin sign
    assert str_to_fold("\u017f") == str_to_fold("s")  # long s
    assert str_to_fold("ẞ") == str_to_fold("ß")  # capital sharp s: simple fold only
    assert str_to_fold("ß") != str_to_fold("ss")  # unlike str.casefold
    assert str_to_fold("İ") != str_to_fold("i")  # no Turkic folding
    assert str_to_fold("\u03a3") == str_to_fold("\u03c3") == str_to_fold("\u03c2")  # sigmas


# --------------------------------------------------------------------------------------------
# Integration: the real go command is the oracle


def _go_env(home: Path, proxy: Path) -> dict[str, str]:
    return {
        "PATH": f"{GO.parent}:/usr/bin:/bin",
        "GOPROXY": proxy.as_uri(),
        "GOSUMDB": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GOMODCACHE": str(home / "modcache"),
        "GOPATH": str(home / "gopath"),
        "GOCACHE": str(home / "gocache"),
        "HOME": str(home),
        "GONOSUMDB": "",
        "GOPRIVATE": "",
    }


def _go_download(tmp_path: Path, build: Callable[[Path], None]) -> tuple[Path, dict[str, str]]:
    proxy = tmp_path / "proxy"
    v = proxy / MODULE / "@v"  # example.com/fixture has nothing to escape
    v.mkdir(parents=True)
    (v / "list").write_text(f"{VERSION}\n")
    (v / f"{VERSION}.info").write_text(
        json.dumps({"Version": VERSION, "Time": "2024-01-01T00:00:00Z"})
    )
    (v / f"{VERSION}.mod").write_bytes(GO_MOD)
    build(v / f"{VERSION}.zip")
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [str(GO), "mod", "download", "-json", f"{MODULE}@{VERSION}"],
        cwd=home,
        env=_go_env(home, proxy),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        check=False,
    )
    out: dict[str, str] = json.loads(result.stdout) if result.stdout.strip() else {}
    if result.returncode != 0:
        out.setdefault("Error", result.stderr.strip() or "go failed")
    return v / f"{VERSION}.zip", out


needs_go = pytest.mark.skipif(not GO.exists(), reason="needs the go command")


@pytest.mark.integration
@needs_go
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_go_agrees(tmp_path: Path, case: Case) -> None:
    zip_path, go = _go_download(tmp_path, case.build)
    if case.error is not None:
        assert "Error" in go, f"go accepted a zip we reject: {go}"
        with pytest.raises(VerificationError):
            verify_zip(zip_path, module=MODULE, version=VERSION)
        return
    assert "Error" not in go, go["Error"]
    assert verify_zip(zip_path, module=MODULE, version=VERSION).h1 == go["Sum"]
    assert h1_mod(GO_MOD) == go["GoModSum"]
    if case.id == "basic":
        assert go["Sum"] == BASIC_H1
        assert go["GoModSum"] == GO_MOD_H1


_FOLD_ORBITS_GO = """
package main

import (
	"bufio"
	"fmt"
	"os"
	"unicode"
)

// Prints "rune min" for every rune whose SimpleFold orbit has a smaller member.
func main() {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue
		}
		m := r
		for x := unicode.SimpleFold(r); x != r; x = unicode.SimpleFold(x) {
			m = min(m, x)
		}
		if m != r {
			fmt.Fprintf(w, "%x %x\\n", r, m)
		}
	}
}
"""


@pytest.mark.integration
@needs_go
def test_str_to_fold_matches_go_exhaustively(tmp_path: Path) -> None:
    """Two runes fold together for us iff they share a unicode.SimpleFold orbit in Go."""
    src = tmp_path / "orbits.go"
    src.write_text(_FOLD_ORBITS_GO)
    home = tmp_path / "home"
    home.mkdir()
    env = _go_env(home, tmp_path) | {"GOFLAGS": "", "GO111MODULE": "off"}
    result = subprocess.run(
        [str(GO), "run", str(src)], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    go_min: dict[int, int] = {}
    pairs = result.stdout.split()
    for r, m in zip(pairs[::2], pairs[1::2], strict=True):
        go_min[int(r, 16)] = int(m, 16)
    assert go_min[ord("k")] == ord("K")
    ours_to_go: dict[str, int] = {}
    go_to_ours: dict[int, str] = {}
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ours = str_to_fold(chr(code))
        theirs = go_min.get(code, code)
        assert ours_to_go.setdefault(ours, theirs) == theirs, hex(code)
        assert go_to_ours.setdefault(theirs, ours) == ours, hex(code)


def _zip64_locator(disks: int, disk: int = 0) -> bytes:
    return struct.pack("<4sLQL", b"PK\x06\x07", disk, 0, disks)


@pytest.mark.parametrize("disks", [2, 7])
def test_a_zip64_locator_claiming_several_disks_is_refused_not_a_crash(
    tmp_path: Path, disks: int
) -> None:
    """Guards a 500 with a traceback on every request (found by the hostile review):
    zipfile raises BadZipFile from reading the end records."""
    zip_path = tmp_path / "m.zip"
    write_zip(zip_path, BASIC)
    data = zip_path.read_bytes()
    zip_path.write_bytes(data[:-22] + _zip64_locator(disks) + data[-22:])
    with pytest.raises(VerificationError, match="not a valid zip file"):
        verify_zip(zip_path, module=MODULE, version=VERSION)


def test_an_end_record_count_that_disagrees_with_the_directory_is_refused(
    tmp_path: Path,
) -> None:
    """Go's archive/zip refuses it, so it must never be cached (found by the hostile review)."""
    zip_path = tmp_path / "m.zip"
    write_zip(zip_path, BASIC)
    data = bytearray(zip_path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 0, 0)
    zip_path.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="declares 0 entries"):
        verify_zip(zip_path, module=MODULE, version=VERSION)
