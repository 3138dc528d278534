"""Upstream proxies and GOPROXY chain semantics, with httpx.MockTransport."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from entrepot.config import parse_proxy_list
from entrepot.errors import (
    GoneError,
    NotFoundError,
    TooLargeError,
    UpstreamError,
)
from entrepot.gomod.upstream import Chain, Link, OffUpstream, ProxyUpstream, build_chain


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
