"""A token server for the distribution registry's `auth: token` mode, on 127.0.0.1.

It signs RS256 JWTs with a throwaway self-signed certificate that the registry trusts through its
rootcertbundle, and counts token requests per User-Agent so tests can see tokens being reused.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.faultserver import self_signed

SERVICE = "dockwarden-test"
ISSUER = "dockwarden-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    def __init__(self, directory: Path, lifetime: int = 300, refresh_token: str | None = None) -> None:
        self.lifetime = lifetime
        self.refresh_token = refresh_token  # when set, OAuth2 POSTs must present it
        self.requests: Counter[str] = Counter()
        self.oauth_grants = 0
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = self_signed(self._key, "dockwarden test token signer")
        self.bundle = directory / "token-root.pem"
        directory.mkdir(parents=True, exist_ok=True)
        self.bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                with server._lock:
                    server.requests[self.headers.get("User-Agent", "")] += 1
                body = json.dumps(server.issue(query.get("scope", []))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                granted = (
                    form.get("grant_type") == ["refresh_token"]
                    and server.refresh_token is not None
                    and form.get("refresh_token") == [server.refresh_token]
                )
                with server._lock:
                    server.requests[self.headers.get("User-Agent", "")] += 1
                    server.oauth_grants += int(granted)
                body = json.dumps(
                    server.issue(form.get("scope", [])) if granted else {"error": "invalid_grant"}
                )
                self.send_response(200 if granted else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def issue(self, scopes: list[str]) -> dict[str, object]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": "",
            "aud": SERVICE,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{_b64(signature)}"
        return {"token": token, "access_token": token, "expires_in": self.lifetime}

    def registry_auth_yaml(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.bundle}\n"
        )

    def ours(self) -> int:
        """Token requests made by dockwarden (not by the engine pushing test images)."""
        return sum(count for agent, count in self.requests.items() if agent.startswith("dockwarden"))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
