"""A smart-HTTP git server on 127.0.0.1: ``git http-backend`` run as CGI from a thread.

Serves every repository under ``root`` (``GIT_HTTP_EXPORT_ALL``), optionally behind HTTP basic
auth, and records each request so a test can see what git asked for and how it was answered.
Only fetches are meant to go through it (tests push to the bare repositories by file path).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import http.server
import os
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
