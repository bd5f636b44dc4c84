"""The only module that speaks HTTP to registries.

Detection must not spend pull quota: a HEAD of a manifest is free on Docker Hub, a GET counts. So the
common path is one HEAD per distinct image; GETs happen only when a digest changed, or when a registry's HEAD
gives no digest (then one GET, whose body's sha256 is the digest). This module owns what every request
needs: a deadline for the whole request (redirects and the token round-trip included), size limits on what
it reads, TLS as Docker configures it (certs.d, the engine's insecure registries), the bearer-token cache,
per-registry back-off after a 429, and masking: no credential or token ever appears in an error message, and
credentials never cross plain HTTP except to a registry the engine itself speaks plain HTTP to.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import http.client
import ipaddress
import itertools
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import certifi
import structlog
import urllib3
import urllib3.connection
from urllib3.util import Url, parse_url

from dockwarden import certs, distribution
from dockwarden.distribution import ACCEPT, INDEX_TYPES, MANIFEST_LIMIT, TOKEN_LIMIT, Malformed, Manifest
from dockwarden.engine import Credentials, EngineError, RegistryConfig
from dockwarden.imageref import ImageRef

TOKEN_MARGIN = 10.0  # renew a token this long before it expires
CREDENTIALS_TTL = 300.0  # seconds a Docker-config lookup is reused
MAX_REDIRECTS = 5
ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error answer read to keep its connection; a longer one is dropped
_CHUNK = 64 * 1024
# Seconds: the longest socket timeout or watchdog sleep. A registry_timeout of years is valid config, but
# sockets and locks refuse timeouts past what time_t holds; the watchdog still ends such a request on time.
_LONGEST_WAIT = 86400.0
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
# A registry that refuses HEAD answers 405 or 501 (or 404, as some do for any method they do not route).
_HEAD_REFUSED = frozenset((404, 405, 501))


class RegistryError(Exception):
    """A registry request failed; `reason` is a stable short code for logs and JSON."""

    reason = "registry-error"


class Unreachable(RegistryError):
    reason = "unreachable"


class Timeout(RegistryError):
    reason = "timeout"


class Unauthorized(RegistryError):
    reason = "unauthorized"


class NotFound(RegistryError):
    reason = "not-found"


class RateLimited(RegistryError):
    reason = "rate-limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProtocolError(RegistryError):
    reason = "protocol-error"


class _NotHttp(ProtocolError):
    """What answered is not HTTP (a TLS server, say): another scheme may still reach the registry."""


@dataclass(frozen=True)
class ManifestHead:
    """What a check learns about a tag: its digest and media type, the pull budget Docker Hub reports, and
    the manifest itself when it took a GET to learn the digest (so that it is not fetched twice)."""

    digest: str
    media_type: str
    ratelimit_remaining: str | None = None
    manifest: Manifest | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class _Response:
    status_code: int
    headers: Any  # urllib3's case-insensitive HTTPHeaderDict
    content: bytes


@dataclass
class _Token:
    value: str
    expires_at: float


class Scheme(StrEnum):
    HTTP = "http"
    HTTPS = "https"


class Fallback(StrEnum):
    """Why a registry's checks cost a GET (`registry.get_fallback`'s `reason`)."""

    NO_DIGEST = "no-digest"  # HEAD answered without a usable Docker-Content-Digest
    HEAD_REFUSED = "head-refused"  # HEAD answered 404, 405 or 501 where GET works


@dataclass(frozen=True)
class _Attempt:
    """One way to reach a registry: a scheme and, for HTTPS, whether its certificate is verified."""

    scheme: Scheme
    verify: bool


_HTTPS = _Attempt(Scheme.HTTPS, verify=True)
_HTTPS_UNVERIFIED = _Attempt(Scheme.HTTPS, verify=False)
_HTTP = _Attempt(Scheme.HTTP, verify=False)


@dataclass(frozen=True, kw_only=True)
class _Tls:
    """TLS settings for one host: verification, extra CA files and a client pair from certs.d."""

    verify: bool
    cas: tuple[Path, ...]
    client: tuple[Path, Path] | None
    stamp: tuple[tuple[str, int, int], ...]


@dataclass
class _RegistryState:
    host: str
    insecure: bool  # as the engine sees it: reached without verification, or over plain HTTP
    attempts: tuple[_Attempt, ...]
    working: _Attempt | None = None  # the attempt that answered last
    auth_kind: str | None = None  # None until challenged; then "bearer" or "basic"
    challenge: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    blocked_until: float = 0.0
    creds: Credentials | None = None
    creds_until: float = 0.0
    warned_get: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ordered(self) -> tuple[_Attempt, ...]:
        if self.working is None:
            return self.attempts
        return (self.working, *(a for a in self.attempts if a != self.working))


CredentialLookup = Callable[[str], Credentials | None]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def default_scheme(host: str) -> Scheme:
    """The scheme tried first for an insecure registry `host` ("name[:port]"): "http" for loopback names
    (`localhost`, 127.0.0.0/8, ::1), "https" for every other.

    Docker tries HTTPS first everywhere; for loopback we start with plain HTTP, which is what a loopback
    registry speaks in practice, because a plain-HTTP server may wait forever for the line end that a TLS
    hello never sends. The other scheme is still tried when this one cannot connect."""
    hostname = _hostname(host)
    if hostname == "localhost":
        return Scheme.HTTP
    try:
        return Scheme.HTTP if ipaddress.ip_address(hostname).is_loopback else Scheme.HTTPS
    except ValueError:
        return Scheme.HTTPS


def _hostname(host: str) -> str:
    """The host part of "name[:port]" or "[v6]:port", lowercase and without brackets."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def _addresses(hostname: str) -> list[Address]:
    """The host's addresses: itself if it is one, else what the resolver says (none when it cannot)."""
    try:
        return [ipaddress.ip_address(hostname)]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]


