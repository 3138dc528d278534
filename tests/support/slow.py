"""A scriptable upstream on loopback: fixed answers, optionally dribbled out slowly or stalled."""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    files: dict[str, bytes]
    delay_after_half: float = 0.0  # pause in the middle of every body
    stall: threading.Event = field(default_factory=threading.Event)  # set() to release stalls
    stall_paths: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    basic_auth: str | None = None  # "user:password" the upstream demands, if any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log each request to stderr, with a one-call answer."""

    def reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(handler: Callable[..., BaseHTTPRequestHandler], host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``handler`` on a threaded HTTP server on ``host`` (any free port); yield its URL."""
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def scripted_upstream(script: Script) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            script.requests.append(self.path)
            if script.basic_auth is not None:
                wanted = "Basic " + base64.b64encode(script.basic_auth.encode()).decode()
                if self.headers.get("Authorization") != wanted:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="modules"')
                    self.end_headers()
                    self.wfile.write(b"authentication required\n")
                    return
            body = script.files.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"not found\n")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            half = len(body) // 2
            try:
                self.wfile.write(body[:half])
                self.wfile.flush()
                if self.path in script.stall_paths:
                    script.stall.wait(60)
                time.sleep(script.delay_after_half)
                self.wfile.write(body[half:])
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    try:
        with serve(Handler) as url:
            yield url
    finally:
        script.stall.set()
