"""Real ``entrepot serve`` processes on loopback, stopped by the PID we started."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

_LISTENING = re.compile(r"serving (?:Go modules|npm) on (http://[^/\s]+)")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return stop_process(self.proc, sig=sig, timeout=timeout)


def stop_process(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 30
) -> int:
    """Stop a process this test started: the signal, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a server under test: no Go/entrepot settings leak in from outside."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ENTREPOT_", "GOPROXY", "GONOPROXY", "GOPRIVATE", "GOINSECURE"))
    }
    env["GOFLAGS"] = ""
    # No checksum database unless a test names one: fixture modules are in none, and the
    # machine's default database is out of reach.
    env["GOSUMDB"] = "off"
    env.update(extra or {})
    return env


@contextlib.contextmanager
def running_server(
    tmp: Path,
    *,
    proxy: str | None = None,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    args: list[str] | None = None,
    data_dir: Path | None = None,
    name: str = "server",
    prefix: list[str] | None = None,
) -> Iterator[Server]:
    """``prefix``: a command the server runs under, e.g. ``["prlimit", "--nofile=256"]``."""
    data = data_dir or tmp / f"{name}-data"
    log_path = tmp / f"{name}.log"
    extra = dict(env or {})
    if proxy is not None:
        extra["GOPROXY"] = proxy
    cmd = [*(prefix or []), sys.executable, "-m", "entrepot.cli", "serve"]
    cmd += ["--listen", "127.0.0.1:0"]
    cmd += ["--data", str(data)]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += args or []
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env(extra))
    server = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = _LISTENING.search(log_path.read_text(errors="replace"))
            if m:
                server = Server(m.group(1), proc, data, log_path)
                break
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"server did not start in 20s:\n{log_path.read_text()}")
        httpx.get(server.url + "/healthz", timeout=5).raise_for_status()
        yield server
    finally:
        stop_process(proc)


def log_eventually(server: Server, *texts: str, timeout: float = 5) -> str:
    """The server's log once it holds every text: the access log is written in batches, at
    least once a second."""
    deadline = time.monotonic() + timeout
    while True:
        log = server.log()
        if all(text in log for text in texts) or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def metrics_eventually(server: Server, *lines: str, timeout: float = 5) -> str:
    """The /metrics text once it holds every line: workers publish their counts every second."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(server.url + "/metrics").text
        if all(line in text for line in lines) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)
