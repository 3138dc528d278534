"""Request path parsing: a table of what the mirror accepts and refuses."""

from __future__ import annotations

import pytest

from entrepot.errors import InvalidRequestError, NotFoundError
from entrepot.gomod.paths import GoRequest, endpoint_of, parse_path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/example.com/m/@v/list", GoRequest("list", "example.com/m")),
        ("/example.com/m/@latest", GoRequest("latest", "example.com/m")),
        ("/example.com/m/@v/v1.0.0.info", GoRequest("info", "example.com/m", "v1.0.0")),
        ("/example.com/m/@v/v1.0.0.mod", GoRequest("mod", "example.com/m", "v1.0.0")),
        ("/example.com/m/@v/v1.0.0.zip", GoRequest("zip", "example.com/m", "v1.0.0")),
        ("/example.com/m/@v/master.info", GoRequest("info", "example.com/m", "master")),
        ("/github.com/!azure/go/@v/list", GoRequest("list", "github.com/Azure/go")),
        ("/example.com/m/@v/v1.0.0-!r!c1.info", GoRequest("info", "example.com/m", "v1.0.0-RC1")),
        (
            "/example.com/m/@v/v2.0.0+incompatible.zip",
            GoRequest("zip", "example.com/m", "v2.0.0+incompatible"),
        ),
        ("/gopkg.in/yaml.v2/@v/list", GoRequest("list", "gopkg.in/yaml.v2")),
        ("/example.com/m/v2/@v/v2.1.0.mod", GoRequest("mod", "example.com/m/v2", "v2.1.0")),
    ],
)
def test_valid_paths(path: str, expected: GoRequest) -> None:
    assert parse_path(path) == expected
    assert endpoint_of(path) == expected.endpoint


@pytest.mark.parametrize(
    "path",
    [
        "/github.com/Azure/go/@v/list",  # raw upper case
        "/example.com/!/@v/list",  # '!' not followed by a letter
        "/example.com/m!/@v/list",  # trailing '!'
        "/example.com/../m/@v/list",
        "/example.com/./m/@v/list",
        "/example.com/m//x/@v/list",
        "/example.com/m/@v/list/",  # trailing slash
        "/example.com/m/@v/.info",
        "/example.com/m/@v/v1.0.0.tar",
        "/example.com/m/@v/a/b.info",
        "/example.com/m/@v/v1.0.0!.info",
        "/example.com/m/@v/V1.0.0.info",  # raw upper case in the version
        "/exämple.com/m/@v/list",  # non-ASCII
        "/example.com/m/v1/@v/list",  # /v1 is not a major suffix
        "/-example.com/m/@v/list",
        "/example/m/@v/list",  # no dot in the first element
        "//@v/list",
    ],
)
def test_malformed_paths_are_refused_with_a_400(path: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_path(path)
    message = str(caught.value)
    assert message.isprintable()
    assert "\n" not in message


@pytest.mark.parametrize(
    "path", ["/favicon.ico", "/example.com/m", "/example.com/m/@v", "/example.com/m/@latest/"]
)
def test_paths_that_are_not_proxy_endpoints_are_404(path: str) -> None:
    with pytest.raises(NotFoundError, match="not a module proxy path"):
        parse_path(path)
