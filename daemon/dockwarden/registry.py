"""The only module that speaks HTTP to registries.

Detection must not spend pull quota: a HEAD of a manifest is free on Docker Hub, a GET counts. So the
common path is one HEAD per distinct image; GETs happen only when a digest changed. This module owns
timeouts, the bearer-token cache (one token per registry and scope, reused until it expires), per-registry
back-off after a 429, and masking: no credential or token ever appears in an error message.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import certifi
import urllib3

from dockwarden.engine import Credentials
from dockwarden.imageref import ImageRef

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join((MANIFEST_V2, MANIFEST_LIST_V2, OCI_MANIFEST, OCI_INDEX))
INDEX_TYPES = frozenset((MANIFEST_LIST_V2, OCI_INDEX))

DEFAULT_BACKOFF = 60.0  # seconds, when a 429 comes without a usable Retry-After
TOKEN_MARGIN = 10.0  # renew a token this long before it expires
CREDENTIALS_TTL = 300.0  # seconds a Docker-config lookup is reused
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


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


@dataclass(frozen=True)
class ManifestHead:
    digest: str
    media_type: str
    ratelimit_remaining: str | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: dict[str, Any]


@dataclass(frozen=True)
class _Response:
    status_code: int
    headers: Any  # urllib3's case-insensitive HTTPHeaderDict
    content: bytes


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass
class _RegistryState:
    scheme: str
    auth_kind: str | None = None  # None until challenged; then "bearer" or "basic"
    challenge: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    blocked_until: float = 0.0
    creds: Credentials | None = None
    creds_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


CredentialLookup = Callable[[str], Credentials | None]


def default_scheme(host: str) -> str:
    """Docker talks plain HTTP to loopback registries by default and HTTPS to every other one."""
    hostname = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1 : host.index("]")]
    if hostname == "localhost":
        return "http"
    try:
        return "http" if ipaddress.ip_address(hostname).is_loopback else "https"
    except ValueError:
        return "https"


def parse_retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), else the default."""
    if not value:
        return DEFAULT_BACKOFF
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return DEFAULT_BACKOFF
    return max(0.0, when - (now if now is not None else time.time()))


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def _mask(text: str) -> str:
    # urllib3 puts URLs in its messages; userinfo in a URL could be a secret.
    return re.sub(r"//[^/@\s]+@", "//***@", text)


