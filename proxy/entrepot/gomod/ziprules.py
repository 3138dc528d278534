"""Verification of Go module zips before they are cached, and the ``h1:`` hashes of go.sum.

This is a port of the checks the go command itself applies to a module zip it downloads
(``golang.org/x/mod/zip.checkZip`` + ``Unzip`` and ``archive/zip``'s reader) and of
``golang.org/x/mod/sumdb/dirhash`` (``Hash1``, ``HashZip``). A zip that passes
:func:`verify_zip` is one that ``go mod download`` would accept, and the reported ``h1`` is the
hash ``go`` would compute for it (and compare with go.sum / the checksum database).

Rules enforced, in the order Go applies them:

* the module path is valid and the version canonical and consistent with the path's major
  version suffix (``module.Check``);
* the zip file is at most ``max_zip_bytes`` (Go: ``MaxZipFile``, 500 MiB);
* the central directory parses (bad/truncated zips are rejected);
* every entry name starts with ``<module>@<version>/``; the rest of the name (trailing ``/``
  removed for directory entries) is valid UTF-8, clean (``path.Clean``) and passes
  ``module.CheckFilePath``; the bare ``<module>@<version>/`` entry is allowed;
* no two entries are equal under Unicode simple case folding (Go's ``strToFold`` /
  ``strings.EqualFold``), no name is both a file and a directory, no file appears twice;
* a file named ``go.mod`` (in any case) may only be the root ``go.mod``, spelled in lower case;
* the sum of the declared uncompressed sizes is at most 500 MiB; the root ``go.mod`` and
  ``LICENSE`` are at most 16 MiB each;
* directory entries carry no data (Go's ``File.Open`` fails otherwise, so ``HashZip`` would);
* each entry's local header is present; each file's compression method is Store or Deflate,
  its data inflates cleanly to *exactly* the size declared in the central directory (inflation
  stops as soon as the output passes that size, so a zip bomb is never inflated past the limits
  above), and its CRC-32 (and data descriptor, if flagged) matches.

Where Go is lenient, so is this module, so that the mirror never refuses a zip ``go`` accepts:
names are the raw bytes whatever the UTF-8 flag says, a compressed size running past the end of
the zip is harmless if the deflate stream ends in time, data after a stream's end is ignored, a
zero CRC without a data descriptor is not checked, the encryption flag is ignored, and junk
before the zip or after its end record is tolerated.

All content is read from disk in bounded chunks: memory use does not depend on file sizes (only
the central directory is held in memory, as Go's archive/zip does).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import posixpath
import struct
import zipfile
import zlib
from base64 import b64encode
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

from entrepot.errors import InvalidRequestError, TooLargeError, VerificationError
from entrepot.gomod.module import (
    build,
    canonical_version,
    check_file_path,
    check_path,
    is_valid,
    major,
    split_path_version,
)

__all__ = [
    "MAX_GO_MOD",
    "MAX_LICENSE",
    "MAX_ZIP_FILE",
    "ZipReport",
    "h1_files",
    "h1_mod",
    "str_to_fold",
    "verify_zip",
]

MAX_ZIP_FILE = 500 << 20
"""Go's ``zip.MaxZipFile``: limit of the zip file and of its total uncompressed content."""
MAX_GO_MOD = 16 << 20
"""Go's ``zip.MaxGoMod``: limit of the root go.mod file inside a module zip."""
MAX_LICENSE = 16 << 20
"""Go's ``zip.MaxLICENSE``: limit of the root LICENSE file inside a module zip."""

_CHUNK = 256 << 10
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (skipped), name length, extra length
_LOCAL_HEADER_SIG = b"PK\x03\x04"
_DATA_DESCRIPTOR_SIG = b"PK\x07\x08"
_FLAG_DATA_DESCRIPTOR = 0x8
_FLAG_UTF8 = 0x800
_EMPTY_SHA256 = hashlib.sha256(b"").digest()


@dataclass(frozen=True)
class ZipReport:
    """What :func:`verify_zip` learned about a valid module zip."""

    h1: str
    """The ``h1:`` hash of the zip, as go.sum records it (``dirhash.HashZip``)."""
    files: int
    """Number of file entries (directory entries are not counted)."""
    uncompressed_bytes: int
    """Total uncompressed size of the files."""
    has_go_mod: bool
    """Whether the zip contains the root ``go.mod``."""


