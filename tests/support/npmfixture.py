"""An upstream npm registry on 127.0.0.1 for tests, serving real ``npm pack`` tarballs.

    with running_npm_fixture(tmp_path) as upstream:        # thread, any free port
        upstream.url                                       # http://127.0.0.1:PORT (no slash)
        upstream.integrity("@fixture/b", "1.1.0")          # what lockfiles must hold
        upstream.tamper(upstream.tarball_path("fixture-a", "1.1.0"))
        upstream.count("@fixture/b")                       # requests about it, any spelling

Why this shape: the mirror must pass on exactly what the public registry says (``integrity``,
``shasum``, ``time``), so the fixture's documents are built the way that registry builds them,
from tarballs that the real npm packed: packuments full or abbreviated (by ``Accept``), scoped
names in the three spellings clients send, ETag/``If-None-Match`` 304, gzip when asked, and
tarballs at the conventional ``/<name>/-/<basename>-<version>.tgz`` that yarn Berry expects.

The standard universe (:func:`standard_packages`) has unscoped and ``@fixture/`` packages that
depend on each other (an install resolves a tree), ``fixture-many`` with 200 versions,
``fixture-old@0.1.0`` whose packument has only the sha1 ``shasum`` (as very old versions do),
``fixture-a``'s ``next`` dist-tag on a prerelease, and ``fixture-fresh@1.1.0`` "published" a
minute before the fixture started (for minimum-release-age tests). Each package's
``index.js`` exports ``tree()``, its ``name@version`` and its dependencies' trees, so a test can
ask node what an install really resolved.

Tarballs are packed once per content (one ``npm pack`` call for all of them, ~3 s) into
``$ENTREPOT_CACHE`` (or ``~/.cache/entrepot``) ``/npm-fixture/<hash>``, so reruns take no time.

Hostile upstream: :meth:`NpmFixture.tamper` (one byte changed), :meth:`~NpmFixture.truncate`,
:meth:`~NpmFixture.drip`, :meth:`~NpmFixture.fail` (any status) and :meth:`~NpmFixture.html`
(an HTML page with 200) act on one path, whatever spelling the client uses;
:meth:`~NpmFixture.heal` undoes them. Every request is counted (:attr:`NpmFixture.requests`,
:meth:`~NpmFixture.count`), for "zero upstream requests" assertions.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.jsclients import Missing, npm_bin

ABBREVIATED = "application/vnd.npm.install-v1+json"
# What npm's registry keeps of a version in the abbreviated ("corgi") document.
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
    "bin",
    "directories",
    "dist",
    "engines",
    "os",
    "cpu",
    "libc",
    "_hasShrinkwrap",
    "hasInstallScript",
    "funding",
    "acceptDependencies",
)
AUDIT_PATHS = ("npm/v1/security/advisories/bulk", "npm/v1/security/audits/quick")
# The one advisory the fixture knows (the shape of npm's bulk advisory endpoint).
ADVISORY: Mapping[str, Any] = {
    "id": 1000001,
    "module_name": "fixture-old",
    "url": "https://example.com/advisories/1000001",
    "title": "Entrepot fixture advisory: fixture-old before 1.0.0",
    "severity": "high",
    "vulnerable_versions": "<1.0.0",
    "cwe": ["CWE-20"],
    "cvss": {"score": 7.5, "vectorString": None},
}
# Bumped whenever the files written into a package folder change shape: a new cache folder.
_LAYOUT = "1"
_MAINTAINERS = [{"name": "fixture", "email": "fixture@example.com"}]


# ---------------------------------------------------------------------------------------------
# The universe (pure)


@dataclass(frozen=True)
class PackageVersion:
    """One version of a fixture package. ``published`` goes into ``time`` only (never into the
    tarball), so a fresh version does not change the cached tarballs."""

    name: str
    version: str
    published: dt.datetime
    dependencies: Mapping[str, str] = field(default_factory=dict)
    sha1_only: bool = False  # the packument has ``dist.shasum`` and no ``dist.integrity``
    deprecated: str | None = None
    padding: int = 0  # bytes of incompressible filler (``filler.txt``): a large tarball

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def filename(self) -> str:
        return f"{self.basename}-{self.version}.tgz"

    def package_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": f"{self.name}, a package of Entrepôt's npm test fixture",
            "main": "index.js",
            "license": "MIT",
        }
        if self.dependencies:
            doc["dependencies"] = dict(sorted(self.dependencies.items()))
        return doc

    def files(self) -> dict[str, str]:
        """The package folder that ``npm pack`` packs."""
        deps = json.dumps(sorted(self.dependencies))
        index = (
            "'use strict';\n"
            f"// {self.name}@{self.version}: a package of Entrepôt's npm test fixture.\n"
            f"exports.id = {json.dumps(f'{self.name}@{self.version}')};\n"
            f"const deps = {deps};\n"
            "exports.tree = () => [exports.id, deps.map((d) => require(d).tree())];\n"
        )
        readme = f"# {self.name}\n\nVersion {self.version} of a fixture package.\n"
        files = {
            "package.json": json.dumps(self.package_json(), indent=2) + "\n",
            "index.js": index,
            "README.md": readme,
        }
        if self.padding:
            files["filler.txt"] = _filler(f"{self.name}@{self.version}", self.padding)
        return files


def _filler(seed: str, size: int) -> str:
    """``size`` characters that gzip cannot shrink much (base64 of a SHA-256 stream)."""
    out = bytearray()
    block = seed.encode()
    while len(out) * 4 < size * 3 + 4:
        block = hashlib.sha256(block).digest()
        out += block
    return base64.b64encode(bytes(out)).decode()[:size]


def _at(year: int, month: int, day: int) -> dt.datetime:
    return dt.datetime(year, month, day, 12, 0, tzinfo=dt.UTC)


def standard_packages(now: dt.datetime) -> list[PackageVersion]:
    """The fixture universe; ``now`` only sets when ``fixture-fresh@1.1.0`` was published (a
    minute before it)."""
    a_deps = {"@fixture/b": "^1.0.0", "fixture-old": "^0.1.0"}
    b_deps = {"@fixture/c": "^2.0.0"}
    versions = [
        PackageVersion("fixture-a", "1.0.0", _at(2022, 1, 10), a_deps),
        PackageVersion("fixture-a", "1.1.0", _at(2023, 3, 1), a_deps),
        PackageVersion("fixture-a", "2.0.0-rc.1", _at(2024, 5, 1), {"@fixture/b": "^1.1.0"}),
        PackageVersion("@fixture/b", "1.0.0", _at(2022, 1, 1), b_deps),
        PackageVersion("@fixture/b", "1.1.0", _at(2023, 1, 1), b_deps),
        PackageVersion("@fixture/c", "2.0.0", _at(2021, 6, 1)),
        PackageVersion("fixture-old", "0.1.0", _at(2014, 5, 1), sha1_only=True),
        PackageVersion("fixture-old", "1.0.0", _at(2020, 1, 1)),
        PackageVersion("fixture-fresh", "1.0.0", _at(2024, 1, 1)),
        PackageVersion("fixture-fresh", "1.1.0", now - dt.timedelta(minutes=1)),
    ]
    start = _at(2020, 1, 1)
    versions += [
        PackageVersion("fixture-many", f"1.{i}.0", start + dt.timedelta(days=i)) for i in range(200)
    ]
    return versions


STANDARD_TAGS: Mapping[str, Mapping[str, str]] = {"fixture-a": {"next": "2.0.0-rc.1"}}


def version_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Semver precedence for the versions the fixture makes: a release sorts after its
    prereleases, numeric prerelease parts before alphanumeric ones."""
    core, _, pre = version.partition("-")
    major, minor, patch = (int(part) for part in core.split("."))
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")) if pre else ()
    return (major, minor, patch, 0 if pre else 1, parts)


