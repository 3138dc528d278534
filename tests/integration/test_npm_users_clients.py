"""The private registry's users and tokens through the real npm CLI: ``npm adduser`` (a new
user), ``npm login`` (an existing one: a wrong password, then the right one), ``npm whoami``,
``npm token create|list|revoke`` (read-only and CIDR-limited tokens), ``npm logout`` (then
``whoami`` fails), failed logins limited, self-registration off with the administrator from
its file, and ``entrepot user add`` then ``npm login`` as that user. ``yarn npm login`` and
``yarn npm whoami`` once (pnpm hands login, whoami and token to npm).

npm reads a user's name and password from a terminal: the prompts are answered through a
pseudo-terminal, as a person would (a pipe loses the password: npm's ``read`` never sees it).
Each client keeps its own user config (``user.npmrc``), where ``npm login`` writes the token
(``//127.0.0.1:PORT/npm/:_authToken=``). After each session the server's log (access log
and all) must hold none of the tokens or passwords used.
"""

from __future__ import annotations

import base64
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support import jsclients
from support.npmcli import JsClient
from support.servers import Server, running_server, server_env

pytestmark = pytest.mark.integration

NO_UPSTREAM = {"ENTREPOT_NPM__UPSTREAM": "http://127.0.0.1:9/", "ENTREPOT_GO__ENABLED": "false"}
ALICE_PASSWORD = "alice-Pa55-word"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\u2800-\u28ff]")


@pytest.fixture(scope="module", autouse=True)
def need_npm() -> None:
    if isinstance(result := jsclients.npm_bin(), jsclients.Missing):
        pytest.fail(f"npm is needed for this test: {result.reason}")


def registry(server: Server) -> str:
    return server.url + "/npm/"


def user(tmp: Path, name: str, server: Server) -> JsClient:
    """A person with their own npm user config (``JsClient`` rewrites ``.npmrc`` each run:
    the token ``npm login`` saves lives in ``user.npmrc``)."""
    home = tmp / name
    return JsClient(
        home, registry(server), extra_env={"npm_config_userconfig": str(home / "user.npmrc")}
    )


def saved_token(client: JsClient) -> str | None:
    config = client.home / "user.npmrc"
    text = config.read_text() if config.exists() else ""
    m = re.search(r":_authToken=(\S+)", text)
    return m.group(1) if m else None


def prompted(
    client: JsClient, args: Sequence[str], answers: Sequence[tuple[str, str]], timeout: float = 60
) -> tuple[int, str]:
    """Run npm on a pseudo-terminal, answering each prompt (in order) as it appears; the exit
    code and the screen's text."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [*client.command("npm"), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=client.home,
        env=client.env(),
        start_new_session=True,
    )
    os.close(slave)
    screen, answered, pending = b"", 0, list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other end closed: npm is done
                    break
                if not chunk:
                    break
                screen += chunk
            if pending and pending[0][0].encode() in screen[answered:]:
                os.write(master, pending.pop(0)[1].encode() + b"\r")
                answered = len(screen)
            elif not ready and proc.poll() is not None:
                break
        else:
            raise AssertionError(f"npm {' '.join(args)} did not finish in {timeout}s:\n{screen!r}")
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, _ANSI.sub("", screen.decode(errors="replace"))


def adduser(client: JsClient, name: str, password: str, email: str) -> tuple[int, str]:
    answers = [("Username:", name), ("Password:", password), ("Email", email)]
    return prompted(client, ["adduser"], answers)


def login(client: JsClient, name: str, password: str) -> tuple[int, str]:
    return prompted(client, ["login"], [("Username:", name), ("Password:", password)])


def npm(client: JsClient, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return client.run("npm", *args, cwd=client.home, check=check)


def whoami(client: JsClient) -> str:
    return npm(client, "whoami").stdout.strip()


def never_logged(server: Server, secrets: Sequence[str]) -> None:
    time.sleep(1.5)  # the access log is flushed every second
    log = server.log()
    assert "/npm/-/user/org.couchdb.user:" in log  # the access log is there
    leaked = [s for s in secrets if s and s in log]
    assert not leaked, f"in the server log: {leaked}"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Self-registration on (the default), no trusted proxy."""
    tmp = tmp_path_factory.mktemp("open")
    with running_server(tmp, env=NO_UPSTREAM, args=["--workers", "2"]) as server:
        yield server


