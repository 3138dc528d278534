"""Benchmarks of the checksum-database mirror (``bench/run.sh --sumdb``; docs/benchmarks.md).

Processes, all on 127.0.0.1: an *upstream* entrepot serving a directory of fixture modules
(``GOPROXY=file://DIR``), the test checksum database (golang.org/x/mod/sumdb's reference
server, tests/support/sumdbserver) vouching for them, and two mirrors of the upstream: one
verifying (``GOSUMDB=<key> <database url>``), one not (``GOSUMDB=off``).

a. Cache hits: ``wrk -t1 -c64`` cycling over cached lookups and tiles of the verifying mirror,
   then over ``.info``/``.mod`` hits of the same mirror, in the same run.
b. A cold ``go mod download`` of a 100-module graph, three ways: the mirror verifies and the
   go command does not (``GOSUMDB=off``): the mirror's own cost, the target; nothing
   verifies: the baseline; the mirror verifies and the go command verifies through it
   (``GOSUMDB=<key>``): what a default client sees. Fresh mirror data and module cache each
   round; rounds interleaved; the median is reported. The database is warmed first (it learns every
   module once, as the public one has), so its own first-sight cost is not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

import gomod as gb  # noqa: E402
from entrepot.gomod.module import escape_path, escape_version  # noqa: E402
from support.gocmd import GoClient  # noqa: E402
from support.modules import simple, write_module  # noqa: E402
from support.servers import Server  # noqa: E402
from support.sumdb import generate_key, running_sumdb  # noqa: E402

DB = "sum.bench.example"
GRAPH = 100
HIT_TARGET_RPS = 15_000
COLD_TARGET_RATIO = 1.10


def write_graph(root: Path, n: int, prefix: str = "example.com/graph") -> list[tuple[str, str]]:
    """n small modules (``<prefix>/m000`` …); the application requires them all."""
    mods = []
    for i in range(n):
        m = simple(f"{prefix}/m{i:03d}", "v1.0.0")
        write_module(root, m)
        mods.append((m.path, m.version))
    return mods


def app_module(dir: Path, mods: list[tuple[str, str]]) -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    requires = "".join(f"\t{p} {v}\n" for p, v in mods)
    (dir / "go.mod").write_text(f"module example.com/app\n\ngo 1.21\n\nrequire (\n{requires})\n")
    return dir


@contextlib.contextmanager
def mirror(tmp: Path, name: str, upstream: str, gosumdb: str) -> Iterator[Server]:
    with gb.server(tmp, name=name, proxy=upstream, workers=None, env={"GOSUMDB": gosumdb}) as srv:
        yield srv


def cold_download(
    tmp: Path, srv: Server, mods: list[tuple[str, str]], gosumdb: str, tag: str
) -> float:
    go = GoClient(tmp / f"client-{tag}", srv.url, extra_env={"GOSUMDB": gosumdb})
    work = app_module(go.home / "work", mods)
    start = time.perf_counter()
    go.run("mod", "download", cwd=work)
    return time.perf_counter() - start


def bench_hits(srv: Server, tmp: Path, mods: list[tuple[str, str]], opts: Any) -> dict[str, Any]:
    base = f"/sumdb/{DB}"
    sumdb_paths = [f"{base}/lookup/{escape_path(p)}@{escape_version(v)}" for p, v in mods[:20]]
    sumdb_paths += [f"{base}/tile/8/0/000.p/{GRAPH}", f"{base}/tile/8/0/000.p/50"]
    info_paths = [gb.mod_url("", p, v, "info") for p, v in mods[:10]]
    info_paths += [gb.mod_url("", p, v, "mod") for p, v in mods[:10]]
    for p in sumdb_paths + info_paths:
        gb.get_ok(srv.url + p)
    common = {
        "connections": opts.connections,
        "duration": opts.duration,
        "server_pid": srv.proc.pid,
    }
    up_before = gb.metric_rows(srv.url, "entrepot_upstream_requests_total")
    sumdb = gb.run_wrk(
        "sumdb lookups+tiles",
        srv.url + sumdb_paths[0],
        gb.wrk_script(tmp / "sumdb.lua", sumdb_paths),
        **common,
    )
    info = gb.run_wrk(
        "info+mod", srv.url + info_paths[0], gb.wrk_script(tmp / "info.lua", info_paths), **common
    )
    up_after = gb.metric_rows(srv.url, "entrepot_upstream_requests_total")
    return {"sumdb": sumdb, "info_mod": info, "upstream": gb.metric_delta(up_before, up_after)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="cold-download rounds per mode")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    opts = p.parse_args(argv)
    gb.install_signal_handlers()
    info = gb.machine()
    print("# Entrepôt checksum-database benchmarks")
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, {info['go']}")
    res: dict[str, Any] = {"machine": info, "options": vars(opts) | {"results": None}}
    with tempfile.TemporaryDirectory(prefix="entrepot-bench-sumdb-") as tmpname:
        tmp = Path(tmpname)
        updir = tmp / "upstream-files"
        mods = write_graph(updir, GRAPH)
        skey, vkey = generate_key(DB)
        with (
            gb.server(tmp, name="upstream", proxy=f"file://{updir}", workers=1) as up,
            running_sumdb(tmp, source=updir, skey=skey, name="sumdb") as db,
        ):
            # The database learns every module once (as the public one already has).
            with httpx.Client(timeout=30) as client:
                for path, version in mods:
                    url = f"{db.url}/lookup/{escape_path(path)}@{escape_version(version)}"
                    client.get(url).raise_for_status()
            verified_env = f"{vkey} {db.url}"
            # mode: (the mirror's GOSUMDB, the go command's GOSUMDB)
            modes = {
                "mirror verifies": (verified_env, "off"),
                "nothing verifies": ("off", "off"),
                "mirror and go verify": (verified_env, vkey),
            }
            times: dict[str, list[float]] = {m: [] for m in modes}
            print(f"\n## b. cold `go mod download` of {GRAPH} modules, {opts.rounds} rounds")
            for r in range(opts.rounds):
                for mode, (server_sumdb, client_sumdb) in modes.items():
                    rtmp = tmp / f"round{r}-{mode.replace(' ', '-')}"
                    rtmp.mkdir()
                    with mirror(rtmp, "mirror", up.url, server_sumdb) as srv:
                        t = cold_download(rtmp, srv, mods, client_sumdb, "client")
                        times[mode].append(t)
                        print(f"  round {r}, {mode}: {t:.2f} s", flush=True)
                        if mode == "mirror and go verify" and r == opts.rounds - 1:
                            print("\n## a. cache hits: sumdb lookups+tiles vs .info/.mod")
                            res["hits"] = bench_hits(srv, rtmp, mods, opts)
            med = {k: statistics.median(v) for k, v in times.items()}
            res["cold"] = {
                "times": times,
                "median": med,
                "ratio": med["mirror verifies"] / med["nothing verifies"],
                "ratio_with_client": med["mirror and go verify"] / med["nothing verifies"],
            }
    hits = res["hits"]
    print("\n## Results\n")
    print("| Benchmark | Result | Target | Met |\n|---|---|---|---|")
    s, i = hits["sumdb"], hits["info_mod"]
    print(
        f"| cached lookups+tiles (c={opts.connections}) | {s.rps:,.0f} req/s, p99"
        f" {s.ms('p99_us'):.2f} ms, errors {s.errors} | ≥ {HIT_TARGET_RPS:,} req/s and ≈ .info"
        f" | {'yes' if s.rps >= HIT_TARGET_RPS else 'no'} |"
    )
    print(
        f"| cached .info/.mod, same run | {i.rps:,.0f} req/s, p99 {i.ms('p99_us'):.2f} ms,"
        f" errors {i.errors} | (reference) | ratio {s.rps / i.rps:.2f} |"
    )
    c = res["cold"]
    m = c["median"]
    print(
        f"| cold download, {GRAPH} modules: the mirror verifies (go: GOSUMDB=off) |"
        f" {m['mirror verifies']:.2f} s vs {m['nothing verifies']:.2f} s with nothing"
        f" verifying (medians of {opts.rounds}) | ≤ {COLD_TARGET_RATIO:.2f}x"
        f" | {c['ratio']:.2f}x {'yes' if c['ratio'] <= COLD_TARGET_RATIO else 'no'} |"
    )
    print(
        f"| cold download, {GRAPH} modules: the mirror and the go command verify |"
        f" {m['mirror and go verify']:.2f} s | (reference: what a default client sees) |"
        f" {c['ratio_with_client']:.2f}x |"
    )
    print(f"upstream requests of the mirror during the hit runs: {hits['upstream'] or 'none'}")
    gb.write_results(opts.results, "sumdb", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