def default_tags(versions: Iterable[str]) -> dict[str, str]:
    """``latest`` is the highest release, as npm publish leaves it."""
    releases = [v for v in versions if "-" not in v]
    return {"latest": max(releases, key=version_key)} if releases else {}


def tarball_path(name: str, version: str) -> str:
    """The conventional tarball path (the one yarn Berry builds without reading the document)."""
    return f"/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# Tarballs: real `npm pack`, cached by content


@dataclass(frozen=True)
class Tarball:
    data: bytes
    integrity: str  # sha512 SRI, computed here from the bytes
    shasum: str  # sha1 hex
    file_count: int
    unpacked_size: int


def _content_key(versions: Iterable[PackageVersion]) -> str:
    digest = hashlib.sha256(_LAYOUT.encode())
    for v in sorted(versions, key=lambda v: (v.name, v.version)):
        digest.update(json.dumps(v.files(), sort_keys=True).encode() + b"\0")
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("ENTREPOT_CACHE") or os.path.expanduser("~/.cache/entrepot")
    return Path(base) / "npm-fixture"


def _pack_env(home: Path) -> dict[str, str]:
    """npm pack needs no registry: an empty home and config, so no user setting applies."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "npm_config_userconfig": str(home / ".npmrc"),
        "npm_config_globalconfig": str(home / ".npmrc-global"),
        "npm_config_cache": str(home / ".npm"),
        "npm_config_update_notifier": "false",
        "npm_config_loglevel": "error",
    }


def _pack(versions: list[PackageVersion], into: Path) -> None:
    """Pack every version with one ``npm pack`` (one node start for all, not one each) into
    ``into``/<index>.tgz with ``into``/index.json (file count and unpacked size per tarball)."""
    npm = npm_bin()
    if isinstance(npm, Missing):
        raise AssertionError(f"the npm fixture packs its tarballs with npm: {npm.reason}")
    sources = into / "src"
    folders = []
    for i, version in enumerate(versions):
        folder = sources / str(i)
        folder.mkdir(parents=True)
        for name, text in version.files().items():
            (folder / name).write_text(text, encoding="utf-8")
        folders.append(f"./src/{i}")
    filenames = Counter(v.filename for v in versions)
    clashes = sorted(name for name, n in filenames.items() if n > 1)
    assert not clashes, f"npm pack would write these tarballs over each other: {clashes}"
    home = into / "home"
    home.mkdir()
    (into / "out").mkdir()
    done = subprocess.run(
        [str(npm), "pack", "--json", "--ignore-scripts", "--pack-destination", "out", *folders],
        cwd=into,
        env=_pack_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"npm pack failed ({done.returncode}):\n{done.stderr}")
    packed = json.loads(done.stdout)
    assert len(packed) == len(versions), done.stdout[:2000]
    index = {}
    for i, (version, info) in enumerate(zip(versions, packed, strict=True)):
        assert (info["name"], info["version"]) == (version.name, version.version), info
        os.replace(into / "out" / info["filename"], into / f"{i}.tgz")
        index[f"{version.name}@{version.version}"] = {
            "file": f"{i}.tgz",
            "entryCount": info["entryCount"],
            "unpackedSize": info["unpackedSize"],
        }
    (into / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    shutil.rmtree(sources)
    shutil.rmtree(home)
    shutil.rmtree(into / "out")


def build_tarballs(versions: Iterable[PackageVersion]) -> dict[tuple[str, str], Tarball]:
    """The real tarballs of ``versions``, packed on first use and then read from the cache; a
    cache folder is complete or absent (built beside it, then renamed)."""
    versions = list(versions)
    folder = cache_root() / _content_key(versions)
    if not (folder / "index.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".pack-") as tmp:
            work = Path(tmp) / "packed"
            work.mkdir()
            _pack(versions, work)
            with contextlib.suppress(OSError):  # a concurrent build won: keep its copy
                os.replace(work, folder)
    index = json.loads((folder / "index.json").read_text("utf-8"))
    found = {}
    for version in versions:
        entry = index[f"{version.name}@{version.version}"]
        data = (folder / entry["file"]).read_bytes()
        found[version.name, version.version] = Tarball(
            data=data,
            integrity="sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
            shasum=hashlib.sha1(data).hexdigest(),
            file_count=entry["entryCount"],
            unpacked_size=entry["unpackedSize"],
        )
    return found


# ---------------------------------------------------------------------------------------------
# Documents (pure)


def manifest(version: PackageVersion, tarball: Tarball, base_url: str) -> dict[str, Any]:
    """One version as npm's registry stores it: package.json plus ``_id`` and ``dist``."""
    dist: dict[str, Any] = {"shasum": tarball.shasum}
    if not version.sha1_only:
        dist["integrity"] = tarball.integrity
        dist["fileCount"] = tarball.file_count
        dist["unpackedSize"] = tarball.unpacked_size
    dist["tarball"] = base_url + tarball_path(version.name, version.version)
    doc = version.package_json()
    doc["_id"] = f"{version.name}@{version.version}"
    doc["maintainers"] = _MAINTAINERS
    if version.deprecated is not None:
        doc["deprecated"] = version.deprecated
    doc["dist"] = dist
    return doc


