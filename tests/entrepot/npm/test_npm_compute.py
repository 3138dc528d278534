"""Large packuments are computed in a short-lived process: the same documents as in a
thread, and the serving process's memory does not keep the parse."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from entrepot.errors import VerificationError
from entrepot.npm.compute import Computer
from entrepot.npm.packument import compute

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from npm_packument import NAME, big_packument

BASE = "http://127.0.0.1:8080/npm/"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_large_packument_is_computed_in_a_process_of_its_own() -> None:
    raw = big_packument(1500)
    assert len(raw) > 2 << 20
    now = time.time()
    computer = Computer()
    try:
        before = rss_mib()
        docs = await computer.documents(
            raw, name=NAME, base_url=BASE, now=now, max_bytes=1 << 30, policy=None
        )
        grown = rss_mib() - before
    finally:
        computer.close()
    here = compute(raw, name=NAME, base_url=BASE, now=now, max_bytes=1 << 30)
    assert docs.full.body == here.full.body
    assert docs.abbreviated.gzip == here.abbreviated.gzip
    assert docs.index.to_bytes() == here.index.to_bytes()
    # The worker holds the results (~1.3x the packument in bytes, plus the pickle buffers),
    # not the parse: computed here, a 13.9 MB packument left +219 MiB (15x) behind.
    assert grown < 8 * len(raw) / (1 << 20), f"RSS grew {grown:.0f} MiB"


async def test_errors_come_back_from_the_process_as_they_are() -> None:
    computer = Computer(in_process_bytes=0)
    try:
        with pytest.raises(VerificationError, match="not"):
            await computer.documents(
                b"<html>" + b" " * 100,
                name="x",
                base_url=BASE,
                now=0.0,
                max_bytes=1 << 20,
                policy=None,
            )
    finally:
        computer.close()
