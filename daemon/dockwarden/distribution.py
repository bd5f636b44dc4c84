"""What a registry's answers mean, validated: manifests, indexes, token answers, challenges, Retry-After.

Pure functions of bytes and header values, so that every malformed answer can be tried without a network.
An answer that does not fit its schema raises `Malformed`, whose message says what is wrong and never quotes
the answer (it may hold a token); `registry` turns it into a `protocol-error` for the services behind that
registry only. Sources: the OCI distribution spec ("Pulling manifests", "Content Digests"), the OCI image
spec (image index, image manifest, descriptor, digest grammar), the distribution project's token
authentication spec (docs/spec/auth/token.md) and RFC 9110 (Retry-After, WWW-Authenticate).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join((MANIFEST_V2, MANIFEST_LIST_V2, OCI_MANIFEST, OCI_INDEX))
INDEX_TYPES = frozenset((MANIFEST_LIST_V2, OCI_INDEX))

# The distribution registry refuses manifests over 4 MiB (registry/handlers/manifests.go,
# maxManifestBodySize); containerd reads at most as much. Nothing a registry may legitimately serve is larger.
MANIFEST_LIMIT = 4 * 1024 * 1024  # bytes
# A token answer is a JSON object with a token of a few KiB; 1 MiB leaves room for any real one.
TOKEN_LIMIT = 1024 * 1024  # bytes

DEFAULT_BACKOFF = 60.0  # seconds, when a 429 comes without a usable Retry-After
MAX_BACKOFF = 3600.0  # seconds: a longer Retry-After would stop checks for days on one odd header
DEFAULT_TOKEN_LIFETIME = 60.0  # seconds; the token spec: "When omitted, this defaults to 60 seconds"
MAX_TOKEN_LIFETIME = 86400.0  # seconds; a 401 renews a token the registry revoked sooner

# OCI image spec, "Digests": algorithm ":" encoded. The two registered algorithms, lowercase hex.
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
# RFC 6750's b64token, loosened to any visible ASCII: what can go into an Authorization header as is.
_TOKEN = re.compile(r"[\x21-\x7e]+")
# RFC 9110 auth-param: name=token or name="quoted string" (registries quote; some proxies do not).
_CHALLENGE_PARAM = re.compile(r'([A-Za-z0-9_-]+)=(?:"([^"]*)"|([^\s,"]+))')
_SECONDS = re.compile(r"[0-9]+")


class Malformed(ValueError):
    """A registry answer that breaks its schema; the message names what, never the answer's content."""


@dataclass(frozen=True, kw_only=True)
class IndexEntry:
    """One `manifests[]` descriptor of an image index (OCI image spec, "Image Index")."""

    digest: str
    os: str | None
    architecture: str | None
    variant: str | None


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A validated manifest: an image manifest names its config blob, an index its entries.

    `config_digest` is the image manifest's `config.digest` (None for an index); `entries` an index's
    `manifests` (empty for an image manifest)."""

    digest: str
    media_type: str
    config_digest: str | None = None
    entries: tuple[IndexEntry, ...] = ()

    @property
    def is_index(self) -> bool:
        return self.config_digest is None


@dataclass(frozen=True, kw_only=True)
class Token:
    """A token service's answer: the token and, in seconds, how long it may be reused."""

    value: str
    lifetime: float


def is_digest(text: object) -> bool:
    """True for a `sha256:` or `sha512:` digest in lowercase hex (OCI image spec, "Digests")."""
    return isinstance(text, str) and _DIGEST.fullmatch(text) is not None


def digest_of(content: bytes, algorithm: str = "sha256") -> str:
    """The content's digest as `algorithm:hex`; `algorithm` is sha256 or sha512."""
    return f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"


def matches(content: bytes, digest: str) -> bool:
    """True if `content` hashes to `digest` under the digest's own algorithm."""
    return is_digest(digest) and digest_of(content, digest.partition(":")[0]) == digest


def header_digest(value: str | None) -> str | None:
    """A `Docker-Content-Digest` header's digest, or None when it is absent or not a digest.

    The header is optional (OCI distribution spec, "Pulling manifests": the registry SHOULD send it), so a
    missing or unusable one is a reason to fetch the manifest, not an error."""
    if value is None:
        return None
    value = value.strip()
    return value if is_digest(value) else None


def media_type_of(content_type: str | None) -> str:
    """A Content-Type header's media type, without parameters; empty when absent."""
    return (content_type or "").split(";")[0].strip()


