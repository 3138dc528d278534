"""The npm registry endpoints under the configured prefix: parse, ask the service, answer.

Errors are JSON, as npm clients expect: ``{"error": "...", "reason": "..."}``.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

from entrepot import __version__
from entrepot.errors import (
    EntrepotError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
)
from entrepot.metrics import CacheResult
from entrepot.npm.names import parse_path
from entrepot.npm.packument import Representation
from entrepot.npm.service import Document, NpmService
from entrepot.web.http import AnyResponse, FileResponse, Request, Response, render_fields
from entrepot.web.responses import (
    blob_headers,
    etag_matches,
    file_response,
    header_safe,
    http_date,
    status_for,
)

JSON = "application/json"
CORGI = "application/vnd.npm.install-v1+json"
IMMUTABLE = "public, max-age=31536000, immutable"
GET = frozenset({"GET", "HEAD"})
POST = frozenset({"POST"})
PASSED: dict[str, frozenset[str]] = {
    "-/v1/search": GET,
    "-/ping": GET,
    "-/npm/v1/keys": GET,
    "-/npm/v1/security/advisories/bulk": POST,
    "-/npm/v1/security/audits/quick": POST,
    "-/npm/v1/security/audits": POST,
}
"""Registry endpoints passed to the upstream (never cached), each with the methods it takes:
nothing else reaches the upstream with the mirror's credentials. Attestations
(``-/npm/v1/attestations/<name>@<version>``) are passed on too, GET only."""
ATTESTATIONS = "-/npm/v1/attestations/"
AUDITS = (
    "-/npm/v1/security/advisories/bulk",
    "-/npm/v1/security/audits/quick",
    "-/npm/v1/security/audits",
)
MAX_AUDIT_BYTES = 64 << 20


def json_error(error: Exception) -> Response:
    if isinstance(error, EntrepotError):
        message = error.message
    else:
        message = "internal error in the mirror; see its log"
    status = status_for(error)
    body = json.dumps({"error": message, "reason": message}).encode()
    headers = {"Content-Type": JSON, "Cache-Control": "no-store"}
    if isinstance(error, UnavailableError):
        headers["Retry-After"] = str(error.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="entrepot", charset="UTF-8"'
    return Response(status, body=body, headers=headers)


Coding = Literal["br", "gzip", "identity"]
_PREFERENCE: tuple[Coding, ...] = ("br", "gzip", "identity")
"""The order ties are broken in: the smallest body first."""
_UNNAMED_IDENTITY = 0.0001
"""identity's weight when the header neither names it nor has ``*``: taken, but after any
coding the client named (q-values have three decimals, so this is below every one)."""
_REPRESENTATIONS: dict[tuple[bool, Coding], Representation] = {
    (False, "br"): "full.br",
    (False, "gzip"): "full.gz",
    (False, "identity"): "full",
    (True, "br"): "abbreviated.br",
    (True, "gzip"): "abbreviated.gz",
    (True, "identity"): "abbreviated",
}
CONTENT_ENCODING: dict[Representation, str] = {
    "full.gz": "gzip",
    "full.br": "br",
    "abbreviated.gz": "gzip",
    "abbreviated.br": "br",
}


def codings(accept_encoding: str) -> tuple[Coding, ...]:
    """The codings a client takes a packument in, best first, from its ``Accept-Encoding``
    (RFC 9110, 12.5.3): the highest q wins, a tie goes to br, then gzip, then identity;
    ``q=0`` refuses a coding; ``*`` stands for each coding not named (identity included).
    Without the header, identity only (what clients that send none expect). identity ends
    the list even when refused: it is all there is left to send.

    npm and pnpm send ``gzip, deflate`` and stay on gzip; yarn Berry, browsers and curl
    (``--compressed``) also send ``br`` and get brotli."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = item.split(";")
        name = coding.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = math.nan
        if not 0.0 <= q <= 1.0:  # a malformed q: the item is ignored
            continue
        name = "gzip" if name == "x-gzip" else name
        weights[name] = max(weights.get(name, 0.0), q)
    if not weights:
        return ("identity",)
    star = weights.get("*")

    def weight(coding: Coding) -> float:
        if coding in weights:
            return weights[coding]
        if star is not None:
            return star
        return _UNNAMED_IDENTITY if coding == "identity" else 0.0

    # sorted() is stable: equal weights keep _PREFERENCE's order.
    taken = sorted((c for c in _PREFERENCE if weight(c) > 0), key=weight, reverse=True)
    if "identity" not in taken:
        taken.append("identity")
    return tuple(taken)


