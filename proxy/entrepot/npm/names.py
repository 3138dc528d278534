"""npm package names, request paths, storage keys and tarball URLs. Pure.

Names follow npm's own validator, ``validate-npm-package-name`` 7 (the version npm 11 ships):
:func:`name_problems` returns the same errors and warnings, word for word. A name with errors
was never accepted by the registry; a name with only warnings (capital letters, ``~'!()*``, a
Node core module name such as ``events`` or ``buffer``) is a *legacy* name: no new package may
take it, but old ones carry it (``JSONStream``, ``events``) and installs need them. So the read
side (:func:`check_name`) accepts legacy names, and :func:`check_name` with ``new=True`` (the
publishing side) refuses them. One rule is ours: no name longer than :data:`MAX_NAME_LENGTH`,
even a legacy one, so that every name fits in a file name of the cache.

Request paths (:func:`parse_path`) are the part after the registry's prefix, with or without
percent-decoding (the server core decodes them; a raw path works too). Scoped names arrive as
``@scope%2fname``, ``@scope%2Fname`` or ``@scope/name``; all three mean the same package.

Storage keys escape capital letters as ``!`` + the lower-case letter and ``!`` itself as ``!!``,
like Go's module cache: legacy names and prerelease versions with capitals (``JSONStream`` and
``jsonstream`` are two packages; ``1.0.0-RC1`` and ``1.0.0-rc1`` two versions) must not
collide on a case-insensitive filesystem, and the escaping stays one-to-one.
"""

from __future__ import annotations

import functools
import json
import string
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from entrepot.errors import InvalidRequestError, NotFoundError
from entrepot.npm.semver import is_valid

__all__ = [
    "MAX_KEY_ELEMENT_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_TAG_LENGTH",
    "MAX_VERSION_LENGTH",
    "DocumentPart",
    "NpmRequest",
    "RequestKind",
    "basename",
    "check_name",
    "check_tag",
    "check_version_text",
    "document_key",
    "escape",
    "is_version_text",
    "name_problems",
    "package_prefix",
    "parse_path",
    "scope",
    "tarball_filename",
    "tarball_key",
    "tarball_url",
    "tarball_url_prefix",
    "unescape",
    "url_path",
]

MAX_NAME_LENGTH = 214
"""npm's limit for new names (in UTF-16 code units, as JavaScript counts; names are ASCII)."""
MAX_VERSION_LENGTH = 256
"""node-semver's ``MAX_LENGTH``: npm itself refuses a longer version string."""
MAX_TAG_LENGTH = 256
MAX_KEY_ELEMENT_BYTES = 240
"""Longest element of a storage key: file names are at most 255 bytes on common filesystems,
and a writer may add a suffix (the same limit as the Go side's)."""

# What JavaScript's encodeURIComponent leaves as it is: a name must consist of these only.
_URL_SAFE = frozenset(string.ascii_letters + string.digits + "-_.!~*'()")
_SPECIAL = frozenset("~'!()*")
_EXCLUDED = ("node_modules", "favicon.ico")
# validate-npm-package-name 7's lib/builtin-modules.json (Node's module.builtinModules).
_BUILTINS = frozenset(
    [
        "_http_agent",
        "_http_client",
        "_http_common",
        "_http_incoming",
        "_http_outgoing",
        "_http_server",
        "_stream_duplex",
        "_stream_passthrough",
        "_stream_readable",
        "_stream_transform",
        "_stream_wrap",
        "_stream_writable",
        "_tls_common",
        "_tls_wrap",
        "assert",
        "assert/strict",
        "async_hooks",
        "buffer",
        "child_process",
        "cluster",
        "console",
        "constants",
        "crypto",
        "dgram",
        "diagnostics_channel",
        "dns",
        "dns/promises",
        "domain",
        "events",
        "fs",
        "fs/promises",
        "http",
        "http2",
        "https",
        "inspector",
        "inspector/promises",
        "module",
        "net",
        "os",
        "path",
        "path/posix",
        "path/win32",
        "perf_hooks",
        "process",
        "punycode",
        "querystring",
        "readline",
        "readline/promises",
        "repl",
        "stream",
        "stream/consumers",
        "stream/promises",
        "stream/web",
        "string_decoder",
        "sys",
        "timers",
        "timers/promises",
        "tls",
        "trace_events",
        "tty",
        "url",
        "util",
        "util/types",
        "v8",
        "vm",
        "wasi",
        "worker_threads",
        "zlib",
        "node:sea",
        "node:sqlite",
        "node:test",
        "node:test/reporters",
    ]
)
# String.prototype.trim's WhiteSpace and LineTerminator (Python's str.strip differs).
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"  # noqa: E501

