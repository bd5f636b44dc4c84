"""Registry protocol details computed without a network: platforms, challenges, Retry-After, schemes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockwarden import registry
from dockwarden.check import PlatformMissing, select_platform
from dockwarden.engine import Credentials, Platform

INDEX = json.loads((Path(__file__).parents[1] / "data" / "index-multiarch.json").read_text())


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
        (None, registry.DEFAULT_BACKOFF),
        ("soon", registry.DEFAULT_BACKOFF),
        ("Sat, 28 Nov 2026 12:00:30 GMT", 30.0),
    ],
)
def test_retry_after(header: str | None, expected: float) -> None:
    """Retry-After is read as seconds or as an HTTP date; garbage falls back to the default back-off."""
    noon = 1795867200.0  # 2026-11-28T12:00:00Z
    assert registry.parse_retry_after(header, now=noon) == pytest.approx(expected)


def test_parse_bearer_challenge() -> None:
    """A Bearer challenge yields realm, service and scope."""
    kind, params = registry.parse_challenge(
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
    """Only loopback registries are spoken to over plain HTTP, as Docker does by default."""
    assert registry.default_scheme(host) == scheme


def test_accept_lists_all_four_manifest_types() -> None:
    """The HEAD asks for Docker and OCI manifests and indexes alike."""
    for media_type in (
        registry.MANIFEST_V2,
        registry.MANIFEST_LIST_V2,
        registry.OCI_MANIFEST,
        registry.OCI_INDEX,
    ):
        assert media_type in registry.ACCEPT


def test_credentials_never_show_their_secret() -> None:
    """Credentials built positionally, as outside code does, keep the password out of repr()."""
    text = repr(Credentials("alice", "s3cret"))
    assert "alice" in text
    assert "s3cret" not in text
