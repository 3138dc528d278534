"""Entrepôt against the Go peers, in one run (``bench/peers.sh``; see docs/benchmarks.md).

Builds goproxy and Athens from the snapshots in ../shared/peers into a cache outside the
repository (``$ENTREPOT_CACHE`` or ``~/.cache/entrepot``, ``bench-peers/``; skipped when the
binary for that tarball's SHA-256 exists), writes one fixture upstream (a 1-worker entrepot on a
temporary directory), starts Entrepôt (its defaults, as ``make run``), goproxy and Athens on
127.0.0.1 from that same upstream, warms each and checks they serve the same bytes, then runs
every wrk benchmark on each server back to back, ``--rounds`` times (the order rotates each
round). Prints medians, ranges and Entrepôt / faster-peer ratios as Markdown and writes JSON to
bench/results/peers-<date>.json. Servers are stopped by PID and temporary files removed on
exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

import gomod as gb  # noqa: E402
from support.modules import write_module  # noqa: E402
from support.servers import server_env, stop_process  # noqa: E402

PEERS_DIR = ROOT.parent / "shared" / "peers"
# name: (tarball, directory inside it, package to build)
PEERS = {
    "goproxy": ("goproxy-80d3248.tar.gz", "goproxy", "./cmd/goproxy"),
    "Athens": ("athens-76c9424.tar.gz", "athens", "./cmd/proxy"),
}
BUILD_ENV = {"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
ATHENS_ENV = (
    "GO_ENV=production ATHENS_GOGET_WORKERS=10 ATHENS_PROTOCOL_WORKERS=30 ATHENS_LOG_LEVEL=error"
    " ATHENS_CLOUD_RUNTIME=none ATHENS_STORAGE_TYPE=disk ATHENS_DOWNLOAD_MODE=sync"
    " ATHENS_NETWORK_MODE=strict ATHENS_GONOSUM_PATTERNS=*"
)


def cache_dir() -> Path:
    base = os.environ.get("ENTREPOT_CACHE") or os.path.expanduser("~/.cache/entrepot")
    return Path(base) / "bench-peers"


def build_peer(name: str, rebuild: bool) -> dict[str, Any]:
    tarball, top, pkg = PEERS[name]
    src_tar = PEERS_DIR / tarball
    sha = hashlib.sha256(src_tar.read_bytes()).hexdigest()
    cache = cache_dir()
    binary = cache / "bin" / f"{top}-{sha[:16]}"
    src = cache / "src" / f"{top}-{sha[:16]}"
    env_text = " ".join(f"{k}={v}" for k, v in BUILD_ENV.items())
    command = f"tar xzf {src_tar} -C {src} && cd {src / top} && {env_text} go build -o"
    out: dict[str, Any] = {"tarball": str(src_tar), "sha256": sha, "binary": str(binary)}
    out["command"] = f"{command} {binary} {pkg}"
    if binary.exists() and not rebuild:
        print(f"{name}: cached {binary}", flush=True)
        return out | {"cached": True}
    print(f"{name}: building ($ {out['command']})", flush=True)
    start = time.perf_counter()
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    with tarfile.open(src_tar) as t:
        t.extractall(src, filter="data")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(binary.name + ".partial")
    cmd = ["go", "build", "-o", str(partial), pkg]
    env = os.environ | BUILD_ENV
    try:
        proc = subprocess.run(
            cmd, cwd=src / top, env=env, capture_output=True, text=True, timeout=1800, check=False
        )
        rc, err = proc.returncode, (proc.stderr or proc.stdout).strip()
    except subprocess.TimeoutExpired:
        rc, err = -1, "timed out after 1800 s"
    if rc != 0:
        partial.unlink(missing_ok=True)
        print(f"{name}: build FAILED ({rc}):\n{err}", flush=True)
        return out | {"cached": False, "error": err, "rc": rc}
    partial.rename(binary)
    out |= {"cached": False, "seconds": time.perf_counter() - start}
    print(f"{name}: built in {out['seconds']:.0f} s", flush=True)
    return out


@dataclass
class Target:
    name: str
    url: str
    pid: int
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (then SIGKILL), then what it forked and left (Athens runs the go command)."""
    children = {pid: cmdline(pid) for pid in gb.tree_pids(proc.pid)[1:]}
    stop_process(proc, timeout=15)
    for pid, cmd in children.items():
        if cmd and cmdline(pid) == cmd:  # still the same process
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def start_peer(
    stack: contextlib.ExitStack,
    name: str,
    cmd: list[str],
    env: dict[str, str],
    tmp: Path,
    *,
    port: int,
) -> Target:
    log = tmp / f"{name}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    stack.callback(stop, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # any HTTP answer will do: the module is fetched when warming
        try:
            httpx.get(url + "/", timeout=2)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    return Target(name, url, proc.pid, log)