# --------------------------------------------------------------------------------------------
# h1 (golang.org/x/mod/sumdb/dirhash)


def _h1_from_digests(entries: Iterable[tuple[str, bytes]]) -> str:
    """Hash1 given (file name, SHA-256 digest of its content) pairs, in any order."""
    encoded: list[tuple[bytes, bytes]] = []
    for name, digest in entries:
        if "\n" in name:
            raise ValueError(f"dirhash: filenames with newlines are not supported: {name!r}")
        encoded.append((name.encode("utf-8"), digest))
    encoded.sort(key=lambda e: e[0])  # Go's sort.Strings: byte-wise order
    summary = hashlib.sha256()
    for name_bytes, digest in encoded:
        summary.update(digest.hex().encode("ascii") + b"  " + name_bytes + b"\n")
    return "h1:" + b64encode(summary.digest()).decode("ascii")


def h1_files(files: Iterable[tuple[str, bytes]]) -> str:
    """Go's ``dirhash.Hash1`` over (file name, content) pairs.

    The summary is one line ``<hex sha256(content)>  <name>\\n`` per file, sorted by name
    (byte-wise, as Go's ``sort.Strings``); the result is ``"h1:"`` + base64(sha256(summary)).
    Raises :class:`ValueError` for a name containing a newline, as Go does.
    """
    return _h1_from_digests((name, hashlib.sha256(data).digest()) for name, data in files)


def h1_mod(data: bytes) -> str:
    """The ``h1:`` hash of a go.mod file, as on the ``<module> <version>/go.mod`` go.sum line."""
    return h1_files([("go.mod", data)])


# --------------------------------------------------------------------------------------------
# Case folding (golang.org/x/mod/zip.strToFold)


@lru_cache(maxsize=4096)
def _simple_fold(c: str) -> str:
    """Unicode *simple* case folding of one character (CaseFolding.txt statuses C and S).

    ``str.casefold`` is *full* folding (``"ß"`` → ``"ss"``), which Go does not use: when it
    gives more than one character the character has an F mapping, and its S mapping, if any,
    is its single-character lower case (e.g. ``"ẞ"`` → ``"ß"``); otherwise it folds to itself.
    Checked exhaustively against Go's ``unicode.SimpleFold`` orbits (see the tests).
    """
    folded = c.casefold()
    if len(folded) == 1:
        return folded
    lower = c.lower()
    if len(lower) == 1 and lower.casefold() == folded:
        return lower
    return c


def str_to_fold(s: str) -> str:
    """A key with Go's ``strToFold`` property: ``EqualFold(s, t)`` iff the keys are equal.

    The key is not byte-for-byte the string Go builds (Go picks the smallest rune of each
    folding orbit), only the equivalence is the same, which is all collision checks need.
    """
    if s.isascii():
        return s.lower()  # the simple folding of ASCII is exactly A-Z -> a-z
    return "".join(_simple_fold(ch) for ch in s)


def _equal_fold(s: str, t: str) -> bool:
    return str_to_fold(s) == str_to_fold(t)


# --------------------------------------------------------------------------------------------
# Helpers


def _quote(s: str) -> str:
    """Double-quoted, single-line rendering of a (possibly surrogate-escaped) name."""
    printable = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return json.dumps(printable, ensure_ascii=False)


