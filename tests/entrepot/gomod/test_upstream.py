"""Upstream proxies and GOPROXY chain semantics, with httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrepot.config import parse_proxy_list
from entrepot.errors import (
    ConfigError,
    GoneError,
    NotFoundError,
    TooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
    VerificationError,
)
from entrepot.gomod.upstream import (
    Chain,
    Link,
    OffUpstream,
    ProxyUpstream,
    RateMeter,
    build_chain,
    parse_netrc,
    quiet_http_loggers,
    read_netrc,
)


def proxy(handler, url: str = "https://a.example.com", **kw: object) -> ProxyUpstream:  # type: ignore[no-untyped-def]
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ProxyUpstream(url, client=client, **kw)  # type: ignore[arg-type]


def answering(status: int, body: bytes = b"") -> ProxyUpstream:
    return proxy(lambda request: httpx.Response(status, content=body))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://a.example.com,direct", [("https://a.example.com", False), ("direct", False)]),
        (
            "https://a.example.com|https://b.example.com/,off",
            [("https://a.example.com", True), ("https://b.example.com", False), ("off", False)],
        ),
        ("file:///srv/goproxy", [("file:///srv/goproxy", False)]),
        (" direct ", [("direct", False)]),
    ],
)
def test_proxy_list_parsing_keeps_go_separator_rules(
    text: str, expected: list[tuple[str, bool]]
) -> None:
    assert [(e.url, e.fall_back_on_error) for e in parse_proxy_list(text)] == expected


@pytest.mark.parametrize("bad", ["", ",", "ftp://x.example.com", "example.com", "noproxy"])
def test_proxy_list_rejects_nonsense(bad: str) -> None:
    with pytest.raises(ValueError, match=r"upstream|empty"):
        parse_proxy_list(bad)


async def _list(chain: Chain) -> bytes:
    return await chain.call(lambda up: up.list("example.com/m"))


async def test_comma_falls_through_on_404_and_410_only() -> None:
    ok = answering(200, b"v1.0.0\n")
    assert await _list(Chain([Link(answering(404), False), Link(ok, False)])) == b"v1.0.0\n"
    assert await _list(Chain([Link(answering(410), False), Link(ok, False)])) == b"v1.0.0\n"
    with pytest.raises(UpstreamError, match="answered 500"):
        await _list(Chain([Link(answering(500, b"boom"), False), Link(ok, False)]))


async def test_pipe_falls_through_on_any_error() -> None:
    ok = answering(200, b"v1.0.0\n")
    assert await _list(Chain([Link(answering(500), True), Link(ok, False)])) == b"v1.0.0\n"


async def test_when_all_fail_a_real_error_beats_not_found() -> None:
    chain = Chain([Link(answering(503, b"maintenance"), True), Link(answering(404), False)])
    with pytest.raises(UpstreamError, match="503: maintenance"):
        await _list(chain)
    with pytest.raises(GoneError):
        await _list(Chain([Link(answering(410), False)]))


async def test_off_refuses_with_not_found() -> None:
    with pytest.raises(NotFoundError, match="GOPROXY=off"):
        await _list(Chain([Link(OffUpstream(), False)]))


async def test_connection_errors_become_upstream_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(UpstreamError, match=r"cannot fetch example\.com/m"):
        await _list(Chain([Link(proxy(refuse), False)]))


async def test_redirects_are_followed_but_never_downgraded_to_http() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.example.com":
            return httpx.Response(302, headers={"Location": "https://b.example.com/x/@v/list"})
        if request.url.host == "b.example.com":
            return httpx.Response(302, headers={"Location": "http://c.example.com/x/@v/list"})
        return httpx.Response(200, content=b"v9.9.9\n")

    with pytest.raises(UpstreamError, match="refused redirect from https to http"):
        await proxy(handler).list("example.com/m")


async def test_bearer_token_goes_only_to_its_own_host() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("authorization")
        if request.url.host == "a.example.com":
            return httpx.Response(302, headers={"Location": "https://cdn.example.com/f"})
        return httpx.Response(200, content=b"v1.0.0\n")

    up = proxy(handler, tokens={"a.example.com": "s3cret"})
    await up.list("example.com/m")
    assert seen == {"a.example.com": "Bearer s3cret", "cdn.example.com": None}


async def test_upper_case_paths_are_escaped_on_the_wire() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, content=b"module x\n")

    await proxy(handler, "https://a.example.com/base").mod("example.com/Azure/Go", "v1.0.0-RC")
    assert paths == ["/base/example.com/!azure/!go/@v/v1.0.0-!r!c.mod"]


async def test_zip_over_the_limit_is_cut_off(tmp_path: Path) -> None:
    up = answering(200, b"x" * 5000)
    with pytest.raises(TooLargeError, match="over the limit 1000"):
        await up.zip("example.com/m", "v1.0.0", tmp_path / "z", max_bytes=1000)


async def test_error_messages_never_carry_credentials() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("failed for https://bob:hunter2@a.example.com/", request=request)

    with pytest.raises(UpstreamError) as caught:
        await proxy(refuse).list("example.com/m")
    assert "hunter2" not in str(caught.value)


def test_direct_is_shared_and_required_when_named() -> None:
    with pytest.raises(ValueError, match="direct"):
        build_chain(parse_proxy_list("direct"), make_proxy=lambda url: answering(200), direct=None)


def test_direct_errors_are_classified_with_advice() -> None:
    from entrepot.gomod.direct import classify_go_error

    missing = classify_go_error("go: example.com/x@v9.0.0: invalid version: unknown revision", "m")
    assert isinstance(missing, NotFoundError)
    auth = classify_go_error("fatal: no secure protocol found for repository", "m")
    assert type(auth) is UpstreamError
    assert "go.credentials" in auth.message


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_netrc_keeps_only_complete_machine_entries_and_never_default() -> None:
    """Guards the leak where httpx.NetRCAuth sent the ``default`` entry to every host."""
    text = (
        "# build credentials\n"
        "machine Repo.Example.com login builder password one\n"
        "machine repo.example.com login later password two\n"  # the first entry wins, as in Go
        "machine half.example.com login nobody\n"  # no password: not an entry
        "machine multi.example.com\n  login m\n  password p\n"
        "macdef init\nmachine macro.example.com login x password y\n\n"
        "machine port.example.com:8443 login q password r\n"
        "default login deploy password DEFAULTPW\n"
        "machine after.example.com login late password z\n"
    )
    assert parse_netrc(text) == {
        "repo.example.com": ("builder", "one"),
        "multi.example.com": ("m", "p"),
        "port.example.com:8443": ("q", "r"),
    }
    assert parse_netrc("default login deploy password DEFAULTPW\n") == {}
    assert parse_netrc("default\nmachine a.example.com login u password p\n") == {}


def test_unreadable_netrc_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="netrc_file: cannot read"):
        read_netrc(tmp_path / "missing")


async def test_netrc_credentials_go_per_hop_to_their_machine_only() -> None:
    """Guards the leak where a 302 to another host arrived with ``deploy:DEFAULTPW``."""
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.netloc.decode()] = request.headers.get("authorization")
        if request.url.host == "a.example.com":
            return httpx.Response(302, headers={"Location": "https://cdn.example.com/f"})
        if request.url.host == "cdn.example.com":
            return httpx.Response(302, headers={"Location": "https://p.example.com:8443/f"})
        return httpx.Response(200, content=b"v1.0.0\n")

    netrc = parse_netrc(
        "machine a.example.com login builder password MACHINEPW\n"
        "machine p.example.com:8443 login porter password PORTPW\n"
        "default login deploy password DEFAULTPW\n"
    )
    await proxy(handler, netrc=netrc).list("example.com/m")
    assert seen == {
        "a.example.com": _basic("builder", "MACHINEPW"),
        "cdn.example.com": None,
        "p.example.com:8443": _basic("porter", "PORTPW"),
    }


async def test_userinfo_in_the_upstream_url_goes_to_its_origin_only() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization")))
        if request.url.port == 8443:
            return httpx.Response(302, headers={"Location": "https://a.example.com:9443/x"})
        return httpx.Response(200, content=b"v1.0.0\n")

    up = proxy(handler, "https://alice:s3cret%40pw@a.example.com:8443/base")
    assert up.base_url == "https://a.example.com:8443/base/"
    await up.list("example.com/m")
    assert seen == [
        ("https://a.example.com:8443/base/example.com/m/@v/list", _basic("alice", "s3cret@pw")),
        ("https://a.example.com:9443/x", None),  # same host, another port: another origin
    ]


@pytest.mark.parametrize(
    "content_type", ["text/html", "Text/HTML; charset=utf-8", "application/xhtml+xml"]
)
async def test_an_html_page_is_refused_not_cached_as_module_data(
    content_type: str, tmp_path: Path
) -> None:
    """Guards a portal's 200 login page stored as a go.mod forever."""
    page = b"<html><body>Please sign in</body></html>"
    up = proxy(
        lambda request: httpx.Response(200, content=page, headers={"Content-Type": content_type})
    )
    for call in (
        up.list("example.com/m"),
        up.mod("example.com/m", "v1.0.0"),
        up.info("example.com/m", "v1.0.0"),
        up.latest("example.com/m"),
    ):
        with pytest.raises(VerificationError, match=r"answered an HTML page \(a login page"):
            await call
    with pytest.raises(VerificationError, match="check the upstream URL and its credentials"):
        await up.zip("example.com/m", "v1.0.0", tmp_path / "z", max_bytes=1 << 20)
    assert not (tmp_path / "z").exists()


