"""Entrepôt against the Go peers, in one run (``bench/peers.sh``; see docs/benchmarks.md).

Builds goproxy and Athens from the snapshots in ../shared/peers into a cache outside the
repository (``$ENTREPOT_CACHE`` or ``~/.cache/entrepot``, ``bench-peers/``; skipped when the
binary for that tarball's SHA-256 exists), writes one fixture upstream (a 1-worker entrepot on a
temporary directory), starts Entrepôt (its defaults, as ``make run``, but a version list fresh
for ``--list-ttl`` seconds), goproxy and Athens on 127.0.0.1 from that same upstream, warms each
and checks they serve the same bytes, then runs every benchmark on each server back to back,
``--rounds`` times (the order rotates each round): wrk runs of ``.info``/``.mod`` hits, zip hits,
304 revalidations and ``@v/list`` (stale-while-revalidate where the server has it; the
upstream's list requests are counted), a cold ``go mod download`` of a 100-module graph that
server was never asked for, and the RSS of the server while 16 clients read a large zip. Prints
medians, ranges and Entrepôt / better-peer ratios as Markdown and writes JSON to
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

import gomod as gb  # noqa: E402
import sumdb as sb  # noqa: E402
from entrepot.gomod.module import escape_path  # noqa: E402
from support.gocmd import GoClient  # noqa: E402
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


# -- list -------------------------------------------------------------------------------------

# What each server does on GET <module>/@v/list, from its sources (see docs/benchmarks.md).
LIST_BEHAVIOUR = {
    "Entrepôt": (
        "answers from its cache: the list is fresh for {ttl:g} s (--list-ttl,"
        " ENTREPOT_GO__CACHE__LIST_TTL), then, within stale_while_revalidate (1h), served at"
        " once from the cache while one background refresh (one at a time per list and"
        " worker) asks the upstream"
    ),
    "goproxy": (
        "no cached answer on the request path: every @v/list is a GET of the upstream's"
        " @v/list (GoFetcher.List -> proxyList, not coalesced), stored in its cacher, then"
        " served; the cached copy is served only when the upstream fails (stale-if-error);"
        " Cache-Control: public, max-age=60"
    ),
    "Athens": (
        "no cached answer: every @v/list runs `go list -m -versions -json <module>@latest`"
        " with the upstream as GOPROXY in a fresh GOPATH (vcsLister, coalesced per module by"
        " singleflight while one runs: one upstream list request, plus the .info and .mod of"
        " the latest version, per go list) and merges the versions in its storage; with"
        " ATHENS_NETWORK_MODE=strict an upstream failure is an error; Cache-Control: no-cache,"
        " no-store, must-revalidate"
    ),
}


def check_list(targets: list[Target], path: str, ttl: float) -> dict[str, Any]:
    """GET the list twice on every server; the versions must agree. Who failed is listed."""
    out: dict[str, Any] = {"path": path, "servers": {}, "failed": {}, "problems": []}
    keep = ("content-type", "cache-control", "etag", "last-modified", "x-entrepot-cache")
    for t in targets:
        for _ in range(2):
            r = httpx.get(t.url + path, timeout=120)
        if r.status_code != 200:
            why = f"GET {path}: {r.status_code} {r.text[:300]!r}"
            print(f"  {t.name}: list skipped: {why}", flush=True)
            out["failed"][t.name] = why
            continue
        out["servers"][t.name] = {
            "body": r.text,
            "versions": sorted(r.text.split()),
            "headers": {k: v for k, v in r.headers.items() if k.lower() in keep},
            "behaviour": LIST_BEHAVIOUR.get(t.name, "").format(ttl=ttl),
        }
    versions = {n: tuple(v["versions"]) for n, v in out["servers"].items()}
    if len(set(versions.values())) > 1:
        out["problems"].append(f"list: different versions across servers: {versions}")
    bodies = {n: v["body"] for n, v in out["servers"].items()}
    if len(set(bodies.values())) > 1 and len(set(versions.values())) == 1:
        out["notes"] = f"the same versions in different bytes: {bodies}"
    for p in out["problems"]:
        print(f"  WARNING {p}", flush=True)
    return out


# -- measurements that are not wrk runs ---------------------------------------------------------


@dataclass
class Measure:
    """One measurement of one server that is not a wrk run (cold download, RSS)."""

    name: str
    command: str
    result: dict[str, float]
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return int(self.result.get("errors", 0))


Run = gb.WrkRun | Measure


def prewarm_upstream(up_url: str, graphs: dict[tuple[int, int], list[tuple[str, str]]]) -> float:
    """The upstream fetches every graph module once (.info, .mod, .zip), so that a cold
    download measures the server under test, not the upstream's own first fetch."""
    start = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for mods in graphs.values():
            for path, version in mods:
                for ext in ("info", "mod", "zip"):
                    r = client.get(gb.mod_url(up_url, path, version, ext))
                    if r.status_code != 200:
                        raise RuntimeError(f"upstream {path}@{version}.{ext}: {r.status_code}")
    return time.perf_counter() - start


