"""Docker's image reference grammar, including Docker Hub's implicit registry and library/ prefix."""

from __future__ import annotations

import pytest

from dockwarden import imageref
from dockwarden.imageref import ImageRef

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", ImageRef("docker.io", "library/nginx", "latest")),
        ("nginx:1.25", ImageRef("docker.io", "library/nginx", "1.25")),
        ("bitnami/redis:7", ImageRef("docker.io", "bitnami/redis", "7")),
        ("docker.io/nginx", ImageRef("docker.io", "library/nginx", "latest")),
        ("index.docker.io/library/nginx:x", ImageRef("docker.io", "library/nginx", "x")),
        ("127.0.0.1:5000/sample:latest", ImageRef("127.0.0.1:5000", "sample", "latest")),
        ("localhost/a/b", ImageRef("localhost", "a/b", "latest")),
        ("ghcr.io/o/r:v1@" + DIGEST, ImageRef("ghcr.io", "o/r", "v1", DIGEST)),
        ("quay.io/o/r@" + DIGEST, ImageRef("quay.io", "o/r", None, DIGEST)),
        ("[::1]:5000/x:y", ImageRef("[::1]:5000", "x", "y")),
    ],
)
def test_parse(text: str, expected: ImageRef) -> None:
    """References parse into registry, repository, tag and digest the way `docker pull` reads them."""
    assert imageref.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["", " nginx", "Nginx", "nginx:", "a//b", "nginx@sha256:xyz", "nginx:" + "t" * 129, "reg.io:x/y/"]
)
def test_invalid(text: str) -> None:
    """Invalid references raise InvalidReference with a message, never another exception."""
    with pytest.raises(imageref.InvalidReference):
        imageref.parse(text)


def test_docker_hub_api_host_and_str() -> None:
    """Docker Hub references are queried at registry-1.docker.io and print in canonical form."""
    ref = imageref.parse("nginx")
    assert ref.api_host == "registry-1.docker.io"
    assert str(ref) == "docker.io/library/nginx:latest"


def test_digests_for_filters_by_repository() -> None:
    """Only RepoDigests of the same registry and repository count as the running digest."""
    other = "sha256:" + "cd" * 32
    repo_digests = [f"127.0.0.1:5000/sample@{DIGEST}", f"127.0.0.1:5001/sample@{other}", f"nginx@{other}"]
    assert imageref.digests_for("127.0.0.1:5000/sample", repo_digests) == {DIGEST}
    assert imageref.digests_for("docker.io/library/nginx", repo_digests) == {other}
