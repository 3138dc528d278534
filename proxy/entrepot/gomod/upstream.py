"""Upstreams: where the mirror gets what it does not have, and the GOPROXY-style chain.

An upstream answers the five questions of the proxy protocol. Three kinds exist:
``ProxyUpstream`` (another GOPROXY over http(s)), ``FileUpstream`` (a ``file://`` directory in
proxy layout, as the go command accepts) and ``DirectUpstream`` (version control through the
go command, in :mod:`entrepot.gomod.direct`); ``OffUpstream`` refuses. A :class:`Chain` walks
them with Go's rules: after an entry followed by ``,`` only 404/410 fall through, after ``|``
any error does.

Every upstream raises only :mod:`entrepot.errors` exceptions.

A ``ProxyUpstream`` fetch is bounded three ways: httpx's connect/read timeout per socket
operation, a total deadline per operation (headers included), and a minimum transfer rate
over a sliding window. Without the last two, an upstream dripping one byte every few seconds
held a fetch, every client waiting on it and the cross-worker lock for minutes.

Credentials are chosen per request hop, from that hop's own URL, never carried along a
redirect: userinfo written in the upstream URL goes only to that URL's origin, a bearer token
and a netrc ``machine`` entry only to their host.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import httpx

from entrepot.config import ProxyEntry
from entrepot.errors import (
    ConfigError,
    EntrepotError,
    GoneError,
    NotFoundError,
    TooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
    VerificationError,
    redact,
)
from entrepot.gomod.module import escape_path, escape_version

T = TypeVar("T")
MAX_SMALL_BYTES = 16 << 20  # .info, .mod, list: the Go limit for go.mod is 16 MiB
MAX_REDIRECTS = 10
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
Origin = tuple[str, str, int]  # scheme, host, port


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


def parse_netrc(text: str) -> dict[str, tuple[str, str]]:
    """``machine`` → ``(login, password)``, read as the go command reads a netrc file.

    Go's rules (cmd/go/internal/auth/netrc.go): keywords and their values come in pairs on
    a line, only entries with a machine, a login and a password count, the first entry for a
    machine wins, ``macdef`` bodies are skipped up to the next empty line, and ``default``
    is never used. We stop reading at ``default``, as the netrc format says it comes last.
    Python's netrc module, behind httpx.NetRCAuth, answers any unknown host with the
    ``default`` entry: a redirect to another host received the deploy password.
    Lines starting with ``#`` are comments, as in curl and Python.
    """
    found: dict[str, tuple[str, str]] = {}
    machine = login = password = ""
    in_macro = False
    for line in text.split("\n"):
        if in_macro:
            in_macro = line.strip() != ""
            continue
        words = line.split()
        if words and words[0].startswith("#"):
            continue
        i = 0
        while i < len(words) - 1:
            key, value = words[i], words[i + 1]
            if key == "default":
                return found
            if key == "machine":
                machine, login, password = value.lower(), "", ""
            elif key == "login":
                login = value
            elif key == "password":
                password = value
            elif key == "macdef":
                in_macro = True
            if machine and login and password:
                found.setdefault(machine, (login, password))
                machine = login = password = ""
            i += 2
        if i < len(words) and words[i] == "default":
            return found
    return found


def read_netrc(path: Path) -> dict[str, tuple[str, str]]:
    """The ``machine`` entries of ``go.credentials.netrc_file`` (see :func:`parse_netrc`)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise ConfigError(f"go.credentials.netrc_file: cannot read {path}: {e.strerror}") from e
    return parse_netrc(text)