def packument(
    name: str,
    versions: list[PackageVersion],
    tarballs: Mapping[tuple[str, str], Tarball],
    *,
    tags: Mapping[str, str],
    base_url: str,
    modified: dt.datetime | None = None,
) -> dict[str, Any]:
    """The full document (``Accept: application/json``)."""
    ordered = sorted(versions, key=lambda v: version_key(v.version))
    manifests = {v.version: manifest(v, tarballs[name, v.version], base_url) for v in ordered}
    times = {v.version: _iso(v.published) for v in ordered}
    created = min(v.published for v in ordered)
    last = modified or max(v.published for v in ordered)
    latest = tags.get("latest")
    readme = versions[0].files()["README.md"]
    for v in versions:
        if v.version == latest:
            readme = v.files()["README.md"]
    body = json.dumps(manifests, sort_keys=True).encode() + json.dumps(dict(tags)).encode()
    return {
        "_id": name,
        "_rev": f"1-{hashlib.md5(body).hexdigest()}",
        "name": name,
        "description": ordered[-1].package_json()["description"],
        "dist-tags": dict(tags),
        "versions": manifests,
        "time": {"created": _iso(created), "modified": _iso(last), **times},
        "maintainers": _MAINTAINERS,
        "license": "MIT",
        "readme": readme,
        "readmeFilename": "README.md",
    }


