"""The systemd notify protocol over a real datagram socket."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from dockwarden.notify import Notifier


def test_notify_sends_datagrams_to_a_path_socket(tmp_path: Path) -> None:
    """READY=1 with STATUS=, WATCHDOG=1 and STOPPING=1 arrive as newline-separated datagrams."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.ready("watching 2 services")
        assert notifier.watchdog()
        assert notifier.stopping()
        received = [server.recv(1024).decode() for _ in range(3)]
    assert received == ["READY=1\nSTATUS=watching 2 services", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


def test_notify_abstract_namespace() -> None:
    """An address starting with @ is an abstract socket, as systemd hands it out."""
    name = f"dockwarden-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert server.recv(1024) == b"STATUS=hello"


def test_without_socket_everything_is_a_no_op() -> None:
    """Outside systemd nothing is sent and nothing fails."""
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval is None


def test_watchdog_interval_only_for_our_pid() -> None:
    """WATCHDOG_USEC applies when WATCHDOG_PID is absent or ours, never for another process."""
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 30.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 30.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_send_to_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    """A notify socket that went away makes send() return False instead of crashing the daemon."""
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready("x")
