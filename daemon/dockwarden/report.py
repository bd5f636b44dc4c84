"""How command results are shown: a table for people, JSON for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, assert_never

from dockwarden import gc, status
from dockwarden.check import CheckResult
from dockwarden.cycle import Report
from dockwarden.history import Event


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
        detail = str(o.result)
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


def size(count: int | None) -> str:
    """Bytes as `docker system df` shows them (decimal units)."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # unreachable: the loop returns at GB


def gc_table(result: gc.Result) -> str:
    if result.error:
        return f"gc failed: {result.error}"
    header = ("KIND", "WHAT", "BYTES", "REASON")
    rows = []
    for r in result.removals:
        reason = r.reason
        if r.error is not None:
            reason += f"; NOT REMOVED: {r.error}"
        elif r.left is not None:
            reason += f"; left for now: {r.left}"
        rows.append((r.kind, r.name, size(r.bytes) if r.bytes else "-", reason))
    done = [r for r in result.removals if r.done or result.dry_run]
    estimated = sum(r.bytes for r in done)
    if result.dry_run:
        summary = f"would remove {len(done)} items, about {size(estimated)}"
    else:
        summary = f"removed {len(done)} of {len(result.removals)} items, reclaimed {size(result.reclaimed)}"
    return _table(header, rows) + "\n\n" + summary if rows else "nothing to collect"


def gc_json(result: gc.Result) -> str:
    return json.dumps(
        {
            "dry_run": result.dry_run,
            "error": result.error,
            "reclaimed_bytes": result.reclaimed,
            "removals": [r.to_json() for r in result.removals],
        },
        indent=2,
    )


def _history_detail(entry: dict[str, Any]) -> str:
    try:
        event = Event(str(entry.get("event")))
    except ValueError:  # written by a newer version, or by hand: show it as it is
        return json.dumps({k: v for k, v in entry.items() if k not in ("at", "event", "service")})
    match event:
        case Event.CHECKED:
            text = f"{entry.get('status')}: running {short_digest(entry.get('running_digest'))}"
            text += f", registry {short_digest(entry.get('registry_digest'))}"
            return text + (f" ({entry['error']})" if entry.get("error") else "")
        case Event.SKIPPED:
            return str(entry.get("reason") or "")
        case Event.UPGRADE | Event.ROLLBACK:
            return _attempt_detail(entry)
        case Event.GC:
            what = f"{entry.get('kind')} {entry.get('name')}"
            return f"removed {what}: {entry.get('reason')} ({size(entry.get('bytes'))})"
        case Event.RETAINED | Event.RELEASED:
            return f"{entry.get('reference')}" + (f": {entry['reason']}" if entry.get("reason") else "")
        case _:
            assert_never(event)


def _attempt_detail(entry: dict[str, Any]) -> str:
    text = f"{entry.get('result')}: {short_digest(entry.get('from_digest'))}"
    text += f" -> {short_digest(entry.get('to_digest'))}"
    if entry.get("verdict"):
        text += f"; gate: {entry['verdict']}"
    if entry.get("error"):
        text += f"; at {entry['step']}: {entry['error']}" if entry.get("step") else f"; {entry['error']}"
    if entry.get("rollback_error"):
        text += f"; rollback failed: {entry['rollback_error']}"
    return text


def history_table(entries: Sequence[dict[str, Any]]) -> str:
    header = ("TIME", "SERVICE", "EVENT", "DETAIL")
    rows = [
        (
            str(e.get("at", "-"))[:19].replace("T", " "),
            str(e.get("service") or "-"),
            str(e.get("event", "-")),
            _history_detail(e),
        )
        for e in entries
    ]
    return _table(header, rows) if rows else "no history yet"


def history_json(entries: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(entries), indent=2)


def status_table(statuses: Sequence[status.ServiceStatus]) -> str:
    header = ("SERVICE", "STATE", "RUNNING", "REGISTRY", "RETAINED", "LAST UPGRADE", "SKIPPED")
    rows = []
    for s in statuses:
        state = s.state + (f" ({s.health})" if s.health else "")
        if s.error:
            state = f"error: {s.error}"
        retained = ", ".join(short_digest(v.digests[0] if v.digests else v.image_id) for v in s.retained)
        last = "-"
        if s.last_upgrade is not None:
            last = (
                f"{s.last_upgrade.get('result')} {str(s.last_upgrade.get('at', ''))[:16].replace('T', ' ')}"
            )
        skipped = ", ".join(short_digest(d) for d in s.skipped.digests) if s.skipped else "-"
        rows.append(
            (
                s.service,
                state,
                short_digest(s.running_digest),
                short_digest(s.registry_digest),
                retained or "-",
                last,
                skipped,
            )
        )
    return _table(header, rows)


def status_json(statuses: Sequence[status.ServiceStatus]) -> str:
    return json.dumps([s.to_json() for s in statuses], indent=2)
