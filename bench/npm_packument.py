"""Computing a package's documents once per upstream change: how long, for the largest ones.

Issue 12 asks that the full and abbreviated documents (with gzip forms and ETags) be computed
once per upstream change and served as bytes, and that computing them for a 14 MB /
3,000-version packument take well under a second. This generates such a packument (random
hashes, signatures and dependency sets, so it compresses like a real one rather than like
repeated text), then times :func:`entrepot.npm.packument.compute` and its parts: parsing, the
two JSON encodings, gzip, brotli, and a ``GET /<name>/<version>`` slice; then gzip levels and
brotli qualities side by side (size and CPU), and the same for a small document.

Not a test: ``.venv/bin/python bench/npm_packument.py [--versions 3000] [--rounds 7]
[--brotli-quality 5]``; no network. Do not run it while the test suite loads the machine.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import brotli

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "proxy"))

from entrepot.npm import packument  # noqa: E402

NAME = "@bench/big"
UPSTREAM = "https://registry.example.com"
MIRROR = "http://127.0.0.1:8080/npm/"
WORDS = [
    "fast",
    "small",
    "simple",
    "tiny",
    "modern",
    "robust",
    "async",
    "stream",
    "parser",
    "schema",
    "config",
    "logger",
    "http",
    "client",
    "server",
    "test",
    "utility",
    "browser",
    "node",
    "plugin",
    "loader",
    "compiler",
    "runtime",
    "cache",
    "queue",
]


def _b64(rng: random.Random, n: int) -> str:
    return base64.b64encode(rng.randbytes(n)).decode()


def _dep_name(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"@{rng.choice(WORDS)}/{rng.choice(WORDS)}-{rng.choice(WORDS)}"
    return f"{rng.choice(WORDS)}-{rng.choice(WORDS)}{rng.randrange(100)}"


def _range(rng: random.Random) -> str:
    return f"{rng.choice('^~')}{rng.randrange(20)}.{rng.randrange(30)}.{rng.randrange(50)}"


class Evolving:
    """What changes between one version and the next in a real package: a few dependency
    ranges, now and then a dependency or the description; everything else is carried over.
    With ``drift=1.0`` every version is drawn afresh (a worst case for gzip)."""

    def __init__(self, rng: random.Random, drift: float) -> None:
        self.rng = rng
        self.drift = drift
        self.description = self._description()
        self.keywords = rng.sample(WORDS, 6)
        self.groups = {
            "dependencies": self._deps(16),
            "devDependencies": self._deps(50),
            "peerDependencies": self._deps(2),
            "optionalDependencies": self._deps(4),
        }

    def _description(self) -> str:
        return " ".join(self.rng.choices(WORDS, k=50))

    def _deps(self, n: int) -> dict[str, str]:
        return {_dep_name(self.rng): _range(self.rng) for _ in range(n)}

    def step(self) -> None:
        rng = self.rng
        if rng.random() < self.drift:  # drawn afresh
            self.description = self._description()
            self.keywords = rng.sample(WORDS, 6)
            self.groups = {k: self._deps(len(v)) for k, v in self.groups.items()}
            return
        if rng.random() < 0.02:
            self.description = self._description()
        for deps in self.groups.values():
            for name in list(deps):
                if rng.random() < 0.05:
                    deps[name] = _range(rng)
            if deps and rng.random() < 0.02:
                del deps[rng.choice(list(deps))]
                deps[_dep_name(rng)] = _range(rng)


def version_manifest(
    rng: random.Random, state: Evolving, version: str, published: str
) -> dict[str, Any]:
    """One version as the public registry writes it (the fields big packages carry)."""
    user = {"name": "release-bot", "email": "bot@example.com"}
    return {
        "name": NAME,
        "version": version,
        "description": state.description,
        "keywords": state.keywords,
        "homepage": "https://example.com/big#readme",
        "bugs": {"url": "https://example.com/big/issues"},
        "license": "MIT",
        "author": {"name": "Example Author", "email": "author@example.com"},
        "repository": {"type": "git", "url": "git+https://example.com/big.git"},
        "main": "./dist/index.js",
        "types": "./dist/index.d.ts",
        "exports": {
            ".": {"import": "./dist/index.mjs", "require": "./dist/index.js"},
            "./package.json": "./package.json",
        },
        "scripts": {
            "build": "tsc -p tsconfig.build.json",
            "test": "vitest run",
            "lint": "eslint . --ext .ts",
            "prepublishOnly": "npm run build",
        },
        "files": ["dist", "bin", "README.md", "LICENSE"],
        "contributors": [
            {"name": "Contributor One", "email": "one@example.com"},
            {"name": "Contributor Two", "email": "two@example.com"},
        ],
        **{group: dict(deps) for group, deps in state.groups.items()},
        "funding": {"type": "opencollective", "url": "https://example.com/fund"},
        "engines": {"node": ">=18"},
        "gitHead": rng.randbytes(20).hex(),
        "_id": f"{NAME}@{version}",
        "_nodeVersion": "20.11.1",
        "_npmVersion": "10.2.4",
        "dist": {
            "integrity": "sha512-" + _b64(rng, 64),
            "shasum": rng.randbytes(20).hex(),
            "tarball": f"{UPSTREAM}/{NAME}/-/big-{version}.tgz",
            "fileCount": rng.randrange(10, 400),
            "unpackedSize": rng.randrange(10_000, 5_000_000),
            "attestations": {
                "url": f"{UPSTREAM}/-/npm/v1/attestations/{NAME}@{version}",
                "provenance": {"predicateType": "https://slsa.dev/provenance/v1"},
            },
            "signatures": [{"keyid": "SHA256:" + _b64(rng, 32), "sig": _b64(rng, 71)}],
        },
        "_npmUser": user,
        "directories": {},
        "maintainers": [user, {"name": "maintainer", "email": "m@example.com"}],
        "_npmOperationalInternal": {
            "host": "s3://npm-registry-packages",
            "tmp": f"tmp/big_{version}_{published}_0.{rng.randrange(10**9)}",
        },
        "_hasShrinkwrap": False,
    }


def big_packument(versions: int, *, drift: float = 0.0, seed: int = 12) -> bytes:
    """A packument of ``versions`` versions, compact JSON as the registry writes it."""
    rng = random.Random(seed)
    state = Evolving(rng, drift)
    manifests: dict[str, Any] = {}
    times: dict[str, str] = {"created": "2015-01-01T00:00:00.000Z"}
    start = 1_420_070_400.0
    for i in range(versions):
        version = f"{i // 400}.{(i // 20) % 20}.{i % 20}"
        if i % 10 == 9:
            version += f"-beta.{i % 7}"
        published = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start + i * 86_400))
        state.step()
        manifests[version] = version_manifest(rng, state, version, published)
        times[version] = published
    times["modified"] = max(times.values())
    stable = [v for v in manifests if "-" not in v]
    doc = {
        "_id": NAME,
        "_rev": "3012-" + rng.randbytes(16).hex(),
        "name": NAME,
        "description": "A package with many versions",
        "dist-tags": {"latest": stable[-1], "next": list(manifests)[-1]},
        "versions": manifests,
        "time": times,
        "maintainers": [{"name": "maintainer", "email": "m@example.com"}],
        "readme": "# big\n\n" + " ".join(rng.choices(WORDS, k=12_000)),
        "readmeFilename": "README.md",
        "users": {f"user{i}": True for i in range(300)},
        "license": "MIT",
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def squeeze(body: bytes, quality: int, window: int = packument.BROTLI_WINDOW) -> bytes:
    """Brotli as compute runs it (its window), at ``quality``."""
    packed: bytes = brotli.compress(body, quality=quality, lgwin=window)
    return packed


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(best wall-clock seconds, best CPU seconds of this process) of ``rounds`` calls.

    The best, not the median: other load only ever adds time. CPU time counts every thread
    (compute gzips in two), and moves little when other processes share the cores."""
    walls, cpus = [], []
    for _ in range(rounds):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versions", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-release-age", type=float, default=0.0, help="seconds; 0 = no policy")
    p.add_argument("--gzip-level", type=int, default=packument.GZIP_LEVEL)
    p.add_argument("--brotli-quality", type=int, default=packument.BROTLI_QUALITY)
    p.add_argument(
        "--drift",
        type=float,
        default=0.0,
        help="chance that a version's text is drawn afresh rather than evolved (1 = all)",
    )
    opts = p.parse_args(argv)
    raw = big_packument(opts.versions, drift=opts.drift)
    # Ages as of 15 days after the last release (one a day): --min-release-age 2592000
    # (30 days) hides the last 15.
    last = packument.parse_time(json.loads(raw)["time"]["modified"]) or time.time()
    now = last + 15 * 86_400.0
    policy = packument.Policy(min_release_age=opts.min_release_age)
    print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"upstream packument: {len(raw) / 1e6:.1f} MB, {opts.versions} versions, drift {opts.drift}"
    )

    def run() -> packument.Documents:
        return packument.compute(
            raw,
            name=NAME,
            base_url=MIRROR,
            now=now,
            max_bytes=1 << 30,
            policy=policy,
            gzip_level=opts.gzip_level,
            brotli_quality=opts.brotli_quality,
        )

    docs = run()
    full, corgi = docs.full, docs.abbreviated
    print(
        f"full: {len(full.body) / 1e6:.1f} MB, gzip {len(full.gzip) / 1e6:.2f} MB,"
        f" br {len(full.br) / 1e6:.2f} MB; abbreviated: {len(corgi.body) / 1e6:.1f} MB,"
        f" gzip {len(corgi.gzip) / 1e6:.2f} MB, br {len(corgi.br) / 1e6:.2f} MB;"
        f" index {len(docs.index.to_bytes()) / 1e3:.0f} kB; hidden {len(docs.hidden)}"
    )
    wall, cpu = timed(run, opts.rounds)
    label = f"compute (gzip -{opts.gzip_level}, br -q {opts.brotli_quality})"
    print(f"{label:<29} wall {wall * 1e3:7.1f} ms   CPU {cpu * 1e3:7.1f} ms")
    quality = opts.brotli_quality
    full_obj, corgi_obj = json.loads(full.body), json.loads(corgi.body)
    parts: dict[str, Callable[[], object]] = {
        "parse, with spans": lambda: packument._read_spans(raw),
        "json.loads (for comparison)": lambda: json.loads(raw),
        "encode the abbreviated": lambda: packument._encode(corgi_obj),
        "re-encode the full (avoided)": lambda: packument._encode_full(full_obj),
        "gzip of the full body": lambda: gzip.compress(full.body, opts.gzip_level, mtime=0),
        "gzip of the abbreviated": lambda: gzip.compress(corgi.body, opts.gzip_level, mtime=0),
        "brotli of the full body": lambda: squeeze(full.body, quality),
        "brotli of the abbreviated": lambda: squeeze(corgi.body, quality),
        "index to_bytes + from_bytes": lambda: packument.Index.from_bytes(docs.index.to_bytes()),
    }
    for label, fn in parts.items():
        wall, cpu = timed(fn, opts.rounds)
        print(f"  {label:<27} wall {wall * 1e3:7.1f} ms   CPU {cpu * 1e3:7.1f} ms")
    for level in (1, 4, 5, 6, 9):
        size = len(gzip.compress(full.body, level, mtime=0))
        wall, cpu = timed(lambda lvl=level: gzip.compress(full.body, lvl, mtime=0), 3)
        print(f"  gzip -{level} of the full body: {size / 1e6:.2f} MB, CPU {cpu * 1e3:.0f} ms")
    for q in (1, 3, 4, 5, 6, 7, 9):
        size = len(squeeze(full.body, q))
        wall, cpu = timed(lambda q=q: squeeze(full.body, q), 3)
        print(f"  brotli -q {q} of the full body: {size / 1e6:.2f} MB, CPU {cpu * 1e3:.0f} ms")
    for window in (16, 18, 20, 22, 24):
        size = len(squeeze(full.body, quality, window))
        wall, cpu = timed(lambda w=window: squeeze(full.body, quality, w), opts.rounds)
        print(
            f"  brotli -q {quality} -w {window} of the full body: {size / 1e6:.3f} MB,"
            f" CPU {cpu * 1e3:.0f} ms"
        )
    small_documents(opts)
    latest = docs.index.dist_tags["latest"]
    n = 10_000
    t0 = time.perf_counter()
    for _ in range(n):
        docs.manifest(latest)
    per = (time.perf_counter() - t0) / n
    print(f"GET /<name>/latest from the computed documents: {per * 1e6:.1f} us")
    return 0


