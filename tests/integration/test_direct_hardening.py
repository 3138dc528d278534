"""``direct`` against a remote that stalls and a data directory in a hostile place, through
the real ``entrepot serve`` and the real go command.

The stalled remote is :func:`dripping_http_server`: it takes git's request and answers one
byte every two seconds. The git config given to the mirror points every URL of the private
module at it (or at a real ``git http-backend``), as in test_direct.py; nothing leaves
127.0.0.1.

Each test guards a bug of the hostile review:

- a timed-out fetch killed only ``go``; its git children stayed connected and, reparented to
  the supervisor as PID 1 of a container, crashed it and every worker (KeyError);
- four stalled repositories froze every private fetch: no bound on callers waiting for a slot;
- a ``go.mod``/``go.work`` above the data directory broke every direct fetch (``go 1.99``) or
  forged answers (a ``replace`` made a version that does not exist answer 200).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from entrepot.config import Credentials, Direct
from entrepot.errors import NotFoundError, UpstreamError
from entrepot.gomod.direct import DirectUpstream
from support.githttp import MOD, dripping_http_server, git_http_server, make_repo
from support.servers import Server, running_server, server_env, stop_process

pytestmark = pytest.mark.integration

ROUTE = "example.com/private"
LISTENING = re.compile(r"serving Go modules on (http://\S+)")
LIST = f"/{MOD}/@v/list"


def direct_config(
    tmp: Path, name: str, *, remote: str, direct: dict[str, Any], log: str = "info"
) -> Path:
    """A mirror that sends ``example.com/private`` to ``direct``, every git URL to ``remote``."""
    gitconfig = tmp / f"{name}.gitconfig"
    schemes = ("https", "http", "git+ssh", "ssh", "git")
    gitconfig.write_text(
        f'[url "{remote}/"]\n' + "".join(f"\tinsteadOf = {s}://example.com/\n" for s in schemes)
    )
    settings = {
        "shutdown_timeout": "2s",
        "log": {"level": log},
        "go": {
            "proxy": "off",
            "routes": [{"patterns": ROUTE, "proxy": "direct"}],
            "credentials": {"git_config_file": str(gitconfig)},
            "direct": {
                "env": {"GIT_SSH_COMMAND": "false", "NO_PROXY": "127.0.0.1"},
                **direct,
            },
        },
    }
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings))
    return config


@dataclass
class Proc:
    pid: int
    name: str
    pgid: int
    sid: int
    env: dict[str, str]


def direct_processes(data_dir: Path) -> list[Proc]:
    """Live processes the mirror's go command started, found by the GOPATH they inherited."""
    marker = f"GOPATH={data_dir / '.direct' / 'gopath'}"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker not in environ:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _ppid, pgid, sid = stat[stat.rindex(")") + 2 :].split()[:4]
        if state in ("Z", "X"):
            continue  # exited, waiting for its parent's wait()
        env = dict(v.split("=", 1) for v in environ if "=" in v)
        found.append(Proc(int(entry.name), name, int(pgid), int(sid), env))
    return found


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.1)
    return result


