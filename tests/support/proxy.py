"""A small HTTP proxy on 127.0.0.1 in front of a test registry: adds latency, or answers with faults.

It only ever forwards to the one upstream it was given (a loopback registry).
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class FaultPlan:
    delay: float = 0.0  # added to every response: the round-trip latency of a distant registry
    status: int | None = None  # answer every request with this status instead of forwarding
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: object, client_address: object) -> None:
        # A handler thread can outlive its test (daemon threads); its traceback must not land in whatever
        # test captures stderr next. A client that went away is not news in a fault proxy.
        pass


class FaultProxy:
    def __init__(self, upstream: str, plan: FaultPlan | None = None) -> None:
        self.upstream = urlsplit(upstream).netloc
        self.plan = plan or FaultPlan()
        self.count = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.count += 1
                plan = proxy.plan
                if plan.delay:
                    time.sleep(plan.delay)
                if plan.status is not None:
                    self.send_response(plan.status)
                    for key, value in plan.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                try:
                    upstream, data = proxy.forward(self.command, self.path, body, headers)
                except OSError:  # the upstream is gone: answer as a gateway does
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(upstream.status)
                for key, value in upstream.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self._local = threading.local()
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def forward(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """Send upstream over this thread's keep-alive connection (one per client connection)."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(self.upstream, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response, response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    """Run a delaying proxy in its own process (so it does not share a GIL with what is measured)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True, help="a loopback registry URL, http://127.0.0.1:PORT")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    if urlsplit(args.upstream).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("the proxy forwards to loopback registries only")
    proxy = FaultProxy(args.upstream, FaultPlan(delay=args.delay)).start()
    print(proxy.host, flush=True)
    sys.stdin.read()  # runs until the parent closes our stdin
    proxy.stop()


if __name__ == "__main__":
    main()
