"""A private Docker Engine (Debian's dockerd 20.10) for a test that must stop or restart an engine: its own
socket, data root, exec root, pidfile and bridge (a 172.28.x.0/24 subnet nothing else on the host uses),
no iptables rules and no masquerading, so the lab's shared engines and networks are never touched.

    with PrivateEngine.started() as engine:   # always torn down: the process, its bridge, its folders
        engine.client ...                      # a docker-py client on its socket
        engine.restart()                       # SIGTERM, wait for the exit, start again

Modelled on `scripts/lab.sh`'s start of Engine 26.1, and the `fault-engine-restart-skiplists` case.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker

DOCKERD = "/usr/sbin/dockerd"
START_TIMEOUT = 60.0  # seconds for a starting engine to answer (a loaded two-core machine is slow)
STOP_TIMEOUT = 60.0  # seconds for a stopping engine to exit (it stops its containers first)


def _free_subnet() -> int:
    """A third octet n such that 172.28.n.0/24 is on no interface of this host."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(50):
        n = 1 + uuid.uuid4().int % 250
        if f" 172.28.{n}." not in used:
            return n
    raise RuntimeError("no free 172.28.x.0/24 subnet")


class PrivateEngine:
    def __init__(self, log: Path) -> None:
        key = uuid.uuid4().hex[:6]
        self.name = f"dwfault-{key}"
        self.socket = Path(f"/var/run/{self.name}.sock")
        self.pidfile = Path(f"/var/run/{self.name}.pid")
        self.exec_root = Path(f"/var/run/{self.name}")  # short: containerd's sockets live under it
        self.data_root = Path(f"/var/lib/{self.name}")
        self.bridge = f"dwfx{key}"  # at most 15 bytes
        self.subnet = _free_subnet()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.docker_host, version="auto", timeout=60)
        return self._client

    @classmethod
    @contextlib.contextmanager
    def started(cls, log: Path) -> Iterator[PrivateEngine]:
        engine = cls(log)
        try:
            subprocess.run(["ip", "link", "add", engine.bridge, "type", "bridge"], check=True)
            subprocess.run(
                ["ip", "addr", "add", f"172.28.{engine.subnet}.1/24", "dev", engine.bridge], check=True
            )
            subprocess.run(["ip", "link", "set", engine.bridge, "up"], check=True)
            engine.start()
            yield engine
        finally:
            engine.teardown()

    def start(self) -> None:
        """Start dockerd and wait until it answers; RuntimeError if it does not within START_TIMEOUT."""
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()  # a stale pidfile makes dockerd refuse to start
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    DOCKERD,
                    "--host",
                    self.docker_host,
                    "--data-root",
                    str(self.data_root),
                    "--exec-root",
                    str(self.exec_root),
                    "--pidfile",
                    str(self.pidfile),
                    "--bridge",
                    self.bridge,
                    "--iptables=false",
                    "--ip-masq=false",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(Exception):
                if self.client.ping():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT:g}s")

    def stop(self) -> None:
        """SIGTERM dockerd (it stops its containers, then exits) and wait; SIGKILL after STOP_TIMEOUT."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def teardown(self) -> None:
        """Stop the engine (and its containerd), then remove its mounts, folders, socket and bridge."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self.stop()
        if self.process is not None:
            # Its managed containerd runs in its session; once dockerd is gone it must go too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        for root in (self.exec_root, self.data_root):
            mounts = subprocess.run(
                ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False
            ).stdout.split()
            for target in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
                subprocess.run(["umount", "-l", target], check=False, capture_output=True)
            shutil.rmtree(root, ignore_errors=True)
        for path in (self.socket, self.pidfile):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
