"""Network modes, namespace sharing, upgrade order, host-side probes and the daemon's own upgrades."""

from __future__ import annotations

import contextlib
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.integration.helpers import spawn
from tests.integration.upgrade_lab import (
    Side,
    config,
    fetch,
    free_port,
    names_like,
    push_version,
    update,
    wait_serving,
)
from tests.support.images import LABEL, ImageFactory
from tests.support.registry import Registry

pytestmark = pytest.mark.engine

IDLE = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


@pytest.fixture
def made(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Names of containers a test created, removed (with any set-aside copy) when it ends."""
    names: list[str] = []
    yield names
    for name in names:
        for found in names_like(docker_client, name):
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.containers.get(found).remove(force=True, v=True)


def test_container_sharing_the_namespace_is_recreated_after_its_owner(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path, made: list[str], run_label: str
) -> None:
    """A sidecar in `network_mode: container:<web's ID>` is recreated after web's upgrade and reaches the
    new web on localhost; an unwatched sidecar is handled too."""
    name, port, side = web
    tag, _, _ = push_version(side, registry, "sidecar", cmd=IDLE)
    web_id = side.client.api.inspect_container(name)["Id"]
    sidecar = f"{name}-sidecar"
    made.append(sidecar)
    side.client.containers.run(
        tag, name=sidecar, detach=True, network_mode=f"container:{web_id}", labels={LABEL: run_label}
    )
    _, marker, _ = push_version(side, registry, "app")

    code, rows, err = update(config(tmp_path, {"web": {"container": name}}))

    assert code == 0, err
    assert rows[0]["result"] == "upgraded"
    new_web = side.client.api.inspect_container(name)["Id"]
    child = side.client.api.inspect_container(sidecar)
    assert child["HostConfig"]["NetworkMode"] == f"container:{new_web}"
    assert child["State"]["Running"]
    got = side.client.containers.get(sidecar).exec_run(["wget", "-q", "-O-", "http://127.0.0.1:8080/"])
    assert got.output.decode().strip() == marker
    assert names_like(side.client, sidecar) == [sidecar]
    assert '"namespace.recreated"' in err
    assert fetch(port) == marker


@pytest.mark.parametrize("mode", ["host", "none"])
def test_host_and_none_network_modes_survive_an_upgrade(
    mode: str,
    docker_client: docker.DockerClient,
    images: ImageFactory,
    registry: Registry,
    tmp_path: Path,
    made: list[str],
    run_label: str,
) -> None:
    """A container in host or none mode keeps its mode (and in none mode its chosen hostname)."""
    side = Side(docker_client, images, None)
    tag, _, _ = push_version(side, registry, "idle", cmd=IDLE)
    name = f"dw-mode-{uuid.uuid4().hex[:8]}"
    made.append(name)
    kwargs = {"hostname": "chosen"} if mode == "none" else {}
    docker_client.containers.run(
        tag, name=name, detach=True, network_mode=mode, labels={LABEL: run_label}, **kwargs
    )
    push_version(side, registry, "idle", cmd=IDLE)

    code, rows, err = update(config(tmp_path, {"svc": {"container": name}}))

    assert code == 0, err
    assert rows[0]["result"] == "upgraded"
    new = docker_client.api.inspect_container(name)
    assert new["HostConfig"]["NetworkMode"] == mode
    if mode == "none":
        assert new["Config"]["Hostname"] == "chosen"


def test_depends_on_orders_upgrades_and_an_http_probe_gates(
    docker_client: docker.DockerClient,
    images: ImageFactory,
    registry: Registry,
    tmp_path: Path,
    made: list[str],
    run_label: str,
) -> None:
    """`web` depends on `db`, so db is upgraded first though listed second; web's HTTP probe from the host
    must pass before web is kept."""
    side = Side(docker_client, images, None)
    ports = {}
    for svc in ("web", "db"):
        tag, _, _ = push_version(side, registry, svc)
        name = f"dw-order-{svc}-{uuid.uuid4().hex[:8]}"
        made.append(name)
        ports[svc] = free_port()
        docker_client.containers.run(
            tag,
            name=name,
            detach=True,
            ports={"8080/tcp": ("127.0.0.1", ports[svc])},
            labels={LABEL: run_label},
        )
        wait_serving(ports[svc])
        push_version(side, registry, svc)
    web_name, db_name = made
    cfg = config(
        tmp_path,
        {
            "web": {
                "container": web_name,
                "depends_on": "[db]",
                "health": f'{{http: "http://127.0.0.1:{ports["web"]}/", timeout: 10s}}',
            },
            "db": {"container": db_name},
        },
    )

    code, rows, err = update(cfg)

    assert code == 0, err
    assert [(r["service"], r["result"]) for r in rows] == [("db", "upgraded"), ("web", "upgraded")]
    started = [json.loads(line)["service"] for line in err.splitlines() if '"upgrade.started"' in line]
    assert started == ["db", "web"]


def test_daemon_upgrades_an_auto_service_and_reports_it(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """`dockwarden run` upgrades an `update: auto` service on its schedule and says so in its log."""
    name, port, side = web
    _, marker, _ = push_version(side, registry, "app")
    cfg = config(tmp_path, {"web": {"container": name}})
    log = tmp_path / "daemon.log"
    proc = spawn("run", cfg, log)
    try:
        deadline = time.monotonic() + 60
        while '"upgrade.finished"' not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert fetch(port) == marker
    finished = next(json.loads(line) for line in log.read_text().splitlines() if '"upgrade.finished"' in line)
    assert (finished["service"], finished["result"]) == ("web", "upgraded")
