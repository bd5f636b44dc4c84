"""Registry answers validated without a network: manifests, indexes, token answers, digest headers, Docker's
certs.d folders and the engine's insecure-registry settings (recorded from Engines 20.10 and 26.1)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from dockwarden import certs, distribution
from dockwarden.distribution import Malformed
from dockwarden.engine import RegistryConfig

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": "sha256:" + "c" * 64}


def _bytes(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def test_recorded_index_is_read_entry_by_entry() -> None:
    """A real multi-platform index yields each entry's digest and platform, attestations included."""
    raw = (Path(__file__).parents[1] / "data" / "index-multiarch.json").read_bytes()
    index = distribution.parse_manifest(raw, distribution.digest_of(raw), None)
    assert index.is_index
    assert index.entries[0].digest == "sha256:" + "1" * 64
    assert (index.entries[2].os, index.entries[2].architecture, index.entries[2].variant) == (
        "linux",
        "arm",
        "v7",
    )


def test_image_manifest_names_its_config() -> None:
    """An image manifest is read as its config digest, whatever the Content-Type said."""
    body = _bytes({"schemaVersion": 2, "config": CONFIG, "layers": []})
    manifest = distribution.parse_manifest(body, D1, "application/vnd.oci.image.manifest.v1+json; x=y")
    assert (manifest.is_index, manifest.config_digest, manifest.media_type) == (
        False,
        CONFIG["digest"],
        "application/vnd.oci.image.manifest.v1+json",
    )


@pytest.mark.parametrize(
    ("body", "content_type", "complaint"),
    [
        ({"manifests": [{"platform": {"os": "linux", "architecture": "amd64"}}]}, None, "has no digest"),
        ({"manifests": {"a": 1}}, None, "is not a list"),
        ({"mediaType": distribution.OCI_INDEX}, None, "is not a list"),
        ({"manifests": None}, None, "is not a list"),
        ({"manifests": ["sha256:" + "1" * 64]}, None, "is not an object"),
        ({"manifests": [{"digest": "sha256:xyz"}]}, None, "not a sha256"),
        ({"manifests": [{"digest": D1.upper()}]}, None, "not a sha256"),
        ({"manifests": [{"digest": 7}]}, None, "not a sha256"),
        ({"manifests": [{"digest": D1, "platform": "linux/amd64"}]}, None, "`platform` is not an object"),
        ({"manifests": [{"digest": D1, "platform": {"os": ["linux"]}}]}, None, "`os` is a list"),
        ({"manifests": [{"digest": D1, "platform": {"os": "linux", "architecture": 64}}]}, None, "is a int"),
        ({"mediaType": 2, "config": CONFIG}, None, "`mediaType` is a int"),
        ({"schemaVersion": 1, "fsLayers": []}, None, "no config digest"),
        ({"config": {"digest": None}}, None, "no config digest"),
        ({"config": "sha256:" + "c" * 64}, None, "no config digest"),
        ([], None, "a JSON list, not an object"),
        ("x", None, "a JSON str, not an object"),
        (b"\xff\xfe not json", None, "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, None, "not JSON"),  # deeper than the parser's recursion limit
        (b'{"config": {"digest": 1' + b"0" * 5000 + b"}}", None, "not JSON"),  # an int past Python's limit
        ({"config": CONFIG}, distribution.OCI_INDEX, "is not a list"),
    ],
)
def test_malformed_manifests_are_refused(body: Any, content_type: str | None, complaint: str) -> None:
    """Each schema break is a Malformed naming what is wrong, not a KeyError, TypeError or RecursionError."""
    with pytest.raises(Malformed, match=complaint):
        distribution.parse_manifest(_bytes(body), D1, content_type)


def test_index_entries_without_platform_are_kept_but_match_nothing() -> None:
    """An entry without `platform` (an artifact) is valid: it is read with no OS or architecture."""
    index = distribution.parse_manifest(_bytes({"manifests": [{"digest": D2}]}), D1, None)
    assert index.entries[0].os is None
    assert index.entries[0].architecture is None


@pytest.mark.parametrize(
    ("body", "token", "lifetime"),
    [
        ({"token": "abc.def-ghi"}, "abc.def-ghi", distribution.DEFAULT_TOKEN_LIFETIME),
        ({"access_token": "xyz", "expires_in": 300}, "xyz", 300.0),
        ({"token": "", "access_token": "xyz", "expires_in": 0.5}, "xyz", 0.5),
        ({"token": "t", "expires_in": 10**12}, "t", distribution.MAX_TOKEN_LIFETIME),
    ],
)
def test_token_answers(body: dict[str, Any], token: str, lifetime: float) -> None:
    """`token` (or OAuth2's `access_token`) and `expires_in` are read; a missing lifetime is 60 s."""
    answer = distribution.parse_token(_bytes(body))
    assert (answer.value, answer.lifetime) == (token, lifetime)


@pytest.mark.parametrize(
    "body",
    [
        {"token": 5},
        {"token": "two words"},
        {"token": "line\r\nX-Injected: yes"},
        {"token": "t\u00e9"},
        {},
        {"token": "t", "expires_in": "300"},
        {"token": "t", "expires_in": True},
        {"token": "t", "expires_in": -1},
        {"token": "t", "expires_in": float("nan")},
        [],
        b"not json",
    ],
)
def test_malformed_token_answers(body: Any) -> None:
    """A token answer with a wrong type, a token unfit for a header or a bad lifetime is refused, and the
    message does not quote the answer."""
    with pytest.raises(Malformed) as caught:
        distribution.parse_token(_bytes(body))  # json.dumps writes NaN as the parser reads it
    assert "two words" not in str(caught.value)
    assert "X-Injected" not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "digest"),
    [
        (D1, D1),
        (f" {D1} ", D1),
        ("sha512:" + "a" * 128, "sha512:" + "a" * 128),
        (None, None),
        ("", None),
        ("sha256:" + "1" * 63, None),
        ("md5:" + "1" * 32, None),
        ("sha256:" + "\u0661" * 64, None),  # Arabic-Indic digits: \d would take them
    ],
)
def test_digest_header(header: str | None, digest: str | None) -> None:
    """Only a well-formed sha256/sha512 Docker-Content-Digest counts; anything else means "fetch it"."""
    assert distribution.header_digest(header) == digest


