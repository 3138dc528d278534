"""Entrepôt's npm mirror against Verdaccio 5.33, side by side in one run (``bench/run.sh --npm``).

One fixture registry on 127.0.0.1 (a thread of this process serving precomputed bytes: a small
packument of a few versions, a 14 MB / 3,000-version packument and a 20 MB one from
``bench/npm_packument.py``'s generator, and 20 KB tarballs whose ``dist.integrity``/``shasum``
are right; gzip when asked, ETags and 304) is the upstream of both mirrors:

- Verdaccio (``bench/verdaccio.py``: installed with npm into a cache outside the repository),
  one uplink to the fixture with tarballs cached and packuments trusted for ``--maxage`` (the
  same as Entrepôt's default packument TTL, 5 minutes);
- Entrepôt as ``make run`` starts it (``entrepot serve``, default workers) with the fixture as
  its npm upstream (``ENTREPOT_NPM__UPSTREAM``), npm under ``/npm/``.

Both are warmed (every URL fetched twice: 200, the fixture's tarball bytes, every version's
``integrity``/``shasum`` as the fixture has them), then every benchmark runs on each server in
turn, ``--rounds`` times (the order alternates each round), one server loaded at a time: wrk
runs of the small packument (full and abbreviated), the 14 MB one with ``Accept-Encoding: gzip``
(abbreviated and full), a tarball, 304 revalidations (``If-None-Match`` with the ETag each
server gave), and the summed RSS of the server's process tree while 64 connections fetch the
20 MB packument. Between runs the bench waits until the server is idle again (a server still
answering requests wrk gave up on would steal the next run's CPU). The fixture's request count
is read around every run (did the mirror go upstream while measured?). Prints medians, ranges,
Entrepôt / Verdaccio ratios and the issue's targets as Markdown, and writes JSON to
bench/results/npm-peers-<date>.json. Servers are stopped by PID and temporary files removed on
exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

import gomod as gb  # noqa: E402
import npm_packument as npk  # noqa: E402
import verdaccio  # noqa: E402
from support.npmfixture import abbreviate  # noqa: E402
from support.servers import server_env, stop_process  # noqa: E402

MiB = 1 << 20
FULL_ACCEPT = "application/json"
# What npm sends for an install (npm-registry-fetch's corgi header).
ABBREVIATED_ACCEPT = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
ABBREVIATED_TYPE = "application/vnd.npm.install-v1+json"

SMALL = "bench-small"
SMALL_VERSIONS = ("1.0.0", "1.0.1", "1.1.0", "1.2.0", "2.0.0")
TARBALL_VERSION = "2.0.0"  # the tarball benchmarked (its ``latest``)
BIG = npk.NAME  # "@bench/big", 3,000 versions (~14 MB)
HUGE = "@bench/huge"  # the RSS row's packument (~20 MB)
LOCAL = "@bench/local"  # the small package's versions, published to Entrepôt itself

VERDACCIO = "Verdaccio"
ENTREPOT = "Entrepôt"
SERVERS = (VERDACCIO, ENTREPOT)


# ---------------------------------------------------------------------------------------------
# The fixture's documents (pure)


def make_tarball(name: str, version: str, size: int) -> bytes:
    """A package tarball as ``npm pack`` lays it out (``package/package.json`` and files),
    about ``size`` bytes: a payload of pseudo-random bytes (incompressible), deterministic for
    a name and version (gzip and tar times fixed)."""
    seed = hashlib.sha256(f"{name}@{version}".encode()).digest()
    payload = b"".join(
        hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
        for i in range(max(0, size - 700) // 32)
    )
    manifest = {"name": name, "version": version, "main": "index.js", "license": "MIT"}
    files = {
        "package/package.json": json.dumps(manifest, indent=2).encode() + b"\n",
        "package/index.js": b"module.exports = {};\n",
        "package/payload.bin": payload,
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 499162500, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), 9, mtime=0)


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def tarball_path(name: str, version: str) -> str:
    return f"/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


def small_packument(base_url: str, tarballs: Mapping[str, bytes]) -> dict[str, Any]:
    """A small package as the public registry serves it (a few KB): ``tarballs`` maps each
    version to its bytes (``dist`` is computed from them)."""
    versions: dict[str, Any] = {}
    times = {"created": "2023-01-02T03:04:05.000Z"}
    for i, version in enumerate(SMALL_VERSIONS):
        data = tarballs[version]
        versions[version] = {
            "name": SMALL,
            "version": version,
            "description": "A small package of the npm benchmark",
            "main": "index.js",
            "license": "MIT",
            "dependencies": {"left-pad": "^1.3.0", "ms": f"^2.{i}.0"},
            "engines": {"node": ">=18"},
            "_id": f"{SMALL}@{version}",
            "_nodeVersion": "20.11.1",
            "_npmVersion": "10.2.4",
            "maintainers": [{"name": "bench", "email": "bench@example.com"}],
            "dist": {
                "integrity": integrity(data),
                "shasum": hashlib.sha1(data).hexdigest(),
                "tarball": base_url + tarball_path(SMALL, version),
                "fileCount": 3,
                "unpackedSize": len(data),
            },
        }
        times[version] = f"2023-0{i + 2}-01T12:00:00.000Z"
    times["modified"] = max(times.values())
    return {
        "_id": SMALL,
        "_rev": "5-" + hashlib.md5(json.dumps(versions).encode()).hexdigest(),
        "name": SMALL,
        "description": "A small package of the npm benchmark",
        "dist-tags": {"latest": SMALL_VERSIONS[-1]},
        "versions": versions,
        "time": times,
        "maintainers": [{"name": "bench", "email": "bench@example.com"}],
        "readme": "# bench-small\n\n" + "A small package of the npm benchmark. " * 30,
        "readmeFilename": "README.md",
        "license": "MIT",
    }


def huge_packument(versions: int) -> bytes:
    """``bench/npm_packument.py``'s generator, renamed to :data:`HUGE` (tarball basenames
    too), so that it is a package of its own."""
    raw = npk.big_packument(versions, seed=20)
    return raw.replace(b"/-/big-", b"/-/huge-").replace(BIG.encode(), HUGE.encode())


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@dataclass(frozen=True)
class Representation:
    body: bytes
    content_type: str
    etag: str
    gzip: bytes
    gzip_etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Representation:
        tag = etag(body)
        return cls(body, content_type, tag, gzip.compress(body, 6, mtime=0), tag[:-1] + '-gz"')


@dataclass(frozen=True)
class Resource:
    """What the fixture serves on one path: a packument (full and abbreviated) or a file."""

    full: Representation
    abbreviated: Representation | None = None

    def pick(self, accept: str | None) -> Representation:
        if self.abbreviated is not None and accept and ABBREVIATED_TYPE in accept:
            return self.abbreviated
        return self.full


def packument_resource(body: bytes) -> Resource:
    short = json.dumps(abbreviate(json.loads(body)), separators=(",", ":")).encode()
    return Resource(
        Representation.of(body, "application/json"),
        Representation.of(short, ABBREVIATED_TYPE),
    )


def canonical(raw_path: str) -> str:
    """``/@scope%2fname`` (any spelling) → ``/@scope/name``; the query is dropped."""
    return urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)


def etag_matches(header: str | None, tag: str) -> bool:
    if not header:
        return False
    bare = tag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") in ("*", bare) for t in header.split(","))


# ---------------------------------------------------------------------------------------------
# The fixture registry (a thread of this process)


@dataclass
class Fixture:
    url: str = ""
    resources: dict[str, Resource] = field(default_factory=dict)
    tarballs: dict[str, bytes] = field(default_factory=dict)  # path -> bytes
    packuments: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    raw_packuments: dict[str, bytes] = field(default_factory=dict)  # added once the port is known
    requests: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_packument(self, name: str, body: bytes) -> None:
        self.resources["/" + name] = packument_resource(body)
        doc = json.loads(body)
        self.packuments[name] = {
            v: {k: m["dist"][k] for k in ("integrity", "shasum") if k in m["dist"]}
            for v, m in doc["versions"].items()
        }

    def add_tarball(self, path: str, data: bytes) -> None:
        self.tarballs[path] = data
        self.resources[path] = Resource(Representation.of(data, "application/octet-stream"))

    def count(self) -> int:
        with self.lock:
            return sum(self.requests.values())


def build_fixture(opts: argparse.Namespace) -> Fixture:
    """Every document and tarball, computed once (the URLs inside get the port later)."""
    start = time.perf_counter()
    fx = Fixture()
    fx.tarballs = {
        tarball_path(SMALL, v): make_tarball(SMALL, v, opts.tarball_kb * 1000)
        for v in SMALL_VERSIONS
    }
    fx.raw_packuments[BIG] = npk.big_packument(opts.big_versions)
    fx.raw_packuments[HUGE] = huge_packument(opts.huge_versions)
    print(f"fixture documents generated in {time.perf_counter() - start:.1f} s", flush=True)
    return fx


def _handler(fx: Fixture) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def _serve(self, *, head: bool) -> None:
            path = canonical(self.path)
            with fx.lock:
                fx.requests[path] += 1
            resource = fx.resources.get(path)
            if resource is None:
                body = json.dumps({"error": "Not found"}).encode()
                self._send(404, {"Content-Type": "application/json"}, body, head)
                return
            rep = resource.pick(self.headers.get("Accept"))
            # documents are compressed when asked; tarballs never (as the public registry)
            zipped = resource.abbreviated is not None and "gzip" in (
                self.headers.get("Accept-Encoding") or ""
            )
            tag = rep.gzip_etag if zipped else rep.etag
            headers = {"ETag": tag, "Cache-Control": "public, max-age=300"}
            if resource.abbreviated is not None:
                headers["Vary"] = "Accept, Accept-Encoding"
            if etag_matches(self.headers.get("If-None-Match"), tag):
                self._send(304, headers, b"", head)
                return
            headers["Content-Type"] = rep.content_type
            if zipped:
                headers["Content-Encoding"] = "gzip"
            self._send(200, headers, rep.gzip if zipped else rep.body, head)

        def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head and status != 304:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def running_fixture(fx: Fixture) -> Iterator[Fixture]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fx))
    server.daemon_threads = True
    fx.url = f"http://127.0.0.1:{server.server_address[1]}"
    small = small_packument(
        fx.url, {v: fx.tarballs[tarball_path(SMALL, v)] for v in SMALL_VERSIONS}
    )
    fx.add_packument(SMALL, json.dumps(small, separators=(",", ":")).encode())
    for path, data in list(fx.tarballs.items()):
        fx.add_tarball(path, data)
    for name, body in fx.raw_packuments.items():
        fx.add_packument(name, body)
    thread = threading.Thread(target=server.serve_forever, name="npm-fixture", daemon=True)
    thread.start()
    try:
        yield fx
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# ---------------------------------------------------------------------------------------------
# The servers


@dataclass
class Target:
    name: str
    registry: str  # the registry URL, with its trailing slash
    pid: int
    log: Path
    workers: int = 1

    def url(self, path: str) -> str:
        return self.registry + path.lstrip("/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def stop(proc: subprocess.Popen[bytes], seen: set[int]) -> None:
    """SIGTERM (then SIGKILL) the process we started, then any child of it still alive (by
    PID, and only while it is still the same command)."""
    children = {pid: _cmdline(pid) for pid in seen | set(gb.tree_pids(proc.pid)[1:])}
    children.pop(proc.pid, None)
    stop_process(proc, timeout=15)
    for pid, cmd in children.items():
        if cmd and _cmdline(pid) == cmd:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def start(
    stack: contextlib.ExitStack,
    name: str,
    cmd: list[str],
    env: dict[str, str],
    tmp: Path,
    *,
    registry: str,
    ready_path: str,
) -> Target:
    log = tmp / f"{name.encode('ascii', 'ignore').decode().lower()}.log"
    print(f"  $ {shlex.join(cmd)}", flush=True)
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    seen: set[int] = set()
    stack.callback(stop, proc, seen)
    base = registry.split("/", 3)
    origin = "/".join(base[:3])
    deadline = time.monotonic() + 60
    last = "no answer"
    while True:
        try:
            r = httpx.get(origin + ready_path, timeout=2)
            if r.status_code < 500:
                break
            last = f"{r.status_code} {r.text[:200]!r}"
        except httpx.HTTPError as e:
            last = repr(e)
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"  {name}: last answer to {ready_path}: {last}", flush=True)
            raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    time.sleep(1.0)  # pre-forked workers are up
    seen.update(gb.tree_pids(proc.pid))
    return Target(name, registry, proc.pid, log, workers=max(1, len(seen) - 1))


def start_verdaccio(
    stack: contextlib.ExitStack, fx: Fixture, tmp: Path, opts: argparse.Namespace
) -> Target:
    port = free_port()
    cfg = verdaccio.write_config(tmp / "verdaccio", port, fx.url + "/", maxage=opts.maxage)
    env = server_env({"NODE_ENV": "production"})
    cmd = verdaccio.command(cfg, port)
    t = start(
        stack, VERDACCIO, cmd, env, tmp, registry=f"http://127.0.0.1:{port}/", ready_path="/-/ping"
    )
    t.workers = 1  # one node process
    return t


def entrepot_env(fx: Fixture, port: int, opts: argparse.Namespace) -> dict[str, str]:
    env = {
        "ENTREPOT_NPM__UPSTREAM": fx.url + "/",
        "ENTREPOT_NPM__PUBLIC_URL": f"http://127.0.0.1:{port}/npm/",
    }
    if opts.no_go:
        env["ENTREPOT_GO__ENABLED"] = "false"
    return env


def start_entrepot(
    stack: contextlib.ExitStack, fx: Fixture, tmp: Path, opts: argparse.Namespace
) -> Target:
    port = free_port()
    extra = entrepot_env(fx, port, opts)
    cmd = [str(ROOT / ".venv" / "bin" / "entrepot"), "serve", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--data", str(tmp / "entrepot-data")]
    print("  env " + " ".join(f"{k}={v}" for k, v in extra.items()), flush=True)
    return start(
        stack,
        ENTREPOT,
        cmd,
        server_env(extra),
        tmp,
        registry=f"http://127.0.0.1:{port}/npm/",
        ready_path="/healthz",
    )


def publish_local(t: Target, fx: Fixture, data_dir: Path) -> dict[str, Any]:
    """Publish the small package's versions (manifests and tarballs as the fixture has them)
    to Entrepôt's private registry as ``@bench/local``, with a token made in its store: the
    local-package rows read what a publish built. Returns the URLs and what was published."""
    from entrepot.npm.auth import masked, new_token, token_key
    from entrepot.npm.registrystore import open_registry_store

    async def make_token() -> str:
        store = open_registry_store(None, data_dir)
        now = datetime.now(UTC)
        try:
            await store.create_user("bench", email="bench@example.com", password_hash="-", now=now)
            token = new_token()
            await store.create_token(
                token_key(token),
                user="bench",
                prefix=masked(token),
                readonly=False,
                cidrs=[],
                now=now,
            )
            return token
        finally:
            await store.close()

    token = asyncio.run(make_token())
    small = json.loads(fx.resources["/" + SMALL].full.body)
    published = []
    for version in SMALL_VERSIONS:
        manifest = dict(small["versions"][version])
        data = fx.tarballs[tarball_path(SMALL, version)]
        manifest["name"] = LOCAL
        manifest["_id"] = f"{LOCAL}@{version}"
        manifest["dist"] = {
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
            "shasum": hashlib.sha1(data).hexdigest(),
        }
        body = {
            "_id": LOCAL,
            "name": LOCAL,
            "dist-tags": {"latest": version},
            "versions": {version: manifest},
            "readme": small.get("readme", ""),
            "_attachments": {
                f"local-{version}.tgz": {
                    "data": base64.b64encode(data).decode(),
                    "length": len(data),
                }
            },
        }
        r = httpx.put(
            t.url(package_path(LOCAL)),
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if r.status_code != 201:
            raise RuntimeError(f"publishing {LOCAL}@{version}: {r.status_code} {r.text[:300]}")
        published.append(version)
    full = httpx.get(t.url(package_path(LOCAL)), headers={"Accept": FULL_ACCEPT}, timeout=10)
    if sorted(full.json()["versions"]) != sorted(published):
        raise RuntimeError(
            f"{LOCAL}: published {published}, served {list(full.json()['versions'])}"
        )
    print(f"  {t.name}: published {LOCAL} {', '.join(published)} ({len(full.content)} bytes)")
    return {"versions": published, "full_bytes": len(full.content)}


# ---------------------------------------------------------------------------------------------
# Warm-up and checks


def package_path(name: str) -> str:
    """How npm spells a package in a URL (``@scope%2fname``)."""
    return "/" + name.replace("/", "%2f")


# key: (package, Accept, Accept-Encoding)
DOCUMENTS: dict[str, tuple[str, str, str | None]] = {
    "small_full": (SMALL, FULL_ACCEPT, None),
    "small_abbrev": (SMALL, ABBREVIATED_ACCEPT, None),
    "big_abbrev_gzip": (BIG, ABBREVIATED_ACCEPT, "gzip"),
    "big_full_gzip": (BIG, FULL_ACCEPT, "gzip"),
    "huge_full": (HUGE, FULL_ACCEPT, None),
}


def request_headers(accept: str | None, encoding: str | None) -> dict[str, str]:
    headers = {"Accept-Encoding": encoding or "identity"}
    if accept:
        headers["Accept"] = accept
    return headers


def check_document(fx: Fixture, name: str, doc: dict[str, Any]) -> list[str]:
    """What differs from the fixture: versions, and each version's integrity and shasum."""
    problems = []
    want = fx.packuments[name]
    got = doc.get("versions") or {}
    if set(got) != set(want):
        problems.append(f"{name}: {len(got)} versions, the fixture has {len(want)}")
    bad = [
        v
        for v, dist in want.items()
        if v in got and {k: got[v].get("dist", {}).get(k) for k in dist} != dist
    ]
    if bad:
        problems.append(f"{name}: dist.integrity/shasum differ for {len(bad)} versions: {bad[:5]}")
    return problems