def _json_object(content: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise Malformed(f"the {what} is not JSON") from None
    if not isinstance(body, dict):
        raise Malformed(f"the {what} is a JSON {type(body).__name__}, not an object")
    return body


def _optional_str(mapping: dict[str, Any], key: str, where: str) -> str | None:
    value = mapping.get(key)
    if value is not None and not isinstance(value, str):
        raise Malformed(f"{where}: `{key}` is a {type(value).__name__}, not a string")
    return value


def _entry(position: int, item: object) -> IndexEntry:
    where = f"index entry {position}"
    if not isinstance(item, dict):
        raise Malformed(f"{where} is not an object")
    digest = item.get("digest")
    if digest is None:
        raise Malformed(f"{where} has no digest")
    if not is_digest(digest):
        raise Malformed(f"{where}: `digest` is not a sha256 or sha512 digest")
    platform = item.get("platform")
    if platform is None:
        platform = {}
    if not isinstance(platform, dict):
        raise Malformed(f"{where}: `platform` is not an object")
    return IndexEntry(
        digest=str(digest),
        os=_optional_str(platform, "os", where),
        architecture=_optional_str(platform, "architecture", where),
        variant=_optional_str(platform, "variant", where),
    )


def parse_manifest(content: bytes, digest: str, content_type: str | None) -> Manifest:
    """Validate a manifest or index served as `content` (at most MANIFEST_LIMIT bytes, checked by the
    reader) under `digest`. An index (`mediaType` or Content-Type an index type, or a `manifests` key) must
    list objects with a digest; an image manifest must name its config by digest. Raises Malformed."""
    body = _json_object(content, "manifest")
    media_type = _optional_str(body, "mediaType", "the manifest") or media_type_of(content_type)
    if "manifests" in body or media_type in INDEX_TYPES:
        entries = body.get("manifests")
        if not isinstance(entries, list):
            raise Malformed("the index's `manifests` is not a list")
        return Manifest(
            digest=digest, media_type=media_type, entries=tuple(_entry(i, e) for i, e in enumerate(entries))
        )
    config = body.get("config")
    if not isinstance(config, dict) or not is_digest(config.get("digest")):
        raise Malformed("the manifest names no config digest (schema 1, or not an image manifest)")
    return Manifest(digest=digest, media_type=media_type, config_digest=str(config["digest"]))


def parse_token(content: bytes) -> Token:
    """Validate a token service's answer (at most TOKEN_LIMIT bytes, checked by the reader): `token` (or
    OAuth2's `access_token`) a non-empty visible-ASCII string, `expires_in` a positive number of seconds
    if present (token spec, "Token Response Fields"). Raises Malformed, never quoting the answer."""
    body = _json_object(content, "token answer")
    value = _optional_str(body, "token", "the token answer") or _optional_str(
        body, "access_token", "the token answer"
    )
    if not value or _TOKEN.fullmatch(value) is None:
        raise Malformed("the token answer has no usable token")
    expires_in = body.get("expires_in")
    if expires_in is None:
        return Token(value=value, lifetime=DEFAULT_TOKEN_LIFETIME)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not expires_in > 0:
        raise Malformed("the token answer's `expires_in` is not a positive number")
    return Token(value=value, lifetime=min(float(expires_in), MAX_TOKEN_LIFETIME))


def parse_retry_after(value: str | None, now: float) -> float:
    """Seconds to wait from a Retry-After header (RFC 9110: delta-seconds or an HTTP date; `now` in Unix
    seconds), clamped to 0..MAX_BACKOFF; DEFAULT_BACKOFF when absent or unreadable (non-ASCII digits too)."""
    if not value:
        return DEFAULT_BACKOFF
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return min(float(value), MAX_BACKOFF)
    if not value.isascii():
        return DEFAULT_BACKOFF
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000" dates come back naive; RFC 9110 dates are GMT
            return DEFAULT_BACKOFF
        seconds = when.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return DEFAULT_BACKOFF
    return min(max(0.0, seconds), MAX_BACKOFF)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """A WWW-Authenticate challenge's scheme (lowercase) and parameters (RFC 9110, "Challenge and Response";
    the distribution spec's Bearer challenge has realm, service and scope)."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {
        name.lower(): quoted or bare for name, quoted, bare in _CHALLENGE_PARAM.findall(rest)
    }
