"""Just enough of the go.mod syntax to check a served ``.mod``: its ``module`` statement.

Pure. An upstream that answers a ``.mod`` request with a login page, an error page or another
module's file must not have that cached forever, so before a ``.mod`` is stored its
``module`` statement has to parse and name the requested module path, as the go command
itself requires when it loads the file ("module declares its path as ... but was required
as ..."). The lexing follows ``golang.org/x/mod/modfile``: ``//`` comments, interpreted
``"..."`` and raw ``\\`...\\``` strings, and the block form ``module ( path )``.
"""

from __future__ import annotations

import json

from entrepot.errors import VerificationError


def _strip_comment(line: str) -> str:
    """The line without its ``//`` comment (outside of quoted strings)."""
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in '"`':
            quote = c
        elif line.startswith("//", i):
            return line[:i]
        i += 1
    return line


def _unquote(token: str) -> str | None:
    if token.startswith("`"):
        return token[1:-1] if len(token) >= 2 and token.endswith("`") else None
    if token.startswith('"'):
        try:
            value = json.loads(token)
        except ValueError:
            return None
        return value if isinstance(value, str) else None
    return token


def module_paths(text: str) -> list[str]:
    """Every path a ``module`` statement of ``text`` declares (more than one is an error)."""
    found: list[str] = []
    in_block = False
    for raw in text.splitlines():
        tokens = _strip_comment(raw).split()
        if not tokens:
            continue
        if in_block:
            if tokens == [")"]:
                in_block = False
            else:
                found.append(_unquote(tokens[0]) or "")
            continue
        if tokens[0] != "module":
            continue
        if tokens[1:] == ["("]:
            in_block = True
        elif len(tokens) >= 2:
            found.append(_unquote(tokens[1]) or "")
        else:
            found.append("")
    return found


def check_go_mod(data: bytes, *, module: str, version: str) -> None:
    """Refuse a ``.mod`` that is not a go.mod of ``module`` (the unescaped requested path).

    Raises VerificationError naming what was found instead.
    """
    what = f"{module}@{version}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VerificationError(f"{what}: upstream go.mod is not UTF-8") from e
    if text.lstrip().startswith("<"):
        raise VerificationError(
            f"{what}: upstream answered markup (an HTML page?) instead of a go.mod; check the"
            " upstream URL and credentials"
        )
    paths = module_paths(text)
    if not paths:
        raise VerificationError(f"{what}: upstream go.mod has no module statement")
    if len(paths) > 1:
        raise VerificationError(f"{what}: upstream go.mod has {len(paths)} module statements")
    if paths[0] != module:
        shown = "".join(c if c.isprintable() else "?" for c in paths[0])[:200]
        raise VerificationError(
            f"{what}: upstream go.mod declares module {shown!r}, not the requested {module!r}"
        )