@functools.lru_cache(maxsize=256)
def representations(accept: str, accept_encoding: str) -> tuple[Representation, ...]:
    """The packument representations a client takes, best first (see :func:`codings`):
    abbreviated when ``Accept`` names it, else full. Cached: clients send a handful of
    distinct headers, and this runs on every packument request (304s included)."""
    abbreviated = CORGI in accept
    return tuple(_REPRESENTATIONS[abbreviated, c] for c in codings(accept_encoding))


def representation(accept: str, accept_encoding: str) -> Representation:
    """The representation a client is sent (the first of :func:`representations`)."""
    return representations(accept, accept_encoding)[0]


def _not_modified_since(request: Request, modified: float) -> bool:
    header = request.headers.get("if-modified-since")
    if header is None or "if-none-match" in request.headers:
        return False
    try:
        when = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(modified) <= when


class Endpoints(Protocol):
    """A part of the private registry's API (users and tokens; package writes and listings):
    ``endpoint`` answers the ``/-/...`` paths it owns (``rel`` without the leading "/"), None
    for the others; ``write`` answers PUT/DELETE on package paths."""

    async def endpoint(self, request: Request, rel: str) -> AnyResponse | None: ...

    async def write(self, request: Request, rel: str) -> AnyResponse | None: ...


class NpmHandlers:
    MAX_FIELDS = 4096

    def __init__(
        self, service: NpmService, *, prefix: str, registry: Sequence[Endpoints] = ()
    ) -> None:
        self.service = service
        self.prefix = prefix
        self.registry = tuple(registry)
        self.ttl = int(service.cache.packument_ttl)
        self._fields: dict[tuple[object, ...], bytes] = {}

    async def handle(self, request: Request) -> AnyResponse:
        try:
            return await self._handle(request)
        except EntrepotError as e:
            return json_error(e)

    async def _handle(self, request: Request) -> AnyResponse:
        rel = request.path[len(self.prefix) - 1 :]  # keeps the leading "/"
        if rel.startswith("/-/"):
            request.endpoint = "npm_api"
            for part in self.registry:
                answer = await part.endpoint(request, rel[1:])
                if answer is not None:
                    return answer
            return await self._registry_endpoint(request, rel[1:])
        if rel == "/":
            request.endpoint = "npm_api"
            for part in self.registry:
                answer = await part.endpoint(request, "")
                if answer is not None:
                    return answer
            return self._root(request)
        if request.method not in ("GET", "HEAD"):
            request.endpoint = "packument"
            for part in self.registry:
                written = await part.write(request, rel)
                if written is not None:
                    return written
            return Response(
                405,
                body=json.dumps(
                    {
                        "error": f"{request.method} is not served by this mirror: it serves"
                        " packages read-only (publishing is not enabled)"
                    }
                ).encode(),
                headers={"Content-Type": JSON, "Allow": "GET, HEAD"},
            )
        req = parse_path(rel)
        request.module = req.name
        if req.kind == "tarball":
            request.endpoint = "tarball"
            request.version = req.version
            tarball = await self.service.tarball(req.name, req.version)
            request.cache = tarball.cache
            headers = blob_headers(
                tarball.blob, content_type="application/octet-stream", cache_control=IMMUTABLE
            )
            headers["X-Entrepot-Cache"] = tarball.cache
            return file_response(tarball.blob, headers)
        if req.kind == "version":
            request.endpoint = "manifest"
            ref = req.version or req.tag
            body, _, cache = await self.service.manifest(req.name, ref)
            request.cache = cache
            request.version = ref
            return Response(
                body=body,
                headers={
                    "Content-Type": JSON,
                    "Cache-Control": f"public, max-age={self.ttl}",
                    "X-Entrepot-Cache": cache,
                },
            )
        request.endpoint = "packument"
        write = "write=true" in request.query
        wanted = representations(
            request.headers.get("accept", ""), request.headers.get("accept-encoding", "")
        )
        doc = await self.service.document(req.name, wanted[0], write=write, fallback=wanted[1:])
        request.cache = "bypass" if write else doc.cache
        return self.respond(request, doc, doc.rep, bypass=write)

    def respond(
        self, request: Request, doc: Document, rep: Representation, *, bypass: bool = False
    ) -> AnyResponse:
        cache: CacheResult = "bypass" if bypass else doc.cache
        key = (doc.blob.key, doc.blob.mtime_ns, rep, cache, doc.stale_reason)
        fields = self._fields.get(key)
        if fields is None:
            if len(self._fields) >= self.MAX_FIELDS:
                del self._fields[next(iter(self._fields))]
            fields = self._fields[key] = render_fields(self.headers(doc, rep, cache))
        # Answered from the index's ETags, before any file is opened (a 304 of a 14 MB
        # document costs what one of a 4 kB document does); any encoding's ETag matches.
        inm = request.headers.get("if-none-match")
        if inm is not None and any(etag_matches(inm, etag) for etag in doc.etags):
            return Response(304, fields=fields)
        if _not_modified_since(request, doc.blob.mtime_ns / 1e9):
            return Response(304, fields=fields)
        if doc.body is None:
            blob = doc.blob
            if blob.path is None:  # pragma: no cover - only object storage lacks paths
                raise RuntimeError("streaming from non-file storage is not implemented")
            return FileResponse(
                blob.path,
                size=blob.size,
                etag=doc.etag,
                mtime=blob.mtime_ns / 1e9,
                headers=self.headers(doc, rep, cache),
            )
        return Response(body=doc.body, fields=fields)

    def headers(self, doc: Document, rep: Representation, cache: CacheResult) -> dict[str, str]:
        headers = {
            "Content-Type": CORGI if rep.startswith("abbreviated") else JSON,
            "Cache-Control": "no-store" if cache == "bypass" else f"public, max-age={self.ttl}",
            "ETag": doc.etag,
            "Last-Modified": http_date(doc.blob.mtime_ns),
            "Vary": "Accept, Accept-Encoding",
            "X-Entrepot-Cache": cache,
        }
        encoding = CONTENT_ENCODING.get(rep)
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        if doc.stale_reason is not None:
            headers["Warning"] = '110 - "Response is Stale"'
            headers["X-Entrepot-Stale-Reason"] = header_safe(doc.stale_reason)
        return headers

    def _root(self, request: Request) -> Response:
        body = json.dumps(
            {
                "db_name": "registry",
                "engine": f"entrepot/{__version__}",
                "doc": "an npm registry mirror; set it with `npm config set registry <this URL>`",
            }
        ).encode()
        return Response(body=body, headers={"Content-Type": JSON, "Cache-Control": "no-store"})

    async def _registry_endpoint(self, request: Request, rel: str) -> Response:
        methods = PASSED.get(rel)
        if methods is None and rel.startswith(ATTESTATIONS):
            spec = rel[len(ATTESTATIONS) :]
            name, _, version = spec.rpartition("@")
            parse_path(f"/{name}/{version}")  # a valid name and version, nothing else
            methods = GET
        if methods is None:
            raise NotFoundError(f"/{rel} is not served by this mirror")
        if request.method not in methods:
            return Response(
                405,
                body=json.dumps({"error": f"{request.method} /{rel} is not served"}).encode(),
                headers={"Content-Type": JSON, "Allow": ", ".join(sorted(methods))},
            )
        body = request.body
        if rel in AUDITS and self.service.policy.private:
            body = without_private(body, request.headers, self.service.is_private)
        upstream = self.service.upstream_or_raise()
        headers_in = dict(request.headers)
        if body is not request.body:
            headers_in.pop("content-encoding", None)
        passed = await upstream.passthrough(request.method, rel, request.query, headers_in, body)
        # One spelling per name: the upstream's lower-case names beside ours would send two
        # Content-Type fields (clients join them: "application/json, application/json").
        headers = {k.title(): v for k, v in passed.headers.items()}
        headers.setdefault("Content-Type", JSON)
        headers["Cache-Control"] = "no-store"
        return Response(passed.status, body=passed.body, headers=headers)


