"""Shared fixtures: the lab (real engine + registries), test images, and leak checks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from tests.support.images import LABEL, ImageFactory, leftovers, remove_labelled
from tests.support.registry import Registry, start_registry

ROOT = Path(__file__).resolve().parent.parent
ENGINE26 = "unix:///var/run/dwlab-docker26.sock"  # Debian 13's docker.io beside 20.10 (scripts/lab.sh)
# Debian forky's docker.io 28.5 with the containerd image store and Docker 29's API floor (scripts/lab.sh)
ENGINE28 = "unix:///var/run/dwlab-docker28.sock"


@pytest.fixture(scope="session")
def lab() -> None:
    """The engine and the shared registry are up (scripts/lab.sh is idempotent and cheap when they are)."""
    subprocess.run([str(ROOT / "scripts" / "lab.sh"), "up"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def run_label() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{uuid.uuid4().hex[:8]}-{worker}"


def _leak_checked(client: docker.DockerClient, run_label: str, where: str) -> Iterator[docker.DockerClient]:
    """Yield `client`; afterwards remove what this run labelled, and fail if anything is left."""
    yield client
    remove_labelled(client, run_label)
    left = leftovers(client, run_label)
    client.close()
    assert not left, f"tests leaked{where}: {left}"


@pytest.fixture(scope="session")
def docker_client(lab: None, run_label: str) -> Iterator[docker.DockerClient]:
    yield from _leak_checked(docker.from_env(version="auto", timeout=120), run_label, "")


@pytest.fixture(scope="session")
def docker26(lab: None, run_label: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=ENGINE26, version="auto", timeout=120)
    yield from _leak_checked(client, run_label, " on engine 26.1")


@pytest.fixture(scope="session")
def docker28(lab: None, run_label: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=ENGINE28, version="auto", timeout=120)
    yield from _leak_checked(client, run_label, " on engine 28.5")


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient, run_label: str) -> Iterator[ImageFactory]:
    factory = ImageFactory(docker_client, run_label)
    yield factory
    factory.cleanup()


@pytest.fixture
def registry(tmp_path: Path, lab: None) -> Iterator[Registry]:
    reg = start_registry(tmp_path / "registry")
    yield reg
    reg.stop()


@pytest.fixture
def containers(docker_client: docker.DockerClient, run_label: str) -> Iterator[list[str]]:
    """Names of containers a test created; they are removed when the test ends."""
    created: list[str] = []
    yield created
    for name in created:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True, v=True)


def labels(run_label: str) -> dict[str, str]:
    return {LABEL: run_label}


Deploy = Callable[..., tuple[str, str, str, str]]


@pytest.fixture
def deploy(
    images: ImageFactory, docker_client: docker.DockerClient, run_label: str, containers: list[str]
) -> Deploy:
    """Build a new image, push it to `registry` as `ref`, and run a container from it.

    Returns (container name, full tag, image ID, pushed digest); the container is removed after the test.
    """

    def _deploy(
        registry: Registry,
        ref: str = "sample:latest",
        prefix: str = "web",
        auth: tuple[str, str] | None = None,
    ) -> tuple[str, str, str, str]:
        tag = f"{registry.host}/{ref}"
        image_id = images.build(tag, f"m-{uuid.uuid4().hex[:8]}")
        digest = images.push(tag, auth=auth)
        name = f"dw-{prefix}-{uuid.uuid4().hex[:8]}"
        containers.append(name)
        docker_client.containers.run(tag, name=name, detach=True, labels={LABEL: run_label})
        return name, tag, image_id, digest

    return _deploy
