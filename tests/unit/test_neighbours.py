"""The neighbour refresh's packets and the engine's bridge endpoints, from their specifications."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
import structlog.testing

from dockwarden import neighbours
from dockwarden.engine import BridgeEndpoint, bridge_endpoint, bridge_interface

MAC = bytes.fromhex("0242ac110001")
V4 = ipaddress.IPv4Address("172.17.0.5")
GATEWAY = ipaddress.IPv4Address("172.17.0.1")
V6 = ipaddress.IPv6Address("fd00:dead:beef:14::2:abcd")


def test_arp_request_is_an_rfc_826_broadcast_request() -> None:
    """The ARP request is a 60-byte broadcast Ethernet frame of type 0x0806 asking who has the target IPv4
    address, from the bridge's MAC and IPv4 address, with the target MAC unknown (zeros)."""
    frame = neighbours.arp_request(MAC, GATEWAY, V4)
    assert len(frame) == 60
    destination, source, ethertype = struct.unpack("!6s6sH", frame[:14])
    assert (destination, source, ethertype) == (b"\xff" * 6, MAC, 0x0806)
    fields = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    assert fields == (1, 0x0800, 6, 4, 1, MAC, GATEWAY.packed, bytes(6), V4.packed)
    assert frame[42:] == bytes(18)


def test_arp_request_without_an_address_is_a_probe() -> None:
    """Without the bridge's IPv4 address the request is an RFC 5227 probe: sender address 0.0.0.0."""
    frame = neighbours.arp_request(MAC, None, V4)
    assert frame[28:32] == bytes(4)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("fd00::2:abcd", "ff02::1:ff02:abcd"),
        ("2001:db8::1", "ff02::1:ff00:1"),
        ("fe80::aa:bbcc:ddee", "ff02::1:ffcc:ddee"),
    ],
)
def test_solicited_node_address_keeps_the_low_24_bits(address: str, expected: str) -> None:
    """The solicited-node multicast address is ff02::1:ff00:0 with the address's low 24 bits (RFC 4291)."""
    assert neighbours.solicited_node(ipaddress.IPv6Address(address)) == ipaddress.IPv6Address(expected)


def test_neighbour_solicitation_carries_target_and_source_link_layer_option() -> None:
    """The solicitation is ICMPv6 type 135 code 0, the target address, then a source link-layer address
    option (type 1, length 1 unit of 8 bytes) with our MAC; the checksum is the kernel's to fill in."""
    message = neighbours.neighbour_solicitation(V6, MAC)
    assert len(message) == 32
    kind, code, checksum, reserved = struct.unpack("!BBHI", message[:8])
    assert (kind, code, checksum, reserved) == (135, 0, 0, 0)
    assert message[8:24] == V6.packed
    assert message[24:] == bytes([1, 1]) + MAC


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        (
            {"Driver": "bridge", "Id": "a" * 64, "Options": {"com.docker.network.bridge.name": "docker0"}},
            "docker0",
        ),
        ({"Driver": "bridge", "Id": "0123456789abcdef" * 4, "Options": {}}, "br-0123456789ab"),
        ({"Driver": "bridge", "Id": "0123456789abcdef" * 4, "Options": None}, "br-0123456789ab"),
        ({"Driver": "overlay", "Id": "b" * 64, "Options": {}}, None),
        ({"Driver": "host", "Id": "c" * 64}, None),
        ({"Driver": "macvlan", "Id": "d" * 64, "Options": {"parent": "eth0"}}, None),
    ],
)
def test_bridge_interface_follows_the_bridge_drivers_naming(
    network: dict[str, Any], expected: str | None
) -> None:
    """A bridge network's host interface is its bridge.name option, else br- and the ID's first 12 digits;
    other drivers have none."""
    assert bridge_interface(network) == expected


def test_bridge_endpoint_reads_both_families_and_ignores_blanks() -> None:
    """An endpoint gives its IPv4 address, the gateway and its global IPv6 address; empty or malformed
    fields are None rather than an error."""
    settings = {"IPAddress": "172.17.0.5", "Gateway": "172.17.0.1", "GlobalIPv6Address": str(V6)}
    assert bridge_endpoint("docker0", settings) == BridgeEndpoint(
        interface="docker0", ipv4=V4, gateway4=GATEWAY, ipv6=V6
    )
    blank = bridge_endpoint(
        "br-x", {"IPAddress": "", "Gateway": "nonsense", "GlobalIPv6Address": "172.17.0.9"}
    )
    assert blank == BridgeEndpoint(interface="br-x", ipv4=None, gateway4=None, ipv6=None)


def _refuse(*args: Any, **kwargs: Any) -> socket.socket:
    raise PermissionError(1, "Operation not permitted")


def test_a_missing_capability_is_logged_once_and_never_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CAP_NET_RAW (socket creation refused) refresh sends nothing, raises nothing, and logs
    `neighbour.refresh_unavailable` once however often it is called."""
    monkeypatch.setattr(socket, "socket", _refuse)
    refresher = neighbours.Refresher()
    endpoint = BridgeEndpoint(interface="docker0", ipv4=V4, gateway4=GATEWAY, ipv6=None)
    with structlog.testing.capture_logs() as logs:
        assert refresher.refresh("abc", [endpoint]) == 0
        assert refresher.refresh("def", [endpoint, endpoint]) == 0
    assert [entry["event"] for entry in logs] == ["neighbour.refresh_unavailable"]


def test_an_unknown_interface_is_logged_per_call_and_never_raised() -> None:
    """An interface that does not exist (the network went away meanwhile) is logged as
    `neighbour.refresh_failed` with its name, and the call returns normally."""
    refresher = neighbours.Refresher()
    endpoint = BridgeEndpoint(interface="dw-no-such0", ipv4=V4, gateway4=GATEWAY, ipv6=V6)
    with structlog.testing.capture_logs() as logs:
        assert refresher.refresh("abc", [endpoint]) == 0
    assert [(entry["event"], entry["interface"]) for entry in logs] == 2 * [
        ("neighbour.refresh_failed", "dw-no-such0")
    ]