def cold_download(
    t: Target, mods: list[tuple[str, str]], tmp: Path, tag: str, prefix: str
) -> Measure:
    """``go mod download`` of an application requiring ``mods`` (never asked of ``t``), with
    an empty module cache, GOSUMDB=off and GOFLAGS=-mod=mod (GoClient's environment)."""
    go = GoClient(tmp / f"client-{tag}", t.url)
    work = sb.app_module(go.home / "work", mods)
    command = (
        f"cd {work} && GOPROXY={t.url} GOSUMDB=off GOFLAGS=-mod=mod"
        f" GOMODCACHE={go.home / 'modcache'} go mod download  # {prefix}/m000..m{len(mods) - 1:03d}"
    )
    print(f"  $ {command}", flush=True)
    cpu = gb.TreeCpu(t.pid)
    start = time.perf_counter()
    done = go.run("mod", "download", cwd=work, check=False)
    seconds = time.perf_counter() - start
    server_cpu = cpu.seconds()
    go.run("clean", "-modcache", check=False)  # read-only directories; and the disk space
    if done.returncode != 0:
        raise RuntimeError(f"go mod download failed ({done.returncode}): {done.stderr[-2000:]}")
    print(f"    {seconds:.2f} s; server CPU {server_cpu:.2f} s", flush=True)
    return Measure(
        t.name, command, {"seconds": seconds, "server_cpu_s": server_cpu}, {"prefix": prefix}
    )


def warm_rss_zip(targets: list[Target], path: str, size: int, sha: str) -> dict[str, Any]:
    """Each server fetches the big zip (cold, timed) and serves it once more from its cache;
    both bodies must be the fixture's. Who failed is left out of the RSS row."""
    out: dict[str, Any] = {"cold_s": {}, "hit_s": {}, "failed": {}}
    for t in targets:
        try:
            _, got_cold, cold = gb.download(t.url + path)
            _, got_hit, hit = gb.download(t.url + path)
            if got_cold != sha or got_hit != sha:
                raise RuntimeError("different bytes from the fixture")
        except (RuntimeError, httpx.HTTPError) as e:
            print(f"  {t.name}: RSS row skipped: {e}", flush=True)
            out["failed"][t.name] = str(e)
            continue
        out["cold_s"][t.name], out["hit_s"][t.name] = cold, hit
        print(f"  {t.name}: {size / 1e6:.0f} MB cold {cold:.2f} s, hit {hit:.2f} s", flush=True)
    return out


def rss_run(t: Target, path: str, size: int) -> Measure:
    # Bounded: RSS_CLIENTS downloads at once, each given up after max_seconds.
    max_seconds = max(60.0, RSS_CLIENTS * size / 50e6)
    out = gb.concurrent_downloads(t.pid, t.url + path, size, RSS_CLIENTS, max_seconds=max_seconds)
    result = {
        "rss_delta_mib": out["rss_delta_mib"],
        "rss_baseline_mib": out["rss_baseline_mib"],
        "rss_peak_mib": out["rss_peak_mib"],
        "gbps": out["aggregate_bytes_per_s"] / 1e9,
        "errors": float(RSS_CLIENTS - out["complete_downloads"]),
    }
    return Measure(t.name, f"{RSS_CLIENTS} x {shlex.join(out['curl_command'])}", result, out)


# -- metrics and the table ----------------------------------------------------------------------


def cores(r: gb.WrkRun) -> float:
    return float(r.result["server_cores"])


