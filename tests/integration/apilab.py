"""A `dockwarden run` with an `api:` section, and an HTTP client for it (TCP or unix socket)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.helpers import spawn

PROMTOOL = Path(os.environ.get("DWLAB_PROMETHEUS_DIR", "/opt/dwlab/prometheus")) / "usr/bin/promtool"
TOKEN = "test-token-0123456789abcdef"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    listen: str,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> Response:
    """One request to the API at `listen` (`HOST:PORT` or `unix:/PATH`); OSError if nothing listens."""
    if listen.startswith("unix:"):
        conn: http.client.HTTPConnection = _UnixConnection(listen.removeprefix("unix:"), timeout)
    else:
        host, _, port = listen.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=sent)
        answer = conn.getresponse()
        return Response(
            status=answer.status, headers={k.lower(): v for k, v in answer.getheaders()}, body=answer.read()
        )
    finally:
        conn.close()


def api_section(listen: str, token_file: Path) -> str:
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    return f'api:\n  listen: "{listen}"\n  token_file: {token_file}'


def wait_healthy(listen: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if request(listen, "GET", "/healthz", token=None, timeout=2).status == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"the API at {listen} never answered /healthz with 200")


def listening(listen: str) -> bool:
    try:
        request(listen, "GET", "/healthz", token=None, timeout=2)
    except OSError:
        return False
    return True


def events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            found.append(json.loads(line))
    return found


def wait_event(log: Path, event: str, count: int = 1, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(log) if e.get("event") == event]
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.1)
    raise AssertionError(f"no {count}x {event} in {log}:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def daemon(cfg: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`dockwarden run -c cfg`, stopped with SIGTERM (killed if it does not stop) at the end."""
    proc = spawn("run", cfg, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess[bytes]:
    """`promtool check metrics` on `exposition` (Debian's prometheus package, unpacked by scripts/lab.sh)."""
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: run scripts/lab.sh up"
    return subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False
    )
