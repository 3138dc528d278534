"""The route table: exact paths, then path prefixes, then the protocol fallback.

aiohttp's own router tries each route's pattern in turn; with module paths every proxy request
would fall through them all. One catch-all aiohttp route and a dict lookup cost less.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RouteTable:
    def __init__(self, fallback: Handler) -> None:
        self.exact: dict[str, Handler] = {}
        self.prefixes: list[tuple[str, Handler]] = []
        self.fallback = fallback

    def add(self, path: str, handler: Handler) -> None:
        self.exact[path] = handler

    def add_prefix(self, prefix: str, handler: Handler) -> None:
        self.prefixes.append((prefix, handler))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        handler = self.exact.get(path)
        if handler is None:
            handler = next((h for p, h in self.prefixes if path.startswith(p)), self.fallback)
        return await handler(request)

    def install(self, app: web.Application) -> None:
        """GET (and so HEAD) on every path; other methods get aiohttp's 405."""
        app.router.add_get("/{tail:.*}", self.dispatch)
