"""A private engine restarted in the middle of an upgrade (issue 12 item 5): during the pull, between the
old version's stop and the new one's start, and during the gate. Each time the service runs afterwards
(old or new version), nothing is left over, the next `dockwarden update` converges to one healthy
container on the new version, and the good digest is never skip-listed.

The engine is Debian's dockerd 20.10 with its own socket, data root, exec root, pidfile and bridge
(`tests/support/privateengine.py`), torn down by the fixture whatever happens; the lab's engines are never
stopped. Images come from the lab's registry (the `versions` fixture of the integration conftest).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from dockwarden import config as configuration
from dockwarden import gate, retention
from dockwarden.engine import Engine
from dockwarden.locks import ContainerLock
from dockwarden.upgrade import Hooks
from tests.integration.conftest import Versions
from tests.integration.helpers import cli, spawn, wait_for_text, write_config
from tests.integration.upgrade_lab import free_port, names_like, run_cycle, wait_serving
from tests.support.images import LABEL
from tests.support.privateengine import PrivateEngine

pytestmark = pytest.mark.engine


@pytest.fixture
def private(tmp_path: Path) -> Iterator[PrivateEngine]:
    """A private dockerd for this test alone, always torn down with its bridge and folders."""
    with PrivateEngine.started(tmp_path / "dockerd.log") as engine:
        yield engine


@dataclass(frozen=True, kw_only=True)
class Service:
    name: str
    port: int
    cfg: Path
    state_dir: Path


def _service(
    engine: PrivateEngine, versions: Versions, run_label: str, tmp_path: Path, probe: int | None = None
) -> Service:
    """v1 running on the private engine (restart policy unless-stopped, so the engine brings it back),
    the registry's tag already on v2; a config for it, with a host TCP probe on `probe` if given."""
    api = engine.client.api
    for _ in api.pull(versions.good, tag="v1", stream=True):
        pass
    api.tag(versions.old_id, versions.good, "latest")
    name, port = f"dwr-{uuid.uuid4().hex[:10]}", free_port()
    api.start(
        api.create_container(
            f"{versions.good}:latest",
            name=name,
            ports=[8080],
            labels={LABEL: run_label},
            stop_timeout=1,
            host_config=api.create_host_config(
                port_bindings={8080: ("127.0.0.1", port)}, restart_policy={"Name": "unless-stopped"}
            ),
        )
    )
    wait_serving(port)
    spec = {"container": name}
    if probe is not None:
        spec["health"] = f'{{tcp: "127.0.0.1:{probe}", timeout: 90s}}'
    extra = f"docker_host: {engine.docker_host}\nengine_timeout: 10s\nstability_window: 1s"
    cfg = write_config(tmp_path / "dw.yaml", {"web": spec}, extra=extra)
    return Service(name=name, port=port, cfg=cfg, state_dir=tmp_path / "state")


def _four_properties(engine: PrivateEngine, service: Service, versions: Versions) -> None:
    """The service serves (old or new); then a second `update` leaves one healthy container on the new
    version; nothing is left over; the good digest was never skip-listed."""
    client = engine.client
    assert client.api.inspect_container(service.name)["State"]["Running"]
    assert wait_serving(service.port, timeout=30) in (versions.old_marker, versions.new_marker)
    skipped = service.state_dir / "skipped.json"
    assert versions.new_digest not in (skipped.read_text() if skipped.exists() else "")

    proc = cli("update", "-c", str(service.cfg), "--json", timeout=240)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    assert rows[0]["result"] in ("upgraded", "up-to-date"), (rows, proc.stderr[-3000:])
    assert names_like(client, service.name) == [service.name]
    deadline = time.monotonic() + 30
    while client.api.inspect_container(service.name)["State"].get("Health", {}).get("Status") != "healthy":
        assert time.monotonic() < deadline, client.api.inspect_container(service.name)["State"]
        time.sleep(0.2)
    assert wait_serving(service.port) == versions.new_marker
    pulled = retention.pulled_tag(service.name)
    assert not [t for i in client.images.list() for t in i.tags if t.endswith(":" + pulled)]
    assert ContainerLock(service.state_dir, service.name).holder() is None
    assert not list(service.state_dir.rglob("*.tmp*"))
    assert versions.new_digest not in (skipped.read_text() if skipped.exists() else "")


def _listen_on(port: int) -> Callable[[], None]:
    """Open a TCP listener on 127.0.0.1:`port` (what the service's probe waits for); returns its closer."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    return server.close


def test_engine_restarted_during_the_gate(
    private: PrivateEngine, versions: Versions, run_label: str, tmp_path: Path
) -> None:
    """The engine restarts while the gate waits for the probe: the upgrade is rolled back or finished,
    never blamed on the image, and the next run upgrades."""
    probe = free_port()
    service = _service(private, versions, run_label, tmp_path, probe=probe)
    log = tmp_path / "update.log"
    proc = spawn("update", service.cfg, log)
    close = None
    try:
        wait_for_text(log, '"step": "start"', timeout=120)  # the start step ended: in the gate now
        time.sleep(1)
        private.restart()
        close = _listen_on(probe)  # the probe passes from now on
        proc.wait(240)
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
        _four_properties(private, service, versions)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if close is not None:
            close()


@pytest.mark.parametrize("step", ["start", "pull"])
def test_engine_restarted_mid_transaction(
    step: str, private: PrivateEngine, versions: Versions, run_label: str, tmp_path: Path
) -> None:
    """The engine restarts between the old version's stop and the new one's start (synchronously, before
    START), or while the image is pulled (in the background, as PULL begins): the service runs afterwards,
    and the next run converges on the new version."""
    service = _service(private, versions, run_label, tmp_path)
    restarts: list[threading.Thread] = []

    def checkpoint(current: str) -> None:
        if current != step:
            return
        if step == "start":
            private.restart()
        else:
            restarts.append(threading.Thread(target=private.restart))
            restarts[-1].start()

    report = run_cycle(configuration.load(service.cfg), Hooks(checkpoint=checkpoint))
    for thread in restarts:
        thread.join(180)
    assert restarts or step == "start"
    outcome = report.outcomes[0]
    assert outcome.cause in (None, "engine"), outcome
    _four_properties(private, service, versions)


def test_the_engines_events_tell_a_stop_from_an_exit(
    docker_client: docker.DockerClient, versions: Versions, run_label: str
) -> None:
    """`Engine.stopped_by_request` finds the kill of a `docker stop` since the container's start, and
    nothing for a container that exited by itself (the lab's Engine 20.10)."""
    api = docker_client.api
    made = []
    try:
        for command in (None, ["false"]):
            made.append(
                api.create_container(
                    f"{versions.good}:v1", command=command, labels={LABEL: run_label}, stop_timeout=1
                )["Id"]
            )
            api.start(made[-1])
        api.stop(made[0])
        api.wait(made[1], timeout=30)
        engine = Engine.connect()
        try:
            for container_id, stopped in zip(made, (True, False), strict=True):
                since = gate._started_at(api.inspect_container(container_id))
                assert since is not None
                assert engine.stopped_by_request(container_id, since) is stopped
        finally:
            engine.close()
    finally:
        for container_id in made:
            api.remove_container(container_id, force=True)