def small_documents(opts: argparse.Namespace) -> None:
    """A small package's documents (5 versions, no readme): what every compute in a serving
    worker's thread costs, and each compressor's part of it."""
    raw = json.loads(big_packument(5))
    del raw["readme"], raw["users"]
    small = json.dumps(raw, separators=(",", ":")).encode()

    def run(quality: int) -> packument.Documents:
        return packument.compute(
            small,
            name=NAME,
            base_url=MIRROR,
            now=time.time(),
            max_bytes=1 << 30,
            gzip_level=opts.gzip_level,
            brotli_quality=quality,
        )

    body = run(opts.brotli_quality).full.body
    rounds = 200
    _, cpu = timed(lambda: run(opts.brotli_quality), rounds)
    print(
        f"small packument ({len(small) / 1e3:.1f} kB, 5 versions): compute CPU"
        f" {cpu * 1e6:.0f} us (gzip -{opts.gzip_level}, br -q {opts.brotli_quality})"
    )
    _, cpu = timed(lambda: gzip.compress(body, opts.gzip_level, mtime=0), rounds)
    size = len(gzip.compress(body, opts.gzip_level, mtime=0))
    print(f"  gzip -{opts.gzip_level} of its full body: {size} B, CPU {cpu * 1e6:.0f} us")
    for q in (4, 5, 6, 9, 11):
        size = len(squeeze(body, q))
        _, cpu = timed(lambda q=q: squeeze(body, q), rounds)
        print(f"  brotli -q {q} of its full body: {size} B, CPU {cpu * 1e6:.0f} us")


if __name__ == "__main__":
    sys.exit(main())
