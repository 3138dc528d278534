"""The documents of a package published here, assembled from its versions' stored text.

A mirrored packument is parsed whole by :func:`entrepot.npm.packument.compute` at every
upstream change. A package published here changes one version at a time, and its versions'
manifests are stored as compact JSON whose ``dist.tarball`` is the blob key. So a publish
needs no parse of the other versions: the full document is the stored text with each
``"tarball":"<key>"`` replaced by the tarball URL, and each version's abbreviated manifest is
computed once per worker (the :class:`Pieces` memo) and joined. What is left per version is
a join and the compression of its bytes: a publish of the 100th version costs about what
the first did.

The documents are byte for byte those :func:`~entrepot.npm.packument.compute` makes from
:meth:`LocalPackage.to_bytes` (a test holds them to it). Where this path would need
compute's judgement (a version the policy hides, a dist-tag naming no live version, a
manifest whose tarball key cannot be pinpointed), :func:`assemble` returns None and the
caller computes. Pure: no I/O.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from entrepot.npm import names
from entrepot.npm.packument import (
    Documents,
    Index,
    VersionEntry,
    _abbreviated_version,
    _Background,
    _encode,
    _encoded,
    etags_of,
    parse_time,
)

PARALLEL_BYTES = 16 << 10
"""From this size of full document on, its compression runs in a thread of its own (below,
starting the thread costs more than it saves)."""


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class LocalVersion:
    """One live version as stored: its manifest (compact JSON, ``dist.tarball`` = the blob
    key) and its publish time (ISO text, as ``time`` shows it)."""

    version: str
    manifest_json: str
    published: str


@dataclass(frozen=True)
class LocalPackage:
    """A package published here, in document order: ``head`` (``_id``, ``_rev``, ``name``,
    ``description``, ``dist-tags``), the versions, then ``tail`` (``readme``,
    ``maintainers``, the document fields, ``_attachments``) around ``time``."""

    name: str
    head: Mapping[str, Any]
    versions: Sequence[LocalVersion]
    created: str
    modified: str
    tail: Mapping[str, Any]

    def times(self) -> dict[str, str]:
        times = {"created": self.created, "modified": self.modified}
        for v in self.versions:
            times[v.version] = v.published
        return times

    def to_bytes(self) -> bytes:
        """The whole packument (what :func:`~entrepot.npm.packument.compute` reads)."""
        manifests = ",".join(f"{_dumps(v.version)}:{v.manifest_json}" for v in self.versions)
        tail = {
            **{k: val for k, val in self.tail.items() if k in ("readme", "maintainers")},
            "time": self.times(),
            **{k: val for k, val in self.tail.items() if k not in ("readme", "maintainers")},
        }
        text = _dumps(dict(self.head))[:-1] + ',"versions":{' + manifests + "}," + _dumps(tail)[1:]
        return text.encode()


@dataclass(frozen=True)
class _Piece:
    manifest_json: str
    prefix: str  # the tarball URL prefix it was made for
    full: bytes  # the manifest with dist.tarball the URL
    abbreviated: bytes  # "<version>":<abbreviated manifest>
    entry: tuple[str, str, str]  # the blob key, integrity, shasum


class Pieces:
    """Each version's served bytes, made once per worker and reused while its stored text
    and the public URL stay the same. Bounded by ``max_bytes`` (least recently used first)."""

    def __init__(self, max_bytes: int = 16 << 20) -> None:
        self.max_bytes = max_bytes
        self._pieces: OrderedDict[tuple[str, str], _Piece] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # publishes of two packages assemble in two threads

    def get(self, name: str, version: LocalVersion, prefix: str) -> _Piece | None:
        with self._lock:
            return self._get(name, version, prefix)

    def _get(self, name: str, version: LocalVersion, prefix: str) -> _Piece | None:
        key = (name, version.version)
        piece = self._pieces.get(key)
        if piece is not None and (
            piece.manifest_json == version.manifest_json and piece.prefix == prefix
        ):
            self._pieces.move_to_end(key)
            return piece
        piece = _make_piece(version, prefix)
        if piece is None:
            return None
        self._put(key, piece)
        return piece

    def _put(self, key: tuple[str, str], piece: _Piece) -> None:
        old = self._pieces.pop(key, None)
        if old is not None:
            self._bytes -= _cost(old)
        self._pieces[key] = piece
        self._bytes += _cost(piece)
        while self._bytes > self.max_bytes and len(self._pieces) > 1:
            _, dropped = self._pieces.popitem(last=False)
            self._bytes -= _cost(dropped)


def _cost(piece: _Piece) -> int:
    return 2 * len(piece.manifest_json) + len(piece.full) + len(piece.abbreviated) + 256


def _make_piece(version: LocalVersion, prefix: str) -> _Piece | None:
    manifest = json.loads(version.manifest_json)
    dist = manifest.get("dist") if isinstance(manifest, dict) else None
    if not isinstance(dist, dict) or not isinstance(dist.get("tarball"), str):
        return None
    key: str = dist["tarball"]
    needle = f'"tarball":{_dumps(key)}'
    text = version.manifest_json
    if text.count('"tarball"') != 1 or text.count(needle) != 1:
        return None  # compute knows what to do with it
    url = f"{prefix}{version.version}.tgz"
    full = text.replace(needle, '"tarball":' + _encode(url).decode())
    manifest["dist"] = {**dist, "tarball": url}
    abbreviated = _encode(version.version) + b":" + _encode(_abbreviated_version(manifest))
    integrity, shasum = dist.get("integrity"), dist.get("shasum")
    return _Piece(
        manifest_json=text,
        prefix=prefix,
        full=full.encode(),
        abbreviated=abbreviated,
        entry=(
            key,
            integrity if isinstance(integrity, str) else "",
            shasum if isinstance(shasum, str) else "",
        ),
    )


def assemble(
    package: LocalPackage,
    *,
    base_url: str,
    blocked: frozenset[str],
    pieces: Pieces,
) -> Documents | None:
    """The documents of ``package``, or None where :func:`compute` must decide (a blocked
    version, a dist-tag naming no live version, an unusual manifest)."""
    name = package.name
    live = {v.version for v in package.versions}
    tags = package.head.get("dist-tags")
    if (
        blocked & live
        or not isinstance(tags, dict)
        or any(not isinstance(t, str) or t not in live for t in tags.values())
        or any(not names.is_version_text(v) for v in live)
    ):
        return None
    prefix = names.tarball_url_prefix(base_url, name)
    made = [pieces.get(name, v, prefix) for v in package.versions]
    if any(p is None for p in made):
        return None
    parts = [p for p in made if p is not None]

    # The full document: the stored text, with the URLs in.
    times = package.times()
    tail = {
        **{k: val for k, val in package.tail.items() if k in ("readme", "maintainers")},
        "time": times,
        **{k: val for k, val in package.tail.items() if k not in ("readme", "maintainers")},
    }
    chunks = [_encode(dict(package.head))[:-1] + b',"versions":{']
    at = len(chunks[0])
    spans: dict[str, tuple[int, int]] = {}
    for i, (v, piece) in enumerate(zip(package.versions, parts, strict=True)):
        label = (b"," if i else b"") + _encode(v.version) + b":"
        chunks.append(label)
        at += len(label)
        chunks.append(piece.full)
        spans[v.version] = (at, at + len(piece.full))
        at += len(piece.full)
    chunks.append(b"}," + _encode(tail)[1:])
    full_body = b"".join(chunks)
    # Compression is most of the work left: the full document's in a second thread (zlib
    # and brotli release the GIL) while this one joins and compresses the abbreviated one.
    background = _Background(_encoded, full_body) if len(full_body) >= PARALLEL_BYTES else None

    # The abbreviated document, from each version's piece.
    abbreviated_body = b"".join(
        [
            b'{"name":' + _encode(name),
            b',"modified":' + _encode(package.modified),
            b',"dist-tags":' + _encode(tags),
            b',"versions":{' + b",".join(p.abbreviated for p in parts) + b"}",
            b',"time":' + _encode(times) + b"}",
        ]
    )
    corgi = _encoded(abbreviated_body)
    full_doc = _encoded(full_body) if background is None else background.result()
    index = Index(
        name=name,
        dist_tags=dict(tags),
        versions={
            v.version: VersionEntry(*spans[v.version], *p.entry)
            for v, p in zip(package.versions, parts, strict=True)
        },
        hidden={},
        etags=etags_of(full_doc, corgi),
        modified=parse_time(package.modified),
    )
    return Documents(
        name=name,
        full=full_doc,
        abbreviated=corgi,
        index=index,
        modified=index.modified,
        hidden=(),
        retagged=(),
    )
