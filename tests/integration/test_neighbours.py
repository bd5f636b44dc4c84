"""The neighbour refresh on the real engines: the container's answer rewrites the host's neighbour entry."""

from __future__ import annotations

import json
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from dockwarden.engine import Engine
from dockwarden.neighbours import Refresher
from tests.integration.upgrade_lab import APP, Side
from tests.support.images import LABEL

pytestmark = pytest.mark.engine

BOGUS_MAC = "02:00:00:dd:14:01"  # what the entry says before the refresh: no container has it
LOCKTIME = 1.1
WAIT = 3.0  # seconds for the reply to reach the host's table (it takes milliseconds)


def _entry(address: str, interface: str) -> dict[str, object]:
    """The host's neighbour entry for `address` on `interface` (`ip -j neigh show`), {} if none."""
    out = subprocess.run(
        ["ip", "-j", "neigh", "show", address, "dev", interface], capture_output=True, text=True, check=True
    ).stdout
    entries: list[dict[str, object]] = json.loads(out or "[]")
    return entries[0] if entries else {}


def _plant(address: str, interface: str) -> None:
    """A stale entry with a MAC nobody has: left alone, the kernel keeps it until it is used. Then wait out
    the neighbour table's `locktime` (1 s by default), within which the kernel ignores an answer that
    would change an entry's MAC (net/ipv4/arp.c, arp_process), so that only the refresh can change it."""
    subprocess.run(
        ["ip", "neigh", "replace", address, "dev", interface, "lladdr", BOGUS_MAC, "nud", "stale"], check=True
    )
    time.sleep(LOCKTIME)


def _wait_for_mac(address: str, interface: str, mac: str) -> dict[str, object]:
    deadline = time.monotonic() + WAIT
    entry = _entry(address, interface)
    while entry.get("lladdr") != mac and time.monotonic() < deadline:
        time.sleep(0.02)
        entry = _entry(address, interface)
    return entry


def _forget(address: str, interface: str) -> None:
    subprocess.run(["ip", "neigh", "del", address, "dev", interface], capture_output=True, check=False)


@pytest.fixture
def dual_stack(docker_client: docker.DockerClient, run_label: str) -> Iterator[str]:
    """A dual-stack bridge network on Engine 20.10 with subnets of its own (the 26.1 engine shares this
    host's routes and would pick the same default pool)."""
    for _ in range(5):
        n = random.randrange(256)  # noqa: S311 -- a subnet pick, not a secret
        try:
            network = docker_client.networks.create(
                f"dw-nb-{uuid.uuid4().hex[:8]}",
                enable_ipv6=True,
                ipam=docker.types.IPAMConfig(
                    pool_configs=[
                        docker.types.IPAMPool(subnet=f"10.214.{n}.0/24"),
                        docker.types.IPAMPool(subnet=f"fd00:dead:14:{n:x}::/64"),
                    ]
                ),
                labels={LABEL: run_label},
            )
            break
        except docker.errors.APIError as exc:
            if "overlap" not in str(exc):
                raise
    else:
        pytest.fail("no free subnet in 10.214.0.0/16 after 5 picks")
    yield str(network.name)
    network.remove()


def _wait_for_ipv6(interface: str) -> None:
    """Until the bridge has an IPv6 address past duplicate address detection (a new bridge's are tentative
    for about 2 s), without which the kernel has no source address for the solicitation."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["ip", "-6", "-j", "addr", "show", "dev", interface], capture_output=True, text=True, check=True
        ).stdout
        infos = [a for link in json.loads(out or "[]") for a in link.get("addr_info", [])]
        if any(not a.get("tentative") for a in infos):
            return
        time.sleep(0.1)
    pytest.fail(f"{interface} has no usable IPv6 address after 10 s")


def test_refresh_rewrites_a_stale_entry_on_each_engine(side: Side, run_label: str, tmp_path: Path) -> None:
    """One ARP request from the host makes the container answer, and its answer replaces a stale entry with
    a wrong MAC by the container's real one, on the default bridge of Engine 20.10 and 26.1."""
    tag = f"dw-nb-{uuid.uuid4().hex[:8]}:1"
    side.images.build(tag, "nb", cmd=APP)
    container = side.client.containers.run(tag, detach=True, labels={LABEL: run_label})
    try:
        engine = Engine(side.client)
        (endpoint,) = engine.bridge_endpoints(container.id)
        settings = engine.inspect_container(container.id)["NetworkSettings"]["Networks"]["bridge"]
        assert str(endpoint.ipv4) == settings["IPAddress"]
        assert Path(f"/sys/class/net/{endpoint.interface}").exists()
        address = str(endpoint.ipv4)
        _plant(address, endpoint.interface)
        try:
            assert Refresher().refresh(container.id[:12], [endpoint]) == 1
            entry = _wait_for_mac(address, endpoint.interface, settings["MacAddress"])
        finally:
            _forget(address, endpoint.interface)
        assert entry.get("lladdr") == settings["MacAddress"]
        assert entry.get("state") == ["REACHABLE"]
    finally:
        container.remove(force=True)
        side.client.images.remove(tag)


def test_refresh_answers_for_both_families_on_a_dual_stack_network(
    docker_client: docker.DockerClient, images: object, run_label: str, dual_stack: str
) -> None:
    """On a dual-stack network the refresh sends an ARP request and a neighbour solicitation, and the
    container's answers replace stale entries for its IPv4 and its IPv6 address alike."""
    tag = f"dw-nb-{uuid.uuid4().hex[:8]}:1"
    images.build(tag, "nb6", cmd=APP)  # type: ignore[attr-defined]
    container = docker_client.containers.run(tag, detach=True, network=dual_stack, labels={LABEL: run_label})
    try:
        engine = Engine(docker_client)
        (endpoint,) = engine.bridge_endpoints(container.id)
        assert endpoint.ipv4 is not None
        assert endpoint.ipv6 is not None
        mac = engine.inspect_container(container.id)["NetworkSettings"]["Networks"][dual_stack]["MacAddress"]
        addresses = (str(endpoint.ipv4), str(endpoint.ipv6))
        _wait_for_ipv6(endpoint.interface)
        for address in addresses:
            _plant(address, endpoint.interface)
        try:
            assert Refresher().refresh(container.id[:12], [endpoint]) == 2
            entries = [_wait_for_mac(address, endpoint.interface, mac) for address in addresses]
        finally:
            for address in addresses:
                _forget(address, endpoint.interface)
        assert [entry.get("lladdr") for entry in entries] == [mac, mac]
    finally:
        container.remove(force=True)
        docker_client.images.remove(tag)
