"""A smart-HTTP git server on 127.0.0.1: ``git http-backend`` run as CGI from a thread.

Serves every repository under ``root`` (``GIT_HTTP_EXPORT_ALL``), optionally behind HTTP basic
auth, and records each request so a test can see what git asked for and how it was answered.
Only fetches are meant to go through it (tests push to the bare repositories by file path);
:func:`make_repo` builds the private module the tests serve.

:func:`dripping_http_server` is the opposite: a remote that accepts and then never finishes
answering.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import http.server
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
CGI_TIMEOUT = 30.0


@dataclass(frozen=True)
class GitRequest:
    method: str
    path: str  # without the query
    query: str
    status: int
    user: str  # the authenticated user, "" when none


@dataclass
class GitServer:
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    root: Path
    requests: list[GitRequest] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _split_cgi(out: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """CGI output → (status, headers, body); ``Status:`` sets the status, default 200."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, body = out.partition(sep)
        if found:
            break
    else:
        return 502, [], b"git-http-backend printed no header block\n"
    status, headers = 200, []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "status":
            status = int(value.strip().split()[0])
        elif name.strip():
            headers.append((name.strip(), value.strip()))
    return status, headers, body


def _handler(server: GitServer, auth: tuple[str, str] | None) -> type:
    expected = None
    if auth is not None:
        expected = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test reads server.requests instead

        def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            body = _read_body(self)
            user = ""
            if expected is not None:
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), expected.encode()):
                    self._record(parts.path, parts.query, 401, "")
                    self._send(
                        401,
                        [
                            ("WWW-Authenticate", 'Basic realm="entrepot test git"'),
                            ("Content-Type", "text/plain"),
                        ],
                        b"authentication required\n",
                    )
                    return
                user = auth[0] if auth else ""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GIT_CONFIG_NOSYSTEM": "1",
                "HOME": str(server.root),
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": str(self.server.server_address[1]),
                "REQUEST_METHOD": self.command,
                "PATH_INFO": parts.path,
                "QUERY_STRING": parts.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": self.client_address[0],
            }
            if user:
                env["REMOTE_USER"] = user
            for name, value in self.headers.items():
                key = "HTTP_" + name.upper().replace("-", "_")
                if key not in ("HTTP_AUTHORIZATION", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                    env[key] = value
            try:
                done = subprocess.run(
                    [HTTP_BACKEND],
                    input=body,
                    env=env,
                    capture_output=True,
                    timeout=CGI_TIMEOUT,
                    check=False,
                )
                status, headers, out = _split_cgi(done.stdout)
            except subprocess.TimeoutExpired:
                status, headers, out = 504, [], b"git-http-backend timed out\n"
            self._record(parts.path, parts.query, status, user)
            self._send(status, headers, out)

        def _record(self, path: str, query: str, status: int, who: str) -> None:
            server.requests.append(GitRequest(self.command, path, query, status, who))

        do_GET = _serve
        do_POST = _serve
        do_HEAD = _serve

    return Handler


@contextlib.contextmanager
def git_http_server(root: Path, *, auth: tuple[str, str] | None = None) -> Iterator[GitServer]:
    """Serve the repositories under ``root`` on a free 127.0.0.1 port until the block ends.

    With ``auth=(user, password)`` every request without those basic-auth credentials gets
    ``401`` and ``WWW-Authenticate: Basic``.
    """
    state = GitServer(url="", root=root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, auth))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="git-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@dataclass
class DripServer:
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    connections: int = 0  # accepted so far


@contextlib.contextmanager
def dripping_http_server(*, interval: float = 2.0) -> Iterator[DripServer]:
    """An HTTP server on 127.0.0.1 that reads a request and then answers one byte every
    ``interval`` seconds, never finishing: a git remote stuck behind a dying link.

    Every connection is closed when the block ends, so a client still reading sees EOF then.
    """
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    state = DripServer(f"http://127.0.0.1:{sock.getsockname()[1]}")
    stop = threading.Event()
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n"
        + b"X-Padding: "
        + b"." * 4096
        + b"\r\n\r\n"
    )
    open_conns: list[socket.socket] = []

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
            for i in range(len(answer)):
                if stop.wait(interval):
                    return
                try:
                    conn.sendall(answer[i : i + 1])
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            state.connections += 1
            open_conns.append(conn)
            threading.Thread(target=drip, args=(conn,), name="drip", daemon=True).start()

    thread = threading.Thread(target=accept, name="drip-accept", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(5)
        sock.close()
        for conn in open_conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------------------------
# A private module in a bare git repository under the git server's root

MOD = "example.com/private/lib.git"  # the module make_repo creates


@dataclass
class Repo:
    root: Path  # GIT_PROJECT_ROOT
    tags: dict[str, str]  # tag → commit hash
    head: str  # main: one commit after v1.1.0, untagged


def _git(*args: str, cwd: Path, home: Path, date: str = "2024-03-01T10:00:00Z") -> str:
    env = {
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Entrepot Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Entrepot Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def make_repo(tmp: Path) -> Repo:
    """``<root>/private/lib.git`` with v1.0.0, v1.1.0 and an untagged commit on main."""
    root = tmp / "git-root"
    bare = root / "private" / "lib.git"
    bare.parent.mkdir(parents=True)
    work = tmp / "git-work"
    work.mkdir()
    _git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp, home=tmp)
    _git("init", "-q", "-b", "main", cwd=work, home=tmp)
    (work / "go.mod").write_text(f"module {MOD}\n\ngo 1.21\n")
    tags = {}
    for i, version in enumerate(("v1.0.0", "v1.1.0", "main")):
        (work / "lib.go").write_text(
            f'package lib\n\nfunc Hello() string {{ return "lib {version}" }}\n'
        )
        date = f"2024-03-0{i + 1}T10:00:00Z"
        _git("add", "-A", cwd=work, home=tmp)
        _git("commit", "-q", "-m", version, cwd=work, home=tmp, date=date)
        if version != "main":
            _git("tag", version, cwd=work, home=tmp)
        tags[version] = _git("rev-parse", "HEAD", cwd=work, home=tmp)
    _git("push", "-q", str(bare), "main", "--tags", cwd=work, home=tmp)
    head = tags.pop("main")
    return Repo(root, tags, head)
