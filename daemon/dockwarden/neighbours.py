"""Refresh the host's neighbour entry for a container that just started, ending the stop-first stall.

Why (issue 14, measured on Engines 20.10 and 26.1): during `start` the engine opens the path to the
container (docker-proxy, the DNAT rule) a moment before the container's interface answers ARP. The first
forwarded connection sends one ARP request that nobody answers, the host's entry sits in INCOMPLETE, and
every connection waits for the kernel's next attempt, `retrans_time_ms` (1000 ms) later. One ARP request
sent from user space once `start` returned is answered, and the container's reply completes the entry.

How: one ARP request (RFC 826) per IPv4 address, broadcast on the bridge over an AF_PACKET socket, and one
ICMPv6 neighbour solicitation (RFC 4861 section 4.3) per global IPv6 address, to its solicited-node
multicast address on the bridge. Both need CAP_NET_RAW in the host's network namespace. Chosen over
netlink (`ip neigh replace ... nud reachable`, pyroute2): CAP_NET_RAW is a narrower grant than the
CAP_NET_ADMIN netlink needs, the kernel learns the MAC from the container's own answer instead of us
asserting one, it measured as well (issue 14's table), and it is two fixed packet layouts, not a library.

Best effort throughout: a missing capability is logged once per `Refresher` (`neighbour.refresh_unavailable`)
and anything else that fails once per call (`neighbour.refresh_failed`); nothing here raises.
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterable

import structlog

from dockwarden.engine import BridgeEndpoint

ETH_P_ARP = 0x0806  # linux/if_ether.h
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1  # linux/if_arp.h
ARPOP_REQUEST = 1
BROADCAST = b"\xff" * 6
SIOCGIFHWADDR = 0x8927  # linux/sockios.h: an interface's hardware address
ND_NEIGHBOR_SOLICIT = 135  # RFC 4861 section 4.3
ND_OPT_SOURCE_LINKADDR = 1  # RFC 4861 section 4.6.1
ND_HOP_LIMIT = 255  # RFC 4861 section 7.1.1: receivers drop neighbour discovery with any other hop limit
SOLICITED_NODE = ipaddress.IPv6Address("ff02::1:ff00:0")  # RFC 4291 section 2.7.1


def arp_request(
    source_mac: bytes, source_ip: ipaddress.IPv4Address | None, target: ipaddress.IPv4Address
) -> bytes:
    """The Ethernet frame of a broadcast ARP request for `target` (60 bytes with padding), from the bridge's
    MAC (6 bytes) and IPv4 address; without one (None), an ARP probe (sender 0.0.0.0, RFC 5227)."""
    ethernet = BROADCAST + source_mac + struct.pack("!H", ETH_P_ARP)
    sender = source_ip.packed if source_ip is not None else bytes(4)
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        ARPHRD_ETHER,
        ETH_P_IP,
        6,
        4,
        ARPOP_REQUEST,
        source_mac,
        sender,
        bytes(6),
        target.packed,
    )
    return (ethernet + arp).ljust(60, b"\0")  # the Ethernet minimum, as the kernel's own requests are padded


def solicited_node(address: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    """The solicited-node multicast address of `address`: ff02::1:ff plus its low 24 bits."""
    return ipaddress.IPv6Address(int(SOLICITED_NODE) | (int(address) & 0xFFFFFF))


def neighbour_solicitation(target: ipaddress.IPv6Address, source_mac: bytes) -> bytes:
    """The ICMPv6 message of a neighbour solicitation for `target` with our link-layer address option
    (32 bytes); the checksum is left 0 for the kernel, which fills it in on ICMPv6 raw sockets (RFC 3542
    section 3.1)."""
    return struct.pack(
        "!BBHI16sBB6s", ND_NEIGHBOR_SOLICIT, 0, 0, 0, target.packed, ND_OPT_SOURCE_LINKADDR, 1, source_mac
    )


def hardware_address(sock: socket.socket, interface: str) -> bytes:
    """The MAC (6 bytes) of `interface`, read with SIOCGIFHWADDR on any socket; OSError if there is none."""
    request = struct.pack("256s", interface.encode()[:15])
    answer = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, request)
    return answer[18:24]  # struct ifreq: 16 bytes of name, then sockaddr's 2-byte family, then the address


class Refresher:
    """Sends the refresh for a container's bridge endpoints; remembers whether it said it cannot."""

    def __init__(self) -> None:
        self.log = structlog.get_logger("dockwarden.neighbour")
        self.unavailable = False  # logged `neighbour.refresh_unavailable` already

    def refresh(self, container: str, endpoints: Iterable[BridgeEndpoint]) -> int:
        """Send one ARP request per IPv4 address and one neighbour solicitation per IPv6 address of
        `container`'s `endpoints`; returns how many were sent (0 when not permitted). Never raises."""
        sent = 0
        for endpoint in endpoints:
            sends: list[tuple[str, Callable[[], None]]] = []
            if endpoint.ipv4 is not None:
                sends.append((str(endpoint.ipv4), functools.partial(_arp, endpoint, endpoint.ipv4)))
            if endpoint.ipv6 is not None:
                sends.append((str(endpoint.ipv6), functools.partial(_solicit, endpoint, endpoint.ipv6)))
            for address, send in sends:
                try:
                    send()
                    sent += 1
                except PermissionError as exc:
                    self._unavailable(exc)
                    return sent
                except OSError as exc:
                    where = {"container": container, "interface": endpoint.interface, "address": address}
                    self.log.warning("neighbour.refresh_failed", **where, error=str(exc))
        if sent:
            self.log.info("neighbour.refreshed", container=container, requests=sent)
        return sent

    def _unavailable(self, exc: OSError) -> None:
        if self.unavailable:
            return
        self.unavailable = True
        self.log.warning(
            "neighbour.refresh_unavailable",
            error=str(exc),
            hint="grant CAP_NET_RAW to refresh the host's neighbour entry after a start (README: Upgrades); "
            "without it a stop-first upgrade may be down about 1 s longer",
        )


def _arp(endpoint: BridgeEndpoint, address: ipaddress.IPv4Address) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:  # protocol 0: receives nothing
        frame = arp_request(hardware_address(sock, endpoint.interface), endpoint.gateway4, address)
        sock.sendto(frame, (endpoint.interface, ETH_P_ARP))


def _solicit(endpoint: BridgeEndpoint, address: ipaddress.IPv6Address) -> None:
    # The kernel picks the source address; a bridge whose addresses are all still tentative (DAD, the
    # first ~2 s of a new network) has none yet: EADDRNOTAVAIL, logged as refresh_failed.
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        index = socket.if_nametoindex(endpoint.interface)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ND_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        message = neighbour_solicitation(address, hardware_address(sock, endpoint.interface))
        sock.sendto(message, (str(solicited_node(address)), 0, 0, index))