def start_goproxy(stack: contextlib.ExitStack, binary: str, upstream: str, tmp: Path) -> Target:
    d = tmp / "goproxy"
    (d / "tmp").mkdir(parents=True)
    env = server_env(
        {"GOPROXY": upstream, "GOSUMDB": "off", "GOFLAGS": "-mod=mod", "TMPDIR": str(d / "tmp")}
    )
    env |= {"GOPATH": str(d / "gopath"), "GOMODCACHE": str(d / "gopath" / "pkg" / "mod")}
    env["GOCACHE"] = str(d / "gocache")
    port = free_port()
    cmd = [binary, "server", "--cacher-dir", str(d / "cache"), "--address", f"127.0.0.1:{port}"]
    cmd += ["--temp-dir", str(d / "tmp")]
    return start_peer(stack, "goproxy", cmd, env, tmp, port=port)


def start_athens(stack: contextlib.ExitStack, binary: str, upstream: str, tmp: Path) -> Target:
    d = tmp / "athens"
    (d / "tmp").mkdir(parents=True)
    port = free_port()
    # As in ../shared/peers/README.md, plus GOTOOLCHAIN=local for the go command it runs.
    env = server_env(dict(kv.split("=", 1) for kv in ATHENS_ENV.split()))
    env |= {
        "GO_BINARY_PATH": shutil.which("go") or "go",
        "ATHENS_DISK_STORAGE_ROOT": str(d / "storage"),
        "ATHENS_PORT": f"127.0.0.1:{port}",
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={upstream};GOSUMDB=off;GOTOOLCHAIN=local",
        "TMPDIR": str(d / "tmp"),
    }
    (d / "storage").mkdir()
    return start_peer(stack, "Athens", [binary], env, tmp, port=port)


def warm(targets: list[Target], paths: dict[str, str], skipped: dict[str, str]) -> dict:
    """GET every path twice on every server; a peer that does not answer 200 is dropped."""
    out: dict[str, Any] = {"sha256": {}, "problems": [], "headers": {}}
    keep = ("content-type", "etag", "last-modified", "cache-control", "x-entrepot-cache")
    for t in list(targets):
        for key, path in paths.items():
            for _ in range(2):
                r = httpx.get(t.url + path, timeout=600)
            if r.status_code != 200:
                why = f"GET {path}: {r.status_code} {r.text[:300]!r}"
                if t.name == "Entrepôt":
                    raise RuntimeError(why)
                print(f"  {t.name} dropped: {why}", flush=True)
                skipped[t.name] = why
                targets.remove(t)
                for shas in out["sha256"].values():
                    shas.pop(t.name, None)
                break
            out["sha256"].setdefault(key, {})[t.name] = hashlib.sha256(r.content).hexdigest()
            if key == "info":
                out.setdefault("info_body", {})[t.name] = r.text
            h = {k: v for k, v in r.headers.items() if k.lower() in keep}
            out["headers"].setdefault(key, {})[t.name] = h
    for key, shas in out["sha256"].items():
        if len(set(shas.values())) != 1:
            same_json = (
                key == "info"
                and len({json.dumps(json.loads(v)) for v in out["info_body"].values()}) == 1
            )
            what = "the same JSON in different bytes" if same_json else "different bytes"
            out["problems"].append(f"{key}: {what} across servers: {shas}")
    for p in out["problems"]:
        print(f"  WARNING {p}", flush=True)
    return out


