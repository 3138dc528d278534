"""Benchmarks of the Go module mirror (``make bench``; see docs/benchmarks.md).

Two real ``entrepot serve`` processes on 127.0.0.1: an *upstream* serving a temporary directory
of fixture modules (``GOPROXY=file://DIR``) and the *mirror* under test (``GOPROXY=<upstream>``).
Measured: cache hits of ``.info``/``.mod`` and ``/healthz`` (wrk), cache hits of a 5 MB zip
(wrk), 200 concurrent cold requests for one zip (how many reach the upstream), and the memory of
the mirror's process tree while 16 clients download a 200 MB zip. Prints a Markdown table and
writes JSON to bench/results/. Every process and temporary directory is cleaned up on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fixture writers and server runner of the tests

from entrepot.gomod.module import escape_path, escape_version  # noqa: E402
from support.modules import FixtureModule, simple, write_module  # noqa: E402
from support.servers import Server, running_server  # noqa: E402

MiB = 1 << 20
SMALL = simple("example.com/bench/small", "v1.0.0")
MEDIUM_PATH = "example.com/bench/medium"
BIG_PATH = "example.com/bench/big"
HIT_TARGET_RPS = 15_000
HIT_TARGET_P99_MS = 5.0
ZIP_TARGET_BPS = 1e9
COLD_CLIENTS = 200
MEM_CLIENTS = 16


# ---------------------------------------------------------------------------------------------
# Fixtures


def medium_module(version: str) -> FixtureModule:
    """~5 MB zip: base64 text of random bytes deflates back to about the random size."""
    rng = hashlib.sha256(b"entrepot-bench-medium").digest()
    files = {"go.mod": f"module {MEDIUM_PATH}\n\ngo 1.21\n"}
    for i in range(5):
        # Deterministic pseudo-random bytes (SHA-256 in counter mode): the same zip every run.
        raw = b"".join(
            hashlib.sha256(rng + i.to_bytes(4, "big") + n.to_bytes(4, "big")).digest()
            for n in range(MiB // 32)
        )
        files[f"data/part{i}.txt"] = base64.encodebytes(raw).decode()
    return FixtureModule(MEDIUM_PATH, version, files)


def write_big_module(root: Path, version: str, size_mb: int) -> tuple[int, str]:
    """A module whose zip holds ``size_mb`` MiB of random bytes, stored (not deflated).

    Written through ``zipfile`` one MiB at a time, so it never sits in memory. Returns the zip's
    size and SHA-256.
    """
    mod = FixtureModule(BIG_PATH, version, go_mod=f"module {BIG_PATH}\n\ngo 1.21\n")
    base = root / escape_path(BIG_PATH) / "@v"
    base.mkdir(parents=True, exist_ok=True)
    v = escape_version(version)
    (base / f"{v}.info").write_text(json.dumps({"Version": version, "Time": mod.time}))
    (base / f"{v}.mod").write_bytes(mod.mod_bytes())
    with open(base / "list", "a") as f:
        f.write(version + "\n")
    prefix = f"{BIG_PATH}@{version}/"
    part = 4  # MiB per file inside the zip
    zpath = base / f"{v}.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as z:
        info = zipfile.ZipInfo(prefix + "go.mod", date_time=(2024, 1, 2, 3, 4, 6))
        z.writestr(info, mod.mod_bytes())
        left = size_mb
        index = 0
        while left > 0:
            n = min(part, left)
            info = zipfile.ZipInfo(prefix + f"data/part{index:03d}.bin", (2024, 1, 2, 3, 4, 6))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = n * MiB
            with z.open(info, "w") as out:
                for _ in range(n):
                    out.write(os.urandom(MiB))
            left -= n
            index += 1
    digest = hashlib.sha256()
    with open(zpath, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return zpath.stat().st_size, digest.hexdigest()


def mod_url(base: str, path: str, version: str, ext: str) -> str:
    return f"{base}/{escape_path(path)}/@v/{escape_version(version)}.{ext}"


# ---------------------------------------------------------------------------------------------
# Processes


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (the server parent and its pre-forked workers)."""
    found = [pid]
    for p in found:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    text = Path(f"/proc/{p}/task/{task}/children").read_text()
                    found.extend(int(c) for c in text.split())
    return found


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by ``pids``, plus that of the children they
    waited for (a ``go`` command a server ran and reaped is the server's work too)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


class TreeCpu:
    """CPU time of a process tree from now on: the processes there now (and, through the
    parent's counters, the children they reap) plus the ones that appeared meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pids = tree_pids(pid)
        self.start = cpu_seconds(self.pids)

    def seconds(self) -> float:
        late = [p for p in tree_pids(self.pid) if p not in self.pids]
        return cpu_seconds(self.pids) + cpu_seconds(late) - self.start


def busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, /proc/stat), in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the summed RSS of a process tree every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids = tree_pids(self.pid)
        last_scan = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_scan > 1:  # a restarted worker would have a new PID
                pids, last_scan = tree_pids(self.pid), now
            self.samples.append((now, rss_bytes(pids)))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((s for _, s in self.samples), default=0)


@contextlib.contextmanager
def server(
    tmp: Path,
    *,
    name: str,
    proxy: str,
    workers: int | None,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """``running_server``, plus: workers it forked are killed by PID if they outlive it."""
    args = ["--workers", str(workers)] if workers else []
    seen: set[int] = set()
    parent = None
    try:
        with running_server(tmp, proxy=proxy, name=name, args=args, env=env) as srv:
            parent = srv.proc.pid
            seen.update(tree_pids(parent))
            try:
                yield srv
            finally:
                seen.update(tree_pids(parent))
    finally:
        for pid in seen - {parent}:
            with contextlib.suppress(OSError):
                if b"entrepot" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def metric_rows(base: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(base + "/metrics", timeout=10).text
    rows: dict[tuple[tuple[str, str], ...], float] = {}
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(1))))
        rows[labels] = rows.get(labels, 0.0) + float(m.group(2))
    return rows


def metric_delta(
    before: dict[tuple[tuple[str, str], ...], float],
    after: dict[tuple[tuple[str, str], ...], float],
) -> dict[str, float]:
    out = {}
    for labels, v in after.items():
        d = v - before.get(labels, 0.0)
        if d:
            out[",".join(f"{k}={val}" for k, val in labels)] = d
    return out


# ---------------------------------------------------------------------------------------------
# wrk

WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"bytes\":%d,\"duration_us\":%d,\"p50_us\":%d," ..
    "\"p90_us\":%d,\"p99_us\":%d,\"p999_us\":%d,\"max_us\":%d,\"mean_us\":%.1f," ..
    "\"err_connect\":%d,\"err_read\":%d,\"err_write\":%d,\"err_status\":%d," ..
    "\"err_timeout\":%d}\n",
    summary.requests, summary.bytes, summary.duration, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_script(path: Path, paths: list[str]) -> Path:
    """A Lua script cycling through ``paths`` (none: the URL's own path) and reporting JSON."""
    text = ""
    if paths:
        quoted = ", ".join(json.dumps(p) for p in paths)
        text = (
            f"local paths = {{{quoted}}}\nlocal reqs = {{}}\nlocal i = 0\n"
            "function init(args)\n"
            '  for k, p in ipairs(paths) do reqs[k] = wrk.format("GET", p) end\n'
            "end\n"
            "function request()\n  i = (i % #reqs) + 1\n  return reqs[i]\nend\n"
        )
    path.write_text(text + WRK_DONE)
    return path


@dataclass
class WrkRun:
    name: str
    command: list[str]
    result: dict[str, float] = field(default_factory=dict)
    output: str = ""

    @property
    def seconds(self) -> float:
        return self.result["duration_us"] / 1e6

    @property
    def rps(self) -> float:
        return self.result["requests"] / self.seconds

    @property
    def bytes_per_s(self) -> float:
        return self.result["bytes"] / self.seconds

    @property
    def errors(self) -> int:
        return int(sum(v for k, v in self.result.items() if k.startswith("err_")))

    @property
    def cpu(self) -> str:
        r = self.result
        return (
            f"CPU: server {r['server_cores']:.2f} + wrk {r['wrk_cores']:.2f}"
            f" + other {r['other_cores']:.2f} cores"
        )

    def ms(self, key: str) -> float:
        return self.result[key] / 1000


def run_wrk(
    name: str,
    url: str,
    script: Path,
    *,
    connections: int,
    duration: float,
    server_pid: int,
    threads: int = 2,
    timeout: float | None = None,
) -> WrkRun:
    """``wrk -t<threads> -c<connections>``; ``timeout``: wrk's ``--timeout`` in seconds
    (rounded up: wrk takes whole seconds; default wrk's own, 2 s). A response slower than
    the timeout counts as a timeout error and is left out of the latency percentiles."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    if timeout is not None:
        cmd += ["--timeout", f"{math.ceil(timeout)}s"]
    cmd += ["-s", str(script), url]
    print(f"  $ {shlex.join(cmd)}", flush=True)
    server = TreeCpu(server_pid)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_seconds()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    elapsed = time.perf_counter() - start
    busy = busy_seconds() - busy
    server_cpu = server.seconds()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = after.ru_utime + after.ru_stime - child.ru_utime - child.ru_stime
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    m = re.search(r"^BENCHJSON (\{.*\})$", proc.stdout, re.M)
    if m is None:
        raise RuntimeError(f"no result in wrk output:\n{proc.stdout}")
    run = WrkRun(name, cmd, json.loads(m.group(1)), proc.stdout)
    # Cores kept busy during the run (1.0 = one core): who is short of CPU.
    run.result["server_cores"] = server_cpu / elapsed
    run.result["wrk_cores"] = wrk_cpu / elapsed
    run.result["other_cores"] = max(0.0, busy - server_cpu - wrk_cpu) / elapsed
    print(
        f"    {run.rps:,.0f} req/s, p50 {run.ms('p50_us'):.2f} ms, p99 {run.ms('p99_us'):.2f} ms,"
        f" {run.bytes_per_s / 1e9:.2f} GB/s, errors {run.errors}; CPU: server"
        f" {run.result['server_cores']:.2f} cores, wrk {run.result['wrk_cores']:.2f}, everything"
        f" else {run.result['other_cores']:.2f}",
        flush=True,
    )
    return run


# ---------------------------------------------------------------------------------------------
# Benchmarks


def get_ok(url: str, *, expect_cache: str | None = None) -> httpx.Response:
    r = httpx.get(url, timeout=120)
    if r.status_code != 200:
        raise RuntimeError(f"GET {url}: {r.status_code} {r.text[:200]}")
    got = r.headers.get("X-Entrepot-Cache")
    if expect_cache is not None and got != expect_cache:
        raise RuntimeError(f"GET {url}: X-Entrepot-Cache {got!r}, expected {expect_cache!r}")
    return r


def bench_hits(srv: Server, tmp: Path, opts: argparse.Namespace) -> dict[str, Any]:
    mirror = srv.url
    info = mod_url("", SMALL.path, SMALL.version, "info")
    mod = mod_url("", SMALL.path, SMALL.version, "mod")
    for p in (info, mod):
        get_ok(mirror + p)
        get_ok(mirror + p, expect_cache="hit")
    up_before = metric_rows(mirror, "entrepot_upstream_requests_total")
    common = {
        "connections": opts.connections,
        "duration": opts.duration,
        "server_pid": srv.proc.pid,
    }
    script = wrk_script(tmp / "infomod.lua", [info, mod])
    infomod = run_wrk("info+mod", mirror + info, script, **common)
    up_after = metric_rows(mirror, "entrepot_upstream_requests_total")
    plain = wrk_script(tmp / "plain.lua", [])
    health = run_wrk("healthz", mirror + "/healthz", plain, **common)
    return {"info_mod": infomod, "healthz": health, "upstream": metric_delta(up_before, up_after)}


def bench_zip_hit(srv: Server, tmp: Path, opts: argparse.Namespace, version: str) -> WrkRun:
    url = mod_url(srv.url, MEDIUM_PATH, version, "zip")
    get_ok(url)
    get_ok(url, expect_cache="hit")
    return run_wrk(
        "zip 5MB",
        url,
        wrk_script(tmp / "plain.lua", []),
        connections=opts.zip_connections,
        duration=opts.duration,
        server_pid=srv.proc.pid,
    )


async def _cold_clients(url: str, n: int) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    timeout = httpx.Timeout(300.0, pool=300.0)
    # Inside the event loop a signal cancels the clients (a KeyboardInterrupt raised in the
    # middle of asyncio's machinery would leave tasks behind).
    loop, main = asyncio.get_running_loop(), asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: (_interrupted.set(), main.cancel()))
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        gate = asyncio.Event()

        async def one() -> dict[str, Any]:
            await gate.wait()
            start = time.perf_counter()
            async with client.stream("GET", url) as r:
                headers_at = time.perf_counter() - start
                digest = hashlib.sha256()
                size = 0
                async for chunk in r.aiter_bytes(1 << 16):
                    digest.update(chunk)
                    size += len(chunk)
            return {
                "status": r.status_code,
                "cache": r.headers.get("X-Entrepot-Cache"),
                "sha256": digest.hexdigest(),
                "size": size,
                "headers_s": headers_at,
                "total_s": time.perf_counter() - start,
            }

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0.05)  # every task is waiting at the gate
        gate.set()
        return await asyncio.gather(*tasks)


def bench_cold(mirror: str, upstream: str, version: str, want_sha: str) -> dict[str, Any]:
    # The upstream serves this version from its own cache first, so only the mirror is cold.
    get_ok(mod_url(upstream, MEDIUM_PATH, version, "zip"))
    up_name = "entrepot_http_requests_total"
    before = metric_rows(upstream, up_name)
    mirror_before = metric_rows(mirror, "entrepot_upstream_requests_total")
    start = time.perf_counter()
    try:
        results = asyncio.run(
            _cold_clients(mod_url(mirror, MEDIUM_PATH, version, "zip"), COLD_CLIENTS)
        )
    finally:
        install_signal_handlers()  # closing the loop reset them
    wall = time.perf_counter() - start
    after = metric_rows(upstream, up_name)
    mirror_after = metric_rows(mirror, "entrepot_upstream_requests_total")
    upstream_delta = metric_delta(before, after)
    zip_fetches = sum(v for k, v in upstream_delta.items() if "endpoint=zip" in k)
    statuses: dict[str, int] = {}
    caches: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        caches[str(r["cache"])] = caches.get(str(r["cache"]), 0) + 1
    hashes = {r["sha256"] for r in results}
    out = {
        "clients": COLD_CLIENTS,
        "wall_s": wall,
        "upstream_zip_requests": zip_fetches,
        "upstream_requests_delta": upstream_delta,
        "mirror_upstream_delta": metric_delta(mirror_before, mirror_after),
        "statuses": statuses,
        "cache_headers": caches,
        "identical": len(hashes) == 1,
        "matches_fixture": hashes == {want_sha},
        "first_headers_s": min(r["headers_s"] for r in results),
        "last_headers_s": max(r["headers_s"] for r in results),
        "slowest_s": max(r["total_s"] for r in results),
    }
    print(
        f"    {COLD_CLIENTS} clients: upstream zip requests {zip_fetches:g}, statuses {statuses},"
        f" identical {out['identical']}, headers {out['first_headers_s']:.2f}"
        f"-{out['last_headers_s']:.2f} s, bodies done {wall:.2f} s, cache {caches}",
        flush=True,
    )
    return out


def download(url: str) -> tuple[int, str, float]:
    start = time.perf_counter()
    digest = hashlib.sha256()
    with httpx.stream("GET", url, timeout=600) as r:
        if r.status_code != 200:
            raise RuntimeError(f"GET {url}: {r.status_code}")
        for chunk in r.iter_bytes(MiB):
            digest.update(chunk)
    return r.status_code, digest.hexdigest(), time.perf_counter() - start


def settle_rss(pid: int, seconds: float = 1.0) -> int:
    with RssSampler(pid) as s:
        time.sleep(seconds)
    return max(v for _, v in s.samples)


def bench_memory(
    mirror: Server, upstream: str, version: str, size: int, want_sha: str
) -> dict[str, Any]:
    mirror_url = mirror.url
    _, sha, up_cold = download(mod_url(upstream, BIG_PATH, version, "zip"))
    if sha != want_sha:
        raise RuntimeError("upstream served different bytes for the big zip")
    print(f"    upstream cold (file:// → verify → store → send): {up_cold:.2f} s", flush=True)
    url = mod_url(mirror_url, BIG_PATH, version, "zip")
    cold_base = settle_rss(mirror.proc.pid)
    with RssSampler(mirror.proc.pid) as cold_rss:
        _, sha, cold = download(url)
    if sha != want_sha:
        raise RuntimeError("mirror served different bytes for the big zip")
    print(
        f"    mirror cold (fetch → verify → store → send): {cold:.2f} s,"
        f" RSS {cold_base / MiB:.1f} → peak {cold_rss.peak / MiB:.1f} MiB",
        flush=True,
    )
    get_ok(mod_url(mirror_url, BIG_PATH, version, "info"))
    out: dict[str, Any] = {
        "zip_bytes": size,
        "upstream_cold_s": up_cold,
        "mirror_cold_s": cold,
        "cold_rss_base_mib": cold_base / MiB,
        "cold_rss_peak_mib": cold_rss.peak / MiB,
    }
    return out | concurrent_downloads(mirror.proc.pid, url, size, MEM_CLIENTS)


def concurrent_downloads(
    pid: int, url: str, size: int, clients: int, *, max_seconds: float = 600
) -> dict[str, Any]:
    """``clients`` curl processes download ``url`` at once while the RSS of ``pid``'s process
    tree is sampled: the RSS before (max over 1 s), the peak during, and after. Each curl
    gives up after ``max_seconds``."""
    baseline = settle_rss(pid)
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}\\n"]
    cmd += ["--max-time", f"{max_seconds:g}", url]
    print(f"  $ {clients} x {shlex.join(cmd)}", flush=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        with RssSampler(pid) as hot_rss:
            start = time.perf_counter()
            for _ in range(clients):
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
            outputs = [p.communicate(timeout=max_seconds + 30)[0].split() for p in procs]
            wall = time.perf_counter() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    ok = sum(1 for o in outputs if o == ["200", str(size)])
    after = settle_rss(pid)
    out = {
        "clients": clients,
        "complete_downloads": ok,
        "wall_s": wall,
        "aggregate_bytes_per_s": clients * size / wall,
        "rss_baseline_mib": baseline / MiB,
        "rss_peak_mib": hot_rss.peak / MiB,
        "rss_delta_mib": (hot_rss.peak - baseline) / MiB,
        "rss_after_mib": after / MiB,
        "samples": len(hot_rss.samples),
        "processes": len(tree_pids(pid)),
        "curl_command": cmd,
    }
    print(
        f"    {ok}/{clients} complete in {wall:.2f} s"
        f" ({out['aggregate_bytes_per_s'] / 1e9:.2f} GB/s); RSS baseline {baseline / MiB:.1f},"
        f" peak {hot_rss.peak / MiB:.1f}, delta {out['rss_delta_mib']:.1f} MiB",
        flush=True,
    )
    return out


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version_of(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "not found"
        return (p.stdout or p.stderr).splitlines()[0].strip() if (p.stdout or p.stderr) else "?"

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "go": version_of(["go", "version"]),
        "wrk": version_of(["wrk", "-v"]),
        "loadavg_start": os.getloadavg(),
    }


def table(res: dict[str, Any]) -> str:
    def ok(cond: bool) -> str:
        return "yes" if cond else "**no**"

    hits, zhit, cold, mem = res["hits"], res["zip_hit"], res["cold"], res["memory"]
    im, hz = hits["info_mod"], hits["healthz"]
    rows = [
        (
            "cache-hit .info/.mod",
            f"{im.rps:,.0f} req/s, p50 {im.ms('p50_us'):.2f} ms, p99 {im.ms('p99_us'):.2f} ms,"
            f" errors {im.errors}; {im.cpu}",
            f">= {HIT_TARGET_RPS:,} req/s, p99 < {HIT_TARGET_P99_MS:g} ms",
            ok(im.rps >= HIT_TARGET_RPS and im.ms("p99_us") < HIT_TARGET_P99_MS and not im.errors),
        ),
        (
            "/healthz (server ceiling)",
            f"{hz.rps:,.0f} req/s, p50 {hz.ms('p50_us'):.2f} ms, p99 {hz.ms('p99_us'):.2f} ms;"
            f" {hz.cpu}",
            "(reference)",
            "",
        ),
        (
            "cache-hit 5 MB zip",
            f"{zhit.bytes_per_s / 1e9:.2f} GB/s ({zhit.rps:,.0f} req/s, p99"
            f" {zhit.ms('p99_us'):.1f} ms), errors {zhit.errors}; {zhit.cpu}",
            ">= 1 GB/s",
            ok(zhit.bytes_per_s >= ZIP_TARGET_BPS and not zhit.errors),
        ),
        (
            f"{cold['clients']} concurrent cold GETs, one zip",
            f"{cold['upstream_zip_requests']:g} upstream zip request(s); statuses"
            f" {cold['statuses']}; identical bytes: {cold['identical']}; all headers after"
            f" {cold['last_headers_s']:.2f} s, all bodies after {cold['wall_s']:.2f} s",
            "exactly 1 upstream fetch",
            ok(
                cold["upstream_zip_requests"] == 1
                and cold["identical"]
                and cold["matches_fixture"]
                and cold["statuses"] == {"200": cold["clients"]}
            ),
        ),
        (
            f"{mem['clients']} clients x {mem['zip_bytes'] / 1e6:.0f} MB zip (hit)",
            f"RSS baseline {mem['rss_baseline_mib']:.1f} MiB, peak {mem['rss_peak_mib']:.1f},"
            f" delta {mem['rss_delta_mib']:.1f} MiB; {mem['aggregate_bytes_per_s'] / 1e9:.2f}"
            f" GB/s; {mem['complete_downloads']}/{mem['clients']} complete",
            "RSS flat (delta a few MB)",
            ok(mem["rss_delta_mib"] < 16 and mem["complete_downloads"] == mem["clients"]),
        ),
        (
            f"cold {mem['zip_bytes'] / 1e6:.0f} MB zip, first request",
            f"{mem['mirror_cold_s']:.2f} s (mirror fetch + verify + send); RSS peak"
            f" {mem['cold_rss_peak_mib']:.1f} MiB (from {mem['cold_rss_base_mib']:.1f})",
            "(reference)",
            "",
        ),
    ]
    lines = ["| Benchmark | Result | Target | Met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def jsonable(obj: Any) -> Any:
    if isinstance(obj, WrkRun):
        return {
            "command": obj.command,
            "requests_per_s": obj.rps,
            "bytes_per_s": obj.bytes_per_s,
            **obj.result,
        }
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def log_problems(text: str) -> list[str]:
    """Lines of a server log that are not access-log JSON and look like trouble."""
    bad = re.compile(r"\b(ERROR|WARNING|CRITICAL|Traceback|Exception)\b")
    return [ln for ln in text.splitlines() if not ln.startswith("{") and bad.search(ln)]


def access_statuses(text: str) -> dict[str, int]:
    """``endpoint status`` → count, from the JSON access-log lines of a server log."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError, KeyError):
                entry = json.loads(line)
                key = f"{entry['endpoint']} {entry['status']}"
                counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 10; quick 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections, hit runs")
    p.add_argument("--zip-connections", type=int, default=16, help="wrk connections, zip run")
    p.add_argument("--workers", type=int, help="mirror workers (default: the server's default)")
    p.add_argument("--upstream-workers", type=int, default=1, help="upstream workers")
    p.add_argument("--big-mb", type=int, help="MiB of data in the big zip (default 200; quick 48)")
    p.add_argument("--quick", action="store_true", help="short runs: a smoke check")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    opts = p.parse_args(argv)
    if opts.duration is None:
        opts.duration = 3.0 if opts.quick else 10.0
    if opts.big_mb is None:
        opts.big_mb = 48 if opts.quick else 200
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)

    install_signal_handlers()
    info = machine()
    print("# Entrepôt Go benchmarks" + (" (quick)" if opts.quick else ""))
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']},"
        f" Python {info['python']}, {info['go']}, {info['wrk']}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in info['loadavg_start'])}")
    res: dict[str, Any] = {"machine": info, "options": vars(opts) | {"results": None}}
    started = time.time()
    problems: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="entrepot-bench-") as tmpname:
        tmp = Path(tmpname)
        updir = tmp / "upstream-files"
        fx = write_fixtures(updir, opts.big_mb)
        res["fixtures"] = {k: v for k, v in fx.items() if k.endswith("_bytes")}
        try:
            with contextlib.ExitStack() as servers:
                up = servers.enter_context(
                    server(
                        tmp, name="upstream", proxy=f"file://{updir}", workers=opts.upstream_workers
                    )
                )
                mirror = servers.enter_context(
                    server(tmp, name="mirror", proxy=up.url, workers=opts.workers)
                )
                res["mirror_processes"] = len(tree_pids(mirror.proc.pid))
                print(
                    f"upstream {up.url}, mirror {mirror.url} ({res['mirror_processes']} processes)"
                )
                run_benchmarks(res, opts, tmp=tmp, up=up, mirror=mirror, fx=fx)
        finally:
            # Servers stopped (access logs flushed): what did they log?
            for name in ("mirror", "upstream"):
                path = tmp / f"{name}.log"
                text = path.read_text(errors="replace") if path.exists() else ""
                found = log_problems(text)
                if found:
                    problems[name] = found
                res[f"{name}_access_statuses"] = access_statuses(text)
            res["log_problems"] = problems
            for name, lines in problems.items():
                print(f"\n{name} log: {len(lines)} problem line(s), first ones:")
                for line in lines[:10]:
                    print(f"    {line}")
    res["loadavg_end"] = os.getloadavg()
    res["elapsed_s"] = time.time() - started
    print("\n## Results\n")
    print(table(res))
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in res['loadavg_end'])}")
    for name in ("mirror", "upstream"):
        print(
            f"{name} access log, requests by endpoint and status: {res[f'{name}_access_statuses']}"
        )
    write_results(opts.results, "gomod", res)
    return 0