def test_challenge_with_unquoted_values() -> None:
    """A challenge whose parameters are not quoted (some proxies) is read like a quoted one."""
    kind, params = distribution.parse_challenge("Bearer realm=https://auth.example/token,service=reg")
    assert (kind, params) == ("bearer", {"realm": "https://auth.example/token", "service": "reg"})


def _certs_dir(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "127.0.0.1:5000"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text(name)
    return tmp_path


def test_certs_dir_as_docker_reads_it(tmp_path: Path) -> None:
    """`.crt` files are CAs; a `.cert` with its `.key` is the client pair; other files are ignored."""
    root = _certs_dir(tmp_path, "ca.crt", "other-ca.crt", "client.cert", "client.key", "README")
    found = certs.read(root, "127.0.0.1:5000")
    folder = root / "127.0.0.1:5000"
    assert found.cas == (folder / "ca.crt", folder / "other-ca.crt")
    assert found.client == (folder / "client.cert", folder / "client.key")
    assert certs.read(root, "127.0.0.1:5001") == certs.CertsDir()


@pytest.mark.parametrize(
    ("names", "complaint"),
    [(("client.cert",), "has no key client.key"), (("c.key",), "no client certificate")],
)
def test_certs_dir_half_pairs_are_errors(tmp_path: Path, names: tuple[str, ...], complaint: str) -> None:
    """A client certificate without its key, or a key without its certificate, is an error, as in Docker."""
    with pytest.raises(certs.CertsError, match=complaint):
        certs.read(_certs_dir(tmp_path, *names), "127.0.0.1:5000")


def test_certs_dir_change_is_seen(tmp_path: Path) -> None:
    """A file added to the folder changes what is read, so the next request uses it without a restart."""
    root = _certs_dir(tmp_path, "ca.crt")
    before = certs.read(root, "127.0.0.1:5000")
    (root / "127.0.0.1:5000" / "second.crt").write_text("x")
    assert certs.read(root, "127.0.0.1:5000") != before


# `docker info`'s RegistryConfig on the lab's engines (20.10, 26.1), and with insecure-registries set.
HUB = {"docker.io": {"Mirrors": [], "Name": "docker.io", "Official": True, "Secure": True}}
ENGINE20: dict[str, Any] = {
    "IndexConfigs": HUB,
    "InsecureRegistryCIDRs": ["127.0.0.0/8"],
    "Mirrors": [],
}
ENGINE26 = {**ENGINE20, "Mirrors": None}
CONFIGURED = {
    "IndexConfigs": {
        **HUB,
        "lan-registry:5000": {"Mirrors": [], "Name": "lan-registry:5000", "Official": False, "Secure": False},
    },
    "InsecureRegistryCIDRs": ["10.20.0.0/16", "127.0.0.0/8", "not-a-cidr"],
}


def _addresses(*texts: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(t) for t in texts]


@pytest.mark.parametrize("info", [ENGINE20, ENGINE26])
def test_engine_registry_config_recorded(info: dict[str, Any]) -> None:
    """Loopback is insecure on both engines, by address whatever the name; Docker Hub and the LAN are not."""
    config = RegistryConfig.from_info(info)
    assert config.insecure("dwcase-registry.test:5000", lambda: _addresses("127.0.0.1"))
    assert config.insecure("[::ffff:127.0.0.1]:5000", lambda: _addresses("::ffff:127.0.0.1"))
    assert not config.insecure("docker.io", lambda: _addresses("127.0.0.1"))  # listed Secure: no lookup
    assert not config.insecure("10.20.0.5:5000", lambda: _addresses("10.20.0.5"))
    assert not config.insecure("nowhere.invalid", list)


def test_insecure_registries_by_name_and_range() -> None:
    """An insecure-registries name is insecure without a lookup; a name in an insecure range is too."""
    config = RegistryConfig.from_info(CONFIGURED)
    assert config.insecure("lan-registry:5000", lambda: [])
    assert not config.insecure("lan-registry:5001", lambda: _addresses("192.168.1.9"))
    assert config.insecure("build.lan:443", lambda: _addresses("192.168.1.9", "10.20.3.4"))
    assert len(config.insecure_cidrs) == 2


def test_default_registry_config_is_an_engines() -> None:
    """Without the engine's word, loopback (127.0.0.0/8 and ::1) is insecure and nothing else."""
    config = RegistryConfig()
    assert config.insecure("localhost:5000", lambda: _addresses("::1"))
    assert not config.insecure("registry.example:5000", lambda: _addresses("203.0.113.7"))