def _mask(text: str) -> str:
    # urllib3 puts URLs in its messages; userinfo in a URL could be a secret.
    return re.sub(r"//[^/@\s]+@", "//***@", text)


class _Deadline:
    """When one registry operation must be over (all its requests, redirects and token fetch), and the
    connections it is using right now, which the watchdog cuts if that time passes first."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self._connections: list[_WatchedHTTPConnection] = []
        self._lock = threading.Lock()

    def left(self) -> float:
        return self.at - time.monotonic()

    def attach(self, connection: _WatchedHTTPConnection) -> None:
        with self._lock:
            connection.deadline = self  # the connection's current user: only it may be cut for this deadline
            if connection not in self._connections:
                self._connections.append(connection)
            if self.expired:
                _cut(connection)

    def release(self) -> None:
        """Forget the connections: they go back to the pool, where another request may take them."""
        with self._lock:
            for connection in self._connections:
                if connection.deadline is self:
                    connection.deadline = None
            self._connections.clear()

    def expire(self) -> None:
        # Under the lock, and only connections still ours: urllib3 returns a connection to its pool as soon
        # as a body is read, and another request that took it since has attached it to its own deadline.
        with self._lock:
            self.expired = True
            for connection in self._connections:
                if connection.deadline is self:
                    _cut(connection)


def _cut(connection: urllib3.connection.HTTPConnection) -> None:
    """Shut a connection's socket down, which ends any read or handshake blocked on it in another thread.
    socket.socket's own shutdown even for TLS sockets: SSLSocket's would also drop its TLS state under
    the reading thread."""
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread per client that expires deadlines. Socket timeouts alone bound each read, not a request:
    a registry sending a byte a second would never trip them."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._local = threading.local()

    def watch(self, deadline: _Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="registry-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is deadline:  # only a new earliest deadline changes how long to sleep
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                if not self._heap:
                    self._wake.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(min(wait, _LONGEST_WAIT))
                    continue
                heapq.heappop(self._heap)[2].expire()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    @contextlib.contextmanager
    def exchange(self, deadline: _Deadline) -> Iterator[None]:
        """Connections used by this thread inside the block run under `deadline`."""
        self._local.current = deadline
        try:
            yield
        finally:
            self._local.current = None
            deadline.release()

    def attach(self, connection: _WatchedHTTPConnection) -> None:
        current: _Deadline | None = getattr(self._local, "current", None)
        if current is not None:
            current.attach(connection)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """A connection that puts itself under the calling thread's deadline when it connects or sends."""

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog
        self.deadline: _Deadline | None = None

    def connect(self) -> None:
        self._watchdog.attach(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._watchdog.attach(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, urllib3.connection.HTTPSConnection):
    """The same for HTTPS (the methods above run before HTTPSConnection's): attached before connecting, so
    that a dripping TLS handshake is cut too."""


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _UnverifiedHTTPSPool(_HTTPSPool):
    """For a registry the engine lists as insecure: TLS without verification, as Docker does."""

    def _validate_conn(self, conn: Any) -> None:
        # urllib3 warns on every unverified request (its security warnings are always shown), which would
        # flood the log for a registry the operator chose to trust. Connect as the base class does, unwarned.
        if conn.is_closed:
            conn.connect()


class RegistryClient:
    """Registry requests for checks, with Docker's rules for TLS, insecure registries and credentials.

    `credentials` looks a registry's credentials up (engine.registry_credentials; an EngineError it raises
    is that registry's `unauthorized`). `timeout` (seconds) is a deadline for each operation: everything
    one `head_manifest` or `get_manifest` does, redirects, token round-trip and body included.
    `engine_config` is the engine's insecure-registry list (Engine.registry_config(); default: loopback, as
    every engine has); `certs_dir` the root of Docker's per-registry TLS files."""

    def __init__(
        self,
        credentials: CredentialLookup,
        timeout: float = 10.0,
        pool_size: int = 32,
        clock: Callable[[], float] = time.monotonic,
        user_agent: str = "dockwarden",
        *,
        engine_config: RegistryConfig | None = None,
        certs_dir: Path = certs.CERTS_DIR,
    ) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._pool_size = pool_size
        self._clock = clock
        self._user_agent = user_agent
        self._engine_config = engine_config or RegistryConfig()
        self._certs_dir = certs_dir
        self._log = structlog.get_logger("dockwarden.registry")
        # urllib3 directly rather than requests: a check is one small HEAD, and requests' per-request
        # bookkeeping cost several times the request itself at hundreds of images per cycle. One keep-alive
        # pool per host and TLS setting, sized for every concurrent check.
        self._pools: dict[tuple[str, str, int, bool], tuple[_Tls | None, urllib3.HTTPConnectionPool]] = {}
        self._pools_lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._states: dict[str, _RegistryState] = {}
        self._states_lock = threading.Lock()

    def close(self) -> None:
        with self._pools_lock:
            for _, pool in self._pools.values():
                pool.close()
            self._pools.clear()
        self._watchdog.close()

    def _state(self, host: str) -> _RegistryState:
        with self._states_lock:
            state = self._states.get(host)
        if state is None:
            # Outside the lock: deciding may take a DNS lookup, and other registries' checks must not wait.
            insecure = self._engine_config.insecure(host, lambda: _addresses(_hostname(host)))
            if not insecure:
                attempts: tuple[_Attempt, ...] = (_HTTPS,)
            elif default_scheme(host) == Scheme.HTTP:  # == : the function may be replaced by a plain str one
                attempts = (_HTTP, _HTTPS_UNVERIFIED)
            else:  # Docker's order for an insecure registry: HTTPS without verification, then plain HTTP
                attempts = (_HTTPS_UNVERIFIED, _HTTP)
            with self._states_lock:
                state = self._states.setdefault(host, _RegistryState(host, insecure, attempts))
        return state

    def _creds(self, state: _RegistryState, registry: str) -> Credentials | None:
        # A credential helper is a process per lookup; remember the answer for a while. A 401 forgets it,
        # so rotated credentials are picked up on the next request. A failed lookup is not remembered.
        now = self._clock()
        if state.creds_until <= now:
            try:
                state.creds = self._credentials(registry)
            except EngineError as exc:  # the message names the helper, never its output
                raise Unauthorized(str(exc)) from None
            state.creds_until = now + CREDENTIALS_TTL
        return state.creds

    def _deadline(self) -> _Deadline:
        deadline = _Deadline(time.monotonic() + self._timeout)
        self._watchdog.watch(deadline)
        return deadline

    # -- public operations -------------------------------------------------------------------------

    def head_manifest(self, ref: ImageRef) -> ManifestHead:
        """The digest the registry serves for the tag, by HEAD: free of pull quota.

        A HEAD answer without a usable `Docker-Content-Digest` (optional in the OCI distribution spec,
        "Pulling manifests") or a HEAD refused (404, 405, 501) costs one GET of the tag instead: the digest
        is then the sha256 of the body as served, and the manifest comes along in `manifest`. Raises a
        RegistryError subclass."""
        deadline = self._deadline()
        state = self._state(ref.api_host)
        response = self._request(state, "HEAD", ref, ref.manifest_reference, deadline)
        if response.status_code == 200:
            digest = distribution.header_digest(response.headers.get("Docker-Content-Digest"))
            if digest is not None:
                media_type = distribution.media_type_of(response.headers.get("Content-Type"))
                return ManifestHead(digest, media_type, response.headers.get("ratelimit-remaining"))
            why = Fallback.NO_DIGEST
        elif response.status_code in _HEAD_REFUSED:
            why = Fallback.HEAD_REFUSED
        else:
            self._check(state, ref, response)
            raise AssertionError("_check raises for every status but 200")
        return self._head_by_get(state, ref, deadline, why, response.status_code)

    def _head_by_get(
        self, state: _RegistryState, ref: ImageRef, deadline: _Deadline, why: Fallback, status: int
    ) -> ManifestHead:
        response = self._check(
            state, ref, self._request(state, "GET", ref, ref.manifest_reference, deadline, MANIFEST_LIMIT)
        )
        served = distribution.header_digest(response.headers.get("Docker-Content-Digest"))
        if served is not None and not distribution.matches(response.content, served):
            raise ProtocolError(
                f"{ref.api_host} served {ref} with a body that does not hash to its digest header"
            )
        manifest = self._parse(ref, response, distribution.digest_of(response.content))
        with state.lock:
            warn, state.warned_get = not state.warned_get, True
        if warn:
            self._log.warning("registry.get_fallback", registry=state.host, reason=why, head_status=status)
        return ManifestHead(
            manifest.digest, manifest.media_type, response.headers.get("ratelimit-remaining"), manifest
        )

    def get_manifest(self, ref: ImageRef, digest: str) -> Manifest:
        """GET a manifest by digest (at most MANIFEST_LIMIT bytes), verify that its bytes hash to that digest
        and validate it (distribution.parse_manifest). Raises a RegistryError subclass."""
        deadline = self._deadline()
        state = self._state(ref.api_host)
        response = self._check(state, ref, self._request(state, "GET", ref, digest, deadline, MANIFEST_LIMIT))
        if not distribution.matches(response.content, digest):
            actual = distribution.digest_of(response.content)
            raise ProtocolError(f"{ref.api_host} served manifest {actual} when asked for {digest}")
        return self._parse(ref, response, digest)

    def _parse(self, ref: ImageRef, response: _Response, digest: str) -> Manifest:
        try:
            return distribution.parse_manifest(response.content, digest, response.headers.get("Content-Type"))
        except Malformed as exc:
            raise ProtocolError(f"{ref.api_host} served a malformed manifest for {ref}: {exc}") from None

    # -- requests to the registry ------------------------------------------------------------------

    def _request(
        self,
        state: _RegistryState,
        method: str,
        ref: ImageRef,
        reference: str,
        deadline: _Deadline,
        limit: int = 0,
    ) -> _Response:
        """One manifest request, answering a 401 challenge once; the answer whatever its status."""
        wait = state.blocked_until - self._clock()
        if wait > 0:
            raise RateLimited(f"{ref.api_host} asked us to back off; {wait:.0f}s left", wait)
        scope = f"repository:{ref.repository}:pull"
        path = f"/v2/{ref.repository}/manifests/{reference}"

        def send(attempt: _Attempt) -> _Response:
            headers = {"Accept": ACCEPT, **self._auth_header(state, ref, scope, attempt, deadline)}
            url = parse_url(f"{attempt.scheme}://{state.host}{path}")
            return self._send(state, attempt, method, url, headers, deadline, limit)

        attempt, response = self._first_answer(state, send)
        if response.status_code == 401 and "WWW-Authenticate" in response.headers:
            self._on_challenge(state, ref, scope, response.headers["WWW-Authenticate"])
            response = send(attempt)
        return response

    def _first_answer(
        self, state: _RegistryState, send: Callable[[_Attempt], _Response]
    ) -> tuple[_Attempt, _Response]:
        """Send by each way of reaching the registry (one, unless it is insecure) until one answers."""
        failed: RegistryError | None = None
        for attempt in state.ordered():
            try:
                response = send(attempt)
                if attempt.scheme is Scheme.HTTP and response.status_code == 400:
                    _refuse_tls_port(state.host, response.content)
            except (Unreachable, _NotHttp) as exc:
                failed = failed or exc  # the first way's failure is the one worth reporting
                continue
            state.working = attempt
            return attempt, response
        raise failed or Unreachable(f"no way to reach {state.host}")

    def _send(
        self,
        state: _RegistryState,
        attempt: _Attempt,
        method: str,
        url: Url,
        headers: dict[str, str],
        deadline: _Deadline,
        limit: int,
        body: bytes | None = None,
    ) -> _Response:
        """One request, following redirects (not for a POST). Authorization goes only to the URL it was
        meant for: a hop to another scheme, host or port drops it (so an HTTPS-to-HTTP redirect cannot
        carry it in clear)."""
        origin = (url.scheme, url.host, url.port)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._exchange(state, attempt, method, url, headers, deadline, limit, body)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location or method == "POST":
                return response
            try:
                url = parse_url(urljoin(url.url, location))  # a relative location is relative to this URL
            except (urllib3.exceptions.LocationParseError, ValueError):
                raise ProtocolError(f"{state.host} redirected to an unreadable location") from None
            if url.scheme not in tuple(Scheme) or not url.host:
                raise ProtocolError(f"{state.host} redirected to something other than an http(s) URL")
            if (url.scheme, url.host, url.port) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise ProtocolError(f"{state.host} redirected more than {MAX_REDIRECTS} times")

    def _exchange(
        self,
        state: _RegistryState,
        attempt: _Attempt,
        method: str,
        url: Url,
        headers: dict[str, str],
        deadline: _Deadline,
        limit: int,
        body: bytes | None,
    ) -> _Response:
        """One HTTP exchange under the deadline. A 200 answer's body is read up to `limit` bytes (beyond it:
        ProtocolError, without reading the rest); another answer's up to ERROR_BODY_LIMIT, then dropped."""
        what = url.netloc or state.host
        left = deadline.left()
        if left <= 0:
            raise Timeout(f"{what} did not answer within {self._timeout:g}s")
        pool = self._pool(url, self._tls_for(state, attempt, url) if url.scheme == Scheme.HTTPS else None)
        raw: Any = None
        content: bytes | None = None
        try:
            with self._watchdog.exchange(deadline):
                raw = pool.urlopen(
                    method,
                    url.request_uri,
                    body=body,
                    headers={"User-Agent": self._user_agent, **headers},
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                    timeout=urllib3.Timeout(connect=min(left, _LONGEST_WAIT), read=min(left, _LONGEST_WAIT)),
                )
                # A HEAD answer's Content-Length is the GET's; there is no body to read.
                content = (
                    b""
                    if method == "HEAD"
                    else _read_body(raw, limit if raw.status == 200 else ERROR_BODY_LIMIT)
                )
        except Exception as exc:
            if raw is not None:
                raw.close()  # broken halfway: never reuse the connection
            late = Timeout(f"{what} did not answer within {self._timeout:g}s")
            raise (late if deadline.expired or _timed_out(exc) else _translate(exc, what)) from None
        finally:
            if raw is not None:
                if content is None:
                    raw.close()  # an answer over its limit, unread: the connection cannot be reused
                raw.release_conn()
        if deadline.expired:  # cut mid-answer, what was read can look whole (headers end at EOF)
            raise Timeout(f"{what} did not answer within {self._timeout:g}s")
        if content is None:
            if raw.status == 200:
                raise ProtocolError(f"{what} sent an answer over the {limit // 1024} KiB limit for it")
            content = b""
        return _Response(raw.status, raw.headers, content)

    def _pool(self, url: Url, tls: _Tls | None) -> urllib3.HTTPConnectionPool:
        scheme, host = url.scheme or Scheme.HTTP, url.host or ""
        port = url.port or (443 if scheme == Scheme.HTTPS else 80)
        key = (scheme, host, port, tls is not None and tls.verify)
        with self._pools_lock:
            found = self._pools.get(key)
            if found is not None and found[0] == tls:
                return found[1]
            pool: urllib3.HTTPConnectionPool
            if tls is None:
                pool = _HTTPPool(host, port, maxsize=self._pool_size, block=False, watchdog=self._watchdog)
            else:
                pool = (_HTTPSPool if tls.verify else _UnverifiedHTTPSPool)(
                    host,
                    port,
                    maxsize=self._pool_size,
                    block=False,
                    ssl_context=_ssl_context(host, tls),
                    cert_reqs="CERT_REQUIRED" if tls.verify else "CERT_NONE",
                    assert_hostname=None if tls.verify else False,
                    watchdog=self._watchdog,
                )
            if found is not None:
                found[1].close()  # the certs.d files changed: the old connections carry the old settings
            self._pools[key] = (tls, pool)
            return pool

    def _tls_for(self, state: _RegistryState, attempt: _Attempt, url: Url) -> _Tls:
        """TLS for a URL reached on `state`'s behalf: the registry's own certs.d folder and verification, as
        the engine's; for another host (a token realm, a redirect) that host's folder plus the registry's CA
        files (Docker uses one TLS configuration for both), verified unless it is the registry's own,
        insecure, host on another port."""
        target = url.netloc or ""
        try:
            own = certs.read(self._certs_dir, target)
            if target == state.host:
                return _Tls(verify=attempt.verify, cas=own.cas, client=own.client, stamp=own.stamp)
            theirs = certs.read(self._certs_dir, state.host)
        except certs.CertsError as exc:
            raise RegistryError(f"TLS files for {state.host}: {exc}") from None
        same_host = _hostname(target) == _hostname(state.host)
        return _Tls(
            verify=not (same_host and state.insecure),
            cas=own.cas + theirs.cas,
            client=own.client or (theirs.client if same_host else None),
            stamp=own.stamp + theirs.stamp,
        )

    def _check(self, state: _RegistryState, ref: ImageRef, response: _Response) -> _Response:
        status = response.status_code
        if status == 200:
            return response
        if status == 429:
            retry_after = distribution.parse_retry_after(response.headers.get("Retry-After"), time.time())
            with state.lock:
                state.blocked_until = max(state.blocked_until, self._clock() + retry_after)
            raise RateLimited(
                f"{ref.api_host} answered 429 Too Many Requests; backing off for {retry_after:.0f}s",
                retry_after,
            )
        if status == 401:
            raise Unauthorized(f"{ref.api_host} refused our credentials for {ref.repository} (401)")
        if status == 403:
            raise Unauthorized(f"{ref.api_host} denied access to {ref.repository} (403)")
        if status == 404:
            raise NotFound(f"{ref} not found in the registry (404)")
        raise RegistryError(f"{ref.api_host} answered {status} for {ref}")

    # -- authentication ----------------------------------------------------------------------------

    def _auth_header(
        self, state: _RegistryState, ref: ImageRef, scope: str, attempt: _Attempt, deadline: _Deadline
    ) -> dict[str, str]:
        # Plain HTTP is an attempt only for registries the engine lists as insecure (loopback included), so
        # Basic credentials and tokens go in clear only to those, as they do from the engine.
        if state.auth_kind == "basic":
            creds = self._creds(state, ref.registry)
            if creds and creds.username and creds.password:
                return {"Authorization": _basic(creds)}
        elif state.auth_kind == "bearer":
            token = state.tokens.get(scope)
            if token is None or token.expires_at <= self._clock():
                token = self._fetch_token(state, ref, scope, attempt, deadline)
            return {"Authorization": f"Bearer {token.value}"}
        return {}

    def _on_challenge(self, state: _RegistryState, ref: ImageRef, scope: str, header: str) -> None:
        kind, params = distribution.parse_challenge(header)
        with state.lock:
            state.auth_kind = kind if kind in ("basic", "bearer") else None
            state.challenge = params
            state.tokens.pop(scope, None)
            state.creds_until = 0.0
        if state.auth_kind is None:
            raise Unauthorized(f"{ref.api_host} asked for unsupported authentication {kind[:20]!r}")

    def _realm(self, state: _RegistryState) -> Url:
        """The token service of a Bearer challenge (token spec, "Requesting a Token"), refused unless it is a
        plain http(s) URL (no userinfo)."""
        realm = state.challenge.get("realm")
        if not realm:
            raise ProtocolError(f"{state.host} sent a Bearer challenge without a realm")
        try:
            url = parse_url(realm)
        except (urllib3.exceptions.LocationParseError, ValueError):
            url = Url()
        if url.scheme not in tuple(Scheme) or not url.host or url.auth:
            raise ProtocolError(f"{state.host} named a token realm that is not a plain http(s) URL")
        return url

    def _fetch_token(
        self, state: _RegistryState, ref: ImageRef, scope: str, attempt: _Attempt, deadline: _Deadline
    ) -> _Token:
        creds = self._creds(state, ref.registry)
        if creds and not (creds.identity_token or (creds.username and creds.password)):
            creds = None
        realm = self._realm(state)
        if (
            creds
            and realm.scheme == Scheme.HTTP
            and not (attempt.scheme is Scheme.HTTP and _same_host(realm, state))
        ):
            # Plain HTTP carries credentials only where the registry itself is plain HTTP (loopback or
            # insecure-listed): never from an HTTPS registry down to an http:// realm, nor to another host.
            raise Unauthorized(
                f"refusing to send the credentials for {state.host} over plain HTTP to its token realm "
                f"http://{realm.netloc}{realm.path or ''}"
                + (" (the registry itself is HTTPS)" if attempt.scheme is Scheme.HTTPS else " (another host)")
            )
        params = {"scope": scope, **{k: v for k, v in state.challenge.items() if k == "service"}}
        response = None
        if creds and creds.identity_token:
            # `docker login` against an OAuth2 registry stores a refresh token, not a password.
            form = {**params, "grant_type": "refresh_token", "refresh_token": creds.identity_token}
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            body = urlencode({**form, "client_id": "dockwarden"}).encode()
            response = self._send(state, attempt, "POST", realm, headers, deadline, TOKEN_LIMIT, body)
            if response.status_code == 404:  # a token service without OAuth2: fall back, as docker does
                response = None
        if response is None:
            headers = {}
            if creds and creds.username and creds.password:
                headers["Authorization"] = _basic(creds)
                params["account"] = creds.username
            query = f"{realm.query + '&' if realm.query else ''}{urlencode(params)}"
            url = parse_url(f"{realm.scheme}://{realm.netloc}{realm.path or '/'}?{query}")
            response = self._send(state, attempt, "GET", url, headers, deadline, TOKEN_LIMIT)
        return self._token(state, ref, scope, response)

    def _token(self, state: _RegistryState, ref: ImageRef, scope: str, response: _Response) -> _Token:
        if response.status_code == 429:
            self._check(state, ref, response)
        if response.status_code != 200:
            raise Unauthorized(f"token service for {ref.api_host} answered {response.status_code}")
        try:
            answer = distribution.parse_token(response.content)
        except Malformed as exc:
            raise ProtocolError(f"token service for {ref.api_host}: {exc}") from None
        token = _Token(answer.value, self._clock() + max(0.0, answer.lifetime - TOKEN_MARGIN))
        with state.lock:
            state.tokens[scope] = token
        return token


def _same_host(url: Url, state: _RegistryState) -> bool:
    return _hostname(url.netloc or "") == _hostname(state.host)


def _ssl_context(host: str, tls: _Tls) -> ssl.SSLContext:
    """certifi's CAs plus certs.d's, and its client pair; without verification for an insecure registry."""
    context = ssl.create_default_context(cafile=certifi.where())
    for path in (*tls.cas, *(tls.client or ())):
        try:
            if path.suffix == ".crt":
                context.load_verify_locations(cafile=str(path))
            elif path.suffix == ".cert" and tls.client is not None:
                # An encrypted key would make OpenSSL prompt on the terminal; Docker takes none either.
                context.load_cert_chain(str(tls.client[0]), str(tls.client[1]), password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            raise RegistryError(f"TLS files for {host}: {path} cannot be used ({_root_cause(exc)})") from None
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _read_body(raw: Any, limit: int) -> bytes | None:
    """The body, read in chunks; None as soon as it (or its declared length) passes `limit` bytes."""
    declared = str(raw.headers.get("Content-Length") or "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    while chunk := raw.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse_tls_port(host: str, content: bytes) -> None:
    """Go's and nginx's answer to plain HTTP on a TLS port: the registry speaks HTTPS there."""
    if re.search(rb"HTTP request (?:to an HTTPS server|was sent to HTTPS port)", content):
        raise _NotHttp(f"{host} speaks HTTPS, not plain HTTP")


def _timed_out(exc: Exception) -> bool:
    """A socket timeout: set to the time left, one firing means the deadline passed too. Not a refused
    connection, which urllib3 2 makes a subclass of its connect timeout."""
    return isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
        exc, urllib3.exceptions.NewConnectionError
    )


def _translate(exc: Exception, what: str) -> RegistryError:  # noqa: PLR0911 -- one return per kind, in order
    """urllib3's and http.client's failures (timeouts aside) as a RegistryError fit for a log line."""
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return Unreachable(f"cannot connect to {what}: {_mask(_root_cause(exc))}")
    if isinstance(exc, urllib3.exceptions.SSLError):
        return Unreachable(f"TLS with {what} failed: {_mask(_root_cause(exc))}")
    cause = exc.args[1] if isinstance(exc, urllib3.exceptions.ProtocolError) and len(exc.args) > 1 else exc
    if isinstance(cause, http.client.HTTPException) and not isinstance(cause, ConnectionError):
        return _NotHttp(f"{what} did not answer in HTTP ({type(cause).__name__})")
    if isinstance(exc, urllib3.exceptions.DecodeError):
        return ProtocolError(f"{what} sent a body that does not decode")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return Unreachable(f"cannot connect to {what}: {_mask(_root_cause(exc))}")
    return ProtocolError(f"talking to {what} failed: {type(exc).__name__}")


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or (exc.args and isinstance(exc.args[0], BaseException)):
        nxt = exc.__cause__ or exc.args[0]
        if not isinstance(nxt, BaseException):
            break
        exc = nxt
    text = str(exc)
    # urllib3 wraps the useful part ("Connection refused") at the end of a long repr.
    found = re.search(r"\[Errno -?\d+\] ([^')]+)", text)
    return found.group(1) if found else text[:200]
