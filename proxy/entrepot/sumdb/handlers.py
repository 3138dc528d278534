"""The /sumdb/<name>/ endpoints: strict path parsing, then the service, then one response shape.

``<name>`` may hold slashes (``db.example.com/sub``): the longest configured name that
prefixes the path wins, and any other name is a 404, the go command's cue to go elsewhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from entrepot.errors import InvalidRequestError, NotFoundError
from entrepot.gomod.module import (
    canonical_version,
    check_path,
    unescape_path,
    unescape_version,
)
from entrepot.sumdb import tlog
from entrepot.sumdb.service import TEXT, Served, SumdbService
from entrepot.web.http import Request, Response
from entrepot.web.responses import blob_headers, etag_matches

PREFIX = "/sumdb/"
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"


def parse_lookup(rest: str) -> tuple[str, str]:
    """``<escaped module>@<escaped version>`` → (module, version), canonical versions only."""
    escaped_path, at, escaped_version = rest.partition("@")
    if not at or not escaped_path or not escaped_version:
        raise InvalidRequestError(f"invalid lookup {rest!r}: want <module>@<version>")
    module = unescape_path(escaped_path)
    check_path(module)
    version = unescape_version(escaped_version)
    if canonical_version(version) != version:
        raise InvalidRequestError(
            f"invalid lookup {rest!r}: the checksum database holds canonical versions only"
        )
    return module, version


@dataclass(frozen=True)
class SumdbRequest:
    """A parsed /sumdb/ path: which database, which endpoint, and the cache key it reads."""

    name: str
    endpoint: Literal["supported", "latest", "lookup", "tile"]
    module: str | None = None
    version: str | None = None
    tile: tlog.Tile | None = None


class SumdbHandlers:
    def __init__(self, service: SumdbService, *, latest_ttl: float) -> None:
        self.service = service
        self.latest_ttl = latest_ttl
        # Longest name first, so 'db.example.com/sub' wins over 'db.example.com'.
        self.names = sorted(service.databases, key=len, reverse=True)
        # Parsing (Go's path rules, unescaping) is pure: memoized, as for module paths. Only
        # valid paths are remembered (a bad one raises and is parsed again next time).
        self.parse = functools.lru_cache(maxsize=1 << 16)(self._parse)

    def split(self, path: str) -> tuple[str, str]:
        tail = path[len(PREFIX) :]
        for name in self.names:
            if tail.startswith(name + "/"):
                return name, tail[len(name) + 1 :]
        raise NotFoundError(
            f"{tail.split('/', 1)[0] or 'this'}: not a checksum database this mirror serves;"
            " the go command will ask the next GOPROXY entry or the database itself"
        )

    def _parse(self, path: str) -> SumdbRequest:
        name, rest = self.split(path)
        if rest == "supported":
            return SumdbRequest(name, "supported")
        if rest == "latest":
            return SumdbRequest(name, "latest")
        if rest.startswith("lookup/"):
            module, version = parse_lookup(rest[len("lookup/") :])
            return SumdbRequest(name, "lookup", module, version)
        if rest.startswith("tile/"):
            return SumdbRequest(name, "tile", tile=tlog.parse_tile_path(rest))
        raise NotFoundError(
            f"{rest!r}: a checksum database serves supported, latest, lookup/ and tile/"
        )

    async def handle(self, request: Request) -> Response:
        request.endpoint = "sumdb"
        req = self.parse(request.path)
        service = self.service
        if req.endpoint == "lookup":
            assert req.module is not None
            assert req.version is not None
            request.module, request.version = req.module, req.version
            served = await service.lookup(req.name, req.module, req.version)
        elif req.endpoint == "tile":
            assert req.tile is not None
            served = await service.tile(req.name, req.tile)
        elif req.endpoint == "latest":
            served = await service.latest(req.name)
        else:
            return Response(headers={"Content-Type": TEXT})
        request.cache = served.cache
        return self.respond(request, served)

    def respond(self, request: Request, served: Served) -> Response:
        if served.immutable:
            control = IMMUTABLE_CACHE_CONTROL
        else:
            control = f"public, max-age={int(self.latest_ttl)}"
        if served.blob is not None:
            headers = blob_headers(
                served.blob, content_type=served.content_type, cache_control=control
            )
            if served.blob.size != len(served.body):  # a partial tile cut from a full one
                headers.pop("ETag")
            elif etag_matches(request.headers.get("if-none-match"), served.blob.etag):
                headers["X-Entrepot-Cache"] = served.cache
                return Response(304, headers=headers)
        else:
            headers = {"Content-Type": served.content_type, "Cache-Control": control}
        headers["X-Entrepot-Cache"] = served.cache
        return Response(body=served.body, headers=headers)
