"""Test images built FROM scratch with busybox, labelled so that every one is found and removed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors

BUSYBOX = Path("/bin/busybox")
# nslookup, nc, printf: a client resolving a network alias and sending GET (tests/support/nginx.py). Busybox's
# wget crashed (SIGSEGV) in a FROM-scratch image given an alias or another container's IP address (it
# resolves through glibc, whose NSS a static binary cannot load there); nslookup has a DNS client of its own.
APPLETS = (
    *("sh", "sleep", "httpd", "wget", "cat", "echo", "true", "false", "ls", "test", "env"),
    *("nslookup", "nc", "printf"),
)
LABEL = "dockwarden.test"


class ImageFactory:
    """Builds small distinct images; each build differs by a marker file, so each has a new digest."""

    def __init__(self, client: docker.DockerClient, run_label: str) -> None:
        self.client = client
        self.run_label = run_label
        self._dir = Path(tempfile.mkdtemp(prefix="dockwarden-img-"))
        rootfs = self._dir / "rootfs" / "bin"
        rootfs.mkdir(parents=True)
        shutil.copy2(BUSYBOX, rootfs / "busybox")
        for applet in APPLETS:
            (rootfs / applet).symlink_to("busybox")
        (self._dir / "rootfs" / "www").mkdir()

    def build(
        self,
        tag: str,
        marker: str,
        cmd: list[str] | None = None,
        healthcheck: str | None = None,
        payload: int = 0,
        lines: Sequence[str] = (),
    ) -> str:
        """Build `tag` and return its image ID; `payload` adds that many random bytes (a distinct layer),
        `lines` more Dockerfile instructions at the end (no RUN: the image has no shell to run it with)."""
        (self._dir / "rootfs" / "www" / "index.html").write_text(marker + "\n")
        (self._dir / "rootfs" / "payload.bin").write_bytes(os.urandom(payload))
        dockerfile = [
            "FROM scratch",
            "COPY rootfs/ /",
            f'LABEL {LABEL}="{self.run_label}" marker="{marker}"',
            "ENV APP_MARKER=" + marker,
            "CMD " + _json_list(cmd or ["sleep", "3600"]),
        ]
        if healthcheck:
            dockerfile.append(f"HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD {healthcheck}")
        dockerfile.extend(lines)
        (self._dir / "Dockerfile").write_text("\n".join(dockerfile) + "\n")
        # No build cache: parallel workers remove their images, and a cache hit on an image being removed
        # fails the build ("unable to find image"). A FROM-scratch build costs the same without it.
        image, _ = self.client.images.build(path=str(self._dir), tag=tag, rm=True, forcerm=True, nocache=True)
        return str(image.id)

    def push(self, tag: str, auth: tuple[str, str] | None = None) -> str:
        """Push `tag` and return the digest the registry stored."""
        repo, _, name_tag = tag.rpartition(":")
        digest = ""
        auth_config = {"username": auth[0], "password": auth[1]} if auth else None
        for line in self.client.api.push(
            repo, tag=name_tag, stream=True, decode=True, auth_config=auth_config
        ):
            if "error" in line:
                raise RuntimeError(f"push of {tag} failed: {line['error']}")
            aux = line.get("aux") or {}
            digest = aux.get("Digest", digest)
            # Engine 28.5's containerd store sends no aux message, only the line "TAG: digest: D size: N".
            status = str(line.get("status") or "")
            if not digest and ": digest: sha256:" in status:
                digest = status.partition(": digest: ")[2].split()[0]
        return digest

    def build_and_push(self, tag: str, marker: str, **kwargs: Any) -> tuple[str, str]:
        image_id = self.build(tag, marker, **kwargs)
        return image_id, self.push(tag)

    def cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def _json_list(items: list[str]) -> str:
    return json.dumps(items)


def remove_labelled(client: docker.DockerClient, value: str) -> None:
    """Remove every container, then every image, carrying dockwarden.test=value."""
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}={value}"}):
        container.remove(force=True, v=True)
    # Removing the top-level images prunes their untagged build parents; a parent still shared by a
    # later build goes in a later pass.
    for _ in range(5):
        found = client.images.list(all=True, filters={"label": f"{LABEL}={value}"})
        if not found:
            return
        for image in client.images.list(filters={"label": f"{LABEL}={value}"}) or found:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.images.remove(image.id, force=True)


def leftovers(client: docker.DockerClient, value: str) -> list[str]:
    found = [
        f"container {c.name}" for c in client.containers.list(all=True, filters={"label": f"{LABEL}={value}"})
    ]
    found += [f"image {i.id}" for i in client.images.list(all=True, filters={"label": f"{LABEL}={value}"})]
    return found


def load_untagged(client: docker.DockerClient, run_label: str, created: str, size: int = 64 * 1024) -> str:
    """`docker load` an untagged (dangling) image whose config says it was built at `created`.

    A build always stamps the current time, and garbage collection spares young dangling images (a build
    may be using them); a saved image carries whatever date its config holds. Returns the image ID.
    """
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        payload = os.urandom(size)  # random, so every such image, and its layer, is distinct
        info = tarfile.TarInfo("payload.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": client.version().get("Arch", "amd64"),
            "os": "linux",
            "created": created,
            "config": {"Labels": {LABEL: run_label}, "Cmd": ["/payload.bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "dockwarden test"}],
        }
    ).encode()
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": "config.json", "RepoTags": None, "Layers": ["layer/layer.tar"]}]
    ).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (
            ("config.json", config),
            ("layer/layer.tar", layer_bytes),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    # The classic store names the image by its config digest; the containerd store by the manifest it makes
    # for it, which only the engine's answer says.
    for message in client.api.load_image(archive.getvalue()):
        stream = str(message.get("stream") or "")
        if stream.startswith("Loaded image ID: "):
            image_id = stream.removeprefix("Loaded image ID: ").strip()
    return image_id
