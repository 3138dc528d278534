"""supervise() in a process of its own: children that are not workers are reaped, not fatal.

Guards the bug where, as PID 1 of a container, the supervisor was handed the orphaned git
processes of a killed go command: ``os.wait()`` returned a pid it did not know, the lookup
raised KeyError, and the supervisor died and took every worker with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.servers import stop_process

# A stray child forked before supervise() starts stands for the orphan: to os.wait() they
# look the same. The worker runs until SIGTERM.
SCRIPT = """
import logging, os, sys, time
from entrepot.workers import supervise

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
stray = os.fork()
if stray == 0:
    time.sleep(0.3)
    os._exit(7)

def run_worker(index):
    while True:
        time.sleep(1)

def started():
    print("stray", stray, flush=True)

sys.exit(supervise(1, run_worker, after_start=started))
"""


def test_a_child_that_is_not_a_worker_is_reaped_and_ignored(tmp_path: Path) -> None:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # A session of its own: whatever happens, the finally below ends every process of it.
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], stdout=stdout, stderr=stderr, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 10
        while not out.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        stray = int(out.read_text().split()[1])
        while Path(f"/proc/{stray}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the stray exits after 0.3 s and must be reaped
        assert not Path(f"/proc/{stray}").exists(), "the stray child was never reaped"
        time.sleep(0.2)
        assert proc.poll() is None, err.read_text()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    finally:
        stop_process(proc, timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    log = err.read_text()
    assert proc.returncode == 0, log
    assert f"reaped process {stray}, not a worker" in log
    assert "Traceback" not in log


CRASHING = """
import logging, sys
from entrepot.workers import supervise

logging.basicConfig(level=logging.INFO, stream=sys.stderr)

def run_worker(index):
    raise SyntaxError("a broken install")

sys.exit(supervise(2, run_worker))
"""


def test_workers_that_cannot_start_make_the_supervisor_give_up(tmp_path: Path) -> None:
    """A worker that dies at start, again and again, is not restarted forever: the parent
    exits 1 (a terminal or a pod's restart policy sees it) instead of holding the port and
    serving nothing."""
    done = subprocess.run(
        [sys.executable, "-c", CRASHING],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "giving up" in done.stderr
    assert done.stderr.count("a broken install") >= 5
