"""The registry's users and tokens (entrepot.npm.users) on the real RegistryStore (SQLite in
tmp_path) and Authenticator: the calls the npm CLI makes for adduser, login, whoami, logout
and token create|list|revoke, as tests/integration/test_npm_users.py drives them with the
real npm; and the administrator set from its file at start (entrepot.npm.users.prepare_admin)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from entrepot.config import NpmRegistry, load_settings
from entrepot.errors import (
    ConfigError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
)
from entrepot.npm.auth import check_password, token_key
from entrepot.npm.handlers import json_error
from entrepot.npm.registry_auth import WRONG, Authenticator
from entrepot.npm.registrystore import RegistryStore, open_registry_store
from entrepot.npm.users import UserEndpoints, prepare_admin, set_user
from entrepot.sql.migrate import migrate
from entrepot.web.http import Request, Response

PREFIX = "/npm"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    migrate(None, tmp_path)
    return tmp_path


@pytest.fixture
async def store(migrated: Path) -> AsyncIterator[RegistryStore]:
    s = open_registry_store(None, migrated)
    yield s
    await s.close()


def make(store: RegistryStore, clock: Clock | None = None, **settings: Any) -> UserEndpoints:
    registry = NpmRegistry(**settings)
    auth = Authenticator(store, registry, clock=clock or Clock())
    return UserEndpoints(store, auth, registry, clock=lambda: T0)


def request(
    method: str,
    rel: str,
    *,
    body: object = None,
    token: str | None = None,
    basic: tuple[str, str] | None = None,
    remote: str = "127.0.0.1",
    query: str = "",
    headers: dict[str, str] | None = None,
) -> Request:
    fields = dict(headers or {})
    if token is not None:
        fields["authorization"] = f"Bearer {token}"
    if basic is not None:
        fields["authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
    raw = b"" if body is None else json.dumps(body).encode()
    return Request(method, f"{PREFIX}/{rel}", fields, query=query, remote=remote, body=raw)


async def call(users: UserEndpoints, req: Request) -> tuple[int, Any]:
    rel = req.path[len(PREFIX) + 1 :]
    answer = await users.endpoint(req, rel)
    assert isinstance(answer, Response), rel
    return answer.status, json.loads(answer.body) if answer.body else None


def adduser_body(name: str, password: str = PASSWORD, email: str | None = "a@example.com") -> Any:
    body = {"_id": f"org.couchdb.user:{name}", "name": name, "password": password}
    body |= {"type": "user", "roles": [], "date": "2026-03-01T12:00:00.000Z"}
    if email is not None:
        body["email"] = email
    return body


async def adduser(users: UserEndpoints, name: str = "alice") -> str:
    status, doc = await call(
        users, request("PUT", f"-/user/org.couchdb.user:{name}", body=adduser_body(name))
    )
    assert status == 201, doc
    return str(doc["token"])


async def whoami(users: UserEndpoints, token: str, **kw: Any) -> str:
    status, doc = await call(users, request("GET", "-/whoami", token=token, **kw))
    assert status == 200
    return str(doc["username"])


# -- adduser, login, the user document -------------------------------------------------------


async def test_adduser_creates_the_user_with_a_hashed_password_and_a_working_token(
    store: RegistryStore,
) -> None:
    users = make(store)
    status, doc = await call(
        users, request("PUT", "-/user/org.couchdb.user:alice", body=adduser_body("alice"))
    )
    assert status == 201
    assert doc["ok"] is True
    assert doc["id"] == "org.couchdb.user:alice"
    assert doc["rev"].startswith("1-")
    assert doc["token"].startswith("npm_")
    assert await whoami(users, doc["token"]) == "alice"
    stored = await store.user("alice")
    assert stored is not None
    assert stored.email == "a@example.com"
    assert not stored.admin
    assert PASSWORD not in stored.password_hash
    assert check_password(PASSWORD, stored.password_hash)
    (record,) = await store.tokens("alice")
    assert record.key == token_key(doc["token"])
    assert not record.readonly


async def test_the_user_document_is_public_and_never_holds_the_hash(store: RegistryStore) -> None:
    users = make(store)
    await adduser(users)
    status, doc = await call(users, request("GET", "-/user/org.couchdb.user:alice"))
    assert status == 200
    assert doc["name"] == "alice"
    assert doc["_id"] == "org.couchdb.user:alice"
    assert doc["_rev"].startswith("1-")
    assert doc["type"] == "user"
    text = json.dumps(doc)
    assert "scrypt" not in text
    assert "password" not in text
    assert "admin" not in text
    with pytest.raises(NotFoundError):
        await call(users, request("GET", "-/user/org.couchdb.user:nobody"))


async def test_login_of_an_existing_user_is_a_409_then_basic_on_the_rev(
    store: RegistryStore,
) -> None:
    """npm login: PUT without email → 409; GET ?write=true; PUT /-rev/<rev> with Basic."""
    users = make(store)
    first = await adduser(users)
    body = adduser_body("alice", email=None)
    with pytest.raises(ConflictError):
        await call(users, request("PUT", "-/user/org.couchdb.user:alice", body=body))
    _, doc = await call(users, request("GET", "-/user/org.couchdb.user:alice", query="write=true"))
    rev = doc["_rev"]
    path = f"-/user/org.couchdb.user:alice/-rev/{rev}"
    with pytest.raises(UnauthorizedError) as wrong:
        await call(users, request("PUT", path, body=body, basic=("alice", "nope")))
    assert wrong.value.message == WRONG
    # the body's password is never taken as a new one: the -rev PUT logs in, nothing more
    changed = body | {"password": "a new password", "email": "new@example.com"}
    status, done = await call(users, request("PUT", path, body=changed, basic=("alice", PASSWORD)))
    assert status == 201
    assert done["token"] != first
    assert await whoami(users, done["token"]) == "alice"
    stored = await store.user("alice")
    assert stored is not None
    assert check_password(PASSWORD, stored.password_hash)
    assert stored.email == "a@example.com"
    assert stored.rev == 1


async def test_a_token_cannot_stand_in_for_the_password_on_login(store: RegistryStore) -> None:
    users = make(store)
    token = await adduser(users)
    path = "-/user/org.couchdb.user:alice/-rev/1-0"
    with pytest.raises(UnauthorizedError, match="not with a token"):
        await call(users, request("PUT", path, body=adduser_body("alice"), token=token))
    await adduser(users, "bob")
    with pytest.raises(ForbiddenError, match="not as alice"):
        await call(users, request("PUT", path, body={}, basic=("bob", PASSWORD)))


async def test_adduser_of_an_existing_user_logs_in_with_its_password_only(
    store: RegistryStore,
) -> None:
    """npm's documented quirk: adding an existing user with its password is a login."""
    users = make(store)
    await adduser(users)
    token = await adduser(users)  # the same name and password again
    assert await whoami(users, token) == "alice"
    with pytest.raises(ConflictError, match="not its password"):
        await call(
            users,
            request("PUT", "-/user/org.couchdb.user:alice", body=adduser_body("alice", "other")),
        )