def abbreviate(full: Mapping[str, Any]) -> dict[str, Any]:
    """The abbreviated document, as the public registry serves it: ``modified`` and no ``time``
    (keeping ``time`` is the mirror's choice, not the upstream's)."""
    versions = {
        number: {k: doc[k] for k in ABBREVIATED_FIELDS if k in doc}
        for number, doc in full["versions"].items()
    }
    return {
        "name": full["name"],
        "modified": full["time"]["modified"],
        "dist-tags": full["dist-tags"],
        "versions": versions,
    }


# ---------------------------------------------------------------------------------------------
# Paths (pure)


@dataclass(frozen=True)
class Target:
    """What a request path names; ``path`` is its canonical spelling (``/@scope/name...``)."""

    kind: Literal["packument", "manifest", "tarball", "special"]
    name: str
    rest: str = ""  # the version or tag (manifest), the file name (tarball)

    @property
    def path(self) -> str:
        if self.kind == "packument":
            return f"/{self.name}"
        if self.kind == "manifest":
            return f"/{self.name}/{self.rest}"
        if self.kind == "tarball":
            return f"/{self.name}/-/{self.rest}"
        return f"/-/{self.rest}"


def parse_path(raw: str) -> Target | None:
    """A request path (query ignored) in any of the spellings clients send: ``@scope%2fname``,
    ``@scope%2Fname`` and ``@scope/name``."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw).path)
    parts = path.lstrip("/").split("/")
    if not parts or parts[0] == "":
        return None
    if parts[0] == "-":
        return Target("special", "", "/".join(parts[1:]))
    if parts[0].startswith("@"):
        if len(parts) < 2 or not parts[1]:
            return None
        name, rest = f"{parts[0]}/{parts[1]}", parts[2:]
    else:
        name, rest = parts[0], parts[1:]
    if not rest:
        return Target("packument", name)
    if len(rest) == 1 and rest[0]:
        return Target("manifest", name, rest[0])
    if len(rest) == 2 and rest[0] == "-" and rest[1]:
        return Target("tarball", name, rest[1])
    return None


def wants_abbreviated(accept: str | None) -> bool:
    return accept is not None and ABBREVIATED in accept


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison, as caches do for ``If-None-Match``."""
    if not header:
        return False
    wanted = etag.removeprefix("W/")
    return any(t.strip() in ("*", wanted) or t.strip() == f"W/{wanted}" for t in header.split(","))


# ---------------------------------------------------------------------------------------------
# The server (the impure edge)

Fault = Literal["tamper", "truncate", "drip", "status", "html"]


@dataclass(frozen=True)
class Behaviour:
    """How the fixture misbehaves on one path."""

    fault: Fault
    offset: int = 9  # tamper: the byte flipped
    keep: int | None = None  # truncate: bytes sent (None: half)
    full_length: bool = True  # truncate: announce the whole length, then close early
    chunk: int = 512  # drip: bytes per write
    interval: float = 0.05  # drip: seconds between writes
    status: int = 500


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # as sent, query included
    headers: Mapping[str, str]


