"""The registry's users and tokens: ``npm adduser``/``login``, ``whoami``, ``logout``,
``npm token create|list|revoke``.

What the npm CLI (11) sends, and what it is answered:

* ``POST /-/v1/login`` (web login, tried first): 404. npm takes any 4xx as "web login not
  supported" and falls back to the couch flow below without a word to the user.
* ``PUT /-/user/org.couchdb.user:<name>`` ``{name, password, email?}``: a new user (201 with a
  token) when ``self_registration`` allows it (``npm adduser`` sends an email, ``npm login``
  does not: a login of an unknown name is a 400, npm's "There is no user with the username");
  for an existing user 409, after which npm reads the document (``?write=true``) and sends
  ``PUT .../-rev/<rev>`` with Basic credentials: a fresh token when the password is right
  (401 when not, 429 past the login limit). That path logs in and changes nothing: no
  password, no email. ``npm adduser`` of an existing name with its right password is a login
  too (npm's registry quirk, which the CLI documents); with another password it is the 409 of
  a taken name.
* ``GET /-/user/org.couchdb.user:<name>``: the public document (never the hash: no password
  field of any kind); it carries ``_rev`` because npm's login needs it before it has
  credentials.
* ``GET /-/whoami`` → ``{username}``; ``DELETE /-/user/token/<token>`` (``npm logout``)
  revokes that token, the caller's own only.
* ``POST /-/npm/v1/tokens``: the password is checked again whatever the credentials; npm 11
  sends no ``readonly`` (its ``--read-only`` is lost on the way): a read-only token is
  ``--packages-and-scopes-permission read-only`` there (``readonly: true`` from other
  clients). What this registry cannot keep (an expiry, per-package limits) is refused with a
  400 rather than accepted and ignored. ``GET`` lists the caller's tokens (a prefix of each,
  never the token; ``urls.next`` while there are more); ``DELETE .../token/<key>`` revokes one
  of the caller's own by its key, or by its value (npm sends the value when given one).

Tokens and passwords never reach a log: a path that holds a token is rewritten in
``request.path`` (what the access log and any error log print) before anything else.

Users also come from outside the API: :func:`set_user` (``entrepot user add``) and
:func:`prepare_admin` (the administrator's password file, at start).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from entrepot.config import NpmRegistry, Settings
from entrepot.errors import (
    ConfigError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
)
from entrepot.npm.auth import (
    check_password,
    hash_password,
    new_token,
    parse_networks,
    token_key,
)
from entrepot.npm.registry_auth import Authenticator
from entrepot.npm.registrystore import (
    RegistryStore,
    TokenRecord,
    UserRecord,
    open_registry_store,
)
from entrepot.web.http import AnyResponse, Request, Response

JSON = "application/json"
COUCH_USER = "-/user/org.couchdb.user:"
LOGOUT = "-/user/token/"
TOKENS = "-/npm/v1/tokens"
TOKEN = "-/npm/v1/tokens/token/"
WEB_LOGIN = ("-/v1/login", "-/v1/login/cli")
SHOWN = 10
"""How much of a token a listing shows: ``npm_`` and 6 of its 36 random characters."""
MAX_PER_PAGE = 100
MAX_PASSWORD = 1024

_USER_NAME = re.compile(r"[a-z0-9_-][a-z0-9._~-]{0,213}")
_EMAIL = re.compile(r"[^\s@<>()\[\]\\,;:\"]+@[^\s@<>()\[\]\\,;:\"]+\.[^\s@<>()\[\]\\,;:\"]+")
_KEY = re.compile(r"[0-9a-f]{128}")

REGISTRATION_OFF = (
    "this registry does not let npm adduser create users: ask an administrator"
    " (entrepot user add {name})"
)


def check_user_name(name: str) -> str:
    """npm's user name rules (npm-user-validate): lower case, URL-safe, not starting with a
    dot, at most 214 characters."""
    if not _USER_NAME.fullmatch(name):
        raise InvalidRequestError(
            f"invalid user name {name[:60]!r}: lower-case letters, digits and . _ ~ -"
            " (not first: .), at most 214 characters"
        )
    return name


def check_email(email: str) -> str:
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise InvalidRequestError(f"invalid email address {email[:60]!r}")
    return email


def check_new_password(password: str) -> str:
    if not password:
        raise InvalidRequestError("the password is empty")
    if len(password) > MAX_PASSWORD:
        raise InvalidRequestError(f"the password is longer than {MAX_PASSWORD} characters")
    return password


def iso(when: datetime) -> str:
    """npm's timestamps: ``2026-03-01T12:00:00.000Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def user_rev(user: UserRecord) -> str:
    """The couch ``_rev`` of a user document: its write count, then a tag of its state."""
    return f"{user.rev}-{int(user.updated.timestamp() * 1000):x}"


