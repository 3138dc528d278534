"""HTTP server cores side by side: CPU per request for one constant answer (issue 9).

The same answer (the headers and body of a cached ``.info``) from one process of each
candidate, on 127.0.0.1, measured with wrk one after the other, interleaved over rounds:

* ``aiohttp``: aiohttp's low-level ``web.Server`` on uvloop (Entrepôt's first core);
* ``entrepot``: Entrepôt's own core (``entrepot.web.server.HttpServer``) with a trivial app;
* ``bare``: an asyncio protocol over httptools writing a prepared answer: the floor of any
  Python core on uvloop;
* ``granian``: granian's RSGI interface (a Rust server for Python), installed into a venv
  under ``$ENTREPOT_CACHE/bench-cores`` on first use (skipped, with the reason, if that fails).

``bench/run.sh --cores [--rounds N] [--duration S]``; results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gomod as gb

GRANIAN = "granian==2.8.9"
BODY = '{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}\n'
HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "public, max-age=31536000, immutable",
    "ETag": '"18c8e6f0a1b2c3d4-33"',
    "Last-Modified": "Tue, 02 Jan 2024 03:04:05 GMT",
    "X-Entrepot-Cache": "hit",
}

PRELUDE = f"import asyncio, sys, time\nBODY = {BODY.encode()!r}\nHEADERS = {HEADERS!r}\n"
SERVERS = {
    "aiohttp": PRELUDE
    + """
import uvloop
from aiohttp import web

async def handle(request):
    return web.Response(body=BODY, headers=HEADERS)

async def main():
    server = web.Server(handle, access_log=None)
    await asyncio.get_running_loop().create_server(server, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()

uvloop.run(main())
""",
    "entrepot": PRELUDE
    + """
import uvloop
from entrepot.web.http import Response
from entrepot.web.server import HttpServer

class App:
    async def handle(self, request):
        return Response(body=BODY, headers=dict(HEADERS))

    def done(self, request, status, sent, seconds):
        pass

async def main():
    await HttpServer(App()).listen(host="127.0.0.1", port=int(sys.argv[1]))
    await asyncio.Event().wait()

uvloop.run(main())
""",
    "bare": PRELUDE
    + """
from email.utils import formatdate
import httptools, uvloop
HEAD = "".join(f"{k}: {v}\\r\\n" for k, v in HEADERS.items()).encode()

class Bare(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_complete(self):
        date = formatdate(time.time(), usegmt=True).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\\r\\n" + HEAD + b"Date: " + date
            + b"\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(BODY) + BODY
        )

async def main():
    await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()

uvloop.run(main())
""",
    "granian": PRELUDE
    + """
PAIRS = [(k.lower(), v) for k, v in HEADERS.items()]

async def app(scope, proto):
    proto.response_bytes(200, PAIRS, BODY)
""",
}


def granian_python(cache: Path) -> tuple[Path | None, str]:
    """The Python of a cached venv with granian, made on first use."""
    venv = cache / "venv"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "granian").exists():
        cmds = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", GRANIAN],
        ]
        for cmd in cmds:
            print(f"  $ {shlex.join(cmd)}", flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                return None, f"{shlex.join(cmd)} failed: {(done.stderr or done.stdout)[-500:]}"
    return python, ""


@contextlib.contextmanager
def running(name: str, tmp: Path, python: Path) -> Any:
    port = _free_port()
    script = tmp / f"{name}_app.py"
    script.write_text(SERVERS[name])
    if name == "granian":
        cmd = [str(python), "-m", "granian", "--interface", "rsgi", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", "1", "--no-ws", f"{name}_app:app"]
    else:
        cmd = [str(python), str(script), str(port)]
    env = dict(os.environ, PYTHONPATH=str(gb.ROOT / "proxy"))
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/example.com/bench/small/@v/v1.0.0.info"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url, timeout=2).content == BODY.encode():
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {(tmp / f'{name}.log').read_text()}")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        for pid in reversed(gb.tree_pids(proc.pid)):
            with contextlib.suppress(OSError):
                os.kill(pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--results", type=Path, default=gb.ROOT / "bench" / "results")
    opts = p.parse_args(argv)
    gb.install_signal_handlers()
    cache = Path(os.environ.get("ENTREPOT_CACHE", Path.home() / ".cache" / "entrepot"))
    info = gb.machine()
    command = shlex.join([".venv/bin/python", "bench/cores.py", *sys.argv[1:]])
    print(f"# HTTP server cores\n$ {command}\nmachine: {info['nproc']} CPUs ({info['cpu']})")
    res: dict[str, Any] = {"command": command, "machine": info, "runs": {}, "skipped": {}}
    pythons = {name: Path(sys.executable) for name in SERVERS}
    gpython, why = granian_python(cache / "bench-cores")
    if gpython is None:
        res["skipped"]["granian"] = why
        del pythons["granian"]
    else:
        pythons["granian"] = gpython
    with tempfile.TemporaryDirectory(prefix="entrepot-bench-cores-") as tmpname:
        tmp = Path(tmpname)
        script = gb.wrk_script(tmp / "plain.lua", [])
        for r in range(opts.rounds):
            names = list(pythons)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                with running(name, tmp, pythons[name]) as (url, pid):
                    run = gb.run_wrk(
                        name,
                        url,
                        script,
                        connections=opts.connections,
                        duration=opts.duration,
                        server_pid=pid,
                    )
                    cpu_us = run.result["server_cores"] * run.seconds / run.result["requests"]
                    res["runs"].setdefault(name, []).append(
                        {"rps": run.rps, "p99_ms": run.ms("p99_us"), "cpu_us": cpu_us * 1e6}
                    )
    print("\n| core | requests/s | p99 ms | server CPU µs/request |\n|---|---|---|---|")
    for name, runs in res["runs"].items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(x[key] for x in runs)

        print(f"| {name} | {med('rps'):,.0f} | {med('p99_ms'):.2f} | {med('cpu_us'):.0f} |")
    for name, why in res["skipped"].items():
        print(f"{name}: skipped: {why}")
    gb.write_results(opts.results, "cores", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
