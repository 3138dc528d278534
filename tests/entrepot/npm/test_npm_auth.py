"""Passwords, tokens, client addresses and the login limiter (entrepot.npm.auth)."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from entrepot.npm.auth import (
    Basic,
    Bearer,
    check_password,
    cidr_allows,
    client_address,
    hash_password,
    login_wait,
    masked,
    new_token,
    parse_authorization,
    parse_networks,
    token_key,
)

FAST = 1 << 10  # a cheap cost for tests; the default is 2**15


def test_a_password_checks_against_its_hash_only() -> None:
    stored = hash_password("correct horse", n=FAST)
    assert stored.startswith("scrypt$1024$8$1$")
    assert "correct horse" not in stored
    assert check_password("correct horse", stored)
    assert not check_password("correct horse ", stored)
    assert not check_password("", stored)
    assert hash_password("correct horse", n=FAST) != stored  # salted


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "scrypt$x$8$1$AAAA$AAAA",
        "scrypt$1000$8$1$AAAA$AAAA",  # n not a power of two
        "scrypt$1024$8$1$!!$AAAA",
        "scrypt$2097152$8$1$AAAA$AAAA",  # a cost that would exhaust memory
        "pbkdf2$1$2$3$4$5",
    ],
)
def test_anything_else_never_checks_and_never_raises(stored: str) -> None:
    assert not check_password("x", stored)


def test_the_default_cost_is_slow_on_purpose() -> None:
    stored = hash_password("pw")
    assert stored.split("$")[1] == str(1 << 15)
    assert check_password("pw", stored)


def test_tokens_are_random_and_stored_as_sha512() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert token.startswith("npm_")
    assert len(token) == 40
    assert token[4:].isalnum()
    assert len(token_key(token)) == 128
    assert token_key(token) == token_key(token)
    assert masked(token) == token[:6] + "…"


def test_authorization_headers() -> None:
    basic = base64.b64encode(b"ann:p:ss w\xc3\xb6rd").decode()
    assert parse_authorization(f"Basic {basic}") == Basic("ann", "p:ss wörd")
    assert parse_authorization("Bearer npm_abc") == Bearer("npm_abc")
    assert parse_authorization("bearer  npm_abc ") == Bearer("npm_abc")
    for bad in (
        None,
        "",
        "Bearer",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(b":pw").decode(),
        "Digest x",
    ):
        assert parse_authorization(bad) is None


def test_the_client_address_trusts_only_trusted_proxies() -> None:
    proxies = parse_networks(["10.0.0.0/8", "::1"])
    v4 = ipaddress.ip_address
    assert client_address("192.0.2.7", "203.0.113.9", proxies) == v4("192.0.2.7")  # not a proxy
    assert client_address("10.1.2.3", "203.0.113.9", proxies) == v4("203.0.113.9")
    # a client that writes its own X-Forwarded-For: the right-most untrusted hop wins
    assert client_address("10.1.2.3", "1.1.1.1, 203.0.113.9, 10.9.9.9", proxies) == v4(
        "203.0.113.9"
    )
    assert client_address("10.1.2.3", "garbage, 10.9.9.9", proxies) == v4("10.9.9.9")
    assert client_address("::1", "[2001:db8::5]:443", proxies) == v4("2001:db8::5")
    assert client_address("::ffff:192.0.2.1", None, proxies) == v4("192.0.2.1")
    assert client_address(None, "1.2.3.4", proxies) is None


def test_cidr_limited_tokens() -> None:
    address = ipaddress.ip_address("192.0.2.10")
    assert cidr_allows([], address)
    assert cidr_allows([], None)
    assert cidr_allows(["192.0.2.0/24"], address)
    assert not cidr_allows(["198.51.100.0/24"], address)
    assert not cidr_allows(["192.0.2.0/24"], None)
    assert not cidr_allows(["::/0"], address)  # another IP version
    assert not cidr_allows(["not a network"], address)
    with pytest.raises(ValueError, match="'nope'"):
        parse_networks(["nope"])


def test_a_login_waits_once_any_key_has_its_limit_of_failures_in_the_window() -> None:
    def wait(*keys: list[float], now: float) -> float | None:
        return login_wait(keys, limit=3, window=60, now=now)

    ann = [102.0, 101.0, 100.0]  # newest first
    assert wait(ann[1:], [], now=103) is None  # two failures: allowed
    assert wait(ann, [], now=103) == pytest.approx(57)  # the oldest of three leaves at 160
    assert wait([], ann, now=103) == pytest.approx(57)  # the address's count alike
    assert wait([150.0, *ann], [], now=151) == pytest.approx(10)  # the 3rd newest: 101
    assert wait(ann, [], now=160.5) is None  # the window moved on
    assert wait([120.0, 110.0, 20.0, 10.0], [], now=121) is None  # two are out of it
    assert wait([1.0, 2.0, 3.0], [100.0, 99.0, 98.0], now=100) == pytest.approx(58)
