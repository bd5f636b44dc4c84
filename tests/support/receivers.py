"""Real notification receivers on 127.0.0.1 for Apprise to deliver to: a JSON webhook and an SMTP server.

`JsonWebhook` is what Apprise's `json://` posts to (a small `http.server`); with `hang`, it holds each
request without answering until `release()` (or its own bound), like a receiver that accepted the
connection and then stalled. `SmtpReceiver` is aiosmtpd's SMTP server without TLS or authentication,
what Apprise's `mailto://...?smtp=127.0.0.1&mode=insecure` talks to.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

HANG_BOUND = 60.0  # seconds a hanging request is held at most, whatever the test does


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A held request answered after its client gave up (was killed) fails to write: expected here.
        pass


class JsonWebhook:
    """An HTTP server on 127.0.0.1 recording the JSON bodies POSTed to it (`received`)."""

    def __init__(self, hang: bool = False) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Event()  # a request came in (answered or not)
        self._released = threading.Event()
        self._hang = hang
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                owner.arrived.set()
                if owner._hang:
                    owner._released.wait(HANG_BOUND)
                owner.received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    @property
    def held(self) -> bool:
        """A request is being held unanswered right now."""
        return self.arrived.is_set() and not self._released.is_set() and self._hang

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


class _Collect:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.messages.append(message_from_bytes(content))
        return "250 OK"


class SmtpReceiver:
    """aiosmtpd's SMTP server on 127.0.0.1, no TLS, no authentication; `messages` are the mails taken."""

    def __init__(self) -> None:
        self._handler = _Collect()
        self.port = free_port()
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    @property
    def messages(self) -> list[Message]:
        return self._handler.messages

    def url(self) -> str:
        return (
            f"mailto://127.0.0.1:{self.port}?smtp=127.0.0.1&mode=insecure"
            "&from=dockwarden@example.invalid&to=ops@example.invalid"
        )

    def stop(self) -> None:
        self._controller.stop()


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll `predicate` every 50 ms for at most `timeout` seconds; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
