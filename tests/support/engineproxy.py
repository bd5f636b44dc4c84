"""An Engine API proxy on a unix socket: forwards to a real engine's socket, records every call, and
injects one fault at a chosen call site.

A *call* is one HTTP request, keyed by method and a normalised path (API version prefix and query
dropped, IDs and the service's container name replaced by placeholders). A *site* is a run of
consecutive calls with the same key (the gate's polls of one container are one site), so the site
sequence of a run does not depend on how many polls a gate happened to make. `Fault(kind, site=N)`
fires at the first call of the N-th site:

- `500`, `503`: answered with that status and an engine-style JSON message, never forwarded;
- `drop`: the connection is closed as soon as the request is read, never forwarded (the engine never
  saw it: a crash or a reset socket);
- `timeout`: forwarded (the engine does it) but the answer is withheld until the client gives up (its
  engine timeout) or `hold` seconds pass: the call happened, and the caller cannot know.

Every forwarded request is sent upstream with `Connection: close`, so each answer ends with its
connection and the proxy never parses response framing (chunked pull progress streams through as is).
Byte-level and asyncio in a background thread; it only ever connects to the one socket it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

HEAD_LIMIT = 64 * 1024  # an engine request head is a few hundred bytes
HOLD = 60.0  # seconds a withheld answer is held at most (the client gives up long before)
_VERSION = re.compile(r"^/v\d+\.\d+")
_HEX_ID = re.compile(r"\b[0-9a-f]{64}\b|\b[0-9a-f]{12}\b")
_IMAGE_REF = re.compile(
    r"^/images/(?!json$|create$|prune$|load$|get$|search$)(.+?)(/json|/tag|/push|/history)?$"
)


class FaultKind(StrEnum):
    ERROR_500 = "500"
    ERROR_503 = "503"
    DROP = "drop"
    TIMEOUT = "timeout"


@dataclass(frozen=True, kw_only=True)
class Fault:
    kind: FaultKind
    site: int  # 1-based index into the run's site sequence


@dataclass(frozen=True, kw_only=True)
class Call:
    method: str
    path: str  # as sent, with its query
    key: str  # method and normalised path
    site: int  # the site it belongs to
    fault: FaultKind | None = None  # the fault injected at this call


def normalise(method: str, target: str, name: str) -> str:
    """`METHOD /path` with the API version and query dropped, `name` (the service's container) written
    NAME, hex IDs written {id} and image references {ref}."""
    path = _VERSION.sub("", target.split("?", 1)[0])
    if name:
        path = path.replace(name, "NAME")
    path = _HEX_ID.sub("{id}", path)
    image = _IMAGE_REF.match(path)
    if image:
        path = "/images/{ref}" + (image.group(2) or "")
    return f"{method} {path}"


class EngineProxy:
    """`EngineProxy(upstream_socket, listen_socket, name).start()`; `docker_host` is what to configure."""

    def __init__(self, upstream: str | Path, listen: str | Path, name: str = "") -> None:
        self.upstream = str(upstream)
        self.listen = str(listen)
        self.name = name
        self.calls: list[Call] = []
        self.fault: Fault | None = None
        self.fired: Call | None = None
        self._last_key: str | None = None
        self._sites = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.listen}"

    def start(self) -> EngineProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        future.result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.listen)

    def arm(self, fault: Fault | None) -> None:
        """Inject `fault` during the next run (counting sites from zero again); None: record only."""
        with self._lock:
            self.fault, self.fired = fault, None
            self.calls, self._last_key, self._sites = [], None, 0

    def sites(self) -> list[str]:
        """The run's site sequence: one key per run of consecutive calls with the same key."""
        with self._lock:
            calls = list(self.calls)
        keys: list[str] = []
        for call in calls:
            if len(keys) < call.site:
                keys.append(call.key)
        return keys

    def _record(self, method: str, target: str) -> FaultKind | None:
        key = normalise(method, target, self.name)
        with self._lock:
            if key != self._last_key:
                self._sites += 1
                self._last_key = key
            kind = None
            if self.fault is not None and self.fired is None and self._sites == self.fault.site:
                kind = self.fault.kind
            call = Call(method=method, path=target, key=key, site=self._sites, fault=kind)
            self.calls.append(call)
            if kind is not None:
                self.fired = call
            return kind

    async def _serve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.listen)
        self._server = await asyncio.start_unix_server(self._handle, path=self.listen, limit=HEAD_LIMIT)
        os.chmod(self.listen, 0o600)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
        kind = self._record(method, target)
        try:
            if kind in (FaultKind.ERROR_500, FaultKind.ERROR_503):
                await _answer_error(writer, int(kind))
            elif kind is FaultKind.DROP:
                pass  # closed below, unanswered and never forwarded
            else:
                await self._forward(lines, reader, writer, withhold=kind is FaultKind.TIMEOUT)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(
        self, lines: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, withhold: bool
    ) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        kept = [line for line in lines[1:] if line and not line.lower().startswith("connection:")]
        up_writer.write(("\r\n".join([lines[0], *kept, "Connection: close", "", ""])).encode("latin-1"))
        await up_writer.drain()
        # The request's body (Content-Length or chunked) flows on while the answer comes back.
        upload = asyncio.ensure_future(_pipe(reader, up_writer))
        try:
            if withhold:
                # The engine does what was asked; the client hears nothing until it gives up.
                # Read to its end first, so the engine is not interrupted; then wait for the client to hang
                # up (the upload pipe ends at its EOF).
                await asyncio.wait_for(_drain(up_reader), HOLD)
                await asyncio.wait({upload}, timeout=HOLD)
            else:
                await _pipe(up_reader, writer)
        finally:
            upload.cancel()
            with contextlib.suppress(Exception):
                up_writer.close()


async def _answer_error(writer: asyncio.StreamWriter, status: int) -> None:
    body = json.dumps({"message": f"injected fault: {status}"}).encode()
    reason = {500: "Internal Server Error", 503: "Service Unavailable"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()


async def _drain(src: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await src.read(65536):
            pass
