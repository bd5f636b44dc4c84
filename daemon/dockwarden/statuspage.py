"""The status page (`GET /`) and its login form, as HTML strings: server-rendered, no script, no build step.

Every value that comes from the config, the engine or the history (service and container names, image
references, error messages) is user input and goes through `html.escape`; nothing is inserted unescaped
except this module's own markup. One column on a phone, a grid of cards on a wider screen.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from dockwarden.status import ServiceStatus

TIMELINE_LENGTH = 30  # history entries shown, newest first

_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:12px;background:#f6f7f9;color:#1b1f24}
h1{font-size:1.3em;margin:0 0 12px}h2{font-size:1.1em;margin:20px 0 8px}
.cards{display:grid;gap:12px;grid-template-columns:repeat(auto-fill,minmax(300px,1fr))}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px;overflow-wrap:anywhere}
.card h3{margin:0 0 8px;font-size:1.05em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:0}dt{color:#57606a}dd{margin:0}
ul{margin:0;padding-left:1.1em}code{font-size:.9em}.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}
ol.timeline{list-style:none;padding:0;margin:0;border-left:3px solid #d0d7de}
ol.timeline li{margin:0 0 8px;padding-left:10px;overflow-wrap:anywhere}
time{color:#57606a;font-size:.9em;display:block}
form{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px;max-width:360px}
input{font:inherit;width:100%;box-sizing:border-box;margin:6px 0 12px;padding:6px}
"""

_GOOD = frozenset({"running", "healthy", "upgraded", "reverted", "up-to-date", "checked"})
_BAD = frozenset({"missing", "unhealthy", "exited", "dead", "rolled-back", "rollback-failed", "error"})


def _e(value: object) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def _short(digest: object) -> str:
    text = str(digest or "-")
    return _e(text[:19] if text.startswith("sha256:") else text)


def _tone(word: object) -> str:
    text = str(word)
    return "ok" if text in _GOOD else "bad" if text in _BAD else "warn"


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def login(message: str | None = None) -> str:
    """The login form: the API token, posted to `/login`, which answers with a cookie."""
    note = f'<p class="bad">{_e(message)}</p>' if message else ""
    form = (
        '<form method="post" action="/login"><label for="token">API token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required>'
        '<button type="submit">Sign in</button></form>'
    )
    return _page("dockwarden: sign in", f"<h1>dockwarden</h1>{note}{form}")


def _card(s: ServiceStatus) -> str:
    state = f'<span class="{_tone(s.state)}">{_e(s.state)}</span>'
    if s.health:
        state += f' (<span class="{_tone(s.health)}">{_e(s.health)}</span>)'
    if s.error:
        state = f'<span class="bad">error: {_e(s.error)}</span>'
    last = "-"
    if s.last_upgrade is not None:
        u = s.last_upgrade
        last = (
            f'<span class="{_tone(u.get("result"))}">{_e(u.get("result"))}</span> '
            f"{_short(u.get('from_digest'))} → {_short(u.get('to_digest'))} <time>{_e(u.get('at'))}</time>"
        )
        if u.get("error"):
            last += f'<span class="bad">{_e(u.get("step"))}: {_e(u.get("error"))}</span>'
    retained = "".join(
        f"<li><code>{_short(v.digests[0] if v.digests else v.image_id)}</code> {_e(v.reference)}</li>"
        for v in s.retained
    )
    skips = "".join(
        f"<li><code>{_short(skip.digest)}</code> {_e(skip.reason)} <time>{_e(skip.at)}</time></li>"
        for skip in (s.skipped.skips if s.skipped else ())
    )
    return (
        f'<section class="card"><h3>{_e(s.service)}</h3><dl>'
        f"<dt>container</dt><dd>{_e(s.container)}</dd><dt>state</dt><dd>{state}</dd>"
        f"<dt>image</dt><dd>{_e(s.image)}</dd>"
        f"<dt>running</dt><dd><code>{_short(s.running_digest)}</code></dd>"
        f"<dt>registry</dt><dd><code>{_short(s.registry_digest)}</code> <time>{_e(s.checked_at)}</time></dd>"
        f"<dt>last upgrade</dt><dd>{last}</dd>"
        f"<dt>retained</dt><dd>{f'<ul>{retained}</ul>' if retained else 'none'}</dd>"
        f"<dt>skipped</dt><dd>{f'<ul>{skips}</ul>' if skips else 'none'}</dd>"
        "</dl></section>"
    )


def _event(entry: dict[str, Any]) -> str:
    word = entry.get("result") or entry.get("status") or entry.get("event")
    parts = [f"<b>{_e(entry.get('service') or 'dockwarden')}</b>", f"{_e(entry.get('event'))}"]
    if word != entry.get("event"):
        parts.append(f'<span class="{_tone(word)}">{_e(word)}</span>')
    if entry.get("from_digest") or entry.get("to_digest"):
        parts.append(f"{_short(entry.get('from_digest'))} → {_short(entry.get('to_digest'))}")
    for key in ("reason", "error"):
        if entry.get(key):
            parts.append(f"<span>{_e(entry.get(key))}</span>")
    return f"<li><time>{_e(entry.get('at'))}</time>{' '.join(parts)}</li>"


def render(statuses: Sequence[ServiceStatus], entries: Sequence[dict[str, Any]], generated_at: str) -> str:
    """The page: a card per service (`status.gather`'s), then the newest history entries as a timeline."""
    cards = "".join(_card(s) for s in statuses) or "<p>No services configured.</p>"
    timeline = "".join(_event(e) for e in entries[:TIMELINE_LENGTH]) or "<li>No history yet.</li>"
    body = (
        f"<h1>dockwarden</h1><p><time>as of {_e(generated_at)}</time></p>"
        f'<div class="cards">{cards}</div>'
        f'<h2>Recent history</h2><ol class="timeline">{timeline}</ol>'
    )
    return _page("dockwarden status", body)
