"""The documents served for one package, computed once per upstream change. Pure.

:func:`compute` turns the upstream's packument (JSON bytes) into everything the read path
serves for that package, so that requests only send bytes (Verdaccio parses, filters,
pretty-prints and hashes on every request: 2.7 req/s for a 14 MB packument):

* the **full** document: the upstream's, every ``versions[v].dist.tarball`` rewritten to the
  mirror's conventional URL (:func:`entrepot.npm.names.tarball_url`); everything else kept
  (``dist.integrity``, ``dist.shasum``, ``dist.signatures`` and attestations included:
  signatures sign ``name@version:integrity``, never the URL). It is spliced from the
  upstream's own text, so every value it keeps is the upstream's bytes (escapes, number
  spellings, spacing inside values), and no 14 MB document is re-encoded;
* the **abbreviated** ("corgi") document npm, pnpm, yarn and bun ask for with
  ``Accept: application/vnd.npm.install-v1+json``: ``name``, ``modified``, ``dist-tags``,
  ``time`` (pnpm's minimum release age needs it) and per version :data:`ABBREVIATED_FIELDS`
  (``libc`` included: pnpm refetches the full document without it), ``hasInstallScript``
  derived from ``scripts`` when the upstream left it out, as the registry does;
* both with their gzip and brotli forms and a strong ETag each (a hash of exactly the bytes
  sent); the abbreviated document, and the full one between its top-level members and
  versions, are compact JSON;
* an :class:`Index`: dist-tags, where each version's manifest sits in the full body (so
  ``GET /<name>/<version|tag>`` is a slice, no parsing), each version's upstream tarball URL
  and integrity (so a tarball fetch never parses the packument), and what the policy hid.

The mirror's :class:`Policy` is applied here, once: versions younger than the minimum release
age (by the upstream's ``time[version]``) and blocked versions are removed, with their ``time``
entries; a dist-tag that pointed at a removed version is moved to the newest remaining version
npm itself would pick for that tag with ``--before`` (npm-pick-manifest: the highest version
``<=`` the old target, prereleases only of the target's own ``major.minor.patch``), or removed
when there is none. Versions whose key cannot be a tarball URL are removed too
(``unservable``): a client would otherwise fetch them around the mirror.

Where a value changes (re-pointed dist-tags, a filtered ``time``, a manifest whose tarball
URL cannot be pinpointed in the text), or the text cannot be spliced (a repeated key, not
UTF-8), that value is re-encoded from the parsed document: the same meaning, compact, numbers
by value (``1e2`` becomes ``100.0``).

npm and pnpm send ``Accept-Encoding: gzip``; yarn Berry, browsers and curl also take ``br``,
which at :data:`BROTLI_QUALITY` is some 12-14% smaller than gzip -6 on packuments.

Cost (bench/npm_packument.py, this project's 2-core machine, a generated 13.9 MB packument of
3,000 versions): about 0.6 s with gzip -6, of which parsing is 0.2 s; 0.95 s when every
version's text differs from the last (a worst case for gzip). The brotli forms add 0.18 s of
CPU to that (0.10 s for the full document in the second thread, 0.08 s for the abbreviated
one): +20-35% for the whole compute, depending on how free the second core is.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from json.scanner import make_scanner
from typing import Any, Literal

import brotli

from entrepot.errors import ForbiddenError, NotFoundError, TooLargeError, VerificationError
from entrepot.npm import names
from entrepot.npm.semver import Version, try_parse

__all__ = [
    "ABBREVIATED_FIELDS",
    "BROTLI_QUALITY",
    "DEFAULT_MAX_BYTES",
    "GZIP_LEVEL",
    "Documents",
    "Encoded",
    "Hidden",
    "HiddenReason",
    "Index",
    "PackumentError",
    "PackumentTooLargeError",
    "Policy",
    "Representation",
    "Retag",
    "VersionEntry",
    "compute",
    "etags_of",
    "parse_time",
    "policy_for",
    "version_manifest",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""A default for the caller's limit: the largest packuments of the public registry are a few
tens of MB; this leaves room without letting one answer take the worker's memory."""
GZIP_LEVEL = 6
"""zlib's default: on packuments within a few percent of level 9's size, at a fraction of
its time (bench/npm_packument.py)."""
BROTLI_QUALITY = 5
"""Brotli's quality (0-11) for the ``br`` forms: the lowest that pays. 3 is hardly smaller
than gzip -6 on packuments (larger on very varied ones) and 4 costs as much as 5; 5 is some
12-14% smaller than gzip -6 for about its time; 6 and up cost 50% more and beyond for under 1%
(bench/npm_packument.py, docs/benchmarks.md)."""
BROTLI_WINDOW = 18
"""Brotli's window (``lgwin``, log2 bytes): 256 KiB. A package's versions repeat each other
within a few kB, so a larger window finds nothing more (the same size to 0.5%), yet at 22
(brotli's default, 4 MiB) compressing took some 40% longer; a decoder needs less memory too
(bench/npm_packument.py)."""

