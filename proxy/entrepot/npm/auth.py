"""Who is asking, for the registry's writes: passwords, tokens, client addresses, login limits.

Pure (standard library only), so every rule is unit-tested without a server:

* passwords are stored as scrypt (``hashlib.scrypt``, OpenSSL's) with a random salt, in one
  self-describing string; checking one costs ~50 ms and 32 MiB on purpose (run it in a
  thread), and compares in constant time;
* tokens are 32 random bytes shown once (``npm_`` + base62); only their sha512 (the "key"
  the token API lists) is stored, so a stolen database holds no usable token;
* the client's address is the peer's, or, when the peer is a trusted proxy, the first
  address in ``X-Forwarded-For`` that is not one (read from the right: the left part is
  whatever the client wrote);
* failed logins are counted per user and per address over a window; past the limit the
  next attempt is refused before any password is checked (no free oracle, and no scrypt
  cost per attempt for the attacker to spend).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCRYPT_N = 1 << 15
SCRYPT_R = 8
SCRYPT_P = 1
_MAXMEM = 64 << 20
_ALPHABET = string.ascii_letters + string.digits
TOKEN_PREFIX = "npm_"


# -- passwords ------------------------------------------------------------------------------


def hash_password(password: str, *, n: int = SCRYPT_N, salt: bytes | None = None) -> str:
    """``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (base64): everything :func:`check_password`
    needs, so the cost can be raised later without breaking stored passwords."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=_MAXMEM, dklen=32
    )
    return "$".join(
        [
            "scrypt",
            str(n),
            str(SCRYPT_R),
            str(SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (False for anything that is
    not a stored password, never an exception)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not (2 <= n <= 1 << 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    try:
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=len(expected)
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)


# -- tokens ---------------------------------------------------------------------------------


def new_token() -> str:
    """A fresh token: ``npm_`` and 36 base62 characters (~214 bits), the shape npm prints."""
    return TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(36))


def token_key(token: str) -> str:
    """What is stored for a token: its sha512, hex (the ``key`` of npm's token API)."""
    return hashlib.sha512(token.encode()).hexdigest()


def masked(token_or_key: str) -> str:
    """How a token is shown in a list: its first 6 characters, never the rest."""
    return token_or_key[:6] + "…"


@dataclass(frozen=True)
class Basic:
    user: str
    password: str


@dataclass(frozen=True)
class Bearer:
    token: str


def parse_authorization(header: str | None) -> Basic | Bearer | None:
    """``Authorization: Bearer <token>`` or ``Basic <base64 user:password>``; None when
    absent or malformed (the caller answers 401)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return Bearer(value)
    if scheme.lower() == "basic" and value:
        try:
            text = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        user, colon, password = text.partition(":")
        return Basic(user, password) if colon and user else None
    return None


# -- addresses ------------------------------------------------------------------------------


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings (``10.0.0.0/8``, ``::1``); ValueError names the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
    return tuple(networks)


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]
) -> IPAddress | None:
    """The address a request came from, as far as it can be trusted.

    Only when the peer itself is a trusted proxy is ``X-Forwarded-For`` read, from the right
    (each proxy appends the address it saw), skipping trusted proxies; the first address that
    is not one is the client. Anything unreadable on the way stops the walk there."""
    address = _address(peer) if peer else None
    if address is None or not forwarded_for or not _within(address, trusted):
        return address
    for hop in reversed(forwarded_for.split(",")):
        seen = _address(hop)
        if seen is None:
            return address
        address = seen
        if not _within(address, trusted):
            return address
    return address


def _within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def cidr_allows(cidrs: Sequence[str], address: IPAddress | None) -> bool:
    """Whether a token limited to ``cidrs`` may be used from ``address`` (no limit: yes;
    an unknown address under a limit: no)."""
    if not cidrs:
        return True
    if address is None:
        return False
    try:
        networks = parse_networks(cidrs)
    except ValueError:
        return False
    return _within(address, networks)


# -- failed logins --------------------------------------------------------------------------


def login_wait(
    failures: Iterable[Sequence[float]], *, limit: int, window: float, now: float
) -> float | None:
    """Seconds until a login may be tried again, None when it may now: past ``limit`` failures
    in the sliding ``window`` for any of its keys (the user, the address), a key is refused
    until its ``limit``-th newest failure leaves the window. ``failures``: each key's failure
    times (epoch seconds), newest first."""
    waits = []
    for times in failures:
        recent = sorted((t for t in times if now - t < window), reverse=True)
        if len(recent) >= limit:
            waits.append(recent[limit - 1] + window - now)
    return max(waits) if waits else None
