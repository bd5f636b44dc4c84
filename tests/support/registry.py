"""Throwaway CNCF distribution registries on 127.0.0.1, one per test that needs its own access log."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
# What Engine 28.5's containerd image store pushes: OCI manifests and indexes.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    root: Path
    port: int
    htpasswd: Path | None = None
    auth_yaml: str = ""
    process: subprocess.Popen[bytes] | None = None
    auth: tuple[str, str] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Registry:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        auth = self.auth_yaml
        if self.htpasswd:
            auth = f"auth:\n  htpasswd:\n    realm: dockwarden-test\n    path: {self.htpasswd}\n"
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n" + auth
        )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                status = requests.get(f"{self.url}/v2/", timeout=1).status_code
                if status in (200, 401):
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"registry exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("registry did not start within 20 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- access log ----------------------------------------------------------------------------

    def requests_seen(self) -> list[tuple[str, str, int]]:
        if not self.log_path.exists():
            return []
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = ACCESS.search(line)
            if match:
                found.append((match["method"], match["path"], int(match["status"])))
        return found

    def manifest_requests(self, since: int = 0) -> Counter[str]:
        """Counts of manifest requests by method (HEAD/GET/PUT) after the first `since` log entries."""
        return Counter(m for m, p, _ in self.requests_seen()[since:] if "/manifests/" in p)

    def mark(self) -> int:
        """A position in the access log; pass it to manifest_requests to count only what came after."""
        time.sleep(0.05)  # the registry writes its access line just after the response
        return len(self.requests_seen())

    # -- direct pushes, for images docker cannot build (other platforms, indexes) -----------------

    def _session(self) -> requests.Session:
        session = requests.Session()
        if self.auth:
            session.auth = self.auth
        return session

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        session = self._session()
        start = session.post(f"{self.url}/v2/{repo}/blobs/uploads/", timeout=10)
        start.raise_for_status()
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        done = session.put(
            f"{location}{sep}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        done.raise_for_status()
        return digest

    def mount_blob(self, repo: str, digest: str, source: str) -> None:
        response = self._session().post(
            f"{self.url}/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source}, timeout=10
        )
        if response.status_code != 201:
            raise RuntimeError(f"blob mount failed: {response.status_code} {response.text}")

    def put_manifest(
        self, repo: str, reference: str | None, body: dict[str, Any] | bytes, media_type: str
    ) -> str:
        data = body if isinstance(body, bytes) else json.dumps(body, indent=3).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        response = self._session().put(
            f"{self.url}/v2/{repo}/manifests/{reference or digest}",
            data=data,
            headers={"Content-Type": media_type},
            timeout=10,
        )
        if response.status_code != 201:
            raise RuntimeError(f"manifest push failed: {response.status_code} {response.text}")
        return digest

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        response = self._session().get(
            f"{self.url}/v2/{repo}/manifests/{reference}",
            headers={"Accept": f"{MANIFEST_V2}, {MANIFEST_LIST_V2}, {OCI_MANIFEST}, {OCI_INDEX}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.content, response.headers["Docker-Content-Digest"]

    def push_fake_platform_image(
        self, repo: str, architecture: str, layer_from: str, layer: dict[str, Any], marker: str
    ) -> dict[str, Any]:
        """A manifest for another architecture: a config blob naming it, and an existing layer reused."""
        self.mount_blob(repo, layer["digest"], layer_from)
        config = json.dumps(
            {
                "architecture": architecture,
                "os": "linux",
                "config": {"Labels": {"marker": marker}},
                "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
            }
        ).encode()
        config_digest = self.put_blob(repo, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [layer],
        }
        data = json.dumps(manifest, indent=3).encode()
        digest = self.put_manifest(repo, None, data, MANIFEST_V2)
        return {
            "mediaType": MANIFEST_V2,
            "size": len(data),
            "digest": digest,
            "platform": {"architecture": architecture, "os": "linux"},
        }


def start_registry(root: Path, users: dict[str, str] | None = None, auth_yaml: str = "") -> Registry:
    htpasswd = None
    if users:
        htpasswd = root / "htpasswd"
        root.mkdir(parents=True, exist_ok=True)
        htpasswd.touch()
        for user, password in users.items():
            subprocess.run(
                ["htpasswd", "-bB", str(htpasswd), user, password], check=True, capture_output=True
            )
    registry = Registry(root, free_port(), htpasswd, auth_yaml)
    if users:
        registry.auth = next(iter(users.items()))
    return registry.start()
