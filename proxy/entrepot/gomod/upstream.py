"""Upstreams: where the mirror gets what it does not have, and the GOPROXY-style chain.

An upstream answers the five questions of the proxy protocol. Three kinds exist:
``ProxyUpstream`` (another GOPROXY over http(s)), ``FileUpstream`` (a ``file://`` directory in
proxy layout, as the go command accepts) and ``DirectUpstream`` (version control through the
go command, in :mod:`entrepot.gomod.direct`); ``OffUpstream`` refuses. A :class:`Chain` walks
them with Go's rules: after an entry followed by ``,`` only 404/410 fall through, after ``|``
any error does.

Every upstream raises only :mod:`entrepot.errors` exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from entrepot.config import ProxyEntry
from entrepot.errors import (
    EntrepotError,
    GoneError,
    NotFoundError,
    TooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)
from entrepot.gomod.module import escape_path, escape_version

T = TypeVar("T")
MAX_SMALL_BYTES = 16 << 20  # .info, .mod, list: the Go limit for go.mod is 16 MiB
MAX_REDIRECTS = 10
CHUNK = 1 << 16


class Upstream(Protocol):
    """One source of modules. ``name`` is a bounded label (from config) for metrics and logs."""

    name: str

    async def list(self, module: str) -> bytes: ...

    async def info(self, module: str, query: str) -> bytes: ...

    async def latest(self, module: str) -> bytes: ...

    async def mod(self, module: str, version: str) -> bytes: ...

    async def zip(self, module: str, version: str, dest: Path, *, max_bytes: int) -> None:
        """Write the zip to ``dest`` (streaming); raise TooLargeError past ``max_bytes``."""
        ...


def _rel(module: str, tail: str) -> str:
    return f"{escape_path(module)}/{tail}"


def _versioned(module: str, version: str, ext: str) -> str:
    return _rel(module, f"@v/{escape_version(version)}.{ext}")


def first_lines(text: str, limit: int = 4) -> str:
    """A short, printable excerpt of an upstream's error body for our own message."""
    lines = [ln for ln in text.replace("\r", "").split("\n") if ln.strip()][:limit]
    shown = " | ".join(lines)
    return "".join(c if c.isprintable() else "?" for c in shown)[:300]


