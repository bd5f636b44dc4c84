"""A TCP proxy on 127.0.0.1 that adds round-trip latency: each direction's bytes wait half the RTT.

Byte-level and asyncio, so it costs next to no CPU: on a two-core machine the thing being measured, not
the harness, should be what uses the processor. It forwards only to the loopback address it was given.

    python -m tests.support.latency --upstream 127.0.0.1:5000 --rtt 0.05   # prints the port it listens on
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
    try:
        while data := await src.read(65536):
            await asyncio.sleep(delay)
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.close()


async def _serve(upstream_host: str, upstream_port: int, rtt: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer, rtt / 2), _pipe(up_reader, writer, rtt / 2))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"127.0.0.1:{port}", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()
    loop.add_reader(
        sys.stdin.fileno(), lambda: None if stdin_closed.done() else stdin_closed.set_result(None)
    )
    async with server:
        await stdin_closed  # runs until the parent closes our stdin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True, help="127.0.0.1:PORT of a loopback registry")
    parser.add_argument("--rtt", type=float, default=0.05, help="added round-trip time, seconds")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit("the latency proxy forwards to loopback addresses only")
    asyncio.run(_serve(host, int(port), args.rtt))


if __name__ == "__main__":
    main()
