"""``direct`` without the go command: its environment, its error classes and its slot queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from entrepot.config import Credentials, Direct
from entrepot.errors import NotFoundError, UnavailableError, UpstreamError, UpstreamTimeoutError
from entrepot.gomod.direct import (
    WORK_GO_MOD,
    DirectUpstream,
    Slots,
    build_env,
    classify_go_error,
)


def env(**kwargs: object) -> dict[str, str]:
    return build_env(
        home=Path("/data/.direct"),
        settings=Direct(),
        credentials=Credentials(),
        base={"PATH": "/usr/bin", "GOWORK": "/elsewhere/go.work", "GOFLAGS": "-x"},
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_go_command_never_reads_a_workspace_or_the_servers_own_settings() -> None:
    built = env()
    assert built["GOWORK"] == "off"
    assert built["GOFLAGS"] == "-mod=mod"
    assert "GIT_HTTP_LOW_SPEED_LIMIT" not in built


def test_gits_low_speed_limit_follows_the_minimum_transfer_rate() -> None:
    built = env(min_transfer_rate=2048, min_rate_window=2.5)
    assert built["GIT_HTTP_LOW_SPEED_LIMIT"] == "2048"
    assert built["GIT_HTTP_LOW_SPEED_TIME"] == "3"  # whole seconds, rounded up
    assert "GIT_HTTP_LOW_SPEED_LIMIT" not in env(min_transfer_rate=0, min_rate_window=2.5)


def test_the_working_directory_has_its_own_go_mod(tmp_path: Path) -> None:
    """Guards the parent go.mod/go.work bug: the go command stops walking up here."""
    (tmp_path / "go.mod").write_text("module example.com/outer\n\ngo 1.99\n")
    home = tmp_path / "data" / ".direct"
    upstream = DirectUpstream(home=home, settings=Direct(), credentials=Credentials(), environ={})
    assert (home / "work" / "go.mod").read_text() == WORK_GO_MOD
    assert upstream.env["GIT_HTTP_LOW_SPEED_LIMIT"] == "1024"  # go.min_transfer_rate's default
    assert upstream.env["GIT_HTTP_LOW_SPEED_TIME"] == "30"
    assert list((home / "work").iterdir()) == [home / "work" / "go.mod"]  # no staged leftovers


@pytest.mark.parametrize(
    ("stderr", "returncode", "kind"),
    [
        ("go: example.com/x@v9.0.0: invalid version: unknown revision v9.0.0", 1, NotFoundError),
        # Killed, or git dropped a trickling remote: never "not found" (which is cached and
        # final for the client), even when the rest of the message says so.
        ("go: example.com/x@v1.0.0: not found", -9, UpstreamError),
        (
            "go: unrecognized import path: fatal: unable to access 'https://example.com/x/':"
            " Operation too slow. Less than 1024 bytes/sec transferred the last 30 seconds",
            1,
            UpstreamTimeoutError,
        ),
        (
            "git ls-remote: exit status 128: signal: killed (repository not found?)",
            1,
            UpstreamError,
        ),
        ("error: RPC failed; curl 18 transfer closed | fatal: early EOF | 404", 1, UpstreamError),
    ],
)
def test_classify(stderr: str, returncode: int, kind: type[Exception]) -> None:
    error = classify_go_error(stderr, "example.com/x@v1.0.0", returncode=returncode)
    assert type(error) is kind
    assert "\n" not in str(error)


def test_a_killed_go_command_is_named_by_its_signal() -> None:
    error = classify_go_error("", "example.com/x@v1.0.0", returncode=-9)
    assert str(error) == (
        "example.com/x@v1.0.0: direct fetch failed: the go command was killed (SIGKILL)"
    )


def test_credentials_in_a_quoted_url_are_left_out() -> None:
    error = classify_go_error(
        "fatal: unable to access 'https://alice:s3cret@git.example.com/x/': 502", "m"
    )
    assert "s3cret" not in str(error)
    assert "alice" not in str(error)
    assert "https://git.example.com/x/" in str(error)


# --- the slot queue -----------------------------------------------------------------------------


async def test_past_the_queue_a_caller_is_refused_at_once() -> None:
    slots = Slots(size=1, queue=1, timeout=30)
    release = asyncio.Event()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with slots.slot(name):
            order.append(name)
            await release.wait()

    first = asyncio.create_task(hold("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(hold("second"))
    await asyncio.sleep(0)
    with pytest.raises(UnavailableError, match="direct fetch queue is full"):
        async with slots.slot("third"):
            pass
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert slots.free == 1


async def test_a_caller_that_waited_too_long_is_refused_and_leaves_the_queue() -> None:
    slots = Slots(size=1, queue=5, timeout=0.05)
    async with slots.slot("first"):
        with pytest.raises(UnavailableError, match=r"no direct fetch slot within 0.05s"):
            async with slots.slot("second"):
                pass
        assert not slots._waiters
    assert slots.free == 1


async def test_a_cancelled_waiter_neither_keeps_nor_loses_a_slot() -> None:
    slots = Slots(size=1, queue=5, timeout=30)
    async with slots.slot("first"):
        waiter = asyncio.create_task(slots.slot("second").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert slots.free == 1
    # Handed over, then cancelled before it ran: the slot goes back.
    async with slots.slot("third"):
        waiter = asyncio.create_task(slots.slot("fourth").__aenter__())
        await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.free == 1
    assert not slots._waiters


async def test_a_queue_of_zero_refuses_whenever_every_slot_is_taken() -> None:
    slots = Slots(size=1, queue=0, timeout=30)
    async with slots.slot("first"):
        with pytest.raises(UnavailableError):
            async with slots.slot("second"):
                pass
    async with slots.slot("third"):
        pass
