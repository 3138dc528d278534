"""Pre-fork workers: N processes serve one port, supervised by the parent.

One Python process tops out near one core; a mirror should use the cores it is given. The
parent reserves the port (bound with SO_REUSEPORT but never listening, so it receives no
connections), then forks workers that each bind and listen on it with SO_REUSEPORT, and the
kernel spreads connections across them. A worker that dies is restarted; SIGTERM/SIGINT is
passed on and the parent waits for every worker's graceful shutdown. Workers share the cache
on disk; cross-process fetch coalescing uses file locks (see storage.filesystem).

The parent reaps every child it is given, not only its workers: as PID 1 of a container (or
a subreaper), orphans are reparented to it, such as the git processes of a go command that a
worker killed. Those pids are reaped and otherwise ignored; an unknown pid once killed the
supervisor and with it every worker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

log = logging.getLogger("entrepot.workers")
MAX_AUTO_WORKERS = 8
MIN_UPTIME = 10.0
"""A worker that exits sooner than this after it started counts as failing to start."""
MAX_QUICK_FAILURES = 5
"""Failures to start in a row after which the supervisor gives up (and exits 1)."""


def default_workers() -> int:
    """CPUs this process may use: affinity, bounded by a cgroup v2 CPU quota (containers)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    return max(1, min(n, MAX_AUTO_WORKERS))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT: holds the port and tells which one port 0 became."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class _Starts:
    """A worker that dies soon after it started, again and again, is not crashing now and
    then: it cannot start (a broken install, a bad configuration). Restarting it forever
    would leave a server that holds the port and serves nothing; the supervisor gives up, so
    whoever runs the server (a terminal, a pod's restart policy) sees the failure."""

    def __init__(self) -> None:
        self.quick = 0
        self.last_restart = 0.0

    def pace(self) -> None:
        """At most one restart a second: a crash loop must not spin."""
        if time.monotonic() - self.last_restart < 1:
            time.sleep(1)
        self.last_restart = time.monotonic()

    def give_up(self, lived: float, index: int, status: int) -> bool:
        self.quick = self.quick + 1 if lived < MIN_UPTIME else 0
        if self.quick < MAX_QUICK_FAILURES:
            return False
        log.error(
            "workers exited %d times in a row within %gs of starting (last: worker %d,"
            " status %d); giving up: see the errors above",
            self.quick,
            MIN_UPTIME,
            index,
            status,
        )
        return True


def supervise(
    count: int,
    run_worker: Callable[[int], int],
    *,
    after_start: Callable[[], None] = lambda: None,
    on_exit: Callable[[int], None] = lambda pid: None,
) -> int:
    """Fork ``count`` workers running ``run_worker(index)``; restart crashed ones until asked
    to stop; return 0 when every worker ended after a stop signal."""
    children: dict[int, int] = {}
    started: dict[int, float] = {}
    stopping = False
    starts = _Starts()

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = run_worker(index)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = index
        started[pid] = time.monotonic()

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    failed = False
    for index in range(count):
        spawn(index)
    after_start()
    # Workers that died while after_start waited (for their readiness) count as dying at
    # once: their uptime is counted from here.
    started.update(dict.fromkeys(children, time.monotonic()))
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:  # an orphan reparented to us (we are PID 1): reaped, no more
            log.debug("reaped process %d, not a worker", pid)
            continue
        index = children.pop(pid)
        on_exit(pid)
        if stopping:
            continue
        if starts.give_up(time.monotonic() - started.pop(pid), index, status):
            stop(signal.SIGTERM, None)
            failed = True
            continue
        log.error("worker %d (pid %d) exited with status %d; restarting", index, pid, status)
        starts.pace()
        spawn(index)
    return 1 if failed else 0