def conditional(t: Target, path: str) -> tuple[str, str] | str:
    """(header, value) that makes ``t`` answer 304 for ``path``, or why there is none."""
    r = httpx.get(t.url + path, timeout=30)
    for have, send in (("ETag", "If-None-Match"), ("Last-Modified", "If-Modified-Since")):
        if value := r.headers.get(have):
            r2 = httpx.get(t.url + path, headers={send: value}, timeout=30)
            if r2.status_code == 304:
                return send, value
            return f"{have} {value!r} but {send} answered {r2.status_code}"
    return "no ETag and no Last-Modified"


def cores(r: gb.WrkRun) -> float:
    return float(r.result["server_cores"])


# metric: (label, from a run, higher is better (None: no ratio), format)
METRICS: dict[str, tuple[str, Callable[[gb.WrkRun], float], bool | None, str]] = {
    "rps": ("req/s", lambda r: r.rps, True, "{:,.0f}"),
    "gbps": ("GB/s", lambda r: r.bytes_per_s / 1e9, True, "{:.2f}"),
    "p50": ("p50 ms", lambda r: r.ms("p50_us"), False, "{:.2f}"),
    "p99": ("p99 ms", lambda r: r.ms("p99_us"), False, "{:.2f}"),
    # What the server spends per unit served, whoever ran out of CPU first.
    "cpu_req": ("server CPU us/request", lambda r: cores(r) * 1e6 / r.rps, False, "{:.0f}"),
    "cpu_gb": ("server CPU s/GB", lambda r: cores(r) * 1e9 / r.bytes_per_s, False, "{:.2f}"),
    "cores": ("CPU cores, server", cores, None, "{:.2f}"),
    "wrk": ("CPU cores, wrk", lambda r: float(r.result["wrk_cores"]), None, "{:.2f}"),
}


@dataclass
class Bench:
    key: str
    label: str
    path: str
    connections: int
    metrics: tuple[str, ...]
    scripts: dict[str, Path]  # server name -> wrk script (absent: the server is skipped)


def run_all(
    benches: list[Bench], targets: list[Target], opts: argparse.Namespace
) -> dict[str, dict[str, list[gb.WrkRun]]]:
    runs: dict[str, dict[str, list[gb.WrkRun]]] = {b.key: {} for b in benches}
    for rnd in range(opts.rounds):
        order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
        for b in benches:
            print(f"\n## round {rnd + 1}/{opts.rounds}: {b.label}", flush=True)
            for t in order:
                if t.name not in b.scripts:
                    continue
                print(f"  {t.name}", flush=True)
                run = gb.run_wrk(
                    f"{b.key} {t.name}",
                    t.url + b.path,
                    b.scripts[t.name],
                    connections=b.connections,
                    duration=opts.duration,
                    server_pid=t.pid,
                )
                runs[b.key].setdefault(t.name, []).append(run)
    return runs


def summarize(benches: list[Bench], runs: dict[str, dict[str, list[gb.WrkRun]]]) -> dict:
    out: dict[str, Any] = {}
    for b in benches:
        for m in b.metrics:
            _, get, higher, _ = METRICS[m]
            cell: dict[str, Any] = {}
            for name, rs in runs[b.key].items():
                vals = [get(r) for r in rs]
                cell[name] = {
                    "median": statistics.median(vals),
                    "min": min(vals),
                    "max": max(vals),
                    "errors": sum(r.errors for r in rs),
                }
            peers = {n: v["median"] for n, v in cell.items() if n != "Entrepôt"}
            if "Entrepôt" in cell and peers and higher is not None:
                best = (max if higher else min)(peers, key=lambda n: peers[n])
                cell["ratio"] = {"peer": best, "value": cell["Entrepôt"]["median"] / peers[best]}
            out.setdefault(b.key, {})[m] = cell
    return out