def public_user(user: UserRecord) -> dict[str, Any]:
    """The user document anyone may read: no password field of any kind, no admin flag."""
    doc: dict[str, Any] = {
        "_id": f"org.couchdb.user:{user.name}",
        "_rev": user_rev(user),
        "name": user.name,
        "email": user.email,
        "type": "user",
        "roles": list(user.roles),
        "date": iso(user.updated),
        "created": iso(user.created),
    }
    for field in ("fullname", "homepage", "github", "twitter", "avatar"):
        value = user.profile.get(field)
        if isinstance(value, str):
            doc[field] = value
    return doc


def token_json(record: TokenRecord, *, token: str) -> dict[str, Any]:
    """A token as npm's token API shows it. ``name``: what it may do (tokens have no name of
    their own here); ``cidr_whitelist``: null when unlimited, as npm's registry answers (npm
    prints an empty "with IP whitelist" line for an empty list)."""
    return {
        "token": token,
        "key": record.key,
        "name": "read-only" if record.readonly else "read-write",
        "cidr_whitelist": list(record.cidrs) or None,
        "readonly": record.readonly,
        "created": iso(record.created),
        "updated": iso(record.updated),
    }


def answer(status: int, doc: Mapping[str, Any]) -> Response:
    return Response(
        status,
        body=json.dumps(doc).encode(),
        headers={"Content-Type": JSON, "Cache-Control": "no-store"},
    )


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise InvalidRequestError(f"{what}: the body is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidRequestError(f"{what}: the body is not a JSON object")
    return doc


def _string(doc: Mapping[str, Any], field: str, what: str) -> str | None:
    value = doc.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{what}: {field} is not a string")
    return value


def _page(query: str) -> tuple[int, int]:
    params = parse_qs(query)

    def number(name: str, default: int) -> int:
        values = params.get(name)
        if not values:
            return default
        value = values[0]
        if not value.isascii() or not value.isdigit() or len(value) > 6:
            raise InvalidRequestError(f"{name}={value[:20]!r}: want a whole number")
        return int(value)

    per_page = number("perPage", 10)
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequestError(f"perPage={per_page}: want 1 to {MAX_PER_PAGE}")
    return number("page", 0), per_page


def _not_allowed(method: str, rel: str, allowed: str) -> Response:
    response = answer(405, {"error": f"{method} /{rel} is not served", "reason": allowed})
    response.headers["Allow"] = allowed
    return response


class UserEndpoints:
    def __init__(
        self,
        store: RegistryStore,
        auth: Authenticator,
        settings: NpmRegistry,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.auth = auth
        self.settings = settings
        self.now = clock or (lambda: datetime.now(UTC))

    async def endpoint(self, request: Request, rel: str) -> AnyResponse | None:
        method = request.method
        if rel.startswith(LOGOUT):
            _hide(request, rel, LOGOUT)
            if method != "DELETE":
                return _not_allowed(method, LOGOUT + "<token>", "DELETE")
            return await self.logout(request, rel[len(LOGOUT) :])
        if rel.startswith(TOKEN):
            _hide(request, rel, TOKEN)
            if method != "DELETE":
                return _not_allowed(method, TOKEN + "<key>", "DELETE")
            return await self.revoke(request, rel[len(TOKEN) :])
        if rel == TOKENS:
            if method in ("GET", "HEAD"):
                return await self.tokens(request)
            if method == "POST":
                return await self.create_token(request)
            return _not_allowed(method, rel, "GET, HEAD, POST")
        if rel == "-/whoami":
            if method not in ("GET", "HEAD"):
                return _not_allowed(method, rel, "GET, HEAD")
            caller = await self.auth.require(request, write=False)
            return answer(200, {"username": caller.user})
        if rel in WEB_LOGIN:
            # npm falls back to the couch flow on any 4xx, silently.
            raise NotFoundError(
                "web login is not offered by this registry: log in with a name and password"
                " (npm does so by itself)"
            )
        if rel.startswith(COUCH_USER):
            name, sep, _ = rel[len(COUCH_USER) :].partition("/-rev/")
            if method in ("GET", "HEAD") and not sep:
                return await self.user_document(name)
            if method == "PUT":
                if sep:
                    return await self.login(request, name)
                return await self.add_user(request, name)
            return _not_allowed(method, rel, "GET, HEAD, PUT")
        return None

    async def write(self, request: Request, rel: str) -> AnyResponse | None:
        return None

    # -- users ----------------------------------------------------------------------------------

    async def user_document(self, name: str) -> Response:
        user = await self.store.user(name)
        if user is None:
            raise NotFoundError(f"no user {name[:214]} on this registry")
        return answer(200, public_user(user))

    async def add_user(self, request: Request, name: str) -> Response:
        """``npm adduser`` (with an email) and the first step of ``npm login`` (without)."""
        what = f"PUT /-/user/org.couchdb.user:{name[:214]}"
        doc = _object(request.body, what)
        given = _string(doc, "name", what)
        if given is not None and given != name:
            raise InvalidRequestError(f"{what}: the body names another user ({given[:214]!r})")
        password = _string(doc, "password", what)
        if not password:
            raise InvalidRequestError(f"{what}: no password")
        email = _string(doc, "email", what)
        existing = await self.store.user(name)
        if existing is not None:
            if email is None:  # npm login: it goes on with Basic credentials and -rev
                raise ConflictError(f"the user {name} exists: log in with its password")
            try:  # npm adduser of an existing user with its password: a login
                caller = await self.auth.login(request, name, password)
            except UnauthorizedError:
                raise ConflictError(
                    f"the user {name} exists already (and that is not its password): choose"
                    " another name, or log in as it (npm login)"
                ) from None
            return await self._logged_in(caller.user, existing)
        if email is None:
            raise InvalidRequestError(
                f"no user {name} on this registry: "
                + (
                    "create it with npm adduser"
                    if self.settings.self_registration
                    else f"ask an administrator (entrepot user add {name})"
                )
            )
        if not self.settings.self_registration:
            raise ForbiddenError(REGISTRATION_OFF.format(name=name))
        check_user_name(name)
        check_email(email)
        check_new_password(password)
        hashed = await asyncio.to_thread(hash_password, password)
        user = await self.store.create_user(name, email=email, password_hash=hashed, now=self.now())
        return await self._logged_in(name, user)

    async def login(self, request: Request, name: str) -> Response:
        """``PUT .../-rev/<rev>`` with Basic credentials: a fresh token for that user. A token
        cannot stand in for the password (a read-only token would mint a writing one)."""
        caller = await self.auth.require(request, write=False)
        if caller.token_key is not None:
            raise UnauthorizedError("log in with a name and password (npm login), not with a token")
        if caller.user != name:
            raise ForbiddenError(f"logged in as {caller.user}, not as {name}")
        user = await self.store.user(name)
        if user is None:  # removed between the two reads
            raise UnauthorizedError("Name or password is incorrect.")
        return await self._logged_in(name, user)

    async def _logged_in(self, name: str, user: UserRecord) -> Response:
        token = await self._new_token(name, readonly=False, cidrs=())
        return answer(
            201,
            {
                "ok": True,
                "id": f"org.couchdb.user:{name}",
                "rev": user_rev(user),
                "token": token[0],
            },
        )

    async def logout(self, request: Request, token: str) -> Response:
        caller = await self.auth.require(request, write=False)
        if not await self.store.revoke_token(caller.user, token_key(token)):
            raise NotFoundError("no such token of yours: it was revoked already")
        return answer(200, {"ok": True})

    # -- tokens ---------------------------------------------------------------------------------

    async def _new_token(
        self, user: str, *, readonly: bool, cidrs: tuple[str, ...] | list[str]
    ) -> tuple[str, TokenRecord]:
        token = new_token()
        record = await self.store.create_token(
            token_key(token),
            user=user,
            prefix=token[:SHOWN],
            readonly=readonly,
            cidrs=cidrs,
            now=self.now(),
        )
        return token, record

    async def create_token(self, request: Request) -> Response:
        what = "POST /-/npm/v1/tokens"
        caller = await self.auth.require(request, write=True)
        doc = _object(request.body, what)
        password = _string(doc, "password", what)
        if not password:
            raise InvalidRequestError(f"{what}: give your password (npm token create asks)")
        await self.auth.login(request, caller.user, password)
        readonly = _readonly(doc, what)
        cidrs = _cidrs(doc.get("cidr_whitelist"), what)
        if doc.get("expires") is not None:
            raise InvalidRequestError(
                "tokens do not expire on this registry: create one without --expires, and"
                " revoke it when done (npm token revoke)"
            )
        for field in ("packages", "scopes", "orgs", "packages_all"):
            if doc.get(field):
                raise InvalidRequestError(
                    "tokens limited to packages, scopes or organizations are not offered here:"
                    " a token acts for its user (use --packages-and-scopes-permission read-only"
                    " and --cidr to limit one)"
                )
        token, record = await self._new_token(caller.user, readonly=readonly, cidrs=cidrs)
        return answer(201, token_json(record, token=token))

    async def tokens(self, request: Request) -> Response:
        caller = await self.auth.require(request, write=False)
        page, per_page = _page(request.query)
        records = await self.store.tokens(caller.user, page=page, per_page=per_page)
        urls: dict[str, str] = {}
        # one more row after this page? (a page of one is an offset)
        after = (page + 1) * per_page
        if len(records) == per_page and await self.store.tokens(
            caller.user, page=after, per_page=1
        ):
            urls["next"] = f"{TOKENS}?perPage={per_page}&page={page + 1}"
        objects = [token_json(r, token=r.prefix) for r in records]
        return answer(200, {"objects": objects, "total": None, "urls": urls})

    async def revoke(self, request: Request, ident: str) -> Response:
        """By key (what npm sends after matching an id in its list), or by the token itself."""
        key = ident if _KEY.fullmatch(ident) else token_key(ident)
        caller = await self.auth.caller(request)
        if caller is None:
            raise UnauthorizedError("log in first: npm login --registry <this registry>")
        if caller.readonly and caller.token_key != key:
            raise ForbiddenError("this token is read-only: it can revoke only itself")
        if not await self.store.revoke_token(caller.user, key):
            raise NotFoundError("you have no such token (npm token list shows yours)")
        return Response(204, headers={"Cache-Control": "no-store"})


def _readonly(doc: Mapping[str, Any], what: str) -> bool:
    readonly = doc.get("readonly", False)
    if not isinstance(readonly, bool):
        raise InvalidRequestError(f"{what}: readonly is not true or false")
    permission = doc.get("packages_and_scopes_permission")
    if permission in (None, "read-write"):
        return readonly
    if permission == "read-only":
        return True
    raise InvalidRequestError(
        f"{what}: packages_and_scopes_permission {str(permission)[:20]!r}: this registry"
        " offers read-only and read-write tokens"
    )


def _cidrs(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequestError(f"{what}: cidr_whitelist is not a list of CIDR ranges")
    if len(value) > 64:
        raise InvalidRequestError(f"{what}: more than 64 CIDR ranges")
    try:
        networks = parse_networks(value)
    except ValueError as e:
        raise InvalidRequestError(f"{what}: cidr_whitelist: {e}") from None
    return [str(n) for n in networks]


def _hide(request: Request, rel: str, head: str) -> None:
    """The path without the token it holds: the access log prints ``request.path``."""
    secret = rel[len(head) :]
    if secret and not _KEY.fullmatch(secret):
        request.path = request.path[: len(request.path) - len(secret)] + "***"


async def set_user(
    store: RegistryStore,
    name: str,
    password: str,
    *,
    now: datetime,
    email: str = "",
    admin: bool = False,
    update: bool = False,
) -> str:
    """Create ``name`` with ``password`` (what ``entrepot user add`` and the administrator's
    Secret do); ``update``: an existing user gets this password (and ``admin`` when set)
    instead of a ConflictError. Answers what was done: "created", "updated" or "unchanged"
    (the password was already that one: nothing written)."""
    check_user_name(name)
    check_new_password(password)
    if email:
        check_email(email)
    existing = await store.user(name)
    if existing is not None and not update:
        raise ConflictError(f"the user {name} exists already (--update-password sets its password)")
    if existing is None:
        hashed = await asyncio.to_thread(hash_password, password)
        await store.create_user(name, email=email, password_hash=hashed, now=now, admin=admin)
        return "created"
    same = await asyncio.to_thread(check_password, password, existing.password_hash)
    promote = admin and not existing.admin
    new_email = email if email and email != existing.email else None
    if same and not promote and new_email is None:
        return "unchanged"
    new_hash = None if same else await asyncio.to_thread(hash_password, password)
    await store.update_user(
        name, now=now, password_hash=new_hash, admin=True if promote else None, email=new_email
    )
    return "updated"


def prepare_admin(settings: Settings) -> str | None:
    """Once at start, in the parent before workers fork (after the migrations): the
    administrator from ``npm.registry.admin_password_file`` is created, or given that password
    (and the admin flag) when it changed. None when there is nothing to do; otherwise what was
    done, for the log. The password never reaches a log or an error message.

    Here, not in :mod:`entrepot.app`: the parent must not import the metrics (prometheus_client
    reads its multiprocess setting when first imported, which the parent sets later)."""
    registry = settings.npm.registry
    path = registry.admin_password_file
    if not (settings.npm.enabled and registry.enabled) or path is None:
        return None
    try:
        password = path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"npm.registry.admin_password_file: cannot read {path}: {e}") from e
    if not password:
        raise ConfigError(f"npm.registry.admin_password_file: {path} is empty")

    async def run() -> str:
        store = open_registry_store(settings.stats.database, settings.data_dir)
        try:
            return await set_user(
                store,
                registry.admin_user,
                password,
                now=datetime.now(UTC),
                admin=True,
                update=True,
            )
        finally:
            await store.close()

    try:
        try:
            done = asyncio.run(run())
        except ConflictError:  # another replica created it at the same moment
            done = asyncio.run(run())
    except InvalidRequestError as e:
        raise ConfigError(f"npm.registry.admin_user {registry.admin_user}: {e.message}") from e
    return f"npm registry administrator {registry.admin_user}: {done}"
