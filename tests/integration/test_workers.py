"""Several worker processes: one upstream fetch for many cold askers, metrics summed over
workers, a crashed worker replaced, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from support.modules import simple
from support.servers import metrics_eventually, running_server
from support.slow import Script, scripted_upstream

pytestmark = pytest.mark.integration

MOD = simple("example.com/popular", "v1.0.0")
ZIP = "/example.com/popular/@v/v1.0.0.zip"


def children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


async def _many(url: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(*(client.get(url) for _ in range(n)))


def test_two_hundred_cold_requests_across_workers_make_one_upstream_fetch(
    tmp_path: Path,
) -> None:
    script = Script({ZIP: MOD.zip_bytes()}, delay_after_half=0.5)
    with (
        scripted_upstream(script) as up,
        running_server(tmp_path, proxy=up, args=["--workers", "2"]) as mirror,
    ):
        assert len(children(mirror.proc.pid)) == 2
        answers = asyncio.run(_many(mirror.url + ZIP, 200))
        assert [r.status_code for r in answers] == [200] * 200
        assert {r.content for r in answers} == {MOD.zip_bytes()}
        assert script.requests.count(ZIP) == 1
        # Summed over both workers: every request counted once, all but one coalesced.
        expected = (
            'entrepot_http_requests_total{code="200",endpoint="zip"} 200.0',
            'entrepot_coalesced_requests_total{endpoint="zip"} 199.0',
        )
        metrics = metrics_eventually(mirror, *expected)
        assert all(line in metrics for line in expected), metrics


def test_a_crashed_worker_is_replaced_and_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    script = Script({ZIP: MOD.zip_bytes()})
    with (
        scripted_upstream(script) as up,
        running_server(tmp_path, proxy=up, args=["--workers", "2"]) as mirror,
    ):
        before = children(mirror.proc.pid)
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = children(mirror.proc.pid)
            if len(now) == 2 and before[0] not in now:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"worker not replaced: {children(mirror.proc.pid)}")
        for _ in range(20):  # both workers answer
            assert httpx.get(mirror.url + ZIP).status_code == 200
        workers = children(mirror.proc.pid)
        assert mirror.stop() == 0
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