@dataclass
class _Document:
    full: bytes
    abbreviated: bytes
    modified: dt.datetime


class NpmFixture:
    """The registry's state and the knobs tests turn; the HTTP handler reads it under a lock."""

    def __init__(
        self,
        versions: Iterable[PackageVersion],
        *,
        tags: Mapping[str, Mapping[str, str]] | None = None,
        gzip_documents: bool = True,
    ) -> None:
        self.versions = list(versions)
        self.tarballs = build_tarballs(self.versions)
        self.gzip_documents = gzip_documents
        self.url = ""  # set once the server has its port
        self.requests: Counter[str] = Counter()  # raw path (query included) -> count
        self.log: list[Seen] = []
        self.audits: list[dict[str, list[str]]] = []  # what npm audit asked, decoded
        self._key = ec.generate_private_key(ec.SECP256R1())  # signs dist.signatures
        spki = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.keyid = "SHA256:" + base64.b64encode(hashlib.sha256(spki).digest()).decode()
        self._lock = threading.Lock()
        self._behaviours: dict[str, Behaviour] = {}
        self._by_name: dict[str, list[PackageVersion]] = {}
        for v in self.versions:
            self._by_name.setdefault(v.name, []).append(v)
        self._tags: dict[str, dict[str, str]] = {
            name: {**default_tags(v.version for v in vs), **(tags or {}).get(name, {})}
            for name, vs in self._by_name.items()
        }
        self._files = {
            (name, v.filename): (name, v.version) for name, vs in self._by_name.items() for v in vs
        }
        self._documents: dict[str, _Document] = {}
        self._modified: dict[str, dt.datetime] = {}  # per package, set by an upstream change

    # -- what tests read ----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def tarball_path(self, name: str, version: str) -> str:
        return tarball_path(name, version)

    def tarball_url(self, name: str, version: str) -> str:
        return self.url + tarball_path(name, version)

    def tarball(self, name: str, version: str) -> bytes:
        return self.tarballs[name, version].data

    def integrity(self, name: str, version: str) -> str:
        """What a lockfile must hold: the sha512 SRI, or for a sha1-only version the sha1 SRI
        that clients derive from ``shasum``."""
        tarball = self.tarballs[name, version]
        if self.version(name, version).sha1_only:
            return "sha1-" + base64.b64encode(bytes.fromhex(tarball.shasum)).decode()
        return tarball.integrity

    def signature(self, name: str, version: str) -> dict[str, str]:
        """``dist.signatures[0]`` as npm's registry signs: ECDSA P-256 over
        ``name@version:integrity``, checked by ``npm audit signatures`` with :meth:`keys`."""
        message = f"{name}@{version}:{self.tarballs[name, version].integrity}".encode()
        sig = self._key.sign(message, ec.ECDSA(hashes.SHA256()))
        return {"keyid": self.keyid, "sig": base64.b64encode(sig).decode()}

    def keys(self) -> dict[str, Any]:
        """``GET /-/npm/v1/keys``: the public key the signatures verify with."""
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key = {
            "expires": None,
            "keyid": self.keyid,
            "keytype": "ecdsa-sha2-nistp256",
            "scheme": "ecdsa-sha2-nistp256",
            "key": base64.b64encode(der).decode(),
        }
        return {"keys": [key]}

    def shasum(self, name: str, version: str) -> str:
        return self.tarballs[name, version].shasum

    def version(self, name: str, version: str) -> PackageVersion:
        return next(v for v in self._by_name[name] if v.version == version)

    def dist_tags(self, name: str) -> dict[str, str]:
        with self._lock:
            return dict(self._tags[name])

    def packument(self, name: str, *, abbreviated: bool = False) -> dict[str, Any]:
        """The document as served (parsed)."""
        document = self._document(name)
        parsed: dict[str, Any] = json.loads(document.abbreviated if abbreviated else document.full)
        return parsed

    def count(self, name: str | None = None, *, kind: str | None = None) -> int:
        """Requests so far about ``name`` (any spelling; packuments, manifests and tarballs, or
        only ``kind``), or all requests."""
        with self._lock:
            seen = list(self.log)
        total = 0
        for request in seen:
            target = parse_path(request.path)
            if name is not None and (target is None or target.name != name):
                continue
            if kind is not None and (target is None or target.kind != kind):
                continue
            total += 1
        return total

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.log.clear()

    # -- what tests change --------------------------------------------------------------------

    def set_dist_tag(self, name: str, tag: str, version: str) -> None:
        """An upstream change: the document (and its ETag and ``modified``) changes."""
        with self._lock:
            self._tags[name][tag] = version
            self._documents.pop(name, None)
            self._modified[name] = dt.datetime.now(dt.UTC)

    def tamper(self, path: str, *, offset: int = 9) -> None:
        """Serve the body with the byte at ``offset`` flipped. The default is the gzip header's
        OS byte: the tampered tarball still unpacks cleanly, so only an integrity check can
        tell (a mirror that merely checks the archive is well-formed passes it on)."""
        self._set(path, Behaviour("tamper", offset=offset))

    def truncate(self, path: str, *, keep: int | None = None, full_length: bool = True) -> None:
        """Send only ``keep`` bytes (default half). ``full_length``: announce the whole length
        and close the connection early (a cut transfer); else announce the short length (a
        consistent but short body that only the integrity reveals)."""
        self._set(path, Behaviour("truncate", keep=keep, full_length=full_length))

    def drip(self, path: str, *, chunk: int = 512, interval: float = 0.05) -> None:
        """Send the body ``chunk`` bytes at a time, ``interval`` seconds apart."""
        self._set(path, Behaviour("drip", chunk=chunk, interval=interval))

    def fail(self, path: str, *, status: int = 500) -> None:
        """Answer ``status`` with a JSON error body."""
        self._set(path, Behaviour("status", status=status))

    def html(self, path: str) -> None:
        """Answer 200 with an HTML page (a captive portal or a proxy's error page)."""
        self._set(path, Behaviour("html"))

    def heal(self, path: str | None = None) -> None:
        """Undo the misbehaviour on ``path`` (every path when None)."""
        with self._lock:
            if path is None:
                self._behaviours.clear()
            else:
                self._behaviours.pop(self._canonical(path), None)

    def _set(self, path: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviours[self._canonical(path)] = behaviour

    @staticmethod
    def _canonical(path: str) -> str:
        target = parse_path(path)
        if target is None:
            raise ValueError(f"not a registry path: {path!r}")
        return target.path

    # -- serving ------------------------------------------------------------------------------

    def _document(self, name: str) -> _Document:
        with self._lock:
            cached = self._documents.get(name)
            if cached is not None:
                return cached
            tags = dict(self._tags[name])
            modified = self._modified.get(name)
        full = packument(
            name,
            self._by_name[name],
            self.tarballs,
            tags=tags,
            base_url=self.url,
            modified=modified,
        )
        for number, version in full["versions"].items():
            if "integrity" in version["dist"]:
                version["dist"]["signatures"] = [self.signature(name, number)]
        document = _Document(
            full=json.dumps(full).encode(),
            abbreviated=json.dumps(abbreviate(full)).encode(),
            modified=dt.datetime.fromisoformat(full["time"]["modified"]),
        )
        with self._lock:
            self._documents[name] = document
        return document

    def _record(self, method: str, path: str, headers: Mapping[str, str]) -> Behaviour | None:
        target = parse_path(path)
        with self._lock:
            self.requests[path] += 1
            self.log.append(Seen(method, path, dict(headers)))
            return None if target is None else self._behaviours.get(target.path)

    def answer(self, path: str, headers: Mapping[str, str]) -> _Answer:
        """The answer to a GET before any misbehaviour (pure but for the document cache)."""
        target = parse_path(path)
        if target is None:
            return _json_error(404, "Not found")
        if target.kind == "special":
            if target.rest == "ping":
                return _Answer(200, {"Content-Type": "application/json"}, b"{}")
            if target.rest == "v1/search":
                return self._search(path)
            if target.rest == "npm/v1/keys":
                body = json.dumps(self.keys()).encode()
                return _Answer(200, {"Content-Type": "application/json"}, body)
            return _json_error(404, "Not found")
        if target.name not in self._by_name:
            return _json_error(404, "Not found")
        if target.kind == "tarball":
            key = self._files.get((target.name, target.rest))
            if key is None:
                return _json_error(404, "Not found")
            data = self.tarballs[key].data
            etag = _etag(data)
            if _etag_matches(headers.get("if-none-match"), etag):
                return _Answer(304, {"ETag": etag}, b"")
            return _Answer(200, {"Content-Type": "application/octet-stream", "ETag": etag}, data)
        document = self._document(target.name)
        if target.kind == "manifest":
            full = json.loads(document.full)
            number = full["dist-tags"].get(target.rest, target.rest)
            if number not in full["versions"]:
                return _json_error(404, f"version not found: {target.rest}")
            return self._encoded(json.dumps(full["versions"][number]).encode(), headers, "")
        abbreviated = wants_abbreviated(headers.get("accept"))
        body = document.abbreviated if abbreviated else document.full
        kind = ABBREVIATED if abbreviated else "application/json"
        answer = self._encoded(body, headers, kind, modified=document.modified)
        answer.headers["Vary"] = "Accept, Accept-Encoding"
        return answer

    def _search(self, path: str) -> _Answer:
        """``/-/v1/search?text=``: the packages whose name holds the text, as npm's registry
        shapes its answer (enough for ``npm search``)."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        text = query.get("text", [""])[0]
        size = int(query.get("size", ["20"])[0])
        objects = []
        for name in self.names:
            if text and text not in name:
                continue
            latest = self.dist_tags(name).get("latest")
            version = self.version(name, latest) if latest else self._by_name[name][-1]
            objects.append(
                {
                    "package": {
                        "name": name,
                        "version": version.version,
                        "description": version.package_json()["description"],
                        "date": _iso(version.published),
                        "links": {},
                        "publisher": {"username": "fixture", "email": "fixture@example.com"},
                        "maintainers": [{"username": "fixture", "email": "fixture@example.com"}],
                    },
                    "score": {
                        "final": 0.5,
                        "detail": {"quality": 0.5, "popularity": 0.5, "maintenance": 0.5},
                    },
                    "searchScore": 1.0,
                }
            )
        body = {
            "objects": objects[:size],
            "total": len(objects),
            "time": _iso(dt.datetime.now(dt.UTC)),
        }
        return _Answer(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def post(self, path: str, headers: Mapping[str, str], body: bytes) -> _Answer:
        """``npm audit``'s bulk advisory endpoint (a gzip JSON body ``{name: [versions]}``):
        one advisory, on ``fixture-old`` below 1.0.0. The decoded requests are kept in
        :attr:`audits`. Anything else is refused (the fixture is read-only)."""
        target = parse_path(path)
        if target is None or target.kind != "special" or target.rest not in AUDIT_PATHS:
            return _json_error(405, "the npm fixture is read-only")
        if headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        asked: dict[str, list[str]] = json.loads(body or b"{}")
        with self._lock:
            self.audits.append(asked)
        found = {name: [ADVISORY] for name in asked if name == ADVISORY["module_name"]}
        return _Answer(200, {"Content-Type": "application/json"}, json.dumps(found).encode())

    def _encoded(
        self,
        body: bytes,
        headers: Mapping[str, str],
        content_type: str,
        *,
        modified: dt.datetime | None = None,
    ) -> _Answer:
        etag = _etag(body)
        out = {"Content-Type": content_type or "application/json", "ETag": etag}
        if modified is not None:
            out["Last-Modified"] = email.utils.format_datetime(modified, usegmt=True)
        if _etag_matches(headers.get("if-none-match"), etag) or (
            modified is not None
            and "if-none-match" not in headers
            and _not_modified_since(headers.get("if-modified-since"), modified)
        ):
            return _Answer(304, {k: v for k, v in out.items() if k != "Content-Type"}, b"")
        if self.gzip_documents and "gzip" in headers.get("accept-encoding", ""):
            out["Content-Encoding"] = "gzip"
            out["ETag"] = f"W/{etag}"  # another representation: a weak tag, as CDNs do
            body = gzip.compress(body, mtime=0)
        return _Answer(200, out, body)


def _not_modified_since(header: str | None, modified: dt.datetime) -> bool:
    if not header:
        return False
    try:
        since = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    return modified.replace(microsecond=0) <= since


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _json_error(status: int, message: str) -> _Answer:
    body = json.dumps({"error": message}).encode()
    return _Answer(status, {"Content-Type": "application/json"}, body)


def _handler(
    fixture: NpmFixture, open_connections: set[socket.socket], open_lock: threading.Lock
) -> type[BaseHTTPRequestHandler]:
    """The fixture's request handler; each connection is in ``open_connections`` while it
    is served, so that stopping the fixture can cut the keep-alive ones too (a stopped
    ThreadingHTTPServer accepts no new connection but goes on serving the open ones: a mirror
    holding one would still reach an "upstream that is gone")."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the public registry offers
        timeout = 30  # an idle keep-alive connection does not hold a thread for ever
        # Headers and body leave in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every keep-alive request.
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            with open_lock:
                open_connections.add(self.connection)

        def finish(self) -> None:
            with open_lock:
                open_connections.discard(self.connection)
            super().finish()

        def _headers(self) -> dict[str, str]:
            return {k.lower(): v for k, v in self.headers.items()}

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def _refuse(self) -> None:
            fixture._record(self.command, self.path, self._headers())
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self._send(_json_error(405, "the npm fixture is read-only"), head=False)

        def do_POST(self) -> None:
            headers = self._headers()
            behaviour = fixture._record(self.command, self.path, headers)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if behaviour is not None and behaviour.fault == "status":
                answer = _json_error(behaviour.status, "the npm fixture was told to fail")
            else:
                answer = fixture.post(self.path, headers, body)
            self._send(answer, head=False)

        do_PUT = do_DELETE = _refuse

        def _serve(self, *, head: bool) -> None:
            headers = self._headers()
            behaviour = fixture._record(self.command, self.path, headers)
            if behaviour is not None and behaviour.fault == "status":
                answer = _json_error(behaviour.status, "the npm fixture was told to fail")
            elif behaviour is not None and behaviour.fault == "html":
                page = b"<!DOCTYPE html><html><body><h1>Sign in to continue</h1></body></html>"
                answer = _Answer(200, {"Content-Type": "text/html; charset=utf-8"}, page)
            else:
                answer = fixture.answer(self.path, headers)
            self._send(answer, head=head, behaviour=behaviour if answer.status == 200 else None)

        def _send(self, answer: _Answer, *, head: bool, behaviour: Behaviour | None = None) -> None:
            body = answer.body
            length = len(body)
            if behaviour is not None and behaviour.fault == "tamper" and body:
                offset = min(behaviour.offset, len(body) - 1)
                body = body[:offset] + bytes([body[offset] ^ 0xFF]) + body[offset + 1 :]
            if behaviour is not None and behaviour.fault == "truncate":
                body = body[: len(body) // 2 if behaviour.keep is None else behaviour.keep]
                if not behaviour.full_length:
                    length = len(body)
                self.close_connection = True
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            if answer.status != 304:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            if head or answer.status == 304:
                return
            try:
                if behaviour is not None and behaviour.fault == "drip":
                    for start in range(0, len(body), behaviour.chunk):
                        self.wfile.write(body[start : start + behaviour.chunk])
                        self.wfile.flush()
                        time.sleep(behaviour.interval)
                else:
                    self.wfile.write(body)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def running_npm_fixture(
    tmp_path: Path | None = None,
    *,
    versions: Iterable[PackageVersion] | None = None,
    tags: Mapping[str, Mapping[str, str]] | None = None,
    gzip_documents: bool = True,
) -> Iterator[NpmFixture]:
    """The fixture registry on 127.0.0.1 (a free port) in a thread of this process, stopped on
    exit. ``versions`` defaults to :func:`standard_packages` (fresh times from now) with
    :data:`STANDARD_TAGS`. ``tmp_path`` is accepted for symmetry with the other rigs (the
    tarballs live in the content-addressed cache; nothing is written there)."""
    del tmp_path
    if versions is None:
        versions = standard_packages(dt.datetime.now(dt.UTC))
        tags = STANDARD_TAGS if tags is None else tags
    fixture = NpmFixture(versions, tags=tags, gzip_documents=gzip_documents)
    open_connections: set[socket.socket] = set()
    open_lock = threading.Lock()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fixture, open_connections, open_lock))
    server.daemon_threads = True
    fixture.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="npm-fixture", daemon=True)
    thread.start()
    try:
        yield fixture
    finally:
        server.shutdown()
        server.server_close()
        with open_lock:
            for connection in open_connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        thread.join(10)