_DIGITS = frozenset(string.digits)
_VERSION_CHARS = frozenset(string.ascii_letters + string.digits + ".+-")
_TAG_CHARS = _URL_SAFE


def _quote(text: str, limit: int = 120) -> str:
    """A name as it appears in a message: one line of printable ASCII, bounded."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return json.dumps(shown)


def _url_safe(text: str) -> bool:
    return all(c in _URL_SAFE for c in text)


def _js_length(text: str) -> int:
    """``String.prototype.length``: UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _split_scoped(name: str) -> tuple[str | None, str] | None:
    """The library's ``^(?:@([^/]+?)[/])?([^/]+?)$``: (scope or None, rest), or None."""
    if name.startswith("@"):
        slash = name.find("/")
        if slash > 1 and "/" not in name[slash + 1 :] and slash + 1 < len(name):
            return name[1:slash], name[slash + 1 :]
    if name and "/" not in name:
        return None, name
    return None


def name_problems(name: str) -> tuple[list[str], list[str]]:
    """``validate-npm-package-name``'s (errors, warnings) for ``name``, in its words.

    Errors make a name invalid for every package; warnings only for new packages.
    """
    errors: list[str] = []
    warnings: list[str] = []
    if not name:
        errors.append("name length must be greater than zero")
    if name.startswith("."):
        errors.append("name cannot start with a period")
    if name.startswith("-"):
        errors.append("name cannot start with a hyphen")
    if name.startswith("_"):
        errors.append("name cannot start with an underscore")
    if name.strip(_JS_SPACE) != name:
        errors.append("name cannot contain leading or trailing spaces")
    lower = name.lower()
    for excluded in _EXCLUDED:
        if lower == excluded:
            errors.append(f"{excluded} is not a valid package name")
    if lower in _BUILTINS:
        warnings.append(f"{name} is a core module name")
    if _js_length(name) > MAX_NAME_LENGTH:
        warnings.append(f"name can no longer contain more than {MAX_NAME_LENGTH} characters")
    if lower != name:
        warnings.append("name can no longer contain capital letters")
    if any(c in _SPECIAL for c in name.rsplit("/", maxsplit=1)[-1]):
        warnings.append('name can no longer contain special characters ("~\'!()*")')
    if not _url_safe(name):
        split = _split_scoped(name)
        if split is not None:
            user, pkg = split
            if pkg.startswith("."):
                errors.append("name cannot start with a period")
            # encodeURIComponent(undefined) is "undefined": an absent scope passes.
            if (user is None or _url_safe(user)) and _url_safe(pkg):
                return errors, warnings
        errors.append("name can only contain URL-friendly characters")
    return errors, warnings


@functools.lru_cache(maxsize=1 << 16)
def _name_error(name: str, new: bool) -> str | None:
    errors, warnings = name_problems(name)
    if errors:
        return errors[0]
    if new and warnings:
        return warnings[0]
    if _js_length(name) > MAX_NAME_LENGTH:
        return f"name can no longer contain more than {MAX_NAME_LENGTH} characters"
    return None


def check_name(name: str, *, new: bool = False) -> None:
    """Refuse a name the registry never accepted (or, with ``new``, would not accept today).

    Without ``new``, legacy names (capitals, ``~'!()*``, core module names) pass: the mirror
    serves packages that exist. Either way a name over :data:`MAX_NAME_LENGTH` is refused.

    Raises:
        InvalidRequestError: ``invalid package name "<name>": <npm's reason>``.
    """
    error = _name_error(name, new)
    if error is not None:
        raise InvalidRequestError(f"invalid package name {_quote(name)}: {error}")


def scope(name: str) -> str:
    """``@scope`` of a scoped name, ``""`` for an unscoped one."""
    return name.split("/", 1)[0] if name.startswith("@") else ""


def basename(name: str) -> str:
    """The name without its scope: what tarball file names start with."""
    return name.rsplit("/", 1)[-1]


def url_path(name: str) -> str:
    """The path of a packument as npm asks for it: ``/@scope%2fname`` or ``/name``."""
    return "/" + name.replace("/", "%2f")


# --------------------------------------------------------------------------------------------
# Versions and tags in request paths
# --------------------------------------------------------------------------------------------


def _version_text_error(version: str) -> str | None:
    if not version:
        return "empty version"
    if len(version) > MAX_VERSION_LENGTH:
        return f"longer than {MAX_VERSION_LENGTH} characters"
    if version[0] not in _DIGITS:
        return "a version starts with a digit"
    if not all(c in _VERSION_CHARS for c in version):
        return "a version holds only letters, digits and . + -"
    return None