async def test_login_of_an_unknown_user_is_npm_s_400(store: RegistryStore) -> None:
    users = make(store)
    body = adduser_body("ghost", email=None)
    with pytest.raises(InvalidRequestError, match="npm adduser"):
        await call(users, request("PUT", "-/user/org.couchdb.user:ghost", body=body))
    assert await store.user("ghost") is None


async def test_without_self_registration_only_an_administrator_adds_users(
    store: RegistryStore,
) -> None:
    users = make(store, self_registration=False)
    with pytest.raises(ForbiddenError, match="entrepot user add carol"):
        await call(
            users, request("PUT", "-/user/org.couchdb.user:carol", body=adduser_body("carol"))
        )
    with pytest.raises(InvalidRequestError, match="ask an administrator"):
        await call(
            users,
            request("PUT", "-/user/org.couchdb.user:carol", body=adduser_body("carol", email=None)),
        )
    assert await store.user("carol") is None
    assert await set_user(store, "carol", PASSWORD, now=T0) == "created"
    token = await adduser(users, "carol")  # the existing user logs in
    assert await whoami(users, token) == "carol"


@pytest.mark.parametrize(
    ("name", "body", "match"),
    [
        ("Alice", adduser_body("Alice"), "invalid user name"),
        (".alice", adduser_body(".alice"), "invalid user name"),
        ("a%2Fb", adduser_body("a%2Fb"), "invalid user name"),
        ("alice", adduser_body("alice", email="not-an-email"), "invalid email"),
        ("alice", adduser_body("alice", password=""), "no password"),
        ("alice", adduser_body("bob"), "names another user"),
        ("alice", ["not", "an", "object"], "not a JSON object"),
    ],
)
async def test_bad_new_users_are_refused_with_a_reason(
    store: RegistryStore, name: str, body: object, match: str
) -> None:
    users = make(store)
    with pytest.raises(InvalidRequestError, match=match):
        await call(users, request("PUT", f"-/user/org.couchdb.user:{name}", body=body))


