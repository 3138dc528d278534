"""The GOPROXY endpoints: parse the path, ask the service, answer through the shared helpers."""

from __future__ import annotations

from aiohttp import web

from entrepot.config import GoCache
from entrepot.gomod.paths import parse_path
from entrepot.gomod.policy import Kind, cache_control
from entrepot.gomod.service import Answer, GoService
from entrepot.web.responses import TEXT, BlobFileResponse, blob_headers, etag_matches, header_safe

CONTENT_TYPES: dict[Kind, str] = {
    Kind.LIST: TEXT,
    Kind.INFO: "application/json",
    Kind.QUERY: "application/json",
    Kind.LATEST: "application/json",
    Kind.MOD: TEXT,
    Kind.ZIP: "application/zip",
}


class GoHandlers:
    def __init__(self, service: GoService, cache: GoCache) -> None:
        self.service = service
        self.cache = cache

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        req = parse_path(request.path)
        request["endpoint"] = req.endpoint
        request["module"] = req.module
        request["version"] = req.version
        service = self.service
        if req.endpoint == "list":
            answer = await service.list(req.module)
        elif req.endpoint == "latest":
            answer = await service.latest(req.module)
        elif req.endpoint == "info":
            answer = await service.info(req.module, req.version)
        elif req.endpoint == "mod":
            answer = await service.mod(req.module, req.version)
        else:
            answer = await service.zip(req.module, req.version)
        request["cache"] = answer.cache
        if answer.unverified:
            request["sumdb"] = "unverified"
        return self.respond(request, answer)

    def respond(self, request: web.BaseRequest, answer: Answer) -> web.StreamResponse:
        headers = blob_headers(
            answer.blob,
            content_type=CONTENT_TYPES[answer.kind],
            cache_control=cache_control(answer.kind, self.cache),
        )
        headers["X-Entrepot-Cache"] = answer.cache
        if answer.unverified:
            headers["X-Entrepot-Sumdb"] = "unverified"
        if answer.stale_reason is not None:
            headers["Warning"] = '110 - "Response is Stale"'
            headers["X-Entrepot-Stale-Reason"] = header_safe(answer.stale_reason)
        if answer.body is not None and "Range" not in request.headers:
            if etag_matches(request.headers.get("If-None-Match"), answer.blob.etag):
                return web.Response(status=304, headers=headers)
            return web.Response(body=answer.body, headers=headers)
        if answer.blob.path is None:  # pragma: no cover - only object storage lacks paths
            raise RuntimeError("streaming from non-file storage is not implemented")
        return BlobFileResponse(answer.blob.path, size=answer.blob.size, headers=headers)
