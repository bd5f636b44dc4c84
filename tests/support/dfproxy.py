"""An HTTP proxy on 127.0.0.1 in front of one lab engine's unix socket that makes every `GET /system/df` fail.

Engine 28.5's containerd image store fails that call now and then while containers are being created (a
snapshot it lists is gone before it sizes it); this makes the failure certain, with the engine's own
words, and forwards everything else unchanged to the real engine. Whole answers only (no streams): enough
for the list, inspect and delete calls of garbage collection.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DF_ERROR = "failed to get disk usage: snapshot sha256:0000 does not exist: not found"
_DF = re.compile(r"^(/v[0-9.]+)?/system/df(\?|$)")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self._path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away is not news here


class FailingDf:
    """`with FailingDf("/var/run/dwlab-docker28.sock") as proxy:` then `docker_host: proxy.url`;
    `proxy.df_calls` counts the refused calls."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.df_calls = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if _DF.match(self.path):
                    proxy.df_calls += 1
                    self._answer(500, json.dumps({"message": DF_ERROR}).encode(), {})
                    return
                conn = _UnixConnection(proxy.socket_path)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    kept = {
                        k: v
                        for k, v in answer.getheaders()
                        if k.lower() not in ("connection", "transfer-encoding", "content-length")
                    }
                    self._answer(answer.status, data, kept)
                finally:
                    conn.close()

            def _answer(self, status: int, data: bytes, headers: dict[str, Any]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if status == 500:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FailingDf:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