def _clean(p: str) -> str:
    """Go's ``path.Clean``."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: list[str] = []
    for elem in p.split("/"):
        if elem in ("", "."):
            continue
        if elem == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(elem)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


def _raw_name(info: zipfile.ZipInfo) -> str:
    """The entry name as Go sees it: the raw bytes, as UTF-8 with surrogate escapes.

    Python decodes names without the UTF-8 flag as cp437 (a bijection over bytes), so encoding
    back recovers the bytes Go uses verbatim.
    """
    name = info.orig_filename
    if info.flag_bits & _FLAG_UTF8:
        return name
    return name.encode("cp437").decode("utf-8", "surrogateescape")


class _Collisions:
    """Go's ``collisionChecker``: case-fold collisions, file/dir clashes, duplicate files."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, bool]] = {}

    def check(self, p: str, is_dir: bool) -> str | None:
        while True:
            fold = str_to_fold(p)
            other = self._seen.get(fold)
            if other is None:
                self._seen[fold] = (p, is_dir)
            else:
                other_path, other_is_dir = other
                if p != other_path:
                    return (
                        "case-insensitive file name collision: "
                        f"{_quote(other_path)} and {_quote(p)}"
                    )
                if is_dir != other_is_dir:
                    return f"entry {_quote(p)} is both a file and a directory"
                if not is_dir:
                    return f"multiple entries for file {_quote(p)}"
                # A directory seen before: its parents were checked then, with the same result.
                return None
            parent = posixpath.dirname(p)
            if parent == "":
                return None
            p, is_dir = parent, True


@dataclass(frozen=True)
class _Entry:
    name: str  # full entry name, including the module@version/ prefix
    is_dir: bool
    info: zipfile.ZipInfo


def _module_version_error(module: str, version: str) -> str | None:
    """Go's ``CanonicalVersion`` + ``module.Check`` (incl. ``CheckPathMajor``), as checkZip."""
    canonical = canonical_version(version)
    if canonical != version:
        return f"version {_quote(version)} is not canonical (should be {_quote(canonical)})"
    try:
        check_path(module)
    except InvalidRequestError as e:
        return e.message
    if not is_valid(version):
        return f"{module}@{version}: invalid version: not a semantic version"
    _, path_major, _ = split_path_version(module)
    if path_major.startswith(".v") and path_major.endswith("-unstable"):
        path_major = path_major.removesuffix("-unstable")
    if version.startswith("v0.0.0-") and path_major == ".v1":
        return None  # an old pseudo-version bug Go still tolerates for gopkg.in .v1 paths
    want = major(version)
    if path_major == "":
        if want in ("v0", "v1") or build(version) == "+incompatible":
            return None
        expected = "v0 or v1"
    elif path_major[1:] == want:
        return None
    else:
        expected = path_major[1:]
    return f"{module}@{version}: invalid version: should be {expected}, not {want}"


