"""Crash safety: a process killed at any step of an upgrade leaves a state the next start converges."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from dockwarden import config as configuration
from dockwarden import upgrade
from dockwarden.locks import ContainerLock
from dockwarden.upgrade import Hooks, Result
from tests.integration.conftest import ENGINES
from tests.integration.helpers import spawn, wait_for_text
from tests.integration.test_start_first import run_aliased
from tests.integration.test_upgrade import Sandbox
from tests.integration.upgrade_lab import (
    APP,
    Side,
    config,
    fetch,
    free_port,
    names_like,
    push_version,
    recover,
    run_cycle,
    update,
    wait_serving,
)
from tests.support.images import LABEL, ImageFactory
from tests.support.registry import Registry

pytestmark = pytest.mark.engine


def _kill_update_before(step: str, cfg_path: Path, log: Path) -> int:
    """Run `dockwarden update` until it parks before `step`, SIGKILL it there; returns its PID."""
    proc = spawn("update", cfg_path, log, pause_before=step)
    try:
        wait_for_text(log, f"paused before {step}")
    finally:
        proc.kill()
        proc.wait()
    return proc.pid


@pytest.mark.parametrize("web", ENGINES, indirect=True)
@pytest.mark.parametrize("step", upgrade.STEPS)
def test_killed_before_each_step_converges_on_restart(
    step: str, web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """SIGKILL before any step, then a fresh start: exactly one container has the name and it serves the
    old version (the new one only if the old had already been committed away), with nothing left over."""
    name, port, side = web
    before = fetch(port)
    _, marker, _ = push_version(side, registry, "app")
    cfg_path = config(tmp_path, {"web": {"container": name}}, side)
    killed = _kill_update_before(step, cfg_path, tmp_path / "update.log")
    cfg = configuration.load(cfg_path)
    assert ContainerLock(cfg.state_dir, name).holder() == killed  # the dead process's lock is on disk

    recover(cfg)

    assert names_like(side.client, name) == [name]
    state = side.client.api.inspect_container(name)["State"]
    assert state["Running"]
    expected = marker if step == "remove-old" else before
    assert wait_serving(port) == expected  # one container has the port: the first answer is the only one
    with ContainerLock(cfg.state_dir, name) as lock:  # the dead holder does not block anyone
        assert lock.holder() == os.getpid()

    code, rows, err = update(cfg_path)  # and the service can be upgraded as usual afterwards
    assert code == 0, err
    assert rows[0]["result"] in ("upgraded", "up-to-date")
    assert wait_serving(port) == marker
    assert names_like(side.client, name) == [name]


@dataclass(frozen=True, kw_only=True)
class Deployed:
    """A service's container in one state, with a new version pushed for it."""

    name: str
    port: int  # where the old version serves, if it serves (0: it does not)
    old_image: str
    new_marker: str
    services: dict[str, str]  # the service's lines in the config


def _deploy(state: str, side: Side, registry: Registry, run_label: str) -> Deployed:
    """`auto-remove`: serving, started with --rm; `restarting`: a crash loop (--restart always, an image
    that exits at once); `stopped`: an exited job, in a service with `stopped: recreate`."""
    name, port, labels = f"dw-crash-{state}-{uuid.uuid4().hex[:8]}", 0, {LABEL: run_label}
    cmd = {"auto-remove": APP, "restarting": ["false"], "stopped": ["cat", "/www/index.html"]}[state]
    tag, _, _ = push_version(side, registry, "app", cmd=cmd)
    services = {"container": name}
    if state == "auto-remove":
        port = free_port()
        ports = {"8080/tcp": ("127.0.0.1", port)}
        side.client.containers.run(tag, name=name, detach=True, auto_remove=True, ports=ports, labels=labels)
        wait_serving(port)
    elif state == "restarting":
        side.client.containers.run(
            tag, name=name, detach=True, restart_policy={"Name": "always"}, labels=labels
        )
        deadline = time.monotonic() + 30
        while side.client.api.inspect_container(name)["RestartCount"] < 2:
            assert time.monotonic() < deadline, "no crash loop"
            time.sleep(0.2)
    else:
        side.client.containers.run(tag, name=name, detach=True, labels=labels).wait()
        services["stopped"] = "recreate"
    old_image = side.client.api.inspect_container(name)["Image"]
    _, marker, _ = push_version(side, registry, "app", cmd=APP if state != "stopped" else cmd)
    return Deployed(name=name, port=port, old_image=old_image, new_marker=marker, services=services)