def without_private(
    body: bytes, headers: Mapping[str, str], private: Callable[[str], bool]
) -> bytes:
    """An audit request (bulk: ``{name: [versions]}``; quick: a tree of ``requires`` and
    ``dependencies``) without the packages of private scopes: their names never reach the
    upstream. Returned plain (not gzip); a body that is not such JSON is refused (400)."""
    data = body
    if headers.get("content-encoding", "").strip().lower() == "gzip":
        try:
            reader = zlib.decompressobj(wbits=31)
            data = reader.decompress(body, MAX_AUDIT_BYTES)
            if reader.unconsumed_tail:
                raise InvalidRequestError(f"audit request over {MAX_AUDIT_BYTES >> 20} MiB")
        except zlib.error as e:
            raise InvalidRequestError(f"audit request: not gzip: {e}") from None
    try:
        doc = json.loads(data)
    except ValueError:
        raise InvalidRequestError("audit request: not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidRequestError("audit request: not a JSON object")
    return json.dumps(_drop_private(doc, private, top=True)).encode()


def _drop_private(
    doc: dict[str, Any], private: Callable[[str], bool], *, top: bool
) -> dict[str, Any]:
    if top and not ({"requires", "dependencies"} & doc.keys()):  # bulk: names at the top
        return {k: v for k, v in doc.items() if not private(k)}
    out = dict(doc)
    for field in ("requires", "dependencies"):
        value = doc.get(field)
        if isinstance(value, dict):
            out[field] = {
                k: (_drop_private(v, private, top=False) if isinstance(v, dict) else v)
                for k, v in value.items()
                if not private(k)
            }
    return out