class _Verifier:
    def __init__(self, module: str, version: str) -> None:
        self.label = f"{module}@{version}"
        self.prefix = self.label + "/"

    def error(
        self, rule: str, *, name: str | None = None, too_large: bool = False
    ) -> VerificationError:
        """The exception for a broken rule: one line, naming the zip, the file and the rule."""
        where = "" if name is None else f"file {_quote(name)}: "
        message = " ".join(f"zip for {self.label} rejected: {where}{rule}".splitlines())
        return (TooLargeError if too_large else VerificationError)(message)

    # -- pass 1: names and declared sizes (zip.checkZip), no decompression ------------------

    def check_names(self, infos: list[zipfile.ZipInfo]) -> list[_Entry]:
        entries: list[_Entry] = []
        collisions = _Collisions()
        total = 0
        for info in infos:
            full = _raw_name(info)
            if not full.startswith(self.prefix):
                raise self.error(f"path does not have prefix {_quote(self.prefix)}", name=full)
            name = full[len(self.prefix) :]
            if name == "":
                entries.append(_Entry(full, True, info))
                continue
            is_dir = name.endswith("/")
            if is_dir:
                name = name[:-1]
            try:
                name.encode("utf-8")
            except UnicodeEncodeError as e:
                raise self.error("file path is not valid UTF-8", name=full) from e
            if _clean(name) != name:
                raise self.error("file path is not clean", name=full)
            try:
                check_file_path(name)
            except InvalidRequestError as e:
                raise self.error(e.message, name=full) from e
            if (problem := collisions.check(name, is_dir)) is not None:
                raise self.error(problem, name=full)
            if is_dir:
                if info.file_size != 0:
                    # archive/zip refuses to open a directory entry that has content.
                    raise self.error(
                        f"directory entry has content ({info.file_size} bytes)", name=full
                    )
                entries.append(_Entry(full, True, info))
                continue
            base = posixpath.basename(name)
            if _equal_fold(base, "go.mod"):
                if base != name:
                    raise self.error("go.mod file not in module root directory", name=full)
                if name != "go.mod":
                    raise self.error("go.mod files must have lowercase names", name=full)
            size = info.file_size
            if MAX_ZIP_FILE - total < size:
                raise self.error(
                    "total uncompressed size of module contents too large "
                    f"(max size is {MAX_ZIP_FILE} bytes)",
                    name=full,
                    too_large=True,
                )
            total += size
            if name == "go.mod" and size > MAX_GO_MOD:
                raise self.error(
                    f"go.mod file too large ({size} bytes; max size is {MAX_GO_MOD} bytes)",
                    name=full,
                    too_large=True,
                )
            if name == "LICENSE" and size > MAX_LICENSE:
                raise self.error(
                    f"LICENSE file too large ({size} bytes; max size is {MAX_LICENSE} bytes)",
                    name=full,
                    too_large=True,
                )
            entries.append(_Entry(full, False, info))
        return entries

    # -- pass 2: content (archive/zip File.Open + checksumReader), hashing as we go ----------

    def read_entry(self, fh: BinaryIO, zip_size: int, entry: _Entry) -> bytes:
        """Check one entry's local header and data; return the SHA-256 of its content."""
        info = entry.info
        body = self._body_offset(fh, entry)
        if entry.is_dir:
            return _EMPTY_SHA256  # HashZip hashes directory entries as empty files
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(
                f"unsupported compression method {info.compress_type}", name=entry.name
            )
        # Like io.SectionReader over the zip: a compressed size running past the end of the
        # zip is not an error in itself; the data simply ends there.
        available = max(0, min(info.compress_size, zip_size - body))
        fh.seek(body)
        content = _Content(self, entry)
        if info.compress_type == zipfile.ZIP_STORED:
            self._read_stored(fh, content, available)
        else:
            self._read_deflated(fh, content, available)
        content.finish()
        self._check_crc(fh, entry, body, content.crc)
        return content.sha256.digest()

    def _body_offset(self, fh: BinaryIO, entry: _Entry) -> int:
        """Validate the local file header (as ``findBodyOffset``); return where data starts."""
        offset = entry.info.header_offset
        if offset < 0:
            raise self.error("bad local file header offset", name=entry.name)
        fh.seek(offset)
        header = fh.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size:
            raise self.error("local file header is truncated", name=entry.name)
        signature, name_len, extra_len = _LOCAL_HEADER.unpack(header)
        if signature != _LOCAL_HEADER_SIG:
            raise self.error("bad local file header signature", name=entry.name)
        return int(offset + _LOCAL_HEADER.size + name_len + extra_len)

    def _read_stored(self, fh: BinaryIO, content: _Content, remaining: int) -> None:
        while remaining > 0:
            data = fh.read(min(_CHUNK, remaining))
            if not data:
                break  # the size check in finish() reports it
            remaining -= len(data)
            content.add(data)

    def _read_deflated(self, fh: BinaryIO, content: _Content, remaining: int) -> None:
        name = content.entry.name
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            while not inflater.eof:
                pending = inflater.unconsumed_tail
                if not pending:
                    if remaining == 0:
                        break
                    pending = fh.read(min(_CHUNK, remaining))
                    if not pending:
                        break
                    remaining -= len(pending)
                # max_length bounds each step: a bomb is stopped right after the declared size.
                out = inflater.decompress(pending, _CHUNK)
                if not out and not inflater.eof and inflater.unconsumed_tail == pending:
                    raise self.error("corrupt deflate data (no progress)", name=name)
                content.add(out)
        except zlib.error as e:
            raise self.error(f"corrupt deflate data: {e}", name=name) from e
        # Like compress/flate, data after the final block is ignored; a missing end is not.
        if not inflater.eof:
            raise self.error("file data is truncated: deflate stream has no end", name=name)

    def _check_crc(self, fh: BinaryIO, entry: _Entry, body: int, crc: int) -> None:
        info = entry.info
        if info.flag_bits & _FLAG_DATA_DESCRIPTOR:
            fh.seek(body + info.compress_size)
            descriptor = fh.read(16)
            if descriptor[:4] == _DATA_DESCRIPTOR_SIG:
                descriptor = descriptor[4:]
            if len(descriptor) < 12:
                raise self.error("data descriptor is truncated", name=entry.name)
            (descriptor_crc,) = struct.unpack("<I", descriptor[:4])
            if descriptor_crc != info.CRC:
                raise self.error(
                    f"CRC-32 in the data descriptor ({descriptor_crc:#010x}) does not match "
                    f"the central directory ({info.CRC:#010x})",
                    name=entry.name,
                )
        elif info.CRC == 0:
            return  # like archive/zip: no data descriptor and a zero CRC means "not set"
        if crc != info.CRC:
            raise self.error(
                f"CRC-32 mismatch: the data has {crc:#010x}, the header says {info.CRC:#010x}",
                name=entry.name,
            )


