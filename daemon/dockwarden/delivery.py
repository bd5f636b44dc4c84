"""The Apprise side of notifications, run as a short-lived child process: `python -m dockwarden.delivery`.

The only module that imports Apprise. Apprise loads every one of its plugins on first use, about 20 MiB
that a Python process never gives back; in a child that exits after each job, the daemon's resident memory
stays what it is without notifications, and a receiver that hangs is ended by killing the child at the
timeout (no thread left behind). The parent (`notifications`) pays about half a second of CPU per job,
and notifications are rare: at most one per cycle.

The protocol: one JSON object on stdin, JSON lines on stdout, exit status 0 (anything else is a crash).
- `{"check": [URL, ...]}` answers `{"problems": [null | "why", ...]}`, one per URL.
- `{"send": [URL, ...], "title", "body", "bad", "timeout"}` answers `{"targets": [masked URL, ...]}`
  as soon as the URLs are loaded (so a parent that kills a hanging child still knows where it was
  sending), then `{"sent": true | false}`.
URLs travel on stdin, never on the command line, which other users can read in /proc.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import apprise


def url_problem(url: str) -> str | None:
    """Why Apprise cannot send to `url` (None if it can). Names only the scheme: the rest of a URL may be
    a secret."""
    if apprise.Apprise.instantiate(url) is not None:
        return None
    if "://" not in url:
        return "not an Apprise URL (SCHEME://...)"
    scheme = url.partition("://")[0]
    return f"not a URL Apprise can send to (scheme {scheme!r}; see Apprise's list of services)"


def masked(plugin: Any) -> str:
    """Apprise's privacy form of a plugin's URL (passwords and tokens masked), less the query: Apprise's
    own parameters there make a log line long and say nothing about where it went."""
    return str(plugin.url(privacy=True)).partition("?")[0]


def send(request: dict[str, Any]) -> None:
    """Load the URLs, say where to (the `targets` line), send, say whether all took it (`sent`)."""
    seconds = float(request["timeout"])
    box = apprise.Apprise()
    for url in request["send"]:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:  # the config's load checked every URL; one may fail on a later look
            continue
        # Apprise's per-request timeouts (its `cto` and `rto` URL parameters, 4 s by default) follow the
        # configured timeout, a second longer: the parent kills this child at the timeout itself, so that
        # one clock, not a race between two, decides.
        plugin.socket_connect_timeout = seconds + 1
        plugin.socket_read_timeout = seconds + 1
        box.add(plugin)
    _answer({"targets": [masked(plugin) for plugin in box]})
    kind = apprise.NotifyType.FAILURE if request.get("bad") else apprise.NotifyType.INFO
    sent = bool(box.notify(body=request["body"], title=request["title"], notify_type=kind))
    _answer({"sent": sent})


def _answer(item: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(item) + "\n")
    sys.stdout.flush()


def main() -> None:
    # Apprise's own warnings say why a delivery failed; the parent passes them on (stderr).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    request = json.load(sys.stdin)
    if "check" in request:
        _answer({"problems": [url_problem(url) for url in request["check"]]})
    else:
        send(request)


if __name__ == "__main__":
    main()
