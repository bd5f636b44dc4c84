"""Start-first upgrades on the real engines, with clients reaching the service by its network alias."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.integration.test_upgrade import Sandbox
from tests.integration.upgrade_lab import Side, config, free_port, names_like, push_version, update
from tests.support.images import LABEL, ImageFactory
from tests.support.nginx import HostClient, NetworkClient, build_nginx
from tests.support.registry import Registry

pytestmark = pytest.mark.engine

ALIAS = "app"
# An app that shuts down gracefully, as the servers one puts behind a proxy do: on SIGTERM it closes its
# listening socket (busybox httpd's parent; new connections are refused, which the proxy retries on
# another address), lets the requests in flight finish (httpd's per-connection children), then exits.
GRACEFUL = ["sh", "-c", "httpd -f -p 8080 -h /www & pid=$!; trap 'kill $pid; sleep 0.5; exit 0' TERM; wait"]


@dataclass(frozen=True, kw_only=True)
class Service:
    """A container serving its version marker on port 8080 of `network` under the alias `app`, and no
    published port: what `strategy: start-first` is for."""

    name: str
    network: str
    tag: str
    marker: str


def run_aliased(side: Side, box: Sandbox, network: str, tag: str, name: str) -> str:
    """Run `tag` as `name` on `network` with the alias `app` (no published port); returns its ID."""
    api = side.client.api
    created = api.create_container(
        tag,
        name=name,
        labels={LABEL: box.run_label},
        host_config=api.create_host_config(network_mode=network),
        networking_config=api.create_networking_config(
            {network: api.create_endpoint_config(aliases=[ALIAS])}
        ),
    )
    api.start(created["Id"])
    return str(created["Id"])


@pytest.fixture
def side(docker_client: docker.DockerClient, images: ImageFactory) -> Side:
    """Engine 20.10 only: the lab runs Engine 26.1 with --iptables=false, and Docker's embedded DNS
    (127.0.0.11, how clients resolve an alias) depends on iptables rules in the container's namespace."""
    return Side(docker_client, images, None)


@pytest.fixture
def box(side: Side, run_label: str) -> Iterator[Sandbox]:
    sandbox = Sandbox(side.client, run_label)
    yield sandbox
    sandbox.close()


@pytest.fixture
def service(side: Side, box: Sandbox, registry: Registry) -> Service:
    tag, marker, _ = push_version(side, registry, "sf")
    network = box.network("net")
    name = f"{box.prefix}-web"
    run_aliased(side, box, network, tag, name)
    return Service(name=name, network=network, tag=tag, marker=marker)


def _client(side: Side, box: Sandbox, service: Service) -> NetworkClient:
    return NetworkClient(
        side.client, service.tag, service.network, ALIAS, f"{box.prefix}-client", box.run_label
    )


def _config(tmp_path: Path, service: Service, side: Side) -> Path:
    spec = {"container": service.name, "strategy": "start-first", "drain": "2s"}
    return config(tmp_path, {"web": spec}, side)


def test_start_first_hands_the_alias_to_a_gated_successor(
    side: Side, box: Sandbox, service: Service, registry: Registry, tmp_path: Path
) -> None:
    """A start-first upgrade leaves one container under the name, running the new image, which answers
    the alias for a client inside the network; the old container is gone and nothing is left over."""
    client = _client(side, box, service)
    client.wait_for(service.marker)
    old_id = side.client.api.inspect_container(service.name)["Id"]
    _, marker, _ = push_version(side, registry, "sf")
    code, rows, err = update(_config(tmp_path, service, side))
    assert code == 0, err
    assert rows[0]["result"] == "upgraded"
    client.wait_for(marker)
    assert names_like(side.client, service.name) == [service.name]
    new = side.client.api.inspect_container(service.name)
    assert new["Id"] != old_id
    assert ALIAS in new["NetworkSettings"]["Networks"][service.network]["Aliases"]
    events = [line for line in err.splitlines() if '"upgrade.step"' in line]
    steps = [line.split('"step": "')[1].split('"')[0] for line in events]
    assert steps.index("gate") < steps.index("take-name") < steps.index("stop-old")
    client.close()


def test_a_failed_start_first_upgrade_never_touches_the_old_container(
    side: Side, box: Sandbox, service: Service, registry: Registry, tmp_path: Path
) -> None:
    """A successor that exits at once is removed; the old container, never stopped nor restarted, keeps
    its name, and the in-network client sees no failed request at all."""
    client = _client(side, box, service)
    client.wait_for(service.marker)
    before = side.client.api.inspect_container(service.name)
    push_version(side, registry, "sf", cmd=["false"])
    code, rows, err = update(_config(tmp_path, service, side))
    assert code == 1, err
    assert (rows[0]["result"], rows[0]["step"]) == ("rolled-back", "gate")
    after = side.client.api.inspect_container(service.name)
    assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])
    assert names_like(side.client, service.name) == [service.name]
    client.wait_for(service.marker)
    assert client.failures() == 0
    client.close()


def test_through_nginx_start_first_upgrades_lose_no_request(
    side: Side, box: Sandbox, registry: Registry, run_label: str, tmp_path: Path
) -> None:
    """Behind Debian's nginx (re-resolving the alias, retrying a failed connect), three start-first upgrades
    in a row of an app that shuts down gracefully lose no request of a client going through the proxy."""
    docker_client, sandbox = side.client, box
    proxy_tag = f"dw-nginx-{uuid.uuid4().hex[:8]}:1"
    try:
        tag, marker, _ = push_version(side, registry, "sfp", cmd=GRACEFUL)
        network = sandbox.network("net")
        name = f"{sandbox.prefix}-web"
        run_aliased(side, sandbox, network, tag, name)
        build_nginx(docker_client, proxy_tag, ALIAS, run_label)
        port = free_port()
        docker_client.containers.run(
            proxy_tag,
            name=f"{sandbox.prefix}-proxy",
            network=network,
            ports={"8080/tcp": ("127.0.0.1", port)},
            detach=True,
            labels={LABEL: run_label},
        )
        service = Service(name=name, network=network, tag=tag, marker=marker)
        cfg = _config(tmp_path, service, side)
        with HostClient(port) as through_proxy:
            through_proxy.wait_for(marker)
            for _ in range(3):
                _, marker, _ = push_version(side, registry, "sfp", cmd=GRACEFUL)
                code, rows, err = update(cfg)
                assert (code, rows[0]["result"]) == (0, "upgraded"), err
                through_proxy.wait_for(marker)
        assert through_proxy.failed == []
        assert len(through_proxy.ok) > 100
    finally:
        sandbox.close()
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(proxy_tag, force=True)
