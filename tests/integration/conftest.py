"""Fixtures for the integration tests that upgrade containers, on Engines 20.10, 26.1 and 28.5 (containerd
image store), each chosen by its socket."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import docker.errors
import pytest

from tests.conftest import ENGINE26, ENGINE28
from tests.integration.upgrade_lab import (
    APP,
    HEALTHY,
    Side,
    free_port,
    names_like,
    push_version,
    wait_serving,
)
from tests.support.images import LABEL, ImageFactory
from tests.support.registry import Registry

# Every engine of the lab; the core scenarios (check, upgrade, gate and rollback, retention and rollback,
# GC, kill-and-recover) run on each with `@pytest.mark.parametrize("side"|"web", ENGINES, indirect=True)`.
# Other tests that take `side` run on the two classic-store engines, to keep the suite's time.
ENGINES = ["20.10", "26.1", "28.5"]


def _side(request: pytest.FixtureRequest, engine: str) -> Side:
    """The engine `engine` ("20.10", "26.1" or "28.5") as the tests see it."""
    if engine == "20.10":
        return Side(request.getfixturevalue("docker_client"), request.getfixturevalue("images"), None)
    if engine == "26.1":
        return Side(request.getfixturevalue("docker26"), request.getfixturevalue("images26"), ENGINE26)
    if engine == "28.5":
        return Side(request.getfixturevalue("docker28"), request.getfixturevalue("images28"), ENGINE28)
    raise ValueError(f"no lab engine {engine!r}")


@pytest.fixture
def web(
    request: pytest.FixtureRequest, registry: Registry, run_label: str
) -> Iterator[tuple[str, int, Side]]:
    """A plain app container publishing 8080 on a free loopback port, on Engine 20.10 unless the test
    parametrises `web` indirectly with another engine."""
    side = _side(request, getattr(request, "param", "20.10"))
    tag, _, _ = push_version(side, registry, "app")
    port = free_port()
    name = f"dw-up-{uuid.uuid4().hex[:8]}"
    side.client.containers.run(
        tag, name=name, detach=True, ports={"8080/tcp": ("127.0.0.1", port)}, labels={LABEL: run_label}
    )
    wait_serving(port)
    yield name, port, side
    for other in names_like(side.client, name):
        side.client.containers.get(other).remove(force=True, v=True)


@pytest.fixture(scope="session")
def images26(docker26: docker.DockerClient, run_label: str) -> Iterator[ImageFactory]:
    """Images built on Engine 26.1 for this worker's tests (removed at the end)."""
    factory = ImageFactory(docker26, run_label)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="session")
def images28(docker28: docker.DockerClient, run_label: str) -> Iterator[ImageFactory]:
    """Images built on Engine 28.5 (containerd image store) for this worker's tests (removed at the end)."""
    factory = ImageFactory(docker28, run_label)
    yield factory
    factory.cleanup()


@pytest.fixture
def side_containers(side: Side) -> Iterator[list[str]]:
    """Names of containers a test created on `side`'s engine; they are removed when the test ends."""
    created: list[str] = []
    yield created
    for name in created:
        with contextlib.suppress(docker.errors.NotFound):
            side.client.containers.get(name).remove(force=True, v=True)


@pytest.fixture(params=["20.10", "26.1"])
def side(request: pytest.FixtureRequest) -> Side:
    """Each engine in turn: its client, its image factory and its docker_host for the config."""
    return _side(request, str(request.param))


REGISTRY = "127.0.0.1:5000"  # the lab's registry (scripts/lab.sh)


@dataclass(frozen=True, kw_only=True)
class Versions:
    """One worker's images, pushed once: `repo:latest` is the version the service should move to."""

    good: str  # repository whose :latest is a good new version
    bad: str  # repository whose :latest exits at once
    old_id: str  # the image the services start on (pushed to both repositories as :v1)
    old_marker: str
    new_marker: str
    new_digest: str
    bad_digest: str


@pytest.fixture(scope="session")
def versions(images: ImageFactory, run_label: str) -> Versions:
    """v1, a good v2 and a bad v2, built once per worker (FROM scratch, busybox) and pushed to the lab's
    registry under repositories of this run."""
    base = f"{REGISTRY}/dwfault-{run_label}"
    good, bad = f"{base}-good", f"{base}-bad"
    old, new = f"v1-{uuid.uuid4().hex[:6]}", f"v2-{uuid.uuid4().hex[:6]}"
    old_id = images.build(f"{good}:v1", old, cmd=APP, healthcheck=HEALTHY)
    images.push(f"{good}:v1")
    images.client.api.tag(old_id, bad, "v1")
    images.push(f"{bad}:v1")
    images.build(f"{good}:latest", new, cmd=APP, healthcheck=HEALTHY)
    new_digest = images.push(f"{good}:latest")
    images.build(f"{bad}:latest", "bad", cmd=["false"], healthcheck=HEALTHY)
    bad_digest = images.push(f"{bad}:latest")
    return Versions(
        good=good,
        bad=bad,
        old_id=old_id,
        old_marker=old,
        new_marker=new,
        new_digest=new_digest,
        bad_digest=bad_digest,
    )
