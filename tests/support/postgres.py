"""A throwaway PostgreSQL for tests: Debian's server binaries, a temporary folder, 127.0.0.1.

    with running_postgres() as pg:      # initdb + postgres on a free port; stopped by PID
        pg.url("entrepot")              # postgresql+asyncpg://postgres@127.0.0.1:PORT/entrepot

PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
``postgres`` system user that Debian's package creates (``subprocess.Popen(user=...)``, so the
PID we hold is the postmaster's own). Nothing is written outside the temporary folder.

The binaries are the newest ``/usr/lib/postgresql/<major>/bin``, else ``initdb`` on PATH, or
the folder ``ENTREPOT_POSTGRES_BIN`` names.
``python3 tests/support/postgres.py install`` (run by ``make test``) installs the binaries
with apt-get when they are missing and we are root on Debian; it does nothing otherwise.
A test that needs PostgreSQL and cannot get it fails with the reason
(:func:`unavailable_reason`), unless ``ENTREPOT_TEST_NO_POSTGRES=1`` says to skip it.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (make test-postgres / test-prometheus)
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.debian import apt_install

SUPERUSER = "postgres"
SKIP_VARIABLE = "ENTREPOT_TEST_NO_POSTGRES"
INITDB_OPTIONS = ["--auth=trust", "--encoding=UTF8", "--no-sync"]
# Loopback only; durability is not what these tests measure (fsync off: a faster rig).
SERVER_OPTIONS = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
SERVER_OPTIONS += ["-c", "full_page_writes=off", "-c", "max_connections=50"]


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (Debian), else ``initdb`` on PATH."""
    if env := os.environ.get("ENTREPOT_POSTGRES_BIN"):
        return Path(env) if (Path(env) / "initdb").exists() else None
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None for ourselves; the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def unavailable_reason() -> str | None:
    """Why no PostgreSQL can be started here, or None when one can."""
    if find_bin_dir() is None:
        return (
            "no PostgreSQL server binaries (initdb, postgres): run `python3"
            " tests/support/postgres.py install` as root on Debian (make test does), or"
            " `apt-get install postgresql`; or set ENTREPOT_TEST_NO_POSTGRES=1 to skip"
        )
    if os.geteuid() == 0 and _server_user() is None:
        return "running as root and there is no 'postgres' user to run the server as"
    return None


def install() -> int:
    """Install Debian's PostgreSQL server when it is missing (idempotent)."""
    if find_bin_dir() is not None:
        return 0
    return apt_install(
        "postgresql",
        what="postgres",
        without=f"the SQL store's PostgreSQL tests will fail unless {SKIP_VARIABLE}=1",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    port: int
    proc: subprocess.Popen[bytes]
    folder: Path
    bin_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """For asyncpg itself (no SQLAlchemy driver suffix)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT: clients are disconnected), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _run_as(user: pwd.struct_passwd | None) -> dict[str, object]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def running_postgres(*, start_timeout: float = 60) -> Iterator[Postgres]:
    """Start a fresh cluster on 127.0.0.1 and a free port; stop it and remove its folder."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bin_dir = find_bin_dir()
    assert bin_dir is not None
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="entrepot-pg-"))
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
    data = folder / "data"
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(folder)}
    as_user = _run_as(user)
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, *INITDB_OPTIONS],
            cwd=folder,
            env=env,
            check=True,
            capture_output=True,
            **as_user,  # type: ignore[arg-type]
        )
        port = _free_port()
        command = [str(bin_dir / "postgres"), "-D", str(data), "-k", str(folder), "-p", str(port)]
        with open(folder / "server.log", "wb") as log:
            if user is not None:
                os.chown(folder / "server.log", user.pw_uid, user.pw_gid)
            proc = subprocess.Popen(
                [*command, *SERVER_OPTIONS],
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                **as_user,  # type: ignore[arg-type]
            )
        pg = Postgres(port=port, proc=proc, folder=folder, bin_dir=bin_dir)
        _wait_ready(pg, start_timeout)
        yield pg
    finally:
        if proc is not None:
            Postgres(port=0, proc=proc, folder=folder, bin_dir=bin_dir).stop()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(pg: Postgres, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pg.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {pg.proc.returncode}:\n{pg.log()}")
        ready = subprocess.run(
            [str(pg.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(pg.port)],
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"postgres did not accept connections within {timeout:.0f}s:\n{pg.log()}")


if __name__ == "__main__":
    if sys.argv[1:] == ["install"]:
        sys.exit(install())
    print("usage: python3 tests/support/postgres.py install", file=sys.stderr)
    sys.exit(2)


_databases = itertools.count()


@contextlib.contextmanager
def required_postgres() -> Iterator[Postgres]:
    """A running server for tests that need one: skipped when ``ENTREPOT_TEST_NO_POSTGRES=1``
    says so, failed with the reason when it cannot be had (never skipped silently)."""
    import pytest

    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1: the PostgreSQL half of the SQL store tests is off")
    reason = unavailable_reason()
    if reason:
        pytest.fail(f"PostgreSQL is needed for these tests: {reason}")
    with running_postgres() as pg:
        yield pg


def fresh_database(pg: Postgres) -> str:
    """The URL of a new, empty database on ``pg`` (a unique name per call)."""
    name = f"t{os.getpid()}_{next(_databases)}"
    createdb = str(pg.bin_dir / "createdb")
    subprocess.run(
        [createdb, "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", name],
        check=True,
        capture_output=True,
    )
    return pg.url(name)