async def test_web_login_answers_a_4xx_so_npm_falls_back(store: RegistryStore) -> None:
    users = make(store)
    with pytest.raises(NotFoundError) as e:
        await call(users, request("POST", "-/v1/login", body={}))
    assert 400 <= json_error(e.value).status < 500


async def test_other_paths_are_not_this_part_s(store: RegistryStore) -> None:
    users = make(store)
    for rel in ("-/v1/search", "-/ping", "-/npm/v1/keys", "-/all/since"):
        assert await users.endpoint(request("GET", rel), rel) is None
    assert await users.write(request("PUT", "x"), "/x") is None


# -- whoami, logout --------------------------------------------------------------------------


async def test_whoami_needs_credentials(store: RegistryStore) -> None:
    users = make(store)
    with pytest.raises(UnauthorizedError):
        await call(users, request("GET", "-/whoami"))
    with pytest.raises(UnauthorizedError):
        await call(users, request("GET", "-/whoami", token="npm_madeup"))


async def test_logout_revokes_that_token_and_keeps_it_out_of_the_log(
    store: RegistryStore,
) -> None:
    users = make(store)
    token = await adduser(users)
    other = await adduser(users)
    req = request("DELETE", f"-/user/token/{token}", token=token)
    status, doc = await call(users, req)
    assert status == 200
    assert doc == {"ok": True}
    assert token not in req.path
    assert req.path == f"{PREFIX}/-/user/token/***"
    with pytest.raises(UnauthorizedError):
        await whoami(users, token)
    assert await whoami(users, other) == "alice"
    with pytest.raises(NotFoundError):  # already gone
        await call(users, request("DELETE", f"-/user/token/{token}", token=other))


async def test_logout_cannot_revoke_another_user_s_token(store: RegistryStore) -> None:
    users = make(store)
    alice = await adduser(users)
    bob = await adduser(users, "bob")
    with pytest.raises(NotFoundError):
        await call(users, request("DELETE", f"-/user/token/{alice}", token=bob))
    assert await whoami(users, alice) == "alice"


# -- tokens ----------------------------------------------------------------------------------


async def create_token(
    users: UserEndpoints, token: str, body: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    status, doc = await call(
        users,
        request("POST", "-/npm/v1/tokens", body={"password": PASSWORD} | body, token=token, **kw),
    )
    assert status == 201, doc
    return dict(doc)


async def test_token_create_checks_the_password(store: RegistryStore) -> None:
    users = make(store)
    token = await adduser(users)
    with pytest.raises(UnauthorizedError):
        await call(
            users,
            request("POST", "-/npm/v1/tokens", body={"password": "wrong"}, token=token),
        )
    with pytest.raises(InvalidRequestError, match="password"):
        await call(users, request("POST", "-/npm/v1/tokens", body={}, token=token))
    with pytest.raises(UnauthorizedError):
        await call(users, request("POST", "-/npm/v1/tokens", body={"password": PASSWORD}))
    doc = await create_token(users, token, {"readonly": False, "cidr_whitelist": []})
    assert doc["token"].startswith("npm_")
    assert doc["key"] == token_key(doc["token"])
    assert doc["readonly"] is False
    assert doc["cidr_whitelist"] is None
    assert doc["created"] == "2026-03-01T12:00:00.000Z"
    assert await whoami(users, doc["token"]) == "alice"


@pytest.mark.parametrize(
    "body",
    [
        {"readonly": True},  # the token API's own field (pnpm, scripts)
        {"name": None, "packages_and_scopes_permission": "read-only"},  # what npm 11 sends
    ],
)
async def test_a_read_only_token_cannot_write(store: RegistryStore, body: dict[str, Any]) -> None:
    users = make(store)
    token = await adduser(users)
    readonly = (await create_token(users, token, body))["token"]
    assert await whoami(users, readonly) == "alice"  # reads work
    with pytest.raises(ForbiddenError, match="read-only"):
        await create_token(users, readonly, {})
    with pytest.raises(ForbiddenError, match="read-only"):
        await users.auth.require(request("PUT", "-/x", token=readonly), write=True)
    (listed,) = [t for t in await store.tokens("alice") if t.key == token_key(readonly)]
    assert listed.readonly


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"cidr_whitelist": ["10.0.0.0/33"]}, "not an IP address or CIDR"),
        ({"cidr_whitelist": "10.0.0.0/8"}, "not a list"),
        ({"readonly": "yes"}, "readonly"),
        ({"packages_and_scopes_permission": "no-access"}, "read-only and read-write"),
        ({"expires": 30}, "do not expire"),
        ({"packages": ["left-pad"]}, "not offered"),
    ],
)
async def test_tokens_this_registry_cannot_keep_are_refused(
    store: RegistryStore, body: dict[str, Any], match: str
) -> None:
    users = make(store)
    token = await adduser(users)
    with pytest.raises(InvalidRequestError, match=match):
        await create_token(users, token, body)
    assert len(await store.tokens("alice")) == 1