KEEP_HEADERS = (
    "content-type",
    "content-encoding",
    "content-length",
    "etag",
    "last-modified",
    "cache-control",
    "vary",
    "transfer-encoding",
    "x-entrepot-cache",
    "warning",
)


def fetch(url: str, headers: dict[str, str], timeout: float = 300) -> tuple[httpx.Response, int]:
    """The response (body decoded) and the bytes on the wire."""
    with httpx.Client(timeout=timeout) as client:
        r = client.get(url, headers=headers)
    return r, r.num_bytes_downloaded


def warm(targets: list[Target], fx: Fixture) -> dict[str, Any]:
    """Every document and the benchmarked tarball, twice per server (the first may go
    upstream). Anything wrong is a problem recorded (and printed); a failed Entrepôt stops the
    run, a failed Verdaccio is dropped."""
    out: dict[str, Any] = {"documents": {}, "tarball": {}, "problems": [], "tarball_urls": {}}
    for t in list(targets):
        try:
            for key, (name, accept, encoding) in DOCUMENTS.items():
                url = t.url(package_path(name))
                timings = []
                for _ in range(2):
                    t0 = time.perf_counter()
                    r, wire = fetch(url, request_headers(accept, encoding))
                    timings.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        raise RuntimeError(
                            f"GET {url} ({accept}): {r.status_code} {r.text[:500]!r}"
                        )
                doc = r.json()
                problems = check_document(fx, name, doc)
                # the fixture's full document has a readme; no abbreviated one has
                abbreviated = "readme" not in doc
                out["documents"].setdefault(key, {})[t.name] = {
                    "url": url,
                    "status": r.status_code,
                    "wire_bytes": wire,
                    "decoded_bytes": len(r.content),
                    "abbreviated_shape": abbreviated,
                    "has_time": "time" in doc,
                    "first_s": timings[0],
                    "second_s": timings[1],
                    "headers": {k: v for k, v in r.headers.items() if k.lower() in KEEP_HEADERS},
                }
                if accept == ABBREVIATED_ACCEPT and not abbreviated:
                    problems.append(f"{key}: asked for the abbreviated document, got the full one")
                out["problems"] += [f"{t.name}: {p}" for p in problems]
                print(
                    f"  {t.name} {key}: {wire / 1e6:.2f} MB on the wire"
                    f" ({len(r.content) / 1e6:.2f} MB decoded), first {timings[0]:.2f} s,"
                    f" second {timings[1]:.3f} s",
                    flush=True,
                )
                if key == "small_full":
                    out["tarball_urls"][t.name] = doc["versions"][TARBALL_VERSION]["dist"][
                        "tarball"
                    ]
            url = out["tarball_urls"][t.name]
            want = fx.tarballs[tarball_path(SMALL, TARBALL_VERSION)]
            for _ in range(2):
                r, wire = fetch(url, {"Accept-Encoding": "identity"})
                if r.status_code != 200:
                    raise RuntimeError(f"GET {url}: {r.status_code} {r.text[:500]!r}")
                if r.content != want:
                    raise RuntimeError(f"GET {url}: not the fixture's bytes ({len(r.content)} B)")
            out["tarball"][t.name] = {
                "url": url,
                "bytes": len(r.content),
                "sha256": hashlib.sha256(r.content).hexdigest(),
                "headers": {k: v for k, v in r.headers.items() if k.lower() in KEEP_HEADERS},
            }
        except (RuntimeError, httpx.HTTPError, ValueError, KeyError) as e:
            if t.name == ENTREPOT:
                raise RuntimeError(f"Entrepôt failed the warm-up: {e}") from e
            print(f"  {t.name} dropped: {e}", flush=True)
            out.setdefault("dropped", {})[t.name] = str(e)
            targets.remove(t)
    shas = {v["sha256"] for v in out["tarball"].values()}
    out["tarballs_identical"] = len(shas) == 1
    for p in out["problems"]:
        print(f"  WARNING {p}", flush=True)
    return out