def dripping(
    *, every: float, size: int = 1, headers_after: float = 0.0, **kw: Any
) -> ProxyUpstream:
    """An upstream that waits ``headers_after`` seconds, then sends ``size`` bytes per ``every``."""

    async def drip() -> AsyncIterator[bytes]:
        for _ in range(10_000):
            await asyncio.sleep(every)
            yield b"x" * size

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(headers_after)
        return httpx.Response(200, content=drip())

    return proxy(handler, **kw)


async def test_a_dripping_small_answer_hits_the_total_deadline() -> None:
    """Guards a 1 byte/3 s upstream holding a fetch for minutes: the read timeout never fired."""
    up = dripping(every=0.05, small_deadline=0.4, min_rate=0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match=r"within 0\.4s \(go\.upstream_timeout\)"):
        await up.mod("example.com/m", "v1.0.0")
    assert time.monotonic() - started < 1.5


async def test_the_wait_for_headers_counts_in_the_deadline(tmp_path: Path) -> None:
    up = dripping(every=0.01, headers_after=5, zip_deadline=0.3, min_rate=0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match=r"within 0\.3s \(go\.zip_deadline\)"):
        await up.zip("example.com/m", "v1.0.0", tmp_path / "z", max_bytes=1 << 20)
    assert time.monotonic() - started < 1.5


