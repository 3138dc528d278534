"""``/healthz`` for the kubelet, served from start-up on, standby replicas included.

kopf's own liveness endpoint exists only once kopf runs, and kopf runs only on the leader: a
standby waiting for the Lease would fail its probes and be restarted in a loop. So this small
server answers for the process: 200 while standing by; on the leader, whatever kopf's
endpoint (on a private loopback port) says.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Health:
    def __init__(self, host: str, port: int, *, kopf_url: str) -> None:
        self.kopf_url = kopf_url
        self.leading = False
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/healthz":
                    self.send_error(404)
                    return
                ok, text = health.check()
                body = (text + "\n").encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True

    def check(self) -> tuple[bool, str]:
        if not self.leading:
            return True, "standby: waiting for the lease"
        try:
            with urllib.request.urlopen(self.kopf_url, timeout=3) as r:
                return r.status == 200, "leading"
        except (urllib.error.URLError, OSError) as e:
            return False, f"leading, but the operator loop does not answer: {e}"

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="health").start()