@dataclass(frozen=True)
class Metric:
    label: str
    get: Callable[[Any], float]
    better: str | None  # "higher", "lower", or None: no comparison
    fmt: str
    diff: bool = False  # compared as Entrepôt minus the best peer instead of a ratio


METRICS: dict[str, Metric] = {
    "rps": Metric("req/s", lambda r: r.rps, "higher", "{:,.0f}"),
    "gbps": Metric("GB/s", lambda r: r.bytes_per_s / 1e9, "higher", "{:.2f}"),
    "p50": Metric("p50 ms", lambda r: r.ms("p50_us"), "lower", "{:.2f}"),
    "p99": Metric("p99 ms", lambda r: r.ms("p99_us"), "lower", "{:.2f}"),
    # What the server spends per unit served, whoever ran out of CPU first.
    "cpu_req": Metric("server CPU us/request", lambda r: cores(r) * 1e6 / r.rps, "lower", "{:.0f}"),
    "cpu_gb": Metric(
        "server CPU s/GB", lambda r: cores(r) * 1e9 / r.bytes_per_s, "lower", "{:.2f}"
    ),
    "cores": Metric("CPU cores, server", cores, None, "{:.2f}"),
    "wrk": Metric("CPU cores, wrk", lambda r: float(r.result["wrk_cores"]), None, "{:.2f}"),
    # The upstream's entrepot_http_requests_total{endpoint="list"}, before/after the run.
    "up_list": Metric(
        "upstream list requests", lambda r: r.result["upstream_list"], "lower", "{:,.0f}"
    ),
    "up_cores": Metric("CPU cores, upstream", lambda r: r.result["upstream_cores"], None, "{:.2f}"),
    "seconds": Metric("seconds", lambda r: r.result["seconds"], "lower", "{:.2f}"),
    "cpu_s": Metric("server CPU s", lambda r: r.result["server_cpu_s"], "lower", "{:.2f}"),
    "rss_delta": Metric(
        "RSS peak - before, MiB", lambda r: r.result["rss_delta_mib"], "lower", "{:.1f}", True
    ),
    "rss_base": Metric("RSS before, MiB", lambda r: r.result["rss_baseline_mib"], None, "{:.1f}"),
    "rss_gbps": Metric("GB/s, curl clients", lambda r: r.result["gbps"], None, "{:.2f}"),
}


@dataclass
class Bench:
    key: str
    label: str
    metrics: tuple[str, ...]
    servers: set[str]  # who is measured (the others are skipped)
    path: str = ""
    connections: int = 0
    scripts: dict[str, Path] = field(default_factory=dict)  # wrk: server name -> script
    timeout: float | None = None  # wrk --timeout, seconds
    measure: Callable[[Target, int], Measure] | None = None  # not wrk: (server, round)


def run_one(b: Bench, t: Target, rnd: int, opts: argparse.Namespace) -> Run:
    if b.measure is not None:
        return b.measure(t, rnd)
    return gb.run_wrk(
        f"{b.key} {t.name}",
        t.url + b.path,
        b.scripts[t.name],
        connections=b.connections,
        duration=opts.duration,
        server_pid=t.pid,
        threads=opts.threads,
        timeout=b.timeout,
    )


