"""Docker's per-registry TLS files: `/etc/docker/certs.d/HOST[:PORT]/`.

Docker's rules (docs: "Verify repository client with certificates"; moby `registry.ReadCertsDirectory`):
every `*.crt` in a registry's folder is a CA certificate trusted for that registry besides the usual ones;
every `*.cert` is a client certificate whose private key is the `*.key` of the same name, and a `.cert`
without its `.key` (or the reverse) is an error. The folder is named by the registry's host, and its port
when the reference has one (`registry.example.com:5000`). Files are read as they are when a request needs
them, so a change applies to the next request without a restart, as it does for the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CERTS_DIR = Path("/etc/docker/certs.d")


class CertsError(ValueError):
    """A registry's certs.d folder cannot be used as Docker would; the message names the file."""


@dataclass(frozen=True, kw_only=True)
class CertsDir:
    """What one registry's folder holds; `stamp` is (name, mtime in ns, size) of each file read, so that a
    changed folder compares unequal and gets new TLS settings."""

    cas: tuple[Path, ...] = ()
    client: tuple[Path, Path] | None = None  # (certificate, key); the first pair by name
    stamp: tuple[tuple[str, int, int], ...] = ()


def read(root: Path, host: str) -> CertsDir:
    """The TLS files for `host` ("name[:port]", as the image reference spells it) under `root`; an empty
    CertsDir when there is no such folder. Raises CertsError for a `.cert` without its `.key` or the reverse,
    and for a folder that cannot be listed.

    Python's TLS layer presents one client certificate, where Docker offers each pair it found: with several
    pairs, the first by file name is used."""
    if not host or "/" in host or host.strip(".") == "":
        return CertsDir()
    folder = root / host
    try:
        files = sorted((entry.name, entry.stat()) for entry in folder.iterdir() if entry.is_file())
    except FileNotFoundError:
        return CertsDir()
    except OSError as exc:
        raise CertsError(f"cannot list {folder}: {exc.strerror}") from None
    names = {name for name, _ in files}
    cas: list[Path] = []
    pairs: list[tuple[Path, Path]] = []
    for name, _ in files:
        stem, _, extension = name.rpartition(".")
        if extension == "crt":
            cas.append(folder / name)
        elif extension == "cert":
            if f"{stem}.key" not in names:
                raise CertsError(f"{folder / name} has no key {stem}.key (CA certificates end in .crt)")
            pairs.append((folder / name, folder / f"{stem}.key"))
        elif extension == "key" and f"{stem}.cert" not in names:
            raise CertsError(f"{folder / name} has no client certificate {stem}.cert")
    return CertsDir(
        cas=tuple(cas),
        client=pairs[0] if pairs else None,
        stamp=tuple((name, stat.st_mtime_ns, stat.st_size) for name, stat in files),
    )
