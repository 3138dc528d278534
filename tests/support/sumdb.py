"""A test checksum database: golang.org/x/mod/sumdb's reference server, not Entrepôt code.

``sumdbserver/`` is a small Go program built once into a cache folder outside the repository
(``$ENTREPOT_CACHE`` or ``~/.cache/entrepot``). It signs the go.sum lines of the modules in a
directory in GOPROXY layout; a go command reaches it directly with
``GOSUMDB="<verifier key> <url>"`` (an explicit URL bypasses GOPROXY for the database).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.servers import stop_process

SOURCE_DIR = Path(__file__).parent / "sumdbserver"

_LISTENING = re.compile(r"^listening on (http://\S+)$", re.M)
_VERIFIER = re.compile(r"^verifier (\S+)$", re.M)
_REQUEST = re.compile(r"^request (\S+) (\S+) (\d{3})$", re.M)


def _source_files() -> list[Path]:
    return sorted([*SOURCE_DIR.glob("*.go"), SOURCE_DIR / "go.mod", SOURCE_DIR / "go.sum"])


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("ENTREPOT_CACHE") or os.path.expanduser("~/.cache/entrepot")
    return Path(base) / f"sumdbserver-{_source_hash()}"


def _build_env() -> dict[str, str]:
    """The user's go settings (their GOPROXY and GOSUMDB included), never a toolchain download."""
    env = dict(os.environ)
    env.update({"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "GOWORK": "off", "CGO_ENABLED": "0"})
    return env


@functools.cache
def sumdb_binary() -> Path:
    """The sumdbserver program, built on first use; a build racing another one is harmless."""
    binary = cache_dir() / "sumdbserver"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    go = shutil.which("go") or "/usr/local/go/bin/go"
    # The sources are copied out first: the go command never rewrites files in the repository.
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".build-") as tmp:
        work = Path(tmp)
        for path in _source_files():
            shutil.copyfile(path, work / path.name)
        partial = work / "sumdbserver"
        done = subprocess.run(
            [go, "build", "-trimpath", "-o", str(partial), "."],
            cwd=work,
            env=_build_env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"building {SOURCE_DIR} failed (exit {done.returncode}):\n{done.stderr}"
            )
        os.replace(partial, binary)  # atomic: a racing build leaves an identical binary
    return binary


def generate_key(name: str) -> tuple[str, str]:
    """A new (signer key, verifier key) pair for a database named ``name``."""
    done = subprocess.run(
        [str(sumdb_binary()), "-genkey", name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        raise RuntimeError(f"sumdbserver -genkey {name} failed:\n{done.stdout}{done.stderr}")
    return lines[0], lines[1]


@dataclass
class SumDB:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    vkey: str  # the verifier key of the signer key it runs with

    @property
    def gosumdb(self) -> str:
        """The GOSUMDB value of a go command that talks to this database directly."""
        return f"{self.vkey} {self.url}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def entries(self) -> list[tuple[str, str, int]]:
        """Every request answered so far: (method, path, status)."""
        return [(m, p, int(s)) for m, p, s in _REQUEST.findall(self.log())]

    def requests(self) -> list[str]:
        """The paths of every request answered so far, in order."""
        return [path for _, path, _ in self.entries()]

    def stop(self, timeout: float = 10) -> int:
        return stop_process(self.proc, timeout=timeout)


@contextlib.contextmanager
def running_sumdb(
    tmp: Path, *, source: Path, skey: str, seed: int = 0, name: str = "sumdb"
) -> Iterator[SumDB]:
    """A database on 127.0.0.1 signing the modules of ``source`` (GOPROXY layout) on lookup.

    ``seed``: made-up records added first; another seed with the same key is a fork.
    """
    binary = sumdb_binary()
    log_path = tmp / f"{name}.log"
    cmd = [str(binary), "-skey", skey, "-listen", "127.0.0.1:0", "-source", str(source)]
    cmd += ["-seed", str(seed)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            text = log_path.read_text(errors="replace")
            listening, verifier = _LISTENING.search(text), _VERIFIER.search(text)
            if listening and verifier:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"sumdbserver exited with {proc.returncode}:\n{text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sumdbserver did not start in 20s:\n{text}")
            time.sleep(0.02)
        yield SumDB(listening.group(1), proc, log_path, verifier.group(1))
    finally:
        stop_process(proc, timeout=10)
