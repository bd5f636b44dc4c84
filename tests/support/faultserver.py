"""A scripted HTTP(S) server on 127.0.0.1 that answers as misbehaving registries and token services do.

Each request goes to a function of the request that returns a `Reply`: any status, headers and body, or a
body of a given size streamed as padding (to show the client stops reading), or the whole answer dripped a
byte at a time (to show the client's deadline). Every request is recorded. Dripping and streaming stop when
the client goes away and are bounded in time and size, so a test that fails cannot leave traffic behind.
TLS is optional, with certificates from `Pki` (the `cryptography` package), and can demand a client
certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DRIP_MAX_SECONDS = 20.0  # a dripping answer stops after this long, client or not
STREAM_MAX_BYTES = 1 << 30  # a streamed answer is never longer than this


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: int = 0  # when set, a body of this many bytes of padding, announced by Content-Length
    chunked: bool = False  # stream without Content-Length (chunked transfer coding)
    drip: float = 0.0  # when set, seconds between bytes of the whole answer, status line included


Script = Callable[[Request], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, owner: FaultServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up mid-answer (the point of most faults here), failed TLS handshakes: not news.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *_: object) -> None:
        pass

    def setup(self) -> None:
        context = self.server.owner.tls
        if context is not None:  # handshake here, in the connection's thread, not in the accept loop
            self.request = context.wrap_socket(self.request, server_side=True)
        super().setup()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            self.rfile.read(length) if length else b"",
        )
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(request)
        reply = owner.script(request)
        head = [f"HTTP/1.1 {reply.status} Fault\r\n"]
        headers = dict(reply.headers)
        if reply.drip:  # a dripped answer ends the connection: say so, as HTTP/1.1 wants
            headers["Connection"] = "close"
        if reply.chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers.setdefault("Content-Length", str(reply.stream or len(reply.body)))
        head += [f"{k}: {v}\r\n" for k, v in headers.items()]
        data = ("".join(head) + "\r\n").encode("latin-1")
        if self.command != "HEAD":
            data += reply.body
        if reply.drip:
            self._drip(data, reply.drip)
        else:
            self.wfile.write(data)
            if reply.stream and self.command != "HEAD":
                self._stream(reply.stream, reply.chunked)

    def _drip(self, data: bytes, every: float) -> None:
        stop = time.monotonic() + DRIP_MAX_SECONDS
        for i in range(len(data)):
            if time.monotonic() > stop:
                break
            self.wfile.write(data[i : i + 1])
            time.sleep(every)
        self.close_connection = True

    def _stream(self, size: int, chunked: bool) -> None:
        chunk = b" " * (64 * 1024)
        left = min(size, STREAM_MAX_BYTES)
        owner = self.server.owner
        while left > 0:
            piece = chunk[: min(left, len(chunk))]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            left -= len(piece)
            with owner.lock:
                owner.streamed += len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_HEAD = do_POST = _handle


class FaultServer:
    """`script` answers each request; `tls` (a server-side SSLContext) makes it an HTTPS server."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.requests: list[Request] = []
        self.streamed = 0  # bytes of streamed padding actually written to clients
        self.lock = threading.Lock()
        self._server = _Server(self)
        # A short poll, so that stop() (which waits for the loop to notice) takes milliseconds.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def seen(self, method: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if method is None or r.method == method]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, common: str) -> x509.Certificate:
    """A CA certificate for `key`, named `common`, valid from yesterday to tomorrow."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


class Pki:
    """A throwaway CA that issues server certificates for 127.0.0.1 and client certificates."""

    def __init__(self, name: str = "dockwarden test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self_signed(self._key, name)

    @property
    def ca_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common: str, client: bool = False) -> tuple[bytes, bytes]:
        """A certificate (for 127.0.0.1 and localhost, or for a client) and its unencrypted key, as PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if not client:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def server_context(self, directory: Path, client_ca: Pki | None = None) -> ssl.SSLContext:
        """A server-side context with a certificate from this CA; with `client_ca`, client certificates
        issued by it are required."""
        cert, key = self.issue("127.0.0.1")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "server.pem").write_bytes(cert + key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "server.pem")
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=client_ca.ca_pem.decode())
        return context


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
