"""The route table: exact paths, then path prefixes, then the protocol fallback.

A dict lookup is all the routing there is. Only GET and HEAD exist; anything else is a 405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from entrepot.web.http import AnyResponse, Request, Response

Handler = Callable[[Request], Awaitable[AnyResponse]]
ALLOWED = frozenset({"GET", "HEAD"})


class RouteTable:
    def __init__(self, fallback: Handler) -> None:
        self.exact: dict[str, Handler] = {}
        self.prefixes: list[tuple[str, Handler]] = []
        self.fallback = fallback

    def add(self, path: str, handler: Handler) -> None:
        self.exact[path] = handler

    def add_prefix(self, prefix: str, handler: Handler) -> None:
        self.prefixes.append((prefix, handler))

    async def dispatch(self, request: Request) -> AnyResponse:
        if request.method not in ALLOWED:
            return Response(
                405, text="only GET and HEAD are served\n", headers={"Allow": "GET, HEAD"}
            )
        path = request.path
        handler = self.exact.get(path)
        if handler is None:
            handler = next((h for p, h in self.prefixes if path.startswith(p)), self.fallback)
        return await handler(request)
