"""How command results are shown: a table for people, JSON for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence

from dockwarden.check import CheckResult


def short_digest(digest: str | None) -> str:
    if not digest:
        return "-"
    return digest.removeprefix("sha256:")[:12]


def check_table(results: Sequence[CheckResult]) -> str:
    header = ("SERVICE", "CONTAINER", "IMAGE", "RUNNING", "REGISTRY", "STATUS")
    rows = [
        (
            r.service,
            r.container,
            r.image or "-",
            short_digest(r.running_digest),
            short_digest(r.registry_digest),
            r.status if r.error is None else f"{r.status}: {r.error}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def check_json(results: Sequence[CheckResult]) -> str:
    return json.dumps([r.to_json() for r in results], indent=2)
