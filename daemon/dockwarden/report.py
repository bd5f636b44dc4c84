"""How command results are shown: a table for people, JSON for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence

from dockwarden.check import CheckResult
from dockwarden.update import Report


def short_digest(digest: str | None) -> str:
    if not digest:
        return "-"
    return digest.removeprefix("sha256:")[:12]


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


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
    return _table(header, rows)


def check_json(results: Sequence[CheckResult]) -> str:
    return json.dumps([r.to_json() for r in results], indent=2)


def update_table(report: Report) -> str:
    header = ("SERVICE", "FROM", "TO", "RESULT")
    rows = []
    for o in report.outcomes:
        detail = o.result
        if o.error:
            detail += f" at {o.step}: {o.error}" if o.step else f": {o.error}"
        if o.rollback_error:
            detail += f"; rollback failed: {o.rollback_error}"
        rows.append((o.service, short_digest(o.from_digest), short_digest(o.to_digest), detail))
    text = _table(header, rows)
    for service, lines in report.plans.items():
        text += f"\n\nplan for {service}:\n" + "\n".join(f"  {line}" for line in lines)
    return text


def update_json(report: Report) -> str:
    items = []
    for o in report.outcomes:
        item = o.to_json()
        if o.service in report.plans:
            item["plan"] = report.plans[o.service]
        items.append(item)
    return json.dumps(items, indent=2)
