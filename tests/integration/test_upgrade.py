"""The upgrade transaction on a real engine: fidelity, the health gate, rollback, and the skip list."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from dockwarden import config as configuration
from dockwarden import upgrade
from dockwarden.upgrade import Hooks, Result
from tests.integration.conftest import ENGINES
from tests.integration.upgrade_lab import (
    APP,
    HEALTHY,
    Side,
    config,
    fetch,
    free_port,
    names_like,
    push_version,
    run_cycle,
    update,
    wait_serving,
)
from tests.support.images import LABEL
from tests.support.registry import Registry

pytestmark = pytest.mark.engine


class Sandbox:
    """Containers, networks and volumes one test creates, removed however the test ends."""

    def __init__(self, client: docker.DockerClient, run_label: str) -> None:
        self.client = client
        self.run_label = run_label
        self.prefix = f"dw-up-{uuid.uuid4().hex[:8]}"
        self.networks: list[str] = []
        self.volumes: list[str] = []

    def network(self, suffix: str, subnet: str | None = None) -> str:
        name = f"{self.prefix}-{suffix}"
        ipam = None
        if subnet:
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
        ipv6 = bool(subnet and ":" in subnet)
        self.client.networks.create(name, ipam=ipam, enable_ipv6=ipv6, labels={LABEL: self.run_label})
        self.networks.append(name)
        return name

    def volume(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.client.volumes.create(name, labels={LABEL: self.run_label})
        self.volumes.append(name)
        return name

    def close(self) -> None:
        for container in self.client.containers.list(all=True, filters={"name": self.prefix}):
            if container.name.startswith(self.prefix):
                mounts = [m["Name"] for m in container.attrs.get("Mounts", []) if m.get("Type") == "volume"]
                container.remove(force=True, v=True)
                self.volumes.extend(m for m in mounts if m not in self.volumes)
        for name in self.networks:
            self._remove_network(name)
        for name in self.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.volumes.get(name).remove(force=True)

    def _remove_network(self, name: str) -> None:
        """Remove a network of the sandbox; Engine 20.10 under load may still hold the endpoint of a
        container it removed a moment ago ("has active endpoints"), so it is asked again, 20 times at most."""
        for attempt in range(20):
            try:
                self.client.networks.get(name).remove()
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if "active endpoints" not in str(exc) or attempt == 19:
                    attached = self.client.api.inspect_network(name).get("Containers") or {}
                    raise AssertionError(f"network {name} still has {attached}") from exc
                time.sleep(0.25)


@pytest.fixture
def sandbox(side: Side, run_label: str) -> Iterator[Sandbox]:
    box = Sandbox(side.client, run_label)
    yield box
    box.close()


def _run_rich(side: Side, box: Sandbox, tag: str, port: int, bind_dir: Path) -> tuple[str, str]:
    """A container using most of what `docker run` offers; returns (name, ID)."""
    api = side.client.api
    salt = uuid.uuid4().bytes
    subnet = f"10.{100 + salt[0] % 150}.{salt[1]}.0/24"
    subnet6 = f"fd00:{salt[2]:02x}{salt[3]:02x}:{salt[4]:02x}{salt[5]:02x}::/64"
    net_a, net_b = box.network("a", subnet), box.network("b", subnet6)
    static_ip, static_ip6 = subnet.replace(".0/24", ".10"), subnet6.replace("::/64", "::10")
    volume = box.volume("data")
    name = f"{box.prefix}-web"
    host_config = api.create_host_config(
        port_bindings={8080: ("127.0.0.1", port)},
        binds=[f"{volume}:/data", f"{bind_dir}:/hostdir:ro"],
        restart_policy={"Name": "unless-stopped"},
        mem_limit="64m",
        cap_add=["NET_ADMIN"],
        cap_drop=["MKNOD"],
        log_config={"Type": "json-file", "Config": {"max-size": "1m"}},
        tmpfs={"/run": "size=1m"},
        devices=["/dev/null:/dev/xnull:rwm"],
        extra_hosts={"db.internal": "10.9.9.9"},
        network_mode=net_a,
    )
    networking = api.create_networking_config(
        {net_a: api.create_endpoint_config(aliases=["webalias"], ipv4_address=static_ip)}
    )
    created = api.create_container(
        tag,
        name=name,
        environment=["USERVAR=kept", "APP_MARKER_OVERRIDE=1"],
        labels={LABEL: box.run_label, "com.docker.compose.project": "demo", "user.label": "kept"},
        ports=[8080],  # what `docker run -p` adds to ExposedPorts; without it nothing is published
        host_config=host_config,
        networking_config=networking,
        volumes=["/anon"],
        mac_address="02:42:0a:63:00:99",
        stop_signal="SIGTERM",
        stop_timeout=3,
        domainname="example.test",
    )
    api.connect_container_to_network(created["Id"], net_b, aliases=["balias"], ipv6_address=static_ip6)
    api.start(created["Id"])
    side.client.containers.get(name).exec_run(["sh", "-c", "echo named > /data/keep; echo anon > /anon/keep"])
    return name, str(created["Id"])


@pytest.mark.parametrize("side", ENGINES, indirect=True)
def test_upgrade_keeps_what_the_user_set_and_rolls_back_a_crashing_image(
    side: Side, sandbox: Sandbox, registry: Registry, tmp_path: Path
) -> None:
    """An upgrade keeps every user setting, takes the new image's defaults and volumes' data; a new image
    that exits at once is rolled back to the previous one, which serves again with its data."""
    tag, _, first = push_version(side, registry, "fidelity")
    port = free_port()
    bind_dir = tmp_path / "bind"
    bind_dir.mkdir()
    name, old_id = _run_rich(side, sandbox, tag, port, bind_dir)
    wait_serving(port)
    old = side.client.api.inspect_container(old_id)
    _, marker, second = push_version(side, registry, "fidelity")
    cfg = config(tmp_path, {"web": {"container": name}}, side)

    code, rows, err = update(cfg)

    assert code == 0, err
    assert [(r["service"], r["from_digest"], r["to_digest"], r["result"]) for r in rows] == [
        ("web", first, second, "upgraded")
    ]
    new = side.client.api.inspect_container(name)
    assert new["Id"] != old_id
    assert wait_serving(port) == marker
    config_, host = new["Config"], new["HostConfig"]
    assert {"USERVAR=kept", "APP_MARKER_OVERRIDE=1", f"APP_MARKER={marker}"} <= set(config_["Env"])
    assert config_["Labels"]["com.docker.compose.project"] == "demo"
    assert config_["Labels"]["user.label"] == "kept"
    assert config_["Labels"]["marker"] == marker  # the new image's label, not the old one frozen in
    assert config_["Cmd"] == APP
    assert config_["Hostname"] == new["Id"][:12]  # the old ID was not copied as a hostname
    assert config_["Domainname"] == "example.test"
    assert (config_["StopSignal"], config_["StopTimeout"]) == ("SIGTERM", 3)
    assert config_["Image"] == tag
    for key in (
        "PortBindings",
        "RestartPolicy",
        "Memory",
        "CapAdd",
        "CapDrop",
        "LogConfig",
        "Tmpfs",
        "Devices",
        "ExtraHosts",
        "NetworkMode",
    ):
        assert host[key] == old["HostConfig"][key], key
    anon = next(m["Name"] for m in old["Mounts"] if m["Destination"] == "/anon")
    mounts = {m["Destination"]: m for m in new["Mounts"]}
    assert mounts["/anon"]["Name"] == anon
    assert mounts["/data"]["Name"] == sandbox.volumes[0]
    assert (mounts["/hostdir"]["Source"], mounts["/hostdir"]["RW"]) == (str(bind_dir), False)
    networks, old_networks = new["NetworkSettings"]["Networks"], old["NetworkSettings"]["Networks"]
    net_a, net_b = sandbox.networks
    assert networks[net_a]["IPAddress"] == old_networks[net_a]["IPAddress"]
    assert networks[net_a]["MacAddress"] == "02:42:0a:63:00:99"
    assert "webalias" in networks[net_a]["Aliases"]
    assert old_id[:12] not in networks[net_a]["Aliases"]
    assert "balias" in networks[net_b]["Aliases"]
    assert networks[net_b]["GlobalIPv6Address"] == old_networks[net_b]["GlobalIPv6Address"]
    assert networks[net_b]["GlobalIPv6Address"].endswith("::10")
    read = side.client.containers.get(name).exec_run(["cat", "/data/keep", "/anon/keep"])
    assert read.output.decode().split() == ["named", "anon"]

    _, _, third = push_version(side, registry, "fidelity", cmd=["false"])
    code, rows, err = update(cfg)

    assert code == 1, [line for line in err.splitlines() if "upgrade.step" in line]
    assert (rows[0]["result"], rows[0]["to_digest"], rows[0]["step"]) == ("rolled-back", third, "gate")
    assert wait_serving(port) == marker
    assert names_like(side.client, name) == [name]
    assert side.client.api.inspect_container(name)["Id"] == new["Id"]
    read = side.client.containers.get(name).exec_run(["cat", "/data/keep", "/anon/keep"])
    assert read.output.decode().split() == ["named", "anon"]
    assert side.client.images.get(tag).id == new["Image"]  # the tag points at what runs again


@pytest.mark.parametrize("web", ENGINES, indirect=True)
def test_never_healthy_image_is_rolled_back_and_then_skipped(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """An image whose HEALTHCHECK never passes is rolled back, its digest is skipped on the next run,
    and --force tries it again."""
    name, port, side = web
    before = fetch(port)
    _, _, bad = push_version(side, registry, "app", healthcheck="false")
    cfg = config(tmp_path, {"web": {"container": name}}, side)

    code, rows, _ = update(cfg)
    assert code == 1
    assert (rows[0]["result"], rows[0]["step"]) == ("rolled-back", "gate")
    assert "unhealthy" in rows[0]["error"]
    assert wait_serving(port) == before
    assert names_like(side.client, name) == [name]

    code, rows, err = update(cfg)
    assert code == 0
    assert rows[0]["result"] == "skipped"
    assert bad[:19] in rows[0]["error"]
    assert "upgrade.skipped" in err

    code, rows, _ = update(cfg, "--force")
    assert (code, rows[0]["result"]) == (1, "rolled-back")


@pytest.mark.parametrize("web", ENGINES, indirect=True)
def test_healthcheck_image_is_gated_on_healthy(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """A new image with a passing HEALTHCHECK is kept once the engine reports it healthy."""
    name, port, side = web
    _, marker, _ = push_version(side, registry, "app", healthcheck=HEALTHY)
    code, rows, err = update(config(tmp_path, {"web": {"container": name}}, side))
    assert (code, rows[0]["result"]) == (0, "upgraded"), err
    state = side.client.api.inspect_container(name)["State"]
    assert state["Health"]["Status"] == "healthy"
    assert fetch(port) == marker


def test_port_taken_when_starting_rolls_back(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """When another process takes the port between the old container's stop and the new one's start,
    the start fails and the old container gets its port back and serves."""
    name, port, side = web
    before = fetch(port)
    push_version(side, registry, "app")
    cfg = configuration.load(config(tmp_path, {"web": {"container": name}}))
    squatter = socket.socket()

    def grab(step: str) -> None:
        if step == "start":  # the old container is stopped, so its port is free right now
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            threading.Timer(1.5, squatter.close).start()

    try:
        report = run_cycle(cfg, Hooks(checkpoint=grab))
    finally:
        squatter.close()
    outcome = report.outcomes[0]
    assert (outcome.result, outcome.step) == (Result.ROLLED_BACK, "start")
    assert wait_serving(port) == before
    assert names_like(side.client, name) == [name]


def test_each_step_is_logged_with_service_digests_and_duration(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """The log has one upgrade.step event per step, each with the service, both digests and its duration."""
    name, _, side = web
    _, _, digest = push_version(side, registry, "app")
    code, _, err = update(config(tmp_path, {"web": {"container": name}}))
    assert code == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "upgrade.step"]
    assert [e["step"] for e in steps] == list(upgrade.STEPS)  # every step, in order, logged once
    for event in steps:
        assert (event["service"], event["to_digest"]) == ("web", digest)
        assert event["from_digest"].startswith("sha256:")
        assert event["duration_ms"] >= 0


def test_dry_run_prints_the_plan_and_changes_nothing(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """--dry-run reports would-upgrade with digests, the pinned pull and the differences, and leaves the
    container, the tag and the local images as they were."""
    name, port, side = web
    before = side.client.api.inspect_container(name)
    tag, _, digest = push_version(side, registry, "app")
    side.client.images.remove(tag)  # as on a host that never built it: a pull would bring it back

    code, rows, _ = update(config(tmp_path, {"web": {"container": name}}), "--dry-run")

    assert code == 0
    assert (rows[0]["result"], rows[0]["to_digest"]) == ("would-upgrade", digest)
    plan = "\n".join(rows[0]["plan"])
    assert f"pull: {registry.host}/app@{digest}" in plan
    assert "Env from the old image not copied" in plan
    assert side.client.api.inspect_container(name)["Id"] == before["Id"]
    with pytest.raises(docker.errors.ImageNotFound):
        side.client.images.get(f"{registry.host}/app@{digest}")  # nothing was pulled
    assert fetch(port) is not None