def conditional(t: Target, url: str, headers: dict[str, str]) -> str | dict[str, str]:
    """The request headers that make ``t`` answer 304 (If-None-Match with its own ETag), or
    why there are none."""
    r, _ = fetch(url, headers)
    tag = r.headers.get("etag")
    if not tag:
        return f"no ETag on {r.status_code}"
    again = headers | {"If-None-Match": tag}
    r2, _ = fetch(url, again)
    if r2.status_code != 304:
        return f"ETag {tag} but If-None-Match answered {r2.status_code}"
    return again


# ---------------------------------------------------------------------------------------------
# Measuring


def wrk_script(path: Path, headers: Mapping[str, str]) -> Path:
    """A wrk Lua script sending ``headers`` with every request and reporting JSON."""
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n" + gb.WRK_DONE)
    return path


class TreeRss:
    """Samples the RSS of a process tree every ``interval`` s: peak of the sum, peak of each
    process."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_sum = 0
        self.peak_each: dict[int, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids, scanned = gb.tree_pids(self.pid), time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - scanned > 1:
                pids, scanned = gb.tree_pids(self.pid), time.monotonic()
            total = 0
            for pid in pids:
                rss = gb.rss_bytes([pid])
                total += rss
                self.peak_each[pid] = max(self.peak_each.get(pid, 0), rss)
            self.peak_sum = max(self.peak_sum, total)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rss_now(t: Target) -> dict[str, Any]:
    """The RSS of each process of ``t``'s tree now, and their sum (MiB)."""
    each = [round(gb.rss_bytes([pid]) / MiB, 1) for pid in gb.tree_pids(t.pid)]
    return {"each_mib": each, "sum_mib": round(sum(each), 1)}


