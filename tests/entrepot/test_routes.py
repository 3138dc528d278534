"""The route table: exact paths, longest prefix, fallback, and the methods each route serves."""

from __future__ import annotations

import asyncio

from entrepot.web.http import AnyResponse, Request, Response
from entrepot.web.routes import EVERY, Handler, RouteTable


def named(name: str) -> Handler:
    async def handler(request: Request) -> AnyResponse:
        return Response(text=name)

    return handler


def answer(table: RouteTable, path: str, method: str = "GET") -> tuple[int, str, str | None]:
    response = asyncio.run(table.dispatch(Request(method, path, {})))
    assert isinstance(response, Response)
    return response.status, response.body.decode(), response.headers.get("Allow")


def table() -> RouteTable:
    routes = RouteTable(fallback=named("go"))
    routes.add("/healthz", named("health"))
    routes.add_prefix("/npm/", named("npm"), methods=EVERY)
    routes.add_prefix("/npm/downloads/point/", named("downloads"))  # added after, longer
    return routes


def test_exact_then_longest_prefix_then_fallback() -> None:
    routes = table()
    assert answer(routes, "/healthz")[1] == "health"
    assert answer(routes, "/npm/downloads/point/last-week/x")[1] == "downloads"
    assert answer(routes, "/npm/downloads")[1] == "npm"  # the package named "downloads"
    assert answer(routes, "/npm/left-pad")[1] == "npm"
    assert answer(routes, "/golang.org/x/text/@v/list")[1] == "go"


def test_each_route_serves_its_own_methods() -> None:
    routes = table()
    assert answer(routes, "/npm/-/npm/v1/security/audits/quick", "POST")[1] == "npm"
    assert answer(routes, "/npm/left-pad", "PUT")[1] == "npm"
    status, text, allow = answer(routes, "/golang.org/x/text/@v/list", "POST")
    assert (status, allow) == (405, "GET, HEAD")
    assert "GET, HEAD" in text
    status, _, allow = answer(routes, "/npm/downloads/point/last-day", "DELETE")
    assert (status, allow) == (405, "GET, HEAD")
    assert answer(routes, "/healthz", "HEAD")[0] == 200