def table(benches: list[Bench], summary: dict, names: list[str]) -> str:
    lines = [
        "| benchmark | metric | " + " | ".join(names) + " | Entrepôt / faster peer |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for b in benches:
        for m in b.metrics:
            label, _, higher, fmt = METRICS[m]
            cell = summary[b.key][m]
            vals = []
            for n in names:
                if n not in cell:
                    vals.append("skipped")
                    continue
                c = cell[n]
                text = f"{fmt.format(c['median'])} ({fmt.format(c['min'])}-{fmt.format(c['max'])})"
                if c["errors"] and m in ("rps", "gbps"):
                    text += f", {c['errors']} errors"
                vals.append(text)
            ratio = ""
            if "ratio" in cell:
                arrow = "higher" if higher else "lower"
                ratio = (
                    f"{cell['ratio']['value']:.2f}x vs {cell['ratio']['peer']} ({arrow} is better)"
                )
            lines.append(f"| {b.label} | {label} | " + " | ".join(vals) + f" | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="repetitions of the whole sequence")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=64, help="wrk connections, small files")
    p.add_argument("--zip-connections", default="16,64", help="wrk connections, zips")
    p.add_argument("--big-mb", type=int, default=0, help="also a zip of N MiB (e.g. 50)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the peers")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    return p.parse_args(argv)


def write_fixtures(updir: Path, opts: argparse.Namespace, res: dict[str, Any]) -> dict[str, str]:
    write_module(updir, gb.SMALL)
    medium = gb.medium_module("v1.0.0")
    write_module(updir, medium)
    paths = {
        "info": gb.mod_url("", gb.SMALL.path, gb.SMALL.version, "info"),
        "mod": gb.mod_url("", gb.SMALL.path, gb.SMALL.version, "mod"),
        "zip5": gb.mod_url("", gb.MEDIUM_PATH, "v1.0.0", "zip"),
    }
    res["fixtures"] = {"zip5_bytes": len(medium.zip_bytes())}
    if opts.big_mb:
        size, _ = gb.write_big_module(updir, "v1.0.0", opts.big_mb)
        paths[f"zip{opts.big_mb}"] = gb.mod_url("", gb.BIG_PATH, "v1.0.0", "zip")
        res["fixtures"][f"zip{opts.big_mb}_bytes"] = size
    return paths


def make_benches(
    targets: list[Target], paths: dict[str, str], tmp: Path, opts: argparse.Namespace, res: dict
) -> list[Bench]:
    c = opts.connections
    small = ("rps", "p50", "p99", "cpu_req", "cores", "wrk")
    infomod = gb.wrk_script(tmp / "infomod.lua", [paths["info"], paths["mod"]])
    every = {t.name: infomod for t in targets}
    benches = [Bench(f"info_mod_c{c}", f".info+.mod hits, c={c}", paths["info"], c, small, every)]
    plain = gb.wrk_script(tmp / "plain.lua", [])
    for key in [k for k in paths if k.startswith("zip")]:
        mb = res["fixtures"][f"{key}_bytes"] / 1e6
        for zc in (int(x) for x in opts.zip_connections.split(",")):
            every = {t.name: plain for t in targets}
            label = f"{mb:.1f} MB zip hits, c={zc}"
            benches.append(
                Bench(
                    f"{key}_c{zc}",
                    label,
                    paths[key],
                    zc,
                    ("gbps", "p99", "cpu_gb", "cores", "wrk"),
                    every,
                )
            )
    # 304s: If-None-Match with each server's ETag; a server without one, If-Modified-Since
    # with its Last-Modified if it honours that (the header each used is recorded).
    res["conditional"], scripts = {}, {}
    for t in targets:
        how = conditional(t, paths["info"])
        if isinstance(how, str):
            res["conditional"][t.name] = f"skipped: {how}"
            continue
        res["conditional"][t.name] = f"{how[0]}: {how[1]}"
        scripts[t.name] = tmp / f"cond-{t.pid}.lua"
        header = f"wrk.headers[{json.dumps(how[0])}] = {json.dumps(how[1])}\n"
        scripts[t.name].write_text(header + gb.WRK_DONE)
    label = f".info 304 revalidations, c={c}"
    benches.append(Bench(f"info_304_c{c}", label, paths["info"], c, small, scripts))
    return benches


def measure(tmp: Path, opts: argparse.Namespace, res: dict[str, Any]) -> list[Bench]:
    updir = tmp / "upstream-files"
    paths = write_fixtures(updir, opts, res)
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(
            gb.server(tmp, name="upstream", proxy=f"file://{updir}", workers=1)
        )
        mirror = stack.enter_context(gb.server(tmp, name="mirror", proxy=up.url, workers=None))
        targets = [Target("Entrepôt", mirror.url, mirror.proc.pid, mirror.log_path)]
        for name, start in (("goproxy", start_goproxy), ("Athens", start_athens)):
            if name not in res["skipped"]:
                try:
                    targets.append(start(stack, res["builds"][name]["binary"], up.url, tmp))
                except RuntimeError as e:
                    print(f"{name}: {e}", flush=True)
                    res["skipped"][name] = str(e)
        res["servers"] = {
            t.name: {"url": t.url, "pid": t.pid, "processes": len(gb.tree_pids(t.pid))}
            for t in targets
        }
        print(f"upstream {up.url}; " + ", ".join(f"{t.name} {t.url}" for t in targets))
        print("\n## warm-up: every file twice on every server", flush=True)
        res["warm"] = warm(targets, paths, res["skipped"])
        benches = make_benches(targets, paths, tmp, opts, res)
        res["runs"] = run_all(benches, targets, opts)
        for t in targets:
            problems = gb.log_problems(t.log.read_text(errors="replace"))
            if problems:
                res.setdefault("log_problems", {})[t.name] = problems[:20]
    res["names"] = [t.name for t in targets]
    return benches


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    gb.install_signal_handlers()
    info = gb.machine()
    command = shlex.join([".venv/bin/python", "bench/peers.py", *sys.argv[1:]])
    print(f"# Entrepôt vs goproxy and Athens\n$ {command}")
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['go']}, {info['wrk']}")
    res: dict[str, Any] = {"command": command, "machine": info}
    res["options"] = vars(opts) | {"results": None}
    res["builds"] = {name: build_peer(name, opts.rebuild) for name in PEERS}
    res["skipped"] = {n: "build failed" for n, b in res["builds"].items() if "error" in b}
    with tempfile.TemporaryDirectory(prefix="entrepot-bench-peers-") as tmpname:
        benches = measure(Path(tmpname), opts, res)
    res["summary"] = summarize(benches, res["runs"])
    res["loadavg_end"] = os.getloadavg()
    print("\n## Results (median of the rounds, range in brackets)\n")
    print(table(benches, res["summary"], res["names"]))
    for name, why in res["skipped"].items():
        print(f"\n{name} skipped: {why}")
    for key, why in res["conditional"].items():
        print(f"304 revalidation, {key}: {why}")
    for problem in res["warm"]["problems"]:
        print(f"warm-up: {problem}")
    for name, lines in res.get("log_problems", {}).items():
        print(f"{name} log: {len(lines)} problem line(s), first: {lines[0]}")
    gb.write_results(opts.results, "peers", res)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BaseException as e:
        if not (gb._interrupted.is_set() or isinstance(e, KeyboardInterrupt)):
            raise
        print("\ninterrupted; servers stopped and temporary files removed", file=sys.stderr)
        sys.exit(130)