async def test_a_transfer_below_the_minimum_rate_is_aborted_after_one_window(
    tmp_path: Path,
) -> None:
    up = dripping(every=0.05, min_rate=100, rate_window=0.4)  # 20 B/s
    started = time.monotonic()
    with pytest.raises(
        UpstreamTimeoutError,
        match=r"sent \d+ bytes in the last 0\.4s, below the minimum 100 B/s \(go\.min_transfer",
    ):
        await up.zip("example.com/m", "v1.0.0", tmp_path / "z", max_bytes=1 << 20)
    assert 0.4 <= time.monotonic() - started < 1.5


async def test_a_stalled_body_is_aborted_although_no_byte_arrives() -> None:
    up = dripping(every=30, min_rate=1, rate_window=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match=r"sent 0 bytes in the last 0\.3s"):
        await up.list("example.com/m")
    assert time.monotonic() - started < 1.5


async def test_a_slow_but_steady_transfer_is_not_aborted() -> None:
    up = dripping(every=0.02, size=50, min_rate=1000, rate_window=0.2, small_deadline=0.6)
    with pytest.raises(UpstreamTimeoutError, match=r"go\.upstream_timeout"):
        # ~2500 B/s for the whole deadline: only the deadline ends it, never the rate.
        await up.list("example.com/m")


def test_rate_meter_counts_only_the_last_window() -> None:
    meter = RateMeter(window=10, start=0)
    assert meter.recent(5) is None  # one whole window has not passed yet
    for t in range(1, 11):
        meter.add(100, float(t))
    assert meter.recent(10) == 1000
    assert meter.recent(15) == 500
    assert meter.recent(25) == 0


async def test_after_a_pipe_a_timeout_falls_through_to_the_next_upstream() -> None:
    slow = dripping(every=0.05, min_rate=100, rate_window=0.3)
    ok = answering(200, b"v1.0.0\n")
    started = time.monotonic()
    assert await _list(Chain([Link(slow, True), Link(ok, False)])) == b"v1.0.0\n"
    assert time.monotonic() - started < 1.5
    with pytest.raises(UpstreamTimeoutError):
        await _list(Chain([Link(slow, False), Link(ok, False)]))


def test_log_lines_never_carry_credentials() -> None:
    """Guards httpx's INFO line "HTTP Request: GET http://alice:s3cretpw@..." in the log."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        quiet_http_loggers()
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("httpcore").getEffectiveLevel() == logging.WARNING
        logging.getLogger("entrepot").warning("upstream %s", "http://alice:s3cretpw@127.0.0.1:1")
        try:
            raise RuntimeError("Authorization: Basic c2VjcmV0 for https://bob:hunter2@h/")
        except RuntimeError:
            logging.getLogger("entrepot").exception("failed")
    finally:
        root.removeHandler(handler)
        logging.getLogger("httpx").setLevel(logging.NOTSET)
        logging.getLogger("httpcore").setLevel(logging.NOTSET)
    text = stream.getvalue()
    assert "upstream http://***@127.0.0.1:1" in text
    for secret in ("s3cretpw", "hunter2", "c2VjcmV0"):
        assert secret not in text