class ProxyUpstream:
    """Another module proxy over HTTP(S)."""

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient,
        tokens: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        parts = urlsplit(base_url)
        self.name = parts.hostname or base_url
        self._client = client
        self._tokens = dict(tokens or {})
        self._auth = auth

    async def list(self, module: str) -> bytes:
        return await self._get_small(_rel(module, "@v/list"), module)

    async def info(self, module: str, query: str) -> bytes:
        return await self._get_small(_versioned(module, query, "info"), f"{module}@{query}")

    async def latest(self, module: str) -> bytes:
        return await self._get_small(_rel(module, "@latest"), f"{module}@latest")

    async def mod(self, module: str, version: str) -> bytes:
        return await self._get_small(_versioned(module, version, "mod"), f"{module}@{version}")

    async def zip(self, module: str, version: str, dest: Path, *, max_bytes: int) -> None:
        what = f"{module}@{version}"
        async with self._open(_versioned(module, version, "zip"), what) as response:
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise TooLargeError(
                    f"{self.name}: zip for {what} is {declared} bytes, over the limit {max_bytes}"
                )
            written = 0
            try:
                # Inline writes: a 64 KiB write into the page cache takes microseconds, less
                # than a hop to a thread would.
                with open(dest, "wb") as out:  # noqa: ASYNC230
                    async for chunk in response.aiter_bytes(CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise TooLargeError(
                                f"{self.name}: zip for {what} is over the limit {max_bytes}"
                            )
                        out.write(chunk)
            except httpx.TimeoutException as e:
                raise UpstreamTimeoutError(f"{self.name}: timed out reading zip of {what}") from e
            except httpx.HTTPError as e:
                raise UpstreamError(f"{self.name}: reading zip of {what} failed: {e}") from e

    async def _get_small(self, rel: str, what: str) -> bytes:
        async with self._open(rel, what) as response:
            body = bytearray()
            try:
                async for chunk in response.aiter_bytes(CHUNK):
                    body += chunk
                    if len(body) > MAX_SMALL_BYTES:
                        raise TooLargeError(f"{self.name}: answer for {what} is over 16 MiB")
            except httpx.TimeoutException as e:
                raise UpstreamTimeoutError(f"{self.name}: timed out reading {what}") from e
            except httpx.HTTPError as e:
                raise UpstreamError(f"{self.name}: reading {what} failed: {e}") from e
            return bytes(body)

    @contextlib.asynccontextmanager
    async def _open(self, rel: str, what: str):  # type: ignore[no-untyped-def]
        """GET with redirects followed by hand: at most 10, and never from https to http."""
        url = urljoin(self.base_url, rel)
        for _ in range(MAX_REDIRECTS + 1):
            request = self._client.build_request("GET", url, headers=self._headers_for(url))
            try:
                response = await self._client.send(request, stream=True, auth=self._auth)
            except httpx.TimeoutException as e:
                raise UpstreamTimeoutError(f"{self.name}: timed out fetching {what}") from e
            except httpx.HTTPError as e:
                raise UpstreamError(f"{self.name}: cannot fetch {what}: {e}") from e
            try:
                if response.is_redirect and "location" in response.headers:
                    target = urljoin(url, response.headers["location"])
                    if url.startswith("https:") and not target.startswith("https:"):
                        raise UpstreamError(
                            f"{self.name}: refused redirect from https to {urlsplit(target).scheme}"
                        )
                    url = target
                    continue
                await self._raise_for_status(response, what)
                yield response
                return
            finally:
                await response.aclose()
        raise UpstreamError(f"{self.name}: more than {MAX_REDIRECTS} redirects for {what}")

    def _headers_for(self, url: str) -> dict[str, str]:
        """A bearer token only ever goes to the host it was configured for (per redirect hop)."""
        token = self._tokens.get(urlsplit(url).hostname or "")
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status == 200:
            return
        text = ""
        with contextlib.suppress(httpx.HTTPError):
            text = first_lines((await response.aread())[:4096].decode("utf-8", "replace"))
        detail = f": {text}" if text else ""
        if status == 410:
            raise GoneError(f"{what}: {self.name} answered 410 Gone{detail}")
        if status == 404:
            raise NotFoundError(f"{what}: not found at {self.name}{detail}")
        raise UpstreamError(f"{what}: {self.name} answered {status}{detail}")


class FileUpstream:
    """A directory in module-proxy layout (``GOPROXY=file:///path``)."""

    def __init__(self, url: str) -> None:
        self.root = Path(unquote(urlsplit(url).path))
        self.name = "file"

    def _read(self, rel: str, what: str) -> bytes:
        try:
            with open(self.root / rel, "rb") as f:
                data = f.read(MAX_SMALL_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise NotFoundError(f"{what}: not found in {self.root}") from e
        except OSError as e:
            raise UpstreamError(f"{what}: cannot read from {self.root}: {e.strerror}") from e
        if len(data) > MAX_SMALL_BYTES:
            raise TooLargeError(f"{what}: file in {self.root} is over 16 MiB")
        return data

    async def list(self, module: str) -> bytes:
        return self._read(_rel(module, "@v/list"), module)

    async def info(self, module: str, query: str) -> bytes:
        return self._read(_versioned(module, query, "info"), f"{module}@{query}")

    async def latest(self, module: str) -> bytes:
        return self._read(_rel(module, "@latest"), f"{module}@latest")

    async def mod(self, module: str, version: str) -> bytes:
        return self._read(_versioned(module, version, "mod"), f"{module}@{version}")

    async def zip(self, module: str, version: str, dest: Path, *, max_bytes: int) -> None:
        what = f"{module}@{version}"
        src = self.root / _versioned(module, version, "zip")
        try:
            size = os.stat(src).st_size
            if size > max_bytes:
                raise TooLargeError(f"zip for {what} is {size} bytes, over the limit {max_bytes}")
            await asyncio.to_thread(shutil.copyfile, src, dest)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise NotFoundError(f"{what}: not found in {self.root}") from e
        except OSError as e:
            raise UpstreamError(f"{what}: cannot read zip from {self.root}: {e.strerror}") from e


class OffUpstream:
    """``off``: the mirror serves only what it already has."""

    name = "off"

    def _refuse(self, what: str) -> NotFoundError:
        return NotFoundError(
            f"{what}: not in the mirror's cache, and fetching is off (GOPROXY=off)"
        )

    async def list(self, module: str) -> bytes:
        raise self._refuse(module)

    async def info(self, module: str, query: str) -> bytes:
        raise self._refuse(f"{module}@{query}")

    async def latest(self, module: str) -> bytes:
        raise self._refuse(f"{module}@latest")

    async def mod(self, module: str, version: str) -> bytes:
        raise self._refuse(f"{module}@{version}")

    async def zip(self, module: str, version: str, dest: Path, *, max_bytes: int) -> None:
        raise self._refuse(f"{module}@{version}")


@dataclass(frozen=True)
class Link:
    upstream: Upstream
    fall_back_on_error: bool


class Chain:
    """Upstreams tried in order with GOPROXY semantics."""

    def __init__(self, links: list[Link]) -> None:
        if not links:
            raise ValueError("a chain needs at least one upstream")
        self.links = links

    async def call(
        self,
        op: Callable[[Upstream], Awaitable[T]],
        *,
        on_attempt: Callable[[Upstream, str], None] | None = None,
    ) -> T:
        """Run ``op`` on each upstream until one answers.

        Falls through on NotFound/Gone always, on any other error only after a ``|``. When all
        fail, the most informative error wins: a real failure over 'not found' (as Go does).
        """
        best: EntrepotError | None = None
        for link in self.links:
            try:
                result = await op(link.upstream)
            except NotFoundError as e:
                if on_attempt:
                    on_attempt(link.upstream, "not_found")
                best = best or e
                continue
            except EntrepotError as e:
                if on_attempt:
                    on_attempt(link.upstream, "error")
                if not link.fall_back_on_error:
                    raise
                if best is None or isinstance(best, NotFoundError):
                    best = e
                continue
            if on_attempt:
                on_attempt(link.upstream, "ok")
            return result
        assert best is not None
        raise best


def build_chain(
    entries: list[ProxyEntry],
    *,
    make_proxy: Callable[[str], Upstream],
    direct: Upstream | None,
) -> Chain:
    """Turn parsed GOPROXY entries into a chain; ``direct`` is shared by all chains."""
    links = []
    for entry in entries:
        upstream: Upstream
        if entry.kind == "direct":
            if direct is None:
                raise ValueError("'direct' is not available in this configuration")
            upstream = direct
        elif entry.kind == "off":
            upstream = OffUpstream()
        elif entry.kind == "file":
            upstream = FileUpstream(entry.url)
        else:
            upstream = make_proxy(entry.url)
        links.append(Link(upstream, entry.fall_back_on_error))
    return Chain(links)