def is_version_text(version: str) -> bool:
    """Whether :func:`check_version_text` accepts ``version``."""
    return _version_text_error(version) is None


def check_version_text(version: str) -> None:
    """Refuse text that cannot be a version in a URL or a storage key.

    Deliberately looser than SemVer (:mod:`entrepot.npm.semver`): SemVer's characters, a
    leading digit, at most 256 characters. Whether the version exists is the packument's call.

    Raises:
        InvalidRequestError: ``invalid version "<text>": <reason>``.
    """
    error = _version_text_error(version)
    if error is not None:
        raise InvalidRequestError(f"invalid version {_quote(version)}: {error}")


def check_tag(tag: str) -> None:
    """Refuse text that cannot be a dist-tag: URL-safe characters (as npm's registry wants),
    no leading dot (so never ``.`` or ``..``) or hyphen (``/<name>/-`` is the tarballs'
    folder, and npm would read ``-x`` as an option), at most :data:`MAX_TAG_LENGTH`
    characters.

    Raises:
        InvalidRequestError: ``invalid dist-tag "<text>": <reason>``.
    """
    if not tag:
        reason = "empty dist-tag"
    elif len(tag) > MAX_TAG_LENGTH:
        reason = f"longer than {MAX_TAG_LENGTH} characters"
    elif tag[0] in ".-":
        reason = "a dist-tag cannot start with a period or a hyphen"
    elif not all(c in _TAG_CHARS for c in tag):
        reason = "a dist-tag can only contain URL-friendly characters"
    else:
        return
    raise InvalidRequestError(f"invalid dist-tag {_quote(tag)}: {reason}")


# --------------------------------------------------------------------------------------------
# Request paths
# --------------------------------------------------------------------------------------------

RequestKind = Literal["packument", "version", "tarball"]


@dataclass(frozen=True)
class NpmRequest:
    """One package request, parsed and validated.

    * ``packument``: ``GET /<name>``;
    * ``version``: ``GET /<name>/<version|tag>``: ``version`` when the text is a SemVer
      version, else ``tag`` (the packument decides whether either exists);
    * ``tarball``: ``GET /<name>/-/<basename>-<version>.tgz``: ``version`` and the canonical
      ``filename`` (``<basename>-<version>.tgz``, whatever spelling was asked for).
    """

    kind: RequestKind
    name: str
    version: str = ""
    tag: str = ""
    filename: str = ""


def _bad_path(path: str, reason: str) -> InvalidRequestError:
    return InvalidRequestError(f"invalid npm request path {_quote(path)}: {reason}")


@functools.lru_cache(maxsize=1 << 16)
def parse_path(path: str) -> NpmRequest:
    """``/@scope%2fname/-/name-1.0.0.tgz`` → ``NpmRequest("tarball", "@scope/name", ...)``.

    ``path`` is what follows the registry's prefix, without the query string, starting with
    ``/``. Percent-escapes are decoded once (a path the server core already decoded holds none
    that matter: valid names, versions and tags never contain ``%``). Accepted forms::

        /<name>                                  packument
        /<name>/<version|tag>                    one version's manifest
        /<name>/-/<basename>-<version>.tgz       tarball
        /@scope/name/-/@scope/name-<version>.tgz tarball, the spelling some clients send

    where ``<name>`` is ``name``, ``@scope/name``, ``@scope%2fname`` or ``@scope%2Fname``.
    Paths of the registry's own endpoints (``/-/...``) are not package paths.

    Raises:
        InvalidRequestError: empty segments, ``.``/``..``, a trailing slash, an invalid name,
            version, tag or file name, or any other shape (400).
    """
    if not path.startswith("/"):
        raise _bad_path(path, "must start with '/'")
    text = path
    if "%" in text:
        try:
            text = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise _bad_path(path, "percent-escapes that are not UTF-8") from None
    segments = text[1:].split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise _bad_path(path, "empty, '.' or '..' path segment")
    if segments[0] == "-":
        raise _bad_path(path, "'/-/' paths are registry endpoints, not packages")
    if segments[0].startswith("@"):
        if len(segments) < 2:
            raise _bad_path(path, "a scoped name is @scope/name")
        name, rest = f"{segments[0]}/{segments[1]}", segments[2:]
    else:
        name, rest = segments[0], segments[1:]
    check_name(name)
    if not rest:
        return NpmRequest("packument", name)
    if len(rest) == 1:
        ref = rest[0]
        if is_valid(ref):
            return NpmRequest("version", name, version=ref)
        check_tag(ref)
        return NpmRequest("version", name, tag=ref)
    if rest[0] == "-" and len(rest) in (2, 3):
        return _tarball(path, name, "/".join(rest[1:]))
    raise _bad_path(
        path, "expected /<name>, /<name>/<version|tag> or /<name>/-/<basename>-<version>.tgz"
    )


