"""NpmUpstream, the npm mirror's HTTP edge, against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from entrepot.errors import NotFoundError, UpstreamError, UpstreamTimeoutError, VerificationError
from entrepot.npm.integrity import IntegrityError, TarballTooLargeError, Verifier
from entrepot.npm.packument import PackumentTooLargeError
from entrepot.npm.upstream import NpmUpstream, read_npmrc_auth

BASE = "https://registry.example.com/"
DATA = b"the bytes of a tarball\n" * 50
SRI = "sha512-" + base64.b64encode(hashlib.sha512(DATA).digest()).decode()

Handler = Callable[[httpx.Request], httpx.Response]


def upstream(handler: Handler, base: str = BASE, **kwargs: object) -> NpmUpstream:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return NpmUpstream(base, client=client, **kwargs)  # type: ignore[arg-type]


class Seen:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def paths(self) -> list[str]:
        return [r.url.raw_path.decode() for r in self.requests]


def verifier(max_bytes: int = 1 << 20) -> Verifier:
    from entrepot.npm.integrity import expected_from_dist

    expected = expected_from_dist({"integrity": SRI})
    assert expected is not None
    return Verifier(expected, max_bytes=max_bytes, what="tarball of t@1.0.0")


class Cut(httpx.AsyncByteStream):
    """A streamed body (``content=`` would be read at once; the mirror reads the raw
    stream): ``keep`` bytes, then, when ``cut``, the connection breaks (a peer closing
    early)."""

    def __init__(self, data: bytes, keep: int, *, cut: bool = True) -> None:
        self.data, self.keep, self.cut = data, keep, cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: self.keep]
        if self.cut:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


class Slow(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.05)
            yield b"x"


async def test_packument_paths_have_one_slash_and_the_scope_escaped() -> None:
    """Guards a bug: the base URL's trailing slash and the path's leading one made
    ``GET //name`` (Python's http.server hides it; a real registry may not)."""
    seen = Seen()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.requests.append(request)
        return httpx.Response(200, json={"name": "x"}, headers={"ETag": '"e1"'})

    up = upstream(handler)
    got = await up.packument("left-pad", etag=None, max_bytes=1 << 20)
    assert got is not None
    assert got.etag == '"e1"'
    await up.packument("@scope/name", etag=None, max_bytes=1 << 20)
    under = upstream(handler, "https://host.example/npm/registry")
    await under.packument("@s/p", etag=None, max_bytes=1 << 20)
    assert seen.paths() == ["/left-pad", "/@scope%2fname", "/npm/registry/@s%2fp"]
    assert seen.requests[0].headers["accept"] == "application/json"


async def test_conditional_packument_304_is_none() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match") == '"v1"':
            return httpx.Response(304)
        return httpx.Response(200, json={}, headers={"ETag": '"v1"'})

    up = upstream(handler)
    assert await up.packument("a", etag='"v1"', max_bytes=1 << 20) is None
    assert await up.packument("a", etag='"v0"', max_bytes=1 << 20) is not None


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (httpx.Response(404, json={"error": "Not found"}), NotFoundError, "not found"),
        (httpx.Response(500, text="boom"), UpstreamError, "500"),
        (httpx.Response(401), UpstreamError, "credentials"),
        (
            httpx.Response(200, text="<html>login</html>", headers={"Content-Type": "text/html"}),
            VerificationError,
            "HTML",
        ),
    ],
)
async def test_packument_failures_are_ours(
    answer: httpx.Response, error: type[Exception], text: str
) -> None:
    up = upstream(lambda request: answer)
    with pytest.raises(error, match=text):
        await up.packument("a", etag=None, max_bytes=1 << 20)


async def test_an_oversized_packument_is_refused() -> None:
    up = upstream(lambda request: httpx.Response(200, content=b"{" + b" " * 5000 + b"}"))
    with pytest.raises(PackumentTooLargeError):
        await up.packument("a", etag=None, max_bytes=1024)


async def test_credentials_go_to_the_upstream_origin_only() -> None:
    seen = Seen()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.requests.append(request)
        if request.url.host == "registry.example.com":
            return httpx.Response(302, headers={"Location": "https://cdn.example.net/a"})
        return httpx.Response(200, json={})

    up = upstream(handler, authorization="Bearer s3cret")
    await up.packument("a", etag=None, max_bytes=1 << 20)
    assert seen.requests[0].headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in seen.requests[1].headers
    assert up.tarball_source("a", "1.0.0", "https://evil.example/a-1.0.0.tgz") == (
        "https://registry.example.com/a/-/a-1.0.0.tgz"
    )
    assert up.tarball_source("a", "1.0.0", BASE + "a/-/a-1.0.0.tgz") == BASE + "a/-/a-1.0.0.tgz"