def assert_none_left(data_dir: Path) -> None:
    """Every process of the go command's group is gone (killing is immediate; a second for
    the kernel to finish)."""
    deadline = time.monotonic() + 3
    while (left := direct_processes(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], [f"{p.pid} {p.name}" for p in left]


# --- 1. a timed-out fetch kills the go command's whole group --------------------------------


def test_a_timed_out_fetch_kills_every_git_and_the_server_goes_on(tmp_path: Path) -> None:
    with dripping_http_server(interval=2) as drip:
        config = direct_config(tmp_path, "drip", remote=drip.url, direct={"timeout": "4s"})
        with (
            running_server(tmp_path, config=config, name="mirror") as mirror,
            ThreadPoolExecutor(1) as pool,
        ):
            start = time.monotonic()
            answer = pool.submit(httpx.get, mirror.url + LIST, timeout=30)
            # While it hangs: git is connected to the remote, in a session of the go
            # command's own, with git's low-speed limit (go.min_transfer_rate, 1024 B/s over
            # 30 s by default) in its environment.
            running = wait_for(
                lambda: drip.connections and direct_processes(mirror.data_dir),
                4,
                "the go command's git connected to the remote",
            )
            assert any(p.name.startswith("git-remote-http") for p in running), running
            server_pgid = os.getpgid(mirror.proc.pid)
            for proc in running:
                assert proc.pgid == proc.sid != server_pgid, proc
                assert proc.env["GIT_HTTP_LOW_SPEED_LIMIT"] == "1024"
                assert proc.env["GIT_HTTP_LOW_SPEED_TIME"] == "30"
                assert proc.env["GOWORK"] == "off"
            response = answer.result()
            elapsed = time.monotonic() - start
            assert response.status_code == 504, response.text
            assert elapsed < 12
            assert "direct fetch took longer than 4s" in " ".join(response.text.split())
            assert_none_left(mirror.data_dir)
            assert mirror.proc.poll() is None
            assert httpx.get(mirror.url + "/healthz", timeout=5).status_code == 200


def test_a_trickling_remote_is_dropped_by_git_itself(tmp_path: Path) -> None:
    """git's low-speed limit ends the fetch long before ``timeout``, as a failure: never a
    'not found', which the mirror would remember and the client take as final."""
    with dripping_http_server(interval=2) as drip:
        gitconfig = tmp_path / "gitconfig"
        gitconfig.write_text(f'[url "{drip.url}/"]\n\tinsteadOf = https://example.com/\n')
        upstream = DirectUpstream(
            home=tmp_path / "data" / ".direct",
            settings=Direct(timeout=60, env={"GIT_SSH_COMMAND": "false"}),
            credentials=Credentials(git_config_file=gitconfig),
            environ=server_env(),
            min_transfer_rate=1024,
            min_rate_window=2,
        )
        start = time.monotonic()
        with pytest.raises(UpstreamError) as raised:
            asyncio.run(upstream.list(MOD))
        elapsed = time.monotonic() - start
    # The go command hides git's "Operation too slow" behind "no secure protocol found" (it
    # tried ssh next, which GIT_SSH_COMMAND=false refuses): the time shows who gave up.
    assert not isinstance(raised.value, NotFoundError)
    assert elapsed < 15, elapsed  # timeout is 60 s; git's window 2 s
    assert drip.connections >= 1


# --- 1b. as PID 1 of a pid namespace, as in a container without an init ---------------------


def _unshare_works() -> bool:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        done = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], timeout=10, check=False
        )
        return done.returncode == 0
    return False


@contextlib.contextmanager
def server_as_pid_1(tmp: Path, *, config: Path, workers: int) -> Iterator[tuple[Server, int]]:
    """``entrepot serve`` as PID 1 of a new pid namespace; yields it and its pid outside.

    unshare itself ignores SIGTERM while it waits, so the server is stopped through its own
    pid; ``--kill-child`` ends it if unshare is killed.
    """
    data, log_path = tmp / "pid1-data", tmp / "pid1.log"
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    cmd += [sys.executable, "-m", "entrepot.cli", "serve", "--listen", "127.0.0.1:0"]
    cmd += ["--data", str(data), "--config", str(config), "--workers", str(workers)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env())
    init = 0
    try:
        found = wait_for(
            lambda: proc.poll() is not None or LISTENING.search(log_path.read_text()),
            20,
            "the server in its pid namespace",
        )
        assert proc.poll() is None, log_path.read_text()
        init = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        nspid = next(
            line
            for line in Path(f"/proc/{init}/status").read_text().splitlines()
            if line.startswith("NSpid:")
        )
        assert nspid.split()[-1] == "1", nspid  # PID 1 inside
        yield Server(found.group(1), proc, data, log_path), init
    finally:
        if init and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        stop_process(proc, sig=signal.SIGKILL)


def workers_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return sorted(int(p) for p in text.split())


@pytest.mark.skipif(not _unshare_works(), reason="unshare --pid is not permitted here")
def test_as_pid_1_the_supervisor_survives_a_timed_out_fetch(tmp_path: Path) -> None:
    with contextlib.ExitStack() as remote:
        drip = remote.enter_context(dripping_http_server(interval=2))
        config = direct_config(
            tmp_path, "pid1", remote=drip.url, direct={"timeout": "4s"}, log="debug"
        )
        with server_as_pid_1(tmp_path, config=config, workers=2) as (mirror, init):
            workers = workers_of(init)
            assert len(workers) == 2
            response = httpx.get(mirror.url + LIST, timeout=30)
            assert response.status_code == 504, response.text
            # The remote goes away: a git still connected would exit now and be handed to
            # PID 1, the supervisor (that used to crash it: KeyError on an unknown pid).
            remote.close()
            assert_none_left(mirror.data_dir)
            time.sleep(1)
            assert mirror.proc.poll() is None, mirror.log()
            assert workers_of(init) == workers, mirror.log()  # none crashed or restarted
            assert httpx.get(mirror.url + "/healthz", timeout=5).status_code == 200
            # The git processes, orphaned when the go command was killed, were reaped by it.
            assert "not a worker" in mirror.log()
            assert "Traceback" not in mirror.log()