class _RedactingFilter(logging.Filter):
    """Rewrites a record whose text holds credentials (URL userinfo, auth headers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def quiet_http_loggers() -> None:
    """Keep credentials and per-request noise out of the server's log; call after basicConfig.

    httpx logs every upstream request URL at INFO ("HTTP Request: GET http://user:pass@..."),
    httpcore every socket step at DEBUG: both are raised to WARNING. Every handler of the
    root logger also gets a filter that redacts userinfo and auth headers from any record,
    for messages we did not write ourselves.
    """
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _RedactingFilter) for f in handler.filters):
            handler.addFilter(_RedactingFilter())


def _origin(parts: SplitResult) -> Origin:
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80)


def _basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii")


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    return await anext(chunks, None)


class RateMeter:
    """Bytes received over a sliding window, to tell a dripping transfer from a slow start.

    Samples are kept at most ``window / 16`` apart (the newest one moves forward), so the
    count over the window can only be overestimated, by what arrived in one such step: a
    transfer is never aborted for being slow when it was not.
    """

    def __init__(self, *, window: float, start: float) -> None:
        self.window = window
        self.start = start
        self.total = 0
        self._samples: deque[tuple[float, int]] = deque([(start, 0)])

    def add(self, size: int, now: float) -> None:
        self.total += size
        samples = self._samples
        if len(samples) >= 2 and now - samples[-2][0] < self.window / 16:
            samples[-1] = (now, self.total)
        else:
            samples.append((now, self.total))

    def recent(self, now: float) -> int | None:
        """Bytes received in the last window, or None before one whole window has passed."""
        if now - self.start < self.window:
            return None
        cutoff = now - self.window
        samples = self._samples
        while len(samples) >= 2 and samples[1][0] <= cutoff:
            samples.popleft()
        return self.total - samples[0][1]


class ProxyUpstream:
    """Another module proxy over HTTP(S).

    ``small_deadline`` bounds a whole list/.info/.mod/@latest fetch, ``zip_deadline`` a
    whole zip download, redirects and the wait for headers included (0: no limit). A body
    averaging under ``min_rate`` bytes/s over the last ``rate_window`` seconds, once it has
    run that long, is aborted (``min_rate`` 0: no check). Each limit raises
    UpstreamTimeoutError (504), which a ``|`` in the chain falls through.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient,
        tokens: Mapping[str, str] | None = None,
        netrc: Mapping[str, tuple[str, str]] | None = None,
        small_deadline: float = 60.0,
        zip_deadline: float = 600.0,
        min_rate: int = 1024,
        rate_window: float = 30.0,
    ) -> None:
        parts = urlsplit(base_url)
        # Userinfo is taken out of the URL: it becomes a credential for this origin only, and
        # no request URL (hence no log line or error message) carries it.
        self._userinfo: tuple[str, str] | None = None
        if "@" in parts.netloc:
            self._userinfo = (unquote(parts.username or ""), unquote(parts.password or ""))
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        self.base_url = parts.geturl().rstrip("/") + "/"
        self.name = parts.hostname or self.base_url
        self._origin = _origin(parts)
        self._client = client
        self._tokens = {host.lower(): token for host, token in (tokens or {}).items()}
        self._netrc = {machine.lower(): entry for machine, entry in (netrc or {}).items()}
        self._small_deadline = small_deadline
        self._zip_deadline = zip_deadline
        self._min_rate = min_rate
        self._rate_window = rate_window

    async def list(self, module: str) -> bytes:
        return await self._get_small(_rel(module, "@v/list"), module)

    async def info(self, module: str, query: str) -> bytes:
        return await self._get_small(_versioned(module, query, "info"), f"{module}@{query}")

    async def latest(self, module: str) -> bytes:
        return await self._get_small(_rel(module, "@latest"), f"{module}@latest")

    async def mod(self, module: str, version: str) -> bytes:
        return await self._get_small(_versioned(module, version, "mod"), f"{module}@{version}")

    async def get(self, rel: str, what: str) -> bytes:
        """A small answer below the base URL (a checksum database's lookup, tile, latest)."""
        return await self._get_small(rel, what)

    async def zip(self, module: str, version: str, dest: Path, *, max_bytes: int) -> None:
        what = f"{module}@{version}"
        async with (
            self._deadline(what, self._zip_deadline, "go.zip_deadline"),
            self._open(_versioned(module, version, "zip"), what) as response,
        ):
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
                    async for chunk in self._body(response, what):
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
        async with (
            self._deadline(what, self._small_deadline, "go.upstream_timeout"),
            self._open(rel, what) as response,
        ):
            body = bytearray()
            try:
                async for chunk in self._body(response, what):
                    body += chunk
                    if len(body) > MAX_SMALL_BYTES:
                        raise TooLargeError(f"{self.name}: answer for {what} is over 16 MiB")
            except httpx.TimeoutException as e:
                raise UpstreamTimeoutError(f"{self.name}: timed out reading {what}") from e
            except httpx.HTTPError as e:
                raise UpstreamError(f"{self.name}: reading {what} failed: {e}") from e
            return bytes(body)

    @contextlib.asynccontextmanager
    async def _deadline(self, what: str, seconds: float, setting: str) -> AsyncIterator[None]:
        """The total time limit of one operation: connect, redirects, headers and body."""
        try:
            async with asyncio.timeout(seconds if seconds > 0 else None):
                yield
        except TimeoutError as e:
            raise UpstreamTimeoutError(
                f"{what}: upstream {self.name} did not finish within {seconds:g}s ({setting})"
            ) from e

    async def _body(self, response: httpx.Response, what: str) -> AsyncIterator[bytes]:
        """The response body, aborted when it arrives slower than the minimum rate.

        Pieces come as they arrive, never re-chunked: a 64 KiB chunker would hide a drip
        until 64 KiB had come. Each read runs as its own task so that the rate is checked
        while no byte arrives too; cancelling a read in place would close the stream.
        """
        chunks = response.aiter_bytes()
        if self._min_rate <= 0 or self._rate_window <= 0:
            async for piece in chunks:
                yield piece
            return
        loop = asyncio.get_running_loop()
        meter = RateMeter(window=self._rate_window, start=loop.time())
        poll = min(1.0, self._rate_window / 8)
        while True:
            read = asyncio.create_task(_next(chunks))
            try:
                while not read.done():
                    await asyncio.wait({read}, timeout=poll)
                    if not read.done():
                        self._check_rate(meter, loop.time(), what)
            except BaseException:
                read.cancel()
                await asyncio.wait({read})
                raise
            chunk = read.result()
            if chunk is None:
                return
            meter.add(len(chunk), loop.time())
            self._check_rate(meter, loop.time(), what)
            yield chunk

    def _check_rate(self, meter: RateMeter, now: float, what: str) -> None:
        recent = meter.recent(now)
        if recent is not None and recent < self._min_rate * self._rate_window:
            raise UpstreamTimeoutError(
                f"{what}: upstream {self.name} sent {recent} bytes in the last"
                f" {self._rate_window:g}s, below the minimum {self._min_rate} B/s"
                " (go.min_transfer_rate)"
            )

    @contextlib.asynccontextmanager
    async def _open(self, rel: str, what: str) -> AsyncIterator[httpx.Response]:
        """GET with redirects followed by hand: at most 10, and never from https to http."""
        url = urljoin(self.base_url, rel)
        for _ in range(MAX_REDIRECTS + 1):
            request = self._client.build_request("GET", url, headers=self._headers_for(url))
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
                        raise UpstreamError(
                            f"{self.name}: refused redirect from https to {urlsplit(target).scheme}"
                        )
                    url = target
                    continue
                await self._raise_for_status(response, what)
                self._refuse_html(response, what)
                yield response
                return
            finally:
                await response.aclose()
        raise UpstreamError(f"{self.name}: more than {MAX_REDIRECTS} redirects for {what}")

    def _headers_for(self, url: str) -> dict[str, str]:
        """The Authorization header for this hop, from this hop's URL alone.

        Userinfo of the configured URL goes only to its origin (scheme, host, port); a bearer
        token only to its host; a netrc entry only to its machine, as ``host:port`` or
        ``host``. A redirect to anywhere else gets no credential.
        """
        parts = urlsplit(url)
        if self._userinfo is not None and _origin(parts) == self._origin:
            return {"Authorization": _basic(*self._userinfo)}
        host = parts.hostname or ""
        token = self._tokens.get(host)
        if token:
            return {"Authorization": f"Bearer {token}"}
        hostport = parts.netloc.rpartition("@")[2].lower()
        entry = self._netrc.get(hostport) or self._netrc.get(host)
        return {"Authorization": _basic(*entry)} if entry else {}

    def _refuse_html(self, response: httpx.Response, what: str) -> None:
        """No proxy answer is HTML: a 200 page is a login page or a captive portal, and once
        stored it would be served as a go.mod (or list, .info, zip) forever."""
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media in HTML_TYPES:
            raise VerificationError(
                f"{what}: upstream {self.name} answered an HTML page (a login page or portal?),"
                " not module data; check the upstream URL and its credentials"
            )

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