class _Content:
    """Running size, CRC-32 and SHA-256 of one entry's data (archive/zip's checksumReader)."""

    def __init__(self, verifier: _Verifier, entry: _Entry) -> None:
        self.verifier = verifier
        self.entry = entry
        self.declared = entry.info.file_size
        self.produced = 0
        self.crc = 0
        self.sha256 = hashlib.sha256()

    def add(self, data: bytes) -> None:
        self.produced += len(data)
        if self.produced > self.declared:
            raise self.verifier.error(
                "file size does not match header: the uncompressed data is larger than "
                f"the declared {self.declared} bytes",
                name=self.entry.name,
            )
        self.sha256.update(data)
        self.crc = zlib.crc32(data, self.crc)

    def finish(self) -> None:
        if self.produced != self.declared:
            raise self.verifier.error(
                f"file size does not match header: the uncompressed data is {self.produced} "
                f"bytes, the header declares {self.declared} bytes",
                name=self.entry.name,
            )


MAX_ZIP_ENTRIES = 250_000
"""Our one rule stricter than Go's: the central directory is parsed into memory (~0.5 KiB per
entry in Python), so a hostile zip of millions of empty entries inside 500 MiB could exhaust
the server. Real modules have thousands of files, not hundreds of thousands."""


MAX_CENTRAL_DIRECTORY_BYTES = 64 << 20
"""The central directory is read whole, as zipfile and Go's archive/zip do: 64 MiB holds
250,000 entries with 200-byte names, far more than any real module."""

_CENTRAL_HEADER = struct.Struct("<4s24xHHH12x")  # signature, then name/extra/comment lengths
_CENTRAL_SIGNATURE = b"PK\x01\x02"


class _NotAZip(Exception):
    """The end records cannot be read (turned into a VerificationError by verify_zip)."""


def _central_directory(fh: BinaryIO) -> tuple[int, int, int] | None:
    """``(declared entries, size, offset)`` of the central directory, where zipfile will read
    it, from the end record (zip64 included); None when there is no end record."""
    try:
        end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
    except (OSError, struct.error):
        return None
    except (zipfile.BadZipFile, ValueError) as e:  # e.g. a zip64 locator claiming many disks
        raise _NotAZip(str(e)) from e
    finally:
        fh.seek(0)
    if not end:
        return None
    size = int(end[zipfile._ECD_SIZE])  # type: ignore[attr-defined]
    offset = int(end[zipfile._ECD_OFFSET])  # type: ignore[attr-defined]
    location = int(end[zipfile._ECD_LOCATION])  # type: ignore[attr-defined]
    concat = location - size - offset
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        concat -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
    return int(end[zipfile._ECD_ENTRIES_TOTAL]), size, offset + concat  # type: ignore[attr-defined]


def count_central_entries(fh: BinaryIO, *, size: int, start: int, stop_after: int) -> int:
    """Count the records of the central directory by walking it, as zipfile parses it (by its
    byte size, whatever count the end record declares), stopping once past ``stop_after``.

    A hostile zip declared 1 entry and held 3,000,000: trusting the declared count let
    zipfile build 3 million ZipInfo objects (62 MB to 1.17 GB in one worker)."""
    fh.seek(max(start, 0))
    data = fh.read(size)
    fh.seek(0)
    count = pos = 0
    while pos + _CENTRAL_HEADER.size <= len(data) and count <= stop_after:
        signature, name, extra, comment = _CENTRAL_HEADER.unpack_from(data, pos)
        if signature != _CENTRAL_SIGNATURE:
            break  # zipfile itself refuses what follows
        pos += _CENTRAL_HEADER.size + name + extra + comment
        count += 1
    return count


