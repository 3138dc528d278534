"""The route table: exact paths, then path prefixes, then the protocol fallback.

A dict lookup is all the routing there is. Each route names the methods it serves (GET and
HEAD unless told); any other method gets a 405 with the route's ``Allow``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from entrepot.web.http import AnyResponse, Request, Response

Handler = Callable[[Request], Awaitable[AnyResponse]]
READ = frozenset({"GET", "HEAD"})
EVERY = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE"})
Route = tuple[Handler, frozenset[str], str]


def _route(handler: Handler, methods: frozenset[str]) -> Route:
    order = ("GET", "HEAD", "POST", "PUT", "DELETE")
    return handler, methods, ", ".join(m for m in order if m in methods)


class RouteTable:
    def __init__(self, fallback: Handler, *, methods: frozenset[str] = READ) -> None:
        self.exact: dict[str, Route] = {}
        self.prefixes: list[tuple[str, Route]] = []
        self.fallback = _route(fallback, methods)

    def add(self, path: str, handler: Handler, *, methods: frozenset[str] = READ) -> None:
        self.exact[path] = _route(handler, methods)

    def add_prefix(self, prefix: str, handler: Handler, *, methods: frozenset[str] = READ) -> None:
        """Longer prefixes are tried first, whatever the order they were added in."""
        self.prefixes.append((prefix, _route(handler, methods)))
        self.prefixes.sort(key=lambda item: -len(item[0]))

    async def dispatch(self, request: Request) -> AnyResponse:
        path = request.path
        route = self.exact.get(path)
        if route is None:
            route = next((r for p, r in self.prefixes if path.startswith(p)), self.fallback)
        handler, methods, allow = route
        if request.method not in methods:
            return Response(
                405,
                text=f"only {allow} {'is' if len(methods) == 1 else 'are'} served here\n",
                headers={"Allow": allow},
            )
        return await handler(request)