ABBREVIATED_FIELDS = (
    "name",
    "version",
    "deprecated",
    "dependencies",
    "optionalDependencies",
    "devDependencies",
    "bundleDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "acceptDependencies",
    "bin",
    "directories",
    "dist",
    "engines",
    "os",
    "cpu",
    "libc",
    "funding",
    "_hasShrinkwrap",
    "hasInstallScript",
)
"""Per-version fields of the abbreviated document (npm's list, plus ``libc``)."""
_INSTALL_SCRIPTS = ("preinstall", "install", "postinstall")
_TIME_KEYS = frozenset({"created", "modified", "unpublished"})  # not versions


class PackumentError(VerificationError):
    """The upstream's packument is not one: not JSON, not an object, another package's, ..."""


class PackumentTooLargeError(TooLargeError):
    """The upstream's packument is larger than the configured limit."""


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """What one package's documents hide. Build it with :func:`policy_for`."""

    min_release_age: float = 0.0  # seconds; 0 hides nothing
    blocked_versions: frozenset[str] = frozenset()


def policy_for(
    name: str,
    *,
    min_release_age: float = 0.0,
    exempt: Iterable[str] = (),
    blocked: Iterable[str] = (),
) -> Policy:
    """The policy of package ``name`` from the mirror's settings.

    ``exempt``: name patterns (``fnmatch``: ``@corp/*``, ``left-pad``) the minimum release
    age does not apply to. ``blocked``: ``name@version`` entries; those of ``name`` are hidden.
    """
    age = 0.0 if any(fnmatchcase(name, p) for p in exempt) else float(min_release_age)
    versions = frozenset(spec[len(name) + 1 :] for spec in blocked if spec.startswith(name + "@"))
    return Policy(min_release_age=age, blocked_versions=versions)


HiddenReason = Literal["too-new", "blocked", "unservable"]


@dataclass(frozen=True)
class Hidden:
    version: str
    reason: HiddenReason


@dataclass(frozen=True)
class Retag:
    """A dist-tag moved off a hidden version (``new`` None: removed)."""

    tag: str
    old: str
    new: str | None


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """One document in its three encodings (identity, gzip, brotli), each with its own strong
    ETag (quoted)."""

    body: bytes
    gzip: bytes
    etag: str
    gzip_etag: str
    br: bytes
    br_etag: str


@dataclass(frozen=True)
class VersionEntry:
    """One served version: its manifest is ``full.body[start:end]``; the rest is the
    upstream's ``dist`` (``""`` where absent), what a tarball fetch needs."""

    start: int
    end: int
    tarball: str
    integrity: str
    shasum: str


Representation = Literal[
    "full", "full.gz", "full.br", "abbreviated", "abbreviated.gz", "abbreviated.br"
]
REPRESENTATIONS: tuple[Representation, ...] = (
    "full",
    "full.gz",
    "full.br",
    "abbreviated",
    "abbreviated.gz",
    "abbreviated.br",
)
_REASONS: tuple[HiddenReason, ...] = ("too-new", "blocked", "unservable")