@pytest.fixture
def deployed_names(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Names of the containers a test deployed, removed with any set-aside copy when it ends."""
    made: list[str] = []
    yield made
    for name in made:
        for found in names_like(docker_client, name):
            docker_client.api.remove_container(found, force=True, v=True)


# The steps each state's transaction goes through: a container created stopped is never started or gated.
STATE_STEPS = [
    *((state, step) for state in ("auto-remove", "restarting") for step in upgrade.STEPS),
    *(("stopped", step) for step in upgrade.STEPS if step not in ("stop-old", "start", "gate")),
]


@pytest.mark.parametrize(("state", "step"), STATE_STEPS)
def test_killed_before_each_step_of_each_state_converges_on_restart(
    state: str,
    step: str,
    deployed_names: list[str],
    docker_client: docker.DockerClient,
    images: ImageFactory,
    registry: Registry,
    run_label: str,
    tmp_path: Path,
) -> None:
    """SIGKILL before any step of an upgrade of a `--rm` container, a crash loop or a stopped job, then a
    fresh start: one container has the name, in the state it had (serving the old version, crash-looping,
    stopped), or the new version once committed; and the next update upgrades it."""
    side = Side(docker_client, images, None)
    deployed = _deploy(state, side, registry, run_label)
    deployed_names.append(deployed.name)
    name = deployed.name
    before = fetch(deployed.port) if deployed.port else None
    cfg_path = config(tmp_path, {"svc": deployed.services})
    _kill_update_before(step, cfg_path, tmp_path / "update.log")

    recover(configuration.load(cfg_path))

    assert names_like(side.client, name) == [name]
    found = side.client.api.inspect_container(name)
    committed = step == "remove-old"
    assert (found["Image"] == deployed.old_image) is not committed
    if state == "auto-remove":
        assert found["HostConfig"]["AutoRemove"]
        assert wait_serving(deployed.port) == (deployed.new_marker if committed else before)
    elif state == "restarting" and not committed:  # crash-looping again: its restart policy is back
        deadline = time.monotonic() + 20
        while side.client.api.inspect_container(name)["RestartCount"] <= found["RestartCount"]:
            assert time.monotonic() < deadline, "the old container is not crash-looping again"
            time.sleep(0.2)
    elif state == "stopped":
        assert not found["State"]["Running"]

    code, rows, err = update(cfg_path)
    assert code == 0, err
    assert rows[0]["result"] in ("upgraded", "up-to-date")
    assert names_like(side.client, name) == [name]
    new = side.client.api.inspect_container(name)
    assert new["Config"]["Labels"]["marker"] == deployed.new_marker
    assert new["State"]["Running"] is (state != "stopped")


@pytest.mark.parametrize("step", upgrade.UNDO_STEPS)
def test_killed_during_a_rollback_converges_on_restart(
    step: str, web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """SIGKILL at each step of a rollback (the new image exits at once), then a fresh start: the old
    version runs under its name, alone."""
    name, port, side = web
    before = fetch(port)
    push_version(side, registry, "app", cmd=["false"])
    cfg_path = config(tmp_path, {"web": {"container": name}})
    _kill_update_before(step, cfg_path, tmp_path / "update.log")
    cfg = configuration.load(cfg_path)
    recover(cfg)
    assert names_like(side.client, name) == [name]
    assert side.client.api.inspect_container(name)["State"]["Running"]
    assert fetch(port) == before


@pytest.mark.parametrize("step", upgrade.START_FIRST_STEPS)
def test_start_first_killed_before_each_step_converges_on_restart(
    step: str,
    docker_client: docker.DockerClient,
    images: ImageFactory,
    registry: Registry,
    run_label: str,
    tmp_path: Path,
) -> None:
    """SIGKILL before any start-first step, then a fresh start: one container holds the name, with the
    service's alias, and runs: the old one, never stopped, up to the commit; the new one after it. No
    `-new`, `-old` or `-done` container is left."""
    side = Side(docker_client, images, None)
    box = Sandbox(docker_client, run_label)
    try:
        tag, _, _ = push_version(side, registry, "sfcrash")
        network = box.network("net")
        name = f"{box.prefix}-web"
        old_id = run_aliased(side, box, network, tag, name)
        started_at = docker_client.api.inspect_container(old_id)["State"]["StartedAt"]
        _, marker, _ = push_version(side, registry, "sfcrash")
        spec = {"container": name, "strategy": "start-first", "drain": "1s"}
        cfg_path = config(tmp_path, {"web": spec})
        _kill_update_before(step, cfg_path, tmp_path / "update.log")

        recover(configuration.load(cfg_path))

        assert names_like(docker_client, name) == [name]
        holder = docker_client.api.inspect_container(name)
        assert holder["State"]["Running"]
        assert "app" in holder["NetworkSettings"]["Networks"][network]["Aliases"]
        if step in (upgrade.Step.DRAIN, upgrade.Step.STOP_OLD, upgrade.Step.REMOVE_OLD):
            assert holder["Config"]["Labels"]["marker"] == marker
        else:
            assert (holder["Id"], holder["State"]["StartedAt"]) == (old_id, started_at)
    finally:
        box.close()


def test_a_live_lock_holder_makes_update_skip_the_service(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """While another live process holds a container's lock, `update` skips it and names the holder."""
    name, port, side = web
    before = fetch(port)
    push_version(side, registry, "app")
    cfg_path = config(tmp_path, {"web": {"container": name}})
    cfg = configuration.load(cfg_path)
    with ContainerLock(cfg.state_dir, name):
        code, rows, _ = update(cfg_path)
    assert code == 0
    assert rows[0]["result"] == "skipped"
    assert f"pid {os.getpid()}" in rows[0]["error"]
    assert fetch(port) == before


def test_leftover_of_another_config_is_not_touched(
    docker_client: docker.DockerClient, web: tuple[str, int, Side], tmp_path: Path
) -> None:
    """A set-aside container of a service this config does not watch is left for its own dockwarden."""
    name, _, _ = web
    container = docker_client.containers.get(name)
    container.rename(name + upgrade.OLD_SUFFIX)
    try:
        cfg = configuration.load(config(tmp_path, {"other": {"container": "dw-not-this-one"}}))
        recover(cfg)
        assert names_like(docker_client, name) == [name + upgrade.OLD_SUFFIX]
    finally:
        container.rename(name)


def test_registry_gone_at_pull_leaves_the_service_untouched(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """When the pull fails (the registry went away after the check), the result is an error at `pull` and
    the running container is the same one, still serving."""
    name, port, side = web
    before_id = side.client.api.inspect_container(name)["Id"]
    before = fetch(port)
    push_version(side, registry, "app")
    cfg = configuration.load(config(tmp_path, {"web": {"container": name}}))

    def stop_registry(step: str) -> None:
        if step == "pull":
            registry.stop()

    report = run_cycle(cfg, Hooks(checkpoint=stop_registry))
    outcome = report.outcomes[0]
    assert (outcome.result, outcome.step) == (Result.ERROR, "pull")
    assert side.client.api.inspect_container(name)["Id"] == before_id
    assert fetch(port) == before
    assert names_like(side.client, name) == [name]


def test_a_created_container_that_differs_from_the_plan_is_rolled_back(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """If the new container does not match the plan (here it lost its network before the check), the
    upgrade fails at `verify` and the old container serves again."""
    name, port, side = web
    before = fetch(port)
    push_version(side, registry, "app")
    cfg = configuration.load(config(tmp_path, {"web": {"container": name}}))

    def drift(step: str) -> None:
        if step == "verify":
            side.client.networks.get("bridge").disconnect(name)  # `name` is the new container by now

    report = run_cycle(cfg, Hooks(checkpoint=drift))
    outcome = report.outcomes[0]
    assert (outcome.result, outcome.step) == (Result.ROLLED_BACK, "verify")
    assert outcome.error is not None
    assert "not connected to network bridge" in outcome.error
    assert fetch(port) == before
    assert names_like(side.client, name) == [name]


def test_cleanup_failure_after_commit_keeps_the_upgrade(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """If removing the old container fails after the commit, the upgrade stands (no undo of a proven
    container), and the result says what failed."""
    name, port, side = web
    _, marker, _ = push_version(side, registry, "app")
    cfg = configuration.load(config(tmp_path, {"web": {"container": name}}))

    def take_it_away(step: str) -> None:
        if step == "remove-old":  # someone else removes the committed old container first
            side.client.containers.get(name + upgrade.DONE_SUFFIX).remove(force=True)

    report = run_cycle(cfg, Hooks(checkpoint=take_it_away))
    outcome = report.outcomes[0]
    assert (outcome.result, outcome.step) == (Result.UPGRADED, "remove-old")
    assert fetch(port) == marker


def test_stop_requested_before_the_service_is_touched_skips_it(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """A stop that arrives while the new image is pulled ends the upgrade before the old container is
    touched: skipped, same container, still serving."""
    name, port, side = web
    before_id = side.client.api.inspect_container(name)["Id"]
    push_version(side, registry, "app")
    cfg = configuration.load(config(tmp_path, {"web": {"container": name}}))
    cancel = threading.Event()

    def stop_now(step: str) -> None:
        if step == "plan":
            cancel.set()

    report = run_cycle(cfg, Hooks(cancel=cancel, checkpoint=stop_now))
    assert report.outcomes[0].result == Result.SKIPPED
    assert side.client.api.inspect_container(name)["Id"] == before_id
    assert fetch(port) is not None


@pytest.mark.parametrize(
    ("command", "signum", "exit_code", "says"),
    [
        # The daemon exits 0 on SIGTERM; it says why the gate ended.
        ("run", signal.SIGTERM, 0, "cancelled: dockwarden is stopping"),
        # `update` exits 1 (rolled back) on its first Ctrl-C, after saying it will roll back.
        ("update", signal.SIGINT, 1, "rolls back first"),
    ],
)
def test_a_stop_mid_gate_rolls_back_before_exiting(
    command: str,
    signum: signal.Signals,
    exit_code: int,
    says: str,
    web: tuple[str, int, Side],
    registry: Registry,
    tmp_path: Path,
) -> None:
    """SIGTERM to the daemon, or the first SIGINT to `update`, while a new container is in its health gate
    cancels the gate and puts the old container back before the process exits."""
    name, port, side = web
    before = fetch(port)
    push_version(side, registry, "app", healthcheck="sleep 30")  # stays `starting` for the whole test
    log = tmp_path / f"{command}.log"
    proc = spawn(command, config(tmp_path, {"web": {"container": name}}), log)
    try:
        wait_for_text(log, '"step": "start"')
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == exit_code
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert says in text
    assert '"rollback.finished"' in text
    assert fetch(port) == before
    assert names_like(side.client, name) == [name]
