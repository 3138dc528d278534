"""The /sumdb/<name>/ endpoints: strict path parsing, then the service, then one response shape.

``<name>`` may hold slashes (``db.example.com/sub``): the longest configured name that
prefixes the path wins, and any other name is a 404, the go command's cue to go elsewhere.
"""

from __future__ import annotations

from aiohttp import web

from entrepot.errors import InvalidRequestError, NotFoundError
from entrepot.gomod.module import (
    canonical_version,
    check_path,
    unescape_path,
    unescape_version,
)
from entrepot.sumdb import tlog
from entrepot.sumdb.service import TEXT, Served, SumdbService
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


class SumdbHandlers:
    def __init__(self, service: SumdbService, *, latest_ttl: float) -> None:
        self.service = service
        self.latest_ttl = latest_ttl
        # Longest name first, so 'db.example.com/sub' wins over 'db.example.com'.
        self.names = sorted(service.databases, key=len, reverse=True)

    def split(self, path: str) -> tuple[str, str]:
        tail = path[len(PREFIX) :]
        for name in self.names:
            if tail.startswith(name + "/"):
                return name, tail[len(name) + 1 :]
        raise NotFoundError(
            f"{tail.split('/', 1)[0] or 'this'}: not a checksum database this mirror serves;"
            " the go command will ask the next GOPROXY entry or the database itself"
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        request["endpoint"] = "sumdb"
        name, rest = self.split(request.path)
        service = self.service
        if rest == "supported":
            return web.Response(body=b"", headers={"Content-Type": TEXT})
        if rest == "latest":
            served = await service.latest(name)
        elif rest.startswith("lookup/"):
            module, version = parse_lookup(rest[len("lookup/") :])
            request["module"], request["version"] = module, version
            served = await service.lookup(name, module, version)
        elif rest.startswith("tile/"):
            served = await service.tile(name, tlog.parse_tile_path(rest))
        else:
            raise NotFoundError(
                f"{rest!r}: a checksum database serves supported, latest, lookup/ and tile/"
            )
        request["cache"] = served.cache
        return self.respond(request, served)

    def respond(self, request: web.BaseRequest, served: Served) -> web.Response:
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
            elif etag_matches(request.headers.get("If-None-Match"), served.blob.etag):
                headers["X-Entrepot-Cache"] = served.cache
                return web.Response(status=304, headers=headers)
        else:
            headers = {"Content-Type": served.content_type, "Cache-Control": control}
        headers["X-Entrepot-Cache"] = served.cache
        return web.Response(body=served.body, headers=headers)