def run_all(
    benches: list[Bench], targets: list[Target], up: Target, opts: argparse.Namespace, res: dict
) -> dict[str, dict[str, list[Run]]]:
    """Every benchmark on every server, round after round. Around each run the upstream's
    request counters and CPU are read: what the server asked of it meanwhile."""
    runs: dict[str, dict[str, list[Run]]] = {b.key: {} for b in benches}
    upstream: dict[str, dict[str, list[dict[str, float]]]] = res.setdefault("upstream", {})
    failures: dict[str, dict[str, list[str]]] = res.setdefault("failures", {})
    counter = "entrepot_http_requests_total"
    for rnd in range(opts.rounds):
        order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
        for b in benches:
            print(f"\n## round {rnd + 1}/{opts.rounds}: {b.label}", flush=True)
            for t in order:
                if t.name not in b.servers:
                    continue
                print(f"  {t.name}", flush=True)
                before = gb.metric_rows(up.url, counter)
                up_cpu = gb.TreeCpu(up.pid)
                start = time.perf_counter()
                try:
                    run = run_one(b, t, rnd, opts)
                except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as e:
                    if gb._interrupted.is_set() or b.measure is None:
                        raise
                    print(f"    FAILED: {e}", flush=True)
                    failures.setdefault(b.key, {}).setdefault(t.name, []).append(str(e))
                    continue
                elapsed = time.perf_counter() - start
                up_seconds = up_cpu.seconds()
                time.sleep(0.2)  # requests still in flight at the upstream are counted
                delta = gb.metric_delta(before, gb.metric_rows(up.url, counter))
                delta = {k: v for k, v in delta.items() if "endpoint=metrics" not in k.split(",")}
                lists = sum(v for k, v in delta.items() if "endpoint=list" in k.split(","))
                run.result["upstream_list"] = lists
                run.result["upstream_cores"] = up_seconds / elapsed
                upstream.setdefault(b.key, {}).setdefault(t.name, []).append(delta)
                if "up_list" in b.metrics:
                    print(
                        f"    upstream: {lists:,.0f} list requests,"
                        f" {up_seconds / elapsed:.2f} cores; {delta}",
                        flush=True,
                    )
                runs[b.key].setdefault(t.name, []).append(run)
    return runs


def summarize(benches: list[Bench], runs: dict[str, dict[str, list[Run]]]) -> dict:
    out: dict[str, Any] = {}
    for b in benches:
        for m in b.metrics:
            metric = METRICS[m]
            cell: dict[str, Any] = {}
            for name, rs in runs[b.key].items():
                vals = [metric.get(r) for r in rs]
                cell[name] = {
                    "median": statistics.median(vals),
                    "min": min(vals),
                    "max": max(vals),
                    "errors": sum(r.errors for r in rs),
                }
            peers = {n: v["median"] for n, v in cell.items() if n != "Entrepôt"}
            if "Entrepôt" in cell and peers and metric.better is not None:
                pick = max if metric.better == "higher" else min
                best = pick(peers, key=lambda n: peers[n])
                ours = cell["Entrepôt"]["median"]
                if metric.diff:
                    cell["compare"] = {
                        "peer": best,
                        "kind": "difference",
                        "value": ours - peers[best],
                    }
                elif peers[best]:
                    cell["compare"] = {"peer": best, "kind": "ratio", "value": ours / peers[best]}
            out.setdefault(b.key, {})[m] = cell
    return out


def compare_text(metric: Metric, compare: dict[str, Any]) -> str:
    v, peer = compare["value"], compare["peer"]
    if compare["kind"] == "difference":
        v = round(v, 1) + 0.0  # no "-0.0"
        text = f"{v:+.1f} vs {peer} (Entrepôt minus it"
        return text + f"; {metric.better} is better)"
    number = f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"
    return f"{number}x vs {peer} ({metric.better} is better)"


