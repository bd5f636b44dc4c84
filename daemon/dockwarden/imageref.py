"""Image references as Docker spells them: `[registry/]repository[:tag][@digest]`.

Docker's rules for the familiar form decide which registry a name goes to: a first component with a dot
or a colon, or `localhost`, is a registry host; anything else lives on Docker Hub, where a one-component
name is an official image under `library/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
# Docker Hub's registry API is not served at docker.io itself.
DOCKER_HUB_API = "registry-1.docker.io"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_HOST = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]{1,5})?\Z|\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?\Z"
)


class InvalidReference(ValueError):
    """The text is not a valid image reference; the message says which part is wrong."""


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """Registry and repository, the identity a tag or digest belongs to."""
        return f"{self.registry}/{self.repository}"

    @property
    def manifest_reference(self) -> str:
        """What goes after /manifests/ when asking the registry: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag_default(self) -> ImageRef:
        if self.tag is None and self.digest is None:
            return ImageRef(self.registry, self.repository, "latest", None)
        return self

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> ImageRef:  # noqa: PLR0912 -- one branch per grammar rule reads like the spec
    """Parse a reference the way `docker pull` does; a missing tag means `latest`."""
    if not text or text != text.strip():
        raise InvalidReference("an image reference must be non-empty and have no surrounding spaces")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidReference(f"digest {digest!r} is not sha256: followed by 64 lowercase hex digits")
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference(f"tag {tag!r} is not valid (letters, digits, _ . -; at most 128)")
    parts = rest.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, parts[1:]
        if not _HOST.match(registry):
            raise InvalidReference(f"registry host {registry!r} is not a valid host[:port]")
    else:
        registry, path = DOCKER_HUB, parts
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    for component in path:
        if not _COMPONENT.match(component):
            raise InvalidReference(
                f"repository component {component!r} is not valid "
                "(lowercase letters and digits, separated by . _ __ or -)"
            )
    if registry == DOCKER_HUB and len(path) == 1:
        path = ["library", *path]
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry, "/".join(path), tag, digest)


def digests_for(name: str, repo_digests: list[str]) -> set[str]:
    """The digests among an image's RepoDigests that belong to the repository `name` (registry/repo)."""
    found = set()
    for entry in repo_digests:
        try:
            ref = parse(entry)
        except InvalidReference:
            continue
        if ref.digest and ref.name == name:
            found.add(ref.digest)
    return found