async def test_a_redirect_to_plain_http_is_refused() -> None:
    up = upstream(
        lambda r: httpx.Response(301, headers={"Location": "http://registry.example.com/a"})
    )
    with pytest.raises(UpstreamError, match="https to http"):
        await up.packument("a", etag=None, max_bytes=1 << 20)


async def test_basic_auth_from_the_url_never_in_the_base() -> None:
    seen = Seen()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.requests.append(request)
        return httpx.Response(200, json={})

    up = upstream(handler, "https://user:pw@registry.example.com/")
    await up.packument("a", etag=None, max_bytes=1 << 20)
    assert "pw" not in up.base_url
    token = base64.b64encode(b"user:pw").decode()
    assert seen.requests[0].headers["authorization"] == f"Basic {token}"


async def test_a_tarball_is_verified_while_streaming(tmp_path: Path) -> None:
    up = upstream(lambda r: httpx.Response(200, stream=Cut(DATA, len(DATA), cut=False)))
    dest = tmp_path / "t.tgz"
    await up.tarball(BASE + "t/-/t-1.0.0.tgz", "tarball of t@1.0.0", dest, verifier(), 1 << 20)
    assert dest.read_bytes() == DATA

    other = DATA[:-1] + b"!"
    bad = upstream(lambda r: httpx.Response(200, stream=Cut(other, len(other), cut=False)))
    with pytest.raises(IntegrityError) as refused:
        await bad.tarball(BASE + "t", "tarball of t@1.0.0", dest, verifier(), 1 << 20)
    assert refused.value.reason == "mismatch"


async def test_a_cut_tarball_is_a_truncation_not_a_transport_error(tmp_path: Path) -> None:
    """Guards a bug: a connection closed before the announced Content-Length was an
    UpstreamError, so the refusal was not counted as ``truncated``."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": str(len(DATA))}
        return httpx.Response(200, stream=Cut(DATA, 100), headers=headers)

    up = upstream(handler)
    with pytest.raises(IntegrityError) as refused:
        await up.tarball(BASE + "t", "tarball of t@1.0.0", tmp_path / "t", verifier(), 1 << 20)
    assert refused.value.reason == "truncated"
    assert "100 of" in refused.value.message


async def test_a_tarball_announced_too_large_is_refused_before_reading(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Slow(), headers={"Content-Length": str(10 << 20)})

    up = upstream(handler)
    with pytest.raises(TarballTooLargeError, match="limit"):
        await up.tarball(BASE + "t", "tarball of t@1.0.0", tmp_path / "t", verifier(4096), 4096)


async def test_a_dripping_tarball_ends_at_the_deadline(tmp_path: Path) -> None:
    up = upstream(lambda r: httpx.Response(200, stream=Slow()), tarball_deadline=0.3)
    with pytest.raises(UpstreamTimeoutError, match="tarball_deadline"):
        await up.tarball(BASE + "t", "tarball of t@1.0.0", tmp_path / "t", verifier(), 1 << 20)


async def test_passthrough_forwards_the_request_and_keeps_the_answer() -> None:
    seen = Seen()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.requests.append(request)
        return httpx.Response(
            200,
            json={"objects": []},
            headers={"Content-Type": "application/json", "X-Secret": "no", "ETag": '"s"'},
        )

    up = upstream(handler, authorization="Bearer t")
    passed = await up.passthrough(
        "POST",
        "-/npm/v1/security/advisories/bulk",
        "",
        {"content-type": "application/json", "content-encoding": "gzip", "cookie": "c=1"},
        b"\x1f\x8b...",
    )
    assert passed.status == 200
    assert passed.headers == {"content-type": "application/json", "etag": '"s"'}
    request = seen.requests[0]
    assert str(request.url) == BASE + "-/npm/v1/security/advisories/bulk"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["authorization"] == "Bearer t"
    assert "cookie" not in request.headers
    assert request.content == b"\x1f\x8b..."
    await up.passthrough("GET", "-/v1/search", "text=a&size=2", {}, b"")
    assert str(seen.requests[1].url) == BASE + "-/v1/search?text=a&size=2"


def test_npmrc_auth_takes_the_longest_matching_path() -> None:
    text = (
        "registry=https://registry.example.com/npm/\n"
        "//registry.example.com/:_authToken=short\n"
        '//registry.example.com/npm/:_authToken="long"\n'
        "//other.example.com/:_auth=b3RoZXI=\n"
    )
    assert read_npmrc_auth(text, "https://registry.example.com/npm/") == "Bearer long"
    assert read_npmrc_auth(text, "https://registry.example.com/") == "Bearer short"
    assert read_npmrc_auth(text, "https://other.example.com/") == "Basic b3RoZXI="
    assert read_npmrc_auth(text, "https://third.example.com/") is None
