"""Large packuments are computed in a short-lived process: the same documents as in a
thread, and the serving process's memory does not keep the parse."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import brotli
import pytest

from entrepot.errors import UnavailableError, VerificationError
from entrepot.npm.compute import Computer
from entrepot.npm.packument import Representation, compute, policy_for
from entrepot.npm.service import REPRESENTATIONS

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from npm_packument import NAME, big_packument

BASE = "http://127.0.0.1:8080/npm/"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def children() -> list[int]:
    """This process's live children (from /proc)."""
    me = str(Path("/proc/self").resolve().name)
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def outputs(folder: Path) -> dict[Representation, Path]:
    return {rep: folder / f"{rep}.part" for rep in REPRESENTATIONS}


async def test_a_large_packument_is_computed_in_a_process_of_its_own(tmp_path: Path) -> None:
    raw = big_packument(1500)
    assert len(raw) > 2 << 20
    source = tmp_path / "upstream.json"
    source.write_bytes(raw)
    outs = outputs(tmp_path)
    now = time.time()
    computer = Computer()
    before = rss_mib()
    computed = await computer.documents(
        source, outs, name=NAME, base_url=BASE, now=now, max_bytes=1 << 30, policy=None
    )
    grown = rss_mib() - before
    here = compute(raw, name=NAME, base_url=BASE, now=now, max_bytes=1 << 30)
    # The documents are in the files given, byte for byte what a thread computes.
    assert computed.bodies == outs
    assert outs["full"].read_bytes() == here.full.body
    assert outs["full.gz"].read_bytes() == here.full.gzip
    assert outs["full.br"].read_bytes() == here.full.br
    assert outs["abbreviated"].read_bytes() == here.abbreviated.body
    assert outs["abbreviated.gz"].read_bytes() == here.abbreviated.gzip
    assert outs["abbreviated.br"].read_bytes() == here.abbreviated.br
    assert brotli.decompress(outs["full.br"].read_bytes()) == here.full.body
    assert computed.index.to_bytes() == here.index.to_bytes()
    # Neither the packument nor its documents crossed into this process: only the index
    # (computed here, a 13.9 MB packument left +219 MiB behind; its bytes through the pipe,
    # ~90 MiB).
    assert grown < 0.5 * len(raw) / (1 << 20), f"RSS grew {grown:.1f} MiB"
    # And the helper process is gone: no idle interpreter is kept between computes.
    assert children() == []


async def test_a_small_packument_is_computed_in_memory(tmp_path: Path) -> None:
    raw = big_packument(20)
    outs = outputs(tmp_path)
    computer = Computer()
    computed = await computer.documents(
        raw, outs, name=NAME, base_url=BASE, now=0.0, max_bytes=1 << 30, policy=None
    )
    here = compute(raw, name=NAME, base_url=BASE, now=0.0, max_bytes=1 << 30)
    assert computed.bodies["full"] == here.full.body
    assert computed.bodies["abbreviated.gz"] == here.abbreviated.gzip
    assert computed.bodies["full.br"] == here.full.br
    assert set(computed.bodies) == set(REPRESENTATIONS)
    assert not any(p.exists() for p in outs.values())


async def test_errors_come_back_from_the_process_as_they_are(tmp_path: Path) -> None:
    computer = Computer(in_process_bytes=0)
    outs = outputs(tmp_path)
    with pytest.raises(VerificationError, match="not"):
        await computer.documents(
            b"<html>" + b" " * 100,
            outs,
            name="x",
            base_url=BASE,
            now=0.0,
            max_bytes=1 << 20,
            policy=None,
        )
    assert not any(p.exists() for p in outs.values())
    assert children() == []


async def test_a_compute_that_overruns_its_time_is_stopped(tmp_path: Path) -> None:
    computer = Computer(in_process_bytes=0, timeout=0.05)
    with pytest.raises(UnavailableError, match=r"took over 0 s .*retry shortly"):
        await computer.documents(
            big_packument(50),
            outputs(tmp_path),
            name=NAME,
            base_url=BASE,
            now=0.0,
            max_bytes=1 << 30,
            policy=None,
        )
    assert children() == []


async def test_a_blocked_version_is_hidden_by_the_helper_too(tmp_path: Path) -> None:
    raw = big_packument(30)
    versions = list(
        compute(raw, name=NAME, base_url=BASE, now=0.0, max_bytes=1 << 30).index.versions
    )
    policy = policy_for(NAME, blocked=[f"{NAME}@{versions[0]}"])
    computed = await Computer(in_process_bytes=0).documents(
        raw, outputs(tmp_path), name=NAME, base_url=BASE, now=0.0, max_bytes=1 << 30, policy=policy
    )
    assert computed.index.hidden == {versions[0]: "blocked"}
    assert versions[0] not in computed.index.versions
