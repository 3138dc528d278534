"""Parsing GOPROXY request paths. Pure: a path in, a :class:`GoRequest` or an error out.

Module paths contain slashes, so routing splits on ``/@v/`` and ``/@latest`` (``@`` cannot
appear in a module path). Escaping is decoded strictly, as ``golang.org/x/mod/module`` does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from entrepot.errors import InvalidRequestError, NotFoundError
from entrepot.gomod.module import unescape_path, unescape_version

Endpoint = Literal["list", "info", "mod", "zip", "latest"]
_EXTENSIONS: dict[str, Endpoint] = {".info": "info", ".mod": "mod", ".zip": "zip"}


@dataclass(frozen=True)
class GoRequest:
    endpoint: Endpoint
    module: str  # unescaped, checked module path
    version: str = ""  # unescaped; empty for list and latest


def endpoint_of(path: str) -> Endpoint | None:
    """The endpoint kind of a path, cheaply and without validation (for metrics labels)."""
    if path.endswith("/@latest"):
        return "latest"
    if "/@v/" not in path:
        return None
    if path.endswith("/@v/list"):
        return "list"
    for ext, endpoint in _EXTENSIONS.items():
        if path.endswith(ext):
            return endpoint
    return None


@functools.lru_cache(maxsize=1 << 16)
def parse_path(path: str) -> GoRequest:
    """``/github.com/!azure/go/@v/v1.0.0.zip`` → ``GoRequest("zip", "github.com/Azure/go", …)``.

    Raises NotFoundError when the path is not a proxy endpoint at all, and InvalidRequestError
    when it is one but the module path or version is malformed. Memoized: the same few
    thousand paths make up nearly all traffic, and Go's path rules are costly in Python.
    """
    if not path.startswith("/"):
        raise InvalidRequestError(f"invalid request path {path!r}: must start with '/'")
    rest = path[1:]
    if rest.endswith("/@latest"):
        return GoRequest("latest", _module(rest[: -len("/@latest")]))
    at = rest.find("/@v/")
    if at < 0:
        raise NotFoundError(
            f"{path!r} is not a module proxy path: expected <module>/@v/list,"
            " <module>/@v/<version>.info|.mod|.zip or <module>/@latest"
        )
    module, tail = rest[:at], rest[at + len("/@v/") :]
    if tail == "list":
        return GoRequest("list", _module(module))
    for ext, endpoint in _EXTENSIONS.items():
        if tail.endswith(ext) and len(tail) > len(ext):
            version = tail[: -len(ext)]
            if "/" in version:
                break
            return GoRequest(endpoint, _module(module), _version(version))
    raise InvalidRequestError(
        f"invalid request path {path!r}: after /@v/ expected 'list' or <version>.info|.mod|.zip"
    )


MAX_ELEMENT_BYTES = 240
"""Longest path element or version the cache can hold: file names are at most 255 bytes on
common filesystems, and a version gets suffixes such as ``.ziphash``. Go itself sets no such
limit, so a longer one is answered 404 (the go command then tries its next GOPROXY entry),
never a 500 from ENAMETOOLONG."""


def _too_long(escaped: str) -> NotFoundError:
    return NotFoundError(
        f"{escaped[:60]}...: a path element or version over {MAX_ELEMENT_BYTES} bytes cannot"
        " be cached by this mirror"
    )


def _module(escaped: str) -> str:
    if not escaped:
        raise InvalidRequestError("invalid request path: empty module path")
    for element in escaped.split("/"):
        if len(element.encode()) > MAX_ELEMENT_BYTES:
            raise _too_long(element)
    return unescape_path(escaped)


def _version(escaped: str) -> str:
    if len(escaped.encode()) > MAX_ELEMENT_BYTES:
        raise _too_long(escaped)
    return unescape_version(escaped)