async def test_a_cidr_limited_token_works_from_its_ranges_only(store: RegistryStore) -> None:
    users = make(store, trusted_proxies=["10.9.9.9"])
    token = await adduser(users)
    doc = await create_token(users, token, {"cidr_whitelist": ["192.168.1.0/24"]})
    limited = doc["token"]
    assert doc["cidr_whitelist"] == ["192.168.1.0/24"]
    assert await whoami(users, limited, remote="192.168.1.7") == "alice"
    with pytest.raises(ForbiddenError, match=r"192\.168\.1\.0/24"):
        await whoami(users, limited, remote="127.0.0.1")
    # a forged X-Forwarded-For from a peer that is not a trusted proxy changes nothing
    forged = {"x-forwarded-for": "192.168.1.7"}
    with pytest.raises(ForbiddenError):
        await whoami(users, limited, remote="127.0.0.1", headers=forged)
    # through the trusted proxy, the address it saw is the client's
    assert await whoami(users, limited, remote="10.9.9.9", headers=forged) == "alice"
    with pytest.raises(ForbiddenError):
        await whoami(users, limited, remote="10.9.9.9", headers={"x-forwarded-for": "8.8.8.8"})


async def test_token_list_shows_the_caller_s_tokens_masked_page_by_page(
    store: RegistryStore,
) -> None:
    users = make(store)
    token = await adduser(users)
    made = [(await create_token(users, token, {}))["token"] for _ in range(2)]
    await adduser(users, "bob")
    status, doc = await call(users, request("GET", "-/npm/v1/tokens", token=token))
    assert status == 200
    objects = doc["objects"]
    assert len(objects) == 3
    assert doc["urls"] == {}
    assert {o["key"] for o in objects} == {token_key(t) for t in [token, *made]}
    for o in objects:
        assert len(o["token"]) == 10
        assert o["token"].startswith("npm_")
        assert set(o) >= {"key", "cidr_whitelist", "readonly", "created", "updated"}
    text = json.dumps(doc)
    assert all(t not in text for t in [token, *made])
    _, first = await call(
        users, request("GET", "-/npm/v1/tokens", token=token, query="perPage=2&page=0")
    )
    assert len(first["objects"]) == 2
    assert first["urls"]["next"] == "-/npm/v1/tokens?perPage=2&page=1"
    _, second = await call(
        users, request("GET", "-/npm/v1/tokens", token=token, query="perPage=2&page=1")
    )
    assert len(second["objects"]) == 1
    assert second["urls"] == {}
    with pytest.raises(InvalidRequestError):
        await call(users, request("GET", "-/npm/v1/tokens", token=token, query="perPage=0"))


async def test_revoke_by_key_or_by_value_and_only_one_s_own(store: RegistryStore) -> None:
    users = make(store)
    token = await adduser(users)
    by_key = (await create_token(users, token, {}))["token"]
    by_value = (await create_token(users, token, {}))["token"]
    bob = await adduser(users, "bob")
    # bob cannot revoke alice's, by key or by value
    for ident in (token_key(by_key), by_value):
        with pytest.raises(NotFoundError):
            await call(users, request("DELETE", f"-/npm/v1/tokens/token/{ident}", token=bob))
    req = request("DELETE", f"-/npm/v1/tokens/token/{token_key(by_key)}", token=token)
    assert (await call(users, req))[0] == 204
    assert token_key(by_key) in req.path  # a key is not a secret: kept in the log
    req = request("DELETE", f"-/npm/v1/tokens/token/{by_value}", token=token)
    assert (await call(users, req))[0] == 204
    assert by_value not in req.path
    for gone in (by_key, by_value):
        with pytest.raises(UnauthorizedError):
            await whoami(users, gone)
    assert await whoami(users, token) == "alice"


async def test_a_read_only_token_revokes_itself_only(store: RegistryStore) -> None:
    users = make(store)
    token = await adduser(users)
    readonly = (await create_token(users, token, {"readonly": True}))["token"]
    with pytest.raises(ForbiddenError):
        await call(
            users,
            request("DELETE", f"-/npm/v1/tokens/token/{token_key(token)}", token=readonly),
        )
    req = request("DELETE", f"-/npm/v1/tokens/token/{token_key(readonly)}", token=readonly)
    assert (await call(users, req))[0] == 204