@dataclass
class Alice:
    """The module's first user, made by ``npm adduser``; every secret the tests used."""

    client: JsClient
    first: str
    secrets: list[str]


@pytest.fixture(scope="module")
def alice(open_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Alice:
    client = user(tmp_path_factory.mktemp("people"), "alice", open_server)
    code, screen = adduser(client, "alice", ALICE_PASSWORD, "alice@example.com")
    assert code == 0, screen
    assert f"Logged in on {registry(open_server)}" in screen
    first = saved_token(client)
    assert first is not None
    return Alice(client, first, [ALICE_PASSWORD, first])


def with_token(tmp: Path, name: str, server: Server, token: str) -> JsClient:
    """A client whose user config holds ``token`` for the server, as npm login leaves it."""
    client = user(tmp, name, server)
    client.home.mkdir(parents=True, exist_ok=True)
    host = server.url.removeprefix("http://")
    (client.home / "user.npmrc").write_text(f"//{host}/npm/:_authToken={token}\n")
    return client


def created(client: JsClient, *args: str) -> str:
    """``npm token create ARGS``: the new token."""
    made = npm(client, "token", "create", "--password", ALICE_PASSWORD, *args).stdout
    found = re.search(r"Created token (npm_\w+)", made)
    assert found, made
    return found[1]


def fails(done: subprocess.CompletedProcess[str] | tuple[int, str], *texts: str) -> None:
    """npm exited non-zero and said each of ``texts``."""
    code, said = done if isinstance(done, tuple) else (done.returncode, done.stderr)
    assert code != 0, said
    missing = [t for t in texts if t not in " ".join(said.split())]
    assert not missing, said


def test_adduser_creates_the_user_and_logs_in(open_server: Server, alice: Alice) -> None:
    assert alice.first.startswith("npm_")
    assert whoami(alice.client) == "alice"
    doc = httpx.get(registry(open_server) + "-/user/org.couchdb.user:alice").json()
    assert doc["name"] == "alice"
    assert doc["email"] == "alice@example.com"
    assert "password" not in str(doc)
    assert "scrypt" not in str(doc)


def test_tokens_read_only_and_cidr_limited(
    open_server: Server, alice: Alice, tmp_path: Path
) -> None:
    fails(npm(alice.client, "token", "create", "--password", "not-it", check=False), "401")
    # npm 11 sends no "readonly" for --read-only: this is how it asks for a read-only token
    readonly = created(alice.client, "--packages-and-scopes-permission", "read-only")
    limited = created(alice.client, "--cidr", "10.0.0.0/8")
    alice.secrets += [readonly, limited]
    listed = npm(alice.client, "token", "list", "--parseable").stdout.splitlines()[1:]
    rows = {row.split("\t")[1]: row.split("\t") for row in listed}
    assert set(rows) == {t[:10] for t in (alice.first, readonly, limited)}
    assert rows[readonly[:10]][5] == "true"
    assert rows[limited[:10]][5] == "false"
    assert rows[limited[:10]][6] == "10.0.0.0/8"
    listing = npm(alice.client, "token", "list").stdout
    assert not [t for t in (alice.first, readonly, limited) if t in listing]

    # the read-only token reads but cannot write: neither a token nor a publish
    ro = with_token(tmp_path, "alice-ro", open_server, readonly)
    assert whoami(ro) == "alice"
    fails(npm(ro, "token", "create", "--password", ALICE_PASSWORD, check=False), "403", "read-only")
    package = ro.home / "ro-package"
    package.mkdir()
    (package / "package.json").write_text('{"name": "ro-package", "version": "1.0.0"}\n')
    fails(ro.run("npm", "publish", cwd=package, check=False), "403", "read-only")

    # the CIDR-limited token is refused from 127.0.0.1, even with a forged X-Forwarded-For
    far = with_token(tmp_path, "alice-far", open_server, limited)
    fails(npm(far, "whoami", check=False), "403", "10.0.0.0/8")
    forged = httpx.get(
        registry(open_server) + "-/whoami",
        headers={"Authorization": f"Bearer {limited}", "X-Forwarded-For": "10.1.2.3"},
    )
    assert forged.status_code == 403

    # revoke by the id npm shows, then by the token itself
    ids = {row.split("\t")[1]: row.split("\t")[2] for row in listed}
    removed = npm(alice.client, "token", "revoke", ids[limited[:10]]).stdout
    assert removed.strip() == "Removed 1 token"
    assert npm(alice.client, "token", "revoke", readonly).stdout.strip() == "Removed 1 token"
    fails(npm(ro, "whoami", check=False), "401")
    remaining = npm(alice.client, "token", "list", "--parseable").stdout.splitlines()[1:]
    assert [row.split("\t")[1] for row in remaining] == [alice.first[:10]]


def test_yarn_npm_login_and_whoami(open_server: Server, tmp_path: Path) -> None:
    """yarn Berry logs in by the same couch flow (409, then Basic on -rev); its own test
    switch feeds the name and password that it would otherwise prompt for."""
    if isinstance(result := jsclients.yarn_bin(), jsclients.Missing):
        pytest.fail(f"yarn is needed for this test: {result.reason}")
    made = httpx.put(
        registry(open_server) + "-/user/org.couchdb.user:yuki",
        json={"name": "yuki", "password": "yuki-password", "email": "yuki@example.com"},
    )
    assert made.status_code == 201
    yuki = JsClient(
        tmp_path / "yuki",
        registry(open_server),
        extra_env={
            "YARN_IS_TEST_ENV": "1",
            "YARN_INJECT_NPM_USER": "yuki",
            "YARN_INJECT_NPM_PASSWORD": "yuki-password",
        },
    )
    project = yuki.new_project({})
    assert "Successfully logged in" in yuki.run("yarn", "npm", "login", cwd=project).stdout
    saved = (yuki.home / ".yarnrc.yml").read_text()
    token = re.search(r"npmAuthToken: (npm_\w+)", saved)
    assert token, saved
    assert token[1] != made.json()["token"]
    assert "YN0000: yuki" in yuki.run("yarn", "npm", "whoami", cwd=project).stdout
    never_logged(open_server, ["yuki-password", token[1], made.json()["token"]])


def test_logout_then_login(open_server: Server, alice: Alice, tmp_path: Path) -> None:
    # logout revokes the token on the server, not only in the config
    npm(alice.client, "logout")
    assert saved_token(alice.client) is None
    bearer = {"Authorization": f"Bearer {alice.first}"}
    assert httpx.get(registry(open_server) + "-/whoami", headers=bearer).status_code == 401
    fails(npm(alice.client, "whoami", check=False), "ENEEDAUTH")

    # login: a wrong password (npm's 401), then the right one
    fails(login(alice.client, "alice", "wrong-password"), "401")
    assert saved_token(alice.client) is None
    code, screen = login(alice.client, "alice", ALICE_PASSWORD)
    assert code == 0, screen
    second = saved_token(alice.client)
    assert second is not None
    assert second != alice.first
    alice.secrets.append(second)
    assert whoami(alice.client) == "alice"

    # nobody else takes the name; a login needs an existing user
    bob = user(tmp_path, "bob", open_server)
    fails(adduser(bob, "alice", "bobs-password", "bob@example.com"), "409", "not its password")
    fails(login(bob, "nobody-here", "whatever"), 'There is no user with the username "nobody-here"')
    never_logged(open_server, [*alice.secrets, "bobs-password"])


def test_failed_logins_are_limited(tmp_path: Path) -> None:
    """Three failures per user and address, counted in the store: the two workers refuse
    the same guesser (npm's wrong login is the first failure, two more get a 401, then every
    answer from either worker is a 429)."""
    env = NO_UPSTREAM | {
        "ENTREPOT_NPM__REGISTRY__LOGIN_ATTEMPTS": "3",
        "ENTREPOT_NPM__REGISTRY__LOGIN_WINDOW": "60s",
    }
    with running_server(tmp_path, env=env, args=["--workers", "2"]) as server:
        carol = user(tmp_path, "carol", server)
        code, screen = adduser(carol, "carol", "carol-password", "carol@example.com")
        assert code == 0, screen
        wrong = login(carol, "carol", "guess-1")
        # (once seen passing a wrong password in a loaded CI run, never reproduced: the
        # server's side of it goes into the message if it happens again)
        assert wrong[0] != 0, f"{wrong[1]}\n--- server log ---\n{server.log()[-4000:]}"
        fails(wrong, "401")
        url = registry(server) + "-/user/org.couchdb.user:carol/-rev/1-0"
        statuses: list[int] = []
        # each request on a new connection, which either worker may take
        for attempt in range(2, 10):
            basic = base64.b64encode(f"carol:guess-{attempt}".encode()).decode()
            answer = httpx.put(
                url,
                json={"name": "carol", "password": f"guess-{attempt}"},
                headers={"Authorization": f"Basic {basic}", "Connection": "close"},
            )
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert 1 <= int(answer.headers["Retry-After"]) <= 61
                assert "too many failed logins" in answer.json()["error"]
        assert statuses == [401, 401] + [429] * 6, statuses
        # even the right password waits now; npm shows the 429
        fails(login(carol, "carol", "carol-password"), "429")
        never_logged(server, ["carol-password", *[f"guess-{i}" for i in range(1, 20)]])


def test_without_self_registration_the_admin_and_entrepot_user_add(tmp_path: Path) -> None:
    """Self-registration off, the administrator from its file, a trusted proxy; users come
    from ``entrepot user add`` on the same data directory, while the server runs."""
    secret = tmp_path / "admin-password"
    secret.write_text("the-admin-secret\n")
    env = NO_UPSTREAM | {
        "ENTREPOT_NPM__REGISTRY__SELF_REGISTRATION": "false",
        "ENTREPOT_NPM__REGISTRY__ADMIN_USER": "root",
        "ENTREPOT_NPM__REGISTRY__ADMIN_PASSWORD_FILE": str(secret),
        "ENTREPOT_NPM__REGISTRY__TRUSTED_PROXIES": '["127.0.0.1/32"]',
    }
    with running_server(tmp_path, env=env, args=["--workers", "2"]) as server:
        assert "npm registry administrator root: created" in server.log()
        root = user(tmp_path, "root", server)
        code, screen = login(root, "root", "the-admin-secret")
        assert code == 0, screen
        assert whoami(root) == "root"

        dave = user(tmp_path, "dave", server)
        fails(
            adduser(dave, "dave", "dave-password", "dave@example.com"),
            "403",
            "entrepot user add dave",
        )
        fails(login(dave, "dave", "dave-password"), 'There is no user with the username "dave"')

        def user_add(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "entrepot.cli", "user", "add", *args],
                input=stdin,
                env=server_env(env),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        data = ["--data", str(server.data_dir)]
        differ = user_add("dave", *data, stdin="dave-password\nanother\n")
        assert differ.returncode == 2
        assert "differ" in differ.stderr
        made = user_add("dave", "--email", "dave@example.com", *data, stdin="dave-password\n" * 2)
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip() == "user dave: created"
        again = user_add("dave", *data, "--password-stdin", stdin="other-password\n")
        assert again.returncode == 1
        assert "--update-password" in again.stderr
        code, screen = login(dave, "dave", "dave-password")
        assert code == 0, screen
        assert whoami(dave) == "dave"
        changed = user_add(
            "dave", *data, "--update-password", "--password-stdin", stdin="new-password\n"
        )
        assert changed.returncode == 0, changed.stderr
        assert changed.stdout.strip() == "user dave: updated"
        code, screen = login(dave, "dave", "new-password")
        assert code == 0, screen

        # through the trusted proxy (127.0.0.1), the address it forwards is the client's
        made_token = npm(
            dave, "token", "create", "--password", "new-password", "--cidr", "10.0.0.0/8"
        ).stdout
        limited = re.search(r"Created token (npm_\w+)", made_token)
        assert limited, made_token
        bearer = {"Authorization": f"Bearer {limited[1]}"}
        whoami_url = registry(server) + "-/whoami"
        assert httpx.get(whoami_url, headers=bearer).status_code == 403
        proxied = httpx.get(whoami_url, headers=bearer | {"X-Forwarded-For": "10.1.2.3"})
        assert proxied.status_code == 200
        assert proxied.json() == {"username": "dave"}
        outside = httpx.get(whoami_url, headers=bearer | {"X-Forwarded-For": "192.0.2.1"})
        assert outside.status_code == 403
        never_logged(
            server,
            [
                "the-admin-secret",
                "dave-password",
                "new-password",
                limited[1],
                saved_token(root) or "",
                saved_token(dave) or "",
            ],
        )
