"""The upstream npm registry over HTTP: packuments (conditional), tarballs (raw, verified
while streaming into a staged file) and the endpoints passed through unchanged.

The one impure edge of the npm mirror toward the network. Credentials (a bearer token, or
basic auth from an .npmrc) go to the upstream's origin only, never to a redirect elsewhere,
and never into a log line or an error message. Every operation has a total deadline, and a
body that drips (under ``min_rate`` bytes/s averaged once :data:`RATE_WINDOW` has passed)
is aborted: an upstream that lies or stalls costs a bounded time, never a stored byte.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from entrepot.errors import (
    GoneError,
    NotFoundError,
    UpstreamError,
    UpstreamTimeoutError,
    VerificationError,
)
from entrepot.npm import names
from entrepot.npm.integrity import IntegrityError, TarballTooLargeError, Verifier

MAX_REDIRECTS = 5
MAX_PASSED_BYTES = 32 << 20
"""The largest passed-through answer (a search page, an audit report) held in memory."""
RATE_WINDOW = 30.0
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
PASS_HEADERS = ("content-type", "content-encoding", "cache-control", "etag", "last-modified")
"""Response headers a passed-through answer keeps (hop-by-hop and length are the core's)."""


@dataclass(frozen=True)
class Packument:
    """An upstream packument: its bytes (decoded; or the spill file that holds them, for one
    over the caller's in-memory limit), and the validators to ask with next time."""

    body: bytes | Path
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True)
class Passed:
    status: int
    headers: dict[str, str]
    body: bytes


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def read_npmrc_auth(text: str, registry: str) -> str | None:
    """The Authorization header an .npmrc gives ``registry``: the ``//host/path/:_authToken``
    (bearer) or ``:_auth`` (basic, base64 user:password) line whose path is the longest prefix
    of the registry's; ``${VAR}`` expansion is not done (the file is a mounted Secret)."""
    parts = urlsplit(registry)
    target = f"//{parts.netloc}{parts.path or '/'}"
    best: tuple[int, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("//") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip().strip('"')
        where, _, setting = key.rpartition(":")
        if not target.startswith(where if where.endswith("/") else where + "/"):
            continue
        if setting == "_authToken":
            header = f"Bearer {value}"
        elif setting == "_auth":
            header = f"Basic {value}"
        else:
            continue
        if best is None or len(where) > best[0]:
            best = (len(where), header)
    return None if best is None else best[1]


class NpmUpstream:
    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient,
        authorization: str | None = None,
        small_deadline: float = 60.0,
        tarball_deadline: float = 600.0,
        min_rate: int = 1024,
    ) -> None:
        parts = urlsplit(base_url)
        self._authorization = authorization
        if "@" in parts.netloc:  # user:password in the URL: basic auth for this origin only
            user, _, password = parts.netloc.rpartition("@")[0].partition(":")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._authorization = self._authorization or f"Basic {token}"
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        self.base_url = parts.geturl().rstrip("/") + "/"
        self.name = parts.hostname or self.base_url
        self._origin = _origin(self.base_url)
        self._client = client
        self._small_deadline = small_deadline
        self._tarball_deadline = tarball_deadline
        self._min_rate = min_rate

    # -- operations ---------------------------------------------------------------------------

    async def packument(
        self,
        name: str,
        *,
        etag: str | None,
        max_bytes: int,
        spill: Path | None = None,
        memory_bytes: int = 0,
    ) -> Packument | None:
        """The full packument, or None when ``etag`` still holds (304). A body over
        ``memory_bytes`` goes on into the file ``spill`` (its :attr:`Packument.body`), so that
        a 20 MB packument is never held whole by the worker.

        Raises:
            NotFoundError: the upstream has no such package (404).
            VerificationError: an HTML page instead of JSON.
            TooLargeError / UpstreamError / UpstreamTimeoutError.
        """
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if etag:
            headers["If-None-Match"] = etag
        url = self.base_url + names.url_path(name)[1:]  # base_url ends in '/'
        what = f"packument of {name}"
        async with (
            self._deadline(what, self._small_deadline, "npm.upstream_timeout"),
            self._open(url, what, headers, not_modified=True) as response,
        ):
            if response.status_code == 304:
                return None
            body = bytearray()
            size = 0
            with contextlib.ExitStack() as files:
                out = None
                try:
                    async for chunk in self._body(response.aiter_bytes(), what):
                        size += len(chunk)
                        if size > max_bytes:
                            from entrepot.npm.packument import PackumentTooLargeError

                            raise PackumentTooLargeError(
                                f"{what}: the upstream's packument is over"
                                f" npm.max_packument_bytes ({max_bytes} bytes)"
                            )
                        if out is not None:
                            out.write(chunk)
                        elif spill is not None and size > memory_bytes:
                            out = files.enter_context(open(spill, "wb"))  # noqa: ASYNC230
                            out.write(body)
                            out.write(chunk)
                            body = bytearray()
                        else:
                            body += chunk
                except httpx.TimeoutException as e:
                    raise UpstreamTimeoutError(f"{self.name}: timed out reading {what}") from e
                except httpx.HTTPError as e:
                    raise UpstreamError(f"{self.name}: reading {what} failed: {e}") from e
            return Packument(
                bytes(body) if out is None else spill,  # type: ignore[arg-type]
                response.headers.get("etag"),
                response.headers.get("last-modified"),
            )

    def tarball_source(self, name: str, version: str, dist_tarball: str) -> str:
        """Where a tarball is fetched from: the packument's ``dist.tarball`` when it is on the
        upstream's origin, else the conventional URL under the upstream (a packument naming
        another host must not make the mirror fetch from, or send credentials to, it)."""
        if dist_tarball.startswith(("http://", "https://")) and (
            _origin(dist_tarball) == self._origin
        ):
            return dist_tarball
        return names.tarball_url(self.base_url, name, version)

    async def tarball(
        self, url: str, what: str, dest: Path, verifier: Verifier, max_bytes: int
    ) -> None:
        """Stream the tarball's raw bytes into ``dest`` through ``verifier`` (digest and size
        checked as the bytes come; :meth:`Verifier.finish` at the end). Nothing is decoded:
        the digest is of the bytes the registry stores."""
        headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
        async with (
            self._deadline(what, self._tarball_deadline, "npm.tarball_deadline"),
            self._open(url, what, headers) as response,
        ):
            declared = response.headers.get("content-length", "")
            if declared.isdigit():
                if int(declared) > max_bytes:
                    raise TarballTooLargeError(
                        f"{what}: the upstream announces {declared} bytes, over this mirror's"
                        f" limit of {max_bytes} (npm.max_tarball_bytes); refused",
                        limit=max_bytes,
                    )
                verifier.expected_length = int(declared)
            try:
                with open(dest, "wb") as out:  # noqa: ASYNC230 - page-cache writes
                    async for chunk in self._body(response.aiter_raw(), what):
                        verifier.update(chunk)
                        out.write(chunk)
            except httpx.TimeoutException as e:
                raise UpstreamTimeoutError(f"{self.name}: timed out reading {what}") from e
            except httpx.HTTPError as e:
                if (
                    verifier.expected_length is not None
                    and verifier.size < verifier.expected_length
                ):
                    # The connection closed before the announced length: a truncated tarball
                    # (refused and counted as such), not a mere transport error.
                    try:
                        verifier.finish()
                    except IntegrityError as cut:
                        raise cut from e
                raise UpstreamError(f"{self.name}: reading {what} failed: {e}") from e
        verifier.finish()

    async def passthrough(
        self, method: str, rel: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> Passed:
        """Forward a registry endpoint (search, audit, keys, attestations, ping) as it came;
        the answer comes back as the upstream gave it (status, body, content headers)."""
        url = self.base_url + rel.lstrip("/") + (f"?{query}" if query else "")
        sent = {k: v for k, v in headers.items() if k in ("accept", "content-type")}
        if "content-encoding" in headers:
            sent["content-encoding"] = headers["content-encoding"]
        if self._authorization:
            sent["authorization"] = self._authorization
        what = f"{method} /{rel.lstrip('/')}"
        try:
            async with asyncio.timeout(self._small_deadline):
                request = self._client.build_request(method, url, headers=sent, content=body)
                response = await self._client.send(request, stream=True)
                try:
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_PASSED_BYTES:
                            raise UpstreamError(
                                f"{what}: upstream {self.name} answered more than"
                                f" {MAX_PASSED_BYTES >> 20} MiB; not passed on"
                            )
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException) as e:
            raise UpstreamTimeoutError(f"{what}: upstream {self.name} did not answer") from e
        except httpx.HTTPError as e:
            raise UpstreamError(f"{what}: cannot reach upstream {self.name}: {e}") from e
        kept = {k: v for k, v in response.headers.items() if k.lower() in PASS_HEADERS}
        kept.pop("content-encoding", None)  # httpx decoded the body
        return Passed(response.status_code, kept, bytes(data))

    # -- plumbing -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _deadline(self, what: str, seconds: float, setting: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(seconds if seconds > 0 else None):
                yield
        except TimeoutError as e:
            raise UpstreamTimeoutError(
                f"{what}: upstream {self.name} did not finish within {seconds:g}s ({setting})"
            ) from e

    async def _body(self, chunks: AsyncIterator[bytes], what: str) -> AsyncIterator[bytes]:
        """The body as it arrives, aborted when it averages under the minimum rate once
        :data:`RATE_WINDOW` seconds have passed (a byte every 3 s is not a transfer)."""
        start = time.monotonic()
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            elapsed = time.monotonic() - start
            if self._min_rate and elapsed > RATE_WINDOW and received < self._min_rate * elapsed:
                raise UpstreamTimeoutError(
                    f"{what}: upstream {self.name} sent {received} bytes in {elapsed:.0f}s,"
                    f" below the minimum {self._min_rate} B/s (npm.min_transfer_rate)"
                )
            yield chunk

    def _auth_for(self, url: str) -> dict[str, str]:
        if self._authorization and _origin(url) == self._origin:
            return {"Authorization": self._authorization}
        return {}

    @contextlib.asynccontextmanager
    async def _open(
        self, url: str, what: str, headers: Mapping[str, str], *, not_modified: bool = False
    ) -> AsyncIterator[httpx.Response]:
        """GET with redirects followed by hand (at most 5, never https → http), the status
        and the media type checked."""
        for _ in range(MAX_REDIRECTS + 1):
            request = self._client.build_request(
                "GET", url, headers={**headers, **self._auth_for(url)}
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TimeoutException as e:
                raise UpstreamTimeoutError(f"{self.name}: timed out fetching {what}") from e
            except httpx.HTTPError as e:
                raise UpstreamError(f"{self.name}: cannot fetch {what}: {e}") from e
            try:
                if response.is_redirect and "location" in response.headers:
                    target = urljoin(url, response.headers["location"])
                    if url.startswith("https:") and not target.startswith("https:"):
                        raise UpstreamError(f"{self.name}: refused redirect from https to http")
                    url = target
                    continue
                if not (response.status_code == 304 and not_modified):
                    await self._check(response, what)
                yield response
                return
            finally:
                await response.aclose()
        raise UpstreamError(f"{self.name}: more than {MAX_REDIRECTS} redirects for {what}")

    async def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status == 200:
            media = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if media in HTML_TYPES:
                raise VerificationError(
                    f"{what}: upstream {self.name} answered an HTML page (a login page or"
                    " portal?), not registry data; check npm.upstream and its credentials"
                )
            return
        text = ""
        with contextlib.suppress(httpx.HTTPError):
            raw = (await response.aread())[:2048].decode("utf-8", "replace")
            text = " ".join(raw.split())[:200]
        detail = f": {text}" if text else ""
        if status in (404, 410) and "packument" in what:
            raise NotFoundError(f"{what}: not found at {self.name}")
        if status == 404:
            raise NotFoundError(f"{what}: not found at {self.name}{detail}")
        if status == 410:
            raise GoneError(f"{what}: {self.name} answered 410 Gone{detail}")
        if status in (401, 403):
            raise UpstreamError(
                f"{what}: upstream {self.name} refused the mirror ({status}); check npm.credentials"
            )
        raise UpstreamError(f"{what}: upstream {self.name} answered {status}{detail}")