def write_results(folder: Path, name: str, res: dict[str, Any]) -> Path:
    """``<folder>/<name>-<date>.json`` (gitignored), and the line that says where it went."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / time.strftime(f"{name}-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(jsonable(res), indent=2, default=str) + "\n")
    print(f"\nJSON: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return out


def run_benchmarks(
    res: dict[str, Any],
    opts: argparse.Namespace,
    *,
    tmp: Path,
    up: Server,
    mirror: Server,
    fx: dict[str, Any],
) -> None:
    print("\n## a. cache hits: .info/.mod, /healthz")
    res["hits"] = bench_hits(mirror, tmp, opts)
    print("\n## b. cache-hit 5 MB zip")
    res["zip_hit"] = bench_zip_hit(mirror, tmp, opts, "v1.0.0")
    print(f"\n## c. {COLD_CLIENTS} concurrent cold requests for one zip")
    res["cold"] = bench_cold(mirror.url, up.url, "v1.0.1", fx["cold_sha"])
    print(f"\n## d. memory: {MEM_CLIENTS} clients x {fx['big_zip_bytes'] / 1e6:.0f} MB zip")
    res["memory"] = bench_memory(mirror, up.url, "v1.0.0", fx["big_zip_bytes"], fx["big_sha"])


def write_fixtures(updir: Path, big_mb: int) -> dict[str, Any]:
    start = time.perf_counter()
    write_module(updir, SMALL)
    medium_hit, medium_cold = medium_module("v1.0.0"), medium_module("v1.0.1")
    write_module(updir, medium_hit)
    write_module(updir, medium_cold)
    big_size, big_sha = write_big_module(updir, "v1.0.0", big_mb)
    fx = {
        "medium_zip_bytes": len(medium_hit.zip_bytes()),
        "cold_sha": hashlib.sha256(medium_cold.zip_bytes()).hexdigest(),
        "big_zip_bytes": big_size,
        "big_sha": big_sha,
    }
    print(
        f"fixtures: medium zip {fx['medium_zip_bytes'] / 1e6:.2f} MB, big zip"
        f" {big_size / 1e6:.1f} MB ({time.perf_counter() - start:.1f} s)"
    )
    return fx


_interrupted = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """Cleanup (servers, clients, temporary files) runs on SIGTERM as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BaseException as e:
        # On Ctrl-C the servers (same process group) may stop first: whatever failed then is
        # a consequence of the interruption, not a finding.
        if not (_interrupted.is_set() or isinstance(e, KeyboardInterrupt)):
            raise
        print("\ninterrupted; servers stopped and temporary files removed", file=sys.stderr)
        sys.exit(130)