# --- 7. a bounded queue for direct slots ----------------------------------------------------


async def _get(client: httpx.AsyncClient, url: str) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = await client.get(url)
    return response, time.monotonic() - start


def test_past_the_direct_queue_a_request_is_answered_503_at_once(tmp_path: Path) -> None:
    with dripping_http_server(interval=2) as drip:
        direct = {"timeout": "20s", "concurrency": 1, "queue": 1, "queue_timeout": "3s"}
        config = direct_config(tmp_path, "queue", remote=drip.url, direct=direct)
        with running_server(tmp_path, config=config, name="mirror", args=["--workers", "1"]) as m:

            async def scenario() -> list[tuple[httpx.Response, float]]:
                async with httpx.AsyncClient(base_url=m.url, timeout=30) as client:
                    first = asyncio.create_task(_get(client, LIST))  # takes the one slot
                    await asyncio.to_thread(
                        wait_for,
                        lambda: direct_processes(m.data_dir),
                        4,
                        "the first fetch's go command",
                    )
                    second = asyncio.create_task(_get(client, f"/{MOD}/@v/v1.0.0.info"))
                    await asyncio.sleep(0.5)  # waits in the queue
                    third = await _get(client, f"/{MOD}/@v/v1.1.0.info")  # no room left
                    waited = await second
                    first.cancel()
                    return [third, waited]

            (third, third_took), (second, second_took) = asyncio.run(scenario())
        # Stopped while the first fetch still waited on git: cancelled, its group killed.
    assert_none_left(m.data_dir)
    assert third.status_code == 503, third.text
    assert third_took < 2, third_took
    assert third.headers["Retry-After"].isdigit()
    assert "direct fetch queue is full" in " ".join(third.text.split())
    # The one in the queue gave up after queue_timeout, well before the slot's timeout.
    assert second.status_code == 503, second.text
    assert 2.5 < second_took < 8, second_took
    assert "no direct fetch slot within 3s" in " ".join(second.text.split())


# --- 11. nothing above the data directory reaches the go command ----------------------------

OUTER = {
    # A go line no toolchain here satisfies, in a module and a workspace.
    "go-1.99": {
        "go.mod": "module example.com/outer\n\ngo 1.99\n",
        "go.work": "go 1.99\n\nuse .\n",
    },
    # A replace that invents a version.
    "replace": {
        "go.mod": (
            f"module example.com/outer\n\ngo 1.21\n\nreplace {MOD} v1.9.9 => {MOD} v1.0.0\n"
        ),
    },
}


@pytest.mark.parametrize("outer", list(OUTER))
def test_a_go_mod_or_go_work_above_the_data_directory_changes_nothing(
    tmp_path: Path, outer: str
) -> None:
    repo = make_repo(tmp_path)
    parent = tmp_path / "outer"
    parent.mkdir()
    for name, text in OUTER[outer].items():
        (parent / name).write_text(text)
    with git_http_server(repo.root) as git:
        config = direct_config(tmp_path, "outer", remote=git.url, direct={"timeout": "30s"})
        with running_server(
            tmp_path, config=config, name="mirror", data_dir=parent / "data"
        ) as mirror:
            listed = httpx.get(mirror.url + LIST, timeout=30)
            assert listed.status_code == 200, listed.text
            assert listed.text == "v1.0.0\nv1.1.0\n"
            info = httpx.get(f"{mirror.url}/{MOD}/@v/v1.1.0.info", timeout=30)
            assert info.status_code == 200, info.text
            assert info.json()["Version"] == "v1.1.0"
            missing = httpx.get(f"{mirror.url}/{MOD}/@v/v1.9.9.info", timeout=30)
            assert missing.status_code == 404, missing.text
            assert not list(mirror.data_dir.glob("go/**/v1.9.9*"))
