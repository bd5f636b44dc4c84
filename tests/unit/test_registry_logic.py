"""Registry protocol details computed without a network: platforms, challenges, Retry-After, schemes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockwarden import distribution, registry
from dockwarden.check import PlatformMissing, select_platform
from dockwarden.engine import Credentials, Platform

RAW_INDEX = (Path(__file__).parents[1] / "data" / "index-multiarch.json").read_bytes()
INDEX = distribution.parse_manifest(RAW_INDEX, distribution.digest_of(RAW_INDEX), None)


@pytest.mark.parametrize(
    ("platform", "digit"),
    [
        (Platform(os="linux", architecture="amd64"), "1"),
        (Platform(os="linux", architecture="arm", variant="v6"), "2"),
        (Platform(os="linux", architecture="arm", variant="v7"), "3"),
        (Platform(os="linux", architecture="arm64", variant="v8"), "4"),
        (Platform(os="linux", architecture="arm64", variant=None), "4"),
    ],
)
def test_select_platform(platform: Platform, digit: str) -> None:
    """The child for this engine's OS, architecture and variant is chosen; attestations never are."""
    assert select_platform(INDEX, platform) == "sha256:" + digit * 64


def test_select_platform_missing() -> None:
    """An index without this platform is a clear per-service error."""
    with pytest.raises(PlatformMissing, match="linux/s390x"):
        select_platform(INDEX, Platform(os="linux", architecture="s390x"))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (None, distribution.DEFAULT_BACKOFF),
        ("soon", distribution.DEFAULT_BACKOFF),
        ("Sat, 28 Nov 2026 12:00:30 GMT", 30.0),
        ("\u00b2", distribution.DEFAULT_BACKOFF),  # a latin-1 superscript two: str.isdigit() says yes
        ("\u0663", distribution.DEFAULT_BACKOFF),  # an Arabic-Indic three: float() would take it
        ("99999999999", distribution.MAX_BACKOFF),
        ("-5", distribution.DEFAULT_BACKOFF),
        ("Sat, 28 Nov 9999 12:00:30 GMT", distribution.MAX_BACKOFF),
        ("Sat, 28 Nov 2026 11:00:00 GMT", 0.0),
        ("Sat, 28 Nov 2026 12:00:30 -0000", distribution.DEFAULT_BACKOFF),
        ("Sat, 99 Nov 2026 12:00:30 GMT", distribution.DEFAULT_BACKOFF),
    ],
)
def test_retry_after(header: str | None, expected: float) -> None:
    """Retry-After is read as ASCII seconds or an HTTP date, clamped to an hour; anything else (non-ASCII
    digits, negative numbers, impossible dates) falls back to the default back-off."""
    noon = 1795867200.0  # 2026-11-28T12:00:00Z
    assert distribution.parse_retry_after(header, now=noon) == pytest.approx(expected)


def test_parse_bearer_challenge() -> None:
    """A Bearer challenge yields realm, service and scope."""
    kind, params = distribution.parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )
    assert kind == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/nginx:pull",
    }


@pytest.mark.parametrize(
    ("host", "scheme"),
    [
        ("127.0.0.1:5000", "http"),
        ("127.9.9.9", "http"),
        ("localhost:5000", "http"),
        ("[::1]:5000", "http"),
        ("registry-1.docker.io", "https"),
        ("10.0.0.5:5000", "https"),
        ("ghcr.io", "https"),
    ],
)
def test_default_scheme(host: str, scheme: str) -> None:
    """Plain HTTP is tried first only for loopback registries; every other starts with HTTPS."""
    assert registry.default_scheme(host) == scheme


def test_accept_lists_all_four_manifest_types() -> None:
    """The HEAD asks for Docker and OCI manifests and indexes alike."""
    for media_type in (
        distribution.MANIFEST_V2,
        distribution.MANIFEST_LIST_V2,
        distribution.OCI_MANIFEST,
        distribution.OCI_INDEX,
    ):
        assert media_type in distribution.ACCEPT


def test_credentials_never_show_their_secret() -> None:
    """Credentials built positionally, as outside code does, keep the password out of repr()."""
    text = repr(Credentials("alice", "s3cret"))
    assert "alice" in text
    assert "s3cret" not in text
