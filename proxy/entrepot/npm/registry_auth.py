"""Who a registry request comes from: a token (Bearer) or a user's password (Basic).

The one impure edge of authentication: the rules are in :mod:`entrepot.npm.auth`, the
records in :mod:`entrepot.npm.registrystore`. Every refusal is a 401 with npm's wording, or
a 403 for a token used where it may not be (read-only for a write, outside its CIDR
ranges); a password is checked in a thread (scrypt costs ~50 ms on purpose), and only after
the login limiter allowed the attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from entrepot.config import NpmRegistry
from entrepot.errors import ForbiddenError, RateLimitedError, UnauthorizedError
from entrepot.npm.auth import (
    Basic,
    Bearer,
    IPAddress,
    check_password,
    cidr_allows,
    client_address,
    login_wait,
    parse_authorization,
    parse_networks,
    token_key,
)
from entrepot.npm.registrystore import RegistryStore
from entrepot.web.http import Request

WRONG = "Name or password is incorrect."


@dataclass(frozen=True)
class Caller:
    """An authenticated request's user. ``token_key``: the sha512 of the token it used (None
    for a password)."""

    user: str
    admin: bool
    readonly: bool
    token_key: str | None
    address: IPAddress | None


class Authenticator:
    def __init__(
        self,
        store: RegistryStore,
        settings: NpmRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.trusted = parse_networks(settings.trusted_proxies)
        self.limit = settings.login_attempts
        self.window = settings.login_window
        self.clock = clock

    def address(self, request: Request) -> IPAddress | None:
        return client_address(request.remote, request.headers.get("x-forwarded-for"), self.trusted)

    async def caller(self, request: Request) -> Caller | None:
        """The request's user, None without credentials.

        Raises:
            UnauthorizedError: a token that is not one, a wrong name or password (401).
            RateLimitedError: too many failed logins for this user or address (429 with
                Retry-After, before any password is checked).
            ForbiddenError: a token used from outside its CIDR ranges.
        """
        credentials = parse_authorization(request.headers.get("authorization"))
        if credentials is None:
            return None
        address = self.address(request)
        if isinstance(credentials, Bearer):
            return await self._token(credentials, address)
        return await self._password(credentials, address)

    async def require(self, request: Request, *, write: bool) -> Caller:
        """The caller, who must exist; ``write``: and may change things."""
        caller = await self.caller(request)
        if caller is None:
            raise UnauthorizedError("log in first: npm login --registry <this registry>")
        if write and caller.readonly:
            raise ForbiddenError("this token is read-only: it cannot publish or change packages")
        return caller

    async def login(self, request: Request, user: str, password: str) -> Caller:
        """``user`` with ``password`` (from a request's body: ``npm adduser`` of an existing
        user, ``npm token create``), under the same limiter and cost as Basic.

        Raises:
            UnauthorizedError: a wrong name or password (401, npm's wording).
            RateLimitedError: too many failed logins for this user or address (429).
        """
        return await self._password(Basic(user, password), self.address(request))

    async def _token(self, credentials: Bearer, address: IPAddress | None) -> Caller:
        key = token_key(credentials.token)
        found = await self.store.token_owner(key)
        if found is None:
            raise UnauthorizedError("unknown or revoked token: log in again (npm login)")
        record, admin = found
        if not cidr_allows(record.cidrs, address):
            raise ForbiddenError(
                f"this token may only be used from {', '.join(record.cidrs)}, not from"
                f" {address or 'an unknown address'}"
            )
        if admin is None:
            raise UnauthorizedError("the token's user no longer exists")
        return Caller(record.user, admin, record.readonly, key, address)

    async def _password(self, credentials: Basic, address: IPAddress | None) -> Caller:
        """Failed logins are counted in the store, so every worker and replica refuses the
        same guesser: per user, and per address (one address guessing many users)."""
        where = str(address)
        keys = [("user", credentials.user), ("address", where)]
        now = self.clock()
        recent = await self.store.recent_login_failures(
            keys, since=_at(now - self.window), limit=self.limit
        )
        failures = [[t.timestamp() for t in times] for times in recent.values()]
        wait = login_wait(failures, limit=self.limit, window=self.window, now=now)
        if wait is not None:
            error = RateLimitedError(
                f"too many failed logins for {credentials.user} or from {where}; retry in"
                f" {int(wait) + 1}s"
            )
            error.retry_after = int(wait) + 1
            raise error
        user = await self.store.user(credentials.user)
        stored = user.password_hash if user is not None else _DUMMY
        matches = await asyncio.to_thread(check_password, credentials.password, stored)
        if user is None or not matches:
            now = self.clock()
            await self.store.login_failed(keys, now=_at(now), forget_before=_at(now - self.window))
            raise UnauthorizedError(WRONG)
        if recent[keys[0]]:
            await self.store.login_succeeded("user", credentials.user)
        return Caller(user.name, user.admin, False, None, address)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# Checked when the user does not exist, so that an unknown name costs as long as a wrong
# password (no user enumeration by timing). A hash of nothing anyone can type.
_DUMMY = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