class RegistryClient:
    def __init__(
        self,
        credentials: CredentialLookup,
        timeout: float = 10.0,
        pool_size: int = 32,
        clock: Callable[[], float] = time.monotonic,
        user_agent: str = "dockwarden",
    ) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._clock = clock
        self._user_agent = user_agent
        # urllib3 directly rather than requests: a check is one small HEAD, and requests' per-request
        # bookkeeping cost several times the request itself at hundreds of images per cycle. Keep-alive
        # connections for every concurrent check (maxsize); certificates verified against certifi's bundle.
        self._http = urllib3.PoolManager(
            num_pools=64,
            maxsize=pool_size,
            # No retries (the next cycle is the retry), but follow redirects: some registries send manifest
            # requests elsewhere. urllib3 drops Authorization when a redirect changes host.
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5),
            timeout=urllib3.Timeout(total=timeout),
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
        self._states: dict[str, _RegistryState] = {}
        self._states_lock = threading.Lock()

    def close(self) -> None:
        self._http.clear()

    def _state(self, host: str) -> _RegistryState:
        with self._states_lock:
            if host not in self._states:
                self._states[host] = _RegistryState(scheme=default_scheme(host))
            return self._states[host]

    def _creds(self, state: _RegistryState, registry: str) -> Credentials | None:
        # A credential helper is a process per lookup; remember the answer for a while. A 401 forgets it,
        # so rotated credentials are picked up on the next request.
        now = self._clock()
        if state.creds_until <= now:
            state.creds = self._credentials(registry)
            state.creds_until = now + CREDENTIALS_TTL
        return state.creds

    # -- public operations -------------------------------------------------------------------------

    def head_manifest(self, ref: ImageRef) -> ManifestHead:
        """The digest the registry serves for the tag, by HEAD: free of pull quota."""
        response = self._request("HEAD", ref, ref.manifest_reference)
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise ProtocolError(f"{ref.api_host} sent no Docker-Content-Digest header for {ref}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return ManifestHead(digest, media_type, response.headers.get("ratelimit-remaining"))

    def get_manifest(self, ref: ImageRef, digest: str) -> Manifest:
        """GET a manifest by digest and verify that its bytes hash to that digest."""
        response = self._request("GET", ref, digest)
        actual = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if actual != digest:
            raise ProtocolError(f"{ref.api_host} served manifest {actual} when asked for {digest}")
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise ProtocolError(f"{ref.api_host} served a manifest that is not JSON") from exc
        media_type = body.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0]
        return Manifest(digest, str(media_type), body)

    # -- transport ---------------------------------------------------------------------------------

    def _url(self, state: _RegistryState, ref: ImageRef, reference: str) -> str:
        return f"{state.scheme}://{ref.api_host}/v2/{ref.repository}/manifests/{reference}"

    def _request(self, method: str, ref: ImageRef, reference: str) -> _Response:
        state = self._state(ref.api_host)
        wait = state.blocked_until - self._clock()
        if wait > 0:
            raise RateLimited(f"{ref.api_host} asked us to back off; {wait:.0f}s left", wait)
        scope = f"repository:{ref.repository}:pull"
        headers = {"Accept": ACCEPT, **self._auth_header(state, ref, scope)}
        response = self._http_call(method, self._url(state, ref, reference), headers, ref.api_host)
        if response.status_code == 401 and "WWW-Authenticate" in response.headers:
            self._on_challenge(state, ref, scope, response.headers["WWW-Authenticate"])
            headers = {"Accept": ACCEPT, **self._auth_header(state, ref, scope)}
            response = self._http_call(method, self._url(state, ref, reference), headers, ref.api_host)
        return self._check(state, ref, response)

    def _http_call(
        self, method: str, url: str, headers: dict[str, str], what: str, body: bytes | None = None
    ) -> _Response:
        try:
            try:
                raw = self._http.request(
                    method, url, body=body, headers={"User-Agent": self._user_agent, **headers}, redirect=True
                )
            except urllib3.exceptions.MaxRetryError as exc:
                raise exc.reason or exc from None
        except urllib3.exceptions.NewConnectionError as exc:
            # Checked first: urllib3 2 makes a refused connection a subclass of its connect timeout.
            raise Unreachable(f"cannot connect to {what}: {_mask(_root_cause(exc))}") from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise Timeout(f"{what} did not answer within {self._timeout:g}s") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(f"cannot connect to {what}: {_mask(_root_cause(exc))}") from exc
        return _Response(raw.status, raw.headers, raw.data)

    def _check(self, state: _RegistryState, ref: ImageRef, response: _Response) -> _Response:
        status = response.status_code
        if status == 200:
            return response
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
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

    def _auth_header(self, state: _RegistryState, ref: ImageRef, scope: str) -> dict[str, str]:
        if state.auth_kind == "basic":
            creds = self._creds(state, ref.registry)
            if creds and creds.username and creds.password:
                return {"Authorization": _basic(creds)}
        elif state.auth_kind == "bearer":
            token = state.tokens.get(scope)
            if token is None or token.expires_at <= self._clock():
                token = self._fetch_token(state, ref, scope)
            return {"Authorization": f"Bearer {token.value}"}
        return {}

    def _on_challenge(self, state: _RegistryState, ref: ImageRef, scope: str, header: str) -> None:
        kind, params = parse_challenge(header)
        with state.lock:
            state.auth_kind = kind if kind in ("basic", "bearer") else None
            state.challenge = params
            state.tokens.pop(scope, None)
            state.creds_until = 0.0
        if state.auth_kind is None:
            raise Unauthorized(f"{ref.api_host} asked for unsupported authentication {kind!r}")

    def _fetch_token(self, state: _RegistryState, ref: ImageRef, scope: str) -> _Token:
        realm = state.challenge.get("realm")
        if not realm:
            raise ProtocolError(f"{ref.api_host} sent a Bearer challenge without a realm")
        params = {"scope": scope}
        if "service" in state.challenge:
            params["service"] = state.challenge["service"]
        creds = self._creds(state, ref.registry)
        what = f"the token service for {ref.api_host}"
        response = None
        if creds and creds.identity_token:
            # `docker login` against an OAuth2 registry stores a refresh token, not a password.
            form = {
                **params,
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": "dockwarden",
            }
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            response = self._http_call("POST", realm, headers, what, body=urlencode(form).encode())
            if response.status_code == 404:  # a token service without OAuth2: fall back, as docker does
                response = None
        if response is None:
            headers = {}
            if creds and creds.username and creds.password:
                headers["Authorization"] = _basic(creds)
                params["account"] = creds.username
            url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(params)}"
            response = self._http_call("GET", url, headers, what)
        if response.status_code == 429:
            self._check(state, ref, response)
        if response.status_code != 200:
            raise Unauthorized(f"token service for {ref.api_host} answered {response.status_code}")
        try:
            body = json.loads(response.content)
            value = body.get("token") or body["access_token"]
            # The distribution spec: tokens without expires_in last 60 seconds.
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, KeyError, TypeError):
            # No cause: the answer it would carry may hold a token, and causes reach tracebacks in logs.
            raise ProtocolError(f"token service for {ref.api_host} sent an unreadable answer") from None
        token = _Token(str(value), self._clock() + max(0.0, lifetime - TOKEN_MARGIN))
        with state.lock:
            state.tokens[scope] = token
        return token


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