def settle(t: Target, *, idle_cores: float = 0.05, max_s: float = 120.0) -> float:
    """Wait until ``t``'s process tree is idle (below ``idle_cores`` over half a second):
    requests a client gave up on may still be computed. Seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_s:
        cpu = gb.TreeCpu(t.pid)
        time.sleep(0.5)
        if cpu.seconds() / 0.5 < idle_cores:
            break
    return time.perf_counter() - start


def wait_quiet(max_s: float, *, below: float = 0.3) -> tuple[float, float]:
    """Wait (at most ``max_s``) until the machine's busy CPU is below ``below`` cores over a
    second: other work on a 2-core machine (a test suite) skews any run. (seconds waited,
    the last busy cores seen)."""
    start = time.perf_counter()
    busy = 0.0
    while True:
        before = gb.busy_seconds()
        time.sleep(1.0)
        busy = gb.busy_seconds() - before
        if busy < below or time.perf_counter() - start >= max_s:
            return time.perf_counter() - start, busy


@dataclass
class Bench:
    key: str
    label: str
    connections: int
    timeout: float
    # per server: (URL, headers) or the reason it is skipped
    requests: dict[str, tuple[str, dict[str, str]] | str]
    rss: bool = False
    duration: float | None = None  # seconds of the wrk run (None: --duration)


@dataclass
class Run:
    server: str
    rps: float
    p99_ms: float
    p50_ms: float
    bytes_per_s: float
    errors: int
    server_cores: float
    wrk_cores: float
    other_cores: float
    upstream_requests: int
    settle_s: float
    quiet_wait_s: float
    busy_before: float  # cores busy on the machine just before the run (-1: not measured)
    command: list[str]
    wrk: dict[str, float]
    rss: dict[str, float] = field(default_factory=dict)


def run_one(
    b: Bench, t: Target, fx: Fixture, *, tmp: Path, opts: argparse.Namespace, rnd: int
) -> Run:
    spec = b.requests[t.name]
    assert not isinstance(spec, str)
    url, headers = spec
    script = wrk_script(tmp / f"{b.key}-{t.name.encode('ascii', 'ignore').decode()}.lua", headers)
    quiet_s, busy = wait_quiet(opts.quiet_wait) if opts.quiet_wait else (0.0, -1.0)
    if quiet_s > 1.5:
        print(f"    waited {quiet_s:.0f} s for a quiet machine (busy {busy:.2f} cores)", flush=True)
    before = fx.count()
    sampler = TreeRss(t.pid) if b.rss else None
    baseline = 0
    if sampler is not None:
        baseline = gb.settle_rss(t.pid)
        sampler.__enter__()
    try:
        w = gb.run_wrk(
            f"{b.key} {t.name} r{rnd}",
            url,
            script,
            connections=b.connections,
            duration=b.duration or opts.duration,
            server_pid=t.pid,
            threads=opts.threads,
            timeout=b.timeout,
        )
    finally:
        # requests wrk gave up on may still be computed: the RSS is sampled until idle
        waited = settle(t, max_s=opts.settle_max)
        if sampler is not None:
            sampler.__exit__()
    rss: dict[str, float] = {}
    if sampler is not None:
        rss = {
            "baseline_mib": baseline / MiB,
            "peak_mib": sampler.peak_sum / MiB,
            "delta_mib": (sampler.peak_sum - baseline) / MiB,
            "peak_process_mib": max(sampler.peak_each.values(), default=0) / MiB,
            "processes": float(len(sampler.peak_each)),
            "samples": float(sampler.samples),
            "after_mib": gb.settle_rss(t.pid) / MiB,
        }
        print(
            f"    RSS before {rss['baseline_mib']:.0f} MiB, peak {rss['peak_mib']:.0f} MiB"
            f" (largest process {rss['peak_process_mib']:.0f} MiB, {len(sampler.peak_each)}"
            f" processes), after {rss['after_mib']:.0f} MiB",
            flush=True,
        )
    up = fx.count() - before
    if up or waited > 1:
        print(f"    upstream requests {up}; idle again after {waited:.1f} s", flush=True)
    return Run(
        server=t.name,
        rps=w.rps,
        p99_ms=w.ms("p99_us"),
        p50_ms=w.ms("p50_us"),
        bytes_per_s=w.bytes_per_s,
        errors=w.errors,
        server_cores=w.result["server_cores"],
        wrk_cores=w.result["wrk_cores"],
        other_cores=w.result["other_cores"],
        upstream_requests=up,
        settle_s=waited,
        quiet_wait_s=quiet_s,
        busy_before=busy,
        command=w.command,
        wrk=w.result,
        rss=rss,
    )


def make_benches(
    targets: list[Target], fx: Fixture, warmed: dict[str, Any], opts: argparse.Namespace
) -> list[Bench]:
    c = opts.connections
    small: dict[str, Any] = {"connections": c, "timeout": 2.0}
    big: dict[str, Any] = {
        "connections": c,
        "timeout": opts.big_timeout,
        "duration": opts.big_duration,
    }
    big_s = f", {opts.big_duration:g} s" if opts.big_duration != opts.duration else ""

    def one(key: str, t: Target) -> tuple[str, dict[str, str]]:
        name, accept, encoding = DOCUMENTS[key]
        return t.url(package_path(name)), request_headers(accept, encoding)

    def each(key: str) -> dict[str, tuple[str, dict[str, str]] | str]:
        return {t.name: one(key, t) for t in targets}

    def revalidations(key: str) -> dict[str, tuple[str, dict[str, str]] | str]:
        out: dict[str, tuple[str, dict[str, str]] | str] = {}
        for t in targets:
            url, headers = one(key, t)
            how = conditional(t, url, headers)
            out[t.name] = how if isinstance(how, str) else (url, how)
            print(f"  304 of {key}, {t.name}: {how}", flush=True)
        return out

    def local(key: str) -> dict[str, tuple[str, dict[str, str]] | str]:
        """The small document's row on the package published to Entrepôt (Verdaccio's own
        packages are not published in this run)."""
        _, accept, encoding = DOCUMENTS[key]
        out: dict[str, tuple[str, dict[str, str]] | str] = {}
        for t in targets:
            if t.name == ENTREPOT and "local" in warmed:
                out[t.name] = (t.url(package_path(LOCAL)), request_headers(accept, encoding))
            else:
                out[t.name] = "not measured: packages published to the server itself"
        return out

    big_mb = len(fx.resources["/" + BIG].full.body) / 1e6
    huge_mb = len(fx.resources["/" + HUGE].full.body) / 1e6
    small_kb = len(fx.resources["/" + SMALL].full.body) / 1e3
    tar_kb = len(fx.tarballs[tarball_path(SMALL, TARBALL_VERSION)]) / 1e3
    benches = [
        Bench(
            "small_full",
            f"small packument ({small_kb:.1f} kB), full, c={c}",
            requests=each("small_full"),
            **small,
        ),
        Bench(
            "small_abbrev",
            f"small packument, abbreviated, c={c}",
            requests=each("small_abbrev"),
            **small,
        ),
        Bench(
            "local_full",
            f"small packument published to Entrepôt ({LOCAL}), full, c={c}",
            requests=local("small_full"),
            **small,
        ),
        Bench(
            "local_abbrev",
            f"small packument published to Entrepôt ({LOCAL}), abbreviated, c={c}",
            requests=local("small_abbrev"),
            **small,
        ),
        Bench(
            "big_abbrev_gzip",
            f"{big_mb:.1f} MB packument, abbreviated, gzip, c={c}{big_s}",
            requests=each("big_abbrev_gzip"),
            **big,
        ),
        Bench(
            "big_full_gzip",
            f"{big_mb:.1f} MB packument, full, gzip, c={c}{big_s}",
            requests=each("big_full_gzip"),
            **big,
        ),
        Bench(
            "tarball",
            f"{tar_kb:.0f} kB tarball, c={c}",
            requests={t.name: (warmed["tarball_urls"][t.name], {}) for t in targets},
            **small,
        ),
        Bench(
            "small_304",
            f"small packument, abbreviated, 304 (If-None-Match), c={c}",
            requests=revalidations("small_abbrev"),
            **small,
        ),
        Bench(
            "big_304",
            f"{big_mb:.1f} MB packument, abbreviated, gzip, 304 (If-None-Match), c={c}{big_s}",
            requests=revalidations("big_abbrev_gzip"),
            **big,
        ),
    ]
    if opts.rss_connections:
        rc = opts.rss_connections
        benches.append(
            Bench(
                "rss_huge",
                f"RSS, {rc} connections fetching the {huge_mb:.1f} MB packument (full, identity)",
                connections=rc,
                timeout=opts.rss_timeout,
                requests=each("huge_full"),
                rss=True,
            )
        )
    return benches


def run_all(
    benches: list[Bench],
    targets: list[Target],
    fx: Fixture,
    *,
    tmp: Path,
    opts: argparse.Namespace,
    res: dict[str, Any],
) -> dict[str, dict[str, list[Run]]]:
    runs: dict[str, dict[str, list[Run]]] = {b.key: {} for b in benches}
    failures: dict[str, dict[str, list[str]]] = res.setdefault("failures", {})
    for t in targets:
        settle(t)
    for rnd in range(opts.rounds):
        order = targets if rnd % 2 == 0 else targets[::-1]
        for b in benches:
            print(f"\n## round {rnd + 1}/{opts.rounds}: {b.label}", flush=True)
            for t in order:
                if isinstance(b.requests.get(t.name, "not started"), str):
                    continue
                print(f"  {t.name}", flush=True)
                try:
                    run = run_one(b, t, fx, tmp=tmp, opts=opts, rnd=rnd)
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    if gb._interrupted.is_set():
                        raise
                    print(f"    FAILED: {e}", flush=True)
                    failures.setdefault(b.key, {}).setdefault(t.name, []).append(str(e))
                    settle(t)
                    continue
                runs[b.key].setdefault(t.name, []).append(run)
    return runs


# ---------------------------------------------------------------------------------------------
# Summary (pure)


@dataclass(frozen=True)
class Metric:
    label: str
    get: Callable[[Run], float]
    better: str | None  # "higher", "lower" or None (not compared)
    fmt: str


METRICS: dict[str, Metric] = {
    "rps": Metric("req/s", lambda r: r.rps, "higher", "{:,.1f}"),
    "p99": Metric("p99 ms", lambda r: r.p99_ms, "lower", "{:,.1f}"),
    "mbps": Metric("MB/s on the wire", lambda r: r.bytes_per_s / 1e6, "higher", "{:,.1f}"),
    "cores": Metric("server CPU cores", lambda r: r.server_cores, None, "{:.2f}"),
    # busy CPU of everything but the server and wrk (other work on the machine): noise
    "other": Metric("other CPU cores (noise)", lambda r: r.other_cores, None, "{:.2f}"),
    "cpu_req": Metric(
        "server CPU ms/request",
        lambda r: r.server_cores * 1e3 / r.rps if r.rps else 0.0,
        "lower",
        "{:,.2f}",
    ),
    "rss_peak": Metric("RSS peak, MiB (tree)", lambda r: r.rss["peak_mib"], "lower", "{:,.0f}"),
    "rss_proc": Metric(
        "RSS peak, largest process, MiB", lambda r: r.rss["peak_process_mib"], "lower", "{:,.0f}"
    ),
    "rss_base": Metric("RSS before, MiB (tree)", lambda r: r.rss["baseline_mib"], None, "{:,.0f}"),
}

BENCH_METRICS: dict[str, tuple[str, ...]] = {
    "rss_huge": ("rss_peak", "rss_proc", "rss_base", "rps", "mbps", "other"),
}
DEFAULT_METRICS = ("rps", "p99", "mbps", "cpu_req", "cores", "other")

# The targets: (bench key, metric, kind, value). kind "ratio": Entrepôt / Verdaccio
# at least value; "min": Entrepôt at least value; "max_per_worker": RSS per worker at most.
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("small_full", "rps", "ratio", 15.0),
    ("small_abbrev", "rps", "ratio", 15.0),
    ("big_abbrev_gzip", "rps", "ratio", 100.0),
    ("big_full_gzip", "rps", "ratio", 100.0),
    ("tarball", "rps", "ratio", 5.0),
    ("small_304", "rps", "min", 10_000.0),
    ("rss_huge", "rss_proc", "max", 150.0),
)


def summarize(runs: dict[str, dict[str, list[Run]]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, by_server in runs.items():
        for m in BENCH_METRICS.get(key, DEFAULT_METRICS):
            metric = METRICS[m]
            cell: dict[str, Any] = {}
            for name, rs in by_server.items():
                vals = [metric.get(r) for r in rs]
                cell[name] = {
                    "median": statistics.median(vals),
                    "min": min(vals),
                    "max": max(vals),
                    "errors": sum(r.errors for r in rs),
                    "upstream_requests": sum(r.upstream_requests for r in rs),
                }
            if (
                ENTREPOT in cell
                and VERDACCIO in cell
                and metric.better
                and cell[VERDACCIO]["median"]
            ):
                cell["ratio"] = cell[ENTREPOT]["median"] / cell[VERDACCIO]["median"]
            out.setdefault(key, {})[m] = cell
    return out


def target_verdicts(summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    verdicts = []
    for key, m, kind, value in TARGETS:
        cell = summary.get(key, {}).get(m, {})
        if kind == "ratio":
            got = cell.get("ratio")
            text = f">= {value:g}x Verdaccio"
            met = got is not None and got >= value
        elif kind == "min":
            got = cell.get(ENTREPOT, {}).get("median")
            text = f">= {value:,.0f} req/s"
            met = got is not None and got >= value
        else:
            got = cell.get(ENTREPOT, {}).get("median")
            text = f"<= {value:g} MiB per worker (largest process)"
            met = got is not None and got <= value
        verdicts.append({"bench": key, "metric": m, "target": text, "value": got, "met": met})
    return verdicts


def ratio_text(v: float) -> str:
    if v >= 10:
        return f"{v:,.0f}x"
    return f"{v:.2f}x" if v >= 0.1 else f"{v:.2g}x"


def table(
    benches: list[Bench], summary: dict[str, dict[str, dict[str, Any]]], failures: dict
) -> str:
    lines = [
        f"| benchmark | metric | {VERDACCIO} | {ENTREPOT} | Entrepôt / Verdaccio |",
        "|---|---|---|---|---|",
    ]
    for b in benches:
        for i, m in enumerate(BENCH_METRICS.get(b.key, DEFAULT_METRICS)):
            metric = METRICS[m]
            cell = summary.get(b.key, {}).get(m, {})
            vals = []
            for name in SERVERS:
                if name not in cell:
                    skipped = b.requests.get(name)
                    why = "failed" if failures.get(b.key, {}).get(name) else "skipped"
                    if isinstance(skipped, str):
                        why = f"skipped: {skipped}"
                    vals.append(why)
                    continue
                c = cell[name]
                f = metric.fmt
                text = f.format(c["median"])
                if c["min"] != c["max"]:
                    text += f" ({f.format(c['min'])}-{f.format(c['max'])})"
                if i == 0 and c["errors"]:
                    text += f", {c['errors']:,} errors"
                if i == 0 and c["upstream_requests"]:
                    text += f", {c['upstream_requests']} upstream requests"
                vals.append(text)
            ratio = ""
            if "ratio" in cell:
                ratio = ratio_text(cell["ratio"]) + f" ({metric.better} is better)"
            lines.append(f"| {b.label} | {metric.label} | " + " | ".join(vals) + f" | {ratio} |")
    return "\n".join(lines)


def verdict_table(verdicts: list[dict[str, Any]]) -> str:
    lines = ["| target | value | met |", "|---|---|---|"]
    for v in verdicts:
        value = v["value"]
        shown = "n/a" if value is None else (f"{value:,.1f}" if value >= 10 else f"{value:.2f}")
        if v["target"].endswith("Verdaccio") and value is not None:
            shown += "x"
        lines.append(
            f"| {v['bench']}: {v['target']} | {shown} | {'yes' if v['met'] else '**no**'} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="repetitions of the whole sequence")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument(
        "--big-duration",
        type=float,
        default=30.0,
        help="seconds per wrk run of the 14 MB packument (Verdaccio answers none in 10 s)",
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads (-t)")
    p.add_argument("--connections", type=int, default=10, help="wrk connections (-c)")
    p.add_argument("--big-timeout", type=float, default=30.0, help="wrk --timeout, big documents")
    p.add_argument("--big-versions", type=int, default=3000, help="versions of the big packument")
    p.add_argument(
        "--huge-versions", type=int, default=4330, help="versions of the RSS row's packument"
    )
    p.add_argument("--tarball-kb", type=int, default=20, help="kB of the benchmarked tarball")
    p.add_argument("--rss-connections", type=int, default=64, help="RSS row connections (0: off)")
    p.add_argument("--rss-timeout", type=float, default=60.0, help="wrk --timeout, RSS row")
    p.add_argument(
        "--settle-max",
        type=float,
        default=240.0,
        help="seconds to wait after a run for the server to be idle again",
    )
    p.add_argument(
        "--maxage", default="5m", help="Verdaccio's uplink maxage (Entrepôt's packument TTL: 5m)"
    )
    p.add_argument(
        "--only", choices=["verdaccio", "entrepot"], help="measure one server (a partial run)"
    )
    p.add_argument("--no-go", action="store_true", help="Entrepôt with ENTREPOT_GO__ENABLED=false")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for a quiet machine (0: never)",
    )
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    return p.parse_args(argv)


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "not found"
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def measure(tmp: Path, opts: argparse.Namespace, res: dict[str, Any]) -> list[Bench]:
    fx = build_fixture(opts)
    with contextlib.ExitStack() as stack:
        stack.enter_context(running_fixture(fx))
        res["fixture"] = {
            "url": fx.url,
            "sizes": {
                path: {"body": len(r.full.body), "gzip": len(r.full.gzip)}
                | (
                    {
                        "abbreviated": len(r.abbreviated.body),
                        "abbreviated_gzip": len(r.abbreviated.gzip),
                    }
                    if r.abbreviated
                    else {}
                )
                for path, r in fx.resources.items()
            },
        }
        for path, size in res["fixture"]["sizes"].items():
            print(f"  fixture {path}: {size}", flush=True)
        targets: list[Target] = []
        print("\n## starting the servers", flush=True)
        if opts.only != "entrepot":
            targets.append(start_verdaccio(stack, fx, tmp, opts))
        if opts.only != "verdaccio":
            targets.append(start_entrepot(stack, fx, tmp, opts))
        res["servers"] = {
            t.name: {
                "registry": t.registry,
                "pid": t.pid,
                "processes": len(gb.tree_pids(t.pid)),
                "workers": t.workers,
            }
            for t in targets
        }
        print(f"fixture {fx.url}; " + ", ".join(f"{t.name} {t.registry}" for t in targets))
        res["rss_started"] = {t.name: rss_now(t) for t in targets}
        print("\n## warm-up: every document and the tarball, twice per server", flush=True)
        res["warm"] = warm(targets, fx)
        for t in targets:
            if t.name == ENTREPOT:
                res["warm"]["local"] = publish_local(t, fx, tmp / "entrepot-data")
        res["rss_warm"] = {t.name: rss_now(t) for t in targets}
        for t in targets:
            a, b = res["rss_started"][t.name], res["rss_warm"][t.name]
            print(
                f"  {t.name} RSS (MiB, each process): started {a['each_mib']}, after the"
                f" warm-up {b['each_mib']}",
                flush=True,
            )
        res["fixture_requests_after_warm"] = dict(fx.requests)
        print("\n## benchmarks", flush=True)
        benches = make_benches(targets, fx, res["warm"], opts)
        res["runs"] = run_all(benches, targets, fx, tmp=tmp, opts=opts, res=res)
        res["fixture_requests_total"] = dict(fx.requests)
        for t in targets:
            problems = gb.log_problems(t.log.read_text(errors="replace"))
            if problems:
                res.setdefault("log_problems", {})[t.name] = problems[:20]
    res["names"] = [t.name for t in targets]
    return benches


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    gb.install_signal_handlers()
    info = gb.machine() | {"node": node_version()}
    info.pop("go", None)
    command = shlex.join([".venv/bin/python", "bench/npm_peers.py", *(argv or sys.argv[1:])])
    print(f"# Entrepôt's npm mirror vs Verdaccio {verdaccio.VERSION}\n$ {command}")
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), node {info['node']}, {info['wrk']}")
    res: dict[str, Any] = {"command": command, "machine": info, "date": time.strftime("%F %T %z")}
    res["options"] = vars(opts) | {"results": None}
    if opts.only != "entrepot":
        res["verdaccio_install"] = verdaccio.install()
    with tempfile.TemporaryDirectory(prefix="entrepot-bench-npm-") as tmpname:
        benches = measure(Path(tmpname), opts, res)
    res["summary"] = summarize(res["runs"])
    res["targets"] = target_verdicts(res["summary"])
    res["loadavg_end"] = os.getloadavg()
    print("\n## Results (median of the rounds, range in brackets)\n")
    print(table(benches, res["summary"], res["failures"]))
    print()
    print(verdict_table(res["targets"]))
    for problem in res["warm"]["problems"]:
        print(f"warm-up: {problem}")
    for name, why in res["warm"].get("dropped", {}).items():
        print(f"{name} dropped at warm-up: {why}")
    for key, by_server in res["failures"].items():
        for name, errors in by_server.items():
            print(f"{key}, {name}: {len(errors)} failure(s), first: {errors[0][:500]}")
    for name, lines in res.get("log_problems", {}).items():
        print(f"{name} log: {len(lines)} problem line(s), first: {lines[0]}")
    gb.write_results(opts.results, "npm-peers", res)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BaseException as e:
        if not (gb._interrupted.is_set() or isinstance(e, KeyboardInterrupt)):
            raise
        print("\ninterrupted; servers stopped and temporary files removed", file=sys.stderr)
        sys.exit(130)