def _tarball(path: str, name: str, file: str) -> NpmRequest:
    if not file.endswith(".tgz"):
        raise _bad_path(path, "a tarball file name ends with .tgz")
    stem = file[: -len(".tgz")]
    base = basename(name)
    # The basename form, or (scoped names only) the full name some clients send.
    for prefix in {f"{base}-", f"{name}-"}:
        if stem.startswith(prefix):
            version = stem[len(prefix) :]
            check_version_text(version)
            return NpmRequest("tarball", name, version=version, filename=f"{base}-{version}.tgz")
    raise _bad_path(path, f"a tarball of {name} is named {base}-<version>.tgz")


# --------------------------------------------------------------------------------------------
# Tarball URLs
# --------------------------------------------------------------------------------------------


def tarball_filename(name: str, version: str) -> str:
    return f"{basename(name)}-{version}.tgz"


def tarball_url_prefix(base: str, name: str) -> str:
    """Everything of :func:`tarball_url` but the version and ``.tgz``: built once per
    packument, then each version's URL is one concatenation."""
    return f"{base.rstrip('/')}/{name}/-/{basename(name)}-"


def tarball_url(base: str, name: str, version: str) -> str:
    """``<base>/<name>/-/<basename>-<version>.tgz``, the URL yarn (Berry) and pnpm build by
    themselves: with any other ``dist.tarball`` they write the URL into their lockfiles.

    ``base`` is the mirror's public registry URL; a trailing ``/`` is ignored. The scope keeps
    its plain ``/`` (``<base>/@scope/name/-/name-1.0.0.tgz``), which both clients accept.
    """
    return f"{tarball_url_prefix(base, name)}{version}.tgz"


# --------------------------------------------------------------------------------------------
# Storage keys
# --------------------------------------------------------------------------------------------

DocumentPart = Literal[
    "upstream.json",
    "meta.json",
    "index.json",
    "full.json",
    "full.json.gz",
    "abbreviated.json",
    "abbreviated.json.gz",
]
"""The per-package blobs a service may keep (the upstream's bytes, its own metadata such as
the upstream ETag, the computed index and documents)."""


def escape(text: str) -> str:
    """Capitals become ``!`` + the lower-case letter, ``!`` becomes ``!!``: one-to-one, and no
    two results differ only in case."""
    if not any(c == "!" or "A" <= c <= "Z" for c in text):
        return text
    return "".join("!!" if c == "!" else "!" + c.lower() if "A" <= c <= "Z" else c for c in text)


def unescape(text: str) -> str:
    """The inverse of :func:`escape`.

    Raises:
        ValueError: not something :func:`escape` returns.
    """
    out: list[str] = []
    chars = iter(text)
    for c in chars:
        if "A" <= c <= "Z":
            raise ValueError(f"unescaped capital in {text!r}")
        if c != "!":
            out.append(c)
            continue
        nxt = next(chars, "")
        if nxt == "!":
            out.append("!")
        elif "a" <= nxt <= "z":
            out.append(nxt.upper())
        else:
            raise ValueError(f"invalid escape in {text!r}")
    return "".join(out)


def _element(text: str) -> str:
    escaped = escape(text)
    if len(escaped.encode()) > MAX_KEY_ELEMENT_BYTES:
        raise NotFoundError(
            f"{_quote(text, 60)}: a name or version over {MAX_KEY_ELEMENT_BYTES} bytes once"
            " escaped cannot be cached by this mirror"
        )
    return escaped


@functools.lru_cache(maxsize=1 << 16)
def package_prefix(name: str) -> str:
    """``npm/<escaped name>``: the folder of everything cached for one package (what a purge
    removes with ``delete_prefix``). A scoped name is two folders, ``npm/@scope/name``.

    Raises:
        InvalidRequestError: an invalid name.
        NotFoundError: a name too long for the cache once escaped.
    """
    check_name(name)
    return "npm/" + "/".join(_element(part) for part in name.split("/"))


def tarball_key(name: str, version: str) -> str:
    """``npm/<escaped name>/-/<escaped version>.tgz`` (the name is already the folder, so the
    file name is only the version: shorter, and free of the basename's capitals)."""
    check_version_text(version)
    return f"{package_prefix(name)}/-/{_element(version)}.tgz"


def document_key(name: str, part: DocumentPart) -> str:
    """``npm/<escaped name>/packument/<part>``. ``packument`` cannot clash with the tarballs'
    ``-`` folder, and no scope folder (``@...``) can clash with an unscoped name."""
    return f"{package_prefix(name)}/packument/{part}"