# -- failed logins ---------------------------------------------------------------------------


async def test_failed_logins_are_limited_with_retry_after(store: RegistryStore) -> None:
    clock = Clock()
    users = make(store, clock, login_attempts=3, login_window=60)
    await adduser(users)
    path = "-/user/org.couchdb.user:alice/-rev/1-0"
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            await call(users, request("PUT", path, body={}, basic=("alice", "guess")))
    with pytest.raises(RateLimitedError) as limited:  # even the right password now
        await call(users, request("PUT", path, body={}, basic=("alice", PASSWORD)))
    response = json_error(limited.value)
    assert response.status == 429
    assert response.headers["Retry-After"] == "61"
    # the token API's password counts too
    token, _ = await users._new_token("alice", readonly=False, cidrs=())  # straight in
    with pytest.raises(RateLimitedError):
        await create_token(users, token, {"password": "guess"}, remote="10.1.1.1")
    clock.now += 61
    status, _ = await call(users, request("PUT", path, body={}, basic=("alice", PASSWORD)))
    assert status == 201


async def test_failed_logins_are_counted_across_workers(store: RegistryStore) -> None:
    """Two workers (or replicas) on one store: the guesser's failures add up in both."""
    clock = Clock()
    one = make(store, clock, login_attempts=4, login_window=60)
    two = make(store, clock, login_attempts=4, login_window=60)
    await adduser(one)
    path = "-/user/org.couchdb.user:alice/-rev/1-0"
    for worker in (one, two, one, two):
        with pytest.raises(UnauthorizedError):
            await call(worker, request("PUT", path, body={}, basic=("alice", "guess")))
    for worker in (one, two):
        with pytest.raises(RateLimitedError):
            await call(worker, request("PUT", path, body={}, basic=("alice", PASSWORD)))
    # A success clears the user's count (after the window here), for every worker.
    clock.now += 61
    status, _ = await call(two, request("PUT", path, body={}, basic=("alice", PASSWORD)))
    assert status == 201
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            await call(one, request("PUT", path, body={}, basic=("alice", "guess")))
    status, _ = await call(two, request("PUT", path, body={}, basic=("alice", PASSWORD)))
    assert status == 201


# -- set_user, the administrator -------------------------------------------------------------


async def test_set_user_creates_refuses_or_updates(store: RegistryStore) -> None:
    assert await set_user(store, "dave", PASSWORD, now=T0, email="d@example.com") == "created"
    with pytest.raises(ConflictError, match="--update-password"):
        await set_user(store, "dave", "another", now=T0)
    assert await set_user(store, "dave", PASSWORD, now=T0, update=True) == "unchanged"
    assert await set_user(store, "dave", "another", now=T0, update=True) == "updated"
    assert await set_user(store, "dave", "another", now=T0, admin=True, update=True) == "updated"
    user = await store.user("dave")
    assert user is not None
    assert user.admin
    assert check_password("another", user.password_hash)
    assert user.email == "d@example.com"
    with pytest.raises(InvalidRequestError):
        await set_user(store, "Dave", PASSWORD, now=T0)
    with pytest.raises(InvalidRequestError):
        await set_user(store, "erin", "", now=T0)


def test_the_administrator_comes_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "admin-password"
    secret.write_text("s3cret admin\n")
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path / "data"),
            "go": {"enabled": False},
            "npm": {
                "upstream": "http://127.0.0.1:9/",
                "registry": {"admin_user": "root", "admin_password_file": str(secret)},
            },
        },
        environ={},
    )
    migrate(None, settings.data_dir)
    assert prepare_admin(settings) == "npm registry administrator root: created"
    assert prepare_admin(settings) == "npm registry administrator root: unchanged"
    secret.write_text("rotated\n")
    assert prepare_admin(settings) == "npm registry administrator root: updated"

    async def read() -> Any:
        s = open_registry_store(None, settings.data_dir)
        try:
            return await s.user("root")
        finally:
            await s.close()

    root = asyncio.run(read())
    assert root.admin
    assert check_password("rotated", root.password_hash)
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        prepare_admin(settings)
    secret.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        prepare_admin(settings)
    unset = settings.model_copy(
        update={"npm": settings.npm.model_copy(update={"registry": NpmRegistry()})}
    )
    assert prepare_admin(unset) is None