@dataclass(frozen=True, eq=False)
class Index:
    """Small per-package facts, stored beside the documents (:meth:`to_bytes`): enough to
    answer a conditional request (``etags``, ``modified``), a version or tag
    (:func:`version_manifest`) and a tarball fetch without reading a document."""

    name: str
    dist_tags: Mapping[str, str]
    versions: Mapping[str, VersionEntry]
    hidden: Mapping[str, HiddenReason] = field(default_factory=dict)
    etags: Mapping[Representation, str] = field(default_factory=dict)
    modified: float | None = None  # the upstream's time.modified, epoch seconds

    def resolve(self, ref: str) -> str | None:
        """The version ``ref`` names: a served or hidden version itself, else a dist-tag's."""
        if ref in self.versions or ref in self.hidden:
            return ref
        return self.dist_tags.get(ref)

    def to_bytes(self) -> bytes:
        return _encode(
            {
                "name": self.name,
                "dist-tags": dict(self.dist_tags),
                "versions": {
                    v: [e.start, e.end, e.tarball, e.integrity, e.shasum]
                    for v, e in self.versions.items()
                },
                "hidden": dict(self.hidden),
                "etags": dict(self.etags),
                "modified": self.modified,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Index:
        """Raises ValueError on anything :meth:`to_bytes` did not write."""
        try:
            raw = json.loads(data)
            versions = {
                str(v): VersionEntry(int(s), int(e), str(t), str(i), str(h))
                for v, (s, e, t, i, h) in raw["versions"].items()
            }
            hidden = {str(v): _REASONS[_REASONS.index(r)] for v, r in raw["hidden"].items()}
            etags = {
                REPRESENTATIONS[REPRESENTATIONS.index(r)]: str(e) for r, e in raw["etags"].items()
            }
            modified = raw["modified"]
            return cls(
                name=str(raw["name"]),
                dist_tags={str(t): str(v) for t, v in raw["dist-tags"].items()},
                versions=versions,
                hidden=hidden,
                etags=etags,
                modified=None if modified is None else float(modified),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a packument index: {e!r}") from e


@dataclass(frozen=True, eq=False)
class Documents:
    """Everything served for one package, computed by :func:`compute`."""

    name: str
    full: Encoded
    abbreviated: Encoded
    index: Index
    modified: float | None  # the upstream's time.modified (for Last-Modified), epoch seconds
    hidden: tuple[Hidden, ...]
    retagged: tuple[Retag, ...]

    def manifest(self, ref: str) -> bytes:
        """``GET /<name>/<version|tag>`` (see :func:`version_manifest`)."""
        return version_manifest(self.full.body, self.index, ref)


def version_manifest(full_body: bytes, index: Index, ref: str) -> bytes:
    """One version's manifest, a slice of the full document's bytes; a tag resolves through
    the (policy-adjusted) dist-tags.

    Raises:
        ForbiddenError: the version is blocked by the mirror's policy (403).
        NotFoundError: no such version or tag, or the version is hidden as too new (404).
    """
    entry = served_entry(index, ref)
    return full_body[entry.start : entry.end]


def served_entry(index: Index, ref: str) -> VersionEntry:
    """The served version ``ref`` names (a version, or a dist-tag), with the policy's
    refusals as errors (see :func:`version_manifest`): what a manifest or a tarball needs."""
    version = index.resolve(ref)
    if version is None:
        raise NotFoundError(f"{index.name}@{ref}: no such version or dist-tag")
    reason = index.hidden.get(version)
    if reason == "blocked":
        raise ForbiddenError(f"{index.name}@{version} is blocked by this mirror's policy")
    if reason == "too-new":
        raise NotFoundError(
            f"{index.name}@{version} is newer than this mirror's minimum release age;"
            " it is served once it is old enough"
        )
    entry = index.versions.get(version)
    if entry is None:
        raise NotFoundError(f"{index.name}@{version}: version not served by this mirror")
    return entry


# --------------------------------------------------------------------------------------------
# JSON in and out
# --------------------------------------------------------------------------------------------

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
)
_ASCII_ENCODER = json.JSONEncoder(
    ensure_ascii=True, separators=(",", ":"), allow_nan=False, check_circular=False
)


def _encode(value: object) -> bytes:
    """Compact UTF-8 JSON. A string holding a lone surrogate (legal in JSON text, not in
    UTF-8) is written with ``\\u`` escapes instead, as JavaScript's JSON.stringify does."""
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(value).encode("ascii")


def _no_constant(text: str) -> object:
    raise ValueError(f"{text} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} out of range")
    return value


@dataclass(frozen=True)
class _Source:
    """Where the upstream's values sit in its text: the full document is spliced from these
    slices, so every value it keeps is the upstream's own bytes."""

    text: str
    values: dict[str, tuple[int, int]]  # top-level key -> its value's span
    manifests: dict[str, tuple[int, int]]  # version -> its manifest's span


class _Duplicate(Exception):
    """A repeated key, where splicing would keep both: the document is re-encoded."""


_WS = re.compile(r"[ \t\n\r]+")


def _skip(text: str, idx: int) -> int:
    """The index of the first non-whitespace character at or after ``idx``."""
    m = _WS.match(text, idx)
    return idx if m is None else m.end()


_Read = Callable[[str, str, int], tuple[Any, int]]
_Scan = Callable[[str, int], tuple[Any, int]]


def _object(
    text: str, idx: int, read: _Read, scan: _Scan
) -> tuple[dict[str, Any], dict[str, tuple[int, int]], int]:
    """The JSON object at ``text[idx]``, member by member: (members, value spans, end).

    ``read(key, text, start)`` parses one member's value. Used for the two levels whose
    spans matter (the document and its ``versions``); everything below is json's C scanner.
    """
    if text[idx : idx + 1] != "{":
        raise json.JSONDecodeError("Expecting '{'", text, idx)
    members: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    idx = _skip(text, idx + 1)
    if text[idx : idx + 1] == "}":
        return members, spans, idx + 1
    while True:
        if text[idx : idx + 1] != '"':
            raise json.JSONDecodeError("Expecting property name in double quotes", text, idx)
        key, idx = scan(text, idx)  # a string: its first character is a quote
        idx = _skip(text, idx)
        if text[idx : idx + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", text, idx)
        start = _skip(text, idx + 1)
        value, end = read(key, text, start)
        if key in members:
            raise _Duplicate(key)
        members[key] = value
        spans[key] = (start, end)
        idx = _skip(text, end)
        c = text[idx : idx + 1]
        if c == "}":
            return members, spans, idx + 1
        if c != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, idx)
        idx = _skip(text, idx + 1)


def _scanner() -> _Scan:
    """json's C scanner with our number rules, one per document (it keeps a memo)."""
    decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
    # typeshed's TODO: the argument is any object with the decoder's attributes.
    scan: _Scan = make_scanner(decoder)  # type: ignore[arg-type]
    return scan


def _read_spans(raw: bytes) -> tuple[dict[str, Any], _Source] | None:
    """The document and its spans, or None when only a plain parse can tell (not UTF-8, not
    an object, a repeated key). Raises JSONDecodeError and RecursionError as json does."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    scan = _scanner()

    def value(_key: str, text: str, idx: int) -> tuple[Any, int]:
        try:
            result: tuple[Any, int] = scan(text, idx)
        except StopIteration as e:
            raise json.JSONDecodeError("Expecting value", text, e.value) from None
        return result

    manifests: dict[str, tuple[int, int]] = {}

    def top(key: str, text: str, idx: int) -> tuple[Any, int]:
        if key != "versions" or text[idx : idx + 1] != "{" or manifests:
            return value(key, text, idx)
        versions, spans, end = _object(text, idx, value, scan)
        manifests.update(spans)
        return versions, end

    start = _skip(text, 0)
    if text[start : start + 1] != "{":
        return None
    try:
        doc, values, end = _object(text, start, top, scan)
    except _Duplicate:
        return None
    if _skip(text, end) != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return doc, _Source(text, values, manifests)


def _load(raw: bytes, name: str, max_bytes: int) -> tuple[dict[str, Any], _Source | None]:
    """The upstream's document, checked, and its spans when it has usable ones."""
    if len(raw) > max_bytes:
        raise PackumentTooLargeError(
            f"{name}: the upstream's packument is {len(raw)} bytes, over this mirror's limit"
            f" of {max_bytes}"
        )
    try:
        read = _read_spans(raw)
        if read is None:
            doc, source = json.loads(raw, parse_constant=_no_constant, parse_float=_finite), None
        else:
            doc, source = read
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise PackumentError(f"{name}: the upstream's packument is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise PackumentError(f"{name}: the upstream's packument is not a JSON object")
    for key in ("versions", "dist-tags", "time"):
        if key in doc and not isinstance(doc[key], dict):
            raise PackumentError(
                f"{name}: the upstream's packument has a {key} that is not an object"
            )
    upstream_name = doc.get("name")
    if upstream_name is not None and upstream_name != name:
        raise PackumentError(
            f"{name}: the upstream answered with the packument of {str(upstream_name)[:100]!r}"
        )
    return doc, source


def parse_time(value: object) -> float | None:
    """An ISO 8601 time of the packument's ``time`` as epoch seconds (UTC when no offset is
    given); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _etag(body: bytes) -> str:
    digest = hashlib.sha256(body).digest()[:24]
    return '"' + base64.urlsafe_b64encode(digest).decode("ascii") + '"'


def _encoded(
    body: bytes, level: int = GZIP_LEVEL, *, brotli_quality: int = BROTLI_QUALITY
) -> Encoded:
    """``body`` with its gzip (``level``) and brotli (``brotli_quality``) forms. Both
    compressors release the GIL, so two of these run in parallel threads."""
    packed = gzip.compress(body, compresslevel=level, mtime=0)
    squeezed: bytes = brotli.compress(body, quality=brotli_quality, lgwin=BROTLI_WINDOW)
    return Encoded(body, packed, _etag(body), _etag(packed), squeezed, _etag(squeezed))


def etags_of(full: Encoded, abbreviated: Encoded) -> dict[Representation, str]:
    """The ETag of every representation of a package's two documents (the index's)."""
    return {
        "full": full.etag,
        "full.gz": full.gzip_etag,
        "full.br": full.br_etag,
        "abbreviated": abbreviated.etag,
        "abbreviated.gz": abbreviated.gzip_etag,
        "abbreviated.br": abbreviated.br_etag,
    }


# --------------------------------------------------------------------------------------------
# Policy at compute time
# --------------------------------------------------------------------------------------------


def _hide(
    versions: Mapping[str, Any], times: Mapping[str, Any], policy: Policy, now: float
) -> dict[str, HiddenReason]:
    hidden: dict[str, HiddenReason] = {}
    for version, manifest in versions.items():
        if not isinstance(manifest, dict) or not names.is_version_text(version):
            hidden[version] = "unservable"
        elif version in policy.blocked_versions:
            hidden[version] = "blocked"
        elif policy.min_release_age > 0:
            published = parse_time(times.get(version))
            # A version without a time is kept: an upstream that could hide a version's age
            # could as well lie about it, and old packuments lack some entries.
            if published is not None and now - published < policy.min_release_age:
                hidden[version] = "too-new"
    return hidden


def _repoint(target: str, remaining: list[tuple[Version, str]]) -> str | None:
    """The version npm would pick for a tag whose version is gone (npm-pick-manifest with
    ``before``: the range ``<=target``), or the newest release when the target is no
    SemVer version."""
    wanted = try_parse(target)
    best: tuple[Version, str] | None = None
    for candidate, text in remaining:
        if wanted is None:
            if candidate.is_prerelease:
                continue
        else:
            if candidate.key > wanted.key:
                continue
            if candidate.is_prerelease and not (
                wanted.is_prerelease and candidate.release == wanted.release
            ):
                continue
        if best is None or candidate.key > best[0].key:
            best = (candidate, text)
    return None if best is None else best[1]


def _retag(
    tags: Mapping[str, Any], served: Iterable[str], hidden: Mapping[str, HiddenReason]
) -> tuple[dict[str, Any], list[Retag]]:
    moved = [t for t, v in tags.items() if isinstance(v, str) and v in hidden]
    if not moved:
        return dict(tags), []
    remaining = [(v, text) for text in served if (v := try_parse(text)) is not None]
    new_tags: dict[str, Any] = {}
    retags: list[Retag] = []
    for tag, target in tags.items():
        if tag not in moved:
            new_tags[tag] = target
            continue
        replacement = _repoint(target, remaining)
        retags.append(Retag(tag, target, replacement))
        if replacement is not None:
            new_tags[tag] = replacement
    return new_tags, retags


# --------------------------------------------------------------------------------------------
# compute
# --------------------------------------------------------------------------------------------


def _abbreviated_version(manifest: Mapping[str, Any]) -> dict[str, Any]:
    corgi = {k: manifest[k] for k in ABBREVIATED_FIELDS if k in manifest}
    if "hasInstallScript" not in corgi:
        scripts = manifest.get("scripts")
        if isinstance(scripts, dict) and any(s in scripts for s in _INSTALL_SCRIPTS):
            corgi["hasInstallScript"] = True
    return corgi


def _abbreviated(
    name: str,
    modified: object,
    tags: Mapping[str, Any],
    served: Mapping[str, Mapping[str, Any]],
    times: Mapping[str, Any] | None,
) -> bytes:
    """The abbreviated document: ``name``, ``modified``, ``dist-tags``, each version's
    install fields and ``time`` (None: the upstream has none)."""
    abbreviated: dict[str, Any] = {"name": name}
    if modified is not None:
        abbreviated["modified"] = modified
    abbreviated["dist-tags"] = tags
    abbreviated["versions"] = {v: _abbreviated_version(m) for v, m in served.items()}
    if times is not None:
        abbreviated["time"] = times
    return _encode(abbreviated)


def compute(
    raw: bytes,
    *,
    name: str,
    base_url: str,
    now: float,
    max_bytes: int,
    policy: Policy | None = None,
    gzip_level: int = GZIP_LEVEL,
    brotli_quality: int = BROTLI_QUALITY,
) -> Documents:
    """Everything served for package ``name`` from the upstream's packument ``raw``.

    ``base_url`` is the mirror's public registry URL (tarball URLs are built under it),
    ``now`` the time the policy's ages are measured from (epoch seconds); no ``policy``
    hides nothing. ``gzip_level`` and ``brotli_quality`` trade compute time for size
    (bench/npm_packument.py).

    Raises:
        PackumentTooLargeError: ``raw`` is over ``max_bytes``.
        PackumentError: not a JSON object, ``versions``/``dist-tags``/``time`` not objects,
            or the packument of another package.
    """
    names.check_name(name)
    doc, source = _load(raw, name, max_bytes)
    upstream_versions: dict[str, Any] = doc.get("versions", {})
    upstream_times: dict[str, Any] = doc.get("time", {})
    hidden = _hide(upstream_versions, upstream_times, policy or Policy(), now)

    prefix = names.tarball_url_prefix(base_url, name)
    served: dict[str, dict[str, Any]] = {}
    dists: dict[str, tuple[str, str, str]] = {}
    for version, original in upstream_versions.items():
        if version in hidden:
            continue
        dist = original.get("dist")
        if isinstance(dist, dict):
            dists[version] = (
                _text(dist.get("tarball")),
                _text(dist.get("integrity")),
                _text(dist.get("shasum")),
            )
            manifest = dict(original)
            manifest["dist"] = {**dist, "tarball": f"{prefix}{version}.tgz"}
            served[version] = manifest
        else:  # nothing to fetch, nothing to rewrite
            dists[version] = ("", "", "")
            served[version] = original

    tags, retags = _retag(doc.get("dist-tags", {}), served, hidden)
    times = (
        {k: v for k, v in upstream_times.items() if k not in hidden or k in _TIME_KEYS}
        if hidden and "time" in doc
        else upstream_times
    )

    full: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "versions":
            full[key] = served
        elif key == "dist-tags":
            full[key] = tags
        elif key == "time":
            full[key] = times
        else:
            full[key] = value
    if source is None:
        body, spans = _encode_full(full)
    else:
        changed = {"dist-tags"} if retags else set()
        if times is not upstream_times:
            changed.add("time")
        body, spans = _splice_full(source, full, upstream_versions, changed, prefix)

    # Compression is most of the work: the full body is compressed (gzip, then brotli) in a
    # second thread (zlib and brotli release the GIL) while this one builds and compresses
    # the abbreviated document.
    encode = functools.partial(_encoded, level=gzip_level, brotli_quality=brotli_quality)
    full_encoded = _Background(encode, body) if len(body) >= _PARALLEL_BYTES else None

    modified = upstream_times.get("modified")
    corgi = encode(_abbreviated(name, modified, tags, served, times if "time" in doc else None))
    full_doc = encode(body) if full_encoded is None else full_encoded.result()
    index = Index(
        name=name,
        dist_tags={t: v for t, v in tags.items() if isinstance(v, str)},
        versions={v: VersionEntry(*spans[v], *dists[v]) for v in served},
        hidden=hidden,
        etags=etags_of(full_doc, corgi),
        modified=parse_time(modified),
    )
    return Documents(
        name=name,
        full=full_doc,
        abbreviated=corgi,
        index=index,
        modified=index.modified,
        hidden=tuple(Hidden(v, r) for v, r in hidden.items()),
        retagged=tuple(retags),
    )


_PARALLEL_BYTES = 1 << 20
"""Below this, a thread costs more than it saves."""


class _Background:
    """One call in a thread of its own, its result (or exception) collected by ``result``.

    No pool: compute runs rarely (once per upstream change) and holds no state between calls.
    """

    def __init__(self, fn: Callable[[bytes], Encoded], arg: bytes) -> None:
        self._result: Encoded | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, arg), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[bytes], Encoded], arg: bytes) -> None:
        try:
            self._result = fn(arg)
        except BaseException as e:  # handed to the caller by result()
            self._error = e

    def result(self) -> Encoded:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


# A "tarball" property name in JSON text: the quoted word not preceded by a backslash, then a
# colon. Such a quote opens a string (were it closing one, "tarball" would stand outside a
# string: not JSON), and inside a string every quote is escaped; so in valid JSON this finds
# property names only. str.find looks for the word: a regex with a lookbehind scans slowly.
_TARBALL = '"tarball"'
_COLON = re.compile(r"[ \t\n\r]*:[ \t\n\r]*")


def _tarball_values(text: str, start: int, end: int) -> list[int]:
    """Where the values of "tarball" properties start in ``text[start:end]``."""
    found: list[int] = []
    at = text.find(_TARBALL, start, end)
    while at >= 0:
        colon = _COLON.match(text, at + len(_TARBALL), end)
        if text[at - 1] != "\\" and colon is not None:
            found.append(colon.end())
        at = text.find(_TARBALL, at + 1, end)
    return found


def _splice_manifest(
    text: str, span: tuple[int, int], original: Mapping[str, Any], url: str, scan: _Scan
) -> bytes | None:
    """The upstream's manifest text with only ``dist.tarball``'s value replaced; None when
    that value cannot be pinpointed (no tarball, or more than one "tarball" property)."""
    start, end = span
    dist = original.get("dist")
    if not isinstance(dist, dict):
        return text[start:end].encode()  # nothing to rewrite
    old = dist.get("tarball")
    if not isinstance(old, str):
        return None
    found = _tarball_values(text, start, end)
    if len(found) != 1:
        return None
    at = found[0]
    if text[at : at + 1] != '"':
        return None
    value, after = scan(text, at)
    if value != old:
        return None
    return text[start:at].encode() + _encode(url) + text[after:end].encode()


def _assemble(
    doc: Mapping[str, Any],
    member: Callable[[str, Any], bytes],
    manifest: Callable[[str, Any], bytes],
) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The compact JSON object ``doc``, each top-level value written by ``member`` and each
    version under ``versions`` by ``manifest``, with where each version's bytes are."""
    parts: list[bytes] = [b"{"]
    pos = 1
    spans: dict[str, tuple[int, int]] = {}
    for i, (key, value) in enumerate(doc.items()):
        head = (b"," if i else b"") + _encode(key) + b":"
        parts.append(head)
        pos += len(head)
        if key != "versions":
            piece = member(key, value)
            parts.append(piece)
            pos += len(piece)
            continue
        parts.append(b"{")
        pos += 1
        for j, (version, body) in enumerate(value.items()):
            vhead = (b"," if j else b"") + _encode(version) + b":"
            piece = manifest(version, body)
            parts.append(vhead)
            parts.append(piece)
            pos += len(vhead)
            spans[version] = (pos, pos + len(piece))
            pos += len(piece)
        parts.append(b"}")
        pos += 1
    parts.append(b"}")
    return b"".join(parts), spans


def _splice_full(
    source: _Source,
    doc: Mapping[str, Any],
    upstream_versions: Mapping[str, Any],
    changed: set[str],
    prefix: str,
) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The full document from the upstream's own text: each value the upstream's bytes, but
    the changed ones (re-pointed dist-tags, a filtered time) and the tarball URLs.

    The output is compact between the top-level members and between versions; inside a
    value the upstream's spacing stays (the npm registry's own answers are compact)."""
    text = source.text
    scan = _scanner()

    def member(key: str, value: Any) -> bytes:
        if key in changed:
            return _encode(value)
        start, end = source.values[key]
        return text[start:end].encode()

    def manifest(version: str, body: Any) -> bytes:
        spliced = _splice_manifest(
            text,
            source.manifests[version],
            upstream_versions[version],
            f"{prefix}{version}.tgz",
            scan,
        )
        return _encode(body) if spliced is None else spliced

    return _assemble(doc, member, manifest)


def _encode_full(doc: Mapping[str, Any]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """``_encode(doc)``, written piece by piece to learn where each version's manifest is."""
    return _assemble(doc, lambda _key, value: _encode(value), lambda _v, body: _encode(body))