def table(benches: list[Bench], summary: dict, names: list[str], failures: dict) -> str:
    lines = [
        "| benchmark | metric | " + " | ".join(names) + " | Entrepôt / better peer |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for b in benches:
        for i, m in enumerate(b.metrics):
            metric = METRICS[m]
            cell = summary[b.key][m]
            vals = []
            for n in names:
                if n not in cell:
                    vals.append("failed" if failures.get(b.key, {}).get(n) else "skipped")
                    continue
                c = cell[n]
                fmt = metric.fmt
                text = f"{fmt.format(c['median'])} ({fmt.format(c['min'])}-{fmt.format(c['max'])})"
                if c["errors"] and i == 0:
                    text += f", {c['errors']} errors"
                vals.append(text)
            ratio = compare_text(metric, cell["compare"]) if "compare" in cell else ""
            lines.append(f"| {b.label} | {metric.label} | " + " | ".join(vals) + f" | {ratio} |")
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------------------------

SERVERS = ("Entrepôt", "goproxy", "Athens")  # the index names each server's graph modules
RSS_VERSION = "v1.1.0"  # of gb.BIG_PATH; --big-mb writes v1.0.0
RSS_CLIENTS = gb.MEM_CLIENTS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="repetitions of the whole sequence")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (-t)")
    p.add_argument(
        "--wrk-timeout",
        type=float,
        help="wrk --timeout, seconds, every run (default: 2 for small files; zips:"
        " max(2, 4 x size / 100 MB/s x max(1, connections / 16)))",
    )
    p.add_argument("--connections", type=int, default=64, help="wrk connections, small files")
    p.add_argument("--zip-connections", default="16,64", help="wrk connections, zips")
    p.add_argument("--big-mb", type=int, default=50, help="also a zip of N MiB (0: off)")
    p.add_argument("--rss-mb", type=int, default=200, help="MiB of the zip of the RSS row (0: off)")
    p.add_argument(
        "--list-ttl", type=float, default=1.0, help="seconds Entrepôt's list stays fresh"
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the peers")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    return p.parse_args(argv)


def zip_timeout(size: int, connections: int) -> float:
    """4x the time one response takes if the connections share 100 MB/s per 16 of them
    (1.6 GB/s in all; wrk counts a slower response as a timeout and drops its latency)."""
    return max(2.0, 4 * size / 100e6 * max(1.0, connections / 16))


def write_fixtures(
    updir: Path, opts: argparse.Namespace, res: dict[str, Any]
) -> tuple[dict[str, str], dict[tuple[int, int], list[tuple[str, str]]]]:
    start = time.perf_counter()
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
    if opts.rss_mb:
        size, sha = gb.write_big_module(updir, RSS_VERSION, opts.rss_mb)
        res["fixtures"] |= {"rss_zip_bytes": size, "rss_zip_sha256": sha}
    # A graph per round and server, so that each server is cold for the modules it is asked.
    graphs = {
        (r, i): sb.write_graph(updir, sb.GRAPH, graph_prefix(r, i))
        for r in range(opts.rounds)
        for i in range(len(SERVERS))
    }
    res["fixtures"]["graph_modules"] = {graph_prefix(r, i): len(m) for (r, i), m in graphs.items()}
    print(f"fixtures written in {time.perf_counter() - start:.1f} s", flush=True)
    return paths, graphs


def graph_prefix(rnd: int, index: int) -> str:
    return f"example.com/graph/r{rnd}s{index}"


def make_benches(
    targets: list[Target],
    paths: dict[str, str],
    *,
    graphs: dict[tuple[int, int], list[tuple[str, str]]],
    tmp: Path,
    opts: argparse.Namespace,
    res: dict,
) -> list[Bench]:
    c = opts.connections
    everyone = {t.name for t in targets}
    small = ("rps", "p50", "p99", "cpu_req", "cores", "wrk")
    small_timeout = opts.wrk_timeout or 2.0
    infomod = gb.wrk_script(tmp / "infomod.lua", [paths["info"], paths["mod"]])
    benches = [
        Bench(
            f"info_mod_c{c}",
            f".info+.mod hits, c={c}",
            small,
            everyone,
            path=paths["info"],
            connections=c,
            scripts={t.name: infomod for t in targets},
            timeout=small_timeout,
        )
    ]
    plain = gb.wrk_script(tmp / "plain.lua", [])
    for key in [k for k in paths if k.startswith("zip")]:
        size = res["fixtures"][f"{key}_bytes"]
        for zc in (int(x) for x in opts.zip_connections.split(",")):
            benches.append(
                Bench(
                    f"{key}_c{zc}",
                    f"{size / 1e6:.1f} MB zip hits, c={zc}",
                    ("gbps", "p99", "cpu_gb", "cores", "wrk"),
                    everyone,
                    path=paths[key],
                    connections=zc,
                    scripts={t.name: plain for t in targets},
                    timeout=opts.wrk_timeout or zip_timeout(size, zc),
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
    benches.append(
        Bench(
            f"info_304_c{c}",
            label,
            small,
            set(scripts),
            path=paths["info"],
            connections=c,
            scripts=scripts,
            timeout=small_timeout,
        )
    )
    # @v/list: Entrepôt's list goes stale every --list-ttl seconds and is refreshed in the
    # background; the peers do what they do (LIST_BEHAVIOUR), measured the same way.
    listed = set(res["list"]["servers"])
    benches.append(
        Bench(
            f"list_c{c}",
            f"list, stale-while-revalidate, c={c}",
            ("rps", "p50", "p99", "cpu_req", "up_list", "cores", "up_cores", "wrk"),
            listed,
            path=paths["list"],
            connections=c,
            scripts={t.name: plain for t in targets if t.name in listed},
            timeout=small_timeout,
        )
    )

    def cold(t: Target, rnd: int) -> Measure:
        index = SERVERS.index(t.name)
        tag = f"r{rnd}s{index}"
        return cold_download(t, graphs[(rnd, index)], tmp, tag, graph_prefix(rnd, index))

    label = f"cold go mod download, {sb.GRAPH} modules"
    benches.append(Bench("cold_download", label, ("seconds", "cpu_s"), everyone, measure=cold))
    if opts.rss_mb:
        size = res["fixtures"]["rss_zip_bytes"]
        path = gb.mod_url("", gb.BIG_PATH, RSS_VERSION, "zip")
        ok = everyone - set(res["rss_warm"]["failed"])
        benches.append(
            Bench(
                f"rss_{opts.rss_mb}",
                f"RSS growth while {RSS_CLIENTS} clients read a {opts.rss_mb} MiB zip",
                ("rss_delta", "rss_base", "rss_gbps"),
                ok,
                measure=lambda t, rnd: rss_run(t, path, size),
            )
        )
    return benches


def measure(tmp: Path, opts: argparse.Namespace, res: dict[str, Any]) -> list[Bench]:
    updir = tmp / "upstream-files"
    paths, graphs = write_fixtures(updir, opts, res)
    list_path = f"/{escape_path(gb.SMALL.path)}/@v/list"
    # Entrepôt's list: fresh for --list-ttl s, then served stale while refreshed (1 h window).
    mirror_env = {
        "ENTREPOT_GO__CACHE__LIST_TTL": f"{opts.list_ttl:g}s",
        "ENTREPOT_GO__CACHE__STALE_WHILE_REVALIDATE": "1h",
    }
    res["entrepot_env"] = mirror_env
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(
            gb.server(tmp, name="upstream", proxy=f"file://{updir}", workers=1)
        )
        mirror = stack.enter_context(
            gb.server(tmp, name="mirror", proxy=up.url, workers=None, env=mirror_env)
        )
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
        print("\n## warm-up: the version list", flush=True)
        res["list"] = check_list(targets, list_path, opts.list_ttl)
        paths["list"] = list_path
        if opts.rss_mb:
            print(f"\n## warm-up: the {opts.rss_mb} MiB zip of the RSS row", flush=True)
            size, sha = res["fixtures"]["rss_zip_bytes"], res["fixtures"]["rss_zip_sha256"]
            rss_path = gb.mod_url("", gb.BIG_PATH, RSS_VERSION, "zip")
            res["rss_warm"] = warm_rss_zip(targets, rss_path, size, sha)
        print(f"\n## the upstream fetches the {len(graphs)} graphs once", flush=True)
        res["graph_prewarm_s"] = prewarm_upstream(up.url, graphs)
        print(f"  {res['graph_prewarm_s']:.1f} s", flush=True)
        benches = make_benches(targets, paths, graphs=graphs, tmp=tmp, opts=opts, res=res)
        res["wrk_timeouts"] = {b.key: b.timeout for b in benches if b.measure is None}
        upstream = Target("upstream", up.url, up.proc.pid, up.log_path)
        res["runs"] = run_all(benches, targets, upstream, opts, res)
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
    print(table(benches, res["summary"], res["names"], res["failures"]))
    for name, why in res["skipped"].items():
        print(f"\n{name} skipped: {why}")
    for key, why in res["conditional"].items():
        print(f"304 revalidation, {key}: {why}")
    for name, server in res["list"]["servers"].items():
        print(f"list, {name}: {server['behaviour']}")
    for name, why in res["list"]["failed"].items():
        print(f"list, {name}: skipped, {why}")
    for problem in res["warm"]["problems"] + res["list"]["problems"]:
        print(f"warm-up: {problem}")
    for name, why in res.get("rss_warm", {}).get("failed", {}).items():
        print(f"RSS row, {name}: skipped, {why}")
    for key, by_server in res["failures"].items():
        for name, errors in by_server.items():
            print(f"{key}, {name}: {len(errors)} failure(s), first: {errors[0][:500]}")
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