def verify_zip(
    path: pathlib.Path,
    *,
    module: str,
    version: str,
    max_zip_bytes: int = MAX_ZIP_FILE,
    max_entries: int = MAX_ZIP_ENTRIES,
    max_directory_bytes: int = MAX_CENTRAL_DIRECTORY_BYTES,
) -> ZipReport:
    """Check a downloaded module zip against Go's rules and compute its ``h1:`` hash.

    ``module`` and ``version`` are the unescaped module path and version. The file is read
    once, in bounded chunks (constant memory apart from the central directory).

    Raises :class:`~entrepot.errors.TooLargeError` when a size limit is exceeded and
    :class:`~entrepot.errors.VerificationError` for any other broken rule or unreadable zip;
    the message is a single line naming the offending file and the rule.
    """
    verifier = _Verifier(module, version)
    if (problem := _module_version_error(module, version)) is not None:
        raise verifier.error(problem)
    try:
        with open(path, "rb") as fh:
            zip_size = os.fstat(fh.fileno()).st_size
            if zip_size > max_zip_bytes:
                raise verifier.error(
                    f"module zip file is too large ({zip_size} bytes; "
                    f"limit is {max_zip_bytes} bytes)",
                    too_large=True,
                )
            try:
                directory = _central_directory(fh)
            except _NotAZip as e:
                raise verifier.error(f"not a valid zip file: {e}") from e
            if directory is not None:
                declared, cd_size, cd_start = directory
                if cd_size > max_directory_bytes:
                    raise verifier.error(
                        f"module zip's central directory is {cd_size} bytes; this mirror"
                        f" accepts at most {max_directory_bytes} (it is read into"
                        " memory to check)",
                        too_large=True,
                    )
                if declared <= max_entries and cd_size > _CENTRAL_HEADER.size * max_entries:
                    # Only a directory this large can hold more records than it declares.
                    declared = count_central_entries(
                        fh, size=cd_size, start=cd_start, stop_after=max_entries
                    )
                if declared > max_entries:
                    raise verifier.error(
                        f"module zip has more than {max_entries} entries; this mirror accepts"
                        f" at most {max_entries} (each costs memory to check)",
                        too_large=True,
                    )
            try:
                with zipfile.ZipFile(fh) as zf:
                    infos = zf.infolist()
            except UnicodeDecodeError as e:
                raise verifier.error(
                    f"not a valid zip file: an entry name is not valid UTF-8 ({e})"
                ) from e
            except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error) as e:
                raise verifier.error(f"not a valid zip file: {e}") from e
            except NotImplementedError as e:
                raise verifier.error(f"unsupported zip file: {e}") from e

            if directory is not None and len(infos) & 0xFFFF != directory[0] & 0xFFFF:
                # Go's archive/zip compares them (uint16) and refuses the zip.
                raise verifier.error(
                    f"not a valid zip file: the end record declares {directory[0]} entries,"
                    f" the central directory holds {len(infos)}"
                )
            entries = verifier.check_names(infos)
            digests: list[tuple[str, bytes]] = []
            files = 0
            uncompressed = 0
            has_go_mod = False
            for entry in sorted(entries, key=lambda e: e.info.header_offset):
                digests.append((entry.name, verifier.read_entry(fh, zip_size, entry)))
                if not entry.is_dir:
                    files += 1
                    uncompressed += entry.info.file_size
                    has_go_mod = has_go_mod or entry.name == verifier.prefix + "go.mod"
    except OSError as e:
        raise verifier.error(f"cannot read zip file: {e.strerror or e}") from e
    try:
        h1 = _h1_from_digests(digests)
    except ValueError as e:  # a newline in a name; check_file_path should have caught it
        raise verifier.error(str(e)) from e
    return ZipReport(
        h1=h1,
        files=files,
        uncompressed_bytes=uncompressed,
        has_go_mod=has_go_mod,
    )
