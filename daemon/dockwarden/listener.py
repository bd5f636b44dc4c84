"""The API's HTTP listener: waitress serving a WSGI app on its own threads, started and stopped by the daemon.

waitress runs one select loop (this module's thread) that accepts and parses requests, and a small pool of
worker threads that run the application, so a long request (an update with its gate) never blocks the
scheduler's thread, the main thread's watchdog, nor other requests. It is imported only when `api:` is
configured, so a daemon without the API does not pay for it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any
from wsgiref.types import WSGIApplication

from dockwarden.api import MAX_BODY
from dockwarden.config import Api

WORKERS = 4  # requests served at once: an update waiting on its gate leaves three for the rest
LOOP_TIMEOUT = 1  # seconds the select loop waits before looking at its map again
# Seconds a stop waits for the workers' requests to end. An update in flight is not waited for here: the
# daemon's stop cancels it and waits for its cycle (rolled back) with its own grace.
STOP_WAIT = 2.0


class Listener:
    """One waitress server on `cfg.listen`. `start` binds (raises OSError when it cannot: port taken,
    folder missing), `stop` closes the socket (removing a unix socket's file) and waits for the loop."""

    def __init__(self, cfg: Api, app: WSGIApplication) -> None:
        self.cfg = cfg
        self.app = app
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from waitress.server import create_server  # noqa: PLC0415 -- only a daemon with `api:` loads it

        options: dict[str, Any] = {
            "threads": WORKERS,
            "max_request_body_size": MAX_BODY,
            "asyncore_loop_timeout": LOOP_TIMEOUT,
            "ident": "dockwarden",
            "clear_untrusted_proxy_headers": True,
        }
        path = self.cfg.unix_path
        if path is not None:
            options |= {"unix_socket": str(path), "unix_socket_perms": "600"}
        else:
            options |= {"host": self.cfg.host, "port": self.cfg.port}
        self._server = create_server(self.app, **options)
        self._thread = threading.Thread(target=self._server.run, name="api-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        # Closed from the loop's own thread (its trigger runs the thunk there): asyncore's map is not safe
        # to change from another thread while it selects.
        server.trigger.pull_trigger(lambda: _close_all(server))
        thread.join(STOP_WAIT + LOOP_TIMEOUT)
        server.task_dispatcher.shutdown(timeout=STOP_WAIT)
        path = self.cfg.unix_path
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._server = self._thread = None


def _close_all(server: Any) -> None:
    """Close the listening socket and every connection, which empties the loop's map and ends it."""
    for channel in list(server._map.values()):
        with contextlib.suppress(OSError):
            channel.close()
