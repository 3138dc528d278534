"""Entrepôt's own exception tree.

Library errors (httpx, OSError, zipfile, subprocess) are translated into these once, at the
boundary where they happen (``raise ... from e``); the mapping to an HTTP status lives in one
function, :func:`entrepot.web.responses.status_for`.

    EntrepotError
    ├── ConfigError              bad configuration (the CLI exits with code 2)
    ├── InvalidRequestError      malformed module path, version or file name in a request (400)
    ├── NotFoundError            no such module/version anywhere in the chain (404)
    │   └── GoneError            an upstream answered 410 Gone (410)
    ├── ForbiddenError           a route denies this module path (403)
    ├── UpstreamError            an upstream failed: 5xx, timeout, connection refused (502)
    │   └── UpstreamTimeoutError the upstream did not answer in time (504)
    ├── UnavailableError         the mirror is out of a resource right now: a full queue, no
    │                            file descriptors, a full disk; retry later (503)
    └── VerificationError        the upstream's bytes break the rules; nothing is cached (502)
        └── TooLargeError        an artifact exceeds a size limit (502)

Every message is written for the person running ``go``: what was wrong and what to do.
Messages never contain credentials (see :func:`redact`).
"""

from __future__ import annotations

import re

# Userinfo runs to the *last* '@' before the path, query or fragment: a password holding an
# unencoded '@' (``alice:p@ss@host``) must not leave its tail behind.
# The lookbehind keeps this linear: without it a long run of letters is rescanned from each
# of its positions (a 3,800-character message took 40 ms to redact).
_USERINFO = re.compile(r"(?<![a-zA-Z0-9+.-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s]*@")
# ``Authorization: Basic x``, and the same in a repr'd header mapping or list of pairs
# (``'authorization': 'Bearer x'``, ``(b'Authorization', b'Basic x')``).
_AUTH_HEADER = re.compile(
    r"(?i)(authorization['\"]?\s*[:=,]\s*b?['\"]?)(bearer|basic|token)\s+[^\s'\",;)]+"
)


def redact(text: str) -> str:
    """Remove credentials (``scheme://user:pass@``, ``scheme://token@``, auth headers) from
    text shown to anyone: error bodies, log lines, the start-up line."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _AUTH_HEADER.sub(r"\1\2 ***", text)


class EntrepotError(Exception):
    """Base of every error Entrepôt raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(EntrepotError):
    """The configuration is invalid; the message names the field, the value and what is allowed."""


class InvalidRequestError(EntrepotError):
    """The request path is malformed (bad escaping, invalid module path or version)."""


class NotFoundError(EntrepotError):
    """The module or version does not exist in any upstream the route allows."""


class GoneError(NotFoundError):
    """An upstream answered 410 Gone."""


class ForbiddenError(EntrepotError):
    """A route denies this module path on purpose (e.g. private code must not be fetched)."""


class UnauthorizedError(EntrepotError):
    """No credentials, or wrong ones, for a request that needs a user (401)."""


class ConflictError(EntrepotError):
    """A write conflicts with what is stored: a version number that exists or existed, a
    stale ``_rev``, a user that exists (409)."""


class UpstreamError(EntrepotError):
    """An upstream failed in a way that is not 'not found'."""


class UpstreamTimeoutError(UpstreamError):
    """An upstream did not answer in time."""


class UnavailableError(EntrepotError):
    """The mirror cannot take this request now (a full queue or volume, no file descriptors).

    Answered with 503 and ``Retry-After`` at once, rather than queueing without bound."""

    retry_after = 5


class RateLimitedError(UnavailableError):
    """Too many attempts (failed logins) from one user or address: 429 with Retry-After."""


class VerificationError(EntrepotError):
    """Bytes from an upstream break the module rules; they are never cached or served."""


class TooLargeError(VerificationError):
    """An artifact is larger than the configured or protocol limit."""
