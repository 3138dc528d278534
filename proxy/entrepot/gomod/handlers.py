"""The GOPROXY endpoints: parse the path, ask the service, answer through the shared helpers."""

from __future__ import annotations

from entrepot.config import GoCache
from entrepot.gomod.paths import parse_path
from entrepot.gomod.policy import Kind, cache_control
from entrepot.gomod.service import Answer, GoService
from entrepot.web.http import AnyResponse, Request, Response, render_fields
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
    # Rendered headers of in-memory answers, by everything they depend on: a hit on a small
    # file costs a dict lookup, not a dict of headers rendered again.
    MAX_FIELDS = 4096

    def __init__(self, service: GoService, cache: GoCache) -> None:
        self.service = service
        self.cache = cache
        self._fields: dict[tuple[object, ...], bytes] = {}

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
        blob = answer.blob
        if answer.body is None or "range" in request.headers:
            return file_response(blob, self.headers(answer))
        key = (
            blob.key,
            blob.mtime_ns,
            blob.size,
            answer.cache,
            answer.unverified,
            answer.stale_reason,
        )
        fields = self._fields.get(key)
        if fields is None:
            if len(self._fields) >= self.MAX_FIELDS:
                del self._fields[next(iter(self._fields))]
            fields = self._fields[key] = render_fields(self.headers(answer))
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, blob.etag):
            return Response(304, fields=fields)
        return Response(body=answer.body, fields=fields)

    def headers(self, answer: Answer) -> dict[str, str]:
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
        return headers
