r"""Just enough of the go.mod syntax to check a served ``.mod``: its ``module`` statement.

Pure. An upstream that answers a ``.mod`` request with a login page, an error page or junk
must not have that cached forever, so before a ``.mod`` is stored it has to lex as a go.mod
and hold exactly one ``module`` statement naming a valid module path of the requested
path's major version. The path itself may differ from the requested one: a fork used
through ``replace`` declares the path it was forked from, and the go command accepts that
(``modload`` compares the declared path with the replacement's; ``modfetch`` checks only the
major-version suffix), so no proxy can refuse it. The lexing follows
``golang.org/x/mod/modfile``: lines end at ``\n`` only, blanks are space, tab and ``\r``,
``//`` comments, ``(`` and ``)`` are tokens of their own, interpreted ``"..."`` and raw
``\`...\``` strings, and any verb may open a block (``module ( path )``, ``require (``).
Unknown verbs are ignored, as the go command's lax parser of dependency go.mod files does.
"""

from __future__ import annotations

import json

from entrepot.errors import InvalidRequestError, VerificationError
from entrepot.gomod.module import check_path, split_path_version

_BLANKS = " \t\r"


def _tokens(line: str) -> list[str] | None:
    """The tokens of one line (comment dropped), or None when it does not lex."""
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in _BLANKS:
            i += 1
        elif line.startswith("//", i):
            break
        elif c in "()":
            out.append(c)
            i += 1
        elif c in '"`':
            j = i + 1
            while j < n and line[j] != c:
                j += 2 if c == '"' and line[j] == "\\" else 1
            if j >= n:
                return None  # unterminated string
            out.append(line[i : j + 1])
            i = j + 1
        else:
            j = i
            while (
                j < n
                and line[j] not in _BLANKS
                and line[j] not in '()"`'
                and not (line.startswith("//", j))
            ):
                j += 1
            out.append(line[i:j])
            i = j
    return out


def _unquote(token: str) -> str | None:
    if token.startswith("`"):
        return token[1:-1]
    if token.startswith('"'):
        try:
            value = json.loads(token)
        except ValueError:
            return None
        return value if isinstance(value, str) else None
    return token


def module_paths(text: str) -> list[str] | None:
    """Every path a ``module`` statement of ``text`` declares, or None when ``text`` does not
    lex as a go.mod (a control character, an unterminated string or block)."""
    if any((ord(c) < 32 and c not in "\t\r\n") or c == "\x7f" for c in text):
        return None
    found: list[str] = []
    block: str | None = None
    for raw in text.split("\n"):
        tokens = _tokens(raw)
        if tokens is None:
            return None
        if not tokens:
            continue
        if block is not None:
            if tokens == [")"]:
                block = None
            elif block == "module":
                found.append(_unquote(tokens[0]) or "")
            continue
        if tokens[1:] == ["("]:
            block = tokens[0]
        elif tokens[0] == "module":
            found.append(_unquote(tokens[1]) or "" if len(tokens) >= 2 else "")
    if block is not None:
        return None
    return found


def _major(path: str) -> int | None:
    """The major version a module path stands for (1 without a suffix), None if invalid."""
    try:
        check_path(path)
    except InvalidRequestError:
        return None
    _, path_major, ok = split_path_version(path)
    if not ok:
        return None
    digits = path_major.lstrip("/.v").removesuffix("-unstable")
    return int(digits) if digits else 1


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
    if paths is None:
        raise VerificationError(f"{what}: upstream answered something that is not a go.mod")
    if not paths:
        raise VerificationError(f"{what}: upstream go.mod has no module statement")
    if len(paths) > 1:
        raise VerificationError(f"{what}: upstream go.mod has {len(paths)} module statements")
    declared = paths[0]
    shown = "".join(c if c.isprintable() else "?" for c in declared)[:200]
    major = _major(declared)
    if major is None:
        raise VerificationError(
            f"{what}: upstream go.mod declares an invalid module path {shown!r}"
        )
    if major != _major(module):
        raise VerificationError(
            f"{what}: upstream go.mod declares module {shown!r}, of another major version than"
            f" the requested {module!r}"
        )
