"""The GOPROXY endpoints: parse the path, ask the service, answer through the shared helpers."""

from __future__ import annotations

from entrepot.config import GoCache
from entrepot.gomod.paths import parse_path
from entrepot.gomod.policy import Kind, cache_control
from entrepot.gomod.service import Answer, GoService
from entrepot.web.http import AnyResponse, Request, Response
from entrepot.web.responses import TEXT, blob_headers, etag_matches, file_response, header_safe

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

    async def handle(self, request: Request) -> AnyResponse:
        req = parse_path(request.path)
        request.endpoint = req.endpoint
        request.module = req.module
        request.version = req.version
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
        request.cache = answer.cache
        if answer.unverified:
            request.note = "unverified"
        return self.respond(request, answer)

    def respond(self, request: Request, answer: Answer) -> AnyResponse:
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
        if answer.body is not None and "range" not in request.headers:
            if etag_matches(request.headers.get("if-none-match"), answer.blob.etag):
                return Response(304, headers=headers)
            return Response(body=answer.body, headers=headers)
        return file_response(answer.blob, headers)
